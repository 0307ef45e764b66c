
/*
 * ragnx health: GET /health ("ragnx_health"), through the non-blocking
 * Redis pool: one call of the health script on the queue server (the
 * pool's live processes and newest heartbeat, PostgreSQL as the pool last
 * saw it, the jobs queue, the records lane's backlog and the hits refused
 * at its bound, the pool's LLM circuit breaker; any answer says Redis is
 * up) and a PING to a separate cache server.  503 "degraded", with the
 * reasons, when Redis is down, no pool process beat within
 * "ragnx_health_pool_timeout", the pool finds PostgreSQL down, or the LLM
 * breaker is open.  docs/operations.md describes the fields.
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ngx_http_ragnx.h"
#include "ngx_http_ragnx_redis.h"
#include "ragnx_keys.h"
#include "ragnx_lua_module.h"


/* what ngx_http_ragnx_health_send() is told */
#define NGX_HTTP_RAGNX_HEALTH_DOWN      0
#define NGX_HTTP_RAGNX_HEALTH_UP        1
#define NGX_HTTP_RAGNX_HEALTH_NO_REDIS  2

/* the heartbeat window counted while the pool is not judged ("off") */
#define NGX_HTTP_RAGNX_HEALTH_WINDOW    10000
#define NGX_HTTP_RAGNX_HEALTH_REPLY     11


typedef struct {
    ngx_flag_t                    enable;
    ngx_msec_t                    pool_timeout;   /* 0: "off" */
    ngx_http_ragnx_redis_srv_t   *queue;
    ngx_http_ragnx_redis_srv_t   *cache;
} ngx_http_ragnx_health_loc_conf_t;


typedef struct {
    ngx_http_ragnx_redis_wait_t   wait;
    ngx_uint_t                    pings;
    ngx_uint_t                    pongs;
    ngx_uint_t                    records;   /* the script answered */
    int64_t                       backlog;
    int64_t                       refused;
    int64_t                       processes;
    int64_t                       beat;      /* ms; -1: never */
    ngx_uint_t                    pg;        /* 0 unknown, 1 ok, 2 down */
    int64_t                       checked;   /* ms; -1: never */
    int64_t                       jobs;
    int64_t                       running;
    int64_t                       delayed;
    int64_t                       oldest;    /* ms */
    ngx_str_t                     llm;       /* the breaker: why open */
} ngx_http_ragnx_health_ctx_t;


static ngx_int_t ngx_http_ragnx_health_handler(ngx_http_request_t *r);
static void ngx_http_ragnx_health_reply(ngx_http_request_t *r,
    redisReply *reply, ngx_int_t rc);
static void ngx_http_ragnx_health_resume(ngx_http_request_t *r);
static ngx_int_t ngx_http_ragnx_health_send(ngx_http_request_t *r,
    ngx_uint_t up);
static json_t *ngx_http_ragnx_health_age(int64_t ms);

static void *ngx_http_ragnx_health_create_loc_conf(ngx_conf_t *cf);
static char *ngx_http_ragnx_health_merge_loc_conf(ngx_conf_t *cf,
    void *parent, void *child);
static ngx_int_t ngx_http_ragnx_health_init_module(ngx_cycle_t *cycle);
static char *ngx_http_ragnx_health(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_http_ragnx_health_pool_timeout(ngx_conf_t *cf,
    ngx_command_t *cmd, void *conf);


static ngx_command_t  ngx_http_ragnx_health_commands[] = {

    { ngx_string("ragnx_health"),
      NGX_HTTP_LOC_CONF|NGX_CONF_NOARGS,
      ngx_http_ragnx_health,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("ragnx_health_pool_timeout"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_http_ragnx_health_pool_timeout,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

      ngx_null_command
};


static ngx_http_module_t  ngx_http_ragnx_health_module_ctx = {
    NULL,                                  /* preconfiguration */
    NULL,                                  /* postconfiguration */

    NULL,                                  /* create main configuration */
    NULL,                                  /* init main configuration */

    NULL,                                  /* create server configuration */
    NULL,                                  /* merge server configuration */

    ngx_http_ragnx_health_create_loc_conf, /* create location configuration */
    ngx_http_ragnx_health_merge_loc_conf   /* merge location configuration */
};


ngx_module_t  ngx_http_ragnx_health_module = {
    NGX_MODULE_V1,
    &ngx_http_ragnx_health_module_ctx,     /* module context */
    ngx_http_ragnx_health_commands,        /* module directives */
    NGX_HTTP_MODULE,                       /* module type */
    NULL,                                  /* init master */
    ngx_http_ragnx_health_init_module,     /* init module */
    NULL,                                  /* init process */
    NULL,                                  /* init thread */
    NULL,                                  /* exit thread */
    NULL,                                  /* exit process */
    NULL,                                  /* exit master */
    NGX_MODULE_V1_PADDING
};


static time_t  ngx_http_ragnx_health_started;

static ngx_str_t  ngx_http_ragnx_health_script =
    ngx_string(RAGNX_LUA_HEALTH);

static ngx_int_t  ngx_http_ragnx_health_script_index;


static ngx_int_t
ngx_http_ragnx_health_handler(ngx_http_request_t *r)
{
    u_char                            *p;
    size_t                             lens[10];
    ngx_uint_t                         i;
    const char                        *argv[10];
    ngx_msec_t                         window;
    ngx_http_ragnx_health_ctx_t       *ctx;
    ngx_http_ragnx_health_loc_conf_t  *hlcf;

    static const char  *keys[] = {
        RAGNX_KEY_RECORDS, RAGNX_KEY_STATS, RAGNX_KEY_LLM, RAGNX_KEY_POOL,
        RAGNX_KEY_POOL_PG, RAGNX_KEY_JOBS, RAGNX_KEY_DELAYED
    };

    if (!(r->method & (NGX_HTTP_GET|NGX_HTTP_HEAD))) {
        return ngx_http_ragnx_send_not_allowed(r, "GET, HEAD");
    }

    hlcf = ngx_http_get_module_loc_conf(r, ngx_http_ragnx_health_module);

    if (hlcf->queue == NULL) {
        return ngx_http_ragnx_health_send(r, NGX_HTTP_RAGNX_HEALTH_NO_REDIS);
    }

    ctx = ngx_pcalloc(r->pool, sizeof(ngx_http_ragnx_health_ctx_t)
                               + NGX_INT_T_LEN);
    if (ctx == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ngx_http_set_ctx(r, ctx, ngx_http_ragnx_health_module);

    /* notice a client that goes away while the reply is pending */
    r->read_event_handler = ngx_http_test_reading;

    argv[0] = "7";
    lens[0] = 1;

    for (i = 0; i < 7; i++) {
        argv[i + 1] = keys[i];
        lens[i + 1] = ngx_strlen(keys[i]);
    }

    window = hlcf->pool_timeout ? hlcf->pool_timeout
                                : NGX_HTTP_RAGNX_HEALTH_WINDOW;

    p = (u_char *) (ctx + 1);
    argv[8] = (const char *) p;
    lens[8] = ngx_sprintf(p, "%M", window) - p;

    ctx->wait.reply = ngx_http_ragnx_health_reply;
    ctx->wait.resume = ngx_http_ragnx_health_resume;

    if (ngx_http_ragnx_redis_eval(r, &ctx->wait, hlcf->queue,
                                  ngx_http_ragnx_health_script_index, 9,
                                  argv, lens)
        != NGX_OK)
    {
        return ngx_http_ragnx_health_send(r, NGX_HTTP_RAGNX_HEALTH_DOWN);
    }

    ctx->pings = 1;

    return NGX_DONE;
}


/* inside the hiredis callback: count and copy, do not respond */

static void
ngx_http_ragnx_health_reply(ngx_http_request_t *r, redisReply *reply,
    ngx_int_t rc)
{
    redisReply                   **e;
    ngx_uint_t                     i;
    ngx_http_ragnx_health_ctx_t   *ctx;

    /* the types of the script's reply, in order */
    static const char  types[] = "iisiisiiiii";

    ctx = ngx_http_get_module_ctx(r, ngx_http_ragnx_health_module);

    if (rc != NGX_OK) {
        return;
    }

    if (reply->type == REDIS_REPLY_STATUS) {
        ctx->pongs++;
        return;
    }

    if (reply->type != REDIS_REPLY_ARRAY
        || reply->elements != NGX_HTTP_RAGNX_HEALTH_REPLY)
    {
        return;
    }

    e = reply->element;

    for (i = 0; i < NGX_HTTP_RAGNX_HEALTH_REPLY; i++) {
        if (e[i]->type != (types[i] == 'i' ? REDIS_REPLY_INTEGER
                                           : REDIS_REPLY_STRING))
        {
            return;
        }
    }

    ctx->pongs++;
    ctx->records = 1;
    ctx->backlog = e[0]->integer;
    ctx->refused = e[1]->integer;
    ctx->processes = e[3]->integer;
    ctx->beat = e[4]->integer;
    ctx->pg = (e[5]->len == 2 && ngx_strncmp(e[5]->str, "ok", 2) == 0) ? 1
              : (e[5]->len == 4 && ngx_strncmp(e[5]->str, "down", 4) == 0)
              ? 2 : 0;
    ctx->checked = e[6]->integer;
    ctx->jobs = e[7]->integer;
    ctx->running = e[8]->integer;
    ctx->delayed = e[9]->integer;
    ctx->oldest = e[10]->integer;

    ngx_log_debug4(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "ragnx health: %L pool processes, beat %L ms ago, "
                   "postgresql %ui, %L jobs", ctx->processes, ctx->beat,
                   ctx->pg, ctx->jobs);

    /* the reply is freed after this callback: a copy of the reason */
    if (e[2]->len > 0 && e[2]->len <= 64) {
        ctx->llm.data = ngx_pnalloc(r->pool, e[2]->len);

        if (ctx->llm.data) {
            ngx_memcpy(ctx->llm.data, e[2]->str, e[2]->len);
            ctx->llm.len = e[2]->len;
        }
    }
}


static void
ngx_http_ragnx_health_resume(ngx_http_request_t *r)
{
    size_t                             len;
    ngx_uint_t                         servers;
    const char                        *argv;
    ngx_http_ragnx_health_ctx_t       *ctx;
    ngx_http_ragnx_health_loc_conf_t  *hlcf;

    ctx = ngx_http_get_module_ctx(r, ngx_http_ragnx_health_module);
    hlcf = ngx_http_get_module_loc_conf(r, ngx_http_ragnx_health_module);

    servers = (hlcf->cache != hlcf->queue) ? 2 : 1;

    ngx_log_debug3(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "ragnx health: %ui of %ui pings answered, %ui servers",
                   ctx->pongs, ctx->pings, servers);

    /* a separate cache server is pinged too */

    if (ctx->pings == 1 && ctx->pongs == 1 && servers == 2) {
        argv = "PING";
        len = 4;

        if (ngx_http_ragnx_redis_call(r, &ctx->wait, hlcf->cache, 1, &argv,
                                      &len)
            == NGX_OK)
        {
            ctx->pings = 2;
            ngx_http_finalize_request(r, NGX_DONE);
            return;
        }
    }

    ngx_http_finalize_request(r, ngx_http_ragnx_health_send(r,
                                     ctx->pongs == servers
                                     ? NGX_HTTP_RAGNX_HEALTH_UP
                                     : NGX_HTTP_RAGNX_HEALTH_DOWN));
}


/*
 * Degraded, and why (in this order): Redis did not answer; no pool
 * process beat within the timeout (nothing would run an ask); the live
 * pool finds PostgreSQL down; the pool's LLM calls are paused (the
 * provider refuses its key).
 */

static ngx_int_t
ngx_http_ragnx_health_send(ngx_http_request_t *r, ngx_uint_t up)
{
    u_char                            *p, *last;
    u_char                             reason[64];
    json_t                            *body;
    ngx_int_t                          rc;
    ngx_http_ragnx_health_ctx_t       *ctx;
    ngx_http_ragnx_health_loc_conf_t  *hlcf;

    ctx = ngx_http_get_module_ctx(r, ngx_http_ragnx_health_module);
    hlcf = ngx_http_get_module_loc_conf(r, ngx_http_ragnx_health_module);

    p = reason;
    last = reason + sizeof(reason);

    if (up == NGX_HTTP_RAGNX_HEALTH_DOWN || (ctx && !ctx->records)) {
        p = ngx_slprintf(p, last, ",redis");
    }

    if (ctx && ctx->records) {
        if (hlcf->pool_timeout && ctx->processes == 0) {
            p = ngx_slprintf(p, last, ",pool");
        }

        if (ctx->pg == 2 && ctx->processes > 0) {
            p = ngx_slprintf(p, last, ",postgresql");
        }

        if (ctx->llm.len) {
            p = ngx_slprintf(p, last, ",llm");
        }
    }

    body = json_pack("{s:s, s:I}", "status", p == reason ? "ok" : "degraded",
                     "uptime",
                     (json_int_t) (ngx_time() - ngx_http_ragnx_health_started));
    if (body == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (p != reason) {
        json_object_set_new(body, "reason",
                            json_stringn((char *) reason + 1,
                                         p - reason - 1));
    }

    if (up != NGX_HTTP_RAGNX_HEALTH_NO_REDIS) {
        json_object_set_new(body, "redis", json_string(up ? "ok" : "down"));
    }

    if (ctx && ctx->llm.len) {
        json_object_set_new(body, "llm",
                            json_stringn((char *) ctx->llm.data,
                                         ctx->llm.len));
    }

    if (ctx && ctx->records) {
        json_object_set_new(body, "pool",
            json_pack("{s:I, s:o}",
                      "processes", (json_int_t) ctx->processes,
                      "heartbeat_age",
                      ngx_http_ragnx_health_age(ctx->beat)));

        json_object_set_new(body, "postgresql",
            json_pack("{s:s, s:o}",
                      "status", ctx->pg == 1 ? "ok"
                                : ctx->pg == 2 ? "down" : "unknown",
                      "checked_age",
                      ngx_http_ragnx_health_age(ctx->checked)));

        /* in the stream: run by a process now, or waiting for one */
        json_object_set_new(body, "queue",
            json_pack("{s:I, s:I, s:I, s:I, s:o}",
                      "jobs", (json_int_t) ctx->jobs,
                      "running", (json_int_t) ctx->running,
                      "waiting", (json_int_t) (ctx->jobs > ctx->running
                                               ? ctx->jobs - ctx->running
                                               : 0),
                      "delayed", (json_int_t) ctx->delayed,
                      "oldest_age",
                      ngx_http_ragnx_health_age(ctx->oldest)));

        /* hits answered from the cache not written yet, and refused */
        json_object_set_new(body, "records",
                            json_pack("{s:I, s:I}",
                                      "backlog", (json_int_t) ctx->backlog,
                                      "refused", (json_int_t) ctx->refused));
    }

    rc = ngx_http_ragnx_send_json(r, p == reason
                                     ? NGX_HTTP_OK
                                     : NGX_HTTP_SERVICE_UNAVAILABLE,
                                  body);
    json_decref(body);

    return rc;
}


/* ms to seconds, to the ms; null for "never" */

static json_t *
ngx_http_ragnx_health_age(int64_t ms)
{
    if (ms < 0) {
        return json_null();
    }

    return json_real((double) ms / 1000);
}


static void *
ngx_http_ragnx_health_create_loc_conf(ngx_conf_t *cf)
{
    ngx_http_ragnx_health_loc_conf_t  *conf;

    conf = ngx_pcalloc(cf->pool, sizeof(ngx_http_ragnx_health_loc_conf_t));
    if (conf == NULL) {
        return NULL;
    }

    /*
     * set by ngx_pcalloc():
     *
     *     conf->enable = 0;
     *     conf->queue = NULL;
     *     conf->cache = NULL;
     */

    conf->pool_timeout = NGX_CONF_UNSET_MSEC;

    return conf;
}


static char *
ngx_http_ragnx_health_merge_loc_conf(ngx_conf_t *cf, void *parent,
    void *child)
{
    ngx_http_ragnx_health_loc_conf_t *prev = parent;
    ngx_http_ragnx_health_loc_conf_t *conf = child;

    ngx_http_core_loc_conf_t  *clcf;

    /*
     * A request may be served with the configuration of an "if" or
     * "limit_except" block in the location: the block answers as the
     * location does (as ngx_http_proxy_module's merge has it).
     */

    ngx_conf_merge_msec_value(conf->pool_timeout, prev->pool_timeout,
                              NGX_HTTP_RAGNX_HEALTH_WINDOW);

    clcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_core_module);

    if (!conf->enable && clcf->noname) {
        conf->enable = prev->enable;
    }

    if (clcf->lmt_excpt && clcf->handler == NULL && conf->enable) {
        clcf->handler = ngx_http_ragnx_health_handler;
    }

    if (!conf->enable) {
        return NGX_CONF_OK;
    }

    /* no "ragnx_redis" is reported by ngx_http_ragnx_module */

    conf->queue = ngx_http_ragnx_redis_server(cf, NGX_HTTP_RAGNX_REDIS_QUEUE);
    conf->cache = ngx_http_ragnx_redis_server(cf, NGX_HTTP_RAGNX_REDIS_CACHE);

    return NGX_CONF_OK;
}


static ngx_int_t
ngx_http_ragnx_health_init_module(ngx_cycle_t *cycle)
{
    ngx_http_ragnx_health_started = ngx_time();

    return NGX_OK;
}


static char *
ngx_http_ragnx_health(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_ragnx_health_loc_conf_t *hlcf = conf;

    if (hlcf->enable) {
        return "is duplicate";
    }

    hlcf->enable = 1;

    ngx_http_ragnx_health_script_index =
        ngx_http_ragnx_redis_script(cf, &ngx_http_ragnx_health_script);

    if (ngx_http_ragnx_health_script_index == NGX_ERROR) {
        return NGX_CONF_ERROR;
    }

    /* no token needed, no body taken: GET only */

    return ngx_http_ragnx_handler(cf, &cmd->name,
                                  ngx_http_ragnx_health_handler,
                                  NGX_HTTP_RAGNX_NO_BODY
                                  |NGX_HTTP_RAGNX_NEEDS_REDIS);
}


/*
 * ragnx_health_pool_timeout <time> | off: /health is degraded when no
 * pool process beat for that long; "off" reports the pool, not judging
 * it.  At least twice the pool's heartbeat period (1 s), so one late beat
 * is not an outage; at most the hour after which the pool forgets a
 * process (workers/lua/beat.lua).
 */

static char *
ngx_http_ragnx_health_pool_timeout(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf)
{
    ngx_http_ragnx_health_loc_conf_t *hlcf = conf;

    ngx_str_t   *value;
    ngx_msec_t   ms;

    if (hlcf->pool_timeout != NGX_CONF_UNSET_MSEC) {
        return "is duplicate";
    }

    value = cf->args->elts;

    if (ngx_strcmp(value[1].data, "off") == 0) {
        hlcf->pool_timeout = 0;
        return NGX_CONF_OK;
    }

    ms = ngx_parse_time(&value[1], 0);

    if (ms == (ngx_msec_t) NGX_ERROR) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid value \"%V\" in \"%V\": a time "
                           "(\"10s\") or \"off\"", &value[1], &cmd->name);
        return NGX_CONF_ERROR;
    }

    if (ms < 2000 || ms > 3600000) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"%V\" must be between 2s and 1h, not \"%V\"",
                           &cmd->name, &value[1]);
        return NGX_CONF_ERROR;
    }

    hlcf->pool_timeout = ms;

    return NGX_CONF_OK;
}
