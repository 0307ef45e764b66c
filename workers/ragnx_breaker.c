
/*
 * ragnx worker pool: the LLM circuit breaker.  A 401 or 403 says that
 * the provider refuses the pool's key, not the job: every job would get
 * the same, and all traffic would burn its attempts into the dead
 * letters within seconds.  The first such answer opens the breaker of
 * the worker process: LLM calls pause, and jobs wait in the delayed set
 * with their attempt given back (ragnx_work.c).  After a backoff
 * (retry_base, doubling up to retry_max) one job probes; any other
 * answer closes the breaker.  The state is published in Redis
 * ({ragnx}:llm, "unauthorized" or "forbidden") with a TTL, so that
 * /health reports it and a pool that dies with it open leaves nothing
 * stuck.
 */


#include <pthread.h>
#include <string.h>

#include "ragnx_worker.h"
#include "ragnx_keys.h"


/* a line about an open breaker at most this often (ms) */
#define RAGNX_BREAKER_LOG  10000


static struct {
    pthread_mutex_t   lock;
    const char       *reason;       /* NULL: closed */
    long long         until;        /* monotonic ms: the next probe */
    long              backoff;      /* ms */
    int               probing;      /* a thread's call is the probe */
    long long         logged;       /* monotonic ms of the last line */
    int               answered;     /* a call of this process succeeded */
} ragnx_breaker = { PTHREAD_MUTEX_INITIALIZER, NULL, 0, 0, 0, 0, 0 };


static void ragnx_breaker_publish(ragnx_redis_t *r, const char *reason,
    long backoff);


/*
 * Before an LLM call: RAGNX_OK when the call may go (*probe set when it
 * is the probe of an open breaker), RAGNX_BUSY with *wait_ms until the
 * next probe and *reason when calls are paused.
 */

int
ragnx_breaker_enter(int *probe, long *wait_ms, const char **reason)
{
    long long  now;

    *probe = 0;

    pthread_mutex_lock(&ragnx_breaker.lock);

    if (ragnx_breaker.reason == NULL) {
        pthread_mutex_unlock(&ragnx_breaker.lock);
        return RAGNX_OK;
    }

    now = ragnx_mono_ms();

    if (!ragnx_breaker.probing && now >= ragnx_breaker.until) {
        ragnx_breaker.probing = 1;
        pthread_mutex_unlock(&ragnx_breaker.lock);
        *probe = 1;
        return RAGNX_OK;
    }

    /* a probe in flight: its answer is known by the next backoff */
    *wait_ms = ragnx_breaker.until > now ? (long) (ragnx_breaker.until - now)
                                         : ragnx_breaker.backoff;
    *reason = ragnx_breaker.reason;

    pthread_mutex_unlock(&ragnx_breaker.lock);

    return RAGNX_BUSY;
}


/*
 * Before a job's reads: RAGNX_BUSY, as ragnx_breaker_enter() would say,
 * when no probe is due (the job waits without a database round trip);
 * RAGNX_OK otherwise, claiming nothing.
 */

int
ragnx_breaker_paused(long *wait_ms, const char **reason)
{
    int        rc;
    long long  now;

    rc = RAGNX_OK;

    pthread_mutex_lock(&ragnx_breaker.lock);

    if (ragnx_breaker.reason) {
        now = ragnx_mono_ms();

        if (ragnx_breaker.probing || now < ragnx_breaker.until) {
            *wait_ms = ragnx_breaker.until > now
                       ? (long) (ragnx_breaker.until - now)
                       : ragnx_breaker.backoff;
            *reason = ragnx_breaker.reason;
            rc = RAGNX_BUSY;
        }
    }

    pthread_mutex_unlock(&ragnx_breaker.lock);

    return rc;
}


/*
 * After an LLM call that ragnx_breaker_enter() let go, with its result:
 * RAGNX_DENIED (the key refused, err "LLM unauthorized" or "LLM
 * forbidden") opens the breaker, or keeps it open for a longer backoff
 * when the call was the probe; *wait_ms is then the time to the next
 * probe.  Any other answer of the probe, or a success, closes it.
 */

void
ragnx_breaker_leave(ragnx_redis_t *r, int probe, int rc, const char *err,
    long *wait_ms)
{
    int          opened, closed, cleared, log;
    long         backoff;
    long long    now;
    const char  *reason;

    opened = 0;
    closed = 0;
    cleared = 0;
    log = 0;
    reason = NULL;
    backoff = 0;

    pthread_mutex_lock(&ragnx_breaker.lock);

    if (probe) {
        ragnx_breaker.probing = 0;
    }

    if (rc == RAGNX_DENIED) {
        now = ragnx_mono_ms();

        if (ragnx_breaker.reason == NULL) {
            ragnx_breaker.backoff = ragnx_conf->retry_base;
            ragnx_breaker.until = now + ragnx_breaker.backoff;
            opened = 1;

        } else if (probe) {
            ragnx_breaker.backoff *= 2;

            if (ragnx_breaker.backoff > ragnx_conf->retry_max) {
                ragnx_breaker.backoff = ragnx_conf->retry_max;
            }

            ragnx_breaker.until = now + ragnx_breaker.backoff;
            opened = 1;
        }

        ragnx_breaker.reason = strstr(err, "forbidden") ? "forbidden"
                                                        : "unauthorized";

        if (now - ragnx_breaker.logged >= RAGNX_BREAKER_LOG
            || ragnx_breaker.logged == 0)
        {
            ragnx_breaker.logged = now;
            log = 1;
        }

        *wait_ms = ragnx_breaker.until > now
                   ? (long) (ragnx_breaker.until - now) : 0;
        reason = ragnx_breaker.reason;
        backoff = ragnx_breaker.backoff;

    } else if (ragnx_breaker.reason && (probe || rc == RAGNX_OK)) {
        ragnx_breaker.reason = NULL;
        ragnx_breaker.logged = 0;
        closed = 1;

    } else if (rc == RAGNX_OK && !ragnx_breaker.answered) {
        /*
         * the first success of this process: a breaker left open by the
         * processes before it (a key fixed, then SIGHUP) is closed too
         */
        cleared = 1;
    }

    if (rc == RAGNX_OK) {
        ragnx_breaker.answered = 1;
    }

    pthread_mutex_unlock(&ragnx_breaker.lock);

    if (log) {
        ragnx_log(RAGNX_LOG_ERROR, "%s: the provider refuses the key: LLM "
                  "calls paused, jobs wait; one probes again in %ld ms "
                  "(check llm_api_key_file or RAGNX_LLM_API_KEY)", err,
                  backoff);
    }

    if (opened) {
        ragnx_breaker_publish(r, reason, backoff);

    } else if (closed) {
        ragnx_log(RAGNX_LOG_INFO, "the LLM provider answers again: LLM "
                  "calls resumed");
        ragnx_breaker_publish(r, NULL, 0);

    } else if (cleared) {
        ragnx_breaker_publish(r, NULL, 0);
    }
}


/*
 * {ragnx}:llm for /health: set for twice the backoff and 10 s more,
 * renewed by every probe that fails, gone with the breaker closed.
 */

static void
ragnx_breaker_publish(ragnx_redis_t *r, const char *reason, long backoff)
{
    redisReply  *reply;

    if (reason) {
        reply = ragnx_redis_command(r, "SET " RAGNX_KEY_LLM " %s PX %ld",
                                    reason, 2 * backoff + 10000);
    } else {
        reply = ragnx_redis_command(r, "DEL " RAGNX_KEY_LLM);
    }

    if (reply) {
        freeReplyObject(reply);
    }
}
