#!/usr/bin/perl
# `make run` from a fresh var directory on a free port: wait for the
# printed walkthrough, follow it as printed (register, login, profile,
# ask, poll, chats, messages), ask the same question again (from the
# cache, recorded in the chat), check Redis's ACL users (passwords in
# var/secrets, mode 0600; the default user off), kill -9 Redis (started
# again, the stack answers again), then Ctrl-C (SIGINT to the process group,
# as a terminal sends it) and check that nothing is left running.  A second
# `make run` on the same var directory while one runs refuses to start.

use strict;
use warnings;
use lib 't/lib';
use Test::More;
use IO::Socket::INET;
use JSON::PP;
use POSIX ();
use Time::HiRes qw(time sleep);
use Ragnx::Test qw(slurp);

my $t = Ragnx::Test->new;
my $var = "$t->{dir}/var";
my $port = Ragnx::Test::free_port();
my $out = "$t->{dir}/run.out";
my $json = JSON::PP->new->utf8->canonical;

# make run as a developer types it: not as a sub-make of the suite (so the
# suite's BUILD/SAN overrides do not leak in), its own process group
my %env = (%ENV, RAGNX_VAR => $var, PORT => $port);
delete @env{qw(MAKEFLAGS MFLAGS MAKELEVEL RAGNX_MODULE RAGNX_BUILD
               RAGNX_WORKER LD_PRELOAD ASAN_OPTIONS)};

sub diag_logs {
    for my $log (glob("$var/log/*")) { diag("$log:\n" . slurp($log)) }
}

sub start_run {
    my ($file) = @_;
    my $pid = fork() // die "fork: $!";
    if ($pid == 0) {
        POSIX::setpgid(0, 0);
        %ENV = %env;
        open STDIN, '<', '/dev/null';
        open STDOUT, '>', $file;
        open STDERR, '>&', \*STDOUT;
        exec('make', '-s', 'run') or POSIX::_exit(127);
    }
    return $pid;
}

my $pid = start_run($out);
my $text = '';
for (1 .. 1800) {
    $text = slurp($out);
    last if $text =~ /ragnx is running on/ && $text =~ /messages -H/;
    last if waitpid($pid, POSIX::WNOHANG()) == $pid;
    sleep 0.1;
}
like($text, qr{ragnx is running on http://127\.0\.0\.1:$port},
     'make run prints the URL') or do {
    diag($text);
    diag_logs();
    kill 'INT', -$pid;
    BAIL_OUT('make run did not start');
};

# the chat page: its address is the first line, and it is served
like((split /\n/, $text)[0] // '',
     qr{^ragnx: the chat page will be at http://127\.0\.0\.1:$port/$},
     'make run prints the page\'s address first');
like($text, qr{^the chat page: http://127\.0\.0\.1:$port/$}m,
     '... and again once it runs');
{
    my $r = $t->request(GET => '/', port => $port);
    is($r->{status}, 200, 'the page: 200');
    like($r->{headers}{'content-type'} // '', qr{^text/html},
         '... text/html');
    like($r->{headers}{'content-security-policy'} // '',
         qr{default-src 'self'}, '... with a Content-Security-Policy');
    unlike($r->{headers}{'content-security-policy'} // '', qr{unsafe-inline},
           '... that allows nothing inline');
    like($r->{body}, qr{<script type="module" src="js/app\.js">},
         '... the page itself');
}

# the walkthrough: each command, continuation lines joined
my ($block) = $text =~ /Ctrl-C stops it\)\n\n(.*?)\n\n/s;
my @cmds;
for my $line (split /\n/, $block // '') {
    $line =~ s/^\s+//;
    if (@cmds && $cmds[-1] =~ s/\\\z//) {
        $cmds[-1] .= " $line";
    } else {
        push @cmds, $line;
    }
}
ok(@cmds >= 8, 'a walkthrough of ' . scalar(@cmds) . ' commands');

my %vars;
my $shell = sub {
    my ($cmd) = @_;
    $cmd =~ s/\b(JOB_ID|CHAT_ID)\b/$vars{$1}/g;
    my $prelude = join '', map { "$_='$vars{$_}'; " } grep { /^[A-Z]+$/ }
                  keys %vars;
    open my $fh, '-|', 'bash', '-c', "$prelude$cmd; echo; echo \"TOKEN=\$TOKEN\""
        or die "bash: $!";
    local $/;
    my $o = <$fh>;
    close $fh;
    ($vars{TOKEN}) = $o =~ /^TOKEN=(\S*)$/m if $o =~ /^TOKEN=\S+$/m;
    $o =~ s/\n?TOKEN=.*\z//s;
    return $o;
};

my ($health, $reg, $me, $ask, $poll, $chats, $msgs);
for my $cmd (@cmds) {
    if ($cmd =~ m{/health}) {
        $health = $json->decode($shell->($cmd));
    } elsif ($cmd =~ m{/api/auth/register}) {
        $reg = $json->decode($shell->($cmd));
    } elsif ($cmd =~ /^TOKEN=/) {
        $shell->($cmd);
    } elsif ($cmd =~ m{/api/users/me}) {
        $me = $json->decode($shell->($cmd));
    } elsif ($cmd =~ m{-X POST \S+/api/ask}) {
        $ask = $json->decode($shell->($cmd));
        $vars{JOB_ID} = $ask->{jobId};
        $vars{CHAT_ID} = $ask->{chatId};
    } elsif ($cmd =~ m{/api/ask/JOB_ID}) {
        for (1 .. 200) {
            $poll = $json->decode($shell->($cmd));
            last if ($poll->{status} // '') =~ /completed|failed/;
            sleep 0.1;
        }
    } elsif ($cmd =~ m{/api/chats/CHAT_ID/messages}) {
        $msgs = $json->decode($shell->($cmd));
    } elsif ($cmd =~ m{/api/chats}) {
        $chats = $json->decode($shell->($cmd));
    } else {
        fail("an unexpected walkthrough line: $cmd");
    }
}

is($health->{status}, 'ok', 'health: ok');
is($health->{redis}, 'ok', 'health: redis ok');
ok($reg->{token} && $reg->{user}{email} eq 'me@example.com',
   'register: a token and the user') or do {
    diag(JSON::PP->new->canonical->encode($reg // {}));
    diag_logs();
};
ok(length($vars{TOKEN} // '') > 20, 'login: TOKEN set as printed');
is($me->{id}, $reg->{user}{id}, 'me: the registered user');
ok($ask->{jobId}, 'ask: queued with a job id');
is($poll->{status}, 'completed', 'poll: completed');
ok(length($poll->{answer} // '') > 20, 'poll: an answer');
ok(@{ $poll->{sources} || [] }, 'poll: with sources from the docs');
is($chats->{chats}[0]{id}, $vars{CHAT_ID}, 'chats: the new chat');
is(scalar @{ $msgs->{messages} || [] }, 2, 'messages: question and answer');

# the same question again in a new chat: from the cache, recorded there
{
    my $o = $shell->("curl -s -X POST http://127.0.0.1:$port/api/ask "
        . "-H \"Authorization: Bearer \$TOKEN\" "
        . "-H 'Content-Type: application/json' "
        . "-d '{\"query\":\"what is  RAGNX?\"}'");
    my $cached = $json->decode($o);
    is($cached->{source}, 'cache', 'the same question again: from the cache');
    is($cached->{answer}, $poll->{answer}, '... the same answer');
    my $n = 0;
    for (1 .. 100) {
        my $m = $json->decode($shell->("curl -s http://127.0.0.1:$port"
            . "/api/chats/$cached->{chatId}/messages "
            . "-H \"Authorization: Bearer \$TOKEN\""));
        $n = @{ $m->{messages} || [] };
        last if $n == 2;
        sleep 0.05;
    }
    is($n, 2, '... and recorded in its chat');
}

# the API's document, as make run serves it
{
    my $r = $t->request('GET', '/api/openapi.json', port => $port);
    is($r->{status}, 200, '/api/openapi.json: 200');
    is($r->{headers}{'content-type'}, 'application/json',
       '/api/openapi.json: application/json');
    ok($r->{body} eq slurp('docs/openapi.json'),
       '/api/openapi.json: docs/openapi.json byte for byte');
}

# Redis: each side its own ACL user, passwords made under var/secrets
# with mode 0600, the default user off
{
    my $secrets = "$var/secrets";
    is(sprintf('%o', (stat $secrets)[2] & 0777), '700', 'var/secrets: 0700');
    for my $u (qw(ragnx-nginx ragnx-pool)) {
        my $f = "$secrets/$u.password";
        ok(-s $f, "$u: a password made at the first run");
        is(sprintf('%o', (stat $f)[2] & 0777), '600', "$u: mode 0600");
    }
    my $pwf = qr{password_file=\Q$secrets\E/ragnx-nginx\.password;};
    like(slurp("$var/nginx/nginx.conf"),
         qr{ragnx_redis 127\.0\.0\.1:\d+ user=ragnx-nginx\s+$pwf},
         'nginx: as ragnx-nginx');
    my $wconf = slurp("$var/worker.conf");
    like($wconf, qr/^redis_user = ragnx-pool$/m, 'the pool: as ragnx-pool');
    my ($rport) = $wconf =~ /^redis_port = (\d+)$/m;
    my $cli = sub {
        my ($user, @args) = @_;
        local $ENV{REDISCLI_AUTH} = slurp("$secrets/$user.password")
            if $user;
        my @u = $user ? ('--user', $user) : ();
        open my $fh, '-|', 'redis-cli', '-p', $rport, @u, @args
            or die "redis-cli: $!";
        local $/;
        my $o = <$fh> // '';
        close $fh;
        return $o;
    };
    like($cli->(undef, 'PING'), qr/NOAUTH/, 'redis: no AUTH, no access');
    like($cli->(undef, 'AUTH', 'default', ''), qr/WRONGPASS/,
         'redis: the default user is off');
    like($cli->('ragnx-nginx', 'FLUSHALL'), qr/NOPERM/,
         'redis: ragnx-nginx may not FLUSHALL');
    like($cli->('ragnx-pool', 'KEYS', '*'), qr/NOPERM/,
         'redis: ragnx-pool may not KEYS');
}

# a second make run on the same var refuses
{
    my $pid2 = start_run("$t->{dir}/run2.out");
    my $done = 0;
    for (1 .. 600) {
        if (waitpid($pid2, POSIX::WNOHANG()) == $pid2) { $done = 1; last }
        sleep 0.1;
    }
    ok($done && $? != 0, 'a second make run exits with an error');
    like(slurp("$t->{dir}/run2.out"), qr/already running/, '... saying so');
}

# Redis killed (kill -9): make run says so, starts it again, and the
# stack answers again, a new question included
{
    my ($rport) = slurp("$var/worker.conf") =~ /^redis_port = (\d+)$/m;
    my $redis = sub {
        map { (split ' ')[0] } grep { /redis-server \S*:\Q$rport\E\b/ }
            split /\n/, `ps -eo pid=,args=`;
    };
    my ($old) = $redis->();
    ok($old, "redis-server of the stack (pid $old)");
    kill 'KILL', $old;
    my ($new, $said);
    for (1 .. 200) {
        ($new) = grep { $_ != $old } $redis->();
        $said = slurp($out) =~ /ragnx: redis exited .*starting it again/;
        last if $new && $said;
        sleep 0.05;
    }
    ok($said, 'make run says Redis exited and starts it again');
    ok($new, "a new redis-server runs (pid " . ($new // '-') . ")");
    my ($health, $ask, $poll) = ({}, {}, {});
    for (1 .. 200) {
        $health = eval { $json->decode($shell->(
            "curl -s http://127.0.0.1:$port/health")) } || {};
        last if ($health->{redis} // '') eq 'ok';
        sleep 0.05;
    }
    is($health->{redis}, 'ok', 'health: redis ok again');
    for (1 .. 100) {
        $ask = eval { $json->decode($shell->(
            "curl -s -X POST http://127.0.0.1:$port/api/ask "
            . "-H \"Authorization: Bearer \$TOKEN\" "
            . "-H 'Content-Type: application/json' "
            . "-d '{\"query\":\"How does the pool drain?\"}'")) } || {};
        last if $ask->{jobId};
        sleep 0.1;
    }
    ok($ask->{jobId}, 'ask after the restart: queued');
    for (1 .. 200) {
        last unless $ask->{jobId};
        $poll = eval { $json->decode($shell->(
            "curl -s http://127.0.0.1:$port/api/ask/$ask->{jobId} "
            . "-H \"Authorization: Bearer \$TOKEN\"")) } || {};
        last if ($poll->{status} // '') =~ /completed|failed/;
        sleep 0.1;
    }
    is($poll->{status}, 'completed', '... and answered by the pool')
        or diag_logs();
}

# Ctrl-C: everything stops
my @before = split /\n/, `ps -eo pid=,args= | grep -F '$var' | grep -v grep`;
ok(@before >= 4, scalar(@before) . ' processes of the stack were running');
kill 'INT', -$pid;
my $exited = 0;
for (1 .. 600) {
    if (waitpid($pid, POSIX::WNOHANG()) == $pid) { $exited = 1; last }
    sleep 0.1;
}
ok($exited, 'make run exits after SIGINT');
my @left;
for (1 .. 50) {
    @left = split /\n/, `ps -eo pid=,args= | grep -F '$var' | grep -v grep`;
    last unless @left;
    sleep 0.1;
}
is(scalar @left, 0, 'nothing left running') or diag(join "\n", @left);
ok(!-e "$var/run.pid", 'run.pid removed');
ok(!IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $port,
                          Proto => 'tcp'), 'the port is closed');
kill 'KILL', map { (split ' ')[0] } @left if @left;

done_testing();
