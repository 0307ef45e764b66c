#!/usr/bin/perl
# The module loads into the distro nginx; ragnx_json_error turns nginx's own
# error pages into JSON.

use strict;
use warnings;
use lib 't/lib';
use Test::More;
use Ragnx::Test;

my $t = Ragnx::Test->new;

$t->start_nginx(server => <<'EOF2');
        error_page 400 401 403 404 405 408 413 429 500 502 503 504
                   @ragnx_error;
        location @ragnx_error { ragnx_json_error; }
        location = /ok { return 200 "ok"; }
        location = /teapot { return 503; }
        location = /small { client_max_body_size 10; return 200; }
        location /static/ { root /nonexistent; }
EOF2

my $r = $t->request(GET => '/ok');
is($r->{status}, 200, 'plain location works');
is($r->{body}, 'ok', 'plain body');

$r = $t->request(GET => '/static/missing');
is($r->{status}, 404, 'missing file is 404');
like($r->{headers}{'content-type'}, qr{^application/json}, '404 is JSON');
is_deeply(Ragnx::Test::json_body($r), { error => 'Not found' },
          '404 JSON body');

$r = $t->request(GET => '/teapot');
is($r->{status}, 503, 'return 503 keeps its status');
is_deeply(Ragnx::Test::json_body($r), { error => 'Service unavailable' },
          '503 JSON body');

$r = $t->request(POST => '/small', body => 'x' x 100);
is($r->{status}, 413, 'body over client_max_body_size is 413');
is_deeply(Ragnx::Test::json_body($r), { error => 'Request body too large' },
          '413 JSON body');

$r = $t->request(HEAD => '/teapot');
is($r->{status}, 503, 'HEAD keeps the status');
is($r->{body}, '', 'HEAD has no body');

my ($ok, $out) = $t->nginx_t(server => 'location / { ragnx_json_error x; }');
ok(!$ok, 'ragnx_json_error takes no arguments');
like($out, qr/invalid number of arguments in "ragnx_json_error"/,
     'nginx -t names the directive');

$t->done;
