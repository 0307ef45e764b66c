#!/usr/bin/perl
# ragnx_validate_schema: request bodies checked against a JSON Schema in the
# precontent phase; every bad input gets its status and JSON error body, a
# good one reaches the content handler (proxy_pass to a second location).

use strict;
use warnings;
use lib 't/lib';
use Cwd qw(getcwd);
use IO::Socket::INET;
use Test::More;
use Ragnx::Test;

my $t = Ragnx::Test->new;
my $d = $t->dir;
my $port = Ragnx::Test::free_port();
my $schemas = getcwd() . '/schemas';

$t->file('test.json', <<'EOF');
{
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "$id": "urn:ragnx:test",
    "title": "every keyword",
    "description": "used by t/validate.t",
    "type": "object",
    "properties": {
        "query":   { "type": "string", "minLength": 1, "maxLength": 10,
                     "default": "x", "examples": ["hello"] },
        "long":    { "type": "string", "minLength": 3 },
        "short":   { "type": "string", "maxLength": 1 },
        "code":    { "type": "string", "pattern": "^[A-Z]{3}$" },
        "word":    { "type": "string", "pattern": "^.{2}$" },
        "color":   { "enum": ["red", "green", 3] },
        "kind":    { "const": "user" },
        "id":      { "type": "string", "format": "uuid" },
        "email":   { "type": "string", "format": "email" },
        "age":     { "type": "integer", "minimum": 0, "maximum": 150 },
        "ratio":   { "type": "number", "exclusiveMinimum": 0,
                     "exclusiveMaximum": 1 },
        "flag":    { "type": "boolean" },
        "nothing": { "type": "null" },
        "maybe":   { "type": ["string", "null"] },
        "list":    { "type": "array" },
        "obj":     { "type": "object" },
        "tags":    { "type": "array", "items": { "type": "string",
                                                 "maxLength": 5 },
                     "minItems": 1, "maxItems": 3 },
        "one":     { "type": "array", "minItems": 1, "maxItems": 1 },
        "user":    { "type": "object",
                     "properties": {
                         "email": { "type": "string", "format": "email" },
                         "name":  { "type": "string" }
                     },
                     "required": ["email"],
                     "additionalProperties": false },
        "items":   { "type": "array",
                     "items": { "type": "object",
                                "properties": {
                                    "name": { "type": "string",
                                              "minLength": 1 }
                                },
                                "required": ["name"] } },
        "meta":    { "type": "object",
                     "additionalProperties": { "type": "number" } },
        "forbidden": false,
        "anything": true
    },
    "required": ["query"],
    "additionalProperties": false
}
EOF

$t->file('any.json', "{}\n");
$t->file('root.json', '{ "type": "string", "minLength": 2 }');

my $any = "$d/any.json";

$t->start_nginx(port => $port, server => <<"EOF");
        client_body_buffer_size 1k;
        client_max_body_size 8k;

        error_page 413 \@ragnx_error;
        location \@ragnx_error { ragnx_json_error; }

        location = /ok { return 200 "ok"; }

        location /v {
            ragnx_validate_schema test.json;
            proxy_pass http://127.0.0.1:$port/ok;

            location /v/off {
                ragnx_validate_schema off;
                proxy_pass http://127.0.0.1:$port/ok;
            }
        }

        location = /fwd {
            ragnx_validate_schema test.json;
            proxy_pass http://127.0.0.1:$port/inner;
        }

        location = /inner {
            ragnx_validate_schema test.json;
            proxy_pass http://127.0.0.1:$port/ok;
        }

        location /any {
            ragnx_validate_schema $any;
            client_body_buffer_size 256k;
            client_max_body_size 256k;
            proxy_pass http://127.0.0.1:$port/ok;
        }

        location /shallow {
            ragnx_validate_schema $any;
            ragnx_validate_max_depth 4;
            proxy_pass http://127.0.0.1:$port/ok;
        }

        location /root {
            ragnx_validate_schema root.json;
            proxy_pass http://127.0.0.1:$port/ok;
        }

        location /api/ask {
            ragnx_validate_schema $schemas/ask.json;
            client_body_buffer_size 16k;
            proxy_pass http://127.0.0.1:$port/ok;
        }

        location /api/auth/register {
            ragnx_validate_schema $schemas/register.json;
            proxy_pass http://127.0.0.1:$port/ok;
        }

        location /api/auth/login {
            ragnx_validate_schema $schemas/login.json;
            proxy_pass http://127.0.0.1:$port/ok;
        }
EOF

sub post {
    my ($path, $body, %a) = @_;
    my @h = exists $a{type}
            ? (defined $a{type} ? ('Content-Type' => $a{type}) : ())
            : ('Content-Type' => 'application/json');
    return $t->request($a{method} || 'POST', $path,
                       headers => [@h, @{ $a{headers} || [] }],
                       body => $body);
}

sub json { Ragnx::Test::json_body($_[0]) }

# a body accepted: the request reaches the content handler
sub passes {
    my ($path, $body, $name, %a) = @_;
    my $r = post($path, $body, %a);
    is($r->{status}, 200, "$name: passes")
        or diag($r->{raw});
}

# a body refused with 400 "Validation failed" and these details
sub fails {
    my ($path, $body, $details, $name) = @_;
    my $r = post($path, $body);
    is($r->{status}, 400, "$name: 400");
    like($r->{headers}{'content-type'} || '', qr{^application/json},
         "$name: JSON");
    is_deeply(json($r), { error => 'Validation failed',
                          details => $details },
              "$name: details")
        or diag($r->{body});
}

sub error_is {
    my ($r, $status, $error, $name) = @_;
    is($r->{status}, $status, "$name: $status");
    my $j = json($r);
    is($j && $j->{error}, $error, "$name: error message")
        or diag($r->{body});
    return $j;
}

###############################################################################
# what gets through

passes('/v', '{"query":"hi"}', 'minimal body');
passes('/v', '{"query":"hi"}', 'charset parameter',
       type => 'application/json; charset=utf-8');
passes('/v', '{"query":"hi"}', 'media type in any case',
       type => 'Application/JSON');
passes('/v', '{"query":"hi"}', 'PUT is validated and passes',
       method => 'PUT');
passes('/v', " \r\n\t{\"query\" : \"hi\"}\n", 'whitespace around JSON');
passes('/v', '{"query":"0123456789"}', 'maxLength is inclusive');
passes('/v', "{\"query\":\"\xc3\xa9t\xc3\xa9 \xe2\x82\xac\xf0\x9f\x98\x80"
             . "\xe4\xb8\xad\xe6\x96\x87\xe5\xad\x97x\"}",
       'maxLength counts code points, not bytes');
passes('/v', '{"query":"\u00e9\u00e9\u00e9\u00e9\u00e9\u00e9\u00e9\u00e9'
             . '\u00e9\u00e9"}',
       'escaped characters count once');
passes('/v', '{"query":"q","word":"\u00e9\u00e8"}',
       'pattern matches code points');
passes('/v', <<'EOF', 'every keyword satisfied');
{"query":"q","long":"abc","short":"a","code":"ABC","word":"ab","color":3,
 "kind":"user","id":"123E4567-e89b-12d3-a456-426614174000",
 "email":"first.last+tag@mail.example.com","age":150,"ratio":0.5,
 "flag":false,"nothing":null,"maybe":null,"list":[],"obj":{},
 "tags":["a","bcdef"],"one":[{}],"user":{"email":"a@b.io","name":"n"},
 "items":[{"name":"x"},{"name":"y","extra":1}],"meta":{"a":1,"b":2.5},
 "anything":[1,{"x":null}]}
EOF
passes('/v', '{"query":"q","age":1.0,"color":3.0}',
       '1.0 is an integer, 3.0 equals 3');
passes('/v', '{"query":"q","maybe":"s"}', 'type list: second member');

my $r = $t->request(GET => '/v');
is($r->{status}, 200, 'GET is not validated');
$r = $t->request(DELETE => '/v');
is($r->{status}, 200, 'DELETE is not validated');
$r = post('/v', 'not json', type => 'text/plain', method => 'OPTIONS');
is($r->{status}, 200, 'OPTIONS is not validated');
passes('/v/off', 'not json', 'ragnx_validate_schema off in a nested location',
       type => 'text/plain');

###############################################################################
# each keyword's message

fails('/v', '{}', { query => ['is required'] }, 'required');
fails('/v', '{"query":""}', { query => ['must be at least 1 character'] },
      'minLength 1');
fails('/v', '{"query":"q","long":"ab"}',
      { long => ['must be at least 3 characters'] }, 'minLength 3');
fails('/v', '{"query":"01234567890"}',
      { query => ['must be at most 10 characters'] }, 'maxLength');
fails('/v', '{"query":"q","short":"\u00e9\u00e9"}',
      { short => ['must be at most 1 character'] }, 'maxLength 1');
fails('/v', '{"query":5}', { query => ['must be a string'] }, 'type string');
fails('/v', '{"query":"q","age":"5"}', { age => ['must be an integer'] },
      'type integer');
fails('/v', '{"query":"q","age":1.5}', { age => ['must be an integer'] },
      'a real is not an integer');
fails('/v', '{"query":"q","ratio":"0.5"}', { ratio => ['must be a number'] },
      'type number');
fails('/v', '{"query":"q","flag":0}', { flag => ['must be a boolean'] },
      'type boolean');
fails('/v', '{"query":"q","nothing":false}', { nothing => ['must be null'] },
      'type null');
fails('/v', '{"query":"q","list":{}}', { list => ['must be an array'] },
      'type array');
fails('/v', '{"query":"q","obj":[]}', { obj => ['must be an object'] },
      'type object');
fails('/v', '{"query":"q","maybe":1}',
      { maybe => ['must be a string or null'] }, 'type list');
fails('/v', '[]', { _root => ['must be an object'] }, 'root type');
fails('/v', '"query"', { _root => ['must be an object'] },
      'a scalar document');
fails('/v', '{"query":"q","code":"AB"}', { code => ['must match pattern'] },
      'pattern');
fails('/v', '{"query":"q","code":"xABC"}', { code => ['must match pattern'] },
      'pattern anchors');
fails('/v', '{"query":"q","color":"blue"}',
      { color => ['must be one of: red, green, 3'] }, 'enum');
fails('/v', '{"query":"q","color":"3"}',
      { color => ['must be one of: red, green, 3'] }, 'enum is typed');
fails('/v', '{"query":"q","kind":"admin"}',
      { kind => ['must be equal to user'] }, 'const');
fails('/v', '{"query":"q","id":"123e4567-e89b-12d3-a456-42661417400"}',
      { id => ['must be a valid uuid'] }, 'uuid too short');
fails('/v', '{"query":"q","id":"123e4567e89b-12d3-a456-4266141740000"}',
      { id => ['must be a valid uuid'] }, 'uuid misplaced hyphen');
fails('/v', '{"query":"q","id":"g23e4567-e89b-12d3-a456-426614174000"}',
      { id => ['must be a valid uuid'] }, 'uuid not hex');

for my $bad ('plain', '@example.com', 'a@', 'a@b', 'a@b.c', 'a@-b.com',
             'a@b-.com', 'a..b@c.com', '.a@c.com', 'a.@c.com', 'a b@c.com',
             'a@b@c.com', 'a@b..com', 'a@b.com.', 'a@b.c0m',
             "\xc3\xa9\@b.com", 'a' x 65 . '@b.com')
{
    fails('/v', qq({"query":"q","email":"$bad"}),
          { email => ['must be a valid email'] }, "email '$bad'");
}

passes('/v', qq({"query":"q","email":"o'brien_x-y\@sub-1.example.co"}),
       'email with specials and subdomains');

fails('/v', '{"query":"q","age":-1}', { age => ['must be >= 0'] }, 'minimum');
fails('/v', '{"query":"q","age":151}', { age => ['must be <= 150'] },
      'maximum');
fails('/v', '{"query":"q","ratio":0}', { ratio => ['must be > 0'] },
      'exclusiveMinimum');
fails('/v', '{"query":"q","ratio":1}', { ratio => ['must be < 1'] },
      'exclusiveMaximum');
fails('/v', '{"query":"q","tags":[]}',
      { tags => ['must have at least 1 item'] }, 'minItems');
fails('/v', '{"query":"q","tags":["a","b","c","d"]}',
      { tags => ['must have at most 3 items'] }, 'maxItems');
fails('/v', '{"query":"q","one":[1,2]}',
      { one => ['must have at most 1 item'] }, 'maxItems 1');
fails('/v', '{"query":"q","tags":["a",1,"toolong"]}',
      { 'tags.1' => ['must be a string'],
        'tags.2' => ['must be at most 5 characters'] }, 'items');
fails('/v', '{"query":"q","forbidden":1}', { forbidden => ['is not allowed'] },
      'false schema');
fails('/v', '{"query":"q","meta":{"a":1,"b":"x"}}',
      { 'meta.b' => ['must be a number'] }, 'additionalProperties schema');

###############################################################################
# nested objects, unknown fields, many errors at once

fails('/v', '{"query":"q","user":{}}', { 'user.email' => ['is required'] },
      'nested required');
fails('/v', '{"query":"q","user":{"email":"nope","admin":true}}',
      { 'user.email' => ['must be a valid email'],
        'user.admin' => ['unknown field'] }, 'nested errors');
fails('/v', '{"query":"q","items":[{"name":"a"},{},{"name":""}]}',
      { 'items.1.name' => ['is required'],
        'items.2.name' => ['must be at least 1 character'] },
      'paths through arrays');
fails('/v', '{"query":"q","role":"admin","isAdmin":true}',
      { role => ['unknown field'], isAdmin => ['unknown field'] },
      'unknown fields');
fails('/v', '{"query":"q","a.b":1}', { 'a.b' => ['unknown field'] },
      'a key with a dot');

fails('/v', <<'EOF',
{"query":"","code":"x","color":"blue","id":"x","email":"x","age":-5.5,
 "tags":[1],"user":{"email":1},"items":[{}],"extra":1}
EOF
      { query => ['must be at least 1 character'],
        code => ['must match pattern'],
        color => ['must be one of: red, green, 3'],
        id => ['must be a valid uuid'],
        email => ['must be a valid email'],
        age => ['must be an integer'],
        'tags.0' => ['must be a string'],
        'user.email' => ['must be a string'],
        'items.0.name' => ['is required'],
        extra => ['unknown field'] },
      'all failures at once');

fails('/root', '"a"', { _root => ['must be at least 2 characters'] },
      'a string document');

$r = post('/v', '{"query":"q",' . join(',', map { "\"k$_\":1" } 1 .. 110)
              . '}');
my $j = json($r);
is($r->{status}, 400, '110 unknown fields: 400');
is(scalar keys %{ $j->{details} || {} }, 100, 'at most 100 messages');

$r = post('/fwd', '{"query":"forwarded"}');
is($r->{status}, 200, 'the body goes upstream unchanged and validates again');
$r = post('/fwd', '{"query":"forwarded!!!"}');
is($r->{status}, 400, 'a bad body never goes upstream');

my $many = '{"query":"q",' . join(',', map { "\"k$_\":1" } 1 .. 150) . '}';
$r = post('/any', $many);
is($r->{status}, 200, 'an empty schema accepts any document');

###############################################################################
# the body itself: content type, size, encoding, syntax

$r = post('/v', '{"query":"hi"}', type => 'text/plain');
error_is($r, 415, 'Content-Type must be application/json', 'text/plain');
$r = post('/v', '{"query":"hi"}', type => undef);
error_is($r, 415, 'Content-Type must be application/json',
         'no Content-Type');
$r = post('/v', '{"query":"hi"}', type => 'application/jsonp');
error_is($r, 415, 'Content-Type must be application/json',
         'application/jsonp');
$r = post('/v', '{"query":"hi"}', type => 'application/x-www-form-urlencoded');
error_is($r, 415, 'Content-Type must be application/json', 'a form');
$r = post('/v', '{"query":"hi"}', method => 'PATCH', type => 'text/json');
error_is($r, 415, 'Content-Type must be application/json', 'PATCH checked');

$r = post('/v', '');
error_is($r, 400, 'Request body is empty', 'empty body');
$r = $t->request(POST => '/v',
                 headers => ['Content-Type' => 'application/json']);
error_is($r, 400, 'Request body is empty', 'no body at all');

for my $case (['overlong', "\xc0\xaf"],
              ['overlong 3-byte', "\xe0\x80\xaf"],
              ['lone continuation', "\x80"],
              ['surrogate', "\xed\xa0\x80"],
              ['truncated', "\xe2\x82"],
              ['above U+10FFFF', "\xf4\x90\x80\x80"],
              ['invalid byte', "\xff"])
{
    $r = post('/v', qq({"query":"a$case->[1]b"}));
    error_is($r, 400, 'Request body is not valid UTF-8', $case->[0]);
}

$r = post('/v', "{\"query\":\"a\"}\xff");
error_is($r, 400, 'Request body is not valid UTF-8',
         'invalid UTF-8 outside strings');

$r = post('/v', '{"query":"a","query":"b"}');
$j = error_is($r, 400, 'Duplicate key in JSON', 'duplicate key');
like($j && $j->{details}{message}, qr/duplicate/, 'duplicate key: details');
$r = post('/v', '{"query":"a","user":{"email":"a@b.io","email":"c@d.io"}}');
error_is($r, 400, 'Duplicate key in JSON', 'nested duplicate key');

$r = post('/v', '{"query": }');
$j = error_is($r, 400, 'Invalid JSON', 'syntax error');
is($j && $j->{details}{line}, 1, 'invalid JSON: line');
ok($j && $j->{details}{column} > 0, 'invalid JSON: column');
ok($j && length $j->{details}{message}, 'invalid JSON: message');
$r = post('/v', "{\n\"query\": \"a\",\n}");
$j = error_is($r, 400, 'Invalid JSON', 'trailing comma');
is($j && $j->{details}{line}, 3, 'invalid JSON: line of the error');
$r = post('/v', '{"query":"a"} x');
error_is($r, 400, 'Invalid JSON', 'trailing garbage');
$r = post('/v', '{"query":"a"');
error_is($r, 400, 'Invalid JSON', 'truncated document');
$r = post('/v', '{"query":"a\u0000b"}');
error_is($r, 400, 'Invalid JSON', 'NUL character');
$r = post('/v', '{"query":"\ud800"}');
error_is($r, 400, 'Invalid JSON', 'escaped lone surrogate');
$r = post('/v', "{\"query\":\"\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9"
                . "\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9");
$j = error_is($r, 400, 'Invalid JSON', 'error text near multibyte text');

# depth: counted outside strings, before jansson parses

$r = post('/any', '[' x 100000);
$j = error_is($r, 400, 'JSON is nested too deeply', 'depth bomb');
is($j && $j->{details}{maxDepth}, 32, 'depth bomb: the limit');
$r = post('/any', '{"a":' x 40 . '1' . '}' x 40);
error_is($r, 400, 'JSON is nested too deeply', 'deep objects');
passes('/any', '[' x 32 . ']' x 32, 'default depth 32 is allowed');
$r = post('/any', '[' x 33 . ']' x 33);
error_is($r, 400, 'JSON is nested too deeply', 'depth 33');
passes('/shallow', '[[[{"a":"[[[[[[[[\"{{{{"}]]]', 'brackets in strings');
$r = post('/shallow', '[[[[[1]]]]]');
$j = error_is($r, 400, 'JSON is nested too deeply',
              'ragnx_validate_max_depth');
is($j && $j->{details}{maxDepth}, 4, 'ragnx_validate_max_depth: the limit');
passes('/shallow', '[[[[1]]]]', 'ragnx_validate_max_depth is inclusive');

# size: client_body_buffer_size 1k here, client_max_body_size 8k

passes('/v', '{"query":"q","anything":"' . ('x' x 900) . '"}',
       'a body within client_body_buffer_size');
$r = post('/v', '{"query":"q","anything":"' . ('x' x 2000) . '"}');
error_is($r, 413, 'Request body too large',
         'over client_body_buffer_size');
$r = post('/v', '{"query":"q","anything":"' . ('x' x 9000) . '"}');
error_is($r, 413, 'Request body too large', 'over client_max_body_size');

sub chunked {
    my ($path, $body, $chunk) = @_;
    my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $port,
                                  Proto => 'tcp', Timeout => 10)
        or die "connect: $!";
    my $req = "POST $path HTTP/1.1\r\nHost: localhost\r\nConnection: close"
              . "\r\nContent-Type: application/json\r\n"
              . "Transfer-Encoding: chunked\r\n\r\n";
    while (length $body) {
        my $c = substr($body, 0, $chunk, '');
        $req .= sprintf("%x\r\n%s\r\n", length $c, $c);
    }
    $s->print($req . "0\r\n\r\n");
    local $/;
    my $raw = <$s>;
    return Ragnx::Test::parse_response($raw // '');
}

$r = chunked('/v', '{"query":"q","anything":"' . ('x' x 3000) . '"}', 500);
error_is($r, 413, 'Request body too large',
         'chunked body spilled to a temporary file');
$r = chunked('/v', '{"query":"chunked"}', 5);
is($r->{status}, 200, 'a small chunked body in several buffers passes');
$r = chunked('/v', '{"query":"chunked!!!!!"}', 5);
is_deeply(json($r), { error => 'Validation failed',
                      details => { query => ['must be at most 10 characters'] }
                    }, 'a chunked body is validated');

###############################################################################
# the schemas shipped for the API

passes('/api/ask', '{"query":"What is ragnx?"}', 'ask');
passes('/api/ask',
       '{"query":"q","chatId":"9f1c2d3e-4b5a-4c6d-8e7f-0a1b2c3d4e5f"}',
       'ask with a chat');
fails('/api/ask', '{"query":"","chatId":"nope","model":"x"}',
      { query => ['must be at least 1 character'],
        chatId => ['must be a valid uuid'],
        model => ['unknown field'] }, 'ask: bad fields');
fails('/api/ask', '{"query":"' . ('\u00e9' x 1001) . '"}',
      { query => ['must be at most 1000 characters'] }, 'ask: long query');
passes('/api/auth/register',
       '{"email":"ann@example.com","password":"correct horse","name":"Ann"}',
       'register');
fails('/api/auth/register', '{"email":"ann","password":"short","name":1}',
      { email => ['must be a valid email'],
        password => ['must be at least 8 characters'],
        name => ['must be a string'] }, 'register: bad fields');
fails('/api/auth/register', '{}',
      { email => ['is required'], password => ['is required'] },
      'register: required');
fails('/api/auth/register',
      '{"email":"a@b.co","password":"' . ('p' x 129) . '"}',
      { password => ['must be at most 128 characters'] },
      'register: long password');
passes('/api/auth/login', '{"email":"ann@example.com","password":"x"}',
       'login');
fails('/api/auth/login', '{"email":"ann@example.com"}',
      { password => ['is required'] }, 'login: required');

###############################################################################
# configuration errors fail nginx -t, naming the reason and the file

sub conf_fails {
    my ($schema, $re, $name) = @_;
    my $file = $t->file('bad.json', $schema);
    my ($ok, $out) = $t->nginx_t(server => <<"EOF");
        location /x { ragnx_validate_schema $file; proxy_pass http://u; }
EOF
    ok(!$ok, "nginx -t fails: $name");
    like($out, qr/\[emerg\].*$re/, "nginx -t names it: $name")
        or diag($out);
}

conf_fails('{"type": "object",', qr/invalid JSON in schema "\Q$d\E\/bad\.json"/,
           'malformed JSON');
conf_fails('{"type":"object","type":"string"}', qr/invalid JSON.*duplicate/,
           'duplicate key in a schema');
conf_fails('{"properties":{"a":{"type":"string","minProperties":1}}}',
           qr/unsupported keyword "minProperties" at "#\/properties\/a" in schema "\Q$d\E\/bad\.json"/,
           'unsupported keyword');
conf_fails('{"$ref":"#/defs/a"}', qr/unsupported keyword "\$ref"/, '$ref');
conf_fails('{"properties":{"a":{"pattern":"(abc"}}}',
           qr/invalid "pattern" at "#\/properties\/a" in schema ".*bad\.json": pcre2?_compile\(\) failed/,
           'bad pattern');
conf_fails('{"format":"date-time"}', qr/unsupported format "date-time"/,
           'unsupported format');
conf_fails('{"type":"float"}', qr/unknown type "float"/, 'unknown type');
conf_fails('{"minLength":-1}', qr/"minLength" must be a non-negative integer/,
           'negative minLength');
conf_fails('{"minLength":3,"maxLength":2}', qr/"maxLength" is less than/,
           'maxLength below minLength');
conf_fails('{"exclusiveMinimum":true}', qr/"exclusiveMinimum" must be a number/,
           'draft 4 exclusiveMinimum');
conf_fails('{"items":[{"type":"string"}]}', qr/"items" must be a schema/,
           'tuple items');
conf_fails('{"required":"a"}', qr/"required" must be an array/,
           'required not an array');
conf_fails('{"enum":[]}', qr/"enum" must be a non-empty array/, 'empty enum');
conf_fails('{"properties":{"a":"string"}}',
           qr/schema at "#\/properties\/a" in ".*bad\.json" is not an object/,
           'a schema that is a string');
conf_fails('{"items":{"additionalProperties":{"nope":1}}}',
           qr/unsupported keyword "nope" at "#\/items\/additionalProperties"/,
           'pointer through items and additionalProperties');

my ($ok, $out) = $t->nginx_t(server => <<"EOF");
        location /x { ragnx_validate_schema $d/missing.json; }
EOF
ok(!$ok, 'nginx -t fails: missing schema file');
like($out, qr/\[emerg\].*open\(\) schema "\Q$d\E\/missing\.json" failed .*No such file/,
     'nginx -t names the missing file');

($ok, $out) = $t->nginx_t(server => <<"EOF");
        location /x { ragnx_validate_schema $any; ragnx_validate_max_depth 0; }
EOF
ok(!$ok, 'nginx -t fails: ragnx_validate_max_depth 0');
like($out, qr/"ragnx_validate_max_depth" directive must be between 1 and 1024/,
     'nginx -t names the directive');

($ok, $out) = $t->nginx_t(server => <<"EOF");
        location /x { ragnx_validate_schema $any; ragnx_validate_schema $any; }
EOF
ok(!$ok, 'nginx -t fails: duplicate ragnx_validate_schema');
like($out, qr/"ragnx_validate_schema" directive is duplicate/,
     'nginx -t names the duplicate');

($ok, $out) = $t->nginx_t(server => <<"EOF");
        location /x { ragnx_validate_schema $schemas/ask.json; }
EOF
ok($ok, 'the shipped schemas compile') or diag($out);

$t->done;
