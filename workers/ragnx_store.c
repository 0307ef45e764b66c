
/*
 * ragnx worker pool: PostgreSQL.  A bounded connection pool shared by the
 * job threads of a worker process (connections are scarce, LLM calls are
 * slow: a thread holds a connection only around its queries, never across
 * the LLM call), the migrations (sql/, embedded at build time), chats and
 * messages, and full-text retrieval.
 */


#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ragnx_worker.h"


typedef struct {
    int           version;
    const char   *name;
    const char   *sql;
} ragnx_migration_t;


extern const ragnx_migration_t  ragnx_migrations[];


/*
 * The statements of one job step (at most 3), queued for whichever
 * thread holds a connection: see ragnx_db_submit().
 */

#define RAGNX_DB_REQ_MAX    3
#define RAGNX_DB_BATCH_MAX  32
#define RAGNX_DB_PATIENCE   50          /* ms, see ragnx_db_submit() */

typedef struct ragnx_db_req_s  ragnx_db_req_t;

struct ragnx_db_req_s {
    ragnx_db_req_t     *next;
    pthread_cond_t      cond;
    int                 n;
    const int          *stmts;
    const char *const  *params[RAGNX_DB_REQ_MAX];
    PGresult           *res[RAGNX_DB_REQ_MAX];
    int                 state;          /* RAGNX_DB_QUEUED ... */
    int                 ok;
};

#define RAGNX_DB_QUEUED  0
#define RAGNX_DB_TAKEN   1
#define RAGNX_DB_DONE    2


struct ragnx_db_pool_s {
    pthread_mutex_t   lock;
    pthread_cond_t    cond;
    ragnx_db_req_t   *head;         /* requests waiting for a connection */
    int               queued;       /* how many */
    int               holders;      /* connections serving the queue */
    unsigned long     served;       /* pipelines they have finished */
    ragnx_db_req_t  **tail;
    PGconn          **idle;
    int               nidle;
    int               total;        /* open or lent connections */
    int               size;
    long              timeout;
    char             *conninfo;
    char             *password;
};


/* statements prepared on the pooled connections, on first use */

#define RAGNX_STMT_CHAT      0
#define RAGNX_STMT_HISTORY   1
#define RAGNX_STMT_RETRIEVE  2
#define RAGNX_STMT_EXCHANGE  3
#define RAGNX_STMT_PLAIN     4


/* both retrieval statements: a chunk's postings of the question's lexemes */
#define RAGNX_SQL_POSTINGS                                                    \
    "SELECT t.chunk_id AS id, count(*) AS cover, "                            \
    "sum(t.tenths)::float8 / 10 AS rank FROM "

/* and their passages, r's chunks best first */
#define RAGNX_SQL_PASSAGES                                                    \
    "SELECT c.path, c.title, c.heading, c.body, r.cover, r.rank "             \
    "FROM r JOIN chunks c ON c.id = r.id "                                    \
    "ORDER BY r.cover DESC, r.rank DESC, r.id"


static const struct {
    const char   *name;
    int           nparams;
    const char   *sql;
} ragnx_statements[] = {

    { "ragnx_chat", 2,
      "SELECT c.owner, m.content, coalesce(m.sources, '[]') "
      "FROM (SELECT $1::uuid AS id) x "
      "LEFT JOIN chats c ON c.id = x.id "
      "LEFT JOIN messages m ON m.job_id = $2::uuid "
      "AND m.role = 'assistant'"
    },

    { "ragnx_history", 2,
      "SELECT role, content FROM (SELECT role, "
      "content, seq FROM messages WHERE chat_id = $1 "
      "ORDER BY seq DESC LIMIT $2) m ORDER BY seq"
    },

    /*
     * The query is computed once (MATERIALIZED: a generic plan would
     * otherwise re-evaluate it for every row).  Its lexemes are matched
     * as they are: re-parsing the text with to_tsquery would stem them a
     * second time ("licens" -> "licen") and miss the chunks they are in.
     * The order is ts_rank_cd's, after the number of the question's terms
     * a chunk covers.  A plain question (an OR of lexemes) is ranked from
     * chunk_terms, the postings of its own lexemes with their weights
     * summed at ingest (sql/003_chunk_terms.sql), far cheaper than
     * ts_rank_cd on every match; a phrase or a negation by ts_rank_cd
     * itself, on the best $3 matches by the cheap measures.
     */

    { "ragnx_retrieve", 3,
      "WITH q AS MATERIALIZED (SELECT "
      "NULLIF(replace(a::text, ' & ', ' | '), '')::tsquery AS any, "
      "tsvector_to_array(to_tsvector('english', $1)) AS lex, "
      "strpos(a::text, '!') + strpos(a::text, '<') = 0 AS plain "
      "FROM websearch_to_tsquery('english', $1) a), "
      "r AS (" RAGNX_SQL_POSTINGS
      "q, chunk_terms t WHERE q.plain AND t.lexeme = ANY (q.lex) "
      "GROUP BY t.chunk_id "
      "UNION ALL "
      "SELECT x.id, x.cover, ts_rank_cd(x.tsv, x.any)::float8 "
      "FROM (SELECT c.id, c.tsv, q.any, "
      "length(c.tsv) - length(ts_delete(c.tsv, q.lex)) AS cover "
      "FROM q, chunks c WHERE NOT q.plain AND c.tsv @@ q.any "
      "ORDER BY cover DESC, ts_rank(c.tsv, q.any) DESC, c.id "
      "LIMIT greatest($2::integer, $3::integer)) x "
      "ORDER BY 2 DESC, 3 DESC, 1 LIMIT $2) "
      RAGNX_SQL_PASSAGES
    },

    /*
     * messages.chat_id has no foreign key (sql/004_messages_chat_lock.sql):
     * the messages go only into a chat this statement created, or one it
     * found and locked as the key check did, so that a delete waits for
     * the commit and its trigger then removes them too.
     */

    { "ragnx_exchange", 10,
      "WITH c AS (INSERT INTO chats (id, owner, title) "
      "VALUES ($1, $9, $10) ON CONFLICT (id) DO NOTHING RETURNING owner), "
      "e AS (SELECT owner FROM chats WHERE id = $1 FOR KEY SHARE), "
      "o AS (SELECT owner FROM c UNION ALL SELECT owner FROM e LIMIT 1), "
      "m AS (INSERT INTO messages (chat_id, job_id, role, content, "
      "sources, model, input_tokens, output_tokens) "
      "SELECT $1, $2, v.r, v.t, v.s, v.m, v.i, v.o FROM (VALUES "
      "('user', $3, NULL::jsonb, NULL::text, NULL::integer, "
      "NULL::integer), "
      "('assistant', $4, $5::jsonb, $6, $7::integer, $8::integer)) "
      "v (r, t, s, m, i, o) WHERE (SELECT owner FROM o) = $9 "
      "ON CONFLICT (job_id, role) DO NOTHING RETURNING 1), "
      "u AS (UPDATE chats SET updated_at = now() WHERE id = $1 "
      "AND owner = $9 AND EXISTS (SELECT 1 FROM m) RETURNING 1) "
      "SELECT (SELECT owner FROM o)"
    },

    /*
     * ragnx_retrieve's plain branch alone, for a question that cannot hold
     * a phrase or a negation (ragnx_store_plain()): the question is parsed
     * once instead of twice, and the executor sets up no phrase branch.
     * Under pgbench: 0.15 - 0.18 ms instead of 0.22 - 0.31.
     */

    { "ragnx_retrieve_plain", 2,
      "WITH r AS (" RAGNX_SQL_POSTINGS "chunk_terms t "
      "WHERE t.lexeme = ANY (tsvector_to_array(to_tsvector('english', $1))) "
      "GROUP BY t.chunk_id ORDER BY 2 DESC, 3 DESC, 1 LIMIT $2) "
      RAGNX_SQL_PASSAGES
    },

    { NULL, 0, NULL }
};


static int ragnx_db_ok(PGconn *conn, PGresult *res, ExecStatusType want,
    const char *what);
static int ragnx_store_chat_result(PGresult *res, const ragnx_job_t *job,
    int *created, ragnx_answer_t *found, char *err, size_t errlen);
static int ragnx_store_history_result(PGresult *res, ragnx_turn_t **turns,
    int *n);
static int ragnx_store_retrieve_result(PGresult *res,
    ragnx_passage_t **passages, int *n);
static int ragnx_db_submit(ragnx_db_pool_t *pool, ragnx_db_req_t *req);
static int ragnx_store_plain(const char *q);
static int ragnx_store_blank(unsigned char c);
static PGconn *ragnx_db_pool_connect(ragnx_db_pool_t *pool);
static PGconn *ragnx_db_take(ragnx_db_pool_t *pool, int *failed);
static void ragnx_db_combine(ragnx_db_pool_t *pool, PGconn *conn);
static void ragnx_db_unqueue(ragnx_db_pool_t *pool, ragnx_db_req_t *req);
static int ragnx_db_run_together(PGconn *conn, ragnx_db_req_t **batch,
    int n);
static int ragnx_db_send(PGconn *conn, ragnx_db_req_t *q);
static void ragnx_db_clear(ragnx_db_req_t **batch, int n);
static PGresult *ragnx_db_next(PGconn *conn);
static int ragnx_db_req_cmp(const void *a, const void *b);
static PGconn *ragnx_db_borrow(ragnx_db_pool_t *pool, long timeout,
    int open);
static void ragnx_db_prepare(PGconn *conn, ragnx_db_req_t **batch, int n);
static int ragnx_db_run(PGconn *conn, ragnx_db_req_t **batch, int *n,
    ragnx_db_req_t **done, int *ndone);


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

static PGconn *
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
    pthread_cond_init(&pool->cond, NULL);

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

static int
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

    for (i = 0; i < RAGNX_DB_REQ_MAX; i++) {
        req->res[i] = NULL;
    }

    pthread_cond_init(&req->cond, NULL);

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

        if (n > 1) {
            rc = ragnx_db_run_together(conn, batch, n);

            if (rc == RAGNX_OK) {
                memcpy(done, batch, n * sizeof(ragnx_db_req_t *));
                ndone = n;
                n = 0;

            } else if (rc == RAGNX_DECLINED) {
                ragnx_log(RAGNX_LOG_DEBUG, "postgres: a request failed, "
                          "%d run again one by one", n);
                rc = ragnx_db_run(conn, batch, &n, done, &ndone);
            }

        } else {
            rc = ragnx_db_run(conn, batch, &n, done, &ndone);
        }

        if (rc == RAGNX_AGAIN) {
            /*
             * a connection without the statements: prepare those of the
             * requests that needed one (one prepared already just
             * fails), run those again.  Only those: preparing takes a
             * lock on each table a statement reads, and a lock held
             * elsewhere on one (chunks, say) must not hold up steps that
             * do not read it.
             */
            ragnx_db_prepare(conn, batch, n);
            rc = ragnx_db_run(conn, batch, &n, done, &ndone);
        }

        if (rc != RAGNX_OK && (PQstatus(conn) != CONNECTION_OK
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


static void
ragnx_db_prepare(PGconn *conn, ragnx_db_req_t **batch, int n)
{
    int  i, j, s;
    int  seen[sizeof(ragnx_statements) / sizeof(ragnx_statements[0])]
         = { 0 };

    for (i = 0; i < n; i++) {
        for (j = 0; j < batch[i]->n; j++) {
            s = batch[i]->stmts[j];

            if (!seen[s]) {
                seen[s] = 1;
                PQclear(PQprepare(conn, ragnx_statements[s].name,
                                  ragnx_statements[s].sql,
                                  ragnx_statements[s].nparams, NULL));
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


/* the next statement's result, its end consumed; NULL: connection lost */

static PGresult *
ragnx_db_next(PGconn *conn)
{
    PGresult  *res, *r;

    res = PQgetResult(conn);

    if (res) {
        while ((r = PQgetResult(conn)) != NULL) {
            PQclear(r);
        }
    }

    return res;
}


/* the results of n requests dropped, each marked failed */

static void
ragnx_db_clear(ragnx_db_req_t **batch, int n)
{
    int  i, j;

    for (i = 0; i < n; i++) {
        batch[i]->ok = 0;

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
ragnx_db_run_together(PGconn *conn, ragnx_db_req_t **batch, int n)
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
            res = ragnx_db_next(conn);
            if (res == NULL) {
                goto broken;
            }

            q->res[j] = res;

            if (PQresultStatus(res) != PGRES_TUPLES_OK) {
                failed = 1;
            }
        }
    }

    r = PQgetResult(conn);

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

    ragnx_db_clear(batch, n);

    return RAGNX_DECLINED;

broken:

    ragnx_log(RAGNX_LOG_ERROR, "postgres pipeline: %s", PQerrorMessage(conn));

    ragnx_db_clear(batch, n);

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
    ragnx_db_req_t **done, int *ndone)
{
    int              i, j, k, left, prepare;
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
            res = ragnx_db_next(conn);
            if (res == NULL) {
                goto failed;
            }

            q->res[j] = res;

            if (PQresultStatus(res) == PGRES_TUPLES_OK) {
                continue;
            }

            q->ok = 0;

            state = PQresultErrorField(res, PG_DIAG_SQLSTATE);

            if (state && strcmp(state, "26000") == 0) {
                prepare = 1;

            } else if (PQresultStatus(res) != PGRES_PIPELINE_ABORTED) {
                ragnx_log(RAGNX_LOG_ERROR, "postgres %s: %s",
                          ragnx_statements[q->stmts[j]].name,
                          PQresultErrorMessage(res));
            }
        }

        r = PQgetResult(conn);

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

    ragnx_log(RAGNX_LOG_ERROR, "postgres pipeline: %s", PQerrorMessage(conn));

    for (k = i; k < *n; k++) {
        batch[left++] = batch[k];
    }

    ragnx_db_clear(batch, left);

    *n = left;

    return RAGNX_ERROR;
}


static int
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


/*
 * Apply the migrations not yet recorded in schema_migrations, each in its
 * own transaction, under an advisory lock so concurrent runs are safe.
 */

int
ragnx_db_migrate(PGconn *conn)
{
    int                       rc, applied;
    char                      ver[16];
    const char               *params[2];
    PGresult                 *res;
    const ragnx_migration_t  *m;

    res = PQexec(conn, "SELECT pg_advisory_lock(478560413816)");
    rc = ragnx_db_ok(conn, res, PGRES_TUPLES_OK, "advisory lock");
    PQclear(res);

    if (rc != RAGNX_OK) {
        return RAGNX_ERROR;
    }

    res = PQexec(conn, "CREATE TABLE IF NOT EXISTS schema_migrations ("
                 "version integer PRIMARY KEY, name text NOT NULL, "
                 "applied_at timestamptz NOT NULL DEFAULT now())");
    rc = ragnx_db_ok(conn, res, PGRES_COMMAND_OK, "schema_migrations");
    PQclear(res);

    applied = 0;

    for (m = ragnx_migrations; rc == RAGNX_OK && m->name; m++) {
        snprintf(ver, sizeof(ver), "%d", m->version);
        params[0] = ver;
        params[1] = m->name;

        res = PQexecParams(conn, "SELECT 1 FROM schema_migrations "
                           "WHERE version = $1", 1, NULL, params, NULL,
                           NULL, 0);
        rc = ragnx_db_ok(conn, res, PGRES_TUPLES_OK, "migration check");

        if (rc != RAGNX_OK || PQntuples(res) > 0) {
            PQclear(res);
            continue;
        }

        PQclear(res);

        res = PQexec(conn, "BEGIN");
        PQclear(res);

        res = PQexec(conn, m->sql);
        rc = ragnx_db_ok(conn, res, PGRES_COMMAND_OK, m->name);
        PQclear(res);

        if (rc == RAGNX_OK) {
            res = PQexecParams(conn, "INSERT INTO schema_migrations "
                               "(version, name) VALUES ($1, $2)", 2, NULL,
                               params, NULL, NULL, 0);
            rc = ragnx_db_ok(conn, res, PGRES_COMMAND_OK, "migration record");
            PQclear(res);
        }

        res = PQexec(conn, rc == RAGNX_OK ? "COMMIT" : "ROLLBACK");
        if (rc == RAGNX_OK) {
            rc = ragnx_db_ok(conn, res, PGRES_COMMAND_OK, "commit");
        }

        PQclear(res);

        if (rc == RAGNX_OK) {
            ragnx_log(RAGNX_LOG_INFO, "applied migration %s", m->name);
            applied++;
        }
    }

    res = PQexec(conn, "SELECT pg_advisory_unlock(478560413816)");
    PQclear(res);

    if (rc == RAGNX_OK && applied == 0) {
        ragnx_log(RAGNX_LOG_INFO, "database is up to date");
    }

    return rc;
}


int
ragnx_db_check_schema(PGconn *conn, char *err, size_t errlen)
{
    int                       want, have;
    PGresult                 *res;
    const ragnx_migration_t  *m;

    want = 0;
    for (m = ragnx_migrations; m->name; m++) {
        want = m->version;
    }

    res = PQexec(conn, "SELECT coalesce(max(version), 0) "
                 "FROM schema_migrations");

    if (res == NULL || PQresultStatus(res) != PGRES_TUPLES_OK) {
        snprintf(err, errlen, "database not migrated: run "
                 "\"ragnx-worker migrate\"");
        PQclear(res);
        return RAGNX_ERROR;
    }

    have = atoi(PQgetvalue(res, 0, 0));
    PQclear(res);

    if (have < want) {
        snprintf(err, errlen, "database schema version %d, need %d: run "
                 "\"ragnx-worker migrate\"", have, want);
        return RAGNX_ERROR;
    }

    return RAGNX_OK;
}


long long
ragnx_db_corpus_version(PGconn *conn)
{
    long long   v;
    PGresult   *res;

    res = PQexec(conn, "SELECT version FROM corpus");

    if (res == NULL || PQresultStatus(res) != PGRES_TUPLES_OK
        || PQntuples(res) != 1)
    {
        PQclear(res);
        return -1;
    }

    v = atoll(PQgetvalue(res, 0, 0));
    PQclear(res);

    return v;
}


/*
 * Check the job's chat: someone else's is RAGNX_DECLINED; *created is set
 * when it does not exist yet (the exchange creates it: no history to
 * read).  In the same read-only round trip, look for the answer of an
 * earlier delivery of this job (committed, then the worker died before
 * XACK): found->answer is set then.
 */

int
ragnx_store_chat(ragnx_db_pool_t *pool, const ragnx_job_t *job, int *created,
    ragnx_answer_t *found, char *err, size_t errlen)
{
    const char      *params[2];
    ragnx_db_req_t   req;
    static const int stmts[1] = { RAGNX_STMT_CHAT };

    params[0] = job->chat_id;
    params[1] = job->id;

    req.n = 1;
    req.stmts = stmts;
    req.params[0] = params;

    if (ragnx_db_submit(pool, &req) != RAGNX_OK) {
        PQclear(req.res[0]);
        memset(found, 0, sizeof(ragnx_answer_t));
        snprintf(err, errlen, "database error");
        return RAGNX_AGAIN;
    }

    return ragnx_store_chat_result(req.res[0], job, created, found,
                                   err, errlen);
}


static int
ragnx_store_chat_result(PGresult *res, const ragnx_job_t *job, int *created,
    ragnx_answer_t *found, char *err, size_t errlen)
{
    int  rc;

    memset(found, 0, sizeof(ragnx_answer_t));
    *created = 0;

    if (ragnx_db_ok(NULL, res, PGRES_TUPLES_OK, "chat") != RAGNX_OK
        || PQntuples(res) != 1)
    {
        snprintf(err, errlen, "database error");
        PQclear(res);
        return RAGNX_AGAIN;
    }

    if (PQgetisnull(res, 0, 0)) {
        *created = 1;

    } else if (strcmp(PQgetvalue(res, 0, 0), job->owner) != 0) {
        snprintf(err, errlen, "chat not found");
        PQclear(res);
        return RAGNX_DECLINED;
    }

    rc = RAGNX_OK;

    if (!PQgetisnull(res, 0, 1)) {
        found->answer = strdup(PQgetvalue(res, 0, 1));
        found->sources = json_loads(PQgetvalue(res, 0, 2), 0, NULL);
        found->input_tokens = -1;
        found->output_tokens = -1;

        if (found->answer == NULL || !json_is_array(found->sources)) {
            ragnx_answer_free(found);
            snprintf(err, errlen, "out of memory");
            rc = RAGNX_AGAIN;
        }
    }

    PQclear(res);

    return rc;
}


static int
ragnx_store_history_result(PGresult *res, ragnx_turn_t **turns, int *n)
{
    int  i, rows;

    *turns = NULL;
    *n = 0;

    if (ragnx_db_ok(NULL, res, PGRES_TUPLES_OK, "history") != RAGNX_OK) {
        PQclear(res);
        return RAGNX_AGAIN;
    }

    rows = PQntuples(res);

    if (rows > 0) {
        *turns = calloc(rows, sizeof(ragnx_turn_t));
        if (*turns == NULL) {
            PQclear(res);
            return RAGNX_AGAIN;
        }

        for (i = 0; i < rows; i++) {
            (*turns)[i].role = strdup(PQgetvalue(res, i, 0));
            (*turns)[i].content = strdup(PQgetvalue(res, i, 1));
        }

        *n = rows;
    }

    PQclear(res);

    return RAGNX_OK;
}


void
ragnx_store_history_free(ragnx_turn_t *turns, int n)
{
    int  i;

    for (i = 0; i < n; i++) {
        free(turns[i].role);
        free(turns[i].content);
    }

    free(turns);
}


/*
 * The retrieve statement's rows, a question's top k chunks, best first:
 * websearch_to_tsquery, with its terms OR-ed so a natural question still
 * finds passages.  Chunks matching more of the question's terms rank
 * first, then by cover density (title > heading > body weights), so one
 * word of a title does not outrank a passage about the whole question;
 * the chunk id breaks ties.
 */

static int
ragnx_store_retrieve_result(PGresult *res, ragnx_passage_t **passages,
    int *n)
{
    int  i, rows;

    *passages = NULL;
    *n = 0;

    if (ragnx_db_ok(NULL, res, PGRES_TUPLES_OK, "retrieve") != RAGNX_OK) {
        PQclear(res);
        return RAGNX_AGAIN;
    }

    rows = PQntuples(res);      /* the statement's LIMIT is top_k */

    if (rows == 0) {
        PQclear(res);
        return RAGNX_OK;
    }

    *passages = calloc(rows, sizeof(ragnx_passage_t));

    if (*passages == NULL) {
        PQclear(res);
        return RAGNX_AGAIN;
    }

    for (i = 0; i < rows; i++) {
        (*passages)[i].path = strdup(PQgetvalue(res, i, 0));
        (*passages)[i].title = strdup(PQgetvalue(res, i, 1));
        (*passages)[i].heading = strdup(PQgetvalue(res, i, 2));
        (*passages)[i].body = strdup(PQgetvalue(res, i, 3));
        (*passages)[i].cover = atoi(PQgetvalue(res, i, 4));
        (*passages)[i].rank = atof(PQgetvalue(res, i, 5));

        if ((*passages)[i].path == NULL || (*passages)[i].title == NULL
            || (*passages)[i].heading == NULL || (*passages)[i].body == NULL)
        {
            ragnx_store_passages_free(*passages, i + 1);
            *passages = NULL;
            PQclear(res);
            return RAGNX_AGAIN;
        }
    }

    *n = rows;

    PQclear(res);

    return RAGNX_OK;
}


/*
 * Whether websearch_to_tsquery() surely makes single lexemes of q, never
 * a phrase or a negation: ASCII letters, digits and blanks, and ? , ; .
 * or ! only before a blank or the end.  A quote makes a phrase, a
 * leading '-' a negation, and a word whose bytes the parser splits into
 * more than one token ("foo-bar", "o'neil", even "cache?worker") a
 * phrase; anything else takes the general statement.
 */

static int
ragnx_store_plain(const char *q)
{
    unsigned char  c;

    for ( /* void */ ; *q; q++) {
        c = (unsigned char) *q;

        if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')
            || (c >= '0' && c <= '9') || ragnx_store_blank(c))
        {
            continue;
        }

        if ((c == '?' || c == ',' || c == ';' || c == '.' || c == '!')
            && (q[1] == '\0' || ragnx_store_blank((unsigned char) q[1])))
        {
            continue;
        }

        return 0;
    }

    return 1;
}


static int
ragnx_store_blank(unsigned char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}


/*
 * What an ask job reads before the LLM call, in one request (one round
 * trip, with other threads' requests): the chat check, the passages and
 * the chat's history.
 */

int
ragnx_store_read_ask(ragnx_db_pool_t *pool, const ragnx_job_t *job, int k,
    int candidates, int history, int *created, ragnx_answer_t *found,
    ragnx_passage_t **passages, int *np, ragnx_turn_t **turns, int *nh,
    char *err, size_t errlen)
{
    int              i, rc;
    char             lim[16], cand[16], hist[16];
    const char      *params[3][3];
    ragnx_db_req_t   req;
    static const int stmts[3] = { RAGNX_STMT_CHAT, RAGNX_STMT_RETRIEVE,
                                  RAGNX_STMT_HISTORY };
    static const int plain[3] = { RAGNX_STMT_CHAT, RAGNX_STMT_PLAIN,
                                  RAGNX_STMT_HISTORY };

    *passages = NULL;
    *np = 0;
    *turns = NULL;
    *nh = 0;
    memset(found, 0, sizeof(ragnx_answer_t));

    snprintf(lim, sizeof(lim), "%d", k);
    snprintf(cand, sizeof(cand), "%d", candidates);
    snprintf(hist, sizeof(hist), "%d", history);

    params[0][0] = job->chat_id;
    params[0][1] = job->id;
    params[1][0] = job->query;
    params[1][1] = lim;
    params[1][2] = cand;
    params[2][0] = job->chat_id;
    params[2][1] = hist;

    req.n = 3;
    req.stmts = ragnx_store_plain(job->query) ? plain : stmts;

    for (i = 0; i < 3; i++) {
        req.params[i] = params[i];
    }

    if (ragnx_db_submit(pool, &req) != RAGNX_OK) {
        for (i = 0; i < 3; i++) {
            PQclear(req.res[i]);
        }

        snprintf(err, errlen, "database error");
        return RAGNX_AGAIN;
    }

    rc = ragnx_store_chat_result(req.res[0], job, created, found, err,
                                 errlen);

    if (rc != RAGNX_OK || found->answer) {
        PQclear(req.res[1]);
        PQclear(req.res[2]);
        return rc;
    }

    rc = ragnx_store_retrieve_result(req.res[1], passages, np);

    if (ragnx_store_history_result(req.res[2], turns, nh) != RAGNX_OK
        || rc != RAGNX_OK)
    {
        ragnx_store_history_free(*turns, *nh);
        *turns = NULL;
        *nh = 0;
        ragnx_store_passages_free(*passages, *np);
        *passages = NULL;
        *np = 0;
        snprintf(err, errlen, "database error");
        return RAGNX_AGAIN;
    }

    return RAGNX_OK;
}


void
ragnx_store_passages_free(ragnx_passage_t *p, int n)
{
    int  i;

    for (i = 0; i < n; i++) {
        free(p[i].path);
        free(p[i].title);
        free(p[i].heading);
        free(p[i].body);
    }

    free(p);
}


/*
 * The chat (created for the owner if new), the user and assistant
 * messages of a job and the chat's updated_at, in one statement (one
 * transaction, one round trip).  (job_id, role) is unique: writing the
 * same job again changes nothing.  Nothing is written into a chat that
 * turned out to be someone else's: RAGNX_DECLINED.
 */

int
ragnx_store_exchange(ragnx_db_pool_t *pool, const ragnx_job_t *job,
    const ragnx_answer_t *ans, char *err, size_t errlen)
{
    int              rc;
    char            *sources, in[24], out[24], title[400];
    size_t           n;
    const char      *params[10];
    PGresult        *res;
    ragnx_db_req_t   req;
    static const int stmts[1] = { RAGNX_STMT_EXCHANGE };

    sources = json_dumps(ans->sources, JSON_COMPACT);
    if (sources == NULL) {
        snprintf(err, errlen, "out of memory");
        return RAGNX_AGAIN;
    }

    snprintf(in, sizeof(in), "%ld", ans->input_tokens);
    snprintf(out, sizeof(out), "%ld", ans->output_tokens);

    params[0] = job->chat_id;
    params[1] = job->id;
    params[2] = job->query;
    params[3] = ans->answer;
    params[4] = sources;
    params[5] = ans->model;
    params[6] = ans->input_tokens >= 0 ? in : NULL;
    params[7] = ans->output_tokens >= 0 ? out : NULL;

    /* a new chat's title: the question, cut at 80 bytes on a character */
    n = strlen(job->query);
    if (n > 80) {
        n = 80;
        while (n > 0 && ((unsigned char) job->query[n] & 0xc0) == 0x80) {
            n--;
        }
    }

    snprintf(title, sizeof(title), "%.*s", (int) n, job->query);
    params[8] = job->owner;
    params[9] = title;

    req.n = 1;
    req.stmts = stmts;
    req.params[0] = params;

    rc = ragnx_db_submit(pool, &req);
    res = req.res[0];

    free(sources);

    if (rc != RAGNX_OK || PQntuples(res) != 1) {
        PQclear(res);
        snprintf(err, errlen, "database error");
        return RAGNX_AGAIN;
    }

    rc = RAGNX_OK;

    if (strcmp(PQgetvalue(res, 0, 0), job->owner) != 0) {
        snprintf(err, errlen, "chat not found");
        rc = RAGNX_DECLINED;
    }

    PQclear(res);

    return rc;
}
