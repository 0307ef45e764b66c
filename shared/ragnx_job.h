
/*
 * ragnx: the job payload carried in the stream entry (field "job").
 *
 *   {"v":1, "type":"ask"|"record", "id", "owner", "chatId", "query",
 *    "digest", "gen", "createdAt", ["answer", "sources"] for record}
 *
 * "ask" jobs run retrieval and the LLM; "record" jobs only write an
 * exchange answered from the cache into the user's chat.
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
    const char  *answer;       /* record only */
    json_t      *sources;      /* record only, borrowed from root */
    long long    created;      /* ms since the epoch */
    json_t      *root;         /* decoded payload; owns the strings */
} ragnx_job_t;


/* the payload as a new JSON object, NULL on allocation failure */
json_t *ragnx_job_encode(const ragnx_job_t *job);

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
