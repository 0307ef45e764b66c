
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
#include "ragnx_query.h"
#include "ragnx_uuid.h"


static void ragnx_queue_entry(ragnx_entry_t *e, redisReply *entry);


/* a job starts: its attempt number, or -1 when it already finished */

#define RAGNX_LUA_START                                                       \
"local function start(k, now, ret)\n"                                         \
"  local st = redis.call('HGET', k, 'status')\n"                              \
"  if st == 'completed' or st == 'failed' then return -1 end\n"               \
"  redis.call('HSET', k, 'status', 'active', 'updatedAt', now)\n"             \
"  if redis.call('TTL', k) < 0 then redis.call('EXPIRE', k, ret) end\n"       \
"  return redis.call('HINCRBY', k, 'attempts', 1)\n"                          \
"end\n"


/* KEYS: job hash; ARGV: now, retention */

static const char  ragnx_script_start_text[] =
RAGNX_LUA_START
"return start(KEYS[1], ARGV[1], ARGV[2])\n";


/*
 * KEYS: job hash, jobs stream, inflight hash, followers, cache key.
 * ARGV: entry, now, answer, sources, retention, job id, result JSON,
 * cache ttl (0: no cache SET), consumer ('' : read nothing), inflight
 * field.
 * Followers get a "record" job carrying the result, through the stream.
 * Returns {followers, next, attempts}: with a consumer, the thread's next
 * entry is read here (XREADGROUP without BLOCK, as a script may) and,
 * when its id field is a UUID (as ragnx_uuid_valid() checks), started as
 * the start script would; a busy thread saves two round trips per job.
 * next is nil when the stream is empty (or the read failed: the thread
 * then reads as usual, and sees why).
 */

static const char  ragnx_script_complete_text[] =
RAGNX_LUA_START
"local now = ARGV[2]\n"
"if tonumber(ARGV[8]) > 0 then\n"
"  redis.call('SET', KEYS[5], ARGV[7], 'EX', ARGV[8])\n"
"end\n"

"redis.call('HSET', KEYS[1], 'status', 'completed', 'answer', ARGV[3],\n"
"  'sources', ARGV[4], 'updatedAt', now)\n"
"redis.call('HDEL', KEYS[1], 'error')\n"
"redis.call('EXPIRE', KEYS[1], ARGV[5])\n"
"if ARGV[1] ~= '' then\n"
"  redis.call('XACK', KEYS[2], '" RAGNX_GROUP "', ARGV[1])\n"
"  redis.call('XDEL', KEYS[2], ARGV[1])\n"
"end\n"
"if redis.call('HGET', KEYS[3], ARGV[10]) == ARGV[6] then\n"
"  redis.call('HDEL', KEYS[3], ARGV[10])\n"
"end\n"
"local fs = redis.call('LRANGE', KEYS[4], 0, -1)\n"
"redis.call('DEL', KEYS[4])\n"
"for _, f in ipairs(fs) do\n"
"  local fk = '" RAGNX_KEY_JOB "' .. f\n"
"  local p = redis.call('HGET', fk, 'payload')\n"
"  local ok, j = false, nil\n"
"  if p then ok, j = pcall(cjson.decode, p) end\n"
"  if ok and type(j) == 'table' and j['id'] == f then\n"
"    j['type'] = 'record'\n"
"    j['result'] = nil\n"
"    local s = cjson.encode(j)\n"
"    s = string.sub(s, 1, -2) .. ',\"result\":' .. ARGV[7] .. '}'\n"
"    redis.call('HSET', fk, 'payload', s, 'updatedAt', now)\n"
"    redis.call('XADD', KEYS[2], '*', 'id', f, 'job', s)\n"
"  elseif p then\n"
"    redis.call('HSET', fk, 'status', 'failed', 'error', 'internal error',\n"
"      'updatedAt', now)\n"
"    redis.call('EXPIRE', fk, ARGV[5])\n"
"  end\n"
"end\n"
"if ARGV[9] == '' then return {#fs} end\n"
"local n = redis.pcall('XREADGROUP', 'GROUP', '" RAGNX_GROUP "', ARGV[9],\n"
"  'COUNT', 1, 'STREAMS', KEYS[2], '>')\n"
"if type(n) ~= 'table' or n['err'] then return {#fs} end\n"
"local f, id = n[1][2][1][2], nil\n"
"for i = 1, #f - 1, 2 do\n"
"  if f[i] == 'id' then id = f[i + 1] break end\n"
"end\n"
"if id and string.match(id, '^%x%x%x%x%x%x%x%x%-%x%x%x%x%-%x%x%x%x%-'\n"
"  .. '%x%x%x%x%-%x%x%x%x%x%x%x%x%x%x%x%x$') then\n"
"  return {#fs, n, start('" RAGNX_KEY_JOB "' .. id, now, ARGV[5])}\n"
"end\n"
"return {#fs, n}\n";


/*
 * KEYS: job hash, jobs stream, delayed set.
 * ARGV: entry, now, due, error, payload, job id.
 */

static const char  ragnx_script_retry_text[] =
"redis.call('HSET', KEYS[1], 'status', 'delayed', 'error', ARGV[4],\n"
"  'updatedAt', ARGV[2], 'payload', ARGV[5])\n"
"redis.call('ZADD', KEYS[3], ARGV[3], ARGV[6])\n"
"redis.call('XACK', KEYS[2], '" RAGNX_GROUP "', ARGV[1])\n"
"redis.call('XDEL', KEYS[2], ARGV[1])\n"
"return 1\n";


/*
 * KEYS: job hash, jobs stream, dead stream, inflight hash, followers.
 * ARGV: entry, now, error, retention, job id, payload, dead max,
 * "1" when the job hash keys are valid (else only dead-letter), inflight
 * field ('' when the job could not be decoded).
 */

static const char  ragnx_script_fail_text[] =
"local now = ARGV[2]\n"
"redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[7], '*', 'id', ARGV[5],\n"
"  'job', ARGV[6], 'error', ARGV[3], 'failedAt', now)\n"
"redis.call('XACK', KEYS[2], '" RAGNX_GROUP "', ARGV[1])\n"
"redis.call('XDEL', KEYS[2], ARGV[1])\n"
"if ARGV[8] ~= '1' then return 0 end\n"
"redis.call('HSET', KEYS[1], 'status', 'failed', 'error', ARGV[3],\n"
"  'updatedAt', now)\n"
"redis.call('EXPIRE', KEYS[1], ARGV[4])\n"
"if redis.call('HGET', KEYS[4], ARGV[9]) == ARGV[5] then\n"
"  redis.call('HDEL', KEYS[4], ARGV[9])\n"
"end\n"
"local fs = redis.call('LRANGE', KEYS[5], 0, -1)\n"
"redis.call('DEL', KEYS[5])\n"
"for _, f in ipairs(fs) do\n"
"  local fk = '" RAGNX_KEY_JOB "' .. f\n"
"  if redis.call('EXISTS', fk) == 1 then\n"
"    redis.call('HSET', fk, 'status', 'failed', 'error', ARGV[3],\n"
"      'updatedAt', now)\n"
"    redis.call('EXPIRE', fk, ARGV[4])\n"
"  end\n"
"end\n"
"return #fs\n";


/* KEYS: delayed set, jobs stream; ARGV: now, limit */

static const char  ragnx_script_promote_text[] =
"local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1],\n"
"  'LIMIT', 0, ARGV[2])\n"
"for _, id in ipairs(ids) do\n"
"  redis.call('ZREM', KEYS[1], id)\n"
"  local k = '" RAGNX_KEY_JOB "' .. id\n"
"  local p = redis.call('HGET', k, 'payload')\n"
"  if p then\n"
"    redis.call('HSET', k, 'status', 'waiting', 'updatedAt', ARGV[1])\n"
"    redis.call('XADD', KEYS[2], '*', 'id', id, 'job', p)\n"
"  end\n"
"end\n"
"return #ids\n";


/*
 * KEYS: jobs stream; ARGV: consumer, min idle ms.  Entries idle that long
 * belong to a dead worker (live ones are renewed by heartbeats): put them
 * back at the end of the stream as new entries.
 */

static const char  ragnx_script_reclaim_text[] =
"local r = redis.call('XAUTOCLAIM', KEYS[1], '" RAGNX_GROUP "', ARGV[1],\n"
"  ARGV[2], '0-0', 'COUNT', 100)\n"
"local n = 0\n"
"for _, e in ipairs(r[2]) do\n"
"  redis.call('XACK', KEYS[1], '" RAGNX_GROUP "', e[1])\n"
"  redis.call('XDEL', KEYS[1], e[1])\n"
"  if type(e[2]) == 'table' and #e[2] > 0 then\n"
"    redis.call('XADD', KEYS[1], '*', unpack(e[2]))\n"
"    n = n + 1\n"
"  end\n"
"end\n"
"return n\n";


/*
 * KEYS: a stream (jobs or calls); ARGV: idle ms.  Consumers of workers gone
 * (nothing pending, idle that long) are removed from the group, so
 * restarts do not grow it without bound.
 */

static const char  ragnx_script_forget_text[] =
"local n = 0\n"
"for _, c in ipairs(redis.call('XINFO', 'CONSUMERS', KEYS[1],\n"
"                              '" RAGNX_GROUP "')) do\n"
"  local f = {}\n"
"  for i = 1, #c, 2 do f[c[i]] = c[i + 1] end\n"
"  if f['pending'] == 0 and f['idle'] > tonumber(ARGV[1]) then\n"
"    redis.call('XGROUP', 'DELCONSUMER', KEYS[1], '" RAGNX_GROUP "',\n"
"               f['name'])\n"
"    n = n + 1\n"
"  end\n"
"end\n"
"return n\n";


/*
 * KEYS: inflight hash; ARGV: cursor.  One HSCAN step over the in-flight
 * fields: a field whose leader is no longer pending (its hash gone, or
 * an end that could not name the field, such as an undecodable entry)
 * is removed.  A finished leader's own script removes its field; this
 * catches the rest.  Returns the next cursor.
 */

static const char  ragnx_script_sweep_text[] =
"local r = redis.call('HSCAN', KEYS[1], ARGV[1], 'COUNT', 100)\n"
"local f = r[2]\n"
"for i = 1, #f - 1, 2 do\n"
"  local st = redis.call('HGET', '" RAGNX_KEY_JOB "' .. f[i + 1], 'status')\n"
"  if st ~= 'waiting' and st ~= 'active' and st ~= 'delayed' then\n"
"    redis.call('HDEL', KEYS[1], f[i])\n"
"  end\n"
"end\n"
"return r[1]\n";


/* KEYS: jobs stream; ARGV: entry, job id, payload */

static const char  ragnx_script_release_text[] =
"if redis.call('XACK', KEYS[1], '" RAGNX_GROUP "', ARGV[1]) == 1 then\n"
"  redis.call('XDEL', KEYS[1], ARGV[1])\n"
"  redis.call('XADD', KEYS[1], '*', 'id', ARGV[2], 'job', ARGV[3])\n"
"end\n"
"return 1\n";


/* KEYS: jobs stream; ARGV: entry */

static const char  ragnx_script_ack_text[] =
"redis.call('XACK', KEYS[1], '" RAGNX_GROUP "', ARGV[1])\n"
"return redis.call('XDEL', KEYS[1], ARGV[1])\n";


/* run by EVALSHA (ragnx_redis_eval()) */

static ragnx_script_t  ragnx_script_start = { ragnx_script_start_text, "" };
static ragnx_script_t  ragnx_script_complete = { ragnx_script_complete_text,
                                                 "" };
static ragnx_script_t  ragnx_script_retry = { ragnx_script_retry_text, "" };
static ragnx_script_t  ragnx_script_fail = { ragnx_script_fail_text, "" };
static ragnx_script_t  ragnx_script_promote = { ragnx_script_promote_text,
                                                "" };
static ragnx_script_t  ragnx_script_reclaim = { ragnx_script_reclaim_text,
                                                "" };
static ragnx_script_t  ragnx_script_release = { ragnx_script_release_text,
                                                "" };
static ragnx_script_t  ragnx_script_ack = { ragnx_script_ack_text, "" };
static ragnx_script_t  ragnx_script_forget = { ragnx_script_forget_text,
                                               "" };
static ragnx_script_t  ragnx_script_sweep = { ragnx_script_sweep_text, "" };

static ragnx_script_t  *ragnx_scripts[] = {
    &ragnx_script_start, &ragnx_script_complete, &ragnx_script_retry,
    &ragnx_script_fail, &ragnx_script_promote, &ragnx_script_reclaim,
    &ragnx_script_release, &ragnx_script_ack, &ragnx_script_forget,
    &ragnx_script_sweep, NULL
};


/* the scripts' SHA1s: once, before any thread runs */

void
ragnx_queue_init(void)
{
    ragnx_redis_scripts_init(ragnx_scripts);
}



int
ragnx_queue_setup(ragnx_redis_t *r)
{
    redisReply  *reply;

    reply = ragnx_redis_command(r, "XGROUP CREATE %s %s 0 MKSTREAM",
                                RAGNX_KEY_JOBS, RAGNX_GROUP);
    if (reply == NULL) {
        return RAGNX_ERROR;
    }

    if (reply->type == REDIS_REPLY_ERROR
        && strncmp(reply->str, "BUSYGROUP", 9) != 0)
    {
        ragnx_log(RAGNX_LOG_ERROR, "redis XGROUP CREATE: %s", reply->str);
        freeReplyObject(reply);
        return RAGNX_ERROR;
    }

    freeReplyObject(reply);
    return RAGNX_OK;
}


int
ragnx_queue_set_gen(ragnx_redis_t *r, long long version)
{
    char  gen[256];

    snprintf(gen, sizeof(gen), "%s@%lld", ragnx_conf->llm_model, version);

    return ragnx_reply_ok(r, ragnx_redis_command(r, "SET %s %s",
                                                 RAGNX_KEY_GEN, gen),
                          "SET gen");
}


void
ragnx_entry_free(ragnx_entry_t *e)
{
    free(e->payload);
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
    redisReply  *reply;

    reply = ragnx_redis_eval(r, &ragnx_script_release, "1 %s %s %s %b",
                             RAGNX_KEY_JOBS, e->entry, e->id,
                             e->payload ? e->payload : "",
                             e->payload ? e->len : 0);

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
    char         key[128], inflight[512], followers[160], cache[512],
                 now[32], ret[32], ttl[32], *sources, *result;
    json_t      *res;
    redisReply  *reply;

    if (ragnx_inflight_field(job->digest, job->gen, strlen(job->gen),
                             inflight, sizeof(inflight)) == 0
        || ragnx_cache_key(job->digest, job->gen, strlen(job->gen), cache,
                           sizeof(cache)) == 0)
    {
        ragnx_log(RAGNX_LOG_ERROR, "job %s: generation too long", job->id);
        return RAGNX_ERROR;
    }

    snprintf(key, sizeof(key), RAGNX_KEY_JOB "%s", job->id);
    snprintf(followers, sizeof(followers),
             RAGNX_KEY_JOB "%s" RAGNX_KEY_FOLLOWERS, job->id);
    snprintf(now, sizeof(now), "%lld", ragnx_now_ms());
    snprintf(ret, sizeof(ret), "%ld", ragnx_conf->job_retention);

    /*
     * Only answers computed here are cached (a record job's came from the
     * cache), and only those no chat history went into: a contextual
     * answer is its chat's alone.
     */
    snprintf(ttl, sizeof(ttl), "%ld",
             job->type == RAGNX_JOB_ASK && !ans->contextual
             ? ragnx_conf->cache_ttl : 0);

    res = json_pack("{s:s,s:O}", "answer", ans->answer, "sources",
                    ans->sources);
    result = res ? json_dumps(res, JSON_COMPACT) : NULL;
    sources = json_dumps(ans->sources, JSON_COMPACT);
    json_decref(res);

    if (result == NULL || sources == NULL) {
        free(result);
        free(sources);
        return RAGNX_ERROR;
    }

    reply = ragnx_redis_eval(r, &ragnx_script_complete, "5 %s %s %s %s %s "
                                "%s %s %s %s %s %s %s %s %s %s", key,
                                RAGNX_KEY_JOBS, RAGNX_KEY_INFLIGHT, followers,
                                cache, e->entry, now, ans->answer, sources,
                                ret, job->id, result, ttl,
                                next ? r->consumer : "", inflight);
    free(result);
    free(sources);

    if (reply && reply->type == REDIS_REPLY_ARRAY && reply->elements >= 1
        && reply->element[0]->type == REDIS_REPLY_INTEGER)
    {
        if (reply->element[0]->integer > 0) {
            ragnx_log(RAGNX_LOG_DEBUG, "job %s: %lld followers answered",
                      job->id, reply->element[0]->integer);
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
    long long delay_ms, const char *error)
{
    char          key[128], now[32], due[32];
    long long     t;
    redisReply   *reply;

    t = ragnx_now_ms();
    snprintf(key, sizeof(key), RAGNX_KEY_JOB "%s", e->id);
    snprintf(now, sizeof(now), "%lld", t);
    snprintf(due, sizeof(due), "%lld", t + delay_ms);

    reply = ragnx_redis_eval(r, &ragnx_script_retry, "3 %s %s %s %s %s %s %s "
                                "%b %s", key, RAGNX_KEY_JOBS,
                                RAGNX_KEY_DELAYED, e->entry, now, due, error,
                                e->payload, e->len, e->id);

    return ragnx_reply_ok(r, reply, "retry script");
}


/* job may be NULL: an entry that could not be decoded */

int
ragnx_queue_fail(ragnx_redis_t *r, const ragnx_entry_t *e,
    const ragnx_job_t *job, const char *error)
{
    int           valid;
    char          key[128], inflight[512], followers[160], now[32], ret[32],
                  max[32];
    const char   *payload;
    size_t        len;
    redisReply   *reply;

    valid = ragnx_uuid_valid(e->id, strlen(e->id));

    snprintf(key, sizeof(key), RAGNX_KEY_JOB "%s", valid ? e->id : "-");
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

    reply = ragnx_redis_eval(r, &ragnx_script_fail, "5 %s %s %s %s %s %s %s "
                                "%s %s %s %b %s %s %s", key,
                                RAGNX_KEY_JOBS, RAGNX_KEY_DEAD,
                                RAGNX_KEY_INFLIGHT, followers, e->entry, now,
                                error, ret, e->id, payload, len, max,
                                valid ? "1" : "0", inflight);

    return ragnx_reply_ok(r, reply, "fail script");
}


/* due retries back to the stream, and entries of dead workers */

/* where the in-flight sweep goes on: a SCAN cursor */
static char  ragnx_sweep_cursor[32] = "0";


int
ragnx_queue_maintain(ragnx_redis_t *r)
{
    char         now[32], idle[32];
    redisReply  *reply;

    snprintf(now, sizeof(now), "%lld", ragnx_now_ms());

    reply = ragnx_redis_eval(r, &ragnx_script_promote, "2 %s %s %s 500",
                             RAGNX_KEY_DELAYED, RAGNX_KEY_JOBS, now);
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

    reply = ragnx_redis_eval(r, &ragnx_script_reclaim, "1 %s %s %s",
                             RAGNX_KEY_JOBS, r->consumer, idle);
    if (reply == NULL) {
        return RAGNX_ERROR;
    }

    if (reply->type == REDIS_REPLY_INTEGER && reply->integer > 0) {
        ragnx_log(RAGNX_LOG_WARN, "requeued %lld entries idle for over "
                  "%ld ms (a worker died)", reply->integer,
                  ragnx_conf->visibility_timeout);
    }

    if (reply->type == REDIS_REPLY_ERROR
        && strstr(reply->str, "NOGROUP") != NULL)
    {
        freeReplyObject(reply);
        return ragnx_queue_setup(r);
    }

    return ragnx_reply_ok(r, reply, "reclaim script");
}


/* remove consumers idle for idle_ms with nothing pending */

int
ragnx_queue_forget(ragnx_redis_t *r, long idle_ms)
{
    int          i, rc;
    redisReply  *reply;

    static const char  *streams[] = { RAGNX_KEY_JOBS, RAGNX_KEY_RPC };

    rc = RAGNX_OK;

    for (i = 0; i < 2; i++) {
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
