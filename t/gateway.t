#!/usr/bin/perl
# The guards together, as an API location stacks them: CORS preflight is
# answered before JWT, and the JSON errors of JWT (401), validation (400,
# 413, 415) and nginx itself (404) all carry the CORS headers.

use strict;
use warnings;
use lib 't/lib';
use Test::More;
use Cwd qw(getcwd);
use Ragnx::Test;

my $root = getcwd();
my $t = Ragnx::Test->new;
my $secret = 'gateway-test-secret-0123456789abcdef';
my $key = $t->file('hs.key', $secret);
my $origin = 'https://app.example.com';

$t->start_nginx(http => <<"EOF2", server => <<"EOF3");
    client_body_buffer_size 4k;
    client_max_body_size 4k;
EOF2
        ragnx_cors_origins https://app.example.com;
        ragnx_cors_credentials on;
        ragnx_cors_expose_headers Location;
        ragnx_jwt_key_file $key;

        error_page 400 401 403 404 405 413 415 500 503 \@err;
        location \@err { ragnx_json_error; }

        location = /api/echo {
            ragnx_jwt on;
            ragnx_validate_schema $root/schemas/ask.json;
            try_files /.none \@ok;
        }
        location \@ok { return 200 "ok \$ragnx_jwt_sub"; }
EOF3

my $token = Ragnx::Test::jwt_hs256($secret, { sub => 'u-1', exp => time + 600 });
my @cors = (Origin => $origin);

sub cors_ok {
    my ($r, $name) = @_;
    is($r->{headers}{'access-control-allow-origin'}, $origin,
       "$name: Access-Control-Allow-Origin");
    is($r->{headers}{'access-control-allow-credentials'}, 'true',
       "$name: Access-Control-Allow-Credentials");
    like($r->{headers}{vary} // '', qr/Origin/, "$name: Vary: Origin");
}

# preflight: no token, answered before JWT
my $r = $t->request(OPTIONS => '/api/echo', headers => [ @cors,
    'Access-Control-Request-Method' => 'POST',
    'Access-Control-Request-Headers' => 'authorization, content-type' ]);
is($r->{status}, 204, 'preflight without a token: 204, not 401');
cors_ok($r, 'preflight');
like($r->{headers}{'access-control-allow-headers'} // '', qr/Authorization/i,
     'preflight: allowed headers');

$r = $t->request(OPTIONS => '/api/echo', headers => [
    Origin => 'https://evil.example.org',
    'Access-Control-Request-Method' => 'POST' ]);
is($r->{status}, 403, 'preflight from another origin: 403');
is_deeply(Ragnx::Test::json_body($r), { error => 'CORS origin not allowed' },
          'preflight 403 body');

# 401 from JWT
$r = $t->request(POST => '/api/echo', headers => [ @cors,
    'Content-Type' => 'application/json' ], body => '{"query":"x"}');
is($r->{status}, 401, 'no token: 401');
is_deeply(Ragnx::Test::json_body($r), { error => 'missing token' },
          '401 body');
cors_ok($r, '401');

$r = $t->request(POST => '/api/echo', headers => [ @cors,
    Authorization => 'Bearer x.y.z', 'Content-Type' => 'application/json' ],
    body => '{"query":"x"}');
is($r->{status}, 401, 'bad token: 401');
cors_ok($r, 'bad token 401');

my @auth = (@cors, Authorization => "Bearer $token");

# 400 / 415 / 413 from validation
$r = $t->request(POST => '/api/echo', headers => [ @auth,
    'Content-Type' => 'application/json' ], body => '{"query":""}');
is($r->{status}, 400, 'invalid body: 400');
is_deeply(Ragnx::Test::json_body($r),
          { error => 'Validation failed',
            details => { query => ['must be at least 1 character'] } },
          '400 body');
cors_ok($r, '400');

$r = $t->request(POST => '/api/echo', headers => [ @auth,
    'Content-Type' => 'text/plain' ], body => '{"query":"x"}');
is($r->{status}, 415, 'wrong content type: 415');
cors_ok($r, '415');

$r = $t->request(POST => '/api/echo', headers => [ @auth,
    'Content-Type' => 'application/json' ],
    body => '{"query":"' . ('x' x 5000) . '"}');
is($r->{status}, 413, 'body too large: 413');
is(Ragnx::Test::json_body($r)->{error}, 'Request body too large',
   '413 body');
cors_ok($r, '413');

# nginx's own 404
$r = $t->request(GET => '/nowhere', headers => \@cors);
is($r->{status}, 404, 'unknown path: 404');
is_deeply(Ragnx::Test::json_body($r), { error => 'Not found' }, '404 body');
cors_ok($r, '404');

# all good
$r = $t->request(POST => '/api/echo', headers => [ @auth,
    'Content-Type' => 'application/json' ],
    body => '{"query":"What is ragnx?"}');
is($r->{status}, 200, 'valid token and body: 200');
is($r->{body}, 'ok u-1', 'claims reach the content handler');
cors_ok($r, '200');

$t->done;
