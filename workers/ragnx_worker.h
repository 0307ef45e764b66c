
/*
 * ragnx worker pool: the types and prototypes shared by its files.
 *
 *   ragnx_main.c          command line, supervisor, worker processes,
 *                         job and call threads, signals
 *   ragnx_config.c        the settings table, config file, environment
 *   ragnx_log.c           logging, the clock
 *   ragnx_redis.c         the Redis client: connect, AUTH, commands, scripts
 *   ragnx_queue.c         the queue: consume, ack, retry, dead-letter,
 *                         reclaim
 *   ragnx_jobs.c          the "jobs" command: queue depths, dead letters
 *   ragnx_maint.c         the maintenance thread: heartbeats, the queue;
 *                         the check thread: readiness, the generation
 *   ragnx_work.c          one job: retrieval, LLM, persistence, completion
 *   ragnx_records.c       the records lane: exchanges answered from the
 *                         cache, written in batches
 *   ragnx_calls.c         synchronous calls from nginx
 *   ragnx_accounts.c      register, login, me: argon2id, token signing;
 *                         the helpers the calls answer with
 *   ragnx_chats.c         chats, messages, chat: history, paging, owner
 *   ragnx_db.c            PostgreSQL: the connection pool
 *   ragnx_db_pipeline.c   the job threads' requests, run in pipelines
 *   ragnx_migrate.c       the migrations and the schema check
 *   ragnx_store.c         the domain SQL: chats, history, retrieval
 *   ragnx_ingest.c        document ingestion (chunking, upsert by hash)
 *   ragnx_llm*.c          LLM providers behind one interface
 *
 * ragnx_db.h is private to the PostgreSQL files, ragnx_llm.h to the LLM
 * ones.
 */


#ifndef RAGNX_WORKER_H
#define RAGNX_WORKER_H


#include <stddef.h>
#include <signal.h>
#include <jansson.h>
#include <hiredis.h>
#include <libpq-fe.h>

#include "ragnx_job.h"


#define RAGNX_VERSION           "0.1.0"

#define RAGNX_OK                0
#define RAGNX_ERROR             -1
#define RAGNX_AGAIN             -2     /* transient: retry later */
#define RAGNX_DECLINED          -3     /* permanent: fail the job */
#define RAGNX_BUSY              -4     /* LLM calls paused: wait */
#define RAGNX_DENIED            -5     /* the LLM refused the key: 401, 403 */

/* the check thread's period, and the lease of the generation it renews */
#define RAGNX_CHECK_PERIOD      5000
#define RAGNX_GEN_LEASE         (3 * RAGNX_CHECK_PERIOD)

/* how ragnx_queue_set_gen() writes the generation (workers/lua/gen.lua) */
#define RAGNX_GEN_REFRESH       0      /* only when this model holds it */
#define RAGNX_GEN_CLAIM         1      /* a pool started or reloaded */
#define RAGNX_GEN_BUMP          2      /* an ingest: the version only */

/* the maintenance loop's turn, and the visibility timeout it can keep */
#define RAGNX_MAINT_TURN        200
#define RAGNX_VISIBILITY_MIN    (3 * RAGNX_MAINT_TURN + 2 * RAGNX_MAINT_TURN)


/* config: ragnx_config.c */

typedef enum {
    RAGNX_LLM_EXTRACTIVE = 0,
    RAGNX_LLM_ANTHROPIC,
    RAGNX_LLM_OPENAI
} ragnx_llm_kind_e;


typedef enum {
    RAGNX_JWT_HS256 = 0,
    RAGNX_JWT_RS256,
    RAGNX_JWT_ES256
} ragnx_jwt_alg_e;


typedef struct {
    long          workers;
    long          concurrency;
    char         *redis_host;
    long          redis_port;
    char         *redis_user;            /* ACL user, NULL: default */
    char         *redis_password;        /* secret: file or environment */
    char         *redis_password_file;
    long          redis_timeout;         /* ms */
    char         *database;              /* libpq conninfo */
    char         *database_password_file;
    char         *database_password;     /* secret, from the file */
    long          db_pool;               /* connections per host */
    long          db_timeout;            /* ms to wait for a connection */
    long          db_query_timeout;      /* ms: any wait for an answer */
    char         *llm_provider;
    long          llm_kind;
    char         *llm_base_url;
    char         *llm_model;
    char         *llm_api_key;           /* secret: file or environment */
    char         *llm_api_key_file;
    long          llm_timeout;           /* ms, whole transfer */
    long          llm_connect_timeout;   /* ms */
    long          llm_max_tokens;
    long          llm_stream;            /* ask for server-sent events */
    long          top_k;
    long          rank_candidates;
    long          history;
    long          chunk_size;
    long          max_attempts;
    long          retry_base;            /* ms */
    long          retry_max;             /* ms */
    long          visibility_timeout;    /* ms */
    long          job_retention;         /* s */
    long          cache_ttl;             /* s */
    long          dead_max;
    long          drain_timeout;         /* ms */
    long          rpc_concurrency;       /* call threads per process */
    long          record_concurrency;    /* record threads per process */
    long          record_batch;          /* records per read and write */
    long          hash_concurrency;      /* argon2id hashes at once */
    long          password_opslimit;
    long          password_memlimit;     /* KiB */
    long          jwt_alg;               /* RAGNX_JWT_* */
    char         *jwt_key_file;
    char         *rpc_key_file;
    int           rpc_key_set;
    unsigned char rpc_pk[32];            /* X25519: opens sealed calls */
    unsigned char rpc_sk[32];            /* secret */
    unsigned char *jwt_key;              /* secret: the file's bytes */
    size_t        jwt_key_len;
    long          jwt_ttl;               /* s */
    char         *jwt_issuer;
    char         *jwt_audience;
    char         *pid_file;
    char         *log_file;
    long          log_level;
    char         *config_file;           /* not a setting: where we read */
} ragnx_conf_t;


extern ragnx_conf_t  *ragnx_conf;


/*
 * RAGNX_CONF_KEYS: read and check the key files too (jwt_key_file,
 * rpc_key_file).  The pool and -t need them; migrate, ingest and jobs
 * sign no token and open no call, so they run where the keys are not
 * mounted (a migration job, an ingest host).
 */
#define RAGNX_CONF_KEYS  0x01

ragnx_conf_t *ragnx_conf_load(const char *path, unsigned flags, char *err,
    size_t errlen);
void ragnx_conf_free(ragnx_conf_t *conf);
void ragnx_conf_dump(const ragnx_conf_t *conf);


/* log: ragnx_log.c */

#define RAGNX_LOG_ERROR   0
#define RAGNX_LOG_WARN    1
#define RAGNX_LOG_INFO    2
#define RAGNX_LOG_DEBUG   3

/*
 * The classes of a failure a line names ("error"): a bounded set, so
 * that logs can be counted by them.
 */
typedef enum {
    RAGNX_ERR_NONE = 0,
    RAGNX_ERR_LLM_TIMEOUT,         /* no answer, or too slow, in time */
    RAGNX_ERR_LLM_NETWORK,         /* connect, TLS, connection reset */
    RAGNX_ERR_LLM_HTTP_429,
    RAGNX_ERR_LLM_HTTP_4XX,
    RAGNX_ERR_LLM_HTTP_5XX,
    RAGNX_ERR_LLM_BAD_RESPONSE,    /* a reply we cannot read */
    RAGNX_ERR_LLM_BREAKER,         /* not asked: the breaker is open */
    RAGNX_ERR_PG,
    RAGNX_ERR_REDIS,
    RAGNX_ERR_BAD_PAYLOAD,
    RAGNX_ERR_CHAT,                /* not the asker's, or gone */
    RAGNX_ERR_INTERNAL             /* out of memory and the like */
} ragnx_err_t;

/*
 * What a line says about a job besides its message.  Strings may be
 * NULL (left out); the stage timings and the tokens only when "timed"
 * and "tokens" are set.  Numbers are ms and token counts.
 */
typedef struct {
    const char   *job;
    const char   *call;             /* a call from nginx (ragnx_calls.c) */
    const char   *rid;
    const char   *chat;
    ragnx_err_t   error;
    long long     wait_ms;          /* created to picked up */
    long long     retrieve_ms;
    long long     llm_ms;
    long long     persist_ms;
    long          tokens_in;        /* < 0: not known, left out */
    long          tokens_out;
    unsigned      timed:1;
    unsigned      tokens:1;
} ragnx_log_fields_t;

int ragnx_log_open(const char *path);
int ragnx_log_reopen(void);
const char *ragnx_log_file(void);
void ragnx_log(int level, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
void ragnx_log_job(int level, const ragnx_job_t *job, ragnx_err_t error,
    const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
void ragnx_log_fields(int level, const ragnx_log_fields_t *f,
    const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
void ragnx_log_set_prefix(const char *prefix);
void ragnx_log_set_call(const char *id, const char *rid);

/* a failure of no job in particular, with its class */
#define ragnx_log_error(level, error, ...)                                   \
    ragnx_log_job(level, NULL, error, __VA_ARGS__)
const char *ragnx_err_name(ragnx_err_t error);


/* the clock: ragnx_log.c */

long long ragnx_now_ms(void);
long long ragnx_mono_ms(void);
void ragnx_cond_init(pthread_cond_t *cond);
void ragnx_deadline(struct timespec *ts, long ms);
void ragnx_sleep_ms(long ms);


/* PostgreSQL: the pool, ragnx_db.c */

typedef struct ragnx_db_pool_s  ragnx_db_pool_t;

ragnx_db_pool_t *ragnx_db_pool_create(const char *conninfo,
    const char *password, int size, long timeout_ms);
void ragnx_db_pool_destroy(ragnx_db_pool_t *pool);
PGconn *ragnx_db_get(ragnx_db_pool_t *pool);
PGconn *ragnx_db_get_within(ragnx_db_pool_t *pool, long timeout);
PGconn *ragnx_db_get_idle(ragnx_db_pool_t *pool, int open);
int ragnx_db_busy(ragnx_db_pool_t *pool);
int ragnx_db_open(ragnx_db_pool_t *pool);
void ragnx_db_put(ragnx_db_pool_t *pool, PGconn *conn, int broken);
PGconn *ragnx_db_connect(const char *conninfo, const char *password);
PGresult *ragnx_db_query(PGconn *conn, const char *name, const char *sql,
    int nparams, const char *const *params);
PGresult *ragnx_db_exec(PGconn *conn, const char *sql, int nparams,
    const char *const *params, const char *what);


/* the schema: ragnx_migrate.c */

int ragnx_db_migrate(PGconn *conn);
int ragnx_db_check_schema(PGconn *conn, char *err, size_t errlen);


/* the domain SQL: ragnx_store.c */

long long ragnx_db_corpus_version(PGconn *conn);


typedef struct {
    char         *path;
    char         *title;
    char         *heading;
    char         *body;
    double        rank;
    int           cover;                /* question terms it contains */
} ragnx_passage_t;


typedef struct {
    char         *role;
    char         *content;
} ragnx_turn_t;


typedef struct {
    char         *answer;
    json_t       *sources;              /* array of strings */
    long          input_tokens;         /* -1: not reported */
    long          output_tokens;
    const char   *model;
    int           contextual;           /* chat history went into it */
    int           truncated;            /* cut at llm_max_tokens */
} ragnx_answer_t;


int ragnx_store_chat(ragnx_db_pool_t *pool, const ragnx_job_t *job,
    int *created, ragnx_answer_t *found, char *err, size_t errlen);
void ragnx_store_history_free(ragnx_turn_t *turns, int n);
void ragnx_store_passages_free(ragnx_passage_t *p, int n);
int ragnx_store_read_ask(ragnx_db_pool_t *pool, const ragnx_job_t *job,
    int k, int candidates, int history, int *created, ragnx_answer_t *found,
    ragnx_passage_t **passages, int *np, ragnx_turn_t **turns, int *nh,
    char *err, size_t errlen);
int ragnx_store_exchange(ragnx_db_pool_t *pool, const ragnx_job_t *job,
    ragnx_answer_t *ans, char *err, size_t errlen);


/* LLM: ragnx_llm.c */

/*
 * The answer as it is written: each piece of text the provider sends, in
 * order, before the answer is complete (ragnx_work.c publishes them for
 * streaming clients).  The pieces make the answer exactly.
 */
typedef void (*ragnx_delta_pt)(void *data, const char *text, size_t len);

typedef struct {
    const ragnx_job_t      *job;
    const ragnx_passage_t  *passages;
    int                     npassages;
    const ragnx_turn_t     *history;
    int                     nhistory;
    ragnx_delta_pt          delta;      /* NULL: nobody listens */
    void                   *data;
} ragnx_prompt_t;


typedef struct ragnx_llm_s  ragnx_llm_t;     /* one per thread */

ragnx_llm_t *ragnx_llm_create(void);
void ragnx_llm_destroy(ragnx_llm_t *llm);

/*
 * RAGNX_OK with ans filled; RAGNX_AGAIN (transient, *retry_after_ms set
 * when the provider said how long to wait), RAGNX_DECLINED (permanent)
 * or RAGNX_DENIED (401, 403: the key, see ragnx_breaker.c) with a short
 * reason in err.
 */
int ragnx_llm_answer(ragnx_llm_t *llm, const ragnx_prompt_t *prompt,
    ragnx_answer_t *ans, long *retry_after_ms, char *err, size_t errlen);
ragnx_err_t ragnx_llm_error(const ragnx_llm_t *llm);
void ragnx_answer_free(ragnx_answer_t *ans);
json_t *ragnx_llm_sources(const ragnx_passage_t *p, int n);

/* providers */
int ragnx_llm_extractive(const ragnx_prompt_t *prompt, ragnx_answer_t *ans);
char *ragnx_llm_context(const ragnx_prompt_t *prompt);


/* Redis: ragnx_redis.c */

typedef struct {
    redisContext   *ctx;
    char            consumer[96];
    long long       backoff;
    int             pending;            /* replies owed (pipelined) */
} ragnx_redis_t;


/* a script run by EVALSHA, loaded on first use (NOSCRIPT) */

typedef struct {
    const char     *text;
    char            sha[41];
} ragnx_script_t;


int ragnx_redis_connect(ragnx_redis_t *r);
int ragnx_redis_check(void);
void ragnx_redis_close(ragnx_redis_t *r);
redisReply *ragnx_redis_command(ragnx_redis_t *r, const char *fmt, ...);
redisReply *ragnx_redis_argv(ragnx_redis_t *r, int argc, const char **argv,
    const size_t *lens);
void ragnx_redis_scripts_init(ragnx_script_t **scripts);
redisReply *ragnx_queue_delta(ragnx_redis_t *r, const char *id,
    const char *type, long attempt, const char *text, size_t len);
redisReply *ragnx_redis_eval(ragnx_redis_t *r, ragnx_script_t *sc,
    const char *fmt, ...);
int ragnx_reply_ok(ragnx_redis_t *r, redisReply *reply, const char *what);
int ragnx_stream_entry(redisReply *reply, const char *stream,
    redisReply **entry);


/* the queue: ragnx_queue.c; its CLI: ragnx_jobs.c */

typedef struct {
    char           entry[64];           /* stream entry id */
    char           id[40];              /* job id field */
    char          *payload;             /* job field */
    size_t         len;
    char          *gen;                 /* gen field */
    int            started;             /* started by the script that */
    long           attempts;            /* read it: its attempt number */
} ragnx_entry_t;


void ragnx_queue_init(void);
int ragnx_queue_setup(ragnx_redis_t *r);
int ragnx_queue_group(ragnx_redis_t *r, const char *stream);
int ragnx_queue_set_gen(ragnx_redis_t *r, long long version, int how,
    char *gen, size_t len);
int ragnx_queue_read(ragnx_redis_t *r, ragnx_entry_t *e, int block_ms);
void ragnx_entry_free(ragnx_entry_t *e);
int ragnx_queue_release(ragnx_redis_t *r, const ragnx_entry_t *e);
int ragnx_queue_ack(ragnx_redis_t *r, const ragnx_entry_t *e);
int ragnx_queue_start(ragnx_redis_t *r, const ragnx_entry_t *e,
    long *attempts);
int ragnx_queue_complete(ragnx_redis_t *r, const ragnx_entry_t *e,
    const ragnx_job_t *job, const ragnx_answer_t *ans, ragnx_entry_t *next);
int ragnx_queue_retry(ragnx_redis_t *r, const ragnx_entry_t *e,
    long long delay_ms, const char *error, const char *held, int undo);
int ragnx_queue_fail(ragnx_redis_t *r, const ragnx_entry_t *e,
    const ragnx_job_t *job, const char *error, int shared);
int ragnx_queue_maintain(ragnx_redis_t *r);
int ragnx_queue_forget(ragnx_redis_t *r, long idle_ms);
int ragnx_queue_handover(ragnx_redis_t *r, const char *prefix);
int ragnx_jobs_cli(int argc, char **argv);


/* one job: ragnx_work.c */

typedef struct {
    int               index;
    ragnx_redis_t     redis;
    ragnx_llm_t      *llm;
    ragnx_db_pool_t  *db;
} ragnx_thread_t;

void ragnx_work(ragnx_thread_t *t, ragnx_entry_t *e, ragnx_entry_t *next);

/* the LLM circuit breaker: ragnx_breaker.c */
int ragnx_breaker_enter(int *probe, long *wait_ms, const char **reason);
int ragnx_breaker_paused(long *wait_ms, const char **reason);
void ragnx_breaker_leave(ragnx_redis_t *r, int probe, int rc,
    const char *err, long *wait_ms);

/* the records lane: ragnx_records.c */
void *ragnx_record_thread(void *data);

/* for the reading threads: ragnx_main.c */
void ragnx_consumer_prefix(char *buf, size_t len, long pid);
int ragnx_may_read(long *backoff, int rc);
void ragnx_thread_exit(ragnx_thread_t *t);


/* the maintenance thread and the heartbeats: ragnx_maint.c */

int ragnx_maint_init(int n);
void ragnx_maint_slot(int i, const char *consumer);
void ragnx_maint_hold(int i, const ragnx_entry_t *e);
void ragnx_maint_release(int i);
int ragnx_maint_ready(void);
void *ragnx_maint_thread(void *data);
void *ragnx_check_thread(void *data);


/* the process's figures, published to Redis: ragnx_metrics.c */

#define RAGNX_METRICS_PERIOD        2000    /* ms; the hash lives 3 */
#define RAGNX_BEAT_PERIOD           1000    /* ms: the heartbeat, /health */

#define RAGNX_PG_UNKNOWN            0       /* not checked yet */
#define RAGNX_PG_OK                 1
#define RAGNX_PG_DOWN               2

#define RAGNX_METRICS_COMPLETED     0
#define RAGNX_METRICS_RETRIED       1
#define RAGNX_METRICS_FAILED        2       /* dead-lettered */
#define RAGNX_METRICS_JOB_OUTCOMES  3

#define RAGNX_METRICS_QUEUE_WAIT    0
#define RAGNX_METRICS_RETRIEVAL     1
#define RAGNX_METRICS_LLM           2
#define RAGNX_METRICS_PERSIST       3
#define RAGNX_METRICS_STAGES        4

#define RAGNX_METRICS_LLM_ERROR     4
#define RAGNX_METRICS_LLM_CLASSES   5

void ragnx_metrics_init(void);
long long ragnx_metrics_us(void);
void ragnx_metrics_job(int outcome);
void ragnx_metrics_stage(int stage, long long start);
void ragnx_metrics_wait(long long created);
void ragnx_metrics_llm(long status);
void ragnx_metrics_tokens(long in, long out);
void ragnx_metrics_records(int n);
void ragnx_metrics_publish(ragnx_redis_t *redis, ragnx_db_pool_t *db);
void ragnx_metrics_leave(void);
void ragnx_metrics_beat(ragnx_redis_t *redis);
void ragnx_metrics_pg(int state);


/* calls from nginx (shared/ragnx_rpc.h): ragnx_calls.c */

typedef struct {
    char              id[40];
    int               method;           /* RAGNX_RPC_* */
    char              reply[256];       /* the channel to PUBLISH to */
    long long         deadline;         /* ms since the epoch */
    char              sub[256];
    char              rid[RAGNX_RID_MAX + 1];   /* request id, or "" */
    json_t           *params;
    char             *raw;              /* the params field as sent */
    size_t            raw_len;
    int               sealed;           /* the reply is sealed with key */
    int               unopened;         /* sealed, and this pool cannot */
    unsigned char     key[32];
} ragnx_call_t;

int ragnx_call_setup(ragnx_redis_t *r);
int ragnx_call_read(ragnx_redis_t *r, ragnx_call_t *c, int block_ms);
void ragnx_call_serve(ragnx_thread_t *t, ragnx_call_t *c);
void ragnx_call_reject(ragnx_redis_t *r, const ragnx_call_t *c);
void ragnx_call_free(ragnx_call_t *c);
void ragnx_call_flush(ragnx_redis_t *r);
void ragnx_call_append(ragnx_redis_t *r, const char *fmt, ...);

/* a status and a JSON body (malloc'ed), or 0: nobody waits, no reply */
typedef int (*ragnx_call_pt)(ragnx_thread_t *t, const ragnx_call_t *c,
    char **body);


/* accounts: ragnx_accounts.c */

/* timestamps as the API shows them: ISO 8601, UTC, milliseconds */
#define RAGNX_TS(col)                                                         \
    "to_char(" col " AT TIME ZONE 'UTC', "                                    \
    "'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"')"

int ragnx_accounts_init(void);
int ragnx_account_register(ragnx_thread_t *t, const ragnx_call_t *c,
    char **body);
int ragnx_account_login(ragnx_thread_t *t, const ragnx_call_t *c,
    char **body);
int ragnx_account_me(ragnx_thread_t *t, const ragnx_call_t *c, char **body);

/* what the calls of ragnx_accounts.c and ragnx_chats.c answer with */
const char *ragnx_acc_string(const ragnx_call_t *c, const char *name,
    size_t *len);
int ragnx_acc_db(ragnx_thread_t *t, const ragnx_call_t *c, PGconn **conn,
    char **body);
int ragnx_acc_failed(ragnx_thread_t *t, PGconn *conn, PGresult *res,
    const char *what, char **body);
int ragnx_acc_error(int status, const char *msg, char **body);
int ragnx_acc_invalid(const char *field, const char *msg, char **body);
char *ragnx_acc_dump(json_t *v);


/* chat history: ragnx_chats.c */

int ragnx_account_chats(ragnx_thread_t *t, const ragnx_call_t *c,
    char **body);
int ragnx_account_messages(ragnx_thread_t *t, const ragnx_call_t *c,
    char **body);
int ragnx_account_chat(ragnx_thread_t *t, const ragnx_call_t *c,
    char **body);


/* ingestion: ragnx_ingest.c */

int ragnx_ingest(int argc, char **argv);


/* process state, set by signal handlers, read by the loops: ragnx_main.c */

extern volatile sig_atomic_t  ragnx_quit;       /* drain */
extern volatile sig_atomic_t  ragnx_reload;
extern int                    ragnx_gen_claim;  /* started, not restarted */


#endif /* RAGNX_WORKER_H */
