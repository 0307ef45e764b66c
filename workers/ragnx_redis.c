
/*
 * ragnx worker pool: its Redis client.  A blocking hiredis connection
 * per thread: connect (a unix socket or TCP, then AUTH as redis_user),
 * commands that reconnect on the next call after a failure, scripts run
 * by EVALSHA and loaded on NOSCRIPT, and the shape of an XREADGROUP
 * reply.  The queue (ragnx_queue.c), the calls (ragnx_calls.c) and the
 * CLI use it.
 */


#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <openssl/sha.h>

#include "ragnx_worker.h"


/* the SHA1 of every script: once, before any thread runs */

void
ragnx_redis_scripts_init(ragnx_script_t **scripts)
{
    int              i, k;
    unsigned char    md[SHA_DIGEST_LENGTH];
    ragnx_script_t  *sc;

    for (k = 0; scripts[k]; k++) {
        sc = scripts[k];
        SHA1((const unsigned char *) sc->text, strlen(sc->text), md);

        for (i = 0; i < SHA_DIGEST_LENGTH; i++) {
            sprintf(sc->sha + i * 2, "%02x", md[i]);
        }
    }
}


/*
 * EVALSHA <sha> <fmt...>; on NOSCRIPT (a new or restarted Redis), load
 * the script and send the same command again.
 */

redisReply *
ragnx_redis_eval(ragnx_redis_t *r, ragnx_script_t *sc, const char *fmt, ...)
{
    char         cmd[512];
    va_list      args, again;
    redisReply  *reply;

    if (r->ctx == NULL && ragnx_redis_connect(r) != RAGNX_OK) {
        return NULL;
    }

    snprintf(cmd, sizeof(cmd), "EVALSHA %s %s", sc->sha, fmt);

    va_start(args, fmt);
    va_copy(again, args);

    reply = redisvCommand(r->ctx, cmd, args);

    if (reply && reply->type == REDIS_REPLY_ERROR
        && strncmp(reply->str, "NOSCRIPT", 8) == 0)
    {
        freeReplyObject(reply);
        reply = redisCommand(r->ctx, "SCRIPT LOAD %s", sc->text);

        if (reply) {
            freeReplyObject(reply);
            reply = redisvCommand(r->ctx, cmd, again);
        }
    }

    va_end(again);
    va_end(args);

    if (reply == NULL) {
        ragnx_log_error(RAGNX_LOG_ERROR, RAGNX_ERR_REDIS,
                        "redis: %s", r->ctx->errstr);
        ragnx_redis_close(r);
    }

    return reply;
}


int
ragnx_redis_connect(ragnx_redis_t *r)
{
    char             port[24];
    redisReply      *reply;
    struct timeval   tv;

    if (r->ctx) {
        return RAGNX_OK;
    }

    tv.tv_sec = ragnx_conf->redis_timeout / 1000;
    tv.tv_usec = (ragnx_conf->redis_timeout % 1000) * 1000;

    snprintf(port, sizeof(port), ":%ld", ragnx_conf->redis_port);

    /* a path is a unix socket, as libpq's host is: cheaper on one host */
    if (ragnx_conf->redis_host[0] == '/') {
        r->ctx = redisConnectUnixWithTimeout(ragnx_conf->redis_host, tv);

    } else {
        r->ctx = redisConnectWithTimeout(ragnx_conf->redis_host,
                                         (int) ragnx_conf->redis_port, tv);
    }

    if (r->ctx == NULL || r->ctx->err) {
        ragnx_log_error(RAGNX_LOG_ERROR, RAGNX_ERR_REDIS,
                        "redis connect to %s%s%s failed: %s",
                        ragnx_conf->redis_host[0] == '/' ? "unix:" : "",
                        ragnx_conf->redis_host,
                        ragnx_conf->redis_host[0] == '/' ? "" : port,
                        r->ctx ? r->ctx->errstr : "out of memory");
        ragnx_redis_close(r);
        return RAGNX_ERROR;
    }

    /* commands block up to 1 s (XREADGROUP BLOCK): allow for that */
    tv.tv_sec += 2;
    redisSetTimeout(r->ctx, tv);

    /* every connection, new or reconnected, authenticates first */

    if (ragnx_conf->redis_password == NULL) {
        return RAGNX_OK;
    }

    if (ragnx_conf->redis_user) {
        reply = redisCommand(r->ctx, "AUTH %s %s", ragnx_conf->redis_user,
                             ragnx_conf->redis_password);
    } else {
        reply = redisCommand(r->ctx, "AUTH %s", ragnx_conf->redis_password);
    }

    if (reply == NULL) {
        ragnx_log_error(RAGNX_LOG_ERROR, RAGNX_ERR_REDIS,
                        "redis AUTH: %s", r->ctx->errstr);
        ragnx_redis_close(r);
        return RAGNX_ERROR;
    }

    if (reply->type == REDIS_REPLY_ERROR) {
        /* Redis says why (WRONGPASS, NOPERM), never the password */
        ragnx_log_error(RAGNX_LOG_ERROR, RAGNX_ERR_REDIS,
                        "redis AUTH as user \"%s\" refused: %s "
                        "(check redis_user and redis_password_file)",
                        ragnx_conf->redis_user ? ragnx_conf->redis_user
                                               : "default", reply->str);
        freeReplyObject(reply);
        ragnx_redis_close(r);
        return RAGNX_DECLINED;
    }

    freeReplyObject(reply);

    return RAGNX_OK;
}


/*
 * At start and before a reload takes a new configuration: credentials
 * Redis refuses are a configuration error (RAGNX_DECLINED, logged), not a
 * reason to retry forever.  A Redis that cannot be reached is not: the
 * workers retry, as they do when it goes away later.
 */

int
ragnx_redis_check(void)
{
    int            rc;
    ragnx_redis_t  r;

    memset(&r, 0, sizeof(ragnx_redis_t));

    rc = ragnx_redis_connect(&r);
    ragnx_redis_close(&r);

    if (rc == RAGNX_ERROR) {
        ragnx_log_error(RAGNX_LOG_WARN, RAGNX_ERR_REDIS,
                        "redis not reachable yet: the workers "
                        "keep trying");
    }

    return rc == RAGNX_DECLINED ? RAGNX_DECLINED : RAGNX_OK;
}


void
ragnx_redis_close(ragnx_redis_t *r)
{
    if (r->ctx) {
        redisFree(r->ctx);
        r->ctx = NULL;
    }

    r->pending = 0;
}


/* a reply, or NULL with the connection closed (reconnect next time) */

redisReply *
ragnx_redis_command(ragnx_redis_t *r, const char *fmt, ...)
{
    va_list      args;
    redisReply  *reply;

    if (r->ctx == NULL && ragnx_redis_connect(r) != RAGNX_OK) {
        return NULL;
    }

    va_start(args, fmt);
    reply = redisvCommand(r->ctx, fmt, args);
    va_end(args);

    if (reply == NULL) {
        ragnx_log_error(RAGNX_LOG_ERROR, RAGNX_ERR_REDIS,
                        "redis: %s", r->ctx->errstr);
        ragnx_redis_close(r);
    }

    return reply;
}


redisReply *
ragnx_redis_argv(ragnx_redis_t *r, int argc, const char **argv,
    const size_t *lens)
{
    redisReply  *reply;

    if (r->ctx == NULL && ragnx_redis_connect(r) != RAGNX_OK) {
        return NULL;
    }

    reply = redisCommandArgv(r->ctx, argc, argv, lens);

    if (reply == NULL) {
        ragnx_log_error(RAGNX_LOG_ERROR, RAGNX_ERR_REDIS,
                        "redis: %s", r->ctx->errstr);
        ragnx_redis_close(r);
    }

    return reply;
}


int
ragnx_reply_ok(ragnx_redis_t *r, redisReply *reply, const char *what)
{
    if (reply == NULL) {
        return RAGNX_ERROR;
    }

    if (reply->type == REDIS_REPLY_ERROR) {
        ragnx_log_error(RAGNX_LOG_ERROR, RAGNX_ERR_REDIS,
                        "redis %s: %s", what, reply->str);
        freeReplyObject(reply);
        return RAGNX_ERROR;
    }

    freeReplyObject(reply);
    return RAGNX_OK;
}


/*
 * The one entry of an XREADGROUP ... COUNT 1 reply, [id, [field, value,
 * ...]]: RAGNX_OK with *entry pointing into the reply (still the
 * caller's), RAGNX_AGAIN when none came (nil, or a shape not expected),
 * RAGNX_DECLINED when the group does not exist, RAGNX_ERROR for another
 * error reply (logged).
 */

int
ragnx_stream_entry(redisReply *reply, const char *stream, redisReply **entry)
{
    redisReply  *e;

    if (reply->type == REDIS_REPLY_ERROR) {
        if (strncmp(reply->str, "NOGROUP", 7) == 0) {
            return RAGNX_DECLINED;
        }

        ragnx_log_error(RAGNX_LOG_ERROR, RAGNX_ERR_REDIS,
                        "redis XREADGROUP %s: %s", stream,
                        reply->str);
        return RAGNX_ERROR;
    }

    /* [[stream, [[entry id, [field, value, ...]]]]] */

    if (reply->type != REDIS_REPLY_ARRAY || reply->elements != 1
        || reply->element[0]->type != REDIS_REPLY_ARRAY
        || reply->element[0]->elements != 2
        || reply->element[0]->element[1]->type != REDIS_REPLY_ARRAY
        || reply->element[0]->element[1]->elements != 1)
    {
        return RAGNX_AGAIN;
    }

    e = reply->element[0]->element[1]->element[0];

    if (e->type != REDIS_REPLY_ARRAY || e->elements != 2
        || e->element[0]->type != REDIS_REPLY_STRING
        || e->element[1]->type != REDIS_REPLY_ARRAY)
    {
        return RAGNX_AGAIN;
    }

    *entry = e;

    return RAGNX_OK;
}
