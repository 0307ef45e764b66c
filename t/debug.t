#!/usr/bin/perl
# The async paths print their debug lines: a module built against nginx
# configured --with-debug, its error_log at "debug", and a cache miss, a
# cache hit, a client gone while Redis hangs and a Redis timeout each
# leave their trace.  Run by `make test-debug`, which builds that module
# and names it in RAGNX_DEBUG_MODULE; skipped otherwise.

use strict;
use warnings;
use lib 't/lib';
use Test::More;
use Cwd qw(getcwd);
use Digest::SHA qw(sha256_hex);
use JSON::PP;
use Time::HiRes qw(sleep);

BEGIN {
    plan skip_all => 'RAGNX_DEBUG_MODULE not set: run make test-debug'
        unless $ENV{RAGNX_DEBUG_MODULE};
    $ENV{RAGNX_MODULE} = $ENV{RAGNX_DEBUG_MODULE};
}

use Ragnx::Test;

my $root = getcwd();
my $t = Ragnx::Test->new;
my $rp = $t->start_redis;
my $secret = 'debug-test-secret-0123456789abcdef';
my $keyfile = $t->file('hs.key', $secret);
my $debug = $t->dir . '/debug.log';

$t->start_nginx(
    workers => 1,
    main    => "error_log $debug debug;",
    http    => <<"EOF2",
    ragnx_redis 127.0.0.1:$rp pool=1;
    ragnx_redis_timeout 300ms;
    ragnx_ask_gen_refresh 0;
EOF2
    server  => <<"EOF2");
        ragnx_jwt_alg HS256;
        ragnx_jwt_key_file $keyfile;
        location = /api/ask {
            ragnx_jwt on;
            ragnx_validate_schema $root/schemas/ask.json;
            ragnx_ask;
        }
        # no pool here: 200 says Redis is connected
        location = /health { ragnx_health_pool_timeout off; ragnx_health; }
EOF2

my $token = Ragnx::Test::jwt_hs256($secret, { sub => 'alice',
                                              exp => time + 3600 });
my @headers = (Authorization => "Bearer $token",
               'Content-Type' => 'application/json');

sub ask {
    my ($q) = @_;
    return $t->request(POST => '/api/ask', headers => \@headers,
                       body => encode_json({ query => $q }));
}

# the debug log written since $from bytes
sub since {
    my ($from) = @_;
    my $log = Ragnx::Test::slurp($debug);
    return substr($log, $from);
}

sub size { -s $debug || 0 }

# until $re shows in the debug log after $from (lines come from a worker)
sub wait_for {
    my ($from, $re) = @_;
    for (1 .. 100) {
        return 1 if since($from) =~ $re;
        sleep 0.02;
    }
    return 0;
}

my $r;
for (1 .. 100) {
    $r = $t->request(GET => '/health');
    last if $r->{status} == 200;
    sleep 0.05;
}
is($r->{status}, 200, 'Redis connected');

my $log = since(0);
like($log, qr/ragnx redis "127\.0\.0\.1:\d+" connect$/m, 'connect traced');
like($log, qr/ragnx redis "127\.0\.0\.1:\d+" connected$/m,
     'connected traced');

# a miss: the script queues the job

my $from = size();
$r = ask('what does the debug build print');
is($r->{status}, 202, 'miss queued');
ok(wait_for($from, qr/outcome "queued"/), 'miss: outcome traced');
$log = since($from);
like($log, qr/ragnx redis "[^"]+" call "EVALSHA" queued, \d+ pending/,
     'miss: command queued traced');
like($log, qr/ragnx redis "[^"]+" flush, \d+ pending/,
     'miss: flush traced');
like($log, qr/ragnx redis "[^"]+" reply type:\d+/, 'miss: reply traced');
like($log, qr/ragnx redis resume "\/api\/ask", rc:0/,
     'miss: resume traced');
like($log, qr/ragnx ask: job [-0-9a-f]{36}, script mode "all"/,
     'miss: script call traced');

# a hit: the answer is in the cache

my $q = 'a cached question';
$t->redis('SET', '{ragnx}:cache:' . sha256_hex($q) . ':default@0',
          '{"answer":"from the cache","sources":[]}');
$from = size();
$r = ask($q);
is($r->{status}, 200, 'hit answered');
ok(wait_for($from, qr/outcome "hit"/), 'hit: outcome traced');

# a client that goes away while its reply is pending

$t->signal('redis', 'STOP');
$from = size();
my $s = $t->send_request(POST => '/api/ask', headers => \@headers,
                         body => encode_json({ query => 'gone' }));
ok(wait_for($from, qr/call "EVALSHA" queued/), 'gone: call queued');
close $s;
ok(wait_for($from, qr/request gone, reply detached/),
   'gone: detach traced');

# a timeout: Redis hangs past ragnx_redis_timeout

$from = size();
$r = ask('a question Redis never answers');
is($r->{status}, 503, 'timeout: 503');
ok(wait_for($from, qr/no answer from redis, rc:-6/),
   'timeout: the ask side traced it');
like(since($from), qr/ragnx redis reply for request, rc:-6/,
     'timeout: the redis side traced it');

# Redis gone: the connection retries with backoff

$t->signal('redis', 'CONT');
$t->stop_redis;
$from = size();
ok(wait_for($from, qr/reconnect in \d+ ms \(backoff \d+ ms\)/),
   'reconnect traced');

$t->done;
