
/*
 * ragnx ask: POST /api/ask (cache lookup, answered at once on a hit,
 * single-flight enqueue on a miss) and GET /api/ask/{jobId} (job status),
 * both through the non-blocking Redis pool.
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ngx_http_ragnx.h"
#include "ngx_http_ragnx_metrics.h"
#include "ngx_http_ragnx_redis.h"
#include "ngx_http_ragnx_rpc.h"
#include "ragnx_job.h"
#include "ragnx_keys.h"
#include "ragnx_lua_module.h"
#include "ragnx_query.h"
#include "ragnx_rpc.h"
#include "ragnx_uuid.h"


#define NGX_HTTP_RAGNX_ASK_SUBMIT   1
#define NGX_HTTP_RAGNX_ASK_STATUS   2
#define NGX_HTTP_RAGNX_ASK_EVENTS   3

/* the last event of a stream that cannot go on (Redis away) */
#define NGX_HTTP_RAGNX_ASK_EVENTS_GONE                                       \
    "event: error\ndata: {\"error\":\"queue unavailable\"}\n\n"

/* entries of a job's events stream read at a time */
#define NGX_HTTP_RAGNX_ASK_EVENTS_COUNT  "256"
/* how long a worker's registration as a job's listener lasts, in s */
#define NGX_HTTP_RAGNX_ASK_LISTEN_KEEP   "3600"
#define NGX_HTTP_RAGNX_ASK_LISTEN_MS     3600000
#define NGX_HTTP_RAGNX_ASK_EVENTS_N      256

#define NGX_HTTP_RAGNX_ASK_HIT      "{\"source\":\"cache\",\"chatId\":\""
#define NGX_HTTP_RAGNX_ASK_QUEUED                                            \
    "{\"jobId\":\"%V\",\"status\":\"queued\",\"chatId\":\"%V"


typedef struct {
    ngx_uint_t                    type;
    ngx_http_complex_value_t     *id;
    ngx_uint_t                    queue_max;
    ngx_uint_t                    record_max;
    time_t                        job_ttl;
    ngx_uint_t                    retry_after;
    ngx_msec_t                    ping;      /* an idle stream's comment */
    ngx_http_ragnx_redis_srv_t   *queue;
    ngx_http_ragnx_redis_srv_t   *cache;
} ngx_http_ragnx_ask_loc_conf_t;


/*
 * Per worker: the cache generation, refreshed every
 * ragnx_ask_gen_refresh, and the records stream's length, read before
 * every likely hit.  With a fresh generation a question that is
 * likely to hit is one plain GET of its cache key, and a hit's
 * chat-history record one XADD, instead of a script call; a question that
 * is likely to miss goes straight to the script (mode "ask"), so a miss
 * is one round trip, not a GET and then the script.  "Likely" is what
 * most of this worker's recent questions did.  A re-ingest or model
 * switch is seen within one refresh interval.
 */
typedef struct {
    ngx_flag_t                    used;
    ngx_msec_t                    gen_refresh;
    ngx_http_ragnx_redis_srv_t   *queue;
    ngx_http_ragnx_redis_srv_t   *cache;
    ngx_http_ragnx_redis_sub_t   *wake;     /* this worker's wake channel */
} ngx_http_ragnx_ask_main_conf_t;


typedef struct {
    u_char                        gen[128];
    size_t                        gen_len;
    ngx_msec_t                    gen_updated;
    ngx_uint_t                    gen_known;
    ngx_uint_t                    records_len;   /* XLEN, + sent since */
    ngx_uint_t                    refused;       /* hits, not logged yet */
    ngx_msec_t                    refused_logged;
    ngx_uint_t                    misses;
    ngx_event_t                   timer;
} ngx_http_ragnx_ask_worker_t;


/* POST /api/ask */
typedef struct {
    ngx_http_ragnx_redis_wait_t   wait;
    ngx_uint_t                    step;
    ngx_str_t                     payload;
    ngx_str_t                     digest;
    ngx_str_t                     job_id;
    ngx_str_t                     chat_id;
    ngx_str_t                     owner;
    ngx_str_t                     outcome;   /* hit, queued, follower... */
    ngx_str_t                     cached;
    ngx_str_t                     gen;
    unsigned                      chat:1;      /* asked in an existing chat */
    unsigned                      verified:1;  /* the pool said it is ours */
} ngx_http_ragnx_ask_ctx_t;


/*
 * GET /api/ask/{jobId}: the job hash fields it answers with.  With
 * ?wait=N (long-poll) the request waits, between its reads, in the
 * per-worker table of waiters under the job's id (ngx_http_ragnx_ask_
 * waiting), with "timer" running: a message on the worker's wake channel
 * (the job ended) or the timer takes it out of the table and posts
 * "event", which reads the job again; a request pool cleanup takes it out
 * (and stops both) when the client goes away first.  While it waits, the
 * request's reference is the one its last read took.
 */
typedef struct {
    ngx_str_node_t                node;      /* first: key is the job id */
    ngx_event_t                   event;     /* posted: read again */
    unsigned                      linked:1;  /* in the table */
    unsigned                      reading:1; /* a read in flight */
    unsigned                      woken:1;   /* woken: read again */
} ngx_http_ragnx_ask_waiter_t;


typedef struct {
    ngx_http_ragnx_ask_waiter_t   w;         /* first: in the table */
    ngx_http_ragnx_redis_wait_t   wait;
    ngx_str_t                     owner;     /* the caller */
    ngx_str_t                     status;
    ngx_str_t                     job_owner;
    ngx_str_t                     job_chat;
    ngx_str_t                     answer;
    ngx_str_t                     sources;
    ngx_str_t                     error;
    ngx_str_t                     truncated;
    ngx_uint_t                    found;
    ngx_http_request_t           *request;
    ngx_http_ragnx_ask_loc_conf_t  *alcf;
    ngx_event_t                   timer;     /* ?wait=N runs out */
    u_char                        id[RAGNX_UUID_LEN];
    unsigned                      long_poll:1;
    unsigned                      expired:1; /* N seconds passed */
} ngx_http_ragnx_ask_status_ctx_t;


/*
 * GET /api/ask/{jobId}/events: the job's answer as server-sent events,
 * from the start or after Last-Event-ID, as it is written.  Between its
 * reads the request waits in the same table as a long-poll, under the id
 * of the job whose events it reads (a follower's leader); "ping" keeps
 * an idle stream open through proxies.
 */
typedef struct ngx_http_ragnx_ask_fetch_s  ngx_http_ragnx_ask_fetch_t;

typedef struct {
    ngx_http_ragnx_ask_waiter_t   w;         /* first: in the table */
    ngx_http_ragnx_redis_wait_t   wait;
    ngx_http_request_t           *request;
    ngx_http_ragnx_ask_loc_conf_t  *alcf;
    ngx_str_t                     owner;     /* the caller */
    ngx_event_t                   ping;
    ngx_http_ragnx_ask_fetch_t   *fetch;     /* the shared read it waits on */
    ngx_queue_t                   queue;     /* in that read's streams */
    ngx_uint_t                    epoch;     /* of its last registration */
    ngx_msec_t                    registered;   /* and when */
    ngx_chain_t                  *out;       /* the last read, formatted */
    ngx_uint_t                    n;         /* its entries */
    size_t                        last_len;
    u_char                        last[48];  /* the last entry id sent */
    u_char                        id[RAGNX_UUID_LEN];    /* the job asked */
    u_char                        job[RAGNX_UUID_LEN];   /* whose events */
    unsigned                      found:1;
    unsigned                      started:1; /* headers sent */
    unsigned                      ended:1;   /* done or error sent */
    unsigned                      fetched:1; /* a shared read is in */
    unsigned                      linked_once:1;
} ngx_http_ragnx_ask_events_ctx_t;


/*
 * A read of a job's events shared by the streams of this worker that
 * wait for them after the same entry: woken by a piece, they read it
 * with one XRANGE, not one script each (the script checked the owner
 * and registered the worker's channel at the stream's first read).  On
 * the heap, keyed by job and entry id; freed when its reply is in.  A
 * stream that goes away meanwhile leaves its queue.
 */
struct ngx_http_ragnx_ask_fetch_s {
    ngx_str_node_t                node;      /* first: job and entry id */
    ngx_queue_t                   streams;
    u_char                        key[RAGNX_UUID_LEN + 48];
};


/*
 * The paths a question takes; what each costs Redis, and why each stays,
 * is the table "The modes" in docs/ARCHITECTURE.md.
 */
#define NGX_HTTP_RAGNX_ASK_ALL      0   /* lookup + enqueue, one server */
#define NGX_HTTP_RAGNX_ASK_LOOKUP   1   /* separate cache server: lookup */
#define NGX_HTTP_RAGNX_ASK_ENQUEUE  2   /* ... then enqueue on the queue */
#define NGX_HTTP_RAGNX_ASK_ASK      3   /* "all" with the worker's generation */
#define NGX_HTTP_RAGNX_ASK_GET      4   /* GET with the worker's generation */
#define NGX_HTTP_RAGNX_ASK_CHAT     5   /* in an existing chat: enqueue only */

/* recent misses in 1/1024ths, a moving average over about 8 questions */
#define NGX_HTTP_RAGNX_ASK_MISS_ONE   1024


static ngx_int_t ngx_http_ragnx_ask_submit(ngx_http_request_t *r,
    ngx_http_ragnx_ask_loc_conf_t *alcf);
static ngx_int_t ngx_http_ragnx_ask_send_script(ngx_http_request_t *r,
    ngx_http_ragnx_ask_ctx_t *ctx, ngx_http_ragnx_ask_loc_conf_t *alcf);
static void ngx_http_ragnx_ask_script_reply(ngx_http_request_t *r,
    redisReply *reply, ngx_int_t rc);
static void ngx_http_ragnx_ask_script_resume(ngx_http_request_t *r);
static ngx_int_t ngx_http_ragnx_ask_send_get(ngx_http_request_t *r,
    ngx_http_ragnx_ask_ctx_t *ctx, ngx_http_ragnx_ask_loc_conf_t *alcf);
static void ngx_http_ragnx_ask_get_reply(ngx_http_request_t *r,
    redisReply *reply, ngx_int_t rc);
static void ngx_http_ragnx_ask_learn(ngx_uint_t miss);
static void ngx_http_ragnx_ask_record(ngx_http_request_t *r,
    ngx_http_ragnx_ask_ctx_t *ctx, ngx_http_ragnx_ask_loc_conf_t *alcf);
static void ngx_http_ragnx_ask_record_done(void *data, redisReply *reply);
static void ngx_http_ragnx_ask_refused(ngx_http_request_t *r,
    ngx_http_ragnx_ask_loc_conf_t *alcf);
static ngx_int_t ngx_http_ragnx_ask_whose_chat(ngx_http_request_t *r,
    ngx_http_ragnx_ask_ctx_t *ctx, ngx_http_ragnx_ask_loc_conf_t *alcf);
static ngx_int_t ngx_http_ragnx_ask_chat_checked(ngx_http_request_t *r,
    ngx_uint_t status, ngx_str_t *body);
static void ngx_http_ragnx_ask_refresh(ngx_event_t *ev);
static void ngx_http_ragnx_ask_gen_done(void *data, redisReply *reply);
static void ngx_http_ragnx_ask_xlen_done(void *data, redisReply *reply);
static ngx_int_t ngx_http_ragnx_ask_answer(ngx_http_request_t *r,
    ngx_http_ragnx_ask_ctx_t *ctx, ngx_http_ragnx_ask_loc_conf_t *alcf);
static ngx_int_t ngx_http_ragnx_ask_path_id(ngx_http_request_t *r,
    ngx_http_ragnx_ask_loc_conf_t *alcf, ngx_uint_t skip, ngx_str_t *id);
static ngx_int_t ngx_http_ragnx_ask_status(ngx_http_request_t *r,
    ngx_http_ragnx_ask_loc_conf_t *alcf);
static void ngx_http_ragnx_ask_status_reply(ngx_http_request_t *r,
    redisReply *reply, ngx_int_t rc);
static void ngx_http_ragnx_ask_status_resume(ngx_http_request_t *r);
static ngx_int_t ngx_http_ragnx_ask_status_read(ngx_http_request_t *r,
    ngx_http_ragnx_ask_status_ctx_t *ctx);
static void ngx_http_ragnx_ask_woken(ngx_str_t *msg, void *data);
static void ngx_http_ragnx_ask_wake(ngx_http_ragnx_ask_waiter_t *w);
static ngx_int_t ngx_http_ragnx_ask_events(ngx_http_request_t *r,
    ngx_http_ragnx_ask_loc_conf_t *alcf);
static ngx_int_t ngx_http_ragnx_ask_events_read(ngx_http_request_t *r,
    ngx_http_ragnx_ask_events_ctx_t *ctx);
static void ngx_http_ragnx_ask_events_reply(ngx_http_request_t *r,
    redisReply *reply, ngx_int_t rc);
static ngx_int_t ngx_http_ragnx_ask_events_entry(ngx_http_request_t *r,
    ngx_http_ragnx_ask_events_ctx_t *ctx, redisReply *e, ngx_chain_t ***ll);
static void ngx_http_ragnx_ask_events_resume(ngx_http_request_t *r);
static ngx_int_t ngx_http_ragnx_ask_events_send(ngx_http_request_t *r,
    ngx_chain_t *out, ngx_uint_t last);
static void ngx_http_ragnx_ask_events_event(ngx_event_t *ev);
static void ngx_http_ragnx_ask_events_ping(ngx_event_t *ev);
static ngx_uint_t ngx_http_ragnx_ask_events_renew(
    ngx_http_ragnx_ask_events_ctx_t *ctx);
static void ngx_http_ragnx_ask_events_cleanup(void *data);
static ngx_int_t ngx_http_ragnx_ask_events_next(ngx_http_request_t *r,
    ngx_http_ragnx_ask_events_ctx_t *ctx);
static void ngx_http_ragnx_ask_events_link(
    ngx_http_ragnx_ask_events_ctx_t *ctx);
static ngx_int_t ngx_http_ragnx_ask_events_share(ngx_http_request_t *r,
    ngx_http_ragnx_ask_events_ctx_t *ctx);
static void ngx_http_ragnx_ask_events_fetched(void *data, redisReply *reply);
static ngx_http_ragnx_ask_events_ctx_t *ngx_http_ragnx_ask_events_ctx(
    ngx_http_request_t *r, ngx_http_ragnx_ask_loc_conf_t *alcf,
    ngx_str_t *owner, u_char *id, ngx_str_t *last);
static ngx_int_t ngx_http_ragnx_ask_events_headers(ngx_http_request_t *r);
static ngx_int_t ngx_http_ragnx_ask_stream(ngx_http_request_t *r,
    ngx_http_ragnx_ask_ctx_t *ctx, ngx_http_ragnx_ask_loc_conf_t *alcf);
static ngx_uint_t ngx_http_ragnx_ask_wants_events(ngx_http_request_t *r);
static ngx_chain_t *ngx_http_ragnx_ask_events_error(ngx_http_request_t *r);
static void ngx_http_ragnx_ask_unlink_events(
    ngx_http_ragnx_ask_events_ctx_t *ctx);
static void ngx_http_ragnx_ask_wait_timeout(ngx_event_t *ev);
static void ngx_http_ragnx_ask_wait_event(ngx_event_t *ev);
static void ngx_http_ragnx_ask_waiter_unlink(ngx_http_ragnx_ask_waiter_t *w,
    ngx_event_t *timer);
static void ngx_http_ragnx_ask_unlink(ngx_http_ragnx_ask_status_ctx_t *ctx);
static void ngx_http_ragnx_ask_wait_cleanup(void *data);

static ngx_int_t ngx_http_ragnx_ask_handler(ngx_http_request_t *r);
static void *ngx_http_ragnx_ask_ctx(ngx_http_request_t *r, size_t size);
static ngx_int_t ngx_http_ragnx_ask_copy(ngx_http_request_t *r,
    ngx_str_t *dst, redisReply *reply);
static ngx_int_t ngx_http_ragnx_ask_header(ngx_http_request_t *r,
    const char *name, ngx_str_t *value);

static void ngx_http_ragnx_ask_job_id(ngx_http_request_t *r, u_char *id);
static ngx_int_t ngx_http_ragnx_ask_job_id_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data);
static ngx_int_t ngx_http_ragnx_ask_add_variables(ngx_conf_t *cf);
static ngx_int_t ngx_http_ragnx_ask_init(ngx_conf_t *cf);
static void *ngx_http_ragnx_ask_create_main_conf(ngx_conf_t *cf);
static char *ngx_http_ragnx_ask_init_main_conf(ngx_conf_t *cf, void *conf);
static ngx_int_t ngx_http_ragnx_ask_init_process(ngx_cycle_t *cycle);
static void ngx_http_ragnx_ask_exit_process(ngx_cycle_t *cycle);
static void *ngx_http_ragnx_ask_create_loc_conf(ngx_conf_t *cf);
static char *ngx_http_ragnx_ask_merge_loc_conf(ngx_conf_t *cf, void *parent,
    void *child);
static char *ngx_http_ragnx_ask(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);


static ngx_command_t  ngx_http_ragnx_ask_commands[] = {

    { ngx_string("ragnx_ask"),
      NGX_HTTP_LOC_CONF|NGX_CONF_NOARGS,
      ngx_http_ragnx_ask,
      NGX_HTTP_LOC_CONF_OFFSET,
      NGX_HTTP_RAGNX_ASK_SUBMIT,
      NULL },

    { ngx_string("ragnx_ask_status"),
      NGX_HTTP_LOC_CONF|NGX_CONF_NOARGS|NGX_CONF_TAKE1,
      ngx_http_ragnx_ask,
      NGX_HTTP_LOC_CONF_OFFSET,
      NGX_HTTP_RAGNX_ASK_STATUS,
      NULL },

    { ngx_string("ragnx_ask_events"),
      NGX_HTTP_LOC_CONF|NGX_CONF_NOARGS|NGX_CONF_TAKE1,
      ngx_http_ragnx_ask,
      NGX_HTTP_LOC_CONF_OFFSET,
      NGX_HTTP_RAGNX_ASK_EVENTS,
      NULL },

    { ngx_string("ragnx_ask_events_ping"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_msec_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_ragnx_ask_loc_conf_t, ping),
      NULL },

    { ngx_string("ragnx_ask_queue_max"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_num_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_ragnx_ask_loc_conf_t, queue_max),
      &ngx_http_ragnx_positive_num_p },

    { ngx_string("ragnx_ask_record_max"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_num_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_ragnx_ask_loc_conf_t, record_max),
      &ngx_http_ragnx_positive_num_p },

    { ngx_string("ragnx_ask_job_ttl"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_sec_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_ragnx_ask_loc_conf_t, job_ttl),
      &ngx_http_ragnx_positive_sec_p },

    { ngx_string("ragnx_ask_gen_refresh"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_msec_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_ragnx_ask_main_conf_t, gen_refresh),
      NULL },

    { ngx_string("ragnx_ask_retry_after"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_num_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_ragnx_ask_loc_conf_t, retry_after),
      NULL },

      ngx_null_command
};


static ngx_http_module_t  ngx_http_ragnx_ask_module_ctx = {
    ngx_http_ragnx_ask_add_variables,      /* preconfiguration */
    ngx_http_ragnx_ask_init,               /* postconfiguration */

    ngx_http_ragnx_ask_create_main_conf,   /* create main configuration */
    ngx_http_ragnx_ask_init_main_conf,     /* init main configuration */

    NULL,                                  /* create server configuration */
    NULL,                                  /* merge server configuration */

    ngx_http_ragnx_ask_create_loc_conf,    /* create location configuration */
    ngx_http_ragnx_ask_merge_loc_conf      /* merge location configuration */
};


ngx_module_t  ngx_http_ragnx_ask_module = {
    NGX_MODULE_V1,
    &ngx_http_ragnx_ask_module_ctx,        /* module context */
    ngx_http_ragnx_ask_commands,           /* module directives */
    NGX_HTTP_MODULE,                       /* module type */
    NULL,                                  /* init master */
    NULL,                                  /* init module */
    ngx_http_ragnx_ask_init_process,       /* init process */
    NULL,                                  /* init thread */
    NULL,                                  /* exit thread */
    ngx_http_ragnx_ask_exit_process,       /* exit process */
    NULL,                                  /* exit master */
    NGX_MODULE_V1_PADDING
};


/*
 * The ask script, ngx_module/lua/ask.lua (its modes, keys and arguments
 * are written there), embedded at build time by scripts/embed-lua: one
 * round trip per question looks the answer up, and enqueues the job or
 * makes it follow an identical question already pending.
 */

static ngx_str_t  ngx_http_ragnx_ask_script = ngx_string(RAGNX_LUA_ASK);


/* the script's mode of each step (a GET step runs no script) */
static const char  *ngx_http_ragnx_ask_modes[] = {
    "all", "lookup", "enqueue", "ask", "get", "chat"
};


static ngx_int_t  ngx_http_ragnx_ask_script_index;

/* long-poll: ngx_module/lua/watch.lua reads the job and registers */
static ngx_str_t  ngx_http_ragnx_ask_watch_script =
    ngx_string(RAGNX_LUA_WATCH);
static ngx_int_t  ngx_http_ragnx_ask_watch_index;

/* streaming: ngx_module/lua/events.lua reads the events and listens */
static ngx_str_t  ngx_http_ragnx_ask_events_script =
    ngx_string(RAGNX_LUA_EVENTS);
static ngx_int_t  ngx_http_ragnx_ask_events_index;

/* the longest ?wait=N, seconds (the API's contract) */
#define NGX_HTTP_RAGNX_ASK_WAIT_MAX  30

static ngx_rbtree_t       ngx_http_ragnx_ask_waiting;
static ngx_rbtree_node_t  ngx_http_ragnx_ask_sentinel;

/* the shared reads in flight; the times the wake channel was lost */
static ngx_rbtree_t       ngx_http_ragnx_ask_fetching;
static ngx_rbtree_node_t  ngx_http_ragnx_ask_fetch_sentinel;
static ngx_uint_t         ngx_http_ragnx_ask_epoch;

static ngx_http_ragnx_ask_worker_t  ngx_http_ragnx_ask_worker;

/* $ragnx_job_id: the job a request made or asked about */
static ngx_str_t  ngx_http_ragnx_ask_job_id_name =
    ngx_string("ragnx_job_id");
static ngx_int_t  ngx_http_ragnx_ask_job_id_index;


static ngx_int_t
ngx_http_ragnx_ask_handler(ngx_http_request_t *r)
{
    ngx_http_ragnx_ask_loc_conf_t  *alcf;

    alcf = ngx_http_get_module_loc_conf(r, ngx_http_ragnx_ask_module);

    if (alcf->type == NGX_HTTP_RAGNX_ASK_SUBMIT) {
        if (r->method != NGX_HTTP_POST) {
            return ngx_http_ragnx_send_not_allowed(r, "POST");
        }

        return ngx_http_ragnx_ask_submit(r, alcf);
    }

    if (!(r->method & (NGX_HTTP_GET|NGX_HTTP_HEAD))) {
        return ngx_http_ragnx_send_not_allowed(r, "GET, HEAD");
    }

    if (alcf->type == NGX_HTTP_RAGNX_ASK_EVENTS) {
        return ngx_http_ragnx_ask_events(r, alcf);
    }

    return ngx_http_ragnx_ask_status(r, alcf);
}


/* POST /api/ask */


static ngx_int_t
ngx_http_ragnx_ask_submit(ngx_http_request_t *r,
    ngx_http_ragnx_ask_loc_conf_t *alcf)
{
    u_char                    *norm;
    size_t                     len;
    json_t                    *body, *v, *details;
    ngx_str_t                  sub, rid;
    ngx_int_t                  rc;
    ragnx_job_t                job;
    ngx_time_t                *tp;
    ngx_http_ragnx_ask_worker_t     *w;
    ngx_http_ragnx_ask_main_conf_t  *amcf;
    ngx_http_ragnx_ask_ctx_t  *ctx;

    /* "ragnx_jwt on" and "ragnx_validate_schema" are checked at "nginx -t" */

    if (ngx_http_ragnx_jwt_subject(r, &sub) != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    body = ngx_http_ragnx_validated_body(r);
    if (body == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    /*
     * Checked again here on purpose: ragnx_validate_schema takes the
     * operator's schema, which may be looser than schemas/ask.json, and
     * what follows needs a string.  This is the documented defence
     * (docs/directives-ask.md, ragnx_ask), not a copy of the schema.
     */

    v = json_object_get(body, "query");
    if (!json_is_string(v) || json_string_length(v) == 0) {
        details = json_pack("{s:[s]}", "query", "must be a non-empty string");
        rc = ngx_http_ragnx_send_error(r, NGX_HTTP_BAD_REQUEST,
                                       "Validation failed", details);
        json_decref(details);
        return rc;
    }

    ctx = ngx_http_ragnx_ask_ctx(r, sizeof(ngx_http_ragnx_ask_ctx_t));
    if (ctx == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    /* the digest of the normalised query names the cache entry */

    len = json_string_length(v);
    norm = ngx_pnalloc(r->pool, len * 2 + 1);
    ctx->digest.data = ngx_pnalloc(r->pool, RAGNX_DIGEST_LEN + 1);
    ctx->job_id.data = ngx_pnalloc(r->pool, RAGNX_UUID_LEN + 1);
    ctx->chat_id.data = ngx_pnalloc(r->pool, RAGNX_UUID_LEN + 1);

    if (norm == NULL || ctx->digest.data == NULL || ctx->job_id.data == NULL
        || ctx->chat_id.data == NULL)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    len = ragnx_query_normalize((u_char *) json_string_value(v), len, norm);
    if (len == (size_t) -1) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    /* a time-ordered job id: cheap to index (ragnx_uuid_v7()) */

    tp = ngx_timeofday();

    if (ragnx_query_digest(norm, len, (char *) ctx->digest.data) != 0
        || ragnx_uuid_v7((char *) ctx->job_id.data,
                         (long long) tp->sec * 1000 + tp->msec)
           != 0)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ctx->digest.len = RAGNX_DIGEST_LEN;
    ctx->job_id.len = RAGNX_UUID_LEN;
    ngx_http_ragnx_ask_job_id(r, ctx->job_id.data);

    /*
     * A question in an existing chat is that chat's (its history may go
     * into the answer): checked to be the caller's, and enqueued on its
     * own.  Without a chatId a new chat is made, and the question is
     * answered from the passages alone, so the cache and single-flight
     * may share its answer.
     */

    v = json_object_get(body, "chatId");

    if (json_is_string(v)
        && ragnx_uuid_valid(json_string_value(v), json_string_length(v)))
    {
        ctx->chat_id.len = RAGNX_UUID_LEN;
        ngx_strlow(ctx->chat_id.data, (u_char *) json_string_value(v),
                   RAGNX_UUID_LEN);
        ctx->chat = 1;
        ctx->verified = ragnx_chat_id_owned((char *) ctx->chat_id.data,
                                            (char *) sub.data, sub.len);

    } else if (v != NULL && !json_is_null(v)) {
        /* the same defence against a looser schema, see above */
        details = json_pack("{s:[s]}", "chatId", "must be a UUID");
        rc = ngx_http_ragnx_send_error(r, NGX_HTTP_BAD_REQUEST,
                                       "Validation failed", details);
        json_decref(details);
        return rc;

    } else if (ragnx_chat_id((char *) sub.data, sub.len,
                             (char *) ctx->chat_id.data)
               == 0)
    {
        ctx->chat_id.len = RAGNX_UUID_LEN;

    } else {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ctx->chat_id.data[RAGNX_UUID_LEN] = '\0';
    ctx->owner = sub;

    ngx_memzero(&job, sizeof(ragnx_job_t));
    job.id = (char *) ctx->job_id.data;
    job.owner = ngx_pnalloc(r->pool, sub.len + 1);
    if (job.owner == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ngx_cpystrn((u_char *) job.owner, sub.data, sub.len + 1);
    job.chat_id = (char *) ctx->chat_id.data;
    job.query = json_string_value(json_object_get(body, "query"));
    job.digest = (char *) ctx->digest.data;
    job.chat_scope = ctx->chat;
    job.created = (long long) tp->sec * 1000 + tp->msec;

    /* the pool's log lines and the stored messages name the request */
    if (ngx_http_ragnx_request_id(r, &rid) == NGX_OK) {
        job.rid = (char *) rid.data;
    }

    len = RAGNX_JOB_MAX(ngx_strlen(job.query), sub.len);

    ctx->payload.data = ngx_pnalloc(r->pool, len);
    if (ctx->payload.data == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ctx->payload.len = ragnx_job_write(&job, (char *) ctx->payload.data, len);
    if (ctx->payload.len == 0) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    amcf = ngx_http_get_module_main_conf(r, ngx_http_ragnx_ask_module);
    w = &ngx_http_ragnx_ask_worker;

    if (w->gen_known
        && ngx_current_msec - w->gen_updated <= 3 * amcf->gen_refresh)
    {
        ctx->gen.data = ngx_pnalloc(r->pool, w->gen_len + 1);
        if (ctx->gen.data == NULL) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        ngx_memcpy(ctx->gen.data, w->gen, w->gen_len);
        ctx->gen.data[w->gen_len] = '\0';
        ctx->gen.len = w->gen_len;
    }

    if (ctx->chat) {
        ctx->step = NGX_HTTP_RAGNX_ASK_CHAT;
        rc = ngx_http_ragnx_ask_send_script(r, ctx, alcf);

    } else if (ctx->gen.len) {

        if (alcf->cache == alcf->queue
            && w->misses > NGX_HTTP_RAGNX_ASK_MISS_ONE / 2)
        {
            ctx->step = NGX_HTTP_RAGNX_ASK_ASK;
            rc = ngx_http_ragnx_ask_send_script(r, ctx, alcf);

        } else {
            ctx->step = NGX_HTTP_RAGNX_ASK_GET;
            rc = ngx_http_ragnx_ask_send_get(r, ctx, alcf);
        }

    } else {
        ctx->step = (alcf->cache != alcf->queue) ? NGX_HTTP_RAGNX_ASK_LOOKUP
                                                 : NGX_HTTP_RAGNX_ASK_ALL;
        rc = ngx_http_ragnx_ask_send_script(r, ctx, alcf);
    }

    if (rc != NGX_OK) {
        return ngx_http_ragnx_send_error(r, NGX_HTTP_SERVICE_UNAVAILABLE,
                                         "cache unavailable", NULL);
    }

    return NGX_DONE;
}


static ngx_int_t
ngx_http_ragnx_ask_send_script(ngx_http_request_t *r,
    ngx_http_ragnx_ask_ctx_t *ctx, ngx_http_ragnx_ask_loc_conf_t *alcf)
{
    u_char                      *key, *chat, *p;
    size_t                       lens[19];
    ngx_int_t                    rc;
    const char                  *argv[19];
    ngx_msec_t                   budget;
    ngx_time_t                  *tp;
    ngx_http_ragnx_redis_srv_t  *srv;
    u_char                       now[NGX_INT64_LEN], max[NGX_INT_T_LEN],
                                 ttl[NGX_TIME_T_LEN], rmax[NGX_INT_T_LEN],
                                 deadline[NGX_INT64_LEN];

    key = ngx_pnalloc(r->pool, sizeof(RAGNX_KEY_JOB) - 1 + RAGNX_UUID_LEN
                               + sizeof(RAGNX_KEY_CHAT) - 1 + RAGNX_UUID_LEN);
    if (key == NULL) {
        return NGX_ERROR;
    }

    p = ngx_cpymem(key, RAGNX_KEY_JOB, sizeof(RAGNX_KEY_JOB) - 1);
    p = ngx_cpymem(p, ctx->job_id.data, RAGNX_UUID_LEN);
    chat = p;
    p = ngx_cpymem(p, RAGNX_KEY_CHAT, sizeof(RAGNX_KEY_CHAT) - 1);
    ngx_memcpy(p, ctx->chat_id.data, RAGNX_UUID_LEN);

    /* the payload goes as it is: the generation is a field beside it */

    argv[0] = "5";
    argv[1] = RAGNX_KEY_GEN;
    argv[2] = RAGNX_KEY_JOBS;
    argv[3] = (const char *) key;
    argv[4] = (const char *) chat;
    argv[5] = RAGNX_KEY_RECORDS;
    argv[6] = (const char *) ctx->digest.data;
    argv[7] = (const char *) ctx->job_id.data;
    argv[8] = (const char *) ctx->payload.data;
    argv[9] = (const char *) ctx->owner.data;
    argv[10] = (const char *) ctx->chat_id.data;
    argv[11] = (const char *) now;
    argv[12] = (const char *) max;
    argv[13] = (const char *) ttl;
    argv[14] = ngx_http_ragnx_ask_modes[ctx->step];
    argv[15] = ctx->gen.len ? (const char *) ctx->gen.data : "";

    lens[0] = 1;
    lens[1] = sizeof(RAGNX_KEY_GEN) - 1;
    lens[2] = sizeof(RAGNX_KEY_JOBS) - 1;
    lens[3] = sizeof(RAGNX_KEY_JOB) - 1 + RAGNX_UUID_LEN;
    lens[4] = sizeof(RAGNX_KEY_CHAT) - 1 + RAGNX_UUID_LEN;
    lens[5] = sizeof(RAGNX_KEY_RECORDS) - 1;
    lens[6] = RAGNX_DIGEST_LEN;
    lens[7] = RAGNX_UUID_LEN;
    lens[8] = ctx->payload.len;
    lens[9] = ctx->owner.len;
    lens[10] = RAGNX_UUID_LEN;
    tp = ngx_timeofday();
    lens[11] = ngx_sprintf(now, "%T%03M", tp->sec, tp->msec) - now;
    lens[12] = ngx_sprintf(max, "%ui", alcf->queue_max) - max;
    lens[13] = ngx_sprintf(ttl, "%T", alcf->job_ttl) - ttl;
    lens[14] = ngx_strlen(ngx_http_ragnx_ask_modes[ctx->step]);
    lens[15] = ctx->gen.len;

    if (ctx->step == NGX_HTTP_RAGNX_ASK_ENQUEUE) {
        argv[16] = ctx->cached.len ? (const char *) ctx->cached.data : "";
        lens[16] = ctx->cached.len;

    } else {
        argv[16] = ctx->verified ? "1" : "";
        lens[16] = ctx->verified;
    }

    argv[17] = (const char *) rmax;
    lens[17] = ngx_sprintf(rmax, "%ui", alcf->record_max) - rmax;

    srv = (ctx->step == NGX_HTTP_RAGNX_ASK_LOOKUP) ? alcf->cache
                                                  : alcf->queue;

    /*
     * A 503 must mean that nothing was asked.  The script does nothing
     * when Redis runs it after its deadline (a Redis stopped with the
     * command in its buffer), and a script that may act is answered by
     * its reply, however late (ngx_http_ragnx_redis_wait_t): a 503 comes
     * only once the connection is given up, after the deadline.  A
     * quarter of the wait, at most 100 ms, is left for the reply's way
     * back.  The lookup on a cache server writes nothing.
     */

    budget = ngx_http_ragnx_redis_timeout(srv);
    budget -= ngx_min(budget / 4, 100);

    argv[18] = (const char *) deadline;
    lens[18] = ngx_sprintf(deadline, "%uL", (uint64_t) tp->sec * 1000
                                           + tp->msec + budget)
               - deadline;

    ctx->wait.deadline = (ctx->step == NGX_HTTP_RAGNX_ASK_LOOKUP)
                         ? 0 : ngx_current_msec + budget;

    ctx->wait.reply = ngx_http_ragnx_ask_script_reply;
    ctx->wait.resume = ngx_http_ragnx_ask_script_resume;

    rc = ngx_http_ragnx_redis_eval(r, &ctx->wait, srv,
                                   ngx_http_ragnx_ask_script_index, 19, argv,
                                   lens);

    ngx_log_debug3(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "ragnx ask: job %V, script mode \"%s\", chat %V",
                   &ctx->job_id, ngx_http_ragnx_ask_modes[ctx->step],
                   &ctx->chat_id);

    return rc;
}


/* inside the hiredis callback: copy, do not respond */

static void
ngx_http_ragnx_ask_script_reply(ngx_http_request_t *r, redisReply *reply,
    ngx_int_t rc)
{
    ngx_http_ragnx_ask_ctx_t  *ctx;

    ctx = ngx_http_get_module_ctx(r, ngx_http_ragnx_ask_module);

    if (rc != NGX_OK) {
        return;
    }

    if (reply->type == REDIS_REPLY_ERROR) {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "ragnx ask script failed: %*s", (size_t) reply->len,
                      reply->str);
        ctx->wait.rc = NGX_ERROR;
        return;
    }

    if (reply->type != REDIS_REPLY_ARRAY || reply->elements != 3
        || ngx_http_ragnx_ask_copy(r, &ctx->outcome, reply->element[0])
           != NGX_OK
        || ngx_http_ragnx_ask_copy(r, &ctx->gen, reply->element[1]) != NGX_OK
        || ngx_http_ragnx_ask_copy(r, &ctx->cached, reply->element[2])
           != NGX_OK)
    {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "ragnx ask script: unexpected reply");
        ctx->wait.rc = NGX_ERROR;
    }
}


static void
ngx_http_ragnx_ask_script_resume(ngx_http_request_t *r)
{
    ngx_int_t                       rc;
    ngx_http_ragnx_ask_ctx_t       *ctx;
    ngx_http_ragnx_ask_loc_conf_t  *alcf;

    ctx = ngx_http_get_module_ctx(r, ngx_http_ragnx_ask_module);
    alcf = ngx_http_get_module_loc_conf(r, ngx_http_ragnx_ask_module);

    if (ctx->wait.rc != NGX_OK) {
        ngx_log_debug2(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                       "ragnx ask: job %V, no answer from redis, rc:%i",
                       &ctx->job_id, ctx->wait.rc);

        rc = ngx_http_ragnx_send_error(r, NGX_HTTP_SERVICE_UNAVAILABLE,
                                       "cache unavailable", NULL);
        ngx_http_finalize_request(r, rc);
        return;
    }

    ngx_log_debug3(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "ragnx ask: job %V, outcome \"%V\", step \"%s\"",
                   &ctx->job_id, &ctx->outcome,
                   ngx_http_ragnx_ask_modes[ctx->step]);

    if (ctx->outcome.len == 4
        && ngx_strncmp(ctx->outcome.data, "late", 4) == 0)
    {
        /* Redis was stalled, or its clock is ahead of nginx's */
        ngx_log_error(NGX_LOG_WARN, r->connection->log, 0,
                      "ragnx ask: redis ran the ask script after its "
                      "deadline, nothing done (redis stalled, or its "
                      "clock ahead of nginx's)");
        rc = ngx_http_ragnx_send_error(r, NGX_HTTP_SERVICE_UNAVAILABLE,
                                       "cache unavailable", NULL);
        ngx_http_finalize_request(r, rc);
        return;
    }

    if (ctx->step == NGX_HTTP_RAGNX_ASK_CHAT) {

        if (ctx->outcome.len == 7
            && ngx_strncmp(ctx->outcome.data, "unknown", 7) == 0
            && !ctx->verified)
        {
            rc = ngx_http_ragnx_ask_whose_chat(r, ctx, alcf);
            ngx_http_finalize_request(r, rc);
            return;
        }

        if (ctx->outcome.len == 7
            && (ngx_strncmp(ctx->outcome.data, "foreign", 7) == 0
                || ngx_strncmp(ctx->outcome.data, "unknown", 7) == 0))
        {
            ngx_log_debug1(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                           "ragnx ask: chat %V is not the caller's",
                           &ctx->chat_id);
            rc = ngx_http_ragnx_send_error(r, NGX_HTTP_NOT_FOUND,
                                           "Chat not found", NULL);
            ngx_http_finalize_request(r, rc);
            return;
        }

    } else if (ctx->step == NGX_HTTP_RAGNX_ASK_GET) {
        ngx_http_ragnx_ask_learn(ctx->cached.len == 0);

    } else if (ctx->step == NGX_HTTP_RAGNX_ASK_ASK) {
        ngx_http_ragnx_ask_learn(ngx_strncmp(ctx->outcome.data, "hit", 3)
                                 != 0);
    }

    if (ctx->step == NGX_HTTP_RAGNX_ASK_GET && ctx->cached.len) {
        ngx_http_ragnx_ask_record(r, ctx, alcf);

    } else if (ctx->step == NGX_HTTP_RAGNX_ASK_LOOKUP
               || ctx->step == NGX_HTTP_RAGNX_ASK_GET)
    {
        ctx->step = NGX_HTTP_RAGNX_ASK_ENQUEUE;

        if (ngx_http_ragnx_ask_send_script(r, ctx, alcf) != NGX_OK) {
            rc = ngx_http_ragnx_send_error(r, NGX_HTTP_SERVICE_UNAVAILABLE,
                                           "queue unavailable", NULL);
            ngx_http_finalize_request(r, rc);
            return;
        }

        /* the next call holds its own reference to the request */
        ngx_http_finalize_request(r, NGX_DONE);
        return;
    }

    ngx_http_finalize_request(r, ngx_http_ragnx_ask_answer(r, ctx, alcf));
}


/*
 * A chatId Redis does not know (its owner expired there, or it never
 * existed): the pool looks it up in PostgreSQL, puts the owner back in
 * Redis, and says whether it is the caller's.  Returns what the request
 * is finalized with: NGX_DONE while the call is out.
 */

static ngx_int_t
ngx_http_ragnx_ask_whose_chat(ngx_http_request_t *r,
    ngx_http_ragnx_ask_ctx_t *ctx, ngx_http_ragnx_ask_loc_conf_t *alcf)
{
    json_t     *params;
    ngx_int_t   rc;

    ngx_log_debug1(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "ragnx ask: chat %V unknown to redis, asking the pool",
                   &ctx->chat_id);

    params = json_pack("{s:s%}", "chatId", (char *) ctx->chat_id.data,
                       (size_t) RAGNX_UUID_LEN);
    if (params == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    rc = ngx_http_ragnx_rpc_call(r, RAGNX_RPC_CHAT, alcf->queue, &ctx->owner,
                                 params, ngx_http_ragnx_ask_chat_checked);
    json_decref(params);

    if (rc == NGX_DECLINED) {
        return ngx_http_ragnx_send_error(r, NGX_HTTP_SERVICE_UNAVAILABLE,
                                         "queue unavailable", NULL);
    }

    if (rc != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    /* the call holds its own reference to the request */
    return NGX_DONE;
}


static ngx_int_t
ngx_http_ragnx_ask_chat_checked(ngx_http_request_t *r, ngx_uint_t status,
    ngx_str_t *body)
{
    ngx_http_ragnx_ask_ctx_t       *ctx;
    ngx_http_ragnx_ask_loc_conf_t  *alcf;

    ctx = ngx_http_get_module_ctx(r, ngx_http_ragnx_ask_module);
    alcf = ngx_http_get_module_loc_conf(r, ngx_http_ragnx_ask_module);

    ngx_log_debug2(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "ragnx ask: the pool says %ui for chat %V", status,
                   &ctx->chat_id);

    if (status == NGX_HTTP_NOT_FOUND && body) {
        return ngx_http_ragnx_send_error(r, NGX_HTTP_NOT_FOUND,
                                         "Chat not found", NULL);
    }

    if (status != NGX_HTTP_OK || body == NULL) {
        if (status < NGX_HTTP_INTERNAL_SERVER_ERROR) {
            ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                          "ragnx ask: chat lookup answered %ui", status);
            status = NGX_HTTP_BAD_GATEWAY;
        }

        return ngx_http_ragnx_send_error(r, status,
                                         ngx_http_ragnx_status_message(status),
                                         NULL);
    }

    ctx->verified = 1;

    if (ngx_http_ragnx_ask_send_script(r, ctx, alcf) != NGX_OK) {
        return ngx_http_ragnx_send_error(r, NGX_HTTP_SERVICE_UNAVAILABLE,
                                         "queue unavailable", NULL);
    }

    /* the script call holds its own reference to the request */
    return NGX_DONE;
}


static ngx_int_t
ngx_http_ragnx_ask_send_get(ngx_http_request_t *r,
    ngx_http_ragnx_ask_ctx_t *ctx, ngx_http_ragnx_ask_loc_conf_t *alcf)
{
    size_t                           lens[2];
    const char                      *argv[2];
    ngx_http_ragnx_ask_main_conf_t  *amcf;

    /*
     * The records stream's length first, in the same pipeline: its reply
     * comes before the GET's, so a hit checks its bound against a length
     * one round trip old (ngx_http_ragnx_ask_record()).
     */

    amcf = ngx_http_get_module_main_conf(r, ngx_http_ragnx_ask_module);

    argv[0] = "XLEN";
    lens[0] = 4;
    argv[1] = RAGNX_KEY_RECORDS;
    lens[1] = sizeof(RAGNX_KEY_RECORDS) - 1;

    (void) ngx_http_ragnx_redis_send(amcf->queue,
                                     ngx_http_ragnx_ask_xlen_done, NULL, 2,
                                     argv, lens);

    argv[0] = "GET";
    lens[0] = 3;

    argv[1] = ngx_pnalloc(r->pool, sizeof(RAGNX_KEY_CACHE) + RAGNX_DIGEST_LEN
                                   + ctx->gen.len + 1);
    if (argv[1] == NULL) {
        return NGX_ERROR;
    }

    lens[1] = ragnx_cache_key((char *) ctx->digest.data,
                              (char *) ctx->gen.data, ctx->gen.len,
                              (char *) argv[1],
                              sizeof(RAGNX_KEY_CACHE) + RAGNX_DIGEST_LEN
                              + ctx->gen.len + 1);
    if (lens[1] == 0) {
        return NGX_ERROR;
    }

    ctx->wait.reply = ngx_http_ragnx_ask_get_reply;
    ctx->wait.resume = ngx_http_ragnx_ask_script_resume;

    return ngx_http_ragnx_redis_call(r, &ctx->wait, alcf->cache, 2, argv,
                                     lens);
}


static void
ngx_http_ragnx_ask_get_reply(ngx_http_request_t *r, redisReply *reply,
    ngx_int_t rc)
{
    ngx_http_ragnx_ask_ctx_t  *ctx;

    ctx = ngx_http_get_module_ctx(r, ngx_http_ragnx_ask_module);

    if (rc != NGX_OK) {
        return;
    }

    if (reply->type == REDIS_REPLY_ERROR
        || ngx_http_ragnx_ask_copy(r, &ctx->cached, reply) != NGX_OK)
    {
        ctx->wait.rc = NGX_ERROR;
        return;
    }

    if (ctx->cached.len) {
        ngx_str_set(&ctx->outcome, "hit");
    }

    ngx_log_debug2(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "ragnx ask: job %V, cache GET %s", &ctx->job_id,
                   ctx->cached.len ? "hit" : "miss");
}


/*
 * Whether questions tend to miss, in this worker: a moving average of the
 * last few outcomes picks the path of the next question.  Guessing wrong
 * costs a script call for a hit, or a second round trip for a miss.
 */

static void
ngx_http_ragnx_ask_learn(ngx_uint_t miss)
{
    ngx_http_ragnx_ask_worker_t  *w;

    w = &ngx_http_ragnx_ask_worker;

    w->misses -= w->misses / 8;

    if (miss) {
        w->misses += NGX_HTTP_RAGNX_ASK_MISS_ONE / 8;
    }
}


/*
 * A hit found with a plain GET: the exchange still goes to the chat
 * history, appended to the records stream without waiting for the answer
 * (the client gets its answer either way; a failure is logged), the
 * payload as it is and the cached value beside it.  The stream's length
 * is bounded by ragnx_ask_record_max: the GET went out behind an XLEN of
 * the stream, whose reply came first, so the length is one round trip
 * old and the bound holds to within the hits in flight at once.  A hit
 * past it is refused, never answered unrecorded.
 */

static void
ngx_http_ragnx_ask_record(ngx_http_request_t *r,
    ngx_http_ragnx_ask_ctx_t *ctx, ngx_http_ragnx_ask_loc_conf_t *alcf)
{
    size_t                           lens[9];
    const char                      *argv[9];
    ngx_http_ragnx_ask_worker_t     *w;
    ngx_http_ragnx_ask_main_conf_t  *amcf;

    w = &ngx_http_ragnx_ask_worker;

    if (w->records_len >= alcf->record_max) {
        ngx_str_set(&ctx->outcome, "hit-full");
        return;
    }

    ngx_str_set(&ctx->outcome, "hit-unrecorded");

    argv[0] = "XADD";
    lens[0] = 4;
    argv[1] = RAGNX_KEY_RECORDS;
    lens[1] = sizeof(RAGNX_KEY_RECORDS) - 1;
    argv[2] = "*";
    lens[2] = 1;
    argv[3] = "id";
    lens[3] = 2;
    argv[4] = (const char *) ctx->job_id.data;
    lens[4] = RAGNX_UUID_LEN;
    argv[5] = "job";
    lens[5] = 3;
    argv[6] = (const char *) ctx->payload.data;
    lens[6] = ctx->payload.len;
    argv[7] = "result";
    lens[7] = 6;
    argv[8] = (const char *) ctx->cached.data;
    lens[8] = ctx->cached.len;

    amcf = ngx_http_get_module_main_conf(r, ngx_http_ragnx_ask_module);

    if (ngx_http_ragnx_redis_send_later(amcf->queue,
                                        ngx_http_ragnx_ask_record_done, NULL,
                                        9, argv, lens)
        != NGX_OK)
    {
        return;
    }

    w->records_len++;

    ngx_log_debug1(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "ragnx ask: job %V, hit record queued", &ctx->job_id);

    ngx_str_set(&ctx->outcome, "hit");
}


static void
ngx_http_ragnx_ask_record_done(void *data, redisReply *reply)
{
    if (reply == NULL || reply->type == REDIS_REPLY_ERROR) {
        ngx_log_error(NGX_LOG_ERR, ngx_cycle->log, 0,
                      "ragnx ask: chat history record of a cache hit "
                      "was not queued: %s",
                      reply ? reply->str : "no reply from redis");
    }
}


/*
 * A hit refused because the records stream is at its bound: counted in
 * Redis ({ragnx}:stats, which /health shows) and logged at most once a
 * second per worker, with how many.
 */

static void
ngx_http_ragnx_ask_refused(ngx_http_request_t *r,
    ngx_http_ragnx_ask_loc_conf_t *alcf)
{
    size_t                        lens[4];
    const char                   *argv[4];
    ngx_http_ragnx_ask_worker_t  *w;

    w = &ngx_http_ragnx_ask_worker;
    w->refused++;

    argv[0] = "HINCRBY";
    lens[0] = 7;
    argv[1] = RAGNX_KEY_STATS;
    lens[1] = sizeof(RAGNX_KEY_STATS) - 1;
    argv[2] = "records-refused";
    lens[2] = sizeof("records-refused") - 1;
    argv[3] = "1";
    lens[3] = 1;

    (void) ngx_http_ragnx_redis_send_later(alcf->queue, NULL, NULL, 4, argv,
                                           lens);

    if (ngx_current_msec - w->refused_logged >= 1000) {
        ngx_log_error(NGX_LOG_WARN, r->connection->log, 0,
                      "ragnx ask: %ui cache hits refused (503): chat history "
                      "records at ragnx_ask_record_max %ui", w->refused,
                      alcf->record_max);
        w->refused = 0;
        w->refused_logged = ngx_current_msec;
    }
}


/*
 * per worker: refresh the cache generation (the records' length needs no
 * refresh: every likely hit reads it, ngx_http_ragnx_ask_send_get())
 */

static void
ngx_http_ragnx_ask_refresh(ngx_event_t *ev)
{
    size_t                           lens[2];
    const char                      *argv[2];
    ngx_http_ragnx_ask_main_conf_t  *amcf;

    amcf = ev->data;

    /* a worker shutting down waits for its replies: ask for no more */

    if (ngx_exiting) {
        return;
    }

    ngx_log_debug0(NGX_LOG_DEBUG_HTTP, ev->log, 0,
                   "ragnx ask: refreshing the generation");

    argv[0] = "GET";
    lens[0] = 3;
    argv[1] = RAGNX_KEY_GEN;
    lens[1] = sizeof(RAGNX_KEY_GEN) - 1;

    (void) ngx_http_ragnx_redis_send(amcf->cache, ngx_http_ragnx_ask_gen_done,
                                     NULL, 2, argv, lens);

    ngx_add_timer(ev, amcf->gen_refresh);
}


static void
ngx_http_ragnx_ask_gen_done(void *data, redisReply *reply)
{
    size_t                        len;
    const char                   *gen;
    ngx_http_ragnx_ask_worker_t  *w;

    w = &ngx_http_ragnx_ask_worker;

    if (reply == NULL || reply->type == REDIS_REPLY_ERROR) {
        ngx_log_debug0(NGX_LOG_DEBUG_HTTP, ngx_cycle->log, 0,
                       "ragnx ask: generation not refreshed");
        return;
    }

    if (reply->type == REDIS_REPLY_NIL) {
        gen = RAGNX_GEN_DEFAULT;
        len = sizeof(RAGNX_GEN_DEFAULT) - 1;

    } else if (reply->type == REDIS_REPLY_STRING) {
        gen = reply->str;
        len = reply->len;

    } else {
        return;
    }

    /* a generation too long for the worker is left to the script */

    w->gen_known = 0;

    if (len == 0 || len > sizeof(w->gen)) {
        return;
    }

    ngx_memcpy(w->gen, gen, len);
    w->gen_len = len;
    w->gen_known = 1;
    w->gen_updated = ngx_current_msec;

    ngx_log_debug2(NGX_LOG_DEBUG_HTTP, ngx_cycle->log, 0,
                   "ragnx ask: generation \"%*s\"", len, gen);
}


static void
ngx_http_ragnx_ask_xlen_done(void *data, redisReply *reply)
{
    if (reply && reply->type == REDIS_REPLY_INTEGER) {
        ngx_http_ragnx_ask_worker.records_len = (ngx_uint_t) reply->integer;

        ngx_log_debug1(NGX_LOG_DEBUG_HTTP, ngx_cycle->log, 0,
                       "ragnx ask: records length %ui",
                       ngx_http_ragnx_ask_worker.records_len);
    }
}


static ngx_int_t
ngx_http_ragnx_ask_answer(ngx_http_request_t *r,
    ngx_http_ragnx_ask_ctx_t *ctx, ngx_http_ragnx_ask_loc_conf_t *alcf)
{
    u_char        *p, ra[NGX_INT_T_LEN];
    ngx_buf_t     *b;
    ngx_str_t      loc, retry;

    if (ctx->outcome.len == 8
        && ngx_strncmp(ctx->outcome.data, "hit-full", 8) == 0)
    {
        /* the exchange could not be recorded: refused as a full queue */
        ngx_http_ragnx_ask_refused(r, alcf);
        ngx_str_set(&ctx->outcome, "full");

    } else if (ctx->outcome.len > 3
               && ngx_strncmp(ctx->outcome.data, "hit-", 4) == 0)
    {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "ragnx ask: cache hit of job %V refused: its record "
                      "could not be sent to redis", &ctx->job_id);
        return ngx_http_ragnx_send_error(r, NGX_HTTP_SERVICE_UNAVAILABLE,
                                         "queue unavailable", NULL);
    }

    if (ngx_strncmp(ctx->outcome.data, "hit", 3) == 0) {

        /*
         * The pool stores {"answer":...,"sources":[...]} (jansson, compact):
         * the response is that object with "source" and "chatId" put in
         * front, spliced without parsing it again.
         */

        if (ctx->cached.len < sizeof("{\"answer\":\"\"}") - 1
            || ngx_strncmp(ctx->cached.data, "{\"answer\":", 10) != 0
            || ctx->cached.data[ctx->cached.len - 1] != '}')
        {
            ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                          "ragnx ask: malformed cache entry for %V",
                          &ctx->digest);
            return ngx_http_ragnx_send_error(r, NGX_HTTP_SERVICE_UNAVAILABLE,
                                             "cache unavailable", NULL);
        }

        if (ngx_http_ragnx_ask_wants_events(r)) {
            return ngx_http_ragnx_ask_stream(r, ctx, alcf);
        }

        b = ngx_create_temp_buf(r->pool,
                                sizeof(NGX_HTTP_RAGNX_ASK_HIT) - 1
                                + RAGNX_UUID_LEN + 2 + ctx->cached.len - 1);
        if (b == NULL) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        b->last = ngx_cpymem(b->last, NGX_HTTP_RAGNX_ASK_HIT,
                             sizeof(NGX_HTTP_RAGNX_ASK_HIT) - 1);
        b->last = ngx_cpymem(b->last, ctx->chat_id.data, RAGNX_UUID_LEN);
        *b->last++ = '"';
        *b->last++ = ',';
        b->last = ngx_cpymem(b->last, ctx->cached.data + 1,
                             ctx->cached.len - 1);

        return ngx_http_ragnx_send_json_buf(r, NGX_HTTP_OK, b);
    }

    if (ngx_strncmp(ctx->outcome.data, "full", 4) == 0) {
        retry.data = ra;
        retry.len = ngx_sprintf(ra, "%ui", alcf->retry_after * 5) - ra;

        if (ngx_http_ragnx_ask_header(r, "Retry-After", &retry) != NGX_OK) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        return ngx_http_ragnx_send_error(r, NGX_HTTP_SERVICE_UNAVAILABLE,
                                         "queue full", NULL);
    }

    /* queued, or following an identical question already in flight */

    if (ngx_http_ragnx_ask_wants_events(r)) {
        return ngx_http_ragnx_ask_stream(r, ctx, alcf);
    }

    loc.len = sizeof("/api/ask/") - 1 + RAGNX_UUID_LEN;
    loc.data = ngx_pnalloc(r->pool, loc.len);
    if (loc.data == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    p = ngx_cpymem(loc.data, "/api/ask/", sizeof("/api/ask/") - 1);
    ngx_memcpy(p, ctx->job_id.data, RAGNX_UUID_LEN);

    retry.data = ra;
    retry.len = ngx_sprintf(ra, "%ui", alcf->retry_after) - ra;

    if (ngx_http_ragnx_ask_header(r, "Location", &loc) != NGX_OK
        || ngx_http_ragnx_ask_header(r, "Retry-After", &retry) != NGX_OK)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    /* two UUIDs and fixed text: nothing to escape, no JSON object needed */

    b = ngx_create_temp_buf(r->pool, sizeof(NGX_HTTP_RAGNX_ASK_QUEUED) - 1
                                     + 2 * RAGNX_UUID_LEN + 2);
    if (b == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    b->last = ngx_sprintf(b->last, NGX_HTTP_RAGNX_ASK_QUEUED "\"}",
                          &ctx->job_id, &ctx->chat_id);

    return ngx_http_ragnx_send_json_buf(r, NGX_HTTP_ACCEPTED, b);
}


/*
 * The job id of GET /api/ask/{jobId} (skip 0) or /api/ask/{jobId}/events
 * (skip 1): the directive's value, else the path segment skip segments
 * before the last.  NGX_DECLINED when it is not a UUID.
 */

static ngx_int_t
ngx_http_ragnx_ask_path_id(ngx_http_request_t *r,
    ngx_http_ragnx_ask_loc_conf_t *alcf, ngx_uint_t skip, ngx_str_t *id)
{
    u_char  *p, *end;

    if (alcf->id) {
        if (ngx_http_complex_value(r, alcf->id, id) != NGX_OK) {
            return NGX_ERROR;
        }

    } else {
        end = r->uri.data + r->uri.len;

        for ( ;; ) {
            for (p = end; p > r->uri.data && p[-1] != '/'; p--) {
                /* void */
            }

            if (skip == 0) {
                break;
            }

            skip--;

            if (p == r->uri.data) {
                end = p;
                break;
            }

            end = p - 1;
        }

        id->data = p;
        id->len = end - p;
    }

    return ragnx_uuid_valid((char *) id->data, id->len) ? NGX_OK
                                                         : NGX_DECLINED;
}


/* GET /api/ask/{jobId} */


static ngx_int_t
ngx_http_ragnx_ask_status(ngx_http_request_t *r,
    ngx_http_ragnx_ask_loc_conf_t *alcf)
{
    ngx_int_t                         n;
    ngx_str_t                         id, sub, arg;
    ngx_pool_cleanup_t               *cln;
    ngx_http_ragnx_ask_status_ctx_t  *ctx;

    /* "ragnx_jwt on" is checked at "nginx -t" */

    if (ngx_http_ragnx_jwt_subject(r, &sub) != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    n = ngx_http_ragnx_ask_path_id(r, alcf, 0, &id);

    if (n == NGX_ERROR) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (n == NGX_DECLINED) {
        return ngx_http_ragnx_send_error(r, NGX_HTTP_BAD_REQUEST,
                                         "Invalid job id", NULL);
    }


    ctx = ngx_http_ragnx_ask_ctx(r,
                                 sizeof(ngx_http_ragnx_ask_status_ctx_t));
    if (ctx == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ctx->owner = sub;
    ctx->request = r;
    ctx->alcf = alcf;

    /* ids are minted lower-case; accept either from the client */
    ngx_strlow(ctx->id, id.data, RAGNX_UUID_LEN);
    ngx_http_ragnx_ask_job_id(r, ctx->id);

    if (ngx_http_arg(r, (u_char *) "wait", 4, &arg) == NGX_OK) {
        n = ngx_atoi(arg.data, arg.len);

        if (n < 1 || n > NGX_HTTP_RAGNX_ASK_WAIT_MAX) {
            return ngx_http_ragnx_send_error(r, NGX_HTTP_BAD_REQUEST,
                                             "Invalid wait: seconds from 1 "
                                             "to 30", NULL);
        }

        cln = ngx_pool_cleanup_add(r->pool, 0);
        if (cln == NULL) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        cln->handler = ngx_http_ragnx_ask_wait_cleanup;
        cln->data = ctx;

        ctx->long_poll = 1;

        /* in the table before the read: the job may end meanwhile */
        ctx->w.node.str.data = ctx->id;
        ctx->w.node.str.len = RAGNX_UUID_LEN;
        ctx->w.node.node.key = ngx_crc32_short(ctx->id, RAGNX_UUID_LEN);
        ngx_rbtree_insert(&ngx_http_ragnx_ask_waiting, &ctx->w.node.node);
        ctx->w.linked = 1;

        ctx->timer.handler = ngx_http_ragnx_ask_wait_timeout;
        ctx->timer.data = ctx;
        ctx->timer.log = r->connection->log;
        ngx_add_timer(&ctx->timer, (ngx_msec_t) n * 1000);

        ctx->w.event.handler = ngx_http_ragnx_ask_wait_event;
        ctx->w.event.data = ctx;
        ctx->w.event.log = r->connection->log;
    }

    if (ngx_http_ragnx_ask_status_read(r, ctx) != NGX_OK) {
        ngx_http_ragnx_ask_unlink(ctx);
        return ngx_http_ragnx_send_error(r, NGX_HTTP_SERVICE_UNAVAILABLE,
                                         "queue unavailable", NULL);
    }

    return NGX_DONE;
}


/*
 * The job's hash: HGETALL, or with ?wait=N the watch script, which also
 * adds this worker's wake channel to the job's watchers while it waits
 * (none when the subscription is down: then only the timer ends a wait).
 */

static ngx_int_t
ngx_http_ragnx_ask_status_read(ngx_http_request_t *r,
    ngx_http_ragnx_ask_status_ctx_t *ctx)
{
    u_char                          *p, *key, *watch;
    size_t                           lens[6];
    ngx_str_t                       *channel;
    const char                      *argv[6];
    ngx_http_ragnx_ask_main_conf_t  *amcf;

    key = ngx_pnalloc(r->pool, sizeof(RAGNX_KEY_JOB) - 1 + RAGNX_UUID_LEN);
    if (key == NULL) {
        return NGX_ERROR;
    }

    p = ngx_cpymem(key, RAGNX_KEY_JOB, sizeof(RAGNX_KEY_JOB) - 1);
    ngx_memcpy(p, ctx->id, RAGNX_UUID_LEN);

    ngx_memzero(&ctx->status, sizeof(ngx_str_t));
    ngx_memzero(&ctx->job_owner, sizeof(ngx_str_t));
    ctx->found = 0;

    ctx->wait.reply = ngx_http_ragnx_ask_status_reply;
    ctx->wait.resume = ngx_http_ragnx_ask_status_resume;
    ctx->wait.rc = NGX_OK;
    ctx->w.reading = 1;

    if (!ctx->long_poll || ctx->expired) {
        argv[0] = "HGETALL";
        lens[0] = 7;
        argv[1] = (const char *) key;
        lens[1] = sizeof(RAGNX_KEY_JOB) - 1 + RAGNX_UUID_LEN;

        return ngx_http_ragnx_redis_call(r, &ctx->wait, ctx->alcf->queue, 2,
                                         argv, lens);
    }

    watch = ngx_pnalloc(r->pool, sizeof(RAGNX_KEY_WATCH) - 1
                                 + RAGNX_UUID_LEN);
    if (watch == NULL) {
        return NGX_ERROR;
    }

    p = ngx_cpymem(watch, RAGNX_KEY_WATCH, sizeof(RAGNX_KEY_WATCH) - 1);
    ngx_memcpy(p, ctx->id, RAGNX_UUID_LEN);

    amcf = ngx_http_get_module_main_conf(r, ngx_http_ragnx_ask_module);
    channel = ngx_http_ragnx_redis_channel(amcf->wake);

    argv[0] = "2";
    lens[0] = 1;
    argv[1] = (const char *) key;
    lens[1] = sizeof(RAGNX_KEY_JOB) - 1 + RAGNX_UUID_LEN;
    argv[2] = (const char *) watch;
    lens[2] = sizeof(RAGNX_KEY_WATCH) - 1 + RAGNX_UUID_LEN;
    argv[3] = channel ? (const char *) channel->data : "";
    lens[3] = channel ? channel->len : 0;

    /* longer than any wait: the ending script drops the set anyway */
    argv[4] = "60";
    lens[4] = 2;

    return ngx_http_ragnx_redis_eval(r, &ctx->wait, ctx->alcf->queue,
                                     ngx_http_ragnx_ask_watch_index, 5, argv,
                                     lens);
}


static void
ngx_http_ragnx_ask_status_reply(ngx_http_request_t *r, redisReply *reply,
    ngx_int_t rc)
{
    size_t                            i;
    ngx_str_t                        *dst;
    redisReply                       *k;
    ngx_http_ragnx_ask_status_ctx_t  *ctx;

    ctx = ngx_http_get_module_ctx(r, ngx_http_ragnx_ask_module);

    if (rc != NGX_OK) {
        return;
    }

    if (reply->type != REDIS_REPLY_ARRAY) {
        ctx->wait.rc = NGX_ERROR;
        return;
    }

    for (i = 0; i + 1 < reply->elements; i += 2) {
        k = reply->element[i];

        if (k->type != REDIS_REPLY_STRING) {
            continue;
        }

#define ngx_http_ragnx_ask_field(name)                                       \
        (k->len == sizeof(name) - 1 && ngx_strncmp(k->str, name, k->len) == 0)

        if (ngx_http_ragnx_ask_field("status")) {
            dst = &ctx->status;

        } else if (ngx_http_ragnx_ask_field("owner")) {
            dst = &ctx->job_owner;

        } else if (ngx_http_ragnx_ask_field("chatId")) {
            dst = &ctx->job_chat;

        } else if (ngx_http_ragnx_ask_field("answer")) {
            dst = &ctx->answer;

        } else if (ngx_http_ragnx_ask_field("sources")) {
            dst = &ctx->sources;

        } else if (ngx_http_ragnx_ask_field("error")) {
            dst = &ctx->error;

        } else if (ngx_http_ragnx_ask_field("truncated")) {
            dst = &ctx->truncated;

        } else {
            continue;
        }

        if (ngx_http_ragnx_ask_copy(r, dst, reply->element[i + 1])
            != NGX_OK)
        {
            ctx->wait.rc = NGX_ERROR;
            return;
        }
    }

    ctx->found = (reply->elements > 0);
}


static void
ngx_http_ragnx_ask_status_resume(ngx_http_request_t *r)
{
    json_t                           *body, *sources;
    ngx_int_t                         rc;
    json_error_t                      err;
    ngx_http_ragnx_ask_status_ctx_t  *ctx;

    ctx = ngx_http_get_module_ctx(r, ngx_http_ragnx_ask_module);

    ngx_log_debug3(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "ragnx ask status: rc:%i, found:%ui, status \"%V\"",
                   ctx->wait.rc, ctx->found, &ctx->status);

    ctx->w.reading = 0;

    if (ctx->long_poll && !ctx->expired && ctx->wait.rc == NGX_OK
        && ctx->found
        && ctx->job_owner.len == ctx->owner.len
        && ngx_strncmp(ctx->job_owner.data, ctx->owner.data, ctx->owner.len)
           == 0
        && !(ctx->status.len == 9
             && ngx_strncmp(ctx->status.data, "completed", 9) == 0)
        && !(ctx->status.len == 6
             && ngx_strncmp(ctx->status.data, "failed", 6) == 0))
    {
        /* pending: wait on, this read's reference kept for the answer */

        if (!ctx->w.linked) {
            ngx_rbtree_insert(&ngx_http_ragnx_ask_waiting, &ctx->w.node.node);
            ctx->w.linked = 1;
        }

        if (ctx->w.woken) {
            /* woken while this read was on its way: the next one sees */
            ngx_http_ragnx_ask_wake(&ctx->w);
        }

        return;
    }

    if (ctx->long_poll) {
        ngx_http_ragnx_ask_unlink(ctx);
    }

    if (ctx->wait.rc != NGX_OK) {
        rc = ngx_http_ragnx_send_error(r, NGX_HTTP_SERVICE_UNAVAILABLE,
                                       "queue unavailable", NULL);
        ngx_http_finalize_request(r, rc);
        return;
    }

    /* unknown and foreign jobs answer alike: ids cannot be probed */

    if (!ctx->found || ctx->status.len == 0
        || ctx->job_owner.len != ctx->owner.len
        || ngx_strncmp(ctx->job_owner.data, ctx->owner.data, ctx->owner.len)
           != 0)
    {
        rc = ngx_http_ragnx_send_error(r, NGX_HTTP_NOT_FOUND,
                                       "Job not found", NULL);
        ngx_http_finalize_request(r, rc);
        return;
    }

    body = json_pack("{s:s%, s:s%}",
                     "status", ctx->status.data, ctx->status.len,
                     "chatId", ctx->job_chat.data, ctx->job_chat.len);
    if (body == NULL) {
        ngx_http_finalize_request(r, NGX_HTTP_INTERNAL_SERVER_ERROR);
        return;
    }

    if (ctx->status.len == 9
        && ngx_strncmp(ctx->status.data, "completed", 9) == 0)
    {
        sources = NULL;

        if (ctx->sources.len) {
            sources = json_loadb((char *) ctx->sources.data, ctx->sources.len,
                                 0, &err);
        }

        if (!json_is_array(sources)) {
            json_decref(sources);
            sources = json_array();
        }

        json_object_set_new(body, "answer",
                            json_stringn((char *) ctx->answer.data,
                                         ctx->answer.len));
        json_object_set_new(body, "sources", sources);

        /* cut at the LLM's token limit: said, not hidden */
        if (ctx->truncated.len) {
            json_object_set_new(body, "truncated", json_true());
        }

    } else if (ctx->status.len == 6
               && ngx_strncmp(ctx->status.data, "failed", 6) == 0)
    {
        json_object_set_new(body, "error",
                            json_stringn((char *) ctx->error.data,
                                         ctx->error.len));
    }

    rc = ngx_http_ragnx_send_json(r, NGX_HTTP_OK, body);
    json_decref(body);

    ngx_http_finalize_request(r, rc);
}


/*
 * For the metrics' log phase, of a POST /api/ask that answered 202 or
 * 503: whether it follows a leader, or met a full queue.
 */

ngx_uint_t
ngx_http_ragnx_ask_outcome(ngx_http_request_t *r)
{
    ngx_http_ragnx_ask_ctx_t  *ctx;

    ctx = ngx_http_get_module_ctx(r, ngx_http_ragnx_ask_module);

    if (ctx == NULL) {
        return NGX_HTTP_RAGNX_METRICS_OK;
    }

    if (ctx->outcome.len == 8
        && ngx_strncmp(ctx->outcome.data, "follower", 8) == 0)
    {
        return NGX_HTTP_RAGNX_METRICS_FOLLOWER;
    }

    if (ctx->outcome.len == 4
        && ngx_strncmp(ctx->outcome.data, "full", 4) == 0)
    {
        return NGX_HTTP_RAGNX_METRICS_FULL;
    }

    return NGX_HTTP_RAGNX_METRICS_OK;
}


/*
 * A message on this worker's wake channel, inside the hiredis callback:
 * the id of a job that ended.  Every request waiting for it reads it
 * again.  NULL: the subscription is lost (registrations may be too), so
 * every waiting request reads again, and registers again.
 */

static void
ngx_http_ragnx_ask_woken(ngx_str_t *msg, void *data)
{
    ngx_str_t                     id;
    ngx_rbtree_node_t            *node;
    ngx_http_ragnx_ask_waiter_t  *w;

    if (msg == NULL) {
        /* streams register again with their next read */
        ngx_http_ragnx_ask_epoch++;

        while (ngx_http_ragnx_ask_waiting.root
               != ngx_http_ragnx_ask_waiting.sentinel)
        {
            node = ngx_rbtree_min(ngx_http_ragnx_ask_waiting.root,
                                  ngx_http_ragnx_ask_waiting.sentinel);
            ngx_http_ragnx_ask_wake((ngx_http_ragnx_ask_waiter_t *) node);
        }

        return;
    }

    if (msg->len != RAGNX_UUID_LEN) {
        return;
    }

    id = *msg;

    for ( ;; ) {
        w = (ngx_http_ragnx_ask_waiter_t *)
                ngx_str_rbtree_lookup(&ngx_http_ragnx_ask_waiting, &id,
                                      ngx_crc32_short(id.data, id.len));
        if (w == NULL) {
            return;
        }

        ngx_http_ragnx_ask_wake(w);
    }
}


/* out of the table, and read again now (or once the read on its way is in) */

static void
ngx_http_ragnx_ask_wake(ngx_http_ragnx_ask_waiter_t *w)
{
    if (w->linked) {
        ngx_rbtree_delete(&ngx_http_ragnx_ask_waiting, &w->node.node);
        w->linked = 0;
    }

    w->woken = 1;

    if (!w->reading && !w->event.posted) {
        ngx_post_event(&w->event, &ngx_posted_events);
    }
}


static void
ngx_http_ragnx_ask_wait_timeout(ngx_event_t *ev)
{
    ngx_http_ragnx_ask_status_ctx_t  *ctx;

    ctx = ev->data;
    ctx->expired = 1;

    ngx_http_ragnx_ask_wake(&ctx->w);
}


/* posted: the wait is over, or the job ended; read it again */

static void
ngx_http_ragnx_ask_wait_event(ngx_event_t *ev)
{
    ngx_connection_t                 *c;
    ngx_http_request_t               *r;
    ngx_http_ragnx_ask_status_ctx_t  *ctx;

    ctx = ev->data;
    r = ctx->request;
    c = r->connection;

    ctx->w.woken = 0;

    if (ngx_http_ragnx_ask_status_read(r, ctx) != NGX_OK) {
        ngx_http_ragnx_ask_unlink(ctx);
        ngx_http_finalize_request(r,
            ngx_http_ragnx_send_error(r, NGX_HTTP_SERVICE_UNAVAILABLE,
                                      "queue unavailable", NULL));
        ngx_http_run_posted_requests(c);
        return;
    }

    /* the new read holds a reference of its own: drop the wait's */
    ngx_http_finalize_request(r, NGX_DONE);
    ngx_http_run_posted_requests(c);
}


/* a waiter out of the table, its timer stopped, its posted read dropped */

static void
ngx_http_ragnx_ask_waiter_unlink(ngx_http_ragnx_ask_waiter_t *w,
    ngx_event_t *timer)
{
    if (w->linked) {
        ngx_rbtree_delete(&ngx_http_ragnx_ask_waiting, &w->node.node);
        w->linked = 0;
    }

    if (timer->timer_set) {
        ngx_del_timer(timer);
    }

    if (w->event.posted) {
        ngx_delete_posted_event(&w->event);
    }
}


static void
ngx_http_ragnx_ask_unlink(ngx_http_ragnx_ask_status_ctx_t *ctx)
{
    ngx_http_ragnx_ask_waiter_unlink(&ctx->w, &ctx->timer);
}


static void
ngx_http_ragnx_ask_wait_cleanup(void *data)
{
    ngx_http_ragnx_ask_unlink(data);
}


/* GET /api/ask/{jobId}/events */


static ngx_int_t
ngx_http_ragnx_ask_events(ngx_http_request_t *r,
    ngx_http_ragnx_ask_loc_conf_t *alcf)
{
    u_char                           *p;
    ngx_str_t                         id, sub, *last;
    ngx_table_elt_t                  *h;
    ngx_http_ragnx_ask_events_ctx_t  *ctx;

    if (ngx_http_ragnx_jwt_subject(r, &sub) != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    switch (ngx_http_ragnx_ask_path_id(r, alcf, 1, &id)) {

    case NGX_OK:
        break;

    case NGX_DECLINED:
        return ngx_http_ragnx_send_error(r, NGX_HTTP_BAD_REQUEST,
                                         "Invalid job id", NULL);

    default:
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    /* resumed after the last event the client has: "<ms>-<seq>" */

    h = ngx_http_ragnx_header_in(r, "Last-Event-ID");
    last = h ? &h->value : NULL;

    if (last) {
        p = last->data;

        while (p < last->data + last->len
               && ((*p >= '0' && *p <= '9') || *p == '-'))
        {
            p++;
        }

        if (last->len == 0 || last->len >= 48 || p != last->data + last->len
            || ngx_strlchr(last->data, p, '-') == NULL)
        {
            return ngx_http_ragnx_send_error(r, NGX_HTTP_BAD_REQUEST,
                                             "Invalid Last-Event-ID", NULL);
        }
    }

    ctx = ngx_http_ragnx_ask_events_ctx(r, alcf, &sub, id.data, last);
    if (ctx == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (ngx_http_ragnx_ask_events_read(r, ctx) != NGX_OK) {
        return ngx_http_ragnx_send_error(r, NGX_HTTP_SERVICE_UNAVAILABLE,
                                         "queue unavailable", NULL);
    }

    return NGX_DONE;
}


/* POST /api/ask with Accept: text/event-stream */

static ngx_uint_t
ngx_http_ragnx_ask_wants_events(ngx_http_request_t *r)
{
    ngx_table_elt_t  *h;

    h = ngx_http_ragnx_header_in(r, "Accept");

    return h && ngx_strlcasestrn(h->value.data,
                                 h->value.data + h->value.len,
                                 (u_char *) "text/event-stream",
                                 sizeof("text/event-stream") - 2)
                != NULL;
}


/*
 * The answer to a question as events: "job" first ({"jobId","chatId"},
 * and "source":"cache" for a hit), then a hit's whole answer at once
 * ("delta", "done"), or the job's events as they are written, exactly as
 * GET /api/ask/{jobId}/events streams them.
 */

static ngx_int_t
ngx_http_ragnx_ask_stream(ngx_http_request_t *r, ngx_http_ragnx_ask_ctx_t *ctx,
    ngx_http_ragnx_ask_loc_conf_t *alcf)
{
    u_char                           *p, *end;
    ngx_int_t                         rc;
    ngx_buf_t                        *b;
    ngx_str_t                         answer;
    ngx_uint_t                        hit;
    ngx_chain_t                      *cl;
    ngx_http_ragnx_ask_events_ctx_t  *ev;

    hit = ngx_strncmp(ctx->outcome.data, "hit", 3) == 0;
    ngx_str_null(&answer);

    if (hit) {
        /* the answer's JSON string as the pool wrote it: {"answer":"..." */

        p = ctx->cached.data + 10;
        end = ctx->cached.data + ctx->cached.len;

        if (p < end && *p == '"') {
            for (p++; p < end && *p != '"'; p++) {
                if (*p == '\\') {
                    p++;
                }
            }
        }

        if (p >= end) {
            return ngx_http_ragnx_send_error(r, NGX_HTTP_SERVICE_UNAVAILABLE,
                                             "cache unavailable", NULL);
        }

        answer.data = ctx->cached.data + 10;
        answer.len = p + 1 - answer.data;
    }

    b = ngx_create_temp_buf(r->pool, 256 + answer.len
                                     + (hit ? ctx->cached.len : 0));
    cl = ngx_alloc_chain_link(r->pool);

    if (b == NULL || cl == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    b->last = ngx_sprintf(b->last, "event: job\ndata: {\"jobId\":\"%V\","
                          "\"chatId\":\"%V\"%s}\n\n", &ctx->job_id,
                          &ctx->chat_id, hit ? ",\"source\":\"cache\"" : "");

    if (hit) {
        b->last = ngx_sprintf(b->last, "event: delta\ndata: {\"text\":%V}"
                              "\n\nevent: done\ndata: %V\n\n", &answer,
                              &ctx->cached);
    }

    cl->buf = b;
    cl->next = NULL;

    rc = ngx_http_ragnx_ask_events_headers(r);

    if (rc == NGX_ERROR || rc > NGX_OK || r->header_only) {
        return rc;
    }

    if (hit) {
        return ngx_http_ragnx_ask_events_send(r, cl, 1);
    }

    /* the request's ctx becomes the stream's */

    ev = ngx_http_ragnx_ask_events_ctx(r, alcf, &ctx->owner, ctx->job_id.data,
                                       NULL);
    if (ev == NULL) {
        return NGX_ERROR;
    }

    ev->started = 1;

    if (ngx_http_ragnx_ask_events_send(r, cl, 0) == NGX_ERROR) {
        return NGX_ERROR;
    }

    if (ngx_http_ragnx_ask_events_read(r, ev) != NGX_OK) {
        return ngx_http_ragnx_ask_events_send(r,
                   ngx_http_ragnx_ask_events_error(r), 1);
    }

    return NGX_DONE;
}


/* a stream's state, the request's ctx from now on */

static ngx_http_ragnx_ask_events_ctx_t *
ngx_http_ragnx_ask_events_ctx(ngx_http_request_t *r,
    ngx_http_ragnx_ask_loc_conf_t *alcf, ngx_str_t *owner, u_char *id,
    ngx_str_t *last)
{
    ngx_pool_cleanup_t               *cln;
    ngx_http_ragnx_ask_events_ctx_t  *ctx;

    ctx = ngx_http_ragnx_ask_ctx(r,
                                 sizeof(ngx_http_ragnx_ask_events_ctx_t));
    cln = ngx_pool_cleanup_add(r->pool, 0);

    if (ctx == NULL || cln == NULL) {
        return NULL;
    }

    cln->handler = ngx_http_ragnx_ask_events_cleanup;
    cln->data = ctx;

    ctx->request = r;
    ctx->alcf = alcf;
    ctx->owner = *owner;
    ngx_strlow(ctx->id, id, RAGNX_UUID_LEN);
    ngx_http_ragnx_ask_job_id(r, ctx->id);

    if (last) {
        ctx->last_len = last->len;
        ngx_memcpy(ctx->last, last->data, last->len);

    } else {
        ctx->last[0] = '0';
        ctx->last_len = 1;
    }

    ctx->w.event.handler = ngx_http_ragnx_ask_events_event;
    ctx->w.event.data = ctx;
    ctx->w.event.log = r->connection->log;

    ctx->ping.handler = ngx_http_ragnx_ask_events_ping;
    ctx->ping.data = ctx;
    ctx->ping.log = r->connection->log;

    return ctx;
}


static ngx_int_t
ngx_http_ragnx_ask_events_read(ngx_http_request_t *r,
    ngx_http_ragnx_ask_events_ctx_t *ctx)
{
    u_char                          *p, *key;
    size_t                           lens[8];
    ngx_str_t                       *channel;
    const char                      *argv[8];
    ngx_http_ragnx_ask_main_conf_t  *amcf;

    key = ngx_pnalloc(r->pool, sizeof(RAGNX_KEY_JOB) - 1 + RAGNX_UUID_LEN);
    if (key == NULL) {
        return NGX_ERROR;
    }

    p = ngx_cpymem(key, RAGNX_KEY_JOB, sizeof(RAGNX_KEY_JOB) - 1);
    ngx_memcpy(p, ctx->id, RAGNX_UUID_LEN);

    amcf = ngx_http_get_module_main_conf(r, ngx_http_ragnx_ask_module);
    channel = ngx_http_ragnx_redis_channel(amcf->wake);

    argv[0] = "1";
    lens[0] = 1;
    argv[1] = (const char *) key;
    lens[1] = sizeof(RAGNX_KEY_JOB) - 1 + RAGNX_UUID_LEN;
    argv[2] = (const char *) ctx->owner.data;
    lens[2] = ctx->owner.len;
    argv[3] = (const char *) ctx->last;
    lens[3] = ctx->last_len;
    argv[4] = NGX_HTTP_RAGNX_ASK_EVENTS_COUNT;
    lens[4] = sizeof(NGX_HTTP_RAGNX_ASK_EVENTS_COUNT) - 1;
    argv[5] = channel ? (const char *) channel->data : "";
    lens[5] = channel ? channel->len : 0;
    argv[6] = NGX_HTTP_RAGNX_ASK_LISTEN_KEEP;
    lens[6] = sizeof(NGX_HTTP_RAGNX_ASK_LISTEN_KEEP) - 1;

    /* registered by this read: the next may be shared; not: this again */
    ctx->epoch = ngx_http_ragnx_ask_epoch - (channel == NULL);
    ctx->registered = ngx_current_msec;

    ctx->out = NULL;
    ctx->n = 0;
    ctx->found = 0;
    ctx->wait.reply = ngx_http_ragnx_ask_events_reply;
    ctx->wait.resume = ngx_http_ragnx_ask_events_resume;
    ctx->wait.rc = NGX_OK;
    ctx->w.reading = 1;

    return ngx_http_ragnx_redis_eval(r, &ctx->wait, ctx->alcf->queue,
                                     ngx_http_ragnx_ask_events_index, 7, argv,
                                     lens);
}


/* inside the hiredis callback: the events formatted into request memory */

static void
ngx_http_ragnx_ask_events_reply(ngx_http_request_t *r, redisReply *reply,
    ngx_int_t rc)
{
    size_t                            i;
    redisReply                       *e;
    ngx_chain_t                     **ll;
    ngx_http_ragnx_ask_events_ctx_t  *ctx;

    ctx = ngx_http_get_module_ctx(r, ngx_http_ragnx_ask_module);

    if (rc != NGX_OK) {
        return;
    }

    if (reply->type != REDIS_REPLY_ARRAY) {
        ctx->wait.rc = NGX_ERROR;
        return;
    }

    if (reply->elements == 0) {
        return;     /* no such job, or another user's */
    }

    if (reply->elements != 2
        || reply->element[0]->type != REDIS_REPLY_STRING
        || reply->element[0]->len != RAGNX_UUID_LEN
        || reply->element[1]->type != REDIS_REPLY_ARRAY)
    {
        ctx->wait.rc = NGX_ERROR;
        return;
    }

    ctx->found = 1;
    ngx_memcpy(ctx->job, reply->element[0]->str, RAGNX_UUID_LEN);

    ll = &ctx->out;

    for (i = 0; i < reply->element[1]->elements; i++) {
        e = reply->element[1]->element[i];

        if (ngx_http_ragnx_ask_events_entry(r, ctx, e, &ll) != NGX_OK) {
            ctx->wait.rc = NGX_ERROR;
            return;
        }

        ctx->n++;
    }
}


/*
 * One entry as an event: "delta" {"text"}, "restart" {"attempt"}, "done"
 * with the result, "error" {"error"}; its stream id as the event's id.
 */

static ngx_int_t
ngx_http_ragnx_ask_events_entry(ngx_http_request_t *r,
    ngx_http_ragnx_ask_events_ctx_t *ctx, redisReply *e, ngx_chain_t ***ll)
{
    size_t        j, len;
    ngx_buf_t    *b;
    ngx_str_t     t, a, d, res, err;
    redisReply   *f, *v, *eid;
    ngx_chain_t  *cl;

    if (e->type != REDIS_REPLY_ARRAY || e->elements != 2
        || e->element[0]->type != REDIS_REPLY_STRING
        || e->element[0]->len >= sizeof(ctx->last)
        || e->element[1]->type != REDIS_REPLY_ARRAY)
    {
        return NGX_ERROR;
    }

    eid = e->element[0];
    ngx_str_null(&t);
    ngx_str_null(&a);
    ngx_str_null(&d);
    ngx_str_null(&res);
    ngx_str_null(&err);

    for (j = 0; j + 1 < e->element[1]->elements; j += 2) {
        f = e->element[1]->element[j];
        v = e->element[1]->element[j + 1];

        if (f->type != REDIS_REPLY_STRING || v->type != REDIS_REPLY_STRING
            || f->len != 1)
        {
            continue;
        }

        switch (f->str[0]) {
        case 't': t.data = (u_char *) v->str; t.len = v->len; break;
        case 'a': a.data = (u_char *) v->str; a.len = v->len; break;
        case 'd': d.data = (u_char *) v->str; d.len = v->len; break;
        case 'r': res.data = (u_char *) v->str; res.len = v->len; break;
        case 'e': err.data = (u_char *) v->str; err.len = v->len; break;
        }
    }

    len = sizeof("id: \nevent: restart\ndata: {\"attempt\":}\n\n") - 1
          + eid->len + a.len + res.len
          + d.len + ngx_escape_json(NULL, d.data, d.len)
          + err.len + ngx_escape_json(NULL, err.data, err.len)
          + sizeof("{\"text\":\"\"}{\"error\":\"\"}");

    b = ngx_create_temp_buf(r->pool, len);
    cl = ngx_alloc_chain_link(r->pool);

    if (b == NULL || cl == NULL) {
        return NGX_ERROR;
    }

    b->last = ngx_sprintf(b->last, "id: %*s\n", eid->len, eid->str);

    if (t.len == 5 && ngx_strncmp(t.data, "delta", 5) == 0) {
        b->last = ngx_cpymem(b->last, "event: delta\ndata: {\"text\":\"",
                             sizeof("event: delta\ndata: {\"text\":\"") - 1);
        b->last = (u_char *) ngx_escape_json(b->last, d.data, d.len);
        b->last = ngx_cpymem(b->last, "\"}", 2);

    } else if (t.len == 7 && ngx_strncmp(t.data, "restart", 7) == 0) {
        b->last = ngx_sprintf(b->last, "event: restart\ndata: {\"attempt\":"
                              "%V}", &a);

    } else if (t.len == 4 && ngx_strncmp(t.data, "done", 4) == 0) {
        b->last = ngx_sprintf(b->last, "event: done\ndata: %V", &res);
        ctx->ended = 1;

    } else if (t.len == 5 && ngx_strncmp(t.data, "error", 5) == 0) {
        b->last = ngx_cpymem(b->last, "event: error\ndata: {\"error\":\"",
                             sizeof("event: error\ndata: {\"error\":\"") - 1);
        b->last = (u_char *) ngx_escape_json(b->last, err.data, err.len);
        b->last = ngx_cpymem(b->last, "\"}", 2);
        ctx->ended = 1;

    } else {
        return NGX_OK;      /* a kind of a newer pool: skipped */
    }

    b->last = ngx_cpymem(b->last, "\n\n", 2);

    ngx_memcpy(ctx->last, eid->str, eid->len);
    ctx->last_len = eid->len;

    cl->buf = b;
    cl->next = NULL;
    **ll = cl;
    *ll = &cl->next;

    return NGX_OK;
}


/* 200 text/event-stream, not to be buffered on the way */

static ngx_int_t
ngx_http_ragnx_ask_events_headers(ngx_http_request_t *r)
{
    ngx_str_t                  v;
    ngx_http_core_loc_conf_t  *clcf;

    /*
     * Events are small writes apart in time: without TCP_NODELAY (nginx
     * sets it only on keep-alive connections) an event waits behind the
     * unacknowledged one before it, for the client's delayed ACK.
     */
    clcf = ngx_http_get_module_loc_conf(r, ngx_http_core_module);

    if (clcf->tcp_nodelay && ngx_tcp_nodelay(r->connection) != NGX_OK) {
        return NGX_ERROR;
    }

    r->headers_out.status = NGX_HTTP_OK;
    r->headers_out.content_length_n = -1;
    ngx_str_set(&r->headers_out.content_type, "text/event-stream");
    r->headers_out.content_type_len = r->headers_out.content_type.len;
    r->headers_out.content_type_lowcase = NULL;

    ngx_str_set(&v, "no-cache");

    if (ngx_http_ragnx_ask_header(r, "Cache-Control", &v) != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    /* a proxy in front must not hold the events back */
    ngx_str_set(&v, "no");

    if (ngx_http_ragnx_ask_header(r, "X-Accel-Buffering", &v) != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    return ngx_http_send_header(r);
}


static void
ngx_http_ragnx_ask_events_resume(ngx_http_request_t *r)
{
    ngx_int_t                         rc;
    ngx_http_ragnx_ask_events_ctx_t  *ctx;

    ctx = ngx_http_get_module_ctx(r, ngx_http_ragnx_ask_module);
    ctx->w.reading = 0;

    if (!ctx->started) {
        if (ctx->wait.rc != NGX_OK) {
            ngx_http_finalize_request(r,
                ngx_http_ragnx_send_error(r, NGX_HTTP_SERVICE_UNAVAILABLE,
                                          "queue unavailable", NULL));
            return;
        }

        /* unknown and foreign jobs answer alike: ids cannot be probed */

        if (!ctx->found) {
            ngx_http_finalize_request(r,
                ngx_http_ragnx_send_error(r, NGX_HTTP_NOT_FOUND,
                                          "Job not found", NULL));
            return;
        }

        rc = ngx_http_ragnx_ask_events_headers(r);

        if (rc == NGX_ERROR || rc > NGX_OK || r->header_only) {
            ngx_http_finalize_request(r, rc);
            return;
        }

        ctx->started = 1;
    }

    if (ctx->wait.rc != NGX_OK || !ctx->found) {
        /* Redis away, or the job expired meanwhile: the stream ends */
        ngx_http_ragnx_ask_unlink_events(ctx);
        ngx_http_finalize_request(r, ngx_http_ragnx_ask_events_send(r,
                                  ngx_http_ragnx_ask_events_error(r), 1));
        return;
    }

    rc = ngx_http_ragnx_ask_events_send(r, ctx->out, ctx->ended);

    if (rc == NGX_ERROR || ctx->ended) {
        ngx_http_ragnx_ask_unlink_events(ctx);
        ngx_http_finalize_request(r, rc);
        return;
    }

    if (ctx->n == NGX_HTTP_RAGNX_ASK_EVENTS_N || ctx->w.woken) {
        /* more to read now: a full read, or written meanwhile */
        ctx->w.woken = 0;

        if (ngx_http_ragnx_ask_events_next(r, ctx) != NGX_OK) {
            ngx_http_finalize_request(r, ngx_http_ragnx_ask_events_send(r,
                                      ngx_http_ragnx_ask_events_error(r), 1));
        }

        return;
    }

    /* wait for the next piece, under the id of the job being written */

    if (!ctx->linked_once) {
        /*
         * The first read could not be in the table (whose job's events
         * it reads was not known): a piece written since, whose wake-up
         * found nothing, is read now.
         */
        ctx->linked_once = 1;

        if (ngx_http_ragnx_ask_events_next(r, ctx) != NGX_OK) {
            ngx_http_ragnx_ask_unlink_events(ctx);
            ngx_http_finalize_request(r, ngx_http_ragnx_ask_events_send(r,
                                      ngx_http_ragnx_ask_events_error(r), 1));
        }

        return;
    }

    ngx_http_ragnx_ask_events_link(ctx);

    if (!ctx->ping.timer_set) {
        ngx_add_timer(&ctx->ping, ctx->alcf->ping);
    }

    /* this read's reference is kept until the stream ends */
}


/* the events after the headers, flushed; the last buffer ends the body */

static ngx_int_t
ngx_http_ragnx_ask_events_send(ngx_http_request_t *r, ngx_chain_t *out,
    ngx_uint_t last)
{
    ngx_buf_t    *b;
    ngx_chain_t  *cl, **ll;

    for (ll = &out; *ll; ll = &(*ll)->next) { /* void */ }

    b = ngx_calloc_buf(r->pool);
    cl = ngx_alloc_chain_link(r->pool);

    if (b == NULL || cl == NULL) {
        return NGX_ERROR;
    }

    if (last) {
        b->last_buf = (r == r->main);
        b->last_in_chain = 1;

    } else {
        b->flush = 1;
    }

    cl->buf = b;
    cl->next = NULL;
    *ll = cl;

    return ngx_http_output_filter(r, out);
}


/* woken: read on from the last event sent */

static void
ngx_http_ragnx_ask_events_event(ngx_event_t *ev)
{
    ngx_connection_t                 *c;
    ngx_http_request_t               *r;
    ngx_http_ragnx_ask_events_ctx_t  *ctx;

    ctx = ev->data;
    r = ctx->request;
    c = r->connection;

    if (ctx->fetched) {
        /* a shared read is in: the stream goes on as after its own */
        ctx->fetched = 0;
        ngx_http_ragnx_ask_events_resume(r);
        ngx_http_run_posted_requests(c);
        return;
    }

    ctx->w.woken = 0;

    if (ngx_http_ragnx_ask_events_next(r, ctx) != NGX_OK) {
        ngx_http_ragnx_ask_unlink_events(ctx);
        ngx_http_finalize_request(r, ngx_http_ragnx_ask_events_send(r,
                                  ngx_http_ragnx_ask_events_error(r), 1));
    }

    ngx_http_run_posted_requests(c);
}


/*
 * The next read of a stream that has started, the reference of its wait
 * handed to it: shared with the streams at the same entry while the
 * worker's channel is still registered, else the script's, which
 * registers it again.
 */

static ngx_int_t
ngx_http_ragnx_ask_events_next(ngx_http_request_t *r,
    ngx_http_ragnx_ask_events_ctx_t *ctx)
{
    /*
     * In the table before the read is sent: a piece whose wake-up comes
     * in later wakes it, and one whose wake-up came in earlier was
     * written before this read, which returns it.
     */
    ngx_http_ragnx_ask_events_link(ctx);

    if (ctx->epoch == ngx_http_ragnx_ask_epoch
        && !ngx_http_ragnx_ask_events_renew(ctx))
    {
        return ngx_http_ragnx_ask_events_share(r, ctx);
    }

    if (ngx_http_ragnx_ask_events_read(r, ctx) != NGX_OK) {
        return NGX_ERROR;
    }

    /* the new read holds a reference of its own: drop the wait's */
    ngx_http_finalize_request(r, NGX_DONE);

    return NGX_OK;
}


/* join the shared read after the stream's last entry, or start it */

static ngx_int_t
ngx_http_ragnx_ask_events_share(ngx_http_request_t *r,
    ngx_http_ragnx_ask_events_ctx_t *ctx)
{
    u_char                      *p;
    size_t                       lens[6];
    uint32_t                     hash;
    ngx_str_t                    k;
    const char                  *argv[6];
    ngx_http_ragnx_ask_fetch_t  *f;
    u_char                       id[RAGNX_UUID_LEN + sizeof(ctx->last)];
    u_char                       key[sizeof(RAGNX_KEY_EVENTS) - 1
                                     + RAGNX_UUID_LEN];
    u_char                       after[1 + sizeof(ctx->last)];

    p = ngx_cpymem(id, ctx->job, RAGNX_UUID_LEN);
    p = ngx_cpymem(p, ctx->last, ctx->last_len);
    k.data = id;
    k.len = p - id;
    hash = ngx_crc32_short(k.data, k.len);

    f = (ngx_http_ragnx_ask_fetch_t *)
            ngx_str_rbtree_lookup(&ngx_http_ragnx_ask_fetching, &k, hash);

    if (f == NULL) {
        f = ngx_alloc(sizeof(ngx_http_ragnx_ask_fetch_t), r->connection->log);
        if (f == NULL) {
            return NGX_ERROR;
        }

        ngx_memcpy(f->key, id, k.len);
        f->node.str.data = f->key;
        f->node.str.len = k.len;
        f->node.node.key = hash;
        ngx_queue_init(&f->streams);

        p = ngx_cpymem(key, RAGNX_KEY_EVENTS, sizeof(RAGNX_KEY_EVENTS) - 1);
        ngx_memcpy(p, ctx->job, RAGNX_UUID_LEN);

        after[0] = '(';
        ngx_memcpy(after + 1, ctx->last, ctx->last_len);

        argv[0] = "XRANGE";
        lens[0] = 6;
        argv[1] = (const char *) key;
        lens[1] = sizeof(key);
        argv[2] = (const char *) after;
        lens[2] = 1 + ctx->last_len;
        argv[3] = "+";
        lens[3] = 1;
        argv[4] = "COUNT";
        lens[4] = 5;
        argv[5] = NGX_HTTP_RAGNX_ASK_EVENTS_COUNT;
        lens[5] = sizeof(NGX_HTTP_RAGNX_ASK_EVENTS_COUNT) - 1;

        if (ngx_http_ragnx_redis_send(ctx->alcf->queue,
                                      ngx_http_ragnx_ask_events_fetched, f,
                                      6, argv, lens)
            != NGX_OK)
        {
            ngx_free(f);
            return NGX_ERROR;
        }

        ngx_rbtree_insert(&ngx_http_ragnx_ask_fetching, &f->node.node);
    }

    ngx_queue_insert_tail(&f->streams, &ctx->queue);
    ctx->fetch = f;
    ctx->w.reading = 1;

    return NGX_OK;
}


/*
 * Inside the hiredis callback (reply NULL: Redis away or late): the
 * entries formatted into each waiting stream's memory, as its own read's
 * would be, and the stream resumed from a posted event.
 */

static void
ngx_http_ragnx_ask_events_fetched(void *data, redisReply *reply)
{
    size_t                            i;
    ngx_queue_t                      *q;
    ngx_chain_t                     **ll;
    ngx_http_ragnx_ask_fetch_t       *f;
    ngx_http_ragnx_ask_events_ctx_t  *ctx;

    f = data;
    ngx_rbtree_delete(&ngx_http_ragnx_ask_fetching, &f->node.node);

    while (!ngx_queue_empty(&f->streams)) {
        q = ngx_queue_head(&f->streams);
        ngx_queue_remove(q);
        ctx = ngx_queue_data(q, ngx_http_ragnx_ask_events_ctx_t, queue);
        ctx->fetch = NULL;

        ctx->out = NULL;
        ctx->n = 0;
        ctx->wait.rc = NGX_OK;

        if (reply == NULL || reply->type != REDIS_REPLY_ARRAY) {
            ctx->wait.rc = NGX_ERROR;

        } else {
            ll = &ctx->out;

            for (i = 0; i < reply->elements; i++) {
                if (ngx_http_ragnx_ask_events_entry(ctx->request, ctx,
                                                    reply->element[i], &ll)
                    != NGX_OK)
                {
                    ctx->wait.rc = NGX_ERROR;
                    break;
                }

                ctx->n++;
            }
        }

        ctx->fetched = 1;

        if (!ctx->w.event.posted) {
            ngx_post_event(&ctx->w.event, &ngx_posted_events);
        }
    }

    ngx_free(f);
}


/* an idle stream: a comment, so that proxies keep it open */

static void
ngx_http_ragnx_ask_events_ping(ngx_event_t *ev)
{
    ngx_buf_t                        *b;
    ngx_chain_t                      *cl;
    ngx_connection_t                 *c;
    ngx_http_request_t               *r;
    ngx_http_ragnx_ask_events_ctx_t  *ctx;

    ctx = ev->data;
    r = ctx->request;
    c = r->connection;

    b = ngx_create_temp_buf(r->pool, sizeof(": ping\n\n") - 1);
    cl = ngx_alloc_chain_link(r->pool);

    if (b == NULL || cl == NULL) {
        return;
    }

    b->last = ngx_cpymem(b->last, ": ping\n\n", sizeof(": ping\n\n") - 1);
    cl->buf = b;
    cl->next = NULL;

    if (ngx_http_ragnx_ask_events_send(r, cl, 0) == NGX_ERROR) {
        ngx_http_ragnx_ask_unlink_events(ctx);
        ngx_http_finalize_request(r, NGX_ERROR);
        ngx_http_run_posted_requests(c);
        return;
    }

    ngx_add_timer(&ctx->ping, ctx->alcf->ping);

    /* an idle stream renews the registration that pieces wake it by */

    if (ctx->w.linked && !ctx->w.reading && !ctx->w.event.posted
        && ngx_http_ragnx_ask_events_renew(ctx))
    {
        ngx_http_ragnx_ask_wake(&ctx->w);
    }
}


/*
 * Whether the worker's registration as the job's listener is due for
 * renewal: it expires in Redis after NGX_HTTP_RAGNX_ASK_LISTEN_KEEP, and
 * shared reads do not renew it.  Renewed by the script's read at half of
 * that, or every four pings if sooner: an idle stream's pings are cheap,
 * a read of the script each is not.
 */

static ngx_uint_t
ngx_http_ragnx_ask_events_renew(ngx_http_ragnx_ask_events_ctx_t *ctx)
{
    return ngx_current_msec - ctx->registered
           >= ngx_min(NGX_HTTP_RAGNX_ASK_LISTEN_MS / 2, 4 * ctx->alcf->ping);
}


/* what a stream that cannot go on sends last */

static ngx_chain_t *
ngx_http_ragnx_ask_events_error(ngx_http_request_t *r)
{
    ngx_buf_t    *b;
    ngx_chain_t  *cl;

    b = ngx_calloc_buf(r->pool);
    cl = ngx_alloc_chain_link(r->pool);

    if (b == NULL || cl == NULL) {
        return NULL;
    }

    b->pos = (u_char *) NGX_HTTP_RAGNX_ASK_EVENTS_GONE;
    b->last = b->pos + sizeof(NGX_HTTP_RAGNX_ASK_EVENTS_GONE) - 1;
    b->memory = 1;

    cl->buf = b;
    cl->next = NULL;

    return cl;
}


static void
ngx_http_ragnx_ask_events_link(ngx_http_ragnx_ask_events_ctx_t *ctx)
{
    if (ctx->w.linked) {
        return;
    }

    ctx->w.node.str.data = ctx->job;
    ctx->w.node.str.len = RAGNX_UUID_LEN;
    ctx->w.node.node.key = ngx_crc32_short(ctx->job, RAGNX_UUID_LEN);
    ngx_rbtree_insert(&ngx_http_ragnx_ask_waiting, &ctx->w.node.node);
    ctx->w.linked = 1;
}


static void
ngx_http_ragnx_ask_unlink_events(ngx_http_ragnx_ask_events_ctx_t *ctx)
{
    if (ctx->fetch) {
        ngx_queue_remove(&ctx->queue);
        ctx->fetch = NULL;
    }

    ngx_http_ragnx_ask_waiter_unlink(&ctx->w, &ctx->ping);
}


static void
ngx_http_ragnx_ask_events_cleanup(void *data)
{
    ngx_http_ragnx_ask_unlink_events(data);
}


/* helpers */


/* the handler's own ctx: ngx_http_ragnx_ask_ctx_t or _status_ctx_t */

static void *
ngx_http_ragnx_ask_ctx(ngx_http_request_t *r, size_t size)
{
    void  *ctx;

    ctx = ngx_pcalloc(r->pool, size);
    if (ctx == NULL) {
        return NULL;
    }

    ngx_http_set_ctx(r, ctx, ngx_http_ragnx_ask_module);

    /* notice a client that goes away while the reply is pending */
    r->read_event_handler = ngx_http_test_reading;

    return ctx;
}


static ngx_int_t
ngx_http_ragnx_ask_copy(ngx_http_request_t *r, ngx_str_t *dst,
    redisReply *reply)
{
    if (reply->type == REDIS_REPLY_NIL) {
        ngx_str_null(dst);
        return NGX_OK;
    }

    if (reply->type != REDIS_REPLY_STRING
        && reply->type != REDIS_REPLY_STATUS)
    {
        return NGX_ERROR;
    }

    /* NUL-terminated: some values go to hiredis as C strings again */
    dst->data = ngx_pnalloc(r->pool, reply->len + 1);
    if (dst->data == NULL) {
        return NGX_ERROR;
    }

    ngx_memcpy(dst->data, reply->str, reply->len);
    dst->data[reply->len] = '\0';
    dst->len = reply->len;

    return NGX_OK;
}


static ngx_int_t
ngx_http_ragnx_ask_header(ngx_http_request_t *r, const char *name,
    ngx_str_t *value)
{
    ngx_table_elt_t  *h;

    h = ngx_list_push(&r->headers_out.headers);
    if (h == NULL) {
        return NGX_ERROR;
    }

    h->hash = 1;
    h->key.data = (u_char *) name;
    h->key.len = ngx_strlen(name);
    h->value = *value;

    /*
     * Location is not set as r->headers_out.location on purpose: the job
     * URI stays relative instead of being made absolute by nginx.
     */

    return NGX_OK;
}


/*
 * $ragnx_job_id is set where the job id becomes known, into the
 * variable's slot of r->variables (RAGNX_UUID_LEN bytes the request
 * owns): an internal redirect to an error page keeps it, as it does
 * $ragnx_route.  Never set: not found ("-" in a log).
 */

static void
ngx_http_ragnx_ask_job_id(ngx_http_request_t *r, u_char *id)
{
    ngx_http_variable_value_t  *v;

    v = &r->variables[ngx_http_ragnx_ask_job_id_index];

    v->data = id;
    v->len = RAGNX_UUID_LEN;
    v->valid = 1;
    v->no_cacheable = 0;
    v->not_found = 0;
}


static ngx_int_t
ngx_http_ragnx_ask_job_id_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data)
{
    v->not_found = 1;

    return NGX_OK;
}


/* configuration */


static ngx_int_t
ngx_http_ragnx_ask_add_variables(ngx_conf_t *cf)
{
    ngx_http_variable_t  *var;

    var = ngx_http_add_variable(cf, &ngx_http_ragnx_ask_job_id_name, 0);
    if (var == NULL) {
        return NGX_ERROR;
    }

    var->get_handler = ngx_http_ragnx_ask_job_id_variable;

    return NGX_OK;
}


static ngx_int_t
ngx_http_ragnx_ask_init(ngx_conf_t *cf)
{
    ngx_http_ragnx_ask_job_id_index =
        ngx_http_get_variable_index(cf, &ngx_http_ragnx_ask_job_id_name);

    return ngx_http_ragnx_ask_job_id_index == NGX_ERROR ? NGX_ERROR : NGX_OK;
}


static void *
ngx_http_ragnx_ask_create_main_conf(ngx_conf_t *cf)
{
    ngx_http_ragnx_ask_main_conf_t  *amcf;

    amcf = ngx_pcalloc(cf->pool, sizeof(ngx_http_ragnx_ask_main_conf_t));
    if (amcf == NULL) {
        return NULL;
    }

    amcf->gen_refresh = NGX_CONF_UNSET_MSEC;

    return amcf;
}


static char *
ngx_http_ragnx_ask_init_main_conf(ngx_conf_t *cf, void *conf)
{
    ngx_http_ragnx_ask_main_conf_t *amcf = conf;

    ngx_conf_init_msec_value(amcf->gen_refresh, 1000);

    return NGX_CONF_OK;
}


static ngx_int_t
ngx_http_ragnx_ask_init_process(ngx_cycle_t *cycle)
{
    ngx_http_ragnx_ask_worker_t     *w;
    ngx_http_ragnx_ask_main_conf_t  *amcf;

    if (ngx_process != NGX_PROCESS_WORKER
        && ngx_process != NGX_PROCESS_SINGLE)
    {
        return NGX_OK;
    }

    ngx_rbtree_init(&ngx_http_ragnx_ask_waiting, &ngx_http_ragnx_ask_sentinel,
                    ngx_str_rbtree_insert_value);
    ngx_rbtree_init(&ngx_http_ragnx_ask_fetching,
                    &ngx_http_ragnx_ask_fetch_sentinel,
                    ngx_str_rbtree_insert_value);

    amcf = ngx_http_cycle_get_module_main_conf(cycle,
                                               ngx_http_ragnx_ask_module);

    if (amcf == NULL || !amcf->used || amcf->queue == NULL
        || amcf->gen_refresh == 0)
    {
        return NGX_OK;
    }

    w = &ngx_http_ragnx_ask_worker;
    ngx_memzero(w, sizeof(ngx_http_ragnx_ask_worker_t));

    w->timer.handler = ngx_http_ragnx_ask_refresh;
    w->timer.data = amcf;
    w->timer.log = cycle->log;
    w->timer.cancelable = 1;

    /* soon after the Redis connections are up */
    ngx_add_timer(&w->timer, 10);

    return NGX_OK;
}


static void
ngx_http_ragnx_ask_exit_process(ngx_cycle_t *cycle)
{
    if (ngx_http_ragnx_ask_worker.timer.timer_set) {
        ngx_del_timer(&ngx_http_ragnx_ask_worker.timer);
    }

    ragnx_query_cleanup();
}


static void *
ngx_http_ragnx_ask_create_loc_conf(ngx_conf_t *cf)
{
    ngx_http_ragnx_ask_loc_conf_t  *conf;

    conf = ngx_pcalloc(cf->pool, sizeof(ngx_http_ragnx_ask_loc_conf_t));
    if (conf == NULL) {
        return NULL;
    }

    /*
     * set by ngx_pcalloc():
     *
     *     conf->type = 0;
     *     conf->id = NULL;
     *     conf->queue = NULL;
     *     conf->cache = NULL;
     */

    conf->queue_max = NGX_CONF_UNSET_UINT;
    conf->record_max = NGX_CONF_UNSET_UINT;
    conf->job_ttl = NGX_CONF_UNSET;
    conf->retry_after = NGX_CONF_UNSET_UINT;
    conf->ping = NGX_CONF_UNSET_MSEC;

    return conf;
}


static char *
ngx_http_ragnx_ask_merge_loc_conf(ngx_conf_t *cf, void *parent, void *child)
{
    ngx_http_ragnx_ask_loc_conf_t *prev = parent;
    ngx_http_ragnx_ask_loc_conf_t *conf = child;

    ngx_str_t                        prefix;
    ngx_http_core_loc_conf_t        *clcf;
    ngx_http_ragnx_ask_main_conf_t  *amcf;

    ngx_conf_merge_uint_value(conf->queue_max, prev->queue_max, 10000);
    ngx_conf_merge_uint_value(conf->record_max, prev->record_max, 100000);
    ngx_conf_merge_sec_value(conf->job_ttl, prev->job_ttl, 86400);
    ngx_conf_merge_uint_value(conf->retry_after, prev->retry_after, 1);
    ngx_conf_merge_msec_value(conf->ping, prev->ping, 15000);

    /*
     * A request may be served with the configuration of an "if" or
     * "limit_except" block in the location: the block answers as the
     * location does (as ngx_http_proxy_module's merge has it).
     */

    clcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_core_module);

    if (conf->type == 0 && clcf->noname) {
        conf->type = prev->type;
        conf->id = prev->id;
    }

    if (clcf->lmt_excpt && clcf->handler == NULL && conf->type) {
        clcf->handler = ngx_http_ragnx_ask_handler;
    }

    if (conf->type == 0) {
        return NGX_CONF_OK;
    }

    conf->queue = ngx_http_ragnx_redis_server(cf, NGX_HTTP_RAGNX_REDIS_QUEUE);
    conf->cache = ngx_http_ragnx_redis_server(cf, NGX_HTTP_RAGNX_REDIS_CACHE);

    if (conf->type == NGX_HTTP_RAGNX_ASK_SUBMIT) {
        amcf = ngx_http_conf_get_module_main_conf(cf,
                                                  ngx_http_ragnx_ask_module);
        amcf->used = 1;
        amcf->queue = conf->queue;
        amcf->cache = conf->cache;
    }

    /* no "ragnx_redis" is reported by ngx_http_ragnx_module */

    /* a chatId Redis does not know is looked up by the pool */

    if (conf->type == NGX_HTTP_RAGNX_ASK_SUBMIT && conf->queue
        && ngx_http_ragnx_rpc_enable(cf, conf->queue) != NGX_OK)
    {
        return NGX_CONF_ERROR;
    }

    /* long-poll: every worker listens on a wake channel of its own */

    if (conf->type != NGX_HTTP_RAGNX_ASK_SUBMIT && conf->queue) {
        amcf = ngx_http_conf_get_module_main_conf(cf,
                                                  ngx_http_ragnx_ask_module);

        if (amcf->wake == NULL) {
            ngx_str_set(&prefix, RAGNX_KEY_WAKE);

            amcf->wake = ngx_http_ragnx_redis_subscribe(cf, conf->queue,
                                             &prefix,
                                             ngx_http_ragnx_ask_woken, NULL);
            if (amcf->wake == NULL) {
                return NGX_CONF_ERROR;
            }
        }
    }

    return NGX_CONF_OK;
}


static char *
ngx_http_ragnx_ask(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_ragnx_ask_loc_conf_t *alcf = conf;

    ngx_str_t                         *value;
    ngx_uint_t                         needs;
    ngx_http_compile_complex_value_t   ccv;

    if (alcf->type) {
        return "is duplicate";
    }

    alcf->type = cmd->offset;

    if (cf->args->nelts == 2) {
        value = cf->args->elts;

        alcf->id = ngx_palloc(cf->pool, sizeof(ngx_http_complex_value_t));
        if (alcf->id == NULL) {
            return NGX_CONF_ERROR;
        }

        ngx_memzero(&ccv, sizeof(ngx_http_compile_complex_value_t));
        ccv.cf = cf;
        ccv.value = &value[1];
        ccv.complex_value = alcf->id;

        if (ngx_http_compile_complex_value(&ccv) != NGX_OK) {
            return NGX_CONF_ERROR;
        }
    }

    if (alcf->type == NGX_HTTP_RAGNX_ASK_SUBMIT) {
        ngx_http_ragnx_ask_script_index =
            ngx_http_ragnx_redis_script(cf, &ngx_http_ragnx_ask_script);

        if (ngx_http_ragnx_ask_script_index == NGX_ERROR) {
            return NGX_CONF_ERROR;
        }

    } else if (alcf->type == NGX_HTTP_RAGNX_ASK_EVENTS) {
        ngx_http_ragnx_ask_events_index =
            ngx_http_ragnx_redis_script(cf,
                                        &ngx_http_ragnx_ask_events_script);

        if (ngx_http_ragnx_ask_events_index == NGX_ERROR) {
            return NGX_CONF_ERROR;
        }

    } else {
        ngx_http_ragnx_ask_watch_index =
            ngx_http_ragnx_redis_script(cf, &ngx_http_ragnx_ask_watch_script);

        if (ngx_http_ragnx_ask_watch_index == NGX_ERROR) {
            return NGX_CONF_ERROR;
        }
    }

    /*
     * A question and a job belong to the token's subject; a question is
     * the validated body; status answers GET only.
     */

    needs = NGX_HTTP_RAGNX_NEEDS_SUBJECT
            | (alcf->type == NGX_HTTP_RAGNX_ASK_SUBMIT
               ? NGX_HTTP_RAGNX_NEEDS_BODY : NGX_HTTP_RAGNX_NO_BODY);

    return ngx_http_ragnx_handler(cf, &cmd->name, ngx_http_ragnx_ask_handler,
                                  needs|NGX_HTTP_RAGNX_NEEDS_REDIS);
}
