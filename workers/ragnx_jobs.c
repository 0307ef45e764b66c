
/*
 * ragnx worker pool: the "jobs" command, queue inspection from the
 * command line.
 *
 *   ragnx-worker jobs              depths, and the last dead letters
 *   ragnx-worker jobs retry ID     a dead-lettered job back to the stream
 *   ragnx-worker jobs drop ID      a dead letter removed
 */


#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ragnx_worker.h"
#include "ragnx_keys.h"
#include "ragnx_lua_workers.h"
#include "ragnx_uuid.h"


static int ragnx_jobs_find_dead(ragnx_redis_t *r, const char *id,
    char *entry, size_t size, char **payload);


static int
ragnx_jobs_find_dead(ragnx_redis_t *r, const char *id, char *entry,
    size_t size, char **payload)
{
    size_t       i, j;
    redisReply  *reply, *e, *f;
    int          found;

    reply = ragnx_redis_command(r, "XREVRANGE %s + - COUNT 100000",
                                RAGNX_KEY_DEAD);
    if (reply == NULL || reply->type != REDIS_REPLY_ARRAY) {
        if (reply) {
            freeReplyObject(reply);
        }

        return RAGNX_ERROR;
    }

    found = 0;

    for (i = 0; i < reply->elements && !found; i++) {
        e = reply->element[i];
        f = e->element[1];

        for (j = 0; j + 1 < f->elements; j += 2) {
            if (strcmp(f->element[j]->str, "id") == 0
                && strcmp(f->element[j + 1]->str, id) == 0)
            {
                found = 1;
                snprintf(entry, size, "%s", e->element[0]->str);
            }
        }

        for (j = 0; found && payload && j + 1 < f->elements; j += 2) {
            if (strcmp(f->element[j]->str, "job") == 0) {
                *payload = strdup(f->element[j + 1]->str);
            }
        }
    }

    freeReplyObject(reply);

    return found ? RAGNX_OK : RAGNX_DECLINED;
}


int
ragnx_jobs_cli(int argc, char **argv)
{
    int             rc;
    char            entry[64], key[128], now[32], *payload;
    size_t          i, j;
    const char     *id, *err;
    redisReply     *reply, *e, *f;
    ragnx_redis_t   r;
    long long       n[5];
    const char     *cmds[] = { "XLEN " RAGNX_KEY_JOBS,
                               "XPENDING " RAGNX_KEY_JOBS " " RAGNX_GROUP,
                               "ZCARD " RAGNX_KEY_DELAYED,
                               "XLEN " RAGNX_KEY_DEAD,
                               "XLEN " RAGNX_KEY_RECORDS };

    memset(&r, 0, sizeof(ragnx_redis_t));

    if (ragnx_redis_connect(&r) != RAGNX_OK) {
        return 1;
    }

    if (argc >= 2 && (strcmp(argv[0], "retry") == 0
                      || strcmp(argv[0], "drop") == 0))
    {
        if (!ragnx_uuid_valid(argv[1], strlen(argv[1]))) {
            fprintf(stderr, "ragnx-worker: \"%s\" is not a job id\n",
                    argv[1]);
            ragnx_redis_close(&r);
            return 1;
        }

        payload = NULL;
        rc = ragnx_jobs_find_dead(&r, argv[1], entry, sizeof(entry),
                                  &payload);
        if (rc != RAGNX_OK) {
            fprintf(stderr, "ragnx-worker: job %s is not dead-lettered\n",
                    argv[1]);
            free(payload);
            ragnx_redis_close(&r);
            return 1;
        }

        snprintf(key, sizeof(key), RAGNX_KEY_JOB "%s", argv[1]);
        snprintf(now, sizeof(now), "%lld", ragnx_now_ms());

        if (argv[0][0] == 'r') {
            /* workers/lua/requeue.lua: the entry back to its lane */
            reply = ragnx_redis_command(&r, "EVAL %s 4 %s %s %s %s %s %s "
                                        "%s %ld", RAGNX_LUA_REQUEUE, key,
                                        RAGNX_KEY_JOBS, RAGNX_KEY_DEAD,
                                        RAGNX_KEY_RECORDS, entry, argv[1],
                                        now, ragnx_conf->job_retention);
        } else {
            reply = ragnx_redis_command(&r, "XDEL %s %s", RAGNX_KEY_DEAD,
                                        entry);
        }

        free(payload);
        rc = ragnx_reply_ok(&r, reply, argv[0]);
        ragnx_redis_close(&r);

        if (rc == RAGNX_OK) {
            printf("%s %s\n", argv[0][0] == 'r' ? "requeued" : "dropped",
                   argv[1]);
        }

        return rc == RAGNX_OK ? 0 : 1;
    }

    if (argc > 0) {
        fprintf(stderr, "usage: ragnx-worker jobs [retry ID | drop ID]\n");
        ragnx_redis_close(&r);
        return 2;
    }

    for (i = 0; i < 5; i++) {
        reply = ragnx_redis_command(&r, cmds[i]);
        if (reply == NULL) {
            return 1;
        }

        n[i] = 0;

        if (reply->type == REDIS_REPLY_INTEGER) {
            n[i] = reply->integer;

        } else if (reply->type == REDIS_REPLY_ARRAY && reply->elements > 0
                   && reply->element[0]->type == REDIS_REPLY_INTEGER)
        {
            n[i] = reply->element[0]->integer;
        }

        freeReplyObject(reply);
    }

    /* records: exchanges answered from the cache, not yet written */
    printf("queued %lld\npending %lld\ndelayed %lld\ndead %lld\n"
           "records %lld\n", n[0] - n[1], n[1], n[2], n[3], n[4]);

    reply = ragnx_redis_command(&r, "XREVRANGE %s + - COUNT 20",
                                RAGNX_KEY_DEAD);

    for (i = 0; reply && reply->type == REDIS_REPLY_ARRAY
                && i < reply->elements; i++)
    {
        e = reply->element[i];
        f = e->element[1];
        id = "-";
        err = "-";

        for (j = 0; j + 1 < f->elements; j += 2) {
            if (strcmp(f->element[j]->str, "id") == 0) {
                id = f->element[j + 1]->str;

            } else if (strcmp(f->element[j]->str, "error") == 0) {
                err = f->element[j + 1]->str;
            }
        }

        printf("dead %s %s\n", id, err);
    }

    if (reply) {
        freeReplyObject(reply);
    }

    ragnx_redis_close(&r);
    return 0;
}
