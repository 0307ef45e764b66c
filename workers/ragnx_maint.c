
/*
 * ragnx worker pool: the maintenance thread of a worker process
 * (heartbeats, the queue's due retries and dead workers' entries, idle
 * consumers: Redis only), the check thread (the readiness of the
 * database and the cache generation: PostgreSQL), and the table of the
 * entries its job threads hold, which the heartbeats renew.
 */


#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "ragnx_worker.h"
#include "ragnx_keys.h"


typedef struct {
    pthread_mutex_t   lock;
    char              entry[64];   /* the entry held, "" when idle */
    char              consumer[96];
} ragnx_slot_t;


static ragnx_slot_t    *ragnx_slots;
static volatile int     ragnx_ready;     /* schema checked, gen set */


/* the table of n job threads' entries */

int
ragnx_maint_init(int n)
{
    ragnx_slots = calloc(n, sizeof(ragnx_slot_t));

    return ragnx_slots ? RAGNX_OK : RAGNX_ERROR;
}


/* job thread i's slot, before the thread starts */

void
ragnx_maint_slot(int i, const char *consumer)
{
    pthread_mutex_init(&ragnx_slots[i].lock, NULL);
    memcpy(ragnx_slots[i].consumer, consumer,
           sizeof(ragnx_slots[i].consumer));
}


/* job thread i holds e from now on: its heartbeats begin */

void
ragnx_maint_hold(int i, const ragnx_entry_t *e)
{
    pthread_mutex_lock(&ragnx_slots[i].lock);
    memcpy(ragnx_slots[i].entry, e->entry, sizeof(e->entry));
    pthread_mutex_unlock(&ragnx_slots[i].lock);
}


/* job thread i holds no entry */

void
ragnx_maint_release(int i)
{
    pthread_mutex_lock(&ragnx_slots[i].lock);
    ragnx_slots[i].entry[0] = '\0';
    pthread_mutex_unlock(&ragnx_slots[i].lock);
}


/* whether the database was found migrated and the generation set */

int
ragnx_maint_ready(void)
{
    return __atomic_load_n(&ragnx_ready, __ATOMIC_ACQUIRE);
}


/* whether any job thread holds an entry: a draining process waits */

static int
ragnx_maint_holding(int n)
{
    int  i, held;

    held = 0;

    for (i = 0; i < n && !held; i++) {
        pthread_mutex_lock(&ragnx_slots[i].lock);
        held = ragnx_slots[i].entry[0] != '\0';
        pthread_mutex_unlock(&ragnx_slots[i].lock);
    }

    return held;
}


/*
 * Every 200 ms: due retries back to the stream and dead workers' entries
 * requeued; every visibility_timeout / 3: heartbeats, resetting the idle
 * time of the entries this process holds (so a long LLM call is never
 * taken for a dead worker); every minute: consumers idle for an hour with
 * nothing pending are removed from the group; every RAGNX_BEAT_PERIOD:
 * the process's heartbeat for /health, and every RAGNX_METRICS_PERIOD:
 * its figures (ragnx_metrics.c).  Only Redis: nothing here
 * waits for PostgreSQL (ragnx_check_thread does), so a stalled database
 * never stalls a heartbeat.
 *
 * Draining (SIGTERM, or a reload), the heartbeats go on, and nothing
 * else, for as long as a job thread holds an entry: its job runs until
 * its thread really stops, and the process exits only after that or at
 * drain_timeout, when the supervisor hands what it still held to the
 * living (ragnx_queue_handover()).  Until then nobody else may take it.
 */

void *
ragnx_maint_thread(void *data)
{
    int              i, n;
    char             entry[64], consumer[96];
    long long        now, beat, forget, publish, alive;
    redisReply      *reply;
    ragnx_thread_t  *t = data;

    /* the monotonic clock may start near 0: make the first turn do all */
    forget = ragnx_mono_ms();
    beat = forget - 86400000;
    publish = beat;
    alive = beat;
    n = (int) ragnx_conf->concurrency;

    while (!ragnx_quit || ragnx_maint_holding(n)) {
        now = ragnx_mono_ms();

        if (now - beat >= ragnx_conf->visibility_timeout / 3) {
            beat = now;

            for (i = 0; i < n; i++) {
                pthread_mutex_lock(&ragnx_slots[i].lock);
                memcpy(entry, ragnx_slots[i].entry, sizeof(entry));
                memcpy(consumer, ragnx_slots[i].consumer, sizeof(consumer));
                pthread_mutex_unlock(&ragnx_slots[i].lock);

                if (entry[0] == '\0') {
                    continue;
                }

                reply = ragnx_redis_command(&t->redis, "XCLAIM %s %s %s 0 %s "
                                            "JUSTID", RAGNX_KEY_JOBS,
                                            RAGNX_GROUP, consumer, entry);
                if (reply) {
                    freeReplyObject(reply);
                }
            }
        }

        if (!ragnx_quit) {
            if (now - forget >= 60000) {
                forget = now;
                ragnx_queue_forget(&t->redis, 3600000);
            }

            ragnx_queue_maintain(&t->redis);
        }

        if (now - alive >= RAGNX_BEAT_PERIOD) {
            alive = now;
            ragnx_metrics_beat(&t->redis);
        }

        if (now - publish >= RAGNX_METRICS_PERIOD) {
            publish = now;
            ragnx_metrics_publish(&t->redis, t->db);
        }

        ragnx_sleep_ms(RAGNX_MAINT_TURN);
    }

    ragnx_redis_close(&t->redis);

    return NULL;
}


/*
 * Every 5 s, in a thread of its own: the schema check and the cache
 * generation from the corpus version (gen.lua: written only when it
 * changes, and only while this model's pools hold it), in case Redis
 * lost it or an ingest could not set it.  Its connect and queries may
 * block as long as PostgreSQL stalls; only readiness and the generation
 * wait for them.
 */

void *
ragnx_check_thread(void *data)
{
    int              ready, how;
    char             err[256], cur[256];
    PGconn          *conn;
    long long        now, gen, v;
    ragnx_thread_t  *t = data;

    gen = ragnx_mono_ms() - 86400000;
    ready = 0;

    /* a pool started or reloaded claims the generation, once */
    how = ragnx_gen_claim ? RAGNX_GEN_CLAIM : RAGNX_GEN_REFRESH;

    while (!ragnx_quit) {
        now = ragnx_mono_ms();

        if (now - gen < RAGNX_CHECK_PERIOD) {
            ragnx_sleep_ms(RAGNX_MAINT_TURN);
            continue;
        }

        /*
         * Take an idle connection, not one job threads wait for; open
         * one more (under the bound) only a second late.  A connection
         * that could not be opened is tried again in 5 s.
         */
        conn = ragnx_db_get_idle(t->db,
                                 now - gen >= RAGNX_CHECK_PERIOD + 1000);

        if (conn || !ragnx_db_busy(t->db)) {
            gen = now;
        }

        /*
         * What /health says of PostgreSQL: no connection, and none open,
         * means it refused the one tried; all busy says nothing (and a
         * connection given back meanwhile must not read as a refusal).
         */
        if (conn == NULL && ragnx_db_open(t->db) == 0) {
            ragnx_metrics_pg(RAGNX_PG_DOWN);
        }

        if (conn && ragnx_db_check_schema(conn, err, sizeof(err))
                    != RAGNX_OK)
        {
            ragnx_log(RAGNX_LOG_ERROR, "%s", err);

            /* "postgres ...": no answer; else it answered, unmigrated */
            ragnx_metrics_pg(strncmp(err, "postgres ", 9) == 0
                             ? RAGNX_PG_DOWN : RAGNX_PG_OK);

        } else if (conn) {
            v = ragnx_db_corpus_version(conn);

            ragnx_metrics_pg(v >= 0 ? RAGNX_PG_OK : RAGNX_PG_DOWN);

            if (v >= 0 && ragnx_queue_setup(&t->redis) == RAGNX_OK
                && ragnx_call_setup(&t->redis) == RAGNX_OK
                && ragnx_queue_set_gen(&t->redis, v, how, cur, sizeof(cur))
                   == RAGNX_OK)
            {
                how = RAGNX_GEN_REFRESH;

                if (!ready) {
                    ragnx_log(RAGNX_LOG_INFO, "cache generation %s (model "
                              "%s, corpus version %lld)", cur,
                              ragnx_conf->llm_model, v);
                    ready = 1;
                    __atomic_store_n(&ragnx_ready, 1, __ATOMIC_RELEASE);
                }
            }
        }

        ragnx_db_put(t->db, conn, conn && PQstatus(conn) != CONNECTION_OK);

        if (conn == NULL) {
            ragnx_sleep_ms(RAGNX_MAINT_TURN);
        }
    }

    ragnx_redis_close(&t->redis);

    return NULL;
}
