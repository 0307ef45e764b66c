#!/usr/bin/perl
# GET /health through the Redis pool, as the ACL user ragnx-nginx, with
# the pool as ragnx-pool: up, down, back without a reload, and stopped
# (SIGSTOP) while other locations stay responsive; degraded with no pool,
# healthy with one, its process count and heartbeat age as Redis has
# them; the queue's depth and oldest age while the pool is stopped, and
# drained once it runs; PostgreSQL down as the pool sees it; degraded
# once the pool's killed processes have been silent for the timeout, and
# at once when the pool stops.

use strict;
use warnings;
use lib 't/lib';
use Test::More;
use Time::HiRes qw(time sleep);
use Ragnx::Test;
use Ragnx::OpenAPI;
use Ragnx::Pool;
use Ragnx::MockLLM;

my $t = Ragnx::Test->new;
# every response to a path of docs/openapi.json is checked against it
Ragnx::OpenAPI->hook;
my $rp = $t->start_redis(acl => 1);
my $pw = $t->redis_password_file('ragnx-nginx');

# /health judges the pool after 4 s of silence; /health-off never does
$t->start_nginx(
    http   => "ragnx_redis 127.0.0.1:$rp user=ragnx-nginx "
              . "password_file=$pw; ragnx_redis_timeout 300ms;",
    server => <<'EOF2');
        location = /health {
            ragnx_health_pool_timeout 4s;
            ragnx_health;
        }
        location = /health-off {
            ragnx_health_pool_timeout off;
            ragnx_health;
        }
        location = /static { return 200 "static"; }
EOF2

sub health {
    my ($uri) = @_;
    my $r = $t->request(GET => $uri || '/health');
    return ($r, Ragnx::Test::json_body($r) || {});
}

# until $cond->($r, $j) holds, for at most $secs; returns the last answer
sub health_until {
    my ($cond, $secs, $uri) = @_;
    my $deadline = time + ($secs || 5);
    my ($r, $j);
    while (1) {
        ($r, $j) = health($uri);
        return ($r, $j) if $cond->($r, $j) || time > $deadline;
        sleep 0.05;
    }
}

sub status_is {
    my ($want, $secs, $uri) = @_;
    return health_until(sub { $_[0]{status} == $want }, $secs, $uri);
}

# ---- no pool --------------------------------------------------------------

my ($r, $j) = status_is(503, 5);
is($r->{status}, 503, 'no pool: 503');
is($j->{status}, 'degraded', 'no pool: degraded');
is($j->{reason}, 'pool', 'no pool: the reason says so');
is($j->{redis}, 'ok', 'no pool: redis ok');
like($j->{uptime}, qr/^\d+$/, 'uptime in seconds');
like($r->{headers}{'content-type'}, qr{^application/json}, 'JSON');
is_deeply($j->{pool}, { processes => 0, heartbeat_age => undef },
          'no pool: no process, no heartbeat');
is_deeply($j->{postgresql}, { status => 'unknown', checked_age => undef },
          'no pool: PostgreSQL unknown');
is_deeply($j->{queue}, { jobs => 0, running => 0, waiting => 0,
                         delayed => 0, oldest_age => 0 },
          'no pool: an empty queue');
is_deeply($j->{records}, { backlog => 0, refused => 0 }, 'records');

($r, $j) = status_is(200, 5, '/health-off');
is($r->{status}, 200, 'pool timeout off: 200 without a pool');
is($j->{status}, 'ok', 'pool timeout off: status ok');
ok(!exists $j->{reason}, 'pool timeout off: no reason');
is($j->{pool}{processes}, 0, 'pool timeout off: the pool still reported');

$r = $t->request(POST => '/health', body => '{}');
is($r->{status}, 405, 'POST /health is 405');
is($r->{headers}{allow}, 'GET, HEAD', 'with Allow');
is_deeply(Ragnx::Test::json_body($r), { error => 'Method not allowed' },
          '405 JSON body');

# ---- Redis down, back, hung -----------------------------------------------

$t->stop_redis;
my $t0 = time;
($r, $j) = status_is(503, 5, '/health-off');
is($r->{status}, 503, 'Redis stopped: 503');
ok(time - $t0 < 1.5, 'answered within the timeout');
is($j->{status}, 'degraded', 'status degraded');
is($j->{reason}, 'redis', 'reason redis');
is($j->{redis}, 'down', 'redis down');
ok(!exists $j->{pool}, 'nothing said of the pool without Redis');

$t->start_redis(acl => 1);
($r) = status_is(200, 5, '/health-off');
is($r->{status}, 200, 'Redis back: 200 without a reload');

$t->signal('redis', 'STOP');
$t0 = time;
$r = $t->request(GET => '/health-off');
my $took = time - $t0;
is($r->{status}, 503, 'Redis SIGSTOPped: 503');
ok($took >= 0.25 && $took < 1.0, "after the 300ms timeout ($took s)");

my ($fast, $times) = $t->responsive('/static', 0.05);
ok($fast, "other locations answer in < 50 ms while Redis hangs ($times)");

$t->signal('redis', 'CONT');
($r) = status_is(200, 5, '/health-off');
is($r->{status}, 200, 'Redis resumed: 200 again');

# ---- the queue while no pool runs -----------------------------------------

$t->start_postgres;
my $mock = Ragnx::MockLLM->start($t);
my $p = Ragnx::Pool->new($t);
$p->configure(llm_provider => 'anthropic', llm_base_url => $mock->url,
              llm_model => 'claude-mock',
              llm_api_key_file => $t->file('llm.key', "mock-key\n"),
              workers => 2,
              redis_user => 'ragnx-pool',
              redis_password_file => $t->redis_password_file('ragnx-pool'));
my ($rc, $out) = $p->cli('migrate');
is($rc, 0, 'migrate') or diag($out);
mkdir "$t->{dir}/corpus";
$t->file('corpus/health.md', "# Health\n\nGET /health says whether the "
         . "pool is alive and what it thinks of PostgreSQL.\n");
($rc, $out) = $p->cli('ingest', "$t->{dir}/corpus");
is($rc, 0, 'ingest') or diag($out);

my @ids = map { scalar $p->ask(query => "health question $_") } 1 .. 3;
is(scalar(grep { $_ } @ids), 3, 'three questions queued, no pool running');

# the oldest job's age as Redis has it: its entry id's ms against TIME
sub oldest_age {
    my ($first) = split /\n/, $t->redis('XRANGE', '{ragnx}:jobs', '-', '+',
                                        'COUNT', 1);
    my ($s, $us) = split /\n/, $t->redis('TIME');
    my ($ms) = ($first // '') =~ /^(\d+)-/;
    return defined $ms ? ($s * 1000 + int($us / 1000) - $ms) / 1000 : undef;
}

sleep 1;
($r, $j) = health();
my $age = oldest_age();
is($r->{status}, 503, 'queued jobs, no pool: still 503');
is($j->{queue}{jobs}, 3, 'queue: 3 jobs');
is($j->{queue}{waiting}, 3, 'queue: 3 waiting');
is($j->{queue}{running}, 0, 'queue: none running');
is($j->{queue}{delayed}, 0, 'queue: none delayed');
ok($j->{queue}{oldest_age} >= 1 && abs($j->{queue}{oldest_age} - $age) < 0.5,
   "queue: the oldest is $j->{queue}{oldest_age} s old (Redis: $age s)");
sleep 1;
(undef, $j) = health();
ok($j->{queue}{oldest_age} >= 2, "a second later: $j->{queue}{oldest_age} s");

# ---- the pool runs ----------------------------------------------------------

$p->start;
my @kids = $p->children;
is(scalar(@kids), 2, 'two pool processes');

($r, $j) = health_until(sub { $_[0]{status} == 200
                              && $_[1]{queue}{jobs} == 0
                              && $_[1]{postgresql}{status} eq 'ok' }, 20);
is($r->{status}, 200, 'with the pool: 200');
is($j->{status}, 'ok', 'with the pool: ok');
ok(!exists $j->{reason}, 'with the pool: no reason');
is($j->{pool}{processes}, 2, 'with the pool: 2 processes');
is($j->{postgresql}{status}, 'ok', 'with the pool: PostgreSQL ok');
ok($j->{postgresql}{checked_age} >= 0 && $j->{postgresql}{checked_age} < 12,
   "checked $j->{postgresql}{checked_age} s ago");
is_deeply([ map { $p->job($_)->{status} } @ids ],
          [ ('completed') x 3 ], 'the queued jobs ran');
is($j->{queue}{jobs}, 0, 'and the queue is empty');
is($j->{queue}{oldest_age}, 0, 'oldest age 0 when empty');

# the members of the live set are the pool's processes; the newest beat's
# age as Redis has it
my %members = map { /:(\d+)$/ ? ($1 => 1) : () }
              split /\n/, $t->redis('ZRANGE', '{ragnx}:pool', 0, -1);
is_deeply([ sort keys %members ], [ sort @kids ],
          'the live set holds the two processes by pid');
my $ok = 0;
for (1 .. 20) {
    (undef, $j) = health();
    my (undef, $score) = split /\n/, $t->redis('ZREVRANGE', '{ragnx}:pool',
                                               0, 0, 'WITHSCORES');
    my ($s, $us) = split /\n/, $t->redis('TIME');
    my $redis_age = ($s * 1000 + int($us / 1000) - $score) / 1000;
    $ok = defined $j->{pool}{heartbeat_age}
          && $j->{pool}{heartbeat_age} <= 2.5
          && abs($j->{pool}{heartbeat_age} - $redis_age) < 0.3;
    last if $ok;
    note("heartbeat age $j->{pool}{heartbeat_age}, Redis $redis_age");
    sleep 0.1;
}
ok($ok, "the newest heartbeat is $j->{pool}{heartbeat_age} s old");
my @ages;
for (1 .. 6) {
    (undef, $j) = health();
    push @ages, $j->{pool}{heartbeat_age};
    sleep 0.25;
}
ok(!grep({ $_ > 2.5 } @ages), "a beat every second (ages: @ages)");

# ---- PostgreSQL down as the pool sees it --------------------------------------

$t->stop_postgres;
($r, $j) = health_until(sub { $_[0]{status} == 503 }, 20);
is($r->{status}, 503, 'PostgreSQL stopped: 503');
is($j->{reason}, 'postgresql', 'reason postgresql');
is($j->{postgresql}{status}, 'down', 'PostgreSQL down as the pool saw it');
ok($j->{postgresql}{checked_age} < 8,
   "seen $j->{postgresql}{checked_age} s ago");
is($j->{pool}{processes}, 2, 'the pool is alive meanwhile');
($r, $j) = status_is(503, 5, '/health-off');
is($j->{reason}, 'postgresql', 'also with the pool timeout off');

$t->start_postgres;
($r, $j) = health_until(sub { $_[0]{status} == 200 }, 25);
is($r->{status}, 200, 'PostgreSQL back: 200');
is($j->{postgresql}{status}, 'ok', 'PostgreSQL ok again');

# ---- PostgreSQL hung (SIGSTOP: the kernel still accepts for it) -------------

{
    my @pg = (Ragnx::Test::children($t->{pids}{postgres}),
              $t->{pids}{postgres});
    kill 'STOP', @pg;
    my $t0 = time;
    ($r, $j) = health_until(sub { $_[0]{status} == 503 }, 30);
    my $took = time - $t0;
    kill 'CONT', @pg;
    is($r->{status}, 503, sprintf('PostgreSQL hung: 503 after %.1f s',
                                  $took));
    is($j->{reason}, 'postgresql', '... reason postgresql');
    diag(Ragnx::Test::json_body($r) ? $r->{body} : '');
    ($r, $j) = health_until(sub { $_[0]{status} == 200 }, 25);
    is($r->{status}, 200, 'PostgreSQL resumed: 200');
}

# ---- the pool's processes killed ------------------------------------------------

# the supervisor stopped first, so it neither restarts them nor tells them
# to drain (PDEATHSIG) when it dies
@kids = $p->children;
$t->signal('worker', 'STOP');
kill 'KILL', @kids;
$p->stop('KILL', 5);
$t0 = time;
($r, $j) = health();
if (time - $t0 < 2) {
    is($j->{pool}{processes}, 2, 'just killed: still counted');
}
($r, $j) = health_until(sub { $_[0]{status} == 503 }, 15);
my $silent = time - $t0;
is($r->{status}, 503, "killed: 503 after $silent s");
ok($silent >= 2.5, 'not before the timeout');
is($j->{reason}, 'pool', 'reason pool');
is($j->{pool}{processes}, 0, 'no live process');
ok($j->{pool}{heartbeat_age} >= 4, "the newest beat is "
   . "$j->{pool}{heartbeat_age} s old");
is($t->redis('ZCARD', '{ragnx}:pool'), 2,
   'the dead are kept in the set (forgotten after an hour)');

# ---- a pool that stops leaves at once -----------------------------------------

$p->start;
($r, $j) = status_is(200, 10);
is($r->{status}, 200, 'a new pool: 200');
is($j->{pool}{processes}, 2, 'a new pool: 2 processes');
$p->stop('TERM');
($r, $j) = health();
is($r->{status}, 503, 'a stopped pool: 503 at once');
is($j->{pool}{processes}, 0, 'its processes left the live set');

$p->finish;
