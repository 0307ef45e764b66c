
/*
 * ragnx validate: checks request bodies against a JSON Schema file named
 * by "ragnx_validate_schema" (compiled at configuration time by
 * ngx_http_ragnx_schema.c).  Runs in the precontent phase: reads the body,
 * requires application/json, a body held in memory, valid UTF-8, bounded
 * nesting, JSON with no duplicate keys, then the schema; answers each
 * failure with a JSON error.  The parsed body stays in the request ctx for
 * later handlers (ngx_http_ragnx_validated_body()).
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ngx_http_ragnx.h"
#include "ngx_http_ragnx_schema.h"
#include "ragnx_utf8.h"


typedef struct {
    ngx_http_ragnx_schema_t  *schema;
    ngx_int_t                 max_depth;
} ngx_http_ragnx_validate_loc_conf_t;


typedef struct {
    json_t                   *body;
    ngx_int_t                 status;
} ngx_http_ragnx_validate_ctx_t;


static ngx_int_t ngx_http_ragnx_validate_handler(ngx_http_request_t *r);
static void ngx_http_ragnx_validate_body_handler(ngx_http_request_t *r);
static ngx_int_t ngx_http_ragnx_validate_body(ngx_http_request_t *r,
    ngx_http_ragnx_validate_ctx_t *ctx);
static ngx_int_t ngx_http_ragnx_validate_json_error(ngx_http_request_t *r,
    json_error_t *err);
static ngx_uint_t ngx_http_ragnx_validate_content_type(ngx_http_request_t *r);
static ngx_uint_t ngx_http_ragnx_validate_depth(u_char *p, u_char *last,
    ngx_int_t max);
static void ngx_http_ragnx_validate_cleanup(void *data);
static void *ngx_http_ragnx_validate_create_loc_conf(ngx_conf_t *cf);
static char *ngx_http_ragnx_validate_merge_loc_conf(ngx_conf_t *cf,
    void *parent, void *child);
static ngx_int_t ngx_http_ragnx_validate_init(ngx_conf_t *cf);
static char *ngx_http_ragnx_validate_schema(ngx_conf_t *cf,
    ngx_command_t *cmd, void *conf);
static char *ngx_http_ragnx_validate_max_depth(ngx_conf_t *cf, void *post,
    void *data);


static ngx_conf_post_handler_pt  ngx_http_ragnx_validate_max_depth_p =
    ngx_http_ragnx_validate_max_depth;


static ngx_command_t  ngx_http_ragnx_validate_commands[] = {

    { ngx_string("ragnx_validate_schema"),
      NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_http_ragnx_validate_schema,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("ragnx_validate_max_depth"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_num_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_ragnx_validate_loc_conf_t, max_depth),
      &ngx_http_ragnx_validate_max_depth_p },

      ngx_null_command
};


static ngx_http_module_t  ngx_http_ragnx_validate_module_ctx = {
    NULL,                                  /* preconfiguration */
    ngx_http_ragnx_validate_init,          /* postconfiguration */

    NULL,                                  /* create main configuration */
    NULL,                                  /* init main configuration */

    NULL,                                  /* create server configuration */
    NULL,                                  /* merge server configuration */

    ngx_http_ragnx_validate_create_loc_conf, /* create location configuration */
    ngx_http_ragnx_validate_merge_loc_conf   /* merge location configuration */
};


ngx_module_t  ngx_http_ragnx_validate_module = {
    NGX_MODULE_V1,
    &ngx_http_ragnx_validate_module_ctx,   /* module context */
    ngx_http_ragnx_validate_commands,      /* module directives */
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


static ngx_int_t
ngx_http_ragnx_validate_handler(ngx_http_request_t *r)
{
    ngx_int_t                            rc;
    ngx_pool_cleanup_t                  *cln;
    ngx_http_core_loc_conf_t            *clcf;
    ngx_http_ragnx_validate_ctx_t       *ctx;
    ngx_http_ragnx_validate_loc_conf_t  *vlcf;

    if (r != r->main) {
        return NGX_DECLINED;
    }

    vlcf = ngx_http_get_module_loc_conf(r, ngx_http_ragnx_validate_module);

    if (vlcf->schema == NULL
        || !(r->method & (NGX_HTTP_POST|NGX_HTTP_PUT|NGX_HTTP_PATCH)))
    {
        return NGX_DECLINED;
    }

    ctx = ngx_http_get_module_ctx(r, ngx_http_ragnx_validate_module);

    if (ctx) {
        return ctx->status;
    }

    ngx_log_debug0(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "ragnx validate handler");

    if (!ngx_http_ragnx_validate_content_type(r)) {
        return ngx_http_ragnx_finish_error(r,
                                       NGX_HTTP_UNSUPPORTED_MEDIA_TYPE,
                                       "Content-Type must be application/json",
                                       NULL);
    }

    /* a body that would not fit in one buffer is refused before reading */

    clcf = ngx_http_get_module_loc_conf(r, ngx_http_core_module);

    if (r->headers_in.content_length_n
        > (off_t) clcf->client_body_buffer_size)
    {
        return ngx_http_ragnx_finish_error(r,
                                       NGX_HTTP_REQUEST_ENTITY_TOO_LARGE,
                                       "Request body too large", NULL);
    }

    ctx = ngx_pcalloc(r->pool, sizeof(ngx_http_ragnx_validate_ctx_t));
    if (ctx == NULL) {
        return NGX_ERROR;
    }

    cln = ngx_pool_cleanup_add(r->pool, 0);
    if (cln == NULL) {
        return NGX_ERROR;
    }

    cln->handler = ngx_http_ragnx_validate_cleanup;
    cln->data = ctx;

    ctx->status = NGX_DONE;

    ngx_http_set_ctx(r, ctx, ngx_http_ragnx_validate_module);

    rc = ngx_http_read_client_request_body(r,
                                        ngx_http_ragnx_validate_body_handler);
    if (rc >= NGX_HTTP_SPECIAL_RESPONSE) {
        return rc;
    }

    ngx_http_finalize_request(r, NGX_DONE);
    return NGX_DONE;
}


static void
ngx_http_ragnx_validate_body_handler(ngx_http_request_t *r)
{
    ngx_int_t                       rc;
    ngx_http_ragnx_validate_ctx_t  *ctx;

    ctx = ngx_http_get_module_ctx(r, ngx_http_ragnx_validate_module);

    rc = ngx_http_ragnx_validate_body(r, ctx);

    if (rc == NGX_DONE) {
        /* an error response was sent */
        return;
    }

    if (rc != NGX_OK) {
        ngx_http_finalize_request(r, NGX_HTTP_INTERNAL_SERVER_ERROR);
        return;
    }

    ctx->status = NGX_DECLINED;

    r->preserve_body = 1;

    r->write_event_handler = ngx_http_core_run_phases;
    ngx_http_core_run_phases(r);
}


/*
 * The checks, cheapest first, so that a hostile body costs no more than
 * a byte scan: in memory, not empty, UTF-8, nesting depth, then jansson
 * and the schema.  Returns NGX_OK, NGX_DONE once an error went out, or
 * NGX_ERROR.
 */

static ngx_int_t
ngx_http_ragnx_validate_body(ngx_http_request_t *r,
    ngx_http_ragnx_validate_ctx_t *ctx)
{
    u_char                              *p, *last;
    size_t                               len;
    json_t                              *details;
    ngx_int_t                            rc;
    ngx_buf_t                           *b;
    ngx_uint_t                           nbufs;
    ngx_chain_t                         *cl;
    json_error_t                         err;
    ngx_http_request_body_t             *rb;
    ngx_http_ragnx_validate_loc_conf_t  *vlcf;

    vlcf = ngx_http_get_module_loc_conf(r, ngx_http_ragnx_validate_module);

    rb = r->request_body;

    if (rb && rb->temp_file) {
        /* a chunked body that outgrew client_body_buffer_size */
        return ngx_http_ragnx_finish_error(r,
                                       NGX_HTTP_REQUEST_ENTITY_TOO_LARGE,
                                       "Request body too large", NULL);
    }

    len = 0;
    nbufs = 0;
    b = NULL;

    for (cl = rb ? rb->bufs : NULL; cl; cl = cl->next) {
        if (ngx_buf_special(cl->buf)) {
            continue;
        }

        if (!ngx_buf_in_memory(cl->buf)) {
            return ngx_http_ragnx_finish_error(r,
                                       NGX_HTTP_REQUEST_ENTITY_TOO_LARGE,
                                       "Request body too large", NULL);
        }

        if (cl->buf->last > cl->buf->pos) {
            len += cl->buf->last - cl->buf->pos;
            b = cl->buf;
            nbufs++;
        }
    }

    if (len == 0) {
        return ngx_http_ragnx_finish_error(r, NGX_HTTP_BAD_REQUEST,
                                           "Request body is empty", NULL);
    }

    if (nbufs == 1) {
        p = b->pos;

    } else {
        /* the pre-read part and the rest: join them */

        p = ngx_pnalloc(r->pool, len);
        if (p == NULL) {
            return NGX_ERROR;
        }

        last = p;

        for (cl = rb->bufs; cl; cl = cl->next) {
            if (!ngx_buf_special(cl->buf)) {
                last = ngx_cpymem(last, cl->buf->pos,
                                  cl->buf->last - cl->buf->pos);
            }
        }
    }

    last = p + len;

    if (!ragnx_utf8_valid(p, len)) {
        return ngx_http_ragnx_finish_error(r, NGX_HTTP_BAD_REQUEST,
                                           "Request body is not valid UTF-8",
                                           NULL);
    }

    if (!ngx_http_ragnx_validate_depth(p, last, vlcf->max_depth)) {
        details = json_pack("{sI}", "maxDepth", (json_int_t) vlcf->max_depth);
        if (details == NULL) {
            return NGX_ERROR;
        }

        rc = ngx_http_ragnx_finish_error(r, NGX_HTTP_BAD_REQUEST,
                                         "JSON is nested too deeply",
                                         details);
        json_decref(details);
        return rc;
    }

    ctx->body = json_loadb((char *) p, len,
                           JSON_REJECT_DUPLICATES|JSON_DECODE_ANY, &err);

    if (ctx->body == NULL) {
        return ngx_http_ragnx_validate_json_error(r, &err);
    }

    rc = ngx_http_ragnx_schema_check(vlcf->schema, ctx->body, r->pool,
                                     r->connection->log, &details);

    if (rc == NGX_OK) {
        return NGX_OK;
    }

    if (rc == NGX_ERROR) {
        return NGX_ERROR;
    }

    ngx_log_debug0(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "ragnx validate: body does not match the schema");

    rc = ngx_http_ragnx_finish_error(r, NGX_HTTP_BAD_REQUEST,
                                     "Validation failed", details);
    json_decref(details);

    return rc;
}


static ngx_int_t
ngx_http_ragnx_validate_json_error(ngx_http_request_t *r, json_error_t *err)
{
    size_t       len;
    json_t      *details;
    ngx_int_t    rc;
    const char  *msg;

    if (json_error_code(err) == json_error_out_of_memory) {
        return NGX_ERROR;
    }

    msg = (json_error_code(err) == json_error_duplicate_key)
          ? "Duplicate key in JSON" : "Invalid JSON";

    /* jansson may have cut a character of the body's text in half */

    len = ngx_strlen(err->text);

    while (len && !ragnx_utf8_valid((u_char *) err->text, len)) {
        len--;
    }

    details = json_pack("{sisisiss%}",
                        "line", err->line,
                        "column", err->column,
                        "position", err->position,
                        "message", err->text, len);
    if (details == NULL) {
        return NGX_ERROR;
    }

    rc = ngx_http_ragnx_finish_error(r, NGX_HTTP_BAD_REQUEST, msg, details);

    json_decref(details);

    return rc;
}


/* "application/json", any case, optionally followed by parameters */

static ngx_uint_t
ngx_http_ragnx_validate_content_type(ngx_http_request_t *r)
{
    u_char     *p, *last;
    ngx_str_t  *type;

    if (r->headers_in.content_type == NULL) {
        return 0;
    }

    type = &r->headers_in.content_type->value;

    p = type->data;
    last = p + type->len;

    while (p < last && (*p == ' ' || *p == '\t')) {
        p++;
    }

    if ((size_t) (last - p) < sizeof("application/json") - 1
        || ngx_strncasecmp(p, (u_char *) "application/json",
                           sizeof("application/json") - 1)
           != 0)
    {
        return 0;
    }

    p += sizeof("application/json") - 1;

    while (p < last && (*p == ' ' || *p == '\t')) {
        p++;
    }

    return p == last || *p == ';';
}


/*
 * Nesting depth of arrays and objects, counted outside strings, so that
 * "[[[[..." is refused before the recursive parser sees it.  The bytes
 * need not be valid JSON: jansson judges that next.
 */

static ngx_uint_t
ngx_http_ragnx_validate_depth(u_char *p, u_char *last, ngx_int_t max)
{
    ngx_int_t  depth;

    depth = 0;

    while (p < last) {

        switch (*p++) {

        case '"':
            while (p < last) {
                if (*p == '\\') {
                    p += 2;
                    continue;
                }

                if (*p++ == '"') {
                    break;
                }
            }

            break;

        case '[':
        case '{':
            if (++depth > max) {
                return 0;
            }

            break;

        case ']':
        case '}':
            if (depth) {
                depth--;
            }

            break;

        default:
            break;
        }
    }

    return 1;
}


json_t *
ngx_http_ragnx_validated_body(ngx_http_request_t *r)
{
    ngx_http_ragnx_validate_ctx_t  *ctx;

    ctx = ngx_http_get_module_ctx(r->main, ngx_http_ragnx_validate_module);

    if (ctx == NULL || ctx->status != NGX_DECLINED) {
        return NULL;
    }

    return ctx->body;
}


ngx_uint_t
ngx_http_ragnx_validate_enabled(void **loc_conf)
{
    ngx_http_ragnx_validate_loc_conf_t  *vlcf;

    vlcf = loc_conf[ngx_http_ragnx_validate_module.ctx_index];

    return vlcf->schema ? 1 : 0;
}


static void
ngx_http_ragnx_validate_cleanup(void *data)
{
    ngx_http_ragnx_validate_ctx_t  *ctx = data;

    if (ctx->body) {
        json_decref(ctx->body);
        ctx->body = NULL;
    }
}


static void *
ngx_http_ragnx_validate_create_loc_conf(ngx_conf_t *cf)
{
    ngx_http_ragnx_validate_loc_conf_t  *conf;

    conf = ngx_pcalloc(cf->pool, sizeof(ngx_http_ragnx_validate_loc_conf_t));
    if (conf == NULL) {
        return NULL;
    }

    conf->schema = NGX_CONF_UNSET_PTR;
    conf->max_depth = NGX_CONF_UNSET;

    return conf;
}


static char *
ngx_http_ragnx_validate_merge_loc_conf(ngx_conf_t *cf, void *parent,
    void *child)
{
    ngx_http_ragnx_validate_loc_conf_t *prev = parent;
    ngx_http_ragnx_validate_loc_conf_t *conf = child;

    ngx_conf_merge_ptr_value(conf->schema, prev->schema, NULL);
    ngx_conf_merge_value(conf->max_depth, prev->max_depth, 32);

    return NGX_CONF_OK;
}


static ngx_int_t
ngx_http_ragnx_validate_init(ngx_conf_t *cf)
{
    ngx_http_handler_pt        *h;
    ngx_http_core_main_conf_t  *cmcf;

    cmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_core_module);

    h = ngx_array_push(&cmcf->phases[NGX_HTTP_PRECONTENT_PHASE].handlers);
    if (h == NULL) {
        return NGX_ERROR;
    }

    *h = ngx_http_ragnx_validate_handler;

    return NGX_OK;
}


static char *
ngx_http_ragnx_validate_schema(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf)
{
    ngx_http_ragnx_validate_loc_conf_t *vlcf = conf;

    ngx_str_t  *value;

    if (vlcf->schema != NGX_CONF_UNSET_PTR) {
        return "is duplicate";
    }

    value = cf->args->elts;

    if (ngx_strcmp(value[1].data, "off") == 0) {
        vlcf->schema = NULL;
        return NGX_CONF_OK;
    }

    if (ngx_conf_full_name(cf->cycle, &value[1], 1) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    vlcf->schema = ngx_http_ragnx_schema_compile(cf, &value[1]);
    if (vlcf->schema == NULL) {
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


static char *
ngx_http_ragnx_validate_max_depth(ngx_conf_t *cf, void *post, void *data)
{
    ngx_int_t  *np = data;

    /* jansson itself stops at 2048 */

    if (*np < 1 || *np > 1024) {
        return "must be between 1 and 1024";
    }

    return NGX_CONF_OK;
}
