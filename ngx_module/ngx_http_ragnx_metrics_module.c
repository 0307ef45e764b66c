
/*
 * ragnx metrics: GET /metrics ("ragnx_metrics") in Prometheus text format
 * 0.0.4.  The counters live in one shared memory zone, "ragnx_metrics",
 * made when a location has "ragnx_metrics" and kept across reloads.  Each
 * worker adds to a slot of its own (ngx_worker's, modulo the slots), so
 * two workers never bounce one cache line between their cores; the adds
 * stay atomic for the old workers of a reload, which share the slots of
 * the new ones.  A scrape sums the slots.  A
 * request is counted once, in the log phase, under the route of the
 * ragnx directive of its location ($ragnx_route, set before the access
 * phase so an error page reached by an internal redirect keeps it) and
 * the outcome its status and handler say.  The pool's figures come from
 * Redis in the same scrape: one script call (lua/metrics.lua) gathers
 * every live pool process's hash.
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ngx_http_ragnx.h"
#include "ngx_http_ragnx_metrics.h"
#include "ngx_http_ragnx_redis.h"
#include "ragnx_keys.h"
#include "ragnx_lua_module.h"
#include "ragnx_rpc.h"


/* room for the nginx side of a scrape: about 520 lines of 130 bytes */
#define NGX_HTTP_RAGNX_METRICS_TEXT   (96 * 1024)

#define NGX_HTTP_RAGNX_METRICS_REQ_BOUNDS    14
#define NGX_HTTP_RAGNX_METRICS_REDIS_BOUNDS  13


typedef struct {
    ngx_shm_zone_t               *zone;
    ngx_uint_t                    servers;    /* Redis: queue, cache */
} ngx_http_ragnx_metrics_main_conf_t;


typedef struct {
    ngx_uint_t                    route;
    ngx_flag_t                    enable;     /* "ragnx_metrics" here */
    ngx_http_ragnx_redis_srv_t   *queue;      /* the pool's figures */
} ngx_http_ragnx_metrics_loc_conf_t;


/* a scrape waiting for the pool's figures */
typedef struct {
    ngx_http_ragnx_redis_wait_t   wait;
    ngx_buf_t                    *own;        /* nginx's part */
    ngx_str_t                     pool;       /* the script's text */
    ngx_uint_t                    up;
} ngx_http_ragnx_metrics_ctx_t;


typedef struct {
    ngx_uint_t                    status;
    const char                   *name;
} ngx_http_ragnx_metrics_status_t;


static ngx_int_t ngx_http_ragnx_metrics_handler(ngx_http_request_t *r);
static void ngx_http_ragnx_metrics_reply(ngx_http_request_t *r,
    redisReply *reply, ngx_int_t rc);
static void ngx_http_ragnx_metrics_resume(ngx_http_request_t *r);
static ngx_int_t ngx_http_ragnx_metrics_send(ngx_http_request_t *r,
    ngx_buf_t *b, ngx_http_ragnx_metrics_ctx_t *ctx);
static u_char *ngx_http_ragnx_metrics_render(ngx_http_request_t *r,
    u_char *p, u_char *end);
static u_char *ngx_http_ragnx_metrics_hist(u_char *p, u_char *end,
    const char *name, const char *label, const char *value,
    ngx_http_ragnx_metrics_hist_t *h, const char **les, ngx_uint_t n);
static ngx_uint_t ngx_http_ragnx_metrics_outcome(ngx_http_request_t *r,
    ngx_uint_t route);
static void ngx_http_ragnx_metrics_observe(ngx_http_ragnx_metrics_hist_t *h,
    const uint64_t *bounds, ngx_uint_t n, uint64_t us);
static ngx_int_t ngx_http_ragnx_metrics_preaccess_handler(
    ngx_http_request_t *r);
static ngx_int_t ngx_http_ragnx_metrics_log_handler(ngx_http_request_t *r);
static ngx_uint_t ngx_http_ragnx_metrics_request_route(
    ngx_http_request_t *r);
static ngx_int_t ngx_http_ragnx_metrics_outcome_variable(
    ngx_http_request_t *r, ngx_http_variable_value_t *v, uintptr_t data);
static ngx_int_t ngx_http_ragnx_metrics_route_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data);
static ngx_int_t ngx_http_ragnx_metrics_init_process(ngx_cycle_t *cycle);
static ngx_int_t ngx_http_ragnx_metrics_init_zone(ngx_shm_zone_t *shm_zone,
    void *data);

static ngx_int_t ngx_http_ragnx_metrics_add_variables(ngx_conf_t *cf);
static void *ngx_http_ragnx_metrics_create_main_conf(ngx_conf_t *cf);
static void *ngx_http_ragnx_metrics_create_loc_conf(ngx_conf_t *cf);
static char *ngx_http_ragnx_metrics_merge_loc_conf(ngx_conf_t *cf,
    void *parent, void *child);
static ngx_int_t ngx_http_ragnx_metrics_init(ngx_conf_t *cf);
static ngx_int_t ngx_http_ragnx_metrics_init_module(ngx_cycle_t *cycle);
static char *ngx_http_ragnx_metrics_directive(ngx_conf_t *cf,
    ngx_command_t *cmd, void *conf);


static ngx_command_t  ngx_http_ragnx_metrics_commands[] = {

    { ngx_string("ragnx_metrics"),
      NGX_HTTP_LOC_CONF|NGX_CONF_NOARGS,
      ngx_http_ragnx_metrics_directive,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

      ngx_null_command
};


static ngx_http_module_t  ngx_http_ragnx_metrics_module_ctx = {
    ngx_http_ragnx_metrics_add_variables,  /* preconfiguration */
    ngx_http_ragnx_metrics_init,           /* postconfiguration */

    ngx_http_ragnx_metrics_create_main_conf, /* create main configuration */
    NULL,                                  /* init main configuration */

    NULL,                                  /* create server configuration */
    NULL,                                  /* merge server configuration */

    ngx_http_ragnx_metrics_create_loc_conf, /* create location configuration */
    ngx_http_ragnx_metrics_merge_loc_conf  /* merge location configuration */
};


ngx_module_t  ngx_http_ragnx_metrics_module = {
    NGX_MODULE_V1,
    &ngx_http_ragnx_metrics_module_ctx,    /* module context */
    ngx_http_ragnx_metrics_commands,       /* module directives */
    NGX_HTTP_MODULE,                       /* module type */
    NULL,                                  /* init master */
    ngx_http_ragnx_metrics_init_module,    /* init module */
    ngx_http_ragnx_metrics_init_process,   /* init process */
    NULL,                                  /* init thread */
    NULL,                                  /* exit thread */
    NULL,                                  /* exit process */
    NULL,                                  /* exit master */
    NGX_MODULE_V1_PADDING
};


/* this process's slot; the slots follow one another from the zone's */
ngx_http_ragnx_metrics_t  *ngx_http_ragnx_metrics;
static ngx_http_ragnx_metrics_t  *ngx_http_ragnx_metrics_slots;

#define NGX_HTTP_RAGNX_METRICS_SLOTS  32
#define NGX_HTTP_RAGNX_METRICS_SIZE                                          \
    (NGX_HTTP_RAGNX_METRICS_SLOTS * sizeof(ngx_http_ragnx_metrics_t))

static ngx_int_t  ngx_http_ragnx_metrics_route_index;

static ngx_str_t  ngx_http_ragnx_metrics_script =
    ngx_string(RAGNX_LUA_METRICS);

static ngx_int_t  ngx_http_ragnx_metrics_script_index;

static ngx_str_t  ngx_http_ragnx_metrics_zone_name =
    ngx_string("ragnx_metrics");

static ngx_str_t  ngx_http_ragnx_metrics_route_name =
    ngx_string("ragnx_route");

static ngx_str_t  ngx_http_ragnx_metrics_outcome_name =
    ngx_string("ragnx_outcome");


/* by NGX_HTTP_RAGNX_METRICS_* route; the rpc ones are the methods' names */
static ngx_str_t  ngx_http_ragnx_metrics_routes[] = {
    ngx_null_string,
    ngx_string("ask"),
    ngx_string("ask_status"),
    ngx_string("health"),
    ngx_string("metrics"),
    ngx_string("register"),
    ngx_string("login"),
    ngx_string("me"),
    ngx_string("chats"),
    ngx_string("messages")
};


static const char  *ngx_http_ragnx_metrics_outcomes[] = {
    "ok", "hit", "miss", "follower", "full"
};


/* the other outcomes, from NGX_HTTP_RAGNX_METRICS_BY_STATUS */
static ngx_http_ragnx_metrics_status_t  ngx_http_ragnx_metrics_statuses[] = {
    { 400, "400" }, { 401, "401" }, { 403, "403" }, { 404, "404" },
    { 405, "405" }, { 408, "408" }, { 409, "409" }, { 413, "413" },
    { 415, "415" }, { 429, "429" }, { 499, "499" }, { 0, "4xx" },
    { 500, "500" }, { 502, "502" }, { 503, "503" }, { 504, "504" },
    { 0, "5xx" }, { 0, "other" }
};

#define NGX_HTTP_RAGNX_METRICS_4XX    (NGX_HTTP_RAGNX_METRICS_BY_STATUS + 11)
#define NGX_HTTP_RAGNX_METRICS_5XX    (NGX_HTTP_RAGNX_METRICS_BY_STATUS + 16)
#define NGX_HTTP_RAGNX_METRICS_OTHER  (NGX_HTTP_RAGNX_METRICS_BY_STATUS + 17)


/* by the jwt module's refusal reasons, from 1 */
static const char  *ngx_http_ragnx_metrics_jwt_reasons[] = {
    "", "missing", "invalid", "expired", "not_yet_valid", "issuer",
    "audience"
};


static const char  *ngx_http_ragnx_metrics_rpc_outcomes[] = {
    "ok", "refused", "failed", "bad_reply", "timeout", "unavailable"
};


static const char  *ngx_http_ragnx_metrics_redis_kinds[] = {
    "reply", "connection_lost", "no_connection"
};


static const char  *ngx_http_ragnx_metrics_servers[] = {
    "queue", "cache"
};


/* request durations: 1 ms (nginx's clock) to 30 s */
static const uint64_t  ngx_http_ragnx_metrics_req_bounds[] = {
    1000, 2500, 5000, 10000, 25000, 50000, 100000, 250000, 500000,
    1000000, 2500000, 5000000, 10000000, 30000000
};

static const char  *ngx_http_ragnx_metrics_req_les[] = {
    "0.001", "0.0025", "0.005", "0.01", "0.025", "0.05", "0.1", "0.25",
    "0.5", "1", "2.5", "5", "10", "30"
};


/* Redis round trips: 100 us to 1 s */
static const uint64_t  ngx_http_ragnx_metrics_redis_bounds[] = {
    100, 250, 500, 1000, 2500, 5000, 10000, 25000, 50000, 100000, 250000,
    500000, 1000000
};

static const char  *ngx_http_ragnx_metrics_redis_les[] = {
    "0.0001", "0.00025", "0.0005", "0.001", "0.0025", "0.005", "0.01",
    "0.025", "0.05", "0.1", "0.25", "0.5", "1"
};


static ngx_int_t
ngx_http_ragnx_metrics_handler(ngx_http_request_t *r)
{
    size_t                              lens[6];
    ngx_buf_t                          *b;
    const char                         *argv[6];
    ngx_http_ragnx_metrics_ctx_t       *ctx;
    ngx_http_ragnx_metrics_loc_conf_t  *mlcf;

    if (!(r->method & (NGX_HTTP_GET|NGX_HTTP_HEAD))) {
        return ngx_http_ragnx_send_not_allowed(r, "GET, HEAD");
    }

    if (ngx_http_discard_request_body(r) != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    b = ngx_create_temp_buf(r->pool, NGX_HTTP_RAGNX_METRICS_TEXT);
    if (b == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    b->last = ngx_http_ragnx_metrics_render(r, b->pos, b->end);

    if (b->last == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (b->last == b->end) {
        ngx_log_error(NGX_LOG_ALERT, r->connection->log, 0,
                      "ragnx metrics: the text does not fit %uz bytes",
                      (size_t) NGX_HTTP_RAGNX_METRICS_TEXT);
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    mlcf = ngx_http_get_module_loc_conf(r, ngx_http_ragnx_metrics_module);

    if (mlcf->queue == NULL) {
        return ngx_http_ragnx_metrics_send(r, b, NULL);
    }

    ctx = ngx_pcalloc(r->pool, sizeof(ngx_http_ragnx_metrics_ctx_t));
    if (ctx == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ngx_http_set_ctx(r, ctx, ngx_http_ragnx_metrics_module);

    ctx->own = b;

    /* notice a client that goes away while the reply is pending */
    r->read_event_handler = ngx_http_test_reading;

    argv[0] = "5";
    lens[0] = 1;
    argv[1] = RAGNX_KEY_METRICS;
    lens[1] = sizeof(RAGNX_KEY_METRICS) - 1;
    argv[2] = RAGNX_KEY_JOBS;
    lens[2] = sizeof(RAGNX_KEY_JOBS) - 1;
    argv[3] = RAGNX_KEY_DELAYED;
    lens[3] = sizeof(RAGNX_KEY_DELAYED) - 1;
    argv[4] = RAGNX_KEY_DEAD;
    lens[4] = sizeof(RAGNX_KEY_DEAD) - 1;
    argv[5] = RAGNX_KEY_RECORDS;
    lens[5] = sizeof(RAGNX_KEY_RECORDS) - 1;

    ctx->wait.reply = ngx_http_ragnx_metrics_reply;
    ctx->wait.resume = ngx_http_ragnx_metrics_resume;

    if (ngx_http_ragnx_redis_eval(r, &ctx->wait, mlcf->queue,
                                  ngx_http_ragnx_metrics_script_index, 6,
                                  argv, lens)
        != NGX_OK)
    {
        return ngx_http_ragnx_metrics_send(r, b, ctx);
    }

    return NGX_DONE;
}


/* inside the hiredis callback: copy the pool's text, do not respond */

static void
ngx_http_ragnx_metrics_reply(ngx_http_request_t *r, redisReply *reply,
    ngx_int_t rc)
{
    ngx_http_ragnx_metrics_ctx_t  *ctx;

    ctx = ngx_http_get_module_ctx(r, ngx_http_ragnx_metrics_module);

    if (rc != NGX_OK) {
        return;
    }

    if (reply->type != REDIS_REPLY_STRING) {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "ragnx metrics script failed: %*s",
                      reply->type == REDIS_REPLY_ERROR ? (size_t) reply->len
                                                       : (size_t) 0,
                      reply->str);
        return;
    }

    ctx->pool.data = ngx_pnalloc(r->pool, reply->len);
    if (ctx->pool.data == NULL) {
        return;
    }

    ngx_memcpy(ctx->pool.data, reply->str, reply->len);
    ctx->pool.len = reply->len;
    ctx->up = 1;
}


static void
ngx_http_ragnx_metrics_resume(ngx_http_request_t *r)
{
    ngx_http_ragnx_metrics_ctx_t  *ctx;

    ctx = ngx_http_get_module_ctx(r, ngx_http_ragnx_metrics_module);

    ngx_log_debug2(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "ragnx metrics: pool figures %s, %uz bytes",
                   ctx->up ? "read" : "not read", ctx->pool.len);

    ngx_http_finalize_request(r, ngx_http_ragnx_metrics_send(r, ctx->own,
                                                             ctx));
}


/*
 * nginx's part, then (with a ctx: "ragnx_redis" is set) whether the
 * pool's figures could be read and, if they were, the pool's part
 */

static ngx_int_t
ngx_http_ragnx_metrics_send(ngx_http_request_t *r, ngx_buf_t *b,
    ngx_http_ragnx_metrics_ctx_t *ctx)
{
    ngx_int_t     rc;
    ngx_buf_t    *pb;
    ngx_chain_t   out[2];

    if (ctx) {
        b->last = ngx_slprintf(b->last, b->end,
                    "# HELP ragnx_pool_metrics_up Whether the pool's "
                    "figures could be read from Redis for this scrape.\n"
                    "# TYPE ragnx_pool_metrics_up gauge\n"
                    "ragnx_pool_metrics_up %ui\n", ctx->up);
    }

    out[0].buf = b;
    out[0].next = NULL;

    if (ctx && ctx->pool.len) {
        pb = ngx_calloc_buf(r->pool);
        if (pb == NULL) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        pb->pos = ctx->pool.data;
        pb->last = ctx->pool.data + ctx->pool.len;
        pb->temporary = 1;

        out[0].next = &out[1];
        out[1].buf = pb;
        out[1].next = NULL;
    }

    b = out[0].next ? out[1].buf : out[0].buf;
    b->last_buf = (r == r->main) ? 1 : 0;
    b->last_in_chain = 1;

    r->headers_out.status = NGX_HTTP_OK;
    r->headers_out.content_length_n = (out[0].buf->last - out[0].buf->pos)
                                      + (ctx ? (off_t) ctx->pool.len : 0);
    ngx_str_set(&r->headers_out.content_type,
                "text/plain; version=0.0.4; charset=utf-8");
    r->headers_out.content_type_len = sizeof("text/plain") - 1;
    r->headers_out.content_type_lowcase = NULL;

    rc = ngx_http_send_header(r);

    if (rc == NGX_ERROR || rc > NGX_OK || r->header_only) {
        return rc;
    }

    return ngx_http_output_filter(r, &out[0]);
}


/*
 * The counters as they are now.  Other workers keep adding while they
 * are read: each histogram is made cumulative from one reading of its
 * buckets, so its buckets never decrease and +Inf is its count.
 */

/* the slots added up: the struct is counters alone, so added as an array */

static ngx_http_ragnx_metrics_t *
ngx_http_ragnx_metrics_sum(ngx_http_request_t *r)
{
    ngx_uint_t                 i, k, n;
    ngx_atomic_uint_t         *to;
    const ngx_atomic_t        *from;
    ngx_http_ragnx_metrics_t  *m;

    m = ngx_pcalloc(r->pool, sizeof(ngx_http_ragnx_metrics_t));
    if (m == NULL) {
        return NULL;
    }

    to = (ngx_atomic_uint_t *) m;
    n = sizeof(ngx_http_ragnx_metrics_t) / sizeof(ngx_atomic_t);

    for (k = 0; k < NGX_HTTP_RAGNX_METRICS_SLOTS; k++) {
        from = (const ngx_atomic_t *) &ngx_http_ragnx_metrics_slots[k];

        for (i = 0; i < n; i++) {
            to[i] += from[i];
        }
    }

    return m;
}


static u_char *
ngx_http_ragnx_metrics_render(ngx_http_request_t *r, u_char *p, u_char *end)
{
    char                                *route;
    ngx_uint_t                           i, j, s;
    ngx_atomic_uint_t                    n;
    ngx_http_ragnx_metrics_t            *m;
    ngx_http_ragnx_metrics_main_conf_t  *mmcf;

    m = ngx_http_ragnx_metrics_sum(r);
    if (m == NULL) {
        return NULL;
    }

    mmcf = ngx_http_get_module_main_conf(r, ngx_http_ragnx_metrics_module);

    p = ngx_slprintf(p, end,
            "# HELP ragnx_http_requests_total Requests answered by a ragnx "
            "location, by route and outcome.\n"
            "# TYPE ragnx_http_requests_total counter\n");

    for (i = 1; i < NGX_HTTP_RAGNX_METRICS_ROUTES; i++) {
        for (j = 0; j < NGX_HTTP_RAGNX_METRICS_OUTCOMES; j++) {
            n = m->requests[i][j];

            /* the outcomes a route has are shown at 0 too */

            if (n == 0
                && !(i == NGX_HTTP_RAGNX_METRICS_ASK
                     ? (j >= NGX_HTTP_RAGNX_METRICS_HIT
                        && j <= NGX_HTTP_RAGNX_METRICS_FULL)
                     : j == NGX_HTTP_RAGNX_METRICS_OK))
            {
                continue;
            }

            p = ngx_slprintf(p, end,
                    "ragnx_http_requests_total{route=\"%V\",outcome=\"%s\"} "
                    "%uA\n", &ngx_http_ragnx_metrics_routes[i],
                    j < NGX_HTTP_RAGNX_METRICS_BY_STATUS
                    ? ngx_http_ragnx_metrics_outcomes[j]
                    : ngx_http_ragnx_metrics_statuses
                          [j - NGX_HTTP_RAGNX_METRICS_BY_STATUS].name,
                    n);
        }
    }

    p = ngx_slprintf(p, end,
            "# HELP ragnx_http_request_duration_seconds Time from a "
            "request's first byte to its log phase, by route.\n"
            "# TYPE ragnx_http_request_duration_seconds histogram\n");

    for (i = 1; i < NGX_HTTP_RAGNX_METRICS_ROUTES; i++) {
        route = (char *) ngx_http_ragnx_metrics_routes[i].data;
        p = ngx_http_ragnx_metrics_hist(p, end,
                                        "ragnx_http_request_duration_seconds",
                                        "route", route, &m->duration[i],
                                        ngx_http_ragnx_metrics_req_les,
                                        NGX_HTTP_RAGNX_METRICS_REQ_BOUNDS);
    }

    p = ngx_slprintf(p, end,
            "# HELP ragnx_jwt_rejections_total Tokens refused, by reason.\n"
            "# TYPE ragnx_jwt_rejections_total counter\n");

    for (i = 1; i < NGX_HTTP_RAGNX_METRICS_JWT_REASONS; i++) {
        p = ngx_slprintf(p, end,
                         "ragnx_jwt_rejections_total{reason=\"%s\"} %uA\n",
                         ngx_http_ragnx_metrics_jwt_reasons[i], m->jwt[i]);
    }

    p = ngx_slprintf(p, end,
            "# HELP ragnx_redis_command_duration_seconds Redis round trips "
            "of the commands answered, by server.\n"
            "# TYPE ragnx_redis_command_duration_seconds histogram\n");

    for (s = 0; s < mmcf->servers; s++) {
        p = ngx_http_ragnx_metrics_hist(p, end,
                                        "ragnx_redis_command_duration_seconds",
                                        "server",
                                        ngx_http_ragnx_metrics_servers[s],
                                        &m->redis[s],
                                        ngx_http_ragnx_metrics_redis_les,
                                        NGX_HTTP_RAGNX_METRICS_REDIS_BOUNDS);
    }

    p = ngx_slprintf(p, end,
            "# HELP ragnx_redis_errors_total Redis commands that failed, by "
            "server and kind.\n"
            "# TYPE ragnx_redis_errors_total counter\n");

    for (s = 0; s < mmcf->servers; s++) {
        for (j = 0; j < NGX_HTTP_RAGNX_METRICS_REDIS_KINDS; j++) {
            p = ngx_slprintf(p, end,
                    "ragnx_redis_errors_total{server=\"%s\",kind=\"%s\"} "
                    "%uA\n", ngx_http_ragnx_metrics_servers[s],
                    ngx_http_ragnx_metrics_redis_kinds[j],
                    m->redis_errors[s][j]);
        }
    }

    p = ngx_slprintf(p, end,
            "# HELP ragnx_redis_timeouts_total Redis commands not answered "
            "within ragnx_redis_timeout, by server.\n"
            "# TYPE ragnx_redis_timeouts_total counter\n");

    for (s = 0; s < mmcf->servers; s++) {
        p = ngx_slprintf(p, end,
                         "ragnx_redis_timeouts_total{server=\"%s\"} %uA\n",
                         ngx_http_ragnx_metrics_servers[s],
                         m->redis_timeouts[s]);
    }

    p = ngx_slprintf(p, end,
            "# HELP ragnx_redis_reconnects_total Attempts to connect again "
            "to Redis after a connection was lost or failed, by server.\n"
            "# TYPE ragnx_redis_reconnects_total counter\n");

    for (s = 0; s < mmcf->servers; s++) {
        p = ngx_slprintf(p, end,
                         "ragnx_redis_reconnects_total{server=\"%s\"} %uA\n",
                         ngx_http_ragnx_metrics_servers[s],
                         m->redis_reconnects[s]);
    }

    p = ngx_slprintf(p, end,
            "# HELP ragnx_rpc_calls_total Synchronous calls to the worker "
            "pool, by method and outcome.\n"
            "# TYPE ragnx_rpc_calls_total counter\n");

    for (i = 1; i < NGX_HTTP_RAGNX_METRICS_RPC_METHODS; i++) {
        for (j = 0; j < NGX_HTTP_RAGNX_METRICS_RPC_OUTCOMES; j++) {
            p = ngx_slprintf(p, end,
                    "ragnx_rpc_calls_total{method=\"%s\",outcome=\"%s\"} "
                    "%uA\n", ragnx_rpc_method_name((int) i),
                    ngx_http_ragnx_metrics_rpc_outcomes[j], m->rpc[i][j]);
        }
    }

    return p;
}


static u_char *
ngx_http_ragnx_metrics_hist(u_char *p, u_char *end, const char *name,
    const char *label, const char *value, ngx_http_ragnx_metrics_hist_t *h,
    const char **les, ngx_uint_t n)
{
    ngx_uint_t         i;
    ngx_atomic_uint_t  count, sum;

    count = 0;

    for (i = 0; i < n; i++) {
        count += h->bucket[i];
        p = ngx_slprintf(p, end, "%s_bucket{%s=\"%s\",le=\"%s\"} %uA\n",
                         name, label, value, les[i], count);
    }

    count += h->bucket[n];
    sum = h->sum;

    return ngx_slprintf(p, end,
                        "%s_bucket{%s=\"%s\",le=\"+Inf\"} %uA\n"
                        "%s_sum{%s=\"%s\"} %uA.%06uA\n"
                        "%s_count{%s=\"%s\"} %uA\n",
                        name, label, value, count,
                        name, label, value, sum / 1000000, sum % 1000000,
                        name, label, value, count);
}


static void
ngx_http_ragnx_metrics_observe(ngx_http_ragnx_metrics_hist_t *h,
    const uint64_t *bounds, ngx_uint_t n, uint64_t us)
{
    ngx_uint_t  i;

    for (i = 0; i < n && us > bounds[i]; i++) { /* void */ }

    (void) ngx_atomic_fetch_add(&h->bucket[i], 1);
    (void) ngx_atomic_fetch_add(&h->sum, (ngx_atomic_int_t) us);
}


uint64_t
ngx_http_ragnx_metrics_now(void)
{
    struct timespec  ts;

    (void) clock_gettime(CLOCK_MONOTONIC, &ts);

    return (uint64_t) ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}


void
ngx_http_ragnx_metrics_redis(ngx_uint_t server, uint64_t start)
{
    if (ngx_http_ragnx_metrics == NULL || start == 0) {
        return;
    }

    ngx_http_ragnx_metrics_observe(&ngx_http_ragnx_metrics->redis[server],
                                   ngx_http_ragnx_metrics_redis_bounds,
                                   NGX_HTTP_RAGNX_METRICS_REDIS_BOUNDS,
                                   ngx_http_ragnx_metrics_now() - start);
}


void
ngx_http_ragnx_metrics_rpc(ngx_uint_t method, ngx_uint_t status,
    ngx_uint_t ours)
{
    ngx_uint_t  outcome;

    if (ngx_http_ragnx_metrics == NULL
        || method >= NGX_HTTP_RAGNX_METRICS_RPC_METHODS)
    {
        return;
    }

    if (!ours) {
        outcome = (status < 400) ? NGX_HTTP_RAGNX_METRICS_RPC_OK
                  : (status < 500) ? NGX_HTTP_RAGNX_METRICS_RPC_REFUSED
                  : NGX_HTTP_RAGNX_METRICS_RPC_FAILED;

    } else if (status == NGX_HTTP_GATEWAY_TIME_OUT) {
        outcome = NGX_HTTP_RAGNX_METRICS_RPC_TIMEOUT;

    } else if (status == NGX_HTTP_SERVICE_UNAVAILABLE) {
        outcome = NGX_HTTP_RAGNX_METRICS_RPC_UNAVAILABLE;

    } else if (status == NGX_HTTP_BAD_GATEWAY) {
        outcome = NGX_HTTP_RAGNX_METRICS_RPC_BAD_REPLY;

    } else {
        outcome = NGX_HTTP_RAGNX_METRICS_RPC_FAILED;
    }

    (void) ngx_atomic_fetch_add(&ngx_http_ragnx_metrics->rpc[method][outcome],
                                1);
}


/* the outcome label of a request that ended with its status */

static ngx_uint_t
ngx_http_ragnx_metrics_outcome(ngx_http_request_t *r, ngx_uint_t route)
{
    ngx_uint_t  i, status;

    /* as $status: an error page keeps the error's status */

    status = r->err_status ? r->err_status : r->headers_out.status;

    if (status >= 200 && status < 300) {

        if (route != NGX_HTTP_RAGNX_METRICS_ASK) {
            return NGX_HTTP_RAGNX_METRICS_OK;
        }

        if (status == NGX_HTTP_OK) {
            return NGX_HTTP_RAGNX_METRICS_HIT;
        }

        return (ngx_http_ragnx_ask_outcome(r)
                == NGX_HTTP_RAGNX_METRICS_FOLLOWER)
               ? NGX_HTTP_RAGNX_METRICS_FOLLOWER
               : NGX_HTTP_RAGNX_METRICS_MISS;
    }

    if (status == NGX_HTTP_SERVICE_UNAVAILABLE
        && route == NGX_HTTP_RAGNX_METRICS_ASK
        && ngx_http_ragnx_ask_outcome(r) == NGX_HTTP_RAGNX_METRICS_FULL)
    {
        return NGX_HTTP_RAGNX_METRICS_FULL;
    }

    for (i = 0;
         status
         && i < NGX_HTTP_RAGNX_METRICS_OUTCOMES
                - NGX_HTTP_RAGNX_METRICS_BY_STATUS;
         i++)
    {
        if (ngx_http_ragnx_metrics_statuses[i].status == status) {
            return NGX_HTTP_RAGNX_METRICS_BY_STATUS + i;
        }
    }

    if (status >= 400 && status < 500) {
        return NGX_HTTP_RAGNX_METRICS_4XX;
    }

    if (status >= 500 && status < 600) {
        return NGX_HTTP_RAGNX_METRICS_5XX;
    }

    return NGX_HTTP_RAGNX_METRICS_OTHER;
}


/*
 * Before the access phase (and limit_req, which runs after us in this
 * phase): the route is kept in $ragnx_route, which an internal redirect
 * to an error page does not reset, as it does the modules' contexts.
 */

static ngx_int_t
ngx_http_ragnx_metrics_preaccess_handler(ngx_http_request_t *r)
{
    ngx_http_variable_value_t          *v;
    ngx_http_ragnx_metrics_loc_conf_t  *mlcf;

    mlcf = ngx_http_get_module_loc_conf(r, ngx_http_ragnx_metrics_module);

    if (mlcf->route == NGX_HTTP_RAGNX_METRICS_NONE) {
        return NGX_DECLINED;
    }

    v = &r->variables[ngx_http_ragnx_metrics_route_index];

    v->data = ngx_http_ragnx_metrics_routes[mlcf->route].data;
    v->len = ngx_http_ragnx_metrics_routes[mlcf->route].len;
    v->valid = 1;
    v->no_cacheable = 0;
    v->not_found = 0;

    return NGX_DECLINED;
}


static ngx_int_t
ngx_http_ragnx_metrics_log_handler(ngx_http_request_t *r)
{
    ngx_int_t                  ms;
    ngx_uint_t                 route, outcome;
    ngx_time_t                *tp;
    ngx_http_ragnx_metrics_t  *m;

    m = ngx_http_ragnx_metrics;

    if (m == NULL) {
        return NGX_OK;
    }

    route = ngx_http_ragnx_metrics_request_route(r);

    if (route == NGX_HTTP_RAGNX_METRICS_NONE) {
        return NGX_OK;
    }

    outcome = ngx_http_ragnx_metrics_outcome(r, route);

    (void) ngx_atomic_fetch_add(&m->requests[route][outcome], 1);

    /* as $request_time, in milliseconds */

    tp = ngx_timeofday();
    ms = (ngx_int_t) ((tp->sec - r->start_sec) * 1000
                      + (tp->msec - r->start_msec));
    ms = ngx_max(ms, 0);

    ngx_http_ragnx_metrics_observe(&m->duration[route],
                                   ngx_http_ragnx_metrics_req_bounds,
                                   NGX_HTTP_RAGNX_METRICS_REQ_BOUNDS,
                                   (uint64_t) ms * 1000);

    ngx_log_debug3(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "ragnx metrics: route %ui, outcome %ui, %i ms",
                   route, outcome, ms);

    return NGX_OK;
}


/* the route of the request: $ragnx_route's, or its location's */

static ngx_uint_t
ngx_http_ragnx_metrics_request_route(ngx_http_request_t *r)
{
    ngx_uint_t                          route;
    ngx_http_variable_value_t          *v;
    ngx_http_ragnx_metrics_loc_conf_t  *mlcf;

    v = &r->variables[ngx_http_ragnx_metrics_route_index];

    if (v->valid && !v->not_found) {
        for (route = NGX_HTTP_RAGNX_METRICS_ROUTES - 1; route; route--) {
            if (v->data == ngx_http_ragnx_metrics_routes[route].data) {
                break;
            }
        }

        return route;
    }

    mlcf = ngx_http_get_module_loc_conf(r, ngx_http_ragnx_metrics_module);

    return mlcf->route;
}


/*
 * $ragnx_outcome: the outcome label the request is counted under (hit,
 * miss, follower, full, ok, or its status), for an access log; not
 * found outside ragnx locations.  Not cacheable: the status it reads is
 * final only in the log phase.
 */

static ngx_int_t
ngx_http_ragnx_metrics_outcome_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data)
{
    ngx_uint_t   route, outcome;
    const char  *name;

    route = ngx_http_ragnx_metrics_request_route(r);

    if (route == NGX_HTTP_RAGNX_METRICS_NONE) {
        v->not_found = 1;
        return NGX_OK;
    }

    outcome = ngx_http_ragnx_metrics_outcome(r, route);

    name = outcome < NGX_HTTP_RAGNX_METRICS_BY_STATUS
           ? ngx_http_ragnx_metrics_outcomes[outcome]
           : ngx_http_ragnx_metrics_statuses[outcome
                                     - NGX_HTTP_RAGNX_METRICS_BY_STATUS].name;

    v->data = (u_char *) name;
    v->len = ngx_strlen(name);
    v->valid = 1;
    v->no_cacheable = 1;
    v->not_found = 0;

    return NGX_OK;
}


/* $ragnx_route before the preaccess phase has set it: the location's */

static ngx_int_t
ngx_http_ragnx_metrics_route_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data)
{
    ngx_http_ragnx_metrics_loc_conf_t  *mlcf;

    mlcf = ngx_http_get_module_loc_conf(r, ngx_http_ragnx_metrics_module);

    if (mlcf->route == NGX_HTTP_RAGNX_METRICS_NONE) {
        v->not_found = 1;
        return NGX_OK;
    }

    v->data = ngx_http_ragnx_metrics_routes[mlcf->route].data;
    v->len = ngx_http_ragnx_metrics_routes[mlcf->route].len;
    v->valid = 1;
    v->no_cacheable = 0;
    v->not_found = 0;

    return NGX_OK;
}


/*
 * The zone holds the counters alone.  A reload finds the zone of the same
 * name and size and keeps it, counters and all; a module whose counters
 * changed size gets a new zone, from zero.
 */

static ngx_int_t
ngx_http_ragnx_metrics_init_zone(ngx_shm_zone_t *shm_zone, void *data)
{
    ngx_slab_pool_t           *shpool;
    ngx_http_ragnx_metrics_t  *m;

    if (data) {
        shm_zone->data = data;
        return NGX_OK;
    }

    shpool = (ngx_slab_pool_t *) shm_zone->shm.addr;

    if (shm_zone->shm.exists) {
        shm_zone->data = shpool->data;
        return NGX_OK;
    }

    m = ngx_slab_calloc(shpool, NGX_HTTP_RAGNX_METRICS_SIZE);
    if (m == NULL) {
        return NGX_ERROR;
    }

    shpool->data = m;
    shm_zone->data = m;

    return NGX_OK;
}


void
ngx_http_ragnx_metrics_route(ngx_conf_t *cf, ngx_str_t *directive)
{
    ngx_int_t                           method;
    ngx_http_ragnx_metrics_loc_conf_t  *mlcf;

    mlcf = ngx_http_conf_get_module_loc_conf(cf,
                                             ngx_http_ragnx_metrics_module);

    if (directive->len > sizeof("ragnx_rpc ") - 1
        && ngx_strncmp(directive->data, "ragnx_rpc ", 10) == 0)
    {
        method = ragnx_rpc_method((char *) directive->data + 10,
                                  directive->len - 10);

        if (method >= RAGNX_RPC_REGISTER && method <= RAGNX_RPC_MESSAGES) {
            mlcf->route = NGX_HTTP_RAGNX_METRICS_RPC + method - 1;
        }

    } else if (ngx_strcmp(directive->data, "ragnx_ask") == 0) {
        mlcf->route = NGX_HTTP_RAGNX_METRICS_ASK;

    } else if (ngx_strcmp(directive->data, "ragnx_ask_status") == 0) {
        mlcf->route = NGX_HTTP_RAGNX_METRICS_ASK_STATUS;

    } else if (ngx_strcmp(directive->data, "ragnx_health") == 0) {
        mlcf->route = NGX_HTTP_RAGNX_METRICS_HEALTH;

    } else if (ngx_strcmp(directive->data, "ragnx_metrics") == 0) {
        mlcf->route = NGX_HTTP_RAGNX_METRICS_METRICS;
    }
}


static ngx_int_t
ngx_http_ragnx_metrics_add_variables(ngx_conf_t *cf)
{
    ngx_http_variable_t  *var;

    var = ngx_http_add_variable(cf, &ngx_http_ragnx_metrics_route_name, 0);
    if (var == NULL) {
        return NGX_ERROR;
    }

    var->get_handler = ngx_http_ragnx_metrics_route_variable;

    var = ngx_http_add_variable(cf, &ngx_http_ragnx_metrics_outcome_name,
                                NGX_HTTP_VAR_NOCACHEABLE);
    if (var == NULL) {
        return NGX_ERROR;
    }

    var->get_handler = ngx_http_ragnx_metrics_outcome_variable;

    return NGX_OK;
}


static void *
ngx_http_ragnx_metrics_create_main_conf(ngx_conf_t *cf)
{
    ngx_http_ragnx_metrics_main_conf_t  *mmcf;

    mmcf = ngx_pcalloc(cf->pool, sizeof(ngx_http_ragnx_metrics_main_conf_t));
    if (mmcf == NULL) {
        return NULL;
    }

    /*
     * set by ngx_pcalloc():
     *
     *     mmcf->zone = NULL;
     *     mmcf->servers = 0;
     */

    return mmcf;
}


static void *
ngx_http_ragnx_metrics_create_loc_conf(ngx_conf_t *cf)
{
    ngx_http_ragnx_metrics_loc_conf_t  *conf;

    conf = ngx_pcalloc(cf->pool, sizeof(ngx_http_ragnx_metrics_loc_conf_t));
    if (conf == NULL) {
        return NULL;
    }

    /*
     * set by ngx_pcalloc():
     *
     *     conf->route = NGX_HTTP_RAGNX_METRICS_NONE;
     *     conf->enable = 0;
     */

    return conf;
}


static char *
ngx_http_ragnx_metrics_merge_loc_conf(ngx_conf_t *cf, void *parent,
    void *child)
{
    ngx_http_ragnx_metrics_loc_conf_t *prev = parent;
    ngx_http_ragnx_metrics_loc_conf_t *conf = child;

    ngx_http_core_loc_conf_t  *clcf;

    /*
     * A content handler is not inherited, nor is its route; an "if" or
     * "limit_except" block answers as its location does.
     */

    clcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_core_module);

    if (clcf->noname && conf->route == NGX_HTTP_RAGNX_METRICS_NONE) {
        conf->route = prev->route;
        conf->enable = prev->enable;
    }

    if (clcf->lmt_excpt && clcf->handler == NULL && conf->enable) {
        clcf->handler = ngx_http_ragnx_metrics_handler;
    }

    /* without "ragnx_redis", nginx's figures alone */

    if (conf->enable) {
        conf->queue = ngx_http_ragnx_redis_server(cf,
                                                  NGX_HTTP_RAGNX_REDIS_QUEUE);
    }

    return NGX_CONF_OK;
}


static ngx_int_t
ngx_http_ragnx_metrics_init(ngx_conf_t *cf)
{
    ngx_http_handler_pt                 *h;
    ngx_http_core_main_conf_t           *cmcf;
    ngx_http_ragnx_metrics_main_conf_t  *mmcf;

    ngx_http_ragnx_metrics_route_index =
        ngx_http_get_variable_index(cf, &ngx_http_ragnx_metrics_route_name);

    if (ngx_http_ragnx_metrics_route_index == NGX_ERROR) {
        return NGX_ERROR;
    }

    mmcf = ngx_http_conf_get_module_main_conf(cf,
                                              ngx_http_ragnx_metrics_module);

    if (mmcf->zone == NULL) {
        return NGX_OK;
    }

    mmcf->servers =
        (ngx_http_ragnx_redis_server(cf, NGX_HTTP_RAGNX_REDIS_CACHE)
         != ngx_http_ragnx_redis_server(cf, NGX_HTTP_RAGNX_REDIS_QUEUE))
        ? 2 : 1;

    cmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_core_module);

    h = ngx_array_push(&cmcf->phases[NGX_HTTP_PREACCESS_PHASE].handlers);
    if (h == NULL) {
        return NGX_ERROR;
    }

    *h = ngx_http_ragnx_metrics_preaccess_handler;

    h = ngx_array_push(&cmcf->phases[NGX_HTTP_LOG_PHASE].handlers);
    if (h == NULL) {
        return NGX_ERROR;
    }

    *h = ngx_http_ragnx_metrics_log_handler;

    return NGX_OK;
}


/* in the master, once the cycle's zones are mapped: the workers inherit */

static ngx_int_t
ngx_http_ragnx_metrics_init_module(ngx_cycle_t *cycle)
{
    ngx_http_ragnx_metrics_main_conf_t  *mmcf;

    mmcf = ngx_http_cycle_get_module_main_conf(cycle,
                                               ngx_http_ragnx_metrics_module);

    ngx_http_ragnx_metrics_slots = (mmcf && mmcf->zone) ? mmcf->zone->data
                                                        : NULL;
    ngx_http_ragnx_metrics = ngx_http_ragnx_metrics_slots;

    return NGX_OK;
}


static ngx_int_t
ngx_http_ragnx_metrics_init_process(ngx_cycle_t *cycle)
{
    if (ngx_http_ragnx_metrics_slots) {
        ngx_http_ragnx_metrics = ngx_http_ragnx_metrics_slots
                                 + ngx_worker % NGX_HTTP_RAGNX_METRICS_SLOTS;
    }

    return NGX_OK;
}


static char *
ngx_http_ragnx_metrics_directive(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf)
{
    ngx_http_ragnx_metrics_loc_conf_t *mlcf = conf;

    size_t                               size;
    ngx_http_ragnx_metrics_main_conf_t  *mmcf;

    if (mlcf->enable) {
        return "is duplicate";
    }

    mlcf->enable = 1;

    mmcf = ngx_http_conf_get_module_main_conf(cf,
                                              ngx_http_ragnx_metrics_module);

    if (mmcf->zone == NULL) {
        size = 8 * ngx_pagesize
               + ngx_align(NGX_HTTP_RAGNX_METRICS_SIZE, ngx_pagesize);

        mmcf->zone = ngx_shared_memory_add(cf,
                                           &ngx_http_ragnx_metrics_zone_name,
                                           size,
                                           &ngx_http_ragnx_metrics_module);
        if (mmcf->zone == NULL) {
            return NGX_CONF_ERROR;
        }

        mmcf->zone->init = ngx_http_ragnx_metrics_init_zone;

        ngx_http_ragnx_metrics_script_index =
            ngx_http_ragnx_redis_script(cf, &ngx_http_ragnx_metrics_script);

        if (ngx_http_ragnx_metrics_script_index == NGX_ERROR) {
            return NGX_CONF_ERROR;
        }
    }

    /* no token needed (allow/deny protect it), no body: GET only */

    return ngx_http_ragnx_handler(cf, &cmd->name,
                                  ngx_http_ragnx_metrics_handler,
                                  NGX_HTTP_RAGNX_NO_BODY);
}
