
/*
 * ragnx worker pool: the job threads' PostgreSQL requests, queued and
 * run in pipelines on the pool's connections (ragnx_db.c).
 */


#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ragnx_db.h"


#define RAGNX_DB_BATCH_MAX  32
#define RAGNX_DB_PATIENCE   50          /* ms, see ragnx_db_submit() */

#define RAGNX_DB_QUEUED  0
#define RAGNX_DB_TAKEN   1
#define RAGNX_DB_DONE    2


static PGconn *ragnx_db_take(ragnx_db_pool_t *pool, int *failed);
static void ragnx_db_combine(ragnx_db_pool_t *pool, PGconn *conn);
static int ragnx_db_serve(PGconn *conn, ragnx_db_req_t **batch, int *n,
    ragnx_db_req_t **done, int *ndone);
static void ragnx_db_unqueue(ragnx_db_pool_t *pool, ragnx_db_req_t *req);
static int ragnx_db_run_together(PGconn *conn, ragnx_db_req_t **batch,
    int n, long long deadline);
static int ragnx_db_send(PGconn *conn, ragnx_db_req_t *q);
static void ragnx_db_clear(ragnx_db_req_t **batch, int n, int failure);
static PGresult *ragnx_db_next(PGconn *conn, long long deadline);
static PGresult *ragnx_db_result(PGconn *conn, long long deadline);
static int ragnx_db_failure(PGconn *conn, long long deadline);
static int ragnx_db_req_cmp(const void *a, const void *b);
static void ragnx_db_prepare(PGconn *conn, ragnx_db_req_t **batch, int n,
    long long deadline);
static int ragnx_db_run(PGconn *conn, ragnx_db_req_t **batch, int *n,
    ragnx_db_req_t **done, int *ndone, long long deadline);


/*
 * The statements of the job threads' hot steps (an ask's reads, the
 * exchange, a record's chat check) go through a queue instead of each
 * thread taking a connection.  A thread queues its request; a thread that
 * finds a connection free sends every queued request (up to
 * RAGNX_DB_BATCH_MAX) in one pipeline and one transaction (run again
 * one transaction each when any fails), and hands the results out.  The
 * backend then wakes, commits and writes WAL once for many requests, and
 * a waiting thread wakes once, for its
 * results, instead of once for a connection and again for the reply.  A
 * holder serves at most a few batches before its own job goes on; the
 * thread at the head of the queue is then woken to take over.
 *
 * A queued request takes a connection of its own only when none serves
 * the queue, when the queue holds more than a full batch for each
 * connection serving it, or when the serving connections have finished
 * no pipeline for RAGNX_DB_PATIENCE ms (a statement stuck ahead of it;
 * slow pipelines that do finish are no reason: on a loaded machine more
 * connections would make every pipeline slower still).  Each further
 * connection splits the same requests into smaller batches, and
 * PostgreSQL then spends more on waking backends and sending results
 * than on the statements: measured over a drain, one serving connection
 * per worker process costs a third less PostgreSQL CPU per job than
 * four.
 */

int
ragnx_db_submit(ragnx_db_pool_t *pool, ragnx_db_req_t *req)
{
    int               i, rc, failed;
    PGconn           *conn;
    unsigned long     served;
    struct timespec   deadline, patience, *until;

    ragnx_deadline(&deadline, pool->timeout);
    ragnx_deadline(&patience, RAGNX_DB_PATIENCE);

    req->next = NULL;
    req->state = RAGNX_DB_QUEUED;
    req->ok = 0;
    req->failure = RAGNX_DB_ESTATEMENT;

    for (i = 0; i < RAGNX_DB_REQ_MAX; i++) {
        req->res[i] = NULL;
    }

    ragnx_cond_init(&req->cond);

    pthread_mutex_lock(&pool->lock);

    *pool->tail = req;
    pool->tail = &req->next;
    pool->queued++;
    served = pool->served;
    until = &patience;

    while (req->state != RAGNX_DB_DONE) {

        if (req->state == RAGNX_DB_QUEUED
            && (pool->holders == 0
                || pool->queued > RAGNX_DB_BATCH_MAX * pool->holders
                || until == &deadline))
        {
            /* counted before connecting, which unlocks the pool */
            failed = 0;
            pool->holders++;
            conn = ragnx_db_take(pool, &failed);

            if (conn) {
                ragnx_db_combine(pool, conn);
                pool->holders--;
                continue;
            }

            pool->holders--;

            if (failed && req->state == RAGNX_DB_QUEUED) {
                /* the database is away: fail now, the job retries */
                req->failure = RAGNX_DB_EUNAVAILABLE;
                ragnx_db_unqueue(pool, req);
                pthread_mutex_unlock(&pool->lock);
                pthread_cond_destroy(&req->cond);
                return RAGNX_ERROR;
            }
        }

        if (req->state == RAGNX_DB_TAKEN) {
            /* being run: the holder signals when it is done */
            pthread_cond_wait(&req->cond, &pool->lock);
            continue;
        }

        rc = pthread_cond_timedwait(&req->cond, &pool->lock, until);

        if (rc != 0 && until == &patience) {
            if (pool->served != served) {
                /* slow but moving: wait for them again */
                served = pool->served;
                ragnx_deadline(&patience, RAGNX_DB_PATIENCE);
                continue;
            }

            /* stuck: this step may take a connection of its own */
            until = &deadline;
            continue;
        }

        if (rc != 0 && req->state == RAGNX_DB_QUEUED) {
            req->failure = RAGNX_DB_EBUSY;
            ragnx_db_unqueue(pool, req);
            pthread_mutex_unlock(&pool->lock);
            pthread_cond_destroy(&req->cond);

            ragnx_log(RAGNX_LOG_WARN, "no postgres connection free after "
                      "%ld ms", pool->timeout);
            return RAGNX_ERROR;
        }
    }

    pthread_mutex_unlock(&pool->lock);
    pthread_cond_destroy(&req->cond);

    return req->ok ? RAGNX_OK : RAGNX_ERROR;
}


/* a failed request's reason, for the job's error */

const char *
ragnx_db_reason(const ragnx_db_req_t *req)
{
    switch (req->failure) {

    case RAGNX_DB_ETIMEDOUT:
        return "database timeout";

    case RAGNX_DB_ELOST:
        return "database connection lost";

    case RAGNX_DB_EUNAVAILABLE:
        return "database unavailable";

    case RAGNX_DB_EBUSY:
        return "no database connection free";

    default:
        return "database error";
    }
}


/* with the lock held: a request that no one took leaves the queue */

static void
ragnx_db_unqueue(ragnx_db_pool_t *pool, ragnx_db_req_t *req)
{
    ragnx_db_req_t  **pp;

    for (pp = &pool->head; *pp != req; pp = &(*pp)->next) {
        /* void */
    }

    *pp = req->next;
    pool->queued--;

    if (pool->tail == &req->next) {
        pool->tail = pp;
    }
}


/*
 * With the lock held: an idle connection, or a new one under the bound
 * (*failed set when connecting failed).
 */

static PGconn *
ragnx_db_take(ragnx_db_pool_t *pool, int *failed)
{
    PGconn  *conn;

    if (pool->nidle > 0) {
        return pool->idle[--pool->nidle];
    }

    if (pool->total >= pool->size) {
        return NULL;
    }

    pool->total++;
    pthread_mutex_unlock(&pool->lock);

    conn = ragnx_db_pool_connect(pool);

    pthread_mutex_lock(&pool->lock);

    if (conn == NULL) {
        pool->total--;
        *failed = 1;
    }

    return conn;
}


/*
 * With the lock held: run batches of the queue on conn, then give conn
 * back (or drop it when broken) and wake the next waiter.
 */

static void
ragnx_db_combine(ragnx_db_pool_t *pool, PGconn *conn)
{
    int              i, n, ndone, rc, rounds;
    ragnx_db_req_t  *batch[RAGNX_DB_BATCH_MAX], *done[RAGNX_DB_BATCH_MAX];

    for (rounds = 0; pool->head && rounds < 4; rounds++) {

        for (n = 0; pool->head && n < RAGNX_DB_BATCH_MAX; n++) {
            batch[n] = pool->head;
            batch[n]->state = RAGNX_DB_TAKEN;
            pool->head = batch[n]->next;
        }

        pool->queued -= n;

        if (pool->head == NULL) {
            pool->tail = &pool->head;
        }

        pthread_mutex_unlock(&pool->lock);

        if (n > 1) {
            ragnx_log(RAGNX_LOG_DEBUG, "postgres: %d requests in one "
                      "pipeline", n);
        }

        ndone = 0;

        rc = ragnx_db_serve(conn, batch, &n, done, &ndone);

        if (rc != RAGNX_OK && n > 0 && PQstatus(conn) == CONNECTION_BAD) {
            /*
             * The connection was lost (a server restarted since it was
             * opened, say): the others idle beside it are surely stale
             * too.  Those are closed, and what has no results yet is
             * sent once more on a new connection; every request here is
             * a read or the idempotent exchange.
             */
            PQfinish(conn);

            pthread_mutex_lock(&pool->lock);
            ragnx_db_purge(pool);
            pthread_mutex_unlock(&pool->lock);

            ragnx_log_error(RAGNX_LOG_WARN, RAGNX_ERR_PG,
                            "postgres connection lost: %d "
                            "requests sent again on a new connection", n);

            conn = ragnx_db_pool_connect(pool);

            if (conn) {
                rc = ragnx_db_serve(conn, batch, &n, done, &ndone);

            } else {
                for (i = 0; i < n; i++) {
                    batch[i]->failure = RAGNX_DB_EUNAVAILABLE;
                }
            }
        }

        if (conn && rc != RAGNX_OK
            && (PQstatus(conn) != CONNECTION_OK
                || PQpipelineStatus(conn) != PQ_PIPELINE_OFF
                || PQtransactionStatus(conn) != PQTRANS_IDLE))
        {
            PQfinish(conn);
            conn = NULL;
        }

        /*
         * all at once: handing each out as its results arrive lets the
         * threads go on one by one, and the LLM server and Redis then
         * wake for each request instead of for many (measured: more CPU
         * per job in both, fewer jobs/s)
         */

        pthread_mutex_lock(&pool->lock);

        pool->served++;

        for (i = 0; i < ndone; i++) {
            done[i]->state = RAGNX_DB_DONE;
            pthread_cond_signal(&done[i]->cond);
        }

        for (i = 0; i < n; i++) {
            batch[i]->state = RAGNX_DB_DONE;
            pthread_cond_signal(&batch[i]->cond);
        }

        if (conn == NULL) {
            pool->total--;
            break;
        }
    }

    if (conn) {
        pool->idle[pool->nidle++] = conn;
    }

    if (pool->head) {
        pthread_cond_signal(&pool->head->cond);
    }

    pthread_cond_signal(&pool->cond);
}


/*
 * A batch on conn, within db_query_timeout: together, or one by one
 * when any fails; the statements prepared when the connection lacks
 * them.  What is left in batch (*n) failed, as ragnx_db_run() says.
 */

static int
ragnx_db_serve(PGconn *conn, ragnx_db_req_t **batch, int *n,
    ragnx_db_req_t **done, int *ndone)
{
    int        rc;
    long long  deadline;

    deadline = ragnx_mono_ms() + ragnx_conf->db_query_timeout;

    if (*n > 1) {
        rc = ragnx_db_run_together(conn, batch, *n, deadline);

        if (rc == RAGNX_OK) {
            memcpy(done + *ndone, batch, *n * sizeof(ragnx_db_req_t *));
            *ndone += *n;
            *n = 0;
            return RAGNX_OK;
        }

        if (rc != RAGNX_DECLINED) {
            return rc;
        }

        ragnx_log(RAGNX_LOG_DEBUG, "postgres: a request failed, "
                  "%d run again one by one", *n);
    }

    rc = ragnx_db_run(conn, batch, n, done, ndone, deadline);

    if (rc == RAGNX_AGAIN) {
        /*
         * a connection without the statements: prepare those of the
         * requests that needed one (one prepared already just fails),
         * run those again.  Only those: preparing takes a lock on each
         * table a statement reads, and a lock held elsewhere on one
         * (chunks, say) must not hold up steps that do not read it.
         */
        ragnx_db_prepare(conn, batch, *n, deadline);
        rc = ragnx_db_run(conn, batch, n, done, ndone, deadline);
    }

    return rc;
}


static void
ragnx_db_prepare(PGconn *conn, ragnx_db_req_t **batch, int n,
    long long deadline)
{
    int  i, j, s;
    int  seen[RAGNX_STMT_N] = { 0 };

    for (i = 0; i < n; i++) {
        for (j = 0; j < batch[i]->n; j++) {
            s = batch[i]->stmts[j];

            if (!seen[s]) {
                seen[s] = 1;

                if (!PQsendPrepare(conn, ragnx_statements[s].name,
                                   ragnx_statements[s].sql,
                                   ragnx_statements[s].nparams, NULL))
                {
                    return;
                }

                /* a failure shows in the run that follows */
                PQclear(ragnx_db_result(conn, deadline));
                PQclear(ragnx_db_result(conn, deadline));
            }
        }
    }
}


/* a request's statements, into the pipeline; 0 when libpq failed */

static int
ragnx_db_send(PGconn *conn, ragnx_db_req_t *q)
{
    int  j;

    for (j = 0; j < q->n; j++) {
        if (!PQsendQueryPrepared(conn, ragnx_statements[q->stmts[j]].name,
                                 ragnx_statements[q->stmts[j]].nparams,
                                 q->params[j], NULL, NULL, 0))
        {
            return 0;
        }
    }

    return 1;
}


/*
 * PQgetResult within the deadline; NULL also when the wait failed (see
 * ragnx_db_failure())
 */

static PGresult *
ragnx_db_result(PGconn *conn, long long deadline)
{
    if (ragnx_db_wait(conn, deadline) != RAGNX_OK) {
        return NULL;
    }

    return PQgetResult(conn);
}


/*
 * The next statement's result, its end consumed; NULL: the connection
 * was lost or gave no answer in time.
 */

static PGresult *
ragnx_db_next(PGconn *conn, long long deadline)
{
    PGresult  *res, *r;

    res = ragnx_db_result(conn, deadline);

    while (res) {
        if (ragnx_db_wait(conn, deadline) != RAGNX_OK) {
            /* the end never came */
            PQclear(res);
            return NULL;
        }

        r = PQgetResult(conn);
        if (r == NULL) {
            break;
        }

        PQclear(r);
    }

    return res;
}


/* why a pipeline broke off, logged: RAGNX_DB_ETIMEDOUT or _ELOST */

static int
ragnx_db_failure(PGconn *conn, long long deadline)
{
    if (PQstatus(conn) == CONNECTION_OK && ragnx_mono_ms() >= deadline) {
        ragnx_db_log_failure(conn, RAGNX_AGAIN, "pipeline");
        return RAGNX_DB_ETIMEDOUT;
    }

    ragnx_db_log_failure(conn, RAGNX_ERROR, "pipeline");

    return RAGNX_DB_ELOST;
}


/* the results of n requests dropped, each marked failed */

static void
ragnx_db_clear(ragnx_db_req_t **batch, int n, int failure)
{
    int  i, j;

    for (i = 0; i < n; i++) {
        batch[i]->ok = 0;
        batch[i]->failure = failure;

        for (j = 0; j < batch[i]->n; j++) {
            PQclear(batch[i]->res[j]);
            batch[i]->res[j] = NULL;
        }
    }
}


/*
 * The requests of a batch in one transaction: one sync, so PostgreSQL
 * commits, writes its WAL and flushes its output once a pipeline instead
 * of once a request.  The writes take their chats' row locks in chat id
 * order, so two such transactions cannot deadlock on them.  Any error
 * rolls every request back: RAGNX_DECLINED, and ragnx_db_run runs them
 * again, each behind its own sync, so that one request's failure is its
 * own.  RAGNX_ERROR when the connection failed (no request has results).
 */

static int
ragnx_db_run_together(PGconn *conn, ragnx_db_req_t **batch, int n,
    long long deadline)
{
    int              i, j, failed;
    PGresult        *res, *r;
    ragnx_db_req_t  *q;

    qsort(batch, n, sizeof(ragnx_db_req_t *), ragnx_db_req_cmp);

    if (!PQenterPipelineMode(conn)) {
        goto broken;
    }

    for (i = 0; i < n; i++) {
        if (!ragnx_db_send(conn, batch[i])) {
            goto broken;
        }
    }

    if (!PQpipelineSync(conn)) {
        goto broken;
    }

    failed = 0;

    for (i = 0; i < n; i++) {
        q = batch[i];
        q->ok = 1;

        for (j = 0; j < q->n; j++) {
            res = ragnx_db_next(conn, deadline);
            if (res == NULL) {
                goto broken;
            }

            q->res[j] = res;

            if (PQresultStatus(res) != PGRES_TUPLES_OK) {
                failed = 1;
            }
        }
    }

    r = ragnx_db_result(conn, deadline);

    if (r == NULL || PQresultStatus(r) != PGRES_PIPELINE_SYNC) {
        PQclear(r);
        goto broken;
    }

    PQclear(r);

    if (!PQexitPipelineMode(conn)) {
        goto broken;
    }

    if (!failed) {
        return RAGNX_OK;
    }

    ragnx_db_clear(batch, n, RAGNX_DB_ESTATEMENT);

    return RAGNX_DECLINED;

broken:

    ragnx_db_clear(batch, n, ragnx_db_failure(conn, deadline));

    return RAGNX_ERROR;
}


/*
 * Reads first, writes (the exchange) last, so row locks are held for the
 * shortest time, and those by chat id.
 */

static int
ragnx_db_req_cmp(const void *a, const void *b)
{
    const ragnx_db_req_t  *x = *(ragnx_db_req_t *const *) a;
    const ragnx_db_req_t  *y = *(ragnx_db_req_t *const *) b;
    int                    wx, wy;

    wx = x->stmts[0] == RAGNX_STMT_EXCHANGE;
    wy = y->stmts[0] == RAGNX_STMT_EXCHANGE;

    if (wx != wy) {
        return wx - wy;
    }

    if (wx) {
        return strcmp(x->params[0][0], y->params[0][0]);
    }

    return 0;
}


/*
 * One pipeline: each request's statements and a sync.  Requests whose
 * results are in go to done (each one's ok says whether it succeeded).
 * What is left in batch (*n of them) needs another run: RAGNX_AGAIN when
 * a statement was not prepared on this connection (the requests after
 * it, each behind its own sync, ran as usual), RAGNX_ERROR when the
 * connection failed (their ok is 0); RAGNX_OK when none is left.
 */

static int
ragnx_db_run(PGconn *conn, ragnx_db_req_t **batch, int *n,
    ragnx_db_req_t **done, int *ndone, long long deadline)
{
    int              i, j, k, left, prepare, failure;
    const char      *state;
    PGresult        *res, *r;
    ragnx_db_req_t  *q;

    left = 0;
    i = 0;

    if (!PQenterPipelineMode(conn)) {
        goto failed;
    }

    for (i = 0; i < *n; i++) {
        if (!ragnx_db_send(conn, batch[i])) {
            i = 0;
            goto failed;
        }

        if (!PQpipelineSync(conn)) {
            i = 0;
            goto failed;
        }
    }

    for (i = 0; i < *n; i++) {
        q = batch[i];
        q->ok = 1;
        prepare = 0;

        for (j = 0; j < q->n; j++) {
            res = ragnx_db_next(conn, deadline);
            if (res == NULL) {
                goto failed;
            }

            q->res[j] = res;

            if (PQresultStatus(res) == PGRES_TUPLES_OK) {
                continue;
            }

            q->ok = 0;
            q->failure = RAGNX_DB_ESTATEMENT;

            state = PQresultErrorField(res, PG_DIAG_SQLSTATE);

            if (state && strcmp(state, "26000") == 0) {
                prepare = 1;

            } else if (PQresultStatus(res) != PGRES_PIPELINE_ABORTED) {
                ragnx_log_error(RAGNX_LOG_ERROR, RAGNX_ERR_PG,
                                "postgres %s: %s",
                                ragnx_statements[q->stmts[j]].name,
                                PQresultErrorMessage(res));
            }
        }

        r = ragnx_db_result(conn, deadline);

        if (r == NULL || PQresultStatus(r) != PGRES_PIPELINE_SYNC) {
            PQclear(r);
            goto failed;
        }

        PQclear(r);

        if (prepare) {
            for (j = 0; j < q->n; j++) {
                PQclear(q->res[j]);
                q->res[j] = NULL;
            }

            batch[left++] = q;
            continue;
        }

        done[(*ndone)++] = q;
    }

    if (!PQexitPipelineMode(conn)) {
        i = *n;
        goto failed;
    }

    *n = left;

    return left ? RAGNX_AGAIN : RAGNX_OK;

failed:

    /* from request i on, and those kept for another run, all failed */

    failure = ragnx_db_failure(conn, deadline);

    for (k = i; k < *n; k++) {
        batch[left++] = batch[k];
    }

    ragnx_db_clear(batch, left, failure);

    *n = left;

    return RAGNX_ERROR;
}

