#!/usr/bin/perl
# GET /metrics: Prometheus text that promtool accepts; counters that move
# by exactly what a scripted sequence of requests does (hit, miss,
# follower, 401s, 400, 415, 503 queue full, 403, a 429 through an error
# page); histograms cumulative with +Inf equal to the count; two workers
# adding to the same figures; figures kept across a reload; Redis
# failures and reconnects.

use strict;
use warnings;
use lib 't/lib';
use Test::More;
use Cwd qw(getcwd);
use Digest::SHA qw(sha256_hex);
use JSON::PP;
use Time::HiRes qw(sleep);
use Ragnx::Test;
use Ragnx::OpenAPI;

my $root = getcwd();
my $t = Ragnx::Test->new;
# every response to a path of docs/openapi.json is checked against it
Ragnx::OpenAPI->hook;
my $rp = $t->start_redis;
my $secret = 'metrics-test-secret-0123456789abcd';
my $keyfile = $t->file('hs.key', $secret);
my $json = JSON::PP->new->canonical;
my $dir = $t->dir;

my $promtool = `sh -c 'command -v promtool'`;
chomp $promtool;

my %conf = (
    workers => 2,
    http    => <<"EOF2",
    ragnx_redis 127.0.0.1:$rp;
    ragnx_redis_timeout 300ms;
    ragnx_ask_gen_refresh 100ms;
    # no pool here: /health answers 200 on Redis alone, a route to count
    ragnx_health_pool_timeout off;
    limit_req_zone \$binary_remote_addr zone=one:1m rate=1r/m;
    limit_req_status 429;
    log_format routes '\$pid \$ragnx_route \$status';
    access_log $dir/routes.log routes;
EOF2
    server  => <<"EOF2");
        ragnx_jwt_alg HS256;
        ragnx_jwt_key_file $keyfile;
        error_page 404 405 413 429 500 503 \@err;
        location \@err { ragnx_json_error; }

        location = /api/ask {
            ragnx_jwt on;
            ragnx_validate_schema $root/schemas/ask.json;
            ragnx_ask;
        }
        location = /api/ask-small {
            ragnx_jwt on;
            ragnx_validate_schema $root/schemas/ask.json;
            ragnx_ask_queue_max 1;
            ragnx_ask;
        }
        location = /health { ragnx_health; }
        location = /health-limited {
            limit_req zone=one;
            ragnx_health;
        }
        location = /metrics {
            allow 127.0.0.1;
            deny all;
            ragnx_metrics;
        }
        location = /metrics-denied {
            deny all;
            ragnx_metrics;
        }
EOF2
$t->start_nginx(%conf);

my $token = Ragnx::Test::jwt_hs256($secret,
                                   { sub => 'alice', exp => time + 3600 });

sub ask {
    my ($body, %o) = @_;
    return $t->request(POST => $o{path} || '/api/ask',
        headers => [ ($o{auth} // 1 ? (Authorization => "Bearer "
                                       . ($o{token} || $token)) : ()),
                     'Content-Type' => $o{type} || 'application/json' ],
        body => ref $body ? $json->encode($body) : $body);
}

sub digest {
    my ($q) = @_;
    $q = lc $q;
    $q =~ s/^\s+|\s+$//g;
    $q =~ s/\s+/ /g;
    return sha256_hex($q);
}

# the text, and its samples by "name{labels}"
sub scrape {
    my $r = $t->request(GET => '/metrics');
    my %m;
    for (split /\n/, $r->{body}) {
        next if /^#/;
        $m{$1} = $2 if /^(\S+) (\S+)$/;
    }
    return ($r, \%m);
}

sub delta {
    my ($a, $b, $k) = @_;
    return ($b->{$k} // 0) - ($a->{$k} // 0);
}

sub req { "ragnx_http_requests_total{route=\"$_[0]\",outcome=\"$_[1]\"}" }

# A request is counted in its log phase, which may come a moment after
# its response (a lingering close waits for the client's FIN): scrape
# until the series named have moved by at least as much as asked since
# $base, for at most 5 s; the tests then check they moved by exactly that.
# Returns the last scrape and how many were made (each is counted too).
sub settle {
    my ($base, %need) = @_;
    my ($r, $m, $n);
    for $n (1 .. 100) {
        ($r, $m) = scrape();
        return ($r, $m, $n)
            unless grep { delta($base, $m, $_) < $need{$_} } keys %need;
        sleep 0.05;
    }
    return ($r, $m, 100);
}

for (1 .. 100) { last if $t->redis('CLIENT', 'LIST') =~ tr/\n// >= 4; sleep 0.05 }

my ($r, $m0) = scrape();
is($r->{status}, 200, 'GET /metrics is 200');
like($r->{headers}{'content-type'}, qr{^text/plain; version=0\.0\.4},
     'Prometheus text format 0.0.4');
like($r->{body}, qr/^# HELP ragnx_http_requests_total /m, 'with HELP');
like($r->{body}, qr/^# TYPE ragnx_http_request_duration_seconds histogram$/m,
     'with TYPE');

SKIP: {
    skip 'promtool not installed (scripts/deps)', 1 unless $promtool;
    my $f = $t->file('scrape.txt', $r->{body});
    my $out = `$promtool check metrics < $f 2>&1`;
    is($?, 0, 'promtool check metrics accepts the text') or diag $out;
}

is($t->request(POST => '/metrics', body => '{}')->{status}, 405,
   'POST /metrics is 405');
is($t->request(GET => '/metrics-denied')->{status}, 403,
   'deny all is 403');

# let both workers learn the cache generation: a question is then a GET
$t->redis('SET', '{ragnx}:gen', 'default@0');
sleep 0.35;

$t->redis('SET', '{ragnx}:cache:' . digest('cached question') . ':default@0',
          $json->encode({ answer => 'yes', sources => [] }));

is(ask({ query => 'cached question' })->{status}, 200, 'hit');
is(ask({ query => 'new question' })->{status}, 202, 'miss');
my $f = ask({ query => 'new question' });
is($f->{status}, 202, 'the same question again: a follower');
is(ask({ query => 'another question' }, path => '/api/ask-small')->{status},
   503, 'queue full');
is(ask({ query => 'x' }, auth => 0)->{status}, 401, 'no token: 401');
is(ask({ query => 'x' }, token => 'a.b.c')->{status}, 401,
   'bad token: 401');
is(ask({ query => '' })->{status}, 400, 'empty query: 400');
is(ask('{"query":"x"}', type => 'text/plain')->{status}, 415,
   'wrong type: 415');
is($t->request(GET => '/health-limited')->{status}, 200, 'health');
is($t->request(GET => '/health-limited')->{status}, 429,
   'rate limited: 429 through an error page');

my ($m1, $n);
($r, $m1, $n) = settle($m0,
    'ragnx_http_request_duration_seconds_count{route="ask"}' => 8,
    'ragnx_http_request_duration_seconds_count{route="health"}' => 2,
    req('metrics', 'ok') => 1, req('metrics', '403') => 1,
    req('metrics', '405') => 1);
my $scrapes = delta($m0, $m1, req('metrics', 'ok'));
ok($scrapes >= 1 && $scrapes <= $n, "the scrapes counted ($scrapes)");
my %want = (
    req('ask', 'hit') => 1, req('ask', 'miss') => 1,
    req('ask', 'follower') => 1, req('ask', 'full') => 1,
    req('ask', '401') => 2, req('ask', '400') => 1, req('ask', '415') => 1,
    req('health', 'ok') => 1, req('health', '429') => 1,
    req('metrics', '403') => 1, req('metrics', '405') => 1,
    'ragnx_jwt_rejections_total{reason="missing"}' => 1,
    'ragnx_jwt_rejections_total{reason="invalid"}' => 1,
    'ragnx_jwt_rejections_total{reason="expired"}' => 0,
    'ragnx_http_request_duration_seconds_count{route="ask"}' => 8,
    'ragnx_http_request_duration_seconds_count{route="health"}' => 2,
);
for my $k (sort keys %want) {
    is(delta($m0, $m1, $k), $want{$k}, "$k moved by $want{$k}");
}

ok(delta($m0, $m1,
         'ragnx_redis_command_duration_seconds_count{server="queue"}') >= 5,
   'Redis round trips counted');
is($m1->{'ragnx_redis_timeouts_total{server="queue"}'}, 0, 'no timeouts');

# every histogram: cumulative buckets, +Inf == count
sub histograms_ok {
    my ($m, $what) = @_;
    my (%series, $bad);
    for my $k (keys %$m) {
        next unless $k =~ /^(\w+)_bucket\{(.*),le="([^"]+)"\}$/;
        push @{$series{"$1\{$2}"}}, [ $3 eq '+Inf' ? 9**9**9 : $3, $m->{$k} ];
    }
    ok(keys %series >= 10, "$what: histograms found");
    for my $s (sort keys %series) {
        my @b = sort { $a->[0] <=> $b->[0] } @{$series{$s}};
        my ($name, $labels) = $s =~ /^(\w+)\{(.*)\}$/;
        for my $i (1 .. $#b) {
            $bad .= "$s not cumulative\n" if $b[$i][1] < $b[$i - 1][1];
        }
        $bad .= "$s: +Inf != count\n"
            if $b[-1][1] != ($m->{"${name}_count{$labels}"} // -1);
    }
    ok(!$bad, "$what: buckets cumulative, +Inf == count") or diag $bad;
}
histograms_ok($m1, 'after the sequence');

# two workers, one set of figures: batches of requests on separate
# connections until both workers have served some (the first, nearly
# always)
my ($m2, %pids, $all) = ($m1);
$all = 1;
for my $batch (1 .. 5) {
    my $res = $t->parallel([ map { [ GET => '/health' ] } 1 .. 40 ]);
    my $m;
    ($r, $m) = settle($m2, req('health', 'ok') => 40);
    $all &&= grep({ ($_->{status} // 0) == 200 } @$res) == 40
             && delta($m2, $m, req('health', 'ok')) == 40;
    $m2 = $m;
    for (split /\n/, Ragnx::Test::slurp("$dir/routes.log")) {
        $pids{$1} = 1 if /^(\d+) health 200$/;
    }
    last if keys %pids >= 2;
}
ok($all, 'each batch of 40 health requests counted 40');
is(scalar(keys %pids), 2, 'by both workers ($ragnx_route logged)');

# a reload keeps the zone
$t->reload_nginx;
my $m3;
($r, $m3, $n) = settle($m2, req('metrics', 'ok') => 1);
is(delta($m2, $m3, req('ask', 'hit')), 0, 'hits kept across a reload');
is(delta($m2, $m3, req('health', 'ok')), 0, 'health kept across a reload');
$scrapes = delta($m2, $m3, req('metrics', 'ok'));
ok($scrapes >= 1 && $scrapes <= $n, "and the scrapes before it ($scrapes)");
is(ask({ query => 'cached question' })->{status}, 200,
   'hit after the reload');
my $m4;
($r, $m4) = settle($m3, req('ask', 'hit') => 1);
is(delta($m3, $m4, req('ask', 'hit')), 1, 'counted on after the reload');
histograms_ok($m4, 'after the reload');

# Redis goes away and comes back: the failures and the reconnects counted
$t->stop_redis;
is($t->request(GET => '/health')->{status}, 503, 'Redis stopped: 503');
$t->start_redis;
for (1 .. 100) {
    last if $t->request(GET => '/health')->{status} == 200;
    sleep 0.05;
}
my $m5;
($r, $m5) = scrape();
ok(delta($m4, $m5, req('health', '503')) >= 1, 'health 503 counted');
ok(delta($m4, $m5, 'ragnx_redis_reconnects_total{server="queue"}') >= 1,
   'reconnects counted');
ok(delta($m4, $m5, 'ragnx_redis_errors_total{server="queue",'
                   . 'kind="no_connection"}')
   + delta($m4, $m5, 'ragnx_redis_errors_total{server="queue",'
                     . 'kind="connection_lost"}') >= 1,
   'the failed command counted');

SKIP: {
    skip 'promtool not installed (scripts/deps)', 1 unless $promtool;
    my $f = $t->file('scrape2.txt', $r->{body});
    my $out = `$promtool check metrics < $f 2>&1`;
    is($?, 0, 'promtool check metrics, after the sequence') or diag $out;
}

$t->done;
