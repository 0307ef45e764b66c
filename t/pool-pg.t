#!/usr/bin/perl
# The pool and a PostgreSQL that hangs or restarts.  A stopped server
# (SIGSTOP: the kernel still accepts and acknowledges for it) answers
# nothing: every wait ends at db_query_timeout, the jobs retry, and once
# the server runs again they complete with the answer the LLM gave the
# first time (one LLM request per job).  After a restart, the pool's
# stale connections are found and replaced: the next job neither fails
# a batch nor asks the LLM twice.

use strict;
use warnings;
use lib 't/lib';
use Test::More;
use Time::HiRes qw(sleep time);
use Ragnx::Test;
use Ragnx::Pool;
use Ragnx::MockLLM;

my $t = Ragnx::Test->new;
$t->start_redis;
$t->start_postgres;
my $mock = Ragnx::MockLLM->start($t);
my $p = Ragnx::Pool->new($t);

my $BOUND = 1500;

$p->configure(llm_provider => 'openai', llm_base_url => $mock->url . '/v1',
              llm_model => 'mock', llm_timeout => 10000,
              db_query_timeout => $BOUND, max_attempts => 10,
              visibility_timeout => 8000);
my ($rc, $out) = $p->cli('migrate');
is($rc, 0, 'migrate') or diag($out);

# the setting is checked as every other one
{
    $p->configure(database => $t->pg_conninfo, db_query_timeout => 50);
    ($rc, $out) = $p->cli('-t');
    isnt($rc, 0, 'db_query_timeout below its bound refused');
    like($out, qr/db_query_timeout/, '... naming the setting');
}

$p->configure(llm_provider => 'openai', llm_base_url => $mock->url . '/v1',
              llm_model => 'mock', llm_timeout => 10000,
              db_query_timeout => $BOUND, max_attempts => 10,
              visibility_timeout => 8000);
$p->start;

sub messages {
    my ($id) = @_;
    return $t->psql("SELECT count(*) FROM chat_messages WHERE job_id = '$id'");
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

# the postmaster and its children (backends, checkpointer, ...)
sub pg_procs {
    my $pm = $t->{pids}{postgres};
    return (Ragnx::Test::children($pm), $pm);
}

my @stopped;
END { kill 'CONT', @stopped if @stopped }

my ($id) = $p->ask(query => 'a first question');
is($p->wait_job($id)->{status}, 'completed', 'a first job completes');

# PostgreSQL stopped while jobs wait for the LLM: their writes time out

{
    # a cache hit first: the records lane has its connection open
    my ($wid) = $p->ask(query => 'a first question', owner => 'carol');
    ok(wait_for(sub { messages($wid) == 2 }), 'a hit recorded');
    $mock->set(delay_ms => 1000);
    my $n0 = $mock->stats->{requests};
    my $log0 = length $p->worker_log;
    my @ids = map { scalar $p->ask(query => "stopped question $_") } 1 .. 4;
    ok(wait_for(sub { $mock->stats->{requests} >= $n0 + 4 }),
       'four jobs wait for the LLM');
    @stopped = pg_procs();
    kill 'STOP', @stopped;
    my $t0 = time;
    # a cache hit meanwhile: its record waits on the records lane
    my ($rid, $hit) = $p->ask(query => 'a first question', owner => 'bob');
    is($hit, 'hit', 'a cache hit while the database is stopped');
    ok(wait_for(sub { grep { ($p->job($_)->{error} || '')
                             =~ /^database (timeout|unavailable)/ } @ids },
                6),
       'a job gave up on the stopped database and waits for a retry');
    my $waited = time - $t0;
    cmp_ok($waited, '<', 1 + $BOUND / 1000 + 2,
           sprintf('... %.1f s after the stop (bound %.1f s + the LLM '
                   . 'call)', $waited, $BOUND / 1000));
    like(log_since($log0), qr/no answer within $BOUND ms \(db_query_timeout\)/,
         'the log says which wait ended and why');
    ok(wait_for(sub { log_since($log0) =~ /postgres ragnx_records: no answer/ },
                5),
       'the records lane gave up on its batch too');
    sleep 4.5 - (time - $t0) if time - $t0 < 4.5;
    kill 'CONT', reverse @stopped;
    @stopped = ();
    for my $id (@ids) {
        my $j = $p->wait_job($id, 40);
        is($j->{status}, 'completed', "job $id completed after SIGCONT");
        cmp_ok($j->{attempts}, '>', 1, "... at attempt $j->{attempts}");
        is(messages($id), 2, '... its messages stored once');
        ok(!exists $j->{held}, '... nothing left held in its hash');
    }
    is($mock->stats->{requests} - $n0, 4, 'the LLM was asked once per job');
    ok(wait_for(sub { messages($rid) == 2 }, 10),
       'the hit\'s record written once the database runs again');
    $mock->set(delay_ms => 0);
}

# PostgreSQL down when a job's answer comes: the answer is held in the
# job's hash and stored by its retry, without asking the LLM again

{
    $mock->set(delay_ms => 1000);
    my $n0 = $mock->stats->{requests};
    my $log0 = length $p->worker_log;
    my ($id) = $p->ask(query => 'a question the database misses');
    ok(wait_for(sub { $mock->stats->{requests} > $n0 }),
       'a job waits for the LLM');
    $t->stop_postgres;
    ok($p->wait_status($id, 'delayed', 10), 'its write failed: delayed');
    like($p->job($id)->{error}, qr/^database unavailable/,
         '... the error says why');
    ok($p->job($id)->{held}, '... its answer held in its hash');
    $t->start_postgres;
    my $j = $p->wait_job($id, 30);
    is($j->{status}, 'completed', 'completed once the database is back');
    like($j->{answer}, qr/Mock answer to: a question the database misses/,
         '... with the answer the LLM gave');
    is($mock->stats->{requests} - $n0, 1, '... which was asked once');
    is(messages($id), 2, '... its messages stored once');
    ok(!exists $j->{held}, '... and nothing left held');
    like(log_since($log0), qr/storing the answer of an earlier attempt/,
         'the log says so');
    $mock->set(delay_ms => 0);
}

# PostgreSQL restarted between two jobs, and during a job's LLM call

{
    my $n0 = $mock->stats->{requests};
    my $log0 = length $p->worker_log;
    $t->stop_postgres;
    $t->start_postgres;
    my ($id) = $p->ask(query => 'a question after a restart');
    my $j = $p->wait_job($id, 20);
    is($j->{status}, 'completed', 'the next job after a restart completes');
    is($j->{attempts}, 1, '... at its first attempt');
    is($mock->stats->{requests} - $n0, 1, '... with one LLM request');

    $mock->set(delay_ms => 1500);
    $n0 = $mock->stats->{requests};
    ($id) = $p->ask(query => 'a question across a restart');
    ok(wait_for(sub { $mock->stats->{requests} > $n0 }),
       'a job waits for the LLM');
    $t->stop_postgres;
    $t->start_postgres;
    $j = $p->wait_job($id, 20);
    is($j->{status}, 'completed', 'the job completes');
    is($j->{attempts}, 1, '... at its first attempt');
    is($mock->stats->{requests} - $n0, 1, '... with one LLM request');
    is(messages($id), 2, '... its messages stored once');
    like(log_since($log0), qr/postgres connection lost: \d+ requests sent again/,
         'the stale connection was replaced');
    $mock->set(delay_ms => 0);
}

# PostgreSQL down: the log says so, not "not migrated"

{
    my $log0 = length $p->worker_log;
    $t->stop_postgres;
    sleep 5.5;
    my $log = log_since($log0);
    like($log, qr/postgres (connect failed|schema check failed)/,
         'the log says the database is away');
    unlike($log, qr/not migrated/, '... and never that it is not migrated');
    $t->start_postgres;
    my ($id) = $p->ask(query => 'a question when it is back');
    is($p->wait_job($id, 20)->{status}, 'completed', 'back to work');
}

$p->finish;
