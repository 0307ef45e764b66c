
/*
 * ragnx worker pool: the queue on Redis Streams (shared/ragnx_keys.h).
 *
 * A job thread reads one entry of {ragnx}:jobs with XREADGROUP in group
 * "pool" and finishes it with one script that updates the job hash and
 * acknowledges and deletes the entry (XACK + XDEL: XLEN stays the queue
 * depth the module checks), so the hash and the stream never disagree.
 * Retries wait in {ragnx}:delayed; exhausted and permanent failures go to
 * {ragnx}:dead, trimmed to dead_max.  The maintenance thread of each
 * worker process moves due retries back to the stream, renews the idle
 * time of the entries its threads hold (heartbeat), and requeues entries
 * idle longer than visibility_timeout: those of a dead worker.
 */


#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ragnx_worker.h"
#include "ragnx_keys.h"
#include "ragnx_lua_workers.h"
#include "ragnx_query.h"
#include "ragnx_uuid.h"


static void ragnx_queue_entry(ragnx_entry_t *e, redisReply *entry);


/*
 * The queue's scripts: one file each in workers/lua/, where their keys
 * and arguments are written, embedded at build time by scripts/embed-lua
 * and run by EVALSHA (ragnx_redis_eval()).
 */

/* a job starts: its attempt number, or -1 when it already finished */
static ragnx_script_t  ragnx_script_start = { RAGNX_LUA_START, "" };

/* a job ends: cache, hash, entry, followers; and the thread's next entry */
static ragnx_script_t  ragnx_script_complete = { RAGNX_LUA_COMPLETE, "" };

/* a job waits for a retry in the delayed set */
static ragnx_script_t  ragnx_script_retry = { RAGNX_LUA_RETRY, "" };

/* a job fails for good: dead-lettered, with its followers */
static ragnx_script_t  ragnx_script_fail = { RAGNX_LUA_FAIL, "" };

/* due retries back to the stream */
static ragnx_script_t  ragnx_script_promote = { RAGNX_LUA_PROMOTE, "" };

/* entries of a dead worker back to the stream */
static ragnx_script_t  ragnx_script_reclaim = { RAGNX_LUA_RECLAIM, "" };

/* an entry read while draining back to the stream for others */
static ragnx_script_t  ragnx_script_release = { RAGNX_LUA_RELEASE, "" };

/* an entry acknowledged and deleted */
static ragnx_script_t  ragnx_script_ack = { RAGNX_LUA_ACK, "" };

/* consumers of workers gone out of the group */
static ragnx_script_t  ragnx_script_forget = { RAGNX_LUA_FORGET, "" };

/* the cache generation, held by one model's pools at a time */
static ragnx_script_t  ragnx_script_gen = { RAGNX_LUA_GEN, "" };

/* in-flight fields of leaders no longer pending removed */
static ragnx_script_t  ragnx_script_sweep = { RAGNX_LUA_SWEEP, "" };

/* a dead worker process's entries back to the stream, by its consumers */
static ragnx_script_t  ragnx_script_handover = { RAGNX_LUA_HANDOVER, "" };

/* a piece of an answer as it is written, and its listeners woken */
static ragnx_script_t  ragnx_script_delta = { RAGNX_LUA_DELTA, "" };

static ragnx_script_t  *ragnx_scripts[] = {
    &ragnx_script_start, &ragnx_script_complete, &ragnx_script_retry,
    &ragnx_script_fail, &ragnx_script_promote, &ragnx_script_reclaim,
    &ragnx_script_release, &ragnx_script_ack, &ragnx_script_forget,
    &ragnx_script_sweep, &ragnx_script_handover, &ragnx_script_gen,
    &ragnx_script_delta, NULL
};


/*
 * A piece of job id's answer ("delta", text) or the mark that an attempt
 * starts again ("restart"): workers/lua/delta.lua.  The reply, NULL when
 * Redis is away.
 */

redisReply *
ragnx_queue_delta(ragnx_redis_t *r, const char *id, const char *type,
    long attempt, const char *text, size_t len)
{
    char  events[128], listen[128], a[24], ttl[24];

    snprintf(events, sizeof(events), RAGNX_KEY_EVENTS "%s", id);
    snprintf(listen, sizeof(listen), RAGNX_KEY_LISTEN "%s", id);
    snprintf(a, sizeof(a), "%ld", attempt);
    snprintf(ttl, sizeof(ttl), "%ld", ragnx_conf->job_retention);

    return ragnx_redis_eval(r, &ragnx_script_delta, "2 %s %s %s %s %b %s %s "
                            "%s", events, listen, type, a, text, len,
                            RAGNX_EVENTS_MAX, ttl, id);
}


/* the scripts' SHA1s: once, before any thread runs */

void
ragnx_queue_init(void)
{
    ragnx_redis_scripts_init(ragnx_scripts);
}



/* the group "pool" on both lanes, jobs and records */

int
ragnx_queue_setup(ragnx_redis_t *r)
{
    if (ragnx_queue_group(r, RAGNX_KEY_JOBS) != RAGNX_OK) {
        return RAGNX_ERROR;
    }

    return ragnx_queue_group(r, RAGNX_KEY_RECORDS);
}


int
ragnx_queue_group(ragnx_redis_t *r, const char *stream)
{
    redisReply  *reply;

    reply = ragnx_redis_command(r, "XGROUP CREATE %s %s 0 MKSTREAM", stream,
                                RAGNX_GROUP);
    if (reply == NULL) {
        return RAGNX_ERROR;
    }

    if (reply->type == REDIS_REPLY_ERROR
        && strncmp(reply->str, "BUSYGROUP", 9) != 0)
    {
        ragnx_log_error(RAGNX_LOG_ERROR, RAGNX_ERR_REDIS,
                        "redis XGROUP CREATE %s: %s", stream,
                        reply->str);
        freeReplyObject(reply);
        return RAGNX_ERROR;
    }

    freeReplyObject(reply);
    return RAGNX_OK;
}


/*
 * The generation "<llm_model>@<version>", as gen.lua allows: how is
 * RAGNX_GEN_REFRESH, _CLAIM or _BUMP.  The generation in Redis after it
 * comes back in gen (another model's, when its pools hold it).
 */

int
ragnx_queue_set_gen(ragnx_redis_t *r, long long version, int how, char *gen,
    size_t len)
{
    redisReply  *reply;

    reply = ragnx_redis_eval(r, &ragnx_script_gen, "2 %s %s %s %lld %d %s",
                             RAGNX_KEY_GEN, RAGNX_KEY_GEN_OWNER,
                             ragnx_conf->llm_model, version,
                             how == RAGNX_GEN_BUMP ? 0 : RAGNX_GEN_LEASE,
                             how == RAGNX_GEN_CLAIM ? "1" : "0");

    if (reply && reply->type == REDIS_REPLY_STRING) {
        snprintf(gen, len, "%.*s", (int) reply->len, reply->str);
        freeReplyObject(reply);
        return RAGNX_OK;
    }

    if (ragnx_reply_ok(r, reply, "gen script") == RAGNX_OK) {
        ragnx_log(RAGNX_LOG_ERROR, "gen script: unexpected reply");
    }

    return RAGNX_ERROR;
}


void
ragnx_entry_free(ragnx_entry_t *e)
{
    free(e->payload);
    free(e->gen);
    memset(e, 0, sizeof(ragnx_entry_t));
}

/*
 * RAGNX_OK with an entry, RAGNX_AGAIN when none arrived in block_ms,
 * RAGNX_ERROR when Redis failed (the caller backs off).  An entry without
 * the expected fields comes back with an empty payload: it is dead-lettered
 * by the caller.
 */

int
ragnx_queue_read(ragnx_redis_t *r, ragnx_entry_t *e, int block_ms)
{
    int          rc;
    redisReply  *reply, *entry;

    memset(e, 0, sizeof(ragnx_entry_t));

    reply = ragnx_redis_command(r, "XREADGROUP GROUP %s %s COUNT 1 BLOCK %d "
                                "STREAMS %s >", RAGNX_GROUP, r->consumer,
                                block_ms, RAGNX_KEY_JOBS);
    if (reply == NULL) {
        return RAGNX_ERROR;
    }

    rc = ragnx_stream_entry(reply, RAGNX_KEY_JOBS, &entry);

    if (rc != RAGNX_OK) {
        freeReplyObject(reply);

        if (rc == RAGNX_DECLINED) {
            ragnx_log(RAGNX_LOG_WARN, "consumer group missing: creating it");
            return ragnx_queue_setup(r) == RAGNX_OK ? RAGNX_AGAIN
                                                    : RAGNX_ERROR;
        }

        return rc;
    }

    ragnx_queue_entry(e, entry);
    freeReplyObject(reply);

    return RAGNX_OK;
}


/* an entry from a reply, [id, [field, value, ...]], into e */

static void
ragnx_queue_entry(ragnx_entry_t *e, redisReply *entry)
{
    size_t       i;
    redisReply  *fields, *f, *v;

    snprintf(e->entry, sizeof(e->entry), "%s", entry->element[0]->str);

    fields = entry->element[1];

    for (i = 0; i + 1 < fields->elements; i += 2) {
        f = fields->element[i];
        v = fields->element[i + 1];

        if (f->type != REDIS_REPLY_STRING || v->type != REDIS_REPLY_STRING) {
            continue;
        }

        if (strcmp(f->str, "id") == 0) {
            snprintf(e->id, sizeof(e->id), "%.*s", (int) v->len, v->str);

        } else if (strcmp(f->str, "job") == 0 && e->payload == NULL) {
            e->payload = malloc(v->len + 1);
            if (e->payload) {
                memcpy(e->payload, v->str, v->len);
                e->payload[v->len] = '\0';
                e->len = v->len;
            }

        } else if (strcmp(f->str, "gen") == 0 && e->gen == NULL) {
            e->gen = strndup(v->str, v->len);
        }
    }
}


/* an entry read while draining goes back to the stream for others */

int
ragnx_queue_ack(ragnx_redis_t *r, const ragnx_entry_t *e)
{
    return ragnx_reply_ok(r, ragnx_redis_eval(r, &ragnx_script_ack, "1 %s %s",
                                              RAGNX_KEY_JOBS, e->entry),
                          "ack script");
}


int
ragnx_queue_release(ragnx_redis_t *r, const ragnx_entry_t *e)
{
    char         key[128];
    redisReply  *reply;

    snprintf(key, sizeof(key), RAGNX_KEY_JOB "%s", e->id);

    /* a start by the completing script (attempts -1: none) is undone */
    reply = ragnx_redis_eval(r, &ragnx_script_release, "2 %s %s %s %s %b %s "
                             "%s", RAGNX_KEY_JOBS, key, e->entry, e->id,
                             e->payload ? e->payload : "",
                             e->payload ? e->len : 0, e->gen ? e->gen : "",
                             e->started && e->attempts > 0 ? "1" : "0");

    return ragnx_reply_ok(r, reply, "release script");
}


/* the attempt number, or -1 when the job was already finished */

int
ragnx_queue_start(ragnx_redis_t *r, const ragnx_entry_t *e, long *attempts)
{
    char         key[128], now[32], ret[32];
    redisReply  *reply;

    snprintf(key, sizeof(key), RAGNX_KEY_JOB "%s", e->id);
    snprintf(now, sizeof(now), "%lld", ragnx_now_ms());
    snprintf(ret, sizeof(ret), "%ld", ragnx_conf->job_retention);

    reply = ragnx_redis_eval(r, &ragnx_script_start, "1 %s %s %s", key, now,
                             ret);
    if (reply == NULL) {
        return RAGNX_ERROR;
    }

    if (reply->type != REDIS_REPLY_INTEGER) {
        ragnx_log(RAGNX_LOG_ERROR, "start script: %s",
                  reply->type == REDIS_REPLY_ERROR ? reply->str : "bad reply");
        freeReplyObject(reply);
        return RAGNX_ERROR;
    }

    *attempts = (long) reply->integer;
    freeReplyObject(reply);

    return RAGNX_OK;
}


/*
 * With next not NULL, the next entry for this thread comes back in it
 * (next->entry empty when there was none).
 */

int
ragnx_queue_complete(ragnx_redis_t *r, const ragnx_entry_t *e,
    const ragnx_job_t *job, const ragnx_answer_t *ans, ragnx_entry_t *next)
{
    int          rc;
    redisReply  *entry;
    char         events[128], watch[128], key[128], inflight[512],
                 followers[160], cache[512],
                 gen[256], now[32], ret[32], ttl[32], *sources, *result;
    const char  *at;
    json_t      *res;
    redisReply  *reply;

    /*
     * The answer is cached under the generation of the model that
     * computed it, this pool's, at the corpus version the job came with:
     * never under another model's name, even when the job was enqueued
     * while that model's pools held the generation.  The in-flight field
     * is the enqueuer's, as the ask script wrote it.
     */
    at = strrchr(job->gen, '@');
    snprintf(gen, sizeof(gen), "%s@%s", ragnx_conf->llm_model,
             at ? at + 1 : "0");

    if (ragnx_inflight_field(job->digest, job->gen, strlen(job->gen),
                             inflight, sizeof(inflight)) == 0
        || ragnx_cache_key(job->digest, gen, strlen(gen), cache,
                           sizeof(cache)) == 0)
    {
        ragnx_log_job(RAGNX_LOG_ERROR, job, RAGNX_ERR_INTERNAL,
                      "generation too long");
        return RAGNX_ERROR;
    }

    snprintf(key, sizeof(key), RAGNX_KEY_JOB "%s", job->id);
    snprintf(events, sizeof(events), RAGNX_KEY_EVENTS "%s", job->id);
    snprintf(watch, sizeof(watch), RAGNX_KEY_WATCH "%s", job->id);
    snprintf(followers, sizeof(followers),
             RAGNX_KEY_JOB "%s" RAGNX_KEY_FOLLOWERS, job->id);
    snprintf(now, sizeof(now), "%lld", ragnx_now_ms());
    snprintf(ret, sizeof(ret), "%ld", ragnx_conf->job_retention);

    /* only answers no chat history went into: a contextual one is its
     * chat's alone */
    snprintf(ttl, sizeof(ttl), "%ld",
             ans->contextual || ans->truncated ? 0 : ragnx_conf->cache_ttl);

    res = json_pack("{s:s,s:O}", "answer", ans->answer, "sources",
                    ans->sources);

    /* never cached (above): a follower's record keeps the mark */
    if (res && ans->truncated) {
        json_object_set_new(res, "truncated", json_true());
    }

    result = res ? json_dumps(res, JSON_COMPACT) : NULL;
    sources = json_dumps(ans->sources, JSON_COMPACT);
    json_decref(res);

    if (result == NULL || sources == NULL) {
        free(result);
        free(sources);
        return RAGNX_ERROR;
    }

    reply = ragnx_redis_eval(r, &ragnx_script_complete, "8 %s %s %s %s %s "
                                "%s %s %s %s %s %s %s %s %s %s %s %s %s %s",
                                key, RAGNX_KEY_JOBS, RAGNX_KEY_INFLIGHT,
                                followers, cache, RAGNX_KEY_RECORDS, events,
                                watch, e->entry, now,
                                ans->answer, sources,
                                ret, job->id, result, ttl,
                                next ? r->consumer : "", inflight,
                                ans->truncated ? "1" : "");
    free(result);
    free(sources);

    if (reply && reply->type == REDIS_REPLY_ARRAY && reply->elements >= 1
        && reply->element[0]->type == REDIS_REPLY_INTEGER)
    {
        if (reply->element[0]->integer > 0) {
            ragnx_log_job(RAGNX_LOG_DEBUG, job, RAGNX_ERR_NONE,
                          "%lld followers answered",
                          reply->element[0]->integer);
        }

        if (next && reply->elements >= 2
            && ragnx_stream_entry(reply->element[1], RAGNX_KEY_JOBS, &entry)
               == RAGNX_OK)
        {
            ragnx_queue_entry(next, entry);

            if (reply->elements == 3
                && reply->element[2]->type == REDIS_REPLY_INTEGER)
            {
                next->attempts = (long) reply->element[2]->integer;
                next->started = 1;
            }
        }

        freeReplyObject(reply);
        return RAGNX_OK;
    }

    rc = ragnx_reply_ok(r, reply, "complete script");

    return rc;
}


int
ragnx_queue_retry(ragnx_redis_t *r, const ragnx_entry_t *e,
    long long delay_ms, const char *error, const char *held, int undo)
{
    char          key[128], now[32], due[32];
    long long     t;
    redisReply   *reply;

    t = ragnx_now_ms();
    snprintf(key, sizeof(key), RAGNX_KEY_JOB "%s", e->id);
    snprintf(now, sizeof(now), "%lld", t);
    snprintf(due, sizeof(due), "%lld", t + delay_ms);

    reply = ragnx_redis_eval(r, &ragnx_script_retry, "3 %s %s %s %s %s %s %s "
                                "%b %s %s %ld %s %s", key, RAGNX_KEY_JOBS,
                                RAGNX_KEY_DELAYED, e->entry, now, due, error,
                                e->payload, e->len, e->id,
                                e->gen ? e->gen : "",
                                ragnx_conf->job_retention,
                                held ? held : "", undo ? "1" : "0");

    return ragnx_reply_ok(r, reply, "retry script");
}


/* job may be NULL: an entry that could not be decoded */

int
ragnx_queue_fail(ragnx_redis_t *r, const ragnx_entry_t *e,
    const ragnx_job_t *job, const char *error, int shared)
{
    int           valid;
    char          events[128], watch[128], key[128], inflight[512],
                  followers[160], now[32], ret[32],
                  max[32];
    const char   *payload;
    size_t        len;
    redisReply   *reply;

    valid = ragnx_uuid_valid(e->id, strlen(e->id));

    snprintf(key, sizeof(key), RAGNX_KEY_JOB "%s", valid ? e->id : "-");
    snprintf(events, sizeof(events), RAGNX_KEY_EVENTS "%s",
             valid ? e->id : "-");
    snprintf(watch, sizeof(watch), RAGNX_KEY_WATCH "%s", valid ? e->id : "-");
    snprintf(followers, sizeof(followers),
             RAGNX_KEY_JOB "%s" RAGNX_KEY_FOLLOWERS, valid ? e->id : "-");

    /* too long a generation leaves the field to the sweep, as no job */

    if (job == NULL
        || ragnx_inflight_field(job->digest, job->gen, strlen(job->gen),
                                inflight, sizeof(inflight)) == 0)
    {
        inflight[0] = '\0';
    }

    snprintf(now, sizeof(now), "%lld", ragnx_now_ms());
    snprintf(ret, sizeof(ret), "%ld", ragnx_conf->job_retention);
    snprintf(max, sizeof(max), "%ld", ragnx_conf->dead_max);

    payload = e->payload ? e->payload : "";
    len = e->payload ? e->len : 0;

    reply = ragnx_redis_eval(r, &ragnx_script_fail, "7 %s %s %s %s %s %s %s "
                                "%s %s %s %s %s %b %s %s %s %s %s", key,
                                RAGNX_KEY_JOBS, RAGNX_KEY_DEAD,
                                RAGNX_KEY_INFLIGHT, followers, events, watch,
                                e->entry, now,
                                error, ret, e->id, payload, len, max,
                                valid ? "1" : "0", inflight,
                                e->gen ? e->gen : "", shared ? "1" : "0");

    if (reply && reply->type != REDIS_REPLY_ERROR) {
        ragnx_metrics_job(RAGNX_METRICS_FAILED);
    }

    return ragnx_reply_ok(r, reply, "fail script");
}


/* due retries back to the stream, and entries of dead workers */

/* where the in-flight sweep goes on: a SCAN cursor */
static char  ragnx_sweep_cursor[32] = "0";


/* the streams consumed by the group, each requeued when idle too long */
static const char  *ragnx_lanes[] = { RAGNX_KEY_JOBS, RAGNX_KEY_RECORDS };


int
ragnx_queue_maintain(ragnx_redis_t *r)
{
    int          i;
    char         now[32], idle[32];
    redisReply  *reply;

    snprintf(now, sizeof(now), "%lld", ragnx_now_ms());

    reply = ragnx_redis_eval(r, &ragnx_script_promote, "3 %s %s %s %s 500 "
                             "%ld", RAGNX_KEY_DELAYED, RAGNX_KEY_JOBS,
                             RAGNX_KEY_DEAD, now, ragnx_conf->dead_max);

    if (reply && reply->type == REDIS_REPLY_INTEGER && reply->integer > 0) {
        ragnx_log(RAGNX_LOG_WARN, "%lld delayed jobs had lost their hash: "
                  "dead-lettered", reply->integer);
    }

    if (ragnx_reply_ok(r, reply, "promote script") != RAGNX_OK) {
        return RAGNX_ERROR;
    }

    /* the maintenance thread is this process's only caller */
    reply = ragnx_redis_eval(r, &ragnx_script_sweep, "1 %s %s",
                             RAGNX_KEY_INFLIGHT, ragnx_sweep_cursor);
    if (reply && reply->type == REDIS_REPLY_STRING
        && reply->len < sizeof(ragnx_sweep_cursor))
    {
        memcpy(ragnx_sweep_cursor, reply->str, reply->len);
        ragnx_sweep_cursor[reply->len] = '\0';
    }

    if (ragnx_reply_ok(r, reply, "sweep script") != RAGNX_OK) {
        return RAGNX_ERROR;
    }

    snprintf(idle, sizeof(idle), "%ld", ragnx_conf->visibility_timeout);

    /* both lanes: the records are written again, changing nothing */

    for (i = 0; i < 2; i++) {
        reply = ragnx_redis_eval(r, &ragnx_script_reclaim, "1 %s %s %s",
                                 ragnx_lanes[i], r->consumer, idle);
        if (reply == NULL) {
            return RAGNX_ERROR;
        }

        if (reply->type == REDIS_REPLY_INTEGER && reply->integer > 0) {
            ragnx_log(RAGNX_LOG_WARN, "requeued %lld entries of %s idle for "
                      "over %ld ms (a worker died)", reply->integer,
                      ragnx_lanes[i], ragnx_conf->visibility_timeout);
        }

        if (reply->type == REDIS_REPLY_ERROR
            && strstr(reply->str, "NOGROUP") != NULL)
        {
            freeReplyObject(reply);
            return ragnx_queue_setup(r);
        }

        if (ragnx_reply_ok(r, reply, "reclaim script") != RAGNX_OK) {
            return RAGNX_ERROR;
        }
    }

    return RAGNX_OK;
}


/* remove consumers idle for idle_ms with nothing pending */

int
ragnx_queue_forget(ragnx_redis_t *r, long idle_ms)
{
    int          i, rc;
    redisReply  *reply;

    static const char  *streams[] = { RAGNX_KEY_JOBS, RAGNX_KEY_RECORDS,
                                      RAGNX_KEY_RPC };

    rc = RAGNX_OK;

    for (i = 0; i < 3; i++) {
        reply = ragnx_redis_eval(r, &ragnx_script_forget, "1 %s %ld",
                                 streams[i], idle_ms);

        if (reply && reply->type == REDIS_REPLY_INTEGER
            && reply->integer > 0)
        {
            ragnx_log(RAGNX_LOG_INFO, "removed %lld idle consumers from the "
                      "group of %s", reply->integer, streams[i]);
        }

        if (ragnx_reply_ok(r, reply, "forget script") != RAGNX_OK) {
            rc = RAGNX_ERROR;
        }
    }

    return rc;
}


/*
 * The supervisor's: the entries held by the consumers "<prefix><index>"
 * of a worker process it has reaped go back to the end of their streams,
 * jobs and records, as new entries; the consumers leave the group.
 */

int
ragnx_queue_handover(ragnx_redis_t *r, const char *prefix)
{
    redisReply  *reply;

    reply = ragnx_redis_eval(r, &ragnx_script_handover, "2 %s %s %s",
                             RAGNX_KEY_JOBS, RAGNX_KEY_RECORDS, prefix);

    if (reply && reply->type == REDIS_REPLY_ARRAY && reply->elements == 2
        && reply->element[0]->type == REDIS_REPLY_INTEGER
        && reply->element[1]->type == REDIS_REPLY_INTEGER)
    {
        if (reply->element[0]->integer + reply->element[1]->integer > 0) {
            ragnx_log(RAGNX_LOG_WARN, "handed over %lld jobs and %lld "
                      "records held by %s* (the process is gone)",
                      reply->element[0]->integer, reply->element[1]->integer,
                      prefix);
        }

        freeReplyObject(reply);
        return RAGNX_OK;
    }

    if (ragnx_reply_ok(r, reply, "handover script") == RAGNX_OK) {
        ragnx_log(RAGNX_LOG_ERROR, "handover script: unexpected reply");
    }

    return RAGNX_ERROR;
}
