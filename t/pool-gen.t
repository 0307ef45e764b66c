#!/usr/bin/perl
# Two pools of different models on one Redis: the cache generation
# ({ragnx}:gen) is held by one model's pools at a time (a lease they
# renew), so the pools do not flap it; the pool started last claims it;
# an answer is cached under the generation of the model that computed
# it, whatever generation the job was enqueued with; when the holding
# model's pools are gone, the other model takes the generation over.

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
$t->start_redis;
$t->start_postgres;
my $mock = Ragnx::MockLLM->start($t);
my $json = JSON::PP->new->canonical->utf8;

my %conf = (llm_provider => 'openai', llm_base_url => $mock->url . '/v1',
            workers => 2, concurrency => 2);
my $a = Ragnx::Pool->new($t, name => 'pool-a');
my $b = Ragnx::Pool->new($t, name => 'pool-b');
$a->configure(%conf, llm_model => 'model-a');
$b->configure(%conf, llm_model => 'model-b');
my ($rc, $out) = $a->cli('migrate');
is($rc, 0, 'migrate') or diag($out);

sub gen { $t->redis('GET', '{ragnx}:gen') }

sub wait_for {
    my ($cond, $timeout) = @_;
    my $deadline = time + ($timeout || 10);
    until ($cond->()) {
        return 0 if time > $deadline;
        sleep 0.05;
    }
    return 1;
}

$a->start;
is(gen(), 'model-a@0', 'pool a sets the generation');
$b->start;
is(gen(), 'model-b@0', 'pool b, started later, claims it');

# both pools check every 5 s: three checks each, and not one write

my %seen;
my $end = time + 12;
while (time < $end) {
    $seen{ gen() }++;
    sleep 0.1;
}
is(join(',', sort keys %seen), 'model-b@0',
   '12 s of two models side by side: the generation never changed');

# answers are cached under the computing model's generation

my ($id, undef, $gen) = $b->ask(query => 'which model answers this?');
is($b->wait_job($id)->{status}, 'completed', 'a job completed');
my $model = $t->psql("SELECT model FROM messages WHERE job_id = '$id' "
                     . "AND role = 'assistant'");
my $digest = $json->decode($b->payload($id))->{digest};
ok($t->redis('EXISTS', "{ragnx}:cache:$digest:$model\@0"),
   "cached under the generation of its model ($model)");

# pool b gone: a job enqueued under its generation, computed by model a,
# is never cached under model b's name

is($b->stop('TERM'), 0, 'pool b stopped');
($id, undef, $gen) = $a->ask(query => 'a question for model a alone');
is($gen, 'model-b@0', "enqueued under model b's generation");
is($a->wait_job($id)->{status}, 'completed', 'completed by pool a');
$digest = $json->decode($a->payload($id))->{digest};
ok($t->redis('EXISTS', "{ragnx}:cache:$digest:model-a\@0"),
   "cached under model a's generation");
ok(!$t->redis('EXISTS', "{ragnx}:cache:$digest:model-b\@0"),
   "not under model b's");

# and once model b's lease is over, model a takes the generation

my $t0 = time;
ok(wait_for(sub { gen() eq 'model-a@0' }, 30),
   'model a took the generation over');
diag(sprintf 'generation taken over %.1f s after pool b stopped',
     time - $t0);

my @bad = $b->log_problems;
ok(!@bad, 'no crashes or sanitizer reports in the log of pool b')
    or diag(join "\n", @bad);
$a->finish;
