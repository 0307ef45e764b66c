#!/usr/bin/perl
# End to end through nginx: POST /api/ask -> 202 -> the worker pool ->
# poll -> completed with answer and sources; messages stored once; the
# same question again -> 200 from the cache, recorded in the chat; other
# users see neither the job nor the chat.  Everything is on one host, so
# nginx and the pool reach Redis, and the pool PostgreSQL, over unix
# sockets (the other pool tests use TCP).

use strict;
use warnings;
use lib 't/lib';
use Test::More;
use Cwd qw(getcwd);
use JSON::PP;
use Time::HiRes qw(time sleep);
use Ragnx::Test;
use Ragnx::OpenAPI;
use Ragnx::Pool;

my $root = getcwd();
my $t = Ragnx::Test->new;
# every response to a path of docs/openapi.json is checked against it
Ragnx::OpenAPI->hook;
my $rp = $t->start_redis(unix => 1);
$t->start_postgres;
my $sock = $t->{redis_socket};
my $secret = 'e2e-test-secret-0123456789abcdef';
my $keyfile = $t->file('hs.key', $secret);
my $json = JSON::PP->new->canonical;

my $p = Ragnx::Pool->new($t);
$p->configure(llm_model => 'extractive', redis_host => $sock,
              database => "host=$t->{dir}/pg port=" . $t->pg_port
                          . ' user=ragnx dbname=ragnx');
my ($rc, $out) = $p->cli('migrate');
is($rc, 0, 'migrate') or diag($out);
mkdir "$t->{dir}/corpus";
$t->file('corpus/README.md', <<'EOF');
# Ragnx overview

## Cache

Answers are cached in Redis for one hour. The cache TTL is set with the
cache_ttl setting of the worker pool.
EOF
($rc, $out) = $p->cli('ingest', "$t->{dir}/corpus");
is($rc, 0, 'ingest') or diag($out);
$p->start;

$t->start_nginx(
    workers => 2,
    http    => <<"EOF2",
    ragnx_redis unix:$sock pool=2;
    ragnx_redis_timeout 300ms;
    ragnx_ask_gen_refresh 100ms;
EOF2
    server  => <<"EOF2");
        ragnx_jwt_alg HS256;
        ragnx_jwt_key_file $keyfile;
        error_page 404 405 413 500 503 \@err;
        location \@err { ragnx_json_error; }

        location = /api/ask {
            ragnx_jwt on;
            ragnx_validate_schema $root/schemas/ask.json;
            ragnx_ask;
        }
        location /api/ask/ {
            ragnx_jwt on;
            ragnx_ask_status;
        }
EOF2

# let every nginx worker see the pool's cache generation: each reads it
# with a GET every 100 ms, and nothing else sends a GET yet (a worker
# that alone made all four would have taken 400 ms, the other's first
# refresh comes within 100 ms of its start)
{
    my $gets = sub {
        my ($n) = $t->redis('INFO', 'commandstats') =~ /cmdstat_get:calls=(\d+)/;
        return $n || 0;
    };
    my $deadline = time + 10;
    sleep 0.02 while $gets->() < 4 && time < $deadline;
    cmp_ok($gets->(), '>=', 4, 'the nginx workers read the generation');
}

my %auth = map { $_ => Ragnx::Test::jwt_hs256($secret,
                        { sub => $_, exp => time + 3600 }) } qw(alice bob);

sub ask {
    my ($who, $body) = @_;
    my $r = $t->request(POST => '/api/ask',
        headers => [ Authorization => "Bearer $auth{$who}",
                     'Content-Type' => 'application/json' ],
        body => $json->encode($body));
    return ($r, Ragnx::Test::json_body($r));
}

sub poll {
    my ($who, $id) = @_;
    my ($r, $j);
    my $deadline = time + 15;
    while (time < $deadline) {
        $r = $t->request(GET => "/api/ask/$id",
                         headers => [ Authorization => "Bearer $auth{$who}" ]);
        $j = Ragnx::Test::json_body($r) || {};
        last if $r->{status} != 200
                || ($j->{status} || '') =~ /^(completed|failed)$/;
        sleep 0.05;
    }
    return ($r, $j);
}

my $q = 'How long is the cache TTL?';
my ($r, $b) = ask(alice => { query => $q });
is($r->{status}, 202, 'POST /api/ask: 202') or diag($r->{raw});
my ($id, $chat) = ($b->{jobId}, $b->{chatId});
ok($id && $chat, 'job and chat ids');

($r, $b) = poll(alice => $id);
is($r->{status}, 200, 'poll: 200');
is($b->{status}, 'completed', 'completed');
like($b->{answer}, qr/cached in Redis for one hour/, 'answer from the corpus');
is_deeply($b->{sources}, ['README.md'], 'sources');
is($b->{chatId}, $chat, 'chat id');
my $answer = $b->{answer};
is($t->psql("SELECT count(*) FROM messages WHERE job_id = '$id'"), 2,
   'messages stored exactly once');

($r) = poll(bob => $id);
is($r->{status}, 404, "another user's job: 404");

# the same question in a new chat: answered from the cache, and recorded

($r, $b) = ask(alice => { query => '  how long is the CACHE ttl? ' });
is($r->{status}, 200, 'identical question, new chat: 200') or diag($r->{raw});
is($b->{source}, 'cache', 'from the cache');
is($b->{answer}, $answer, 'the same answer');
my $chat2 = $b->{chatId};
my $deadline = time + 10;
sleep 0.05 while time < $deadline
    && $t->psql("SELECT count(*) FROM chat_messages WHERE chat_id = "
                . "'$chat2'") < 2;
is($t->psql("SELECT string_agg(role, ',' ORDER BY seq) FROM chat_messages "
            . "WHERE chat_id = '$chat2'"), 'user,assistant',
   'the new chat holds the exchange');

# in alice's chat the question is the chat's own: a job, not the cache

($r, $b) = ask(alice => { query => '  how long is the CACHE ttl? ',
                          chatId => $chat });
is($r->{status}, 202, 'identical question in her chat: 202');
($r, $b) = poll(alice => $b->{jobId});
is($b->{status}, 'completed', '... answered');
is($t->psql("SELECT string_agg(role, ',' ORDER BY seq) FROM messages "
            . "WHERE chat_id = '$chat'"), 'user,assistant,user,assistant',
   'chat history holds both exchanges');

# someone else's chat: 404, nothing queued or written

my $xlen = $t->redis('XLEN', '{ragnx}:jobs');
($r, $b) = ask(bob => { query => 'Where is the cache kept?',
                        chatId => $chat });
is($r->{status}, 404, "bob asks into alice's chat: 404");
is_deeply($b, { error => 'Chat not found' }, '... Chat not found');
is($t->redis('XLEN', '{ragnx}:jobs'), $xlen, '... nothing queued');
is($t->psql("SELECT count(*) FROM messages WHERE chat_id = '$chat'"), 4,
   "nothing written into alice's chat");

$p->finish;
