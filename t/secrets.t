#!/usr/bin/perl
# No secret at rest: after register and login through nginx and the real
# pool, with a distinctive password, neither the password nor the token
# is in any Redis key, stream or pub/sub message, in what MONITOR showed
# of every command, in the AOF or RDB files, or in any log; the call
# entries are gone from the stream.  A pool without the key, or with
# another key pair, cannot open the sealed calls: 503.

use strict;
use warnings;
use lib 't/lib';
use Test::More;
use Cwd qw(getcwd);
use File::Find ();
use JSON::PP;
use POSIX ();
use Time::HiRes qw(sleep time);
use Ragnx::Resp;
use Ragnx::Test qw(slurp);
use Ragnx::Pool;

my $PASSWORD = 'Zebra-Quartz-9931-ultra';
my $root = getcwd();
my $t = Ragnx::Test->new;
my $rp = $t->start_redis(appendonly => 1);
$t->start_postgres;
my $key = $t->file('hs.key', 'secrets-test-secret-0123456789abcdef');
my (undef, $rpcpub) = $t->rpc_keys;

# every command any client sends, and every message on any channel
sub watch {
    my ($name, @cmd) = @_;
    my $pid = fork() // die "fork: $!";
    if ($pid == 0) {
        open STDOUT, '>', "$t->{dir}/$name.out";
        open STDERR, '>', '/dev/null';
        exec('redis-cli', '-p', $rp, @cmd) or POSIX::_exit(127);
    }
    $t->{pids}{$name} = $pid;
}
watch(monitor => 'MONITOR');
watch(psubscribe => 'PSUBSCRIBE', '*');
sleep 0.2;

my $p = Ragnx::Pool->new($t);
$p->configure(llm_model => 'extractive', jwt_key_file => $key,
              password_opslimit => 1, password_memlimit => 8192);
my ($rc, $out) = $p->cli('migrate');
is($rc, 0, 'migrate') or diag($out);
$p->start;

$t->start_nginx(
    http   => "ragnx_redis 127.0.0.1:$rp;\n"
              . "    ragnx_rpc_seal_key $rpcpub;\n"
              . "    ragnx_rpc_timeout 3s;",
    server => <<"EOF");
        location = /api/auth/register {
            ragnx_validate_schema $root/schemas/register.json;
            ragnx_rpc register;
        }
        location = /api/auth/login {
            ragnx_validate_schema $root/schemas/login.json;
            ragnx_rpc login;
        }
EOF

ok($t->wait_subscribed, 'nginx subscribed to its reply channel');

my $json = JSON::PP->new->canonical;
sub post {
    my ($path, $body) = @_;
    my $r = $t->request(POST => $path,
        headers => [ 'Content-Type' => 'application/json' ],
        body => $json->encode($body));
    $r->{j} = Ragnx::Test::json_body($r) || {};
    return $r;
}

my $r = post('/api/auth/register', { email => 'zed@example.com',
                                     password => $PASSWORD });
is($r->{status}, 201, 'register: 201') or diag($r->{raw});
my $t1 = $r->{j}{token};
$r = post('/api/auth/login', { email => 'zed@example.com',
                               password => $PASSWORD });
is($r->{status}, 200, 'login: 200') or diag($r->{raw});
my $t2 = $r->{j}{token};
ok(length($t1 // '') > 40 && length($t2 // '') > 40, 'two tokens');
$r = post('/api/auth/login', { email => 'zed@example.com',
                               password => "$PASSWORD-wrong" });
is($r->{status}, 401, 'a wrong password: 401');

# what must not be found: the password, the tokens (their signatures too)
my @secret = ($PASSWORD, $t1, $t2, (split /\./, $t1)[2], (split /\./, $t2)[2]);

is($t->redis('XLEN', '{ragnx}:rpc'), 0, 'the pool deleted every call entry');

# every key, whatever its type
my $dump = '';
for my $k (split /\n/, $t->redis('--scan')) {
    my $type = $t->redis('TYPE', $k);
    $dump .= "$k\n" . ($type eq 'string' ? $t->redis('GET', $k)
                    : $type eq 'hash'   ? $t->redis('HGETALL', $k)
                    : $type eq 'list'   ? $t->redis('LRANGE', $k, 0, -1)
                    : $type eq 'zset'   ? $t->redis('ZRANGE', $k, 0, -1)
                    : $type eq 'set'    ? $t->redis('SMEMBERS', $k)
                    : $type eq 'stream' ? $t->redis('XRANGE', $k, '-', '+')
                    : '') . "\n";
}
ok(length $dump, 'Redis holds keys to look at');

# the files: the AOF as written, then an RDB and a rewritten AOF
$t->redis('BGSAVE');
for (1 .. 200) {
    last if $t->redis('INFO', 'persistence') =~ /rdb_bgsave_in_progress:0/
        && -f "$t->{dir}/redis/dump.rdb";
    sleep 0.025;
}
my @files;
File::Find::find(sub { push @files, $File::Find::name if -f }, "$t->{dir}/redis");
ok((grep { /\.aof$/ } @files) && (grep { /dump\.rdb$/ } @files),
   'AOF and RDB files to look at') or diag("@files");

$p->stop;
$t->stop_nginx;
for my $w (qw(monitor psubscribe)) {
    $t->stop_pid($w);
}
my $monitor = slurp("$t->{dir}/monitor.out");
like($monitor, qr/"PUBLISH"/, 'MONITOR saw the replies go out');
like($monitor, qr/"XADD" "\{ragnx\}:rpc"/, '... and the calls come in');

my %where = (
    'Redis keys'              => $dump,
    'MONITOR'                 => $monitor,
    'pub/sub messages'        => slurp("$t->{dir}/psubscribe.out"),
    'nginx error log'         => slurp("$t->{dir}/error.log"),
    'nginx access log'        => slurp("$t->{dir}/access.log"),
    'pool log'                => $p->worker_log,
    map { ("file $_" => slurp($_)) } @files,
);
for my $w (sort keys %where) {
    my @found = grep { index($where{$w}, $_) >= 0 } @secret;
    is(scalar @found, 0, "no password or token in the $w")
        or diag("found: @found");
}

# a pool without the key: 503, nothing opened; with another key: the same

$t->start_nginx(
    http   => "ragnx_redis 127.0.0.1:$rp;\n"
              . "    ragnx_rpc_seal_key $rpcpub;\n"
              . "    ragnx_rpc_timeout 3s;",
    server => <<"EOF");
        location = /api/auth/login {
            ragnx_validate_schema $root/schemas/login.json;
            ragnx_rpc login;
        }
EOF
system("openssl genpkey -algorithm X25519 -out $t->{dir}/other.key") == 0
    or die 'openssl';
for my $case ([ 'without rpc_key_file', undef, qr/no rpc_key_file is set/ ],
              [ 'with another key', "$t->{dir}/other.key",
                qr/not sealed for this pool's rpc_key_file/ ])
{
    my ($name, $file, $log) = @$case;
    $p->configure(llm_model => 'extractive', jwt_key_file => $key,
                  rpc_key_file => $file);
    $p->start;
    $r = post('/api/auth/login', { email => 'zed@example.com',
                                   password => $PASSWORD });
    is($r->{status}, 503, "a pool $name: 503");
    is_deeply($r->{j}, { error => 'Service unavailable' }, '... as JSON');
    like($p->worker_log, $log, '... and says why');
    unlike($p->worker_log, qr/\Q$PASSWORD\E/, '... never what it could not open');
    $p->stop;
}

$t->done;
