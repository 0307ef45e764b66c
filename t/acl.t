#!/usr/bin/perl
# Redis ACL users on both sides, with the rules of scripts/redis-users.acl
# and the default user off: nginx as ragnx-nginx (ragnx_redis user= and
# password_file=), the pool as ragnx-pool (redis_user and
# redis_password_file).  End to end: register and login (RPC, the
# subscriber authenticates too), an ask that misses, is completed by the
# pool and polled, the same question from the cache; again after Redis
# drops every connection of both users (AUTH on reconnect).  A wrong
# password: nginx answers 503 JSON and logs the refusal, the pool does
# not start, ragnx-worker jobs fails, naming the settings.  What each
# user may not do: FLUSHALL, KEYS, CONFIG, DEBUG, keys and channels
# outside {ragnx}:, the same from inside a Lua script; every command the
# sources send is in the rules.  The settings' rules at nginx -t and
# ragnx-worker -t; a SIGHUP with a wrong password keeps the old one.

use strict;
use warnings;
use lib 't/lib';
use Test::More;
use Cwd qw(getcwd);
use JSON::PP;
use POSIX ();
use Time::HiRes qw(sleep time);
use Ragnx::Test qw(slurp);
use Ragnx::Pool;

my $root = getcwd();
my $json = JSON::PP->new->canonical->utf8;

my $t = Ragnx::Test->new;
my $rp = $t->start_redis(acl => 1);
$t->start_postgres;

my $nginx_pw = $t->redis_password_file('ragnx-nginx');
my $pool_pw = $t->redis_password_file('ragnx-pool');
ok(-s $nginx_pw && -s $pool_pw, 'scripts/redis-acl made both passwords');
is(sprintf('%o', (stat $nginx_pw)[2] & 0777), '600', '... mode 0600');

# the default user is off

like($t->redis_as(undef, 'PING'), qr/^NOAUTH/, 'no AUTH: NOAUTH');
like($t->redis_as(undef, 'AUTH', 'default', 'anything'), qr/^WRONGPASS/,
     'AUTH as the default user: refused');
unlike(slurp("$t->{dir}/redis-users.acl"),
       qr/\Q${\ slurp($nginx_pw)}\E|\Q${\ slurp($pool_pw)}\E/,
       'the aclfile holds no password, only hashes');

# the pool as ragnx-pool

my $secret = 'acl-test-secret-0123456789abcdef0123';
my $keyfile = $t->file('hs.key', $secret);
my %base = (llm_model => 'extractive', jwt_key_file => $keyfile,
            password_opslimit => 1, password_memlimit => 8192,
            redis_user => 'ragnx-pool', redis_password_file => $pool_pw);
my $p = Ragnx::Pool->new($t);
$p->configure(%base);

my ($rc, $out) = $p->cli('migrate');
is($rc, 0, 'migrate') or diag($out);
mkdir "$t->{dir}/corpus";
$t->file('corpus/acl.md', <<'EOF');
# Access control

Each side of ragnx reaches Redis as its own ACL user with a password.
EOF
($rc, $out) = $p->cli('ingest', "$t->{dir}/corpus");
is($rc, 0, 'ingest sets the generation as ragnx-pool') or diag($out);
unlike($out, qr/could not set/, '... without a Redis error');
($rc, $out) = $p->cli('jobs');
is($rc, 0, 'ragnx-worker jobs as ragnx-pool') or diag($out);
like($out, qr/^queued 0$/m, '... prints the queue');
$p->start;

# nginx as ragnx-nginx

sub locations {
    return <<"EOF";
        ragnx_jwt_key_file $keyfile;
        ragnx_rpc_timeout 3s;
        error_page 404 405 500 503 \@err;
        location \@err { ragnx_json_error; }
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
}

$t->start_nginx(
    workers => 2,
    http    => "ragnx_redis 127.0.0.1:$rp user=ragnx-nginx "
               . "password_file=$nginx_pw;\n"
               . "    ragnx_rpc_seal_key " . ($t->rpc_keys)[1] . ";\n"
               . "    ragnx_ask_gen_refresh 100ms;",
    server  => locations());

sub call {
    my ($tt, $method, $path, $body, $token) = @_;
    my @h = ('Content-Type' => 'application/json');
    push @h, Authorization => "Bearer $token" if $token;
    my $r = $tt->request($method, $path, headers => \@h,
                         defined $body ? (body => $json->encode($body)) : ());
    $r->{json} = Ragnx::Test::json_body($r);
    return $r;
}

sub subscribed {
    my ($want) = @_;
    my $n = 0;
    for (1 .. 400) {
        $n = () = $t->redis('PUBSUB', 'CHANNELS', '{ragnx}:reply:*')
                  =~ /\S+/g;
        last if $n >= $want;
        sleep 0.025;
    }
    return $n;
}

# register, login, ask (miss, pool, poll), the same again (cache)
sub round {
    my ($n, $what) = @_;
    my $email = "acl$n\@example.com";
    my $r = call($t, POST => '/api/auth/register',
                 { email => $email, password => 'correct horse' });
    is($r->{status}, 201, "$what: register through nginx and the pool")
        or diag($r->{raw});
    $r = call($t, POST => '/api/auth/login',
              { email => $email, password => 'correct horse' });
    is($r->{status}, 200, "$what: login") or diag($r->{raw});
    my $token = $r->{json}{token} // '';

    my $q = "Who reaches Redis as its own user? ($n)";
    $r = call($t, POST => '/api/ask', { query => $q }, $token);
    is($r->{status}, 202, "$what: an ask that misses is queued")
        or diag($r->{raw});
    my ($job, $chat) = ($r->{json}{jobId} // '', $r->{json}{chatId});
    my $j;
    for (1 .. 300) {
        $j = call($t, GET => "/api/ask/$job", undef, $token)->{json};
        last if $j && ($j->{status} // '') =~ /^(completed|failed)$/;
        sleep 0.05;
    }
    is($j->{status}, 'completed', "$what: the pool completes it, the poll "
       . 'sees it');
    like($j->{answer} // '', qr/ACL user/, "$what: the answer");
    # in a new chat: the shared cache (in $chat it is that chat's own)
    $r = call($t, POST => '/api/ask', { query => $q }, $token);
    is($r->{status}, 200, "$what: the same question again: 200");
    is($r->{json}{source}, 'cache', "$what: from the cache");
}

is(subscribed(2), 2, 'both nginx workers subscribed as ragnx-nginx');
is(call($t, GET => '/health')->{status}, 200, 'health: 200');
round(1, 'own users');

my @clients = split /\n/, $t->redis('CLIENT', 'LIST');
my %users;
$users{$_}++ for map { /\buser=(\S+)/ ? $1 : () } @clients;
ok($users{'ragnx-nginx'} && $users{'ragnx-pool'},
   "clients of both users ($users{'ragnx-nginx'} nginx, "
   . "$users{'ragnx-pool'} pool)");
ok(!$users{default}, 'no client as the default user');

# Redis drops every connection of both users: each reconnects with AUTH
for my $u (qw(ragnx-nginx ragnx-pool)) {
    $t->redis('CLIENT', 'KILL', 'USER', $u);
}
sleep 0.5;
is(subscribed(2), 2, 'after the kill: subscribed again');
my $ok = 0;
for (1 .. 100) {
    last if ($ok = call($t, GET => '/health')->{status} == 200);
    sleep 0.05;
}
ok($ok, 'after the kill: health 200 again');
round(2, 'after reconnecting');
unlike($t->error_log, qr/authentication as user/,
       'no authentication failure in the error log');

# every command a side sends or its scripts call is allowed to its user
# in scripts/redis-users.acl: read from the sources and the Lua scripts,
# so a new command fails here, not in production (ACL GETUSER would show
# the rules rewritten into categories)

my %sources = ('ragnx-nginx' => [glob('ngx_module/*.c ngx_module/lua/*.lua')],
               'ragnx-pool' => [glob('workers/*.c workers/lua/*.lua')]);
for my $u (sort keys %sources) {
    my %cmd;
    for my $f (@{ $sources{$u} }) {
        my $src = slurp($f);
        $cmd{lc "$1|$2"}++ while $src =~ /redis\.p?call\('(XGROUP|XINFO|SCRIPT)',
                                           \s*'(\w+)'/gx;
        $cmd{lc $1}++ while $src =~ /redis\.p?call\('(\w+)'/g;
        $cmd{lc $1}++ while $src =~ /(?:ragnx_redis_command\(|
                                      redisAppendCommand\(|redisCommand\()
                                      [^,]+,\s*"([A-Z]+)/gx;
        $cmd{lc "$1|$2"}++ while $src =~ /(?:ragnx_redis_command\(|
                                           redisCommand\()[^,]+,\s*
                                           "(XGROUP|SCRIPT)\ (\w+)/gx;
        $cmd{lc $1}++ while $src =~ /\bargv(?:\[0\])? = "([A-Z]+)"/g;
        $cmd{'script|load'}++ if $src =~ /"SCRIPT"/;
        $cmd{evalsha}++ if $src =~ /"EVALSHA/;
    }
    delete @cmd{qw(xgroup xinfo script auth)};
    my ($rules) = slurp('scripts/redis-users.acl') =~ /^user \Q$u\E (.*)$/m;
    my %allowed = map { s/^\+//r => 1 } grep { /^\+/ } split ' ',
                  $rules // '';
    my @missing = grep { !$allowed{$_} } sort keys %cmd;
    ok(keys %cmd > 8, "$u: the commands of its side ("
       . join(' ', sort keys %cmd) . ')');
    is("@missing", '', "$u: each allowed by scripts/redis-users.acl");
}

# what each user may not do, directly and from a script

for my $u (qw(ragnx-nginx ragnx-pool)) {
    $t->redis('SET', 'outside', 'x');
    for my $c (['FLUSHALL'], ['FLUSHDB'], ['KEYS', '*'],
               ['CONFIG', 'GET', 'maxmemory'], ['DEBUG', 'SLEEP', '0'],
               ['SHUTDOWN', 'NOSAVE'], ['ACL', 'LIST'], ['MONITOR'],
               ['SCAN', '0'], ['GET', 'outside'], ['SET', 'outside', 'y'],
               ['DEL', 'outside'], ['GET', '{other}:gen'],
               ['PUBLISH', 'elsewhere', 'x'], ['SCRIPT', 'FLUSH'])
    {
        # DEBUG is off for every user: ACL or not, it is refused
        like($t->redis_as($u, @$c),
             qr/^(NOPERM|ERR DEBUG command not allowed)/, "$u: @$c refused");
    }
    my $sha = $t->redis_as($u, 'SCRIPT', 'LOAD',
                           "return redis.call('GET', 'outside')");
    like($t->redis_as($u, 'EVALSHA', $sha, 0), qr/NOPERM|can't access/i,
         "$u: a key outside {ragnx}: from a script refused");
    $sha = $t->redis_as($u, 'SCRIPT', 'LOAD',
                        "return redis.call('FLUSHALL')");
    like($t->redis_as($u, 'EVALSHA', $sha, 0), qr/NOPERM|can't run this command/i,
         "$u: FLUSHALL from a script refused");
    is($t->redis('GET', 'outside'), 'x', "$u: the key outside is intact");
    ok($t->redis('EXISTS', '{ragnx}:gen'), "$u: {ragnx}:gen is still there");
}
like($t->redis_as('ragnx-nginx', 'XREADGROUP', 'GROUP', 'pool', 'x',
                  'COUNT', 1, 'STREAMS', '{ragnx}:jobs', '>'),
     qr/^NOPERM/, 'ragnx-nginx: cannot consume the queue');
like($t->redis_as('ragnx-nginx', 'PUBLISH', '{ragnx}:reply:x', 'y'),
     qr/^NOPERM/, 'ragnx-nginx: cannot publish replies');
like($t->redis_as('ragnx-pool', 'HGETALL', '{ragnx}:job:x'),
     qr/^NOPERM/, 'ragnx-pool: no command it does not use');

# a wrong password on the nginx side: 503 JSON, the refusal logged

{
    my $t2 = Ragnx::Test->new;
    my $bad = $t2->file('wrong.password', "not-the-password\n");
    $t2->start_nginx(
        http   => "ragnx_redis 127.0.0.1:$rp user=ragnx-nginx "
                  . "password_file=$bad;\n"
                  . "    ragnx_rpc_seal_key " . ($t->rpc_keys)[1] . ";",
        server => locations());
    sleep 0.5;
    my $token = Ragnx::Test::jwt_hs256($secret,
                                       { sub => 'x', exp => time + 600 });
    my $r = call($t2, POST => '/api/ask', { query => 'anything' }, $token);
    is($r->{status}, 503, 'wrong nginx password: ask 503');
    ok($r->{json} && $r->{json}{error}, '... with a JSON error')
        or diag($r->{raw});
    $r = call($t2, POST => '/api/auth/register',
              { email => 'x@example.com', password => 'correct horse' });
    is($r->{status}, 503, 'wrong nginx password: register 503');
    ok($r->{json} && $r->{json}{error}, '... with a JSON error')
        or diag($r->{raw});
    $r = call($t2, GET => '/health');
    is($r->{status}, 503, 'wrong nginx password: health 503');
    is($r->{json}{redis}, 'down', '... redis down') or diag($r->{raw});
    my $log = $t2->error_log;
    my $refused = qr/authentication as user "ragnx-nginx" failed: WRONGPASS/;
    like($log, qr/ragnx redis "127\.0\.0\.1:$rp" $refused/,
         'the error log names the refused authentication');
    unlike($log, qr/not-the-password/, '... and not the password');
    my $tries = () = $log =~ /authentication as user/g;
    ok($tries < 30, "reconnects back off ($tries tries in 0.5 s+)");
    $t2->stop_nginx;
    my @bad = $t2->log_problems;
    ok(!@bad, 'wrong nginx password: no alerts') or diag(join "\n", @bad);
}

# nginx -t: user= needs a password file, a name without spaces

for my $c (
    [ "user=ragnx-nginx", qr/"user=" requires "password_file="/ ],
    [ "user= password_file=$nginx_pw", qr/invalid parameter "user="/ ],
    [ "\"user=a b\" password_file=$nginx_pw",
      qr/invalid parameter "user=a b"/ ],
) {
    my ($ok, $o) = $t->nginx_t(http => "ragnx_redis 127.0.0.1:$rp $c->[0];");
    ok(!$ok, "nginx -t fails: ragnx_redis ... $c->[0]");
    like($o, $c->[1], '... saying why') or diag($o);
}

# the pool: a wrong password stops it at start, the CLI fails

{
    my $t2 = Ragnx::Test->new(redis_port => $rp, pg_port => $t->pg_port);
    my $bad = $t2->file('wrong.password', 'not-the-password');
    my $p2 = Ragnx::Pool->new($t2);
    $p2->configure(%base, redis_password_file => $bad,
                   log_file => "$t2->{dir}/worker.log");
    my $pid = fork() // die "fork: $!";
    if ($pid == 0) {
        open STDOUT, '>>', "$t2->{dir}/worker.out";
        open STDERR, '>>', "$t2->{dir}/worker.out";
        exec(Ragnx::Pool::worker_bin(), '-c', "$t2->{dir}/worker.conf")
            or POSIX::_exit(127);
    }
    my $status;
    for (1 .. 400) {
        if (waitpid($pid, POSIX::WNOHANG()) == $pid) { $status = $?; last }
        sleep 0.025;
    }
    unless (defined $status) {
        kill 'TERM', $pid;
        waitpid($pid, 0);
    }
    ok(defined $status && $status >> 8 == 1,
       'wrong pool password: ragnx-worker exits 1 at start');
    my $log = slurp("$t2->{dir}/worker.log");
    my $check = qr/\(check redis_user and redis_password_file\)/;
    like($log, qr/redis AUTH as user \\"ragnx-pool\\" refused: WRONGPASS.* $check/,
         '... logging the refusal and the settings to check') or diag($log);
    like($log, qr/not starting/, '... and that it does not start');
    unlike($log, qr/not-the-password/, '... never the password');
    unlike($log, qr/started worker/, '... no worker started');

    ($rc, $out) = $p2->cli('jobs');
    is($rc, 1, 'wrong pool password: ragnx-worker jobs exits 1');
    like($out, qr/refused: WRONGPASS/, '... saying why') or diag($out);

    # -t reads the file but does not connect, like nginx -t
    ($rc, $out) = $p2->cli('-t');
    is($rc, 0, 'ragnx-worker -t does not connect to Redis') or diag($out);

    for my $c (
        [ { redis_password_file => undef },
          qr/redis_user: requires redis_password_file/ ],
        [ { redis_password_file => $t2->file('empty.password', "\n") },
          qr/redis_password_file: the Redis password is empty/ ],
        [ { redis_user => 'a"b c' },
          qr/redis_user: must not contain spaces/ ],
        [ { redis_password_file => "$t2->{dir}/missing" },
          qr/redis_password_file: cannot open/ ],
    ) {
        $p2->configure(%base, %{ $c->[0] });
        ($rc, $out) = $p2->cli('-t');
        is($rc, 1, "ragnx-worker -t fails: " . $json->encode($c->[0]));
        like($out, $c->[1], '... naming the setting') or diag($out);
    }

    # the environment overrides the file, as for every setting
    $p2->configure(%base);
    {
        local $ENV{RAGNX_REDIS_USER} = 'from-env';
        ($rc, $out) = $p2->cli('-T');
    }
    like($out, qr/^redis_user\s+from-env$/m, 'RAGNX_REDIS_USER sets it');
    unlike($out, qr/\Q${\ slurp($pool_pw)}\E/, '-T prints no password');
}

# SIGHUP with a wrong password keeps the pool on the old one

{
    $p->configure(%base, redis_password_file => $t->file('bad.password',
                                                         'nope'));
    my $before = length $p->worker_log;
    kill 'HUP', $p->pid;
    my $log = '';
    for (1 .. 200) {
        $log = substr($p->worker_log, $before);
        last if $log =~ /reload failed/;
        sleep 0.025;
    }
    my $keep = qr/reload failed, keeping the current configuration/;
    like($log, qr/$keep: redis refused the new credentials/,
         'a reload with a wrong password is refused');
    $p->configure(%base);
    round(3, 'after the refused reload');
}

unlike($p->worker_log, qr/NOPERM|can't run this command/,
       'the pool was refused nothing');
unlike($t->error_log, qr/NOPERM|can't run this command/,
       'nginx was refused nothing');

$p->finish;
