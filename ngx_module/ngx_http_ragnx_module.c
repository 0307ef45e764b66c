
/*
 * ragnx core: the JSON response helpers every ragnx module answers with;
 * "ragnx_json_error", a content handler for error_page locations that
 * turns nginx's own error pages (404, 405, 413, 429, 5xx...) into JSON;
 * the configuration check of the locations that use a ragnx content
 * handler (ngx_http_ragnx_handler()); and the request id,
 * $ragnx_request_id: nginx's $request_id, or the client's X-Request-Id
 * where "ragnx_request_id_trust on" says the operator trusts it.
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ngx_http_ragnx.h"
#include "ngx_http_ragnx_redis.h"
#include "ngx_http_ragnx_metrics.h"
#include "ragnx_job.h"
#include "ragnx_uuid.h"


/* a location with a ragnx content handler, to check once merged */
typedef struct {
    ngx_str_t                 *directive;
    ngx_http_handler_pt        handler;
    void                     **loc_conf;
    ngx_uint_t                 needs;
    u_char                    *file;
    ngx_uint_t                 line;
} ngx_http_ragnx_handler_conf_t;


typedef struct {
    ngx_array_t                handlers;
} ngx_http_ragnx_main_conf_t;


typedef struct {
    ngx_flag_t                 request_id_trust;
} ngx_http_ragnx_loc_conf_t;


static ngx_int_t ngx_http_ragnx_json_error_handler(ngx_http_request_t *r);
static ngx_int_t ngx_http_ragnx_request_id_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data);
static ngx_int_t ngx_http_ragnx_add_variables(ngx_conf_t *cf);
static void *ngx_http_ragnx_create_main_conf(ngx_conf_t *cf);
static void *ngx_http_ragnx_create_loc_conf(ngx_conf_t *cf);
static char *ngx_http_ragnx_merge_loc_conf(ngx_conf_t *cf, void *parent,
    void *child);
static ngx_int_t ngx_http_ragnx_init(ngx_conf_t *cf);
static ngx_int_t ngx_http_ragnx_check_handlers(ngx_conf_t *cf);
static ngx_int_t ngx_http_ragnx_check_handler(ngx_conf_t *cf,
    ngx_http_ragnx_handler_conf_t *h);
static char *ngx_http_ragnx_json_error(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_http_ragnx_positive_msec(ngx_conf_t *cf, void *post,
    void *data);
static char *ngx_http_ragnx_positive_num(ngx_conf_t *cf, void *post,
    void *data);
static char *ngx_http_ragnx_positive_sec(ngx_conf_t *cf, void *post,
    void *data);


ngx_conf_post_t  ngx_http_ragnx_positive_msec_p =
    { ngx_http_ragnx_positive_msec };
ngx_conf_post_t  ngx_http_ragnx_positive_num_p =
    { ngx_http_ragnx_positive_num };
ngx_conf_post_t  ngx_http_ragnx_positive_sec_p =
    { ngx_http_ragnx_positive_sec };


static ngx_command_t  ngx_http_ragnx_commands[] = {

    { ngx_string("ragnx_json_error"),
      NGX_HTTP_LOC_CONF|NGX_CONF_NOARGS,
      ngx_http_ragnx_json_error,
      0,
      0,
      NULL },

    { ngx_string("ragnx_request_id_trust"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_FLAG,
      ngx_conf_set_flag_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_ragnx_loc_conf_t, request_id_trust),
      NULL },

      ngx_null_command
};


static ngx_http_module_t  ngx_http_ragnx_module_ctx = {
    ngx_http_ragnx_add_variables,          /* preconfiguration */
    ngx_http_ragnx_init,                   /* postconfiguration */

    ngx_http_ragnx_create_main_conf,       /* create main configuration */
    NULL,                                  /* init main configuration */

    NULL,                                  /* create server configuration */
    NULL,                                  /* merge server configuration */

    ngx_http_ragnx_create_loc_conf,        /* create location configuration */
    ngx_http_ragnx_merge_loc_conf          /* merge location configuration */
};


ngx_module_t  ngx_http_ragnx_module = {
    NGX_MODULE_V1,
    &ngx_http_ragnx_module_ctx,            /* module context */
    ngx_http_ragnx_commands,               /* module directives */
    NGX_HTTP_MODULE,                       /* module type */
    NULL,                                  /* init master */
    NULL,                                  /* init module */
    NULL,                                  /* init process */
    NULL,                                  /* init thread */
    NULL,                                  /* exit thread */
    NULL,                                  /* exit process */
    NULL,                                  /* exit master */
    NGX_MODULE_V1_PADDING
};


static ngx_str_t  ngx_http_ragnx_request_id_name =
    ngx_string("ragnx_request_id");
static ngx_str_t  ngx_http_ragnx_nginx_request_id_name =
    ngx_string("request_id");
static ngx_int_t  ngx_http_ragnx_request_id_index;
static ngx_int_t  ngx_http_ragnx_nginx_request_id_index;


typedef struct {
    ngx_uint_t   status;
    const char  *message;
} ngx_http_ragnx_status_t;


static ngx_http_ragnx_status_t  ngx_http_ragnx_statuses[] = {
    { NGX_HTTP_BAD_REQUEST, "Bad request" },
    { NGX_HTTP_UNAUTHORIZED, "Unauthorized" },
    { NGX_HTTP_FORBIDDEN, "Forbidden" },
    { NGX_HTTP_NOT_FOUND, "Not found" },
    { NGX_HTTP_NOT_ALLOWED, "Method not allowed" },
    { NGX_HTTP_REQUEST_TIME_OUT, "Request timeout" },
    { NGX_HTTP_CONFLICT, "Conflict" },
    { NGX_HTTP_LENGTH_REQUIRED, "Length required" },
    { NGX_HTTP_REQUEST_ENTITY_TOO_LARGE, "Request body too large" },
    { NGX_HTTP_REQUEST_URI_TOO_LARGE, "Request URI too large" },
    { NGX_HTTP_UNSUPPORTED_MEDIA_TYPE, "Unsupported media type" },
    { 429, "Too many requests" },
    { NGX_HTTP_INTERNAL_SERVER_ERROR, "Internal server error" },
    { NGX_HTTP_NOT_IMPLEMENTED, "Not implemented" },
    { NGX_HTTP_BAD_GATEWAY, "Bad gateway" },
    { NGX_HTTP_SERVICE_UNAVAILABLE, "Service unavailable" },
    { NGX_HTTP_GATEWAY_TIME_OUT, "Gateway timeout" },
    { 0, NULL }
};


ngx_int_t
ngx_http_ragnx_send_json(ngx_http_request_t *r, ngx_uint_t status,
    json_t *body)
{
    char          tmp[2048];
    size_t        len;
    ngx_buf_t    *b;

    /* most bodies fit the stack buffer: serialise once, then copy */

    len = json_dumpb(body, tmp, sizeof(tmp), JSON_COMPACT);
    if (len == 0) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    b = ngx_create_temp_buf(r->pool, len);
    if (b == NULL) {
        return NGX_ERROR;
    }

    if (len <= sizeof(tmp)) {
        ngx_memcpy(b->pos, tmp, len);

    } else if (json_dumpb(body, (char *) b->pos, len, JSON_COMPACT) != len) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    b->last = b->pos + len;

    return ngx_http_ragnx_send_json_buf(r, status, b);
}


ngx_int_t
ngx_http_ragnx_send_json_buf(ngx_http_request_t *r, ngx_uint_t status,
    ngx_buf_t *b)
{
    ngx_int_t     rc;
    ngx_chain_t   out;

    if (ngx_http_discard_request_body(r) != NGX_OK) {
        r->keepalive = 0;
    }

    b->last_buf = (r == r->main) ? 1 : 0;
    b->last_in_chain = 1;

    r->headers_out.status = status;
    r->headers_out.content_length_n = b->last - b->pos;
    ngx_str_set(&r->headers_out.content_type, "application/json");
    r->headers_out.content_type_len = r->headers_out.content_type.len;
    r->headers_out.content_type_lowcase = NULL;

    if (r->headers_out.content_length) {
        r->headers_out.content_length->hash = 0;
        r->headers_out.content_length = NULL;
    }

    rc = ngx_http_send_header(r);

    if (rc == NGX_ERROR || rc > NGX_OK || r->header_only) {
        return rc;
    }

    out.buf = b;
    out.next = NULL;

    return ngx_http_output_filter(r, &out);
}


ngx_int_t
ngx_http_ragnx_send_error(ngx_http_request_t *r, ngx_uint_t status,
    const char *msg, json_t *details)
{
    json_t     *body;
    ngx_int_t   rc;

    body = json_object();
    if (body == NULL) {
        return NGX_ERROR;
    }

    if (json_object_set_new(body, "error", json_string(msg)) != 0
        || (details && json_object_set(body, "details", details) != 0))
    {
        json_decref(body);
        return NGX_ERROR;
    }

    rc = ngx_http_ragnx_send_json(r, status, body);

    json_decref(body);

    return rc;
}


ngx_int_t
ngx_http_ragnx_send_not_allowed(ngx_http_request_t *r, const char *allow)
{
    ngx_table_elt_t  *h;

    h = ngx_list_push(&r->headers_out.headers);
    if (h == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    h->hash = 1;
    ngx_str_set(&h->key, "Allow");
    h->value.data = (u_char *) allow;
    h->value.len = ngx_strlen(allow);

    return ngx_http_ragnx_send_error(r, NGX_HTTP_NOT_ALLOWED,
                                     "Method not allowed", NULL);
}


ngx_int_t
ngx_http_ragnx_finish_error(ngx_http_request_t *r, ngx_uint_t status,
    const char *msg, json_t *details)
{
    ngx_http_finalize_request(r,
                              ngx_http_ragnx_send_error(r, status, msg,
                                                        details));
    return NGX_DONE;
}


const char *
ngx_http_ragnx_status_message(ngx_uint_t status)
{
    ngx_http_ragnx_status_t  *s;

    for (s = ngx_http_ragnx_statuses; s->status; s++) {
        if (s->status == status) {
            return s->message;
        }
    }

    return (status >= 500) ? "Server error" : "Request failed";
}


static ngx_int_t
ngx_http_ragnx_json_error_handler(ngx_http_request_t *r)
{
    ngx_uint_t  status;

    /*
     * Reached through error_page: r->err_status holds the original error
     * (error_page without "="), and ngx_http_send_header() keeps it.
     */

    status = r->err_status ? r->err_status : NGX_HTTP_NOT_FOUND;

    if (status < NGX_HTTP_BAD_REQUEST) {
        status = NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    return ngx_http_ragnx_send_error(r, status,
                                     ngx_http_ragnx_status_message(status),
                                     NULL);
}


/* a request header nginx does not keep a pointer to: the last one named */

ngx_table_elt_t *
ngx_http_ragnx_header_in(ngx_http_request_t *r, const char *name)
{
    size_t            len;
    ngx_uint_t        i;
    ngx_list_part_t  *part;
    ngx_table_elt_t  *h, *found;

    len = ngx_strlen(name);
    found = NULL;
    part = &r->headers_in.headers.part;
    h = part->elts;

    for (i = 0; /* void */ ; i++) {
        if (i >= part->nelts) {
            if (part->next == NULL) {
                return found;
            }

            part = part->next;
            h = part->elts;
            i = 0;
        }

        if (h[i].key.len == len
            && ngx_strncasecmp(h[i].key.data, (u_char *) name, len) == 0)
        {
            found = &h[i];
        }
    }
}


/*
 * $ragnx_request_id: with "ragnx_request_id_trust on", the client's
 * X-Request-Id when it is 1 to RAGNX_RID_MAX characters of a safe set
 * (ragnx_rid_valid(): it goes into the job, logs and PostgreSQL as it
 * is); otherwise, or when it is not, nginx's $request_id.  Cacheable:
 * one request has one id, whichever location or log asks first, and an
 * internal redirect keeps it.  The value is NUL-terminated.
 */

static ngx_int_t
ngx_http_ragnx_request_id_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data)
{
    u_char                     *p;
    ngx_table_elt_t            *h;
    ngx_http_variable_value_t  *id;
    ngx_http_ragnx_loc_conf_t  *rlcf;

    rlcf = ngx_http_get_module_loc_conf(r, ngx_http_ragnx_module);

    h = rlcf->request_id_trust
        ? ngx_http_ragnx_header_in(r, "X-Request-Id") : NULL;

    if (h && ragnx_rid_valid((char *) h->value.data, h->value.len)) {
        p = h->value.data;
        v->len = h->value.len;

    } else {
        if (h) {
            ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                          "ragnx: client sent an invalid \"X-Request-Id\" "
                          "header: ignored");
        }

        /*
         * nginx's $request_id, made here unless a log or header asked for
         * it first: its own draws on OpenSSL's RAND_bytes, a ninth of a
         * cache hit's instructions.  The same 32 hex digits, and the
         * variable then holds them: both names give one id.
         */

        id = &r->variables[ngx_http_ragnx_nginx_request_id_index];

        if (!id->valid && !id->not_found) {
            p = ngx_pnalloc(r->pool, 2 * 16 + 1);
            if (p == NULL || ragnx_request_id_new((char *) p) != 0) {
                return NGX_ERROR;
            }

            id->data = p;
            id->len = 2 * 16;
            id->valid = 1;
            id->no_cacheable = 0;
            id->not_found = 0;

            /* NUL-terminated already: one copy of the value is enough */
            *v = *id;
            return NGX_OK;
        }

        if (id->not_found) {
            v->not_found = 1;
            return NGX_OK;
        }

        p = id->data;
        v->len = id->len;
    }

    v->data = ngx_pnalloc(r->pool, v->len + 1);
    if (v->data == NULL) {
        return NGX_ERROR;
    }

    ngx_memcpy(v->data, p, v->len);
    v->data[v->len] = '\0';

    v->valid = 1;
    v->no_cacheable = 0;
    v->not_found = 0;

    return NGX_OK;
}


ngx_int_t
ngx_http_ragnx_request_id(ngx_http_request_t *r, ngx_str_t *id)
{
    ngx_http_variable_value_t  *v;

    v = ngx_http_get_indexed_variable(r, ngx_http_ragnx_request_id_index);

    if (v == NULL || v->not_found) {
        ngx_str_null(id);
        return NGX_DECLINED;
    }

    id->data = v->data;
    id->len = v->len;

    return NGX_OK;
}


static ngx_int_t
ngx_http_ragnx_add_variables(ngx_conf_t *cf)
{
    ngx_http_variable_t  *var;

    var = ngx_http_add_variable(cf, &ngx_http_ragnx_request_id_name, 0);
    if (var == NULL) {
        return NGX_ERROR;
    }

    var->get_handler = ngx_http_ragnx_request_id_variable;

    return NGX_OK;
}


static void *
ngx_http_ragnx_create_loc_conf(ngx_conf_t *cf)
{
    ngx_http_ragnx_loc_conf_t  *conf;

    conf = ngx_palloc(cf->pool, sizeof(ngx_http_ragnx_loc_conf_t));
    if (conf == NULL) {
        return NULL;
    }

    conf->request_id_trust = NGX_CONF_UNSET;

    return conf;
}


static char *
ngx_http_ragnx_merge_loc_conf(ngx_conf_t *cf, void *parent, void *child)
{
    ngx_http_ragnx_loc_conf_t *prev = parent;
    ngx_http_ragnx_loc_conf_t *conf = child;

    ngx_conf_merge_value(conf->request_id_trust, prev->request_id_trust, 0);

    return NGX_CONF_OK;
}


static ngx_int_t
ngx_http_ragnx_init(ngx_conf_t *cf)
{
    ngx_http_ragnx_request_id_index =
        ngx_http_get_variable_index(cf, &ngx_http_ragnx_request_id_name);
    ngx_http_ragnx_nginx_request_id_index =
        ngx_http_get_variable_index(cf,
                                    &ngx_http_ragnx_nginx_request_id_name);

    if (ngx_http_ragnx_request_id_index == NGX_ERROR
        || ngx_http_ragnx_nginx_request_id_index == NGX_ERROR)
    {
        return NGX_ERROR;
    }

    return ngx_http_ragnx_check_handlers(cf);
}


static void *
ngx_http_ragnx_create_main_conf(ngx_conf_t *cf)
{
    ngx_http_ragnx_main_conf_t  *rmcf;

    rmcf = ngx_pcalloc(cf->pool, sizeof(ngx_http_ragnx_main_conf_t));
    if (rmcf == NULL) {
        return NULL;
    }

    if (ngx_array_init(&rmcf->handlers, cf->pool, 8,
                       sizeof(ngx_http_ragnx_handler_conf_t))
        != NGX_OK)
    {
        return NULL;
    }

    return rmcf;
}


/*
 * Postconfiguration runs once every module has merged every location, so
 * each location that uses a ragnx handler can be checked against what the
 * other modules (core, jwt, validate, redis) made of it, inherited
 * settings included.  The messages name the handler's directive and its
 * file and line, as "no \"ssl_certificate\" is defined..." does.
 */

static ngx_int_t
ngx_http_ragnx_check_handlers(ngx_conf_t *cf)
{
    ngx_uint_t                      i;
    ngx_http_ragnx_main_conf_t     *rmcf;
    ngx_http_ragnx_handler_conf_t  *h;

    rmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_ragnx_module);

    h = rmcf->handlers.elts;

    for (i = 0; i < rmcf->handlers.nelts; i++) {
        if (ngx_http_ragnx_check_handler(cf, &h[i]) != NGX_OK) {
            return NGX_ERROR;
        }
    }

    return NGX_OK;
}


static ngx_int_t
ngx_http_ragnx_check_handler(ngx_conf_t *cf, ngx_http_ragnx_handler_conf_t *h)
{
    ngx_uint_t                 jwt, schema;
    ngx_http_core_loc_conf_t  *clcf;

    clcf = h->loc_conf[ngx_http_core_module.ctx_index];

    if (clcf->handler != h->handler) {
        ngx_log_error(NGX_LOG_EMERG, cf->log, 0,
                      "another content handler replaces the \"%V\" "
                      "directive in %s:%ui", h->directive, h->file, h->line);
        return NGX_ERROR;
    }

    if ((h->needs & NGX_HTTP_RAGNX_NEEDS_REDIS)
        && ngx_http_ragnx_redis_server(cf, NGX_HTTP_RAGNX_REDIS_QUEUE) == NULL)
    {
        ngx_log_error(NGX_LOG_EMERG, cf->log, 0,
                      "no \"ragnx_redis\" is defined for the \"%V\" "
                      "directive in %s:%ui", h->directive, h->file, h->line);
        return NGX_ERROR;
    }

    jwt = ngx_http_ragnx_jwt_enabled(h->loc_conf);

    if (h->needs & NGX_HTTP_RAGNX_NEEDS_SUBJECT) {

        if (!jwt) {
            ngx_log_error(NGX_LOG_EMERG, cf->log, 0,
                          "no \"ragnx_jwt on\" is set for the \"%V\" "
                          "directive in %s:%ui",
                          h->directive, h->file, h->line);
            return NGX_ERROR;
        }

        /* with "satisfy any", allow or auth_basic could let in no one */

        if (clcf->satisfy == NGX_HTTP_SATISFY_ANY) {
            ngx_log_error(NGX_LOG_EMERG, cf->log, 0,
                          "\"satisfy any\" cannot be used with the \"%V\" "
                          "directive in %s:%ui",
                          h->directive, h->file, h->line);
            return NGX_ERROR;
        }

        ngx_http_ragnx_jwt_require_subject(h->loc_conf);
    }

    if ((h->needs & NGX_HTTP_RAGNX_NO_TOKEN) && jwt) {
        ngx_log_error(NGX_LOG_EMERG, cf->log, 0,
                      "\"ragnx_jwt on\" cannot be used with the \"%V\" "
                      "directive in %s:%ui", h->directive, h->file, h->line);
        return NGX_ERROR;
    }

    schema = ngx_http_ragnx_validate_enabled(h->loc_conf);

    if ((h->needs & NGX_HTTP_RAGNX_NEEDS_BODY) && !schema) {
        ngx_log_error(NGX_LOG_EMERG, cf->log, 0,
                      "no \"ragnx_validate_schema\" is set for the \"%V\" "
                      "directive in %s:%ui", h->directive, h->file, h->line);
        return NGX_ERROR;
    }

    if ((h->needs & NGX_HTTP_RAGNX_NO_BODY) && schema) {
        ngx_log_error(NGX_LOG_EMERG, cf->log, 0,
                      "\"ragnx_validate_schema\" cannot be used with the "
                      "\"%V\" directive in %s:%ui",
                      h->directive, h->file, h->line);
        return NGX_ERROR;
    }

    return NGX_OK;
}


char *
ngx_http_ragnx_handler(ngx_conf_t *cf, ngx_str_t *directive,
    ngx_http_handler_pt handler, ngx_uint_t needs)
{
    ngx_http_conf_ctx_t            *ctx;
    ngx_http_core_loc_conf_t       *clcf;
    ngx_http_ragnx_main_conf_t     *rmcf;
    ngx_http_ragnx_handler_conf_t  *h;

    clcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_core_module);

    if (clcf->handler) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"%V\" cannot be used with another content "
                           "handler in one location", directive);
        return NGX_CONF_ERROR;
    }

    rmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_ragnx_module);

    h = ngx_array_push(&rmcf->handlers);
    if (h == NULL) {
        return NGX_CONF_ERROR;
    }

    ctx = cf->ctx;

    h->directive = directive;
    h->handler = handler;
    h->loc_conf = ctx->loc_conf;
    h->needs = needs;
    h->file = cf->conf_file->file.name.data;
    h->line = cf->conf_file->line;

    clcf->handler = handler;

    ngx_http_ragnx_metrics_route(cf, directive);

    return NGX_CONF_OK;
}


static char *
ngx_http_ragnx_positive_msec(ngx_conf_t *cf, void *post, void *data)
{
    ngx_msec_t  *mp = data;

    return (*mp == 0) ? "must be positive" : NGX_CONF_OK;
}


static char *
ngx_http_ragnx_positive_num(ngx_conf_t *cf, void *post, void *data)
{
    ngx_int_t  *np = data;

    return (*np <= 0) ? "must be positive" : NGX_CONF_OK;
}


static char *
ngx_http_ragnx_positive_sec(ngx_conf_t *cf, void *post, void *data)
{
    time_t  *sp = data;

    return (*sp <= 0) ? "must be positive" : NGX_CONF_OK;
}


/*
 * An error page answers requests without a token too (a 413 or a 429
 * comes before any token is looked at), and never reads a body.
 */

static char *
ngx_http_ragnx_json_error(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    return ngx_http_ragnx_handler(cf, &cmd->name,
                                  ngx_http_ragnx_json_error_handler,
                                  NGX_HTTP_RAGNX_NO_TOKEN
                                  |NGX_HTTP_RAGNX_NO_BODY);
}
