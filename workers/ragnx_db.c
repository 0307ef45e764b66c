
/*
 * ragnx worker pool: the PostgreSQL connection pool.  A bounded pool
 * shared by the threads of a worker process (connections are scarce,
 * LLM calls are slow: a thread holds a connection only around its
 * queries, never across the LLM call): connect, get, put, and a
 * statement prepared on first use.  The job threads' hot steps go
 * through the request queue of ragnx_db_pipeline.c instead.
 */


#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ragnx_db.h"


static PGconn *ragnx_db_borrow(ragnx_db_pool_t *pool, long timeout,
    int open);


PGconn *
ragnx_db_connect(const char *conninfo, const char *password)
{
    PGconn      *conn;
    const char  *keys[3], *values[3];

    keys[0] = "dbname";
    values[0] = conninfo;
    keys[1] = password ? "password" : NULL;
    values[1] = password;
    keys[2] = NULL;
    values[2] = NULL;

    conn = PQconnectdbParams(keys, values, 1);

    if (conn == NULL || PQstatus(conn) != CONNECTION_OK) {
        ragnx_log(RAGNX_LOG_ERROR, "postgres connect failed: %s",
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
    PGconn    *conn;
    PGresult  *res;

    conn = ragnx_db_connect(pool->conninfo, pool->password);
    if (conn == NULL) {
        return NULL;
    }

    res = PQexec(conn, "SET enable_seqscan = off; "
                 "SET plan_cache_mode = force_generic_plan");

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


/* give a connection back; a broken one is closed and its slot freed */

void
ragnx_db_put(ragnx_db_pool_t *pool, PGconn *conn, int broken)
{
    if (conn == NULL) {
        return;
    }

    if (!broken && PQstatus(conn) == CONNECTION_OK
        && PQtransactionStatus(conn) == PQTRANS_IDLE)
    {
        pthread_mutex_lock(&pool->lock);
        pool->idle[pool->nidle++] = conn;

    } else {
        PQfinish(conn);

        pthread_mutex_lock(&pool->lock);
        pool->total--;
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

    ragnx_log(RAGNX_LOG_ERROR, "postgres %s: %s", what,
              res ? PQresultErrorMessage(res) : PQerrorMessage(conn));

    return RAGNX_ERROR;
}


/*
 * Run a statement by name, preparing it on this connection the first
 * time (SQLSTATE 26000: it does not exist there yet).
 */

PGresult *
ragnx_db_query(PGconn *conn, const char *name, const char *sql, int nparams,
    const char *const *params)
{
    const char  *state;
    PGresult    *res;

    res = PQexecPrepared(conn, name, nparams, params, NULL, NULL, 0);

    state = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;

    if (state == NULL || strcmp(state, "26000") != 0) {
        return res;
    }

    PQclear(res);

    res = PQprepare(conn, name, sql, nparams, NULL);

    if (res == NULL || PQresultStatus(res) != PGRES_COMMAND_OK) {
        return res;
    }

    PQclear(res);

    return PQexecPrepared(conn, name, nparams, params, NULL, NULL, 0);
}
