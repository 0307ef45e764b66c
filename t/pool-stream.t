#!/usr/bin/perl
# The pool streams answers from the providers: with "stream": true the
# Anthropic Messages API and OpenAI chat completions answer as
# server-sent events, read as they come, and each piece of text is
# appended to the job's {ragnx}:events:<id> stream before the answer is
# complete.  The pieces of an attempt make exactly the answer the job
# completes with and PostgreSQL stores; a retried attempt is announced
# with a "restart" entry; the extractive provider streams too; a server
# that answers one JSON body still works; llm_stream 0 asks for none.

use strict;
use warnings;
use lib 't/lib';
use Test::More;
use JSON::PP;
use Time::HiRes qw(sleep time);
use Ragnx::Test;
use Ragnx::Pool qw(uuid);
use Ragnx::MockLLM;

my $t = Ragnx::Test->new;
$t->start_redis;
$t->start_postgres;
my $mock = Ragnx::MockLLM->start($t);
my $p = Ragnx::Pool->new($t);
my $keyfile = $t->file('llm.key', "sk-test\n");

my %anthropic = (llm_provider => 'anthropic', llm_base_url => $mock->url,
                 llm_model => 'claude-mock', llm_api_key_file => $keyfile,
                 llm_timeout => 5000, max_attempts => 3, retry_base => 100);
$p->configure(%anthropic);
my ($rc, $out) = $p->cli('migrate');
is($rc, 0, 'migrate') or diag($out);
mkdir "$t->{dir}/corpus";
$t->file('corpus/cache.md', "# Caching\n\nAnswers are cached for an hour "
         . "and the lockers have four digit codes.\n");
($rc, $out) = $p->cli('ingest', "$t->{dir}/corpus");
is($rc, 0, 'ingest') or diag($out);
$p->start;

# the job's events: [type, attempt, text, result, error] in stream order
sub events {
    my ($id) = @_;
    my $raw = $t->redis('EVAL', "return cjson.encode(redis.call('XRANGE', "
                        . "KEYS[1], '-', '+'))", 1, "{ragnx}:events:$id");
    my $a = eval { JSON::PP->new->utf8->decode($raw) } || [];
    $a = [] unless ref $a eq 'ARRAY';   # cjson: {} for an empty list
    return map { my %f = @{ $_->[1] }; [@f{qw(t a d r e)}] }
           grep { ref $_->[1] eq 'ARRAY' } @$a;
}

sub text_of {
    my ($attempt, @ev) = @_;
    return join '', map { $_->[2] }
                    grep { $_->[0] eq 'delta' && $_->[1] == $attempt } @ev;
}

sub stored {
    my ($id) = @_;
    return $t->psql("SELECT content FROM chat_messages WHERE job_id = "
                    . "'$id' AND role = 'assistant'");
}

for my $provider ('anthropic', 'openai') {
    if ($provider eq 'openai') {
        $p->stop;
        $p->configure(%anthropic, llm_provider => 'openai',
                      llm_model => 'gpt-mock');
        $p->start;
    }

    # one event every 150 ms: the first piece is there long before the end
    $mock->set(chunk_ms => 150, default => 'ok', delay_ms => 0);
    my $q = "How long are answers cached, asks $provider?";
    my $t0 = time;
    my $id = $p->ask(query => $q);
    my ($first, @ev);
    for (1 .. 200) {
        @ev = events($id);
        if (@ev) { $first = time - $t0; last }
        sleep 0.02;
    }
    my $status = $p->job($id)->{status} // '';
    my $j = $p->wait_job($id);
    my $done = time - $t0;
    is($j->{status}, 'completed', "$provider: completed");
    ok(defined $first && $status ne 'completed',
       sprintf("$provider: the first piece (%.2f s) while the job was "
               . "still %s", $first // -1, $status));
    cmp_ok($done - ($first // $done), '>', 0.5,
           sprintf("... %.2f s before the answer was complete", $done
                   - ($first // $done)));
    my $req = decode_json($mock->stats->{last}{body});
    ok($req->{stream}, "$provider: asked with \"stream\": true");
    is_deeply($req->{stream_options}, { include_usage => JSON::PP::true },
              '... and the usage asked for')
        if $provider eq 'openai';
    @ev = events($id);
    cmp_ok(scalar(grep { $_->[0] eq 'delta' } @ev), '>=', 5,
           '... the answer came in ' . scalar(@ev) . ' pieces');
    is(text_of(1, @ev), "Mock answer to: $q",
       '... which make exactly the answer');
    is($j->{answer}, text_of(1, @ev), '... the job\'s answer');
    is(stored($id), $j->{answer}, '... and the stored message');
    is($ev[-1][0], 'done', '... then "done"');
    is(eval { decode_json($ev[-1][3])->{answer} } // '', $j->{answer},
       '... with the result');
    is($t->psql("SELECT output_tokens FROM messages WHERE job_id = '$id' "
                . "AND role = 'assistant'"), 7,
       '... with the usage of the closing events');
    my $ttl = $t->redis('TTL', "{ragnx}:events:$id");
    ok($ttl > 0, "... the events expire ($ttl s)");

    # an error event mid-answer, then a stream cut off: retried, and each
    # new attempt announced before its first piece
    $mock->set(chunk_ms => 0, script => ['stream-error', 'stream-cut']);
    my $rid = $p->ask(query => "Are the lockers free, asks $provider?");
    my $r = $p->wait_job($rid, 20);
    is($r->{status}, 'completed', "$provider: an error event and a cut "
       . 'stream, then an answer');
    is($r->{attempts}, 3, '... at the third attempt');
    @ev = events($rid);
    is(join(' ', map { ($_->[0] eq 'delta' ? 'd' : $_->[0])
                       . ($_->[1] // '') } @ev),
       'd1 d1 d1 restart2 d2 d2 d2 restart3 '
       . join(' ', ('d3') x (() = text_of(3, @ev) =~ /\S+/g)) . ' done',
       '... three pieces of each failed attempt, each new one restarted');
    is(text_of(3, @ev), $r->{answer}, '... the last attempt\'s pieces make '
       . 'the answer');
    is(stored($rid), $r->{answer}, '... as stored');
    is(text_of(1, @ev), 'Mock answer to: ', '... an earlier attempt\'s '
       . 'pieces are what it sent');

    # a request the provider refuses: the job fails, and says so there
    $mock->set(script => ['400']);
    my $fid = $p->ask(query => "Is this refused, asks $provider?");
    my $fj = $p->wait_job($fid);
    is($fj->{status}, 'failed', "$provider: refused, failed");
    my @fev = events($fid);
    is(join(' ', map { $_->[0] } @fev), 'error', '... one "error" entry');
    is($fev[-1][4], $fj->{error}, "... with the job's error");

    # a server that does not stream: one JSON body, no events
    $mock->set(script => ['plain']);
    my $pid = $p->ask(query => "Is there a sauna, asks $provider?");
    my $pj = $p->wait_job($pid);
    is($pj->{status}, 'completed', "$provider: a server that answers one "
       . 'JSON body');
    is($pj->{answer}, "Mock answer to: Is there a sauna, asks $provider?",
       '... its answer');
    is(join(' ', map { $_->[0] } events($pid)), 'done',
       '... and no pieces, only the end');
}

# llm_stream 0: nothing asked, nothing streamed

$p->stop;
$p->configure(%anthropic, llm_stream => 0);
$p->start;
my $nid = $p->ask(query => 'Is streaming off?');
my $nj = $p->wait_job($nid);
is($nj->{status}, 'completed', 'llm_stream 0: completed');
ok(!exists decode_json($mock->stats->{last}{body})->{stream},
   '... "stream" not asked');
is(join(' ', map { $_->[0] } events($nid)), 'done', '... no pieces');

# the extractive provider streams its answer too

$p->stop;
$p->configure(llm_provider => 'extractive', llm_model => 'extractive');
$p->start;
my $xid = $p->ask(query => 'How long are answers cached?');
my $xj = $p->wait_job($xid);
is($xj->{status}, 'completed', 'extractive: completed');
my @xev = events($xid);
cmp_ok(scalar(@xev), '>', 1, 'extractive: ' . scalar(@xev) . ' pieces');
is(text_of(1, @xev), $xj->{answer}, '... which make the answer');
is(stored($xid), $xj->{answer}, '... as stored');

$p->finish;
