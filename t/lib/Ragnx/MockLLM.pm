package Ragnx::MockLLM;

# A mock LLM server on loopback for the tests and the pool benchmark: one
# process, one select loop, so it holds thousands of slow requests at once.
# Speaks the Anthropic Messages API (POST /v1/messages) and OpenAI chat
# completions (POST .../chat/completions).  Behaviour is set over HTTP:
#
#   POST /_mock {"delay_ms":N, "chunk_ms":N, "default":MODE,
#                "script":[MODE, ...], "delay_max_ms":M}
#   GET  /_mock  -> {"requests":N, "last":{"path","headers","body"}}
#   GET  /_mock/questions -> {"<question>": [time, ...], ...}
#
# With delay_max_ms above delay_ms, each request waits a random time
# between the two (uniform).  /_mock/questions lists, for every question
# the mock was asked (the text after "Question: " in the last message),
# when each request for it arrived (epoch seconds): how many times the
# LLM was asked for one job.
#
# Each LLM request takes the next MODE of the script, else the default:
# ok, 500, 400, 401 and 403 (the key refused), 429:<retry-after
# seconds>, hang (never answers),
# truncated (an answer cut at max_tokens),
# malformed (200 with a body that is not JSON), echo (ok, and the answer
# also repeats every earlier turn it was sent: what history went in).
#
# A request with "stream": true is answered as server-sent events in the
# provider's own format (Anthropic's message_start ... message_stop, or
# OpenAI's chunks, usage and [DONE]), chunked, one event every chunk_ms
# after delay_ms, the answer one word per delta.  Two more modes then:
# stream-error (three deltas, then the provider's error event) and
# stream-cut (three deltas, then the connection closes mid-answer); and
# plain answers one JSON body, as a server that does not stream would.
#
# For bench/stream, words => N answers a streamed request with N words
# ("w1 w2 ..."), and stamp => 1 puts "@T" and the wall clock in
# microseconds (16 digits) after each word, written when its bytes go
# to the socket: a reader subtracts it from the time it read them.
#
# start(..., fixed => 1) (the benchmark): "ok" answers a fixed text
# without decoding the request.  JSON::PP takes 1.5 ms for a 6 KB prompt,
# and at 256 requests a second that CPU would be taken from what the
# benchmark measures.

use strict;
use warnings;

use IO::Select;
use IO::Socket::INET;
use JSON::PP;
use POSIX ();
use Time::HiRes qw(time);

sub start {
    my ($class, $t, %a) = @_;
    my $port = Ragnx::Test::free_port();
    my $pid = fork() // die "fork: $!";
    if ($pid == 0) {
        # never leave this branch other than by _exit: a child that ran
        # the END blocks would remove the test directory
        $0 = 'ragnx-mock-llm';
        my $ls = IO::Socket::INET->new(
            LocalAddr => '127.0.0.1', LocalPort => $port, Proto => 'tcp',
            Listen => 4096, ReuseAddr => 1);
        if (!$ls) {
            print STDERR "mock llm: listen: $!\n";
            POSIX::_exit(1);
        }
        $ls->blocking(0);
        # procs > 1 (benchmarks): several processes accept on one socket;
        # each keeps its own settings, so set them with start(), not set()
        my $parent = $$;
        for (2 .. ($a{procs} || 1)) {
            my $kid = fork() // POSIX::_exit(1);
            if ($kid == 0) {
                eval { serve($ls, %a, parent => $parent) };
                POSIX::_exit(0);
            }
        }
        eval { serve($ls, %a) };
        POSIX::_exit(0);
    }
    $t->{pids}{mockllm} = $pid;
    for (1 .. 200) {
        my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1',
                                      PeerPort => $port, Proto => 'tcp');
        if ($s) { close $s; last }
        select(undef, undef, undef, 0.025);
    }
    return bless { t => $t, port => $port }, $class;
}

sub port { $_[0]{port} }
sub url  { "http://127.0.0.1:$_[0]{port}" }

# set delay_ms / default / script
sub set {
    my ($self, %a) = @_;
    my $r = $self->{t}->request('POST', '/_mock', port => $self->{port},
                                body => encode_json(\%a));
    die "mock: $r->{status}" unless $r->{status} == 200;
    return $self;
}

sub stats {
    my ($self) = @_;
    my $r = $self->{t}->request('GET', '/_mock', port => $self->{port});
    return decode_json($r->{body});
}

sub serve {
    my ($ls, %a) = @_;
    my %st = (delay_ms => $a{delay_ms} || 0, chunk_ms => $a{chunk_ms} || 0,
              words => $a{words}, stamp => $a{stamp},
              delay_max_ms => $a{delay_max_ms} || 0, default => 'ok',
              script => [], requests => 0, last => {}, fixed => $a{fixed},
              questions => {});
    my $rsel = IO::Select->new($ls);
    my %c;      # fileno -> { s, in, out, due, resp }
    my $json = JSON::PP->new->canonical;

    for (;;) {
        POSIX::_exit(0) if $a{parent} && getppid() != $a{parent};
        my $now = time;
        my $wait = 0.2;
        for my $k (values %c) {
            next unless defined $k->{due};
            my $d = $k->{due} - $now;
            $wait = $d if $d < $wait;
        }
        $wait = 0 if $wait < 0;
        my $wsel = IO::Select->new(map { $_->{s} }
                                   grep { length $_->{out} } values %c);
        my ($r, $w) = IO::Select->select($rsel, $wsel, undef, $wait);
        for my $s (@{ $r || [] }) {
            if ($s == $ls) {
                while (my $n = $ls->accept) {
                    $n->blocking(0);
                    $c{fileno $n} = { s => $n, in => '', out => '' };
                    $rsel->add($n);
                }
                next;
            }
            my $k = $c{fileno $s} or next;
            my $got = sysread($s, my $buf, 65536);
            if (!defined $got) { next }
            if ($got == 0) {
                $rsel->remove($s);
                delete $c{fileno $s};
                close $s;
                next;
            }
            $k->{in} .= $buf;
            while (!defined $k->{due} && !$k->{hang}
                   && $k->{in} =~ /\r\n\r\n/)
            {
                my ($head, $rest) = split /\r\n\r\n/, $k->{in}, 2;
                my ($len) = $head =~ /^content-length:\s*(\d+)/mi;
                $len ||= 0;
                last if length $rest < $len;
                my $body = substr($rest, 0, $len);
                $k->{in} = substr($rest, $len);
                handle(\%st, $k, $head, $body, $json);
            }
        }
        $now = time;
        for my $k (values %c) {
            while (defined $k->{due} && $k->{due} <= $now) {
                $k->{out} .= (shift @{ $k->{pieces} })->[1];
                $k->{due} = @{ $k->{pieces} } ? $k->{pieces}[0][0] : undef;
            }
        }
        for my $s (@{ $w || [] }) {
            my $k = $c{fileno $s} or next;
            $k->{out} =~ s/\@T0{16}/sprintf('@T%016.0f', time * 1e6)/ge
                if $st{stamp};
            my $n = syswrite($s, $k->{out});
            if (!defined $n) {
                next if $!{EAGAIN};
                $rsel->remove($s);
                delete $c{fileno $s};
                close $s;
                next;
            }
            substr($k->{out}, 0, $n, '');
            if ($k->{close} && !length $k->{out} && !defined $k->{due}) {
                $rsel->remove($s);
                delete $c{fileno $s};
                close $s;
            }
        }
    }
}

sub response {
    my ($status, $body, @h) = @_;
    my %reason = (200 => 'OK', 400 => 'Bad Request', 401 => 'Unauthorized',
                  403 => 'Forbidden', 404 => 'Not Found', 429 => 'Too Many Requests',
                  500 => 'Internal Server Error');
    my $r = "HTTP/1.1 $status " . ($reason{$status} || 'Status') . "\r\n"
            . "Content-Type: application/json\r\n"
            . "Content-Length: " . length($body) . "\r\n";
    while (@h) { my $k = shift @h; my $v = shift @h; $r .= "$k: $v\r\n" }
    return "$r\r\n$body";
}

sub handle {
    my ($st, $k, $head, $body, $json) = @_;
    my ($method, $path) = $head =~ m{^(\S+) (\S+)};
    my %h;
    for (split /\r\n/, $head) {
        $h{lc $1} = $2 if /^([^:\s]+):\s*(.*)$/;
    }

    $k->{close} = 1 if ($h{connection} || '') =~ /close/i;

    if ($path eq '/_mock/questions') {
        $k->{out} .= response(200, $json->encode($st->{questions}));
        return;
    }
    if ($path eq '/_mock') {
        if ($method eq 'POST') {
            my $c = eval { decode_json($body) } || {};
            for (qw(delay_ms chunk_ms delay_max_ms default script words
                    stamp)) {
                $st->{$_} = $c->{$_} if exists $c->{$_};
            }
        }
        $k->{out} .= response(200, $json->encode({
            requests => $st->{requests}, last => $st->{last},
            delay_ms => $st->{delay_ms}, chunk_ms => $st->{chunk_ms},
            default => $st->{default} }));
        return;
    }

    $st->{requests}++;
    $st->{last} = { path => $path, headers => \%h, body => $body };
    my $mode = @{ $st->{script} } ? shift @{ $st->{script} }
                                  : $st->{default};
    my $delay = $st->{delay_ms};
    $delay += rand($st->{delay_max_ms} - $delay)
        if $st->{delay_max_ms} > $delay;
    my $due = time + $delay / 1000;

    if ($mode eq 'hang') {
        $k->{hang} = 1;
        return;
    }

    my $resp;
    if ($mode eq '500') {
        $resp = response(500, '{"error":{"message":"mock failure"}}');
    } elsif ($mode eq '400') {
        $resp = response(400, '{"error":{"message":"bad request"}}');
    } elsif ($mode eq '401' || $mode eq '403') {
        $resp = response($mode, '{"error":{"message":"invalid api key"}}');
    } elsif ($mode =~ /^429(?::(\d+))?$/) {
        $resp = response(429, '{"error":{"message":"rate limited"}}',
                         defined $1 ? ('Retry-After' => $1) : ());
    } elsif ($mode eq 'malformed') {
        $resp = response(200, '{"content": [ this is not json');
    } else {
        my $req = $st->{fixed} ? {} : eval { decode_json($body) } || {};
        my $msgs = $req->{messages} || [];
        my $last = @$msgs ? $msgs->[-1]{content} : '';
        $last = '' unless defined $last && !ref $last;
        my ($q) = $last =~ /Question: (.*)\z/s;
        $q = $last unless defined $q;
        push @{ $st->{questions}{$q} }, time unless $st->{fixed};
        my $answer = "Mock answer to: $q";
        if ($mode eq 'echo') {
            my @turns = map { $_->{content} } @$msgs[0 .. $#$msgs - 1];
            $answer .= ' | history: '
                       . join(' / ', grep { defined && !ref } @turns);
        }
        if ($req->{stream} && $mode ne 'plain'
            && ($path =~ m{/v1/messages$}
                               || $path =~ m{/chat/completions$})) {
            $k->{pieces} = stream($st, $json, $mode, $path, $req, $answer,
                                  length($body) >> 2, $due);
            $k->{due} = $due;
            $k->{close} = 1 if $mode eq 'stream-cut';
            return;
        }
        if ($path =~ m{/v1/messages$}) {
            if (!$h{'x-api-key'} || !$h{'anthropic-version'}) {
                $resp = response(401, '{"error":{"message":"no key"}}');
            } else {
                $resp = response(200, $json->encode({
                    id => 'msg_mock', type => 'message', role => 'assistant',
                    model => $req->{model},
                    content => [{ type => 'text', text => $answer }],
                    stop_reason => $mode eq 'truncated' ? 'max_tokens'
                                                        : 'end_turn',
                    usage => { input_tokens => length($body) >> 2,
                               output_tokens => 7 } }));
            }
        } elsif ($path =~ m{/chat/completions$}) {
            $resp = response(200, $json->encode({
                id => 'chatcmpl-mock', object => 'chat.completion',
                model => $req->{model},
                choices => [{ index => 0,
                              finish_reason => $mode eq 'truncated'
                                               ? 'length' : 'stop',
                              message => { role => 'assistant',
                                           content => $answer } }],
                usage => { prompt_tokens => length($body) >> 2,
                           completion_tokens => 7 } }));
        } else {
            $resp = response(404, '{"error":"not found"}');
        }
    }
    $k->{pieces} = [[$due, $resp]];
    $k->{due} = $due;
}

# a streamed answer: [due, bytes] pieces, the head, then one chunk per
# event, chunk_ms apart
sub stream {
    my ($st, $json, $mode, $path, $req, $answer, $in, $due) = @_;
    my @words = $answer =~ /(\S+\s*)/g;
    @words = map { "w$_" . ($st->{stamp} ? '@T' . '0' x 16 : '') . ' ' }
             1 .. $st->{words} if $st->{words};
    my $anthropic = $path =~ m{/v1/messages$};
    my $cut = $mode eq 'stream-error' || $mode eq 'stream-cut';
    @words = @words[0 .. 2] if $cut && @words > 3;
    my @ev;
    my $sse = sub {
        my ($name, $data) = @_;
        push @ev, ($name ? "event: $name\n" : '')
                  . 'data: ' . (ref $data ? $json->encode($data) : $data)
                  . "\n\n";
    };
    if ($anthropic) {
        $sse->(message_start => { type => 'message_start', message => {
            id => 'msg_mock', type => 'message', role => 'assistant',
            model => $req->{model}, content => [],
            usage => { input_tokens => $in, output_tokens => 1 } } });
        $sse->(content_block_start => { type => 'content_block_start',
            index => 0, content_block => { type => 'text', text => '' } });
        $sse->(ping => { type => 'ping' });
        $sse->(content_block_delta => { type => 'content_block_delta',
            index => 0, delta => { type => 'text_delta', text => $_ } })
            for @words;
        # the count the whole answer reports, whatever the pieces
        my $out = 7;
        if ($mode eq 'stream-error') {
            $sse->(error => { type => 'error', error => {
                type => 'overloaded_error', message => 'Overloaded' } });
        } elsif ($mode ne 'stream-cut') {
            $sse->(content_block_stop => { type => 'content_block_stop',
                                           index => 0 });
            $sse->(message_delta => { type => 'message_delta',
                delta => { stop_reason => $mode eq 'truncated'
                                          ? 'max_tokens' : 'end_turn' },
                usage => { output_tokens => $out } });
            $sse->(message_stop => { type => 'message_stop' });
        }
    } else {
        my %c = (id => 'chatcmpl-mock', object => 'chat.completion.chunk',
                 model => $req->{model});
        $sse->(undef, { %c, choices => [{ index => 0, finish_reason => undef,
            delta => { role => 'assistant', content => '' } }] });
        $sse->(undef, { %c, choices => [{ index => 0, finish_reason => undef,
            delta => { content => $_ } }] }) for @words;
        if ($mode eq 'stream-error') {
            $sse->(undef, { error => { message => 'Overloaded',
                                       type => 'server_error' } });
        } elsif ($mode ne 'stream-cut') {
            $sse->(undef, { %c, choices => [{ index => 0, delta => {},
                finish_reason => $mode eq 'truncated' ? 'length' : 'stop' }]
            });
            $sse->(undef, { %c, choices => [], usage => {
                prompt_tokens => $in, completion_tokens => 7 } })
                if ($req->{stream_options} || {})->{include_usage};
            $sse->(undef, '[DONE]');
        }
    }
    my @p = ([$due, "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
                    . "Cache-Control: no-cache\r\n"
                    . "Transfer-Encoding: chunked\r\n\r\n"]);
    my $t = $due;
    for (@ev) {
        $t += $st->{chunk_ms} / 1000;
        push @p, [$t, sprintf("%x\r\n%s\r\n", length, $_)];
    }
    push @p, [$t, "0\r\n\r\n"] unless $mode eq 'stream-cut';
    return \@p;
}

1;
