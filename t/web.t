#!/usr/bin/perl
# The chat page (web/, docs/web.md) in a real browser: headless Chromium
# (Debian's) driven by puppeteer-core (t/browser/web.js) against the
# whole stack: nginx with the module and the page's location, Redis,
# PostgreSQL, the pool and a mock LLM that writes slowly.  Register (a
# bad email first: the API's error under the field), ask and see the
# answer grow before its sources, ask again in the chat and in a new one
# (from the cache), reload and open the history, validation and a full
# queue's Retry-After next to the question, older chats, log out and in,
# a refused token, and never a CSP violation.  Screenshots at 1280 and
# 360 px go to the test directory, and to $RAGNX_SCREENSHOTS when set.
# Also the page's headers, and web/'s files read for anything inline
# the CSP would refuse.

use strict;
use warnings;
use lib 't/lib';
use Test::More;
use Cwd qw(getcwd);
use File::Copy qw(copy);
use IO::Select;
use JSON::PP;
use POSIX ();
use Time::HiRes qw(sleep time);
use Ragnx::Test qw(slurp);
use Ragnx::Pool;
use Ragnx::MockLLM;

my $root = getcwd();
my $chromium = $ENV{RAGNX_CHROMIUM} || '/usr/bin/chromium';
my $browser = "$root/t/browser";

# what the browser needs: scripts/deps installs it (make test does)
my @missing;
push @missing, $chromium unless -x $chromium;
push @missing, 'node' unless system('command -v node >/dev/null') == 0;
push @missing, 't/browser/node_modules (npm ci)'
    unless -d "$browser/node_modules/puppeteer-core";
if (@missing) {
    my $why = 'no browser: ' . join(', ', @missing)
              . ' missing; scripts/deps installs them';
    plan skip_all => $why unless $ENV{RAGNX_REQUIRE_BROWSER};
    # make test sets RAGNX_REQUIRE_BROWSER: there, a missing browser is
    # a failed install, not a reason to skip
    fail($why);
    done_testing();
    exit 1;
}

# ---- web/: nothing inline (no inline script, style or handler) ----------

for my $f (glob("$root/web/*.html"), glob("$root/web/*.svg"),
           glob("$root/web/js/*.js"))
{
    my $src = slurp($f);
    (my $name = $f) =~ s{^\Q$root\E/}{};
    unlike($src, qr{<script(?![^>]*\bsrc=)[^>]*>}i, "$name: no inline script");
    unlike($src, qr{<style\b|\sstyle\s*=}i, "$name: no inline style");
    unlike($src, qr{\son[a-z]+\s*=}i, "$name: no inline event handler");
    unlike($src, qr{https?://}i, "$name: nothing from another origin")
        unless $f =~ /\.svg$/;
    unlike($src, qr{\.innerHTML\b|insertAdjacentHTML|document\.write},
           "$name: no HTML from strings") if $f =~ /\.js$/;
}

# ---- the stack ------------------------------------------------------------

my $t = Ragnx::Test->new;
my $rp = $t->start_redis;
$t->start_postgres;
my $mock = Ragnx::MockLLM->start($t);
my $secret = 'web-test-secret-0123456789abcdef0123';
my $key = $t->file('hs.key', $secret);
my $llmkey = $t->file('llm.key', "sk-test\n");
my $p = Ragnx::Pool->new($t);
$p->configure(llm_provider => 'anthropic', llm_base_url => $mock->url,
              llm_model => 'claude-mock', llm_api_key_file => $llmkey,
              jwt_key_file => $key, concurrency => 4, workers => 1,
              password_opslimit => 1, password_memlimit => 8192);
my ($rc, $out) = $p->cli('migrate');
is($rc, 0, 'migrate') or diag($out);
mkdir "$t->{dir}/corpus";
$t->file('corpus/page.md', <<'EOF');
# The chat page

The chat page streams an answer as it is written, and shows next to the
answer the sources it came from and whether the answer came from the
cache.
EOF
($rc, $out) = $p->cli('ingest', "$t->{dir}/corpus");
is($rc, 0, 'ingest') or diag($out);
$p->start;

my (undef, $rpcpub) = $t->rpc_keys;
my $csp = "default-src 'self'; object-src 'none'; base-uri 'none'; "
          . "form-action 'self'; frame-ancestors 'none'";
$t->start_nginx(
    workers => 2,
    http    => <<"EOF",
    ragnx_redis 127.0.0.1:$rp;
    ragnx_rpc_seal_key $rpcpub;
    ragnx_ask_gen_refresh 100ms;
EOF
    server  => <<"EOF");
        ragnx_jwt_key_file $key;
        error_page 400 401 403 404 405 413 429 500 502 503 504 \@err;
        location \@err { ragnx_json_error; }

        location = /api/auth/register {
            ragnx_validate_schema $root/schemas/register.json;
            ragnx_rpc register;
        }
        location = /api/auth/login {
            ragnx_validate_schema $root/schemas/login.json;
            ragnx_rpc login;
        }
        location = /api/users/me { ragnx_jwt on; ragnx_rpc me; }
        location = /api/chats { ragnx_jwt on; ragnx_rpc chats; }
        location ~ ^/api/chats/[^/]+/messages/?\$ {
            ragnx_jwt on;
            ragnx_rpc messages;
        }
        location = /api/ask {
            ragnx_jwt on;
            ragnx_validate_schema $root/schemas/ask.json;
            ragnx_ask_queue_max 2;
            ragnx_ask;
        }
        location ~ ^/api/ask/([^/]+)/events\$ {
            ragnx_jwt on;
            ragnx_ask_events \$1;
        }
        location /api/ask/ { ragnx_jwt on; ragnx_ask_status; }

        location / {
            root $root/web;
            index index.html;
            try_files \$uri \$uri/ =404;
            types {
                text/html       html;
                text/css        css;
                text/javascript js;
                image/svg+xml   svg;
            }
            charset utf-8;
            charset_types text/css text/javascript image/svg+xml;
            add_header Content-Security-Policy "$csp" always;
            add_header X-Content-Type-Options nosniff always;
            add_header Referrer-Policy no-referrer always;
            add_header Cache-Control no-cache always;
        }
EOF

my $r = $t->request(GET => '/');
is($r->{status}, 200, 'GET /: 200');
like($r->{headers}{'content-type'} // '', qr{^text/html}, '... the page');
unlike($r->{headers}{'content-security-policy'} // '', qr/unsafe-inline/,
       '... a CSP without unsafe-inline');
$r = $t->request(GET => '/js/app.js');
like($r->{headers}{'content-type'} // '', qr{^text/javascript},
     'a module script: text/javascript (module scripts need it)');

# ---- the browser ------------------------------------------------------------

# the browser script, in its own process group so that a timeout ends
# Chromium too; its JSON lines, read within a bound
my $shots = $t->dir;
my @checks;
my $stderr = "$t->{dir}/browser.stderr";
my $pid = open(my $fh, '-|') // die "fork: $!";
if ($pid == 0) {
    POSIX::setpgid(0, 0);
    open STDERR, '>', $stderr;
    $ENV{RAGNX_WEB_URL} = "http://127.0.0.1:" . $t->port . '/';
    $ENV{RAGNX_MOCK_URL} = $mock->url;
    $ENV{RAGNX_SHOTS} = $shots;
    $ENV{RAGNX_CHROMIUM} = $chromium;
    $ENV{HOME} = $t->dir;
    $ENV{PUPPETEER_SKIP_DOWNLOAD} = 1;
    # the browser is not instrumented: no sanitizer runtime preloaded
    delete @ENV{qw(LD_PRELOAD ASAN_OPTIONS UBSAN_OPTIONS LSAN_OPTIONS)};
    exec('node', "$browser/web.js") or POSIX::_exit(127);
}
my $limit = $ENV{RAGNX_SANITIZE} ? 480 : 300;
my $sel = IO::Select->new($fh);
my $buf = '';
my $t0 = time;
my $ended = 0;
while (time - $t0 < $limit) {
    next unless $sel->can_read(0.5);
    my $n = sysread($fh, my $chunk, 65536);
    if (!$n) {
        $ended = 1;
        last;
    }
    $buf .= $chunk;
}
ok($ended, "the browser script ended within $limit s");
if (!$ended) {
    kill 'TERM', -$pid;
    sleep 1;
    kill 'KILL', -$pid;
}
close $fh;
my $status = $? >> 8;

my $json = JSON::PP->new->utf8;
for my $line (split /\n/, $buf) {
    my $c = eval { $json->decode($line) };
    if (!$c) {
        diag("browser: $line");
        next;
    }
    push @checks, $c;
    ok($c->{ok}, "browser: $c->{name}") or diag($c->{diag} // '');
}
cmp_ok(scalar @checks, '>=', 45, scalar(@checks) . ' checks in the browser');
is($status, 0, 'the browser script exited 0')
    or diag(slurp($stderr));

for my $w (1280, 360) {
    my $f = "$shots/web-$w.png";
    ok(-s $f && slurp($f) =~ /\A\x89PNG\r\n/, "a screenshot $w px wide");
    if ($ENV{RAGNX_SCREENSHOTS} && -s $f) {
        copy($f, "$ENV{RAGNX_SCREENSHOTS}/web-$w.png")
            or diag("copy to $ENV{RAGNX_SCREENSHOTS}: $!");
    }
}

$p->finish;
