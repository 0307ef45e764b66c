#!/usr/bin/perl
# Accounts and chat history end to end: nginx (ragnx_rpc) -> Redis -> the
# real worker pool -> PostgreSQL -> Redis -> nginx.  Register, login, the
# profile, chats and messages with pagination; duplicate and invalid input;
# identical 401s; tokens from login on every authenticated endpoint;
# rehash on login; 200 concurrent calls without crossed replies; no pool,
# a pool killed mid-call, clients that go away; expired calls skipped; the
# RS256 and ES256 key pairs with nginx holding only the public key.

use strict;
use warnings;
use utf8;
use Encode ();
use lib 't/lib';
use Test::More;
use Cwd qw(getcwd);
use JSON::PP;
use POSIX ();
use Time::HiRes qw(time sleep);
use MIME::Base64 ();
use Ragnx::Resp;
use Ragnx::Test;
use Ragnx::OpenAPI;
use Ragnx::Pool qw(uuid);

my $UUID = qr/^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;
my $TS = qr/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/;
my $root = getcwd();
my $json = JSON::PP->new->canonical->utf8;

my $t = Ragnx::Test->new;
# every response to a path of docs/openapi.json is checked against it
Ragnx::OpenAPI->hook;
my $rp = $t->start_redis;
$t->start_postgres;
my $secret = 'accounts-test-secret-0123456789abcdef';
my $keyfile = $t->file('hs.key', $secret);

# key pairs for the RS256 and ES256 servers
system("openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 "
       . "-out $t->{dir}/rs.pem 2>/dev/null") == 0 or die 'openssl';
system("openssl pkey -in $t->{dir}/rs.pem -pubout -out $t->{dir}/rs.pub")
    == 0 or die 'openssl';
system("openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 "
       . "-out $t->{dir}/es.pem 2>/dev/null") == 0 or die 'openssl';
system("openssl pkey -in $t->{dir}/es.pem -pubout -out $t->{dir}/es.pub")
    == 0 or die 'openssl';

my $p = Ragnx::Pool->new($t);
my %base = (llm_model => 'extractive', jwt_key_file => $keyfile,
            password_opslimit => 1, password_memlimit => 8192);
$p->configure(%base);
my ($rc, $out) = $p->cli('migrate');
is($rc, 0, 'migrate') or diag($out);
mkdir "$t->{dir}/corpus";
$t->file('corpus/guide.md', <<'EOF');
# Ragnx guide

## Accounts

Passwords are hashed with argon2id before they are stored.
EOF
($rc, $out) = $p->cli('ingest', "$t->{dir}/corpus");
is($rc, 0, 'ingest') or diag($out);
$p->start;

my ($rs_port, $es_port) = (Ragnx::Test::free_port(), Ragnx::Test::free_port());

sub locations {
    return <<"EOF2";
        error_page 404 405 413 500 503 \@err;
        location \@err { ragnx_json_error; }

        location = /api/auth/register {
            ragnx_validate_schema $root/schemas/register.json;
            ragnx_rpc register;
        }
        location = /api/auth/login {
            ragnx_validate_schema $root/schemas/login.json;
            ragnx_rpc login;
        }
        location = /api/users/me { ragnx_jwt on; ragnx_rpc me; }
        location = /api/chats { ragnx_jwt on; ragnx_rpc chats; }
        location ~ ^/api/chats/[^/]+/messages/?\$ {
            ragnx_jwt on;
            ragnx_rpc messages;
        }
        location = /api/ask {
            ragnx_jwt on;
            ragnx_validate_schema $root/schemas/ask.json;
            ragnx_ask;
        }
        location /api/ask/ { ragnx_jwt on; ragnx_ask_status; }
        location = /health { ragnx_health; }
EOF2
}

my $locs = locations();
my (undef, $rpcpub) = $t->rpc_keys;
$t->start_nginx(
    workers => 2,
    http    => <<"EOF2",
    ragnx_redis 127.0.0.1:$rp pool=2;
    ragnx_redis_timeout 500ms;
    ragnx_ask_gen_refresh 100ms;
    ragnx_rpc_seal_key $rpcpub;

    server {
        listen 127.0.0.1:$rs_port;
        ragnx_jwt_alg RS256;
        ragnx_jwt_key_file $t->{dir}/rs.pub;
        ragnx_rpc_timeout 2s;
$locs
    }

    server {
        listen 127.0.0.1:$es_port;
        ragnx_jwt_alg ES256;
        ragnx_jwt_key_file $t->{dir}/es.pub;
        ragnx_rpc_timeout 2s;
$locs
    }
EOF2
    server  => <<"EOF2");
        ragnx_jwt_alg HS256;
        ragnx_jwt_key_file $keyfile;
        ragnx_rpc_timeout 2s;
$locs
EOF2

sleep 0.3;

sub call {
    my ($method, $path, %a) = @_;
    my @h = ('Content-Type' => 'application/json');
    push @h, Authorization => "Bearer $a{token}" if $a{token};
    my $t0 = time;
    my $r = $t->request($method, $path, headers => \@h,
        (defined $a{body} ? (body => ref $a{body} ? $json->encode($a{body})
                                                  : $a{body}) : ()),
        ($a{port} ? (port => $a{port}) : ()));
    $r->{elapsed} = time - $t0;
    $r->{json} = Ragnx::Test::json_body($r);
    return $r;
}

# register, profile

my $r = call(POST => '/api/auth/register',
    body => { email => 'Alice@Example.com', password => 'correct horse',
              name => 'Alice' });
is($r->{status}, 201, 'register: 201') or diag($r->{raw});
my $alice = $r->{json}{user};
like($alice->{id}, $UUID, 'register: a user id');
is($alice->{email}, 'Alice@Example.com', 'register: the email as given');
is($alice->{name}, 'Alice', 'register: the name');
like($alice->{createdAt}, $TS, 'register: createdAt in ISO 8601 UTC');
my $token = $r->{json}{token};
my ($claims) = map { $json->decode(MIME::Base64::decode_base64url($_)) }
               (split /\./, $token)[1];
is($claims->{sub}, $alice->{id}, 'token: sub is the user id');
ok($claims->{exp} - $claims->{iat} == 604800, 'token: 7 days by default');
ok(abs($claims->{iat} - time) < 5, 'token: iat is now');

$r = call(GET => '/api/users/me', token => $token);
is($r->{status}, 200, 'me with the register token: 200');
is_deeply($r->{json}, $alice, '... the same user');

$r = call(POST => '/api/auth/register',
    body => { email => 'aLICE@example.COM', password => 'another one' });
is($r->{status}, 409, 'the same email in another case: 409');
is_deeply($r->{json}, { error => 'Email already registered' },
          '... with an error');
is($t->psql("SELECT count(*) FROM users"), 1, '... and no second user');

# invalid input, with field details (nginx checks first, the pool again)

for my $c (
    [ { email => 'not-an-email', password => 'long enough' }, 'email' ],
    [ { email => 'a@b.example', password => 'short' }, 'password' ],
    [ { email => 'a@b.example', password => 'x' x 129 }, 'password' ],
    [ { email => 'a@b.example', password => 'long enough',
        name => 'n' x 101 }, 'name' ],
    [ { email => 'a@b.example' }, 'password' ],
) {
    $r = call(POST => '/api/auth/register', body => $c->[0]);
    is($r->{status}, 400, "invalid $c->[1]: 400");
    ok($r->{json}{details}{$c->[1]}, "... with details for $c->[1]")
        or diag($r->{body});
}
$r = call(POST => '/api/auth/register', body => '{"email":');
is($r->{status}, 400, 'broken JSON: 400');
is($t->psql("SELECT count(*) FROM users"), 1, 'no user from bad input');

# the pool checks too: a call XADDed directly with a bad password
{
    my $id = uuid();
    my $chan = '{ragnx}:reply:test';
    # register is sealed as nginx seals it; its reply opened the same way
    my $rkey = join '', map { sprintf '%02x', int rand 256 } 1 .. 32;
    my $reply = sub {
        my ($params, $method, $who) = @_;
        my $sealed = ($method || 'register') eq 'register';
        $params = Ragnx::Test::seal_tool('call', $rpcpub, $rkey, $params)
            if $sealed;
        my $sub = Ragnx::Resp->new($rp) or die 'redis: connect';
        $sub->cmd('SUBSCRIBE', $chan);
        $t->redis('XADD', '{ragnx}:rpc', '*', 'id', $id, 'method',
                  $method || 'register', 'reply', $chan, 'deadline',
                  int(time * 1000) + 3000, 'sub', $who // '',
                  'params', $params);
        my $m = eval {
            local $SIG{ALRM} = sub { die "timeout\n" };
            alarm 5;
            my $v = $sub->read_reply;
            alarm 0;
            $v;
        };
        $sub->close;
        return undef unless ref $m eq 'ARRAY';
        my ($head, $body) = $m->[2] =~ /^(\S+ \d+ )(.*)\z/s or return $m->[2];
        if ($sealed && $body =~ /^~/) {
            $body = Ragnx::Test::seal_tool('unseal', $rkey, $body) // 'BAD';
        }
        return "$head$body";
    };
    my $m = $reply->('{"email":"b@b.example","password":"short"}');
    like($m // '',
         qr/^\Q$id\E 400 \{"error":"Validation failed","details":\{"password":/,
         'the pool checks the password length itself');
    $m = $reply->('{"email":"b@b.example","password":"' . ('p' x 129) . '"}');
    like($m // '',
         qr/^\Q$id\E 400 \{"error":"Validation failed","details":\{"password":/,
         'the pool bounds the password length itself (129 characters)');
    $m = $reply->('{"email":"b@@b.example","password":"long enough"}');
    like($m // '',
         qr/^\Q$id\E 400 \{"error":"Validation failed","details":\{"email":/,
         'the pool checks the email itself');
    $m = $reply->('{"email":"c@b.example","password":"long enough",'
                  . '"name":"' . ('n' x 101) . '"}');
    like($m // '',
         qr/^\Q$id\E 400 \{"error":"Validation failed","details":\{"name":/,
         'the pool checks the name length itself');
    $m = $reply->('[1]');
    like($m // '', qr/^\Q$id\E 400 \{"error":"Malformed call"\}/,
         'a call whose params are not an object: 400');
    $m = $reply->('{}', 'me');
    like($m // '', qr/^\Q$id\E 400 \{"error":"Malformed call"\}/,
         'an authenticated call without sub: 400');
    $m = $reply->('{"chatId":"nope","limit":5}', 'messages', $alice->{id});
    is($m, "$id 400 {\"error\":\"Invalid chat id\"}",
       'the pool checks the chat id itself');
    $m = $reply->('{"limit":0}', 'chats', $alice->{id});
    like($m // '',
         qr/^\Q$id\E 400 \{"error":"Validation failed","details":\{"limit":/,
         'the pool checks limit itself');
    $m = $reply->('{"limit":5,"before":1}', 'chats', $alice->{id});
    like($m // '',
         qr/^\Q$id\E 400 \{"error":"Validation failed","details":\{"before":/,
         'the pool checks the cursor type itself');
    is($t->psql("SELECT count(*) FROM users"), 1,
       'no user from calls the pool refused');
}

# login

$r = call(POST => '/api/auth/login',
    body => { email => 'alice@example.com', password => 'correct horse' });
is($r->{status}, 200, 'login (email in another case): 200')
    or diag($r->{raw});
is_deeply($r->{json}{user}, $alice, '... the user');
my $login_token = $r->{json}{token};

my (@unknown, @wrong);
my $dummy = sub {
    my @n = $p->worker_log =~ /login: verified against the dummy hash/g;
    return scalar @n;
};
my $dummy0 = $dummy->();
for (1 .. 3) {
    my $u = call(POST => '/api/auth/login',
        body => { email => 'nobody@example.com', password => 'whatever1' });
    my $w = call(POST => '/api/auth/login',
        body => { email => 'alice@example.com', password => 'wrong pass' });
    push @unknown, $u;
    push @wrong, $w;
}
is($unknown[0]{status}, 401, 'unknown email: 401');
is($wrong[0]{status}, 401, 'wrong password: 401');
is($unknown[0]{body}, $wrong[0]{body}, '... the same body');
is_deeply($wrong[0]{json}, { error => 'Invalid email or password' },
          '... the documented one');
is($dummy->() - $dummy0, 3,
   '... each unknown email verified against the dummy hash, once');
{
    my ($su, $sw) = (0, 0);
    $su += $_->{elapsed} for @unknown;
    $sw += $_->{elapsed} for @wrong;
    my $ratio = $su / $sw;
    ok($ratio > 0.5 && $ratio < 2,
       sprintf('... about the same time (%.1f ms vs %.1f ms)',
               $su / 3 * 1000, $sw / 3 * 1000));
}

# the login token on every authenticated endpoint

$r = call(GET => '/api/users/me', token => $login_token);
is($r->{status}, 200, 'login token: /api/users/me 200');
$r = call(POST => '/api/ask', token => $login_token,
    body => { query => 'How are passwords hashed?' });
is($r->{status}, 202, 'login token: /api/ask 202') or diag($r->{raw});
my $job = $r->{json}{jobId};
my $chat = $r->{json}{chatId};
my $st;
for (1 .. 200) {
    $st = call(GET => "/api/ask/$job", token => $login_token);
    last if ($st->{json}{status} // '') =~ /completed|failed/;
    sleep 0.05;
}
is($st->{json}{status}, 'completed', 'login token: the job completes');
like($st->{json}{answer} // '', qr/argon2id/, '... from the corpus');

$r = call(GET => '/api/chats', token => $login_token);
is($r->{status}, 200, 'chats: 200');
is(scalar @{ $r->{json}{chats} }, 1, '... one chat');
is($r->{json}{chats}[0]{id}, $chat, '... the one the ask created');
is($r->{json}{chats}[0]{title}, 'How are passwords hashed?',
   '... titled by its first question');
like($r->{json}{chats}[0]{updatedAt}, $TS, '... with updatedAt');
is($r->{json}{next}, undef, '... no next page');

$r = call(GET => "/api/chats/$chat/messages", token => $login_token);
is($r->{status}, 200, 'messages: 200');
is_deeply([ map { $_->{role} } @{ $r->{json}{messages} } ],
          [ 'user', 'assistant' ], '... question then answer');
is($r->{json}{messages}[0]{content}, 'How are passwords hashed?',
   '... the question');
is($r->{json}{messages}[1]{content}, $st->{json}{answer}, '... the answer');
ok(@{ $r->{json}{messages}[1]{sources} }, '... with sources');
ok(!grep({ exists $_->{source} } @{ $r->{json}{messages} }),
   '... written for this chat: neither marked as from the cache');

# a follow-up in the chat is recorded there too (the chat's own question)
$r = call(POST => '/api/ask', token => $login_token,
    body => { query => 'how are passwords   HASHED?', chatId => $chat });
is($r->{status}, 202, 'the same question in the chat: its own job');
for (1 .. 100) {
    last if $t->psql("SELECT count(*) FROM messages "
                     . "WHERE chat_id = '$chat'") == 4;
    sleep 0.05;
}
$r = call(GET => "/api/chats/$chat/messages/", token => $login_token);
is(scalar @{ $r->{json}{messages} }, 4,
   'messages: both exchanges (trailing slash accepted)');

# tampered and foreign tokens

{
    my @p = split /\./, $login_token;
    my $c = $json->decode(MIME::Base64::decode_base64url($p[1]));
    $c->{sub} = uuid();
    $p[1] = MIME::Base64::encode_base64url($json->encode($c));
    $r = call(GET => '/api/users/me', token => join('.', @p));
    is($r->{status}, 401, 'tampered token: 401');
    $r = call(GET => '/api/users/me',
              token => substr($login_token, 0, -2) . 'AA');
    is($r->{status}, 401, 'tampered signature: 401');
}

# another user: isolation, 404s

$r = call(POST => '/api/auth/register',
    body => { email => q{o'brien+x@example.com}, password => 'pa$$word; --',
              name => q{Robert'); DROP TABLE users;-- Ünïcødé 名前 😀} });
is($r->{status}, 201, 'SQL metacharacters and Unicode: 201')
    or diag($r->{raw});
my $bob = $r->{json}{user};
my $bob_token = $r->{json}{token};
is($bob->{email}, q{o'brien+x@example.com}, '... email verbatim');
is($bob->{name}, q{Robert'); DROP TABLE users;-- Ünïcødé 名前 😀},
   '... name verbatim');
$r = call(GET => '/api/users/me', token => $bob_token);
is_deeply($r->{json}, $bob, '... and so from /api/users/me');
is(Encode::decode('UTF-8',
       $t->psql("SELECT name FROM users WHERE id = '$bob->{id}'")),
   q{Robert'); DROP TABLE users;-- Ünïcødé 名前 😀}, '... and in the table');
$r = call(POST => '/api/auth/login',
    body => { email => q{O'BRIEN+X@example.com}, password => 'pa$$word; --' });
is($r->{status}, 200, '... and logs in');

$r = call(GET => "/api/chats/$chat/messages", token => $bob_token);
is($r->{status}, 404, "another user's chat: 404");
my $missing = $r->{body};
$r = call(GET => '/api/chats/' . uuid() . '/messages', token => $bob_token);
is($r->{status}, 404, 'an unknown chat: 404');
is($r->{body}, $missing, '... the same answer');
$r = call(GET => '/api/chats', token => $bob_token);
is_deeply($r->{json}{chats}, [], "bob sees none of alice's chats");

# pagination: chats newest first, messages oldest first

{
    my $owner = $bob->{id};
    # 25 chats, five sharing each timestamp (ties page by id)
    $t->psql("INSERT INTO chats (id, owner, title, created_at, updated_at) "
        . "SELECT gen_random_uuid(), '$owner', 'chat ' || i, "
        . "'2026-01-01'::timestamptz + (i / 5) * interval '1 hour', "
        . "'2026-01-01'::timestamptz + (i / 5) * interval '1 hour' "
        . "FROM generate_series(0, 24) i");
    my (@seen, $next, $pages);
    my $path = '/api/chats?limit=10';
    while (defined $path && ++$pages <= 5) {
        $r = call(GET => $path, token => $bob_token);
        is($r->{status}, 200, "chats page $pages: 200");
        push @seen, @{ $r->{json}{chats} };
        $next = $r->{json}{next};
        $path = defined $next ? "/api/chats?limit=10&before=$next" : undef;
    }
    is($pages, 3, 'chats: three pages of 10, 10 and 5');
    is(scalar @seen, 25, '... 25 chats');
    my %u = map { $_->{id} => 1 } @seen;
    is(scalar keys %u, 25, '... each once');
    my @times = map { $_->{updatedAt} } @seen;
    is_deeply(\@times, [ sort { $b cmp $a } @times ], '... newest first');

    $r = call(GET => '/api/chats?limit=25', token => $bob_token);
    is(scalar @{ $r->{json}{chats} }, 25, 'limit=25: all at once');
    is($r->{json}{next}, undef, '... and no next page');
    $r = call(GET => '/api/chats', token => $bob_token);
    is(scalar @{ $r->{json}{chats} }, 20, 'no limit: 20');
    for my $bad ('limit=0', 'limit=101', 'limit=x', 'before=%20x') {
        $r = call(GET => "/api/chats?$bad", token => $bob_token);
        is($r->{status}, 400, "chats?$bad: 400");
    }
    for my $bad ('nonsense', '1_nonsense', '9' x 19 . '_' . uuid(),
                 '_' . uuid()) {
        $r = call(GET => "/api/chats?before=$bad", token => $bob_token);
        is($r->{status}, 400, "a cursor not from a page ($bad): 400");
        ok($r->{json}{details}{before}, '... about before');
    }
    $r = call(GET => '/api/chats?limit=100', token => $bob_token);
    is($r->{status}, 200, 'limit=100: 200');

    # seven messages in one chat
    my $c = $seen[0]{id};
    $t->psql("INSERT INTO messages (chat_id, job_id, role, content) "
        . "SELECT '$c', gen_random_uuid(), "
        . "CASE WHEN i % 2 = 0 THEN 'user' ELSE 'assistant' END, "
        . "'message ' || i FROM generate_series(1, 7) i");
    my @pages;
    $path = "/api/chats/$c/messages?limit=3";
    while (defined $path && @pages < 5) {
        $r = call(GET => $path, token => $bob_token);
        push @pages, [ map { $_->{content} } @{ $r->{json}{messages} } ];
        $next = $r->{json}{next};
        $path = defined $next
                ? "/api/chats/$c/messages?limit=3&before=$next" : undef;
    }
    is_deeply(\@pages, [ [ map { "message $_" } 5 .. 7 ],
                         [ map { "message $_" } 2 .. 4 ],
                         [ 'message 1' ] ],
              'messages: newest page first, each page oldest first');
    for my $bad ('abc', '9' x 19, '-1') {
        $r = call(GET => "/api/chats/$c/messages?before=$bad",
                  token => $bob_token);
        is($r->{status}, 400, "messages: a bad cursor ($bad) 400");
    }
    $r = call(GET => "/api/chats/not-a-uuid/messages", token => $bob_token);
    is($r->{status}, 400, 'messages: a bad chat id 400');
}

# a deleted user

$t->psql("DELETE FROM users WHERE id = '$bob->{id}'");
$r = call(GET => '/api/users/me', token => $bob_token);
is($r->{status}, 404, 'a deleted user: 404');
is_deeply($r->{json}, { error => 'User not found' }, '... with an error');
$r = call(GET => '/api/users/me',
    token => Ragnx::Test::jwt_hs256($secret,
                 { sub => 'not-a-uuid', exp => time + 60 }));
is($r->{status}, 404, 'a sub that is not a user id: 404');

# 200 concurrent calls, each for its own user: no crossed replies

{
    $t->psql("INSERT INTO users (email, password_hash, name) "
        . "SELECT 'u' || i || '\@example.com', 'x', 'user ' || i "
        . "FROM generate_series(1, 200) i");
    my @users = map { [ split /\|/ ] }
                split /\n/, $t->psql("SELECT id, name FROM users "
                                     . "WHERE email LIKE 'u%' ORDER BY id");
    is(scalar @users, 200, '200 users');
    my @reqs = map {
        [ GET => '/api/users/me', headers => [ Authorization => 'Bearer '
              . Ragnx::Test::jwt_hs256($secret,
                    { sub => $_->[0], exp => time + 60 }) ] ]
    } @users;
    my $res = $t->parallel(\@reqs, timeout => 30);
    my $ok = grep {
        $res->[$_]{status} == 200
        && (Ragnx::Test::json_body($res->[$_]) || {})->{id} eq $users[$_][0]
    } 0 .. $#users;
    is($ok, 200, '200 concurrent /api/users/me: each its own user');
}

# a client that goes away while waiting leaves nothing behind

{
    my @s = map {
        $t->send_request(POST => '/api/auth/login',
            headers => [ 'Content-Type' => 'application/json' ],
            body => $json->encode({ email => 'alice@example.com',
                                    password => 'correct horse' }))
    } 1 .. 20;
    sleep 0.01;
    close $_ for @s;
    sleep 0.5;
    $r = call(GET => '/api/users/me', token => $login_token);
    is($r->{status}, 200, 'clients gone mid-call: the next call works');
}

# an expired call is skipped, not answered

{
    my $id = uuid();
    $t->redis('XADD', '{ragnx}:rpc', '*', 'id', $id, 'method', 'me',
              'reply', '{ragnx}:reply:nobody', 'deadline',
              int(time * 1000) - 1000, 'sub', $alice->{id}, 'params', '{}');
    my $log = '';
    for (1 .. 100) {
        $log = $p->worker_log;
        last if $log =~ /call \Q$id\E \(me\) expired/;
        sleep 0.05;
    }
    like($log, qr/call \Q$id\E \(me\) expired .* skipped/,
         'an expired call is skipped');
}

# a call whose request id is not one nginx would send (a space, too
# long): malformed, answered 400, and nothing of it in the log

for my $bad ('bad id', 'r' x 65) {
    my $id = uuid();
    my $chan = '{ragnx}:reply:badrid';
    my $sub = Ragnx::Resp->new($rp) or die 'redis: connect';
    $sub->cmd('SUBSCRIBE', $chan);
    $t->redis('XADD', '{ragnx}:rpc', '*', 'id', $id, 'method', 'me',
              'reply', $chan, 'deadline', int(time * 1000) + 3000,
              'sub', $alice->{id}, 'params', '{}', 'rid', $bad);
    my $m = eval {
        local $SIG{ALRM} = sub { die "timeout\n" };
        alarm 5;
        my $v = $sub->read_reply;
        alarm 0;
        $v;
    };
    $sub->close;
    is(ref $m eq 'ARRAY' ? $m->[2] : '',
       qq{$id 400 {"error":"Malformed call"}},
       'a call with a bad request id (' . length($bad) . ' bytes): 400');
    unlike($p->worker_log, qr/\Q$bad\E/, '... and the id is not logged');
}

# rehash on login when the parameters change

{
    my $before = $t->psql("SELECT password_hash FROM users "
                          . "WHERE id = '$alice->{id}'");
    like($before, qr/^\$argon2id\$v=19\$m=8192,t=1,/,
         'the hash has the configured parameters');
    $p->stop;
    $p->configure(%base, password_opslimit => 2);
    $p->start;
    $r = call(POST => '/api/auth/login',
        body => { email => 'alice@example.com', password => 'correct horse' });
    is($r->{status}, 200, 'login after a parameter change: 200');
    like($t->psql("SELECT password_hash FROM users "
                  . "WHERE id = '$alice->{id}'"),
         qr/^\$argon2id\$v=19\$m=8192,t=2,/, '... and the hash is renewed');
    $r = call(POST => '/api/auth/login',
        body => { email => 'alice@example.com', password => 'correct horse' });
    is($r->{status}, 200, '... and still logs in');
}

# RS256 and ES256: the pool signs with the private key, nginx holds only
# the public one

for my $alg ([ 'RS256', 'rs', $rs_port ], [ 'ES256', 'es', $es_port ]) {
    my ($name, $k, $port) = @$alg;
    $p->stop;
    $p->configure(%base, jwt_alg => $name,
                  jwt_key_file => "$t->{dir}/$k.pem", jwt_issuer => 'ragnx',
                  jwt_audience => 'ragnx-api', jwt_ttl => 3600);
    $p->start;
    $r = call(POST => '/api/auth/login', port => $port,
        body => { email => 'alice@example.com', password => 'correct horse' });
    is($r->{status}, 200, "$name: login 200") or diag($r->{raw});
    my $tok = $r->{json}{token} // '';
    my ($h, $c) = map { $json->decode(MIME::Base64::decode_base64url($_)) }
                  (split /\./, $tok)[0, 1];
    is($h->{alg}, $name, "$name: the token's alg");
    is($c->{iss}, 'ragnx', "$name: iss");
    is($c->{aud}, 'ragnx-api', "$name: aud");
    is($c->{exp} - $c->{iat}, 3600, "$name: the configured lifetime");
    $r = call(GET => '/api/users/me', token => $tok, port => $port);
    is($r->{status}, 200, "$name: accepted by nginx with the public key");
    is($r->{json}{id}, $alice->{id}, "$name: the user");
    $r = call(GET => '/api/users/me', token => $tok);
    is($r->{status}, 401, "$name: refused by the HS256 server");
}

# bad keys stop ragnx-worker -t with a message naming the setting

{
    my @bad = (
        [ { jwt_key_file => "$t->{dir}/rs.pem" }, qr/holds a PEM key/ ],
        [ { jwt_key_file => $t->file('short.key', 'short') },
          qr/at least 32 bytes/ ],
        [ { jwt_alg => 'RS256', jwt_key_file => "$t->{dir}/rs.pub" },
          qr/not a PEM private key/ ],
        [ { jwt_alg => 'ES256', jwt_key_file => "$t->{dir}/rs.pem" },
          qr/ES256 needs a P-256/ ],
        [ { jwt_alg => 'HS512' }, qr/jwt_alg/ ],
        [ { jwt_key_file => "$t->{dir}/missing" }, qr/jwt_key_file/ ],
    );
    for my $b (@bad) {
        $p->configure(%base, %{ $b->[0] });
        my ($brc, $bout) = $p->cli('-t');
        isnt($brc, 0, "-t refuses: @{[ %{ $b->[0] } ]}");
        like($bout, $b->[1], '... saying why');
    }
    $p->configure(%base);
}

# migrate, ingest and jobs sign no token and open no call: a key file that
# is absent or cannot be read (a directory) does not stop them, as where
# a migration job runs without the keys mounted; the pool and -t still
# refuse to start without it, naming the setting

{
    mkdir "$t->{dir}/keydir";
    for my $k ([ jwt_key_file => "$t->{dir}/missing" ],
               [ jwt_key_file => "$t->{dir}/keydir" ],
               [ rpc_key_file => "$t->{dir}/missing" ])
    {
        my $conf = $p->configure(%base, @$k);
        my $what = "$k->[0] = $k->[1]";
        my ($crc, $cout) = $p->cli('migrate');
        is($crc, 0, "migrate with $what") or diag($cout);
        ($crc, $cout) = $p->cli('ingest', "$t->{dir}/corpus");
        is($crc, 0, "ingest with $what") or diag($cout);
        ($crc, $cout) = $p->cli('jobs');
        is($crc, 0, "jobs with $what") or diag($cout);
        ($crc, $cout) = $p->cli('-t');
        isnt($crc, 0, "-t refuses $what");
        like($cout, qr/\Q$k->[0]\E/, '... naming it');
        # the pool itself, bounded: one that started would be killed (124)
        $cout = `timeout 10 @{[ Ragnx::Pool::worker_bin() ]} -c $conf 2>&1`;
        is($? >> 8, 1, "the pool refuses to start with $what")
            or diag($cout);
        like($cout, qr/\Q$k->[0]\E/, '... naming it');
    }
    $p->configure(%base);
}

# the pool killed mid-call: 504, nginx fine; back after the restart

{
    $p->stop;
    # slow hashes (~1 s) so that the kill lands while one is computed
    $p->configure(%base, password_opslimit => 40, password_memlimit => 32768);
    $p->start;
    my $s = $t->send_request(POST => '/api/auth/register',
        headers => [ 'Content-Type' => 'application/json' ],
        body => $json->encode({ email => 'slow@example.com',
                                password => 'long enough' }));
    # the call is read at once; the hash takes longer than this
    sleep 0.3;
    my $killed = kill 'KILL', $p->children;
    ok($killed, 'the worker process killed mid-call');
    $r = $t->read_response($s, 5);
    is($r->{status}, 504, '... the caller gets 504');
    is(Ragnx::Test::json_body($r)->{error}, 'upstream timeout',
       '... upstream timeout');
    $r = call(GET => '/health');
    is($r->{status}, 200, '... nginx is fine');
    $p->stop;
}

# no pool at all: 504 within the timeout + 10%

{
    $r = call(GET => '/api/users/me', token => $login_token);
    is($r->{status}, 504, 'no pool: 504');
    ok($r->{elapsed} >= 1.9 && $r->{elapsed} <= 2.2,
       sprintf('... after %.2f s (timeout 2 s)', $r->{elapsed}));
    $r = call(GET => '/health');
    is($r->{status}, 200, '... nginx answers other locations');
}

# a call made before the first pool made the calls' group is answered
# once the pool starts, within the call's deadline

{
    $t->redis('DEL', '{ragnx}:rpc');
    my $s = $t->send_request(GET => '/api/users/me',
                             headers => [Authorization => "Bearer $login_token"]);
    for (1 .. 100) {
        last if $t->redis('XLEN', '{ragnx}:rpc');
        sleep 0.01;
    }
    is($t->redis('XLEN', '{ragnx}:rpc'), 1, 'a call queued with no group');
    $p->start;
    $r = $t->read_response($s, 5);
    is($r->{status}, 200, '... answered by the pool that started after it');
    is(Ragnx::Test::json_body($r)->{email}, 'Alice@Example.com',
       '... with the profile');
    $p->stop;
}

# PostgreSQL restarted under idle pooled connections: the first call to
# find its connection lost has the others, as stale, closed too, so the
# calls after it are answered on new ones

{
    $p->start;
    # four calls at once, each holding a connection behind a lock
    my $pid = fork() // die "fork: $!";
    if ($pid == 0) {
        $t->psql("BEGIN; LOCK TABLE users IN ACCESS EXCLUSIVE MODE; "
                 . "SELECT pg_sleep(1.2); COMMIT");
        POSIX::_exit(0);
    }
    sleep 0.4;
    my $rs = $t->parallel([ map { [GET => '/api/users/me',
                                   headers => [Authorization =>
                                               "Bearer $login_token"]] }
                            1 .. 4 ]);
    waitpid($pid, 0);
    is(join(' ', map { $_->{status} } @$rs), '200 200 200 200',
       'four calls at once: four connections');
    $t->stop_postgres;
    $t->start_postgres;
    my @st = map { call(GET => '/api/users/me', token => $login_token)
                   ->{status} } 1 .. 3;
    like($st[0], qr/^(200|503)$/, "after a restart: the first call $st[0]");
    is("$st[1] $st[2]", '200 200', '... the next ones answered');
    $p->stop;
}

unlike($p->worker_log, qr/Sanitizer|runtime error:/,
       'no sanitizer report from the pool');
$t->done;
