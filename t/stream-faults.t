#!/usr/bin/perl
# Streams under faults, seen by a client through nginx: a single-flight
# follower streams its leader's answer; a pool worker, then the whole
# pool, killed with SIGKILL mid-answer (the job handed over, or reclaimed
# by a new pool): the open stream gets "restart" and the whole second
# attempt; provider errors mid-answer ("restart", or "error" once the
# attempts are spent); clients leaving at random points (before the
# headers, after them, mid-event, after some pieces, with a reset)
# leave the nginx workers whole; Redis restarted mid-stream ends the
# stream with "error" or lets it finish, never leaves it hanging.

use strict;
use warnings;
use lib 't/lib';
use Test::More;
use Cwd qw(getcwd);
use JSON::PP;
use IO::Socket::INET;
use IO::Select;
use Socket qw(SOL_SOCKET SO_LINGER);
use Time::HiRes qw(sleep time);
use Ragnx::Test;
use Ragnx::Pool qw(uuid);
use Ragnx::MockLLM;

my $root = getcwd();
my $t = Ragnx::Test->new;
$t->start_redis(appendonly => 1);
$t->start_postgres;
my $mock = Ragnx::MockLLM->start($t);
my $p = Ragnx::Pool->new($t);
my $secret = 'stream-faults-secret-0123456789abcdef';
my $key = $t->file('hs.key', $secret);
my $llmkey = $t->file('llm.key', "sk-test\n");
my %conf = (llm_provider => 'anthropic', llm_base_url => $mock->url,
            llm_model => 'claude-mock', llm_api_key_file => $llmkey,
            jwt_key_file => $key, concurrency => 4, workers => 1,
            max_attempts => 3, retry_base => 100, retry_max => 200,
            visibility_timeout => 2000, llm_timeout => 10000);
$p->configure(%conf);
my ($rc, $out) = $p->cli('migrate');
is($rc, 0, 'migrate') or diag($out);
$p->start;

$t->start_nginx(
    workers => 2,
    http    => "ragnx_redis 127.0.0.1:" . $t->redis_port . ";",
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

sub open_stream {
    my ($who, $id) = @_;
    return $t->sse_open("/api/ask/$id/events",
                        'Authorization: Bearer ' . token($who));
}

# a stream read for at most $limit s, or until $until->(events) is true
# (Ragnx::Test::sse_read): { head, events => [parsed, ...], times, closed }
sub read_stream {
    my ($st, $limit, $until) = @_;
    return Ragnx::Test::sse_read($st, $limit, $until);
}

sub kinds { join ' ', map { $_->{event} } @{ $_[0] } }
sub text_of {
    join '', map { decode_json($_->{data})->{text} }
             grep { $_->{event} eq 'delta' } @_;
}

# the pieces after the last "restart"
sub last_attempt {
    my @e = @{ $_[0] };
    my ($i) = grep { $e[$_]{event} eq 'restart' } reverse 0 .. $#e;
    return defined $i ? @e[$i + 1 .. $#e] : @e;
}

sub stored {
    my ($id) = @_;
    return $t->psql("SELECT content FROM chat_messages WHERE job_id = "
                    . "'$id' AND role = 'assistant'");
}

sub words { scalar(() = $_[0] =~ /\S+/g) }

sub pieces { scalar grep { $_->{event} eq 'delta' } @{ $_[0] } }

sub wait_for {
    my ($cond, $timeout) = @_;
    my $deadline = time + $timeout;
    until ($cond->()) {
        return 0 if time > $deadline;
        sleep 0.05;
    }
    return 1;
}

sub ended { @{ $_[0] } && $_[0][-1]{event} =~ /^(done|error)$/ }

sub nginx_workers {
    my @w = Ragnx::Test::children($t->{pids}{nginx});
    return join ',', sort @w;
}
my $nginx_workers = nginx_workers();

# a follower of a single-flight leader streams the leader's answer

$mock->set(chunk_ms => 150, delay_ms => 0);
my $q = 'What does a follower of a streamed answer see?';
my $lead = ask('alice', $q);
my $fol = ask('bob', $q);
ok($lead->{jobId} && $fol->{jobId}, 'two users ask the same question');
is($t->redis('HGET', "{ragnx}:job:$fol->{jobId}", 'leader'), $lead->{jobId},
   '... the second follows the first');
isnt($fol->{chatId}, $lead->{chatId}, '... in a chat of its own');
my $fs = read_stream(open_stream('bob', $fol->{jobId}), 20, \&ended);
my @fe = @{ $fs->{events} };
cmp_ok(pieces(\@fe), '>=', 5,
       'the follower streams pieces');
ok(@fe && $fs->{times}[-1] - $fs->{times}[0] > 0.5,
   '... as they are written, not at once');
is(text_of(@fe), "Mock answer to: $q", '... that make the answer');
is(@fe ? $fe[-1]{event} : '', 'done', '... ending with "done"');
my $ls = read_stream(open_stream('alice', $lead->{jobId}), 10, \&ended);
my @le = @{ $ls->{events} };
is(@fe ? decode_json($fe[-1]{data})->{answer} : '',
   @le ? decode_json($le[-1]{data})->{answer} : 'none',
   "... whose answer is the leader's");
is(join('|', map { $_->{id} } @fe), join('|', map { $_->{id} } @le),
   '... the same events as the leader\'s stream');
is(read_stream(open_stream('carol', $fol->{jobId}), 3)->{head} =~
   m{^HTTP/1\.\d 404} ? 1 : 0, 1, 'a third user: 404 for the follower\'s job');

# the worker process killed mid-answer: handed over, streamed again

sub killed_mid_answer {
    my ($name, $kill) = @_;
    $mock->set(chunk_ms => 200);
    my $q = "Is an answer streamed again after $name dies mid-answer?";
    my $a = ask('alice', $q);
    my $st = read_stream(open_stream('alice', $a->{jobId}), 15,
                         sub { pieces($_[0]) >= 3 });
    cmp_ok(pieces($st->{events}), '>=', 3, "$name: pieces streamed");
    $mock->set(chunk_ms => 50);
    $kill->();
    read_stream($st, 45, \&ended);
    my @e = @{ $st->{events} };
    my $k = kinds(\@e);
    like($k, qr/^(delta )+restart (delta )+done$/,
         "$name killed: pieces, \"restart\", the new attempt, \"done\"")
        or diag($k);
    my $answer = "Mock answer to: $q";
    is(text_of(last_attempt(\@e)), $answer,
       '... the pieces after "restart" make the answer');
    is(stored($a->{jobId}), $answer, '... which is the stored one');
    is(@e ? eval { decode_json($e[-1]{data})->{answer} } : '', $answer,
       '... and "done"\'s');
    my ($r) = grep { $_->{event} eq 'restart' } @e;
    is($r ? decode_json($r->{data})->{attempt} : 0, 2,
       '... "restart" names attempt 2');
}

killed_mid_answer('its worker', sub {
    my @kids = $p->children;
    kill 'KILL', @kids;
    my %old = map { $_ => 1 } @kids;
    ok(wait_for(sub { grep { !$old{$_} } $p->children }, 10),
       'the worker is started again');
});

# the whole pool: its jobs are reclaimed after the visibility timeout by
# the pool started again
killed_mid_answer('the whole pool', sub {
    my $pid = $p->pid;
    my @kids = $p->children;
    kill 'KILL', $pid, @kids;
    waitpid($pid, 0);
    delete $t->{pids}{worker};
    ok(wait_for(sub { !grep { kill 0, $_ } @kids }, 10), 'the pool is gone');
    $p->start;
});

# provider errors mid-answer: a new attempt, until the attempts are spent

$mock->set(chunk_ms => 30, script => ['stream-cut']);
$q = 'Does a cut answer start again?';
my $a = ask('alice', $q);
my @e = @{ read_stream(open_stream('alice', $a->{jobId}), 20,
                       \&ended)->{events} };
is(kinds(\@e), join(' ', ('delta') x 3, 'restart',
                    ('delta') x words("Mock answer to: $q"), 'done'),
   'the provider closes mid-answer: "restart", then the whole answer');
is(text_of(last_attempt(\@e)), stored($a->{jobId}), '... the stored one');

$mock->set(script => [('stream-error') x 3]);
$a = ask('alice', 'Is an answer that always fails an error?');
@e = @{ read_stream(open_stream('alice', $a->{jobId}), 20,
                    \&ended)->{events} };
is(kinds(\@e), join(' restart ', ('delta delta delta') x 3) . ' error',
   'an error event on every attempt: "restart" twice, then "error"');
like(@e ? $e[-1]{data} : '', qr/^\{"error":"[^"]+"\}$/,
     '... which says why');
is($p->job($a->{jobId})->{status}, 'failed', '... the job failed');

$mock->set(script => ['400']);
$a = ask('alice', 'Is a refused question an error at once?');
@e = @{ read_stream(open_stream('alice', $a->{jobId}), 20,
                    \&ended)->{events} };
is(kinds(\@e), 'error', 'a request the provider refuses: "error" alone')
    or diag(explain($p->job($a->{jobId})), $p->worker_log =~ /(.*$a->{jobId}.*)/g);

# answers that end within milliseconds of their stream's first read: the
# end's wake-up may come in before the stream is in the wake table,
# whose second read then finds it (a stream left waiting would hang)

# (the failures spread over the first few milliseconds, where the first
# reads are)
$mock->set(script => [('400') x 100], delay_ms => 0, delay_max_ms => 8);
my @qs = map {
    open_stream('alice',
                ask('alice', "Does quick failure $_ reach its stream?")
                    ->{jobId}) } 1 .. 100;
my @qe = map { read_stream($_, 15, \&ended)->{events} } @qs;
is(scalar(grep { kinds($_) eq 'error' } @qe), 100,
   '100 answers failing at once: each stream ends with "error"');
$mock->set(delay_max_ms => 0);

# clients that leave at random points, many at once, over a few answers

$mock->set(chunk_ms => 40, script => []);
my @jobs = map { ask("user$_", "Who leaves answer $_ early?")->{jobId} }
           1 .. 6;
srand(7);
my (@open, %how);
for my $i (0 .. 239) {
    my $u = $i % 6;
    my $s = open_stream('user' . ($u + 1), $jobs[$u])->{s};
    my $mode = (qw(request headers partial pieces reset))[$i % 5];
    $how{$mode}++;
    push @open, { s => $s, mode => $mode, k => 1 + int(rand 8),
                  bytes => 1 + int(rand 60), got => '' };
}
my $sel = IO::Select->new(map { $_->{s} } @open);
my %by = map { fileno($_->{s}) => $_ } @open;
# before the headers: gone at once
for my $c (grep { $_->{mode} eq 'request' } @open) {
    $sel->remove($c->{s});
    close $c->{s};
    $c->{gone} = 1;
}
my $t0 = time;
while ($sel->count && time - $t0 < 30) {
    for my $s ($sel->can_read(0.1)) {
        my $c = $by{fileno $s};
        my $n = sysread($s, my $chunk, $c->{mode} eq 'partial' ? 7 : 4096);
        $c->{got} .= $chunk if $n;
        my $head = index($c->{got}, "\r\n\r\n");
        my $body = $head < 0 ? '' : substr($c->{got}, $head + 4);
        my $pieces = () = $body =~ /^event: delta$/mg;
        my $leave = !$n
            || ($c->{mode} eq 'headers' && $head >= 0)
            || ($c->{mode} eq 'partial' && length $body >= $c->{bytes}
                && $body !~ /\n\n\z/)
            || ($c->{mode} =~ /pieces|reset/ && $pieces >= $c->{k});
        next unless $leave;
        if ($c->{mode} eq 'reset') {
            # an RST, not a FIN: the next write to it fails at once
            setsockopt($s, SOL_SOCKET, SO_LINGER, pack('ii', 1, 0));
        }
        $sel->remove($s);
        close $s;
        $c->{gone} = 1;
    }
}
is(scalar(grep { !$_->{gone} } @open), 0,
   '240 clients left at random points (' . join(', ', map { "$how{$_} $_" }
                                            sort keys %how) . ')');
my @whole = map { read_stream(open_stream('user' . ($_ + 1), $jobs[$_]), 20,
                              \&ended) } 0 .. 5;
is(scalar(grep { @{ $_->{events} } && $_->{events}[-1]{event} eq 'done' }
          @whole), 6, '... the answers they left stream whole afterwards');
is(nginx_workers(), $nginx_workers,
   '... the nginx workers are the same processes');
unlike($t->error_log, qr/\[(alert|emerg)\]|AddressSanitizer|runtime error|
                         exited\ on\ signal/x,
       '... no alert, crash or sanitizer report');

# Redis restarted mid-stream: the stream ends with "error" or goes on to
# "done"; it never hangs

$mock->set(chunk_ms => 200);
$q = 'What does a stream do when Redis restarts?';
$a = ask('alice', $q);
my $st = read_stream(open_stream('alice', $a->{jobId}), 15,
                     sub { pieces($_[0]) >= 2 });
cmp_ok(scalar @{ $st->{events} }, '>=', 2, 'Redis restart: pieces streamed');
$t->stop_redis;
sleep 0.5;
$t->start_redis(appendonly => 1);
read_stream($st, 30, \&ended);
my $last = @{ $st->{events} } ? $st->{events}[-1]{event} : '';
like($last, qr/^(error|done)$/, "... the stream ends with \"$last\"");
ok(!defined $st->{buf} || $st->{buf} eq '', '... nothing after it');
if ($last eq 'done') {
    is(decode_json($st->{events}[-1]{data})->{answer}, "Mock answer to: $q",
       '... with the answer');
} else {
    is($st->{events}[-1]{data}, '{"error":"queue unavailable"}',
       '... "queue unavailable"');
}
ok(read_stream($st, 3)->{closed}, '... and the response is closed');
ok(wait_for(sub { $p->job($a->{jobId})->{status} eq 'completed' }, 30),
   'the job completes once Redis is back');
$st = read_stream(open_stream('alice', $a->{jobId}), 10, \&ended);
is(@{ $st->{events} } ? $st->{events}[-1]{event} : '', 'done',
   '... and a new stream of it ends with "done"');
unlike($t->error_log, qr/\[(alert|emerg)\]|AddressSanitizer|runtime error/,
       'no alert or sanitizer report');

$p->finish;
