
/*
 * ragnx worker pool: the domain SQL.  The statements a job runs (the
 * chat check, the history, full-text retrieval, the exchange of
 * messages), sent through the pool's request queue (ragnx_db.c), and
 * the corpus version the cache generation comes from.
 */


#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ragnx_db.h"


/* both retrieval statements: a chunk's postings of the question's lexemes */
#define RAGNX_SQL_POSTINGS                                                    \
    "SELECT t.chunk_id AS id, count(*) AS cover, "                            \
    "sum(t.tenths)::float8 / 10 AS rank FROM "

/* and their passages, r's chunks best first */
#define RAGNX_SQL_PASSAGES                                                    \
    "SELECT c.path, c.title, c.heading, c.body, r.cover, r.rank "             \
    "FROM r JOIN chunks c ON c.id = r.id "                                    \
    "ORDER BY r.cover DESC, r.rank DESC, r.id"


const ragnx_db_stmt_t  ragnx_statements[] = {

    { "ragnx_chat", 2,
      "SELECT c.owner, m.content, coalesce(m.sources, '[]'), m.truncated "
      "FROM (SELECT $1::uuid AS id) x "
      "LEFT JOIN chats c ON c.id = x.id "
      "LEFT JOIN messages m ON m.job_id = $2::uuid "
      "AND m.role = 'assistant'"
    },

    /* with the exchange a chat's row holds (sql/007_record_chats.sql) */

    { "ragnx_history", 2,
      "SELECT role, content FROM (SELECT role, "
      "content, seq FROM chat_messages WHERE chat_id = $1 "
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
     * the commit and its trigger then removes them too.  It returns the
     * owner, the messages it wrote and, when it wrote none (another run
     * of the job stored its exchange first), the answer stored.
     */

    { "ragnx_exchange", 12,
      "WITH c AS (INSERT INTO chats (id, owner, title) "
      "VALUES ($1, $9, $10) ON CONFLICT (id) DO NOTHING RETURNING owner), "
      "e AS (SELECT owner FROM chats WHERE id = $1 FOR KEY SHARE), "
      "o AS (SELECT owner FROM c UNION ALL SELECT owner FROM e LIMIT 1), "
      "m AS (INSERT INTO messages (chat_id, job_id, role, content, "
      "sources, model, input_tokens, output_tokens, truncated, "
      "request_id) "
      "SELECT $1, $2, v.r, v.t, v.s, v.m, v.i, v.o, v.x, $12 FROM (VALUES "
      "('user', $3, NULL::jsonb, NULL::text, NULL::integer, "
      "NULL::integer, false), "
      "('assistant', $4, $5::jsonb, $6, $7::integer, $8::integer, "
      "$11::boolean)) "
      "v (r, t, s, m, i, o, x) WHERE (SELECT owner FROM o) = $9 "
      "ON CONFLICT (job_id, role) DO NOTHING RETURNING 1), "
      "u AS (UPDATE chats SET updated_at = now() WHERE id = $1 "
      "AND owner = $9 AND EXISTS (SELECT 1 FROM m) RETURNING 1) "
      "SELECT (SELECT owner FROM o), (SELECT count(*) FROM m), s.content, "
      "coalesce(s.sources, '[]'), s.truncated FROM (SELECT 1) x "
      "LEFT JOIN messages s ON s.job_id = $2::uuid AND s.role = 'assistant'"
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

_Static_assert(sizeof(ragnx_statements) / sizeof(ragnx_statements[0])
               == RAGNX_STMT_N + 1, "RAGNX_STMT_N");


static int ragnx_store_chat_result(PGresult *res, const ragnx_job_t *job,
    int *created, ragnx_answer_t *found, char *err, size_t errlen);
static int ragnx_store_history_result(PGresult *res, ragnx_turn_t **turns,
    int *n);
static int ragnx_store_retrieve_result(PGresult *res,
    ragnx_passage_t **passages, int *n);
static int ragnx_store_plain(const char *q);
static int ragnx_store_blank(unsigned char c);


long long
ragnx_db_corpus_version(PGconn *conn)
{
    long long   v;
    PGresult   *res;

    res = ragnx_db_exec(conn, "SELECT version FROM corpus", 0, NULL,
                        "corpus version");

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
        snprintf(err, errlen, "%s", ragnx_db_reason(&req));
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
        found->truncated = PQgetvalue(res, 0, 3)[0] == 't';

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

        snprintf(err, errlen, "%s", ragnx_db_reason(&req));
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
 * same job again changes nothing, and the answer stored first wins: when
 * another run of the job (a redelivery while this one ran) stored its
 * exchange first, ans becomes that answer, so the job's hash and the
 * cache say what the chat says.  Nothing is written into a chat that
 * turned out to be someone else's: RAGNX_DECLINED.
 */

int
ragnx_store_exchange(ragnx_db_pool_t *pool, const ragnx_job_t *job,
    ragnx_answer_t *ans, char *err, size_t errlen)
{
    int              rc, attempt, wrote;
    json_t          *stored;
    char            *sources, in[24], out[24], title[400];
    size_t           n;
    const char      *params[12];
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
    params[10] = ans->truncated ? "t" : "f";
    params[11] = job->rid;

    /*
     * No owner at all: the chat was made by a transaction that committed
     * after the statement began (its insert waited for it, then did
     * nothing, and the statement's snapshot cannot see the row).  Once
     * more, with a new snapshot; still none is a transient error, never
     * "chat not found".  The same for messages written by another run of
     * the job that committed while the statement ran: none written, none
     * seen.
     */

    wrote = 0;

    for (attempt = 0; attempt < 2; attempt++) {
        req.n = 1;
        req.stmts = stmts;
        req.params[0] = params;

        rc = ragnx_db_submit(pool, &req);
        res = req.res[0];

        if (rc != RAGNX_OK || PQntuples(res) != 1) {
            PQclear(res);
            free(sources);
            snprintf(err, errlen, "%s", rc != RAGNX_OK
                     ? ragnx_db_reason(&req) : "database error");
            return RAGNX_AGAIN;
        }

        wrote = atoi(PQgetvalue(res, 0, 1)) > 0;

        if (!PQgetisnull(res, 0, 0)
            && (wrote || !PQgetisnull(res, 0, 2)
                || strcmp(PQgetvalue(res, 0, 0), job->owner) != 0))
        {
            break;
        }

        PQclear(res);
        res = NULL;
        ragnx_log_job(RAGNX_LOG_INFO, job, RAGNX_ERR_NONE, "chat or its "
                      "messages made meanwhile by another transaction: "
                      "writing again");
    }

    free(sources);

    if (res == NULL) {
        snprintf(err, errlen, "chat or exchange being written elsewhere");
        return RAGNX_AGAIN;
    }

    rc = RAGNX_OK;

    if (strcmp(PQgetvalue(res, 0, 0), job->owner) != 0) {
        snprintf(err, errlen, "chat not found");
        rc = RAGNX_DECLINED;

    } else if (!wrote) {
        stored = json_loads(PQgetvalue(res, 0, 3), 0, NULL);
        free(ans->answer);
        ans->answer = strdup(PQgetvalue(res, 0, 2));

        if (ans->answer == NULL || !json_is_array(stored)) {
            json_decref(stored);
            snprintf(err, errlen, "out of memory");
            rc = RAGNX_AGAIN;

        } else {
            json_decref(ans->sources);
            ans->sources = stored;
            ans->truncated = PQgetvalue(res, 0, 4)[0] == 't';

            /* what history went into it is not known here */
            ans->contextual = job->chat_scope;
            ragnx_log_job(RAGNX_LOG_WARN, job, RAGNX_ERR_NONE, "another run "
                          "stored its answer first: completing with that "
                          "one");
        }
    }

    PQclear(res);

    return rc;
}
