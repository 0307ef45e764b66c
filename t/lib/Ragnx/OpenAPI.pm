package Ragnx::OpenAPI;

# Checks HTTP responses against docs/openapi.json: the status is one the
# operation lists, the headers it documents are there (when required)
# and well-formed, no API header it does not document is sent, and the
# body matches the media type's schema; a stream's events are each
# checked against the schema of their type (x-events).  The schemas are
# checked by a small JSON Schema 2020-12 validator below: the keywords
# the document uses, and a keyword it does not know is an error, not a
# pass.
#
# Ragnx::OpenAPI->hook makes every response that Ragnx::Test's HTTP
# helpers (request, read_response, parallel) read checked, when its
# request went to a path of the document: a mismatch is a failed test,
# and $t->done adds one passing test with the count.

use strict;
use warnings;

use B ();
use Cwd qw(abs_path);
use File::Basename qw(dirname);
use JSON::PP ();
use Test::More ();
use Ragnx::Test ();

my $ROOT = abs_path(dirname(__FILE__) . '/../../..');

# headers of the API's own: sent only where the document says so
my @API_HEADERS = qw(location retry-after www-authenticate allow
                     x-accel-buffering);

sub new {
    my ($class, $file) = @_;
    $file //= "$ROOT/docs/openapi.json";
    open my $fh, '<:raw', $file or die "$file: $!";
    local $/;
    my $doc = JSON::PP->new->utf8->decode(scalar <$fh>);
    my @paths;
    for my $p (keys %{ $doc->{paths} }) {
        my @names;
        (my $re = quotemeta $p)
            =~ s/\\\{(\w+)\\\}/push @names, $1; '([^\/]+)'/ge;
        push @paths, { path => $p, re => qr/^$re\z/, names => \@names };
    }
    return bless { doc => $doc, file => $file, paths => \@paths,
                   checked => 0 }, $class;
}

sub doc { $_[0]{doc} }

# "#/a/b" in the document
sub resolve {
    my ($self, $v) = @_;
    while (ref $v eq 'HASH' && defined $v->{'$ref'}) {
        my $ref = $v->{'$ref'};
        $ref =~ m{^#/(.*)\z} or die "unsupported \$ref $ref";
        $v = $self->{doc};
        for my $k (split m{/}, $1) {
            $k =~ s/~1/\//g;
            $k =~ s/~0/~/g;
            $v = ref $v eq 'HASH' ? $v->{$k} : undef;
            defined $v or die "dangling \$ref $ref";
        }
    }
    return $v;
}

# the document's path for a request path (query string dropped), or undef
sub match_path {
    my ($self, $path) = @_;
    $path =~ s/[?#].*\z//s;
    for my $p (@{ $self->{paths} }) {
        return $p->{path} if $path =~ $p->{re};
    }
    return undef;
}

# The problems of a response (an empty list: it matches).  $res is a
# parsed response of Ragnx::Test (status, headers, body).
sub check {
    my ($self, $method, $path, $res) = @_;
    my $p = $self->match_path($path);
    return () unless defined $p;
    my $item = $self->{doc}{paths}{$p};
    my $m = lc $method;
    my $head = $m eq 'head';
    $m = 'get' if $head && !$item->{head};
    my $op = $item->{$m};
    my $status = $res->{status};
    my @bad;

    if (!$op) {
        # a method the path does not list: 405 with the path's methods in
        # Allow, or 401 first where the path takes a token
        my @ops = grep { ref $item->{$_} eq 'HASH' && $item->{$_}{responses} }
                  qw(get post put delete patch);
        my $secured = grep { $item->{$_}{security} } @ops;
        my $name = $status == 405 ? 'MethodNotAllowed'
                 : $status == 401 && $secured ? 'Unauthorized' : undef;
        return ("$method is not an operation of $p, and status $status is "
                . "neither 405 nor a token's 401") unless $name;
        my $resp = $self->resolve({ '$ref' => "#/components/responses/$name" });
        push @bad, $self->check_headers($resp, $res);
        push @bad, $self->check_body($resp, $res, 0);
        if ($status == 405) {
            my $allow = join ', ', map { uc } @ops;
            $allow .= ', HEAD' if $item->{get} && !$item->{head};
            push @bad, "Allow is \"" . ($res->{headers}{allow} // '')
                       . "\", not \"$allow\""
                if ($res->{headers}{allow} // '') ne $allow;
        }
        return @bad;
    }

    my $resp = $op->{responses}{$status} // $op->{responses}{default};
    return ("status $status is not a response of $method $p")
        unless $resp;
    $resp = $self->resolve($resp);
    push @bad, $self->check_headers($resp, $res);
    push @bad, $self->check_body($resp, $res, $head);
    return @bad;
}

sub check_headers {
    my ($self, $resp, $res) = @_;
    my @bad;
    my %doc = map { lc($_) => $self->resolve($resp->{headers}{$_}) }
              keys %{ $resp->{headers} || {} };
    for my $name (sort keys %doc) {
        my $h = $doc{$name};
        my $v = $res->{headers}{$name};
        if (!defined $v) {
            push @bad, "header $name is missing" if $h->{required};
            next;
        }
        my $s = $self->resolve($h->{schema} || {});
        my $val = $v;
        # a header is text: an integer's schema takes its digits
        if (($s->{type} // '') eq 'integer' && $v =~ /^-?[0-9]+\z/) {
            $val = 0 + $v;
        }
        push @bad, map { "header $name: $_" } $self->validate($s, $val, '');
    }
    for my $name (@API_HEADERS) {
        push @bad, "header $name is sent but not documented"
            if defined $res->{headers}{$name} && !$doc{$name};
    }
    return @bad;
}

sub check_body {
    my ($self, $resp, $res, $head) = @_;
    my $content = $resp->{content};
    my $body = $res->{body} // '';
    my $ct = $res->{headers}{'content-type'};
    if (!$content) {
        return length $body ? ('a body where the document has none') : ();
    }
    return ('no Content-Type') unless defined $ct;
    my ($mt, $media);
    for my $k (keys %$content) {
        ($mt, $media) = ($k, $content->{$k}) if lc $k eq lc $ct;
    }
    if (!$media) {
        (my $bare = lc $ct) =~ s/\s*;.*\z//s;
        for my $k (keys %$content) {
            ($mt, $media) = ($k, $content->{$k}) if lc $k eq $bare;
        }
    }
    return ("Content-Type $ct is not one of: " . join ', ', sort keys %$content)
        unless $media;
    return () if $head;

    if ($mt =~ m{^application/json}) {
        my $data = eval { JSON::PP->new->utf8->allow_nonref->decode($body) };
        return ("the body is not JSON: $body") if $@;
        return $self->validate($self->resolve($media->{schema}), $data, '');
    }
    if ($mt eq 'text/event-stream') {
        return $self->check_events($media, $body);
    }
    return $self->validate($self->resolve($media->{schema}), $body, '');
}

# Server-sent events: each complete one (a trailing part not yet ended by
# a blank line is left: a test may stop reading mid-stream) has a type of
# x-events and data of that type's schema; comments (": ping") pass.
sub check_events {
    my ($self, $media, $body) = @_;
    my $types = $media->{'x-events'} or return ('no x-events');
    my @bad;
    my @blocks = split /\n\n/, $body, -1;
    pop @blocks;
    for my $block (@blocks) {
        my ($event, @data);
        for my $line (split /\n/, $block) {
            next if $line =~ /^:/;
            my ($f, $v) = $line =~ /^([^:]+)(?::[ ]?(.*))?\z/s
                or do { push @bad, "event line \"$line\""; next };
            $v //= '';
            if ($f eq 'event') { $event = $v }
            elsif ($f eq 'data') { push @data, $v }
            elsif ($f eq 'id') {
                push @bad, "event id \"$v\"" unless $v =~ /^[0-9]+-[0-9]+\z/;
            }
            else { push @bad, "event field \"$f\"" }
        }
        next if !defined $event && !@data;
        $event //= 'message';
        my $s = $types->{$event};
        if (!$s) {
            push @bad, "event type \"$event\" is not documented";
            next;
        }
        my $data = eval {
            JSON::PP->new->utf8->allow_nonref->decode(join "\n", @data) };
        if ($@) {
            push @bad, "event $event: data is not JSON";
            next;
        }
        push @bad, map { "event $event: $_" }
                   $self->validate($self->resolve($s), $data, '');
    }
    return @bad;
}

# ---- JSON Schema 2020-12, the keywords the document uses -----------------

my %ANNOTATION = map { $_ => 1 } qw($schema $id $comment title description
                                    default examples deprecated readOnly
                                    writeOnly);

sub json_type {
    my ($v) = @_;
    return 'null' unless defined $v;
    return 'boolean' if JSON::PP::is_bool($v);
    return 'object' if ref $v eq 'HASH';
    return 'array' if ref $v eq 'ARRAY';
    my $f = B::svref_2object(\$v)->FLAGS;
    if (($f & (B::SVf_IOK | B::SVf_NOK)) && !($f & B::SVf_POK)) {
        return $v == int $v ? 'integer' : 'number';
    }
    return 'string';
}

sub is_type {
    my ($v, $type) = @_;
    my $t = json_type($v);
    return 1 if $t eq $type;
    return 1 if $type eq 'number' && $t eq 'integer';
    return 0;
}

sub equal {
    my ($a, $b) = @_;
    my $js = JSON::PP->new->canonical->allow_nonref;
    return $js->encode($a) eq $js->encode($b);
}

my $UUID = qr/^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-
              [0-9a-fA-F]{12}\z/x;
my %FORMAT = (
    uuid        => sub { $_[0] =~ $UUID },
    email       => sub { $_[0] =~ /^[^\s@]+@[^\s@]+\.[^\s@]+\z/
                         && length $_[0] <= 254 },
    'date-time' => sub { $_[0] =~ /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?
                                   (Z|[+-]\d\d:\d\d)\z/x },
);

# the errors of $v against schema $s, at JSON pointer $at
sub validate {
    my ($self, $s, $v, $at) = @_;
    my $where = $at eq '' ? 'the body' : $at;
    return () if JSON::PP::is_bool($s) && $s;
    return ("$where: not allowed") if JSON::PP::is_bool($s);
    $s = $self->resolve($s);
    my @bad;

    for my $k (sort keys %$s) {
        my $x = $s->{$k};
        next if $ANNOTATION{$k} || $k =~ /^x-/;
        if ($k eq '$ref') {
            # resolved above
        } elsif ($k eq 'type') {
            my @t = ref $x ? @$x : ($x);
            push @bad, "$where: " . json_type($v) . ", not " . join('|', @t)
                unless grep { is_type($v, $_) } @t;
            return @bad if @bad;    # nothing else applies to it
        } elsif ($k eq 'enum') {
            push @bad, "$where: not one of the enum"
                unless grep { equal($v, $_) } @$x;
        } elsif ($k eq 'const') {
            push @bad, "$where: not the const" unless equal($v, $x);
        } elsif ($k eq 'properties') {
            next unless ref $v eq 'HASH';
            for my $p (sort keys %$x) {
                push @bad, $self->validate($x->{$p}, $v->{$p}, "$at/$p")
                    if exists $v->{$p};
            }
        } elsif ($k eq 'required') {
            next unless ref $v eq 'HASH';
            push @bad, map { "$where: $_ is missing" }
                       grep { !exists $v->{$_} } @$x;
        } elsif ($k eq 'additionalProperties') {
            next unless ref $v eq 'HASH';
            for my $p (sort keys %$v) {
                next if exists(($s->{properties} || {})->{$p});
                push @bad, $self->validate($x, $v->{$p}, "$at/$p");
            }
        } elsif ($k eq 'minProperties') {
            push @bad, "$where: fewer than $x properties"
                if ref $v eq 'HASH' && keys %$v < $x;
        } elsif ($k eq 'items') {
            next unless ref $v eq 'ARRAY';
            push @bad, $self->validate($x, $v->[$_], "$at/$_") for 0 .. $#$v;
        } elsif ($k eq 'minItems') {
            push @bad, "$where: fewer than $x items"
                if ref $v eq 'ARRAY' && @$v < $x;
        } elsif ($k eq 'maxItems') {
            push @bad, "$where: more than $x items"
                if ref $v eq 'ARRAY' && @$v > $x;
        } elsif ($k eq 'minLength') {
            push @bad, "$where: shorter than $x"
                if json_type($v) eq 'string' && length $v < $x;
        } elsif ($k eq 'maxLength') {
            push @bad, "$where: longer than $x"
                if json_type($v) eq 'string' && length $v > $x;
        } elsif ($k eq 'pattern') {
            push @bad, "$where: does not match $x"
                if json_type($v) eq 'string' && $v !~ /$x/;
        } elsif ($k eq 'format') {
            my $f = $FORMAT{$x} or die "unsupported format $x";
            push @bad, "$where: not a valid $x: \"$v\""
                if json_type($v) eq 'string' && !$f->($v);
        } elsif ($k eq 'minimum') {
            push @bad, "$where: less than $x"
                if json_type($v) =~ /integer|number/ && $v < $x;
        } elsif ($k eq 'maximum') {
            push @bad, "$where: more than $x"
                if json_type($v) =~ /integer|number/ && $v > $x;
        } elsif ($k eq 'oneOf' || $k eq 'anyOf') {
            my @each = map { [ $self->validate($_, $v, $at) ] } @$x;
            my $ok = grep { !@$_ } @each;
            if ($k eq 'oneOf' ? $ok != 1 : $ok < 1) {
                push @bad, "$where: matches $ok of $k, with: "
                           . join(' / ', map { join '; ', @$_ } @each);
            }
        } elsif ($k eq 'allOf') {
            push @bad, $self->validate($_, $v, $at) for @$x;
        } else {
            die "unsupported JSON Schema keyword \"$k\" at $where";
        }
    }
    return @bad;
}

# ---- the hook into Ragnx::Test ------------------------------------------

sub hook {
    my ($class, $file) = @_;
    my $self = $class->new($file);
    my $pid = $$;
    $Ragnx::Test::RESPONSE_CHECK = sub {
        my ($method, $path, $res) = @_;
        # a forked helper's responses are its own business, and no
        # response at all (a test that cut the connection) has no shape
        return if $$ != $pid || !$res->{status};
        return unless defined $self->match_path($path);
        my @bad = $self->check($method, $path, $res);
        $self->{checked}++;
        return unless @bad;
        $self->{failed}++;
        Test::More::fail("$method $path -> $res->{status} matches "
                         . "docs/openapi.json");
        Test::More::diag(join "\n", @bad);
    };
    $Ragnx::Test::RESPONSE_SUMMARY = sub {
        return if $$ != $pid;
        Test::More::ok($self->{checked} && !$self->{failed},
                       "$self->{checked} responses checked against "
                       . "docs/openapi.json, "
                       . ($self->{failed} || 0) . " not matching");
    };
    return $self;
}

1;
