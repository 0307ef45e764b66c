#!/usr/bin/perl
# POST /api/ask and GET /api/ask/{id} against a real redis-server: cache
# hits, misses, single-flight, job states, owner isolation, backpressure,
# pipelining and Redis faults.

use strict;
use warnings;
use lib 't/lib';
use Test::More;
use Cwd qw(getcwd);
use Digest::SHA qw(sha256_hex);
use JSON::PP;
use Time::HiRes qw(time sleep);
use Ragnx::Test;
use Ragnx::OpenAPI;

my $UUID = qr/^[0-9a-f]{8}-[0-9a-f]{4}-[47][0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;
my $root = getcwd();
my $t = Ragnx::Test->new;
# every response to a path of docs/openapi.json is checked against it
Ragnx::OpenAPI->hook;
my $rp = $t->start_redis;
my $secret = 'ask-test-secret-0123456789abcdef';
my $keyfile = $t->file('hs.key', $secret);
my $json = JSON::PP->new->canonical;
my $loose = $t->file('loose.json', '{"type":"object"}');

# With a refresh interval each nginx worker knows the cache generation and
# a question is a plain GET; with 0 every question goes through the script.
# t/ask-script.t runs this file again with 0.
my $refresh = $ENV{RAGNX_ASK_GEN_REFRESH} // '100ms';
my $settle = $refresh eq '0' ? 0 : 0.35;

$t->start_nginx(
    workers => 2,
    http    => <<"EOF2",
    ragnx_redis 127.0.0.1:$rp pool=2;
    ragnx_redis_timeout 300ms;
    ragnx_ask_gen_refresh $refresh;
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
        location = /api/ask-small {
            ragnx_jwt on;
            ragnx_validate_schema $root/schemas/ask.json;
            ragnx_ask_queue_max 3;
            ragnx_ask;
        }
        location = /api/ask-if {
            ragnx_jwt on;
            ragnx_validate_schema $root/schemas/ask.json;
            if (\$arg_x) { set \$x 1; }
            limit_except POST { allow all; }
            ragnx_ask;
        }
        location = /api/ask-loose {
            ragnx_jwt on;
            ragnx_validate_schema $loose;
            ragnx_ask;
        }
        location /api/ask/ {
            ragnx_jwt on;
            ragnx_ask_status;
        }
        location = /static { return 200 "static"; }
EOF2

sub token {
    my ($sub) = @_;
    return Ragnx::Test::jwt_hs256($secret,
                                  { sub => $sub, exp => time + 3600 });
}

my %auth = (alice => token('alice'), bob => token('bob'));

sub ask {
    my ($who, $body, $path) = @_;
    return $t->request(POST => $path || '/api/ask',
        headers => [ Authorization => "Bearer $auth{$who}",
                     'Content-Type' => 'application/json' ],
        body => ref $body ? $json->encode($body) : $body);
}

sub poll {
    my ($who, $id) = @_;
    return $t->request(GET => "/api/ask/$id",
        headers => [ Authorization => "Bearer $auth{$who}" ]);
}

sub digest {
    my ($q) = @_;
    $q = lc $q;
    $q =~ s/^\s+|\s+$//g;
    $q =~ s/\s+/ /g;
    return sha256_hex($q);
}

sub cache_put {
    my ($q, $answer, $sources, $gen) = @_;
    $t->redis('SET', '{ragnx}:cache:' . digest($q) . ':' . ($gen || 'default@0'),
              $json->encode({ answer => $answer, sources => $sources }));
}

sub xlen { $t->redis('XLEN', $_[0] || '{ragnx}:jobs') }

sub last_entry {
    my @f = split /\n/, $t->redis('XREVRANGE', $_[0] || '{ragnx}:jobs', '+',
                                 '-', 'COUNT', 1);
    my %e = @f[1 .. $#f];
    return \%e;
}

# wait until both workers have their Redis connections up
for (1 .. 100) { last if $t->redis('CLIENT', 'LIST') =~ tr/\n// >= 3; sleep 0.05 }
sleep $settle;

# a miss queues a job

my $r = ask(alice => { query => 'What is ragnx?' });
is($r->{status}, 202, 'miss: 202');
my $j = Ragnx::Test::json_body($r);
like($j->{jobId}, qr/^[0-9a-f]{8}-[0-9a-f]{4}-7/, 'miss: a v7 job id');
is($j->{status}, 'queued', 'miss: status queued');
like($j->{chatId}, $UUID, 'miss: a new chat id');
is($r->{headers}{location}, "/api/ask/$j->{jobId}", 'Location header');
is($r->{headers}{'retry-after'}, '1', 'Retry-After: 1');
is(xlen(), 1, 'one stream entry');

my $e = last_entry();
is($e->{id}, $j->{jobId}, 'stream entry carries the job id');
my $p = decode_json($e->{job});
is($p->{v}, 2, 'payload version 2');
is($p->{owner}, 'alice', 'payload owner is the JWT sub');
is($p->{query}, 'What is ragnx?', 'payload has the query as asked');
ok(!exists $p->{gen} && !exists $p->{type},
   'payload: no generation, no type inside');
is($e->{gen}, 'default@0', 'the generation: a field beside the payload');
is($p->{digest}, digest('What is ragnx?'), 'digest of the normalised query');

my %h = split /\n/, $t->redis('HGETALL', "{ragnx}:job:$j->{jobId}");
is($h{status}, 'waiting', 'job hash: waiting');
is($h{owner}, 'alice', 'job hash: owner');
is($h{chatId}, $j->{chatId}, 'job hash: chat');
is_deeply([sort keys %h], [qw(chatId createdAt owner status)],
          'job hash: what a poll needs, no more');
is($t->redis('TTL', "{ragnx}:job:$j->{jobId}"), -1,
   'a waiting job hash has no TTL: its stream entry keeps it');
is($t->redis('HGET', '{ragnx}:inflight',
            digest('What is ragnx?') . ':default@0'), $j->{jobId},
   'the question is in flight: its field names the job');

# polling each state

my $id = $j->{jobId};
$r = poll(alice => $id);
is($r->{status}, 200, 'poll: 200');
is_deeply(Ragnx::Test::json_body($r),
          { status => 'waiting', chatId => $j->{chatId} }, 'poll: waiting');

for my $st (qw(active delayed)) {
    $t->redis('HSET', "{ragnx}:job:$id", 'status', $st);
    is(Ragnx::Test::json_body(poll(alice => $id))->{status}, $st,
       "poll: $st");
}

$t->redis('HSET', "{ragnx}:job:$id", 'status', 'completed',
          'answer', "It is \"ragnx\" \xc3\xa9", 'sources',
          '["README.md","docs/a.md"]');
$r = poll(alice => $id);
is_deeply(Ragnx::Test::json_body($r),
          { status => 'completed', chatId => $j->{chatId},
            answer => "It is \"ragnx\" \x{e9}",
            sources => ['README.md', 'docs/a.md'] },
          'poll: completed with answer and sources');
$t->redis('HSET', "{ragnx}:job:$id", 'truncated', '1');
is(Ragnx::Test::json_body(poll(alice => $id))->{truncated}, JSON::PP::true,
   'poll: an answer cut at the token limit says so');
$t->redis('HDEL', "{ragnx}:job:$id", 'truncated');

$t->redis('HSET', "{ragnx}:job:$id", 'status', 'failed', 'error',
          'LLM unavailable');
is_deeply(Ragnx::Test::json_body(poll(alice => $id)),
          { status => 'failed', chatId => $j->{chatId},
            error => 'LLM unavailable' }, 'poll: failed with error');

# owner isolation and bad ids

my $other = poll(bob => $id);
my $unknown = poll(alice => '00000000-0000-4000-8000-000000000000');
is($other->{status}, 404, "another user's job is 404");
is($unknown->{status}, 404, 'unknown job is 404');
is($other->{body}, $unknown->{body}, 'both answers are identical');
is_deeply(Ragnx::Test::json_body($other), { error => 'Job not found' },
          '404 body');

is(poll(alice => uc $id)->{status}, 200, 'upper-case id accepted');

for my $bad ('not-a-uuid', 'abc%2Fdef', "${id}x",
             '00000000-0000-4000-8000-00000000000g', '*')
{
    $r = poll(alice => $bad);
    is($r->{status}, 400, "bad id '$bad' is 400");
    is_deeply(Ragnx::Test::json_body($r), { error => 'Invalid job id' },
              "bad id '$bad' body");
}

$r = $t->request(GET => "/api/ask/$id");
is($r->{status}, 401, 'poll without a token is 401');

# the job's owner is the token's "sub": a token without one is refused
# by the JWT module in these locations, before anything reaches Redis
{
    my $nosub = Ragnx::Test::jwt_hs256($secret, { exp => time + 3600 });
    my $n = xlen();
    $r = $t->request(POST => '/api/ask',
        headers => [ Authorization => "Bearer $nosub",
                     'Content-Type' => 'application/json' ],
        body => $json->encode({ query => 'who am I?' }));
    is($r->{status}, 401, 'ask with a token without "sub" is 401');
    is_deeply(Ragnx::Test::json_body($r), { error => 'invalid token' },
              '... an invalid token');
    is(xlen(), $n, '... and nothing was queued');
    $r = $t->request(GET => "/api/ask/$id",
                     headers => [ Authorization => "Bearer $nosub" ]);
    is($r->{status}, 401, 'poll with a token without "sub" is 401');
}

# a request served with the configuration of an "if" or "limit_except"
# block in the location is answered as the location's own
{
    my $nosub = Ragnx::Test::jwt_hs256($secret, { exp => time + 3600 });
    $r = $t->request(POST => '/api/ask-if?x=1',
        headers => [ Authorization => "Bearer $nosub",
                     'Content-Type' => 'application/json' ],
        body => $json->encode({ query => 'who am I?' }));
    is($r->{status}, 401, 'inside "if": a token without "sub" is 401');
    $r = ask(alice => { query => 'asked inside an if block' },
             '/api/ask-if?x=1');
    is($r->{status}, 202, 'inside "if": the question is queued');
    is(last_entry()->{id}, Ragnx::Test::json_body($r)->{jobId},
       '... as this job');
    $r = $t->request(GET => '/api/ask-if',
                     headers => [ Authorization => "Bearer $auth{alice}" ]);
    is($r->{status}, 405, 'inside "limit_except": GET is 405');
    is($r->{headers}{allow}, 'POST', '... with Allow: POST');
}

# wrong methods

$r = $t->request(GET => '/api/ask',
                 headers => [ Authorization => "Bearer $auth{alice}" ]);
is($r->{status}, 405, 'GET /api/ask is 405');
is($r->{headers}{allow}, 'POST', 'Allow: POST');
is_deeply(Ragnx::Test::json_body($r), { error => 'Method not allowed' },
          '405 body');
$r = $t->request(DELETE => "/api/ask/$id",
                 headers => [ Authorization => "Bearer $auth{alice}" ]);
is($r->{status}, 405, 'DELETE /api/ask/{id} is 405');
is($r->{headers}{allow}, 'GET, HEAD', 'Allow: GET, HEAD');

# validation happens before anything reaches Redis

my $before = xlen();
$r = ask(alice => { query => '' });
is($r->{status}, 400, 'empty query is 400');
$r = ask(alice => { query => 'x', chatId => 'nope' });
is($r->{status}, 400, 'bad chatId is 400');
$r = ask(alice => { query => 'x' x 1001 });
is($r->{status}, 400, 'query over 1000 characters is 400');
is(xlen(), $before, 'nothing enqueued by invalid requests');

# a looser operator schema: the handler still insists on a query

for my $body ({}, { query => 42 }, { query => '' }) {
    $r = ask(alice => $body, '/api/ask-loose');
    is($r->{status}, 400, 'loose schema, ' . $json->encode($body) . ': 400');
    is_deeply(Ragnx::Test::json_body($r),
              { error => 'Validation failed',
                details => { query => ['must be a non-empty string'] } },
              'loose schema: error body');
}
# a chatId that is no chat id: refused, never taken for a new chat
for my $chat (42, 'nope', '') {
    $r = ask(alice => { query => 'hello', chatId => $chat }, '/api/ask-loose');
    is($r->{status}, 400, "loose schema, chatId \"$chat\": 400");
    is_deeply(Ragnx::Test::json_body($r),
              { error => 'Validation failed',
                details => { chatId => ['must be a UUID'] } },
              '... error body');
}
is(xlen(), $before, 'loose schema: nothing enqueued');

# a given chat id is kept: the caller's chat (its owner in Redis)

my $chat = '6a0b4c3d-2e1f-4a5b-8c7d-9e0f1a2b3c4d';
$t->redis('SET', "{ragnx}:chat:$chat", 'alice', 'EX', 60);
$r = ask(alice => { query => 'second question', chatId => uc $chat });
is($r->{status}, 202, 'a question in an existing chat: 202');
is(Ragnx::Test::json_body($r)->{chatId}, $chat, 'chat id kept (lower-cased)');

# cache hit

cache_put('how do I deploy?', 'Use make run.', ['README.md']);
$before = xlen();
$r = ask(alice => { query => "  How do I    DEPLOY? \n" });
is($r->{status}, 200, 'hit: 200');
$j = Ragnx::Test::json_body($r);
is($j->{answer}, 'Use make run.', 'hit: answer');
is($j->{source}, 'cache', 'hit: source cache');
is_deeply($j->{sources}, ['README.md'], 'hit: sources');
like($j->{chatId}, $UUID, 'hit: chat id');
is(xlen(), $before, 'hit: no job enqueued');
$e = last_entry('{ragnx}:records');
$p = decode_json($e->{job});
is($e->{id}, $p->{id}, 'hit: its record on the records stream');
is($p->{chatId}, $j->{chatId}, 'record: the chat');
is(decode_json($e->{result})->{answer}, 'Use make run.',
   'record: the cached value beside the payload');

# a cache entry that is not what the pool writes is not served

$t->redis('SET', '{ragnx}:cache:' . digest('corrupt entry') . ':default@0',
          'not json');
$r = ask(alice => { query => 'corrupt entry' });
is($r->{status}, 503, 'malformed cache entry: 503');
is_deeply(Ragnx::Test::json_body($r), { error => 'cache unavailable' },
          'malformed cache entry: body');

# a new cache generation (re-ingest, model switch) misses

$t->redis('SET', '{ragnx}:gen', 'other-model@7');
sleep $settle;
$r = ask(alice => { query => 'how do I deploy?' });
is($r->{status}, 202, 'after a generation bump the old entry is not served');
cache_put('how do I deploy?', 'New answer.', [], 'other-model@7');
$r = ask(alice => { query => 'how do I deploy?' });
is(Ragnx::Test::json_body($r)->{answer}, 'New answer.',
   'the entry of the new generation is served');
$t->redis('DEL', '{ragnx}:gen');
sleep $settle;

# single-flight: 50 identical misses, one stream entry

$before = xlen();
my $q = 'single flight question';
my $rs = $t->parallel([ map {
    [ POST => '/api/ask',
      headers => [ Authorization => "Bearer $auth{alice}",
                   'Content-Type' => 'application/json' ],
      body => $json->encode({ query => $q }) ] } 1 .. 50 ]);
is(scalar(grep { $_->{status} == 202 } @$rs), 50, 'single-flight: 50 x 202');
my %ids = map { Ragnx::Test::json_body($_)->{jobId} => 1 } @$rs;
is(scalar(keys %ids), 50, 'single-flight: 50 distinct job ids');
is(xlen(), $before + 1, 'single-flight: one stream entry, one LLM run');

my $leader = last_entry()->{id};
my @followers = split /\n/,
    $t->redis('LRANGE', "{ragnx}:job:$leader:followers", 0, -1);
is(scalar(@followers), 49, 'single-flight: 49 followers of the leader');

# a consumer written here completes the leader and its followers
for my $jid ($leader, @followers) {
    $t->redis('HSET', "{ragnx}:job:$jid", 'status', 'completed',
              'answer', 'shared answer', 'sources', '[]');
}
my $done = 0;
for my $jid (keys %ids) {
    my $b = Ragnx::Test::json_body(poll(alice => $jid));
    $done++ if $b->{status} eq 'completed' && $b->{answer} eq 'shared answer';
}
is($done, 50, 'single-flight: all 50 complete with the same answer');

# once the leader is done, the same question starts a new flight
$r = ask(alice => { query => $q });
is(xlen(), $before + 2, 'finished leader: the next miss enqueues again');

# a pending leader older than ragnx_ask_job_ttl (1d) is replaced, not
# followed: a job whose entry was lost does not hold its question forever
my $field = digest($q) . ':default@0';
my $last = $t->redis('HGET', '{ragnx}:inflight', $field);
is($t->redis('HGET', "{ragnx}:job:$last", 'status'), 'waiting',
   'the new flight is pending');
$r = ask(alice => { query => $q });
is(xlen(), $before + 2, 'a pending leader within the job TTL is followed');
$t->redis('HSET', "{ragnx}:job:$last", 'createdAt',
          int(time * 1000) - 86400 * 1000 - 1000);
$r = ask(alice => { query => $q });
is(xlen(), $before + 3, 'a leader older than the job TTL is not followed');
is($t->redis('HGET', '{ragnx}:inflight', $field),
   Ragnx::Test::json_body($r)->{jobId}, 'the new job takes its field');

# backpressure

$t->redis('DEL', '{ragnx}:jobs');
$t->redis('XADD', '{ragnx}:jobs', '*', 'id', 'x') for 1 .. 3;
my $keys_before = $t->redis('DBSIZE');
$r = ask(alice => { query => 'over the limit' }, '/api/ask-small');
is($r->{status}, 503, 'queue full: 503');
is_deeply(Ragnx::Test::json_body($r), { error => 'queue full' },
          'queue full body');
ok($r->{headers}{'retry-after'}, 'queue full: Retry-After');
is(xlen(), 3, 'queue full: nothing added to the stream');
is($t->redis('DBSIZE'), $keys_before, 'queue full: no job hash created');

# a full job queue does not refuse a hit: its record has its own lane

cache_put('answered when full', 'Still answered.', []);
$before = xlen('{ragnx}:records');
$r = ask(alice => { query => 'answered when full' }, '/api/ask-small');
is($r->{status}, 200, 'queue full: a hit is still answered');
is(Ragnx::Test::json_body($r)->{answer}, 'Still answered.',
   'queue full: with the cached answer');
for (1 .. 50) { last if xlen('{ragnx}:records') > $before; sleep 0.01 }
is(xlen('{ragnx}:records'), $before + 1, '... and recorded');
is(xlen(), 3, '... the job queue unchanged');

# pipelining: 200 distinct cached answers, each to its own request

cache_put("question number $_", "answer number $_", ["doc$_"]) for 1 .. 200;
sub evalsha_calls {
    my ($n) = $t->redis('INFO', 'commandstats') =~ /cmdstat_evalsha:calls=(\d+)/;
    return $n || 0;
}
# A worker whose recent questions missed sends the next question straight
# to the script, one round trip; once its questions hit again, a hit is a
# plain GET.  The third round sees workers that have learned.
my $evals;
for my $round (1 .. 3) {
    $evals = evalsha_calls();
    $rs = $t->parallel([ map {
        [ POST => '/api/ask',
          headers => [ Authorization => "Bearer $auth{alice}",
                       'Content-Type' => 'application/json' ],
          body => $json->encode({ query => "question number $_" }) ] }
        1 .. 200 ]);
    my $right = 0;
    for my $i (1 .. 200) {
        my $b = Ragnx::Test::json_body($rs->[$i - 1]) || {};
        $right++ if ($b->{answer} // '') eq "answer number $i"
                    && ($b->{sources}[0] // '') eq "doc$i";
    }
    is($right, 200,
       "pipelining, round $round: 200 concurrent hits, each its own answer");
}
is(evalsha_calls() - $evals, $refresh eq '0' ? 200 : 0,
   $refresh eq '0' ? 'script mode: each hit is one script call'
                   : 'known generation, hits of late: no script call');

# after a run of misses a hit goes through the script: answered and
# recorded all the same
$t->redis('DEL', '{ragnx}:jobs');
my ($via_script, $answered, $recorded) = (0, 0, 0);
for my $i (1 .. 20) {
    ask(alice => { query => "miss $i.$_ before a hit" }) for 1 .. 8;
    cache_put("hit after misses $i", "answer after misses $i", []);
    my $n = evalsha_calls();
    my $x = xlen('{ragnx}:records');
    $r = ask(alice => { query => "hit after misses $i" });
    $answered++ if $r->{status} == 200
        && Ragnx::Test::json_body($r)->{answer} eq "answer after misses $i";
    for (1 .. 50) { last if xlen('{ragnx}:records') > $x; sleep 0.01 }
    $recorded++ if xlen('{ragnx}:records') == $x + 1
        && decode_json(last_entry('{ragnx}:records')->{result})->{answer}
           eq "answer after misses $i";
    if (evalsha_calls() == $n + 1) {
        $via_script = 1;
        last;
    }
}
ok($via_script, 'after misses, a hit is one script call');
ok($answered && $answered == $recorded,
   "hits after misses answered and recorded ($answered, $recorded)");

# faults

my $clients = $t->redis('CLIENT', 'LIST') =~ tr/\n//;
$t->stop_redis;
my $t0 = time;
$r = ask(alice => { query => 'redis is down' });
is($r->{status}, 503, 'Redis down: 503');
is_deeply(Ragnx::Test::json_body($r), { error => 'cache unavailable' },
          'Redis down body');
ok(time - $t0 < 1, 'Redis down: answered within the timeout');
my ($fast, $times) = $t->responsive('/static', 0.05);
ok($fast, "Redis down: other locations answer in < 50 ms ($times)");

$t->start_redis;
my $ok = 0;
for (1 .. 100) {
    $r = ask(alice => { query => 'redis is back' });
    if ($r->{status} == 202) { $ok = 1; last }
    sleep 0.05;
}
ok($ok, 'Redis restarted: requests succeed without a reload');

# every worker back (backoff has jitter), so the next request waits
for (1 .. 200) {
    last if $t->redis('CLIENT', 'LIST') =~ tr/\n// >= $clients;
    sleep 0.05;
}
$t->signal('redis', 'STOP');
$t0 = time;
$r = ask(alice => { query => 'redis is stopped' });
my $took = time - $t0;
is($r->{status}, 503, 'Redis SIGSTOPped: 503');
# a lookup answers at the 300 ms timeout; the script, which may write,
# waits for its reply until the connection is given up (3 x 300 ms)
ok($took >= 0.25 && $took < 1.5,
   "after the 300 ms timeout, or the connection given up ($took s)");
($fast, $times) = $t->responsive('/static', 0.05);
ok($fast, "Redis stopped: nginx answers in < 50 ms ($times)");
$t->signal('redis', 'CONT');
# the script reached Redis after nginx had answered 503: it did nothing,
# since a 503 tells the client that nothing was asked
{
    my $deadline = time + 5;
    sleep 0.02 while time < $deadline && $t->redis('PING') ne 'PONG';
    sleep 0.1;
    unlike($t->redis('XRANGE', '{ragnx}:jobs', '-', '+'),
           qr/redis is stopped/, 'Redis SIGSTOPped: the question answered '
                                 . '503 was not enqueued');
}

# clients that go away while their reply is pending: Redis is stopped
# while 100 clients send a question and leave, so their commands wait for
# replies that come after the requests are gone

$ok = 0;
for (1 .. 100) {
    $r = ask(alice => { query => 'warm up' });
    if ($r->{status} == 202) { $ok = 1; last }
    sleep 0.05;
}
my $log0 = length $t->error_log;
my @nginx_workers = sort { $a <=> $b } Ragnx::Test::children($t->{pids}{nginx});
my $redis_calls = sub {
    my $st = $t->redis('INFO', 'commandstats');
    my $n = 0;
    $n += $1 while $st =~ /cmdstat_(?:get|evalsha):calls=(\d+)/g;
    return $n;
};
my $calls0 = $redis_calls->();
$t->signal('redis', 'STOP');
for my $i (1 .. 100) {
    my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1',
                                  PeerPort => $t->port, Proto => 'tcp');
    my $body = $json->encode({ query => "abandoned $i" });
    print $s Ragnx::Test::build_request(POST => '/api/ask',
        headers => [ Authorization => "Bearer $auth{alice}",
                     'Content-Type' => 'application/json' ],
        body => $body);
    close $s;
}
$t->signal('redis', 'CONT');
# every abandoned question reached Redis and was answered (to nobody)
my $deadline = time + 10;
sleep 0.02 while $redis_calls->() < $calls0 + 100 && time < $deadline;
cmp_ok($redis_calls->() - $calls0, '>=', 100,
       'aborted clients: their commands all reached Redis');
for (1 .. 100) {
    $r = ask(alice => { query => 'after the aborts' });
    last if $r->{status} == 202;
    sleep 0.05;
}
is($r->{status}, 202, 'aborted clients: service goes on');
my $since = substr($t->error_log, $log0);
unlike($since, qr/\[(alert|crit|emerg)\]/,
       '... with no alert in the error log') or diag($since);
is_deeply([ sort { $a <=> $b } Ragnx::Test::children($t->{pids}{nginx}) ],
          \@nginx_workers, '... and the same nginx workers');

# Graceful shutdown (nginx -s quit) waits for Redis's replies: a request
# waiting on a slow Redis is answered, and a hit's record (written with
# the next command on its connection or within a millisecond) is written
# and confirmed.  Hits first, so that both workers take the GET path.
cache_put("warm hit $_", "warm answer $_", []) for 1 .. 40;
ask(alice => { query => "warm hit $_" }) for 1 .. 40;
cache_put('hit at shutdown', 'The last answer.', []);
my $n = evalsha_calls();
$r = ask(alice => { query => 'hit at shutdown' });
is($r->{status}, 200, 'hit at shutdown: answered');
$t->signal('redis', 'STOP');
my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1',
                              PeerPort => $t->port, Proto => 'tcp');
print $s Ragnx::Test::build_request(POST => '/api/ask',
    headers => [ Authorization => "Bearer $auth{alice}",
                 'Content-Type' => 'application/json',
                 Connection => 'close' ],
    body => $json->encode({ query => 'asked while nginx stops' }));
sleep 0.05;
$t->signal('nginx', 'QUIT');
sleep 0.1;
$t->signal('redis', 'CONT');
$t->stop_nginx;
is($t->read_response($s, 3)->{status}, 202,
   'nginx stopping: a request waiting on Redis is answered');
is(evalsha_calls(), $n + ($refresh eq '0' ? 2 : 1),
   $refresh eq '0' ? 'script mode: both through the script'
                   : 'hit at shutdown: a GET, its record sent apart');
my ($rec) = grep { /The last answer/ } split /\n/,
    $t->redis('XREVRANGE', '{ragnx}:records', '+', '-', 'COUNT', 3);
is(decode_json($rec // '{}')->{answer}, 'The last answer.',
   'hit at shutdown: its record was written before the worker exited');
unlike($t->error_log, qr/record of a cache hit was not queued/,
       'nginx stopping: no record left unconfirmed');

$t->done;
