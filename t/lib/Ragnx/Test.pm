package Ragnx::Test;

# Test harness: writes an nginx.conf per test, starts the distro nginx with
# the built module on a free loopback port under a temporary directory,
# talks raw HTTP/1.1 to it, and stops it by PID.  A test file fails on any
# [alert], [emerg] or sanitizer report in the logs.

use strict;
use warnings;

use Exporter 'import';
use File::Temp qw(tempdir);
use IO::Socket::INET;
use POSIX ();
use Time::HiRes qw(sleep time);
use Test::More;

our @EXPORT_OK = qw(free_port slurp spew);

my $NGINX = $ENV{RAGNX_NGINX} || '/usr/sbin/nginx';

# Set by Ragnx::OpenAPI->hook: called with (method, path, response) for
# every response the HTTP helpers read, and by done() before the plan.
our ($RESPONSE_CHECK, $RESPONSE_SUMMARY);

# the checkout, for scripts/
my $ROOT = do {
    require File::Basename;
    require Cwd;
    Cwd::abs_path(File::Basename::dirname(__FILE__) . '/../../..');
};

# nginx's own allocations it never frees (see the file)
my $LSAN_SUPP = do {
    require File::Basename;
    require Cwd;
    Cwd::abs_path(File::Basename::dirname(__FILE__) . '/../../lsan.supp');
};

sub module_path {
    my $m = $ENV{RAGNX_MODULE}
        or BAIL_OUT('RAGNX_MODULE is not set: run the suite with make test');
    -f $m or BAIL_OUT("module $m not built");
    return $m;
}

sub new {
    my ($class, %opt) = @_;
    my $self = bless {
        dir   => tempdir('ragnx-t-XXXXXX', TMPDIR => 1,
                         CLEANUP => !$ENV{RAGNX_KEEP}),
        pids  => {},
        owner => $$,
        %opt,
    }, $class;
    chmod 0755, $self->{dir};
    return $self;
}

sub dir { $_[0]{dir} }

sub free_port {
    my $s = IO::Socket::INET->new(
        LocalAddr => '127.0.0.1', LocalPort => 0, Proto => 'tcp',
        Listen => 1, ReuseAddr => 1) or die "free_port: $!";
    my $port = $s->sockport;
    close $s;
    return $port;
}

sub slurp {
    my ($path) = @_;
    open my $fh, '<:raw', $path or return '';
    local $/;
    my $d = <$fh>;
    return defined $d ? $d : '';
}

sub spew {
    my ($path, $data) = @_;
    open my $fh, '>:raw', $path or die "$path: $!";
    print $fh $data;
    close $fh;
    return $path;
}

sub file {
    my ($self, $name, $data) = @_;
    return spew("$self->{dir}/$name", $data);
}

sub preload_env {
    return () unless $ENV{RAGNX_SANITIZE};
    my @libs = grep { -e } map { "/usr/lib/x86_64-linux-gnu/$_" }
               qw(libasan.so.8 libubsan.so.1);
    return (
        LD_PRELOAD   => join(':', @libs),
        ASAN_OPTIONS => 'detect_leaks=' . ($ENV{RAGNX_LEAKS} // 1)
                        . ':abort_on_error=1:fast_unwind_on_malloc=0'
                        . ':detect_odr_violation=0:log_path=' . $_[0]->{dir}
                        . '/asan',
        UBSAN_OPTIONS => 'print_stacktrace=1:log_path=' . $_[0]->{dir}
                        . '/ubsan',
        LSAN_OPTIONS => "suppressions=$LSAN_SUPP:print_suppressions=0",
    );
}

# The full nginx.conf around a test's http{} and server{} snippets.
sub nginx_conf {
    my ($self, %a) = @_;
    my $d = $self->{dir};
    my $module = module_path();
    my $user = $> == 0 ? "user root root;\n" : '';
    my $port = $a{port};
    my $workers = $a{workers} || 1;
    my $http = $a{http} || '';
    my $server = $a{server} || '';
    my $main = $a{main} || '';
    my $connections = $a{connections} || 1024;
    return <<"CONF";
load_module $module;
$user
worker_processes $workers;
daemon off;
master_process on;
error_log $d/error.log info;
pid $d/nginx.pid;
$main
events { worker_connections $connections; }

http {
    access_log $d/access.log;
    client_body_temp_path $d/body;
    proxy_temp_path $d/proxy;
    fastcgi_temp_path $d/fastcgi;
    uwsgi_temp_path $d/uwsgi;
    scgi_temp_path $d/scgi;
    default_type text/plain;

$http

    server {
        listen 127.0.0.1:$port;
$server
    }
}
CONF
}

# The pool's X25519 key pair for sealed calls (register, login), made once
# per test directory: (private key file, public key file).
sub rpc_keys {
    my ($self) = @_;
    my ($key, $pub) = ("$self->{dir}/rpc.key", "$self->{dir}/rpc.pub");
    unless (-f $pub) {
        system('openssl', 'genpkey', '-algorithm', 'X25519', '-out', $key) == 0
            && system('openssl', 'pkey', '-in', $key, '-pubout', '-out',
                      $pub) == 0
            or BAIL_OUT('openssl: cannot make an X25519 key pair');
    }
    return ($key, $pub);
}

# The sealing codec of register and login (shared/ragnx_seal.h), for
# stand-ins and direct calls: seal_tool(COMMAND, ARGS..., INPUT) runs
# build/unit/seal_tool; its output, or undef when it fails.
sub seal_tool {
    my $in = pop;
    require IPC::Open2;
    my $bin = ($ENV{RAGNX_BUILD} || 'build') . '/unit/seal_tool';
    my $pid = IPC::Open2::open2(my $out, my $to, $bin, @_);
    print $to $in;
    close $to;
    local $/;
    my $r = <$out>;
    waitpid $pid, 0;
    return $? == 0 ? $r : undef;
}

# nginx -t on a configuration; returns (ok, output).  The configuration is
# built from the http/server snippets, or is a complete file (conf_file).
sub nginx_t {
    my ($self, %a) = @_;
    $a{port} ||= free_port();
    my $conf = $a{conf_file}
               || $self->file('test.conf', $self->nginx_conf(%a));
    local %ENV = (%ENV, $self->preload_env);
    my $out = `$NGINX -t -p $self->{dir} -c $conf 2>&1`;
    return ($? == 0, $out);
}

# Starts nginx in the foreground on a configuration built from snippets,
# or on a complete file (conf_file; it must say `daemon off`, log to
# error.log in the test directory and listen on 127.0.0.1:port).
sub start_nginx {
    my ($self, %a) = @_;
    $self->{port} = $a{port} ||= free_port();
    my $conf = $a{conf_file}
               || $self->file('nginx.conf', $self->nginx_conf(%a));
    my %env = $self->preload_env;
    my $pid = fork() // die "fork: $!";
    if ($pid == 0) {
        $ENV{$_} = $env{$_} for keys %env;
        open STDOUT, '>>', "$self->{dir}/nginx.stderr";
        open STDERR, '>>', "$self->{dir}/nginx.stderr";
        # its own process group, so a crashed test can stop its workers too
        POSIX::setpgid(0, 0);
        exec($NGINX, '-p', $self->{dir}, '-c', $conf) or POSIX::_exit(127);
    }
    $self->{pids}{nginx} = $pid;
    $self->wait_port($self->{port}, 'nginx');
    # every worker forked: a test that notes them must see them all (the
    # port answers as soon as the first one runs)
    my $want = $a{conf_file} ? 1 : ($a{workers} || 1);
    for (1 .. 200) {
        last if children($pid) >= $want;
        sleep 0.025;
    }
    return $self;
}

sub port { $_[0]{port} }

# until $n nginx workers have their RPC reply channel subscribed (a call
# made before answers 503 at once): a bounded wait, true when they have
sub wait_subscribed {
    my ($self, $n) = @_;
    for (1 .. 400) {
        my @c = grep { length } split /\n/,
                $self->redis('PUBSUB', 'CHANNELS', '{ragnx}:reply:*');
        return 1 if @c >= ($n || 1);
        sleep 0.025;
    }
    return 0;
}

sub wait_port {
    my ($self, $port, $what) = @_;
    for (1 .. 200) {
        my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1',
                                      PeerPort => $port, Proto => 'tcp');
        if ($s) { close $s; return 1 }
        sleep 0.025;
    }
    my $err = slurp("$self->{dir}/nginx.stderr")
              . slurp("$self->{dir}/error.log");
    BAIL_OUT("$what did not start on port $port: $err");
}

# The ACL users of scripts/redis-users.acl with passwords under the test
# directory (scripts/redis-acl), and an admin user for the tests' own
# redis-cli calls; the default user is off.  Returns the aclfile.
sub redis_acl {
    my ($self) = @_;
    my $acl = "$self->{dir}/redis-users.acl";
    return $acl if -f $acl;
    my $secrets = "$self->{dir}/redis-secrets";
    my $out = `$ROOT/scripts/redis-acl $secrets 2>&1 >$acl`;
    $? == 0 or BAIL_OUT("scripts/redis-acl failed: $out");
    $self->{redis_admin} = 'ragnx-test-admin';
    $self->{redis_admin_pass} = 'admin-' . join '', map { int rand 10 } 1 .. 20;
    open my $fh, '>>', $acl or die "$acl: $!";
    print $fh "user $self->{redis_admin} on >$self->{redis_admin_pass} "
              . "~* &* +\@all\n";
    close $fh;
    return $acl;
}

# the password file of an ACL user (redis_acl)
sub redis_password_file {
    my ($self, $user) = @_;
    return "$self->{dir}/redis-secrets/$user.password";
}

# A private redis-server on a free loopback port; options: appendonly,
# unix (a socket too), acl (the users of scripts/redis-users.acl).
sub start_redis {
    my ($self, %a) = @_;
    my $port = $a{port} || $self->{redis_port} || free_port();
    my $rdir = "$self->{dir}/redis";
    mkdir $rdir;
    my $aof = $a{appendonly} ? 'yes' : 'no';
    my $unix = $a{unix} ? "unixsocket $self->{dir}/redis.sock\nunixsocketperm 700"
                        : '';
    $self->{redis_socket} = "$self->{dir}/redis.sock" if $a{unix};
    $unix .= "\naclfile " . $self->redis_acl if $a{acl};
    $self->file('redis.conf', <<"CONF");
port $port
bind 127.0.0.1
dir $rdir
save ""
appendonly $aof
daemonize no
logfile $self->{dir}/redis.log
$unix
CONF
    my $pid = fork() // die "fork: $!";
    if ($pid == 0) {
        open STDOUT, '>>', "$self->{dir}/redis.stdout";
        open STDERR, '>>', "$self->{dir}/redis.stdout";
        POSIX::setpgid(0, 0);
        exec("redis-server", "$self->{dir}/redis.conf") or POSIX::_exit(127);
    }
    $self->{pids}{redis} = $pid;
    $self->{redis_port} = $port;
    for (1 .. 200) {
        last if $self->redis('PING') eq 'PONG';
        sleep 0.025;
    }
    return $port;
}

sub redis_port { $_[0]{redis_port} }
sub redis_socket { $_[0]{redis_socket} }

# redis-cli with raw output; returns the output without the final newline.
# With the ACL users on, as the tests' admin user.
sub redis {
    my ($self, @args) = @_;
    return $self->redis_as($self->{redis_admin}, @args)
        if $self->{redis_admin};
    return $self->redis_as(undef, @args);
}

# the same as an ACL user of scripts/redis-users.acl (undef: no AUTH);
# the password goes in the environment, not in argv, where ps shows it
sub redis_as {
    my ($self, $user, @args) = @_;
    my (@auth, $pass);
    if (defined $user) {
        $pass = $user eq ($self->{redis_admin} // '')
                ? $self->{redis_admin_pass}
                : slurp($self->redis_password_file($user));
        @auth = ('--user', $user);
    }
    local %ENV = (%ENV, defined $pass ? (REDISCLI_AUTH => $pass) : ());
    my $pid = open(my $fh, '-|') // die "fork: $!";
    if ($pid == 0) {
        open STDERR, '>', '/dev/null';
        exec('redis-cli', '-p', $self->{redis_port}, @auth, '--raw', @args)
            or POSIX::_exit(127);
    }
    local $/;
    my $out = <$fh>;
    close $fh;
    $out = '' unless defined $out;
    $out =~ s/\s+\z//;
    return $out;
}

sub stop_redis {
    my ($self) = @_;
    $self->stop_pid('redis', 'TERM');
}

# A private PostgreSQL 15 under the test directory, on a free loopback port
# with its unix socket there too.  PostgreSQL refuses to run as root: when
# we are root it runs as the system user ragnx-test (created if missing).
# Database "ragnx", superuser "ragnx", trust authentication.
my $PGBIN = $ENV{RAGNX_PGBIN} || '/usr/lib/postgresql/15/bin';
my $PGUSER = 'ragnx-test';

sub pg_ids {
    return () unless $> == 0;
    unless (defined getpwnam($PGUSER)) {
        system('useradd', '--system', '--no-create-home',
               '--shell', '/usr/sbin/nologin', $PGUSER) == 0
            or BAIL_OUT("cannot create user $PGUSER");
    }
    my ($uid, $gid) = (getpwnam($PGUSER))[2, 3];
    return ($uid, $gid);
}

# fork and exec as the PostgreSQL user, output to a log file
sub pg_spawn {
    my ($self, $log, @cmd) = @_;
    my ($uid, $gid) = pg_ids();
    my $pid = fork() // die "fork: $!";
    if ($pid == 0) {
        open STDOUT, '>>', $log;
        open STDERR, '>>', $log;
        if (defined $uid) {
            POSIX::setgid($gid);
            $) = "$gid $gid";
            POSIX::setuid($uid) or POSIX::_exit(126);
        }
        exec(@cmd) or POSIX::_exit(127);
    }
    return $pid;
}

sub start_postgres {
    my ($self, %a) = @_;
    my $pg = "$self->{dir}/pg";
    my $data = "$pg/data";
    my ($uid, $gid) = pg_ids();
    unless (-d $data) {
        mkdir $pg;
        chown $uid, $gid, $pg if defined $uid;
        my $pid = $self->pg_spawn("$self->{dir}/pg-initdb.log",
            "$PGBIN/initdb", '-D', $data, '-U', 'ragnx', '-A', 'trust',
            '-E', 'UTF8', '--locale=C', '--no-sync');
        waitpid($pid, 0);
        $? == 0 or BAIL_OUT("initdb failed: "
                            . slurp("$self->{dir}/pg-initdb.log"));
    }
    my $port = $self->{pg_port} ||= free_port();
    $self->{pids}{postgres} = $self->pg_spawn("$self->{dir}/postgres.log",
        "$PGBIN/postgres", '-D', $data, '-p', $port, '-k', $pg,
        '-c', 'listen_addresses=127.0.0.1', '-c', 'fsync=off',
        '-c', 'full_page_writes=off', '-c', 'max_connections=200',
        @{ $a{options} || [] });
    for (1 .. 400) {
        last if system("$PGBIN/pg_isready -q -h 127.0.0.1 -p $port") == 0;
        sleep 0.025;
    }
    unless ($self->{pg_created}++) {
        $self->psql("CREATE DATABASE ragnx", 'postgres');
    }
    return $port;
}

sub pg_port { $_[0]{pg_port} }

sub pg_conninfo {
    my ($self) = @_;
    return "host=127.0.0.1 port=$self->{pg_port} user=ragnx dbname=ragnx";
}

# fast shutdown (SIGINT), waits for the postmaster to exit
sub stop_postgres {
    my ($self) = @_;
    $self->stop_pid('postgres', 'INT');
}

# psql -XAt: rows separated by newlines, columns by "|"
sub psql {
    my ($self, $sql, $db) = @_;
    open my $fh, '-|', "$PGBIN/psql", '-h', '127.0.0.1', '-p',
        $self->{pg_port}, '-U', 'ragnx', '-d', $db || 'ragnx', '-XAtq',
        '-v', 'ON_ERROR_STOP=1', '-c', $sql
        or die "psql: $!";
    local $/;
    my $out = <$fh>;
    close $fh;
    $out = '' unless defined $out;
    $out =~ s/\s+\z//;
    return $out;
}

sub signal {
    my ($self, $name, $sig) = @_;
    kill $sig, $self->{pids}{$name};
}

# the processes whose parent is $ppid, from /proc (no ps to fork)
sub children {
    my ($ppid) = @_;
    my @kids;
    for my $stat (glob '/proc/[0-9]*/stat') {
        open my $fh, '<', $stat or next;
        my $line = <$fh> // next;
        # "pid (comm) state ppid ...": comm may hold spaces and parentheses
        push @kids, $1 if $line =~ /^(\d+) \(.*\) \S+ (\d+) / && $2 == $ppid;
    }
    return @kids;
}

# A reload is done when the master has started as many new workers as
# it had: on a slow machine that takes longer than any fixed pause, and
# until then the old workers still take requests.  The short pause after
# is for the new workers' init_process; tests that need their Redis
# connections wait for those themselves.
sub reload_nginx {
    my ($self) = @_;
    my $master = $self->{pids}{nginx};
    my @old = children($master);
    my %old = map { $_ => 1 } @old;
    kill 'HUP', $master;
    for (1 .. 200) {
        last if grep({ !$old{$_} } children($master)) >= @old;
        sleep 0.025;
    }
    sleep 0.1;
}

sub stop_pid {
    my ($self, $name, $sig) = @_;
    my $pid = delete $self->{pids}{$name} or return;
    kill $sig || 'TERM', $pid;
    for (1 .. 200) {
        my $r = waitpid($pid, POSIX::WNOHANG());
        return 1 if $r == $pid || $r == -1;
        sleep 0.025;
    }
    kill 'KILL', -$pid;
    waitpid($pid, 0);
    return 0;
}

sub stop_nginx {
    my ($self) = @_;
    $self->stop_pid('nginx', 'QUIT');
}

# Lines in the logs that fail a test file: crashes, alerts, emergencies
# and anything a sanitizer said.
sub log_problems {
    my ($self) = @_;
    my @bad;
    for my $f (glob("$self->{dir}/error.log $self->{dir}/nginx.stderr"
                    . " $self->{dir}/asan* $self->{dir}/ubsan*"))
    {
        for my $l (split /\n/, slurp($f)) {
            push @bad, $l if $l =~ /\[(alert|emerg)\]|AddressSanitizer|
                                   runtime\ error:|LeakSanitizer|
                                   SUMMARY:|exited\ on\ signal/x;
        }
    }
    return @bad;
}

sub error_log { slurp("$_[0]{dir}/error.log") }

# Only the process that started the stack stops it: a forked helper that
# dies must not take nginx and Redis down with it.
sub DESTROY {
    my ($self) = @_;
    return if $$ != $self->{owner};
    return if $self->{destroyed}++;
    for my $name (keys %{$self->{pids}}) {
        my $pid = $self->{pids}{$name};
        kill 'KILL', -$pid;
        $self->stop_pid($name, 'KILL');
    }
}

sub done {
    my ($self) = @_;
    $self->stop_nginx;
    for my $name (keys %{$self->{pids}}) {
        $self->stop_pid($name);
    }
    my @bad = $self->log_problems;
    ok(!@bad, 'no alerts, crashes or sanitizer reports in the logs')
        or diag(join "\n", @bad);
    responses_checked();
    done_testing();
}

# With Ragnx::OpenAPI->hook: the test of how many responses were checked
# (done() runs it; a file that ends with done_testing() itself calls it).
sub responses_checked {
    $RESPONSE_SUMMARY->() if $RESPONSE_SUMMARY;
}

# A response a test read by itself (a stream, say), checked as the
# helpers' are: (method, path, raw response); returns it parsed.
sub check_raw {
    my ($method, $path, $raw) = @_;
    my $res = parse_response($raw);
    $RESPONSE_CHECK->($method, $path, $res) if $RESPONSE_CHECK;
    return $res;
}

# Server-sent events.  sse_open sends GET $path (HTTP/1.0, so the server
# ends the stream by closing) and returns the stream's state; sse_read
# reads it for at most $limit s, or until $until->(events) is true, and
# can be called again: head, events (parsed, comments left out), times
# (when each arrived), all ([time, parsed] with the comments), closed.
# The response is checked against the API document (check_raw) once it
# is closed, or by sse_check for a stream read only in part.
sub sse_parse {
    my ($text) = @_;
    my %e = (id => undef, event => undef, data => undef);
    for (split /\n/, $text) {
        $e{comment} = 1 if /^:/;
        $e{$1} = $2 if /^(id|event|data): ?(.*)$/;
    }
    return \%e;
}

sub sse_open {
    my ($self, $path, @headers) = @_;
    my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1',
                                  PeerPort => $self->{port}, Proto => 'tcp')
        or die "connect: $!";
    print $s "GET $path HTTP/1.0\r\nHost: localhost\r\n"
             . join('', map { "$_\r\n" } @headers) . "\r\n";
    return { s => $s, path => $path, buf => '', raw => '', events => [],
             times => [], all => [] };
}

sub sse_read {
    my ($st, $limit, $until) = @_;
    require IO::Select;
    my $sel = IO::Select->new($st->{s});
    my $t0 = time;
    while (!$st->{closed} && time - $t0 < $limit) {
        last if $until && $until->($st->{events});
        next unless $sel->can_read(0.05);
        my $n = sysread($st->{s}, my $chunk, 65536);
        if (!$n) { $st->{closed} = 1; last }
        $st->{raw} .= $chunk;
        $st->{buf} .= $chunk;
        if (!defined $st->{head} && $st->{buf} =~ s/\A(.*?)\r\n\r\n//s) {
            $st->{head} = $1;
        }
        next unless defined $st->{head};
        while ($st->{buf} =~ s/\A(.*?)\n\n//s) {
            my $e = sse_parse($1);
            push @{ $st->{all} }, [time, $e];
            next if $e->{comment};
            push @{ $st->{events} }, $e;
            push @{ $st->{times} }, time;
        }
    }
    sse_check($st) if $st->{closed};
    return $st;
}

sub sse_check {
    my ($st) = @_;
    check_raw(GET => $st->{path}, $st->{raw}) unless $st->{checked}++;
}

# Raw HTTP/1.1 request; returns a hash: status, headers (lower-cased keys,
# multiple values joined by ", "), header_list, body, raw.
sub request {
    my ($self, $method, $path, %a) = @_;
    my $s = $self->send_request($method, $path, %a)
        or return { status => 0, error => "connect: $!" };
    return $self->read_response($s, $a{timeout});
}

# Whether nginx answers GET $path promptly: three requests, each a 200,
# their median under $limit seconds.  One request alone can be late on a
# busy host for reasons of its own; a worker that blocked would make
# them all late.  Returns (ok, the times as text) for the test's name.
sub responsive {
    my ($self, $path, $limit) = @_;
    my @took;
    my $ok = 1;
    for (1 .. 3) {
        my $t0 = time;
        $ok = 0 if $self->request(GET => $path)->{status} != 200;
        push @took, time - $t0;
    }
    my @sorted = sort { $a <=> $b } @took;
    $ok = 0 if $sorted[1] >= $limit;
    return ($ok, join(' / ', map { sprintf '%.1f ms', $_ * 1000 } @took));
}

# The two halves of request(): a request written now and its response
# read later, so a test can hold requests open or close them unanswered.
sub send_request {
    my ($self, $method, $path, %a) = @_;
    my $port = $a{port} || $self->{port};
    my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $port,
                                  Proto => 'tcp', Timeout => 10)
        or return undef;
    $s->print(build_request($method, $path, %a));
    # what read_response needs to check the response (RESPONSE_CHECK)
    $self->{sent}{0 + $s} = [$method, $path] if $RESPONSE_CHECK;
    return $s;
}

sub read_response {
    my ($self, $s, $timeout) = @_;
    my $sent = delete $self->{sent}{0 + $s};
    my $raw = '';
    my $deadline = time + ($timeout || 10);
    $s->blocking(0);
    while (time < $deadline) {
        my $n = sysread($s, my $buf, 65536);
        if (defined $n) {
            last if $n == 0;
            $raw .= $buf;
            next;
        }
        sleep 0.002;
    }
    close $s;
    my $res = parse_response($raw);
    $RESPONSE_CHECK->(@$sent, $res) if $RESPONSE_CHECK && $sent;
    return $res;
}

sub parse_response {
    my ($raw) = @_;
    my %r = (raw => $raw, status => 0, headers => {}, header_list => []);
    my ($head, $body) = split /\r\n\r\n/, $raw, 2;
    return \%r unless defined $head;
    my @lines = split /\r\n/, $head;
    my $sl = shift @lines;
    ($r{status}) = $sl =~ m{^HTTP/1\.[01] (\d{3})} if defined $sl;
    $r{status} ||= 0;
    for (@lines) {
        my ($k, $v) = /^([^:]+):\s*(.*)$/ or next;
        push @{$r{header_list}}, [$k, $v];
        my $lk = lc $k;
        $r{headers}{$lk} = exists $r{headers}{$lk}
                           ? "$r{headers}{$lk}, $v" : $v;
    }
    $body = '' unless defined $body;
    if (($r{headers}{'transfer-encoding'} || '') =~ /chunked/i) {
        my $out = '';
        while ($body =~ s/^([0-9a-fA-F]+)\r\n//) {
            my $n = hex $1;
            last if $n == 0;
            $out .= substr($body, 0, $n, '');
            $body =~ s/^\r\n//;
        }
        $body = $out;
    }
    $r{body} = $body;
    return \%r;
}

# Many requests at once over separate connections, driven by one select
# loop: all are written before any reply is read.  Each item is
# [method, path, %opts]; returns the parsed responses in order.  Options:
# port (default: the test server's), timeout (s).
sub parallel {
    my ($self, $reqs, %a) = @_;
    require IO::Select;
    my (@socks, @raw);
    for my $i (0 .. $#$reqs) {
        my ($m, $p, %o) = @{$reqs->[$i]};
        my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1',
                                      PeerPort => $a{port} || $self->{port},
                                      Proto => 'tcp', Timeout => 10)
            or die "connect: $!";
        $s->print(build_request($m, $p, %o));
        $s->blocking(0);
        $socks[$i] = $s;
        $raw[$i] = '';
    }
    my %open = map { $_ => 1 } 0 .. $#socks;
    my $sel = IO::Select->new(@socks);
    my %idx = map { (0 + $socks[$_]) => $_ } 0 .. $#socks;
    my $deadline = time + ($a{timeout} || 20);
    while (%open && time < $deadline) {
        for my $s ($sel->can_read(0.1)) {
            my $i = $idx{0 + $s};
            my $n = sysread($s, my $buf, 65536);
            next if !defined $n;
            if ($n == 0) {
                $sel->remove($s);
                close $s;
                delete $open{$i};
                next;
            }
            $raw[$i] .= $buf;
        }
    }
    my @res = map { parse_response($_) } @raw;
    if ($RESPONSE_CHECK) {
        $RESPONSE_CHECK->(@{ $reqs->[$_] }[0, 1], $res[$_]) for 0 .. $#res;
    }
    return \@res;
}

sub build_request {
    my ($method, $path, %a) = @_;
    my $body = $a{body};
    my @h = @{ $a{headers} || [] };
    my $req = "$method $path HTTP/1.1\r\nHost: localhost\r\n"
              . "Connection: close\r\n";
    for (my $i = 0; $i < @h; $i += 2) {
        $req .= "$h[$i]: $h[$i + 1]\r\n";
    }
    if (defined $body) {
        $req .= "Content-Length: " . length($body) . "\r\n"
            unless grep { /^content-length$/i } @h;
        $req .= "\r\n$body";
    } else {
        $req .= "\r\n";
    }
    return $req;
}

# An HS256 token for the tests (header and claims as given)
sub jwt_hs256 {
    my ($secret, $claims, $header) = @_;
    require Digest::SHA;
    require MIME::Base64;
    require JSON::PP;
    my $js = JSON::PP->new->canonical;
    my $b64 = sub { MIME::Base64::encode_base64url($_[0]) };
    my $h = $b64->($js->encode($header || { alg => 'HS256', typ => 'JWT' }));
    my $p = $b64->($js->encode($claims));
    my $sig = $b64->(Digest::SHA::hmac_sha256("$h.$p", $secret));
    return "$h.$p.$sig";
}

sub json_body {
    my ($res) = @_;
    require JSON::PP;
    my $j = eval { JSON::PP->new->utf8->decode($res->{body}) };
    return $j;
}

1;
