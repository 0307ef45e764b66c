#!/usr/bin/perl
# A 503 from POST /api/ask means that nothing was asked, even when Redis's
# reply comes after ragnx_redis_timeout.  Between nginx and Redis sits a
# proxy that holds Redis's replies back for a set time: the ask script
# runs at once (before its deadline) and its reply comes late.  The ask
# is answered by that reply, not by the timer.  A plain read still gives
# up at the timeout.  A Redis stopped for longer than three timeouts has
# its connection given up, but not before the deadline of a script in it:
# a script Redis runs on resuming is answered, and a new ask meanwhile is
# refused at once, with nothing sent.

use strict;
use warnings;
use lib 't/lib';
use Test::More;
use Cwd qw(getcwd);
use Digest::SHA qw(sha256_hex);
use IO::Select;
use IO::Socket::INET;
use JSON::PP;
use POSIX ();
use Time::HiRes qw(time sleep);
use Ragnx::Test;

my $root = getcwd();
my $t = Ragnx::Test->new;
my $rp = $t->start_redis;
my $secret = 'ask-late-secret-0123456789abcdef';
my $keyfile = $t->file('hs.key', $secret);
my $json = JSON::PP->new->canonical;
my $delay_file = $t->file('delay', '0');

# the proxy: bytes to Redis go at once, Redis's wait the time in
# $delay_file (read per chunk), in order; it ends with its parent
my $pp = Ragnx::Test::free_port();
my $listen = IO::Socket::INET->new(LocalAddr => '127.0.0.1',
    LocalPort => $pp, Proto => 'tcp', Listen => 16, ReuseAddr => 1)
    or die "proxy: $!";
my $proxy = fork() // die "fork: $!";
if ($proxy == 0) {
    POSIX::setpgid(0, 0);
    my $sel = IO::Select->new($listen);
    my (%peer, %from_redis, @due);
    my $until = time + 300;
    while (time < $until && getppid() != 1) {
        while (@due && $due[0][0] <= time) {
            my ($at, $fh, $buf) = @{ shift @due };
            syswrite($fh, $buf) if $peer{$fh};
        }
        my $wait = @due ? $due[0][0] - time : 0.5;
        for my $fh ($sel->can_read($wait < 0 ? 0 : $wait)) {
            if ($fh == $listen) {
                my $c = $listen->accept or next;
                my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1',
                    PeerPort => $rp, Proto => 'tcp') or next;
                @peer{ $c, $s } = ($s, $c);
                $from_redis{$s} = 1;
                $sel->add($c, $s);
                next;
            }
            my $n = sysread($fh, my $buf, 65536);
            if (!$n) {
                my $o = delete $peer{$fh};
                delete $peer{$o} if $o;
                $sel->remove(grep { defined } $fh, $o);
                close $_ for grep { defined } $fh, $o;
                next;
            }
            my $to = $peer{$fh} or next;
            if (!$from_redis{$fh}) {
                syswrite($to, $buf);
                next;
            }
            my $d = Ragnx::Test::slurp($delay_file) || 0;
            my $at = time + $d;
            $at = $due[-1][0] if @due && $due[-1][0] > $at;
            push @due, [ $at, $to, $buf ];
        }
    }
    POSIX::_exit(0);
}
close $listen;
$t->{pids}{proxy} = $proxy;

# one worker, one connection, every question through the script
$t->start_nginx(
    workers => 1,
    http    => <<"EOF2",
    ragnx_redis 127.0.0.1:$pp pool=1;
    ragnx_redis_timeout 1s;
    ragnx_ask_gen_refresh 0;
EOF2
    server  => <<"EOF2");
        ragnx_jwt_alg HS256;
        ragnx_jwt_key_file $keyfile;
        error_page 404 405 413 500 503 \@err;
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
EOF2

my $auth = 'Bearer ' . Ragnx::Test::jwt_hs256($secret,
    { sub => 'alice', exp => time + 3600 });

sub delay { Ragnx::Test::spew($delay_file, $_[0]) }

sub ask_at {
    my ($q) = @_;
    my $t0 = time;
    my $r = $t->request(POST => '/api/ask',
        headers => [ Authorization => $auth,
                     'Content-Type' => 'application/json' ],
        body => $json->encode({ query => $q }));
    return ($r, time - $t0);
}

sub send_ask {
    my ($q) = @_;
    return $t->send_request(POST => '/api/ask',
        headers => [ Authorization => $auth,
                     'Content-Type' => 'application/json' ],
        body => $json->encode({ query => $q }));
}

sub digest {
    my ($q) = @_;
    return sha256_hex(lc $q);
}

sub in_jobs {
    my ($q) = @_;
    return scalar grep { /\Q$q\E/ }
        split /\n/, $t->redis('XRANGE', '{ragnx}:jobs', '-', '+');
}

sub in_records {
    my ($q) = @_;
    return scalar grep { /\Q$q\E/ }
        split /\n/, $t->redis('XRANGE', '{ragnx}:records', '-', '+');
}

my ($r, $took);
for (1 .. 100) {
    ($r) = ask_at('warm up');
    last if $r->{status} == 202;
    sleep 0.05;
}
is($r->{status}, 202, 'through the proxy: an ask is queued');

# the reply 1.5 s late: after the timeout (1 s), within three of them

delay(1.5);
($r, $took) = ask_at('a late reply');
is($r->{status}, 202, 'a miss whose reply comes after the timeout: 202');
cmp_ok($took, '>=', 1.4, "... when the reply came ($took s)");
is(in_jobs('a late reply'), 1, '... and its job is queued once');
my $id = eval { decode_json($r->{body})->{jobId} } // '';
like($t->redis('HGET', "{ragnx}:job:$id", 'status'), qr/^(waiting|)$/,
     '... under the id it was given');
ok($t->redis('EXISTS', "{ragnx}:job:$id"), '... which exists');

$t->redis('SET', '{ragnx}:cache:' . digest('a late hit') . ':default@0',
          $json->encode({ answer => 'Late, but recorded.', sources => [] }));
($r, $took) = ask_at('a late hit');
is($r->{status}, 200, 'a hit whose reply comes after the timeout: 200');
like($r->{body}, qr/Late, but recorded/, '... with its answer');
is(in_records('a late hit'), 1, '... and its one record');

# a read still gives up at the timeout
($r, $took) = (undef, time);
$r = $t->request(GET => "/api/ask/$id",
                 headers => [ Authorization => $auth ]);
$took = time - $took;
is($r->{status}, 503, 'a poll whose reply comes late: 503');
cmp_ok($took, '<', 1.4, "... at the timeout ($took s)");

delay(0);
sleep 1.6;      # the late replies drain
($r) = ask_at('on time again');
is($r->{status}, 202, 'replies on time again: 202');

# Redis stopped for longer than three timeouts.  A is asked at 0 and B
# at 2.5 s (deadline 3.4 s); at 3 s the connection has been silent for
# three timeouts, but B's script may still run: no new command goes on
# it (C, at 3.1 s, is refused at once), and Redis resuming at 3.2 s
# runs B, whose reply answers it.  A's script comes too late to act.

$t->signal('redis', 'STOP');
my $t0 = time;
my $sa = send_ask('asked first while stopped');
sleep 2.5 - (time - $t0);
my $sb = send_ask('asked just before the connection is given up');
sleep 3.1 - (time - $t0);
($r, $took) = ask_at('asked while the connection is suspect');
my $at_c = time - $t0;
is($r->{status}, 503, 'a silent connection: a new ask is refused');
cmp_ok($took, '<', 0.1, "... at once ($took s)");
$t->signal('redis', 'CONT');
my $ra = $t->read_response($sa, 5);
my $rb = $t->read_response($sb, 5);
is($ra->{status}, 503, 'the ask its script reached too late: 503');
is(in_jobs('asked first while stopped'), 0, '... and nothing was asked');
is($rb->{status}, 202, 'the ask whose script ran on resuming: 202');
is(in_jobs('asked just before the connection'), 1, '... and it is queued');
is(in_jobs('asked while the connection is suspect'), 0,
   'the ask refused at once: nothing was asked');
diag(sprintf 'ask C at %.2f s', $at_c);

# Redis stopped for good: the connection is given up after three
# timeouts and the script's deadline, and the ask answered 503 then
$t->signal('redis', 'STOP');
($r, $took) = ask_at('asked while Redis is gone');
is($r->{status}, 503, 'Redis stopped: 503');
cmp_ok($took, '>=', 2.9, "... once the connection is given up ($took s)");
cmp_ok($took, '<', 4, '... within three timeouts and a bit');
$t->signal('redis', 'CONT');
sleep 0.2;
is(in_jobs('asked while Redis is gone'), 0, '... and nothing was asked');
like($t->error_log, qr/script timed out, waiting for its reply/,
     'the error log says a script is waited for');

$t->done;
