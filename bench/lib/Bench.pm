package Bench;

# Benchmark helpers: run wrk against a URL (optionally with a method, body
# and headers through a generated Lua script), parse req/s and latency
# percentiles, and print a table with ratios to a baseline from the same
# run; the LLM stand-in (nginx answering a fixed chat completion); CPU
# time of processes; a Redis connection for polling (Bench::Redis); and
# bench/pool's private stack with its drain case and reference
# (Bench::Pool).  Not a test: it prints figures.

use strict;
use warnings;
use File::Temp qw(tempfile);
use POSIX ();
use Ragnx::Test ();

our $DURATION    = $ENV{BENCH_DURATION}    || 10;
our $CONNECTIONS = $ENV{BENCH_CONNECTIONS} || 64;
our $THREADS     = $ENV{BENCH_THREADS}     || 2;
our $TICKS       = POSIX::sysconf(POSIX::_SC_CLK_TCK()) || 100;

sub lua_quote {
    my ($s) = @_;
    $s =~ s/\\/\\\\/g;
    $s =~ s/"/\\"/g;
    $s =~ s/\n/\\n/g;
    return "\"$s\"";
}

# wrk(url, method => , body => , headers => [k, v, ...], bodies => [...],
#     requests => [[[k, v, ...], body], ...], unique => 1, statuses => 1,
#     delay => ms, spread => ms, cpu => { name => [pid, ...] })
# returns { rps, p50, p99 (ms), requests, non2xx, errors, raw, cpu =>
# { name => us per request }, status => { code => count } (statuses) }
sub wrk {
    my ($url, %a) = @_;
    my ($fh, $script) = tempfile('ragnx-wrk-XXXXXX', SUFFIX => '.lua',
                                 TMPDIR => 1, UNLINK => 1);
    my @h = @{ $a{headers} || [] };
    print $fh 'wrk.method = ', lua_quote($a{method} || 'GET'), "\n";
    for (my $i = 0; $i < @h; $i += 2) {
        print $fh "wrk.headers[", lua_quote($h[$i]), "] = ",
                  lua_quote($h[$i + 1]), "\n";
    }
    if ($a{unique} || $a{requests} || $a{statuses}) {
        # each thread's number, 1 to n; the threads, for done()
        print $fh <<'LUA';
local threads = {}
setup = function(thread)
    table.insert(threads, thread)
    thread:set("tid", #threads)
end
LUA
    }
    if ($a{unique}) {
        # a question never asked before on every request: each is a miss
        # that enqueues a new job (no single-flight follower)
        print $fh <<'LUA';
local counter, base, prefix, suffix = 0, 0, nil, nil
-- wrk.format() rebuilds every header line on each call, which made wrk
-- itself a tenth dearer per request than with a fixed body: format the
-- request once, with a number of fixed width (the thread's, then the
-- count) so the length never changes, and per request only put that
-- number between the two halves
init = function(args)
    base = (10 + (tonumber(wrk.thread:get("tid")) or 0)) * 1e9
    suffix = ' about ragnx"}'
    local body = '{"query":"unique question ' .. base .. suffix
    local head = wrk.format(nil, nil, nil, "\0")
    prefix = head:gsub("Content%-Length: 1\r\n", ""):sub(1, -4)
             .. "Content-Length: " .. #body .. "\r\n\r\n"
             .. '{"query":"unique question '
end
request = function()
    counter = counter + 1
    return prefix .. (base + counter) .. suffix
end
LUA
    } elsif ($a{requests}) {
        # [[header, value, ...], body] per request, in turn: each formatted
        # once, in init; every thread starts at its own place in the list
        print $fh "local items = {\n";
        for my $it (@{ $a{requests} }) {
            my ($ih, $ib) = @$it;
            print $fh '{{', join(',', map { lua_quote($_) } @h, @$ih), '},',
                      lua_quote($ib), "},\n";
        }
        print $fh "}\n", <<'LUA';
local reqs, i = {}, 0
init = function(args)
    for k, it in ipairs(items) do
        local h = {}
        for j = 1, #it[1], 2 do h[it[1][j]] = it[1][j + 1] end
        reqs[k] = wrk.format(nil, nil, h, it[2])
    end
    items = nil
    i = ((tonumber(wrk.thread:get("tid")) or 1) - 1) * 389 % #reqs
end
request = function()
    i = i % #reqs + 1
    return reqs[i]
end
LUA
    } elsif ($a{bodies}) {
        # a different body per request, cycling through the list
        print $fh "local bodies = {",
                  join(',', map { lua_quote($_) } @{ $a{bodies} }), "}\n";
        print $fh <<'LUA';
local i = 0
request = function()
    i = i % #bodies + 1
    return wrk.format(nil, nil, nil, bodies[i])
end
LUA
    } elsif (defined $a{body}) {
        print $fh 'wrk.body = ', lua_quote($a{body}), "\n";
    }
    if ($a{delay} && $a{spread}) {
        # paced, with a think time drawn from delay +- spread ms for every
        # request: connections answered together do not stay together
        my ($lo, $hi) = ($a{delay} - $a{spread}, $a{delay} + $a{spread});
        print $fh "delay = function() return math.random($lo, $hi) end\n";
    } elsif ($a{delay}) {
        # paced: each connection waits this many ms after every response
        # before its next request, so latency is measured at a moderate,
        # steady load instead of with every queue full
        print $fh "delay = function() return $a{delay} end\n";
    }
    if ($a{statuses}) {
        # responses by status, summed over the threads by done(): wrk
        # itself only counts those outside 2xx and 3xx together
        print $fh <<'LUA';
statuses = {}
response = function(status)
    statuses[status] = (statuses[status] or 0) + 1
end
done = function()
    local all = {}
    for _, t in ipairs(threads) do
        for s, n in pairs(t:get("statuses") or {}) do
            all[s] = (all[s] or 0) + n
        end
    end
    for s, n in pairs(all) do
        io.write(string.format("status %d: %d\n", s, n))
    end
end
LUA
    }
    # otherwise no response() hook: wrk then skips Lua per reply (non-2xx
    # replies are still counted by wrk itself)
    close $fh;
    my $c = $a{connections} || $CONNECTIONS;
    my $d = $a{duration} || $DURATION;
    my %cpu0 = map { $_ => cpu_ticks(@{ $a{cpu}{$_} }) }
               keys %{ $a{cpu} || {} };
    my @t0 = times;
    my $out = `wrk -t$THREADS -c$c -d${d}s --latency -s $script $url 2>&1`;
    my %r = (raw => $out);
    my ($n) = $out =~ /(\d+) requests in /;
    for my $k (keys %cpu0) {
        # CPU time per request of the given processes: unlike req/s, it
        # hardly depends on what else runs on the machine
        my $t = cpu_ticks(@{ $a{cpu}{$k} }) - $cpu0{$k};
        $r{cpu}{$k} = $n ? 1e6 * $t / $TICKS / $n : 0;
    }
    if (%cpu0) {
        my @t1 = times;
        $r{cpu}{wrk} = $n ? 1e6 * ($t1[2] + $t1[3] - $t0[2] - $t0[3]) / $n
                          : 0;
    }
    ($r{rps}) = $out =~ /Requests\/sec:\s+([\d.]+)/;
    for my $p (50, 99) {
        my ($v, $u) = $out =~ /^\s+$p(?:\.000)?%\s+([\d.]+)(us|ms|s)\b/m;
        next unless defined $v;
        $v /= 1000 if $u eq 'us';
        $v *= 1000 if $u eq 's';
        $r{"p$p"} = $v;
    }
    $r{requests} = $n || 0;
    $r{status}{$1} = $2 while $out =~ /^status (\d+): (\d+)$/mg;
    ($r{non2xx}) = $out =~ /Non-2xx or 3xx responses:\s+(\d+)/;
    $r{non2xx} ||= 0;
    ($r{errors}) = $out =~ /Socket errors:(.*)/;
    $r{rps} ||= 0;
    return \%r;
}

# user + system ticks of the given pids
sub cpu_ticks {
    my $t = 0;
    for my $pid (@_) {
        open my $fh, '<', "/proc/$pid/stat" or next;
        my $s = <$fh>;
        close $fh;
        $s =~ s/^.*\)\s+//;
        my @f = split ' ', $s;
        $t += $f[11] + $f[12];
    }
    return $t;
}

# user + system ticks of whole process trees: each root and everything
# below it, and what the processes that ended meanwhile used (a reaped
# child's time moves to its parent's cutime and cstime): a PostgreSQL
# backend or a worker process that exits between two samples is still
# counted
sub tree_ticks {
    my %roots = map { $_ => 1 } @_;
    my (%kids, %t);
    for my $stat (glob '/proc/[0-9]*/stat') {
        open my $fh, '<', $stat or next;
        my $line = <$fh> // next;
        close $fh;
        my ($pid) = $line =~ /^(\d+) / or next;
        $line =~ s/^.*\)\s+//;
        my @f = split ' ', $line;
        push @{ $kids{ $f[1] } }, $pid;
        $t{$pid} = $f[11] + $f[12] + $f[13] + $f[14];
    }
    my ($sum, @todo) = (0, grep { exists $t{$_} } keys %roots);
    while (defined(my $pid = shift @todo)) {
        $sum += $t{$pid};
        push @todo, @{ $kids{$pid} || [] };
    }
    return $sum;
}

sub median {
    my @v = sort { $a <=> $b } @_;
    return 0 unless @v;
    return @v % 2 ? $v[$#v / 2] : ($v[@v / 2 - 1] + $v[@v / 2]) / 2;
}

# The LLM stand-in at 0 ms: an nginx answering every request with one
# fixed chat completion (OpenAI API), so it costs next to nothing, and
# `return 200 "ok"` at /ok.  start_llm(t, workers => n) starts it on a
# Ragnx::Test; returns its base URL for the pool's llm_base_url.
our $LLM_ANSWER = 'Bench answer: the cache keeps answers for an hour.';

sub start_llm {
    my ($t, %a) = @_;
    my $answer = '{"id":"chatcmpl-bench","object":"chat.completion",'
               . '"choices":[{"index":0,"finish_reason":"stop","message":'
               . '{"role":"assistant","content":"' . $LLM_ANSWER . '"}}],'
               . '"usage":{"prompt_tokens":120,"completion_tokens":9}}';
    $answer =~ s/"/\\"/g;
    $t->start_nginx(workers => $a{workers} || 1,
                    http => 'access_log off;' . ($a{http} || ''),
                    server => 'location = /ok { return 200 "ok"; }'
                              . ' location / { default_type application/json;'
                              . " return 200 \"$answer\"; }");
    return 'http://127.0.0.1:' . $t->port . '/v1';
}

# the client backends of a PostgreSQL postmaster connected as user to
# dbname, from /proc: asking pg_stat_activity would start psql and a
# backend every time, CPU taken from what is measured
sub pg_backends {
    my ($postmaster, $user, $dbname) = @_;
    my $n = 0;
    for my $kid (Ragnx::Test::children($postmaster)) {
        open my $fh, '<', "/proc/$kid/cmdline" or next;
        my $cmd = <$fh> // '';
        close $fh;
        $n++ if $cmd =~ /^postgres: \Q$user $dbname\E /;
    }
    return $n;
}

sub report {
    my ($title, $base, @rows) = @_;
    printf "\n%s (%d connections, %d threads, %ds each)\n", $title,
        $CONNECTIONS, $THREADS, $DURATION;
    report_rows($base, @rows);
}

sub report_rows {
    my ($base, @rows) = @_;
    printf "%-40s %12s %9s %9s %8s %s\n", 'case', 'req/s', 'p50 ms',
        'p99 ms', 'ratio', 'notes';
    for my $row ($base, @rows) {
        my ($name, $r, $note) = @$row;
        printf "%-40s %12.0f %9.3f %9.3f %7.1f%% %s\n", $name, $r->{rps},
            $r->{p50} || 0, $r->{p99} || 0,
            $base->[1]{rps} ? 100 * $r->{rps} / $base->[1]{rps} : 0,
            join(' ', grep { $_ } $note,
                 $r->{non2xx} ? "non-2xx: $r->{non2xx}" : '',
                 $r->{cpu} ? 'us/req ' . join(' ', map {
                     sprintf '%s %.1f', $_, $r->{cpu}{$_} }
                     sort keys %{ $r->{cpu} }) : '',
                 $r->{errors} ? "errors:$r->{errors}" : '');
    }
}


# A connection to Redis kept open, for polling: redis-cli would start a
# process every time, and on this 2-core VM ten a second take several per
# cent of the CPU the measured runs need.  cmd() sends one command and
# returns its reply (integers and strings as scalars, arrays as array
# references; an error reply, or no reply within 10 s, dies).
#
#   Bench::Redis->new('/path/redis.sock')
#   Bench::Redis->new('127.0.0.1:6379', user => 'ragnx-pool',
#                     password_file => '.../ragnx-pool.password')

package Bench::Redis;

use IO::Socket::INET;
use IO::Socket::UNIX;
use Socket qw(SOCK_STREAM);

sub new {
    my ($class, $addr, %a) = @_;
    my $s = $addr =~ m{^/}
            ? IO::Socket::UNIX->new(Peer => $addr, Type => SOCK_STREAM)
            : IO::Socket::INET->new(PeerAddr => $addr, Proto => 'tcp',
                                    Timeout => 10);
    die "redis $addr: $!" unless $s;
    $s->autoflush(1);
    my $self = bless { s => $s }, $class;
    if (defined $a{user}) {
        my $pass = Ragnx::Test::slurp($a{password_file});
        $pass =~ s/\n\z//;
        $self->cmd('AUTH', $a{user}, $pass);
    }
    return $self;
}

sub cmd {
    my ($self, @args) = @_;
    my $req = '*' . scalar(@args) . "\r\n";
    $req .= '$' . length($_) . "\r\n$_\r\n" for @args;
    my $r;
    local $SIG{ALRM} = sub { die "redis: no reply in 10 s\n" };
    my $ok = eval {
        alarm 10;
        print { $self->{s} } $req or die "redis: $!";
        $r = $self->reply;
        1;
    };
    alarm 0;
    die $@ unless $ok;
    return $r;
}

sub reply {
    my ($self) = @_;
    my $line = readline($self->{s});
    die "redis: connection closed" unless defined $line;
    $line =~ s/\r\n\z//;
    my $type = substr($line, 0, 1, '');
    return $line if $type eq ':' || $type eq '+';
    die "redis: $line" if $type eq '-';
    if ($type eq '$') {
        return undef if $line < 0;
        my $data = '';
        while (length($data) < $line + 2) {
            my $got = read($self->{s}, $data, $line + 2 - length($data),
                           length($data));
            die "redis: connection closed" unless $got;
        }
        return substr($data, 0, $line);
    }
    if ($type eq '*') {
        return undef if $line < 0;
        return [ map { $self->reply } 1 .. $line ];
    }
    die "redis: unexpected reply $type$line";
}


# bench/pool's private stack and its two drain cases, for bench/pool and
# bench/stack: redis-server over a unix socket, PostgreSQL
# (synchronous_commit on) with a corpus of 50 documents, the pool
# (2 workers, db_pool 8) and the LLM stand-in at 0 ms (Bench::start_llm,
# or the one at llm_url);
#
#  (a) run_a(n): n jobs enqueued at once as the module's script does,
#      then drained by the pool at concurrency 2 x 32; returns jobs/s;
#  (r) run_r(n, round, rate of (a)): the same drain by bench/reference,
#      a BullMQ + node-postgres worker, on the same Redis, PostgreSQL and
#      LLM stand-in; returns jobs/s, undef when it could not run;
#  rounds(n, rounds): both, alternating which goes first, and the ratios.
#
# The pool's case (b) and its own settings stay in bench/pool, which uses
# t, p, base, enqueue, drain, settle and rss for it.

package Bench::Pool;

use Cwd ();
use Digest::SHA qw(sha256_hex);
use File::Basename ();
use JSON::PP;
use POSIX ();
use Time::HiRes qw(sleep time);
use Ragnx::Pool ();

my $REF = Cwd::abs_path(File::Basename::dirname(__FILE__) . '/../reference');

sub new {
    my ($class, %a) = @_;
    my $t = Ragnx::Test->new;
    $t->start_redis(unix => 1);
    $t->start_postgres(options => ['-c', 'synchronous_commit=on']);
    my $llm = $a{llm_url}
              || Bench::start_llm($t, http => ' keepalive_requests 1000000;');
    my $self = bless { t => $t, p => Ragnx::Pool->new($t), ref_skip => undef,
                       base => {
        llm_provider => 'openai', llm_base_url => $llm,
        llm_model => 'mock', log_level => 'info', workers => 2,
        db_pool => 8, retry_base => 1000, retry_max => 5000,
        visibility_timeout => 30000, llm_timeout => 30000,
        max_attempts => 3,
        # one host: Redis and PostgreSQL over their unix sockets
        redis_host => $t->{redis_socket},
        database => "host=$t->{dir}/pg port=" . $t->pg_port
                    . ' user=ragnx dbname=ragnx' } }, $class;
    my $p = $self->{p};
    $p->configure(%{ $self->{base} }, concurrency => 32);
    my ($rc, $out) = $p->cli('migrate');
    die $out if $rc;
    mkdir "$t->{dir}/corpus";
    for my $i (1 .. 50) {
        $t->file("corpus/doc$i.md", "# Document $i\n\n" . join("\n\n",
            map { "Section $_ of document $i explains topic " . ($i * 7 + $_)
                  . " with cache, workers, redis and postgres details." }
            1 .. 10) . "\n");
    }
    ($rc, $out) = $p->cli('ingest', "$t->{dir}/corpus");
    die $out if $rc;
    return $self;
}

sub t    { $_[0]{t} }
sub p    { $_[0]{p} }
sub base { $_[0]{base} }

# enqueue n jobs as the module's script does (hash + XADD), pipelined
sub enqueue {
    my ($self, $n, $tag) = @_;
    my $t = $self->{t};
    my $gen = $t->redis('GET', '{ragnx}:gen') || 'default@0';
    my $now = int(time * 1000);
    my $buf = '';
    my $proto = sub {
        my $s = "*" . scalar(@_) . "\r\n";
        $s .= '$' . length($_) . "\r\n$_\r\n" for @_;
        return $s;
    };
    for my $i (1 .. $n) {
        my $id = Ragnx::Pool::uuid7();
        my $q = "How does topic $i of run $tag use the cache and workers?";
        my $payload = JSON::PP->new->canonical->encode({
            v => 2, id => $id, owner => "user" . ($i % 100),
            chatId => Ragnx::Pool::uuid(), query => $q,
            digest => sha256_hex(lc $q), createdAt => $now });
        $buf .= $proto->('HSET', "{ragnx}:job:$id", 'status', 'waiting',
                         'type', 'ask', 'owner', "user" . ($i % 100),
                         'chatId', 'x', 'attempts', 0, 'createdAt', $now,
                         'updatedAt', $now, 'payload', $payload);
        $buf .= $proto->('XADD', '{ragnx}:jobs', '*', 'id', $id, 'job',
                         $payload, 'gen', $gen);
    }
    open my $fh, '|-', 'redis-cli', '-p', $t->redis_port, '--pipe'
        or die "redis-cli: $!";
    print $fh $buf;
    close $fh;
}

sub completed {
    return $_[0]{t}->psql("SELECT count(*) FROM messages WHERE role = "
                          . "'assistant'");
}

sub messages { return $_[0]{t}->psql('SELECT count(*) FROM messages') }

sub pg_conns {
    my ($self) = @_;
    return Bench::pg_backends($self->{t}{pids}{postgres}, 'ragnx', 'ragnx');
}

# polling goes through one connection kept open (see Bench::Redis)
sub poll {
    my ($self, @cmd) = @_;
    return ($self->{poller} ||= Bench::Redis->new($self->{t}{redis_socket}))
           ->cmd(@cmd);
}

# peak RSS of the given processes
sub rss {
    my ($self, @pids) = @_;
    my @r;
    for my $kid (@pids) {
        my ($hwm) = Ragnx::Test::slurp("/proc/$kid/status")
                    =~ /VmHWM:\s+(\d+)/;
        push @r, sprintf('%.1f MiB', ($hwm || 0) / 1024);
    }
    return join(', ', @r);
}

# CPU ticks per process of each part of the stack: PostgreSQL (postmaster
# and backends), the workers (by default the pool: supervisor and
# workers; or the part named, e.g. the reference's processes), Redis and
# the LLM stand-in (when it runs on this stack).  CPU time per job moves
# far less with the machine's load than jobs/s does.
sub cpu_snapshot {
    my ($self, $name, @pids) = @_;
    my ($t, $p) = @$self{qw(t p)};
    $name ||= 'pool';
    @pids = grep { defined } $p->pid, $p->children if $name eq 'pool';
    my %parts = (
        postgres => [ $t->{pids}{postgres},
                      Ragnx::Test::children($t->{pids}{postgres}) ],
        $name    => \@pids,
        redis    => [ $t->{pids}{redis} ],
        $t->{pids}{nginx} ? (llm => [ $t->{pids}{nginx},
                            Ragnx::Test::children($t->{pids}{nginx}) ]) : ());
    my %snap = (order => [ grep { $parts{$_} }
                           'postgres', $name, 'redis', 'llm' ]);
    for my $part (keys %parts) {
        $snap{$part}{$_} = Bench::cpu_ticks($_) for @{ $parts{$part} };
    }
    return \%snap;
}

# microseconds of CPU per job of each part between two snapshots
sub cpu_per_job {
    my ($s0, $s1, $jobs) = @_;
    my @out;
    for my $part (@{ $s1->{order} }) {
        my $ticks = 0;
        for my $pid (keys %{ $s1->{$part} }) {
            $ticks += $s1->{$part}{$pid} - ($s0->{$part}{$pid} || 0);
        }
        push @out, sprintf('%s %.0f', $part,
                           1e6 * $ticks / $Bench::TICKS / $jobs);
    }
    return join(', ', @out);
}

# drain: wait until the stream is empty and nothing is pending.  The
# connections are sampled once a second, not at every poll: each sample
# starts psql and a PostgreSQL backend, CPU taken from what is measured
# (the pool keeps its connections open, so the peak is still seen).
# Returns (seconds, most PostgreSQL connections, jobs completed).
sub drain {
    my ($self, $n, $done0, $t0) = @_;
    $t0 //= time;
    my $maxconn = 0;
    my $deadline = $t0 + 600;
    my $i = 0;
    while (time < $deadline) {
        if ($i++ % 10 == 0) {
            my $c = $self->pg_conns;
            $maxconn = $c if $c > $maxconn;
        }
        last if $self->poll('XLEN', '{ragnx}:jobs') == 0;
        sleep 0.1;
    }
    my $dt = time - $t0;
    my $c = $self->pg_conns;
    $maxconn = $c if $c > $maxconn;
    return ($dt, $maxconn, $self->completed - $done0);
}

# INFO commandstats per job, busiest first; it counts the commands a
# script runs too.  Commands matching $skip are left out.
sub redis_calls {
    my ($self, $n, $skip) = @_;
    return join(', ', map { sprintf '%s %.2f', $_->[0], $_->[1] / $n }
                      sort { $b->[1] <=> $a->[1] }
                      grep { $_->[0] !~ $skip }
                      map { [ /^cmdstat_([\w|]+):calls=(\d+)/ ] }
                      grep { /^cmdstat_[\w|]+:calls=/ }
                      split /\r?\n/, $self->{t}->redis('INFO',
                                                       'commandstats'));
}

# before each timed run: vacuum and checkpoint what the runs before it
# wrote (40,000 messages a run), so that neither (a) nor (r) pays, in
# autovacuum and checkpointer time counted as PostgreSQL's CPU, for the
# other's writes.  An empty table is left alone: analyzed empty, it gets
# plans that suit no rows (a lookup of chats by id through the
# (owner, updated_at, id) index, say), kept until autovacuum's next
# analyze, long after the run has filled it.
sub settle {
    my ($self) = @_;
    my $t = $self->{t};
    for my $table (qw(chats messages documents chunks chunk_terms)) {
        $t->psql("VACUUM ANALYZE $table")
            if $t->psql("SELECT EXISTS (SELECT 1 FROM $table)") eq 't';
    }
    $t->psql('CHECKPOINT');
}

# (a): the pool drains $n jobs; returns its jobs/s.  The jobs are
# enqueued first, as (r)'s are, and the clock starts once the pool is up
# (its start-up left out, as (r)'s is): jobs it finished before then are
# not counted.
sub run_a {
    my ($self, $n) = @_;
    my ($t, $p) = @$self{qw(t p)};
    $self->settle;
    my $te = time;
    $self->enqueue($n, 'a');
    printf "(a) enqueued %d jobs in %.2f s\n", $n, time - $te;
    my $done0 = $self->completed;
    my $dead0 = $t->redis('XLEN', '{ragnx}:dead');
    my $cpu0 = $self->cpu_snapshot;
    $t->redis('CONFIG', 'RESETSTAT');
    $p->start(workers => 2);
    my $t1 = time;
    my $early = $self->completed - $done0;
    my $t0 = ($t1 + time) / 2;
    my ($dt, $maxconn, $done) = $self->drain($n, $done0, $t0);
    my $rate = ($n - $early) / $dt;
    my $cpu_a = cpu_per_job($cpu0, $self->cpu_snapshot, $n);
    print "test directory gone!\n" unless -d $t->{dir};
    printf "(a) LLM at 0 ms (nginx), concurrency 2 x 32: %d jobs in %.2f s = "
         . "%.0f jobs/s (%.1fx the 800 jobs/s reference figure); %d "
         . "completed, dead %d; postgres connections max %d; peak RSS per worker: %s\n",
           $n - $early, $dt, $rate, $rate / 800, $done,
           $t->redis('XLEN', '{ragnx}:dead') - $dead0, $maxconn,
           $self->rss($p->children);
    printf "(a) CPU per job (us): %s\n", $cpu_a;
    # EVALSHA is the number of round trips, the others are mostly inside
    # the scripts (the enqueue's XLEN, HSET and XADD and the bench's own
    # are left out)
    printf "(a) Redis commands per job (inside scripts included): %s\n",
        $self->redis_calls($n,
            qr/^(config|info|script|echo)\b|^(xlen|hset|xadd)$/);
    print "worker log tail:\n",
          join("\n", (split /\n/, $p->worker_log)[-15 .. -1]), "\n"
        if $done < $n;
    $p->stop('TERM');
    return $rate;
}

# (r): bench/reference, installed with `npm ci` on first use.  Returns ''
# when it can run, else why not: (r) is then skipped, the rest goes on.
sub reference_setup {
    my ($self) = @_;
    $self->{ref_skip} //= _reference_setup();
    return $self->{ref_skip};
}

sub _reference_setup {
    for my $tool (qw(node npm)) {
        next if $tool eq 'npm' && -d "$REF/node_modules";
        return "$tool not found (scripts/deps --bench installs it)"
            if system("command -v $tool >/dev/null 2>&1") != 0;
    }
    unless (-d "$REF/node_modules") {
        print "(r) npm ci in bench/reference\n";
        my $out = `cd '$REF' && npm ci --no-audit --no-fund 2>&1`;
        if ($?) {
            my @l = split /\n/, $out;
            return 'npm ci failed: ' . join(' | ', @l > 3 ? @l[-3 .. -1]
                                                          : @l);
        }
    }
    # a broken or half-finished install shows here, not in the timed part
    my $load = "require('bullmq'); require('pg'); require('ioredis')";
    my $out = `cd '$REF' && node -e "$load" 2>&1`;
    return "node cannot load bullmq, pg and ioredis: $out" if $?;
    return '';
}

# the jobs BullMQ has yet to finish: waiting, running, or delayed (a retry
# in its backoff); none left is (r)'s drained state, as an empty stream
# is (a)'s
my $BULL_LEFT = "return redis.call('LLEN', KEYS[1]) + redis.call('LLEN', "
              . "KEYS[2]) + redis.call('ZCARD', KEYS[3]) + redis.call("
              . "'ZCARD', KEYS[4]) + redis.call('LLEN', KEYS[5])";

sub bull_left {
    my ($self) = @_;
    return $self->poll('EVAL', $BULL_LEFT, 5,
                       map { "bull:ask:$_" } qw(wait active delayed
                                                prioritized paused));
}

# a reference worker process; it connects, says "ready" and waits for
# SIGUSR2 before taking jobs, so its start-up is not timed
sub start_ref {
    my ($self, $i) = @_;
    my $t = $self->{t};
    my $log = "$t->{dir}/reference-$i.log";
    my $pid = fork() // die "fork: $!";
    if ($pid == 0) {
        open STDOUT, '>', $log;
        open STDERR, '>&', \*STDOUT;
        POSIX::setpgid(0, 0);
        chdir $REF;
        $ENV{REF_REDIS} = $t->{redis_socket};
        $ENV{REF_PG_HOST} = "$t->{dir}/pg";
        $ENV{REF_PG_PORT} = $t->pg_port;
        $ENV{REF_LLM_URL} = $self->{base}{llm_base_url};
        $ENV{REF_CONCURRENCY} = 32;
        # the pool's db_pool, shared out over the processes as it does
        $ENV{REF_PG_MAX} = $self->{base}{db_pool} / 2;
        $ENV{REF_START} = 'signal';
        exec('node', 'worker.js') or POSIX::_exit(127);
    }
    $t->{pids}{"reference$i"} = $pid;
    return $pid;
}

# (r): the reference drains $n jobs on the same stack; returns its jobs/s
# (undef when it could not run).  $ra: (a)'s rate when (a) ran first.
sub run_r {
    my ($self, $n, $round, $ra) = @_;
    my $t = $self->{t};
    $self->settle;
    my $cpu0 = $self->cpu_snapshot('reference');
    my $msg0 = $self->messages;
    my $cache0 = $t->redis('EVAL', "return #redis.call('KEYS', "
                           . "'ref:cache:*')", 0);
    my %z0 = map { $_ => $t->redis('ZCARD', "bull:ask:$_") } qw(completed
                                                                failed);
    my $te = time;
    local $ENV{REF_REDIS} = $t->{redis_socket};
    my $out = `cd '$REF' && node enqueue.js $n r$round 2>&1`;
    if ($?) {
        print "(r) reference: skipped (enqueue failed: $out)\n";
        return undef;
    }
    printf "(r) enqueued %d jobs in %.2f s\n", $n, time - $te;
    my @pids = map { $self->start_ref($_) } 1 .. 2;
    my $deadline = time + 30;
    my $ready = 0;
    while (time < $deadline) {
        $ready = grep { Ragnx::Test::slurp("$t->{dir}/reference-$_.log")
                        =~ /^ready /m } 1 .. 2;
        last if $ready == 2;
        last if grep { waitpid($_, POSIX::WNOHANG()) == $_ } @pids;
        sleep 0.05;
    }
    my $rate;
    if ($ready == 2) {
        # their start-up is left out of their CPU, and the enqueue out
        # of Redis's, as (a)'s is
        $cpu0 = $self->cpu_snapshot('reference', @pids);
        $t->redis('CONFIG', 'RESETSTAT');
        my $t0 = time;
        kill 'USR2', @pids;
        my ($maxconn, $i, $left) = (0, 0, -1);
        my $deadline = $t0 + 600;
        while (time < $deadline) {
            if ($i++ % 10 == 0) {
                my $c = $self->pg_conns;
                $maxconn = $c if $c > $maxconn;
                # both gone: nothing will drain the queue
                last unless grep { waitpid($_, POSIX::WNOHANG()) == 0 }
                            @pids;
            }
            $left = $self->bull_left;
            last if $left == 0;
            sleep 0.1;
        }
        my $dt = time - $t0;
        my $c = $self->pg_conns;
        $maxconn = $c if $c > $maxconn;
        my $cpu = cpu_per_job($cpu0,
                              $self->cpu_snapshot('reference', @pids), $n);
        my $calls = $self->redis_calls($n,
                                       qr/^(config|info|script|echo|client)\b/);
        my $rss = $self->rss(@pids);
        my %z = map { $_ => $t->redis('ZCARD', "bull:ask:$_") - $z0{$_} }
                qw(completed failed);
        my $msgs = $self->messages - $msg0;
        # one cache entry per job: each question of a run is new
        my $cached = $t->redis('EVAL', "return #redis.call('KEYS', "
                               . "'ref:cache:*')", 0) - $cache0;
        $rate = $n / $dt;
        printf "(r) reference BullMQ + node-postgres, concurrency 2 x 32: "
             . "%d jobs in %.2f s = %.0f jobs/s%s; %d completed, failed "
             . "%d%s; messages +%d (%.2f per job), cache entries +%d; "
             . "postgres connections max %d; peak RSS per worker: %s\n",
               $n, $dt, $rate,
               $ra ? sprintf('; (a)/(r) = %.1fx (target 3x)', $ra / $rate)
                   : '',
               $z{completed}, $z{failed},
               $left ? ", $left left undone" : '', $msgs, $msgs / $n,
               $cached, $maxconn, $rss;
        printf "(r) CPU per job (us): %s\n", $cpu;
        # BullMQ's EVALSHA calls are its round trips, as the pool's
        printf "(r) Redis commands per job (inside scripts included): %s\n",
               $calls;
    } else {
        print "(r) reference: skipped (its workers did not start)\n";
    }
    $t->stop_pid("reference$_", 'TERM') for 1 .. 2;
    # what the workers said besides "ready" and their totals: failures
    for my $i (1 .. 2) {
        my @l = grep { !/^ready / } split /\n/,
                Ragnx::Test::slurp("$t->{dir}/reference-$i.log");
        my @bad = grep { !/^worker \d+: completed/ } @l;
        print map { "(r) worker $i: $_\n" } @bad[0 .. ($#bad < 9 ? $#bad : 9)];
        print map { "(r) $_\n" } grep { /^worker \d+: completed/ } @l
            if @bad || !$rate;
    }
    return $rate;
}

# (a) and (r) over $rounds rounds, alternating which goes first from round
# to round, so a drift of the machine's speed during a round does not
# favour either.  Returns { a => [jobs/s], r => [jobs/s], ratio => [(a)/(r)
# of each round that ran both], skip => why (r) did not run, or '' }.
sub rounds {
    my ($self, $n, $rounds) = @_;
    my $skip = $self->reference_setup;
    print "reference: skipped ($skip)\n" if $skip ne '';
    my %res = (a => [], r => [], ratio => [], skip => $skip);
    for my $round (1 .. $rounds) {
        print "round $round of $rounds\n" if $rounds > 1;
        my @order = $round % 2 ? qw(a r) : qw(r a);
        my ($ra, $rr);
        for my $case (@order) {
            if ($case eq 'a') {
                $ra = $self->run_a($n);
                push @{ $res{a} }, $ra;
            } elsif ($skip eq '') {
                $rr = $self->run_r($n, $round, $ra);
                push @{ $res{r} }, $rr if $rr;
            }
        }
        next unless $ra && $rr;
        push @{ $res{ratio} }, $ra / $rr;
        # (r) ran first: its line could not say the ratio yet
        printf "(a)/(r) = %.1fx (target 3x)\n", $ra / $rr
            if $order[0] eq 'r';
    }
    if ($rounds > 1 && @{ $res{ratio} }) {
        printf "(a)/(r) over %d rounds: %s; median %.2fx (target 3x); "
             . "median (a) %.0f jobs/s, (r) %.0f jobs/s\n",
             scalar @{ $res{ratio} },
             join(' ', map { sprintf '%.2fx', $_ } @{ $res{ratio} }),
             Bench::median(@{ $res{ratio} }), Bench::median(@{ $res{a} }),
             Bench::median(@{ $res{r} });
    }
    return \%res;
}

# stops what new() started, the LLM stand-in too when it runs here
sub stop {
    my ($self) = @_;
    my $t = $self->{t};
    $self->{p}->stop('TERM');
    $t->stop_nginx;
    $t->stop_postgres;
    $t->stop_redis;
}

1;
