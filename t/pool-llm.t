#!/usr/bin/perl
# The pool's LLM providers against a mock server on loopback: the
# Anthropic Messages API and OpenAI chat completions, error classes
# (500 retried, 400 permanent, 429 honouring Retry-After, malformed JSON,
# a hung server), exhaustion into the dead-letter stream, usage recorded,
# the API key never logged, and SIGHUP with a good and a bad config.

use strict;
use warnings;
use Encode ();
use lib 't/lib';
use Test::More;
use JSON::PP;
use Time::HiRes qw(sleep time);
use Ragnx::Test;
use Ragnx::Pool qw(uuid);
use Ragnx::MockLLM;

my $KEY = 'sk-test-secret-key-0123456789';

my $t = Ragnx::Test->new;
$t->start_redis;
$t->start_postgres;
my $mock = Ragnx::MockLLM->start($t);
my $p = Ragnx::Pool->new($t);
my $keyfile = $t->file('llm.key', "$KEY\n");

my %anthropic = (llm_provider => 'anthropic', llm_base_url => $mock->url,
                 llm_model => 'claude-mock', llm_api_key_file => $keyfile,
                 llm_timeout => 1500, max_attempts => 3);
$p->configure(%anthropic);
my ($rc, $out) = $p->cli('migrate');
is($rc, 0, 'migrate') or diag($out);
mkdir "$t->{dir}/corpus";
$t->file('corpus/cache.md', "# Caching\n\nAnswers are cached for an hour.\n");
($rc, $out) = $p->cli('ingest', "$t->{dir}/corpus");
is($rc, 0, 'ingest') or diag($out);
$p->start;

is($t->redis('GET', '{ragnx}:gen'), 'claude-mock@1',
   'generation names the configured model');

# Anthropic, happy path

my ($id, undef, undef, $chat) = $p->ask(query => 'How long are answers cached?');
my $j = $p->wait_job($id);
is($j->{status}, 'completed', 'anthropic: completed');
is($j->{answer}, 'Mock answer to: How long are answers cached?',
   'the provider\'s answer');
is_deeply(decode_json($j->{sources}), ['cache.md'], 'sources from retrieval');
my $last = $mock->stats->{last};
is($last->{path}, '/v1/messages', 'Messages API path');
is($last->{headers}{'x-api-key'}, $KEY, 'x-api-key from the key file');
is($last->{headers}{'anthropic-version'}, '2023-06-01', 'anthropic-version');
my $req = decode_json($last->{body});
is($req->{model}, 'claude-mock', 'model');
ok($req->{system} && $req->{max_tokens}, 'system prompt and max_tokens');
like($req->{messages}[-1]{content}, qr/\[1\] cache\.md - Caching\n.*an hour/s,
     'retrieved passage in the prompt');
is($t->psql("SELECT model || ' ' || output_tokens || ' ' || "
            . "(input_tokens > 0)::text FROM messages WHERE job_id = '$id' "
            . "AND role = 'assistant'"), 'claude-mock 7 true',
   'usage recorded on the assistant message');

# history goes with the next question of the same chat

my ($id2) = $p->ask(query => 'And how are they stored?', chat => $chat,
                     scope => 'chat');
$j = $p->wait_job($id2);
$req = decode_json($mock->stats->{last}{body});
is(scalar @{ $req->{messages} }, 3, 'previous exchange sent as history');
is($req->{messages}[0]{content}, 'How long are answers cached?',
   'history starts with the first question');

# the stream's pending entries (delivered, not yet acknowledged)
sub pending {
    return (split /\n/, $t->redis('XPENDING', '{ragnx}:jobs', 'pool'))[0]
           // 0;
}

# wait until the mock has had $n requests more than $n0
sub llm_requests {
    my ($n0, $n) = @_;
    my $deadline = time + 10;
    sleep 0.02 while $mock->stats->{requests} < $n0 + $n && time < $deadline;
    return $mock->stats->{requests} - $n0;
}

# an ask job delivered twice at once (redelivered while its first delivery
# still waits for the LLM): neither saw a stored answer, so both write the
# exchange; the second writes nothing, and completes without a retry

{
    $mock->set(delay_ms => 400);
    my $n0 = $mock->stats->{requests};
    my $log0 = length $p->worker_log;
    my ($rid) = $p->ask(query => 'Is an exchange written only once?');
    $t->redis('XADD', '{ragnx}:jobs', '*', $p->fields($rid));
    is(llm_requests($n0, 2), 2, 'delivered twice at once: two LLM calls');
    my $deadline = time + 15;
    sleep 0.05 while ($t->redis('XLEN', '{ragnx}:jobs') || pending())
                     && time < $deadline;
    is($t->redis('XLEN', '{ragnx}:jobs') . ' ' . pending(), '0 0',
       '... both entries acknowledged');
    $j = $p->wait_job($rid);
    is($j->{status}, 'completed', '... completed');
    is($t->psql("SELECT string_agg(role, ',' ORDER BY seq) FROM messages "
                . "WHERE job_id = '$rid'"), 'user,assistant',
       '... each message stored once');
    my @lines = $p->job_lines($rid, $log0);
    ok(@lines && !(grep { $_->{msg} =~ /retry/ } @lines),
       '... and neither was retried')
        or diag(substr($p->worker_log, $log0));
    $mock->set(delay_ms => 0);
}

# a chat with the job's id made by someone else while the job waits for
# the LLM: the exchange writes nothing into it, and the job fails as if
# the chat were another user's

{
    $mock->set(delay_ms => 600);
    my $n0 = $mock->stats->{requests};
    my ($sid, undef, undef, $schat) =
        $p->ask(query => 'Whose chat will this be?', owner => 'alice');
    is(llm_requests($n0, 1), 1, 'a chat taken while the LLM runs: asked');
    $t->psql("INSERT INTO chats (id, owner, title) VALUES ('$schat', "
             . "'mallory', 'taken')");
    $j = $p->wait_job($sid);
    is($j->{status}, 'failed', '... the job failed');
    is($j->{error}, 'chat not found', '... "chat not found"');
    is($t->psql("SELECT count(*) FROM messages WHERE chat_id = '$schat' "
                . "OR job_id = '$sid'"), 0, '... and nothing was written');
    is($t->psql("SELECT owner FROM chats WHERE id = '$schat'"), 'mallory',
       '... into a chat that stays mallory\'s');
    $mock->set(delay_ms => 0);
}

# the request body is JSON whatever the text holds: quotes, backslashes,
# control characters and multi-byte UTF-8 arrive as they were sent

{
    my $q = "Is \"x\" a\\b, a\ttab, a\nbreak, a bell \x07, caf\x{e9}, "
          . "\x{65e5}\x{672c} \x{1F600}?";
    my ($qid) = $p->ask(query => Encode::encode_utf8($q));
    is($p->wait_job($qid)->{status}, 'completed', 'odd text: completed');
    my $body = $mock->stats->{last}{body};
    my $r = eval { decode_json($body) };
    ok($r, 'odd text: the body is JSON') or diag($@);
    like($r->{messages}[-1]{content}, qr/\nQuestion: \Q$q\E\z/,
         'odd text: the question arrives unchanged');
    like($body, qr/\\u0007/, 'a control character is escaped');
}

# 500 twice, then OK

$mock->set(script => ['500', '500']);
($id) = $p->ask(query => 'first transient question');
$j = $p->wait_job($id);
is($j->{status}, 'completed', '500 twice then OK: completed');
is($j->{attempts}, 3, 'attempts = 3');
is($t->psql("SELECT count(*) FROM messages WHERE job_id = '$id'"), 2,
   'messages written once');

# always 500: failed, dead-lettered

$mock->set(default => '500');
my $dead0 = $t->redis('XLEN', '{ragnx}:dead');
($id) = $p->ask(query => 'a question that always fails');
ok($p->wait_status($id, 'delayed'), 'waits in the delayed set between tries');
$j = $p->wait_job($id);
is($j->{status}, 'failed', 'always 500: failed');
is($j->{error}, 'LLM unavailable', 'user-safe error');
is($j->{attempts}, 3, 'after max_attempts');
is($t->redis('XLEN', '{ragnx}:dead'), $dead0 + 1, 'dead-lettered');
($rc, $out) = $p->cli('jobs');
like($out, qr/^dead $id LLM unavailable$/m, 'visible in ragnx-worker jobs');
is($t->redis('ZCARD', '{ragnx}:delayed'), 0, 'nothing left delayed');
$mock->set(default => 'ok');

# 400: permanent

$mock->set(script => ['400']);
($id) = $p->ask(query => 'a question the LLM rejects');
$j = $p->wait_job($id);
is($j->{status}, 'failed', '400: failed');
is($j->{attempts}, 1, 'at once');
is($j->{error}, 'LLM rejected the request', 'error');

# a leader that fails for a reason of its own (its request refused)
# does not fail its followers: the first runs as a job of its own and
# leads the question, the others follow it

{
    $mock->set(delay_ms => 600, script => ['400']);
    my $n0 = $mock->stats->{requests};
    my ($lid, $lo) = $p->ask(query => 'A question nobody may ask');
    ok($p->wait_status($lid, 'active'), 'leader active');
    my ($fid, $fo, undef, $fchat) = $p->ask(
        query => 'a question nobody may ask', owner => 'bob');
    my ($gid, $go) = $p->ask(query => 'a question NOBODY may ask',
                             owner => 'carol');
    is("$lo $fo $go", 'queued follower follower', 'a leader, two followers');
    my $l = $p->wait_job($lid);
    is("$l->{status}|$l->{error}", 'failed|LLM rejected the request',
       'leader failed');
    my $f = $p->wait_job($fid);
    my $g = $p->wait_job($gid);
    is($f->{status}, 'completed', 'the first follower ran as its own job');
    is($f->{answer}, 'Mock answer to: a question nobody may ask',
       '... with its own answer');
    is($t->psql("SELECT count(*) FROM messages m JOIN chats c ON "
                . "c.id = m.chat_id WHERE m.job_id = '$fid' AND "
                . "c.owner = 'bob' AND c.id = '$fchat'"), 2,
       '... stored in its own chat');
    is($g->{status}, 'completed', 'the second followed it');
    is($g->{answer}, $f->{answer}, '... with its answer');
    is($mock->stats->{requests} - $n0, 2,
       'the LLM ran twice: the leader, then the new leader');
    is(scalar(grep { $_ eq $lid || $_ eq $fid }
                  split /\n/, $t->redis('HVALS', '{ragnx}:inflight')),
       0, 'in-flight field removed');
    $mock->set(delay_ms => 0);
}

# a leader whose chat is someone else's: its followers run as their own

{
    $p->stop('TERM');
    my ($lid, $lo) = $p->ask(query => 'Whose chat is this?',
                             owner => 'mallory', chat => $chat);
    my ($fid, $fo) = $p->ask(query => 'whose chat is this?', owner => 'bob');
    is("$lo $fo", 'queued follower', 'a leader in a foreign chat, a follower');
    $p->start;
    my $l = $p->wait_job($lid);
    is("$l->{status}|$l->{error}", 'failed|chat not found', 'leader failed');
    my $f = $p->wait_job($fid);
    is($f->{status}, 'completed', 'the follower completed on its own');
    like($f->{answer}, qr/^Mock answer to: whose chat is this\?/,
         '... with an answer');
}

# a failure that would hit any asker (the LLM down through every
# attempt) is shared: the followers fail with the leader's error

{
    $mock->set(delay_ms => 300, default => '500');
    my ($lid, $lo) = $p->ask(query => 'A question for a broken LLM');
    ok($p->wait_status($lid, 'active'), 'leader active');
    my ($fid, $fo) = $p->ask(query => 'a question for a broken LLM',
                             owner => 'bob');
    is("$lo $fo", 'queued follower', 'leader and follower');
    my $l = $p->wait_job($lid, 20);
    my $f = $p->wait_job($fid, 20);
    is($l->{status}, 'failed', 'leader failed after its attempts');
    is($l->{attempts}, 3, '... all of them');
    is("$f->{status}|$f->{error}", "failed|$l->{error}",
       'follower failed with the same error');
    cmp_ok($t->redis('TTL', "{ragnx}:job:$fid"), '>', 0,
           'follower hash has the retention TTL');
    is(scalar(grep { $_ eq $lid }
                  split /\n/, $t->redis('HVALS', '{ragnx}:inflight')),
       0, 'in-flight field removed');
    $mock->set(delay_ms => 0, default => 'ok');
    my ($nid, $no) = $p->ask(query => 'a question for a broken LLM');
    is($no, 'queued', 'the next identical question starts afresh');
    is($p->wait_job($nid)->{status}, 'completed', 'and completes');
}

# an answer cut at the token limit (anthropic): stored and marked, never
# cached

{
    $mock->set(script => ['truncated']);
    my ($tid) = $p->ask(query => 'A question answered at anthropic length?');
    my $tj = $p->wait_job($tid);
    is($tj->{status}, 'completed', 'anthropic, cut at max_tokens: completed');
    is($tj->{truncated}, '1', '... marked truncated in the job');
    is($t->psql("SELECT truncated FROM messages WHERE job_id = '$tid' "
                . "AND role = 'assistant'"), 't', '... and in its message');
    my ($again, $out) = $p->ask(query => 'a question answered at anthropic '
                                         . 'length?');
    is($out, 'queued', '... and not cached: asked again, it is a miss');
    is($p->wait_job($again)->{truncated}, undef,
       '... whose whole answer is not marked');
}

# 429 with Retry-After: 2 s, more than retry_max (400 ms)

$mock->set(script => ['429:2']);
my $t0 = time;
($id) = $p->ask(query => 'a rate limited question');
ok($p->wait_status($id, 'delayed'), '429: delayed');
{
    my $due = $t->redis('ZSCORE', '{ragnx}:delayed', $id);
    cmp_ok($due, '>=', int($t0 * 1000) + 2000,
           'its retry is due after Retry-After, not retry_max');
}
$j = $p->wait_job($id);
is($j->{status}, 'completed', 'then completed');
cmp_ok(time - $t0, '>=', 2, 'not before Retry-After');
is($j->{attempts}, 2, 'on the second attempt');

# a Retry-After beyond half the retention is cut to it, and the delayed
# job's hash lives through its delay: it ends, never vanishes

$mock->set(script => ['429:100000']);
$t0 = time;
($id) = $p->ask(query => 'a question rate limited for a day');
ok($p->wait_status($id, 'delayed'), 'Retry-After of a day: delayed');
{
    my $due = $t->redis('ZSCORE', '{ragnx}:delayed', $id);
    cmp_ok($due, '<=', int(time * 1000) + 1800 * 1000,
           '... due within half of job_retention (1,800 s)');
    cmp_ok($t->redis('TTL', "{ragnx}:job:$id"), '>', 3600,
           '... its hash kept for the delay and the retention after it');
    $t->redis('ZREM', '{ragnx}:delayed', $id);
}

# a delayed job whose hash is gone is dead-lettered, not dropped

{
    my $lost = uuid();
    my $dead0 = $t->redis('XLEN', '{ragnx}:dead');
    $t->redis('ZADD', '{ragnx}:delayed', 0, $lost);
    my $deadline = time + 10;
    sleep 0.05 while $t->redis('XLEN', '{ragnx}:dead') == $dead0
                     && time < $deadline;
    like($t->redis('XREVRANGE', '{ragnx}:dead', '+', '-', 'COUNT', 1),
         qr/\Q$lost\E.*job lost while delayed/s,
         'a delayed job without its hash: dead-lettered with the reason');
    is($t->redis('ZSCORE', '{ragnx}:delayed', $lost), '',
       '... and out of the delayed set');
}

# retry_max must leave the job its hash

$p->configure(%anthropic, retry_max => 1800001);
($rc, $out) = $p->cli('jobs');
isnt($rc, 0, 'retry_max above half of job_retention: refused');
like($out, qr/retry_max: must not be above half of job_retention/,
     '... saying why');
$p->configure(%anthropic);

# malformed JSON, and a server that never answers

$mock->set(script => ['malformed']);
($id) = $p->ask(query => 'malformed answer question');
$j = $p->wait_job($id);
is("$j->{status} $j->{attempts}", 'completed 2',
   'malformed response retried');

$mock->set(script => ['hang']);
$t0 = time;
($id) = $p->ask(query => 'hanging server question');
$j = $p->wait_job($id);
is("$j->{status} $j->{attempts}", 'completed 2',
   'hung request times out (llm_timeout) and is retried');
like($p->worker_log, qr/llm request failed: Timeout/, 'timeout logged');

unlike($p->worker_log, qr/\Q$KEY\E/, 'the API key is never logged');

# SIGHUP with a bad configuration: kept, error logged

my $good = $t->file('good.conf', Ragnx::Test::slurp("$t->{dir}/worker.conf"));
$t->file('worker.conf', Ragnx::Test::slurp($good) . "top_k = 0\n");
my @kids = sort $p->children;
kill 'HUP', $p->pid;
my $deadline = time + 5;
sleep 0.05 until $p->worker_log =~ /reload failed/ || time > $deadline;
like($p->worker_log, qr/reload failed, keeping the current configuration: top_k: 0 is out of range/,
     'bad reload refused with the setting named');
is_deeply([sort $p->children], \@kids, 'workers not replaced');
($id) = $p->ask(query => 'still serving after a bad reload?');
is($p->wait_job($id)->{status}, 'completed', 'still serving');

# SIGHUP with a good one: OpenAI-compatible provider, new model

$p->configure(llm_provider => 'openai', llm_base_url => $mock->url . '/v1',
              llm_model => 'gpt-mock', llm_api_key_file => $keyfile);
kill 'HUP', $p->pid;
$deadline = time + 10;
sleep 0.05 until $t->redis('GET', '{ragnx}:gen') eq 'gpt-mock@1'
                 || time > $deadline;
is($t->redis('GET', '{ragnx}:gen'), 'gpt-mock@1', 'reload: new generation');
($id) = $p->ask(query => 'How long are answers cached?');
$j = $p->wait_job($id);
is($j->{status}, 'completed', 'openai: completed');
is($j->{answer}, 'Mock answer to: How long are answers cached?',
   'chat completions answer');
$last = $mock->stats->{last};
is($last->{path}, '/v1/chat/completions', 'chat completions path');
is($last->{headers}{authorization}, "Bearer $KEY", 'bearer key');
$req = decode_json($last->{body});
is($req->{messages}[0]{role}, 'system', 'system message first');
is($req->{model}, 'gpt-mock', 'new model');
isnt(join(',', sort $p->children), join(',', @kids), 'workers replaced');

# an answer cut at the token limit (openai): stored and marked, never
# cached

{
    $mock->set(script => ['truncated']);
    my ($tid) = $p->ask(query => 'A question answered at openai length?');
    my $tj = $p->wait_job($tid);
    is($tj->{status}, 'completed', 'openai, cut at max_tokens: completed');
    is($tj->{truncated}, '1', '... marked truncated in the job');
    is($t->psql("SELECT truncated FROM messages WHERE job_id = '$tid' "
                . "AND role = 'assistant'"), 't', '... and in its message');
    my ($again, $out) = $p->ask(query => 'a question answered at openai '
                                         . 'length?');
    is($out, 'queued', '... and not cached: asked again, it is a miss');
    is($p->wait_job($again)->{truncated}, undef,
       '... whose whole answer is not marked');
}

# ranking: the pool's cover density count orders the passages exactly as
# ts_rank_cd does, for plain questions, and ts_rank_cd itself still ranks
# a phrase or a negation; the prompt lists them best first

{
    my %docs = (
        'rank/wal.md' => "# Write-ahead log\n\nThe log is written before "
            . "the data.\n\n## Checkpoints\n\nA checkpoint flushes the log "
            . "and the data; the log is recycled after a checkpoint.\n",
        'rank/vacuum.md' => "# Vacuum\n\nVacuum reclaims space. The log "
            . "of vacuum runs names each table.\n\n## Autovacuum\n\n"
            . "Autovacuum runs vacuum on a schedule, checkpoint or not.\n",
        'rank/index.md' => "# Indexes\n\nAn index speeds up reads; the "
            . "write-ahead log records index changes too.\n",
        'rank/replica.md' => "# Replication\n\nReplicas replay the log. "
            . "Log, log, log: the log is the replica's only input.\n",
        'rank/table.md' => "# Tables\n\nA table holds rows; vacuum and "
            . "checkpoints keep a table healthy.\n",
        'rank/twins-a.md' => "# Twin\n\nIdentical twin text about "
            . "checkpoint timing.\n",
        'rank/twins-b.md' => "# Twin\n\nIdentical twin text about "
            . "checkpoint timing.\n",
    );
    mkdir "$t->{dir}/corpus/rank";
    $t->file("corpus/$_", $docs{$_}) for keys %docs;
    my ($rc, $out) = $p->cli('ingest', "$t->{dir}/corpus");
    is($rc, 0, 'ingest the ranking documents') or diag($out);

    for my $q ('How does a checkpoint use the log?',
               'vacuum log table checkpoint index',
               'twin checkpoint timing',
               'log',
               '"write-ahead log" checkpoint',
               'log -vacuum',
               'replica or vacuum') {
        (my $lit = $q) =~ s/'/''/g;
        my $want = $t->psql(
            "WITH q AS MATERIALIZED (SELECT NULLIF(replace(a::text, ' & ', "
            . "' | '), '')::tsquery AS any, tsvector_to_array(to_tsvector("
            . "'english', '$lit')) AS lex FROM websearch_to_tsquery("
            . "'english', '$lit') a) SELECT x.path || CASE WHEN x.heading "
            . "= '' THEN '' ELSE ' - ' || x.heading END FROM (SELECT c.id, "
            . "c.path, c.heading, c.tsv, q.any, length(c.tsv) - length("
            . "ts_delete(c.tsv, q.lex)) AS cover FROM q, chunks c WHERE "
            . "c.tsv @@ q.any ORDER BY cover DESC, ts_rank(c.tsv, q.any) "
            . "DESC, c.id LIMIT 20) x ORDER BY x.cover DESC, ts_rank_cd("
            . "x.tsv, x.any) DESC, x.id LIMIT 5");
        ($id) = $p->ask(query => $q);
        $j = $p->wait_job($id);
        is($j->{status}, 'completed', "ranked: $q");
        my $prompt = decode_json($mock->stats->{last}{body})
                     ->{messages}[-1]{content};
        my @got = $prompt =~ /^\[\d+\] (.*)$/mg;
        is(join("\n", @got), $want, "the order ts_rank_cd gives: $q");
    }
}

$p->finish;
