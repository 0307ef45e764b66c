#!/usr/bin/perl
# The fuzz targets (t/fuzz/fuzz_*.c, built by make fuzz-build with
# clang-14) replay their committed corpus, t/fuzz/corpus/<name>/: every
# input, among them each crash ever found, runs once under ASan + UBSan
# and none may fail.  `make fuzz` is what grows inputs; this only keeps
# the ones committed passing.
use strict;
use warnings;
use FindBin;
use Test::More;

my $root = "$FindBin::Bin";
my $build = $ENV{RAGNX_BUILD}
    or BAIL_OUT('RAGNX_BUILD is not set: run the suite with make test');

my @names = map { m{/fuzz_(\w+)\.c$} ? $1 : () } glob "$root/fuzz/fuzz_*.c";
ok(@names >= 8, 'fuzz targets: ' . join(' ', @names));

# the sanitizers are the targets' own: nothing preloaded for nginx
delete local $ENV{LD_PRELOAD};
local $ENV{ASAN_OPTIONS} = 'detect_leaks=1:abort_on_error=0';
local $ENV{UBSAN_OPTIONS} = 'print_stacktrace=1:halt_on_error=1';

for my $name (@names) {
    my $bin = "$build/fuzz/fuzz_$name";
    my $dir = "$root/fuzz/corpus/$name";

    ok(-x $bin, "fuzz_$name is built")
        or diag("no $bin: make fuzz-build needs clang-14 and "
                . "libclang-rt-14-dev (scripts/deps installs them)"),
        next;

    my @inputs = sort grep { -f } glob "$dir/*";
    ok(@inputs >= 3, "$name: a seed corpus (" . scalar(@inputs) . ' inputs)');

    my $bytes = 0;
    $bytes += -s $_ for @inputs;
    ok($bytes < 100 * 1024, "$name: corpus kept small ($bytes bytes)");

    # with files, not a directory, libFuzzer runs each once and stops
    my $out = qx{"$bin" @{[join ' ', map { "'$_'" } @inputs]} 2>&1 </dev/null};
    my $rc = $?;
    my $ran = () = $out =~ /^Executed /mg;

    is($rc, 0, "$name: no input crashes") or diag($out =~ s/^/  /mgr);
    is($ran, scalar @inputs, "$name: every input ran");
}

done_testing();
