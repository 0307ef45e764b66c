#!/usr/bin/perl
# POST /api/ask with a separate cache server (ragnx_redis_cache): the
# lookup runs there, the enqueue on the queue server; a generation that
# needs JSON escaping still works (it is a field beside the payload).

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
my $c = Ragnx::Test->new;
my $qp = $t->start_redis;
my $cp = $c->start_redis;
my $secret = 'ask-cache-secret-0123456789abcdef';
my $keyfile = $t->file('hs.key', $secret);
my $json = JSON::PP->new->canonical;

$t->start_nginx(
    workers => 1,
    http    => <<"EOF2",
    ragnx_redis 127.0.0.1:$qp pool=1;
    ragnx_redis_cache 127.0.0.1:$cp pool=1;
    ragnx_redis_timeout 300ms;
    ragnx_ask_gen_refresh 100ms;
EOF2
    server  => <<"EOF2");
        ragnx_jwt_alg HS256;
        ragnx_jwt_key_file $keyfile;
        location = /api/ask {
            ragnx_jwt on;
            ragnx_validate_schema $root/schemas/ask.json;
            ragnx_ask;
        }
EOF2

my $token = Ragnx::Test::jwt_hs256($secret, { sub => 'alice',
                                              exp => time + 3600 });

sub ask {
    my ($q) = @_;
    my $r = $t->request(POST => '/api/ask',
        headers => [ Authorization => "Bearer $token",
                     'Content-Type' => 'application/json' ],
        body => $json->encode({ query => $q }));
    return ($r->{status}, Ragnx::Test::json_body($r));
}

# the payload of the newest entry, with the fields beside it
sub last_job {
    my @f = split /\n/, $t->redis('XREVRANGE', $_[0] || '{ragnx}:jobs', '+',
                                 '-', 'COUNT', 1);
    my %e = @f[1 .. $#f];
    my $p = decode_json($e{job});
    $p->{"entry $_"} = $e{$_} for grep { $_ ne 'job' } keys %e;
    return $p;
}

sub xlen { $t->redis('XLEN', $_[0] || '{ragnx}:jobs') }

for (1 .. 100) {
    last if $t->redis('CLIENT', 'LIST') =~ tr/\n// >= 1
            && $c->redis('CLIENT', 'LIST') =~ tr/\n// >= 1;
    sleep 0.05;
}
sleep 0.35;

for my $gen ('default@0', 'model "x"@3') {
    my $name = $gen eq 'default@0' ? 'plain generation'
                                   : 'generation needing escapes';
    $c->redis('SET', '{ragnx}:gen', $gen);
    sleep 0.35;

    # misses: looked up on the cache server, enqueued on the queue server
    for my $i (1 .. 12) {
        my ($s, $b) = ask("$name question $i");
        is($s, 202, "$name: miss $i queued") if $i == 1 || $i == 12;
    }
    my $p = last_job();
    is($p->{'entry gen'}, $gen, "$name: the entry carries the generation");
    ok(!exists $p->{gen}, "$name: the payload as the module wrote it");
    is($t->redis('EXISTS', "{ragnx}:job:$p->{id}"), 1,
       "$name: job hash on the queue server");
    is($c->redis('XLEN', '{ragnx}:jobs'), 0,
       "$name: nothing queued on the cache server");

    # a hit: answered from the cache server, recorded on the queue server
    my $q = "$name cached question";
    $c->redis('SET', '{ragnx}:cache:' . sha256_hex($q) . ":$gen",
              $json->encode({ answer => "cached $name", sources => [] }));
    my $x = xlen('{ragnx}:records');
    my ($s, $b) = ask($q);
    is($s, 200, "$name: hit");
    is($b->{answer}, "cached $name", "$name: cached answer");
    # the record goes out with the worker's next write, within 1 ms
    for (1 .. 100) {
        last if xlen('{ragnx}:records') > $x;
        sleep 0.02;
    }
    is(xlen('{ragnx}:records'), $x + 1, "$name: hit recorded");
    $p = last_job('{ragnx}:records');
    is($p->{query}, $q, "$name: the record's payload");
    is(decode_json($p->{'entry result'})->{answer}, "cached $name",
       "$name: the record carries the answer");
}

$t->stop_nginx;
ok(!$t->log_problems, 'no errors logged') or diag($t->log_problems);
$t->stop_redis;
$c->stop_redis;

Ragnx::Test::responses_checked();
done_testing();
