#!/usr/bin/perl
# One definition of a question's cache key and in-flight field: what the
# module's ask script writes in Redis (ngx_module/lua/ask.lua, run with
# EVAL) is what the C code of both sides builds
# (ragnx_cache_key(), ragnx_inflight_field(), via build/unit/keys_tool).

use strict;
use warnings;
use lib 't/lib';
use Test::More;
use Digest::SHA qw(sha256_hex);
use Ragnx::Test;
use Ragnx::Pool;

my $tool = ($ENV{RAGNX_BUILD} || 'build') . '/unit/keys_tool';
-x $tool or BAIL_OUT("$tool not built: run the suite with make test");

my $t = Ragnx::Test->new;
$t->start_redis;
my $pool = Ragnx::Pool->new($t);

# the C side's key and field for a digest and a generation
sub c_keys {
    my ($digest, $gen) = @_;
    open(my $fh, '-|', $tool, $digest, $gen) or die "$tool: $!";
    local $/;
    my $out = <$fh>;
    close $fh;
    is($?, 0, "keys_tool ran for \"$gen\"");
    return split /\n/, $out;
}

my $n = 0;
for my $gen (undef, 'model-x@7', "m \"q\"\\\@3 \xc3\xa9t\xc3\xa9") {
    my $name = defined $gen ? "generation \"$gen\"" : 'no generation set';
    if (defined $gen) {
        $t->redis('SET', '{ragnx}:gen', $gen);
    } else {
        $t->redis('DEL', '{ragnx}:gen');
    }

    my $q = 'which key is mine ' . ++$n;
    my ($id, $outcome, $g) = $pool->ask(query => $q);
    is($outcome, 'queued', "$name: a new question is queued");
    is($g, $gen // 'default@0', "$name: the script read the generation");

    my ($key, $field) = c_keys(sha256_hex($q), $g);

    my @fields = split /\n/, $t->redis('HKEYS', '{ragnx}:inflight');
    ok((grep { $_ eq $field } @fields),
       "$name: the script's in-flight field is the C one")
        or diag("C: $field\nRedis: @fields");
    is($t->redis('HGET', '{ragnx}:inflight', $field), $id,
       "$name: and names the leader");

    # the answer under the C key is the one the script finds
    $t->redis('SET', $key, '{"answer":"from C","sources":[]}');
    my (undef, $again) = $pool->ask(query => $q);
    is($again, 'hit', "$name: the script looks the answer up at the C key");
}

$t->done;
