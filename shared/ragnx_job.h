
/*
 * ragnx: the job payload carried in the stream entry (field "job").
 *
 *   {"v":2, "id", "owner", "chatId", "query", "digest", "createdAt",
 *    "scope":"chat", "rid"}
 *
 * The payload is immutable: written once, by ragnx_job_write() in the
 * module, and read once, by ragnx_job_decode() in the pool; no script
 * splices or re-encodes it.  What is known only later, or differs between
 * the lanes, travels as stream-entry fields beside it
 * (shared/ragnx_keys.h): an ask job's cache generation ("gen", when the
 * module does not know it the script reads it), a record's cached value
 * ("result").  Which lane an entry is in says what it is: {ragnx}:jobs
 * holds ask jobs (retrieval and the LLM), {ragnx}:records the exchanges
 * answered from the cache (hits, and followers of a single-flight
 * leader), only to be written into the asker's chat.
 *
 * Scope (the trust boundary between chats): a question asked in an
 * existing chat carries "scope":"chat".  Only such a job reads the
 * chat's history, and its answer, when history went into it, is that
 * chat's alone: never cached, never shared with a follower.  A job
 * without it (a new chat's first question) is answered from the
 * passages and the question only, so its answer may be cached and
 * shared by single-flight.  A payload without the field is never given
 * history: the safe reading.
 *
 * "rid", the request id of the question (nginx's $ragnx_request_id), is
 * optional: a payload written before it existed decodes as one without
 * it.  It is up to RAGNX_RID_MAX characters of a safe set (letters,
 * digits, "-", "_", ".", ":"), so it goes into logs and PostgreSQL as
 * it is, and a reader may take it from the payload without decoding.
 */


#ifndef RAGNX_JOB_H
#define RAGNX_JOB_H


#include <stddef.h>
#include <jansson.h>


typedef struct {
    const char  *id;
    const char  *owner;
    const char  *chat_id;
    const char  *query;
    const char  *digest;
    const char  *gen;          /* the entry's "gen" field, not the payload */
    const char  *rid;          /* request id, NULL when none */
    int          chat_scope;   /* "scope":"chat": may read history */
    long long    created;      /* ms since the epoch */
    json_t      *root;         /* decoded payload; owns the strings */
} ragnx_job_t;


/* the payload as a new JSON object, NULL on allocation failure */
json_t *ragnx_job_encode(const ragnx_job_t *job);

/*
 * The payload ("scope" when set) written straight into buf, without
 * building JSON objects: the ask path makes one per question.  Returns
 * its length, or 0 when it does not fit; size RAGNX_JOB_MAX(query,
 * owner) always does.
 */
size_t ragnx_job_write(const ragnx_job_t *job, char *buf, size_t size);

#define RAGNX_RID_MAX  64

#define RAGNX_JOB_MAX(qlen, olen)                                            \
    (256 + RAGNX_RID_MAX + 16 + 6 * ((qlen) + (olen)))

/* 1 when s[0..len) may be a request id: 1 to RAGNX_RID_MAX safe bytes */
int ragnx_rid_valid(const char *s, size_t len);

/* JSON string body of s (no quotes) into out (room for 6 * len) */
size_t ragnx_json_escape(const char *s, size_t len, char *out);

/*
 * Parse and check a payload: version, UUID ids, a lower-case hex digest,
 * required fields.  On success the strings point into job->root (job->gen
 * is left NULL: it is the entry's); free with ragnx_job_free().  On
 * failure returns -1 with a reason in err.
 */
int ragnx_job_decode(const char *data, size_t len, ragnx_job_t *job,
    char *err, size_t errlen);

void ragnx_job_free(ragnx_job_t *job);


#endif /* RAGNX_JOB_H */
