#!/usr/bin/perl
# The LLM circuit breaker: a provider that answers 401 (or 403) refuses
# the pool's key, not a job.  LLM calls pause, /health says why (503,
# "degraded", "llm":"unauthorized"), the jobs wait in the queue with
# their attempts given back, one probes after a backoff, and once the
# key works every job completes: none dead-lettered.  A pool that dies
# with the breaker open leaves nothing stuck (the key has a TTL).

use strict;
use warnings;
use lib 't/lib';
use Test::More;
use JSON::PP;
use Time::HiRes qw(sleep time);
use Ragnx::Test;
use Ragnx::Pool;
use Ragnx::MockLLM;

my $t = Ragnx::Test->new;
my $rp = $t->start_redis;
$t->start_postgres;
my $mock = Ragnx::MockLLM->start($t);
my $p = Ragnx::Pool->new($t);
my $llmkey = $t->file('llm.key', "sk-revoked\n");
$p->configure(llm_provider => 'anthropic', llm_base_url => $mock->url,
              llm_model => 'claude-mock', llm_api_key_file => $llmkey,
              max_attempts => 2, retry_base => 200, retry_max => 800);
my ($rc, $out) = $p->cli('migrate');
is($rc, 0, 'migrate') or diag($out);
$p->start;

$t->start_nginx(
    http   => "ragnx_redis 127.0.0.1:$rp;",
    server => "location = /health { ragnx_health; }\n");

sub health {
    my $r = $t->request(GET => '/health');
    return ($r->{status}, Ragnx::Test::json_body($r) || {});
}

sub wait_for {
    my ($cond, $timeout) = @_;
    my $deadline = time + ($timeout || 10);
    until ($cond->()) {
        return 0 if time > $deadline;
        sleep 0.02;
    }
    return 1;
}

sub log_since { substr($p->worker_log, $_[0]) }

my ($st, $h) = health();
is($st, 200, '/health: 200 with the breaker closed');
ok(!exists $h->{llm}, '... and no "llm" reason');

# the key refused: jobs wait, nothing is dead-lettered

$mock->set(default => '401');
my $log0 = length $p->worker_log;
my $n0 = $mock->stats->{requests};
my @ids = map { scalar $p->ask(query => "question $_ for a revoked key") }
          1 .. 6;

ok(wait_for(sub { ($t->redis('GET', '{ragnx}:llm') || '') eq 'unauthorized' }),
   'the breaker opened, published in {ragnx}:llm');
my $ttl = $t->redis('PTTL', '{ragnx}:llm');
cmp_ok($ttl, '>', 0, "... with a TTL ($ttl ms)");

($st, $h) = health();
is($st, 503, '/health: 503 while open');
is($h->{status}, 'degraded', '... "degraded"');
is($h->{llm}, 'unauthorized', '... "llm":"unauthorized"');
is($h->{redis}, 'ok', '... Redis itself ok');

# several probe rounds: the backoff doubles from 200 ms to 800 ms
sleep 3;
my $calls = $mock->stats->{requests} - $n0;
cmp_ok($calls, '<', 6 + 12, "LLM calls paused: $calls in 3 s for 6 jobs");
my $log = log_since($log0);
my $lines = () = $log =~ /LLM unauthorized: the provider refuses the key/g;
cmp_ok($lines, '>=', 1, 'the log says the key is refused');
cmp_ok($lines, '<=', 2, "... rate-limited ($lines lines in 3 s)");
unlike($log, qr/sk-revoked/, '... never the key itself');
is($t->redis('XLEN', '{ragnx}:dead'), 0, 'nothing dead-lettered');
for my $id (@ids) {
    my $j = $p->job($id);
    like($j->{status}, qr/^(waiting|active|delayed)$/,
         "job $id waits ($j->{status})");
    cmp_ok($j->{attempts} || 0, '<=', 1,
           '... its attempts not consumed (max_attempts 2)');
}

# the key fixed: a probe succeeds, the breaker closes, every job completes

$mock->set(default => 'ok');
for my $id (@ids) {
    my $j = $p->wait_job($id, 20);
    is($j->{status}, 'completed', "job $id completed once the key works");
}
is($t->redis('XLEN', '{ragnx}:dead'), 0, 'none dead-lettered');
is($t->redis('EXISTS', '{ragnx}:llm'), 0, 'the breaker closed: key removed');
($st, $h) = health();
is($st, 200, '/health: 200 again');
ok(!exists $h->{llm}, '... without an "llm" reason');
like(log_since($log0), qr/LLM calls resumed/, 'the log says calls resumed');

# 403 opens it too; a pool that dies with it open leaves nothing stuck

$mock->set(default => '403');
my ($id) = $p->ask(query => 'a question for a forbidden key');
ok(wait_for(sub { ($t->redis('GET', '{ragnx}:llm') || '') eq 'forbidden' }),
   '403: the breaker opened ("forbidden")');
($st, $h) = health();
is("$st $h->{llm}", '503 forbidden', '/health says so');
$p->stop('KILL');
$ttl = $t->redis('PTTL', '{ragnx}:llm');
ok($ttl > 0 && $ttl <= 2 * 800 + 10000,
   "a pool killed with it open: the key expires by itself ($ttl ms left)");
$mock->set(default => 'ok');
$p->start;
is($p->wait_job($id, 20)->{status}, 'completed',
   'the waiting job completes under the next pool (the key fixed)');
is($t->redis('EXISTS', '{ragnx}:llm'), 0,
   '... whose first answer removed the key at once');
($st, $h) = health();
is($st, 200, '... and /health is 200');

$p->finish;
