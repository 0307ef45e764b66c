#!/usr/bin/perl
# A job runs in one place at a time, and its answer is one answer.
#
# - kill -9 of a worker process: the supervisor hands the entries its
#   consumers held (jobs and records) to the living at once; the test
#   prints how long every job of the killed worker took to run again.
# - SIGHUP while a job waits for the LLM: the old worker drains with its
#   heartbeats going on, so the new one never takes the job (the LLM is
#   called once).  A drain cut at drain_timeout hands the job over when
#   the old process is gone, not before.
# - PostgreSQL stopped (SIGSTOP) while a job runs: the heartbeats do not
#   wait for it, and the job is never taken by another consumer.
# - Two runs of one job: the answer PostgreSQL stored first is the one
#   the job's hash and the cache give; a completed job is never
#   overwritten by a second completion.

use strict;
use warnings;
use lib 't/lib';
use Test::More;
use JSON::PP;
use Sys::Hostname qw(hostname);
use Time::HiRes qw(sleep time);
use Ragnx::Test;
use Ragnx::Pool qw(uuid uuid7);
use Ragnx::MockLLM;

my $t = Ragnx::Test->new;
$t->start_redis(appendonly => 1);
$t->start_postgres;
my $mock = Ragnx::MockLLM->start($t);
my $p = Ragnx::Pool->new($t);
my $json = JSON::PP->new->canonical->utf8;

my %conf = (llm_provider => 'openai', llm_base_url => $mock->url . '/v1',
            llm_model => 'mock', llm_timeout => 20000, max_attempts => 5,
            workers => 2, concurrency => 4, visibility_timeout => 30000);
$p->configure(%conf);
my ($rc, $out) = $p->cli('migrate');
is($rc, 0, 'migrate') or diag($out);

sub wait_for {
    my ($cond, $timeout) = @_;
    my $deadline = time + ($timeout || 10);
    until ($cond->()) {
        return 0 if time > $deadline;
        sleep 0.02;
    }
    return 1;
}

sub requests { $mock->stats->{requests} }

sub messages {
    my ($id) = @_;
    return $t->psql("SELECT count(*) FROM chat_messages WHERE job_id = '$id'");
}

sub stored {
    my ($id) = @_;
    return $t->psql("SELECT content FROM messages WHERE job_id = '$id' "
                    . "AND role = 'assistant'");
}

# entry id => [consumer, idle ms] of the jobs stream's pending entries
sub pending_entries {
    my ($stream) = @_;
    my @l = split /\n/, $t->redis('XPENDING', $stream || '{ragnx}:jobs',
                                  'pool', '-', '+', 1000);
    my %e;
    while (my ($id, $c, $idle) = splice @l, 0, 4) {
        $e{$id} = [$c, $idle];
    }
    return \%e;
}

sub job_of_entry {
    my ($entry) = @_;
    my %f = (split /\n/, $t->redis('XRANGE', '{ragnx}:jobs', $entry,
                                   $entry))[1 .. 6];
    return $f{id};
}

# the job hash, the cache and the stored message give one answer
sub agree {
    my ($id, $name) = @_;
    my $j = $p->job($id);
    my $gen = $p->{gens}{$id};
    my $digest = $json->decode($p->payload($id))->{digest};
    my $cached = $t->redis('GET', "{ragnx}:cache:$digest:$gen");
    my $c = $cached ne '' ? $json->decode($cached)->{answer} : undef;
    is($j->{answer}, stored($id), "$name: the job's answer is the stored one");
    is($c, stored($id), "$name: so is the cached one");
}

$p->start;

# kill -9: the dead process's entries are handed over at once

{
    my $host = hostname();
    $mock->set(delay_ms => 2500);
    my $n0 = requests();
    my @ids = map { scalar $p->ask(query => "handover question $_") } 1 .. 3;
    ok(wait_for(sub { requests() >= $n0 + 3 }), 'three jobs at the LLM');

    # the worker holding the most of them
    my %held;
    my $e = pending_entries();
    for my $entry (keys %$e) {
        my ($pid) = $e->{$entry}[0] =~ /-(\d+)-\d+$/;
        push @{ $held{$pid} }, job_of_entry($entry);
    }
    my ($kid) = sort { @{ $held{$b} } <=> @{ $held{$a} } } keys %held;
    my @doomed = @{ $held{$kid} };
    ok(scalar(grep { $_ == $kid } $p->children), "worker $kid holds "
       . scalar(@doomed) . ' of them');

    # a batch of records held by a record thread of that process
    my ($rid, $chat) = (uuid7(), uuid());
    my $payload = $json->encode({ v => 2, id => $rid, owner => 'rita',
        chatId => $chat, query => 'a record of a doomed worker',
        digest => 'b' x 64, createdAt => int(time * 1000) });
    $t->redis('EVAL', "redis.call('XADD', KEYS[1], '*', 'id', ARGV[1], "
              . "'job', ARGV[2], 'result', ARGV[3]) "
              . "return redis.call('XREADGROUP', 'GROUP', 'pool', ARGV[4], "
              . "'COUNT', 10, 'STREAMS', KEYS[1], '>')", 1,
              '{ragnx}:records', $rid, $payload,
              '{"answer":"Recorded.","sources":[]}', "$host-$kid-99");
    is(scalar(keys %{ pending_entries('{ragnx}:records') }), 1,
       'a record pending under one of its consumers');

    my $n1 = requests();
    my $log0 = length $p->worker_log;
    my $t0 = time;
    kill 'KILL', $kid;
    ok(wait_for(sub { requests() >= $n1 + @doomed }, 10),
       'every job of the killed worker at the LLM again');
    my $took = time - $t0;
    diag(sprintf 'kill -9: %d jobs running again after %.2f s',
         scalar @doomed, $took);
    cmp_ok($took, '<', 2, 'within 2 s (visibility_timeout is 30 s)');
    like(substr($p->worker_log, $log0),
         qr/handed over ${\ scalar @doomed} jobs and 1 records/,
         'the handover logged');
    ok(wait_for(sub { messages($rid) == 2 }), 'the record written');
    for my $id (@ids) {
        my $j = $p->wait_job($id, 20);
        is($j->{status}, 'completed', "job $id completed");
        is(messages($id), 2, '... stored once');
    }
    is($p->job($_)->{attempts}, 2, 'a handed-over job: second attempt')
        for @doomed;
    is(scalar(keys %{ pending_entries() }), 0, 'nothing pending');
    unlike($t->redis('XINFO', 'CONSUMERS', '{ragnx}:jobs', 'pool'),
           qr/\Q$host-$kid-\E/, "the dead process's consumers are gone");
}

# Redis restarted: the supervisor's kept connection is stale, and the
# next handover connects again

{
    $t->stop_redis;
    $t->start_redis(appendonly => 1);
    $mock->set(delay_ms => 2500);
    my $n0 = requests();
    my ($id) = $p->ask(query => 'a question after redis restarted');
    ok(wait_for(sub { requests() > $n0 }, 15), 'job at the LLM');
    my ($entry) = keys %{ pending_entries() };
    my ($kid) = pending_entries()->{$entry}[0] =~ /-(\d+)-\d+$/;
    my $log0 = length $p->worker_log;
    my $t0 = time;
    kill 'KILL', $kid;
    ok(wait_for(sub { requests() > $n0 + 1 }, 10), 'the job runs again');
    my $took = time - $t0;
    cmp_ok($took, '<', 2, sprintf('within 2 s (%.2f s)', $took));
    like(substr($p->worker_log, $log0), qr/handed over 1 jobs/,
         'handed over on a new connection');
    is($p->wait_job($id, 20)->{status}, 'completed', 'the job completed');
}

# SIGHUP while a job waits for the LLM: heartbeats through the drain

$p->stop('TERM');
$p->configure(%conf, workers => 1, visibility_timeout => 1500);
$p->start;

{
    $mock->set(delay_ms => 5000);
    my $n0 = requests();
    my ($id) = $p->ask(query => 'a question asked as the pool reloads');
    ok(wait_for(sub { requests() > $n0 }), 'job at the LLM');
    my @old = $p->children;
    my $log0 = length $p->worker_log;
    kill 'HUP', $p->pid;
    ok(wait_for(sub { substr($p->worker_log, $log0) =~ /cache generation/ }),
       'a new worker started');
    my $j = $p->wait_job($id, 20);
    is($j->{status}, 'completed', 'the job completed');
    is($j->{attempts}, 1, 'on its first attempt');
    is(requests() - $n0, 1, 'the LLM was called once');
    is(messages($id), 2, 'messages stored once');
    agree($id, 'reload');
    ok(wait_for(sub { !grep { kill 0, $_ } @old }), 'the old worker exited');
    unlike(substr($p->worker_log, $log0), qr/drain timeout|requeued/,
           'drained in time, nothing requeued');
}

# a drain cut at drain_timeout: the job is handed over once the old
# process is gone, and runs again only then

$p->stop('TERM');
$p->configure(%conf, workers => 1, drain_timeout => 1000);
$p->start;

{
    $mock->set(delay_ms => 3000);
    my $n0 = requests();
    my ($id) = $p->ask(query => 'a question outliving the drain');
    ok(wait_for(sub { requests() > $n0 }), 'job at the LLM');
    my @old = $p->children;
    my $log0 = length $p->worker_log;
    my $t0 = time;
    kill 'HUP', $p->pid;
    ok(wait_for(sub { requests() > $n0 + 1 }, 10), 'the job runs again');
    my $again = time - $t0;
    ok(!grep({ kill 0, $_ } @old), '... after the old process is gone');
    cmp_ok($again, '>=', 0.9, sprintf('... not before drain_timeout '
                                      . '(%.2f s)', $again));
    my $j = $p->wait_job($id, 20);
    is($j->{status}, 'completed', 'the job completed');
    is($j->{attempts}, 2, 'on its second attempt');
    is(messages($id), 2, 'messages stored once');
    agree($id, 'drain timeout');
    like(substr($p->worker_log, $log0), qr/handed over 1 jobs/,
         'handed over by the supervisor');
}

# PostgreSQL stopped while a job runs: the heartbeats go on

$p->stop('TERM');
$p->configure(%conf, visibility_timeout => 1500);
$p->start;

{
    # stopped while the job waits for the LLM: the pooled connections
    # are idle, and the periodic check takes one
    $mock->set(delay_ms => 9000);
    my $n0 = requests();
    my ($id) = $p->ask(query => 'a question as the database stalls');
    ok(wait_for(sub { requests() > $n0 }), 'job at the LLM');
    my $pg = $t->{pids}{postgres};
    my @backends = Ragnx::Test::children($pg);
    kill 'STOP', $pg, @backends;
    my ($max, $end) = (0, time + 8);
    while (time < $end) {
        for my $v (values %{ pending_entries() }) {
            $max = $v->[1] if $v->[1] > $max;
        }
        sleep 0.1;
    }
    kill 'CONT', @backends, $pg;
    cmp_ok($max, '<', 1500, "8 s of a stopped PostgreSQL: the entry's "
           . "idle time stayed under the visibility timeout ($max ms)");
    my $j = $p->wait_job($id, 30);
    is($j->{status}, 'completed', 'the job completed');
    is($j->{attempts}, 1, 'on its first attempt');
    is(requests() - $n0, 1, 'the LLM was called once');
    is(messages($id), 2, 'messages stored once');
}

# the answer stored first wins everywhere

{
    $mock->set(delay_ms => 1500);
    my $n0 = requests();
    my ($id, undef, undef, $chat) = $p->ask(query => 'who answers first?');
    ok(wait_for(sub { requests() > $n0 }), 'job at the LLM');

    # another run of the job stores its exchange meanwhile
    $t->psql("INSERT INTO chats (id, owner, title) VALUES ('$chat', "
             . "'alice', 'who answers first?'); INSERT INTO messages "
             . "(chat_id, job_id, role, content, sources) VALUES "
             . "('$chat', '$id', 'user', 'who answers first?', NULL), "
             . "('$chat', '$id', 'assistant', 'The first answer.', "
             . "'[\"first.md\"]')");
    my $j = $p->wait_job($id, 20);
    is($j->{status}, 'completed', 'the job completed');
    is($j->{answer}, 'The first answer.', 'with the answer stored first');
    is($j->{sources}, '["first.md"]', '... and its sources');
    is(messages($id), 2, 'messages stored once');
    agree($id, 'stored first');
}

# a second completion of a completed job changes nothing

{
    my $complete = Ragnx::Pool::lua_script('workers/lua/complete.lua');
    my $id = uuid7();
    my $k = "{ragnx}:job:$id";
    my $cache = '{ragnx}:cache:' . ('c' x 64) . ':mock@1';
    $t->redis('HSET', $k, 'status', 'completed', 'answer', 'First.',
              'sources', '[]');
    $t->redis('SET', $cache, '{"answer":"First.","sources":[]}');
    # added and read at once, before a worker could read it
    my $entry = $t->redis('EVAL', "local e = redis.call('XADD', KEYS[1], "
                          . "'*', 'id', ARGV[1], 'job', '{}') "
                          . "redis.call('XREADGROUP', 'GROUP', 'pool', "
                          . "'tester', 'COUNT', 1, 'STREAMS', KEYS[1], '>') "
                          . "return e", 1, '{ragnx}:jobs', $id);
    $t->redis('EVAL', $complete, 8, $k, '{ragnx}:jobs', '{ragnx}:inflight',
              "$k:followers", $cache, '{ragnx}:records', "{ragnx}:events:$id",
              "{ragnx}:watch:$id", $entry, 1, 'Second.',
              '[]', 3600, $id, '{"answer":"Second.","sources":[]}', 3600, '',
              'x', '');
    is($p->job($id)->{answer}, 'First.', 'the completed hash kept');
    is($t->redis('GET', $cache), '{"answer":"First.","sources":[]}',
       'the cache kept');
    is(scalar(keys %{ pending_entries() }), 0, 'the entry acknowledged');
    $t->redis('XGROUP', 'DELCONSUMER', '{ragnx}:jobs', 'pool', 'tester');
}

$p->finish;
