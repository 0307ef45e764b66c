#!/usr/bin/perl
# Long-poll: GET /api/ask/{jobId}?wait=N answers as soon as the job ends
# (the completion or failure script publishes the job's id on the wake
# channel of each nginx worker waiting for it), or with its current
# status after N seconds.  A bad N is a 400 JSON error; an unknown or
# foreign job is a 404 at once; a client that leaves mid-wait frees its
# wait (nothing answers into a closed request).

use strict;
use warnings;
use lib 't/lib';
use Test::More;
use Cwd qw(getcwd);
use JSON::PP;
use IO::Socket::INET;
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
my $secret = 'longpoll-test-secret-0123456789abcdef';
my $key = $t->file('hs.key', $secret);
my $llmkey = $t->file('llm.key', "sk-test\n");
$p->configure(llm_provider => 'anthropic', llm_base_url => $mock->url,
              llm_model => 'claude-mock', llm_api_key_file => $llmkey,
              jwt_key_file => $key, concurrency => 4, workers => 1,
              max_attempts => 1);
my ($rc, $out) = $p->cli('migrate');
is($rc, 0, 'migrate') or diag($out);

$t->start_nginx(
    workers => 2,
    http    => "ragnx_redis 127.0.0.1:$rp;",
    server  => "ragnx_jwt_key_file $key;\n" . <<"EOF");
        location = /api/ask {
            ragnx_jwt on;
            ragnx_validate_schema $root/schemas/ask.json;
            ragnx_ask;
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

# GET ?wait=...: (status, body, seconds taken)
sub poll {
    my ($who, $id, $wait) = @_;
    my $t0 = time;
    my $r = $t->request(GET => "/api/ask/$id" . (defined $wait
                                                  ? "?wait=$wait" : ''),
        headers => [ Authorization => 'Bearer ' . token($who) ]);
    return ($r->{status}, Ragnx::Test::json_body($r) || {}, time - $t0, $r);
}

# bad N: 400, JSON, at once

for my $bad ('abc', '0', '31', '-1', '', '1.5') {
    my ($st, $j, $took, $r) = poll('alice', uuid(), $bad);
    is($st, 400, "wait=$bad: 400");
    like($j->{error} // '', qr/wait/i, '... a JSON error naming wait');
}

# an unknown job, and another user's: 404 at once, however long N

my ($st, $j, $took) = poll('alice', uuid(), 10);
is($st, 404, 'an unknown job: 404');
cmp_ok($took, '<', 1, sprintf('... at once (%.2f s)', $took));

# no pool: the job stays waiting, and the answer comes after N seconds

my $a1 = ask('alice', 'Is the pool there?');
ok($a1->{jobId}, 'a question queued with no pool running');
($st, $j, $took) = poll('bob', $a1->{jobId}, 10);
is($st, 404, 'another user\'s job: 404');
cmp_ok($took, '<', 1, '... at once');
($st, $j, $took) = poll('alice', $a1->{jobId}, 2);
is($st, 200, 'wait=2 on a waiting job: 200');
is($j->{status}, 'waiting', '... with its status');
cmp_ok($took, '>=', 1.9, sprintf('... after the 2 s (%.2f s)', $took));
cmp_ok($took, '<', 3.5, '... not much later');

# the pool answers in 1.5 s: each long-poll returns as the job ends

$mock->set(delay_ms => 1500);
$p->start;
my $a2 = ask('alice', 'How long does the mock take?');
my @reqs = map { [ GET => "/api/ask/$a2->{jobId}?wait=20",
                   headers => [ Authorization => 'Bearer '
                                    . token('alice') ] ] } 1 .. 4;
my $t0 = time;
my $res = $t->parallel(\@reqs);
$took = time - $t0;
is(scalar(grep { $_->{status} == 200
                 && (Ragnx::Test::json_body($_) || {})->{status}
                    eq 'completed' } @$res), 4,
   'four long-polls of one job (2 nginx workers): all completed');
cmp_ok($took, '<', 6, sprintf('... as soon as it ended (%.2f s, wait=20)',
                              $took));
is((Ragnx::Test::json_body($res->[0]) || {})->{answer},
   'Mock answer to: How long does the mock take?', '... with the answer');
($st, $j, $took) = poll('alice', $a1->{jobId}, 20);
is($j->{status}, 'completed', 'the first question, now answered');

# a job that has ended: at once

($st, $j, $took) = poll('alice', $a2->{jobId}, 20);
is($j->{status}, 'completed', 'an ended job: its answer');
cmp_ok($took, '<', 1, '... at once');

# a failure wakes too

$mock->set(delay_ms => 1000, script => ['400']);
my $a3 = ask('alice', 'Will this be refused?');
$t0 = time;
($st, $j, $took) = poll('alice', $a3->{jobId}, 20);
is($j->{status}, 'failed', 'a failed job: "failed"');
ok($j->{error}, '... with its error');
cmp_ok($took, '<', 6, sprintf('... as soon as it failed (%.2f s)', $took));

# clients that leave mid-wait: nothing is answered into them, and the
# workers go on serving

$mock->set(delay_ms => 3000);
my $a4 = ask('alice', 'Who leaves early?');
my @socks;
for (1 .. 20) {
    my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1',
                                  PeerPort => $t->{port}, Proto => 'tcp')
        or next;
    print $s "GET /api/ask/$a4->{jobId}?wait=10 HTTP/1.1\r\n"
             . "Host: localhost\r\nAuthorization: Bearer "
             . token('alice') . "\r\n\r\n";
    push @socks, $s;
}
sleep 0.5;
close $_ for @socks;
($st, $j, $took) = poll('alice', $a4->{jobId}, 10);
is($j->{status}, 'completed', 'after 20 clients left mid-wait, a '
   . 'long-poll of the same job completes');
sleep 0.3;
unlike($t->error_log, qr/\[(alert|emerg)\]|AddressSanitizer|runtime error/,
       'no alert or sanitizer report');
is($t->redis('EXISTS', "{ragnx}:watch:$a4->{jobId}"), 0,
   'the job\'s watchers set is gone once it ended');

$p->finish;
