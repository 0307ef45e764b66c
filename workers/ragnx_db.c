
/*
 * ragnx worker pool: the PostgreSQL connection pool.  A bounded pool
 * shared by the threads of a worker process (connections are scarce,
 * LLM calls are slow: a thread holds a connection only around its
 * queries, never across the LLM call): connect, get, put, and a
 * statement prepared on first use.  The job threads' hot steps go
 * through the request queue of ragnx_db_pipeline.c instead.
 */


#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ragnx_db.h"


static PGconn *ragnx_db_borrow(ragnx_db_pool_t *pool, long timeout,
    int open);
static PGresult *ragnx_db_last(PGconn *conn, long long deadline,
    const char *what);


/*
 * A stalled server (stopped, or a host gone without a word) never closes
 * the connection, and on loopback TCP keepalive does not notice one: the
 * kernel answers for a stopped process.  So every wait for PostgreSQL is
 * bounded here, on the client's side: connect_timeout (whole seconds, at
 * least 2: libpq's rule) for a connect, and ragnx_db_wait() for every
 * answer.  Keepalives find a peer whose host went away.  The settings of
 * the conninfo come after ours and win.
 */

PGconn *
ragnx_db_connect(const char *conninfo, const char *password)
{
    int          n;
    char         timeout[24];
    PGconn      *conn;
    const char  *keys[8], *values[8];

    snprintf(timeout, sizeof(timeout), "%ld",
             ragnx_conf->db_query_timeout / 1000 + 1 < 2
             ? 2 : ragnx_conf->db_query_timeout / 1000 + 1);

    n = 0;
    keys[n] = "connect_timeout";
    values[n++] = timeout;
    keys[n] = "keepalives";
    values[n++] = "1";
    keys[n] = "keepalives_idle";
    values[n++] = "30";
    keys[n] = "keepalives_interval";
    values[n++] = "10";
    keys[n] = "dbname";
    values[n++] = conninfo;

    if (password) {
        keys[n] = "password";
        values[n++] = password;
    }

    keys[n] = NULL;
    values[n] = NULL;

    conn = PQconnectdbParams(keys, values, 1);

    if (conn == NULL || PQstatus(conn) != CONNECTION_OK) {
        ragnx_log_error(RAGNX_LOG_ERROR, RAGNX_ERR_PG,
                        "postgres connect failed: %s",
                        conn ? PQerrorMessage(conn) : "out of memory");
        if (conn) {
            PQfinish(conn);
        }

        return NULL;
    }

    return conn;
}


/*
 * Every statement a pooled connection runs reads or locks a few rows
 * through an index, and the tables start empty: a plan made while one is
 * small scans it whole, the connection keeps that plan (and PostgreSQL's
 * own foreign key checks theirs) while the table grows with every job,
 * and only autovacuum's next analyze, up to a minute later, replaces
 * it.  Measured on a fresh database: the history read and the chats key
 * check took 0.1 - 0.4 ms each instead of 0.01.  Without sequential
 * scans the first plans are already the right ones.
 *
 * Generic plans only: with its question inside to_tsvector(),
 * ragnx_retrieve_plain looked cheaper planned for each question, and
 * PostgreSQL planned it anew every time (0.12 - 0.16 ms, as long as
 * running it); no statement here has a plan that depends on its values.
 */

PGconn *
ragnx_db_pool_connect(ragnx_db_pool_t *pool)
{
    char       sql[160];
    PGconn    *conn;
    PGresult  *res;

    conn = ragnx_db_connect(pool->conninfo, pool->password);
    if (conn == NULL) {
        return NULL;
    }

    /*
     * The pooled connections never block (ragnx_db_wait() bounds their
     * waits); statement_timeout is the second line: a statement the
     * server runs on (stuck behind a lock, say) after the pool gave up
     * on its connection ends there too.
     */

    if (PQsetnonblocking(conn, 1) != 0) {
        ragnx_log_error(RAGNX_LOG_ERROR, RAGNX_ERR_PG,
                        "postgres: %s", PQerrorMessage(conn));
        PQfinish(conn);
        return NULL;
    }

    snprintf(sql, sizeof(sql), "SET enable_seqscan = off; "
             "SET plan_cache_mode = force_generic_plan; "
             "SET statement_timeout = %ld", ragnx_conf->db_query_timeout);

    res = ragnx_db_exec(conn, sql, 0, NULL, "set");

    if (ragnx_db_ok(conn, res, PGRES_COMMAND_OK, "set") != RAGNX_OK) {
        PQclear(res);
        PQfinish(conn);
        return NULL;
    }

    PQclear(res);

    return conn;
}


ragnx_db_pool_t *
ragnx_db_pool_create(const char *conninfo, const char *password, int size,
    long timeout_ms)
{
    ragnx_db_pool_t  *pool;

    pool = calloc(1, sizeof(ragnx_db_pool_t));
    if (pool == NULL) {
        return NULL;
    }

    pool->idle = calloc(size, sizeof(PGconn *));
    pool->conninfo = strdup(conninfo);
    pool->password = password ? strdup(password) : NULL;

    if (pool->idle == NULL || pool->conninfo == NULL
        || (password && pool->password == NULL))
    {
        ragnx_db_pool_destroy(pool);
        return NULL;
    }

    pool->size = size;
    pool->timeout = timeout_ms;
    pool->tail = &pool->head;
    pthread_mutex_init(&pool->lock, NULL);
    ragnx_cond_init(&pool->cond);

    return pool;
}


void
ragnx_db_pool_destroy(ragnx_db_pool_t *pool)
{
    int  i;

    if (pool == NULL) {
        return;
    }

    for (i = 0; i < pool->nidle; i++) {
        PQfinish(pool->idle[i]);
    }

    free(pool->idle);
    free(pool->conninfo);

    if (pool->password) {
        memset(pool->password, 0, strlen(pool->password));
        free(pool->password);
    }

    free(pool);
}


/*
 * An idle connection, a new one while under the bound, or wait for one to
 * come back; NULL after db_timeout or when connecting fails.
 */

PGconn *
ragnx_db_get(ragnx_db_pool_t *pool)
{
    return ragnx_db_get_within(pool, pool->timeout);
}


/* the same, waiting at most timeout ms (0: only what is free now) */

PGconn *
ragnx_db_get_within(ragnx_db_pool_t *pool, long timeout)
{
    return ragnx_db_borrow(pool, timeout, 1);
}


/*
 * Without waiting: an idle connection or, when none is open at all or
 * open is set, a new one under the bound.  The queue decides when more
 * connections are worth opening (see ragnx_db_submit()); a caller that
 * can wait a moment should not open one behind its back.
 */

PGconn *
ragnx_db_get_idle(ragnx_db_pool_t *pool, int open)
{
    return ragnx_db_borrow(pool, 0, open);
}


static PGconn *
ragnx_db_borrow(ragnx_db_pool_t *pool, long timeout, int open)
{
    PGconn           *conn;
    struct timespec   deadline;

    ragnx_deadline(&deadline, timeout);

    pthread_mutex_lock(&pool->lock);

    for ( ;; ) {
        if (pool->nidle > 0) {
            conn = pool->idle[--pool->nidle];
            pthread_mutex_unlock(&pool->lock);
            return conn;
        }

        if (pool->total < pool->size && (open || pool->total == 0)) {
            pool->total++;
            pthread_mutex_unlock(&pool->lock);

            conn = ragnx_db_pool_connect(pool);

            if (conn == NULL) {
                pthread_mutex_lock(&pool->lock);
                pool->total--;
                pthread_cond_signal(&pool->cond);
                pthread_mutex_unlock(&pool->lock);
            }

            return conn;
        }

        if (pthread_cond_timedwait(&pool->cond, &pool->lock, &deadline)
            != 0)
        {
            pthread_mutex_unlock(&pool->lock);

            if (timeout > 0) {
                ragnx_log(RAGNX_LOG_WARN, "no postgres connection free "
                          "after %ld ms", timeout);
            }

            return NULL;
        }
    }
}


/*
 * With the lock held: the idle connections closed, when one beside them
 * was found lost (a server restart ends them all): the next request
 * then opens a new one instead of failing on each stale one in turn.
 */

void
ragnx_db_purge(ragnx_db_pool_t *pool)
{
    int  i;

    for (i = 0; i < pool->nidle; i++) {
        PQfinish(pool->idle[i]);
    }

    pool->total -= pool->nidle;
    pool->nidle = 0;
}


/* whether every open connection is in use (and at least one is open) */

int
ragnx_db_busy(ragnx_db_pool_t *pool)
{
    int  busy;

    pthread_mutex_lock(&pool->lock);
    busy = pool->total > 0 && pool->nidle == 0;
    pthread_mutex_unlock(&pool->lock);

    return busy;
}


/*
 * How many connections are open, idle or in use: none after
 * ragnx_db_get_idle() found none means it tried to open one and failed.
 */

int
ragnx_db_open(ragnx_db_pool_t *pool)
{
    int  n;

    pthread_mutex_lock(&pool->lock);
    n = pool->total;
    pthread_mutex_unlock(&pool->lock);

    return n;
}


/* give a connection back; a broken one is closed and its slot freed */

void
ragnx_db_put(ragnx_db_pool_t *pool, PGconn *conn, int broken)
{
    int  lost;

    if (conn == NULL) {
        return;
    }

    if (!broken && PQstatus(conn) == CONNECTION_OK
        && PQtransactionStatus(conn) == PQTRANS_IDLE)
    {
        pthread_mutex_lock(&pool->lock);
        pool->idle[pool->nidle++] = conn;

    } else {
        lost = PQstatus(conn) == CONNECTION_BAD;
        PQfinish(conn);

        pthread_mutex_lock(&pool->lock);
        pool->total--;

        if (lost) {
            /* a restarted server: those idle beside it are stale too */
            ragnx_db_purge(pool);
        }
    }

    /* a queued request first: its thread takes the connection over */
    if (pool->head) {
        pthread_cond_signal(&pool->head->cond);
    }

    pthread_cond_signal(&pool->cond);
    pthread_mutex_unlock(&pool->lock);
}


int
ragnx_db_ok(PGconn *conn, PGresult *res, ExecStatusType want,
    const char *what)
{
    if (res && PQresultStatus(res) == want) {
        return RAGNX_OK;
    }

    ragnx_log_error(RAGNX_LOG_ERROR, RAGNX_ERR_PG,
                    "postgres %s: %s", what,
                    res ? PQresultErrorMessage(res) : PQerrorMessage(conn));

    return RAGNX_ERROR;
}


/*
 * Wait until conn has sent what it holds and can hand out a result
 * without blocking, at most until deadline (ragnx_mono_ms()).  RAGNX_OK;
 * RAGNX_AGAIN when the deadline passed (the connection is then in the
 * middle of a query: close it); RAGNX_ERROR when the connection failed.
 * Works on a blocking connection too (its flush blocks instead).
 */

int
ragnx_db_wait(PGconn *conn, long long deadline)
{
    int            rc, more;
    long long      left;
    struct pollfd  pfd;

    for ( ;; ) {
        more = PQflush(conn);

        if (more < 0) {
            return RAGNX_ERROR;
        }

        if (more == 0 && !PQisBusy(conn)) {
            return RAGNX_OK;
        }

        left = deadline - ragnx_mono_ms();
        if (left <= 0) {
            return RAGNX_AGAIN;
        }

        pfd.fd = PQsocket(conn);
        if (pfd.fd < 0) {
            return RAGNX_ERROR;
        }

        pfd.events = POLLIN | (more ? POLLOUT : 0);
        pfd.revents = 0;

        rc = poll(&pfd, 1, left > INT_MAX ? INT_MAX : (int) left);

        if (rc < 0 && errno != EINTR) {
            return RAGNX_ERROR;
        }

        if (rc > 0 && (pfd.revents & (POLLIN | POLLERR | POLLHUP))
            && !PQconsumeInput(conn))
        {
            return RAGNX_ERROR;
        }
    }
}


/* the log line of a wait that ended without an answer */

void
ragnx_db_log_failure(PGconn *conn, int rc, const char *what)
{
    if (rc == RAGNX_AGAIN) {
        ragnx_log_error(RAGNX_LOG_ERROR, RAGNX_ERR_PG,
                        "postgres %s: no answer within %ld ms "
                        "(db_query_timeout): connection closed", what,
                        ragnx_conf->db_query_timeout);
        return;
    }

    ragnx_log_error(RAGNX_LOG_ERROR, RAGNX_ERR_PG,
                    "postgres %s: connection lost: %s", what,
                    PQerrorMessage(conn));
}


/*
 * The last result of what was sent, within the deadline; NULL when the
 * wait failed (logged: a timeout leaves the connection busy, so that
 * ragnx_db_put() closes it).
 */

static PGresult *
ragnx_db_last(PGconn *conn, long long deadline, const char *what)
{
    int        rc;
    PGresult  *res, *last;

    last = NULL;

    for ( ;; ) {
        rc = ragnx_db_wait(conn, deadline);

        if (rc != RAGNX_OK) {
            PQclear(last);
            ragnx_db_log_failure(conn, rc, what);
            return NULL;
        }

        res = PQgetResult(conn);
        if (res == NULL) {
            return last;
        }

        PQclear(last);
        last = res;
    }
}


/* PQexecParams, within db_query_timeout */

PGresult *
ragnx_db_exec(PGconn *conn, const char *sql, int nparams,
    const char *const *params, const char *what)
{
    long long  deadline;

    deadline = ragnx_mono_ms() + ragnx_conf->db_query_timeout;

    if (nparams == 0) {
        if (!PQsendQuery(conn, sql)) {
            return NULL;
        }

    } else if (!PQsendQueryParams(conn, sql, nparams, NULL, params, NULL,
                                  NULL, 0))
    {
        return NULL;
    }

    return ragnx_db_last(conn, deadline, what);
}


/*
 * Run a statement by name, preparing it on this connection the first
 * time (SQLSTATE 26000: it does not exist there yet); within
 * db_query_timeout, each round trip.
 */

PGresult *
ragnx_db_query(PGconn *conn, const char *name, const char *sql, int nparams,
    const char *const *params)
{
    const char  *state;
    PGresult    *res;

    if (!PQsendQueryPrepared(conn, name, nparams, params, NULL, NULL, 0)) {
        return NULL;
    }

    res = ragnx_db_last(conn, ragnx_mono_ms() + ragnx_conf->db_query_timeout,
                        name);

    state = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;

    if (state == NULL || strcmp(state, "26000") != 0) {
        return res;
    }

    PQclear(res);

    if (!PQsendPrepare(conn, name, sql, nparams, NULL)) {
        return NULL;
    }

    res = ragnx_db_last(conn, ragnx_mono_ms() + ragnx_conf->db_query_timeout,
                        name);

    if (res == NULL || PQresultStatus(res) != PGRES_COMMAND_OK) {
        return res;
    }

    PQclear(res);

    if (!PQsendQueryPrepared(conn, name, nparams, params, NULL, NULL, 0)) {
        return NULL;
    }

    return ragnx_db_last(conn, ragnx_mono_ms() + ragnx_conf->db_query_timeout,
                         name);
}
