#!/usr/bin/perl
# The records lane, end to end: cache hits (and followers) appended to
# {ragnx}:records by nginx and written by the real pool in batches into
# PostgreSQL.  Every hit is recorded exactly once (a burst larger than a
# batch, a pool killed mid-batch), a user's chats keep the order of the
# questions across 1,000 chats, bad records are dead-lettered without
# holding back the rest, a hit past the bound is refused (503, counted,
# logged, shown by /health) and never answered unrecorded, and an ask
# job is not delayed by a backlog of 100,000 records.

use strict;
use warnings;
use lib 't/lib';
use Test::More;
use Cwd qw(getcwd);
use JSON::PP;
use POSIX ();
use Time::HiRes qw(sleep time);
use Ragnx::Test;
use Ragnx::OpenAPI;
use Ragnx::Pool qw(uuid uuid7);
use Ragnx::MockLLM;

my $root = getcwd();
my $t = Ragnx::Test->new;
# every response to a path of docs/openapi.json is checked against it
Ragnx::OpenAPI->hook;
my $rp = $t->start_redis;
$t->start_postgres;
my $mock = Ragnx::MockLLM->start($t);
my $p = Ragnx::Pool->new($t);
my $secret = 'records-test-secret-0123456789abcdef';
my $key = $t->file('hs.key', $secret);
my $llmkey = $t->file('llm.key', "sk-test\n");
$p->configure(llm_provider => 'anthropic', llm_base_url => $mock->url,
              llm_model => 'claude-mock', llm_api_key_file => $llmkey,
              jwt_key_file => $key, concurrency => 4, workers => 2,
              record_concurrency => 2, record_batch => 64,
              log_level => 'info');
my ($rc, $out) = $p->cli('migrate');
is($rc, 0, 'migrate') or diag($out);
mkdir "$t->{dir}/corpus";
$t->file('corpus/gym.md', "# Gym\n\nThe gym opens at six. Lockers have "
         . "four digit codes. Towels are free.\n");
($rc, $out) = $p->cli('ingest', "$t->{dir}/corpus");
is($rc, 0, 'ingest') or diag($out);
$p->start;

my $ask_location = sub {
    my ($path, $extra) = @_;
    return <<"EOF";
        location = $path {
            ragnx_jwt on;
            ragnx_validate_schema $root/schemas/ask.json;
            $extra
            ragnx_ask;
        }
EOF
};

$t->start_nginx(
    workers => 2,
    http    => "ragnx_redis 127.0.0.1:$rp;\n"
               . "    ragnx_ask_gen_refresh 100ms;",
    server  => "ragnx_jwt_key_file $key;\n"
               . $ask_location->('/api/ask', '')
               . $ask_location->('/api/small', 'ragnx_ask_record_max 5;')
               . <<"EOF");
        location /api/ask/ {
            ragnx_jwt on;
            ragnx_ask_status;
        }
        location = /api/chats {
            ragnx_jwt on;
            ragnx_rpc chats;
        }
        location ~ ^/api/chats/([^/]+)/messages\$ {
            ragnx_jwt on;
            ragnx_rpc messages \$1;
        }
        location = /health { ragnx_health; }
EOF

my $json = JSON::PP->new->canonical;
my %tok;
sub token {
    my ($who) = @_;
    return $tok{$who} ||= Ragnx::Test::jwt_hs256($secret,
        { sub => $who, exp => time + 3600 });
}

sub ask {
    my ($who, $query, $path) = @_;
    my $r = $t->request(POST => $path || '/api/ask',
        headers => [ Authorization => 'Bearer ' . token($who),
                     'Content-Type' => 'application/json' ],
        body => $json->encode({ query => $query }));
    $r->{j} = Ragnx::Test::json_body($r) || {};
    return $r;
}

sub done {
    my ($who, $id) = @_;
    my $j = {};
    for (1 .. 500) {
        my $r = $t->request(GET => "/api/ask/$id",
            headers => [ Authorization => 'Bearer ' . token($who) ]);
        $j = Ragnx::Test::json_body($r) || {};
        last if ($j->{status} || '') =~ /^(completed|failed)$/;
        sleep 0.02;
    }
    return $j;
}

# a question answered once, so that the next ones are cache hits
sub warm {
    my ($query) = @_;
    my $r = ask('warmer', $query);
    return $r->{status} == 200
           || ($r->{status} == 202
               && done('warmer', $r->{j}{jobId})->{status} eq 'completed');
}

my $recorded = sub {
    my ($owner) = @_;
    $t->psql("SELECT count(*) FROM chat_messages m JOIN chats c "
             . "ON c.id = m.chat_id WHERE c.owner LIKE '$owner'");
};

# until every record is written and nothing is pending in the lane
sub drained {
    my ($timeout) = @_;
    my $deadline = time + ($timeout || 30);
    while (time < $deadline) {
        my $len = $t->redis('XLEN', '{ragnx}:records');
        return 1 if $len == 0;
        sleep 0.05;
    }
    diag('records left: ' . $t->redis('XLEN', '{ragnx}:records'));
    return 0;
}

my @q = map { "When does the gym open, question $_?" } 1 .. 10;
ok(warm($_), "warmed: $_") for @q;

# a burst of hits larger than a batch (64): each recorded exactly once

my @burst = map { [ POST => '/api/ask',
                    headers => [ Authorization => 'Bearer '
                                     . token('burst' . ($_ % 7)),
                                 'Content-Type' => 'application/json' ],
                    body => $json->encode({ query => $q[$_ % 10] }) ] }
            1 .. 300;
my $res = $t->parallel(\@burst);
is(scalar(grep { $_->{status} == 200 } @$res), 300,
   'a burst of 300 hits in parallel: all answered from the cache');
ok(drained(), '... and the records stream drained');
is($recorded->('burst%'), 600, '... 300 exchanges written, two messages each');
is($t->psql("SELECT count(DISTINCT m.job_id) FROM chat_messages m JOIN chats c "
            . "ON c.id = m.chat_id WHERE c.owner LIKE 'burst%'"), 300,
   '... one job id each');
is($t->psql("SELECT count(*) FROM chats WHERE owner LIKE 'burst%'"), 300,
   '... in a new chat each');
my %chat_ids = map { $_->{j}{chatId} => 1 }
               map { { j => Ragnx::Test::json_body($_) || {} } } @$res;
is($t->psql("SELECT count(*) FROM chats WHERE id IN ('"
            . join("','", keys %chat_ids) . "')"), 300,
   '... the chats the clients were told');
is($t->redis('XLEN', '{ragnx}:dead'), 0, '... nothing dead-lettered');

# 1,000 chats of 100 users: each user's chats in the order asked

for my $k (0 .. 9) {
    my @reqs = map { [ POST => '/api/ask',
                       headers => [ Authorization => 'Bearer '
                                        . token("order$_"),
                                    'Content-Type' => 'application/json' ],
                       body => $json->encode({ query => $q[$k] }) ] }
               1 .. 100;
    my $r = $t->parallel(\@reqs);
    is(scalar(grep { $_->{status} == 200 } @$r), 100,
       "round $k: 100 users, 100 hits");
}
ok(drained(), '1,000 records drained');
is($recorded->('order%'), 2000, '... all written');
my $bad = $t->psql(<<'SQL');
SELECT count(*) FROM (
  SELECT owner, array_agg(title ORDER BY created_at, id) AS t
  FROM chats WHERE owner LIKE 'order%' GROUP BY owner) x
WHERE t <> (SELECT array_agg(q ORDER BY n) FROM unnest(ARRAY[
  'When does the gym open, question 1?',
  'When does the gym open, question 2?',
  'When does the gym open, question 3?',
  'When does the gym open, question 4?',
  'When does the gym open, question 5?',
  'When does the gym open, question 6?',
  'When does the gym open, question 7?',
  'When does the gym open, question 8?',
  'When does the gym open, question 9?',
  'When does the gym open, question 10?']) WITH ORDINALITY AS u (q, n))
SQL
is($bad, 0, '... each of the 100 users has 10 chats in the order asked');
is($t->psql(<<'SQL'), 0, '... each chat: the question, then the answer');
SELECT count(*) FROM chats c WHERE owner LIKE 'order%' AND (
  SELECT array_agg(role ORDER BY seq) FROM chat_messages WHERE chat_id = c.id)
  <> ARRAY['user', 'assistant']
SQL
my $list = $t->request(GET => '/api/chats',
    headers => [ Authorization => 'Bearer ' . token('order42') ]);
my $chats = (Ragnx::Test::json_body($list) || {})->{chats} || [];
is_deeply([ map { $_->{title} } @$chats ], [ reverse @q ],
          'GET /api/chats: newest first, as asked');

# bad records in a batch: dead-lettered, the others written

my $good = sub {
    my ($owner) = @_;
    my ($id, $chat) = (uuid7(), uuid());
    my $payload = $json->encode({ v => 2, id => $id, owner => $owner,
        chatId => $chat, query => 'Are towels free?', digest => 'a' x 64,
        createdAt => int(time * 1000) });
    return ($id, $payload, '{"answer":"Yes.","sources":["gym.md"]}');
};
$p->stop;
my @ids;
for my $i (1 .. 5) {
    my ($id, $payload, $result) = $good->('mixed');
    push @ids, $id;
    $t->redis('XADD', '{ragnx}:records', '*', 'id', $id, 'job', $payload,
              'result', $result);
}
my ($id1, $p1) = $good->('mixed');
$t->redis('XADD', '{ragnx}:records', '*', 'id', $id1, 'job', '{not json',
          'result', '{"answer":"x","sources":[]}');
my ($id2, $p2) = $good->('mixed');
$t->redis('XADD', '{ragnx}:records', '*', 'id', $id2, 'job', $p2,
          'result', '{"answer":"x", oops}');
my ($id3, $p3) = $good->('mixed');
$t->redis('XADD', '{ragnx}:records', '*', 'id', uuid(), 'job', $p3,
          'result', '{"answer":"x","sources":[]}');
$t->redis('XADD', '{ragnx}:records', '*', 'id', uuid(), 'job', $p3);
# a record into a chat of another owner
my $victim = $t->psql("SELECT id FROM chats WHERE owner = 'order1' LIMIT 1");
my ($id4, $p4, $r4) = $good->('intruder');
$p4 =~ s/"chatId":"[^"]+"/"chatId":"$victim"/;
$t->redis('XADD', '{ragnx}:records', '*', 'id', $id4, 'job', $p4,
          'result', $r4);
# and into another's chat made by a job, whose row holds no exchange
my $victim2 = $t->psql("SELECT id FROM chats WHERE owner = 'warmer' "
                       . "LIMIT 1");
my ($id5, $p5, $r5) = $good->('intruder');
$p5 =~ s/"chatId":"[^"]+"/"chatId":"$victim2"/;
$t->redis('XADD', '{ragnx}:records', '*', 'id', $id5, 'job', $p5,
          'result', $r5);
$p->start;
ok(drained(), 'a batch with six bad records drained');
is($recorded->('mixed'), 10, '... its five good records written');
my $dead = $t->redis('XRANGE', '{ragnx}:dead', '-', '+');
like($dead, qr/invalid job/, '... a payload that is no job: dead-lettered');
like($dead, qr/invalid record/,
     '... a result PostgreSQL refuses: dead-lettered');
like($dead, qr/id field differs/, '... an id that is not the payload\'s');
like($dead, qr/without a job or result/, '... an entry without a result');
like($dead, qr/\Q$id4\E.*?\nerror\nchat not found/s,
     '... a record into another\'s chat');
is($t->psql("SELECT count(*) FROM chat_messages WHERE chat_id = '$victim'"), 2,
   '... which is unchanged');
like($dead, qr/\Q$id5\E.*?\nerror\nchat not found/s,
     '... a record into another\'s chat made by a job');
is($t->psql("SELECT count(*) FROM chat_messages WHERE chat_id = '$victim2'"),
   2, '... which is unchanged too');
is($t->psql("SELECT job_id IS NULL FROM chats WHERE id = '$victim2'"), 't',
   '... its row holding no exchange');
is($t->redis('XLEN', '{ragnx}:dead'), 6, '... six dead letters');
$t->redis('DEL', '{ragnx}:dead');

# a record is one chat row, its answer stored once for every chat

is($t->psql("SELECT count(*) FROM messages m JOIN chats c ON c.id = "
            . "m.chat_id WHERE c.owner LIKE 'order%'"), 0,
   'records write no message rows: the chat row holds the exchange');
is($t->psql("SELECT count(*) FROM answers"), 11,
   '... and each of the 11 distinct answers is stored once');
my $mine = $t->psql("SELECT id FROM chats WHERE owner = 'order7' "
                    . "ORDER BY created_at LIMIT 1");
my $messages = sub {
    my ($who, $chat, $query) = @_;
    my $r = $t->request(GET => "/api/chats/$chat/messages$query",
        headers => [ Authorization => 'Bearer ' . token($who) ]);
    return ($r->{status}, Ragnx::Test::json_body($r) || {});
};
my ($st, $m) = $messages->('order7', $mine, '');
is($st, 200, 'GET messages of a recorded chat: 200');
is_deeply([ map { "$_->{role}:$_->{content}" } @{ $m->{messages} } ],
          [ "user:$q[0]", 'assistant:' . $t->psql(
              "SELECT content FROM messages WHERE role = 'assistant' "
              . "AND job_id = (SELECT job_id FROM messages WHERE "
              . "content = '$q[0]' AND role = 'user' LIMIT 1)") ],
          '... the question, then the cached answer');
is($m->{messages}[1]{source}, 'cache', '... marked as from the cache');
ok(!exists $m->{messages}[0]{source}, '... and the question not');
my ($st2, $m2) = $messages->('order7', $mine, '');
is_deeply([ map { $_->{id} } @{ $m2->{messages} } ],
          [ map { $_->{id} } @{ $m->{messages} } ],
          '... with the same ids at every read');
isnt($m->{messages}[0]{id}, $m->{messages}[1]{id}, '... distinct ids');
my ($st3, $p1st) = $messages->('order7', $mine, '?limit=1');
is($p1st->{messages}[0]{role}, 'assistant', 'a page of one: the answer');
is($p1st->{next}, '0', '... and a cursor');
my ($st4, $p2nd) = $messages->('order7', $mine, "?limit=1&before=0");
is($p2nd->{messages}[0]{role}, 'user', '... then the question');
is($p2nd->{next}, undef, '... and no more');
is(($messages->('order8', $mine, ''))[0], 404,
   'another user: 404 for the recorded chat');

# the asker's next question can be written before the record of the hit
# that made the chat: the record still lands, and is shown first

# (both records in one batch: of two, the first is the chat's exchange)
$p->stop;
my ($rid, $rp1, $rr) = $good->('race');
my ($race) = $rp1 =~ /"chatId":"([^"]+)"/;
my $next = uuid7();
$t->psql("INSERT INTO chats (id, owner, title) VALUES ('$race', 'race', "
         . "'next'); INSERT INTO messages (chat_id, job_id, role, content) "
         . "VALUES ('$race', '$next', 'user', 'And soap?'), ('$race', "
         . "'$next', 'assistant', 'Soap too.')");
$t->redis('XADD', '{ragnx}:records', '*', 'id', $rid, 'job', $rp1,
          'result', $rr);
# and a second record naming the same chat: never silently merged
my ($did, $dp, $dr) = $good->('race');
$dp =~ s/"chatId":"[^"]+"/"chatId":"$race"/;
$t->redis('XADD', '{ragnx}:records', '*', 'id', $did, 'job', $dp,
          'result', $dr);
$p->start;
ok(drained(), 'a record into a chat its next question made first');
my (undef, $rm) = $messages->('race', $race, '');
is_deeply([ map { $_->{content} } @{ $rm->{messages} } ],
          [ 'Are towels free?', 'Yes.', 'And soap?', 'Soap too.' ],
          '... the hit\'s exchange first, then the next question\'s');
like($t->redis('XRANGE', '{ragnx}:dead', '-', '+'),
     qr/\Q$did\E.*?\nerror\nchat already recorded/s,
     'a second record for one chat: dead-lettered');
is($t->redis('XLEN', '{ragnx}:dead'), 1, '... only it');
$t->redis('DEL', '{ragnx}:dead');

# kill -9 of the pool while a batch is being written

$p->stop;
my @resp;
my $n = 2000;
my %asked;
for (1 .. $n) {
    my ($id, $payload, $result) = $good->('killed');
    my $e = $t->redis('XADD', '{ragnx}:records', '*', 'id', $id, 'job',
                      $payload, 'result', $result);
    my ($chat) = $payload =~ /"chatId":"([^"]+)"/;
    my ($ms, $seq) = $e =~ /^(\d+)-(\d+)$/;
    $asked{$chat} = $ms * 1000 + ($seq > 999 ? 999 : $seq);
}
# a lock that holds the batch statement mid-way
my $locker = fork() // die "fork: $!";
if ($locker == 0) {
    exec(($ENV{RAGNX_PGBIN} || '/usr/lib/postgresql/15/bin') . '/psql', '-h', '127.0.0.1', '-p', $t->pg_port,
         '-U', 'ragnx', '-d', 'ragnx', '-XAtq', '-c',
         'BEGIN; LOCK TABLE chats IN SHARE MODE; SELECT pg_sleep(60)')
        or POSIX::_exit(127);
}
for (1 .. 200) {
    last if $t->psql("SELECT count(*) FROM pg_locks WHERE mode = "
                     . "'ShareLock' AND granted") > 0;
    sleep 0.02;
}
$p->start;
my $pending = 0;
for (1 .. 300) {
    $pending = $t->redis('EVAL', "return redis.call('XPENDING', KEYS[1], "
                         . "'pool')[1]", 1, '{ragnx}:records');
    last if $pending > 0
            && $t->psql("SELECT count(*) FROM pg_stat_activity WHERE "
                        . "wait_event_type = 'Lock'") > 0;
    sleep 0.02;
}
ok($pending > 0, "a batch read ($pending pending) and its statement "
                 . 'waiting on a lock');
kill 'KILL', $p->children, $p->pid;
waitpid($p->pid, 0);
delete $t->{pids}{worker};
# the locker's backend sleeps on after its client is gone: end it
$t->psql("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
         . "WHERE query LIKE '%pg_sleep(60)%' AND pid <> pg_backend_pid()");
kill 'TERM', $locker;
waitpid($locker, 0);
$p->start;
ok(drained(60), 'after kill -9 and a restart, the records drained');
is($recorded->('killed'), 2 * $n,
   "... every one of the $n records written once");
is($t->psql("SELECT count(*) FROM chats WHERE owner = 'killed'"), $n,
   '... one chat each');
is($t->psql("SELECT count(*) FROM chats c JOIN (VALUES "
            . join(',', map { "('$_'::uuid, $asked{$_})" } keys %asked)
            . ") a (id, us) ON a.id = c.id WHERE c.created_at = "
            . "timestamptz 'epoch' + a.us * interval '1 microsecond'"), $n,
   '... each at the time it was asked, handed over or not');
is($t->redis('XLEN', '{ragnx}:dead'), 0, '... nothing dead-lettered');

# past the bound: the hit is refused, counted, logged, shown; not lost

$p->stop;
my @st = map { ask("small$_", $q[0], '/api/small')->{status} } 1 .. 3;
is_deeply(\@st, [ (200) x 3 ],
          'ragnx_ask_record_max 5, three hits: answered') or diag("@st");
for (1 .. 100) { last if $t->redis('XLEN', '{ragnx}:records') == 3; sleep 0.01 }
# two more fill the stream to its bound (a hit's record goes out just
# after its answer: sent by the tests, the bound is exact)
for (1 .. 2) {
    my ($fid, $fp, $fr) = $good->('small-filler');
    $t->redis('XADD', '{ragnx}:records', '*', 'id', $fid, 'job', $fp,
              'result', $fr);
}
@st = map { ask("small$_", $q[0], '/api/small')->{status} } 4 .. 7;
is_deeply(\@st, [ (503) x 4 ], '... at the bound, every hit: 503')
    or diag("@st");
my $r = ask('small9', $q[0], '/api/small');
is($r->{status}, 503, 'a refused hit: 503');
is($r->{j}{error}, 'queue full', '... "queue full"');
like($r->{headers}{'retry-after'} // '', qr/^\d+$/, '... with Retry-After');
is($t->redis('XLEN', '{ragnx}:records'), 5, '... nothing beyond the bound');
is($t->redis('HGET', '{ragnx}:stats', 'records-refused'), 5,
   '... each refusal counted in Redis');
like($t->error_log,
     qr/cache hits refused \(503\): chat history records at ragnx_ask_record_max 5/,
     '... and logged');
# the script's own check, as the "ask" and "all" modes run it
my ($sid, $sout) = $p->ask(query => $q[0], owner => 'script',
                           records_max => 5);
is($sout, 'hit-full', 'the ask script refuses a hit at the bound too');
is($t->redis('XLEN', '{ragnx}:records'), 5, '... and appends nothing');
my $h = Ragnx::Test::json_body($t->request(GET => '/health')) || {};
is_deeply($h->{records}, { backlog => 5, refused => 5 },
          '/health: the backlog and the refusals');
$p->start;
ok(drained(), 'the pool back: the backlog drained');
is($recorded->('small%'), 10, '... the answered hits (and the two added) '
   . 'recorded');

# an ask job is not delayed by a backlog of 100,000 records

sub ask_time {
    my ($query) = @_;
    my $t0 = time;
    my $r = ask('asker', $query);
    return (-1, 0) unless $r->{status} == 202;
    my $j = done('asker', $r->{j}{jobId});
    return ((time - $t0), $j->{status} eq 'completed');
}
my ($base, $ok) = ask_time('Are the lockers free of charge?');
ok($ok, sprintf('an ask without a backlog: %.0f ms', $base * 1000));

$p->stop;
my $backlog = 100_000;
my ($bid, $bp, $br) = $good->('backlog');
open my $pipe, '|-', 'redis-cli', '-p', $rp, '--pipe', '-e'
    or die "redis-cli: $!";
binmode $pipe;
for my $i (1 .. $backlog) {
    my $id = uuid();
    (my $pl = $bp) =~ s/\Q$bid\E/$id/;
    $pl =~ s/"chatId":"[^"]+"/'"chatId":"' . uuid() . '"'/e;
    my @a = ('XADD', '{ragnx}:records', '*', 'id', $id, 'job', $pl,
             'result', $br);
    print $pipe '*' . @a . "\r\n", map { '$' . length($_) . "\r\n$_\r\n" } @a;
}
close $pipe;
is($t->redis('XLEN', '{ragnx}:records'), $backlog, "a backlog of $backlog");
my $t0 = time;
$p->start;
my ($busy, $ok2) = ask_time('How long are the lockers kept?');
my $left = $t->redis('XLEN', '{ragnx}:records');
ok($ok2, sprintf('an ask during the backlog: %.0f ms (%d records still '
                 . 'to write)', $busy * 1000, $left));
ok($left > 0, '... answered while the backlog was being written');
ok($busy < $base + 1.0, '... not waiting behind it');
ok(drained(180), 'the backlog drained');
my $secs = time - $t0;
is($recorded->('backlog'), 2 * $backlog, "... all $backlog written");
diag(sprintf('%d records in %.1f s: %.0f records/s', $backlog, $secs,
             $backlog / $secs));

$p->finish;
