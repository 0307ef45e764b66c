#!/usr/bin/perl
# Synchronous calls (ragnx_rpc) against a real redis-server and a stand-in
# pool written here: the stand-in reads {ragnx}:rpc and publishes replies on
# the caller's channel, on time, late, to a wrong id, malformed or never.
# Checks pass-through of status and body, request checks (405, 401, 400),
# timeouts, late replies, crossed replies under concurrency, clients that
# go away, a Redis restart, and two workers with their own channels.

use strict;
use warnings;
use lib 't/lib';
use Test::More;
use Cwd qw(getcwd);
use IO::Socket::INET;
use JSON::PP;
use POSIX ();
use Time::HiRes qw(time sleep);
use Ragnx::Resp;
use Ragnx::Test;

my $UUID = qr/^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-
              [0-9a-f]{12}$/x;
my $CHAT = '3f2b8c1e-9a4d-4e6f-8b7a-1c2d3e4f5a6b';
my $root = getcwd();
my $json = JSON::PP->new->canonical->utf8;
my $secret = 'rpc-test-secret-0123456789abcdef';

# configuration errors fail nginx -t with the directive's name

{
    my $c = Ragnx::Test->new;
    my $http = "ragnx_redis 127.0.0.1:1;";
    my $key = $c->file('hs.key', $secret);
    my $jwt = "ragnx_jwt_key_file $key; ragnx_jwt on;";
    my @bad = (
        [ '', "$jwt location /a { ragnx_rpc me; }",
          qr/no "ragnx_redis" is defined for the "ragnx_rpc me" directive/,
          'ragnx_rpc without Redis' ],
        [ $http, 'location /a { ragnx_rpc bogus; }',
          qr/invalid method "bogus" in "ragnx_rpc"/, 'unknown method' ],
        [ $http, 'location /a { ragnx_rpc me $uri; }',
          qr/only "ragnx_rpc messages" takes a chat id/,
          'a chat id for another method' ],
        [ $http, 'location /a { ragnx_rpc_timeout 0; ragnx_rpc me; }',
          qr/"ragnx_rpc_timeout" directive must be positive/, 'zero timeout' ],
        [ $http, 'location /a { ragnx_rpc me; ragnx_rpc chats; }',
          qr/"ragnx_rpc" directive is duplicate/, 'duplicate' ],
        [ $http, 'location /a { ragnx_rpc register; }',
          qr/no "ragnx_rpc_seal_key" is defined for the "ragnx_rpc register" directive in \S+:\d+/,
          'register without the seal key' ],
        [ $http, 'location /a { ragnx_rpc login; }',
          qr/no "ragnx_rpc_seal_key" is defined for the "ragnx_rpc login" directive in \S+:\d+/,
          'login without the seal key' ],
        [ "$http ragnx_rpc_seal_key " . ($c->rpc_keys)[0] . ';',
          'location /a { ragnx_rpc login; }',
          qr/"ragnx_rpc_seal_key": ".*rpc\.key" is not a PEM X25519 public/,
          'the private key given as the seal key' ],
        [ "$http ragnx_rpc_seal_key $root/nonexistent.pub;",
          'location /a { ragnx_rpc login; }',
          qr/"ragnx_rpc_seal_key": cannot open ".*nonexistent\.pub"/,
          'a missing seal key' ],
        [ $http, 'location /a { ragnx_rpc chat; }',
          qr/invalid method "chat" in "ragnx_rpc"/,
          'the ask handler\'s own call is not an endpoint' ],
    );
    for my $b (@bad) {
        my ($ok, $out) = $c->nginx_t(http => $b->[0], server => $b->[1]);
        ok(!$ok, "nginx -t fails: $b->[3]");
        like($out, $b->[2], "... naming the problem: $b->[3]");
    }
    my ($ok, $out) = $c->nginx_t(http => $http, server =>
        "$jwt location ~ ^/c/(.+)\$ { ragnx_rpc messages \$1; "
        . 'ragnx_rpc_timeout 2s; }');
    ok($ok, 'a valid configuration passes nginx -t') or diag($out);
}

my $t = Ragnx::Test->new;
my $rp = $t->start_redis;
my $keyfile = $t->file('hs.key', $secret);
my ($rpckey, $rpcpub) = $t->rpc_keys;
my $port2 = Ragnx::Test::free_port();

$t->start_nginx(
    workers => 2,
    http    => <<"EOF2",
    ragnx_redis 127.0.0.1:$rp;
    ragnx_redis_timeout 300ms;
    ragnx_rpc_seal_key $rpcpub;
EOF2
    server  => <<"EOF2");
        listen 127.0.0.1:$port2 reuseport;
        ragnx_jwt_alg HS256;
        ragnx_jwt_key_file $keyfile;
        ragnx_rpc_timeout 1s;

        location = /api/auth/register {
            ragnx_validate_schema $root/schemas/register.json;
            ragnx_rpc register;
        }
        location = /api/auth/login {
            ragnx_validate_schema $root/schemas/login.json;
            ragnx_rpc login;
        }
        location = /api/users/me {
            ragnx_jwt on;
            ragnx_rpc me;
        }
        location = /api/chats {
            ragnx_jwt on;
            ragnx_rpc chats;
        }
        location ~ ^/api/chats/[^/]+/messages/?\$ {
            ragnx_jwt on;
            ragnx_rpc messages;
        }
        location ~ ^/alt/messages/([^/]+)\$ {
            ragnx_jwt on;
            ragnx_rpc messages \$1;
        }
        location = /api/quick {
            ragnx_jwt on;
            ragnx_rpc_timeout 300ms;
            ragnx_rpc me;
        }
        location = /static { return 200 "static"; }
EOF2

# Authorization for user $_[0], as request options
sub auth {
    my $jwt = Ragnx::Test::jwt_hs256($secret, { sub => $_[0],
                                                exp => time + 3600 });
    return (headers => [ Authorization => "Bearer $jwt" ]);
}

sub get {
    my ($path, $who, %a) = @_;
    return $t->request(GET => $path, $who ? auth($who) : (), %a);
}

sub post {
    my ($path, $body) = @_;
    return $t->request(POST => $path,
        headers => [ 'Content-Type' => 'application/json' ],
        body => ref $body ? $json->encode($body) : $body);
}

sub body { Ragnx::Test::json_body($_[0]) }

sub channels {
    return grep { length } split /\n/,
        $t->redis('PUBSUB', 'CHANNELS', '{ragnx}:reply:*');
}

sub wait_subscribed {
    my ($n) = @_;
    for (1 .. 200) {
        return 1 if channels() >= $n;
        sleep 0.05;
    }
    return 0;
}

# both workers' command connections (2 each), besides this redis-cli and
# the stand-in
sub wait_commands {
    for (1 .. 200) {
        my @c = grep { !/ name=standin | cmd=client/ }
                split /\n/, $t->redis('CLIENT', 'LIST', 'TYPE', 'normal');
        return 1 if @c >= 4;
        sleep 0.05;
    }
    return 0;
}

sub xlen { $t->redis('XLEN', '{ragnx}:rpc') || 0 }

sub last_call {
    my @f = split /\n/, $t->redis('XREVRANGE', '{ragnx}:rpc', '+', '-',
                                 'COUNT', 1);
    my %e = @f[1 .. $#f];
    return \%e;
}

sub now_ms { int(time * 1000) }

# how often the error log says it, waiting up to 3 s for at least $want
sub log_count {
    my ($re, $want) = @_;
    my $n = 0;
    for (1 .. 60) {
        $n = () = $t->error_log =~ /$re/g;
        last if $n >= $want;
        sleep 0.05;
    }
    return $n;
}

# The stand-in pool: a child process reading the call stream from its end.
# mode: echo (answer at once), late (after "delay" seconds), wrong (a
# reply to another id), garbage (malformed replies), never.

# register and login are sealed (shared/ragnx_seal.h): opened and answered
# with the C codec both sides use (Ragnx::Test::seal_tool)
sub standin_answer {
    my ($f) = @_;
    my $sealed = $f->{method} =~ /^(register|login)$/;
    my ($key, $p);
    if ($sealed) {
        my $o = Ragnx::Test::seal_tool('open', $rpckey, $f->{params}) // '';
        ($key, my $plain) = split /\n/, $o, 2;
        $p = eval { decode_json($plain) };
    } else {
        $p = eval { decode_json($f->{params}) };
    }
    my ($status, $body) = (200, { id => $f->{id}, method => $f->{method},
                                  sub => $f->{sub}, params => $p,
                                  reply => $f->{reply},
                                  deadline => $f->{deadline} });
    if ($f->{method} eq 'register') {
        $status = 201;
        if (lc $p->{email} eq 'taken@example.com') {
            ($status, $body) = (409, { error => 'Email already registered' });
        }
    } elsif ($f->{method} eq 'login' && $p->{password} eq 'wrong') {
        ($status, $body) = (401, { error => 'Invalid email or password' });
    } elsif ($f->{method} eq 'messages' && $p->{chatId} eq $CHAT) {
        ($status, $body) = (404, { error => 'Chat not found' });
    }
    my $b = $json->encode($body);
    # mode clear: a pool that answers a sealed call in the clear
    $b = Ragnx::Test::seal_tool('seal', $key, $b)
        if $sealed && ($f->{mode} // '') ne 'clear';
    return "$f->{id} $status $b";
}

sub standin_loop {
    my (%o) = @_;
    my ($r, $last, @due);
    my $mode = $o{mode};
    while (1) {
        # late replies go out when due, each on its own schedule
        # one clock reading for both: with two, a reply due between them
        # would be in neither list, and lost
        my $now = time;
        my @now = grep { $_->[0] <= $now } @due;
        @due = grep { $_->[0] > $now } @due;
        if (@now) {
            eval { $r->pipeline(map { [ 'PUBLISH', $_->[1], $_->[2] ] } @now) }
                or $r = undef;
        }
        # never 0 (Redis would block for good) nor negative (an error):
        # time goes on between the grep above and here
        my $block = @due ? int(1000 * ($due[0][0] - time)) + 1 : 100;
        $block = 1 if $block < 1;
        $block = 100 if $block > 100;
        my $res = eval {
            unless ($r) {
                $r = Ragnx::Resp->new($rp) or die "redis: connect\n";
                $r->cmd('CLIENT', 'SETNAME', 'standin');
            }
            unless (defined $last) {
                my $x = $r->cmd('XREVRANGE', '{ragnx}:rpc', '+', '-',
                                'COUNT', 1);
                $last = @$x ? $x->[0][0] : '0-0';
                $r->cmd('SET', 'test:standin', $$);
            }
            [ $r->cmd('XREAD', 'COUNT', 1000, 'BLOCK', $block,
                      'STREAMS', '{ragnx}:rpc', $last) ];
        };
        if (!$res) {
            $r = undef;
            sleep 0.05;
            next;
        }
        my $streams = $res->[0] or next;
        die "XREAD: $streams->{error}\n" if ref $streams eq 'HASH';
        my @out;
        for my $e (@{ $streams->[0][1] }) {
            my ($eid, $fields) = @$e;
            $last = $eid;
            my %f = @$fields;
            next if $f{deadline} < now_ms();     # nobody waits any more
            next if $mode eq 'never';
            if ($mode eq 'wrong') {
                (my $other = $f{id}) =~ s/^(.{8})/00000000/;
                push @out, [ $f{reply}, "$other 200 {\"wrong\":true}" ];
                next;
            }
            if ($mode eq 'garbage') {
                push @out, [ $f{reply}, 'not a reply' ],
                           [ $f{reply}, "$f{id} abc {}" ];
                next;
            }
            push @out, [ $f{reply}, standin_answer({ %f, mode => $mode }) ];
        }
        if ($mode eq 'late') {
            push @due, map { [ time + $o{delay}, @$_ ] } @out;
            next;
        }
        next unless @out;
        eval { $r->pipeline(map { [ 'PUBLISH', @$_ ] } @out) } or $r = undef;
    }
}

sub start_standin {
    my (%o) = @_;
    $o{mode} ||= 'echo';
    stop_standin();
    $t->redis('DEL', 'test:standin');
    my $pid = fork() // die "fork: $!";
    if ($pid == 0) {
        POSIX::setpgid(0, 0);
        eval { standin_loop(%o) };
        print STDERR "standin: $@" if $@;
        POSIX::_exit(1);
    }
    $t->{pids}{standin} = $pid;
    for (1 .. 200) {
        last if $t->redis('GET', 'test:standin') eq $pid;
        sleep 0.025;
    }
    return $pid;
}

sub standin_state {
    my $pid = $t->{pids}{standin};
    return "standin: none\n" unless $pid;
    return waitpid($pid, POSIX::WNOHANG()) == 0 ? "standin: running\n"
                                               : "standin: exited $?\n";
}

sub stop_standin { $t->stop_pid('standin', 'KILL') }

sub send_only {
    my $s = $t->send_request(@_) or die "connect: $!";
    return $s;
}

ok(wait_subscribed(2), 'each of the two workers subscribed to its channel');
ok(wait_commands(), 'and connected for commands');
my @ch = channels();
is(scalar(@ch), 2, 'two reply channels');
like($_, qr/^\{ragnx\}:reply:[^:]+:\d+$/, "channel $_ names host and pid")
    for @ch;

# happy paths: status and body pass through

start_standin();

my $r = get('/api/users/me', 'alice');
is($r->{status}, 200, 'me: 200 from the pool');
like($r->{headers}{'content-type'}, qr{^application/json}, 'me: JSON');
my $j = body($r);
is($j->{method}, 'me', 'me: method');
is($j->{sub}, 'alice', 'me: the JWT subject travels with the call');
is_deeply($j->{params}, {}, 'me: empty params');
like($j->{id}, $UUID, 'me: the call id is a v4 UUID');
ok((grep { $_ eq $j->{reply} } @ch), 'me: reply channel is a worker\'s');
ok($j->{deadline} > now_ms() && $j->{deadline} <= now_ms() + 1100,
   'me: deadline is now + ragnx_rpc_timeout');

my $e = last_call();
is($e->{id}, $j->{id}, 'stream entry: id');
is($e->{method}, 'me', 'stream entry: method');
is($e->{sub}, 'alice', 'stream entry: sub');
is($e->{params}, '{}', 'stream entry: params');
is($e->{reply}, $j->{reply}, 'stream entry: reply channel');
like($e->{deadline}, qr/^\d{13}$/, 'stream entry: deadline in ms');

$r = $t->request(HEAD => '/api/users/me', auth('alice'));
is($r->{status}, 200, 'HEAD me: 200');
is($r->{body}, '', 'HEAD me: no body');

$r = post('/api/auth/register', { email => 'Ann@Example.com',
                                  password => 'correct horse', name => 'Ann' });
is($r->{status}, 201, 'register: 201 from the pool');
$j = body($r);
is($j->{method}, 'register', 'register: method');
is($j->{sub}, '', 'register: no subject');
is_deeply($j->{params}, { email => 'Ann@Example.com',
                          password => 'correct horse', name => 'Ann' },
          'register: params are the validated body');

$r = post('/api/auth/register', { email => 'taken@example.com',
                                  password => 'correct horse' });
is($r->{status}, 409, 'register: 409 passes through');
is_deeply(body($r), { error => 'Email already registered' },
          'register: 409 body passes through');

my $n = xlen();
$r = post('/api/auth/register', { email => 'not-an-email',
                                  password => 'short' });
is($r->{status}, 400, 'register: invalid body is 400');
is(body($r)->{error}, 'Validation failed', 'register: validation error');
is(xlen(), $n, 'register: no call for an invalid body');

$r = post('/api/auth/login', { email => 'ann@example.com',
                               password => 'correct horse' });
is($r->{status}, 200, 'login: 200');
is(body($r)->{method}, 'login', 'login: method');
is(body($r)->{params}{email}, 'ann@example.com', 'login: params');
is(body($r)->{params}{password}, 'correct horse', '... the password too');
{
    # the stand-in leaves the entries in the stream (the pool deletes them)
    my $calls = $t->redis('XRANGE', '{ragnx}:rpc', '-', '+');
    like($calls, qr/^login$/m, '... the calls are in the stream');
    unlike($calls, qr/correct horse|Ann\@Example|ann\@example/,
           '... yet none holds them in the clear');
}

$r = post('/api/auth/login', { email => 'ann@example.com',
                               password => 'wrong' });
is($r->{status}, 401, 'login: 401 passes through');
is($r->{body}, '{"error":"Invalid email or password"}',
   'login: body passes through byte for byte');

$r = get('/api/chats', 'bob');
is($r->{status}, 200, 'chats: 200');
is_deeply(body($r)->{params}, { limit => 20 }, 'chats: default limit 20');
is(body($r)->{sub}, 'bob', 'chats: sub');

$r = get('/api/chats?limit=100&before=2024-01-01T00%3A00%3A00.000Z', 'bob');
is($r->{status}, 200, 'chats with paging: 200');
is_deeply(body($r)->{params},
          { limit => 100, before => '2024-01-01T00:00:00.000Z' },
          'chats: limit and the decoded cursor');

my $chat = '0b5e6c1d-2f3a-4b4c-9d8e-7f6a5b4c3d2e';
$r = get("/api/chats/$chat/messages?limit=1", 'carol');
is($r->{status}, 200, 'messages: 200');
is_deeply(body($r)->{params}, { chatId => $chat, limit => 1 },
          'messages: chat id from the path');
is(body($r)->{method}, 'messages', 'messages: method');

$r = get('/api/chats/' . uc($chat) . '/messages/', 'carol');
is(body($r)->{params}{chatId}, $chat, 'messages: chat id lower-cased');

$r = get("/alt/messages/$chat", 'carol');
is(body($r)->{params}{chatId}, $chat, 'messages: chat id from a variable');

$r = get("/api/chats/$CHAT/messages", 'carol');
is($r->{status}, 404, 'messages: 404 passes through');
is_deeply(body($r), { error => 'Chat not found' }, 'messages: 404 body');

# request checks, before anything is sent

$n = xlen();

$r = $t->request(POST => '/api/users/me', auth('alice'), body => '{}');
is($r->{status}, 405, 'POST me: 405');
is($r->{headers}{allow}, 'GET, HEAD', 'POST me: Allow');
is_deeply(body($r), { error => 'Method not allowed' }, 'POST me: JSON');

$r = get('/api/auth/login');
is($r->{status}, 405, 'GET login: 405');
is($r->{headers}{allow}, 'POST', 'GET login: Allow: POST');
is_deeply(body($r), { error => 'Method not allowed' }, 'GET login: JSON');

$r = $t->request(DELETE => "/api/chats/$chat/messages", auth('alice'));
is($r->{status}, 405, 'DELETE messages: 405');

$r = get('/api/users/me');
is($r->{status}, 401, 'me without a token: 401');
like($r->{headers}{'content-type'}, qr{^application/json}, '401 is JSON');

# a handler that needs the subject makes the JWT module refuse a token
# without one, so the handler never sees such a request
$r = $t->request(GET => '/api/users/me', headers => [
    Authorization => 'Bearer '
        . Ragnx::Test::jwt_hs256($secret, { exp => time + 3600 }) ]);
is($r->{status}, 401, 'me with a token without "sub": 401');
is_deeply(body($r), { error => 'invalid token' }, '... an invalid token');
like($t->error_log, qr/no "sub" claim, which this location needs/,
     '... and the reason logged');


for my $bad ('not-a-uuid', '0b5e6c1d-2f3a-4b4c-9d8e-7f6a5b4c3d2', 'x' x 36,
             '0b5e6c1d-2f3a-4b4c-9d8e-7f6a5b4c3d2g',
             '0b5e6c1d-2f3a-4b4c-9d8e-7f6a5b4c3d2e0')
{
    $r = get("/api/chats/$bad/messages", 'alice');
    is($r->{status}, 400, "chat id '$bad': 400");
    is_deeply(body($r), { error => 'Invalid chat id' },
              "chat id '$bad': JSON error");
}

$r = get('/alt/messages/nope', 'alice');
is($r->{status}, 400, 'chat id from a variable: checked too');

for my $q ('limit=0', 'limit=101', 'limit=abc', 'limit=', 'limit=-1',
           'limit=1e2')
{
    $r = get("/api/chats?$q", 'alice');
    is($r->{status}, 400, "$q: 400");
    is_deeply(body($r), { error => 'Validation failed',
                          details => { limit =>
                              [ 'must be an integer from 1 to 100' ] } },
              "$q: details name the field");
}

for my $q ('before=' . ('a' x 129), 'before=', 'before=a%20b', 'before=%FF',
           'before=a%0Ab')
{
    $r = get("/api/chats?$q", 'alice');
    is($r->{status}, 400, substr($q, 0, 20) . ': 400');
    ok(body($r)->{details}{before}, substr($q, 0, 20) . ': details.before');
}

$r = get('/api/chats?limit=0&before=', 'alice');
is_deeply([ sort keys %{ body($r)->{details} } ], [ 'before', 'limit' ],
          'both problems reported at once');

$r = get("/api/chats/nope/messages?limit=0", 'alice');
is_deeply(body($r), { error => 'Invalid chat id' },
          'a bad chat id is reported first');

$r = get('/api/chats?before=' . ('a' x 128), 'alice');
is($r->{status}, 200, 'a 128-character cursor is fine');

is(xlen(), $n + 1, 'refused requests sent no call');

# a call Redis refuses to store: 503 at once, the reason logged

stop_standin();
$t->redis('DEL', '{ragnx}:rpc');
$t->redis('SET', '{ragnx}:rpc', 'not a stream');
$r = get('/api/users/me', 'alice');
is($r->{status}, 503, 'XADD refused: 503');
is_deeply(body($r), { error => 'queue unavailable' }, 'XADD refused: JSON');
like($t->error_log, qr/ragnx_rpc XADD failed: WRONGTYPE/,
     'XADD refused: logged');
$t->redis('DEL', '{ragnx}:rpc');

# nobody answers: 504 after the timeout, within 10%.  On a loaded machine
# the client itself may be late to read: the best of three tries counts.

start_standin(mode => 'never');

sub timed {
    my ($path, $bound) = @_;
    my ($best, $res);
    for (1 .. 3) {
        my $t0 = time;
        my $r = get($path, 'alice');
        my $took = time - $t0;
        $res ||= $r;
        $best = $took if !defined $best || $took < $best;
        last if $took < $bound;
    }
    return ($res, $best);
}

my ($t0, $took);
($r, $took) = timed('/api/users/me', 1.1);
is($r->{status}, 504, 'no answer: 504');
is_deeply(body($r), { error => 'upstream timeout' }, 'no answer: JSON');
ok($took >= 1.0 && $took < 1.1, "after ragnx_rpc_timeout 1s ($took s)");

($r, $took) = timed('/api/quick', 0.33);
is($r->{status}, 504, 'a per-location timeout: 504');
ok($took >= 0.3 && $took < 0.33, "after its own 300ms ($took s)");

# late replies are dropped; nginx stays fine

start_standin(mode => 'late', delay => 0.5);

$r = get('/api/quick', 'alice');
is($r->{status}, 504, 'late reply: 504 first');
is(log_count(qr/ragnx_rpc reply to "[0-9a-f-]{36}" dropped: nobody waits/,
             1), 1, 'late reply: logged and dropped');

start_standin();
$r = get('/api/users/me', 'alice');
is($r->{status}, 200, 'after a late reply: calls work');
is(body($r)->{sub}, 'alice', 'after a late reply: the right answer');

# replies to ids nobody waits for, malformed replies

start_standin(mode => 'wrong');
$r = get('/api/quick', 'alice');
is($r->{status}, 504, 'a reply to another id is not ours: 504');

start_standin(mode => 'garbage');
$r = get('/api/users/me', 'alice');
is($r->{status}, 502, 'a malformed reply to our id: 502');
is_deeply(body($r), { error => 'Bad gateway' }, '502 JSON');
like($t->error_log, qr/ragnx_rpc reply without a call id dropped/,
     'a reply without an id is logged');

# a sealed call answered in the clear: its token crossed Redis, so the
# reply is refused (an error in the clear, from a pool that could not
# open the call, still passes: it carries no secret)

start_standin(mode => 'clear');
$r = post('/api/auth/login', { email => 'ann@example.com',
                               password => 'correct horse' });
is($r->{status}, 502, 'a sealed call answered 200 in the clear: 502');
is_deeply(body($r), { error => 'Bad gateway' }, '... JSON');
unlike($r->{body}, qr/correct horse/, '... and nothing of it passed on');
like($t->error_log, qr/reply 200 to sealed call "[0-9a-f-]{36}" not sealed/,
     '... logged');
$r = post('/api/auth/login', { email => 'ann@example.com',
                               password => 'wrong' });
is($r->{status}, 401, 'an error in the clear still passes');

# 200 concurrent calls: each gets its own reply

start_standin();

my @users = map { "user$_" } 1 .. 200;
my $rs = $t->parallel([ map { [ GET => '/api/users/me', auth($_) ] } @users ],
                      port => $port2, timeout => 20);
my ($good, %ids, %seen_ch) = (0);
for my $i (0 .. $#users) {
    my $b = body($rs->[$i]) || {};
    $good++ if $rs->[$i]{status} == 200 && ($b->{sub} // '') eq $users[$i];
    $ids{$b->{id}}++ if $b->{id};
    $seen_ch{$b->{reply}}++ if $b->{reply};
}
is($good, 200, '200 concurrent calls: each got its own user');
is(scalar(keys %ids), 200, '200 distinct call ids');
is(scalar(keys %seen_ch), 2,
   'both workers answered through their own channels');

# a reload lets the old workers finish their pending calls

start_standin(mode => 'late', delay => 0.6);
my %old_ch = map { $_ => 1 } channels();
my @old_pids = map { /:(\d+)$/ ? $1 : () } keys %old_ch;
my $waiting = send_only(GET => '/api/users/me', auth('alice'));
sleep 0.1;
$t->reload_nginx;
$r = $t->read_response($waiting);
is($r->{status}, 200, 'reload: a pending call still gets its reply');
is(body($r)->{sub}, 'alice', 'reload: the right reply');

# two channels are not enough: one old and one new worker make two as well,
# and the other new worker's calls would then find no channel
my @new_ch;
for (1 .. 200) {
    @new_ch = grep { !$old_ch{$_} } channels();
    last if @new_ch == 2 && channels() == 2 && !grep { kill 0, $_ } @old_pids;
    sleep 0.05;
}
is(scalar(@new_ch), 2, 'reload: two new channels');
is(scalar(channels()), 2, 'reload: the old channels are gone');
is(scalar(grep { kill 0, $_ } @old_pids), 0, 'reload: the old workers exited');
ok(wait_commands(), 'reload: the new workers connected for commands');

# clients that go away while waiting leave nothing behind

start_standin(mode => 'late', delay => 0.6);
my $base = log_count(qr/dropped: nobody waits/, 0);

my @gone = map { send_only(GET => '/api/users/me', auth("gone$_")) } 1 .. 20;
sleep 0.2;
close $_ for @gone;
sleep 0.1;

$r = $t->request(GET => '/static');
is($r->{status}, 200, 'clients gone: nginx answers');
my $dropped = log_count(qr/dropped: nobody waits/, $base + 20) - $base;
is($dropped, 20, 'their late replies found nobody waiting')
    or diag(standin_state(), grep { /ragnx|prematurely/ }
                                  split /^/, $t->error_log);
sleep 0.5;                                    # past their timers too

start_standin();
$r = get('/api/users/me', 'alice');
is($r->{status}, 200, 'after aborted clients: calls work');

# clients that close while their reply is on its way: the reply, the
# close and the resume event race; whichever wins, nothing is touched twice

for my $delay (0, 0.001, 0.005) {
    my @s = map { send_only(GET => '/api/users/me', auth("race$_")) } 1 .. 50;
    sleep $delay;
    close $_ for @s;
}
sleep 0.3;
$r = get('/api/users/me', 'alice');
is($r->{status}, 200, 'after racing closes: calls work');

start_standin(mode => 'never');
@gone = map { send_only(GET => '/api/quick', auth("gone$_")) } 1 .. 20;
sleep 0.1;
close $_ for @gone;
sleep 0.4;
$r = $t->request(GET => '/static');
is($r->{status}, 200, 'clients gone before a timeout: nginx fine');

# a worker that cannot subscribe answers 503 rather than sending a call
# whose reply could not reach it, and subscribes again when it can

stop_standin();
$t->redis('ACL', 'SETUSER', 'default', 'resetchannels');
$t->redis('CLIENT', 'KILL', 'TYPE', 'pubsub');
for (1 .. 100) { last unless channels(); sleep 0.05 }
is(scalar(channels()), 0, 'subscriptions refused: no reply channel');
$n = xlen();
$t0 = time;
$r = get('/api/users/me', 'alice');
is($r->{status}, 503, 'not subscribed: 503');
is_deeply(body($r), { error => 'queue unavailable' }, 'not subscribed: JSON');
ok(time - $t0 < 0.2, 'not subscribed: at once');
is(xlen(), $n, 'not subscribed: no call sent');
like($t->error_log, qr/ragnx_rpc me: reply channel not subscribed/,
     'not subscribed: logged');
sleep 1;
my $attempts = () = $t->error_log =~ /NOPERM/g;
ok($attempts < 30, "refused subscriptions back off ($attempts in 1s)");
$t->redis('ACL', 'SETUSER', 'default', 'allchannels');
ok(wait_subscribed(2), 'subscriptions allowed again: both workers back');
start_standin();
$r = get('/api/users/me', 'alice');
is($r->{status}, 200, 'subscribed again: calls work');

# Redis goes away: 503 at once, then back without a reload

start_standin(mode => 'never');
my $pending = send_only(GET => '/api/users/me', auth('alice'));
sleep 0.2;
stop_standin();
$t0 = time;
$t->stop_redis;
$r = $t->read_response($pending);
$took = time - $t0;
is($r->{status}, 503, 'Redis stopped while waiting: 503');
is_deeply(body($r), { error => 'queue unavailable' }, '503 JSON');
ok($took < 0.5, "at once, not after the timeout ($took s)");

$t0 = time;
$r = get('/api/users/me', 'alice');
$took = time - $t0;
is($r->{status}, 503, 'Redis down: 503');
is_deeply(body($r), { error => 'queue unavailable' }, 'Redis down: JSON');
ok($took < 0.2, "Redis down: at once ($took s)");

$t->start_redis;
ok(wait_subscribed(2), 'Redis back: both workers subscribed again');
ok(wait_commands(), 'Redis back: their command connections too');
start_standin();
$r = get('/api/users/me', 'alice');
is($r->{status}, 200, 'Redis back: calls work without a reload');
$rs = $t->parallel([ map { [ GET => '/api/users/me', auth($_) ] }
                     @users[0 .. 49] ], port => $port2);
is(scalar(grep { $rs->[$_]{status} == 200
                 && body($rs->[$_])->{sub} eq $users[$_] } 0 .. 49), 50,
   'Redis back: 50 concurrent calls answered');

stop_standin();
$t->done;
