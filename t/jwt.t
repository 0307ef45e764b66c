#!/usr/bin/perl
# JWT authentication in the access phase: valid HS/RS/ES tokens pass and
# their claims reach nginx variables; every malformed, forged, expired or
# misdirected token is refused with 401, a JSON body and an RFC 6750
# challenge; bad key configuration fails nginx -t.

use strict;
use warnings;
use lib 't/lib';
use Test::More;
use Ragnx::Test qw(free_port slurp);
use Digest::SHA qw(hmac_sha256 hmac_sha384 hmac_sha512);
use IO::Socket::INET;
use JSON::PP;
use MIME::Base64 qw(encode_base64url);
use POSIX ();

my $t = Ragnx::Test->new;
my $d = $t->dir;

my $JSON = JSON::PP->new->utf8->canonical;

# keys ----------------------------------------------------------------------

sub run {
    my $out = `@_ 2>&1`;
    $? == 0 or die "@_: $out";
    return $out;
}

sub genkey {
    my ($name, @opt) = @_;
    run("openssl genpkey @opt -out $d/$name.key");
    run("openssl pkey -in $d/$name.key -pubout -out $d/$name.pub");
}

genkey('rsa', '-algorithm RSA -pkeyopt rsa_keygen_bits:2048');
genkey('rsa2', '-algorithm RSA -pkeyopt rsa_keygen_bits:2048');
genkey('rsa1024', '-algorithm RSA -pkeyopt rsa_keygen_bits:1024');
genkey('ec', '-algorithm EC -pkeyopt ec_paramgen_curve:P-256');
genkey('ec2', '-algorithm EC -pkeyopt ec_paramgen_curve:P-256');
genkey('ec384', '-algorithm EC -pkeyopt ec_paramgen_curve:P-384');

# the whole file is the secret, byte for byte
my $HS = "ragnx-test-secret-0123456789-abcdef-XYZ\n";
my $HS512 = 'S' x 64;
$t->file('hs.key', $HS);
$t->file('hs512.key', $HS512);
$t->file('short.key', 'x' x 31);
$t->file('empty.key', '');
mkdir "$d/keydir";

my $RSA_PUB = slurp("$d/rsa.pub");

# tokens --------------------------------------------------------------------

sub b64u { encode_base64url($_[0]) }

sub enc { ref $_[0] ? $JSON->encode($_[0]) : $_[0] }

sub der2raw {
    my ($der, $n) = @_;
    my $i = 0;
    my $byte = sub { ord substr($der, $i++, 1) };
    $byte->() == 0x30 or die 'not a DER sequence';
    my $len = $byte->();
    $byte->() if $len == 0x81;
    my $raw = '';
    for (1 .. 2) {
        $byte->() == 0x02 or die 'not a DER integer';
        my $l = $byte->();
        my $int = substr($der, $i, $l);
        $i += $l;
        $int =~ s/^\x00+//;
        $raw .= ("\x00" x ($n - length $int)) . $int;
    }
    return $raw;
}

my %HMAC = (HS256 => \&hmac_sha256, HS384 => \&hmac_sha384,
            HS512 => \&hmac_sha512);
my %EC_SIZE = (ES256 => 32, ES384 => 48, ES512 => 66);

my $seq = 0;

# sign($alg, $key, $input): $key is the secret for HS*, a private key
# file for RS*/ES*; ES signatures are raw r||s unless $der is set
sub sign {
    my ($alg, $key, $input, $der) = @_;
    return $HMAC{$alg}->($input, $key) if $alg =~ /^HS/;
    my ($bits) = $alg =~ /(\d+)$/;
    my $in = "$d/sign-" . $seq++;
    Ragnx::Test::spew($in, $input);
    run("openssl dgst -sha$bits -sign $key -out $in.sig $in");
    my $sig = slurp("$in.sig");
    return $sig if $alg =~ /^RS/ || $der;
    return der2raw($sig, $EC_SIZE{$alg});
}

sub claims {
    return { sub => 'user-1', role => 'admin', exp => time + 3600, @_ };
}

# jwt(claims => {...} or raw JSON, header => {...} or raw JSON,
#     sign => [alg, key])
sub jwt {
    my (%a) = @_;
    my $alg = $a{sign} ? $a{sign}[0] : 'HS256';
    my $key = $a{sign} ? $a{sign}[1] : $HS;
    my $h = $a{h64} // b64u(enc($a{header} // { alg => $alg, typ => 'JWT' }));
    my $p = $a{p64} // b64u(enc($a{claims} // claims()));
    my $in = "$h.$p";
    return "$in." . b64u(sign($alg, $key, $in, $a{der}));
}

sub hs { jwt(claims => claims(@_)) }

# set the lowest unused bit of a base64url part whose length is not a
# multiple of 4: a lenient decoder reads the same bytes
sub dirty_bits {
    my ($s) = @_;
    my $abc = join '', 'A' .. 'Z', 'a' .. 'z', '0' .. '9', '-', '_';
    length($s) % 4 or die 'no unused bits';
    my $v = index $abc, substr($s, -1);
    substr($s, -1) = substr($abc, $v | 1, 1);
    return $s;
}

# nginx ---------------------------------------------------------------------

my $port = free_port();

# "return" runs in the rewrite phase, before the access phase, so the
# protected locations hand over to named locations with try_files (in the
# precontent phase); the claims survive that internal redirect.
$t->start_nginx(port => $port, http => <<"EOF", server => <<"EOF2");
    log_format jwt '\$uri sub=\$ragnx_jwt_sub role=\$ragnx_jwt_claim_role';
EOF
        large_client_header_buffers 4 128k;
        access_log $d/jwt.log jwt;

        ragnx_jwt_key_file hs.key;

        location \@role {
            add_header X-Sub \$ragnx_jwt_sub always;
            return 200 "\$ragnx_jwt_claim_role";
        }

        location \@sub { return 200 "sub=[\$ragnx_jwt_sub]"; }

        location \@ok { return 200 "ok"; }

        location \@aud { return 200 "\$ragnx_jwt_claim_aud"; }

        location \@claims {
            return 200 "n=\$ragnx_jwt_claim_n f=\$ragnx_jwt_claim_f t=\$ragnx_jwt_claim_t b=\$ragnx_jwt_claim_b o=\$ragnx_jwt_claim_o a=\$ragnx_jwt_claim_a u=\$ragnx_jwt_claim_u x=[\$ragnx_jwt_claim_missing] z=[\$ragnx_jwt_claim_z] c=[\$ragnx_jwt_claim_c]";
        }

        location = /public { return 200 "public"; }

        location = /hs {
            ragnx_jwt on;
            try_files /nonexistent \@role;
        }

        location = /claims {
            ragnx_jwt on;
            try_files /nonexistent \@claims;
        }

        location = /hs512 {
            ragnx_jwt on;
            ragnx_jwt_alg HS512;
            ragnx_jwt_key_file $d/hs512.key;
            try_files /nonexistent \@role;
        }

        location = /rs {
            ragnx_jwt on;
            ragnx_jwt_alg RS256;
            ragnx_jwt_key_file rsa.pub;
            try_files /nonexistent \@role;
        }

        location = /es {
            ragnx_jwt on;
            ragnx_jwt_alg ES256;
            ragnx_jwt_key_file ec.pub;
            try_files /nonexistent \@role;
        }

        location = /es384 {
            ragnx_jwt on;
            ragnx_jwt_alg ES384;
            ragnx_jwt_key_file ec384.pub;
            try_files /nonexistent \@role;
        }

        location = /iss {
            ragnx_jwt on;
            ragnx_jwt_issuer https://issuer.example;
            ragnx_jwt_audience ragnx-api;
            try_files /nonexistent \@aud;
        }

        location = /leeway {
            ragnx_jwt on;
            ragnx_jwt_leeway 10s;
            try_files /nonexistent \@ok;
        }

        location = /leeway0 {
            ragnx_jwt on;
            ragnx_jwt_leeway 0;
            try_files /nonexistent \@ok;
        }

        location = /cookie {
            ragnx_jwt on;
            ragnx_jwt_cookie at;
            try_files /nonexistent \@sub;
        }

        location = /any {
            satisfy any;
            allow 127.0.0.1;
            deny all;
            ragnx_jwt on;
            try_files /nonexistent \@any;
        }

        location \@any {
            return 200 "sub=[\$ragnx_jwt_sub] role=[\$ragnx_jwt_claim_role]";
        }

        location = /any-deny {
            satisfy any;
            deny all;
            ragnx_jwt on;
            try_files /nonexistent \@sub;
        }

        location /nested/ {
            ragnx_jwt on;
            location /nested/open { ragnx_jwt off; return 200 "open"; }
            try_files /nonexistent \@ok;
        }

        location = /redirect {
            ragnx_jwt on;
            try_files /nonexistent /strict;
        }

        location = /strict {
            ragnx_jwt on;
            ragnx_jwt_audience strict-api;
            try_files /nonexistent \@sub;
        }

        location = /proxy {
            ragnx_jwt on;
            proxy_set_header X-Sub \$ragnx_jwt_sub;
            proxy_set_header X-Role \$ragnx_jwt_claim_role;
            proxy_pass http://127.0.0.1:$port/echo;
        }

        location = /echo { return 200 "sub=\$http_x_sub role=\$http_x_role"; }
EOF2

# error.log lines written since the last call
my $log_seen = 0;

sub new_log {
    my $log = $t->error_log;
    my $new = substr($log, $log_seen);
    $log_seen = length $log;
    return $new;
}

sub req {
    new_log();
    return $t->request(@_);
}

sub get {
    my ($path, $token, @h) = @_;
    push @h, Authorization => "Bearer $token" if defined $token;
    return req(GET => $path, headers => \@h);
}

sub passes {
    my ($r, $body, $name) = @_;
    is($r->{status}, 200, "$name: 200");
    is($r->{body}, $body, "$name: body") if defined $body;
}

# refused($response, $error, $name, $why): $why is the reason logged
sub refused {
    my ($r, $error, $name, $why) = @_;
    my $challenge = $error eq 'missing token'
                    ? 'Bearer' : 'Bearer error="invalid_token"';
    is($r->{status}, 401, "$name: 401");
    like($r->{headers}{'content-type'} // '', qr{^application/json},
         "$name: JSON");
    is_deeply(Ragnx::Test::json_body($r), { error => $error },
              "$name: error body");
    is($r->{headers}{'www-authenticate'}, $challenge, "$name: challenge");
    my $log = new_log();
    like($log, qr/\[info\] .*ragnx jwt: token rejected: \Q$why\E/,
         "$name: logged as \"$why\"") if defined $why;
}

sub invalid { refused($_[0], 'invalid token', $_[1], $_[2]) }

my $r;

# valid tokens ---------------------------------------------------------------

$r = get('/hs', hs());
passes($r, 'admin', 'HS256');
is($r->{headers}{'x-sub'}, 'user-1', 'HS256: $ragnx_jwt_sub in add_header');
ok(!exists $r->{headers}{'www-authenticate'}, 'HS256: no challenge');

$r = get('/hs', hs(), Authorization => 'x');
is($r->{status}, 400, 'two Authorization headers: nginx says 400');

$r = req(GET => '/hs', headers => [Authorization => 'bearer ' . hs()]);
passes($r, 'admin', 'scheme is case-insensitive');

$r = req(GET => '/hs',
                 headers => [Authorization => 'Bearer    ' . hs()]);
passes($r, 'admin', 'several spaces after the scheme');

$r = get('/hs', jwt(claims => claims(role => 'x'),
                    header => { alg => 'HS256' }));
passes($r, 'x', 'typ is optional');

$r = get('/hs', jwt(header => { alg => 'HS256', typ => 'jwt' }));
passes($r, 'admin', 'typ is case-insensitive');

$r = get('/hs', jwt(header => { alg => 'HS256', typ => 'JWT', kid => 'k1',
                                jku => 'http://127.0.0.1:1/keys' }));
passes($r, 'admin', 'kid and jku are ignored, never fetched');

$r = get('/hs', hs(exp => time + 100.5));
passes($r, 'admin', 'fractional exp');

$r = get('/hs', hs(role => "caf\x{e9} \x{2603}"));
is($r->{status}, 200, 'UTF-8 claim: 200');
is($r->{body}, "caf\xc3\xa9 \xe2\x98\x83", 'UTF-8 claim: bytes as sent');

{
    my %c = %{ claims() };
    delete $c{sub};
    $r = get('/hs', jwt(claims => \%c));
    passes($r, 'admin', 'token without sub');
    ok(!exists $r->{headers}{'x-sub'}, 'no sub: empty $ragnx_jwt_sub');
}

$r = get('/hs512', jwt(sign => ['HS512', $HS512]));
passes($r, 'admin', 'HS512');

$r = get('/rs', jwt(sign => ['RS256', "$d/rsa.key"],
                    claims => claims(sub => 'rs-user', role => 'rs')));
passes($r, 'rs', 'RS256');
is($r->{headers}{'x-sub'}, 'rs-user', 'RS256: sub');

$r = get('/es', jwt(sign => ['ES256', "$d/ec.key"],
                    claims => claims(sub => 'es-user', role => 'es')));
passes($r, 'es', 'ES256');
is($r->{headers}{'x-sub'}, 'es-user', 'ES256: sub');

$r = get('/es384', jwt(sign => ['ES384', "$d/ec384.key"]));
passes($r, 'admin', 'ES384');

$r = get('/claims', jwt(claims => claims(
    n => 42, f => -1.5, t => JSON::PP::true, b => JSON::PP::false,
    o => { k => 'v', l => [1, 2] }, a => ['x', 1, undef], u => undef,
    z => "a\nb", c => "a\x01b")));
passes($r, 'n=42 f=-1.5 t=true b=false o={"k":"v","l":[1,2]} '
           . 'a=["x",1,null] u= x=[] z=[] c=[]', 'claim variables');

$r = get('/hs', jwt(claims => '{"exp":' . (time + 60)
                              . ',"role":"a\"b","sub":"s"}'));
passes($r, 'a"b', 'escaped string claim is unescaped');

$r = get('/public');
passes($r, 'public', 'ragnx_jwt off by default');

$r = get('/nested/open');
passes($r, 'open', 'ragnx_jwt off in a nested location');

$r = get('/nested/x');
is($r->{status}, 401, 'ragnx_jwt on in the outer location');

$r = get('/nested/x', hs());
passes($r, 'ok', 'outer location with a token');

$r = get('/redirect', hs());
refused($r, 'invalid audience',
        'internal redirect: token checked again for the new location');

$r = get('/redirect', hs(aud => 'strict-api'));
passes($r, 'sub=[user-1]', 'internal redirect: token good for both');

$r = get('/proxy', hs());
passes($r, 'sub=user-1 role=admin', 'claims in proxy_set_header');

$r = get('/proxy');
is($r->{status}, 401, 'proxy location without a token');

# the cookie source

$r = get('/cookie', undef, Cookie => 'a=b; at=' . hs(sub => 'cookie-user'));
passes($r, 'sub=[cookie-user]', 'token from the cookie');

$r = get('/cookie', hs(sub => 'header-user'),
         Cookie => 'at=' . hs(sub => 'cookie-user'));
passes($r, 'sub=[header-user]', 'Authorization header wins over the cookie');

$r = get('/cookie', undef, Authorization => 'Basic dTpw',
         Cookie => 'at=' . hs(sub => 'cookie-user'));
passes($r, 'sub=[cookie-user]', 'another scheme falls back to the cookie');

$r = get('/cookie', undef, Cookie => 'at=junk');
invalid($r, 'bad cookie token',
        "token does not have three parts");

$r = get('/cookie', undef, Cookie => 'other=' . hs());
refused($r, 'missing token', 'cookie of another name');

$r = get('/hs', undef, Cookie => 'at=' . hs());
refused($r, 'missing token', 'cookie ignored where not configured');

# missing tokens

$r = get('/hs');
is($r->{status}, 401, 'no token: 401');
is_deeply(Ragnx::Test::json_body($r), { error => 'missing token' },
          'no token: error body');
is($r->{headers}{'www-authenticate'}, 'Bearer', 'no token: bare challenge');
like($r->{headers}{'content-type'}, qr{^application/json},
     'no token: JSON');

$r = get('/hs', undef, Authorization => 'Basic dTpw');
refused($r, 'missing token', 'Basic credentials only');
is($r->{headers}{'www-authenticate'}, 'Bearer',
   'Basic credentials only: bare challenge');

$r = get('/hs', undef, Authorization => 'Bearerx ' . hs());
is($r->{headers}{'www-authenticate'}, 'Bearer',
   'scheme must be followed by a space');

$r = req(HEAD => '/hs');
is($r->{status}, 401, 'HEAD without a token: 401');
is($r->{body}, '', 'HEAD without a token: no body');

# satisfy any

$r = get('/any');
passes($r, 'sub=[] role=[]', 'satisfy any: allowed address needs no token');

$r = get('/any', 'junk');
passes($r, 'sub=[] role=[]', 'satisfy any: a bad token does not authenticate');

$r = get('/any', jwt(sign => ['HS256', 'wrong']));
passes($r, 'sub=[] role=[]', 'satisfy any: a forged token leaves no claims');

$r = get('/any', hs(exp => time - 3600));
passes($r, 'sub=[] role=[]', 'satisfy any: an expired token leaves no claims');

$r = get('/any', hs());
passes($r, 'sub=[user-1] role=[admin]', 'satisfy any: token still read');

$r = get('/any-deny', hs());
passes($r, 'sub=[user-1]', 'satisfy any: token lets in past deny');

$r = get('/any-deny');
is($r->{status}, 401, 'satisfy any, all fail: 401');
is($r->{headers}{'www-authenticate'}, 'Bearer',
   'satisfy any, all fail: challenge');

$r = get('/any-deny', hs(exp => time - 3600));
is($r->{status}, 401, 'satisfy any, expired: 401');
is($r->{headers}{'www-authenticate'}, 'Bearer error="invalid_token"',
   'satisfy any, expired: challenge');

# algorithm attacks ----------------------------------------------------------

{
    my $h = b64u('{"alg":"none","typ":"JWT"}');
    my $p = b64u(enc(claims()));
    invalid(get('/hs', "$h.$p."), 'alg none, empty signature',
        "signature is not canonical base64url");
    invalid(get('/hs', "$h.$p"), 'alg none, two parts',
        "token does not have three parts");
    invalid(get('/hs', "$h.$p." . b64u(hmac_sha256("$h.$p", $HS))),
            'alg none with an HMAC signature',
        "header \"alg\" is not the configured");
    $h = b64u('{"alg":"None","typ":"JWT"}');
    invalid(get('/hs', "$h.$p." . b64u(hmac_sha256("$h.$p", $HS))), 'alg None',
        "header \"alg\" is not the configured");
}

invalid(get('/hs', jwt(header => { alg => 'HS384', typ => 'JWT' },
                       sign => ['HS384', $HS])),
        'alg mismatch HS384 on HS256',
        "header \"alg\" is not the configured");

invalid(get('/hs', jwt(header => { alg => 'hs256', typ => 'JWT' })),
        'alg in lower case', "header \"alg\" is not the configured");

# a configured name that is a prefix of the header's: the whole name must
# match, not its first bytes (libjwt would refuse it too, for another reason)
invalid(get('/hs', jwt(header => { alg => 'HS256x', typ => 'JWT' })),
        'alg with a suffix', "header \"alg\" is not the configured");
invalid(get('/hs', jwt(header => { alg => 'HS25', typ => 'JWT' })),
        'alg cut short', "header \"alg\" is not the configured");

invalid(get('/hs', jwt(header => { typ => 'JWT' })), 'header alg missing',
        "header \"alg\" is missing");

invalid(get('/hs', jwt(header => '{"alg":256,"typ":"JWT"}')),
        'header alg not a string',
        "header \"alg\" is missing or not a string");

invalid(get('/hs', jwt(sign => ['RS256', "$d/rsa.key"])),
        'RS256 token on an HS256 location',
        "header \"alg\" is not the configured");

invalid(get('/rs', jwt(sign => ['HS256', $RSA_PUB])),
        'HS256 token signed with the RSA public key PEM',
        "header \"alg\" is not the configured");

invalid(get('/rs', jwt(header => { alg => 'RS256', typ => 'JWT' },
                       sign => ['HS256', $RSA_PUB])),
        'RS256 header, HMAC signature keyed with the public key',
        "signature verification failed");

invalid(get('/es', jwt(sign => ['HS256', slurp("$d/ec.pub")])),
        'HS256 token signed with the EC public key PEM',
        "header \"alg\" is not the configured");

invalid(get('/es', jwt(sign => ['RS256', "$d/rsa.key"])),
        'RS256 token on an ES256 location',
        "header \"alg\" is not the configured");

invalid(get('/rs', jwt(sign => ['RS256', "$d/rsa2.key"])),
        'RS256 signed by another key',
        "signature verification failed");

invalid(get('/es', jwt(sign => ['ES256', "$d/ec2.key"])),
        'ES256 signed by another key',
        "signature verification failed");

invalid(get('/es', jwt(sign => ['ES256', "$d/ec.key"], der => 1)),
        'ES256 with a DER signature',
        "signature verification failed");

invalid(get('/es384', jwt(sign => ['ES256', "$d/ec.key"])),
        'ES256 token on an ES384 location',
        "header \"alg\" is not the configured");

invalid(get('/hs', jwt(header => { alg => 'HS256', typ => 'JWT',
                                   crit => ['exp'] })),
        'crit header',
        "header has \"crit\"");

# signatures -----------------------------------------------------------------

{
    my $tok = hs();
    my ($h, $p, $s) = split /\./, $tok;

    my $forged = b64u(enc(claims(role => 'root')));
    invalid(get('/hs', "$h.$forged.$s"), 'tampered payload',
        "signature verification failed");

    my $c = substr($s, 0, 1) eq 'A' ? 'B' : 'A';
    invalid(get('/hs', "$h.$p.$c" . substr($s, 1)), 'bad signature',
        "signature verification failed");

    invalid(get('/hs', "$h.$p." . substr($s, 0, -2)),
            'truncated signature',
        "signature is not canonical base64url");

    invalid(get('/hs', "$h.$p." . b64u(hmac_sha256("$h.$p", 'wrong'))),
            'signed with the wrong secret',
        "signature verification failed");

    my $rs = jwt(sign => ['RS256', "$d/rsa.key"]);
    my ($rh, $rp, $rsig) = split /\./, $rs;
    invalid(get('/rs', "$rh." . b64u(enc(claims(role => 'root'))) . ".$rsig"),
            'RS256 tampered payload',
        "signature verification failed");

    my $es = jwt(sign => ['ES256', "$d/ec.key"]);
    my ($eh, $ep, $esig) = split /\./, $es;
    invalid(get('/es', "$eh." . b64u(enc(claims(role => 'root'))) . ".$esig"),
            'ES256 tampered payload',
        "signature verification failed");
}

# shape and encoding ---------------------------------------------------------

invalid(get('/hs', 'junk'), 'junk', 'token does not have three parts');
invalid(get('/hs', 'a.b.c'), 'junk in three parts',
        "signature is not canonical base64url");
invalid(get('/hs', '..'), 'three empty parts',
        "signature is not canonical base64url");
invalid(get('/hs', '%%%.%%%.%%%'), 'characters outside base64url',
        "signature is not canonical base64url");

$r = req(GET => '/hs', headers => [Authorization => 'Bearer ']);
invalid($r, 'empty bearer',
        "empty token");

$r = req(GET => '/hs', headers => [Authorization => 'Bearer']);
invalid($r, 'bearer without a token',
        "empty token");

{
    my $tok = hs();
    invalid(get('/hs', "$tok.x"), 'four parts',
        "token does not have three parts");
    invalid(get('/hs', "$tok."), 'trailing dot',
        "token does not have three parts");
    invalid(get('/hs', "$tok junk"), 'trailing garbage after a space',
        "signature is not canonical base64url");
    invalid(get('/hs', "${tok}="), 'padding on the signature',
        "signature is not canonical base64url");

    my ($h, $p, $s) = split /\./, $tok;
    invalid(get('/hs', "$h.$p"), 'two parts',
        "token does not have three parts");

    (my $std = $s) =~ tr/-_/+\//;
    $std = "+" . substr($s, 1) if $std eq $s;
    invalid(get('/hs', "$h.$p.$std"), 'standard base64 alphabet',
        "signature is not canonical base64url");

    invalid(get('/hs', "$h.$p." . dirty_bits($s)),
            'signature with non-zero trailing bits',
        "signature is not canonical base64url");
}

{
    # header of 28 bytes: 38 characters, 4 unused bits in the last one
    my $hjson = '{"alg":"HS256", "typ":"JWT"}';
    my $h = b64u($hjson);
    ok(length($h) % 4, 'header length leaves unused bits');

    passes(get('/hs', jwt(h64 => $h)), 'admin', 'canonical header accepted');
    invalid(get('/hs', jwt(h64 => dirty_bits($h))),
            'header with non-zero trailing bits',
        "header is not canonical base64url");
    invalid(get('/hs', jwt(h64 => "$h==")), 'header with padding',
        "header is not canonical base64url");
    my $h36 = b64u('{"alg":"HS256","typ":"JWT"}');
    invalid(get('/hs', jwt(h64 => "${h36}A")), 'header length % 4 == 1',
        "header is not canonical base64url");

    my $pjson = $JSON->encode(claims());
    $pjson .= ' ' while length(b64u($pjson)) % 4 != 2;
    my $p = b64u($pjson);
    passes(get('/hs', jwt(p64 => $p)), 'admin', 'canonical payload accepted');
    invalid(get('/hs', jwt(p64 => dirty_bits($p))),
            'payload with non-zero trailing bits',
        "payload is not canonical base64url");
    invalid(get('/hs', jwt(p64 => "$p==")), 'payload with padding',
        "payload is not canonical base64url");
}

invalid(get('/hs', jwt(header => '["HS256"]')), 'header is a JSON array',
        "header is not a JSON object");
invalid(get('/hs', jwt(header => '"HS256"')), 'header is a JSON string',
        "header is not a JSON object");
invalid(get('/hs', jwt(header => '{"alg":"HS256"')), 'header not JSON',
        "header is not a JSON object");
invalid(get('/hs', jwt(header => '{"alg":"HS256","alg":"none"}')),
        'duplicate alg in the header',
        "header is not a JSON object without duplicate keys");
invalid(get('/hs', jwt(header => '{"alg":"HS256","typ":"JWT","typ":"JWT"}')),
        'duplicate typ in the header',
        "header is not a JSON object without duplicate keys");
invalid(get('/hs', jwt(header => '{"alg":"HS256"} x')),
        'garbage after the header object',
        "header is not a JSON object");
invalid(get('/hs', jwt(header => { alg => 'HS256', typ => 'JWE' })),
        'typ JWE',
        "header \"typ\" is not \"JWT\"");
invalid(get('/hs', jwt(header => { alg => 'HS256', typ => 'at+jwt' })),
        'typ at+jwt',
        "header \"typ\" is not \"JWT\"");
invalid(get('/hs', jwt(header => '{"alg":"HS256","typ":1}')),
        'typ not a string',
        "header \"typ\" is not \"JWT\"");

invalid(get('/hs', jwt(claims => '[1,2]')), 'payload is a JSON array',
        "payload is not a JSON object");
invalid(get('/hs', jwt(claims => 'hello')), 'payload not JSON',
        "payload is not a JSON object");
invalid(get('/hs', jwt(claims => '{"exp":' . (time + 60)
                                  . ',"sub":"a","sub":"b"}')),
        'duplicate claim',
        "payload is not a JSON object without duplicate keys");
invalid(get('/hs', jwt(claims => '{"sub":"a","exp":' . (time + 60)
                                  . ',"x":"\u0000"}')),
        'NUL in a claim',
        "payload is not a JSON object");

# size bound

{
    my ($under, $over);
    for (my $n = 5500; !$over; $n++) {
        my $tok = hs(pad => 'p' x $n);
        if (length $tok <= 8192) { $under = $tok } else { $over = $tok }
    }
    ok(length($under) > 8180, 'token just under the bound');
    passes(get('/hs', $under), 'admin', 'token of ' . length($under)
                                        . ' bytes');
    invalid(get('/hs', $over), 'token of ' . length($over) . ' bytes',
            'token too large');
    invalid(get('/hs', hs(pad => 'p' x 65536)), '64 KiB token',
        "token too large");
}

# registered claims ----------------------------------------------------------

{
    my %c = %{ claims() };
    delete $c{exp};
    invalid(get('/hs', jwt(claims => \%c)), 'exp missing',
        "no \"exp\" claim");
}

invalid(get('/hs', hs(exp => '' . (time + 60))), 'exp is a string',
        "\"exp\" is not a number");
invalid(get('/hs', hs(exp => undef)), 'exp is null',
        "\"exp\" is not a number");
invalid(get('/hs', hs(nbf => 'yesterday')), 'nbf is a string',
        "\"nbf\" is not a number");
invalid(get('/hs', hs(sub => 42)), 'sub is a number',
        "\"sub\" is not a string");

refused(get('/hs', hs(exp => time - 3600)), 'token expired', 'expired');
refused(get('/hs', hs(nbf => time + 3600)), 'token not yet valid',
        'nbf in the future');

passes(get('/hs', hs(exp => time - 20)), 'admin',
       'default leeway 30s: expired 20s ago');
refused(get('/hs', hs(exp => time - 40)), 'token expired',
        'default leeway 30s: expired 40s ago');

passes(get('/leeway', hs(exp => time - 5)), 'ok',
       'leeway 10s: expired 5s ago');
refused(get('/leeway', hs(exp => time - 15)), 'token expired',
        'leeway 10s: expired 15s ago');
passes(get('/leeway', hs(nbf => time + 5)), 'ok',
       'leeway 10s: nbf in 5s');
refused(get('/leeway', hs(nbf => time + 15)), 'token not yet valid',
        'leeway 10s: nbf in 15s');
passes(get('/leeway', hs(nbf => time - 5)), 'ok', 'nbf in the past');


# verified tokens are remembered per worker: the signature is not checked
# again, but the whole token must match and the claims are checked again

{
    my $tok = hs(exp => time + 2);
    passes(get('/leeway0', $tok), 'ok', 'cached token: first use');
    passes(get('/leeway0', $tok), 'ok', 'cached token: second use');
    passes(get('/leeway0', $tok), 'ok', 'cached token: third use');
    invalid(get('/hs512', $tok), 'cached token: other location, own alg',
            'header "alg" is not the configured algorithm');
    (my $bad = $tok) =~ s/.$/$& eq 'A' ? 'Q' : 'A'/e;
    invalid(get('/leeway0', $bad), 'cached token: last byte changed');
    sleep 3;
    refused(get('/leeway0', $tok), 'token expired',
            'cached token: expiry still applies', 'token expired');
}

passes(get('/leeway0', hs(exp => time + 5)), 'ok', 'leeway 0: valid');
refused(get('/leeway0', hs(exp => time - 2)), 'token expired',
        'leeway 0: expired 2s ago');

{
    my %ok = (iss => 'https://issuer.example', aud => 'ragnx-api');

    passes(get('/iss', hs(%ok)), 'ragnx-api', 'iss and aud');
    passes(get('/iss', hs(%ok, aud => ['other', 'ragnx-api'])),
           '["other","ragnx-api"]', 'aud array holding the audience');

    refused(get('/iss', hs(%ok, iss => 'https://evil.example')),
            'invalid issuer', 'wrong iss');
    refused(get('/iss', hs(%ok, iss => 'https://issuer.example/')),
            'invalid issuer', 'iss with a trailing slash');
    refused(get('/iss', hs(aud => 'ragnx-api')), 'invalid issuer',
            'iss missing');
    refused(get('/iss', hs(%ok, iss => ['https://issuer.example'])),
            'invalid issuer', 'iss is an array');

    refused(get('/iss', hs(%ok, aud => 'other')), 'invalid audience',
            'wrong aud string');
    refused(get('/iss', hs(%ok, aud => ['other', 'ragnx'])),
            'invalid audience', 'wrong aud array');
    refused(get('/iss', hs(%ok, aud => [])), 'invalid audience',
            'empty aud array');
    refused(get('/iss', hs(%ok, aud => 'ragnx-api2')), 'invalid audience',
            'aud with a suffix');
    refused(get('/iss', hs(%ok, aud => ['ragnx-api2'])), 'invalid audience',
            'aud array holding the audience with a suffix');
    refused(get('/iss', hs(%ok, aud => ['ragnx-ap'])), 'invalid audience',
            'aud array holding a prefix of the audience');
    refused(get('/iss', hs(iss => $ok{iss})), 'invalid audience',
            'aud missing');
    refused(get('/iss', hs(%ok, aud => { x => 'ragnx-api' })),
            'invalid audience', 'aud is an object');

    refused(get('/iss', hs(%ok, exp => time - 3600)), 'token expired',
            'expiry checked before the issuer');
    invalid(get('/iss', jwt(claims => claims(%ok),
                            sign => ['HS256', 'wrong'])),
            'signature checked before the claims',
        "signature verification failed");
}

# one connection, two requests: the first token does not carry over ----------

{
    my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $port,
                                  Proto => 'tcp', Timeout => 10);
    my $tok = hs();
    $s->print("GET /hs HTTP/1.1\r\nHost: l\r\nAuthorization: Bearer $tok"
              . "\r\n\r\nGET /hs HTTP/1.1\r\nHost: l\r\n"
              . "Connection: close\r\n\r\n");
    local $/;
    my $raw = <$s>;
    my @st = $raw =~ m{HTTP/1\.1 (\d{3}) }g;
    is_deeply(\@st, [200, 401], 'keepalive: token of the first request '
                                . 'does not authenticate the second');
}

# access log ------------------------------------------------------------------

get('/hs', hs(sub => 'logged-user', role => 'auditor'));
get('/hs');
{
    my $log = slurp("$d/jwt.log");
    like($log, qr{^/hs sub=logged-user role=auditor$}m,
         'claims in log_format');
    like($log, qr{^/hs sub=- role=-$}m, 'no token: variables not found');
}

unlike($t->error_log, qr/\[(warn|error|crit)\].*ragnx jwt/,
       'refusals are not logged above info');
like($t->error_log, qr/\[info\].*ragnx jwt: token rejected: header "alg" is not/,
     'refusal reason at info level');

# nginx -t --------------------------------------------------------------------

sub conf_fails {
    my ($conf, $re, $name) = @_;
    my ($ok, $out) = $t->nginx_t(server => $conf);
    ok(!$ok, "nginx -t fails: $name");
    like($out, $re, "nginx -t names it: $name");
    unlike($out, qr/\[(alert|crit)\]/, "nginx -t no alert: $name");
}

{
    my ($ok, $out) = $t->nginx_t(server => <<"EOF");
        ragnx_jwt on;
        ragnx_jwt_key_file $d/hs.key;
        location = /rs { ragnx_jwt_alg RS512; ragnx_jwt_key_file rsa.pub; }
        location = /es { ragnx_jwt_alg ES384; ragnx_jwt_key_file ec384.pub; }
        location = /hs {
            ragnx_jwt_alg HS384;
            ragnx_jwt_key_file hs512.key;
            ragnx_jwt_leeway 1m;
        }
EOF
    ok($ok, 'nginx -t accepts a good configuration') or diag($out);
}

conf_fails("ragnx_jwt_key_file $d/nonexistent.key;",
           qr/"ragnx_jwt_key_file" cannot open "\Q$d\E\/nonexistent\.key"/,
           'missing key file');

conf_fails("ragnx_jwt_key_file $d/keydir;",
           qr/"ragnx_jwt_key_file" "\Q$d\E\/keydir" is not a regular file/,
           'key file is a directory');

# Root reads any file: as root, nginx -t runs as nobody in a directory of
# its own, so the check runs wherever the suite does (CI runs as root).
sub conf_fails_unprivileged {
    my ($conf, $re, $name) = @_;
    return conf_fails($conf, $re, $name) unless $> == 0;
    my ($uid, $gid) = (getpwnam('nobody'))[2, 3];
    my $u = "$d/unprivileged";
    mkdir $u;
    mkdir "$u/logs";
    chown $uid, $gid, $u, "$u/logs";
    my $module = Ragnx::Test::module_path();
    my $port = Ragnx::Test::free_port();
    my $file = $t->file('unprivileged.conf', <<"EOF");
load_module $module;
error_log $u/error.log info;
pid $u/nginx.pid;
events { worker_connections 16; }
http {
    access_log off;
    client_body_temp_path $u/body;
    proxy_temp_path $u/proxy;
    fastcgi_temp_path $u/fastcgi;
    uwsgi_temp_path $u/uwsgi;
    scgi_temp_path $u/scgi;
    server {
        listen 127.0.0.1:$port;
        $conf
    }
}
EOF
    pipe(my $rd, my $wr) or die "pipe: $!";
    my $pid = fork() // die "fork: $!";
    if ($pid == 0) {
        close $rd;
        open STDOUT, '>&', $wr;
        open STDERR, '>&', $wr;
        # under the sanitizers, their runtimes first, as for every nginx
        # of the suite (reports go where nobody may write)
        my %env = $t->preload_env;
        s{log_path=[^:]*/}{log_path=$u/} for values %env;
        $ENV{$_} = $env{$_} for keys %env;
        POSIX::setgid($gid);
        $) = "$gid $gid";
        POSIX::setuid($uid) or POSIX::_exit(126);
        exec('/usr/sbin/nginx', '-t', '-p', $u, '-c', $file)
            or POSIX::_exit(127);
    }
    close $wr;
    my $out = do { local $/; <$rd> } // '';
    waitpid $pid, 0;
    my $rc = $? >> 8;
    ok($? != 0 && $rc != 126 && $rc != 127,
       "nginx -t fails: $name (as nobody)");
    like($out, $re, "nginx -t names it: $name (as nobody)");
    unlike($out, qr/\[(alert|crit)\]/, "nginx -t no alert: $name (as nobody)");
}

$t->file('unreadable.key', $HS);
chmod 0, "$d/unreadable.key";
conf_fails_unprivileged("ragnx_jwt_key_file $d/unreadable.key;",
           qr/"ragnx_jwt_key_file" cannot open .*unreadable\.key.*denied/,
           'unreadable key file');

conf_fails("ragnx_jwt_key_file $d/empty.key;",
           qr/"ragnx_jwt_key_file" "\Q$d\E\/empty\.key" is empty/,
           'empty key file');

conf_fails("ragnx_jwt_alg ES256; ragnx_jwt_key_file $d/rsa.pub;",
           qr/"ragnx_jwt_key_file" "\Q$d\E\/rsa\.pub" is not an EC public key/,
           'RSA key with ES256');

conf_fails("ragnx_jwt_alg RS256; ragnx_jwt_key_file $d/ec.pub;",
           qr/"ragnx_jwt_key_file" "\Q$d\E\/ec\.pub" is not an RSA public key/,
           'EC key with RS256');

conf_fails("ragnx_jwt_key_file $d/ec384.pub; ragnx_jwt_alg ES256;",
           qr/"\Q$d\E\/ec384\.pub" is a 384-bit EC key, "ragnx_jwt_alg ES256"/,
           'P-384 key with ES256');

conf_fails("ragnx_jwt_alg RS256; ragnx_jwt_key_file $d/rsa1024.pub;",
           qr/"\Q$d\E\/rsa1024\.pub" is a 1024-bit RSA key/,
           '1024-bit RSA key');

conf_fails("ragnx_jwt_alg RS256; ragnx_jwt_key_file $d/rsa.key;",
           qr/"\Q$d\E\/rsa\.key" is not a PEM public key/,
           'private key given for RS256');

conf_fails("ragnx_jwt_alg RS256; ragnx_jwt_key_file $d/hs.key;",
           qr/"\Q$d\E\/hs\.key" is not a PEM public key/,
           'HMAC secret given for RS256');

conf_fails("ragnx_jwt_key_file $d/rsa.pub;",
           qr/"ragnx_jwt_key_file" "\Q$d\E\/rsa\.pub" holds a key, not an HMAC secret for "ragnx_jwt_alg HS256"/,
           'public PEM with HS256');

conf_fails("ragnx_jwt_alg HS512; ragnx_jwt_key_file $d/ec.pub;",
           qr/"\Q$d\E\/ec\.pub" holds a key, not an HMAC secret/,
           'EC public PEM with HS512');

{
    run("openssl pkey -pubin -in $d/rsa.pub -outform DER -out $d/rsa.der");
    conf_fails("ragnx_jwt_key_file $d/rsa.der;",
               qr/"\Q$d\E\/rsa\.der" holds a key, not an HMAC secret/,
               'DER public key with HS256');
}

conf_fails("ragnx_jwt_key_file $d/short.key;",
           qr/"\Q$d\E\/short\.key" is too short for "ragnx_jwt_alg HS256": at least 32 bytes/,
           'HMAC secret shorter than the hash');

conf_fails("ragnx_jwt_alg HS512; ragnx_jwt_key_file $d/hs.key;",
           qr/is too short for "ragnx_jwt_alg HS512": at least 64 bytes/,
           'HMAC secret shorter than the HS512 hash');

conf_fails("ragnx_jwt_alg none;",
           qr/invalid value "none" in "ragnx_jwt_alg" directive/,
           'alg none');

conf_fails("ragnx_jwt_alg PS256;",
           qr/invalid value "PS256" in "ragnx_jwt_alg" directive/,
           'unknown alg');

conf_fails("ragnx_jwt_alg hs256;",
           qr/invalid value "hs256" in "ragnx_jwt_alg" directive/,
           'alg in lower case');

conf_fails("location / { ragnx_jwt on; }",
           qr/no "ragnx_jwt_key_file" is defined for the "ragnx_jwt" directive in \Q$d\E\/test.conf:\d+/,
           'ragnx_jwt on without a key');

conf_fails("ragnx_jwt on;",
           qr/no "ragnx_jwt_key_file" is defined for the "ragnx_jwt" directive in \Q$d\E\/test.conf:\d+/,
           'ragnx_jwt on at server level without a key');

conf_fails("ragnx_jwt maybe;",
           qr/invalid value "maybe" in "ragnx_jwt" directive/,
           'ragnx_jwt takes on or off');

conf_fails("ragnx_jwt_key_file $d/hs.key; ragnx_jwt_key_file $d/hs.key;",
           qr/"ragnx_jwt_key_file" directive is duplicate/,
           'duplicate key file');

conf_fails("ragnx_jwt_leeway soon;",
           qr/"ragnx_jwt_leeway" directive invalid value/,
           'bad leeway');

conf_fails("ragnx_jwt_key_file $d/hs.key $d/hs.key;",
           qr/invalid number of arguments in "ragnx_jwt_key_file"/,
           'key file takes one argument');

$t->done;
