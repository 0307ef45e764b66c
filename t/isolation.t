#!/usr/bin/perl
# Trust boundaries between users and chats, end to end: nginx, Redis, the
# real pool, PostgreSQL and a mock LLM that repeats the history it is
# sent.  An answer shaped by one chat's history never reaches another
# user or chat (cache, single-flight, or a borrowed chatId); another
# user's chat is 404 with nothing computed or written; context-free
# questions keep the shared cache and single-flight.

use strict;
use warnings;
use lib 't/lib';
use Test::More;
use Cwd qw(getcwd);
use Digest::SHA ();
use JSON::PP;
use Time::HiRes qw(sleep time);
use Ragnx::Test;
use Ragnx::OpenAPI;
use Ragnx::Pool qw(uuid);
use Ragnx::MockLLM;

my $root = getcwd();
my $t = Ragnx::Test->new;
# every response to a path of docs/openapi.json is checked against it
Ragnx::OpenAPI->hook;
my $rp = $t->start_redis;
$t->start_postgres;
my $mock = Ragnx::MockLLM->start($t);
$mock->set(default => 'echo');
my $p = Ragnx::Pool->new($t);
my $secret = 'isolation-test-secret-0123456789abcdef';
my $key = $t->file('hs.key', $secret);
my $llmkey = $t->file('llm.key', "sk-test\n");
$p->configure(llm_provider => 'anthropic', llm_base_url => $mock->url,
              llm_model => 'claude-mock', llm_api_key_file => $llmkey,
              jwt_key_file => $key, concurrency => 8, history => 6);
my ($rc, $out) = $p->cli('migrate');
is($rc, 0, 'migrate') or diag($out);
mkdir "$t->{dir}/corpus";
$t->file('corpus/lockers.md',
         "# Lockers\n\nEvery member gets a locker with a four digit code.\n");
($rc, $out) = $p->cli('ingest', "$t->{dir}/corpus");
is($rc, 0, 'ingest') or diag($out);
$p->start;

$t->start_nginx(
    workers => 2,
    http    => "ragnx_redis 127.0.0.1:$rp;\n"
               . "    ragnx_ask_gen_refresh 100ms;\n"
               . "    ragnx_rpc_timeout 3s;",
    server  => <<"EOF");
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
        location ~ ^/api/chats/[^/]+/messages/?\$ {
            ragnx_jwt on;
            ragnx_rpc messages;
        }
EOF

my $json = JSON::PP->new->canonical;
my %tok = map {
    $_ => Ragnx::Test::jwt_hs256($secret, { sub => $_, exp => time + 600 })
} qw(alice bob), map { "user$_" } 1 .. 20;

sub ask {
    my ($who, $body) = @_;
    my $r = $t->request(POST => '/api/ask',
        headers => [ Authorization => "Bearer $tok{$who}",
                     'Content-Type' => 'application/json' ],
        body => $json->encode($body));
    $r->{j} = Ragnx::Test::json_body($r) || {};
    return $r;
}

sub done {
    my ($who, $id) = @_;
    my $j = {};
    for (1 .. 300) {
        my $r = $t->request(GET => "/api/ask/$id",
            headers => [ Authorization => "Bearer $tok{$who}" ]);
        $j = Ragnx::Test::json_body($r) || {};
        last if ($j->{status} || '') =~ /^(completed|failed)$/;
        sleep 0.02;
    }
    return $j;
}

# the answer of a question: at once from the cache, or once its job ends
sub answer {
    my ($who, $body) = @_;
    my $r = ask($who, $body);
    return ($r, $r->{j}) if $r->{status} == 200;
    return ($r, done($who, $r->{j}{jobId})) if $r->{status} == 202;
    return ($r, {});
}

my $msgs = sub {
    $t->psql("SELECT count(*) FROM messages WHERE chat_id = '$_[0]'");
};

# Alice tells her chat a secret, then asks about it in that chat

my ($r, $j) = answer(alice => { query => 'My locker code is 4821.' });
is($r->{status}, 202, 'alice: a new chat');
is($j->{status}, 'completed', '... answered');
my $chat = $r->{j}{chatId};

($r, $j) = answer(alice => { query => 'What is my locker code?',
                             chatId => $chat });
is($r->{status}, 202, 'alice in her chat: queued, not a cache lookup');
like($j->{answer}, qr/4821/, '... and her history went into the answer')
    or diag(explain $j);
my $contextual = $j->{answer};
is($msgs->($chat), 4, '... two exchanges in her chat');

is($t->redis('EXISTS', '{ragnx}:cache:'
             . Digest::SHA::sha256_hex('what is my locker code?') . ':'
             . $t->redis('GET', '{ragnx}:gen')), 0,
   'a contextual answer is not cached');

# Bob asks the same question: never Alice's answer

($r, $j) = answer(bob => { query => 'What is my locker code?' });
is($r->{status}, 202, 'bob, new chat: not a cache hit');
is($j->{status}, 'completed', '... answered');
unlike($j->{answer} // '', qr/4821/, '... without alice\'s code');
my $bob_chat = $r->{j}{chatId};

# again, now that bob's context-free answer is cached: the cache is shared
($r, $j) = answer(user1 => { query => '  what is MY locker code? ' });
is($r->{status}, 200, 'a context-free answer is shared through the cache');
unlike($j->{answer}, qr/4821/, '... and it is not alice\'s');

# Bob sends Alice's chatId: 404, nothing computed, nothing written

# every XADD ever made to the stream, whether consumed yet or not
my $added = sub {
    my ($n) = $t->redis('XINFO', 'STREAM', '{ragnx}:jobs')
              =~ /^entries-added\n(\d+)$/m;
    return $n;
};
my $xlen = $added->();
my $llm = $mock->stats->{requests};
for my $body ({ query => 'What is my locker code?', chatId => $chat },
              { query => 'What is my locker code?', chatId => uc $chat },
              { query => 'Something new entirely?', chatId => $chat })
{
    $r = ask(bob => $body);
    is($r->{status}, 404, "bob with alice's chatId ($body->{query}): 404");
    is_deeply($r->{j}, { error => 'Chat not found' }, '... the API\'s error');
}
is($added->(), $xlen, '... nothing enqueued');
is($msgs->($chat), 4, '... nothing written into her chat');
sleep 0.2;
is($mock->stats->{requests}, $llm, '... and the LLM was not asked');

# a chatId nobody has: 404 (the pool is asked, Redis does not know it)
my $nochat = uuid();
$r = ask(alice => { query => 'Hello?', chatId => $nochat });
is($r->{status}, 404, 'a chat that does not exist: 404');
is($t->redis('EXISTS', "{ragnx}:chat:$nochat"), 0, '... and stays unknown');

# Alice's chat id is bound to her: no Redis, no pool needed to know it is
# hers; for bob it is not, so the pool was asked and Redis remembers

is($t->redis('GET', "{ragnx}:chat:$chat"), 'alice',
   'bob\'s attempts left the owner in Redis');
$t->redis('DEL', "{ragnx}:chat:$chat");
$r = ask(bob => { query => 'What is my locker code?', chatId => $chat });
is($r->{status}, 404, 'owner unknown to Redis, bob: 404 from the pool');
is($t->redis('GET', "{ragnx}:chat:$chat"), 'alice',
   '... which put the owner back in Redis');
$t->redis('DEL', "{ragnx}:chat:$chat");
($r, $j) = answer(alice => { query => 'And my locker number?',
                             chatId => $chat });
is($r->{status}, 202, 'owner unknown to Redis, alice: her chat, 202');
like($j->{answer}, qr/4821/, '... answered from her history');
is($msgs->($chat), 6, '... in her chat');
is($t->redis('EXISTS', "{ragnx}:chat:$chat"), 0, '... without asking');
is($msgs->($bob_chat), 2, 'bob\'s chat holds only his exchange');

# a chat whose id is not bound to its owner (made before ids were): the
# pool is asked once, then Redis knows

my $old = uuid();
$t->psql("INSERT INTO chats (id, owner, title) VALUES ('$old', 'alice', "
         . "'an old chat')");
($r, $j) = answer(alice => { query => 'Is this an old chat?', chatId => $old });
is($r->{status}, 202, 'an old chat of alice\'s: 202');
is($j->{status}, 'completed', '... answered');
is($t->redis('GET', "{ragnx}:chat:$old"), 'alice', '... its owner in Redis');
$r = ask(bob => { query => 'Is this an old chat?', chatId => $old });
is($r->{status}, 404, '... and bob gets 404');
is($msgs->($old), 2, '... with nothing written');

# in flight: a contextual job is never a leader, nor a follower

$mock->set(delay_ms => 600);
{
    # alice's contextual question first, bob's identical one while it runs
    my $ra = ask(alice => { query => 'Tell me my locker code please',
                            chatId => $chat });
    sleep 0.1;
    my $rb = ask(bob => { query => 'Tell me my locker code please' });
    is($ra->{status}, 202, 'in flight: alice queued');
    is($rb->{status}, 202, '... bob queued');
    my $leader = $t->redis('HGET', "{ragnx}:job:$rb->{j}{jobId}", 'leader');
    is($leader, '', '... bob does not follow alice\'s job');
    my $jb = done(bob => $rb->{j}{jobId});
    unlike($jb->{answer}, qr/4821/, '... bob\'s answer has no code');
    like(done(alice => $ra->{j}{jobId})->{answer}, qr/4821/,
         '... alice\'s has');

    # bob's context-free question first, alice's contextual one after
    $rb = ask(bob => { query => 'Which locker code is mine?' });
    sleep 0.1;
    $ra = ask(alice => { query => 'Which locker code is mine?',
                         chatId => $chat });
    is($t->redis('HGET', "{ragnx}:job:$ra->{j}{jobId}", 'leader'), '',
       'in flight: alice does not follow bob\'s job either');
    like(done(alice => $ra->{j}{jobId})->{answer}, qr/4821/,
         '... her answer is her chat\'s');
    unlike(done(bob => $rb->{j}{jobId})->{answer}, qr/4821/,
           '... and bob\'s is not');
}

# a context-free question asked by 20 users at once: one LLM run

$llm = $mock->stats->{requests};
{
    my $rs = $t->parallel([ map { [ POST => '/api/ask',
        headers => [ Authorization => "Bearer $tok{\"user$_\"}",
                     'Content-Type' => 'application/json' ],
        body => encode_json({ query => 'How are lockers assigned?' }) ] }
        1 .. 20 ]);
    my (%answers, %chats);
    my $i = 0;
    for my $res (@$rs) {
        $i++;
        my $b = Ragnx::Test::json_body($res) || {};
        $chats{ $b->{chatId} // '' }++;
        my $a = $res->{status} == 200 ? $b->{answer}
              : done("user$i", $b->{jobId})->{answer};
        $answers{ $a // 'none' }++;
    }
    is(scalar(keys %answers), 1, '20 users: one answer') or diag(explain \%answers);
    is(scalar(keys %chats), 20, '... each in a chat of its own');
    is($mock->stats->{requests} - $llm, 1, '... from one LLM run');
}
$mock->set(delay_ms => 0);

# a cache hit makes a chat the caller can follow up in at once

($r, $j) = answer(user2 => { query => 'How are lockers assigned?' });
is($r->{status}, 200, 'a hit');
$r = ask(user2 => { query => 'Thanks, and who assigns them?',
                    chatId => $r->{j}{chatId} });
is($r->{status}, 202, '... and a follow-up in its chat is the caller\'s');
$r = ask(user3 => { query => 'Who assigns them?',
                    chatId => $r->{j}{chatId} });
is($r->{status}, 404, '... and nobody else\'s');

# a question in a chat whose context-free answer is in the cache (bob's,
# above): still the chat's own job, never the shared answer

($r, $j) = answer(alice => { query => 'What is my locker code?',
                             chatId => $chat });
is($r->{status}, 202, 'alice in her chat, the question cached for others: '
                      . 'queued, not served from the cache');
like($j->{answer}, qr/4821/, '... answered from her history');

# owners whose names are prefixes of each other: "ali" is not "alice", in
# either direction, wherever an owner is compared

$tok{ali} = Ragnx::Test::jwt_hs256($secret, { sub => 'ali', exp => time + 600 });

sub poll {
    my ($who, $id) = @_;
    return $t->request(GET => "/api/ask/$id",
                       headers => [ Authorization => "Bearer $tok{$who}" ]);
}

sub history {
    my ($who, $c) = @_;
    return $t->request(GET => "/api/chats/$c/messages",
                       headers => [ Authorization => "Bearer $tok{$who}" ]);
}

{
    my $ra = ask(alice => { query => 'Prefix owners: whose job is this?' });
    my $rb = ask(ali => { query => 'Prefix owners: and whose is that?' });
    is($ra->{status}, 202, 'prefix owners: alice queued');
    is($rb->{status}, 202, '... ali queued');
    my ($ja, $jb) = ($ra->{j}{jobId}, $rb->{j}{jobId});
    is(done(alice => $ja)->{status}, 'completed', '... alice\'s job done');
    is(done(ali => $jb)->{status}, 'completed', '... ali\'s job done');

    for ([ ali => $ja, 'ali polls alice\'s job' ],
         [ alice => $jb, 'alice polls ali\'s job' ])
    {
        my $r = poll($_->[0], $_->[1]);
        is($r->{status}, 404, "$_->[2]: 404");
        is_deeply(Ragnx::Test::json_body($r), { error => 'Job not found' },
                  "$_->[2]: the API's error");
    }

    my ($ca, $cb) = ($ra->{j}{chatId}, $rb->{j}{chatId});
    my $n = { $ca => $msgs->($ca), $cb => $msgs->($cb) };
    my $xlen = $added->();

    # each chat: its history, then a question in it, first with Redis not
    # knowing the owner (the pool is asked), then with Redis knowing
    for ([ ali => $ca, 'alice' ], [ alice => $cb, 'ali' ]) {
        my ($who, $c, $owner) = @$_;
        my $r = history($who, $c);
        is($r->{status}, 404, "$who reads $owner\'s messages: 404");
        $t->redis('DEL', "{ragnx}:chat:$c");
        $r = ask($who => { query => 'Prefix owners: my chat?', chatId => $c });
        is($r->{status}, 404, "$who asks in $owner\'s chat, owner unknown "
                              . 'to Redis: 404');
        is($t->redis('GET', "{ragnx}:chat:$c"), $owner,
           '... the pool put the owner in Redis');
        $r = ask($who => { query => 'Prefix owners: my chat?', chatId => $c });
        is($r->{status}, 404, "$who asks in $owner\'s chat, owner known to "
                              . 'Redis: 404');
        is($msgs->($c), $n->{$c}, "... nothing written into $owner\'s chat");
        is(history($owner, $c)->{status}, 200, "... $owner reads it: 200");
    }
    is($added->(), $xlen, 'prefix owners: nothing enqueued');

    # a chat made before ids were bound to owners: only the pool knows
    for ([ ali => 'alice' ], [ alice => 'ali' ]) {
        my ($who, $owner) = @$_;
        my $c = uuid();
        $t->psql("INSERT INTO chats (id, owner, title) VALUES ('$c', "
                 . "'$owner', 'prefix')");
        my $r = ask($who => { query => 'Prefix owners: old chat?',
                              chatId => $c });
        is($r->{status}, 404, "$who asks in $owner\'s old chat: 404");
        $r = ask($who => { query => 'Prefix owners: old chat?',
                           chatId => $c });
        is($r->{status}, 404, '... again, Redis knowing its owner: 404');
        is(history($who, $c)->{status}, 404, '... and its messages: 404');
    }
}

$p->stop;
$t->done;
