#!/usr/bin/perl
# Chaos: the whole stack under a continuous ask load while its parts fail
# in turn.  nginx (2 workers) with the module, Redis with AOF, PostgreSQL,
# the pool (2 worker processes) and a mock LLM answering in 50 - 500 ms.
# Four forked clients ask new questions, repeat popular ones (cache hits),
# ask the same question at once (followers), continue their chats, as
# several users, record every response in a file, and poll each 202 job
# to its end.  Meanwhile, with a pause between each:
#
#   kill -9 of a pool worker; kill -9 of the supervisor (then the pool is
#   started again, as a service manager would); Redis stopped and started
#   on the same port (AOF); PostgreSQL restarted in fast mode (SIGINT, as
#   pg_ctl restart -m fast); PostgreSQL (postmaster and children) stopped
#   with SIGSTOP for 10 s; Redis stopped with SIGSTOP for 3 s; SIGHUP of
#   the pool; nginx reload.
#
# Then, once the queue has drained, it prints and checks: every accepted
# job completed, or failed with a reason; every job's exchange (and every
# cache hit's record) in its chat exactly once; the LLM asked once per
# job but for re-asks a worker's death explains, bounded; every non-2xx
# answer JSON with an "error", none later than a bound, 503s while Redis
# was away and answers again after it, without a reload; the RSS of the
# nginx workers and the pool's processes before and after.
#
# RAGNX_CHAOS_SECONDS=N repeats the round of faults until N s of load have
# passed (default: one round, about a minute).

use strict;
use warnings;
use lib 't/lib';
use Test::More;
use Cwd qw(getcwd);
use Digest::MD5 ();
use Encode ();
use IO::Select;
use IO::Socket::INET;
use JSON::PP;
use POSIX ();
use Time::HiRes qw(sleep time);
use Ragnx::Test;
use Ragnx::Pool;
use Ragnx::MockLLM;

my $SECONDS  = $ENV{RAGNX_CHAOS_SECONDS} || 0;
my $PAUSE    = 4;        # s between two faults
my $CLIENTS  = 4;
my $SLOW     = 5;        # s: no response may take longer
my $RSS_MAX  = 20 * 1024;    # KiB of growth allowed per process
my $WORKERS  = 2;
my $CONC     = 4;

my $root = getcwd();
my $t = Ragnx::Test->new;
# AOF with Redis's default appendfsync everysec (checked below)
my $rp = $t->start_redis(appendonly => 1);
is($t->redis('CONFIG', 'GET', 'appendfsync'), "appendfsync\neverysec",
   'Redis: AOF, fsync every second');
$t->start_postgres;
my $mock = Ragnx::MockLLM->start($t, delay_ms => 50, delay_max_ms => 500);
my $p = Ragnx::Pool->new($t);
my $json = JSON::PP->new->canonical->utf8;
my $secret = 'chaos-test-secret-0123456789abcdef';
my $key = $t->file('hs.key', $secret);

$p->configure(llm_provider => 'openai', llm_base_url => $mock->url . '/v1',
              llm_model => 'mock', llm_timeout => 10000,
              workers => $WORKERS, concurrency => $CONC, db_pool => 4,
              max_attempts => 10, retry_base => 200, retry_max => 2000,
              db_query_timeout => 3000, visibility_timeout => 8000,
              log_level => 'info');
my ($rc, $out) = $p->cli('migrate');
is($rc, 0, 'migrate') or diag($out);
mkdir "$t->{dir}/corpus";
$t->file('corpus/ops.md', <<'EOF');
# Operations

## Cache

Answers are cached in Redis for an hour; a re-ingest changes the cache
generation.

## Queue

Jobs wait in a Redis stream; a worker killed mid-job loses nothing: its
entries are handed over to the living workers.
EOF
($rc, $out) = $p->cli('ingest', "$t->{dir}/corpus");
is($rc, 0, 'ingest') or diag($out);
$p->start;

$t->start_nginx(
    workers => 2,
    http    => <<"EOF",
    ragnx_redis 127.0.0.1:$rp pool=2;
    ragnx_redis_timeout 300ms;
    ragnx_ask_gen_refresh 100ms;
EOF
    server  => <<"EOF");
        ragnx_jwt_key_file $key;
        error_page 400 401 403 404 405 413 429 500 502 503 504 \@err;
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
EOF

my @USERS = qw(alice bob carol dave);
my %TOKEN = map { $_ => Ragnx::Test::jwt_hs256($secret,
                        { sub => $_, exp => time + 7200 }) } @USERS;
my $port = $t->port;
my $STOP = "$t->{dir}/chaos.stop";

# ---------------------------------------------------------------------
# the clients

# one request on its own connection, read with select up to 20 s:
# (status, body, seconds); status 0 when nothing came
sub http {
    my ($method, $path, $user, $body) = @_;
    my $t0 = time;
    my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $port,
                                  Proto => 'tcp', Timeout => 5)
        or return (0, "connect: $!", time - $t0);
    my $req = "$method $path HTTP/1.1\r\nHost: localhost\r\n"
              . "Connection: close\r\nAuthorization: Bearer $TOKEN{$user}\r\n";
    $req .= defined $body
            ? "Content-Type: application/json\r\nContent-Length: "
              . length($body) . "\r\n\r\n$body"
            : "\r\n";
    syswrite($s, $req);
    my $sel = IO::Select->new($s);
    my $raw = '';
    my $deadline = $t0 + 20;
    while ((my $left = $deadline - time) > 0) {
        last unless $sel->can_read($left);
        my $n = sysread($s, my $buf, 65536);
        last if !$n;
        $raw .= $buf;
    }
    close $s;
    my $r = Ragnx::Test::parse_response($raw);
    return ($r->{status}, $r->{body}, time - $t0);
}

sub client {
    my ($c) = @_;
    srand($$ ^ int(time * 1000));
    open my $log, '>', "$t->{dir}/chaos-client-$c.jsonl" or die $!;
    $log->autoflush(1);
    my $n = 0;
    my (%pending, @chats);   # jobId -> job; [user, chatId]
    my @popular = map { "What is popular question $_ about the cache?" }
                  1 .. 5;
    my $note = sub {
        my (%r) = @_;
        print $log $json->encode(\%r), "\n";
    };
    my $ask = sub {
        my ($kind, $user, $q, $chat) = @_;
        my $t0 = time;
        my ($st, $body, $took) = http(POST => '/api/ask', $user,
            $json->encode({ query => $q, $chat ? (chatId => $chat) : () }));
        my $j = eval { $json->decode($body) };
        $note->(k => $kind, m => 'POST', u => $user, q => $q, st => $st,
                t0 => $t0, dur => $took, body => $body,
                $chat ? (chat => $chat) : ());
        if ($st == 202 && $j && $j->{jobId}) {
            $pending{ $j->{jobId} } = { id => $j->{jobId}, u => $user,
                                        chat => $j->{chatId}, q => $q };
        }
        return ($st, $j);
    };
    my $poll = sub {
        my ($job) = @_;
        my $t0 = time;
        my ($st, $body, $took) = http(GET => "/api/ask/$job->{id}",
                                      $job->{u});
        my $j = eval { $json->decode($body) } || {};
        my $end = $st == 200 && ($j->{status} || '') =~ /^(completed|failed)$/;
        $note->(k => 'poll', m => 'GET', u => $job->{u}, id => $job->{id},
                st => $st, t0 => $t0, dur => $took, body => $body,
                $end ? (end => $j->{status}) : ());
        if ($end) {
            delete $pending{ $job->{id} };
            push @chats, [$job->{u}, $job->{chat}]
                if $j->{status} eq 'completed';
        }
    };
    while (!-e $STOP) {
        $n++;
        my $user = $USERS[rand @USERS];
        my $r = rand;
        if ($r < 0.30) {
            $ask->('new', $user, "Where is the queue kept, asks $c-$n?");
        } elsif ($r < 0.55) {
            # the question of the moment: every client asks it within
            # the same two seconds, so most become followers or hits
            my $slot = int(time / 2);
            $ask->('hot', $user, "How long are answers cached, slot $slot?");
        } elsif ($r < 0.70) {
            $ask->('popular', $user, $popular[rand @popular]);
        } elsif ($r < 0.80) {
            # three users at once with one new question: one leader,
            # its followers
            my $q = "What does a worker lose when killed, burst $c-$n?";
            my @socks;
            for my $u (@USERS[0 .. 2]) {
                my $pid = fork() // die "fork: $!";
                if ($pid == 0) {
                    open STDOUT, '>', '/dev/null';
                    $ask->('burst', $u, $q);
                    POSIX::_exit(0);
                }
                push @socks, $pid;
            }
            waitpid($_, 0) for @socks;
        } elsif (@chats) {
            my ($u, $chat) = @{ $chats[rand @chats] };
            $ask->('chat', $u, "And what else, follow-up $c-$n?", $chat);
        }
        # the burst's children record their own 202s: learn them
        my @due = sort { $a->{id} cmp $b->{id} } values %pending;
        $poll->($_) for grep { defined } @due[0 .. 1];
        sleep 0.05 + rand 0.1;
    }
    # the bursts' jobs were recorded by their forks: take them from the log
    close $log;
    open my $in, '<', "$t->{dir}/chaos-client-$c.jsonl" or die $!;
    while (my $l = <$in>) {
        my $r = eval { $json->decode($l) } or next;
        next unless ($r->{k} eq 'burst') && $r->{st} == 202;
        my $j = eval { $json->decode($r->{body}) } or next;
        $pending{ $j->{jobId} } ||= { id => $j->{jobId}, u => $r->{u},
                                      chat => $j->{chatId}, q => $r->{q} };
    }
    close $in;
    my %done;
    open $in, '<', "$t->{dir}/chaos-client-$c.jsonl" or die $!;
    while (my $l = <$in>) {
        my $r = eval { $json->decode($l) } or next;
        $done{ $r->{id} } = 1 if $r->{end};
    }
    close $in;
    delete @pending{ keys %done };
    open $log, '>>', "$t->{dir}/chaos-client-$c.jsonl" or die $!;
    $log->autoflush(1);
    my $deadline = time + 120;
    while (%pending && time < $deadline) {
        my @left = values %pending;
        $poll->($_) for @left;
        sleep 0.2;
    }
    close $log;
}

# ---------------------------------------------------------------------
# processes and their memory

sub rss {
    my ($pid) = @_;
    my $s = Ragnx::Test::slurp("/proc/$pid/status");
    return $s =~ /^VmRSS:\s+(\d+) kB/m ? $1 : undef;
}

my %RSS;    # pid -> { role, first, last }

sub snapshot {
    my %roles = (
        (map { $_ => 'nginx worker' }
         Ragnx::Test::children($t->{pids}{nginx})),
        (map { $_ => 'pool worker' } $p->children),
        ($p->pid ? ($p->pid => 'pool supervisor') : ()),
    );
    for my $pid (keys %roles) {
        my $kb = rss($pid) // next;
        my $e = $RSS{$pid} ||= { role => $roles{$pid}, first => $kb,
                                 since => time };
        $e->{last} = $kb;
        $e->{seen} = time;
    }
}

# ---------------------------------------------------------------------
# the faults

my @stopped;
my @orphans;    # a killed supervisor's workers: they drain and exit
END {
    kill 'CONT', @stopped if @stopped;
}

sub wait_for {
    my ($cond, $timeout) = @_;
    my $deadline = time + ($timeout || 10);
    until ($cond->()) {
        return 0 if time > $deadline;
        sleep 0.05;
    }
    return 1;
}

sub pg_procs {
    my $pm = $t->{pids}{postgres};
    return (Ragnx::Test::children($pm), $pm);
}

my @FAULTS = (
    [ 'kill -9 of a pool worker' => sub {
        my @kids = $p->children;
        my $kid = $kids[rand @kids];
        kill 'KILL', $kid;
        ok(wait_for(sub { my @k = grep { $_ != $kid } $p->children;
                          @k >= $WORKERS }),
           'the supervisor restarted the killed worker');
    } ],
    [ 'kill -9 of the pool supervisor' => sub {
        my $sup = $p->pid;
        push @orphans, $p->children;
        kill 'KILL', $sup;
        waitpid($sup, 0);
        delete $t->{pids}{worker};
        # the operator's service manager starts it again
        $p->start;
    } ],
    [ 'Redis restart (AOF)' => sub {
        $t->stop_redis;
        sleep 1.5;
        $t->start_redis(appendonly => 1);
    } ],
    [ 'PostgreSQL restart (fast)' => sub {
        $t->stop_postgres;
        $t->start_postgres;
    } ],
    [ 'SIGSTOP of PostgreSQL for 10 s' => sub {
        @stopped = pg_procs();
        kill 'STOP', @stopped;
        sleep 10;
        kill 'CONT', reverse @stopped;
        @stopped = ();
    } ],
    [ 'SIGSTOP of Redis for 3 s' => sub {
        @stopped = ($t->{pids}{redis});
        kill 'STOP', @stopped;
        sleep 3;
        kill 'CONT', @stopped;
        @stopped = ();
    } ],
    [ 'SIGHUP of the pool' => sub {
        my %old = map { $_ => 1 } $p->children;
        kill 'HUP', $p->pid;
        ok(wait_for(sub { grep({ !$old{$_} } $p->children) >= $WORKERS },
                    20),
           'the reload started new workers');
    } ],
    [ 'nginx reload' => sub { $t->reload_nginx } ],
);

# ---------------------------------------------------------------------
# the run

my @clients;
for my $c (1 .. $CLIENTS) {
    my $pid = fork() // die "fork: $!";
    if ($pid == 0) {
        # never return: the END blocks would remove the test directory
        eval { client($c) };
        print STDERR "client $c: $@" if $@;
        POSIX::_exit(0);
    }
    push @clients, $pid;
}

my $t_start = time;
sleep 3;
snapshot();
my @timeline;    # [name, start, end]
my $round = 0;
do {
    $round++;
    for my $f (@FAULTS) {
        my ($name, $do) = @$f;
        snapshot();
        my $t0 = time;
        $do->();
        push @timeline, [$name, $t0, time];
        diag(sprintf '%5.1f s: %s (%.1f s)', $t0 - $t_start, $name,
             time - $t0);
        sleep $PAUSE;
    }
} while (time - $t_start < $SECONDS);
snapshot();
$t->file('chaos.stop', '');
my $t_load_end = time;

for my $pid (@clients) {
    my $ok = 0;
    for (1 .. 1500) {
        if (waitpid($pid, POSIX::WNOHANG()) == $pid) { $ok = 1; last }
        sleep 0.1;
    }
    ok($ok, "client $pid finished") or kill 'KILL', $pid;
}

# the queue drains: no job waiting, running or delayed, no record left
my $drained = wait_for(sub {
    $t->redis('XLEN', '{ragnx}:jobs') == 0
    && $t->redis('ZCARD', '{ragnx}:delayed') == 0
    && $t->redis('XLEN', '{ragnx}:records') == 0
}, 60);
ok($drained, 'the queue drained')
    or diag('jobs ' . $t->redis('XLEN', '{ragnx}:jobs') . ', delayed '
            . $t->redis('ZCARD', '{ragnx}:delayed') . ', records '
            . $t->redis('XLEN', '{ragnx}:records'));
snapshot();

# ---------------------------------------------------------------------
# what the clients saw

my (@resp, %jobs, @hits);
for my $c (1 .. $CLIENTS) {
    open my $in, '<', "$t->{dir}/chaos-client-$c.jsonl" or next;
    while (my $l = <$in>) {
        my $r = eval { $json->decode($l) } or next;
        push @resp, $r;
        my $b = eval { $json->decode($r->{body}) } || {};
        if ($r->{m} eq 'POST' && $r->{st} == 202) {
            $jobs{ $b->{jobId} } ||= { id => $b->{jobId}, chat => $b->{chatId},
                                       q => $r->{q}, u => $r->{u},
                                       kind => $r->{k}, t0 => $r->{t0} };
        } elsif ($r->{m} eq 'POST' && $r->{st} == 200) {
            push @hits, { chat => $b->{chatId}, answer => $b->{answer},
                          q => $r->{q}, kind => $r->{k} };
        } elsif ($r->{k} eq 'poll' && $r->{end}) {
            $jobs{ $r->{id} }{end} = $r->{end};
            $jobs{ $r->{id} }{error} = $b->{error};
            $jobs{ $r->{id} }{answer} = $b->{answer};
        }
    }
}
my $asks = grep { $_->{m} eq 'POST' } @resp;
my %by_status;
$by_status{ "$_->{m} $_->{st}" }++ for @resp;
diag(sprintf 'load: %.0f s, %d requests (%d asks), %s', $t_load_end - $t_start,
     scalar @resp, $asks,
     join(', ', map { "$_: $by_status{$_}" } sort keys %by_status));
my %kinds;
$kinds{ $_->{k} }++ for grep { $_->{m} eq 'POST' } @resp;
diag('asks by kind: ' . join(', ', map { "$_ $kinds{$_}" } sort keys %kinds));
cmp_ok(scalar keys %jobs, '>=', 50, 'at least 50 jobs accepted (202)');
cmp_ok(scalar @hits, '>=', 20, 'at least 20 cache hits');

# every accepted job ended; failures say why

{
    my (%ends, %reasons, @open);
    for my $j (values %jobs) {
        if (!$j->{end}) {
            # never seen at its end by its client: ask Redis what it is
            my $st = $t->redis('HGET', "{ragnx}:job:$j->{id}", 'status');
            push @open, "$j->{id} ($j->{kind}): " . ($st || 'no hash');
            next;
        }
        $ends{ $j->{end} }++;
        $reasons{ $j->{error} // '(none)' }++ if $j->{end} eq 'failed';
    }
    diag('jobs: ' . join(', ', map { "$_ $ends{$_}" } sort keys %ends)
         . (%reasons ? '; failed: ' . join(', ', map { "\"$_\" x $reasons{$_}" }
                                            sort keys %reasons) : ''));
    ok(!@open, 'every accepted job completed or failed')
        or diag(join "\n", @open[0 .. ($#open < 9 ? $#open : 9)]);
    ok(!exists $reasons{'(none)'}, 'every failed job says why');
}

# every job's exchange, and every hit's record, once in its chat

{
    my %rows;    # chat -> job -> role -> count
    my %content; # chat -> assistant answers
    for (split /\n/, $t->psql(
             "SELECT chat_id, job_id, role, count(*) FROM chat_messages "
             . "GROUP BY 1, 2, 3"))
    {
        my ($chat, $job, $role, $n) = split /\|/;
        $rows{$chat}{$job}{$role} += $n;
    }
    for (split /\n/, $t->psql(
             "SELECT chat_id, md5(content) FROM chat_messages "
             . "WHERE role = 'assistant' AND seq = 0 AND model = 'cache'"))
    {
        my ($chat, $md5) = split /\|/;
        $content{$chat} = $md5;
    }
    my (%hits_in, @bad);
    my ($untold, @untold) = (0);
    $hits_in{ $_->{chat} }++ for @hits;
    my %jobs_in;
    push @{ $jobs_in{ $_->{chat} } }, $_ for values %jobs;
    my %chats = map { $_ => 1 } keys %hits_in, keys %jobs_in;
    my $pairs = sub {
        my ($r) = @_;
        return ($r->{user} // 0) == 1 && ($r->{assistant} // 0) == 1
               && keys %$r == 2;
    };
    my %all = %rows;
    for my $chat (sort keys %chats) {
        my $in = delete($all{$chat}) || {};
        my %in = %$in;
        for my $j (@{ $jobs_in{$chat} || [] }) {
            my $r = delete $in{ $j->{id} } || {};
            if (($j->{end} || '') eq 'completed') {
                push @bad, "job $j->{id} ($j->{kind}) in chat $chat: "
                           . $json->encode($r)
                    unless $pairs->($r);
            } elsif (%$r) {
                push @bad, "failed job $j->{id} has messages: "
                           . $json->encode($r);
            }
        }
        # what is left are the records of the hits, and the exchanges of
        # asks answered 503 whose script Redis ran all the same (below)
        my $want = $hits_in{$chat} || 0;
        my @rec = grep { $pairs->($in{$_}) } keys %in;
        push @bad, "chat $chat: $want hits, records "
                   . $json->encode(\%in)
            unless @rec == keys %in && @rec >= $want;
        $untold += @rec - $want if @rec > $want;
        push @untold, keys %in if @rec > $want && !$want;
    }
    for my $h (@hits) {
        my $md5 = Digest::MD5::md5_hex(Encode::encode('UTF-8',
                                                      $h->{answer} // ''));
        push @bad, "hit in chat $h->{chat}: recorded answer differs"
            if ($content{ $h->{chat} } // '') ne $md5;
    }
    # chats nobody was told of: asks answered 503 whose script ran later
    my @unknown = sort keys %all;
    for my $chat (@unknown) {
        push @bad, "unknown chat $chat: " . $json->encode($all{$chat})
            if grep { !$pairs->($_) } values %{ $all{$chat} };
        $untold += keys %{ $all{$chat} };
        push @untold, keys %{ $all{$chat} };
    }
    # only an ask answered 503 can have been written unbeknown to its
    # client: one that waited out ragnx_redis_timeout, or was pending on
    # a connection nginx gave up on
    my $late503 = grep { $_->{m} eq 'POST' && $_->{st} == 503 } @resp;
    diag(sprintf 'chats: %d with jobs, %d with hits; %d exchanges of asks '
         . 'answered 503 (of %d such answers)',
         scalar keys %jobs_in, scalar keys %hits_in, $untold, $late503);
    ok(!@bad, 'one user and one assistant message per job, one record '
              . 'per hit') or diag(join "\n", @bad[0 .. ($#bad < 19 ? $#bad : 19)]);
    cmp_ok($untold, '<=', $late503,
           'exchanges nobody was told of: no more than the asks answered '
           . '503');
    # when each was asked: a job id is a v7 UUID, its first 48 bits the
    # time nginx made it (ms); the 503 it got, and how soon
    my $budget = 0.3 - 0.075;    # the ask script's deadline (the module)
    my @p503 = grep { $_->{m} eq 'POST' && $_->{st} == 503 } @resp;
    my ($early, $late, $restart) = (0, 0, 0);
    for my $id (@untold) {
        my $at = (hex(substr($id, 0, 8)) * 65536
                  + hex(substr($id, 9, 4))) / 1000;
        my ($r) = grep { $_->{t0} <= $at + 0.002
                         && $at <= $_->{t0} + $_->{dur} } @p503;
        my @in = map { $_->[0] } grep { $at >= $_->[1] - 1 && $at <= $_->[2] }
                 @timeline;
        my $soon = $r && $r->{dur} < $budget;
        $soon ? $early++ : $late++;
        # a Redis shutting down (the restart) can run a script, keep it in
        # its AOF and close the connection before it writes the reply: a
        # 503 at once whose outcome nginx cannot know
        $restart++ if $soon && grep { /^Redis restart/ } @in;
        diag(sprintf 'asked at %.3f s, answered 503 after %s, carried out: '
             . '%s (%s)', $at - $t_start,
             $r ? sprintf('%.3f s', $r->{dur}) : '?', $id,
             join(', ', @in) || 'no fault');
    }
    $untold -= @untold;
    is($late + $untold, 0, 'an ask answered 503 at its deadline wrote '
                           . 'nothing');
    # a script that may still act is answered by its reply: nginx gives a
    # silent connection up only after the deadlines of the scripts in it
    # (t/ask-late.t shows both); what is left is a connection Redis closes
    # as it shuts down, between running a script and writing its reply
    is($early - $restart, 0, 'an ask answered 503 before its deadline wrote '
                             . 'nothing, unless Redis shut down before '
                             . 'replying');
    diag("$restart ask(s) answered 503 as Redis shut down were carried "
         . 'out') if $restart;
}

# the LLM asked once per job, but for re-asks a worker's death explains

{
    my $qs = decode_json($t->request(GET => '/_mock/questions',
                                     port => $mock->port)->{body});
    # the faults that end a job's thread mid-call, and how many calls
    # each can cut: a worker's jobs, or every worker's
    my %cuts = ('kill -9 of a pool worker' => $CONC,
                'kill -9 of the pool supervisor' => $CONC * $WORKERS);
    my (%asked, %used, @unexplained, $reasked);
    my %questions = map { $_->{q} => 1 } values %jobs;
    for my $q (sort keys %questions) {
        my @at = @{ $qs->{$q} || [] };
        $asked{ scalar @at }++;
        next unless @at > 1;
        $reasked++;
        for my $i (1 .. $#at) {
            my ($f) = grep { $cuts{ $_->[0] } && $_->[1] >= $at[$i - 1] - 0.1
                             && $_->[1] <= $at[$i] } @timeline;
            if ($f) {
                $used{ "$f->[0] at " . sprintf('%.1f', $f->[1] - $t_start) }++;
            } else {
                push @unexplained, sprintf '"%s" at %s', $q,
                    join(', ', map { sprintf '%.2f', $_ - $t_start } @at);
            }
        }
    }
    my $completed_q = keys %{{ map { $_->{q} => 1 }
                               grep { ($_->{end} || '') eq 'completed' }
                               values %jobs }};
    diag('LLM requests per question: '
         . join(', ', map { "$_ x $asked{$_}" } sort keys %asked)
         . sprintf('; %d questions asked more than once', $reasked || 0)
         . (%used ? ': ' . join(', ', map { "$used{$_} after the $_ s" }
                                   sort keys %used) : ''));
    ok(!@unexplained, 'every re-ask follows a worker killed mid-call')
        or diag(join "\n", @unexplained[0 .. ($#unexplained < 9
                                              ? $#unexplained : 9)]);
    my @over = grep { my ($n) = /^(.*) at /; $used{$_} > $cuts{$n} } keys %used;
    ok(!@over, 'no fault explains more re-asks than the calls it cut')
        or diag(join ', ', map { "$_: $used{$_}" } @over);
    is($asked{0} // 0, 0, 'every accepted question reached the LLM');
    cmp_ok($completed_q, '>', 0, "$completed_q questions answered");
}

# nginx: JSON errors, no hang, 503 while Redis was away, then answers

{
    my @notjson = grep { $_->{st} !~ /^2/ && $_->{st} != 0
                         && !eval { exists $json->decode($_->{body})->{error} } }
                  @resp;
    ok(!@notjson, 'every non-2xx response is JSON with an "error"')
        or diag(join "\n", map { "$_->{m} $_->{st}: $_->{body}" }
                           @notjson[0 .. ($#notjson < 4 ? $#notjson : 4)]);
    my @none = grep { $_->{st} == 0 } @resp;
    ok(!@none, 'every request got a response') or diag(scalar(@none)
        . ' without: ' . join(', ', map { $_->{body} } @none[0 .. 0]));
    my @slow = sort { $b->{dur} <=> $a->{dur} } @resp;
    diag(sprintf 'slowest responses: %s',
         join(', ', map { sprintf '%s %d %.2f s at %.1f s', $_->{m}, $_->{st},
                          $_->{dur}, $_->{t0} - $t_start }
                    @slow[0 .. 2]));
    cmp_ok($slow[0]{dur}, '<', $SLOW, "no response took $SLOW s or more");
    my %unexpected;
    $unexpected{"$_->{m} $_->{st}"}++
        for grep { $_->{st} !~ /^(200|202|503)$/ } @resp;
    ok(!%unexpected, 'only 200, 202 and 503 answered')
        or diag(explain(\%unexpected));

    for my $f (grep { $_->[0] =~ /Redis/ } @timeline) {
        my ($name, $from, $to) = @$f;
        # the next nginx reload after it (or the end of the load)
        my ($reload) = ((map { $_->[1] } grep { $_->[0] eq 'nginx reload'
                                                && $_->[1] > $to } @timeline),
                        $t_load_end);
        my @in = grep { $_->{t0} >= $from && $_->{t0} + $_->{dur} <= $to + 0.5 }
                 @resp;
        my $n503 = grep { $_->{st} == 503 } @in;
        cmp_ok($n503, '>', 0, sprintf '%s at %.1f s: %d answers 503 (of %d)',
               $name, $from - $t_start, $n503, scalar @in);
        my ($back) = sort { $a <=> $b }
                     map { $_->{t0} + $_->{dur} - $to }
                     grep { $_->{st} =~ /^20[02]$/ && $_->{t0} > $to
                            && $_->{m} eq 'POST' } @resp;
        ok(defined $back && $to + $back < $reload,
           sprintf '... answered again %.1f s after it, before nginx '
                   . 'reloaded', $back // -1);
    }
}

# memory: the RSS of each process when first and last seen

{
    my @grew;
    for my $pid (sort { $RSS{$a}{role} cmp $RSS{$b}{role} || $a <=> $b }
                 keys %RSS)
    {
        my $e = $RSS{$pid};
        diag(sprintf '%-15s %6d: %6d -> %6d KiB over %4.0f s', $e->{role},
             $pid, $e->{first}, $e->{last}, $e->{seen} - $e->{since});
        push @grew, $pid if $e->{last} - $e->{first} > $RSS_MAX;
    }
  SKIP: {
        # ASan keeps freed memory in quarantine and maps shadow memory as
        # it goes: RSS grows by design there, and LeakSanitizer, which the
        # harness turns on, is what finds leaks in those builds
        skip 'RSS growth says nothing under ASan: LeakSanitizer checks '
             . 'leaks there', 1 if $ENV{RAGNX_SANITIZE};
        ok(!@grew, 'no process grew by more than '
           . ($RSS_MAX / 1024) . ' MiB') or diag("grew: @grew");
    }
    my $long = grep { $_->{seen} - $_->{since} >= 20 } values %RSS;
    cmp_ok($long, '>=', 3, "$long processes watched for 20 s or more");
}

# a killed supervisor's workers drained and went
ok(wait_for(sub { !grep { kill 0, $_ } @orphans }, 40),
   "the killed supervisor's workers exited (@orphans)")
    or kill 'KILL', @orphans;

my @bad = $p->log_problems;
ok(!@bad, 'no crash in the worker log') or diag(join "\n", @bad[0 .. 4]);
$p->finish;
