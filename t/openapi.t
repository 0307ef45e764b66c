#!/usr/bin/perl
# docs/openapi.json, the API's OpenAPI 3.1 document:
#
# - it is what scripts/openapi makes of docs/openapi.template.json and
#   schemas/*.json, and its request bodies are those files as they are;
# - swagger-parser (t/openapi, installed by scripts/deps) finds it valid,
#   and finds a broken copy invalid;
# - nginx serves it at /api/openapi.json with the location of
#   nginx.conf.example, byte for byte, past the example's other /api/
#   locations;
# - the checker of Ragnx::OpenAPI, which the ask, account, chat and stream
#   tests run on every response, refuses responses that do not match.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Cwd qw(abs_path);
use JSON::PP;
use Test::More;
use Ragnx::Test qw(slurp spew);
use Ragnx::OpenAPI;

my $root = abs_path("$FindBin::Bin/..");
my $t = Ragnx::Test->new;
my $d = $t->dir;
my $json = JSON::PP->new->utf8->canonical;
my $file = "$root/docs/openapi.json";
my $doc = $json->decode(slurp($file));

# ---- generated, from the schemas nginx validates with --------------------

my $out = `cd '$root' && scripts/openapi --check 2>&1`;
is($?, 0, 'docs/openapi.json is what scripts/openapi makes') or diag($out);

my %included;
for my $line (split /\n/, slurp("$root/docs/openapi.template.json")) {
    $included{$1} = 1 if $line =~ /"x-include":\s*"(schemas\/[\w-]+\.json)"/;
}
my @schemas = map { "schemas/" . (m{([^/]+)\z})[0] }
              glob("$root/schemas/*.json");
is_deeply([ sort keys %included ], [ sort @schemas ],
          'the template includes every file of schemas/');
my %body_of = (
    '/api/auth/register' => 'schemas/register.json',
    '/api/auth/login'    => 'schemas/login.json',
    '/api/ask'           => 'schemas/ask.json',
);
my $api = Ragnx::OpenAPI->new;
for my $path (sort keys %body_of) {
    my $s = $api->resolve($doc->{paths}{$path}{post}{requestBody}{content}
                          {'application/json'}{schema});
    is_deeply($s, $json->decode(slurp("$root/$body_of{$path}")),
              "POST $path: the request body is $body_of{$path} as it is");
}
like($json->decode(slurp("$root/schemas/ask.json"))->{'$schema'},
     qr{^https://json-schema\.org/draft/2020-12/schema$},
     'schemas/ use draft 2020-12, OpenAPI 3.1\'s dialect');
is($doc->{openapi}, '3.1.0', 'OpenAPI 3.1');

# every endpoint of the API, each status its handlers answer
my %ops = (
    'get /health'                     => [200, 503, 405],
    'get /metrics'                    => [200, 403, 405],
    'get /api/openapi.json'           => [200],
    'post /api/auth/register'         => [201, 400, 405, 409, 413, 415, 429,
                                          500, 502, 503, 504],
    'post /api/auth/login'            => [200, 400, 401, 405, 413, 415, 429,
                                          500, 502, 503, 504],
    'get /api/users/me'               => [200, 401, 404, 405, 500, 502, 503,
                                          504],
    'post /api/ask'                   => [200, 202, 400, 401, 404, 405, 413,
                                          415, 429, 502, 503, 504],
    'get /api/ask/{jobId}'            => [200, 400, 401, 404, 405, 503],
    'get /api/ask/{jobId}/events'     => [200, 400, 401, 404, 405, 503],
    'get /api/chats'                  => [200, 400, 401, 405, 500, 502, 503,
                                          504],
    'get /api/chats/{chatId}/messages' => [200, 400, 401, 404, 405, 500, 502,
                                           503, 504],
);
# and the CORS preflight on each, as nginx answers it (or not, without
# ragnx_cors_origins)
$ops{"options " . (split ' ', $_)[1]} = [204, 401, 403, 405] for keys %ops;
my %have;
for my $p (keys %{ $doc->{paths} }) {
    for my $m (keys %{ $doc->{paths}{$p} }) {
        $have{"$m $p"} = [ sort keys %{ $doc->{paths}{$p}{$m}{responses} } ];
    }
}
is_deeply([ sort keys %have ], [ sort keys %ops ], 'the operations');
for my $op (sort keys %ops) {
    is_deeply($have{$op}, [ sort map { "$_" } @{ $ops{$op} } ],
              "$op: the statuses");
}
ok(exists $doc->{paths}{'/api/ask'}{post}{responses}{200}{content}
       {'text/event-stream'}{'x-events'}{$_}, "POST /api/ask: event $_")
    for qw(job delta restart done error);

# ---- a real validator ------------------------------------------------------

my $nm = "$root/t/openapi/node_modules/\@apidevtools/swagger-parser";
ok(-d $nm, 't/openapi: swagger-parser installed (scripts/deps)')
    or BAIL_OUT('run scripts/deps: npm ci in t/openapi');
$out = `node '$root/t/openapi/validate.js' '$file' 2>&1`;
is($?, 0, 'swagger-parser: docs/openapi.json is valid') or diag($out);
like($out, qr/^valid: ragnx .*OpenAPI 3\.1\.0, 11 paths/, '... all 11 paths');

# a broken copy: a response without its description, a dangling $ref
{
    my $bad = $json->decode(slurp($file));
    delete $bad->{paths}{'/api/ask'}{post}{responses}{202}{description};
    spew("$d/bad1.json", $json->encode($bad));
    $out = `node '$root/t/openapi/validate.js' '$d/bad1.json' 2>&1`;
    isnt($?, 0, 'swagger-parser: a response without description is invalid');
    $bad = $json->decode(slurp($file));
    $bad->{paths}{'/api/chats'}{get}{responses}{200}{content}
        {'application/json'}{schema}{'$ref'} = '#/components/schemas/Nope';
    spew("$d/bad2.json", $json->encode($bad));
    $out = `node '$root/t/openapi/validate.js' '$d/bad2.json' 2>&1`;
    isnt($?, 0, 'swagger-parser: a dangling $ref is invalid');
}

# ---- served by nginx -------------------------------------------------------

{
    my $example = slurp("$root/nginx.conf.example");
    my ($loc) = $example
        =~ /^( *location = \/api\/openapi\.json \{\n.*?^ *\}\n)/ms;
    ok($loc, 'nginx.conf.example: the location of /api/openapi.json');
    $loc //= '';
    is(($loc =~ s{alias /usr/share/ragnx/openapi\.json;}
                 {alias $root/docs/openapi.json;}), 1, '... an alias');
    # the example's other locations, each answering 418: none may take it
    my @others;
    for my $l ($example =~ /^ *location ([^\@{][^{]*?) \{/mg) {
        next if $l eq '= /api/openapi.json';
        push @others, "        location $l { return 418; }\n";
    }
    cmp_ok(scalar @others, '>=', 10, scalar(@others) . ' other locations');
    $t->start_nginx(server => $loc . join '', @others);

    my $r = $t->request(GET => '/api/openapi.json');
    is($r->{status}, 200, 'GET /api/openapi.json: 200');
    is($r->{headers}{'content-type'}, 'application/json',
       '... application/json');
    ok($r->{body} eq slurp($file), '... docs/openapi.json byte for byte');
    $r = $t->request(GET => '/api/openapi.json?v=1');
    ok($r->{status} == 200 && $r->{body} eq slurp($file),
       '... with a query string too');
    $r = $t->request(HEAD => '/api/openapi.json');
    is($r->{status}, 200, 'HEAD: 200');
    is($r->{headers}{'content-length'}, -s $file, '... its length');
    $r = $t->request(GET => '/api/ask/' . ('1' x 8) . '-1111-4111-8111-'
                            . ('1' x 12));
    is($r->{status}, 418, 'the other locations answer as they are');
}

# ---- the checker refuses what does not match -----------------------------

my $uuid = '0190f5e2-7c3a-7d4e-8f10-123456789abc';
my $uuid2 = '6f1c1e2a-3b4d-4e5f-8a9b-0c1d2e3f4a5b';

sub res {
    my ($status, $headers, $body) = @_;
    my %h = (%$headers);
    return Ragnx::Test::parse_response(
        "HTTP/1.1 $status X\r\n"
        . join('', map { "$_: $h{$_}\r\n" } sort keys %h)
        . "\r\n" . ($body // ''));
}

sub checks {
    my ($name, $method, $path, $res, $want) = @_;
    my @bad = $api->check($method, $path, $res);
    if ($want) {
        ok(scalar(grep { /$want/ } @bad), "refused: $name")
            or diag(@bad ? join("\n", @bad) : 'no problem found');
    } else {
        ok(!@bad, "accepted: $name") or diag(join "\n", @bad);
    }
}

my %jh = ('Content-Type' => 'application/json');
my $queued = $json->encode({ jobId => $uuid, status => 'queued',
                             chatId => $uuid2 });
my %qh = (%jh, Location => "/api/ask/$uuid", 'Retry-After' => 1);

checks('a 202 as documented', POST => '/api/ask',
       res(202, \%qh, $queued));
checks('a 202 without Location', POST => '/api/ask',
       res(202, { %jh, 'Retry-After' => 1 }, $queued),
       qr/location is missing/);
checks('a Retry-After that is no number of seconds', POST => '/api/ask',
       res(202, { %qh, 'Retry-After' => 'soon' }, $queued),
       qr/retry-after/);
checks('a 202 with a field more', POST => '/api/ask',
       res(202, \%qh, $json->encode({ jobId => $uuid, status => 'queued',
                                      chatId => $uuid2, extra => 1 })),
       qr{/extra});
checks('a job id that is no UUID', POST => '/api/ask',
       res(202, \%qh, $json->encode({ jobId => 'job-1', status => 'queued',
                                      chatId => $uuid2 })),
       qr{/jobId: not a valid uuid});
checks('a status no operation lists', POST => '/api/ask',
       res(418, \%jh, '{"error":"x"}'), qr/status 418 is not/);
checks('HTML where JSON is documented', POST => '/api/ask',
       res(202, { %qh, 'Content-Type' => 'text/html' }, '<p>queued</p>'),
       qr{Content-Type text/html});
checks('a 401 without WWW-Authenticate', GET => "/api/ask/$uuid",
       res(401, \%jh, '{"error":"missing token"}'),
       qr/www-authenticate is missing/);
checks('a 401 as documented', GET => "/api/ask/$uuid",
       res(401, { %jh, 'WWW-Authenticate' => 'Bearer' },
           '{"error":"missing token"}'));
checks('an error without "error"', GET => "/api/ask/$uuid",
       res(404, \%jh, '{"message":"Job not found"}'), qr/error is missing/);
checks('a Location where none is documented', GET => "/api/ask/$uuid",
       res(404, { %jh, Location => '/x' }, '{"error":"Job not found"}'),
       qr/location is sent but not documented/);
checks('a completed job without its answer', GET => "/api/ask/$uuid",
       res(200, \%jh, $json->encode({ status => 'completed',
                                      chatId => $uuid2, sources => [] })),
       qr/matches 0 of oneOf/);
checks('a completed job', GET => "/api/ask/$uuid?wait=5",
       res(200, \%jh, $json->encode({ status => 'completed',
           chatId => $uuid2, answer => 'a', sources => ['README.md'] })));
checks('a status of no kind', GET => "/api/ask/$uuid",
       res(200, \%jh, $json->encode({ status => 'lost', chatId => $uuid2 })),
       qr/matches 0 of oneOf/);
checks('validation details as documented', POST => '/api/auth/register',
       res(400, \%jh, $json->encode({ error => 'Validation failed',
           details => { password => ['must be at least 8 characters'] } })));
checks('validation details that are no lists', POST => '/api/auth/register',
       res(400, \%jh, $json->encode({ error => 'Validation failed',
           details => { password => 'too short' } })),
       qr/matches 0 of anyOf/);
checks('a user whose createdAt is no timestamp', GET => '/api/users/me',
       res(200, \%jh, $json->encode({ id => $uuid, email => 'a@example.com',
           name => undef, createdAt => 'yesterday' })),
       qr{/createdAt: not a valid date-time});
checks('405 with the path\'s methods', DELETE => '/api/ask',
       res(405, { %jh, Allow => 'POST' }, '{"error":"Method not allowed"}'));
checks('405 with other methods in Allow', DELETE => '/api/chats',
       res(405, { %jh, Allow => 'POST' }, '{"error":"Method not allowed"}'),
       qr/Allow is "POST", not "GET, HEAD"/);
checks('an undocumented method answered 200', DELETE => '/api/chats',
       res(200, \%jh, '{}'), qr/not an operation/);
checks('a body on HEAD is not looked at', HEAD => '/api/chats',
       res(200, \%jh, ''));
checks('metrics as text', GET => '/metrics',
       res(200, { 'Content-Type'
                      => 'text/plain; version=0.0.4; charset=utf-8' },
           "ragnx_up 1\n"));

checks('a preflight as documented', OPTIONS => '/api/ask',
       res(204, { 'Access-Control-Allow-Origin' => 'https://app.example.com',
                  'Access-Control-Allow-Methods' => 'GET, HEAD, POST' }, ''));
checks('a preflight without Allow-Origin', OPTIONS => '/api/ask',
       res(204, { 'Access-Control-Allow-Methods' => 'GET, HEAD, POST' }, ''),
       qr/access-control-allow-origin is missing/);

my %sh = ('Content-Type' => 'text/event-stream', 'Cache-Control' => 'no-cache',
          'X-Accel-Buffering' => 'no');
my $stream = "event: job\ndata: {\"jobId\":\"$uuid\",\"chatId\":\"$uuid2\"}"
             . "\n\n: ping\n\nid: 1700000000000-0\nevent: delta\n"
             . "data: {\"text\":\"Hel\"}\n\nid: 1700000000000-1\n"
             . "event: done\ndata: {\"answer\":\"Hel\",\"sources\":[]}\n\n"
             . "event: delta\ndata: {\"te";    # cut mid-event: left alone
checks('a stream as documented', POST => '/api/ask', res(200, \%sh, $stream));
checks('an event type not documented', GET => "/api/ask/$uuid/events",
       res(200, \%sh, "id: 1-0\nevent: progress\ndata: {}\n\n"),
       qr/event type "progress"/);
checks('a done event without sources', GET => "/api/ask/$uuid/events",
       res(200, \%sh, "id: 1-0\nevent: done\ndata: {\"answer\":\"a\"}\n\n"),
       qr/event done: the body: sources is missing/);
checks('a restart whose attempt is text', GET => "/api/ask/$uuid/events",
       res(200, \%sh, "id: 1-0\nevent: restart\ndata: {\"attempt\":\"2\"}\n\n"),
       qr/event restart: \/attempt: string/);
checks('X-Accel-Buffering: yes', GET => "/api/ask/$uuid/events",
       res(200, { %sh, 'X-Accel-Buffering' => 'yes' }, ''),
       qr/x-accel-buffering/);
checks('a stream without X-Accel-Buffering', GET => "/api/ask/$uuid/events",
       res(200, { 'Content-Type' => 'text/event-stream',
                  'Cache-Control' => 'no-cache' }, ''),
       qr/x-accel-buffering is missing/);
ok(!defined $api->match_path('/api/ask/a/b/c'), 'a path not documented');
ok(!eval { $api->validate({ minContains => 1 }, [], ''); 1 }
   && $@ =~ /unsupported JSON Schema keyword "minContains"/,
   'a keyword the checker does not know is an error, not a pass');

# the hook: a response that does not match fails the test file
{
    my $script = "$d/hooked.t";
    spew($script, <<'PL');
use strict;
use Test::More;
use Ragnx::Test;
use Ragnx::OpenAPI;
Ragnx::OpenAPI->hook;
Ragnx::Test::check_raw(POST => '/api/ask', "HTTP/1.1 202 Accepted\r\n"
    . "Content-Type: application/json\r\n\r\n{}");
Ragnx::Test::check_raw(GET => '/undocumented', "HTTP/1.1 418 X\r\n\r\n");
Ragnx::Test::responses_checked();
done_testing();
PL
    my $tap = `'$^X' -I'$root/t/lib' '$script' 2>&1`;
    isnt($?, 0, 'hooked: a response that does not match fails the file');
    like($tap, qr{^not ok 1 - POST /api/ask -> 202 matches docs/openapi\.json}m,
         '... with a failed test naming it');
    like($tap, qr/location is missing/, '... and what is wrong');
    like($tap, qr/^not ok 2 - 1 responses checked .* 1 not matching/m,
         '... counted; a path not documented is not checked');
}

$t->done;
