#!/usr/bin/perl
# GET /api/ask/{jobId}/events: a job's answer as server-sent events while
# the LLM writes it.  The pool appends each piece to the job's events
# stream and wakes the nginx workers listening (workers/lua/delta.lua);
# nginx reads on from the last event it sent, without holding a Redis
# connection per stream.  The first piece reaches the client before the
# LLM has finished; the pieces make the stored answer; the stream ends
# with "done" (or "error"); Last-Event-ID resumes without losing or
# repeating a piece; a finished job streams at once; another user's job
# is a 404; an idle stream gets ": ping" comments; clients that leave
# mid-stream free what they held.  POST /api/ask with Accept:
# text/event-stream starts with "job", then streams the same way (a
# cache hit: the whole answer at once).

use strict;
use warnings;
use lib 't/lib';
use Test::More;
use Cwd qw(getcwd);
use JSON::PP;
use IO::Socket::INET;
use IO::Select;
use Time::HiRes qw(sleep time);
use Ragnx::Test;
use Ragnx::OpenAPI;
use Ragnx::Pool qw(uuid);
use Ragnx::MockLLM;

my $root = getcwd();
my $t = Ragnx::Test->new;
# every response to a path of docs/openapi.json is checked against it
Ragnx::OpenAPI->hook;
my $rp = $t->start_redis;
$t->start_postgres;
my $mock = Ragnx::MockLLM->start($t);
my $p = Ragnx::Pool->new($t);
my $secret = 'stream-test-secret-0123456789abcdef';
my $key = $t->file('hs.key', $secret);
my $llmkey = $t->file('llm.key', "sk-test\n");
$p->configure(llm_provider => 'anthropic', llm_base_url => $mock->url,
              llm_model => 'claude-mock', llm_api_key_file => $llmkey,
              jwt_key_file => $key, concurrency => 4, workers => 1,
              max_attempts => 2, retry_base => 100);
my ($rc, $out) = $p->cli('migrate');
is($rc, 0, 'migrate') or diag($out);
$p->start;

$t->start_nginx(
    workers => 2,
    http    => "ragnx_redis 127.0.0.1:$rp;",
    server  => "ragnx_jwt_key_file $key;\n" . <<"EOF");
        location = /api/ask {
            ragnx_jwt on;
            ragnx_validate_schema $root/schemas/ask.json;
            ragnx_ask;
        }
        location ~ ^/api/ask/([^/]+)/events\$ {
            ragnx_jwt on;
            ragnx_ask_events_ping 1s;
            ragnx_ask_events \$1;
        }
        location /api/ask/ {
            ragnx_jwt on;
            ragnx_ask_status;
        }
EOF

my $json = JSON::PP->new->canonical;
my %tok;
sub token {
    my ($who) = @_;
    return $tok{$who} ||= Ragnx::Test::jwt_hs256($secret,
        { sub => $who, exp => time + 3600 });
}

sub ask {
    my ($who, $query) = @_;
    my $r = $t->request(POST => '/api/ask',
        headers => [ Authorization => 'Bearer ' . token($who),
                     'Content-Type' => 'application/json' ],
        body => $json->encode({ query => $query }));
    return Ragnx::Test::json_body($r) || {};
}

# the request of each stream, to check its response (Ragnx::OpenAPI)
my %sent;

sub open_stream {
    my ($who, $id, @h) = @_;
    my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1',
                                  PeerPort => $t->{port}, Proto => 'tcp')
        or die "connect: $!";
    my $extra = join '', map { "$_\r\n" } @h;
    print $s "GET /api/ask/$id/events HTTP/1.0\r\nHost: localhost\r\n"
             . "Authorization: Bearer " . token($who) . "\r\n$extra\r\n";
    $sent{0 + $s} = [GET => "/api/ask/$id/events"];
    return $s;
}

# the whole response, with the time each event arrived: (status line,
# headers, [[time, event text], ...])
sub read_stream {
    my ($s, $limit) = @_;
    my $sel = IO::Select->new($s);
    my ($buf, $head, @ev, $raw) = ('', undef);
    my $t0 = time;
    while (time - $t0 < $limit) {
        last unless $sel->can_read(0.05) || 1;
        my $n = sysread($s, my $chunk, 65536);
        if (!defined $n) { sleep 0.01; next }
        last if $n == 0;
        $buf .= $chunk;
        $raw .= $chunk;
        if (!defined $head && $buf =~ s/\A(.*?)\r\n\r\n//s) {
            $head = $1;
        }
        next unless defined $head;
        while ($buf =~ s/\A(.*?)\n\n//s) {
            push @ev, [time, $1];
        }
    }
    Ragnx::Test::check_raw(@{ delete $sent{0 + $s} }, $raw // '');
    return ($head // $buf, \@ev);
}

sub parse { Ragnx::Test::sse_parse(@_) }

# bad input: a malformed id, a malformed Last-Event-ID, another's job

my $r = $t->request(GET => '/api/ask/not-a-uuid/events',
    headers => [ Authorization => 'Bearer ' . token('alice') ]);
is($r->{status}, 400, 'a malformed job id: 400');
$r = $t->request(GET => '/api/ask/' . uuid() . '/events',
    headers => [ Authorization => 'Bearer ' . token('alice') ]);
is($r->{status}, 404, 'an unknown job: 404');
like($r->{headers}{'content-type'} // '', qr{application/json},
     '... a JSON error, not a stream');
$r = $t->request(GET => '/api/ask/' . uuid() . '/events',
    headers => [ Authorization => 'Bearer ' . token('alice'),
                 'Last-Event-ID' => 'x<script>' ]);
is($r->{status}, 400, 'a malformed Last-Event-ID: 400');
$r = $t->request(GET => '/api/ask/' . uuid() . '/events');
is($r->{status}, 401, 'no token: 401');

# a live answer: one event every 150 ms

$mock->set(chunk_ms => 150, delay_ms => 0);
my $q = 'How is a live answer streamed?';
my $t0 = time;
my $a = ask('alice', $q);
ok($a->{jobId}, 'a question queued');
my $s = open_stream('alice', $a->{jobId});
my ($head, $ev) = read_stream($s, 15);
my $end = time;
like($head, qr{^HTTP/1\.\d 200}, 'the stream: 200');
like($head, qr{content-type: text/event-stream}i, '... text/event-stream');
like($head, qr{x-accel-buffering: no}i, '... not buffered by a proxy');
my @e = map { parse($_->[1]) } @$ev;
my @deltas = grep { ($_->{event} // '') eq 'delta' } @e;
cmp_ok(scalar @deltas, '>=', 5, scalar(@deltas) . ' delta events');
my ($first) = grep { (parse($_->[1])->{event} // '') eq 'delta' } @$ev;
ok($first && $end - $first->[0] > 0.5,
   sprintf('the first piece came %.2f s before the end', $end
           - ($first ? $first->[0] : $end)));
my $text = join '', map { decode_json($_->{data})->{text} } @deltas;
is($text, "Mock answer to: $q", 'the pieces make the answer');
is($e[-1]{event}, 'done', 'the stream ends with "done"');
my $done = decode_json($e[-1]{data});
is($done->{answer}, $text, '... whose answer is the pieces');
is($t->psql("SELECT content FROM chat_messages WHERE job_id = "
            . "'$a->{jobId}' AND role = 'assistant'"), $text,
   '... and the stored message');
ok(!grep({ !$_->{comment} && ($_->{id} // '') !~ /^\d+-\d+$/ } @e),
   'each event has an id');

# join after the end: all at once; resume after the third piece

$s = open_stream('alice', $a->{jobId});
my ($h2, $ev2) = read_stream($s, 5);
my @events = grep { $_ !~ /^:/ } map { $_->[1] } @$ev;
is(scalar @$ev2, scalar @events, 'joined after the end: the same events');
is(join('|', map { $_->[1] } @$ev2), join('|', @events),
   '... the same text');
my $third = $deltas[2]{id};
$s = open_stream('alice', $a->{jobId}, "Last-Event-ID: $third");
my (undef, $ev3) = read_stream($s, 5);
my @e3 = map { parse($_->[1]) } @$ev3;
my $rest = join '', map { decode_json($_->{data})->{text} }
                    grep { ($_->{event} // '') eq 'delta' } @e3;
is(join('', map { decode_json($_->{data})->{text} } @deltas[0 .. 2])
   . $rest, $text, 'Last-Event-ID: the rest, nothing lost or repeated');
$s = open_stream('bob', $a->{jobId});
my ($h4) = read_stream($s, 3);
like($h4, qr{^HTTP/1\.\d 404}, 'another user\'s job: 404');

# a failed attempt mid-answer, then a new one: "restart" in between

$mock->set(chunk_ms => 50, script => ['stream-error']);
my $b = ask('alice', 'Does a restart show?');
$s = open_stream('alice', $b->{jobId});
my (undef, $evb) = read_stream($s, 15);
my @eb = map { parse($_->[1]) } @$evb;
is(join(' ', map { $_->{event} } grep { !$_->{comment} } @eb),
   join(' ', ('delta') x 3, 'restart',
        ('delta') x (() = "Mock answer to: Does a restart show?" =~ /\S+/g),
        'done'),
   'an error event mid-answer: three pieces, "restart", the new attempt');

# an idle stream is kept open with comments; the job's end still arrives

$p->stop;
my $c = ask('alice', 'Who answers while the pool is away?');
$s = open_stream('alice', $c->{jobId});
my $sel = IO::Select->new($s);
my ($buf, $pings) = ('', 0);
my $t1 = time;
while (time - $t1 < 2.6) {
    next unless $sel->can_read(0.1);
    sysread($s, my $chunk, 65536) or last;
    $buf .= $chunk;
}
$pings = () = $buf =~ /^: ping$/mg;
cmp_ok($pings, '>=', 2, "an idle stream: $pings pings in 2.6 s");
# the worker's registration as the job's listener expires in Redis (an
# hour); an idle stream renews it every four pings
my $lk = "{ragnx}:listen:$c->{jobId}";
cmp_ok($t->redis('TTL', $lk), '>', 3500, 'an idle stream: its worker listens');
$t->redis('DEL', $lk);
$t1 = time;
while (time - $t1 < 6 && !$t->redis('EXISTS', $lk)) {
    next unless $sel->can_read(0.1);
    sysread($s, my $chunk, 65536) or last;
    $buf .= $chunk;
}
ok($t->redis('EXISTS', $lk),
   sprintf('... and renews the registration when it is gone (%.1f s)',
           time - $t1));
$mock->set(chunk_ms => 0);
$p->start;
$t1 = time;
while (time - $t1 < 15 && $buf !~ /^event: done$/m) {
    next unless $sel->can_read(0.1);
    sysread($s, my $chunk, 65536) or last;
    $buf .= $chunk;
}
like($buf, qr/^event: done\ndata: \{"answer":"Mock answer to: Who answers/m,
     '... and the answer once the pool is back');
Ragnx::Test::check_raw(@{ delete $sent{0 + $s} }, $buf);

# POST /api/ask with Accept: text/event-stream: the job, then its answer

sub post_stream {
    my ($who, $body) = @_;
    my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1',
                                  PeerPort => $t->{port}, Proto => 'tcp')
        or die "connect: $!";
    print $s "POST /api/ask HTTP/1.0\r\nHost: localhost\r\n"
             . ($who ? "Authorization: Bearer " . token($who) . "\r\n" : '')
             . "Accept: text/event-stream\r\n"
             . "Content-Type: application/json\r\n"
             . "Content-Length: " . length($body) . "\r\n\r\n$body";
    $sent{0 + $s} = [POST => '/api/ask'];
    return $s;
}

$mock->set(chunk_ms => 100);
my $pq = 'Is a streamed ask answered as it is written?';
$s = post_stream('carol', $json->encode({ query => $pq }));
my ($ph, $pev) = read_stream($s, 15);
like($ph, qr{^HTTP/1\.\d 200}, 'POST with Accept: text/event-stream: 200');
like($ph, qr{content-type: text/event-stream}i, '... a stream');
my @pe = grep { !$_->{comment} } map { parse($_->[1]) } @$pev;
is($pe[0]{event}, 'job', '... "job" first');
my $pj = decode_json($pe[0]{data});
like($pj->{jobId} // '', qr/^[0-9a-f-]{36}$/, '... with the job id');
like($pj->{chatId} // '', qr/^[0-9a-f-]{36}$/, '... and the chat id');
my $ptext = join '', map { decode_json($_->{data})->{text} }
                     grep { $_->{event} eq 'delta' } @pe;
is($ptext, "Mock answer to: $pq", '... then the pieces of the answer');
is($pe[-1]{event}, 'done', '... and "done"');
is($t->psql("SELECT content FROM chat_messages WHERE job_id = "
            . "'$pj->{jobId}' AND role = 'assistant'"), $ptext,
   '... the stored answer');

$s = post_stream('dave', $json->encode({ query => "  $pq " }));
my (undef, $hev) = read_stream($s, 5);
my @he = map { parse($_->[1]) } @$hev;
is(join(' ', map { $_->{event} } @he), 'job delta done',
   'a cache hit: "job", the whole answer at once, "done"');
is(decode_json($he[0]{data})->{source}, 'cache', '... from the cache');
is(decode_json($he[1]{data})->{text}, $ptext, '... the same answer');
is(decode_json($he[2]{data})->{answer}, $ptext, '... in "done" too');

$s = post_stream('carol', '{"query":""}');
my ($vh) = read_stream($s, 3);
like($vh, qr{^HTTP/1\.\d 400}, 'a bad body: 400, before any stream');
like($vh, qr{content-type: application/json}i, '... JSON');
$s = post_stream(undef, $json->encode({ query => $pq }));
my ($uh) = read_stream($s, 3);
like($uh, qr{^HTTP/1\.\d 401}, 'no token: 401, before any stream');

# clients that leave mid-stream free what they held

$mock->set(chunk_ms => 200);
my $d = ask('alice', 'Who leaves mid-stream?');
my @socks = map { open_stream('alice', $d->{jobId}) } 1 .. 30;
sleep 0.6;
close $_ for @socks;
$s = open_stream('alice', $d->{jobId});
my (undef, $evd) = read_stream($s, 15);
is(parse($evd->[-1][1])->{event}, 'done',
   'after 30 clients left mid-stream, a stream of the same job ends');
sleep 0.3;
unlike($t->error_log, qr/\[(alert|emerg)\]|AddressSanitizer|runtime error/,
       'no alert or sanitizer report');

$p->finish;
