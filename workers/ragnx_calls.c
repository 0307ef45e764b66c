
/*
 * ragnx worker pool: synchronous calls from nginx (shared/ragnx_rpc.h).
 *
 * Every worker process runs rpc_concurrency call threads beside its job
 * threads, each blocked on the {ragnx}:rpc stream alone, so a login or a
 * chat list never queues behind LLM calls: the calls have their own
 * threads instead of a turn before the jobs.
 *
 * Calls are read with NOACK.  A call is worth answering only until its
 * deadline (ragnx_rpc_timeout in nginx, seconds), far less than any
 * visibility timeout, so redelivering one after a crash would answer
 * nobody; with NOACK nothing is left pending and no XACK round trip is
 * paid.  The caller of a call lost that way gets its 504.
 *
 * A reply's PUBLISH is pipelined with the thread's next XREADGROUP: one
 * round trip per call instead of two.
 *
 * Every entry is deleted as it is read (XDEL, pipelined the same way), so
 * nothing of a call rests in Redis.  register and login are sealed
 * (shared/ragnx_seal.h): opened here with rpc_key_file, their replies
 * sealed with the key that came inside.
 */


#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ragnx_worker.h"
#include "ragnx_keys.h"
#include "ragnx_rpc.h"
#include "ragnx_seal.h"
#include "ragnx_uuid.h"
#include <sodium.h>


static const ragnx_call_pt  ragnx_call_handlers[] = {
    NULL,
    ragnx_account_register,         /* RAGNX_RPC_REGISTER */
    ragnx_account_login,            /* RAGNX_RPC_LOGIN */
    ragnx_account_me,               /* RAGNX_RPC_ME */
    ragnx_account_chats,            /* RAGNX_RPC_CHATS */
    ragnx_account_messages,         /* RAGNX_RPC_MESSAGES */
    ragnx_account_chat              /* RAGNX_RPC_CHAT */
};


static void ragnx_call_field(ragnx_call_t *c, const redisReply *f,
    const redisReply *v, int *bad);
static void ragnx_call_publish(ragnx_redis_t *r, const ragnx_call_t *c,
    int status, const char *body);
static int ragnx_call_replies(ragnx_redis_t *r);
static int ragnx_call_params(ragnx_call_t *c);


/*
 * The group starts RAGNX_CALL_BACKLOG ms back (stream ids begin with the
 * time they were added): a call made while the first pool was starting
 * is still answered within its deadline, and older entries, expired long
 * since, are never read.  A call whose ragnx_rpc_timeout is longer than
 * that and that was made before then is not.
 */

#define RAGNX_CALL_BACKLOG  60000

int
ragnx_call_setup(ragnx_redis_t *r)
{
    redisReply  *reply;

    reply = ragnx_redis_command(r, "XGROUP CREATE %s %s %lld-0 MKSTREAM",
                                RAGNX_KEY_RPC, RAGNX_GROUP,
                                ragnx_now_ms() - RAGNX_CALL_BACKLOG);
    if (reply == NULL) {
        return RAGNX_ERROR;
    }

    if (reply->type == REDIS_REPLY_ERROR
        && strncmp(reply->str, "BUSYGROUP", 9) != 0)
    {
        ragnx_log(RAGNX_LOG_ERROR, "redis XGROUP CREATE %s: %s",
                  RAGNX_KEY_RPC, reply->str);
        freeReplyObject(reply);
        return RAGNX_ERROR;
    }

    freeReplyObject(reply);
    return RAGNX_OK;
}


/*
 * RAGNX_OK with a call, RAGNX_AGAIN when none came in block_ms,
 * RAGNX_ERROR when Redis failed, RAGNX_DECLINED for an entry that is not
 * a well-formed call (logged; answered with 400 when it names a reply
 * channel and an id, else dropped).
 */

int
ragnx_call_read(ragnx_redis_t *r, ragnx_call_t *c, int block_ms)
{
    int          rc, bad;
    size_t       i;
    redisReply  *reply, *entry, *fields;

    memset(c, 0, sizeof(ragnx_call_t));
    c->deadline = -1;

    if (r->pending == 0) {
        reply = ragnx_redis_command(r, "XREADGROUP GROUP %s %s COUNT 1 "
                                    "BLOCK %d NOACK STREAMS %s >",
                                    RAGNX_GROUP, r->consumer, block_ms,
                                    RAGNX_KEY_RPC);

    } else {
        /* the last reply's PUBLISH goes out with this read */

        reply = NULL;

        if (redisAppendCommand(r->ctx, "XREADGROUP GROUP %s %s COUNT 1 "
                               "BLOCK %d NOACK STREAMS %s >", RAGNX_GROUP,
                               r->consumer, block_ms, RAGNX_KEY_RPC)
            == REDIS_OK
            && ragnx_call_replies(r) == RAGNX_OK
            && redisGetReply(r->ctx, (void **) &reply) != REDIS_OK)
        {
            reply = NULL;
        }

        if (reply == NULL) {
            ragnx_log(RAGNX_LOG_ERROR, "redis: %s",
                      r->ctx ? r->ctx->errstr : "connection lost");
            ragnx_redis_close(r);
        }
    }

    if (reply == NULL) {
        return RAGNX_ERROR;
    }

    rc = ragnx_stream_entry(reply, RAGNX_KEY_RPC, &entry);

    if (rc != RAGNX_OK) {
        freeReplyObject(reply);

        if (rc == RAGNX_DECLINED) {
            ragnx_log(RAGNX_LOG_WARN, "call group missing: creating it");
            return ragnx_call_setup(r) == RAGNX_OK ? RAGNX_AGAIN
                                                   : RAGNX_ERROR;
        }

        return rc;
    }

    fields = entry->element[1];
    bad = 0;

    /* read once, never again: the entry goes with the next round trip */

    if (entry->element[0]->type == REDIS_REPLY_STRING) {
        ragnx_call_append(r, "XDEL %s %b", RAGNX_KEY_RPC,
                          entry->element[0]->str,
                          (size_t) entry->element[0]->len);
    }

    for (i = 0; i + 1 < fields->elements; i += 2) {
        ragnx_call_field(c, fields->element[i], fields->element[i + 1],
                         &bad);
    }

    freeReplyObject(reply);

    if (!bad && c->method && c->raw && ragnx_call_params(c) != RAGNX_OK) {
        bad = 1;
    }

    if (bad || c->id[0] == '\0' || c->method == 0 || c->reply[0] == '\0'
        || c->deadline < 0 || c->params == NULL
        || (ragnx_rpc_method_authenticated(c->method) && c->sub[0] == '\0'))
    {
        return RAGNX_DECLINED;
    }

    return RAGNX_OK;
}


static void
ragnx_call_field(ragnx_call_t *c, const redisReply *f, const redisReply *v,
    int *bad)
{
    if (f->type != REDIS_REPLY_STRING || v->type != REDIS_REPLY_STRING) {
        *bad = 1;
        return;
    }

    if (strcmp(f->str, "id") == 0) {
        if (v->len != RAGNX_UUID_LEN || !ragnx_uuid_valid(v->str, v->len)) {
            *bad = 1;
            return;
        }

        memcpy(c->id, v->str, v->len);
        c->id[v->len] = '\0';

    } else if (strcmp(f->str, "method") == 0) {
        c->method = ragnx_rpc_method(v->str, v->len);

    } else if (strcmp(f->str, "reply") == 0) {
        if (v->len == 0 || v->len >= sizeof(c->reply)
            || strncmp(v->str, RAGNX_KEY_REPLY, sizeof(RAGNX_KEY_REPLY) - 1)
               != 0)
        {
            *bad = 1;
            return;
        }

        memcpy(c->reply, v->str, v->len);
        c->reply[v->len] = '\0';

    } else if (strcmp(f->str, "deadline") == 0) {
        c->deadline = ragnx_rpc_deadline(v->str, v->len);

    } else if (strcmp(f->str, "rid") == 0) {
        if (!ragnx_rid_valid(v->str, v->len)) {
            *bad = 1;
            return;
        }

        memcpy(c->rid, v->str, v->len);
        c->rid[v->len] = '\0';

    } else if (strcmp(f->str, "sub") == 0) {
        if (v->len >= sizeof(c->sub) || memchr(v->str, '\0', v->len)) {
            *bad = 1;
            return;
        }

        memcpy(c->sub, v->str, v->len);
        c->sub[v->len] = '\0';

    } else if (strcmp(f->str, "params") == 0 && c->raw == NULL) {
        c->raw = malloc(v->len + 1);
        if (c->raw == NULL) {
            *bad = 1;
            return;
        }

        memcpy(c->raw, v->str, v->len);
        c->raw_len = v->len;
    }
}


/*
 * The params object: as sent, or opened with the pool's key for a sealed
 * method (the reply key comes with it).  A seal this pool cannot open
 * (no rpc_key_file, another key pair) is logged, never its content.
 */

static int
ragnx_call_params(ragnx_call_t *c)
{
    long          n;
    char         *json;
    json_error_t  err;

    if (!ragnx_rpc_method_sealed(c->method)) {
        c->params = json_loadb(c->raw, c->raw_len, JSON_REJECT_DUPLICATES,
                               &err);

    } else if (!ragnx_conf->rpc_key_set) {
        ragnx_log(RAGNX_LOG_ERROR, "call %s (%s): sealed, and no "
                  "rpc_key_file is set", c->id,
                  ragnx_rpc_method_name(c->method));
        c->unopened = 1;
        return RAGNX_ERROR;

    } else {
        json = malloc(c->raw_len + 1);
        if (json == NULL) {
            return RAGNX_ERROR;
        }

        n = ragnx_seal_call_open(ragnx_conf->rpc_pk, ragnx_conf->rpc_sk,
                                 c->raw, c->raw_len, c->key, json);
        if (n < 0) {
            free(json);
            ragnx_log(RAGNX_LOG_ERROR, "call %s (%s): not sealed for this "
                      "pool's rpc_key_file", c->id,
                      ragnx_rpc_method_name(c->method));
            c->unopened = 1;
            return RAGNX_ERROR;
        }

        c->sealed = 1;
        c->params = json_loadb(json, (size_t) n, JSON_REJECT_DUPLICATES,
                               &err);
        sodium_memzero(json, (size_t) n);
        free(json);
    }

    if (c->params && !json_is_object(c->params)) {
        json_decref(c->params);
        c->params = NULL;
    }

    return c->params ? RAGNX_OK : RAGNX_ERROR;
}


void
ragnx_call_free(ragnx_call_t *c)
{
    json_decref(c->params);
    c->params = NULL;

    if (c->raw) {
        sodium_memzero(c->raw, c->raw_len);
        free(c->raw);
        c->raw = NULL;
    }

    sodium_memzero(c->key, sizeof(c->key));
}


/*
 * Answer one call unless its deadline has passed: then the caller has had
 * its 504 and the work would be for nobody.
 */

void
ragnx_call_serve(ragnx_thread_t *t, ragnx_call_t *c)
{
    int          status;
    char        *body;
    long long    now, start;

    /* the deadline is nginx's wall clock; the time taken is an interval */
    now = ragnx_now_ms();
    start = ragnx_mono_ms();

    /* every line until the answer names the call and its request */
    ragnx_log_set_call(c->id, c->rid[0] ? c->rid : NULL);

    if (ragnx_rpc_expired(c->deadline, now)) {
        ragnx_log(RAGNX_LOG_INFO, "call %s (%s) expired %lld ms ago: "
                  "skipped", c->id, ragnx_rpc_method_name(c->method),
                  now - c->deadline);
        ragnx_log_set_call(NULL, NULL);
        return;
    }

    body = NULL;
    status = ragnx_call_handlers[c->method](t, c, &body);

    if (status == 0) {
        ragnx_log(RAGNX_LOG_INFO, "call %s (%s) expired while waiting: "
                  "not answered", c->id, ragnx_rpc_method_name(c->method));
        ragnx_log_set_call(NULL, NULL);
        free(body);
        return;
    }

    if (body == NULL) {
        status = 500;
    }

    ragnx_call_publish(&t->redis, c, status,
                       body ? body : "{\"error\":\"Internal server error\"}");

    ragnx_log(RAGNX_LOG_INFO, "call %s (%s): %d in %lld ms", c->id,
              ragnx_rpc_method_name(c->method), status,
              ragnx_mono_ms() - start);
    ragnx_log_set_call(NULL, NULL);

    free(body);
}


/*
 * A malformed call that still says where to answer gets a 400; a sealed
 * one this pool cannot open (no key, another key pair) is the
 * deployment's fault, not the client's: 503, the reason logged.
 */

void
ragnx_call_reject(ragnx_redis_t *r, const ragnx_call_t *c)
{
    ragnx_log(RAGNX_LOG_WARN, "malformed call%s%s on %s", c->id[0] ? " " : "",
              c->id, RAGNX_KEY_RPC);

    if (c->id[0] && c->reply[0]) {
        if (c->unopened) {
            ragnx_call_publish(r, c, 503,
                               "{\"error\":\"Service unavailable\"}");

        } else {
            ragnx_call_publish(r, c, 400, "{\"error\":\"Malformed call\"}");
        }
    }
}


static void
ragnx_call_publish(ragnx_redis_t *r, const ragnx_call_t *c, int status,
    const char *body)
{
    char        *msg, *sealed;
    size_t       len, n;
    const char  *argv[3];
    size_t       lens[3];

    len = strlen(body);
    sealed = NULL;

    if (c->sealed) {
        n = ragnx_seal_reply_size(len);
        sealed = malloc(n);

        if (sealed == NULL
            || ragnx_seal_reply(c->key, body, len, sealed, n) == 0)
        {
            ragnx_log(RAGNX_LOG_ERROR, "call %s: cannot seal the reply",
                      c->id);
            free(sealed);
            return;
        }

        body = sealed;
        len = strlen(sealed);
    }

    msg = malloc(RAGNX_RPC_REPLY_HEAD + len);
    if (msg == NULL) {
        ragnx_log(RAGNX_LOG_ERROR, "call %s: out of memory", c->id);
        free(sealed);
        return;
    }

    n = ragnx_rpc_reply_write(msg, c->id, status, body, len);
    free(sealed);
    if (n == 0) {
        ragnx_log(RAGNX_LOG_ERROR, "call %s: cannot write status %d", c->id,
                  status);
        free(msg);
        return;
    }

    argv[0] = "PUBLISH";
    lens[0] = 7;
    argv[1] = c->reply;
    lens[1] = strlen(c->reply);
    argv[2] = msg;
    lens[2] = n;

    if (r->ctx == NULL && ragnx_redis_connect(r) != RAGNX_OK) {
        ragnx_log(RAGNX_LOG_ERROR, "call %s: no Redis to reply on", c->id);

    } else if (redisAppendCommandArgv(r->ctx, 3, argv, lens) != REDIS_OK) {
        ragnx_log(RAGNX_LOG_ERROR, "call %s: %s", c->id, r->ctx->errstr);
        ragnx_redis_close(r);

    } else {
        r->pending++;
    }

    free(msg);
}


/*
 * A command sent with the next reply's PUBLISH (and before it), its
 * answer read with the PUBLISH's: a write the reply depends on costs no
 * round trip of its own.  A failure is logged.
 */

void
ragnx_call_append(ragnx_redis_t *r, const char *fmt, ...)
{
    int      rc;
    va_list  ap;

    if (r->ctx == NULL && ragnx_redis_connect(r) != RAGNX_OK) {
        ragnx_log(RAGNX_LOG_ERROR, "redis: not connected");
        return;
    }

    va_start(ap, fmt);
    rc = redisvAppendCommand(r->ctx, fmt, ap);
    va_end(ap);

    if (rc != REDIS_OK) {
        ragnx_log(RAGNX_LOG_ERROR, "redis: %s", r->ctx->errstr);
        ragnx_redis_close(r);
        return;
    }

    r->pending++;
}


/* the replies of pipelined commands (PUBLISHes mostly), in order */

static int
ragnx_call_replies(ragnx_redis_t *r)
{
    redisReply  *reply;

    while (r->pending > 0) {
        if (redisGetReply(r->ctx, (void **) &reply) != REDIS_OK
            || reply == NULL)
        {
            return RAGNX_ERROR;
        }

        r->pending--;

        if (reply->type == REDIS_REPLY_ERROR) {
            ragnx_log(RAGNX_LOG_ERROR, "pipelined command failed: %s",
                      reply->str);

        } else if (reply->type == REDIS_REPLY_INTEGER && reply->integer == 0) {
            /* the nginx worker is gone (reload, restart) */
            ragnx_log(RAGNX_LOG_INFO, "a reply found no subscriber");
        }

        freeReplyObject(reply);
    }

    return RAGNX_OK;
}


/* send what is still buffered, before the connection is closed */

void
ragnx_call_flush(ragnx_redis_t *r)
{
    if (r->ctx && r->pending && ragnx_call_replies(r) != RAGNX_OK) {
        ragnx_log(RAGNX_LOG_ERROR, "redis: %s", r->ctx->errstr);
    }

    r->pending = 0;
}
