
/*
 * ragnx worker pool: one ask job, from its stream entry to its
 * acknowledgement (exchanges answered from the cache take the records
 * lane, ragnx_records.c).
 *
 *   decode -> start (status active, attempts + 1) -> chat (create or check
 *   the owner) -> an earlier delivery already committed?  use its answer
 *   -> retrieval + history (a chat-scope job's only) -> LLM (no Postgres
 *   connection held; or the answer an earlier attempt held) ->
 *   user + assistant messages in one transaction -> one script: cache SET,
 *   job completed, followers answered (their exchanges on the records
 *   lane), XACK + XDEL, and
 *   the thread's next entry read and started (a busy queue costs a job
 *   one Redis round trip, not three).
 *
 * Errors are transient (RAGNX_AGAIN: retried with backoff until
 * max_attempts) or permanent (RAGNX_DECLINED: failed at once); both end
 * in the dead-letter stream when the job gives up.  An answer the
 * database failed to store is held in the job's hash for the retry: the
 * LLM is asked once per job, whatever the database does.  While the
 * provider refuses the pool's key (RAGNX_BUSY, ragnx_breaker.c), a job
 * waits in the delayed set with its attempt given back, until the key
 * works or the job's retention ends.
 *
 * Every log line about the job names it, its request id and its chat
 * (ragnx_log_fields_t); the one that ends it says how long each stage
 * took, and a failure's says its class.
 */


#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ragnx_worker.h"
#include "ragnx_keys.h"


static int ragnx_work_run(ragnx_thread_t *t, const ragnx_job_t *job,
    long attempts, ragnx_answer_t *ans, long *retry_after, char **held,
    ragnx_log_fields_t *lf, char *err, size_t errlen);
static long long ragnx_work_backoff(long attempts, long retry_after);
static char *ragnx_work_hold(const ragnx_answer_t *ans);
static int ragnx_work_held(ragnx_thread_t *t, const ragnx_job_t *job,
    ragnx_answer_t *ans);


static long long
ragnx_work_backoff(long attempts, long retry_after)
{
    long long  d;

    d = ragnx_conf->retry_base;

    while (--attempts > 0 && d < ragnx_conf->retry_max) {
        d *= 2;
    }

    if (d > ragnx_conf->retry_max) {
        d = ragnx_conf->retry_max;
    }

    /* full jitter over the upper half: d/2 .. d */
    d = d / 2 + (long long) (random() % (d / 2 + 1));

    /*
     * The provider's Retry-After wins when it asks for longer, up to half
     * the job's retention: a job waits for its retry while its hash
     * lives, and ends, never vanishes.
     */
    if (retry_after > d) {
        d = retry_after;
    }

    if (d > ragnx_conf->job_retention * 1000 / 2) {
        d = ragnx_conf->job_retention * 1000 / 2;
    }

    return d;
}


/*
 * next: where a completed job's script may put this thread's next entry
 * (NULL while draining); left empty otherwise.
 */

void
ragnx_work(ragnx_thread_t *t, ragnx_entry_t *e, ragnx_entry_t *next)
{
    int                 rc;
    long                attempts, retry_after;
    char                err[512], *held;
    ragnx_job_t         job;
    ragnx_answer_t      ans;
    ragnx_log_fields_t  lf;

    memset(&lf, 0, sizeof(ragnx_log_fields_t));
    lf.job = e->id;

    if (e->payload == NULL
        || ragnx_job_decode(e->payload, e->len, &job, err, sizeof(err)) != 0)
    {
        if (e->payload == NULL) {
            snprintf(err, sizeof(err), "entry without a job field");
        }

        lf.error = RAGNX_ERR_BAD_PAYLOAD;
        ragnx_log_fields(RAGNX_LOG_ERROR, &lf, "entry %s: bad payload: %s: "
                         "dead-lettered", e->entry, err);
        ragnx_queue_fail(&t->redis, e, NULL, "invalid job", 1);
        return;
    }

    /* the generation the answer is cached under: the entry's, beside */
    job.gen = e->gen;
    lf.rid = job.rid;
    lf.chat = job.chat_id;
    lf.error = RAGNX_ERR_BAD_PAYLOAD;

    if (job.gen == NULL || job.gen[0] == '\0') {
        ragnx_log_fields(RAGNX_LOG_ERROR, &lf, "entry %s: no gen field: "
                         "dead-lettered", e->entry);
        ragnx_queue_fail(&t->redis, e, NULL, "invalid job", 1);
        ragnx_job_free(&job);
        return;
    }

    if (strcmp(job.id, e->id) != 0) {
        ragnx_log_fields(RAGNX_LOG_ERROR, &lf, "entry %s: id field differs "
                         "from the payload's (%s): dead-lettered", e->entry,
                         job.id);
        ragnx_queue_fail(&t->redis, e, NULL, "invalid job", 1);
        ragnx_job_free(&job);
        return;
    }

    lf.job = job.id;
    lf.error = RAGNX_ERR_NONE;
    lf.wait_ms = ragnx_now_ms() - job.created;

    if (e->started) {
        attempts = e->attempts;

    } else if (ragnx_queue_start(&t->redis, e, &attempts) != RAGNX_OK) {
        /* Redis is away: the entry stays pending and is reclaimed */
        ragnx_job_free(&job);
        return;
    }

    if (attempts < 0) {
        ragnx_log_fields(RAGNX_LOG_INFO, &lf, "job already finished: "
                         "acknowledged");
        ragnx_queue_ack(&t->redis, e);

        ragnx_job_free(&job);
        return;
    }

    ragnx_log_fields(RAGNX_LOG_DEBUG, &lf, "attempt %ld", attempts);

    if (attempts == 1) {
        ragnx_metrics_wait(job.created);
    }

    if (attempts > ragnx_conf->max_attempts) {
        /* delivered again and again without finishing: a poison job */
        lf.error = RAGNX_ERR_INTERNAL;
        ragnx_log_fields(RAGNX_LOG_WARN, &lf, "failed: delivered %ld times "
                         "without finishing: dead-lettered", attempts);
        ragnx_queue_fail(&t->redis, e, &job, "too many attempts", 1);
        ragnx_job_free(&job);
        return;
    }

    retry_after = -1;
    err[0] = '\0';
    held = NULL;

    rc = ragnx_work_run(t, &job, attempts, &ans, &retry_after, &held, &lf,
                        err, sizeof(err));

    switch (rc) {

    case RAGNX_OK:
        if (ragnx_queue_complete(&t->redis, e, &job, &ans, next)
            == RAGNX_OK)
        {
            lf.timed = 1;
            lf.tokens = 1;
            lf.tokens_in = ans.input_tokens;
            lf.tokens_out = ans.output_tokens;
            ragnx_log_fields(RAGNX_LOG_INFO, &lf, "completed, attempt %ld",
                             attempts);
            ragnx_metrics_job(RAGNX_METRICS_COMPLETED);

        } else {
            lf.error = RAGNX_ERR_REDIS;
            ragnx_log_fields(RAGNX_LOG_WARN, &lf, "answered and stored, not "
                             "completed: the entry is delivered again");
        }

        ragnx_answer_free(&ans);
        break;

    case RAGNX_BUSY:
        if (ragnx_now_ms() - job.created
            < ragnx_conf->job_retention * 1000LL)
        {
            /* spread over a quarter more, the probe's answer known */
            ragnx_log_fields(RAGNX_LOG_DEBUG, &lf, "%s: waits %ld ms", err,
                             retry_after);
            ragnx_queue_retry(&t->redis, e, retry_after
                              + random() % (retry_after / 4 + 1) + 1, err,
                              NULL, 1);
            ragnx_metrics_job(RAGNX_METRICS_RETRIED);
            break;
        }

        ragnx_log_fields(RAGNX_LOG_WARN, &lf, "failed: %s for its whole "
                         "retention", err);
        ragnx_queue_fail(&t->redis, e, &job, err, 1);
        break;

    case RAGNX_AGAIN:
        if (attempts < ragnx_conf->max_attempts) {
            ragnx_log_fields(RAGNX_LOG_WARN, &lf, "%s: retry %ld of %ld", err,
                             attempts, ragnx_conf->max_attempts - 1);
            ragnx_queue_retry(&t->redis, e,
                              ragnx_work_backoff(attempts, retry_after), err,
                              held, 0);
            ragnx_metrics_job(RAGNX_METRICS_RETRIED);
            break;
        }

        /* fall through */

    default:
        lf.timed = 1;
        ragnx_log_fields(RAGNX_LOG_WARN, &lf, "failed after %ld attempts: %s",
                         attempts, err);
        /*
         * a transient error through every attempt (the LLM or the
         * database down) would hit any asker: the followers share it; a
         * permanent one is this job's own, and they run again
         */
        ragnx_queue_fail(&t->redis, e, &job, err, rc == RAGNX_AGAIN);
        break;
    }

    free(held);
    ragnx_job_free(&job);
}


/* a job's answer as the LLM writes it, appended to its events stream */

typedef struct {
    ragnx_thread_t     *t;
    const ragnx_job_t  *job;
    long                attempt;
    long                sent;
    int                 failed;
} ragnx_work_events_t;


static void
ragnx_work_delta(void *data, const char *text, size_t len)
{
    redisReply           *reply;
    ragnx_work_events_t  *ev = data;

    if (ev->failed) {
        return;
    }

    /* an earlier attempt may have written some: clients start again */
    if (ev->sent == 0 && ev->attempt > 1) {
        reply = ragnx_queue_delta(&ev->t->redis, ev->job->id, "restart",
                                  ev->attempt, "", 0);
        if (reply) {
            freeReplyObject(reply);
        }
    }

    reply = ragnx_queue_delta(&ev->t->redis, ev->job->id, "delta",
                              ev->attempt, text, len);

    if (reply == NULL || reply->type == REDIS_REPLY_ERROR) {
        /* the answer goes on; only its streaming stops */
        ragnx_log_job(RAGNX_LOG_WARN, ev->job, RAGNX_ERR_REDIS,
                      "its answer is not streamed: %s",
                      reply ? reply->str : "redis unavailable");
        ev->failed = 1;
    }

    if (reply) {
        freeReplyObject(reply);
    }

    ev->sent++;
}


/*
 * lf: the stage timings (ms) and, on failure, the class of the error,
 * for the line that ends the attempt
 */

static int
ragnx_work_run(ragnx_thread_t *t, const ragnx_job_t *job, long attempts,
    ragnx_answer_t *ans, long *retry_after, char **held,
    ragnx_log_fields_t *lf, char *err, size_t errlen)
{
    int                   rc, np, nh, created, probe;
    long long             start;
    const char           *reason;
    ragnx_work_events_t   ev;
    ragnx_turn_t    *history;
    ragnx_prompt_t   prompt;
    ragnx_passage_t *passages;

    memset(ans, 0, sizeof(ragnx_answer_t));

    /*
     * No PostgreSQL connection is held here: each step is one request
     * that the pool's connections run with other threads' (see
     * ragnx_db_submit), none across the LLM call.
     */

    if (attempts == 1 && ragnx_breaker_paused(retry_after, &reason)
                         != RAGNX_OK)
    {
        /*
         * the provider refuses the key: no call until the next probe, so
         * no reads either (a retry may hold its answer: it reads on)
         */
        snprintf(err, errlen, "LLM %s: calls paused", reason);
        lf->error = RAGNX_ERR_LLM_BREAKER;
        return RAGNX_BUSY;
    }

    /*
     * Chat check, passages and history in one round trip.  Only a job
     * asked in an existing chat reads its history: a new chat's question
     * may be cached and shared, so nothing of any chat goes into it.
     */

    start = ragnx_metrics_us();

    rc = ragnx_store_read_ask(t->db, job, (int) ragnx_conf->top_k,
                              (int) ragnx_conf->rank_candidates,
                              job->chat_scope ? (int) ragnx_conf->history : 0,
                              &created, ans, &passages, &np, &history, &nh,
                              err, errlen);
    lf->retrieve_ms = (ragnx_metrics_us() - start) / 1000;

    if (rc != RAGNX_OK) {
        lf->error = rc == RAGNX_DECLINED ? RAGNX_ERR_CHAT : RAGNX_ERR_PG;
        return rc;
    }

    ragnx_metrics_stage(RAGNX_METRICS_RETRIEVAL, start);

    if (ans->answer) {
        /*
         * A redelivery of a job whose exchange was already committed;
         * what history went into it is not known now, so a chat-scope
         * answer counts as the chat's own.
         */
        ans->contextual = job->chat_scope;
        ragnx_store_passages_free(passages, np);
        ragnx_store_history_free(history, nh);
        ragnx_log_job(RAGNX_LOG_INFO, job, RAGNX_ERR_NONE,
                      "answer already stored");
        return RAGNX_OK;
    }

    if (attempts > 1 && ragnx_work_held(t, job, ans) == RAGNX_OK) {
        /* an earlier attempt's answer, which the database did not store */
        ragnx_store_passages_free(passages, np);
        ragnx_store_history_free(history, nh);
        ragnx_log_job(RAGNX_LOG_INFO, job, RAGNX_ERR_NONE,
                      "storing the answer of an earlier attempt");
        rc = RAGNX_OK;

    } else if (ragnx_breaker_enter(&probe, retry_after, &reason)
               != RAGNX_OK)
    {
        /* the provider refuses the key: no call until the next probe */
        ragnx_store_passages_free(passages, np);
        ragnx_store_history_free(history, nh);
        snprintf(err, errlen, "LLM %s: calls paused", reason);
        lf->error = RAGNX_ERR_LLM_BREAKER;
        return RAGNX_BUSY;

    } else {
        prompt.job = job;
        prompt.passages = passages;
        prompt.npassages = np;
        prompt.history = history;
        prompt.nhistory = nh;

        memset(&ev, 0, sizeof(ragnx_work_events_t));
        ev.t = t;
        ev.job = job;
        ev.attempt = attempts;
        prompt.delta = ragnx_work_delta;
        prompt.data = &ev;

        start = ragnx_metrics_us();

        rc = ragnx_llm_answer(t->llm, &prompt, ans, retry_after, err,
                              errlen);

        lf->llm_ms = (ragnx_metrics_us() - start) / 1000;
        ragnx_metrics_stage(RAGNX_METRICS_LLM, start);

        if (rc != RAGNX_OK) {
            lf->error = ragnx_llm_error(t->llm);

            if (lf->error == RAGNX_ERR_NONE) {
                lf->error = RAGNX_ERR_INTERNAL;
            }
        }

        /* decided by what was sent, whatever the job claims */
        ans->contextual = nh > 0;

        ragnx_store_passages_free(passages, np);
        ragnx_store_history_free(history, nh);

        ragnx_breaker_leave(&t->redis, probe, rc, err, retry_after);

        if (rc == RAGNX_DENIED) {
            return RAGNX_BUSY;
        }
    }

    if (rc != RAGNX_OK) {
        return rc;
    }

    ragnx_metrics_tokens(ans->input_tokens, ans->output_tokens);

    start = ragnx_metrics_us();

    rc = ragnx_store_exchange(t->db, job, ans, err, errlen);
    lf->persist_ms = (ragnx_metrics_us() - start) / 1000;

    if (rc != RAGNX_OK) {
        lf->error = rc == RAGNX_DECLINED ? RAGNX_ERR_CHAT : RAGNX_ERR_PG;
    }

    if (rc == RAGNX_AGAIN) {
        /* the database's trouble, not the answer's: keep it for a retry */
        *held = ragnx_work_hold(ans);
    }

    if (rc != RAGNX_OK) {
        ragnx_answer_free(ans);
        return rc;
    }

    ragnx_metrics_stage(RAGNX_METRICS_PERSIST, start);

    return rc;
}


/* an answer as the job's hash holds it for the next attempt */

static char *
ragnx_work_hold(const ragnx_answer_t *ans)
{
    char    *s;
    json_t  *o;

    o = json_pack("{s:s, s:O, s:s, s:I, s:I, s:b, s:b}",
                  "answer", ans->answer, "sources", ans->sources,
                  "model", ans->model ? ans->model : "",
                  "in", (json_int_t) ans->input_tokens,
                  "out", (json_int_t) ans->output_tokens,
                  "truncated", ans->truncated,
                  "contextual", ans->contextual);
    if (o == NULL) {
        return NULL;
    }

    s = json_dumps(o, JSON_COMPACT);
    json_decref(o);

    return s;
}


/* the answer an earlier attempt held, into ans; RAGNX_DECLINED: none */

static int
ragnx_work_held(ragnx_thread_t *t, const ragnx_job_t *job,
    ragnx_answer_t *ans)
{
    int           truncated, contextual;
    json_t       *o, *sources;
    const char   *answer, *model;
    json_int_t    in, out;
    redisReply   *reply;

    reply = ragnx_redis_command(&t->redis, "HGET " RAGNX_KEY_JOB "%s held",
                                job->id);

    if (reply == NULL || reply->type != REDIS_REPLY_STRING) {
        if (reply) {
            freeReplyObject(reply);
        }

        return RAGNX_DECLINED;
    }

    o = json_loadb(reply->str, reply->len, 0, NULL);
    freeReplyObject(reply);

    if (o == NULL
        || json_unpack(o, "{s:s, s:o, s:s, s:I, s:I, s:b, s:b}",
                       "answer", &answer, "sources", &sources,
                       "model", &model, "in", &in, "out", &out,
                       "truncated", &truncated, "contextual", &contextual)
           != 0
        || !json_is_array(sources))
    {
        ragnx_log_job(RAGNX_LOG_WARN, job, RAGNX_ERR_REDIS,
                      "held answer unreadable: asking again");
        json_decref(o);
        return RAGNX_DECLINED;
    }

    memset(ans, 0, sizeof(ragnx_answer_t));
    ans->answer = strdup(answer);
    ans->sources = json_incref(sources);
    ans->input_tokens = (long) in;
    ans->output_tokens = (long) out;
    ans->truncated = truncated;
    ans->contextual = contextual;

    /* model names a string that outlives the job */
    ans->model = strcmp(model, "extractive") == 0 ? "extractive"
                                                  : ragnx_conf->llm_model;

    json_decref(o);

    if (ans->answer == NULL) {
        ragnx_answer_free(ans);
        return RAGNX_DECLINED;
    }

    return RAGNX_OK;
}
