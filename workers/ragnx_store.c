
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


struct ragnx_db_pool_s {
    pthread_mutex_t   lock;
    pthread_cond_t    cond;
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
     * ts_rank_cd costs far more than the match itself (it allocates and
     * clears 32 KiB per query item on every call), so it ranks only the
     * best candidates by the cheap measures: terms covered, then ts_rank
     * with the same weights.
     */

    { "ragnx_retrieve", 3,
      "WITH q AS MATERIALIZED (SELECT "
      "NULLIF(replace(a::text, ' & ', ' | '), '')::tsquery AS any, "
      "tsvector_to_array(to_tsvector('english', $1)) AS lex "
      "FROM websearch_to_tsquery('english', $1) a) "
      "SELECT x.path, x.title, x.heading, x.body, "
      "ts_rank_cd(x.tsv, x.any) AS rank, x.cover "
      "FROM (SELECT c.id, c.path, c.title, c.heading, c.body, c.tsv, "
      "q.any, length(c.tsv) - length(ts_delete(c.tsv, q.lex)) AS cover "
      "FROM q, chunks c WHERE c.tsv @@ q.any "
      "ORDER BY cover DESC, ts_rank(c.tsv, q.any) DESC, c.id "
      "LIMIT greatest($2::integer, $3::integer)) x "
      "ORDER BY x.cover DESC, rank DESC, x.id LIMIT $2"
    },

    { "ragnx_exchange", 10,
      "WITH c AS (INSERT INTO chats (id, owner, title) "
      "VALUES ($1, $9, $10) ON CONFLICT (id) DO NOTHING RETURNING owner), "
      "o AS (SELECT owner FROM c UNION ALL "
      "SELECT owner FROM chats WHERE id = $1 LIMIT 1), "
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

    { NULL, 0, NULL }
};


static int ragnx_db_ok(PGconn *conn, PGresult *res, ExecStatusType want,
    const char *what);
static PGresult *ragnx_db_exec(PGconn *conn, int n,
    const char *const *params);
static int ragnx_store_chat_result(PGconn *conn, PGresult *res,
    const ragnx_job_t *job, int *created, ragnx_answer_t *found, char *err,
    size_t errlen);
static int ragnx_store_history_result(PGconn *conn, PGresult *res,
    ragnx_turn_t **turns, int *n);
static int ragnx_store_retrieve_result(PGconn *conn, PGresult *res,
    ragnx_passage_t **passages, int *n);


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
    PGconn           *conn;
    struct timespec   deadline;

    clock_gettime(CLOCK_REALTIME, &deadline);
    deadline.tv_sec += timeout / 1000;
    deadline.tv_nsec += (timeout % 1000) * 1000000;

    if (deadline.tv_nsec >= 1000000000) {
        deadline.tv_sec++;
        deadline.tv_nsec -= 1000000000;
    }

    pthread_mutex_lock(&pool->lock);

    for ( ;; ) {
        if (pool->nidle > 0) {
            conn = pool->idle[--pool->nidle];
            pthread_mutex_unlock(&pool->lock);
            return conn;
        }

        if (pool->total < pool->size) {
            pool->total++;
            pthread_mutex_unlock(&pool->lock);

            conn = ragnx_db_connect(pool->conninfo, pool->password);

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
        pthread_cond_signal(&pool->cond);
        pthread_mutex_unlock(&pool->lock);
        return;
    }

    PQfinish(conn);

    pthread_mutex_lock(&pool->lock);
    pool->total--;
    pthread_cond_signal(&pool->cond);
    pthread_mutex_unlock(&pool->lock);
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
 * Run a statement of ragnx_statements, preparing it on this connection
 * the first time (SQLSTATE 26000: it does not exist there yet).
 */

static PGresult *
ragnx_db_exec(PGconn *conn, int n, const char *const *params)
{
    return ragnx_db_query(conn, ragnx_statements[n].name,
                          ragnx_statements[n].sql,
                          ragnx_statements[n].nparams, params);
}


/* the same for a statement declared elsewhere, by name */

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
ragnx_store_chat(PGconn *conn, const ragnx_job_t *job, int *created,
    ragnx_answer_t *found, char *err, size_t errlen)
{
    const char  *params[2];
    PGresult    *res;

    params[0] = job->chat_id;
    params[1] = job->id;

    res = ragnx_db_exec(conn, RAGNX_STMT_CHAT, params);

    return ragnx_store_chat_result(conn, res, job, created, found, err,
                                   errlen);
}


static int
ragnx_store_chat_result(PGconn *conn, PGresult *res, const ragnx_job_t *job,
    int *created, ragnx_answer_t *found, char *err, size_t errlen)
{
    int  rc;

    memset(found, 0, sizeof(ragnx_answer_t));
    *created = 0;

    if (ragnx_db_ok(conn, res, PGRES_TUPLES_OK, "chat") != RAGNX_OK
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


int
ragnx_store_history(PGconn *conn, const char *chat_id, int limit,
    ragnx_turn_t **turns, int *n)
{
    char         lim[16];
    const char  *params[2];
    PGresult    *res;

    *turns = NULL;
    *n = 0;

    if (limit == 0) {
        return RAGNX_OK;
    }

    snprintf(lim, sizeof(lim), "%d", limit);
    params[0] = chat_id;
    params[1] = lim;

    res = ragnx_db_exec(conn, RAGNX_STMT_HISTORY, params);

    return ragnx_store_history_result(conn, res, turns, n);
}


static int
ragnx_store_history_result(PGconn *conn, PGresult *res, ragnx_turn_t **turns,
    int *n)
{
    int  i, rows;

    *turns = NULL;
    *n = 0;

    if (ragnx_db_ok(conn, res, PGRES_TUPLES_OK, "history") != RAGNX_OK) {
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
 * Top-k chunks for a question: websearch_to_tsquery, with its terms
 * OR-ed so a natural question still finds passages; chunks matching more
 * of the question's terms rank first, then by ts_rank_cd (title > heading
 * > body weights), so one word of a title does not outrank a passage
 * about the whole question.  ts_rank_cd ranks the best "candidates" (at
 * least k) of the matching chunks by terms covered and ts_rank.
 */

int
ragnx_store_retrieve(PGconn *conn, const char *query, int k, int candidates,
    ragnx_passage_t **passages, int *n)
{
    char         lim[16], cand[16];
    const char  *params[3];
    PGresult    *res;

    *passages = NULL;
    *n = 0;

    snprintf(lim, sizeof(lim), "%d", k);
    snprintf(cand, sizeof(cand), "%d", candidates);
    params[0] = query;
    params[1] = lim;
    params[2] = cand;

    res = ragnx_db_exec(conn, RAGNX_STMT_RETRIEVE, params);

    return ragnx_store_retrieve_result(conn, res, passages, n);
}


static int
ragnx_store_retrieve_result(PGconn *conn, PGresult *res,
    ragnx_passage_t **passages, int *n)
{
    int  i, rows;

    *passages = NULL;
    *n = 0;

    if (ragnx_db_ok(conn, res, PGRES_TUPLES_OK, "retrieve") != RAGNX_OK) {
        PQclear(res);
        return RAGNX_AGAIN;
    }

    rows = PQntuples(res);

    if (rows > 0) {
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
            (*passages)[i].rank = atof(PQgetvalue(res, i, 4));
            (*passages)[i].cover = atoi(PQgetvalue(res, i, 5));
        }

        *n = rows;
    }

    PQclear(res);

    return RAGNX_OK;
}


/*
 * What an ask job reads before the LLM call, in one round trip (libpq
 * pipeline mode): the chat check, the passages and the chat's history.
 * Statements not yet prepared on this connection (or any other trouble
 * with the pipeline) fall back to one query at a time.
 */

int
ragnx_store_read_ask(PGconn *conn, const ragnx_job_t *job, int k,
    int candidates, int history, int *created, ragnx_answer_t *found,
    ragnx_passage_t **passages, int *np, ragnx_turn_t **turns, int *nh,
    char *err, size_t errlen)
{
    int              i, rc, ok, sent, synced;
    char             lim[16], cand[16], hist[16];
    const char      *params[3][3];
    PGresult        *res[3], *r;
    static const int stmts[3] = { RAGNX_STMT_CHAT, RAGNX_STMT_RETRIEVE,
                                  RAGNX_STMT_HISTORY };

    *passages = NULL;
    *np = 0;
    *turns = NULL;
    *nh = 0;

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

    for (i = 0; i < 3; i++) {
        res[i] = NULL;
    }

    sent = 0;
    ok = PQenterPipelineMode(conn);

    while (ok && sent < 3) {
        ok = PQsendQueryPrepared(conn, ragnx_statements[stmts[sent]].name,
                                 ragnx_statements[stmts[sent]].nparams,
                                 params[sent], NULL, NULL, 0);
        sent += ok;
    }

    synced = PQpipelineSync(conn);
    ok = ok && synced;

    /*
     * Every query sent has its results, each list ended by a NULL (a
     * failed one aborts the rest: PGRES_PIPELINE_ABORTED), then the sync.
     */

    for (i = 0; sent > i; i++) {
        res[i] = PQgetResult(conn);

        if (res[i] == NULL) {
            ok = 0;
            break;
        }

        while ((r = PQgetResult(conn)) != NULL) {
            PQclear(r);
        }

        if (PQresultStatus(res[i]) != PGRES_TUPLES_OK) {
            ok = 0;
        }
    }

    if (synced) {
        r = PQgetResult(conn);
        if (r == NULL || PQresultStatus(r) != PGRES_PIPELINE_SYNC) {
            ragnx_log(RAGNX_LOG_DEBUG, "pipeline: %s instead of sync",
                      r ? PQresStatus(PQresultStatus(r)) : "nothing");
            ok = 0;
        }

        PQclear(r);
    }

    if (!PQexitPipelineMode(conn)) {
        ok = 0;
    }

    if (!ok) {
        ragnx_log(RAGNX_LOG_DEBUG, "pipeline failed: sent %d, %s %s %s, %s",
                  sent,
                  res[0] ? PQresStatus(PQresultStatus(res[0])) : "-",
                  res[1] ? PQresStatus(PQresultStatus(res[1])) : "-",
                  res[2] ? PQresStatus(PQresultStatus(res[2])) : "-",
                  PQerrorMessage(conn));

        for (i = 0; i < 3; i++) {
            PQclear(res[i]);
        }

        if (PQstatus(conn) != CONNECTION_OK
            || PQpipelineStatus(conn) != PQ_PIPELINE_OFF)
        {
            snprintf(err, errlen, "database error");
            return RAGNX_AGAIN;
        }

        /*
         * Most likely a new connection without the prepared statements:
         * prepare them all (those that exist fail harmlessly), then do
         * this job one query at a time.
         */

        for (i = 0; ragnx_statements[i].name; i++) {
            PQclear(PQprepare(conn, ragnx_statements[i].name,
                              ragnx_statements[i].sql,
                              ragnx_statements[i].nparams, NULL));
        }
        rc = ragnx_store_chat(conn, job, created, found, err, errlen);
        if (rc != RAGNX_OK || found->answer) {
            return rc;
        }

        if (ragnx_store_retrieve(conn, job->query, k, candidates, passages,
                                 np)
            != RAGNX_OK)
        {
            snprintf(err, errlen, "database error");
            return RAGNX_AGAIN;
        }

        if (ragnx_store_history(conn, job->chat_id, *created ? 0 : history,
                                turns, nh)
            != RAGNX_OK)
        {
            ragnx_store_passages_free(*passages, *np);
            *passages = NULL;
            *np = 0;
            snprintf(err, errlen, "database error");
            return RAGNX_AGAIN;
        }

        return RAGNX_OK;
    }

    rc = ragnx_store_chat_result(conn, res[0], job, created, found, err,
                                 errlen);

    if (rc != RAGNX_OK || found->answer) {
        PQclear(res[1]);
        PQclear(res[2]);
        return rc;
    }

    rc = ragnx_store_retrieve_result(conn, res[1], passages, np);

    if (ragnx_store_history_result(conn, res[2], turns, nh) != RAGNX_OK
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
ragnx_store_exchange(PGconn *conn, const ragnx_job_t *job,
    const ragnx_answer_t *ans, char *err, size_t errlen)
{
    int          rc;
    char        *sources, in[24], out[24], title[400];
    size_t       n;
    const char  *params[10];
    PGresult    *res;

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

    res = ragnx_db_exec(conn, RAGNX_STMT_EXCHANGE, params);

    free(sources);

    rc = ragnx_db_ok(conn, res, PGRES_TUPLES_OK, "exchange");

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
