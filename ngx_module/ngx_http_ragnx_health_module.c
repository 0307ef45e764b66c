
/*
 * ragnx health: GET /health ("ragnx_health"), through the non-blocking
 * Redis pool: the health script on the queue server (the records lane's
 * backlog and the hits refused at its bound, the pool's LLM circuit
 * breaker; any answer says Redis is up) and a PING to a separate cache
 * server, answered with {"status", "redis", "uptime", "records"}, and
 * "llm" while the breaker is open (503, "degraded").
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


typedef struct {
    ngx_flag_t                    enable;
    ngx_http_ragnx_redis_srv_t   *queue;
    ngx_http_ragnx_redis_srv_t   *cache;
} ngx_http_ragnx_health_loc_conf_t;


typedef struct {
    ngx_http_ragnx_redis_wait_t   wait;
    ngx_uint_t                    pings;
    ngx_uint_t                    pongs;
    ngx_uint_t                    records;   /* the lane was read */
    int64_t                       backlog;
    int64_t                       refused;
    ngx_str_t                     llm;       /* the breaker: why open */
} ngx_http_ragnx_health_ctx_t;


static ngx_int_t ngx_http_ragnx_health_handler(ngx_http_request_t *r);
static void ngx_http_ragnx_health_reply(ngx_http_request_t *r,
    redisReply *reply, ngx_int_t rc);
static void ngx_http_ragnx_health_resume(ngx_http_request_t *r);
static ngx_int_t ngx_http_ragnx_health_send(ngx_http_request_t *r,
    ngx_uint_t up);

static void *ngx_http_ragnx_health_create_loc_conf(ngx_conf_t *cf);
static char *ngx_http_ragnx_health_merge_loc_conf(ngx_conf_t *cf,
    void *parent, void *child);
static ngx_int_t ngx_http_ragnx_health_init_module(ngx_cycle_t *cycle);
static char *ngx_http_ragnx_health(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);


static ngx_command_t  ngx_http_ragnx_health_commands[] = {

    { ngx_string("ragnx_health"),
      NGX_HTTP_LOC_CONF|NGX_CONF_NOARGS,
      ngx_http_ragnx_health,
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
    size_t                             lens[4];
    const char                        *argv[4];
    ngx_http_ragnx_health_ctx_t       *ctx;
    ngx_http_ragnx_health_loc_conf_t  *hlcf;

    if (!(r->method & (NGX_HTTP_GET|NGX_HTTP_HEAD))) {
        return ngx_http_ragnx_send_not_allowed(r, "GET, HEAD");
    }

    hlcf = ngx_http_get_module_loc_conf(r, ngx_http_ragnx_health_module);

    if (hlcf->queue == NULL) {
        return ngx_http_ragnx_health_send(r, NGX_HTTP_RAGNX_HEALTH_NO_REDIS);
    }

    ctx = ngx_pcalloc(r->pool, sizeof(ngx_http_ragnx_health_ctx_t));
    if (ctx == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ngx_http_set_ctx(r, ctx, ngx_http_ragnx_health_module);

    /* notice a client that goes away while the reply is pending */
    r->read_event_handler = ngx_http_test_reading;

    argv[0] = "3";
    lens[0] = 1;
    argv[1] = RAGNX_KEY_RECORDS;
    lens[1] = sizeof(RAGNX_KEY_RECORDS) - 1;
    argv[2] = RAGNX_KEY_STATS;
    lens[2] = sizeof(RAGNX_KEY_STATS) - 1;
    argv[3] = RAGNX_KEY_LLM;
    lens[3] = sizeof(RAGNX_KEY_LLM) - 1;

    ctx->wait.reply = ngx_http_ragnx_health_reply;
    ctx->wait.resume = ngx_http_ragnx_health_resume;

    if (ngx_http_ragnx_redis_eval(r, &ctx->wait, hlcf->queue,
                                  ngx_http_ragnx_health_script_index, 4,
                                  argv, lens)
        != NGX_OK)
    {
        return ngx_http_ragnx_health_send(r, NGX_HTTP_RAGNX_HEALTH_DOWN);
    }

    ctx->pings = 1;

    return NGX_DONE;
}


/* inside the hiredis callback: count, do not respond */

static void
ngx_http_ragnx_health_reply(ngx_http_request_t *r, redisReply *reply,
    ngx_int_t rc)
{
    ngx_http_ragnx_health_ctx_t  *ctx;

    ctx = ngx_http_get_module_ctx(r, ngx_http_ragnx_health_module);

    if (rc != NGX_OK) {
        return;
    }

    if (reply->type == REDIS_REPLY_STATUS) {
        ctx->pongs++;

    } else if (reply->type == REDIS_REPLY_ARRAY && reply->elements == 3
               && reply->element[0]->type == REDIS_REPLY_INTEGER
               && reply->element[1]->type == REDIS_REPLY_INTEGER
               && reply->element[2]->type == REDIS_REPLY_STRING)
    {
        ctx->pongs++;
        ctx->records = 1;
        ctx->backlog = reply->element[0]->integer;
        ctx->refused = reply->element[1]->integer;

        /* the reply is freed after this callback: a copy of the reason */
        if (reply->element[2]->len > 0 && reply->element[2]->len <= 64) {
            ctx->llm.data = ngx_pnalloc(r->pool, reply->element[2]->len);

            if (ctx->llm.data) {
                ngx_memcpy(ctx->llm.data, reply->element[2]->str,
                           reply->element[2]->len);
                ctx->llm.len = reply->element[2]->len;
            }
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


static ngx_int_t
ngx_http_ragnx_health_send(ngx_http_request_t *r, ngx_uint_t up)
{
    json_t                       *body;
    ngx_int_t                     rc;
    ngx_uint_t                    ok;
    ngx_http_ragnx_health_ctx_t  *ctx;

    ctx = ngx_http_get_module_ctx(r, ngx_http_ragnx_health_module);

    /* the pool's LLM calls paused (the provider refuses its key) */
    ok = up && (ctx == NULL || ctx->llm.len == 0);

    body = json_pack("{s:s, s:I}", "status", ok ? "ok" : "degraded",
                     "uptime",
                     (json_int_t) (ngx_time() - ngx_http_ragnx_health_started));
    if (body == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (up != NGX_HTTP_RAGNX_HEALTH_NO_REDIS) {
        json_object_set_new(body, "redis", json_string(up ? "ok" : "down"));
    }

    if (ctx && ctx->llm.len) {
        json_object_set_new(body, "llm",
                            json_stringn((char *) ctx->llm.data,
                                         ctx->llm.len));
    }

    /* hits answered from the cache not written yet, and those refused */

    if (ctx && ctx->records) {
        json_object_set_new(body, "records",
                            json_pack("{s:I, s:I}",
                                      "backlog", (json_int_t) ctx->backlog,
                                      "refused", (json_int_t) ctx->refused));
    }

    rc = ngx_http_ragnx_send_json(r, ok ? NGX_HTTP_OK
                                        : NGX_HTTP_SERVICE_UNAVAILABLE,
                                  body);
    json_decref(body);

    return rc;
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
