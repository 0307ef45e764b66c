#!/usr/bin/perl
# End to end through nginx, beside t/pool-e2e.t: POST /api/ask -> 202 ->
# the real worker pool (PostgreSQL retrieval, the offline extractive LLM)
# -> poll -> completed;
# the same question again -> 200 from the cache; messages stored exactly
# once; both exchanges in the chat; a re-ingest bumps the generation.

use strict;
use warnings;
use lib 't/lib';
use Test::More;
use Cwd qw(getcwd);
use JSON::PP;
use Time::HiRes qw(sleep time);
use Ragnx::Test;
use Ragnx::OpenAPI;
use Ragnx::Pool;

my $root = getcwd();
my $t = Ragnx::Test->new;
# every response to a path of docs/openapi.json is checked against it
Ragnx::OpenAPI->hook;
my $rp = $t->start_redis;
$t->start_postgres;
my $p = Ragnx::Pool->new($t);
$p->configure(llm_model => 'extractive');

my ($rc, $out) = $p->cli('migrate');
is($rc, 0, 'migrate') or diag($out);

my $corpus = "$t->{dir}/corpus";
mkdir $corpus;
$t->file('corpus/deploy.md', <<'EOF2');
# Deploying ragnx

Run make run on a Debian 12 machine: it installs the packages, builds the
module and starts nginx, Redis, PostgreSQL and the worker pool.

# Scaling

Add nginx hosts behind a load balancer and worker hosts that connect to
the same Redis; the pool listens on no port.
EOF2
($rc, $out) = $p->cli('ingest', $corpus);
is($rc, 0, 'ingest') or diag($out);

$p->start;

my $secret = 'e2e-test-secret-0123456789abcdef0123';
my $key = $t->file('hs.key', $secret);
$t->start_nginx(
    workers => 2,
    http    => "ragnx_redis 127.0.0.1:$rp;\n"
               . "    ragnx_ask_gen_refresh 100ms;",
    server  => <<"EOF2");
        ragnx_jwt_key_file $key;
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

my $sub = 'e2e-user';
my $token = Ragnx::Test::jwt_hs256($secret, { sub => $sub, exp => time + 600 });
my @h = (Authorization => "Bearer $token",
         'Content-Type' => 'application/json');

sub ask {
    my ($body) = @_;
    return $t->request(POST => '/api/ask', headers => \@h,
                       body => encode_json($body));
}

sub poll_done {
    my ($id) = @_;
    my $j;
    for (1 .. 200) {
        my $r = $t->request(GET => "/api/ask/$id", headers => \@h);
        $j = Ragnx::Test::json_body($r);
        return $j if $j && $j->{status} =~ /^(completed|failed)$/;
        sleep 0.05;
    }
    return $j;
}

sleep 0.3;

my $r = ask({ query => 'How do I deploy ragnx?' });
is($r->{status}, 202, 'first ask: 202');
my $j = Ragnx::Test::json_body($r);
my ($job, $chat) = ($j->{jobId}, $j->{chatId});

my $done = poll_done($job);
is($done->{status}, 'completed', 'the pool completed the job');
like($done->{answer}, qr/make run/i, 'the answer comes from the document');
ok(grep({ /deploy\.md/ } @{ $done->{sources} || [] }),
   'sources name the document');
is($done->{chatId}, $chat, 'completed job keeps its chat');

my $n = $t->psql("SELECT count(*) FROM messages WHERE job_id = '$job'");
is($n, 2, 'user and assistant messages stored exactly once');

# the same question in a new chat: the shared cache
$r = ask({ query => '  how do I DEPLOY ragnx? ' });
is($r->{status}, 200, 'the same question again, new chat: 200');
$j = Ragnx::Test::json_body($r);
is($j->{source}, 'cache', 'answered from the cache');
is($j->{answer}, $done->{answer}, 'with the same answer');
my $chat2 = $j->{chatId};
isnt($chat2, $chat, 'in a chat of its own');

my $count;
for (1 .. 100) {
    $count = $t->psql("SELECT count(*) FROM chat_messages WHERE chat_id = "
                      . "'$chat2'");
    last if $count == 2;
    sleep 0.05;
}
is($count, 2, 'the cached exchange is recorded in its chat');

# in the first chat: that chat's own question, never the cache
$r = ask({ query => '  how do I DEPLOY ragnx? ', chatId => $chat });
is($r->{status}, 202, 'the same question in a chat with history: 202');
$j = Ragnx::Test::json_body($r);
is($j->{chatId}, $chat, 'in that chat');
$done = poll_done($j->{jobId});
is($done->{status}, 'completed', 'the pool answered it');
is($t->psql("SELECT count(*) FROM messages WHERE chat_id = '$chat'"), 4,
   'both exchanges in the chat');

# a re-ingest that changes the corpus bumps the generation: no stale hit
my $gen = $t->redis('GET', '{ragnx}:gen');
$t->file('corpus/more.md', "# Backups\n\nBack up PostgreSQL with pg_dump.\n");
($rc, $out) = $p->cli('ingest', $corpus);
is($rc, 0, 're-ingest');
isnt($t->redis('GET', '{ragnx}:gen'), $gen, 'the cache generation changed');
sleep 0.4;
$r = ask({ query => 'How do I deploy ragnx?' });
is($r->{status}, 202, 'after a re-ingest the old answer is not served');
$done = poll_done(Ragnx::Test::json_body($r)->{jobId});
is($done->{status}, 'completed', 'and the pool answers again');

# single flight through nginx and the pool: 20 identical questions
my $rs = $t->parallel([ map { [ POST => '/api/ask', headers => \@h,
    body => encode_json({ query => 'What does the pool listen on?' }) ] }
    1 .. 20 ]);
# the leader may finish before the last of them is read: those are hits
my (%answers, @ids);
for my $res (@$rs) {
    my $b = Ragnx::Test::json_body($res) || {};
    if ($res->{status} == 200) {
        $answers{ $b->{answer} // 'none' }++;
        next;
    }
    push @ids, $b->{jobId};
    $answers{ poll_done($b->{jobId})->{answer} // 'none' }++;
}
is(scalar(keys %answers), 1, 'single flight: one answer for all 20')
    or diag(explain(\%answers));
ok(@ids >= 1, 'single flight: at least the first was queued');
my $recorded;
for (1 .. 100) {
    $recorded = $t->psql("SELECT count(DISTINCT job_id) FROM "
                         . "chat_messages WHERE role = 'assistant' AND "
                         . "content = "
                         . "(SELECT content FROM chat_messages WHERE "
                         . "job_id = "
                         . "'$ids[0]' AND role = 'assistant')");
    last if $recorded == 20;
    sleep 0.05;
}
is($recorded, 20, 'each of the 20 callers has the exchange in its chat');

$p->stop;
$t->done;
