package Ragnx::Resp;

# A minimal blocking Redis client (RESP2) for test code that needs more
# than redis-cli: pipelining, XREAD BLOCK, pub/sub.  Arguments are sent as
# bytes; replies come back as strings, array refs, undef (nil) or
# { error => "..." }.  A broken connection dies with "redis: ...".

use strict;
use warnings;

use IO::Socket::INET;

sub new {
    my ($class, $port, %a) = @_;
    my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $port,
                                  Proto => 'tcp',
                                  Timeout => $a{timeout} || 2)
        or return undef;
    binmode $s;
    return bless { s => $s, buf => '' }, $class;
}

sub send_cmd {
    my ($self, @args) = @_;
    my $out = '*' . @args . "\r\n";
    for my $a (@args) {
        utf8::encode($a) if utf8::is_utf8($a);
        $out .= '$' . length($a) . "\r\n$a\r\n";
    }
    my $off = 0;
    while ($off < length $out) {
        my $n = syswrite($self->{s}, $out, length($out) - $off, $off);
        die "redis: write: $!\n" unless defined $n;
        $off += $n;
    }
    return 1;
}

sub cmd {
    my ($self, @args) = @_;
    $self->send_cmd(@args);
    return $self->read_reply;
}

# several commands written at once, then their replies read in order
sub pipeline {
    my ($self, @cmds) = @_;
    return () unless @cmds;
    $self->send_cmd(@$_) for @cmds;
    return map { $self->read_reply } @cmds;
}

sub _fill {
    my ($self) = @_;
    my $n = sysread($self->{s}, $self->{buf}, 65536, length $self->{buf});
    die "redis: read: " . (defined $n ? 'closed' : $!) . "\n" unless $n;
}

sub _line {
    my ($self) = @_;
    my $i;
    $self->_fill while ($i = index($self->{buf}, "\r\n")) < 0;
    my $line = substr($self->{buf}, 0, $i);
    substr($self->{buf}, 0, $i + 2, '');
    return $line;
}

sub read_reply {
    my ($self) = @_;
    my $line = $self->_line;
    my ($t, $v) = (substr($line, 0, 1), substr($line, 1));
    return $v if $t eq '+' || $t eq ':';
    return { error => $v } if $t eq '-';
    if ($t eq '$') {
        return undef if $v < 0;
        $self->_fill while length($self->{buf}) < $v + 2;
        my $d = substr($self->{buf}, 0, $v);
        substr($self->{buf}, 0, $v + 2, '');
        return $d;
    }
    if ($t eq '*') {
        return undef if $v < 0;
        return [ map { $self->read_reply } 1 .. $v ];
    }
    die "redis: bad reply line '$line'\n";
}

sub close {
    my ($self) = @_;
    close $self->{s} if $self->{s};
    delete $self->{s};
}

1;
