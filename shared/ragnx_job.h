
/*
 * ragnx: the job payload carried in the stream entry (field "job").
 *
 *   {"v":1, "id", "owner", "chatId", "query", "digest", "createdAt",
 *    "scope":"chat", "type":"ask"|"record", "gen",
 *    "result":{"answer","sources"}}
 *
 * The module encodes the fields it knows and, when it knows the cache
 * generation, "gen" and "type" too; otherwise the enqueue script appends
 * them (reading "gen" itself).  For a cache hit the cached value itself
 * goes in as "result".
 * "ask" jobs run retrieval and the LLM; "record" jobs only write an
 * exchange answered from the cache into the user's chat.
 *
 * Scope (the trust boundary between chats): a question asked in an
 * existing chat carries "scope":"chat".  Only such a job reads the
 * chat's history, and its answer, when history went into it, is that
 * chat's alone: never cached, never shared with a follower.  A job
 * without it (a new chat's first question) is answered from the
 * passages and the question only, so its answer may be cached and
 * shared by single-flight.  A payload without the field is never given
 * history: the safe reading.
 */


#ifndef RAGNX_JOB_H
#define RAGNX_JOB_H


#include <stddef.h>
#include <jansson.h>


#define RAGNX_JOB_ASK     1
#define RAGNX_JOB_RECORD  2


typedef struct {
    int          type;
    const char  *id;
    const char  *owner;
    const char  *chat_id;
    const char  *query;
    const char  *digest;
    const char  *gen;
    int          chat_scope;   /* "scope":"chat": may read history */
    json_t      *result;       /* record only: the cached value */
    const char  *answer;       /* record only, from result */
    json_t      *sources;      /* record only, from result */
    long long    created;      /* ms since the epoch */
    json_t      *root;         /* decoded payload; owns the strings */
} ragnx_job_t;


/*
 * The payload as a new JSON object, NULL on allocation failure; "type",
 * "gen" and "result" only when set (type 0, NULL).
 */
json_t *ragnx_job_encode(const ragnx_job_t *job);

/*
 * The module-side payload (no "type", "gen" or "result"; "scope" when
 * set) written straight into buf, without building JSON objects: the ask
 * path makes one per question.  Returns its length, or 0 when it does not
 * fit; size RAGNX_JOB_MAX(query, owner) always does.
 */
size_t ragnx_job_write(const ragnx_job_t *job, char *buf, size_t size);

#define RAGNX_JOB_MAX(qlen, olen)  (256 + 6 * ((qlen) + (olen)))

/* JSON string body of s (no quotes) into out (room for 6 * len) */
size_t ragnx_json_escape(const char *s, size_t len, char *out);

/*
 * Parse and check a payload: version, type, UUID ids, required fields.
 * On success the strings point into job->root; free with ragnx_job_free().
 * On failure returns -1 with a reason in err.
 */
int ragnx_job_decode(const char *data, size_t len, ragnx_job_t *job,
    char *err, size_t errlen);

void ragnx_job_free(ragnx_job_t *job);

const char *ragnx_job_type_name(int type);


#endif /* RAGNX_JOB_H */
