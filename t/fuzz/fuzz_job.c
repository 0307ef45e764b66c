
/*
 * ragnx: fuzz target of the job payload (shared/ragnx_job.c).  Any bytes
 * go to ragnx_job_decode; a payload that decodes is written again with
 * ragnx_job_write into exactly RAGNX_JOB_MAX bytes, and that must decode
 * to the same fields (and so must ragnx_job_encode's object).
 */


#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "ragnx_job.h"


static void
same(const ragnx_job_t *a, const ragnx_job_t *b)
{
    if (strcmp(a->id, b->id) != 0 || strcmp(a->owner, b->owner) != 0
        || strcmp(a->chat_id, b->chat_id) != 0
        || strcmp(a->query, b->query) != 0 || strcmp(a->digest, b->digest) != 0
        || a->created != b->created || a->chat_scope != b->chat_scope) {
        abort();
    }
}


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char       *buf, *s, err[256];
    size_t      n, max;
    json_t     *o;
    ragnx_job_t job, back;

    if (ragnx_job_decode((const char *) data, size, &job, err, sizeof(err))
        != 0) {
        if (err[0] == '\0') {
            abort(); /* a failure says why */
        }

        return 0;
    }

    max = RAGNX_JOB_MAX(strlen(job.query), strlen(job.owner));
    buf = malloc(max);
    if (buf == NULL) {
        abort();
    }

    n = ragnx_job_write(&job, buf, max);
    if (n == 0 || n > max) {
        abort();
    }

    if (ragnx_job_decode(buf, n, &back, err, sizeof(err)) != 0) {
        abort();
    }

    same(&job, &back);
    ragnx_job_free(&back);
    free(buf);

    o = ragnx_job_encode(&job);
    s = o ? json_dumps(o, JSON_COMPACT) : NULL;
    if (s == NULL) {
        abort();
    }

    if (ragnx_job_decode(s, strlen(s), &back, err, sizeof(err)) != 0) {
        abort();
    }

    same(&job, &back);
    ragnx_job_free(&back);
    free(s);
    json_decref(o);
    ragnx_job_free(&job);

    return 0;
}
