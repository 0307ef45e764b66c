#!/usr/bin/perl
# The pool's figures in nginx's /metrics: each worker process publishes
# its hash to Redis (as the ACL user ragnx-pool), nginx gathers them in
# the scrape (as ragnx-nginx); a job through the mock LLM moves them
# (jobs, stages, LLM requests, tokens); a process killed with
# SIGKILL leaves the scrape when its hash expires, a pool stopped at
# once; promtool accepts the whole text.  docs/grafana-dashboard.json
# parses, and every metric its queries name is one this scrape exposes
# (histograms by their _bucket, _sum and _count series); promtool parses
# each query.

use strict;
use warnings;
use lib 't/lib';
use Test::More;
use Cwd qw(getcwd);
use JSON::PP;
use Time::HiRes qw(sleep time);
use Ragnx::Test;
use Ragnx::OpenAPI;
use Ragnx::Pool;
use Ragnx::MockLLM;

my $root = getcwd();
my $t = Ragnx::Test->new;
# every response to a path of docs/openapi.json is checked against it
Ragnx::OpenAPI->hook;
my $rp = $t->start_redis(acl => 1);
$t->start_postgres;
my $mock = Ragnx::MockLLM->start($t);
my $p = Ragnx::Pool->new($t);
$p->configure(llm_provider => 'anthropic', llm_base_url => $mock->url,
              llm_model => 'claude-mock',
              llm_api_key_file => $t->file('llm.key', "mock-key\n"),
              workers => 2,
              redis_user => 'ragnx-pool',
              redis_password_file => $t->redis_password_file('ragnx-pool'));

my ($rc, $out) = $p->cli('migrate');
is($rc, 0, 'migrate') or diag($out);
mkdir "$t->{dir}/corpus";
$t->file('corpus/metrics.md', "# Metrics\n\nThe pool publishes its "
         . "figures to Redis and nginx serves them at /metrics.\n");
($rc, $out) = $p->cli('ingest', "$t->{dir}/corpus");
is($rc, 0, 'ingest') or diag($out);

my $promtool = `sh -c 'command -v promtool'`;
chomp $promtool;

my $secret = 'metrics-pool-secret-0123456789abcdef';
my $key = $t->file('hs.key', $secret);
my $nginx_pw = $t->redis_password_file('ragnx-nginx');
$t->start_nginx(
    http   => "ragnx_redis 127.0.0.1:$rp user=ragnx-nginx "
              . "password_file=$nginx_pw;",
    server => <<"EOF2");
        ragnx_jwt_key_file $key;
        location = /api/ask {
            ragnx_jwt on;
            ragnx_validate_schema $root/schemas/ask.json;
            ragnx_ask;
        }
        location /api/ask/ { ragnx_jwt on; ragnx_ask_status; }
        location = /metrics { ragnx_metrics; }
EOF2

my $token = Ragnx::Test::jwt_hs256($secret, { sub => 'm', exp => time + 600 });
my @h = (Authorization => "Bearer $token",
         'Content-Type' => 'application/json');

sub scrape {
    my $r = $t->request(GET => '/metrics');
    my %m;
    for (split /\n/, $r->{body} // '') {
        next if /^#/;
        $m{$1} = $2 if /^(\S+) (\S+)$/;
    }
    return ($r, \%m);
}

# the sum of a family's series whose labels match
sub total {
    my ($m, $re) = @_;
    my $n = 0;
    $n += $m->{$_} for grep { /$re/ } keys %$m;
    return $n;
}

sub processes {
    my ($m) = @_;
    my %p;
    for (keys %$m) { $p{$1} = 1 if /^ragnx_pool_\w+\{process="([^"]+)"/ }
    return sort keys %p;
}

sub promtool_ok {
    my ($text, $what) = @_;
    SKIP: {
        skip 'promtool not installed (scripts/deps)', 1 unless $promtool;
        my $f = $t->file('scrape.txt', $text);
        my $o = `$promtool check metrics < $f 2>&1`;
        is($?, 0, "promtool accepts the scrape $what") or diag $o;
    }
}

my ($r, $m) = scrape();
is($r->{status}, 200, 'scrape before the pool starts');
is($m->{ragnx_pool_metrics_up}, 1, 'Redis read for the scrape');
is($m->{ragnx_pool_processes}, 0, 'no pool process yet');
promtool_ok($r->{body}, 'without a pool');

$p->start;

my $until = sub {
    my ($cond, $secs) = @_;
    my $deadline = time + $secs;
    while (1) {
        ($r, $m) = scrape();
        return 1 if $cond->();
        return 0 if time > $deadline;
        sleep 0.1;
    }
};

ok($until->(sub { ($m->{ragnx_pool_processes} // 0) == 2 }, 10),
   'both worker processes publish');

# one job through the pool
sleep 0.3;
$r = $t->request(POST => '/api/ask', headers => \@h,
                 body => encode_json({ query => 'Where are the metrics?' }));
is($r->{status}, 202, 'a question queued');
my $id = Ragnx::Test::json_body($r)->{jobId};
my $j;
for (1 .. 200) {
    $j = Ragnx::Test::json_body($t->request(GET => "/api/ask/$id",
                                            headers => \@h));
    last if $j && $j->{status} =~ /^(completed|failed)$/;
    sleep 0.05;
}
is($j->{status}, 'completed', 'the job completed');

ok($until->(sub {
       total($m, qr/^ragnx_pool_jobs_total\{.*type="ask",outcome="completed"/)
       == 1 }, 8),
   'one ask job completed, counted once');
is(total($m, qr/^ragnx_pool_job_stage_seconds_count\{.*stage="llm"/), 1,
   'its LLM stage timed');
is(total($m, qr/^ragnx_pool_job_stage_seconds_count\{.*stage="queue_wait"/),
   1, 'its wait in the queue timed');
is(total($m, qr/^ragnx_pool_llm_requests_total\{.*provider="anthropic",
                model="claude-mock",status="2xx"/x), 1,
   'one LLM request, by provider, model and status class');
is(total($m, qr/^ragnx_pool_llm_tokens_total\{.*model="claude-mock",
                direction="out"/x), 7, 'the output tokens it reported');
for my $proc (processes($m)) {
    my $l = qq(process="$proc",stage="persist");
    is($m->{"ragnx_pool_job_stage_seconds_bucket{$l,le=\"+Inf\"}"},
       $m->{"ragnx_pool_job_stage_seconds_count{$l}"},
       "$proc: +Inf bucket == count");
}
ok(defined $m->{ragnx_queue_jobs}, 'queue depth');
is($m->{ragnx_queue_oldest_job_age_seconds}, '0.000',
   'no job waiting: oldest age 0');
ok(total($m, qr/^ragnx_pool_uptime_seconds\{/) >= 0, 'uptime');
promtool_ok($r->{body}, 'with the pool');

# ---- docs/grafana-dashboard.json against this scrape ----------------------

{
    my (%series, %type);
    for (split /\n/, $r->{body}) {
        $type{$1} = $2 if /^# TYPE (\S+) (\S+)$/;
        $series{$1} = 1 if /^(ragnx_\w+)[{ ]/;
    }
    my $dash = eval {
        JSON::PP->new->decode(Ragnx::Test::slurp(
            "$root/docs/grafana-dashboard.json"))
    };
    ok($dash, 'the dashboard parses') or diag($@);
    $dash ||= {};
    cmp_ok($dash->{schemaVersion} // 0, '>=', 36, 'schemaVersion');
    my ($ds) = grep { $_->{type} eq 'datasource' }
               @{ $dash->{templating}{list} || [] };
    is($ds && $ds->{query}, 'prometheus', 'a Prometheus datasource variable');

    my (@exprs, %ids);
    for my $panel (@{ $dash->{panels} || [] }) {
        $ids{ $panel->{id} }++;
        next if $panel->{type} eq 'row';
        is($panel->{datasource}{uid}, '${datasource}',
           "$panel->{title}: the datasource variable");
        for my $target (@{ $panel->{targets} || [] }) {
            push @exprs, [ $panel->{title}, $target->{expr} ];
        }
    }
    ok(!grep({ $_ > 1 } values %ids), 'panel ids are unique');
    cmp_ok(scalar @exprs, '>=', 20, scalar(@exprs) . ' queries');

    my %used;
    for (@exprs) {
        my ($title, $expr) = @$_;
        my @names = $expr =~ /\b(ragnx_\w+)/g;
        ok(@names, "$title: names a metric") or diag($expr);
        for my $n (@names) {
            $used{$n} = 1;
            ok($series{$n}, "$title: $n is in the scrape") or diag($expr);
            # a histogram's parts, never the family's bare name
            if ($n =~ /^(\w+)_(bucket|sum|count)$/ && $type{$1}) {
                is($type{$1}, 'histogram', "$title: $n of a histogram");
            }
        }
    }
    # what the dashboard has a panel for
    for my $n (qw(ragnx_http_requests_total
                  ragnx_http_request_duration_seconds_bucket
                  ragnx_queue_jobs ragnx_queue_oldest_job_age_seconds
                  ragnx_pool_job_stage_seconds_bucket
                  ragnx_pool_llm_tokens_total ragnx_redis_errors_total
                  ragnx_jwt_rejections_total ragnx_pool_processes)) {
        ok($used{$n}, "the dashboard shows $n");
    }

    # each query is PromQL: as a recording rule, Grafana's variables set
    SKIP: {
        skip 'promtool not installed (scripts/deps)', 1 unless $promtool;
        my $i = 0;
        my $rules = "groups:\n  - name: dashboard\n    rules:\n";
        for (@exprs) {
            (my $e = $_->[1]) =~ s/\$__rate_interval/5m/g;
            $e =~ s/\$instance/.*/g;
            $e =~ s/'/''/g;
            $rules .= "      - record: dashboard:query$i\n"
                    . "        expr: '$e'\n";
            $i++;
        }
        my $f = $t->file('dashboard-rules.yml', $rules);
        my $o = `$promtool check rules $f 2>&1`;
        is($?, 0, 'promtool parses every query') or diag $o;
    }
}

# a process killed: restarted under a new pid; the dead one's hash expires
my @procs = processes($m);
my @kids = $p->children;
is(scalar(@kids), 2, 'two worker processes');
my $victim = $kids[0];
my ($vkey) = grep { /:$victim$/ } @procs;
ok($vkey, "process $victim is in the scrape");
my $ttl = $t->redis('PTTL', "{ragnx}:metrics:$vkey");
ok($ttl > 0 && $ttl <= 6000, "its hash expires ($ttl ms)");
kill 'KILL', $victim;
ok($until->(sub { !grep({ $_ eq $vkey } processes($m))
                  && ($m->{ragnx_pool_processes} // 0) == 2 }, 12),
   'a killed process leaves the scrape when its hash expires; its '
   . 'replacement is in');
is($t->redis('SISMEMBER', '{ragnx}:metrics', "{ragnx}:metrics:$vkey"), 0,
   'and the list of processes');

# the pool stops: its processes leave at once
$p->stop;
($r, $m) = scrape();
is($m->{ragnx_pool_processes}, 0, 'a stopped pool leaves the scrape');
my @left = processes($m);
is(scalar(@left), 0, 'with all its series');
promtool_ok($r->{body}, 'after the pool stopped');

$t->done;
