
/*
 * ragnx worker pool: one ask job, from its stream entry to its
 * acknowledgement (exchanges answered from the cache take the records
 * lane, ragnx_records.c).
 *
 *   decode -> start (status active, attempts + 1) -> chat (create or check
 *   the owner) -> an earlier delivery already committed?  use its answer
 *   -> retrieval + history (a chat-scope job's only) -> LLM (no Postgres
 *   connection held) ->
 *   user + assistant messages in one transaction -> one script: cache SET,
 *   job completed, followers answered (their exchanges on the records
 *   lane), XACK + XDEL, and
 *   the thread's next entry read and started (a busy queue costs a job
 *   one Redis round trip, not three).
 *
 * Errors are transient (RAGNX_AGAIN: retried with backoff until
 * max_attempts) or permanent (RAGNX_DECLINED: failed at once); both end
 * in the dead-letter stream when the job gives up.
 */


#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ragnx_worker.h"
#include "ragnx_keys.h"


static int ragnx_work_run(ragnx_thread_t *t, const ragnx_job_t *job,
    ragnx_answer_t *ans, long *retry_after, char *err, size_t errlen);
static long long ragnx_work_backoff(long attempts, long retry_after);


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
    int             rc;
    long            attempts, retry_after;
    char            err[512];
    ragnx_job_t     job;
    ragnx_answer_t  ans;

    if (e->payload == NULL
        || ragnx_job_decode(e->payload, e->len, &job, err, sizeof(err)) != 0)
    {
        if (e->payload == NULL) {
            snprintf(err, sizeof(err), "entry without a job field");
        }

        ragnx_log(RAGNX_LOG_ERROR, "entry %s (job \"%s\"): bad payload: %s: "
                  "dead-lettered", e->entry, e->id, err);
        ragnx_queue_fail(&t->redis, e, NULL, "invalid job");
        return;
    }

    /* the generation the answer is cached under: the entry's, beside */
    job.gen = e->gen;

    if (job.gen == NULL || job.gen[0] == '\0') {
        ragnx_log(RAGNX_LOG_ERROR, "entry %s (job \"%s\"): no gen field: "
                  "dead-lettered", e->entry, e->id);
        ragnx_queue_fail(&t->redis, e, NULL, "invalid job");
        ragnx_job_free(&job);
        return;
    }

    if (strcmp(job.id, e->id) != 0) {
        ragnx_log(RAGNX_LOG_ERROR, "entry %s: id field \"%s\" differs from "
                  "the payload's: dead-lettered", e->entry, e->id);
        ragnx_queue_fail(&t->redis, e, NULL, "invalid job");
        ragnx_job_free(&job);
        return;
    }

    if (e->started) {
        attempts = e->attempts;

    } else if (ragnx_queue_start(&t->redis, e, &attempts) != RAGNX_OK) {
        /* Redis is away: the entry stays pending and is reclaimed */
        ragnx_job_free(&job);
        return;
    }

    if (attempts < 0) {
        ragnx_log(RAGNX_LOG_INFO, "job %s already finished: acknowledged",
                  job.id);
        ragnx_queue_ack(&t->redis, e);

        ragnx_job_free(&job);
        return;
    }

    ragnx_log(RAGNX_LOG_DEBUG, "job %s: attempt %ld", job.id, attempts);

    if (attempts == 1) {
        ragnx_metrics_wait(job.created);
    }

    if (attempts > ragnx_conf->max_attempts) {
        /* delivered again and again without finishing: a poison job */
        ragnx_queue_fail(&t->redis, e, &job, "too many attempts");
        ragnx_job_free(&job);
        return;
    }

    retry_after = -1;
    err[0] = '\0';

    rc = ragnx_work_run(t, &job, &ans, &retry_after, err, sizeof(err));

    switch (rc) {

    case RAGNX_OK:
        if (ragnx_queue_complete(&t->redis, e, &job, &ans, next)
            == RAGNX_OK)
        {
            ragnx_log(RAGNX_LOG_DEBUG, "job %s completed", job.id);
            ragnx_metrics_job(RAGNX_METRICS_COMPLETED);
        }

        ragnx_answer_free(&ans);
        break;

    case RAGNX_AGAIN:
        if (attempts < ragnx_conf->max_attempts) {
            ragnx_log(RAGNX_LOG_WARN, "job %s: %s: retry %ld of %ld", job.id,
                      err, attempts, ragnx_conf->max_attempts - 1);
            ragnx_queue_retry(&t->redis, e,
                              ragnx_work_backoff(attempts, retry_after), err);
            ragnx_metrics_job(RAGNX_METRICS_RETRIED);
            break;
        }

        /* fall through */

    default:
        ragnx_log(RAGNX_LOG_WARN, "job %s failed after %ld attempts: %s",
                  job.id, attempts, err);
        ragnx_queue_fail(&t->redis, e, &job, err);
        break;
    }

    ragnx_job_free(&job);
}


static int
ragnx_work_run(ragnx_thread_t *t, const ragnx_job_t *job,
    ragnx_answer_t *ans, long *retry_after, char *err, size_t errlen)
{
    int              rc, np, nh, created;
    long long        start;
    ragnx_turn_t    *history;
    ragnx_prompt_t   prompt;
    ragnx_passage_t *passages;

    memset(ans, 0, sizeof(ragnx_answer_t));

    /*
     * No PostgreSQL connection is held here: each step is one request
     * that the pool's connections run with other threads' (see
     * ragnx_db_submit), none across the LLM call.
     */

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
    if (rc != RAGNX_OK) {
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
        ragnx_log(RAGNX_LOG_INFO, "job %s: answer already stored", job->id);
        return RAGNX_OK;
    }

    prompt.job = job;
    prompt.passages = passages;
    prompt.npassages = np;
    prompt.history = history;
    prompt.nhistory = nh;

    start = ragnx_metrics_us();

    rc = ragnx_llm_answer(t->llm, &prompt, ans, retry_after, err, errlen);

    ragnx_metrics_stage(RAGNX_METRICS_LLM, start);

    /* decided by what was sent, whatever the job claims */
    ans->contextual = nh > 0;

    ragnx_store_passages_free(passages, np);
    ragnx_store_history_free(history, nh);

    if (rc != RAGNX_OK) {
        return rc;
    }

    ragnx_metrics_tokens(ans->input_tokens, ans->output_tokens);

    start = ragnx_metrics_us();

    rc = ragnx_store_exchange(t->db, job, ans, err, errlen);

    if (rc != RAGNX_OK) {
        ragnx_answer_free(ans);
        return rc;
    }

    ragnx_metrics_stage(RAGNX_METRICS_PERSIST, start);

    return rc;
}
