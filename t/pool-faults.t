#!/usr/bin/perl
# The pool under faults: a worker killed with SIGKILL mid-job (its job
# handed over by the supervisor at once; t/pool-drain.t times it), a long LLM
# call outliving the visibility timeout, SIGTERM with jobs in flight,
# PostgreSQL stopped during a job, Redis (AOF) restarted mid-job.  Every
# job completes and its messages are stored exactly once.

use strict;
use warnings;
use lib 't/lib';
use Test::More;
use JSON::PP;
use Time::HiRes qw(sleep time);
use Ragnx::Test;
use Ragnx::Pool qw(uuid);
use Ragnx::MockLLM;

my $t = Ragnx::Test->new;
$t->start_redis(appendonly => 1);
$t->start_postgres;
my $mock = Ragnx::MockLLM->start($t);
my $p = Ragnx::Pool->new($t);

my %conf = (llm_provider => 'openai', llm_base_url => $mock->url . '/v1',
            llm_model => 'mock', llm_timeout => 10000,
            visibility_timeout => 2000, max_attempts => 3);
$p->configure(%conf);
my ($rc, $out) = $p->cli('migrate');
is($rc, 0, 'migrate') or diag($out);
$p->start;

sub messages {
    my ($id) = @_;
    return $t->psql("SELECT count(*) FROM chat_messages WHERE job_id = '$id'");
}

# wait (at most $timeout s) until $cond is true; returns it
sub wait_for {
    my ($cond, $timeout) = @_;
    my $deadline = time + ($timeout || 10);
    until ($cond->()) {
        return 0 if time > $deadline;
        sleep 0.02;
    }
    return 1;
}

# the worker log written since $from (a length)
sub log_since { substr($p->worker_log, $_[0]) }

sub pending {
    return (split /\n/, $t->redis('XPENDING', '{ragnx}:jobs', 'pool'))[0];
}

# a call longer than the visibility timeout is not taken from a live worker

$mock->set(delay_ms => 3500);
my $n0 = $mock->stats->{requests};
my ($id) = $p->ask(query => 'a slow question');
my $j = $p->wait_job($id, 20);
is($j->{status}, 'completed', 'slow job completed');
is($j->{attempts}, 1, 'heartbeats kept it: one attempt');
is($mock->stats->{requests} - $n0, 1, 'the LLM was called once');
unlike($p->worker_log, qr/requeued/, 'nothing requeued');

# kill -9 the worker process mid-job

{
    my ($kid) = $p->children;
    my $n1 = $mock->stats->{requests};
    ($id) = $p->ask(query => 'a question for a doomed worker');
    ok($p->wait_status($id, 'active'), 'job active');
    ok(wait_for(sub { $mock->stats->{requests} > $n1 }),
       '... and waiting for the LLM');
    kill 'KILL', $kid;
    my $deadline = time + 5;
    sleep 0.05 while time < $deadline
                     && !grep { $_ != $kid } $p->children;
    ok(scalar(grep { $_ != $kid } $p->children), 'worker restarted');
    $j = $p->wait_job($id, 30);
    is($j->{status}, 'completed', 'job completed after the crash');
    is($j->{attempts}, 2, 'on its second attempt');
    is(messages($id), 2, 'messages exactly once');
    like($p->worker_log, qr/handed over 1 jobs/,
         'handed over by the supervisor');
    like($p->worker_log, qr/exited on signal 9/, 'crash logged');
    is(pending(), 0, 'nothing pending');
}

# SIGTERM with jobs in flight: they finish, exit 0, nothing pending

{
    $mock->set(delay_ms => 1500);
    my @ids = map { scalar $p->ask(query => "drain question $_") } 1 .. 3;
    my $deadline = time + 5;
    sleep 0.05 while time < $deadline
                     && grep { $p->job($_)->{status} ne 'active' } @ids;
    is(scalar(grep { $p->job($_)->{status} eq 'active' } @ids), 3,
       'three jobs in flight');
    my $queued = $p->ask(query => 'queued behind the drain', owner => 'zed');
    is($p->stop('TERM'), 0, 'SIGTERM: exit 0');
    is(join(',', map { $p->job($_)->{status} } @ids),
       'completed,completed,completed', 'jobs in flight finished');
    is(join(',', map { messages($_) } @ids), '2,2,2', 'and were stored');
    is(pending(), 0, 'nothing left pending');
    like($p->job($queued)->{status}, qr/waiting|completed/,
         'a job not started is left for the next worker');
    $p->start;
    is($p->wait_job($queued)->{status}, 'completed', 'and done after restart');
}

# PostgreSQL stopped during a job

{
    $p->stop('TERM');
    $p->configure(%conf, max_attempts => 20, retry_base => 200,
                  retry_max => 500, db_timeout => 500);
    $p->start;
    $mock->set(delay_ms => 1000);
    ($id) = $p->ask(query => 'a question while the database goes away');
    ok($p->wait_status($id, 'active'), 'job active');
    $t->stop_postgres;
    ok($p->wait_status($id, 'delayed', 10), 'database gone: job delayed');
    ok(wait_for(sub { ($p->job($id)->{attempts} || 0) >= 2
                      && $p->job($id)->{status} eq 'delayed' }),
       '... and again on its next attempt');
    $t->start_postgres;
    $j = $p->wait_job($id, 30);
    is($j->{status}, 'completed', 'completed after the database returned');
    cmp_ok($j->{attempts}, '>', 1, "after retries ($j->{attempts} attempts)");
    is(messages($id), 2, 'messages exactly once');
}

# Redis restarted (AOF) while a job is in flight

{
    $mock->set(delay_ms => 1500);
    ($id) = $p->ask(query => 'a question while redis restarts');
    ok($p->wait_status($id, 'active'), 'job active');
    my $log0 = length $p->worker_log;
    $t->stop_redis;
    ok(wait_for(sub { log_since($log0) =~ /redis: |redis connect to/ }),
       'the pool saw Redis go');
    $t->start_redis(appendonly => 1);
    is($t->redis('HGET', "{ragnx}:job:$id", 'status'), 'active',
       'job state survived the restart (AOF)');
    $j = $p->wait_job($id, 30);
    is($j->{status}, 'completed', 'job completed after the restart');
    is(messages($id), 2, 'messages exactly once');
    $mock->set(delay_ms => 0);
    my ($id2) = $p->ask(query => 'a question after the restart');
    is($p->wait_job($id2)->{status}, 'completed', 'workers reconnected');
    is(pending(), 0, 'nothing pending');
}

# a second SIGTERM exits at once

{
    $mock->set(delay_ms => 5000);
    ($id) = $p->ask(query => 'a question for an impatient operator');
    ok($p->wait_status($id, 'active'), 'job active');
    my $pid = $p->pid;
    my $log0 = length $p->worker_log;
    kill 'TERM', $pid;
    ok(wait_for(sub { log_since($log0) =~ /draining/ }),
       'first SIGTERM: draining');
    my $t0 = time;
    my $st = $p->stop('TERM', 10);
    cmp_ok(time - $t0, '<', 3, 'second SIGTERM: exits without waiting');
    isnt($st, 0, 'with a non-zero status');
    is(pending(), 0, 'its job not left pending under a dead consumer');
    is($t->redis('XLEN', '{ragnx}:jobs'), 1,
       '... but handed back to the stream');
    $mock->set(delay_ms => 0);
    $p->start;
    is($p->wait_job($id, 30)->{status}, 'completed',
       'and is completed by the next pool');
}

# an entry read ahead (and started) by the completing script as SIGTERM
# drains goes back to the stream with its start undone: it runs later as
# its first attempt

{
    $p->stop('TERM');
    $p->configure(%conf, concurrency => 1);
    $p->start;
    $mock->set(delay_ms => 1500);
    my $n1 = $mock->stats->{requests};
    my ($first) = $p->ask(query => 'the job the drain waits for');
    ok(wait_for(sub { $mock->stats->{requests} > $n1 }),
       'one job at the LLM');
    my ($ahead) = $p->ask(query => 'a job read ahead as the pool drains');
    my $entries = sub { join ',', grep { /^\d+-\d+$/ }
                        split /\n/, $t->redis('XRANGE', '{ragnx}:jobs', '-',
                                              '+') };
    my $before = $entries->();
    is($p->stop('TERM'), 0, 'SIGTERM: drained, exit 0');
    is($p->job($first)->{status}, 'completed', 'the job in flight finished');
    isnt($entries->(), $before, 'the next was read ahead and put back');
    is($p->job($ahead)->{status}, 'waiting', 'its start undone: waiting');
    is($p->job($ahead)->{attempts} || 0, 0, 'no attempt counted');
    $mock->set(delay_ms => 0);
    $p->start;
    $j = $p->wait_job($ahead, 20);
    is($j->{status}, 'completed', 'completed by the next pool');
    is($j->{attempts}, 1, 'as its first attempt');
}

# the wall clock stepped back an hour mid-job (NTP, an operator): the
# heartbeats and the drain are timed on the monotonic clock, so the job
# is neither taken from its live worker nor cut short by SIGTERM

{
    $p->stop('TERM');
    my $shim = "$t->{dir}/clock_shift.so";
    system('cc', '-shared', '-fPIC', '-o', $shim, 't/lib/clock_shift.c',
           '-ldl') == 0 or BAIL_OUT('cannot build t/lib/clock_shift.c');
    my $shift = "$t->{dir}/clock_shift";
    unlink $shift;
    $p->configure(%conf);
    $p->start(preload => $shim, env => { RAGNX_CLOCK_SHIFT => $shift });

    $mock->set(delay_ms => 3500);
    my $n1 = $mock->stats->{requests};
    ($id) = $p->ask(query => 'a question as the clock steps back');
    ok(wait_for(sub { $mock->stats->{requests} > $n1 }),
       'job waiting for the LLM');
    $t->file('clock_shift.new', "-3600000\n");   # whole, for the shim
    rename "$shift.new", $shift or die "rename: $!";
    $j = $p->wait_job($id, 20);
    is($j->{status}, 'completed', 'clock stepped back: job completed');
    is($j->{attempts}, 1, 'heartbeats went on: one attempt');
    is($mock->stats->{requests} - $n1, 1, 'the LLM was called once');

    $mock->set(delay_ms => 1500);
    my $n2 = $mock->stats->{requests};
    ($id) = $p->ask(query => 'a question drained as the clock steps back');
    ok(wait_for(sub { $mock->stats->{requests} > $n2 }),
       'job waiting for the LLM');
    my $log0 = length $p->worker_log;
    is($p->stop('TERM'), 0, 'SIGTERM: drained, exit 0');
    unlike(log_since($log0), qr/drain timeout/, 'no drain timeout');
    is($p->job($id)->{status}, 'completed', 'the job in flight finished');
    is(messages($id), 2, 'and was stored');
    $mock->set(delay_ms => 0);
}

$p->finish;
