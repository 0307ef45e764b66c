
/*
 * ragnx worker pool: the records lane.
 *
 * An exchange answered from the cache (a hit, or a follower of a
 * single-flight leader) only has to be written into the asker's chat.
 * The module appends it to {ragnx}:records; record threads (record_
 * concurrency per process) read up to record_batch entries with one
 * XREADGROUP, write the whole batch with one statement on a PostgreSQL
 * connection of their own (the chats it makes and both messages of every
 * exchange, one commit), then acknowledge and delete the batch with one
 * XACK and one XDEL.  Job threads and their connection pool never see a
 * record: a burst of hits does not delay an LLM answer, and LLM work
 * does not delay the chat history.
 *
 * Exactly once in PostgreSQL: chats are inserted ON CONFLICT DO NOTHING
 * and messages are unique on (job_id, role), so a batch delivered again
 * (a thread that died before its XACK; entries idle longer than
 * visibility_timeout are requeued by the maintenance thread) writes
 * nothing twice.  A record that cannot be written (a malformed entry, a
 * chat of someone else) goes to the dead-letter stream with the reason;
 * one bad record never holds back the others.  A database that is down
 * keeps the batch in the thread, retried with backoff, unacknowledged.
 */


#define _GNU_SOURCE             /* memmem */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "ragnx_db.h"
#include "ragnx_keys.h"


/*
 * The answers this thread has stored, by digest, so that a batch of hits
 * on answers already in PostgreSQL sends none of them again: a direct-
 * mapped table, forgotten with the connection.  A digest missing here
 * only costs its answer being sent (and found there) once more.
 */
#define RAGNX_RECORDS_KNOWN  1024
#define RAGNX_DIGEST         16

/* the payload's fields the statement takes, in its order */
#define RAGNX_TOKENS         5

#define ragnx_records_slot(d)  (((d)[0] | (d)[1] << 8) % RAGNX_RECORDS_KNOWN)


/*
 * $1: [[chat, owner, job, query, request id, time, answer digest], ...],
 * a batch in stream order (inserted in it: of two records for one chat,
 * the first makes it);
 * $2: [[answer digest, result], ...], the answers not known to be stored.
 *
 * Every record is the first exchange of a new chat (ragnx_job.h,
 * "scope"), written as one chat row that holds it (sql/007_record_
 * chats.sql): the chat, its question and job, and its answer by digest.
 * A chat takes the time of the record's stream entry (the entry id,
 * "<ms>-<seq>", as microseconds: ms * 1000 + seq), when the question was
 * answered: a user's chat list keeps the order of the questions whatever
 * order batches commit in (up to 1,000 hits in one millisecond).  An
 * answer is inserted once, whoever shows it.
 *
 * A chat already there (r) is a record delivered again, when it names the
 * record's job: nothing to do.  Or it was made first by the asker's next
 * question in it (a job can run before the record of the hit that made
 * the chat): the exchange goes into the chat's row all the same, and is
 * shown first.  Of two records for one chat, the first is its exchange.
 * Returns the records not written: their ordinal, whether the chat was
 * not found at all (made by a transaction that committed after this
 * statement began: run again), and whether it is the record's owner's (a
 * chat holding another exchange) or someone else's.
 */

static const char  ragnx_records_sql[] =
    "WITH v AS (SELECT (x->>0)::uuid AS chat, x->>1 AS owner, "
    "(x->>2)::uuid AS job, x->>3 AS q, x->>4 AS rid, timestamptz 'epoch' + "
    "(x->>5)::bigint * interval '1 microsecond' AS t, "
    "decode(x->>6, 'hex') AS d, n "
    "FROM jsonb_array_elements($1::jsonb) WITH ORDINALITY AS e (x, n)), "
    "a AS (INSERT INTO answers (digest, content, sources, truncated) "
    "SELECT decode(y->>0, 'hex'), y->1->>'answer', "
    "coalesce(y->1->'sources', '[]'), "
    "coalesce((y->1->>'truncated')::boolean, false) "
    "FROM jsonb_array_elements($2::jsonb) AS f (y) "
    "ON CONFLICT (digest) DO NOTHING), "
    "nc AS (INSERT INTO chats (id, owner, title, created_at, updated_at, "
    "job_id, query, answer, request_id) SELECT chat, owner, left(q, 80), t, "
    "t, job, q, d, rid FROM v ON CONFLICT (id) DO NOTHING "
    "RETURNING id, job_id), "
    "r AS (SELECT * FROM v WHERE NOT EXISTS (SELECT FROM nc "
    "WHERE nc.id = v.chat AND nc.job_id = v.job)), "
    "u AS (UPDATE chats c SET job_id = r.job, query = r.q, answer = r.d, "
    "request_id = r.rid "
    "FROM (SELECT DISTINCT ON (chat) * FROM r ORDER BY chat, n) r "
    "WHERE c.id = r.chat AND c.owner = r.owner "
    "AND c.job_id IS NULL RETURNING c.id, c.job_id) "
    "SELECT r.n, c.owner IS NULL, c.owner = r.owner "
    "FROM r LEFT JOIN chats c ON c.id = r.chat "
    "WHERE c.job_id IS DISTINCT FROM r.job AND NOT EXISTS (SELECT FROM u "
    "WHERE u.id = r.chat AND u.job_id = r.job)";


/* compared by address: only a missing chat is worth a second run */
static const char  ragnx_records_not_found[] = "chat not found";


typedef struct {
    char          entry[64];
    char          time[24];         /* the entry id in microseconds */
    char          id[40];
    const char   *payload;          /* into the batch's reply */
    size_t        len;
    const char   *result;
    size_t        rlen;
    u_char        digest[RAGNX_DIGEST];     /* the result's */
    const char   *tok[RAGNX_TOKENS];        /* chat, owner, id, query, rid */
    size_t        tlen[RAGNX_TOKENS];       /* as JSON, quotes included */
    char         *own;              /* tokens encoded here, if not quick */
    const char   *error;            /* not written: dead-lettered */
} ragnx_record_t;


typedef struct {
    PGconn          *conn;
    ragnx_record_t  *recs;
    int              n;
    redisReply      *reply;         /* the read: owns the strings */
    char            *buf;           /* the statement's parameters */
    size_t           size;
    u_char           known[RAGNX_RECORDS_KNOWN][RAGNX_DIGEST];
} ragnx_records_t;


static int ragnx_records_read(ragnx_thread_t *t, ragnx_records_t *b,
    int block_ms);
static void ragnx_records_check(ragnx_record_t *rec, int full);
static int ragnx_records_quick(ragnx_record_t *rec);
static int ragnx_records_token(ragnx_record_t *rec, int k, const char *key,
    size_t klen);
static int ragnx_records_encode(ragnx_record_t *rec, const ragnx_job_t *job);
static char *ragnx_records_hex(char *p, const u_char *digest);
static int ragnx_records_write(ragnx_records_t *b);
static int ragnx_records_exec(ragnx_records_t *b, int from, int to,
    int *missing);
static int ragnx_records_ack(ragnx_thread_t *t, ragnx_records_t *b);
static void ragnx_records_clear(ragnx_records_t *b);
static void ragnx_records_fields(const ragnx_record_t *rec,
    ragnx_log_fields_t *lf, char *rid, ragnx_err_t error);


void *
ragnx_record_thread(void *data)
{
    int               rc;
    long              backoff, wait;
    ragnx_thread_t   *t = data;
    ragnx_records_t   b;

    memset(&b, 0, sizeof(ragnx_records_t));
    backoff = 100;

    if (sodium_init() < 0) {
        ragnx_log(RAGNX_LOG_ERROR, "libsodium cannot be initialised");
        ragnx_thread_exit(t);
        return NULL;
    }

    b.recs = calloc(ragnx_conf->record_batch, sizeof(ragnx_record_t));
    if (b.recs == NULL) {
        ragnx_log(RAGNX_LOG_ERROR, "out of memory");
        ragnx_thread_exit(t);
        return NULL;
    }

    while (!ragnx_quit) {
        if (!ragnx_may_read(&backoff, RAGNX_OK)) {
            continue;
        }

        rc = ragnx_records_read(t, &b, 1000);

        if (!ragnx_may_read(&backoff, rc) || rc == RAGNX_AGAIN) {
            continue;
        }

        /*
         * Written until it is, the batch kept here: a database that is
         * down loses nothing and reorders nothing.  Left unacknowledged
         * when the process must stop; the entries are requeued.
         */

        wait = 100;

        while ((rc = ragnx_records_write(&b)) == RAGNX_AGAIN && !ragnx_quit)
        {
            ragnx_sleep_ms(wait + random() % (wait / 2 + 1));
            wait = wait < 5000 ? wait * 2 : 5000;
        }

        if (rc == RAGNX_OK) {
            ragnx_metrics_records((int) b.n);
            (void) ragnx_records_ack(t, &b);
        }

        ragnx_records_clear(&b);
    }

    if (b.conn) {
        PQfinish(b.conn);
    }

    free(b.recs);
    free(b.buf);
    ragnx_thread_exit(t);

    return NULL;
}


/* RAGNX_OK with b->n > 0 records, RAGNX_AGAIN, or RAGNX_ERROR */

static int
ragnx_records_read(ragnx_thread_t *t, ragnx_records_t *b, int block_ms)
{
    size_t               i, j;
    const char          *asked;
    redisReply          *reply, *entries, *e, *f, *v;
    ragnx_record_t      *rec;
    unsigned long long   ms, seq;

    reply = ragnx_redis_command(&t->redis, "XREADGROUP GROUP %s %s COUNT %ld "
                                "BLOCK %d STREAMS %s >", RAGNX_GROUP,
                                t->redis.consumer, ragnx_conf->record_batch,
                                block_ms, RAGNX_KEY_RECORDS);
    if (reply == NULL) {
        return RAGNX_ERROR;
    }

    if (reply->type == REDIS_REPLY_ERROR) {
        if (strncmp(reply->str, "NOGROUP", 7) == 0) {
            freeReplyObject(reply);
            ragnx_log(RAGNX_LOG_WARN, "records group missing: creating it");
            return ragnx_queue_group(&t->redis, RAGNX_KEY_RECORDS) == RAGNX_OK
                   ? RAGNX_AGAIN : RAGNX_ERROR;
        }

        ragnx_log_error(RAGNX_LOG_ERROR, RAGNX_ERR_REDIS,
                        "redis XREADGROUP %s: %s",
                        RAGNX_KEY_RECORDS, reply->str);
        freeReplyObject(reply);
        return RAGNX_ERROR;
    }

    /* [[stream, [[entry id, [field, value, ...]], ...]]] */

    if (reply->type != REDIS_REPLY_ARRAY || reply->elements != 1
        || reply->element[0]->type != REDIS_REPLY_ARRAY
        || reply->element[0]->elements != 2
        || reply->element[0]->element[1]->type != REDIS_REPLY_ARRAY
        || reply->element[0]->element[1]->elements == 0)
    {
        freeReplyObject(reply);
        return RAGNX_AGAIN;
    }

    entries = reply->element[0]->element[1];
    b->reply = reply;
    b->n = 0;

    for (i = 0; i < entries->elements
                && b->n < ragnx_conf->record_batch; i++)
    {
        e = entries->element[i];

        if (e->type != REDIS_REPLY_ARRAY || e->elements != 2
            || e->element[0]->type != REDIS_REPLY_STRING
            || e->element[0]->len >= sizeof(rec->entry))
        {
            continue;
        }

        rec = &b->recs[b->n++];
        memset(rec, 0, sizeof(ragnx_record_t));
        memcpy(rec->entry, e->element[0]->str, e->element[0]->len);
        asked = rec->entry;

        /* a deleted entry still pending comes back without fields */

        if (e->element[1]->type != REDIS_REPLY_ARRAY) {
            rec->error = "entry without fields";
            continue;
        }

        for (j = 0; j + 1 < e->element[1]->elements; j += 2) {
            f = e->element[1]->element[j];
            v = e->element[1]->element[j + 1];

            if (f->type != REDIS_REPLY_STRING
                || v->type != REDIS_REPLY_STRING)
            {
                continue;
            }

            if (strcmp(f->str, "id") == 0) {
                snprintf(rec->id, sizeof(rec->id), "%.*s", (int) v->len,
                         v->str);

            } else if (strcmp(f->str, "job") == 0) {
                rec->payload = v->str;
                rec->len = v->len;

            } else if (strcmp(f->str, "result") == 0) {
                rec->result = v->str;
                rec->rlen = v->len;

            } else if (strcmp(f->str, "asked") == 0) {
                asked = v->str;     /* requeued: its first entry's id */
            }
        }

        ms = 0;
        seq = 0;

        if (sscanf(asked, "%llu-%llu", &ms, &seq) != 2) {
            ms = (unsigned long long) ragnx_now_ms();
        }

        /* past 1,000 hits in one millisecond they share its last one */
        if (seq > 999) {
            seq = 999;
        }

        snprintf(rec->time, sizeof(rec->time), "%llu", ms * 1000 + seq);

        ragnx_records_check(rec, 0);
    }

    if (b->n == 0) {
        ragnx_records_clear(b);
        return RAGNX_AGAIN;
    }

    return RAGNX_OK;
}


/*
 * What PostgreSQL cannot check for us: the payload is a job with the
 * entry's id, the result the pool's own {"answer":...} object.  Without
 * full, a payload as the module writes it passes the quick check, and
 * PostgreSQL parses and checks the rest in the statement; a batch it
 * refuses is checked again in full, a record at a time, by
 * ragnx_job_decode(), which says what is wrong (ragnx_records_write()).
 * Decoding every payload here was most of the pool's cost of a record.
 */

static void
ragnx_records_check(ragnx_record_t *rec, int full)
{
    char                err[256], rid[RAGNX_RID_MAX + 1];
    ragnx_job_t         job;
    ragnx_log_fields_t  lf;

    if (rec->payload == NULL || rec->result == NULL) {
        rec->error = "entry without a job or result field";
        return;
    }

    if (full || !ragnx_records_quick(rec)) {

        if (ragnx_job_decode(rec->payload, rec->len, &job, err, sizeof(err))
            != 0)
        {
            ragnx_records_fields(rec, &lf, rid, RAGNX_ERR_BAD_PAYLOAD);
            ragnx_log_fields(RAGNX_LOG_ERROR, &lf, "record %s: bad payload: "
                             "%s", rec->entry, err);
            rec->error = "invalid job";
            return;
        }

        if (strcmp(job.id, rec->id) != 0) {
            rec->error = "id field differs from the payload's";

        } else if (rec->tok[0] == NULL
                   && ragnx_records_encode(rec, &job) != RAGNX_OK)
        {
            rec->error = "out of memory";
        }

        ragnx_job_free(&job);

        if (rec->error) {
            return;
        }
    }

    if (rec->error == NULL
        && (rec->rlen < sizeof("{\"answer\":\"\"}") - 1
            || memcmp(rec->result, "{\"answer\":", 10) != 0
            || rec->result[rec->rlen - 1] != '}'))
    {
        rec->error = "invalid result";
    }

    if (rec->error == NULL) {
        crypto_generichash(rec->digest, RAGNX_DIGEST,
                           (const u_char *) rec->result, rec->rlen, NULL, 0);
    }
}


/*
 * A payload of ragnx_job_write(): an object of version 2 naming the
 * entry's id, its fields taken as they are written, "key":value with no
 * space.  Inside a JSON string a quote is always escaped, so the text
 * found is the key itself.  The request id is optional, and checked
 * here as the full check would (a few bytes of a safe set); without one
 * the statement gets null.  Anything else is left to the full check.
 */

static int
ragnx_records_quick(ragnx_record_t *rec)
{
    const char  *p;

    if (rec->len < 2 || rec->payload[0] != '{'
        || rec->payload[rec->len - 1] != '}')
    {
        return 0;
    }

    p = memmem(rec->payload, rec->len, "\"v\":2", 5);

    if (p == NULL || (p[5] != ',' && p[5] != '}')
        || !ragnx_records_token(rec, 0, "\"chatId\":", 9)
        || !ragnx_records_token(rec, 1, "\"owner\":", 8)
        || !ragnx_records_token(rec, 2, "\"id\":", 5)
        || !ragnx_records_token(rec, 3, "\"query\":", 8)
        || rec->tlen[2] != strlen(rec->id) + 2
        || memcmp(rec->tok[2] + 1, rec->id, rec->tlen[2] - 2) != 0)
    {
        rec->tok[0] = NULL;
        return 0;
    }

    if (memmem(rec->payload, rec->len, "\"rid\":", 6) == NULL) {
        rec->tok[4] = "null";
        rec->tlen[4] = 4;

    } else if (!ragnx_records_token(rec, 4, "\"rid\":", 6)
               || !ragnx_rid_valid(rec->tok[4] + 1, rec->tlen[4] - 2))
    {
        rec->tok[0] = NULL;
        return 0;
    }

    return 1;
}


/* key's string value, a JSON token kept as written (escapes and all) */

static int
ragnx_records_token(ragnx_record_t *rec, int k, const char *key,
    size_t klen)
{
    const char  *p, *q, *end;

    end = rec->payload + rec->len;
    p = memmem(rec->payload, rec->len, key, klen);

    if (p == NULL || p + klen >= end || p[klen] != '"') {
        return 0;
    }

    p += klen;

    for (q = p + 1; q < end; q++) {
        if (*q == '\\') {
            q++;

        } else if (*q == '"') {
            rec->tok[k] = p;
            rec->tlen[k] = q + 1 - p;
            return 1;

        } else if ((u_char) *q < 0x20) {
            return 0;
        }
    }

    return 0;
}


/* the tokens of a payload the quick check could not read, from its job */

static int
ragnx_records_encode(ragnx_record_t *rec, const ragnx_job_t *job)
{
    int          k;
    char        *p, *one[RAGNX_TOKENS];
    size_t       n;
    json_t      *str;
    const char  *v[RAGNX_TOKENS];

    v[0] = job->chat_id;
    v[1] = job->owner;
    v[2] = job->id;
    v[3] = job->query;
    v[4] = job->rid;
    n = 0;

    for (k = 0; k < RAGNX_TOKENS; k++) {
        str = v[k] ? json_string(v[k]) : json_null();
        one[k] = str ? json_dumps(str, JSON_ENCODE_ANY) : NULL;
        json_decref(str);
        n += one[k] ? strlen(one[k]) : 0;
    }

    free(rec->own);
    rec->own = malloc(n + 1);

    for (k = 0; k < RAGNX_TOKENS; k++) {
        if (one[k] == NULL || rec->own == NULL) {
            for (k = 0; k < RAGNX_TOKENS; k++) {
                free(one[k]);
            }

            return RAGNX_ERROR;
        }
    }

    p = rec->own;

    for (k = 0; k < RAGNX_TOKENS; k++) {
        rec->tok[k] = p;
        rec->tlen[k] = strlen(one[k]);
        p = stpcpy(p, one[k]);
        free(one[k]);
    }

    return RAGNX_OK;
}


static char *
ragnx_records_hex(char *p, const u_char *digest)
{
    int                  i;
    static const char    hex[] = "0123456789abcdef";

    *p++ = '"';

    for (i = 0; i < RAGNX_DIGEST; i++) {
        *p++ = hex[digest[i] >> 4];
        *p++ = hex[digest[i] & 0xf];
    }

    *p++ = '"';

    return p;
}


/*
 * The batch in one statement.  A batch PostgreSQL refuses for its data
 * (a malformed result that is no JSON, say) is written a record at a
 * time, so that only the bad ones are dead-lettered.  RAGNX_AGAIN when
 * the database is unavailable: nothing is acknowledged.
 */

static int
ragnx_records_write(ragnx_records_t *b)
{
    int                 i, rc, missing;
    char                rid[RAGNX_RID_MAX + 1];
    ragnx_log_fields_t  lf;

    if (b->conn == NULL) {
        b->conn = ragnx_db_connect(ragnx_conf->database,
                                   ragnx_conf->database_password);

        /* what another server, or a restored one, holds is not known */
        memset(b->known, 0, sizeof(b->known));

        if (b->conn == NULL) {
            return RAGNX_AGAIN;
        }

        /* a large batch must not block its send on a stalled server */
        if (PQsetnonblocking(b->conn, 1) != 0) {
            ragnx_log_error(RAGNX_LOG_ERROR, RAGNX_ERR_PG,
                            "records: %s",
                            PQerrorMessage(b->conn));
            PQfinish(b->conn);
            b->conn = NULL;
            return RAGNX_AGAIN;
        }
    }

    rc = ragnx_records_exec(b, 0, b->n, &missing);

    if (rc == RAGNX_OK && missing) {
        /*
         * Chats made by a transaction that committed after the statement
         * began: once more for those records, with a new snapshot.
         */
        for (i = 0; i < b->n; i++) {
            if (b->recs[i].error == ragnx_records_not_found) {
                b->recs[i].error = NULL;
            }
        }

        rc = ragnx_records_exec(b, 0, b->n, &missing);
    }

    if (rc != RAGNX_DECLINED) {
        return rc;
    }

    for (i = 0; i < b->n; i++) {
        if (b->recs[i].error == NULL) {
            ragnx_records_check(&b->recs[i], 1);
        }
    }

    for (i = 0; i < b->n; i++) {
        if (b->recs[i].error) {
            continue;
        }

        rc = ragnx_records_exec(b, i, i + 1, &missing);

        if (rc == RAGNX_DECLINED) {
            ragnx_records_fields(&b->recs[i], &lf, rid, RAGNX_ERR_PG);
            ragnx_log_fields(RAGNX_LOG_ERROR, &lf, "record %s refused by the "
                             "database: dead-lettered", b->recs[i].entry);
            b->recs[i].error = "invalid record";

        } else if (rc != RAGNX_OK) {
            return rc;
        }
    }

    return RAGNX_OK;
}


/*
 * Records from .. to - 1 that are still to be written.  RAGNX_DECLINED
 * when PostgreSQL refused their data; *missing counts those whose chat
 * was not found (others' chats are marked).
 */

static int
ragnx_records_exec(ragnx_records_t *b, int from, int to, int *missing)
{
    int               i, k, rows, n, slot, *index;
    char             *p, *nb, rid[RAGNX_RID_MAX + 1];
    u_char          (*sent)[RAGNX_DIGEST];
    ragnx_log_fields_t  lf;
    size_t            need;
    const char       *params[2], *state;
    PGresult         *res;
    ragnx_record_t   *rec;

    *missing = 0;
    need = 6;

    for (i = from; i < to; i++) {
        if (b->recs[i].error == NULL) {
            need += b->recs[i].rlen + 2 * 36 + 40;

            for (k = 0; k < RAGNX_TOKENS; k++) {
                need += b->recs[i].tlen[k] + 1;
            }
        }
    }

    if (need > b->size) {
        nb = realloc(b->buf, need);
        if (nb == NULL) {
            ragnx_log(RAGNX_LOG_ERROR, "out of memory");
            return RAGNX_AGAIN;
        }

        b->buf = nb;
        b->size = need;
    }

    index = malloc((to - from) * sizeof(int));
    sent = calloc(RAGNX_RECORDS_KNOWN, RAGNX_DIGEST);

    if (index == NULL || sent == NULL) {
        free(index);
        free(sent);
        ragnx_log(RAGNX_LOG_ERROR, "out of memory");
        return RAGNX_AGAIN;
    }

    /*
     * $1, [[chat,owner,id,query,rid,time,"digest"],...]: the payload's
     * own JSON strings (or null), nothing to escape
     */

    p = b->buf;
    params[0] = p;
    *p++ = '[';
    n = 0;

    for (i = from; i < to; i++) {
        rec = &b->recs[i];

        if (rec->error) {
            continue;
        }

        if (n) {
            *p++ = ',';
        }

        index[n++] = i;
        *p++ = '[';

        for (k = 0; k < RAGNX_TOKENS; k++) {
            p = memcpy(p, rec->tok[k], rec->tlen[k]);
            p += rec->tlen[k];
            *p++ = ',';
        }

        p = stpcpy(p, rec->time);
        *p++ = ',';
        p = ragnx_records_hex(p, rec->digest);
        *p++ = ']';
    }

    *p++ = ']';
    *p++ = '\0';

    /*
     * $2, [["digest",result],...]: each answer not known to be stored,
     * once (one sent twice in the same statement is only skipped there).
     */

    params[1] = p;
    *p++ = '[';
    k = 0;

    for (i = 0; i < n; i++) {
        rec = &b->recs[index[i]];
        slot = ragnx_records_slot(rec->digest);

        if (memcmp(b->known[slot], rec->digest, RAGNX_DIGEST) == 0
            || memcmp(sent[slot], rec->digest, RAGNX_DIGEST) == 0)
        {
            continue;
        }

        memcpy(sent[slot], rec->digest, RAGNX_DIGEST);

        if (k++) {
            *p++ = ',';
        }

        *p++ = '[';
        p = ragnx_records_hex(p, rec->digest);
        *p++ = ',';
        p = memcpy(p, rec->result, rec->rlen);
        p += rec->rlen;
        *p++ = ']';
    }

    *p++ = ']';
    *p = '\0';

    free(sent);

    if (n == 0) {
        free(index);
        return RAGNX_OK;
    }

    /* prepared on first use; within db_query_timeout (ragnx_db.c) */
    res = ragnx_db_query(b->conn, "ragnx_records", ragnx_records_sql, 2,
                         params);

    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        state = PQresultErrorField(res, PG_DIAG_SQLSTATE);

        /* classes 22 and 23: the data, not the database */

        if (PQstatus(b->conn) == CONNECTION_OK && state
            && (strncmp(state, "22", 2) == 0 || strncmp(state, "23", 2) == 0))
        {
            ragnx_log_error(n > 1 ? RAGNX_LOG_WARN : RAGNX_LOG_ERROR,
                            RAGNX_ERR_PG, "records: %s",
                            PQresultErrorMessage(res));
            PQclear(res);
            free(index);
            return RAGNX_DECLINED;
        }

        ragnx_log_error(RAGNX_LOG_ERROR, RAGNX_ERR_PG, "records: %s",
                        res ? PQresultErrorMessage(res)
                            : PQerrorMessage(b->conn));
        PQclear(res);
        free(index);

        if (PQstatus(b->conn) != CONNECTION_OK
            || PQtransactionStatus(b->conn) != PQTRANS_IDLE)
        {
            /* lost, or no answer in time: a new connection next time */
            PQfinish(b->conn);
            b->conn = NULL;
        }

        return RAGNX_AGAIN;
    }

    /* committed: every answer of the batch is stored */

    for (i = 0; i < n; i++) {
        rec = &b->recs[index[i]];
        memcpy(b->known[ragnx_records_slot(rec->digest)], rec->digest,
               RAGNX_DIGEST);
    }

    rows = PQntuples(res);

    for (i = 0; i < rows; i++) {
        k = atoi(PQgetvalue(res, i, 0)) - 1;

        if (k < 0 || k >= n) {
            continue;
        }

        rec = &b->recs[index[k]];

        if (PQgetvalue(res, i, 1)[0] == 't') {
            (*missing)++;
            rec->error = ragnx_records_not_found;

        } else if (PQgetvalue(res, i, 2)[0] == 't') {
            ragnx_records_fields(rec, &lf, rid, RAGNX_ERR_CHAT);
            ragnx_log_fields(RAGNX_LOG_WARN, &lf, "record %s: its chat holds "
                             "the exchange of another job", rec->entry);
            rec->error = "chat already recorded";

        } else {
            ragnx_records_fields(rec, &lf, rid, RAGNX_ERR_CHAT);
            ragnx_log_fields(RAGNX_LOG_WARN, &lf, "record %s: chat of another "
                             "owner", rec->entry);
            rec->error = "chat not found";
        }
    }

    PQclear(res);
    free(index);

    return RAGNX_OK;
}


/*
 * Dead letters first, then one XACK and one XDEL for the whole batch, in
 * one pipeline: a failure leaves the entries pending, to be requeued and
 * written again (changing nothing).
 */

static int
ragnx_records_ack(ragnx_thread_t *t, ragnx_records_t *b)
{
    int               i, k, argc, rc, dead;
    char              now[32], max[32], rid[RAGNX_RID_MAX + 1];
    ragnx_log_fields_t  lf;
    size_t           *lens;
    const char      **argv;
    redisReply       *reply;
    ragnx_record_t   *rec;

    argv = malloc((b->n + 3) * sizeof(char *));
    lens = malloc((b->n + 3) * sizeof(size_t));

    if (argv == NULL || lens == NULL) {
        free(argv);
        free(lens);
        ragnx_log(RAGNX_LOG_ERROR, "out of memory");
        return RAGNX_ERROR;
    }

    if (t->redis.ctx == NULL && ragnx_redis_connect(&t->redis) != RAGNX_OK) {
        free(argv);
        free(lens);
        return RAGNX_ERROR;
    }

    snprintf(now, sizeof(now), "%lld", ragnx_now_ms());
    snprintf(max, sizeof(max), "%ld", ragnx_conf->dead_max);
    dead = 0;

    for (i = 0; i < b->n; i++) {
        rec = &b->recs[i];

        if (rec->error == NULL) {
            continue;
        }

        ragnx_records_fields(rec, &lf, rid, RAGNX_ERR_NONE);
        ragnx_log_fields(RAGNX_LOG_WARN, &lf, "record %s: %s: dead-lettered",
                         rec->entry, rec->error);

        /* with its result: "jobs retry" puts it back on this lane */
        redisAppendCommand(t->redis.ctx, "XADD %s MAXLEN ~ %s * id %s "
                           "job %b result %b error %s failedAt %s",
                           RAGNX_KEY_DEAD, max, rec->id,
                           rec->payload ? rec->payload : "",
                           rec->payload ? rec->len : 0,
                           rec->result ? rec->result : "",
                           rec->result ? rec->rlen : 0, rec->error, now);
        dead++;
    }

    for (k = 0; k < 2; k++) {
        argc = 0;
        argv[argc] = k ? "XDEL" : "XACK";
        lens[argc++] = 4;
        argv[argc] = RAGNX_KEY_RECORDS;
        lens[argc++] = sizeof(RAGNX_KEY_RECORDS) - 1;

        if (k == 0) {
            argv[argc] = RAGNX_GROUP;
            lens[argc++] = sizeof(RAGNX_GROUP) - 1;
        }

        for (i = 0; i < b->n; i++) {
            argv[argc] = b->recs[i].entry;
            lens[argc++] = strlen(b->recs[i].entry);
        }

        redisAppendCommandArgv(t->redis.ctx, argc, argv, lens);
    }

    free(argv);
    free(lens);

    rc = RAGNX_OK;

    for (i = 0; i < dead + 2; i++) {
        if (redisGetReply(t->redis.ctx, (void **) &reply) != REDIS_OK) {
            ragnx_log_error(RAGNX_LOG_ERROR, RAGNX_ERR_REDIS,
                            "redis: %s", t->redis.ctx->errstr);
            ragnx_redis_close(&t->redis);
            return RAGNX_ERROR;
        }

        if (ragnx_reply_ok(&t->redis, reply, "records ack") != RAGNX_OK) {
            rc = RAGNX_ERROR;
        }
    }

    if (rc == RAGNX_OK) {
        ragnx_log(RAGNX_LOG_DEBUG, "%d records written, %d dead letters",
                  b->n - dead, dead);
    }

    return rc;
}


static void
ragnx_records_clear(ragnx_records_t *b)
{
    int  i;

    for (i = 0; i < b->n; i++) {
        free(b->recs[i].own);
        b->recs[i].own = NULL;
    }

    if (b->reply) {
        freeReplyObject(b->reply);
        b->reply = NULL;
    }

    b->n = 0;
}


/*
 * A record's log line names its job and request id, the latter from its
 * token (quotes and all) when the check read one: nothing is decoded for
 * it.  rid: room for RAGNX_RID_MAX + 1.
 */

static void
ragnx_records_fields(const ragnx_record_t *rec, ragnx_log_fields_t *lf,
    char *rid, ragnx_err_t error)
{
    memset(lf, 0, sizeof(ragnx_log_fields_t));
    lf->job = rec->id[0] ? rec->id : NULL;
    lf->error = error;

    if (rec->tok[0] && rec->tok[4] && rec->tok[4][0] == '"'
        && rec->tlen[4] >= 3
        && rec->tlen[4] - 2 <= RAGNX_RID_MAX)
    {
        memcpy(rid, rec->tok[4] + 1, rec->tlen[4] - 2);
        rid[rec->tlen[4] - 2] = '\0';
        lf->rid = rid;
    }
}
