#!/usr/bin/perl
# Both sides over Redis's unix socket alone: nginx with `ragnx_redis
# unix:PATH`, the pool with redis_host = PATH (its redis_port names a port
# nothing listens on, so TCP would fail).  RPC (register, login: the
# subscriber connection), the queue (a miss the pool completes, the poll)
# and the cache (the same question again) all work.

use strict;
use warnings;
use lib 't/lib';
use Test::More;
use Cwd qw(getcwd);
use JSON::PP;
use Time::HiRes qw(sleep time);
use Ragnx::Test;
use Ragnx::Pool;

my $root = getcwd();
my $json = JSON::PP->new->canonical->utf8;

my $t = Ragnx::Test->new;
$t->start_redis(unix => 1);
my $sock = $t->redis_socket;
$t->start_postgres;

my $secret = 'unix-test-secret-0123456789abcdef0123';
my $keyfile = $t->file('hs.key', $secret);

my $p = Ragnx::Pool->new($t);
$p->configure(llm_model => 'extractive', jwt_key_file => $keyfile,
              password_opslimit => 1, password_memlimit => 8192,
              redis_host => $sock, redis_port => Ragnx::Test::free_port());

my ($rc, $out) = $p->cli('migrate');
is($rc, 0, 'migrate') or diag($out);
mkdir "$t->{dir}/corpus";
$t->file('corpus/sockets.md', <<'EOF');
# Sockets

A unix socket costs less per request than loopback TCP on one host.
EOF
($rc, $out) = $p->cli('ingest', "$t->{dir}/corpus");
is($rc, 0, 'ingest over the socket') or diag($out);
($rc, $out) = $p->cli('jobs');
is($rc, 0, 'ragnx-worker jobs over the socket') or diag($out);
$p->start;

$t->start_nginx(
    workers => 2,
    http    => "ragnx_redis unix:$sock;\n"
               . "    ragnx_rpc_seal_key " . ($t->rpc_keys)[1] . ";\n"
               . "    ragnx_ask_gen_refresh 100ms;",
    server  => <<"EOF");
        ragnx_jwt_key_file $keyfile;
        ragnx_rpc_timeout 3s;
        location = /api/auth/register {
            ragnx_validate_schema $root/schemas/register.json;
            ragnx_rpc register;
        }
        location = /api/auth/login {
            ragnx_validate_schema $root/schemas/login.json;
            ragnx_rpc login;
        }
        location = /api/ask {
            ragnx_jwt on;
            ragnx_validate_schema $root/schemas/ask.json;
            ragnx_ask;
        }
        location /api/ask/ { ragnx_jwt on; ragnx_ask_status; }
        location = /health { ragnx_health; }
EOF

sub call {
    my ($method, $path, $body, $token) = @_;
    my @h = ('Content-Type' => 'application/json');
    push @h, Authorization => "Bearer $token" if $token;
    my $r = $t->request($method, $path, headers => \@h,
                        defined $body ? (body => $json->encode($body)) : ());
    $r->{json} = Ragnx::Test::json_body($r);
    return $r;
}

# the subscriber connection comes up (it did not: keepalive on AF_UNIX)
my $subs = 0;
for (1 .. 200) {
    $subs = () = $t->redis('PUBSUB', 'CHANNELS', '{ragnx}:reply:*')
                 =~ /\S+/g;
    last if $subs >= 2;
    sleep 0.025;
}
is($subs, 2, 'both nginx workers subscribed over the socket');

my $r = call(GET => '/health');
is($r->{status}, 200, 'health: 200');

$r = call(POST => '/api/auth/register',
          { email => 'unix@example.com', password => 'correct horse' });
is($r->{status}, 201, 'register over the socket: 201') or diag($r->{raw});
$r = call(POST => '/api/auth/login',
          { email => 'unix@example.com', password => 'correct horse' });
is($r->{status}, 200, 'login over the socket: 200') or diag($r->{raw});
my $token = $r->{json}{token} // '';
ok(length $token > 20, '... with a token');

$r = call(POST => '/api/ask', { query => 'What does a unix socket cost?' },
          $token);
is($r->{status}, 202, 'ask: a miss, queued (202)') or diag($r->{raw});
my $job = $r->{json}{jobId} // '';
my $chat = $r->{json}{chatId};
my $j;
for (1 .. 300) {
    $j = call(GET => "/api/ask/$job", undef, $token)->{json};
    last if $j && ($j->{status} // '') =~ /^(completed|failed)$/;
    sleep 0.05;
}
is($j->{status}, 'completed', 'the pool completed it over the socket');
like($j->{answer} // '', qr/unix socket/i, '... from the document');

$r = call(POST => '/api/ask', { query => 'what does a UNIX socket cost?' },
          $token);
is($r->{status}, 200, 'the same question again, a new chat: 200');
is($r->{json}{source}, 'cache', '... from the cache');
is($r->{json}{answer}, $j->{answer}, '... with the same answer');

# every client of Redis came over the socket, none over TCP
my @clients = split /\n/, $t->redis('CLIENT', 'LIST');
my @over_tcp = grep { /\baddr=127\./ && !/\bcmd=client\b/ } @clients;
is(scalar @over_tcp, 0, 'no client but this check used TCP')
    or diag(join "\n", @over_tcp);
unlike($t->error_log, qr/TCP_KEEPIDLE|connection lost/,
       'no keepalive errors in the error log');

$p->finish;
