package Bench;

# Benchmark helpers: run wrk against a URL (optionally with a method, body
# and headers through a generated Lua script), parse req/s and latency
# percentiles, and print a table with ratios to a baseline from the same
# run.  Not a test: it prints figures.

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
#     unique => 1, delay => ms, spread => ms,
#     cpu => { name => [pid, ...] })
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
    if ($a{unique}) {
        # a question never asked before on every request: each is a miss
        # that enqueues a new job (no single-flight follower)
        print $fh <<'LUA';
local counter, base, prefix, suffix = 0, 0, nil, nil
local threads = 0
setup = function(thread)
    threads = threads + 1
    thread:set("tid", threads)
end
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
    # no response() hook: wrk then skips Lua per reply (non-2xx replies
    # are still counted by wrk itself)
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
# references; an error reply dies).

package Bench::Redis;

use IO::Socket::UNIX;
use Socket qw(SOCK_STREAM);

sub new {
    my ($class, $path) = @_;
    my $s = IO::Socket::UNIX->new(Peer => $path, Type => SOCK_STREAM)
        or die "redis $path: $!";
    $s->autoflush(1);
    return bless { s => $s }, $class;
}

sub cmd {
    my ($self, @args) = @_;
    my $req = '*' . scalar(@args) . "\r\n";
    $req .= '$' . length($_) . "\r\n$_\r\n" for @args;
    print { $self->{s} } $req or die "redis: $!";
    return $self->reply;
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

1;

