#!/usr/bin/perl
# Logs and the request id, end to end: a client's X-Request-Id, where
# ragnx_request_id_trust is on, is the id nginx answers with
# (X-Request-Id), the "rid" of every pool log line about the job it
# made, and the request_id stored with the job's messages (and, for a
# cache hit, with the chat row of the records lane); where trust is off,
# or the id is malformed or too long, nginx's own $request_id is used
# instead.  Every line of the pool's log is a JSON object; SIGUSR1 and
# SIGHUP open log_file again (rename, signal, new lines in the new
# file); the access log with escape=json is one JSON object a line.

use strict;
use warnings;
use lib 't/lib';
use Test::More;
use Cwd qw(getcwd);
use JSON::PP;
use Time::HiRes qw(time sleep);
use Ragnx::Test;
use Ragnx::Pool;

my $root = getcwd();
my $t = Ragnx::Test->new;
my $d = $t->dir;
$t->start_redis;
$t->start_postgres;
my $secret = 'logs-test-secret-0123456789abcdef';
my $keyfile = $t->file('hs.key', $secret);
my $json = JSON::PP->new->canonical;

# log_file is the file the pool's stdout goes to as well: Pool->start
# reads it, and after a rename the pool writes the file of that name anew
my $p = Ragnx::Pool->new($t);
$p->configure(llm_model => 'extractive', log_file => "$d/worker.log",
              pid_file => "$d/worker.pid", jwt_key_file => $keyfile,
              password_opslimit => 1, password_memlimit => 8192);
my ($rc, $out) = $p->cli('migrate');
is($rc, 0, 'migrate') or diag($out);
mkdir "$d/corpus";
$t->file('corpus/README.md', <<'EOF');
# Ragnx overview

## Cache

Answers are cached in Redis for one hour. The cache TTL is set with the
cache_ttl setting of the worker pool.

## Queue

Questions wait in a Redis stream until a worker of the pool takes them.
EOF
($rc, $out) = $p->cli('ingest', "$d/corpus");
is($rc, 0, 'ingest') or diag($out);
$p->start;

my $rp = $t->redis_port;
my (undef, $rpcpub) = $t->rpc_keys;
$t->start_nginx(
    http   => <<"EOF2",
    ragnx_redis 127.0.0.1:$rp;
    ragnx_ask_gen_refresh 100ms;
    log_format ragnx escape=json
        '{"rid":"\$ragnx_request_id","nginx_rid":"\$request_id",'
        '"sub":"\$ragnx_jwt_sub",'
        '"request":"\$request","status":"\$status","route":"\$ragnx_route",'
        '"outcome":"\$ragnx_outcome","job":"\$ragnx_job_id",'
        '"redis_time":"\$ragnx_redis_time",'
        '"agent":"\$http_user_agent"}';
    access_log $d/json.log ragnx;
    ragnx_request_id_trust on;
    ragnx_rpc_seal_key $rpcpub;
EOF2
    server => <<"EOF2");
        ragnx_jwt_alg HS256;
        ragnx_jwt_key_file $keyfile;
        add_header X-Request-Id \$ragnx_request_id always;
        error_page 404 405 413 500 503 \@err;
        location \@err { ragnx_json_error; }

        location = /api/ask {
            ragnx_jwt on;
            ragnx_validate_schema $root/schemas/ask.json;
            ragnx_ask;
        }
        location = /untrusted/ask {
            ragnx_request_id_trust off;
            ragnx_jwt on;
            ragnx_validate_schema $root/schemas/ask.json;
            ragnx_ask;
        }
        location /api/ask/ {
            ragnx_jwt on;
            ragnx_ask_status;
        }
        location = /api/auth/register {
            ragnx_validate_schema $root/schemas/register.json;
            ragnx_rpc register;
        }
        location = /api/users/me { ragnx_jwt on; ragnx_rpc me; }
EOF2

my $auth = Ragnx::Test::jwt_hs256($secret, { sub => 'alice',
                                             exp => time + 3600 });

sub ask {
    my ($path, $body, @headers) = @_;
    my $r = $t->request(POST => $path,
        headers => [ Authorization => "Bearer $auth",
                     'Content-Type' => 'application/json', @headers ],
        body => $json->encode($body));
    return ($r, Ragnx::Test::json_body($r) || {});
}

sub until_true {
    my ($cond, $secs) = @_;
    my $deadline = time + ($secs || 15);
    while (time < $deadline) {
        my $v = $cond->();
        return $v if $v;
        sleep 0.05;
    }
    return undef;
}

sub psql_wait {
    my ($sql, $want) = @_;
    my $v;
    until_true(sub { ($v = $t->psql($sql) // '') eq $want });
    return $v;
}

my $hex32 = qr/^[0-9a-f]{32}$/;

# ---- a trusted client id: response, pool log, stored messages ----------

my $rid = 'client-REQ_1.2:3';
my $log0 = length $p->worker_log;
my ($r, $b) = ask('/api/ask', { query => 'How long is the cache TTL?' },
                  'X-Request-Id' => $rid);
is($r->{status}, 202, 'trusted id: 202') or diag($r->{raw});
is($r->{headers}{'x-request-id'}, $rid,
   '... X-Request-Id answers with the client\'s id');
my $job = $b->{jobId};
is($p->wait_job($job)->{status}, 'completed', '... the job completes');

my @lines;
until_true(sub {
    @lines = $p->job_lines($job, $log0);
    grep { $_->{msg} =~ /^completed/ } @lines });
ok(@lines >= 2, 'the pool logs the job (' . scalar(@lines) . ' lines)');
is(scalar(grep { ($_->{rid} // '') eq $rid } @lines), scalar @lines,
   '... every line about it carries the request id');
is(scalar(grep { ($_->{chat} // '') eq $b->{chatId} } @lines),
   scalar @lines, '... and the chat');
my ($done) = grep { $_->{msg} =~ /^completed/ } @lines;
ok($done && defined $done->{wait_ms} && defined $done->{retrieve_ms}
       && defined $done->{llm_ms} && defined $done->{persist_ms},
   'the completion line has the stage timings')
    or diag(explain $done);
is($done->{level}, 'info', '... at info');

is(psql_wait("SELECT string_agg(coalesce(request_id, 'NULL'), ',' "
             . "ORDER BY seq) FROM messages WHERE job_id = '$job'",
             "$rid,$rid"),
   "$rid,$rid", 'both messages stored with the request id');
my $first = $job;
is($t->psql("SELECT string_agg(request_id, ',' ORDER BY seq) FROM "
            . "chat_messages WHERE job_id = '$job'"), "$rid,$rid",
   '... which chat_messages shows');

# ---- the same question in a new chat: a hit, on the records lane -------

my $hit = 'hit-0001';
($r, $b) = ask('/api/ask', { query => '  how long is the CACHE ttl? ' },
               'X-Request-Id' => $hit);
is($r->{status}, 200, 'the same question: a hit') or diag($r->{raw});
is($r->{headers}{'x-request-id'}, $hit, '... with the client\'s id');
my $chat2 = $b->{chatId};
is(psql_wait("SELECT coalesce(request_id, 'NULL') FROM chats WHERE id = "
             . "'$chat2' AND job_id IS NOT NULL", $hit), $hit,
   'the record\'s chat row holds the request id');
is($t->psql("SELECT string_agg(request_id, ',' ORDER BY seq) FROM "
            . "chat_messages WHERE chat_id = '$chat2'"), "$hit,$hit",
   '... and chat_messages shows it for both messages');

# ---- a follower of a single-flight leader: its own id, on the records lane

# with the pool stopped the first question stays pending, so the second
# follows it
$p->stop;
my ($lr, $lb) = ask('/api/ask', { query => 'What does a worker take?' },
                    'X-Request-Id' => 'leader-1');
my ($fr, $fb) = ask('/api/ask', { query => 'what does a WORKER take?' },
                    'X-Request-Id' => 'follower-1');
is("$lr->{status} $fr->{status}", '202 202', 'a leader and a follower')
    or diag($fr->{raw});
$p->start;
is($p->wait_job($fb->{jobId})->{status}, 'completed',
   '... the follower is answered with the leader');
is(psql_wait("SELECT coalesce(request_id, 'NULL') FROM chats WHERE id = "
             . "'$fb->{chatId}' AND job_id IS NOT NULL", 'follower-1'),
   'follower-1', '... its chat row holds its own request id');
is(psql_wait("SELECT string_agg(coalesce(request_id, 'NULL'), ',') FROM "
             . "messages WHERE job_id = '$lb->{jobId}'",
             'leader-1,leader-1'),
   'leader-1,leader-1', '... the leader\'s messages hold the leader\'s');

# ---- trust off: the client's id is ignored -----------------------------

$log0 = length $p->worker_log;
($r, $b) = ask('/untrusted/ask', { query => 'Where do questions wait?' },
               'X-Request-Id' => 'client-ignored');
is($r->{status}, 202, 'trust off: 202') or diag($r->{raw});
my $own = $r->{headers}{'x-request-id'} // '';
like($own, $hex32, '... X-Request-Id is nginx\'s own');
$job = $b->{jobId};
is($p->wait_job($job)->{status}, 'completed', '... completed');
until_true(sub { grep { $_->{msg} =~ /^completed/ }
                      $p->job_lines($job, $log0) });
@lines = $p->job_lines($job, $log0);
ok(@lines && !(grep { ($_->{rid} // '') ne $own } @lines),
   '... the pool\'s lines carry nginx\'s id');
is(psql_wait("SELECT string_agg(coalesce(request_id, 'NULL'), ',') FROM "
             . "messages WHERE job_id = '$job'", "$own,$own"), "$own,$own",
   '... and so do the stored messages');
ok(!grep({ ($_->{rid} // '') eq 'client-ignored' }
         Ragnx::Pool::json_lines($p->worker_log)),
   'the ignored id is nowhere in the pool\'s log');

# ---- calls from nginx (register, me) carry it too ----------------------

$log0 = length $p->worker_log;
$r = $t->request(POST => '/api/auth/register',
    headers => [ 'Content-Type' => 'application/json',
                 'X-Request-Id' => 'call-register-1' ],
    body => $json->encode({ email => 'rid@example.com',
                            password => 'correct horse battery' }));
is($r->{status}, 201, 'register: 201') or diag($r->{raw});
$r = $t->request(GET => '/api/users/me',
    headers => [ Authorization => "Bearer $auth",
                 'X-Request-Id' => 'call-me-1' ]);
ok($r->{status} == 200 || $r->{status} == 404, "me: $r->{status}");
for my $c (['register', 'call-register-1'], ['me', 'call-me-1']) {
    my ($method, $want) = @$c;
    my ($l) = until_true(sub {
        [ grep { ($_->{msg} // '') =~ /^call \S+ \(\Q$method\E\): \d+ in/ }
          Ragnx::Pool::json_lines(substr($p->worker_log, $log0)) ] });
    my @l = @{ $l || [] };
    is(scalar @l, 1, "$method: one line for the call");
    is($l[0]{rid}, $want, '... with the request id');
    like($l[0]{call} // '', qr/^[0-9a-f-]{36}$/, '... and the call id');
}
unlike(substr($p->worker_log, $log0), qr/correct horse/,
       'the password is in no line');

# ---- malformed or oversized ids are not trusted ------------------------

my $n = 0;
for my $case (['with a space', 'bad id'], ['with a quote', 'x"y'],
              ['of 65 characters', 'r' x 65], ['with a slash', 'a/b'],
              ['non-ASCII', "caf\xc3\xa9"], ['empty', ''])
{
    my ($name, $bad) = @$case;
    $n++;
    ($r, $b) = ask('/api/ask', { query => "Is a request id $n checked?" },
                   'X-Request-Id' => $bad);
    is($r->{status}, 202, "an id $name: 202") or diag($r->{raw});
    like($r->{headers}{'x-request-id'} // '', $hex32,
         '... not trusted: nginx\'s own id instead');
    if ($n == 1) {
        $job = $b->{jobId};
        my $given = $r->{headers}{'x-request-id'};
        is($p->wait_job($job)->{status}, 'completed', '... completed');
        is(psql_wait("SELECT string_agg(coalesce(request_id, 'NULL'), ',') "
                     . "FROM messages WHERE job_id = '$job'",
                     "$given,$given"), "$given,$given",
           '... which is the one stored');
    }
}
$r = $t->request(GET => '/api/ask/' . $job,
                 headers => [ Authorization => "Bearer $auth",
                              'X-Request-Id' => 'r' x 64 ]);
is($r->{headers}{'x-request-id'}, 'r' x 64, 'an id of 64 characters is taken');

# ---- the pool's log: every line a JSON object --------------------------

# an entry whose id holds quotes, a control character and invalid UTF-8:
# its line still parses, the id escaped, the bytes replaced
$log0 = length $p->worker_log;
$t->redis('XADD', '{ragnx}:jobs', '*', 'id', "x\"y\x01\xff", 'job', 'nope',
          'gen', 'g');
my ($bad) = until_true(sub {
    my @b = grep { ($_->{error} // '') eq 'bad_payload' }
            Ragnx::Pool::json_lines(substr($p->worker_log, $log0));
    @b ? \@b : undef });
ok($bad, 'a bad payload is logged') or diag(substr($p->worker_log, $log0));
is($bad->[0]{job}, "x\"y\x01\x{fffd}",
   '... its id escaped, an invalid byte as U+FFFD');
like($bad->[0]{msg}, qr/bad payload/, '... with its message');

# a message longer than a line (PostgreSQL's error quotes a 3,000-byte
# chatId of a record, quotes and control characters in it): cut at a
# character, marked "...", the line still JSON and at most 2,048 bytes
$log0 = length $p->worker_log;
my $rec = Ragnx::Pool::uuid();
my $long = ('q\\"\\u0001' . "caf\x{e9}") x 375;
my $payload = '{"v":2,"id":"' . $rec . '","owner":"alice","chatId":"'
              . $long . '","query":"q","digest":"' . ('a' x 64)
              . '","createdAt":1}';
utf8::encode($payload);
$t->redis('XADD', '{ragnx}:records', '*', 'id', $rec, 'job', $payload,
          'result', '{"answer":"a"}');
my ($cutline) = until_true(sub {
    my @c = grep { length > 2000 } split /\n/,
            substr($p->worker_log, $log0);
    @c ? \@c : undef });
ok($cutline, 'a message longer than a line is logged')
    or diag(substr($p->worker_log, $log0));
my $cl = $cutline ? $cutline->[0] : '';
ok(length($cl) + 1 <= 2048, '... within 2,048 bytes with its newline ('
   . (length($cl) + 1) . ')');
my $co = eval { JSON::PP->new->utf8->decode($cl) } || {};
like($co->{msg} // '', qr/\.\.\.$/, '... as JSON, its message cut and '
     . 'marked');
ok(defined $co->{pid} && defined $co->{proc},
   '... the fields after the message kept');
is($co->{error}, 'pg', '... with the class of the failure');

my @all = Ragnx::Pool::json_lines($p->worker_log);
my @raw = grep { exists $_->{raw} } @all;
ok(@all > 20 && !@raw, 'every line of the pool\'s log is a JSON object ('
   . scalar(@all) . ' lines)') or diag(join "\n", map { $_->{raw} } @raw);
my @odd = grep {
    !exists $_->{raw}
    && !(($_->{ts} // '') =~ /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/
         && ($_->{level} // '') =~ /^(error|warn|info|debug)$/
         && defined $_->{msg} && ($_->{pid} // '') =~ /^\d+$/)
} @all;
ok(!@odd, '... each with ts (RFC 3339, ms, UTC), level, msg and pid')
    or diag(explain $odd[0]);
my %classes = map { $_->{error} => 1 } grep { $_->{error} } @all;
ok(!(grep { !/^(llm_timeout|llm_network|llm_http_429|llm_http_4xx|
               llm_http_5xx|llm_bad_response|llm_breaker_open|pg|redis|
               bad_payload|chat|internal)$/x } keys %classes),
   'error classes from the bounded set: ' . join(', ', sort keys %classes));

# ---- log_file opened again on SIGUSR1 and on SIGHUP --------------------

my $pid = $p->pid;
my $log = "$d/worker.log";
my $in = sub { -e $_[0] ? Ragnx::Test::slurp($_[0]) : '' };
my $reopened = sub {
    my ($file, $proc) = @_;
    return grep { ($_->{proc} // '') eq $proc
                  && ($_->{msg} // '') eq 'log_file reopened' }
           Ragnx::Pool::json_lines($in->($file));
};
for my $sig ('USR1', 'HUP') {
    rename $log, "$log.$sig" or die "rename: $!";
    kill $sig, $pid;
    ok(until_true(sub { $reopened->($log, 'supervisor') }),
       "SIGUSR1/SIGHUP ($sig): the supervisor logs to a new log_file");
    ok(until_true(sub { $reopened->($log, 'worker 0') }),
       '... and so does its worker')
        or diag($in->($log));
    my $q = "Is the log rotated on $sig?";
    my ($id) = $p->ask(query => $q, rid => "rot-$sig");
    is($p->wait_job($id)->{status}, 'completed', '... a job after it');
    ok(until_true(sub {
           grep { ($_->{job} // '') eq $id && $_->{msg} =~ /^completed/
                  && ($_->{rid} // '') eq "rot-$sig" }
                Ragnx::Pool::json_lines($in->($log)) }),
       '... is logged to the new file, with its request id');
    unlike($in->("$log.$sig"), qr/\Q$id\E/, '... and not to the moved one');
}
ok(kill(0, $pid), 'the pool runs on');

# ---- the access log: escape=json ---------------------------------------

# a user agent with a quote, a backslash and a control character
$t->request(GET => '/api/ask/' . $job,
            headers => [ Authorization => "Bearer $auth",
                         'User-Agent' => "a\"b\\c\x01d" ]);
my @access;
until_true(sub {
    @access = map { my $o = eval { JSON::PP->new->decode($_) }; $o // $_ }
              split /\n/, $in->("$d/json.log");
    grep { ref $_ && ($_->{agent} // '') eq "a\"b\\c\x01d" } @access });
ok(@access > 10 && !(grep { ref $_ ne 'HASH' } @access),
   'every access log line is a JSON object (' . scalar(@access) . ')')
    or diag($in->("$d/json.log"));
ok((grep { ref $_ && ($_->{agent} // '') eq "a\"b\\c\x01d" } @access),
   '... a user agent with a quote, a backslash and a control character '
   . 'escaped');
my ($line) = grep { ref $_ && $_->{rid} eq $rid } @access;
ok($line, 'the trusted request\'s line has its id') or diag(explain \@access);
is(join(' ', map { $line->{$_} // '' } qw(sub route outcome status)),
   'alice ask miss 202', '... its subject, route, outcome and status');
is($line->{job}, $first, '... and the job it made');
like($line->{redis_time}, qr/^0\.\d{6}$/, '... and its Redis time');
($line) = grep { ref $_ && $_->{rid} eq $hit } @access;
is(($line->{outcome} // '') . ' ' . ($line->{status} // ''), 'hit 200',
   'the hit\'s line says hit');
($line) = grep { ref $_ && $_->{rid} eq $own } @access;
ok($line && $line->{nginx_rid} eq $own,
   'untrusted: $ragnx_request_id and $request_id are one id');
ok(!grep({ ref $_ && $_->{rid} =~ $hex32 && $_->{rid} ne $_->{nginx_rid} }
         @access), '... in every line with nginx\'s id');
($line) = grep { ref $_ && $_->{rid} eq 'follower-1' } @access;
is(($line->{outcome} // '') . ' ' . ($line->{job} // ''),
   "follower $fb->{jobId}", 'the follower\'s says follower, and its job');

$t->stop_nginx;
$p->finish;
