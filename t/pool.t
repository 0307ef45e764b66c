#!/usr/bin/perl
# The worker pool against real redis-server and PostgreSQL, driven through
# Redis exactly as the nginx module drives it: migrations, ingest,
# retrieval, the offline extractive provider, persistence exactly once,
# the cache entry, single-flight followers, records, chat ownership,
# poisoned entries, the dead-letter stream and the jobs CLI.

use strict;
use warnings;
use lib 't/lib';
use Test::More;
use JSON::PP;
use POSIX ();
use Time::HiRes qw(sleep time);
use Ragnx::Test;
use Ragnx::Pool qw(uuid);

my $t = Ragnx::Test->new;
$t->start_redis;
$t->start_postgres;
my $p = Ragnx::Pool->new($t);
$p->configure(llm_model => 'extractive');

# configuration checks

{
    my $bad = $t->file('bad.conf', "concurrency = 0\n");
    my $out = `$ENV{RAGNX_BUILD}/workers/ragnx-worker -t -c $bad 2>&1`;
    isnt($? >> 8, 0, '-t fails on a bad value');
    like($out, qr/concurrency: 0 is out of range/, 'naming the setting');

    $bad = $t->file('bad2.conf', "no_such_thing = 1\n");
    $out = `$ENV{RAGNX_BUILD}/workers/ragnx-worker -t -c $bad 2>&1`;
    like($out, qr/unknown setting "no_such_thing"/, 'unknown setting');

    $bad = $t->file('bad4.conf', "llm_model = caf\xe9\n");
    $out = `$ENV{RAGNX_BUILD}/workers/ragnx-worker -t -c $bad 2>&1`;
    isnt($? >> 8, 0, '-t fails on a setting that is not UTF-8');
    like($out, qr/llm_model: not UTF-8/, 'naming it');

    $out = `RAGNX_TOP_K=abc $ENV{RAGNX_BUILD}/workers/ragnx-worker -t 2>&1`;
    like($out, qr/top_k: "abc" is not a number in environment RAGNX_TOP_K/,
         'environment overrides are checked too');

    $bad = $t->file('bad3.conf', "llm_provider = anthropic\n"
                    . "llm_base_url = http://127.0.0.1:1\nllm_model = m\n");
    $out = `env -u RAGNX_LLM_API_KEY $ENV{RAGNX_BUILD}/workers/ragnx-worker -t -c $bad 2>&1`;
    like($out, qr/llm_api_key_file: required/, 'anthropic needs a key');

    # heartbeats every third of it, at 200 ms turns: 500 ms lets live jobs
    # be stolen
    $bad = $t->file('bad5.conf', "visibility_timeout = 500\n");
    $out = `$ENV{RAGNX_BUILD}/workers/ragnx-worker -t -c $bad 2>&1`;
    isnt($? >> 8, 0, '-t fails on a visibility_timeout the heartbeats '
         . 'cannot keep');
    like($out, qr/visibility_timeout: 500 is out of range 1000\.\./,
         'naming the setting and its minimum');

    my $ok = $t->file('ok5.conf', "visibility_timeout = 1000\n"
                      . "drain_timeout = 1000\nllm_timeout = 60000\n");
    $out = `$ENV{RAGNX_BUILD}/workers/ragnx-worker -t -c $ok 2>&1`;
    is($? >> 8, 0, '-t accepts the minimum visibility_timeout and a drain '
       . 'shorter than llm_timeout') or diag($out);

    my ($rc, $o) = $p->cli('-t');
    is($rc, 0, '-t accepts the test config') or diag($o);
}

# migrations: two at once are safe, a third changes nothing

{
    my @pids;
    for (1 .. 2) {
        my $pid = fork() // die;
        if ($pid == 0) {
            my ($rc) = $p->cli('migrate');
            POSIX::_exit($rc);
        }
        push @pids, $pid;
    }
    my $ok = 0;
    for (@pids) { waitpid($_, 0); $ok++ if $? == 0 }
    is($ok, 2, 'two concurrent migrate runs both succeed');
    my @sql = glob('sql/*.sql');
    is($t->psql('SELECT count(*) FROM schema_migrations'), scalar @sql,
       'each migration recorded once');
    my ($rc, $out) = $p->cli('migrate');
    is($rc, 0, 'migrate again');
    like($out, qr/up to date/, 'nothing left to apply');
}

# PostgreSQL client backends connected to the database, this one aside
sub backends {
    return $t->psql("SELECT count(*) FROM pg_stat_activity WHERE datname = "
                    . "'ragnx' AND backend_type = 'client backend' AND pid "
                    . "<> pg_backend_pid()");
}

# ingest

# chunk_terms against what the chunks' tsvectors say now: rows missing,
# stale or with another weight (0 when the triggers kept it exact)
sub terms_off {
    return $t->psql(
        "WITH want AS (SELECT u.lexeme, c.id AS chunk_id, coalesce((SELECT "
        . "sum(CASE w WHEN 'A' THEN 10 WHEN 'B' THEN 4 WHEN 'C' THEN 2 "
        . "ELSE 1 END) FROM unnest(u.weights) w), 0) AS tenths FROM chunks "
        . "c, unnest(c.tsv) u), have AS (SELECT lexeme, chunk_id, tenths "
        . "FROM chunk_terms) SELECT count(*) FROM ((TABLE want EXCEPT "
        . "TABLE have) UNION ALL (TABLE have EXCEPT TABLE want)) d");
}

my $corpus = "$t->{dir}/corpus";
mkdir $corpus;
mkdir "$corpus/guide";
$t->file('corpus/README.md', <<'EOF');
# Ragnx overview

Ragnx answers questions about your documents through nginx.

## Cache

Answers are cached in Redis for one hour. The cache TTL is set with the
cache_ttl setting of the worker pool.

## Workers

The worker pool runs a supervisor and prefork worker processes.
EOF
$t->file('corpus/guide/postgres.md', <<'EOF');
# PostgreSQL setup

The pool keeps chats and messages in PostgreSQL. Connections are pooled
and bounded by the db_pool setting, independent of concurrency.
EOF
$t->file('corpus/notes.txt', "Penguins live in the southern hemisphere.\n");
$t->file('corpus/image.png', "\x89PNG not a document");
$t->file('corpus/guide/long.md', "# Long\n\n"
         . join(' ', map { "word$_" } 1 .. 1500) . "\n\n"
         . join("\n\n", map { "Paragraph $_ " . ('filler ' x 40) } 1 .. 30)
         . "\n");

{
    my ($rc, $out) = $p->cli('ingest', $corpus);
    is($rc, 0, 'ingest') or diag($out);
    like($out, qr/4 changed, 0 unchanged/, 'four documents, png skipped');
    is($t->psql('SELECT string_agg(path, \',\' ORDER BY path) FROM documents'),
       'README.md,guide/long.md,guide/postgres.md,notes.txt',
       'paths relative to the root');
    is($t->psql("SELECT max(length(body)) <= 1500 FROM chunks"), 't',
       'chunks bounded by chunk_size');
    cmp_ok($t->psql("SELECT count(*) FROM chunks c JOIN documents d ON "
                    . "d.id = c.document_id WHERE d.path = 'guide/long.md'"),
           '>=', 10, 'a long document is cut into many chunks');
    like($t->psql("SELECT string_agg(body, ' ' ORDER BY seq) FROM chunks c "
                  . "JOIN documents d ON d.id = c.document_id "
                  . "WHERE d.path = 'guide/long.md'"),
         qr/word1 word2 .*word1500 .*Paragraph 30 /s,
         'nothing lost when cutting');
    cmp_ok($t->psql('SELECT count(*) FROM chunks'), '>=', 4,
           'chunked at headings');
    is($t->psql("SELECT title FROM documents WHERE path = 'README.md'"),
       'Ragnx overview', 'title from the first heading');
    is($t->psql("SELECT heading FROM chunks c JOIN documents d ON "
                . "d.id = c.document_id WHERE body LIKE '%TTL%'"),
       'Cache', 'a chunk keeps its heading');

    ($rc, $out) = $p->cli('ingest', $corpus);
    like($out, qr/0 changed, 4 unchanged.*corpus version 1/,
         'ingesting again changes nothing');

    # the weights retrieval ranks plain questions by are ts_rank_cd's:
    # every chunk, every question, the sum of the question's lexemes'
    # tenths against ts_rank_cd of the OR of its terms
    is(terms_off(), 0, 'chunk_terms filled on ingest');
    my $cmp = "FROM (VALUES ('How long are answers cached?'), ('worker "
        . "pool supervisor processes'), ('word1 word2 filler paragraph'), "
        . "('PostgreSQL setup: connections pooled'), ('Ragnx overview')) "
        . "v (q), LATERAL (SELECT NULLIF(replace(a::text, ' & ', ' | '), "
        . "'')::tsquery AS any, tsvector_to_array(to_tsvector('english', "
        . "v.q)) AS lex FROM websearch_to_tsquery('english', v.q) a) x, "
        . "LATERAL (SELECT round(ts_rank_cd(c.tsv, x.any) * 10) AS cd, "
        . "coalesce((SELECT sum(t.tenths) FROM chunk_terms t WHERE "
        . "t.chunk_id = c.id AND t.lexeme = ANY (x.lex)), 0) AS sum "
        . "FROM chunks c) r";
    cmp_ok($t->psql("SELECT count(*) $cmp WHERE r.cd > 0"), '>=', 10,
           'the questions rank chunks');
    is($t->psql("SELECT count(*) $cmp WHERE r.cd <> r.sum"), 0,
       'stored weights sum to ts_rank_cd');

    # the pool ranks a question of ASCII letters, digits and blanks, with
    # ? , ; . ! only before a blank, by its plain statement alone: such a
    # question never makes a phrase or a negation (400 random ones), and
    # each shape it leaves out can
    {
        srand(7);
        my @alpha = ('a' .. 'z', 'A' .. 'Z', '0' .. '9', (' ') x 14,
                     "\t", "\n", "\r");
        my @words = qw(or OR Or and not the cache a);
        my @qs;
        for (1 .. 400) {
            my $q = '';
            for (0 .. rand 40) {
                my $r = rand;
                $q .= $r < 0.15 ? ' ' . $words[rand @words] . ' '
                    : $r < 0.25 ? ('?', ',', ';', '.', '!')[rand 5]
                                  . (" ", "\n", "\t")[rand 3]
                    : $alpha[rand @alpha];
            }
            push @qs, $q;
        }
        my $v = join ', ', map {
            (my $q = $_) =~ s/([\t\n\r])/"' || chr(" . ord($1) . ") || '"/ge;
            "('$q')"
        } @qs;
        my $odd = "strpos(a::text, '!') + strpos(a::text, '<') > 0";
        is($t->psql("SET client_min_messages = warning; "
                    . "SELECT count(*) FILTER (WHERE $odd) FROM (VALUES $v) "
                    . "v (q), websearch_to_tsquery('english', v.q) a"),
           0, '400 plain questions: no phrase, no negation');
        is($t->psql("SELECT count(*) FILTER (WHERE $odd) FROM (VALUES "
                    . "('foo-bar'), ('\"foo bar\"'), ('foo -bar'), "
                    . "('o''neil'), ('cache?worker'), ('cache,pool')) "
                    . "v (q), websearch_to_tsquery('english', v.q) a"),
           6, 'the shapes left out make phrases or negations');
    }

    # a database migrated before chunk_terms existed is filled in
    $t->psql('SET client_min_messages = warning; DROP TABLE chunk_terms; '
             . 'DROP FUNCTION chunk_terms_fill() CASCADE; '
             . 'DELETE FROM schema_migrations WHERE version = 3');
    ($rc, $out) = $p->cli('migrate');
    is($rc, 0, 'migrate onto existing chunks') or diag($out);
    is(terms_off(), 0, 'chunk_terms filled from the chunks there');
}

$p->start;

is($t->redis('GET', '{ragnx}:gen'), 'extractive@1',
   'the pool sets the cache generation: model @ corpus version');
is($t->redis('XINFO', 'GROUPS', '{ragnx}:jobs') =~ /pool/ ? 1 : 0, 1,
   'consumer group created');

# the pool's connections plan no sequential scan: a plan made while a
# table is small (here: analyzed empty) would scan it whole as it grows
# (PostgreSQL's own foreign key check on chats included), until
# autovacuum's next analyze

{
    $t->psql('ANALYZE messages; ANALYZE chats');
    my $seq = "SELECT sum(seq_scan) FROM pg_stat_user_tables WHERE "
            . "relname IN ('messages', 'chats')";
    my $s0 = $t->psql($seq);
    my @ids = map { scalar $p->ask(owner => 'planner', query => "indexed "
                                   . "question $_ about workers?") } 1 .. 8;
    is(scalar(grep { ($p->wait_job($_)->{status} || '') eq 'completed' }
              @ids), 8, 'eight asks on empty tables completed');
    # backends report their counts when they exit, if not before
    is($p->stop('TERM'), 0, 'stopped to close its connections');
    for (1 .. 200) {
        last if backends() == 0;
        sleep 0.05;
    }
    is($t->psql($seq) - $s0, 0, 'messages and chats read through indexes');
    $p->start;
    $t->redis('DEL', $_) for split /\n/, $t->redis('KEYS', '{ragnx}:cache:*');
}

# one question, end to end

my ($id, $outcome, $gen, $chat) = $p->ask(query => 'How long is the cache TTL?');
is($outcome, 'queued', 'enqueued by the module script');
is($gen, 'extractive@1', 'with the current generation');
my $j = $p->wait_job($id);
is($j->{status}, 'completed', 'job completed');
like($j->{answer}, qr/cached in Redis for one hour/,
     'answer extracted from the relevant chunk');
my $sources = decode_json($j->{sources});
is($sources->[0], 'README.md', 'sources name the document');
is($j->{attempts}, 1, 'one attempt');
cmp_ok($t->redis('TTL', "{ragnx}:job:$id"), '>', 3000, 'retention TTL set');
is($t->psql("SELECT string_agg(role, ',' ORDER BY seq) FROM messages "
            . "WHERE job_id = '$id'"), 'user,assistant',
   'user and assistant messages stored once');
is($t->psql("SELECT owner || '|' || title FROM chats WHERE id = '$chat'"),
   'alice|How long is the cache TTL?', 'chat created for the owner');
is($t->psql("SELECT sources::text FROM messages WHERE job_id = '$id' "
            . "AND role = 'assistant'"), '["README.md"]',
   'sources stored with the message');

my $ckey = "{ragnx}:cache:" . (split /:/, $t->redis('KEYS', '{ragnx}:cache:*'))[2]
           . ":extractive\@1";
my $cached = decode_json($t->redis('GET', $ckey) || '{}');
is($cached->{answer}, $j->{answer}, 'answer cached');
is_deeply($cached->{sources}, $sources, 'with its sources');
cmp_ok($t->redis('TTL', $ckey), '>', 3000, 'cache entry has the TTL');
is($t->redis('XLEN', '{ragnx}:jobs'), 0, 'stream entry deleted');
is((split /\n/, $t->redis('XPENDING', '{ragnx}:jobs', 'pool'))[0], 0,
   'nothing pending');
is(scalar(grep { $_ eq $id } split /\n/, $t->redis('HVALS', '{ragnx}:inflight')),
   0, 'in-flight field removed');

# a psql value once it is $want (bounded), else what it is then
sub pg_wait {
    my ($sql, $want) = @_;
    for (1 .. 250) {
        my $v = $t->psql($sql);
        return $v if $v eq $want;
        sleep 0.02;
    }
    return $t->psql($sql);
}

# the same question again: a cache hit, recorded through the records lane

my ($id2, $out2) = $p->ask(query => '  how LONG is the cache   ttl? ',
                           chat => $chat);
is($out2, 'hit', 'second identical ask is a cache hit');
is(pg_wait("SELECT count(*) FROM chat_messages WHERE chat_id = '$chat'", 4),
   4, 'chat history has both exchanges');
is($t->psql("SELECT content FROM chat_messages WHERE job_id = '$id2' "
            . "AND role = 'assistant'"), $cached->{answer},
   'with the cached answer');
is($t->redis('EXISTS', "{ragnx}:job:$id2"), 0, 'a record has no job hash');
is($t->psql("SELECT model FROM chat_messages WHERE job_id = '$id2' "
            . "AND role = 'assistant'"), 'cache', 'marked as from the cache');

# redelivery of a finished job changes nothing

$t->redis('XADD', '{ragnx}:jobs', '*', $p->fields($id));
for (1 .. 250) {
    last if $t->redis('XLEN', '{ragnx}:jobs') == 0;
    sleep 0.02;
}
is($t->redis('XLEN', '{ragnx}:jobs'), 0, 'redelivered entry acknowledged');
is($t->psql("SELECT count(*) FROM messages WHERE job_id = '$id'"), 2,
   'no duplicate messages on redelivery');

# redelivery of a job whose hash was lost but whose messages are stored

{
    my $payload = $p->payload($id);
    $t->redis('DEL', "{ragnx}:job:$id");
    $t->redis('XADD', '{ragnx}:jobs', '*', $p->fields($id));
    $j = $p->wait_job($id);
    is($j->{status}, 'completed', 'redelivered job completes again');
    like($j->{answer}, qr/one hour/, 'from the stored answer');
    is($t->psql("SELECT count(*) FROM messages WHERE job_id = '$id'"), 2,
       'still exactly two messages');
}

# redelivery of a record whose messages are stored: written again, which
# changes nothing, and acknowledged

{
    my $log0 = length $p->worker_log;
    $t->redis('XADD', '{ragnx}:records', '*', 'id', $id2, 'job',
              $p->payload($id2), 'result', $t->redis('GET', $ckey));
    for (1 .. 250) {
        last if $t->redis('XLEN', '{ragnx}:records') == 0;
        sleep 0.02;
    }
    is($t->redis('XLEN', '{ragnx}:records'), 0,
       'a redelivered record is acknowledged');
    is($t->psql("SELECT string_agg(role, ',' ORDER BY seq) FROM "
                . "chat_messages WHERE job_id = '$id2'"), 'user,assistant',
       '... each message stored once');
    unlike(substr($p->worker_log, $log0), qr/dead-lettered/,
           '... without a dead letter');
}

# single flight: a leader and two followers, in their own chats

{
    $p->stop('TERM');
    my ($lid, $lo) = $p->ask(query => 'Where do penguins live?',
                             owner => 'alice');
    my ($f1, $o1, undef, $c1) = $p->ask(query => 'where do penguins live?',
                                        owner => 'bob');
    my ($f2, $o2, undef, $c2) = $p->ask(query => 'Where do  penguins live?',
                                        owner => 'carol');
    is("$lo $o1 $o2", 'queued follower follower', 'one leader, two followers');
    is($t->redis('XLEN', '{ragnx}:jobs'), 1, 'only the leader is queued');
    $p->start;
    my $l = $p->wait_job($lid);
    is($l->{status}, 'completed', 'leader completed');
    like($l->{answer}, qr/southern hemisphere/, 'leader answer');
    for ([$f1, $c1, 'bob'], [$f2, $c2, 'carol']) {
        my ($fid, $fc, $who) = @$_;
        my $f = $p->wait_job($fid);
        is($f->{status}, 'completed', "follower of $who completed");
        is($f->{answer}, $l->{answer}, "$who got the leader's answer");
        is($f->{sources}, $l->{sources}, "$who got the sources");
        is(pg_wait("SELECT owner || ':' || count(*) FROM chat_messages m "
                   . "JOIN chats c ON c.id = m.chat_id WHERE m.job_id = "
                   . "'$fid' GROUP BY owner", "$who:2"), "$who:2",
           "$who\'s exchange recorded in $who\'s own chat");
    }
    is($t->redis('EXISTS', "{ragnx}:job:$lid:followers"), 0,
       'followers list consumed');
}

# a chat that belongs to someone else

{
    my ($bid) = $p->ask(query => 'What about workers?', owner => 'mallory',
                        chat => $chat);
    $j = $p->wait_job($bid);
    is($j->{status}, 'failed', 'foreign chat: failed');
    is($j->{error}, 'chat not found', 'with a user-safe error');
    is($j->{attempts}, 1, 'at once, no retries');
    is($t->psql("SELECT count(*) FROM messages WHERE job_id = '$bid'"), 0,
       'nothing written');
}

# two transactions making one new chat at once: the exchange waits for
# the other's insert, then writes into the chat it made, never failing
# with "chat not found"

{
    my $made = uuid();
    my $log0 = length $p->worker_log;
    my $maker = fork() // die "fork: $!";
    if ($maker == 0) {
        exec(($ENV{RAGNX_PGBIN} || '/usr/lib/postgresql/15/bin') . '/psql',
             '-h', '127.0.0.1', '-p', $t->pg_port, '-U', 'ragnx', '-d',
             'ragnx', '-XAtq', '-c', "BEGIN; INSERT INTO chats (id, owner, "
             . "title) VALUES ('$made', 'alice', 'made elsewhere'); "
             . 'SELECT pg_sleep(1.5); COMMIT;')
            or POSIX::_exit(127);
    }
    for (1 .. 200) {
        last if $t->psql("SELECT count(*) FROM pg_stat_activity "
                         . "WHERE query LIKE '%pg_sleep(1.5)%' "
                         . 'AND pid <> pg_backend_pid()') > 0;
        sleep 0.02;
    }
    my ($mid) = $p->ask(query => 'Is one chat ever made twice at once?',
                        chat => $made);
    my $mj = $p->wait_job($mid, 15);
    waitpid($maker, 0);
    is($mj->{status}, 'completed',
       'a chat made by another transaction meanwhile: the job completes');
    is($t->psql("SELECT count(*) FROM messages WHERE chat_id = '$made'"), 2,
       '... its exchange in that chat');
    like(substr($p->worker_log, $log0), qr/made meanwhile by another/,
         '... written again with a new snapshot');
}

# poisoned entries are dead-lettered; the pool keeps serving

{
    my $dead0 = $t->redis('XLEN', '{ragnx}:dead');
    my $bad = uuid();
    $t->redis('XADD', '{ragnx}:jobs', '*', 'id', $bad, 'job', '{not json');
    $t->redis('XADD', '{ragnx}:jobs', '*', 'id', uuid(), 'job',
              '{"v":1,"type":"ask"}');
    $t->redis('XADD', '{ragnx}:jobs', '*', 'nothing', 'here');
    $t->redis('XADD', '{ragnx}:jobs', '*', 'id', uuid(), 'job',
              '{"v":2,"type":"ask","id":"x"}');
    my $deadline = time + 10;
    sleep 0.05 while $t->redis('XLEN', '{ragnx}:dead') < $dead0 + 4
                     && time < $deadline;
    is($t->redis('XLEN', '{ragnx}:dead') - $dead0, 4,
       'four poisoned entries dead-lettered');
    is($t->redis('XLEN', '{ragnx}:jobs'), 0, 'and removed from the stream');
    like($p->worker_log, qr/bad payload/, 'logged');
    my ($ok) = $p->ask(query => 'How are connections bounded?');
    $j = $p->wait_job($ok);
    is($j->{status}, 'completed', 'the pool still serves');
    like($j->{answer}, qr/db_pool/, 'retrieval finds the postgres chunk');
    is_deeply(decode_json($j->{sources}), ['guide/postgres.md'],
              'with its source');
    is(scalar($p->children), 1, 'the worker process survived');
}

# the jobs CLI

{
    my ($rc, $out) = $p->cli('jobs');
    is($rc, 0, 'jobs');
    like($out, qr/^queued 0$/m, 'queue depth');
    like($out, qr/^pending 0$/m, 'pending');
    like($out, qr/^delayed 0$/m, 'delayed');
    like($out, qr/^dead \d+$/m, 'dead-lettered count');
    my ($fid) = $out =~ /^dead ([0-9a-f-]{36}) chat not found$/m;
    ok($fid, 'the failed job is listed with its error');
    ($rc, $out) = $p->cli('jobs', 'retry', 'not-a-uuid');
    isnt($rc, 0, 'retry refuses a bad id');
    ($rc, $out) = $p->cli('jobs', 'retry', $fid);
    is($rc, 0, 'retry a dead job') or diag($out);
    $j = $p->wait_job($fid);
    is($j->{status}, 'failed', 'it fails again (still a foreign chat)');
    ($rc, $out) = $p->cli('jobs');
    my @n = $out =~ /^dead $fid/mg;
    is(scalar @n, 1, 'dead-lettered again, once');
    ($rc, $out) = $p->cli('jobs', 'drop', $fid);
    is($rc, 0, 'drop');
    ($rc, $out) = $p->cli('jobs');
    unlike($out, qr/^dead $fid/m, 'dropped from the dead-letter stream');
}

# messages.chat_id has no foreign key: a deleted chat takes its messages
# along (trigger), and a chat deleted while an exchange writes into it is
# deleted after that commits, the new messages included: the exchange
# locks the chat as the key check did (a test trigger holds the exchange
# after the lock, before its messages)

{
    my ($id1, undef, undef, $c1) = $p->ask(query => 'Who deletes chats?');
    is($p->wait_job($id1)->{status}, 'completed', 'a chat with an exchange');
    my $n = "SELECT count(*) FROM messages WHERE chat_id = '$c1'";
    is($t->psql($n), 2, '... of two messages');

    $t->psql("CREATE FUNCTION test_slow() RETURNS trigger LANGUAGE plpgsql "
             . "AS \$\$ BEGIN PERFORM pg_sleep(1); RETURN NEW; END \$\$; "
             . "CREATE TRIGGER test_slow BEFORE INSERT ON messages FOR EACH "
             . "ROW WHEN (NEW.content = 'Is this chat going away?') "
             . "EXECUTE FUNCTION test_slow()");
    my ($id2) = $p->ask(query => 'Is this chat going away?', chat => $c1);
    my $held = 0;
    for (1 .. 250) {
        last if $held = $t->psql("SELECT count(*) FROM pg_stat_activity "
                                 . "WHERE wait_event = 'PgSleep'");
        sleep 0.02;
    }
    ok($held, 'the exchange is held before its messages');
    my $pid = fork() // die "fork: $!";
    if ($pid == 0) {
        $t->psql("DELETE FROM chats WHERE id = '$c1'");
        POSIX::_exit(0);
    }
    is($p->wait_job($id2)->{status}, 'completed', 'its job completed');
    waitpid($pid, 0);
    $t->psql('DROP TRIGGER test_slow ON messages; DROP FUNCTION test_slow()');
    is($t->psql("SELECT count(*) FROM messages m WHERE NOT EXISTS (SELECT 1 "
                . "FROM chats c WHERE c.id = m.chat_id)"), 0,
       'the delete came after: no message left without its chat');
    is($t->psql($n), 0, 'the chat\'s messages went with it');

    my ($id3, undef, undef, $c3) = $p->ask(query => 'Who keeps chats?');
    is($p->wait_job($id3)->{status}, 'completed', 'another chat');
    $t->psql("DELETE FROM chats WHERE id = '$c3'");
    is($t->psql("SELECT count(*) FROM messages WHERE chat_id = '$c3'"), 0,
       'deleting a chat deletes its messages');
}

# a re-ingest that changes a document bumps the generation

{
    $t->file('corpus/notes.txt', "Penguins live in Antarctica.\n");
    my ($rc, $out) = $p->cli('ingest', $corpus);
    like($out, qr/1 changed, 3 unchanged.*corpus version 2/, 'one changed');
    is($t->redis('GET', '{ragnx}:gen'), 'extractive@2', 'generation bumped');
    my ($nid, $no) = $p->ask(query => 'Where do penguins live?');
    is($no, 'queued', 'the old cache entry is not served');
    $j = $p->wait_job($nid);
    like($j->{answer}, qr/Antarctica/, 'the answer uses the new corpus');
    is(terms_off(), 0, 'chunk_terms follow a changed document');
    is($t->psql("SELECT count(*) FROM chunk_terms WHERE lexeme = 'hemispher'"),
       0, 'none left of its old text');
    is($t->psql("SELECT count(*) FROM chunk_terms WHERE lexeme = 'antarctica'"),
       1, 'its new text there');

    unlink "$corpus/notes.txt";
    ($rc, $out) = $p->cli('ingest', '--prune', $corpus);
    like($out, qr/1 removed.*corpus version 3/, 'prune removes vanished files');
    is($t->psql("SELECT count(*) FROM documents WHERE path = 'notes.txt'"),
       0, 'document gone');
    is($t->psql("SELECT count(*) FROM chunk_terms WHERE lexeme = 'antarctica'"),
       0, 'and its chunk_terms');
    is(terms_off(), 0, 'chunk_terms exact after the prune');
}

# ranking: a word the stemmer shortens ("licensing", "license": "licens")
# counts in the chunks it is in, the title weighing most

{
    $t->file('corpus/guide/license.md', "# Licensing\n\nThe license terms "
             . "allow redistribution of the license text.\n");
    $t->file('corpus/guide/terms.md', "# Terms\n\nA glossary; see the "
             . "license.\n");
    my ($rc, $out) = $p->cli('ingest', $corpus);
    is($rc, 0, 'ingest two more documents') or diag($out);
    my ($lid) = $p->ask(query => 'What are the license terms?');
    $j = $p->wait_job($lid);
    is($j->{status}, 'completed', 'ranked question completed');
    is(decode_json($j->{sources})->[0], 'guide/license.md',
       'the chunk titled with the stemmed word ranks first');
}

# a busy thread reads and starts its next entry in the script that
# completes a job: one thread, twelve jobs waiting, and it reads the
# stream itself only when the stream has run dry; every job completes,
# started once, stored once

{
    is($p->stop('TERM'), 0, 'stopped for the read-ahead test');
    $p->configure(llm_model => 'extractive', concurrency => 1);
    my @ids = map { scalar $p->ask(query => "Read ahead question $_ about "
                                            . 'the cache?') } 1 .. 6;
    # a poison entry among them, with a well-formed id: read ahead and
    # started by the completing script, then dead-lettered as one read
    # by the thread itself would be
    my $poison = uuid();
    my $dead0 = $t->redis('XLEN', '{ragnx}:dead');
    $t->redis('XADD', '{ragnx}:jobs', '*', 'id', $poison, 'job', '{"v":1,');
    push @ids, map { scalar $p->ask(query => "Read ahead question $_ about "
                                            . 'the cache?') } 7 .. 12;
    my $mon = "$t->{dir}/monitor.log";
    my $mpid = fork() // die "fork: $!";
    if ($mpid == 0) {
        open STDOUT, '>', $mon or POSIX::_exit(1);
        exec('redis-cli', '-p', $t->redis_port, 'MONITOR')
            or POSIX::_exit(127);
    }
    # MONITOR answers OK once it watches: start the pool only then
    for (1 .. 200) {
        last if -s $mon;
        sleep 0.025;
    }
    $p->start;
    my @done = map { $p->wait_job($_)->{status} || '' } @ids;
    sleep 0.3;
    kill 'TERM', $mpid;
    waitpid($mpid, 0);
    is(scalar(grep { $_ eq 'completed' } @done), 12, 'all 12 completed');
    is($t->redis('XLEN', '{ragnx}:dead') - $dead0, 1,
       'the poison entry read ahead was dead-lettered');
    my $pj = $p->job($poison);
    is("$pj->{status}/$pj->{error}", 'failed/invalid job',
       'its job hash says why');
    my $in = join(',', map { "'$_'" } @ids);
    is($t->psql("SELECT count(*) FROM messages WHERE job_id IN ($in)"), 24,
       'each stored once: 12 questions and 12 answers');
    my (@top, @lua, @eval);
    for (split /\n/, Ragnx::Test::slurp($mon)) {
        # the start script: one key, the job hash
        push @eval, $_ if /"EVALSHA" "\w+" "1" "\{ragnx\}:job:/i
                          && !/\[\d+ lua\]/;
        next unless /"XREADGROUP".*"\{ragnx\}:jobs"/i;
        if (/\[\d+ lua\]/) { push @lua, $_ } else { push @top, $_ }
    }
    is(scalar(grep { ($p->job($_)->{attempts} || 0) == 1 } @ids), 12,
       'each started once (attempts 1)');
    # a separate start only for the entries the thread read itself
    cmp_ok(scalar @eval, '<=', 3, 'start scripts run: ' . scalar(@eval)
           . ' for 12 jobs (the others started by the completing script)');
    cmp_ok(scalar @lua, '>=', 11, 'the next entry read by the complete '
           . 'script (' . scalar(@lua) . ' times)');
    # the first read, and the blocking reads once the stream is empty
    cmp_ok(scalar @top, '<=', 6, 'the thread read the stream itself '
           . scalar(@top) . ' times for 12 jobs');
    is($t->redis('XLEN', '{ragnx}:jobs'), 0, 'stream empty');
    $p->configure(llm_model => 'extractive');
}

# A message insert that takes 1 ms (or fails for a poison pill): the
# database, not the threads, is then the bottleneck on any machine, so
# steps queue while a pipeline is out, as they do under a real load.
# Without it, whether eight threads ever overlap depends on the host.

sub slow_messages {
    my ($poison) = @_;
    my $fail = $poison ? "IF NEW.content LIKE '%poison pill%' THEN RAISE "
                         . "EXCEPTION 'poisoned'; END IF; " : '';
    $t->psql("CREATE FUNCTION test_slow() RETURNS trigger LANGUAGE plpgsql "
             . "AS \$\$ BEGIN PERFORM pg_sleep(0.001); $fail RETURN NEW; "
             . "END \$\$; CREATE TRIGGER test_slow BEFORE INSERT ON "
             . "messages FOR EACH ROW EXECUTE FUNCTION test_slow()");
}

sub fast_messages {
    $t->psql('DROP TRIGGER test_slow ON messages; DROP FUNCTION '
             . 'test_slow()');
}

# n jobs drained by eight threads with db_pool connections allowed:
# each completes and is stored once; the sizes of the shared pipelines
# logged meanwhile, and the PostgreSQL connections left open

sub drain_shared {
    my ($name, $n, $db_pool) = @_;
    is($p->stop('TERM'), 0, "stopped for the $name test");
    slow_messages(0);
    $p->configure(llm_model => 'extractive', concurrency => 8,
                  db_pool => $db_pool);
    my $from = length $p->worker_log;
    my @ids = map { scalar $p->ask(query => "$name question $_ about the "
                                            . 'cache?') } 1 .. $n;
    $p->start;
    my @done = map { $p->wait_job($_)->{status} || '' } @ids;
    is(scalar(grep { $_ eq 'completed' } @done), $n, "$name: all $n "
       . 'completed');
    my $in = join(',', map { "'$_'" } @ids);
    is($t->psql("SELECT count(*) FROM messages WHERE job_id IN ($in)"),
       2 * $n, "$name: each stored once");
    is($t->psql("SELECT count(DISTINCT chat_id) FROM messages WHERE job_id "
                . "IN ($in)"), $n, "$name: each in its own chat");
    my @batches = substr($p->worker_log, $from)
                  =~ /postgres: (\d+) requests in one pipeline/g;
    my $conns = backends();
    fast_messages();
    $p->configure(llm_model => 'extractive');
    return ((sort { $b <=> $a } @batches, 0)[0], scalar @batches, $conns);
}

# one PostgreSQL connection for eight job threads: their steps queue and
# go out together in one pipeline

{
    my ($max, $times, $conns) = drain_shared('shared connection', 32, 1);
    ok($times, "steps of several threads shared a pipeline ($times times, "
       . "up to $max at once)");
    cmp_ok($conns, '<=', 1, 'one PostgreSQL connection');
}

# eight connections allowed, eight threads: one connection serves the
# queue while it keeps up, so the steps still share pipelines instead of
# each thread taking a connection of its own

{
    # threads on connections of their own would send pipelines of 1;
    # with the inserts slowed, 6 or 7 went out together even with six
    # busy loops on the machine
    my ($max, $times, $conns) = drain_shared('spared connection', 48, 8);
    cmp_ok($max, '>=', 3, "steps still shared pipelines ($times times, up "
           . "to $max at once)");
    cmp_ok($conns, '<=', 3, 'at most 3 of the 8 connections opened');
}

# a pipeline's requests run in one transaction; one that fails rolls it
# back, and they run again each in its own: the others complete, stored
# once, and only the failing jobs fail (a test trigger rejects their
# messages)

{
    is($p->stop('TERM'), 0, 'stopped for the failing-request test');
    slow_messages(1);
    $p->configure(llm_model => 'extractive', concurrency => 8, db_pool => 1);
    my $from = length $p->worker_log;
    # three of them among 32 others, so that at least one fails while
    # others share its pipeline (a retry comes when the rest are done)
    my (@ids, @bad);
    for my $i (1 .. 35) {
        if ($i % 12 == 2) {
            push @bad, scalar $p->ask(query => "Is poison pill $i in the "
                                               . 'cache?');
        } else {
            push @ids, scalar $p->ask(query => "shared failure question $i "
                                               . 'about the cache?');
        }
    }
    $p->start;
    my @done = map { $p->wait_job($_)->{status} || '' } @ids;
    is(scalar(grep { $_ eq 'completed' } @done), 32,
       'the 32 others completed');
    my @failed = map { $p->wait_job($_) } @bad;
    is(scalar(grep { ($_->{status} || '') eq 'failed' } @failed), 3,
       'the failing ones failed');
    is(scalar(grep { ($_->{error} || '') =~ /database/ } @failed), 3,
       'with a database error');
    my $in = join(',', map { "'$_'" } @ids);
    is($t->psql("SELECT count(*) FROM messages WHERE job_id IN ($in)"),
       64, 'the others stored once each');
    $in = join(',', map { "'$_'" } @bad);
    is($t->psql("SELECT count(*) FROM messages WHERE job_id IN ($in)"), 0,
       'nothing of the failing ones');
    my $log = substr($p->worker_log, $from);
    my @again = $log =~ /postgres: a request failed, (\d+) run again/g;
    cmp_ok(scalar(grep { $_ > 1 } @again), '>=', 1,
           'it failed inside a shared transaction ('
           . join(', ', @again) . ' requests run again)');
    fast_messages();
    $p->configure(llm_model => 'extractive');
}

# a statement stuck behind a lock holds up the connection serving the
# queue: a step queued behind it sees no pipeline finish for
# RAGNX_DB_PATIENCE, then takes a connection of its own

{
    is($p->stop('TERM'), 0, 'stopped for the stuck-statement test');
    $p->configure(llm_model => 'extractive', concurrency => 2, db_pool => 2);
    $p->start;
    my $q = 'Which chunk answers the stuck statement question?';
    my $first = $p->ask(query => $q);
    is($p->wait_job($first)->{status}, 'completed', 'answer cached');
    my $locker = fork // die "fork: $!";
    if ($locker == 0) {
        $t->psql("BEGIN; LOCK TABLE chunks IN ACCESS EXCLUSIVE MODE; "
                 . "SELECT pg_sleep(4); COMMIT");
        POSIX::_exit(0);
    }
    my $deadline = time + 5;
    sleep 0.05 until time > $deadline
        || $t->psql("SELECT count(*) FROM pg_locks WHERE relation = "
                    . "'chunks'::regclass AND mode = 'AccessExclusiveLock' "
                    . "AND granted");
    my $stuck = $p->ask(query => 'A new question that must read chunks?');
    sleep 0.3;
    my $t0 = time;
    my ($rec, $hit) = $p->ask(query => $q);
    is($hit, 'hit', 'a cache hit: a record, no retrieval');
    my $n = pg_wait("SELECT count(*) FROM chat_messages WHERE job_id = "
                    . "'$rec'", 2);
    my $took = time - $t0;
    is($n, 2, 'the record was written');
    cmp_ok($took, '<', 2, sprintf('while the retrieval was stuck (%.2f s)',
                                  $took));
    isnt($t->redis('HGET', "{ragnx}:job:$stuck", 'status'), 'completed',
         'the stuck job was still waiting then');
    waitpid $locker, 0;
    is($p->wait_job($stuck)->{status}, 'completed',
       'and completed once the lock was gone');
    $p->configure(llm_model => 'extractive');
}

# the pool sweeps in-flight fields whose leader is no longer pending
# (here: its hash is gone), and leaves a pending leader's alone

{
    my $gone = '00000000-0000-4000-8000-00000000dead';
    my $pending = '00000000-0000-4000-8000-00000000beef';
    $t->redis('HSET', "{ragnx}:job:$pending", 'status', 'waiting');
    $t->redis('HSET', '{ragnx}:inflight', 'gone:x@1', $gone,
              'pending:x@1', $pending);
    my $swept = 0;
    for (1 .. 100) {
        $swept = 1, last
            if !$t->redis('HEXISTS', '{ragnx}:inflight', 'gone:x@1');
        sleep 0.05;
    }
    ok($swept, 'a field of a leader no longer pending is swept');
    is($t->redis('HGET', '{ragnx}:inflight', 'pending:x@1'), $pending,
       'a pending leader keeps its field');
    $t->redis('HDEL', '{ragnx}:inflight', 'pending:x@1');
    $t->redis('DEL', "{ragnx}:job:$pending");
}

# SIGTERM with nothing in flight: exit 0

is($p->stop('TERM'), 0, 'SIGTERM: exit 0');

# SIGHUP opens log_file again (logrotate moves it, then signals), in the
# supervisor and in workers that a bad reload leaves running; at exit the
# pool removes its own pid file, never one a reload named

{
    my $log = "$t->{dir}/pool.log";
    my $pidf = "$t->{dir}/pool.pid";
    my $other = "$t->{dir}/other.pid";
    my $conf = $p->configure(log_file => $log, pid_file => $pidf);
    my %env = $t->preload_env;
    my $pid = fork() // die "fork: $!";
    if ($pid == 0) {
        $ENV{$_} = $env{$_} for keys %env;
        open STDOUT, '>>', "$t->{dir}/worker.log";
        open STDERR, '>&', \*STDOUT;
        exec(Ragnx::Pool::worker_bin(), '-c', $conf) or POSIX::_exit(127);
    }
    $t->{pids}{worker} = $pid;
    my $until = sub {
        my ($cond) = @_;
        for (1 .. 400) { return 1 if $cond->(); sleep 0.025 }
        return 0;
    };
    my $in = sub { -e $_[0] ? Ragnx::Test::slurp($_[0]) : '' };
    ok($until->(sub { $in->($log) =~ /cache generation/ }),
       'log_file: the pool logs there') or diag($in->($log));
    is($in->($pidf), "$pid\n", 'pid_file written');

    rename $log, "$log.1" or die "rename: $!";
    $t->file('worker.conf', $in->($conf) . "top_k = 0\n");
    kill 'HUP', $pid;
    ok($until->(sub { $in->($log) =~ /reload failed/ }),
       'SIGHUP: the supervisor logs to a new file at log_file');
    ok($until->(sub {
           grep { ($_->{proc} // '') eq 'worker 0'
                  && ($_->{msg} // '') eq 'log_file reopened' }
                Ragnx::Pool::json_lines($in->($log)) }),
       '... and so does the worker it kept');
    my ($id) = $p->ask(query => 'logged after the rotation?');
    is($p->wait_job($id)->{status}, 'completed', 'a job after the rotation');
    ok((grep { ($_->{job} // '') eq $id && $_->{msg} eq 'attempt 1' }
            Ragnx::Pool::json_lines($in->($log))),
       'the workers log to the new file too') or diag($in->($log));
    unlike($in->("$log.1"), qr/\Q$id\E/, 'and not to the moved one');

    $p->configure(log_file => $log, pid_file => $other);
    $t->file('other.pid', "12345\n");
    kill 'HUP', $pid;
    ok($until->(sub { $in->($log) =~ /reloading: replacing the workers/ }),
       'reloaded with another pid_file');
    is($p->stop('TERM'), 0, 'SIGTERM: exit 0');
    is($in->($other), "12345\n",
       'a pid file the pool never wrote is left alone');
    ok(!-e $pidf, 'its own pid file removed');
}

# TRUNCATE chats takes the messages along too (with the foreign key it
# was refused)

cmp_ok($t->psql('SELECT count(*) FROM messages'), '>', 0, 'messages stored');
$t->psql('TRUNCATE chats');
is($t->psql('SELECT count(*) FROM messages'), 0,
   'TRUNCATE chats empties messages');

$p->finish;
