
/*
 * ragnx rpc: synchronous calls to the worker pool (register, login, me,
 * chats, messages).  A request is checked here, put on the {ragnx}:rpc
 * stream together with the name of this worker's reply channel, and waits
 * without blocking for the reply the pool publishes there.  Replies find
 * their request by call id in a per-worker table of pending calls.
 * register and login are sealed (shared/ragnx_seal.h): their password
 * and token never cross Redis in the clear.
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ngx_http_ragnx.h"
#include "ngx_http_ragnx_metrics.h"
#include "ngx_http_ragnx_redis.h"
#include "ngx_http_ragnx_rpc.h"
#include <sodium.h>
#include "ragnx_keys.h"
#include "ragnx_rpc.h"
#include "ragnx_seal.h"
#include "ragnx_uuid.h"


typedef struct {
    ngx_uint_t                    method;     /* RAGNX_RPC_*, 0 if none */
    u_char                       *file;       /* where ragnx_rpc is */
    ngx_uint_t                    line;
    ngx_http_complex_value_t     *chat_id;
    ngx_msec_t                    timeout;
    ngx_http_ragnx_redis_srv_t   *queue;
} ngx_http_ragnx_rpc_loc_conf_t;


typedef struct {
    ngx_http_ragnx_redis_sub_t   *sub;        /* this worker's channel */
    ngx_str_t                     seal_file;
    u_char                        seal_key[RAGNX_SEAL_KEY_BYTES];
} ngx_http_ragnx_rpc_main_conf_t;


/*
 * One call of a request, in its ctx.  Ownership across the async boundary:
 * while the call waits, "node" is linked into the per-worker table of
 * pending calls and "timer" runs.  The reply dispatcher and the timer
 * unlink the call before they touch the request; a request pool cleanup
 * unlinks it (and stops the timer) when the request goes away first, so
 * a late reply finds no call and is dropped.  The XADD itself is a
 * ngx_http_ragnx_redis_wait_t with the same detaching rule.
 *
 * The request's reference (r->main->count) is taken by the XADD; once the
 * XADD is acknowledged it belongs to the pending call, and whichever of
 * the two finishes last responds and finalizes, from a posted event.
 */

typedef struct {
    ngx_str_node_t                node;       /* first: key is the call id */
    ngx_http_ragnx_redis_wait_t   wait;
    ngx_http_request_t           *request;
    ngx_http_ragnx_rpc_done_pt    handler;    /* NULL: respond as is */
    ngx_event_t                   timer;
    ngx_event_t                   event;
    ngx_uint_t                    status;
    ngx_str_t                     body;       /* the reply's, or empty */
    const char                   *error;      /* our own answer otherwise */
    ngx_uint_t                    method;
    u_char                        id[RAGNX_UUID_LEN + 1];
    u_char                        key[RAGNX_SEAL_KEY_BYTES];  /* sealed */
    unsigned                      sealed:1;   /* the reply is sealed */
    unsigned                      pending:1;  /* in the table */
    unsigned                      sent:1;     /* XADD acknowledged */
    unsigned                      done:1;     /* outcome known */
} ngx_http_ragnx_rpc_ctx_t;


static ngx_int_t ngx_http_ragnx_rpc_handler(ngx_http_request_t *r);
static json_t *ngx_http_ragnx_rpc_params(ngx_http_request_t *r,
    ngx_http_ragnx_rpc_loc_conf_t *rlcf, ngx_int_t *status,
    const char **error, json_t **details);
static ngx_int_t ngx_http_ragnx_rpc_chat_id(ngx_http_request_t *r,
    ngx_http_ragnx_rpc_loc_conf_t *rlcf, ngx_str_t *id);
static ngx_int_t ngx_http_ragnx_rpc_page(ngx_http_request_t *r,
    json_t *params, json_t *details);
static ngx_http_ragnx_rpc_ctx_t *ngx_http_ragnx_rpc_ctx(
    ngx_http_request_t *r);
static ngx_int_t ngx_http_ragnx_rpc_send(ngx_http_request_t *r,
    ngx_http_ragnx_rpc_ctx_t *ctx, ngx_uint_t method,
    ngx_http_ragnx_redis_srv_t *srv, ngx_str_t *channel, ngx_str_t *sub,
    json_t *params);
static void ngx_http_ragnx_rpc_sent(ngx_http_request_t *r,
    redisReply *reply, ngx_int_t rc);
static void ngx_http_ragnx_rpc_sent_resume(ngx_http_request_t *r);
static void ngx_http_ragnx_rpc_message(ngx_str_t *msg, void *data);
static void ngx_http_ragnx_rpc_timeout_handler(ngx_event_t *ev);
static void ngx_http_ragnx_rpc_resolve(ngx_http_ragnx_rpc_ctx_t *ctx,
    ngx_uint_t status, const char *error);
static void ngx_http_ragnx_rpc_unlink(ngx_http_ragnx_rpc_ctx_t *ctx);
static void ngx_http_ragnx_rpc_resume_handler(ngx_event_t *ev);
static ngx_int_t ngx_http_ragnx_rpc_respond(ngx_http_request_t *r,
    ngx_http_ragnx_rpc_ctx_t *ctx);
static ngx_int_t ngx_http_ragnx_rpc_finish(ngx_http_request_t *r,
    ngx_http_ragnx_rpc_ctx_t *ctx);
static void ngx_http_ragnx_rpc_cleanup(void *data);

static void *ngx_http_ragnx_rpc_create_main_conf(ngx_conf_t *cf);
static void *ngx_http_ragnx_rpc_create_loc_conf(ngx_conf_t *cf);
static char *ngx_http_ragnx_rpc_merge_loc_conf(ngx_conf_t *cf, void *parent,
    void *child);
static ngx_int_t ngx_http_ragnx_rpc_init_process(ngx_cycle_t *cycle);
static char *ngx_http_ragnx_rpc(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_http_ragnx_rpc_seal_key(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);


static ngx_command_t  ngx_http_ragnx_rpc_commands[] = {

    { ngx_string("ragnx_rpc"),
      NGX_HTTP_LOC_CONF|NGX_CONF_TAKE12,
      ngx_http_ragnx_rpc,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("ragnx_rpc_seal_key"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_http_ragnx_rpc_seal_key,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("ragnx_rpc_timeout"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_msec_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_ragnx_rpc_loc_conf_t, timeout),
      &ngx_http_ragnx_positive_msec_p },

      ngx_null_command
};


static ngx_http_module_t  ngx_http_ragnx_rpc_module_ctx = {
    NULL,                                  /* preconfiguration */
    NULL,                                  /* postconfiguration */

    ngx_http_ragnx_rpc_create_main_conf,   /* create main configuration */
    NULL,                                  /* init main configuration */

    NULL,                                  /* create server configuration */
    NULL,                                  /* merge server configuration */

    ngx_http_ragnx_rpc_create_loc_conf,    /* create location configuration */
    ngx_http_ragnx_rpc_merge_loc_conf      /* merge location configuration */
};


ngx_module_t  ngx_http_ragnx_rpc_module = {
    NGX_MODULE_V1,
    &ngx_http_ragnx_rpc_module_ctx,        /* module context */
    ngx_http_ragnx_rpc_commands,           /* module directives */
    NGX_HTTP_MODULE,                       /* module type */
    NULL,                                  /* init master */
    NULL,                                  /* init module */
    ngx_http_ragnx_rpc_init_process,       /* init process */
    NULL,                                  /* init thread */
    NULL,                                  /* exit thread */
    NULL,                                  /* exit process */
    NULL,                                  /* exit master */
    NGX_MODULE_V1_PADDING
};


/* the calls this worker waits for, by call id */
static ngx_rbtree_t       ngx_http_ragnx_rpc_pending;
static ngx_rbtree_node_t  ngx_http_ragnx_rpc_sentinel;


static ngx_int_t
ngx_http_ragnx_rpc_handler(ngx_http_request_t *r)
{
    json_t                          *params, *details;
    ngx_int_t                        rc, status;
    ngx_str_t                        sub, *channel;
    const char                      *error;
    ngx_http_ragnx_rpc_ctx_t        *ctx;
    ngx_http_ragnx_rpc_loc_conf_t   *rlcf;
    ngx_http_ragnx_rpc_main_conf_t  *rmcf;

    rlcf = ngx_http_get_module_loc_conf(r, ngx_http_ragnx_rpc_module);

    if (rlcf->method == RAGNX_RPC_REGISTER
        || rlcf->method == RAGNX_RPC_LOGIN)
    {
        if (r->method != NGX_HTTP_POST) {
            return ngx_http_ragnx_send_not_allowed(r, "POST");
        }

    } else if (!(r->method & (NGX_HTTP_GET|NGX_HTTP_HEAD))) {
        return ngx_http_ragnx_send_not_allowed(r, "GET, HEAD");
    }

    ngx_str_null(&sub);

    /* "ragnx_jwt on" where a method needs it is checked at "nginx -t" */

    if (ragnx_rpc_method_authenticated(rlcf->method)
        && ngx_http_ragnx_jwt_subject(r, &sub) != NGX_OK)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    status = NGX_HTTP_INTERNAL_SERVER_ERROR;
    error = "Internal server error";
    details = NULL;

    params = ngx_http_ragnx_rpc_params(r, rlcf, &status, &error, &details);
    if (params == NULL) {
        rc = ngx_http_ragnx_send_error(r, status, error, details);
        json_decref(details);
        return rc;
    }

    rmcf = ngx_http_get_module_main_conf(r, ngx_http_ragnx_rpc_module);

    /* a call whose reply cannot reach us is not sent at all */

    channel = ngx_http_ragnx_redis_channel(rmcf->sub);
    if (channel == NULL) {
        json_decref(params);
        ngx_log_error(NGX_LOG_WARN, r->connection->log, 0,
                      "ragnx_rpc %s: reply channel not subscribed",
                      ragnx_rpc_method_name(rlcf->method));
        ngx_http_ragnx_metrics_rpc(rlcf->method, NGX_HTTP_SERVICE_UNAVAILABLE,
                                   1);
        return ngx_http_ragnx_send_error(r, NGX_HTTP_SERVICE_UNAVAILABLE,
                                         "queue unavailable", NULL);
    }

    ctx = ngx_http_ragnx_rpc_ctx(r);
    if (ctx == NULL) {
        json_decref(params);
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    rc = ngx_http_ragnx_rpc_send(r, ctx, rlcf->method, rlcf->queue, channel,
                                 &sub, params);
    json_decref(params);

    if (rc == NGX_ERROR) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (rc == NGX_DECLINED) {
        return ngx_http_ragnx_send_error(r, NGX_HTTP_SERVICE_UNAVAILABLE,
                                         "queue unavailable", NULL);
    }

    /* notice a client that goes away while the reply is pending */
    r->read_event_handler = ngx_http_test_reading;

    return NGX_DONE;
}


/* a call of another module's handler (ngx_http_ragnx_rpc.h) */

ngx_int_t
ngx_http_ragnx_rpc_call(ngx_http_request_t *r, ngx_uint_t method,
    ngx_http_ragnx_redis_srv_t *srv, ngx_str_t *sub, json_t *params,
    ngx_http_ragnx_rpc_done_pt done)
{
    ngx_int_t                        rc;
    ngx_str_t                       *channel;
    ngx_http_ragnx_rpc_ctx_t        *ctx;
    ngx_http_ragnx_rpc_main_conf_t  *rmcf;

    rmcf = ngx_http_get_module_main_conf(r, ngx_http_ragnx_rpc_module);

    channel = ngx_http_ragnx_redis_channel(rmcf->sub);
    if (channel == NULL) {
        ngx_log_error(NGX_LOG_WARN, r->connection->log, 0,
                      "ragnx rpc %s: reply channel not subscribed",
                      ragnx_rpc_method_name(method));
        ngx_http_ragnx_metrics_rpc(method, NGX_HTTP_SERVICE_UNAVAILABLE, 1);
        return NGX_DECLINED;
    }

    ctx = ngx_http_ragnx_rpc_ctx(r);
    if (ctx == NULL) {
        return NGX_ERROR;
    }

    ctx->handler = done;

    rc = ngx_http_ragnx_rpc_send(r, ctx, method, srv, channel, sub, params);

    if (rc == NGX_OK) {
        r->read_event_handler = ngx_http_test_reading;
    }

    return rc;
}


/* a request's call state, with the cleanup that detaches it */

static ngx_http_ragnx_rpc_ctx_t *
ngx_http_ragnx_rpc_ctx(ngx_http_request_t *r)
{
    ngx_pool_cleanup_t        *cln;
    ngx_http_ragnx_rpc_ctx_t  *ctx;

    /* one call per request: the table is keyed by the call's id */

    if (ngx_http_get_module_ctx(r, ngx_http_ragnx_rpc_module) != NULL) {
        ngx_log_error(NGX_LOG_ALERT, r->connection->log, 0,
                      "ragnx rpc: a second call of one request");
        return NULL;
    }

    ctx = ngx_pcalloc(r->pool, sizeof(ngx_http_ragnx_rpc_ctx_t));
    cln = ngx_pool_cleanup_add(r->pool, 0);

    if (ctx == NULL || cln == NULL) {
        return NULL;
    }

    ngx_http_set_ctx(r, ctx, ngx_http_ragnx_rpc_module);

    cln->handler = ngx_http_ragnx_rpc_cleanup;
    cln->data = ctx;

    ctx->request = r;

    return ctx;
}


/*
 * The call's "params": the validated body, or the paging arguments.  NULL
 * with *status, *error and maybe *details set when the request is refused.
 */

static json_t *
ngx_http_ragnx_rpc_params(ngx_http_request_t *r,
    ngx_http_ragnx_rpc_loc_conf_t *rlcf, ngx_int_t *status,
    const char **error, json_t **details)
{
    json_t     *params, *body;
    ngx_int_t   rc;
    ngx_str_t   id;

    switch (rlcf->method) {

    case RAGNX_RPC_REGISTER:
    case RAGNX_RPC_LOGIN:

        /* "ragnx_validate_schema" is checked at "nginx -t" */

        body = ngx_http_ragnx_validated_body(r);
        if (body == NULL) {
            return NULL;
        }

        return json_incref(body);

    case RAGNX_RPC_ME:
        return json_object();

    default: /* RAGNX_RPC_CHATS, RAGNX_RPC_MESSAGES */
        break;
    }

    params = json_object();
    *details = json_object();

    if (params == NULL || *details == NULL) {
        json_decref(params);
        return NULL;
    }

    if (rlcf->method == RAGNX_RPC_MESSAGES) {

        rc = ngx_http_ragnx_rpc_chat_id(r, rlcf, &id);

        if (rc != NGX_OK) {
            if (rc == NGX_DECLINED) {
                *status = NGX_HTTP_BAD_REQUEST;
                *error = "Invalid chat id";
            }

            json_decref(*details);
            *details = NULL;
            json_decref(params);
            return NULL;
        }

        if (json_object_set_new(params, "chatId",
                                json_stringn((char *) id.data, id.len))
            != 0)
        {
            json_decref(params);
            return NULL;
        }
    }

    if (ngx_http_ragnx_rpc_page(r, params, *details) != NGX_OK) {
        json_decref(params);
        return NULL;
    }

    if (json_object_size(*details)) {
        *status = NGX_HTTP_BAD_REQUEST;
        *error = "Validation failed";
        json_decref(params);
        return NULL;
    }

    json_decref(*details);
    *details = NULL;

    return params;
}


/* NGX_OK with the lower-cased id, NGX_DECLINED for a bad one, or error */

static ngx_int_t
ngx_http_ragnx_rpc_chat_id(ngx_http_request_t *r,
    ngx_http_ragnx_rpc_loc_conf_t *rlcf, ngx_str_t *id)
{
    u_char  *p, *end, *lower;

    if (rlcf->chat_id) {
        if (ngx_http_complex_value(r, rlcf->chat_id, id) != NGX_OK) {
            return NGX_ERROR;
        }

    } else {
        /* the path segment before "/messages" */

        end = r->uri.data + r->uri.len;

        if (end > r->uri.data && end[-1] == '/') {
            end--;
        }

        if (end - r->uri.data < 10
            || ngx_strncmp(end - 9, "/messages", 9) != 0)
        {
            return NGX_DECLINED;
        }

        end -= 9;

        for (p = end; p > r->uri.data && p[-1] != '/'; p--) {
            /* void */
        }

        id->data = p;
        id->len = end - p;
    }

    if (!ragnx_uuid_valid((char *) id->data, id->len)) {
        return NGX_DECLINED;
    }

    lower = ngx_pnalloc(r->pool, RAGNX_UUID_LEN);
    if (lower == NULL) {
        return NGX_ERROR;
    }

    ngx_strlow(lower, id->data, RAGNX_UUID_LEN);
    id->data = lower;

    return NGX_OK;
}


/* "limit" and "before" from the query string; problems go to details */

static ngx_int_t
ngx_http_ragnx_rpc_page(ngx_http_request_t *r, json_t *params,
    json_t *details)
{
    u_char     *dst, *src;
    json_t     *v;
    ngx_int_t   limit;
    ngx_str_t   value, before;

    limit = RAGNX_RPC_LIMIT_DEFAULT;

    if (ngx_http_arg(r, (u_char *) "limit", 5, &value) == NGX_OK) {
        limit = ragnx_rpc_limit((char *) value.data, value.len);

        if (limit == -1) {
            v = json_pack("[s]", "must be an integer from 1 to 100");

            if (json_object_set_new(details, "limit", v) != 0) {
                return NGX_ERROR;
            }
        }
    }

    if (json_object_set_new(params, "limit", json_integer(limit)) != 0) {
        return NGX_ERROR;
    }

    if (ngx_http_arg(r, (u_char *) "before", 6, &value) != NGX_OK) {
        return NGX_OK;
    }

    /* the cursor as the client meant it: percent-decoded */

    before.data = ngx_pnalloc(r->pool, value.len);
    if (before.data == NULL) {
        return NGX_ERROR;
    }

    src = value.data;
    dst = before.data;
    ngx_unescape_uri(&dst, &src, value.len, 0);
    before.len = dst - before.data;

    if (ragnx_rpc_cursor_valid((char *) before.data, before.len)) {
        v = json_stringn((char *) before.data, before.len);

        return json_object_set_new(params, "before", v) == 0 ? NGX_OK
                                                              : NGX_ERROR;
    }

    v = json_pack("[s]", "must be a cursor of 1 to 128 printable characters");

    return json_object_set_new(details, "before", v) == 0 ? NGX_OK
                                                           : NGX_ERROR;
}


/*
 * XADD the call and register it as pending: NGX_OK, NGX_DECLINED when
 * Redis cannot take it (nothing is left behind), or NGX_ERROR.
 */

static ngx_int_t
ngx_http_ragnx_rpc_send(ngx_http_request_t *r, ngx_http_ragnx_rpc_ctx_t *ctx,
    ngx_uint_t method, ngx_http_ragnx_redis_srv_t *srv, ngx_str_t *channel,
    ngx_str_t *sub, json_t *params)
{
    int                              n;
    char                            *json, *sealed;
    size_t                           lens[20], size;
    ngx_int_t                        rc;
    ngx_str_t                        rid;
    ngx_time_t                      *tp;
    const char                      *argv[20], *name;
    u_char                           deadline[NGX_INT64_LEN];
    ngx_http_ragnx_rpc_loc_conf_t   *rlcf;
    ngx_http_ragnx_rpc_main_conf_t  *rmcf;

    rlcf = ngx_http_get_module_loc_conf(r, ngx_http_ragnx_rpc_module);

    if (ragnx_uuid_v4((char *) ctx->id) != 0) {
        return NGX_ERROR;
    }

    json = json_dumps(params, JSON_COMPACT);
    if (json == NULL) {
        return NGX_ERROR;
    }

    if (ragnx_rpc_method_sealed(method)) {

        /* for the pool's key alone, with a key for the reply (one call) */

        rmcf = ngx_http_get_module_main_conf(r, ngx_http_ragnx_rpc_module);

        randombytes_buf(ctx->key, RAGNX_SEAL_KEY_BYTES);
        ctx->sealed = 1;

        size = ragnx_seal_call_size(ngx_strlen(json));
        sealed = malloc(size);

        if (sealed == NULL
            || ragnx_seal_call(rmcf->seal_key, ctx->key, json,
                               ngx_strlen(json), sealed, size)
               == 0)
        {
            free(sealed);
            sodium_memzero(json, ngx_strlen(json));
            free(json);
            return NGX_ERROR;
        }

        sodium_memzero(json, ngx_strlen(json));
        free(json);
        json = sealed;
    }

    tp = ngx_timeofday();
    name = ragnx_rpc_method_name(method);

    argv[0] = "XADD";
    argv[1] = RAGNX_KEY_RPC;
    argv[2] = "MAXLEN";
    argv[3] = "~";
    argv[4] = RAGNX_RPC_MAXLEN;
    argv[5] = "*";
    argv[6] = "id";
    argv[7] = (const char *) ctx->id;
    argv[8] = "method";
    argv[9] = name;
    argv[10] = "reply";
    argv[11] = (const char *) channel->data;
    argv[12] = "deadline";
    argv[13] = (const char *) deadline;
    argv[14] = "sub";
    argv[15] = sub->len ? (const char *) sub->data : "";
    argv[16] = "params";
    argv[17] = json;

    lens[0] = 4;
    lens[1] = sizeof(RAGNX_KEY_RPC) - 1;
    lens[2] = 6;
    lens[3] = 1;
    lens[4] = sizeof(RAGNX_RPC_MAXLEN) - 1;
    lens[5] = 1;
    lens[6] = 2;
    lens[7] = RAGNX_UUID_LEN;
    lens[8] = 6;
    lens[9] = ngx_strlen(name);
    lens[10] = 5;
    lens[11] = channel->len;
    lens[12] = 8;
    lens[13] = ngx_sprintf(deadline, "%L",
                           (int64_t) tp->sec * 1000 + tp->msec
                           + rlcf->timeout)
               - deadline;
    lens[14] = 3;
    lens[15] = sub->len;
    lens[16] = 6;
    lens[17] = ngx_strlen(json);

    /* the pool's log lines about the call name the request */
    n = 18;

    if (ngx_http_ragnx_request_id(r, &rid) == NGX_OK) {
        argv[n] = "rid";
        lens[n++] = 3;
        argv[n] = (const char *) rid.data;
        lens[n++] = rid.len;
    }

    /* pending before it is sent: the reply may beat the XADD's answer */

    ctx->node.str.data = ctx->id;
    ctx->node.str.len = RAGNX_UUID_LEN;
    ctx->node.node.key = ngx_crc32_short(ctx->id, RAGNX_UUID_LEN);
    ngx_rbtree_insert(&ngx_http_ragnx_rpc_pending, &ctx->node.node);
    ctx->pending = 1;

    ctx->timer.handler = ngx_http_ragnx_rpc_timeout_handler;
    ctx->timer.data = ctx;
    ctx->timer.log = r->connection->log;
    ngx_add_timer(&ctx->timer, rlcf->timeout);

    ctx->event.handler = ngx_http_ragnx_rpc_resume_handler;
    ctx->event.data = ctx;
    ctx->event.log = r->connection->log;

    ctx->wait.reply = ngx_http_ragnx_rpc_sent;
    ctx->wait.resume = ngx_http_ragnx_rpc_sent_resume;

    /* hiredis copies the arguments into its output buffer */

    rc = ngx_http_ragnx_redis_call(r, &ctx->wait, srv, n, argv, lens);
    free(json);

    if (rc != NGX_OK) {
        ngx_http_ragnx_rpc_unlink(ctx);
        ngx_http_ragnx_metrics_rpc(method, NGX_HTTP_SERVICE_UNAVAILABLE, 1);
        return NGX_DECLINED;
    }

    ctx->method = method;

    ngx_log_debug2(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "ragnx_rpc %s call %s sent", name, ctx->id);

    return NGX_OK;
}


/* the XADD's answer, inside the hiredis callback: note failures only */

static void
ngx_http_ragnx_rpc_sent(ngx_http_request_t *r, redisReply *reply,
    ngx_int_t rc)
{
    ngx_http_ragnx_rpc_ctx_t  *ctx;

    ctx = ngx_http_get_module_ctx(r, ngx_http_ragnx_rpc_module);

    if (rc == NGX_OK && reply->type != REDIS_REPLY_STRING) {
        if (reply->type == REDIS_REPLY_ERROR) {
            ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                          "ragnx_rpc XADD failed: %*s",
                          (size_t) reply->len, reply->str);
        }

        ctx->wait.rc = NGX_ERROR;
    }
}


/* posted after the XADD's answer (or its failure) */

static void
ngx_http_ragnx_rpc_sent_resume(ngx_http_request_t *r)
{
    ngx_http_ragnx_rpc_ctx_t  *ctx;

    ctx = ngx_http_get_module_ctx(r, ngx_http_ragnx_rpc_module);

    ngx_log_debug3(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "ragnx_rpc call %s queued, rc:%i%s", ctx->id,
                   ctx->wait.rc, ctx->done ? ", already answered" : "");

    if (ctx->wait.rc != NGX_OK && !ctx->done) {
        ngx_http_ragnx_rpc_unlink(ctx);
        ctx->done = 1;
        ctx->status = NGX_HTTP_SERVICE_UNAVAILABLE;
        ctx->error = "queue unavailable";
    }

    ctx->sent = 1;

    if (ctx->done) {
        ngx_http_finalize_request(r, ngx_http_ragnx_rpc_finish(r, ctx));
        return;
    }

    /* waiting on: the request's reference now belongs to the call */
}


/*
 * A message on this worker's channel, inside the hiredis callback, or NULL
 * when the subscription is lost: then no pending reply can arrive.
 */

static void
ngx_http_ragnx_rpc_message(ngx_str_t *msg, void *data)
{
    long                       n;
    ngx_str_t                  id;
    ngx_rbtree_node_t         *node;
    ragnx_rpc_reply_t          rep;
    ngx_http_request_t        *r;
    ngx_http_ragnx_rpc_ctx_t  *ctx;

    if (msg == NULL) {
        ngx_log_debug0(NGX_LOG_DEBUG_HTTP, ngx_cycle->log, 0,
                       "ragnx_rpc subscription lost, failing pending calls");

        while (ngx_http_ragnx_rpc_pending.root
               != ngx_http_ragnx_rpc_pending.sentinel)
        {
            node = ngx_rbtree_min(ngx_http_ragnx_rpc_pending.root,
                                  ngx_http_ragnx_rpc_pending.sentinel);
            ngx_http_ragnx_rpc_resolve((ngx_http_ragnx_rpc_ctx_t *) node,
                                       NGX_HTTP_SERVICE_UNAVAILABLE,
                                       "queue unavailable");
        }

        return;
    }

    if (ragnx_rpc_reply_parse((char *) msg->data, msg->len, &rep) != 0
        && rep.id == NULL)
    {
        ngx_log_error(NGX_LOG_ERR, ngx_cycle->log, 0,
                      "ragnx_rpc reply without a call id dropped");
        return;
    }

    id.data = (u_char *) rep.id;
    id.len = RAGNX_UUID_LEN;

    ctx = (ngx_http_ragnx_rpc_ctx_t *)
              ngx_str_rbtree_lookup(&ngx_http_ragnx_rpc_pending, &id,
                                    ngx_crc32_short(id.data, id.len));

    if (ctx == NULL) {
        ngx_log_error(NGX_LOG_INFO, ngx_cycle->log, 0,
                      "ragnx_rpc reply to \"%V\" dropped: nobody waits",
                      &id);
        return;
    }

    r = ctx->request;

    ngx_log_debug2(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "ragnx_rpc reply to \"%V\", status %ui", &id,
                   (ngx_uint_t) rep.status);

    if (rep.status == 0) {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "ragnx_rpc malformed reply to \"%V\"", &id);
        ngx_http_ragnx_rpc_resolve(ctx, NGX_HTTP_BAD_GATEWAY,
                                   "Bad gateway");
        return;
    }

    /* copied: hiredis frees the message on return */

    ctx->body.data = ngx_pnalloc(r->pool, rep.body_len);
    if (ctx->body.data == NULL) {
        ngx_http_ragnx_rpc_resolve(ctx, NGX_HTTP_INTERNAL_SERVER_ERROR,
                                   "Internal server error");
        return;
    }

    if (ctx->sealed && rep.body[0] == RAGNX_SEAL_MARK) {
        n = ragnx_seal_reply_open(ctx->key, rep.body, rep.body_len,
                                  (char *) ctx->body.data);
        if (n < 0) {
            ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                          "ragnx_rpc reply to \"%V\" not sealed with its "
                          "call's key", &id);
            ngx_http_ragnx_rpc_resolve(ctx, NGX_HTTP_BAD_GATEWAY,
                                       "Bad gateway");
            return;
        }

        ctx->body.len = (size_t) n;

    } else if (rep.body[0] == RAGNX_SEAL_MARK) {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "ragnx_rpc sealed reply to \"%V\", a call that was "
                      "not", &id);
        ngx_http_ragnx_rpc_resolve(ctx, NGX_HTTP_BAD_GATEWAY,
                                   "Bad gateway");
        return;

    } else if (ctx->sealed && rep.status < NGX_HTTP_BAD_REQUEST) {
        /* a token in the clear: it crossed Redis, never pass it on */
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "ragnx_rpc reply %ui to sealed call \"%V\" not "
                      "sealed", (ngx_uint_t) rep.status, &id);
        ngx_http_ragnx_rpc_resolve(ctx, NGX_HTTP_BAD_GATEWAY,
                                   "Bad gateway");
        return;

    } else {
        /* plain JSON, or an error from a pool that could not open it */
        ngx_memcpy(ctx->body.data, rep.body, rep.body_len);
        ctx->body.len = rep.body_len;
    }

    ngx_http_ragnx_rpc_resolve(ctx, rep.status, NULL);
}


static void
ngx_http_ragnx_rpc_timeout_handler(ngx_event_t *ev)
{
    ngx_http_ragnx_rpc_ctx_t  *ctx;

    ctx = ev->data;

    ngx_log_error(NGX_LOG_WARN, ev->log, 0,
                  "ragnx_rpc call \"%s\" timed out", ctx->id);

    ngx_http_ragnx_rpc_resolve(ctx, NGX_HTTP_GATEWAY_TIME_OUT,
                               "upstream timeout");
}


/*
 * The outcome is known: take the call out of the table and respond from a
 * posted event, or leave that to the XADD's resume if it has not run yet.
 */

static void
ngx_http_ragnx_rpc_resolve(ngx_http_ragnx_rpc_ctx_t *ctx, ngx_uint_t status,
    const char *error)
{
    ngx_http_ragnx_rpc_unlink(ctx);

    ngx_log_debug3(NGX_LOG_DEBUG_HTTP, ctx->request->connection->log, 0,
                   "ragnx_rpc call %s resolved: %ui%s", ctx->id, status,
                   ctx->sent ? "" : ", before its XADD's answer");

    ctx->done = 1;
    ctx->status = status;
    ctx->error = error;

    if (ctx->sent) {
        ngx_post_event(&ctx->event, &ngx_posted_events);
    }
}


static void
ngx_http_ragnx_rpc_unlink(ngx_http_ragnx_rpc_ctx_t *ctx)
{
    if (ctx->pending) {
        ngx_rbtree_delete(&ngx_http_ragnx_rpc_pending, &ctx->node.node);
        ctx->pending = 0;
    }

    if (ctx->timer.timer_set) {
        ngx_del_timer(&ctx->timer);
    }
}


static void
ngx_http_ragnx_rpc_resume_handler(ngx_event_t *ev)
{
    ngx_connection_t          *c;
    ngx_http_request_t        *r;
    ngx_http_ragnx_rpc_ctx_t  *ctx;

    ctx = ev->data;
    r = ctx->request;
    c = r->connection;

    ngx_http_finalize_request(r, ngx_http_ragnx_rpc_finish(r, ctx));

    ngx_http_run_posted_requests(c);
}


/* the outcome to the caller's handler, or to the client as it is */

static ngx_int_t
ngx_http_ragnx_rpc_finish(ngx_http_request_t *r,
    ngx_http_ragnx_rpc_ctx_t *ctx)
{
    ngx_http_ragnx_metrics_rpc(ctx->method, ctx->status, ctx->error != NULL);

    if (ctx->handler) {
        return ctx->handler(r, ctx->status, ctx->error ? NULL : &ctx->body);
    }

    return ngx_http_ragnx_rpc_respond(r, ctx);
}


static ngx_int_t
ngx_http_ragnx_rpc_respond(ngx_http_request_t *r,
    ngx_http_ragnx_rpc_ctx_t *ctx)
{
    ngx_buf_t  *b;

    if (ctx->error) {
        return ngx_http_ragnx_send_error(r, ctx->status, ctx->error, NULL);
    }

    /* the pool's status and body, as they are */

    b = ngx_calloc_buf(r->pool);
    if (b == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    b->pos = ctx->body.data;
    b->last = ctx->body.data + ctx->body.len;
    b->temporary = 1;

    return ngx_http_ragnx_send_json_buf(r, ctx->status, b);
}


static void
ngx_http_ragnx_rpc_cleanup(void *data)
{
    ngx_http_ragnx_rpc_ctx_t  *ctx = data;

    if (!ctx->done) {
        ngx_log_debug1(NGX_LOG_DEBUG_HTTP, ctx->request->connection->log, 0,
                       "ragnx_rpc request gone, call %s detached", ctx->id);
    }

    ngx_http_ragnx_rpc_unlink(ctx);

    if (ctx->event.posted) {
        ngx_delete_posted_event(&ctx->event);
    }

    if (ctx->sealed) {
        sodium_memzero(ctx->key, RAGNX_SEAL_KEY_BYTES);
    }
}


/* configuration */


static void *
ngx_http_ragnx_rpc_create_main_conf(ngx_conf_t *cf)
{
    ngx_http_ragnx_rpc_main_conf_t  *rmcf;

    rmcf = ngx_pcalloc(cf->pool, sizeof(ngx_http_ragnx_rpc_main_conf_t));
    if (rmcf == NULL) {
        return NULL;
    }

    /*
     * set by ngx_pcalloc():
     *
     *     rmcf->sub = NULL;
     */

    return rmcf;
}


static void *
ngx_http_ragnx_rpc_create_loc_conf(ngx_conf_t *cf)
{
    ngx_http_ragnx_rpc_loc_conf_t  *conf;

    conf = ngx_pcalloc(cf->pool, sizeof(ngx_http_ragnx_rpc_loc_conf_t));
    if (conf == NULL) {
        return NULL;
    }

    /*
     * set by ngx_pcalloc():
     *
     *     conf->method = 0;
     *     conf->chat_id = NULL;
     *     conf->queue = NULL;
     */

    conf->timeout = NGX_CONF_UNSET_MSEC;

    return conf;
}


static char *
ngx_http_ragnx_rpc_merge_loc_conf(ngx_conf_t *cf, void *parent, void *child)
{
    ngx_http_ragnx_rpc_loc_conf_t *prev = parent;
    ngx_http_ragnx_rpc_loc_conf_t *conf = child;

    ngx_http_core_loc_conf_t        *clcf;
    ngx_http_ragnx_rpc_main_conf_t  *rmcf;

    ngx_conf_merge_msec_value(conf->timeout, prev->timeout, 5000);

    /* an "if" or "limit_except" block answers as its location does */

    clcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_core_module);

    if (conf->method == 0 && clcf->noname) {
        conf->method = prev->method;
        conf->chat_id = prev->chat_id;
        conf->file = prev->file;
        conf->line = prev->line;
    }

    if (clcf->lmt_excpt && clcf->handler == NULL && conf->method) {
        clcf->handler = ngx_http_ragnx_rpc_handler;
    }

    if (conf->method == 0) {
        return NGX_CONF_OK;
    }

    conf->queue = ngx_http_ragnx_redis_server(cf, NGX_HTTP_RAGNX_REDIS_QUEUE);

    if (conf->queue == NULL) {
        /* reported by ngx_http_ragnx_module, naming the location */
        return NGX_CONF_OK;
    }

    rmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_ragnx_rpc_module);

    if (ragnx_rpc_method_sealed(conf->method) && rmcf->seal_file.len == 0) {
        ngx_log_error(NGX_LOG_EMERG, cf->log, 0,
                      "no \"ragnx_rpc_seal_key\" is defined for the "
                      "\"ragnx_rpc %s\" directive in %s:%ui: its password "
                      "and token must not cross Redis in the clear",
                      ragnx_rpc_method_name(conf->method), conf->file,
                      conf->line);
        return NGX_CONF_ERROR;
    }

    if (ngx_http_ragnx_rpc_enable(cf, conf->queue) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


/* every worker subscribes to its own reply channel on that server */

ngx_int_t
ngx_http_ragnx_rpc_enable(ngx_conf_t *cf, ngx_http_ragnx_redis_srv_t *srv)
{
    ngx_str_t                        prefix;
    ngx_http_ragnx_rpc_main_conf_t  *rmcf;

    rmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_ragnx_rpc_module);

    if (rmcf->sub == NULL) {
        ngx_str_set(&prefix, RAGNX_KEY_REPLY);

        rmcf->sub = ngx_http_ragnx_redis_subscribe(cf, srv, &prefix,
                                                   ngx_http_ragnx_rpc_message,
                                                   NULL);
        if (rmcf->sub == NULL) {
            return NGX_ERROR;
        }
    }

    return NGX_OK;
}


static ngx_int_t
ngx_http_ragnx_rpc_init_process(ngx_cycle_t *cycle)
{
    ngx_rbtree_init(&ngx_http_ragnx_rpc_pending,
                    &ngx_http_ragnx_rpc_sentinel,
                    ngx_str_rbtree_insert_value);

    return NGX_OK;
}


/* ragnx_rpc register | login | me | chats | messages [chat_id]; */

static char *
ngx_http_ragnx_rpc(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_ragnx_rpc_loc_conf_t *rlcf = conf;

    u_char                            *p;
    ngx_str_t                         *value, *name;
    ngx_uint_t                         needs;
    ngx_http_compile_complex_value_t   ccv;

    if (rlcf->method) {
        return "is duplicate";
    }

    value = cf->args->elts;

    rlcf->method = ragnx_rpc_method((char *) value[1].data, value[1].len);

    /* "chat" is the ask handler's own call, not an endpoint */

    if (rlcf->method == 0 || rlcf->method == RAGNX_RPC_CHAT) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid method \"%V\" in \"%V\": expected "
                           "register, login, me, chats or messages",
                           &value[1], &cmd->name);
        return NGX_CONF_ERROR;
    }

    if (cf->args->nelts == 3) {
        if (rlcf->method != RAGNX_RPC_MESSAGES) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "only \"%V messages\" takes a chat id",
                               &cmd->name);
            return NGX_CONF_ERROR;
        }

        rlcf->chat_id = ngx_palloc(cf->pool,
                                   sizeof(ngx_http_complex_value_t));
        if (rlcf->chat_id == NULL) {
            return NGX_CONF_ERROR;
        }

        ngx_memzero(&ccv, sizeof(ngx_http_compile_complex_value_t));
        ccv.cf = cf;
        ccv.value = &value[2];
        ccv.complex_value = rlcf->chat_id;

        if (ngx_http_compile_complex_value(&ccv) != NGX_OK) {
            return NGX_CONF_ERROR;
        }
    }

    rlcf->file = cf->conf_file->file.name.data;
    rlcf->line = cf->conf_file->line;

    /* "ragnx_rpc me", for the configuration check's messages */

    name = ngx_palloc(cf->pool, sizeof(ngx_str_t));
    p = ngx_pnalloc(cf->pool, cmd->name.len + 1 + value[1].len);

    if (name == NULL || p == NULL) {
        return NGX_CONF_ERROR;
    }

    name->data = p;
    p = ngx_cpymem(p, cmd->name.data, cmd->name.len);
    *p++ = ' ';
    p = ngx_cpymem(p, value[1].data, value[1].len);
    name->len = p - name->data;

    /*
     * register and login are how a client gets a token, and send the
     * validated body; the others answer GET for the token's subject.
     */

    if (ragnx_rpc_method_authenticated(rlcf->method)) {
        needs = NGX_HTTP_RAGNX_NEEDS_SUBJECT|NGX_HTTP_RAGNX_NO_BODY;

    } else {
        needs = NGX_HTTP_RAGNX_NEEDS_BODY|NGX_HTTP_RAGNX_NO_TOKEN;
    }

    return ngx_http_ragnx_handler(cf, name, ngx_http_ragnx_rpc_handler,
                                  needs|NGX_HTTP_RAGNX_NEEDS_REDIS);
}


/* ragnx_rpc_seal_key file;  the pool's public key, PEM X25519 */

static char *
ngx_http_ragnx_rpc_seal_key(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_ragnx_rpc_main_conf_t *rmcf = conf;

    char        err[256];
    ngx_str_t  *value;

    if (rmcf->seal_file.len) {
        return "is duplicate";
    }

    value = cf->args->elts;
    rmcf->seal_file = value[1];

    if (ngx_conf_full_name(cf->cycle, &rmcf->seal_file, 1) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    if (ragnx_seal_init() != 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0, "libsodium failed to start");
        return NGX_CONF_ERROR;
    }

    if (ragnx_seal_load_public((char *) rmcf->seal_file.data,
                               rmcf->seal_key, err, sizeof(err))
        != 0)
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0, "\"%V\": %s", &cmd->name,
                           err);
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}
