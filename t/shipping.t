#!/usr/bin/perl
# The shipping files hold together with the tree they ship, although no
# Docker engine or systemd runs here (make test-image runs them with podman
# and systemd in a container): every file the Dockerfile copies and
# every script and make target it runs exists, scripts/deps knows its
# build and runtime package sets (names Debian 12 has, covering the
# libraries the built binaries need), docker/nginx.sed still applies to
# nginx.conf.example, the compose file uses real Dockerfile stages and
# real worker settings, the systemd unit verifies and outlasts the drain,
# and scripts/run's nginx.conf serves what the example serves.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Cwd qw(abs_path);
use Test::More;
use Ragnx::Test qw(slurp spew);

my $root = abs_path("$FindBin::Bin/..");
my $compose_text;
my $build = $ENV{RAGNX_BUILD}
    or BAIL_OUT('RAGNX_BUILD is not set: run the suite with make test');

sub lines_of { map { split /\n/ } @_ }

# ---- Dockerfile ----------------------------------------------------------

my $df = slurp("$root/Dockerfile");
ok(length $df, 'Dockerfile is there');
# a `# syntax=` line makes BuildKit fetch a frontend image: no offline build
unlike($df, qr/^#\s*syntax\s*=/mi, 'Dockerfile: no BuildKit frontend line');
(my $joined = $df) =~ s/\\\n/ /g;                # continuation lines
my @insns = grep { /\S/ && !/^\s*#/ } lines_of($joined);

my @from = map { /^FROM\s+(\S+)(?:\s+AS\s+(\S+))?/i ? [$1, $2] : () } @insns;
ok(@from >= 2, 'multi-stage');
is($_->[0], 'debian:bookworm', "stage @{[$_->[1] // '?']} is debian:bookworm")
    for grep { $_->[0] !~ /^(?:build|runtime)$/ } @from;
my %stages = map { defined $_->[1] ? ($_->[1] => 1) : () } @from;
ok($stages{$_}, "stage $_") for qw(build runtime worker nginx);

# COPY from the context: the sources exist; COPY --from=build: the
# products are what the Makefile builds (found in this suite's build dir)
my ($ncopy, $nfrom) = (0, 0);
for (@insns) {
    next unless /^COPY\s+(.*)$/i;
    my @args = split ' ', $1;
    my $from;
    $from = $1 while @args && $args[0] =~ /^--from=(\S+)/ && shift @args;
    shift @args while @args && $args[0] =~ /^--/;
    pop @args;                                    # the destination
    for my $src (@args) {
        if (!defined $from) {
            $ncopy++;
            ok(-e "$root/$src", "COPY source $src exists");
        } elsif ($src =~ m{^/src/build/(.*)$}) {
            my $rel = $1;
            $nfrom++;
            next if $rel eq 'nginx.version';      # written by the RUN
            ok(-f "$build/$rel", "COPY --from=$from $src is a make product")
                or diag("not in $build");
        } else {
            fail("COPY --from=$from $src: not from the build stage's tree");
        }
    }
}
ok($ncopy >= 5 && $nfrom >= 3, "COPYs checked ($ncopy, $nfrom)");

# RUN: scripts exist and are executable; make targets exist
my $makefile = slurp("$root/Makefile");
my (%scripts, %targets);
for (@insns) {
    next unless /^RUN\s+(.*)$/i;
    my $run = $1;
    $scripts{$1} = 1 while $run =~ m{(?:^|[\s;&|])\./(scripts/[\w.-]+)}g;
    while ($run =~ /\bmake((?:\s+[\w-]+)+)/g) {
        $targets{$_} = 1 for split ' ', $1;
    }
}
ok(-x "$root/$_", "RUN $_: exists and is executable") for sort keys %scripts;
ok($scripts{'scripts/deps'}, 'the build stage installs with scripts/deps');
ok(%targets, 'the build stage runs make');
for my $t (sort keys %targets) {
    like($makefile, qr/^\Q$t\E\s*:/m, "make $t: a Makefile target");
}
like($df, qr{scripts/deps --build\b}, 'build stage: scripts/deps --build');
like($df, qr{deps --runtime\b}, 'runtime stage: scripts/deps --runtime');
like($df, qr{^USER ragnx$}m, 'the images run as ragnx');
unlike($df, qr{^USER (?!ragnx$)}m, '... and as no other user');
my ($nginx_stage) = $df =~ /^FROM runtime AS nginx\n(.*)\z/ms;
like($nginx_stage // '', qr/^EXPOSE 8080$/m,
     'the nginx image listens on 8080 (unprivileged)');
like($joined, qr{^ENTRYPOINT \["/usr/local/bin/ragnx-entrypoint"}m,
     'the entrypoint waits for the services (docker/entrypoint)');
# the image puts the module and the schemas where the example expects them
my $example = slurp("$root/nginx.conf.example");
my ($load) = $example =~ /^load_module (\S+);/m;
like($joined, qr{^COPY --from=build \S+/ngx_http_ragnx_module\.so\s+\Q$load\E$}m,
     "the module is copied to $load");
my ($schemas) = $example =~ m{ragnx_validate_schema (\S+/)\w+\.json;};
like($joined, qr{^COPY schemas/ \Q$schemas\E$}m,
     "the schemas are copied to $schemas");

# the Redis and PostgreSQL images from Debian's packages, and the systemd
# test image: their stages and what they copy
for my $f ('docker/services.Dockerfile', 't/image/systemd.Dockerfile') {
    my $text = slurp("$root/$f");
    for my $src ($text =~ /^COPY\s+(\S+)\s+\S+$/mg) {
        ok(-e "$root/$src", "$f: COPY source $src exists");
    }
    unlike($text, qr/^#\s*syntax\s*=/mi, "$f: no BuildKit frontend line");
}
like(slurp("$root/docker/services.Dockerfile"), qr/^FROM debian:bookworm AS $_$/m,
     "docker/services.Dockerfile: stage $_") for qw(redis postgres);
like($compose_text = slurp("$root/docker-compose.yml"),
     qr/^\s+image: \$\{RAGNX_REDIS_IMAGE:-redis:7-bookworm\}$/m,
     'compose: the Redis image can be replaced (RAGNX_REDIS_IMAGE)');
like($compose_text,
     qr/^\s+image: \$\{RAGNX_POSTGRES_IMAGE:-postgres:15-bookworm\}$/m,
     'compose: the PostgreSQL image can be replaced (RAGNX_POSTGRES_IMAGE)');

# ---- scripts/deps --------------------------------------------------------

my %set;
for my $mode ('', '--build', '--runtime', '--image') {
    my $out = `$root/scripts/deps $mode --dry-run 2>&1`;
    is($?, 0, "scripts/deps $mode --dry-run") or diag($out);
    like($out, qr/^ragnx: (nothing to install|would install:)/,
         "scripts/deps $mode --dry-run says what it would do");
    $set{$mode} = [ split ' ', `$root/scripts/deps $mode --list` ];
    ok(@{ $set{$mode} }, "scripts/deps $mode --list");
}
my %dev = map { $_ => 1 } @{ $set{''} };
ok($dev{$_}, "the developer set includes build package $_")
    for @{ $set{'--build'} };
# make test-image's packages are opt-in: none of them in the developer set
my %image = map { $_ => 1 } @{ $set{'--image'} };
ok($image{$_}, "scripts/deps --image installs $_")
    for qw(podman runc podman-compose debootstrap);
ok(!$dev{$_}, "make test does not need $_")
    for qw(podman runc podman-compose debootstrap);
is(system("$root/scripts/deps --bogus >/dev/null 2>&1") >> 8, 2,
   'scripts/deps: an unknown option is refused');

# scripts/deps (make test) fetches the lists when there are none
{
    my @lists = glob('/var/lib/apt/lists/*_Packages*');
    ok(scalar @lists, 'apt package lists are there (scripts/deps)');
    my @pkgs = (@{ $set{'--build'} }, @{ $set{'--runtime'} },
                @{ $set{'--image'} });
    my %known = map { /^Package: (\S+)/ ? ($1 => 1) : () }
                `apt-cache show --no-all-versions @pkgs 2>/dev/null`;
    ok($known{$_}, "Debian has package $_") for @pkgs;
}

# the runtime set provides every library the built binaries load
SKIP: {
    skip 'sanitizer build links the sanitizer runtimes', 1
        if $ENV{RAGNX_SANITIZE};
    ok(system('command -v readelf >/dev/null') == 0,
       'readelf is installed (binutils, scripts/deps)');
    my %runtime = map { $_ => 1 } @{ $set{'--runtime'} }, 'libc6';
    my (@need, %cand);
    for my $bin ("$build/workers/ragnx-worker",
                 "$build/nginx/objs/ngx_http_ragnx_module.so")
    {
        my %path = map { /^\s*(\S+) => (\S+)/ ? ($1 => $2) : () }
                   lines_of(`ldd $bin`);
        for my $lib (map { /\[(.+)\]/ ? $1 : () }
                     grep { /NEEDED/ } lines_of(`readelf -d $bin`))
        {
            # dpkg knows a path under /lib or /usr/lib (merged /usr), as
            # installed or with its links resolved
            my @p = grep { defined } $path{$lib},
                    $path{$lib} ? abs_path($path{$lib}) : undef;
            push @p, map { s{^/usr/lib/}{/lib/}r } @p;
            push @need, [$bin =~ s{.*/}{}r, $lib, \@p];
            $cand{$_} = 1 for @p;
        }
    }
    ok(@need >= 8, 'the libraries the binaries need');
    my %owner = map { /^([^:]+):\S*:? (\S+)$/ ? ($2 => $1) : () }
                `dpkg -S @{[ sort keys %cand ]} 2>/dev/null`;
    for my $n (@need) {
        my ($pkg) = grep { defined } map { $owner{$_} } @{ $n->[2] };
        ok($pkg && $runtime{$pkg}, "$n->[1] of $n->[0] comes with the"
           . ' runtime set' . ($pkg ? " ($pkg)" : ''));
    }
}

# ---- docker/nginx.sed ------------------------------------------------------

my @sed = grep { /^s/ } lines_of(slurp("$root/docker/nginx.sed"));
ok(@sed, 'docker/nginx.sed has substitutions');
my $tmp = Ragnx::Test->new;
my $exfile = $tmp->file('nginx.conf.example', $example);
for my $s (@sed) {
    my $script = $tmp->file('one.sed', "$s\n");
    my $out = `sed -f $script $exfile`;
    my @a = lines_of($example);
    my @b = lines_of($out);
    my $changed = grep { $a[$_] ne $b[$_] } 0 .. $#a;
    is($changed, 1, "nginx.sed changes one line of the example: $s");
}
my $derived = `sed -f $root/docker/nginx.sed $exfile`;
like($derived, qr/^\s*ragnx_redis redis:6379 /m, 'image: Redis is "redis"');
like($derived, qr/^\s*listen\s+8080;$/m, 'image: nginx listens on 8080');
ok(!grep({ /^\s*listen\s+80;/ } lines_of($derived)), '... and not on 80');
ok(!grep({ /^user\s/ } lines_of($derived)),
   'image: no user directive (the master is not root)');
like($derived, qr{^pid /tmp/}m, 'image: the pid file on the tmpfs');
ok(!grep({ !/^\s*#/ && m{/var/log/nginx/} } lines_of($derived)),
   'image: logs to the container output');

# ---- docker-compose.yml and its env files ----------------------------------

my $compose = slurp("$root/docker-compose.yml");
ok(length $compose, 'docker-compose.yml is there');
my @ctargets = $compose =~ /^\s+target:\s*(\S+)/mg;
ok(@ctargets, 'compose builds Dockerfile targets');
ok($stages{$_}, "compose target $_ is a Dockerfile stage") for @ctargets;
for my $svc (qw(redis postgres migrate worker nginx)) {
    like($compose, qr/^  $svc:$/m, "compose service $svc");
}
like($compose, qr/--appendonly\s*\n\s*- "yes"/, 'queue Redis: AOF on');
like($compose, qr/--maxmemory-policy\s*\n\s*- noeviction/,
     'queue Redis: noeviction');
like($compose, qr/^\s+- pg-data:\/var\/lib\/postgresql\/data$/m,
     'postgres data in a named volume');
# --scale needs replicas without fixed names or host ports
my ($worker) = $compose =~ /^  worker:\n(.*?)^  \S/ms;
ok($worker && $worker !~ /container_name|ports:/,
   'worker scales: no container_name, no ports');
my ($migrate) = $compose =~ /^  migrate:\n(.*?)^  \S/ms;
unlike($migrate // '', qr/jwt\.key|rpc\.key/,
       'migrate mounts no key: it signs no token (t/accounts.t)');
my ($nginx_svc) = $compose =~ /^  nginx:\n(.*?)^  \S/ms;
# start order without `depends_on: condition:` (podman-compose 1.0.3):
# nginx and migrate wait for the services they need themselves
my %svc = map { $_ => 1 } $compose =~ /^  (\w+):$/mg;
for ([ migrate => $migrate ], [ nginx => $nginx_svc ]) {
    my ($name, $body) = @$_;
    my ($wait) = ($body // '') =~ /^\s+RAGNX_WAIT_FOR: (.+)$/m;
    ok($wait, "$name waits for its services (RAGNX_WAIT_FOR)");
    for my $hp (split ' ', $wait // '') {
        my ($h) = $hp =~ /^([\w-]+):\d+$/;
        ok($h && $svc{$h}, "$name waits for $hp, a compose service");
    }
}
like($nginx_svc // '', qr/^\s+- "\$\{RAGNX_HTTP_PORT:-127\.0\.0\.1:\d+\}:8080"$/m,
     'nginx is published on loopback by default, to its port 8080');
for my $name (qw(redis migrate worker nginx)) {
    my ($body) = $compose =~ /^  $name:\n(.*?)(?=^  \S|^\S|\z)/ms;
    like($body // '', qr/^\s+read_only: true$/m,
         "$name: read-only root filesystem");
}
# what the compose file runs in the images exists there
my $entry = slurp("$root/docker/entrypoint");
like($entry, qr/RAGNX_WAIT_FOR/, 'docker/entrypoint reads RAGNX_WAIT_FOR');
like($joined, qr{^COPY docker/healthcheck /usr/local/bin/ragnx-healthcheck$}m,
     'the nginx health check is in the image');
like($nginx_svc // '', qr/ragnx-healthcheck/, '... and compose runs it');

my $settings_c = slurp("$root/workers/ragnx_config.c");
my %setting = map { ('RAGNX_' . uc $_ => 1) }
              $settings_c =~ /^\s*\{ "([a-z_]+)", RAGNX_SET_/mg;
ok(keys %setting > 20, 'the worker settings table');
# read by name in ragnx_config.c: secrets and the config path
$setting{$_} = 1 for $settings_c =~ /getenv\("(RAGNX_\w+)"\)/g;
$setting{RAGNX_CONFIG} = 1 if slurp("$root/workers/ragnx_main.c")
                              =~ /getenv\("RAGNX_CONFIG"\)/;
my %env_files = map { $_ => 1 } $compose =~ /env_file:\s*(\S+)/g;
for my $f (sort keys %env_files) {
    ok(-f "$root/$f.example", "env file $f has $f.example");
    my $env = slurp("$root/$f.example");
    for my $name ($env =~ /^#?\s*(RAGNX_\w+)=/mg) {
        ok($setting{$name}, "$f.example: $name is a worker setting");
    }
}
my $wenv = slurp("$root/docker/worker.env.example");
like($wenv, qr/^RAGNX_REDIS_HOST=redis$/m, 'the worker finds Redis');

# Redis's ACL users: the rules of scripts/redis-users.acl, the users the
# two sides name, the password files mounted where they are read
my %acl_user = map { $_ => 1 }
               slurp("$root/scripts/redis-users.acl") =~ /^user (\S+) /mg;
like($compose, qr{scripts/redis-acl|/usr/local/lib/ragnx/redis-acl},
     'compose: Redis loads the users of scripts/redis-acl');
like($compose, qr{^\s+- --aclfile\n\s+- /data/users\.acl$}m,
     'compose: redis-server --aclfile');
my ($wuser) = $wenv =~ /^RAGNX_REDIS_USER=(\S+)$/m;
ok($wuser && $acl_user{$wuser}, "the worker's Redis user is an ACL user");
my ($wpass) = $wenv =~ /^RAGNX_REDIS_PASSWORD_FILE=(\S+)$/m;
like($worker, qr{^\s+- \./docker/secrets/\Q$wuser\E\.password:\Q$wpass\E:ro$}m,
     'compose mounts the worker\'s Redis password file');
my ($nuser, $npass) =
    $derived =~ /^\s*ragnx_redis \S+ .*user=(\S+) password_file=(\S+);/m;
ok($nuser && $acl_user{$nuser}, "image: nginx's Redis user is an ACL user");
like($compose, qr{^\s+- \./docker/secrets/\Q$nuser\E\.password:\Q$npass\E:ro$}m,
     'compose mounts nginx\'s Redis password file');
my ($pgpass) = $wenv =~ /^PGPASSWORD=(.*)$/m;
my ($pgpass2) = slurp("$root/docker/postgres.env.example")
                =~ /^POSTGRES_PASSWORD=(.*)$/m;
is($pgpass, $pgpass2, 'the example passwords match');
# every env-file reader takes a line the same way only without quotes:
# Compose v2 strips them, docker/podman run --env-file and podman-compose
# keep them
for my $f (sort keys %env_files) {
    my @quoted = grep { /^[A-Z_]+=["']/ } lines_of(slurp("$root/$f.example"));
    ok(!@quoted, "$f.example: no quoted values") or diag("@quoted");
}
my ($dburi) = $wenv =~ /^RAGNX_DATABASE=(\S+)$/m;
like($dburi // '', qr{^postgresql://\w+@[\w.-]+:\d+/\w+$},
     'RAGNX_DATABASE is a postgresql:// URI');
my ($dbuser) = ($dburi // '') =~ m{^postgresql://(\w+)@};
like(slurp("$root/docker/postgres.env.example"),
     qr/^POSTGRES_USER=\Q$dbuser\E$/m, 'the database user matches');

# ---- scripts/ragnx-worker.service ------------------------------------------

my $unit = slurp("$root/scripts/ragnx-worker.service");
my %u = map { /^(\w+)=(.*)$/ ? ($1 => $2) : () } lines_of($unit);
is($u{Type}, 'simple', 'Type=simple (no sd_notify)')
    unless slurp("$root/workers/ragnx_main.c") =~ /sd_notify|NOTIFY_SOCKET/;
is($u{Restart}, 'on-failure', 'Restart=on-failure');
is($u{KillSignal}, 'SIGTERM', 'KillSignal=SIGTERM');
is($u{KillMode}, 'mixed', 'KillMode=mixed: one SIGTERM, to the supervisor');
# SIGHUP to the main process, with no binary a minimal system lacks
# (/bin/kill is procps's)
is($u{ExecReload}, q{/bin/sh -c 'kill -HUP $$MAINPID'}, 'ExecReload');
is($u{User}, 'ragnx', 'User=ragnx');
is($u{$_}, 'yes', "$_=yes") for qw(NoNewPrivileges PrivateTmp);
is($u{ProtectSystem}, 'strict', 'ProtectSystem=strict');
my ($drain) = $settings_c =~ /\{ "drain_timeout",[^"]*"(\d+)"/;
ok($drain && $u{TimeoutStopSec} && $u{TimeoutStopSec} * 1000 > $drain,
   "TimeoutStopSec ($u{TimeoutStopSec} s) outlasts drain_timeout ($drain ms)");
like($compose, qr/stop_grace_period: (\d+)s/, 'compose grace period');
my ($grace) = $compose =~ /^  worker:\n.*?stop_grace_period: (\d+)s/ms;
ok($grace && $grace * 1000 > $drain, 'compose grace outlasts the drain');

{
    ok(system('command -v systemd-analyze >/dev/null 2>&1') == 0,
       'systemd-analyze is installed (systemd, scripts/deps)');
    # the unit with the built binary in place of /usr/bin/ragnx-worker
    (my $u2 = $unit) =~ s{/usr/bin/ragnx-worker}{$build/workers/ragnx-worker}g;
    my $file = $tmp->file('ragnx-worker.service', $u2);
    my $out = `systemd-analyze verify $file 2>&1`;
    my $rc = $?;
    my @ours = grep { /ragnx-worker/ } lines_of($out);
    ok($rc == 0 && !@ours, 'systemd-analyze verify') or diag($out);
}

# ---- scripts/run serves what the example serves ------------------------------

my $run = slurp("$root/scripts/run");
my @run_locs = $run =~ /^\s*(location\s+[^{]+?)\s*\{/mg;
ok(@run_locs, 'scripts/run has locations');
my %ex_locs = map { s/\s+/ /gr => 1 } $example =~ /^\s*(location\s+[^{]+?)\s*\{/mg;
for my $l (@run_locs) {
    # scripts/run writes its config from a shell here-document: \$ is $
    my $n = $l =~ s/\s+/ /gr =~ s/\\\$/\$/gr;
    # the example's messages location also takes a trailing slash
    my $alt = $n =~ s{/messages\$}{/messages/?\$}r;
    ok($ex_locs{$n} || $ex_locs{$alt}, "example has scripts/run's $n");
}
my ($run_codes) = $run =~ /error_page ([\d ]+) \@ragnx_error/;
my ($ex_codes) = $example =~ /error_page ([\d ]+) \@ragnx_error/;
my %ex_code = map { $_ => 1 } split ' ', $ex_codes // '';
ok($ex_code{$_}, "example turns $_ into JSON like scripts/run")
    for split ' ', $run_codes // '';
my @run_schemas = $run =~ m{ragnx_validate_schema \S*/schemas/(\w+\.json)}g;
like($example, qr{ragnx_validate_schema \S*/schemas/\Q$_\E;},
     "example validates with $_ like scripts/run") for @run_schemas;

done_testing();
