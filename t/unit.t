#!/usr/bin/perl
# Runs the C unit test binaries (TAP) built by `make unit`.
use strict;
use warnings;
my $bin = ($ENV{RAGNX_BUILD} || 'build') . '/unit/test_shared';
exec $bin or die "cannot run $bin: $!";
