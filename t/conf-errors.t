#!/usr/bin/perl
# Configurations that cannot work fail `nginx -t`, each with an [emerg]
# message naming the directive and its file and line, instead of failing
# per request: a handler without what it needs from its location (a
# token's subject, a validated body, Redis), a handler that cannot be
# reached as configured (a token on register, login and error pages, a
# schema on a GET handler, "satisfy any" where a subject is needed),
# two content handlers in one location, settings that meet across levels
# (ragnx_jwt without a key, a key that does not suit the algorithm,
# "*" with credentials, a cache server without a queue server), and zero
# where zero cannot work.  Valid configurations, with settings inherited
# from the server or http level, still pass.

use strict;
use warnings;
use lib 't/lib';
use Cwd qw(getcwd);
use Test::More;
use Ragnx::Test qw(slurp spew);

my $root = getcwd();
my $t = Ragnx::Test->new;
my $d = $t->dir;

spew("$d/hs.key", 'conf-errors-secret-0123456789abcdef');
spew("$d/htpasswd", "u:{PLAIN}p\n");
system("openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256"
       . " -out $d/ec.pem 2>/dev/null && openssl pkey -in $d/ec.pem -pubout"
       . " -out $d/ec.pub 2>/dev/null") == 0 or BAIL_OUT('openssl');
my $ask = "$root/schemas/ask.json";
my $login = "$root/schemas/login.json";
my (undef, $rpcpub) = $t->rpc_keys;
my $redis = "ragnx_redis 127.0.0.1:1; ragnx_rpc_seal_key $rpcpub;";

# http and server snippets, with "#here" at the end of the line the
# message must name; returns the file and that line's number
sub conf {
    my (%a) = @_;
    my $conf = $t->nginx_conf(port => Ragnx::Test::free_port(), %a);
    my @lines = split /\n/, $conf;
    my ($line) = grep { $lines[$_ - 1] =~ /#here$/ } 1 .. @lines;
    return ($t->file('test.conf', $conf), $line);
}

sub fails {
    my ($name, $re, %a) = @_;
    my ($file, $line) = conf(%a);
    defined $line or BAIL_OUT("$name: no #here");
    my ($ok, $out) = $t->nginx_t(conf_file => $file);
    ok(!$ok, "$name: nginx -t fails");
    like($out, qr/\[emerg\] .*$re.* in \Q$file\E:$line\b/,
         "$name: names the directive at $line") or diag($out);
    note($out =~ /(\[emerg\] .*)/);
    unlike($out, qr/\[(alert|crit)\]/, "$name: no alert");
}

sub passes {
    my ($name, %a) = @_;
    my ($file) = conf(%a);
    my ($ok, $out) = $t->nginx_t(conf_file => $file);
    ok($ok, "$name: nginx -t passes") or diag($out);
}

my $key = "ragnx_jwt_key_file $d/hs.key;";

# --- ragnx_jwt ---------------------------------------------------------------

fails('ragnx_jwt on without a key',
      qr/no "ragnx_jwt_key_file" is defined for the "ragnx_jwt" directive/,
      server => 'location / { ragnx_jwt on; #here
                  }');

fails('ragnx_jwt on at http level without a key',
      qr/no "ragnx_jwt_key_file" is defined for the "ragnx_jwt" directive/,
      http => 'ragnx_jwt on; #here');

fails('a public key with HS256, the key file inherited',
      qr/"ragnx_jwt_key_file" "\Q$d\E\/ec.pub" holds a key, not an HMAC/,
      server => "ragnx_jwt_key_file $d/ec.pub; #here
                 location / { ragnx_jwt on; }");

fails('an EC key with RS256 set in a location',
      qr/"\Q$d\E\/ec.pub" is not an RSA public key, required by "ragnx_jwt_alg RS256"/,
      server => "ragnx_jwt_alg ES256; ragnx_jwt_key_file $d/ec.pub; #here
                 location / { ragnx_jwt_alg RS256; ragnx_jwt on; }");

# --- ragnx_ask -----------------------------------------------------------------

fails('ragnx_ask without ragnx_jwt',
      qr/no "ragnx_jwt on" is set for the "ragnx_ask" directive/,
      http => $redis, server => "$key location = /a {
          ragnx_validate_schema $ask;
          ragnx_ask; #here
      }");

fails('ragnx_ask with ragnx_jwt off below an enabling server',
      qr/no "ragnx_jwt on" is set for the "ragnx_ask" directive/,
      http => $redis, server => "$key ragnx_jwt on; location = /a {
          ragnx_jwt off;
          ragnx_validate_schema $ask;
          ragnx_ask; #here
      }");

fails('ragnx_ask without ragnx_validate_schema',
      qr/no "ragnx_validate_schema" is set for the "ragnx_ask" directive/,
      http => $redis, server => "$key location = /a {
          ragnx_jwt on;
          ragnx_ask; #here
      }");

fails('ragnx_ask with the schema turned off',
      qr/no "ragnx_validate_schema" is set for the "ragnx_ask" directive/,
      http => $redis, server => "$key location /a {
          ragnx_validate_schema $ask;
          location /a/b {
              ragnx_jwt on;
              ragnx_validate_schema off;
              ragnx_ask; #here
          }
      }");

fails('ragnx_ask with satisfy any',
      qr/"satisfy any" cannot be used with the "ragnx_ask" directive/,
      http => $redis, server => "$key location = /a {
          satisfy any;
          allow 127.0.0.1;
          deny all;
          ragnx_jwt on;
          ragnx_validate_schema $ask;
          ragnx_ask; #here
      }");

fails('ragnx_ask without ragnx_redis',
      qr/no "ragnx_redis" is defined for the "ragnx_ask" directive/,
      server => "$key location = /a {
          ragnx_jwt on;
          ragnx_validate_schema $ask;
          ragnx_ask; #here
      }");

fails('ragnx_ask_status without ragnx_jwt',
      qr/no "ragnx_jwt on" is set for the "ragnx_ask_status" directive/,
      http => $redis, server => "$key location /a/ {
          ragnx_ask_status; #here
      }");

fails('ragnx_ask_status with satisfy any from the server',
      qr/"satisfy any" cannot be used with the "ragnx_ask_status" directive/,
      http => $redis, server => "$key satisfy any; location /a/ {
          ragnx_jwt on;
          ragnx_ask_status; #here
      }");

fails('ragnx_ask_status with an inherited schema',
      qr/"ragnx_validate_schema" cannot be used with the "ragnx_ask_status"/,
      http => $redis, server => "$key location /a {
          ragnx_validate_schema $ask;
          location /a/ {
              ragnx_jwt on;
              ragnx_ask_status \$uri; #here
          }
      }");

fails('ragnx_ask_status without ragnx_redis',
      qr/no "ragnx_redis" is defined for the "ragnx_ask_status" directive/,
      server => "$key location /a/ {
          ragnx_jwt on;
          ragnx_ask_status; #here
      }");

fails('ragnx_health without ragnx_redis',
      qr/no "ragnx_redis" is defined for the "ragnx_health" directive/,
      server => 'location = /health { ragnx_health; #here
                  }');

fails('ragnx_health with a schema',
      qr/"ragnx_validate_schema" cannot be used with the "ragnx_health"/,
      http => $redis, server => "location = /health {
          ragnx_validate_schema $ask;
          ragnx_health; #here
      }");

my $range = '"ragnx_health_pool_timeout" must be between 2s and 1h';
my $word = 'invalid value "soon" in "ragnx_health_pool_timeout": a time'
    . ' ("10s") or "off"';
for my $bad (['a word', 'soon', qr/\Q$word\E/],
             ['a negative time', '-5s',
              qr/invalid value "-5s" in "ragnx_health_pool_timeout"/],
             ['zero', '0', qr/\Q$range\E, not "0"/],
             ['under two beats', '1500ms', qr/\Q$range\E, not "1500ms"/],
             ['over an hour', '2h', qr/\Q$range\E, not "2h"/]) {
    my ($what, $v, $re) = @$bad;
    fails("ragnx_health_pool_timeout: $what", $re,
          http => $redis, server => "location = /health {
              ragnx_health;
              ragnx_health_pool_timeout $v; #here
          }");
}

fails('ragnx_health_pool_timeout without a value',
      qr/invalid number of arguments in "ragnx_health_pool_timeout"/,
      http => $redis, server => "location = /health {
          ragnx_health_pool_timeout; #here
          ragnx_health;
      }");

fails('ragnx_health_pool_timeout twice',
      qr/"ragnx_health_pool_timeout" directive is duplicate/,
      http => $redis, server => "location = /health {
          ragnx_health_pool_timeout 5s;
          ragnx_health_pool_timeout 6s; #here
          ragnx_health;
      }");

passes('ragnx_health_pool_timeout off, and inherited from http',
       http => "$redis ragnx_health_pool_timeout 30s;",
       server => "location = /health { ragnx_health; }
                  location = /health-off {
                      ragnx_health_pool_timeout off;
                      ragnx_health;
                  }");

# --- ragnx_rpc -----------------------------------------------------------------

for my $m ('me', 'chats', 'messages') {
    fails("ragnx_rpc $m without ragnx_jwt",
          qr/no "ragnx_jwt on" is set for the "ragnx_rpc $m" directive/,
          http => $redis, server => "$key location /a {
              ragnx_rpc $m; #here
          }");
}

fails('ragnx_rpc messages with satisfy any',
      qr/"satisfy any" cannot be used with the "ragnx_rpc messages"/,
      http => $redis, server => "$key location ~ ^/c/(.+)\$ {
          satisfy any;
          auth_basic x;
          auth_basic_user_file $d/htpasswd;
          ragnx_jwt on;
          ragnx_rpc messages \$1; #here
      }");

fails('ragnx_rpc me with a schema',
      qr/"ragnx_validate_schema" cannot be used with the "ragnx_rpc me"/,
      http => $redis, server => "$key location /a {
          ragnx_jwt on;
          ragnx_validate_schema $ask;
          ragnx_rpc me; #here
      }");

for my $m ('register', 'login') {
    fails("ragnx_rpc $m without ragnx_validate_schema",
          qr/no "ragnx_validate_schema" is set for the "ragnx_rpc $m"/,
          http => $redis, server => "location /a {
              ragnx_rpc $m; #here
          }");
}

for my $m ('register', 'login') {
    fails("ragnx_rpc $m without ragnx_rpc_seal_key",
          qr/no "ragnx_rpc_seal_key" is defined for the "ragnx_rpc $m"/,
          http => 'ragnx_redis 127.0.0.1:1;', server => "location /a {
              ragnx_validate_schema $login;
              ragnx_rpc $m; #here
          }");
}

fails('ragnx_rpc login with ragnx_jwt on from the server',
      qr/"ragnx_jwt on" cannot be used with the "ragnx_rpc login" directive/,
      http => $redis, server => "$key ragnx_jwt on; location /a {
          ragnx_validate_schema $login;
          ragnx_rpc login; #here
      }");

fails('ragnx_rpc without ragnx_redis',
      qr/no "ragnx_redis" is defined for the "ragnx_rpc me" directive/,
      server => "$key location /a {
          ragnx_jwt on;
          ragnx_rpc me; #here
      }");

# --- ragnx_json_error ----------------------------------------------------------

fails('ragnx_json_error with ragnx_jwt on from the server',
      qr/"ragnx_jwt on" cannot be used with the "ragnx_json_error" directive/,
      server => "$key ragnx_jwt on;
          error_page 404 \@err;
          location \@err { ragnx_json_error; #here
          }");

fails('ragnx_json_error with a schema',
      qr/"ragnx_validate_schema" cannot be used with the "ragnx_json_error"/,
      server => "location /e {
          ragnx_validate_schema $ask;
          ragnx_json_error; #here
      }");

# --- two content handlers --------------------------------------------------------

fails('ragnx_ask replaced by a later proxy_pass',
      qr/another content handler replaces the "ragnx_ask" directive/,
      http => $redis, server => "$key location = /a {
          ragnx_jwt on;
          ragnx_validate_schema $ask;
          ragnx_ask; #here
          proxy_pass http://127.0.0.1:1;
      }");

fails('ragnx_rpc after proxy_pass',
      qr/"ragnx_rpc me" cannot be used with another content handler/,
      http => $redis, server => "$key location = /a {
          ragnx_jwt on;
          proxy_pass http://127.0.0.1:1;
          ragnx_rpc me; #here
      }");

fails('ragnx_health and ragnx_rpc in one location',
      qr/"ragnx_rpc me" cannot be used with another content handler/,
      http => $redis, server => "$key location = /a {
          ragnx_jwt on;
          ragnx_health;
          ragnx_rpc me; #here
      }");

# --- settings that meet across levels, and zero ----------------------------------

fails('ragnx_redis_cache without ragnx_redis',
      qr/no "ragnx_redis" is defined for the "ragnx_redis_cache" directive/,
      http => 'ragnx_redis_cache 127.0.0.1:1; #here');

fails('"ragnx_cors_origins *" with credentials from the http level',
      qr/"ragnx_cors_origins \*" in \Q$d\E\/test.conf:\d+ cannot be used with "ragnx_cors_credentials on"/,
      http => 'ragnx_cors_credentials on; #here',
      server => 'location / { ragnx_cors_origins *; }');

for my $z (['ragnx_redis_timeout 0;', 'http'],
           ['ragnx_redis_connect_timeout 0;', 'http'],
           ['ragnx_redis_max_pending 0;', 'http'],
           ['ragnx_ask_queue_max 0;', 'server'],
           ['ragnx_ask_job_ttl 0;', 'server'],
           ['ragnx_rpc_timeout 0;', 'server'])
{
    my ($name) = $z->[0] =~ /^(\S+)/;
    fails("$z->[0] at $z->[1] level",
          qr/"$name" directive must be positive/,
          http => $redis, $z->[1] => "$z->[0] #here");
}

# --- what must still pass ------------------------------------------------------

passes('ragnx_jwt on at the server level, off where no token is sent',
       http => $redis, server => "$key
        ragnx_jwt on;
        error_page 401 404 \@err;
        location \@err { ragnx_jwt off; ragnx_json_error; }
        location = /health { ragnx_jwt off; ragnx_health; }
        location = /login {
            ragnx_jwt off;
            ragnx_validate_schema $login;
            ragnx_rpc login;
        }
        location = /ask { ragnx_validate_schema $ask; ragnx_ask; }
        location /ask/ { ragnx_ask_status; }
        location = /me { ragnx_rpc me; }
        location ~ ^/c/(.+)\$ { ragnx_rpc messages \$1; }
        location / { satisfy any; allow 127.0.0.1; deny all;
                     proxy_pass http://127.0.0.1:1; }");

passes('ragnx_jwt on and the key at the http level',
       http => "$redis $key ragnx_jwt on;",
       server => "location /api/ {
            ragnx_validate_schema $ask;
            location = /api/ask { ragnx_ask; }
            location /api/ask/ {
                ragnx_validate_schema off;
                ragnx_ask_status;
            }
        }");

passes('auth_request alongside ragnx_jwt, satisfy all',
       http => $redis, server => "$key
        location = /auth { internal; return 204; }
        location = /ask {
            auth_request /auth;
            ragnx_jwt on;
            ragnx_validate_schema $ask;
            ragnx_ask;
        }
        location = /me { auth_request /auth; ragnx_jwt on; ragnx_rpc me; }");

passes('"if" and "limit_except" in handler locations',
       http => $redis, server => "$key ragnx_jwt on;
        location = /me {
            if (\$arg_debug) { set \$debug 1; }
            limit_except GET { deny all; }
            ragnx_rpc me;
        }
        location = /login {
            ragnx_jwt off;
            limit_except POST { deny all; }
            ragnx_validate_schema $login;
            ragnx_rpc login;
        }");

passes('a health check behind a token',
       http => $redis, server => "$key
        location = /health { ragnx_jwt on; ragnx_health; }");

$t->done;
