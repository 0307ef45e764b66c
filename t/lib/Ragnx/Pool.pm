package Ragnx::Pool;

# Test helpers for the worker pool: its config file, starting and stopping
# the daemon, running its CLI, and enqueueing jobs exactly as the nginx
# module does: the module's own ask script, ngx_module/lua/ask.lua, is run
# with EVAL, with the same keys and arguments.

use strict;
use warnings;

use Exporter 'import';
use Digest::SHA qw(sha256_hex);
use JSON::PP;
use POSIX ();
use Time::HiRes qw(sleep time);
use Test::More;
use Ragnx::Test qw(slurp);

our @EXPORT_OK = qw(uuid uuid7);

# The string macros of shared/ragnx_keys.h, as the C compiler joins them
# (a definition made of "..." literals and earlier macros).
my %MACRO;
for my $line (split /\n/, slurp('shared/ragnx_keys.h')) {
    next unless $line =~ /^#define\s+(RAGNX_\w+)\s+(.*?)\s*$/;
    my ($name, $def) = ($1, $2);
    next unless $def =~ /^(?:\s*(?:"[^"\\]*"|[A-Z_]+))+$/;
    my $v = '';
    while ($def =~ /\G\s*(?:"([^"\\]*)"|([A-Z_]+))/gc) {
        $v .= defined $1 ? $1 : $MACRO{$2} // die "unknown macro $2";
    }
    $MACRO{$name} = $v;
}

sub worker_bin {
    my $b = ($ENV{RAGNX_BUILD} || 'build') . '/workers/ragnx-worker';
    -x $b or BAIL_OUT("$b not built: run the suite with make test");
    return $b;
}

# a job id as the module makes one: v7, the time in its first 48 bits
sub uuid7 {
    my $u = uuid();
    my $h = sprintf '%012x', int(time * 1000);
    substr($u, 0, 8) = substr($h, 0, 8);
    substr($u, 9, 4) = substr($h, 8, 4);
    substr($u, 14, 1) = '7';
    return $u;
}

sub uuid {
    my @b = map { int rand 256 } 1 .. 16;
    $b[6] = ($b[6] & 0x0f) | 0x40;
    $b[8] = ($b[8] & 0x3f) | 0x80;
    my $h = join '', map { sprintf '%02x', $_ } @b;
    return join '-', substr($h, 0, 8), substr($h, 8, 4), substr($h, 12, 4),
                     substr($h, 16, 4), substr($h, 20, 12);
}

# the ask script, as the module sends it (scripts/embed-lua): @NAME@ is
# the string NAME of shared/ragnx_keys.h, "--@include f" the file f
sub ask_script {
    my $lua = slurp('ngx_module/lua/ask.lua');
    1 while $lua =~ s{^--\@include\s+(\S+)\s*\n}{slurp("ngx_module/lua/$1")}me;
    $lua =~ s{\@(\w+)\@}{$MACRO{$1} // die "unknown macro $1"}ge;
    return $lua;
}

# any script of ngx_module/lua/ or workers/lua/, as scripts/embed-lua
# embeds it
sub lua_script {
    my ($file) = @_;
    (my $dir = $file) =~ s{/[^/]+\z}{};
    my $lua = slurp($file);
    1 while $lua =~ s{^--\@include\s+(\S+)\s*\n}{slurp("$dir/$1")}me;
    $lua =~ s{\@(\w+)\@}{$MACRO{$1} // die "unknown macro $1"}ge;
    return $lua;
}

my $SCRIPT;

# name => N (default "worker"): N.conf, N.log and the pid of N, so a test
# can run pools side by side
sub new {
    my ($class, $t, %a) = @_;
    return bless { t => $t, name => 'worker', %a }, $class;
}

sub t { $_[0]{t} }

# write the worker's config file: defaults for the test, then %s
sub configure {
    my ($self, %s) = @_;
    my $t = $self->{t};
    my %c = (
        redis_port         => $t->redis_port,
        database           => $t->pg_conninfo,
        workers            => 1,
        concurrency        => 4,
        db_pool            => 4,
        log_level          => 'debug',
        retry_base         => 100,
        retry_max          => 400,
        visibility_timeout => 2000,
        rpc_key_file       => ($t->rpc_keys)[0],
        %s,
    );
    my $conf = join '', map { defined $c{$_} ? "$_ = $c{$_}\n" : '' }
                        sort keys %c;
    $t->file("$self->{name}.conf", $conf);
    $self->{conf} = \%c;
    return "$t->{dir}/$self->{name}.conf";
}

# run the CLI; returns (exit code, stdout + stderr)
sub cli {
    my ($self, @args) = @_;
    my $conf = "$self->{t}{dir}/$self->{name}.conf";
    my $out = '';
    my $pid = open(my $fh, '-|') // die "fork: $!";
    if ($pid == 0) {
        open STDERR, '>&', \*STDOUT;
        exec(worker_bin(), '-c', $conf, @args) or POSIX::_exit(127);
    }
    local $/;
    $out = <$fh>;
    close $fh;
    my $rc = $? >> 8;
    $out = '' unless defined $out;
    fail("sanitizer report from ragnx-worker @args") and diag($out)
        if $out =~ /Sanitizer|runtime error:/;
    return ($rc, $out);
}

sub worker_log { slurp("$_[0]{t}{dir}/$_[0]{name}.log") }

# the pool's log lines (one JSON object each) as hashes; a line that is no
# JSON object becomes { raw => line } (a sanitizer's report, say), so a
# test can find it
sub json_lines {
    my ($text) = @_;
    my $json = JSON::PP->new->utf8;
    return map {
        my $o = eval { $json->decode($_) };
        ref $o eq 'HASH' ? $o : { raw => $_ }
    } grep { length } split /\n/, $text;
}

# the lines of the pool's log (from byte $from) that are about job $id
sub job_lines {
    my ($self, $id, $from) = @_;
    return grep { ($_->{job} // '') eq $id }
           json_lines(substr($self->worker_log, $from || 0));
}

sub start {
    my ($self, %a) = @_;
    my $t = $self->{t};
    my $conf = "$t->{dir}/$self->{name}.conf";
    my $before = length $self->worker_log;
    my %env = $t->preload_env;
    my $pid = fork() // die "fork: $!";
    if ($pid == 0) {
        $ENV{$_} = $env{$_} for keys %env;
        $ENV{$_} = $a{env}{$_} for keys %{ $a{env} || {} };
        # a test's library goes after the sanitizers', which must be first
        $ENV{LD_PRELOAD} = join ':', grep { $_ } $env{LD_PRELOAD},
                                                 $a{preload}
            if $a{preload};
        open STDOUT, '>>', "$t->{dir}/$self->{name}.log";
        open STDERR, '>>', "$t->{dir}/$self->{name}.log";
        exec(worker_bin(), '-c', $conf) or POSIX::_exit(127);
    }
    $t->{pids}{ $self->{name} } = $pid;
    my $n = $a{workers} || $self->{conf}{workers} || 1;
    for (1 .. 400) {
        my $log = substr($self->worker_log, $before);
        my $ready = () = $log =~ /cache generation/g;
        return $pid if $ready >= $n;
        last if waitpid($pid, POSIX::WNOHANG()) == $pid;
        sleep 0.025;
    }
    diag($self->worker_log);
    BAIL_OUT('worker pool did not start');
}

sub pid { $_[0]{t}{pids}{ $_[0]{name} } }

# the worker processes (children of the supervisor)
sub children {
    my ($self) = @_;
    my $pid = $self->pid or return ();
    return Ragnx::Test::children($pid);
}

# stop: TERM by default; returns the exit status (-1: had to KILL)
sub stop {
    my ($self, $sig, $timeout) = @_;
    my $t = $self->{t};
    my $pid = delete $t->{pids}{ $self->{name} } or return;
    kill $sig || 'TERM', $pid;
    my $deadline = time + ($timeout || 20);
    while (time < $deadline) {
        my $r = waitpid($pid, POSIX::WNOHANG());
        return $? if $r == $pid;
        sleep 0.02;
    }
    kill 'KILL', $pid;
    waitpid($pid, 0);
    return -1;
}

# enqueue a question as POST /api/ask would; returns (job id, outcome, gen)
sub ask {
    my ($self, %a) = @_;
    my $t = $self->{t};
    $SCRIPT ||= ask_script();
    my $id = $a{id} || uuid7();
    my $chat = $a{chat} || uuid();
    my $owner = $a{owner} || 'alice';
    my $query = $a{query};
    my $norm = lc $query;
    $norm =~ s/^\s+|\s+$//g;
    $norm =~ s/\s+/ /g;
    my $digest = sha256_hex($norm);
    my $now = int(time * 1000);
    # scope => 'chat': asked in an existing chat (its owner checked as
    # the module would have; verified => 0 leaves the check to the script)
    my $in_chat = ($a{scope} || '') eq 'chat';
    my $payload = JSON::PP->new->canonical->encode({
        v => 2, id => $id, owner => $owner, chatId => $chat,
        query => $query, digest => $digest, createdAt => $now,
        $in_chat ? (scope => 'chat') : (),
        defined $a{rid} ? (rid => $a{rid}) : () });
    my @mode = $in_chat ? ('chat', '', ($a{verified} // 1) ? '1' : '')
                        : ('all', '', '');
    my $out = $t->redis('EVAL', $SCRIPT, 5, '{ragnx}:gen', '{ragnx}:jobs',
                        "{ragnx}:job:$id", "{ragnx}:chat:$chat",
                        '{ragnx}:records', $digest, $id, $payload, $owner,
                        $chat, $now, $a{max} || 100000, $a{ttl} || 3600,
                        @mode, $a{records_max} || 100000);
    my ($outcome, $gen) = split /\n/, $out;
    # the payload is immutable: the stream entry carries it as it is
    $self->{payloads}{$id} = $payload if defined $gen;
    $self->{gens}{$id} = $gen if defined $gen;
    return wantarray ? ($id, $outcome, $gen, $chat) : $id;
}

# the payload a job was enqueued with (leaders keep it only in the stream)
sub payload { $_[0]{payloads}{$_[1]} }

# the fields of a job's stream entry, for XADD: as the script wrote them
sub fields {
    my ($self, $id) = @_;
    return ('id', $id, 'job', $self->{payloads}{$id}, 'gen',
            $self->{gens}{$id});
}

sub job {
    my ($self, $id) = @_;
    my $j = $self->{t}->redis('EVAL',
        "return cjson.encode(redis.call('HGETALL', KEYS[1]))", 1,
        "{ragnx}:job:$id");
    my $a = eval { JSON::PP->new->utf8->decode($j) } || [];
    $a = [] unless ref $a eq 'ARRAY';
    my %h = @$a;
    return \%h;
}

# wait until the job is completed or failed; returns its hash
sub wait_job {
    my ($self, $id, $timeout) = @_;
    my $deadline = time + ($timeout || 15);
    my $j;
    while (time < $deadline) {
        $j = $self->job($id);
        return $j if ($j->{status} || '') =~ /^(completed|failed)$/;
        sleep 0.05;
    }
    return $j;
}

sub wait_status {
    my ($self, $id, $want, $timeout) = @_;
    my $deadline = time + ($timeout || 15);
    while (time < $deadline) {
        return 1 if ($self->job($id)->{status} || '') eq $want;
        sleep 0.02;
    }
    return 0;
}

# lines of the worker log that must fail a test file
sub log_problems {
    my ($self) = @_;
    return grep { /AddressSanitizer|runtime error:|LeakSanitizer|
                   exited\ on\ signal\ (?!9\b|15\b)/x }
           split /\n/, $self->worker_log;
}

# stop everything in an order that lets each part exit cleanly
sub finish {
    my ($self) = @_;
    my $t = $self->{t};
    $self->stop('TERM');
    $t->stop_pid('mockllm', 'KILL');
    $t->stop_postgres;
    my @bad = $self->log_problems;
    ok(!@bad, 'no crashes or sanitizer reports in the worker log')
        or diag(join "\n", @bad);
    $t->done;
}

1;
