
/*
 * ragnx: job payload encoding and strict decoding (see ragnx_job.h).
 */


#include <stdio.h>
#include <string.h>

#include "ragnx_job.h"
#include "ragnx_keys.h"
#include "ragnx_uuid.h"


static const char *ragnx_job_string(json_t *root, const char *name,
    int required, char *err, size_t errlen);


json_t *
ragnx_job_encode(const ragnx_job_t *job)
{
    json_t  *o;
    int      rc;

    o = json_object();
    if (o == NULL) {
        return NULL;
    }

    rc = json_object_set_new(o, "v", json_integer(RAGNX_JOB_VERSION));
    rc |= json_object_set_new(o, "id", json_string(job->id));
    rc |= json_object_set_new(o, "owner", json_string(job->owner));
    rc |= json_object_set_new(o, "chatId", json_string(job->chat_id));
    rc |= json_object_set_new(o, "query", json_string(job->query));
    rc |= json_object_set_new(o, "digest", json_string(job->digest));
    rc |= json_object_set_new(o, "createdAt", json_integer(job->created));

    if (job->chat_scope) {
        rc |= json_object_set_new(o, "scope", json_string("chat"));
    }

    if (job->rid) {
        rc |= json_object_set_new(o, "rid", json_string(job->rid));
    }

    if (rc != 0) {
        json_decref(o);
        return NULL;
    }

    return o;
}


static const char *
ragnx_job_string(json_t *root, const char *name, int required, char *err,
    size_t errlen)
{
    json_t  *v;

    v = json_object_get(root, name);

    if (v == NULL && !required) {
        return NULL;
    }

    if (!json_is_string(v)) {
        snprintf(err, errlen, "field \"%s\" missing or not a string", name);
        return NULL;
    }

    return json_string_value(v);
}


size_t
ragnx_json_escape(const char *s, size_t len, char *out)
{
    size_t               i;
    char                *o;
    unsigned char        c;
    static const char    hex[] = "0123456789abcdef";

    o = out;

    for (i = 0; i < len; i++) {
        c = (unsigned char) s[i];

        if (c == '"' || c == '\\') {
            *o++ = '\\';
            *o++ = (char) c;

        } else if (c < 0x20) {
            *o++ = '\\';

            switch (c) {
            case '\n':
                *o++ = 'n';
                break;
            case '\r':
                *o++ = 'r';
                break;
            case '\t':
                *o++ = 't';
                break;
            default:
                *o++ = 'u';
                *o++ = '0';
                *o++ = '0';
                *o++ = hex[c >> 4];
                *o++ = hex[c & 0xf];
            }

        } else {
            *o++ = (char) c;
        }
    }

    return o - out;
}


int
ragnx_rid_valid(const char *s, size_t len)
{
    size_t  i;
    char    c;

    if (len == 0 || len > RAGNX_RID_MAX) {
        return 0;
    }

    for (i = 0; i < len; i++) {
        c = s[i];

        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')
              || (c >= '0' && c <= '9') || c == '-' || c == '_' || c == '.'
              || c == ':'))
        {
            return 0;
        }
    }

    return 1;
}


/* the fixed parts of the payload ragnx_job_write() puts together */
#define RAGNX_JOB_CPY(p, s)  (memcpy(p, s, sizeof(s) - 1), (p) + sizeof(s) - 1)
#define RAGNX_JOB_STR(x)     RAGNX_JOB_STR2(x)
#define RAGNX_JOB_STR2(x)    #x


size_t
ragnx_job_write(const ragnx_job_t *job, char *buf, size_t size)
{
    int          n;
    char        *p, num[24];
    size_t       qlen, olen, rlen;
    long long    v;

    qlen = strlen(job->query);
    olen = strlen(job->owner);
    rlen = job->rid ? strlen(job->rid) : 0;

    /* a request id goes in as it is: its characters need no escape */

    if (size < RAGNX_JOB_MAX(qlen, olen)
        || (job->rid && !ragnx_rid_valid(job->rid, rlen)))
    {
        return 0;
    }

    /* once per question: memcpy, no printf (a third of the hit's cost) */

    p = buf;
    p = RAGNX_JOB_CPY(p, "{\"v\":" RAGNX_JOB_STR(RAGNX_JOB_VERSION)
                         ",\"id\":\"");
    memcpy(p, job->id, RAGNX_UUID_LEN);
    p += RAGNX_UUID_LEN;
    p = RAGNX_JOB_CPY(p, "\",\"owner\":\"");
    p += ragnx_json_escape(job->owner, olen, p);
    p = RAGNX_JOB_CPY(p, "\",\"chatId\":\"");
    memcpy(p, job->chat_id, RAGNX_UUID_LEN);
    p += RAGNX_UUID_LEN;
    p = RAGNX_JOB_CPY(p, "\",\"query\":\"");
    p += ragnx_json_escape(job->query, qlen, p);
    p = RAGNX_JOB_CPY(p, "\",\"digest\":\"");
    memcpy(p, job->digest, RAGNX_DIGEST_LEN);
    p += RAGNX_DIGEST_LEN;
    p = RAGNX_JOB_CPY(p, "\",\"createdAt\":");

    /* digits backwards, then in order */
    v = job->created < 0 ? -job->created : job->created;
    n = 0;

    do {
        num[n++] = (char) ('0' + v % 10);
        v /= 10;
    } while (v);

    if (job->created < 0) {
        *p++ = '-';
    }

    while (n) {
        *p++ = num[--n];
    }

    if (job->chat_scope) {
        p = RAGNX_JOB_CPY(p, ",\"scope\":\"chat\"");
    }

    if (job->rid) {
        p = RAGNX_JOB_CPY(p, ",\"rid\":\"");
        memcpy(p, job->rid, rlen);
        p += rlen;
        *p++ = '"';
    }

    *p++ = '}';

    return p - buf;
}


int
ragnx_job_decode(const char *data, size_t len, ragnx_job_t *job, char *err,
    size_t errlen)
{
    json_t        *root, *v;
    json_error_t   e;

    memset(job, 0, sizeof(ragnx_job_t));
    err[0] = '\0';

    root = json_loadb(data, len, JSON_REJECT_DUPLICATES, &e);
    if (root == NULL) {
        snprintf(err, errlen, "invalid JSON: %s", e.text);
        return -1;
    }

    job->root = root;

    if (!json_is_object(root)) {
        snprintf(err, errlen, "payload is not an object");
        goto failed;
    }

    v = json_object_get(root, "v");
    if (!json_is_integer(v) || json_integer_value(v) != RAGNX_JOB_VERSION) {
        snprintf(err, errlen, "unsupported payload version");
        goto failed;
    }

    if ((job->id = ragnx_job_string(root, "id", 1, err, errlen)) == NULL
        || (job->owner = ragnx_job_string(root, "owner", 1, err, errlen))
           == NULL
        || (job->chat_id = ragnx_job_string(root, "chatId", 1, err, errlen))
           == NULL
        || (job->query = ragnx_job_string(root, "query", 1, err, errlen))
           == NULL
        || (job->digest = ragnx_job_string(root, "digest", 1, err, errlen))
           == NULL)
    {
        goto failed;
    }

    if (!ragnx_uuid_valid(job->id, strlen(job->id))
        || !ragnx_uuid_valid(job->chat_id, strlen(job->chat_id)))
    {
        snprintf(err, errlen, "id or chatId is not a uuid");
        goto failed;
    }

    /*
     * the digest is what ragnx_query_digest() writes: ragnx_job_write()
     * copies it unescaped, and the pool makes cache keys of it
     */
    if (strlen(job->digest) != RAGNX_DIGEST_LEN
        || strspn(job->digest, "0123456789abcdef") != RAGNX_DIGEST_LEN
        || job->owner[0] == '\0' || job->query[0] == '\0')
    {
        snprintf(err, errlen, "empty owner or query, or bad digest");
        goto failed;
    }

    v = json_object_get(root, "createdAt");
    job->created = json_is_integer(v) ? json_integer_value(v) : 0;

    v = json_object_get(root, "scope");

    if (v != NULL) {
        if (!json_is_string(v) || strcmp(json_string_value(v), "chat") != 0)
        {
            snprintf(err, errlen, "unknown scope");
            goto failed;
        }

        job->chat_scope = 1;
    }

    v = json_object_get(root, "rid");

    if (v != NULL) {
        if (!json_is_string(v)
            || !ragnx_rid_valid(json_string_value(v), json_string_length(v)))
        {
            snprintf(err, errlen, "bad request id");
            goto failed;
        }

        job->rid = json_string_value(v);
    }

    return 0;

failed:

    ragnx_job_free(job);
    return -1;
}


void
ragnx_job_free(ragnx_job_t *job)
{
    if (job->root) {
        json_decref(job->root);
    }

    memset(job, 0, sizeof(ragnx_job_t));
}
