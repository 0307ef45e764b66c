#!/usr/bin/perl
# GET /health through the Redis pool: up, down, back without a reload, and
# stopped (SIGSTOP) while other locations stay responsive.

use strict;
use warnings;
use lib 't/lib';
use Test::More;
use Time::HiRes qw(time sleep);
use Ragnx::Test;
use Ragnx::OpenAPI;

my $t = Ragnx::Test->new;
# every response to a path of docs/openapi.json is checked against it
Ragnx::OpenAPI->hook;
my $rp = $t->start_redis;

$t->start_nginx(
    http   => "ragnx_redis 127.0.0.1:$rp; ragnx_redis_timeout 300ms;",
    server => <<'EOF2');
        location = /health { ragnx_health; }
        location = /static { return 200 "static"; }
EOF2

sub health_until {
    my ($want) = @_;
    my $r;
    for (1 .. 100) {
        $r = $t->request(GET => '/health');
        return $r if $r->{status} == $want;
        sleep 0.05;
    }
    return $r;
}

my $r = health_until(200);
is($r->{status}, 200, 'health is 200 with Redis up');
my $j = Ragnx::Test::json_body($r);
is($j->{status}, 'ok', 'status ok');
is($j->{redis}, 'ok', 'redis ok');
like($j->{uptime}, qr/^\d+$/, 'uptime in seconds');
like($r->{headers}{'content-type'}, qr{^application/json}, 'JSON');

$r = $t->request(POST => '/health', body => '{}');
is($r->{status}, 405, 'POST /health is 405');
is($r->{headers}{allow}, 'GET, HEAD', 'with Allow');
is_deeply(Ragnx::Test::json_body($r), { error => 'Method not allowed' },
          '405 JSON body');

$t->stop_redis;
my $t0 = time;
$r = health_until(503);
is($r->{status}, 503, 'Redis stopped: 503');
ok(time - $t0 < 1.5, 'answered within the timeout');
$j = Ragnx::Test::json_body($r);
is($j->{status}, 'degraded', 'status degraded');
is($j->{redis}, 'down', 'redis down');

$t->start_redis;
$r = health_until(200);
is($r->{status}, 200, 'Redis back: 200 without a reload');

$t->signal('redis', 'STOP');
$t0 = time;
$r = $t->request(GET => '/health');
my $took = time - $t0;
is($r->{status}, 503, 'Redis SIGSTOPped: 503');
ok($took >= 0.25 && $took < 1.0, "after the 300ms timeout ($took s)");

my ($fast, $times) = $t->responsive('/static', 0.05);
ok($fast, "other locations answer in < 50 ms while Redis hangs ($times)");

$t->signal('redis', 'CONT');
$r = health_until(200);
is($r->{status}, 200, 'Redis resumed: 200 again');

$t->done;
