#!/usr/bin/perl
# CORS: the origin allow-list (exact, wildcard subdomains, lookalikes),
# preflight answered before authentication, credentials, "*", the headers
# on error responses, and the configurations nginx -t refuses.

use strict;
use warnings;
use lib 't/lib';
use Test::More;
use IO::Socket::INET;
use Ragnx::Test;

my $t = Ragnx::Test->new;
my $dir = $t->dir;

mkdir "$dir/html";
mkdir "$dir/html/$_" for qw(api cred any plain);
mkdir "$dir/html/api/public";
$t->file("html/$_/ok", "ok") for qw(api cred any plain api/public);

my $port = Ragnx::Test::free_port();
my $port2 = Ragnx::Test::free_port();

# The first server configures CORS per location while its error pages
# live in a location without CORS: the error page keeps the policy of the
# location that failed.  The second configures it for the whole server.

$t->start_nginx(port => $port, http => <<"EOF", server => <<"EOF2");
    server {
        listen 127.0.0.1:$port2;

        ragnx_cors_origins https://app.example.com;
        ragnx_cors_credentials on;

        error_page 401 404 413 503 \@ragnx_error;
        location \@ragnx_error { ragnx_json_error; }

        location = /small { client_max_body_size 10; return 200 "ok"; }
        location = /unauth { return 401; }
    }
EOF
        root $dir/html;

        error_page 400 401 403 404 405 408 413 429 500 502 503 504
                   \@ragnx_error;
        location \@ragnx_error { ragnx_json_error; }

        location /api/ {
            ragnx_cors_origins https://app.example.com https://*.example.org
                               http://localhost:3000;
            ragnx_cors_methods GET POST;
            ragnx_cors_headers Authorization Content-Type X-Request-Id;
            ragnx_cors_expose_headers X-Request-Id X-RateLimit-Remaining;
            ragnx_cors_max_age 1h;

            location = /api/unauth { return 401; }
            location = /api/down { return 503; }
            location /api/missing/ { }
            location = /api/upload {
                client_max_body_size 10;
                mirror /sink;
                mirror_request_body on;
            }
            location = /api/proxy {
                proxy_pass http://127.0.0.1:$port/backend;
            }
            location /api/public/ { ragnx_cors_origins off; }
            location = /api/to-plain { rewrite ^ /plain/ok last; }
        }

        location /cred/ {
            ragnx_cors_origins https://app.example.com https://*.example.org;
            ragnx_cors_credentials on;
        }

        location /any/ {
            ragnx_cors_origins *;
            ragnx_cors_expose_headers X-Request-Id;
        }

        location /plain/ { }
        location = /plain-to-api { rewrite ^ /api/ok last; }

        location = /sink { internal; return 204; }

        location = /backend {
            add_header Access-Control-Allow-Origin "*";
            add_header Access-Control-Allow-Credentials "true";
            add_header Vary "Accept-Encoding, Origin";
            return 200 "backend";
        }
EOF2

my $APP = 'https://app.example.com';

sub get {
    my ($path, $origin, %a) = @_;
    my @h = defined $origin ? (Origin => $origin) : ();
    return $t->request($a{method} || 'GET', $path,
                       headers => [@h, @{ $a{headers} || [] }], %a);
}

sub preflight {
    my ($path, $origin, $method, $headers, %a) = @_;
    my @h = (Origin => $origin, 'Access-Control-Request-Method' => $method);
    push @h, 'Access-Control-Request-Headers' => $headers if defined $headers;
    return $t->request(OPTIONS => $path, headers => \@h, %a);
}

# every header line of that name, in order
sub lines {
    my ($r, $name) = @_;
    return map { $_->[1] } grep { lc $_->[0] eq lc $name }
           @{ $r->{header_list} };
}

sub acao { $_[0]{headers}{'access-control-allow-origin'} }

sub vary_origin {
    my ($r) = @_;
    return scalar grep { /^origin$/i } map { split /\s*,\s*/ } lines($r, 'Vary');
}

sub json { Ragnx::Test::json_body($_[0]) }

sub raw {
    my ($req) = @_;
    my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $port,
                                  Proto => 'tcp', Timeout => 10)
        or return { status => 0 };
    $s->print($req);
    local $/;
    my $res = <$s>;
    close $s;
    return Ragnx::Test::parse_response(defined $res ? $res : '');
}

# --- actual requests ------------------------------------------------------

my $r = get('/api/ok', $APP);
is($r->{status}, 200, 'allowed origin: request served');
is(acao($r), $APP, 'allowed origin: Allow-Origin echoes the origin');
is($r->{headers}{'access-control-allow-credentials'}, undef,
   'credentials off: no Allow-Credentials');
is($r->{headers}{'access-control-expose-headers'},
   'X-Request-Id, X-RateLimit-Remaining', 'Expose-Headers listed');
is(vary_origin($r), 1, 'Vary: Origin once');
is(scalar lines($r, 'Access-Control-Allow-Origin'), 1, 'one Allow-Origin');

$r = get('/api/ok', undef);
is($r->{status}, 200, 'no Origin: request served');
is(acao($r), undef, 'no Origin: no Allow-Origin');
is(vary_origin($r), 1, 'no Origin: Vary: Origin all the same');

$r = get('/api/ok', 'https://evil.com');
is($r->{status}, 200, 'disallowed origin: request still served');
is(acao($r), undef, 'disallowed origin: no Allow-Origin');
is($r->{headers}{'access-control-expose-headers'}, undef,
   'disallowed origin: no Expose-Headers');
is(vary_origin($r), 1, 'disallowed origin: Vary: Origin');

$r = get('/api/ok', 'HTTPS://App.Example.COM');
is(acao($r), 'HTTPS://App.Example.COM',
   'scheme and host compare case-insensitively, echoed as sent');

$r = get('/api/ok', 'https://app.example.com:443');
is(acao($r), 'https://app.example.com:443',
   'the default port is the same origin');

$r = get('/api/ok', 'http://localhost:3000');
is(acao($r), 'http://localhost:3000', 'exact origin with a port');

for my $o ('https://a.example.org', 'https://a.b.example.org',
           'https://A-1.x_y.Example.Org')
{
    is(acao(get('/api/ok', $o)), $o, "wildcard allows $o");
}

for my $o ('https://example.org',            # the apex is not a subdomain
           'http://a.example.org',           # scheme
           'https://a.example.org:8443',     # port
           'https://evilexample.org',
           'https://a.example.org.evil.com',
           'https://example.com.evil.com',
           'https://evilexample.com',
           'https://app.example.com.evil.com',
           'https://evil.com/app.example.com',
           'http://app.example.com',
           'https://app.example.com:8443',
           'https://app.example.com:0443',
           'https://app.example.com:',
           'https://app.example.com/',
           'https://app.example.com.',
           'https://user@app.example.com',
           'https://app.example.com@evil.com',
           'https://*.example.org',
           'https://.example.org',
           'https://a..example.org',
           'http://localhost',
           'http://localhost:3001',
           'https://localhost:3000',          # scheme, the port explicit
           'http://app.example.com:443',      # scheme, the default https port
           'http://a.example.org:443',        # the same, for a wildcard
           'null',
           'app.example.com',
           '*',
           '')
{
    my $r = get('/api/ok', $o);
    is(acao($r), undef, "origin '$o' not allowed");
}

$r = get('/api/ok', undef, headers => [Origin => $APP, Origin => $APP]);
is(acao($r), undef, 'Origin sent twice is not trusted');

# --- preflight ------------------------------------------------------------

$r = preflight('/api/ok', $APP, 'POST', 'content-type, authorization');
is($r->{status}, 204, 'preflight: 204');
is(acao($r), $APP, 'preflight: Allow-Origin');
is($r->{headers}{'access-control-allow-methods'}, 'GET, POST',
   'preflight: Allow-Methods');
is($r->{headers}{'access-control-allow-headers'},
   'Authorization, Content-Type, X-Request-Id', 'preflight: Allow-Headers');
is($r->{headers}{'access-control-max-age'}, '3600', 'preflight: Max-Age');
is($r->{headers}{'access-control-allow-credentials'}, undef,
   'preflight: no Allow-Credentials when off');
is($r->{headers}{'access-control-expose-headers'}, undef,
   'preflight: no Expose-Headers');
is(vary_origin($r), 1, 'preflight: Vary: Origin');
is($r->{body}, '', 'preflight: no body');

$r = preflight('/api/ok', 'https://x.example.org', 'GET', undef);
is($r->{status}, 204, 'preflight without requested headers');

$r = preflight('/api/ok', $APP, 'POST', ' X-REQUEST-ID ,, Content-Type');
is($r->{status}, 204, 'requested headers: any case, spaces, empty items');

$r = preflight('/api/unauth', $APP, 'GET', 'authorization');
is($r->{status}, 401, 'preflight does not pass a "return" of rewrite');

$r = preflight('/api/ok', 'https://evil.com', 'POST', undef);
is($r->{status}, 403, 'preflight from a disallowed origin: 403');
like($r->{headers}{'content-type'}, qr{^application/json}, '403 is JSON');
is_deeply(json($r), { error => 'CORS origin not allowed' }, '403 body');
is(acao($r), undef, 'no Allow-Origin on it');
is($r->{headers}{'access-control-allow-methods'}, undef,
   'no Allow-Methods on it');
is(vary_origin($r), 1, 'Vary: Origin on it');

$r = preflight('/api/ok', 'https://example.com.evil.com', 'GET', undef);
is($r->{status}, 403, 'preflight from a lookalike origin: 403');

$r = preflight('/api/ok', 'null', 'GET', undef);
is($r->{status}, 403, 'preflight from origin "null": 403');

$r = preflight('/api/ok', $APP, 'DELETE', undef);
is($r->{status}, 403, 'preflight for a method not allowed: 403');
is_deeply(json($r), { error => 'CORS method not allowed' }, '403 body');
is($r->{headers}{'access-control-allow-methods'}, undef,
   'no Allow-Methods on it');

$r = preflight('/api/ok', $APP, 'post', undef);
is($r->{status}, 403, 'methods are case-sensitive');

$r = preflight('/api/ok', $APP, 'POST', 'Content-Type, X-Evil');
is($r->{status}, 403, 'preflight for a header not allowed: 403');
is_deeply(json($r), { error => 'CORS header not allowed' }, '403 body');

$r = preflight('/api/ok', $APP, 'POST', 'Content-Type;x');
is($r->{status}, 403, 'preflight with a malformed header list: 403');

$r = $t->request(OPTIONS => '/api/ok', headers => [Origin => $APP]);
is($r->{status}, 405, 'plain OPTIONS is not a preflight');
is(acao($r), $APP, 'but it gets CORS headers like any response');
is($r->{headers}{'access-control-allow-methods'}, undef,
   'and no Allow-Methods');

$r = $t->request(OPTIONS => '/api/ok',
                 headers => ['Access-Control-Request-Method' => 'GET']);
is($r->{status}, 405, 'OPTIONS without Origin is not a preflight');

# --- credentials and "*" --------------------------------------------------

$r = get('/cred/ok', 'https://a.example.org');
is(acao($r), 'https://a.example.org', 'credentials: the origin is echoed');
is($r->{headers}{'access-control-allow-credentials'}, 'true',
   'credentials: Allow-Credentials: true');

$r = get('/cred/ok', 'https://evil.com');
is(acao($r), undef, 'credentials, disallowed origin: no Allow-Origin');
is($r->{headers}{'access-control-allow-credentials'}, undef,
   'credentials, disallowed origin: no Allow-Credentials');

$r = preflight('/cred/ok', $APP, 'GET', 'Authorization');
is($r->{status}, 204, 'credentials: preflight');
is(acao($r), $APP, 'credentials: preflight echoes the origin');
is($r->{headers}{'access-control-allow-credentials'}, 'true',
   'credentials: preflight Allow-Credentials');
is($r->{headers}{'access-control-allow-methods'}, 'GET, HEAD, POST, OPTIONS',
   'default Allow-Methods');
is($r->{headers}{'access-control-allow-headers'},
   'Authorization, Content-Type', 'default Allow-Headers');
is($r->{headers}{'access-control-max-age'}, '600', 'default Max-Age');

$r = get('/any/ok', 'https://anything.test');
is(acao($r), '*', '"*": Allow-Origin: *');
is($r->{headers}{'access-control-allow-credentials'}, undef,
   '"*": no Allow-Credentials');
is($r->{headers}{'access-control-expose-headers'}, 'X-Request-Id',
   '"*": Expose-Headers');
is(vary_origin($r), 1, '"*": Vary: Origin');

is(acao(get('/any/ok', 'null')), '*', '"*" answers origin "null" too');
is(acao(get('/any/ok', undef)), undef, '"*": nothing without Origin');

$r = preflight('/any/ok', 'https://anything.test', 'POST', 'content-type');
is($r->{status}, 204, '"*": preflight');
is(acao($r), '*', '"*": preflight Allow-Origin: *');

# --- where CORS is not configured ------------------------------------------

$r = get('/plain/ok', $APP);
is(acao($r), undef, 'no CORS location: no Allow-Origin');
is(vary_origin($r), 0, 'no CORS location: no Vary');

$r = get('/api/public/ok', $APP);
is($r->{status}, 200, 'ragnx_cors_origins off: served');
is(acao($r), undef, 'ragnx_cors_origins off: no Allow-Origin');
is(vary_origin($r), 0, 'ragnx_cors_origins off: no Vary');

$r = get('/api/to-plain', $APP);
is($r->{body}, 'ok', 'rewritten out of a CORS location');
is(acao($r), undef, 'the final location decides: no Allow-Origin');
is(vary_origin($r), 0, 'the final location decides: no Vary');

$r = get('/plain-to-api', $APP);
is(acao($r), $APP, 'rewritten into a CORS location: Allow-Origin');

$r = preflight('/plain-to-api', $APP, 'GET', undef);
is($r->{status}, 204, 'rewritten into a CORS location: preflight answered');

$r = preflight('/plain/ok', $APP, 'GET', undef);
is($r->{status}, 405, 'no CORS location: OPTIONS is not answered');

# --- error responses ------------------------------------------------------

for my $case (['/api/unauth', 401, 'Unauthorized'],
              ['/api/missing/x', 404, 'Not found'],
              ['/api/down', 503, 'Service unavailable'])
{
    my ($path, $status, $msg) = @$case;

    $r = get($path, $APP);
    is($r->{status}, $status, "$path: $status");
    is_deeply(json($r), { error => $msg }, "$path: JSON error body");
    is(acao($r), $APP, "$path: Allow-Origin on the error page");
    is(scalar lines($r, 'Access-Control-Allow-Origin'), 1,
       "$path: exactly one Allow-Origin");
    is($r->{headers}{'access-control-expose-headers'},
       'X-Request-Id, X-RateLimit-Remaining', "$path: Expose-Headers");
    is(vary_origin($r), 1, "$path: Vary: Origin once");

    $r = get($path, 'https://evil.com');
    is(acao($r), undef, "$path, disallowed origin: no Allow-Origin");
    is(vary_origin($r), 1, "$path, disallowed origin: Vary: Origin");
}

# the harness always sends Content-Length, so this one is written by hand
$r = raw("POST /api/upload HTTP/1.1\r\nHost: localhost\r\n"
         . "Connection: close\r\nOrigin: $APP\r\n"
         . "Transfer-Encoding: chunked\r\n\r\n"
         . "40\r\n" . ('x' x 64) . "\r\n0\r\n\r\n");
is($r->{status}, 413, 'chunked body over the limit: 413 after the rewrite');
is_deeply(json($r), { error => 'Request body too large' }, '413 JSON body');
is(acao($r), $APP, '413: Allow-Origin');
is(vary_origin($r), 1, '413: Vary: Origin');

$r = $t->request(HEAD => '/api/unauth', headers => [Origin => $APP]);
is($r->{status}, 401, 'HEAD: 401');
is(acao($r), $APP, 'HEAD: Allow-Origin');

# the module owns the CORS headers of its locations: an upstream's are
# replaced, never duplicated

$r = get('/api/proxy', $APP);
is($r->{body}, 'backend', 'proxied response');
is(join('|', lines($r, 'Access-Control-Allow-Origin')), $APP,
   "upstream's Allow-Origin replaced");
is($r->{headers}{'access-control-allow-credentials'}, undef,
   "upstream's Allow-Credentials removed");
is(join('|', lines($r, 'Vary')), 'Accept-Encoding, Origin',
   "upstream's Vary kept, Origin not added twice");

$r = get('/api/proxy', 'https://evil.com');
is(acao($r), undef, "disallowed origin: upstream's Allow-Origin removed");

# --- server-level configuration with credentials ------------------------------

$r = $t->request(POST => '/small', port => $port2,
                 headers => [Origin => $APP], body => 'x' x 100);
is($r->{status}, 413, 'server level: 413 before the location runs');
is_deeply(json($r), { error => 'Request body too large' }, '413 JSON body');
is(acao($r), $APP, '413: Allow-Origin');
is($r->{headers}{'access-control-allow-credentials'}, 'true',
   '413: Allow-Credentials');
is(vary_origin($r), 1, '413: Vary: Origin');

$r = get('/unauth', $APP, port => $port2);
is($r->{status}, 401, 'server level: 401');
is(acao($r), $APP, '401: Allow-Origin');
is($r->{headers}{'access-control-allow-credentials'}, 'true',
   '401: Allow-Credentials');

$r = preflight('/small', $APP, 'POST', 'Content-Type', port => $port2);
is($r->{status}, 200, 'a location answering in rewrite answers first');

# --- nginx -t ----------------------------------------------------------------

my ($ok, $out) = $t->nginx_t(server => <<'EOF');
        ragnx_cors_origins https://app.example.com https://*.example.com
                           http://[::1]:8080 http://127.0.0.1:3000
                           capacitor://localhost;
        ragnx_cors_credentials on;
        ragnx_cors_methods GET POST PATCH;
        ragnx_cors_headers Authorization Content-Type;
        ragnx_cors_expose_headers X-Request-Id;
        ragnx_cors_max_age 10m;
        location / { ragnx_cors_origins off; }
EOF
ok($ok, 'a valid configuration passes nginx -t') or diag($out);

($ok, $out) = $t->nginx_t(server => <<'EOF');
        ragnx_cors_origins *;
        ragnx_cors_credentials on;
EOF
ok(!$ok, '"*" with credentials fails nginx -t');
like($out, qr/"ragnx_cors_origins \*" in \S+test.conf:\d+ cannot be used with "ragnx_cors_credentials on" in \S+test.conf:\d+/,
     'the message names both directives and where they are');

($ok, $out) = $t->nginx_t(http => 'ragnx_cors_credentials on;',
                          server => 'location / { ragnx_cors_origins *; }');
ok(!$ok, '"*" with inherited credentials fails nginx -t');
like($out, qr/cannot be used with "ragnx_cors_credentials on"/,
     'the message names both directives');

for my $bad ('app.example.com', 'https://app.example.com/',
             'https://app.example.com/path', 'https://', 'https://*',
             'https://*.', 'https://*example.com', 'https://a.*.example.com',
             'https://*.*.example.com', 'https://user@app.example.com',
             'https://app.example.com:0', 'https://app.example.com:65536',
             'https://app.example.com:', 'https://app..example.com',
             'https://.example.com', 'null', '://app.example.com',
             '1https://app.example.com', 'https://[::1', 'https://[xyz]',
             'https://app.example.com?x', "https://\xc3\xa9.example.com")
{
    ($ok, $out) = $t->nginx_t(
        server => "location / { ragnx_cors_origins \"$bad\"; }");
    ok(!$ok, "malformed origin '$bad' fails nginx -t");
    like($out, qr/invalid origin ".*" in "ragnx_cors_origins" directive/,
         "  and the message names it");
}

($ok, $out) = $t->nginx_t(
    server => 'location / { ragnx_cors_origins * https://a.example.com; }');
ok(!$ok, '"*" mixed with origins fails nginx -t');
like($out, qr/"\*" in "ragnx_cors_origins" directive cannot be mixed/,
     'the message says so');

($ok, $out) = $t->nginx_t(
    server => 'location / { ragnx_cors_methods "GET,POST"; }');
ok(!$ok, 'a method that is not a token fails nginx -t');
like($out, qr/invalid name "GET,POST" in "ragnx_cors_methods" directive/,
     'the message names it');

($ok, $out) = $t->nginx_t(
    server => 'location / { ragnx_cors_headers "X Evil"; }');
ok(!$ok, 'a header that is not a token fails nginx -t');
like($out, qr/invalid name "X Evil" in "ragnx_cors_headers" directive/,
     'the message names it');

($ok, $out) = $t->nginx_t(server => <<'EOF');
        location / {
            ragnx_cors_origins https://a.example.com;
            ragnx_cors_origins https://b.example.com;
        }
EOF
ok(!$ok, 'a duplicate ragnx_cors_origins fails nginx -t');
like($out, qr/"ragnx_cors_origins" directive is duplicate/, 'and says so');

($ok, $out) = $t->nginx_t(server => 'ragnx_cors_max_age forever;');
ok(!$ok, 'a bad max-age fails nginx -t');
like($out, qr/"ragnx_cors_max_age" directive invalid value/,
     'the message names the directive');

($ok, $out) = $t->nginx_t(server => 'ragnx_cors_credentials maybe;');
ok(!$ok, 'a bad credentials flag fails nginx -t');
like($out, qr/invalid value "maybe" in "ragnx_cors_credentials"/,
     'the message names the directive');

$t->done;
