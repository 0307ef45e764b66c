#!/usr/bin/perl
# t/ask.t again with ragnx_ask_gen_refresh 0: every question goes through
# the Lua script (generation read, lookup and enqueue in one call).
use strict;
use warnings;
$ENV{RAGNX_ASK_GEN_REFRESH} = '0';
my $file = __FILE__;
$file =~ s/ask-script\.t$/ask.t/;
do "./$file";
die $@ if $@;
