#!/usr/bin/perl
# Runs the C unit tests of the chunk rank the pool computes (make unit).
use strict;
use warnings;
my $bin = ($ENV{RAGNX_BUILD} || 'build') . '/unit/test_rank';
exec $bin or die "cannot run $bin: $!";
