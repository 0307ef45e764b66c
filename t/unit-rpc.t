#!/usr/bin/perl
# Runs the C unit tests of the synchronous call contract (make unit).
use strict;
use warnings;
my $bin = ($ENV{RAGNX_BUILD} || 'build') . '/unit/test_rpc';
exec $bin or die "cannot run $bin: $!";
