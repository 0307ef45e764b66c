#!/usr/bin/perl
# nginx.conf.example as shipped: with its placeholder paths, ports and keys
# replaced by the test's own, it passes `nginx -t`, and a real nginx
# running it against a real Redis answers as the file says: health, the
# security headers, JSON error pages, CORS, the rate limits, JWT with the
# HS256 secret and with the RS256 public-key variant, TLS with HSTS.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Cwd qw(abs_path);
use JSON::PP;
use MIME::Base64 qw(encode_base64url);
use Test::More;
use Ragnx::Test qw(free_port slurp spew);

my $root = abs_path("$FindBin::Bin/..");
my $example = slurp("$root/nginx.conf.example");
ok(length $example, 'nginx.conf.example is there');

# every directive and variable the module defines is in the example, as
# a directive line (perhaps commented) or as a $variable
my %names;
for my $src (glob("$root/ngx_module/*.c")) {
    $names{$_} = 1 for slurp($src) =~ /ngx_string\("(ragnx_\w+)"\)/g;
}
ok(keys %names > 25, 'the module\'s directives and variables');
for my $n (sort keys %names) {
    like($example, qr/^\s*#?\Q$n\E[\s;]|\$\Q$n\E/m,
         "example shows $n");
}

my $t = Ragnx::Test->new;
my $d = $t->dir;
my $redis_port = $t->start_redis(acl => 1);
my $redis_pw = $t->redis_password_file('ragnx-nginx');
my (undef, $rpcpub) = $t->rpc_keys;

# the test's keys: an HS256 secret, an RSA and an EC key pair
spew("$d/jwt.key", 'k' x 8 . join('', map { chr(65 + rand 26) } 1 .. 40));
my $secret = slurp("$d/jwt.key");
sub openssl {
    my $out = `openssl @_ 2>&1`;
    $? == 0 or BAIL_OUT("openssl @_: $out");
    return $out;
}
openssl("genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048"
        . " -out $d/rsa.pem");
openssl("pkey -in $d/rsa.pem -pubout -out $d/jwt.pub");
openssl("genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256"
        . " -out $d/ec.pem");
openssl("pkey -in $d/ec.pem -pubout -out $d/ec.pub");
openssl("req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=localhost"
        . " -keyout $d/tls.key -out $d/tls.crt");

# Replaces what a pattern matches, failing the test when it matches
# nothing: a placeholder that moved must be noticed, not silently kept.
sub subst {
    my ($conf, $re, $to, $what) = @_;
    my $n = ($$conf =~ s/$re/$to->()/ge);
    ok($n, "example: $what") or diag("no match for $re");
    return $n;
}

# The example with the test's paths, ports and Redis; options pick the
# commented variants to turn on.
sub example {
    my (%o) = @_;
    my $c = $example;
    my $user = $> == 0 ? 'user root root;' : '';
    subst(\$c, qr{^load_module /usr/lib/nginx/modules/ngx_http_ragnx_module\.so;}m,
          sub { 'load_module ' . Ragnx::Test::module_path() . ';' },
          'load_module');
    subst(\$c, qr{^user www-data;}m, sub { $user }, 'user');
    subst(\$c, qr{^worker_processes auto;}m,
          sub { "worker_processes 2;\ndaemon off;" }, 'worker_processes');
    subst(\$c, qr{^worker_rlimit_nofile \d+;}m,
          sub { 'worker_rlimit_nofile 1024;' }, 'worker_rlimit_nofile');
    subst(\$c, qr{^    worker_connections \d+;}m,
          sub { '    worker_connections 512;' }, 'worker_connections');
    subst(\$c, qr{^pid /run/nginx\.pid;}m, sub { "pid $d/nginx.pid;" },
          'pid');
    subst(\$c, qr{^error_log /var/log/nginx/error\.log warn;}m,
          sub { "error_log $d/error.log info;" }, 'error_log');
    is(subst(\$c, qr{/var/lib/nginx/(\w+);}, sub { "$d/$1;" },
             'temp paths'), 5, 'five temp paths');
    subst(\$c, qr{access_log /var/log/nginx/ragnx-access\.log ragnx;},
          sub { "access_log $d/access.log ragnx;" }, 'access_log');
    is(subst(\$c, qr{ragnx_validate_schema /usr/share/ragnx/schemas/},
             sub { "ragnx_validate_schema $root/schemas/" },
             'schemas'), 3, 'three schemas');
    subst(\$c, qr{root      /usr/share/ragnx/web;},
          sub { "root $root/web;" }, 'the page\'s root');
    subst(\$c, qr{alias /usr/share/ragnx/openapi\.json;},
          sub { "alias $root/docs/openapi.json;" }, 'OpenAPI document');
    subst(\$c, qr{^(\s*ragnx_redis) 127\.0\.0\.1:6379 }m,
          sub { "$1 127.0.0.1:$redis_port " }, 'ragnx_redis');
    subst(\$c, qr{ user=ragnx-nginx password_file=/etc/ragnx/redis-nginx\.password;},
          sub { " user=ragnx-nginx password_file=$redis_pw;" },
          'Redis ACL user and password file');
    subst(\$c, qr{(ragnx_rpc_seal_key) /etc/ragnx/rpc\.pub;},
          sub { "$1 $rpcpub;" }, 'seal key');
    subst(\$c, qr{^(\s*)listen      80;}m,
          sub { "$1listen 127.0.0.1:$o{port};" }, 'listen');

    if ($o{alg}) {
        # the public-key variant instead of the HS256 secret
        subst(\$c, qr{^\s*ragnx_jwt_alg\s+HS256;\n\s*ragnx_jwt_key_file \S+;\n}m,
              sub { '' }, 'HS256 lines');
        subst(\$c, qr{^(\s*)#(ragnx_jwt_alg\s+)RS256;}m,
              sub { "$1$2$o{alg};" }, 'commented public-key alg');
        subst(\$c, qr{^(\s*)#ragnx_jwt_key_file /etc/ragnx/jwt\.pub;}m,
              sub { "$1ragnx_jwt_key_file $o{key};" },
              'commented public key file');
    } else {
        subst(\$c, qr{(ragnx_jwt_key_file) /etc/ragnx/jwt\.key;},
              sub { "$1 $d/jwt.key;" }, 'HS256 key file');
    }

    if ($o{all}) {
        # realip, TLS with HSTS, the redirect server and the optional
        # JWT and Redis directives, uncommented
        subst(\$c, qr{^(\s*)#((?:set_real_ip_from|real_ip_header|real_ip_recursive)\b.*)$}m,
              sub { "$1$2" }, 'realip lines');
        subst(\$c, qr{^(\s*)#((?:ragnx_redis_cache|ragnx_jwt_issuer|ragnx_jwt_audience|ragnx_jwt_cookie)\b.*)$}m,
              sub { "$1$2" }, 'optional ragnx directives');
        subst(\$c, qr{^(\s*)#(ssl_\w+\s.*|add_header Strict-Transport-Security .*)$}m,
              sub { "$1$2" }, 'TLS lines');
        subst(\$c, qr{^(\s*ragnx_redis_cache) 127\.0\.0\.1:6380 }m,
              sub { "$1 127.0.0.1:$redis_port db=1 " }, 'cache server');
        subst(\$c, qr{/etc/ragnx/tls/fullchain\.pem}, sub { "$d/tls.crt" },
              'certificate');
        subst(\$c, qr{/etc/ragnx/tls/privkey\.pem}, sub { "$d/tls.key" },
              'certificate key');
        subst(\$c, qr{^(\s*)#listen      443 ssl http2;}m,
              sub { "$1listen 127.0.0.1:$o{tls_port} ssl http2;" },
              'TLS listen');
        subst(\$c, qr{^\s*#listen      \[::\]:443 ssl http2;\n}m, sub { '' },
              'TLS listen on IPv6');
        subst(\$c, qr{^(\s*)#server \{\n(.*?)^\s*#\}\n}ms, sub {
                  my ($ind, $body) = ($1, $2);
                  $body =~ s/^(\s*)#/$1/mg;
                  $body =~ s/^\s*listen\s+\[::\]:80.*\n//m;
                  $body =~ s/listen      80 /listen 127.0.0.1:$o{http_port} /;
                  "${ind}server {\n$body$ind}\n";
              }, 'redirect server');
    }
    return $c;
}

sub nginx_t_ok {
    my ($name, $conf) = @_;
    my $file = $t->file("$name.conf", $conf);
    my ($ok, $out) = $t->nginx_t(conf_file => $file);
    ok($ok, "nginx -t: $name") or diag($out);
    return $file;
}

sub jwt_rs256 {
    my ($claims) = @_;
    my $js = JSON::PP->new->canonical;
    my $in = encode_base64url($js->encode({ alg => 'RS256', typ => 'JWT' }))
             . '.' . encode_base64url($js->encode($claims));
    spew("$d/signing-input", $in);
    my $sig = `openssl dgst -sha256 -sign $d/rsa.pem -binary $d/signing-input`;
    return "$in." . encode_base64url($sig);
}

my @security = (
    'x-content-type-options'  => 'nosniff',
    'x-frame-options'         => 'DENY',
    'referrer-policy'         => 'no-referrer',
    'content-security-policy' => "default-src 'none'; frame-ancestors 'none'",
    'cache-control'           => 'no-store',
);

sub security_headers {
    my ($r, $what) = @_;
    my %h = @security;
    for my $k (sort keys %h) {
        is($r->{headers}{$k}, $h{$k}, "$what: $k");
    }
    like($r->{headers}{'x-request-id'} // '', qr/^[0-9a-f]{32}$/,
         "$what: x-request-id");
}

sub json_error {
    my ($r, $status, $error, $what) = @_;
    is($r->{status}, $status, "$what: $status");
    like($r->{headers}{'content-type'} // '', qr{^application/json},
         "$what: JSON");
    my $j = Ragnx::Test::json_body($r);
    is($j && $j->{error}, $error, "$what: error \"$error\"");
}

my $origin = 'https://app.example.com';
my $exp = time + 3600;
my $job = '6f1c1e2a-3b4d-4e5f-8a9b-0c1d2e3f4a5b';

# ---- HS256, as shipped ----------------------------------------------------

{
    my $port = free_port();
    my $file = nginx_t_ok('hs256', example(port => $port));
    $t->start_nginx(conf_file => $file, port => $port);

    my $r = $t->request('GET', '/live');
    is($r->{status}, 200, '/live: 200');
    is_deeply(Ragnx::Test::json_body($r), { status => 'live' },
              '/live: JSON');
    security_headers($r, '/live');

    # no pool runs here: degraded, and says why
    $r = $t->request('GET', '/health');
    is($r->{status}, 503, '/health without a pool: 503');
    like($r->{headers}{'content-type'} // '', qr{^application/json},
         '/health: JSON');
    my $j = Ragnx::Test::json_body($r) || {};
    is($j->{status}, 'degraded', '/health: status degraded');
    is($j->{reason}, 'pool', '/health: reason pool');
    is($j->{redis}, 'ok', '/health: redis ok');
    is($j->{pool}{processes}, 0, '/health: no pool process');
    security_headers($r, '/health');
    ok(!exists $r->{headers}{'strict-transport-security'},
       'no HSTS on plain HTTP');
    is($r->{headers}{server}, 'nginx', 'server_tokens off');

    $r = $t->request('GET', '/metrics');
    is($r->{status}, 200, '/metrics from loopback: 200');
    like($r->{body},
         qr/^ragnx_http_requests_total\{route="health",outcome="503"\} 1$/m,
         '/metrics: the health request counted');

    # the API's document, as a static file, taken by no /api/ location
    $r = $t->request('GET', '/api/openapi.json');
    is($r->{status}, 200, '/api/openapi.json: 200');
    is($r->{headers}{'content-type'}, 'application/json',
       '/api/openapi.json: application/json');
    ok($r->{body} eq slurp("$root/docs/openapi.json"),
       '/api/openapi.json: docs/openapi.json byte for byte');
    security_headers($r, '/api/openapi.json');

    $r = $t->request('GET', '/no/such/path');
    json_error($r, 404, 'Not found', 'unknown path');
    security_headers($r, '404 page');

    # the chat page: its files with their types and headers of its own
    $r = $t->request('GET', '/');
    is($r->{status}, 200, 'the page: 200');
    like($r->{headers}{'content-type'} // '', qr{^text/html; charset=utf-8},
         'the page: text/html');
    like($r->{body}, qr{<script type="module" src="js/app\.js"></script>},
         'the page: index.html');
    my $csp = $r->{headers}{'content-security-policy'} // '';
    like($csp, qr{^default-src 'self';}, 'the page: CSP default-src \'self\'');
    like($csp, qr{frame-ancestors 'none'}, 'the page: CSP frame-ancestors');
    unlike($csp, qr{unsafe}, 'the page: CSP allows nothing unsafe');
    is($r->{headers}{'x-content-type-options'}, 'nosniff',
       'the page: nosniff');
    is($r->{headers}{'referrer-policy'}, 'no-referrer',
       'the page: Referrer-Policy');
    is($r->{headers}{'x-frame-options'}, 'DENY', 'the page: X-Frame-Options');
    like($r->{headers}{'x-request-id'} // '', qr/^[0-9a-f]{32}$/,
         'the page: X-Request-Id');
    for (['/js/app.js', 'text/javascript'], ['/app.css', 'text/css'],
         ['/favicon.svg', 'image/svg+xml'])
    {
        my ($path, $type) = @$_;
        $r = $t->request('GET', $path);
        is($r->{status}, 200, "$path: 200");
        like($r->{headers}{'content-type'} // '', qr{^\Q$type\E},
             "$path: $type");
        is($r->{headers}{'content-security-policy'}, $csp, "$path: the CSP");
    }
    $r = $t->request('GET', '/api/no/such/path');
    json_error($r, 404, 'Not found', 'unknown API path');

    $r = $t->request('DELETE', '/health');
    json_error($r, 405, 'Method not allowed', 'DELETE /health');
    is($r->{headers}{allow}, 'GET, HEAD', '405: Allow');

    $r = $t->request('GET', '/api/users/me');
    json_error($r, 401, 'missing token', 'me without a token');
    is($r->{headers}{'www-authenticate'}, 'Bearer', '401: WWW-Authenticate');

    # the secret works: a signed token reaches the job lookup in Redis
    my $tok = Ragnx::Test::jwt_hs256($secret, { sub => 'user-hs', exp => $exp });
    $r = $t->request('GET', "/api/ask/$job",
                     headers => [Authorization => "Bearer $tok"]);
    is($r->{status}, 404, 'HS256 token accepted, unknown job: 404');
    my $rid = $r->{headers}{'x-request-id'} // 'none';
    my $forged = Ragnx::Test::jwt_hs256('x' x 48, { sub => 'u', exp => $exp });
    $r = $t->request('GET', "/api/ask/$job",
                     headers => [Authorization => "Bearer $forged"]);
    json_error($r, 401, 'invalid token', 'token signed with another secret');

    # CORS: the preflight, a refused origin, and an actual response
    $r = $t->request('OPTIONS', '/api/ask', headers => [
        Origin => $origin,
        'Access-Control-Request-Method' => 'POST',
        'Access-Control-Request-Headers' => 'authorization, content-type']);
    is($r->{status}, 204, 'preflight: 204');
    is($r->{headers}{'access-control-allow-origin'}, $origin,
       'preflight: Allow-Origin');
    is($r->{headers}{'access-control-allow-methods'},
       'GET, HEAD, POST, OPTIONS', 'preflight: Allow-Methods');
    is($r->{headers}{'access-control-allow-headers'},
       'Authorization, Content-Type', 'preflight: Allow-Headers');
    is($r->{headers}{'access-control-max-age'}, '600', 'preflight: Max-Age');
    like($r->{headers}{vary} // '', qr/Origin/, 'preflight: Vary');
    ok(!exists $r->{headers}{'access-control-allow-credentials'},
       'preflight: no credentials mode');
    security_headers($r, 'preflight');

    $r = $t->request('OPTIONS', '/api/ask', headers => [
        Origin => 'https://evil.example.net',
        'Access-Control-Request-Method' => 'POST']);
    json_error($r, 403, 'CORS origin not allowed', 'preflight, other origin');

    $r = $t->request('GET', '/health', headers => [Origin => $origin]);
    is($r->{headers}{'access-control-allow-origin'}, $origin,
       'response: Allow-Origin');
    is($r->{headers}{'access-control-expose-headers'},
       'Location, Retry-After, X-Request-Id', 'response: Expose-Headers');

    # limit_req on the auth endpoints: burst=10 nodelay at 10r/m, so of a
    # burst of 30 logins 11 pass (to the validation: 400) and the rest get
    # 429 JSON; register shares the zone
    my $bad = '{"email":"not an email","password":"x"}';
    my $res = $t->parallel([ map {
        ['POST', '/api/auth/login', body => $bad,
         headers => ['Content-Type' => 'application/json']] } 1 .. 30 ]);
    my %n;
    $n{$_->{status}}++ for @$res;
    ok($n{400} && $n{400} >= 11 && $n{400} <= 12,
       'login burst: 11 (or 12) reach validation')
        or diag(explain \%n);
    is(($n{400} // 0) + ($n{429} // 0), 30, 'login burst: the rest are 429');
    my ($limited) = grep { $_->{status} == 429 } @$res;
    json_error($limited || {}, 429, 'Too many requests', 'login burst');
    security_headers($limited || {}, '429 page');
    is(($limited || {})->{headers}{'retry-after'}, '6',
       '429 page: Retry-After, the auth zone\'s interval');
    $r = $t->request('POST', '/api/auth/register', body => $bad,
                     headers => ['Content-Type' => 'application/json']);
    json_error($r, 429, 'Too many requests', 'register after the burst');

    # limit_req on ask: burst=20 nodelay at 2r/s
    $res = $t->parallel([ map {
        ['POST', '/api/ask', body => '{"query":""}',
         headers => ['Content-Type' => 'application/json',
                     Authorization => "Bearer $tok"]] } 1 .. 40 ]);
    %n = ();
    $n{$_->{status}}++ for @$res;
    # (the two preflights above went through the same zone)
    ok($n{400} && $n{400} >= 19 && $n{400} <= 22,
       'ask burst: 19 (to 22) reach validation') or diag(explain \%n);
    is(($n{400} // 0) + ($n{429} // 0), 40, 'ask burst: the rest are 429');
    ($limited) = grep { $_->{status} == 429 } @$res;
    is(($limited || {})->{headers}{'retry-after'}, '1',
       'ask 429: Retry-After, the ask zone\'s interval');
    ok(!grep({ $_->{status} != 429 && exists $_->{headers}{'retry-after'} }
             @$res), 'no Retry-After on the 400s');

    # the access log (escape=json): one JSON object a line, with the
    # request id, the token subject, the route, outcome and job
    my @lines = map { my $o = eval { JSON::PP->new->decode($_) }; $o }
                split /\n/, slurp("$d/access.log");
    ok(@lines > 10 && !(grep { ref $_ ne 'HASH' } @lines),
       'access log: every line a JSON object')
        or diag(slurp("$d/access.log"));
    my ($line) = grep { ref $_ && $_->{rid} eq $rid } @lines;
    ok($line, 'access log line with the request id')
        or diag(slurp("$d/access.log"));
    is($line->{sub} // '', 'user-hs', 'access log: sub');
    is($line->{addr} // '', '127.0.0.1', 'access log: addr');
    is(($line->{route} // '') . ' ' . ($line->{outcome} // ''),
       'ask_status 404', 'access log: route and outcome');
    is($line->{job} // '', $job, 'access log: the job asked about');
    like($line->{redis_time} // '', qr/^\d+\.\d{6}$/,
         'access log: its Redis time');

    $t->stop_nginx;
}

# ---- RS256 and ES256: nginx holds only the public key ---------------------

{
    my $port = free_port();
    my $file = nginx_t_ok('rs256', example(port => $port, alg => 'RS256',
                                           key => "$d/jwt.pub"));
    nginx_t_ok('es256', example(port => $port, alg => 'ES256',
                                key => "$d/ec.pub"));
    my ($ok, $out) = $t->nginx_t(conf_file => $t->file('rs-private.conf',
        example(port => $port, alg => 'RS256', key => "$d/rsa.pem")));
    ok(!$ok, 'nginx -t refuses a private key') or diag($out);

    $t->start_nginx(conf_file => $file, port => $port);
    my $tok = jwt_rs256({ sub => 'user-rs', exp => $exp });
    my $r = $t->request('GET', "/api/ask/$job",
                        headers => [Authorization => "Bearer $tok"]);
    is($r->{status}, 404, 'RS256 token accepted, unknown job: 404');
    my $hs = Ragnx::Test::jwt_hs256(slurp("$d/jwt.pub"),
                                    { sub => 'user-rs', exp => $exp });
    $r = $t->request('GET', "/api/ask/$job",
                     headers => [Authorization => "Bearer $hs"]);
    json_error($r, 401, 'invalid token',
               'HS256 token keyed with the public key (alg confusion)');
    $t->stop_nginx;
}

# ---- everything commented turned on: realip, TLS, HSTS, redirect ----------

{
    my $port = free_port();
    my $tls_port = free_port();
    my $http_port = free_port();
    my $file = nginx_t_ok('all', example(port => $port, all => 1,
                                         tls_port => $tls_port,
                                         http_port => $http_port));
    $t->start_nginx(conf_file => $file, port => $port);
    $t->wait_port($tls_port, 'nginx TLS');
    my $r = $t->request('GET', '/health', port => $http_port);
    is($r->{status}, 308, 'plain HTTP: 308');
    like($r->{headers}{location} // '', qr{^https://localhost/health$},
         'plain HTTP: Location https');

    my $out = `curl -sk -D - https://127.0.0.1:$tls_port/live`;
    like($out, qr{^HTTP/2 200}m, 'TLS /live: 200 over HTTP/2');
    like($out, qr{^strict-transport-security: max-age=63072000; includeSubDomains\r?$}mi,
         'TLS: HSTS');
    like($out, qr{^x-frame-options: DENY\r?$}mi,
         'TLS: the other security headers too');
    $t->stop_nginx;
}

$t->done;
