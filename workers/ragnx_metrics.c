
/*
 * ragnx worker pool: the figures of one worker process.  Its threads
 * count with atomic adds; the maintenance thread publishes them every
 * RAGNX_METRICS_PERIOD to the hash {ragnx}:metrics:<host>:<pid>, which
 * expires after three periods (a process that dies without a word
 * vanishes from the scrape) and is listed in {ragnx}:metrics.  A field
 * is "<family>|<series>" with the series in Prometheus text, or
 * "# HELP <family>" / "# TYPE <family>"; nginx's /metrics gathers every
 * live process's hash into one scrape (ngx_module/lua/metrics.lua), with
 * a "process" label.
 *
 * It also beats, every RAGNX_BEAT_PERIOD: its member of {ragnx}:pool,
 * scored by Redis's clock, with PostgreSQL as its check thread last saw
 * it (workers/lua/beat.lua); /health counts the live processes and reads
 * the newest beat in one script call.
 */


#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "ragnx_worker.h"
#include "ragnx_db.h"
#include "ragnx_keys.h"
#include "ragnx_lua_workers.h"


#define RAGNX_METRICS_BOUNDS    14
#define RAGNX_METRICS_FIELDS    400
#define RAGNX_METRICS_TEXT      65536


typedef struct {
    unsigned long   bucket[RAGNX_METRICS_BOUNDS + 1];
    unsigned long   sum;           /* microseconds, or records */
} ragnx_hist_t;


typedef struct {
    unsigned long   jobs[RAGNX_METRICS_JOB_OUTCOMES];
    unsigned long   records;
    ragnx_hist_t    stage[RAGNX_METRICS_STAGES];
    ragnx_hist_t    batch;
    unsigned long   llm[RAGNX_METRICS_LLM_CLASSES];
    unsigned long   tokens_in;
    unsigned long   tokens_out;
} ragnx_metrics_t;


/* what the maintenance thread builds an HSET of */
typedef struct {
    int             argc;
    const char     *argv[RAGNX_METRICS_FIELDS];
    size_t          lens[RAGNX_METRICS_FIELDS];
    char            text[RAGNX_METRICS_TEXT];
    size_t          used;
    int             full;
} ragnx_metrics_hset_t;


static void ragnx_metrics_observe(ragnx_hist_t *h, const long long *bounds,
    long long v);
static void ragnx_metrics_add(ragnx_metrics_hset_t *hs, const char *fmt, ...);
static void ragnx_metrics_family(ragnx_metrics_hset_t *hs, const char *name,
    const char *type, const char *help);
static void ragnx_metrics_series(ragnx_metrics_hset_t *hs,
    const char *family, const char *series, unsigned long v);
static void ragnx_metrics_hist(ragnx_metrics_hset_t *hs, const char *name,
    const char *labels, ragnx_hist_t *h, const char **les, int seconds);
static void ragnx_metrics_label(char *buf, size_t len, const char *s);


static ragnx_metrics_t        ragnx_metrics;
static int                    ragnx_metrics_left;
static ragnx_metrics_hset_t   ragnx_metrics_hset;
static long long              ragnx_metrics_started;
static char                   ragnx_metrics_key[160];
static char                  *ragnx_metrics_member;   /* "<host>:<pid>" */

/* the check thread's last word on PostgreSQL, read by the heartbeat */
static int                    ragnx_metrics_pg_state;
static long long              ragnx_metrics_pg_at;     /* monotonic ms */

static ragnx_script_t         ragnx_metrics_beat_script = {
    RAGNX_LUA_BEAT, ""
};

static ragnx_script_t        *ragnx_metrics_scripts[] = {
    &ragnx_metrics_beat_script, NULL
};


static const char  *ragnx_metrics_job_outcomes[] = {
    "completed", "retried", "failed"
};

static const char  *ragnx_metrics_stages[] = {
    "queue_wait", "retrieval", "llm", "persist"
};

static const char  *ragnx_metrics_llm_classes[] = {
    "2xx", "4xx", "5xx", "other", "error"
};


/* stages: 1 ms to 60 s, in microseconds */
static const long long  ragnx_metrics_stage_bounds[] = {
    1000, 2500, 5000, 10000, 25000, 50000, 100000, 250000, 500000,
    1000000, 2500000, 5000000, 15000000, 60000000
};

static const char  *ragnx_metrics_stage_les[] = {
    "0.001", "0.0025", "0.005", "0.01", "0.025", "0.05", "0.1", "0.25",
    "0.5", "1", "2.5", "5", "15", "60"
};

/* records per batch */
static const long long  ragnx_metrics_batch_bounds[] = {
    1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192
};

static const char  *ragnx_metrics_batch_les[] = {
    "1", "2", "4", "8", "16", "32", "64", "128", "256", "512", "1024",
    "2048", "4096", "8192"
};


/* before the threads start: the process's key and start time */

void
ragnx_metrics_init(void)
{
    char  host[64];

    if (gethostname(host, sizeof(host)) != 0) {
        snprintf(host, sizeof(host), "host");
    }

    host[sizeof(host) - 1] = '\0';

    snprintf(ragnx_metrics_key, sizeof(ragnx_metrics_key), "%s%s:%ld",
             RAGNX_KEY_METRICS_PROCESS, host, (long) getpid());

    ragnx_metrics_member = ragnx_metrics_key
                           + sizeof(RAGNX_KEY_METRICS_PROCESS) - 1;
    ragnx_metrics_started = ragnx_now_ms();

    ragnx_redis_scripts_init(ragnx_metrics_scripts);
}


long long
ragnx_metrics_us(void)
{
    struct timespec  ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);

    return (long long) ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}


void
ragnx_metrics_job(int outcome)
{
    __atomic_fetch_add(&ragnx_metrics.jobs[outcome], 1, __ATOMIC_RELAXED);
}


/* a stage that began at "start" (ragnx_metrics_us()) has ended */

void
ragnx_metrics_stage(int stage, long long start)
{
    ragnx_metrics_observe(&ragnx_metrics.stage[stage],
                          ragnx_metrics_stage_bounds,
                          ragnx_metrics_us() - start);
}


/* a job waited in the queue since "created" (ms since the epoch) */

void
ragnx_metrics_wait(long long created)
{
    long long  ms;

    ms = ragnx_now_ms() - created;

    ragnx_metrics_observe(&ragnx_metrics.stage[RAGNX_METRICS_QUEUE_WAIT],
                          ragnx_metrics_stage_bounds,
                          ms > 0 ? ms * 1000 : 0);
}


/* an LLM request's HTTP status, or 0 when it got none */

void
ragnx_metrics_llm(long status)
{
    int  c;

    c = status == 0 ? RAGNX_METRICS_LLM_ERROR
        : (status >= 200 && status < 300) ? 0
        : (status >= 400 && status < 500) ? 1
        : (status >= 500 && status < 600) ? 2 : 3;

    __atomic_fetch_add(&ragnx_metrics.llm[c], 1, __ATOMIC_RELAXED);
}


void
ragnx_metrics_tokens(long in, long out)
{
    if (in > 0) {
        __atomic_fetch_add(&ragnx_metrics.tokens_in, (unsigned long) in,
                           __ATOMIC_RELAXED);
    }

    if (out > 0) {
        __atomic_fetch_add(&ragnx_metrics.tokens_out, (unsigned long) out,
                           __ATOMIC_RELAXED);
    }
}


/* a batch of n records was written */

void
ragnx_metrics_records(int n)
{
    __atomic_fetch_add(&ragnx_metrics.records, (unsigned long) n,
                       __ATOMIC_RELAXED);
    ragnx_metrics_observe(&ragnx_metrics.batch, ragnx_metrics_batch_bounds,
                          n);
}


static void
ragnx_metrics_observe(ragnx_hist_t *h, const long long *bounds, long long v)
{
    int  i;

    for (i = 0; i < RAGNX_METRICS_BOUNDS && v > bounds[i]; i++) {
        /* void */
    }

    __atomic_fetch_add(&h->bucket[i], 1, __ATOMIC_RELAXED);
    __atomic_fetch_add(&h->sum, (unsigned long) (v > 0 ? v : 0),
                       __ATOMIC_RELAXED);
}


/*
 * The process stops, from its main thread once its threads are done: its
 * figures leave the scrape now rather than when the hash expires (a
 * publication already under way may put them back until it does).
 */

void
ragnx_metrics_leave(void)
{
    redisReply     *reply;
    ragnx_redis_t   redis;

    __atomic_store_n(&ragnx_metrics_left, 1, __ATOMIC_RELEASE);

    if (ragnx_metrics_key[0] == '\0') {
        return;
    }

    memset(&redis, 0, sizeof(ragnx_redis_t));

    reply = ragnx_redis_command(&redis, "DEL %s", ragnx_metrics_key);
    if (reply) {
        freeReplyObject(reply);
    }

    reply = ragnx_redis_command(&redis, "SREM %s %s", RAGNX_KEY_METRICS,
                                ragnx_metrics_key);
    if (reply) {
        freeReplyObject(reply);
    }

    reply = ragnx_redis_command(&redis, "ZREM %s %s", RAGNX_KEY_POOL,
                                ragnx_metrics_member);
    if (reply) {
        freeReplyObject(reply);
    }

    ragnx_redis_close(&redis);
}


/* from the check thread: PostgreSQL answered a check, or did not */

void
ragnx_metrics_pg(int state)
{
    __atomic_store_n(&ragnx_metrics_pg_at, ragnx_mono_ms(), __ATOMIC_RELAXED);
    __atomic_store_n(&ragnx_metrics_pg_state, state, __ATOMIC_RELEASE);
}


/*
 * From the maintenance thread, every RAGNX_BEAT_PERIOD: this process is
 * alive, and saw PostgreSQL so that many ms ago (a stalled check shows
 * as an age that grows).
 */

void
ragnx_metrics_beat(ragnx_redis_t *redis)
{
    int          state;
    char         age[24];
    long long    at;
    redisReply  *reply;

    if (ragnx_metrics_member == NULL
        || __atomic_load_n(&ragnx_metrics_left, __ATOMIC_ACQUIRE))
    {
        return;
    }

    state = __atomic_load_n(&ragnx_metrics_pg_state, __ATOMIC_ACQUIRE);
    at = __atomic_load_n(&ragnx_metrics_pg_at, __ATOMIC_RELAXED);

    snprintf(age, sizeof(age), "%lld",
             state == RAGNX_PG_UNKNOWN ? 0 : ragnx_mono_ms() - at);

    reply = ragnx_redis_eval(redis, &ragnx_metrics_beat_script,
                             "2 %s %s %s %s %s", RAGNX_KEY_POOL,
                             RAGNX_KEY_POOL_PG, ragnx_metrics_member,
                             state == RAGNX_PG_OK ? "ok"
                             : state == RAGNX_PG_DOWN ? "down" : "",
                             age);

    if (reply && reply->type == REDIS_REPLY_ERROR) {
        ragnx_log(RAGNX_LOG_ERROR, "heartbeat: %s", reply->str);
    }

    if (reply) {
        freeReplyObject(reply);
    }
}


/*
 * From the maintenance thread: this process's figures to its hash, its
 * TTL renewed, its key listed.
 */

void
ragnx_metrics_publish(ragnx_redis_t *redis, ragnx_db_pool_t *db)
{
    int                    i, in_use, idle, waiting;
    char                   s[512], provider[128], model[256];
    redisReply            *reply;
    ragnx_metrics_hset_t  *hs;

    if (ragnx_metrics_key[0] == '\0'
        || __atomic_load_n(&ragnx_metrics_left, __ATOMIC_ACQUIRE))
    {
        return;
    }

    hs = &ragnx_metrics_hset;
    hs->argc = 0;
    hs->used = 0;
    hs->full = 0;

    ragnx_metrics_add(hs, "HSET");
    ragnx_metrics_add(hs, "%s", ragnx_metrics_key);

    ragnx_metrics_label(provider, sizeof(provider),
                        ragnx_conf->llm_provider ? ragnx_conf->llm_provider
                                                 : "none");
    ragnx_metrics_label(model, sizeof(model),
                        ragnx_conf->llm_model ? ragnx_conf->llm_model : "");

    ragnx_metrics_family(hs, "ragnx_pool_jobs_total", "counter",
                         "Jobs ended by this process, by type and outcome "
                         "(failed: dead-lettered).");

    for (i = 0; i < RAGNX_METRICS_JOB_OUTCOMES; i++) {
        snprintf(s, sizeof(s),
                 "ragnx_pool_jobs_total{type=\"ask\",outcome=\"%s\"}",
                 ragnx_metrics_job_outcomes[i]);
        ragnx_metrics_series(hs, "ragnx_pool_jobs_total", s,
                             __atomic_load_n(&ragnx_metrics.jobs[i],
                                             __ATOMIC_RELAXED));
    }

    ragnx_metrics_series(hs, "ragnx_pool_jobs_total",
                         "ragnx_pool_jobs_total{type=\"record\","
                         "outcome=\"completed\"}",
                         __atomic_load_n(&ragnx_metrics.records,
                                         __ATOMIC_RELAXED));

    ragnx_metrics_family(hs, "ragnx_pool_job_stage_seconds", "histogram",
                         "Time an ask job spent in each stage.");

    for (i = 0; i < RAGNX_METRICS_STAGES; i++) {
        snprintf(s, sizeof(s), "stage=\"%s\"", ragnx_metrics_stages[i]);
        ragnx_metrics_hist(hs, "ragnx_pool_job_stage_seconds", s,
                           &ragnx_metrics.stage[i], ragnx_metrics_stage_les,
                           1);
    }

    ragnx_metrics_family(hs, "ragnx_pool_record_batch_size", "histogram",
                         "Records written per batch (one statement, one "
                         "commit).");
    ragnx_metrics_hist(hs, "ragnx_pool_record_batch_size", NULL,
                       &ragnx_metrics.batch, ragnx_metrics_batch_les, 0);

    ragnx_metrics_family(hs, "ragnx_pool_llm_requests_total", "counter",
                         "Requests to the LLM provider, by status class "
                         "(error: no HTTP answer).");

    for (i = 0; i < RAGNX_METRICS_LLM_CLASSES; i++) {
        snprintf(s, sizeof(s), "ragnx_pool_llm_requests_total{provider=\"%s\","
                 "model=\"%s\",status=\"%s\"}", provider, model,
                 ragnx_metrics_llm_classes[i]);
        ragnx_metrics_series(hs, "ragnx_pool_llm_requests_total", s,
                             __atomic_load_n(&ragnx_metrics.llm[i],
                                             __ATOMIC_RELAXED));
    }

    ragnx_metrics_family(hs, "ragnx_pool_llm_tokens_total", "counter",
                         "Tokens the LLM provider reported, by model and "
                         "direction.");

    snprintf(s, sizeof(s), "ragnx_pool_llm_tokens_total{model=\"%s\","
             "direction=\"in\"}", model);
    ragnx_metrics_series(hs, "ragnx_pool_llm_tokens_total", s,
                         __atomic_load_n(&ragnx_metrics.tokens_in,
                                         __ATOMIC_RELAXED));
    snprintf(s, sizeof(s), "ragnx_pool_llm_tokens_total{model=\"%s\","
             "direction=\"out\"}", model);
    ragnx_metrics_series(hs, "ragnx_pool_llm_tokens_total", s,
                         __atomic_load_n(&ragnx_metrics.tokens_out,
                                         __ATOMIC_RELAXED));

    pthread_mutex_lock(&db->lock);
    in_use = db->total - db->nidle;
    idle = db->nidle;
    waiting = db->queued;
    pthread_mutex_unlock(&db->lock);

    ragnx_metrics_family(hs, "ragnx_pool_db_connections", "gauge",
                         "PostgreSQL connections of the job threads' pool, "
                         "by state.");
    ragnx_metrics_series(hs, "ragnx_pool_db_connections",
                         "ragnx_pool_db_connections{state=\"in_use\"}",
                         (unsigned long) in_use);
    ragnx_metrics_series(hs, "ragnx_pool_db_connections",
                         "ragnx_pool_db_connections{state=\"idle\"}",
                         (unsigned long) idle);

    ragnx_metrics_family(hs, "ragnx_pool_db_waiting", "gauge",
                         "Statements waiting for a PostgreSQL connection.");
    ragnx_metrics_series(hs, "ragnx_pool_db_waiting",
                         "ragnx_pool_db_waiting", (unsigned long) waiting);

    ragnx_metrics_family(hs, "ragnx_pool_uptime_seconds", "gauge",
                         "Seconds since the worker process started.");
    ragnx_metrics_series(hs, "ragnx_pool_uptime_seconds",
                         "ragnx_pool_uptime_seconds",
                         (unsigned long) ((ragnx_now_ms()
                                           - ragnx_metrics_started) / 1000));

    if (hs->full) {
        ragnx_log(RAGNX_LOG_ERROR, "metrics: more than %d fields",
                  RAGNX_METRICS_FIELDS);
        return;
    }

    reply = ragnx_redis_argv(redis, hs->argc, hs->argv, hs->lens);
    if (reply) {
        freeReplyObject(reply);
    }

    reply = ragnx_redis_command(redis, "PEXPIRE %s %d", ragnx_metrics_key,
                                3 * RAGNX_METRICS_PERIOD);
    if (reply) {
        freeReplyObject(reply);
    }

    reply = ragnx_redis_command(redis, "SADD %s %s", RAGNX_KEY_METRICS,
                                ragnx_metrics_key);
    if (reply) {
        freeReplyObject(reply);
    }
}


static void
ragnx_metrics_add(ragnx_metrics_hset_t *hs, const char *fmt, ...)
{
    int      n;
    va_list  args;

    if (hs->full || hs->argc == RAGNX_METRICS_FIELDS) {
        hs->full = 1;
        return;
    }

    va_start(args, fmt);
    n = vsnprintf(hs->text + hs->used, sizeof(hs->text) - hs->used, fmt,
                  args);
    va_end(args);

    if (n < 0 || (size_t) n >= sizeof(hs->text) - hs->used) {
        hs->full = 1;
        return;
    }

    hs->argv[hs->argc] = hs->text + hs->used;
    hs->lens[hs->argc] = (size_t) n;
    hs->argc++;
    hs->used += (size_t) n + 1;
}


static void
ragnx_metrics_family(ragnx_metrics_hset_t *hs, const char *name,
    const char *type, const char *help)
{
    ragnx_metrics_add(hs, "# HELP %s", name);
    ragnx_metrics_add(hs, "%s", help);
    ragnx_metrics_add(hs, "# TYPE %s", name);
    ragnx_metrics_add(hs, "%s", type);
}


static void
ragnx_metrics_series(ragnx_metrics_hset_t *hs, const char *family,
    const char *series, unsigned long v)
{
    ragnx_metrics_add(hs, "%s|%s", family, series);
    ragnx_metrics_add(hs, "%lu", v);
}


/* cumulative, from one reading of the buckets: +Inf is the count */

static void
ragnx_metrics_hist(ragnx_metrics_hset_t *hs, const char *name,
    const char *labels, ragnx_hist_t *h, const char **les, int seconds)
{
    int            i;
    char           s[512], sep[2];
    unsigned long  count, sum;

    sep[0] = labels ? ',' : '\0';
    sep[1] = '\0';
    labels = labels ? labels : "";
    count = 0;

    for (i = 0; i <= RAGNX_METRICS_BOUNDS; i++) {
        count += __atomic_load_n(&h->bucket[i], __ATOMIC_RELAXED);
        snprintf(s, sizeof(s), "%s_bucket{%s%sle=\"%s\"}", name, labels, sep,
                 i < RAGNX_METRICS_BOUNDS ? les[i] : "+Inf");
        ragnx_metrics_series(hs, name, s, count);
    }

    sum = __atomic_load_n(&h->sum, __ATOMIC_RELAXED);

    snprintf(s, sizeof(s), "%s_sum%s%s%s", name, labels[0] ? "{" : "",
             labels, labels[0] ? "}" : "");
    ragnx_metrics_add(hs, "%s|%s", name, s);

    if (seconds) {
        ragnx_metrics_add(hs, "%lu.%06lu", sum / 1000000, sum % 1000000);

    } else {
        ragnx_metrics_add(hs, "%lu", sum);
    }

    snprintf(s, sizeof(s), "%s_count%s%s%s", name, labels[0] ? "{" : "",
             labels, labels[0] ? "}" : "");
    ragnx_metrics_series(hs, name, s, count);
}


/* a label value: quotes, backslashes and newlines escaped, cut to fit */

static void
ragnx_metrics_label(char *buf, size_t len, const char *s)
{
    size_t  n;

    for (n = 0; *s && n + 3 < len; s++) {
        if (*s == '"' || *s == '\\' || *s == '\n') {
            buf[n++] = '\\';
            buf[n++] = (*s == '\n') ? 'n' : *s;

        } else {
            buf[n++] = *s;
        }
    }

    buf[n] = '\0';
}
