#!/usr/bin/perl
# 1,000 streams open at once on one nginx worker: 100 answers written at
# the same time by the pool, each read by 10 clients.  Every stream ends
# with "done", its pieces make its job's stored answer, and all of them
# were open together (each had its headers before the first answer
# ended).  One poll loop reads them all, as a browser-facing proxy would.

use strict;
use warnings;
use lib 't/lib';
use Test::More;
use Cwd qw(getcwd);
use JSON::PP;
use IO::Poll qw(POLLIN POLLHUP POLLERR);
use IO::Socket::INET;
use POSIX ();
use Time::HiRes qw(sleep time);

my $STREAMS = 1000;
my $JOBS = 100;

# a descriptor per stream here, two in nginx: raise the soft limit when
# it is below what the test needs (once; the hard limit decides)
if (POSIX::sysconf(POSIX::_SC_OPEN_MAX()) < $STREAMS + 200
    && !$ENV{RAGNX_NOFILE_RAISED})
{
    $ENV{RAGNX_NOFILE_RAISED} = 1;
    exec('/bin/sh', '-c', 'ulimit -n 8192 && exec "$@"', 'sh', $^X,
         map({ "-I$_" } grep { !ref } @INC), $0, @ARGV)
        or die "exec: $!";
}

require Ragnx::Test;
require Ragnx::Pool;
require Ragnx::MockLLM;

my $root = getcwd();
my $t = Ragnx::Test->new;
$t->start_redis;
$t->start_postgres;
my $mock = Ragnx::MockLLM->start($t);
my $p = Ragnx::Pool->new($t);
my $secret = 'stream-many-secret-0123456789abcdef';
my $key = $t->file('hs.key', $secret);
my $llmkey = $t->file('llm.key', "sk-test\n");
$p->configure(llm_provider => 'anthropic', llm_base_url => $mock->url,
              llm_model => 'claude-mock', llm_api_key_file => $llmkey,
              jwt_key_file => $key, concurrency => $JOBS / 2, workers => 2,
              db_pool => 8, log_level => 'info', llm_timeout => 60000,
              visibility_timeout => 60000);
my ($rc, $out) = $p->cli('migrate');
is($rc, 0, 'migrate') or diag($out);
$p->start;

$t->start_nginx(
    workers     => 1,
    connections => 4 * $STREAMS,
    main        => 'worker_rlimit_nofile ' . 8 * $STREAMS . ';',
    http        => "ragnx_redis 127.0.0.1:" . $t->redis_port . ";",
    server      => "ragnx_jwt_key_file $key;\n" . <<"EOF");
        location = /api/ask {
            ragnx_jwt on;
            ragnx_validate_schema $root/schemas/ask.json;
            ragnx_ask;
        }
        location ~ ^/api/ask/([^/]+)/events\$ {
            ragnx_jwt on;
            ragnx_ask_events \$1;
        }
EOF

my $json = JSON::PP->new->canonical;
my %tok;
sub token {
    my ($who) = @_;
    return $tok{$who} ||= Ragnx::Test::jwt_hs256($secret,
        { sub => $who, exp => time + 3600 });
}

# the answers are written slowly enough that every stream is open first
$mock->set(chunk_ms => 500, delay_ms => 1000);

my @jobs;
for my $i (1 .. $JOBS) {
    my $who = "user$i";
    my $q = "What is answer number $i of many, streamed at once?";
    my $r = $t->request(POST => '/api/ask',
        headers => [ Authorization => 'Bearer ' . token($who),
                     'Content-Type' => 'application/json' ],
        body => $json->encode({ query => $q }));
    my $b = Ragnx::Test::json_body($r) || {};
    push @jobs, { who => $who, id => $b->{jobId}, q => $q };
}
is(scalar(grep { $_->{id} } @jobs), $JOBS, "$JOBS questions queued");

my $poll = IO::Poll->new;
my (@c, %by);
my $t0 = time;
for my $i (0 .. $STREAMS - 1) {
    my $j = $jobs[$i % $JOBS];
    my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1',
                                  PeerPort => $t->{port}, Proto => 'tcp')
        or BAIL_OUT("connect $i: $!");
    print $s "GET /api/ask/$j->{id}/events HTTP/1.0\r\nHost: localhost\r\n"
             . "Authorization: Bearer " . token($j->{who}) . "\r\n\r\n";
    $s->blocking(0);
    my $c = { s => $s, job => $j, buf => '', events => [] };
    push @c, $c;
    $by{fileno $s} = $c;
    $poll->mask($s => POLLIN);
}
my $opened = time - $t0;

# read until every stream has its last event, 120 s at most
my ($first_done, $with_head, $left) = (undef, 0, $STREAMS);
while ($left && time - $t0 < 120) {
    $poll->poll(0.5) > 0 or next;
    for my $s ($poll->handles(POLLIN | POLLHUP | POLLERR)) {
        my $c = $by{fileno $s};
        my $n = sysread($s, my $chunk, 65536);
        next if !defined $n && $!{EAGAIN};
        if (!$n) {
            $poll->remove($s);
            $c->{closed} = 1;
            $left--;
            next;
        }
        $c->{buf} .= $chunk;
        if (!defined $c->{head} && $c->{buf} =~ s/\A(.*?)\r\n\r\n//s) {
            $c->{head} = $1;
            $with_head++;
        }
        next unless defined $c->{head};
        while ($c->{buf} =~ s/\A(.*?)\n\n//s) {
            my %e;
            for (split /\n/, $1) {
                $e{$1} = $2 if /^(id|event|data): ?(.*)$/;
            }
            next unless $e{event};
            push @{ $c->{events} }, \%e;
            if ($e{event} =~ /^(done|error)$/) {
                $first_done //= $with_head;
                $poll->remove($s);
                close $s;
                $c->{closed} = 1;
                $left--;
                last;
            }
        }
    }
}
my $took = time - $t0;
diag(sprintf '%d streams opened in %.1f s, all read in %.1f s', $STREAMS,
             $opened, $took);

is($left, 0, "all $STREAMS streams ended within 120 s");
is(scalar(grep { ($_->{head} // '') =~ m{^HTTP/1\.\d 200} } @c), $STREAMS,
   '... each a 200');
is($first_done // 0, $STREAMS,
   '... all open at once: each had its headers before the first ended');
my @done = grep { @{ $_->{events} } && $_->{events}[-1]{event} eq 'done' }
           @c;
is(scalar @done, $STREAMS, '... each ended with "done"');
my %stored = map { split /\|/, $_, 2 } split /\n/, $t->psql(
    "SELECT job_id, content FROM chat_messages WHERE role = 'assistant'");
my $right = grep {
    my $c = $_;
    my $text = join '', map { decode_json($_->{data})->{text} }
                        grep { $_->{event} eq 'delta' } @{ $c->{events} };
    my @pieces = grep { $_->{event} eq 'delta' } @{ $c->{events} };
    @pieces > 3 && $text eq "Mock answer to: $c->{job}{q}"
        && $text eq ($stored{ $c->{job}{id} } // '')
        && decode_json($c->{events}[-1]{data})->{answer} eq $text
} @c;
is($right, $STREAMS, '... its pieces make its job\'s stored answer');

# the worker is whole and still answers
my $r = $t->request(GET => '/api/ask/' . $jobs[0]{id} . '/events',
    headers => [ Authorization => 'Bearer ' . token($jobs[0]{who}) ]);
like($r->{body}, qr/^event: done$/m, 'afterwards a finished job streams');
unlike($t->error_log, qr/\[(alert|emerg)\]|AddressSanitizer|runtime error|
                         exited\ on\ signal/x,
       'no alert, crash or sanitizer report');

$p->finish;
