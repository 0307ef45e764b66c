
/*
 * ragnx cors: the "ragnx_cors_*" directives.  Owns the origin allow-list
 * (exact origins and "*.domain" subdomain wildcards, parsed at
 * configuration time), answers preflight requests in the access phase
 * before authentication runs, and adds the CORS response headers from a
 * header filter so that every response of a location carries them,
 * error pages included.
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ngx_http_ragnx.h"


typedef struct {
    ngx_str_t                        scheme;
    ngx_str_t                        host;      /* ".example.com" for "*." */
    in_port_t                        port;      /* 0: no port, no default */
    unsigned                         wildcard:1;
} ngx_http_ragnx_cors_origin_t;


typedef struct {
    ngx_str_t                       *names;
    ngx_uint_t                       nnames;
    ngx_str_t                        value;     /* names joined by ", " */
} ngx_http_ragnx_cors_list_t;


typedef struct {
    ngx_flag_t                       enabled;
} ngx_http_ragnx_cors_main_conf_t;


/*
 * "any_file" and "any_line" say where the "ragnx_cors_origins *" in
 * effect was set, "cred_file" and "cred_line" the "ragnx_cors_credentials"
 * in effect, so that the merge can name both when they meet.
 */
typedef struct {
    ngx_array_t                     *origins;   /* NULL: CORS is off */
    ngx_flag_t                       any_origin;
    ngx_flag_t                       credentials;
    u_char                          *any_file;
    ngx_uint_t                       any_line;
    u_char                          *cred_file;
    ngx_uint_t                       cred_line;
    ngx_http_ragnx_cors_list_t      *methods;
    ngx_http_ragnx_cors_list_t      *headers;
    ngx_http_ragnx_cors_list_t      *expose_headers;
    time_t                           max_age;
    ngx_str_t                        max_age_value;
} ngx_http_ragnx_cors_conf_t;


/*
 * The request's CORS policy: the configuration of the location that
 * handled it.  An error_page redirect resets r->ctx and moves the request
 * to the error location, whose configuration may have no CORS at all; the
 * context therefore also lives in a pool cleanup (as in the realip module)
 * and is frozen once the request is sending an error page.
 */

typedef struct {
    ngx_http_ragnx_cors_conf_t      *conf;
    unsigned                         preflight:1;
} ngx_http_ragnx_cors_ctx_t;


static ngx_int_t ngx_http_ragnx_cors_rewrite_handler(ngx_http_request_t *r);
static ngx_int_t ngx_http_ragnx_cors_access_handler(ngx_http_request_t *r);
static ngx_int_t ngx_http_ragnx_cors_header_filter(ngx_http_request_t *r);
static ngx_int_t ngx_http_ragnx_cors_origin_allowed(
    ngx_http_ragnx_cors_conf_t *rccf, ngx_str_t *value);
static ngx_int_t ngx_http_ragnx_cors_headers_allowed(ngx_http_request_t *r,
    ngx_http_ragnx_cors_conf_t *rccf);
static ngx_int_t ngx_http_ragnx_cors_parse_origin(ngx_str_t *value,
    ngx_http_ragnx_cors_origin_t *o, ngx_uint_t wildcard);
static ngx_int_t ngx_http_ragnx_cors_next_token(u_char **pos, u_char *last,
    ngx_str_t *token);
static ngx_int_t ngx_http_ragnx_cors_header_in(ngx_http_request_t *r,
    ngx_str_t *name, ngx_str_t *value);
static ngx_int_t ngx_http_ragnx_cors_set_header(ngx_http_request_t *r,
    ngx_str_t *key, ngx_str_t *value);
static ngx_int_t ngx_http_ragnx_cors_add_vary(ngx_http_request_t *r);
static ngx_http_ragnx_cors_ctx_t *ngx_http_ragnx_cors_get_ctx(
    ngx_http_request_t *r);
static ngx_http_ragnx_cors_ctx_t *ngx_http_ragnx_cors_create_ctx(
    ngx_http_request_t *r);
static void ngx_http_ragnx_cors_cleanup(void *data);

static void *ngx_http_ragnx_cors_create_main_conf(ngx_conf_t *cf);
static void *ngx_http_ragnx_cors_create_conf(ngx_conf_t *cf);
static char *ngx_http_ragnx_cors_merge_conf(ngx_conf_t *cf, void *parent,
    void *child);
static ngx_int_t ngx_http_ragnx_cors_init(ngx_conf_t *cf);
static char *ngx_http_ragnx_cors_credentials(ngx_conf_t *cf,
    ngx_command_t *cmd, void *conf);
static char *ngx_http_ragnx_cors_origins(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_http_ragnx_cors_set_list(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);


static ngx_command_t  ngx_http_ragnx_cors_commands[] = {

    { ngx_string("ragnx_cors_origins"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_1MORE,
      ngx_http_ragnx_cors_origins,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("ragnx_cors_credentials"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_FLAG,
      ngx_http_ragnx_cors_credentials,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_ragnx_cors_conf_t, credentials),
      NULL },

    { ngx_string("ragnx_cors_methods"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_1MORE,
      ngx_http_ragnx_cors_set_list,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_ragnx_cors_conf_t, methods),
      NULL },

    { ngx_string("ragnx_cors_headers"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_1MORE,
      ngx_http_ragnx_cors_set_list,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_ragnx_cors_conf_t, headers),
      NULL },

    { ngx_string("ragnx_cors_expose_headers"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_1MORE,
      ngx_http_ragnx_cors_set_list,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_ragnx_cors_conf_t, expose_headers),
      NULL },

    { ngx_string("ragnx_cors_max_age"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_sec_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_ragnx_cors_conf_t, max_age),
      NULL },

      ngx_null_command
};


static ngx_http_module_t  ngx_http_ragnx_cors_module_ctx = {
    NULL,                                  /* preconfiguration */
    ngx_http_ragnx_cors_init,              /* postconfiguration */

    ngx_http_ragnx_cors_create_main_conf,  /* create main configuration */
    NULL,                                  /* init main configuration */

    NULL,                                  /* create server configuration */
    NULL,                                  /* merge server configuration */

    ngx_http_ragnx_cors_create_conf,       /* create location configuration */
    ngx_http_ragnx_cors_merge_conf         /* merge location configuration */
};


ngx_module_t  ngx_http_ragnx_cors_module = {
    NGX_MODULE_V1,
    &ngx_http_ragnx_cors_module_ctx,       /* module context */
    ngx_http_ragnx_cors_commands,          /* module directives */
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


static ngx_http_output_header_filter_pt  ngx_http_next_header_filter;


static ngx_str_t  ngx_http_ragnx_cors_default_method_names[] = {
    ngx_string("GET"),
    ngx_string("HEAD"),
    ngx_string("POST"),
    ngx_string("OPTIONS")
};

static ngx_http_ragnx_cors_list_t  ngx_http_ragnx_cors_default_methods = {
    ngx_http_ragnx_cors_default_method_names,
    sizeof(ngx_http_ragnx_cors_default_method_names) / sizeof(ngx_str_t),
    ngx_string("GET, HEAD, POST, OPTIONS")
};


static ngx_str_t  ngx_http_ragnx_cors_default_header_names[] = {
    ngx_string("Authorization"),
    ngx_string("Content-Type")
};

static ngx_http_ragnx_cors_list_t  ngx_http_ragnx_cors_default_headers = {
    ngx_http_ragnx_cors_default_header_names,
    sizeof(ngx_http_ragnx_cors_default_header_names) / sizeof(ngx_str_t),
    ngx_string("Authorization, Content-Type")
};


static ngx_str_t  ngx_http_ragnx_cors_origin = ngx_string("Origin");
static ngx_str_t  ngx_http_ragnx_cors_vary = ngx_string("Vary");
static ngx_str_t  ngx_http_ragnx_cors_request_method =
    ngx_string("Access-Control-Request-Method");
static ngx_str_t  ngx_http_ragnx_cors_request_headers =
    ngx_string("Access-Control-Request-Headers");
static ngx_str_t  ngx_http_ragnx_cors_allow_origin =
    ngx_string("Access-Control-Allow-Origin");
static ngx_str_t  ngx_http_ragnx_cors_allow_creds =
    ngx_string("Access-Control-Allow-Credentials");
static ngx_str_t  ngx_http_ragnx_cors_allow_methods =
    ngx_string("Access-Control-Allow-Methods");
static ngx_str_t  ngx_http_ragnx_cors_allow_headers =
    ngx_string("Access-Control-Allow-Headers");
static ngx_str_t  ngx_http_ragnx_cors_expose_headers =
    ngx_string("Access-Control-Expose-Headers");
static ngx_str_t  ngx_http_ragnx_cors_max_age =
    ngx_string("Access-Control-Max-Age");

static ngx_str_t  ngx_http_ragnx_cors_any = ngx_string("*");
static ngx_str_t  ngx_http_ragnx_cors_true = ngx_string("true");


/* RFC 9110 token characters */

static uint32_t  ngx_http_ragnx_cors_tchar[] = {
    0x00000000, /* 0000 0000 0000 0000  0000 0000 0000 0000 */

                /* ?>=< ;:98 7654 3210  /.-, +*)( '&%$ #"!  */
    0x03ff6cfa, /* 0000 0011 1111 1111  0110 1100 1111 1010 */

                /* _^]\ [ZYX WVUT SRQP  ONML KJIH GFED CBA@ */
    0xc7fffffe, /* 1100 0111 1111 1111  1111 1111 1111 1110 */

                /*  ~}| {zyx wvut srqp  onml kjih gfed cba` */
    0x57ffffff, /* 0101 0111 1111 1111  1111 1111 1111 1111 */

    0x00000000, /* 0000 0000 0000 0000  0000 0000 0000 0000 */
    0x00000000, /* 0000 0000 0000 0000  0000 0000 0000 0000 */
    0x00000000, /* 0000 0000 0000 0000  0000 0000 0000 0000 */
    0x00000000  /* 0000 0000 0000 0000  0000 0000 0000 0000 */
};

#define ngx_http_ragnx_cors_is_tchar(c)                                       \
    (ngx_http_ragnx_cors_tchar[(c) >> 5] & (1U << ((c) & 0x1f)))


static ngx_int_t
ngx_http_ragnx_cors_rewrite_handler(ngx_http_request_t *r)
{
    ngx_http_ragnx_cors_ctx_t  *ctx;

    if (r != r->main) {
        return NGX_DECLINED;
    }

    ctx = ngx_http_ragnx_cors_get_ctx(r);

    if (ctx == NULL) {
        ctx = ngx_http_ragnx_cors_create_ctx(r);
        if (ctx == NULL) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        return NGX_DECLINED;
    }

    if (r->error_page || r->err_status) {

        /* an error page keeps the policy of the location that failed */

        return NGX_DECLINED;
    }

    /* rewrite ... last, try_files, an internal redirect: a new location */

    ctx->conf = ngx_http_get_module_loc_conf(r, ngx_http_ragnx_cors_module);
    ctx->preflight = 0;

    return NGX_DECLINED;
}


static ngx_int_t
ngx_http_ragnx_cors_access_handler(ngx_http_request_t *r)
{
    ngx_int_t                    rc;
    ngx_str_t                    origin, method;
    ngx_uint_t                   i;
    ngx_http_ragnx_cors_ctx_t   *ctx;
    ngx_http_ragnx_cors_conf_t  *rccf;

    if (r->method != NGX_HTTP_OPTIONS) {
        return NGX_DECLINED;
    }

    rccf = ngx_http_get_module_loc_conf(r, ngx_http_ragnx_cors_module);

    if (rccf->origins == NULL) {
        return NGX_DECLINED;
    }

    /* a preflight is an OPTIONS request with both of these headers */

    rc = ngx_http_ragnx_cors_header_in(r, &ngx_http_ragnx_cors_request_method,
                                       &method);
    if (rc != NGX_OK) {
        return NGX_DECLINED;
    }

    rc = ngx_http_ragnx_cors_header_in(r, &ngx_http_ragnx_cors_origin,
                                       &origin);
    if (rc != NGX_OK) {
        return NGX_DECLINED;
    }

    ctx = ngx_http_ragnx_cors_get_ctx(r);

    if (ctx == NULL) {
        ctx = ngx_http_ragnx_cors_create_ctx(r);
        if (ctx == NULL) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }
    }

    ctx->preflight = 1;

    if (ngx_http_ragnx_cors_origin_allowed(rccf, &origin) != NGX_OK) {
        ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                      "ragnx cors: preflight from origin \"%V\" denied",
                      &origin);

        return ngx_http_ragnx_finish_error(r, NGX_HTTP_FORBIDDEN,
                                           "CORS origin not allowed", NULL);
    }

    for (i = 0; i < rccf->methods->nnames; i++) {
        if (method.len == rccf->methods->names[i].len
            && ngx_strncmp(method.data, rccf->methods->names[i].data,
                           method.len)
               == 0)
        {
            break;
        }
    }

    if (i == rccf->methods->nnames) {
        ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                      "ragnx cors: preflight for method \"%V\" denied",
                      &method);

        return ngx_http_ragnx_finish_error(r, NGX_HTTP_FORBIDDEN,
                                           "CORS method not allowed", NULL);
    }

    if (ngx_http_ragnx_cors_headers_allowed(r, rccf) != NGX_OK) {
        return ngx_http_ragnx_finish_error(r, NGX_HTTP_FORBIDDEN,
                                           "CORS header not allowed", NULL);
    }

    /* Allow-Origin, Allow-Credentials and Vary come from the header filter */

    if (ngx_http_ragnx_cors_set_header(r, &ngx_http_ragnx_cors_allow_methods,
                                       &rccf->methods->value)
        != NGX_OK)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (ngx_http_ragnx_cors_set_header(r, &ngx_http_ragnx_cors_allow_headers,
                                       &rccf->headers->value)
        != NGX_OK)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (ngx_http_ragnx_cors_set_header(r, &ngx_http_ragnx_cors_max_age,
                                       &rccf->max_age_value)
        != NGX_OK)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (ngx_http_discard_request_body(r) != NGX_OK) {
        r->keepalive = 0;
    }

    r->headers_out.status = NGX_HTTP_NO_CONTENT;
    r->headers_out.content_length_n = 0;
    r->header_only = 1;

    rc = ngx_http_send_header(r);

    ngx_http_finalize_request(r, rc);

    return NGX_DONE;
}


static ngx_int_t
ngx_http_ragnx_cors_header_filter(ngx_http_request_t *r)
{
    ngx_str_t                   *acao, *acac, *aceh, origin;
    ngx_http_ragnx_cors_ctx_t   *ctx;
    ngx_http_ragnx_cors_conf_t  *rccf;

    if (r != r->main) {
        return ngx_http_next_header_filter(r);
    }

    ctx = ngx_http_ragnx_cors_get_ctx(r);

    rccf = ctx ? ctx->conf
               : ngx_http_get_module_loc_conf(r, ngx_http_ragnx_cors_module);

    if (rccf->origins == NULL) {
        return ngx_http_next_header_filter(r);
    }

    /*
     * The module owns the CORS headers of the location: values set by the
     * handler or an upstream are replaced or removed, which also keeps the
     * filter idempotent if it runs again for the same request.
     */

    acao = NULL;
    acac = NULL;
    aceh = NULL;

    if (ngx_http_ragnx_cors_header_in(r, &ngx_http_ragnx_cors_origin,
                                      &origin)
        == NGX_OK
        && ngx_http_ragnx_cors_origin_allowed(rccf, &origin) == NGX_OK)
    {
        if (rccf->any_origin) {
            acao = &ngx_http_ragnx_cors_any;

        } else {
            acao = &origin;
        }

        if (rccf->credentials) {
            acac = &ngx_http_ragnx_cors_true;
        }

        if (rccf->expose_headers && !(ctx && ctx->preflight)) {
            aceh = &rccf->expose_headers->value;
        }
    }

    if (ngx_http_ragnx_cors_set_header(r, &ngx_http_ragnx_cors_allow_origin,
                                       acao)
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    if (ngx_http_ragnx_cors_set_header(r, &ngx_http_ragnx_cors_allow_creds,
                                       acac)
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    if (ngx_http_ragnx_cors_set_header(r, &ngx_http_ragnx_cors_expose_headers,
                                       aceh)
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    if (ngx_http_ragnx_cors_add_vary(r) != NGX_OK) {
        return NGX_ERROR;
    }

    return ngx_http_next_header_filter(r);
}


static ngx_int_t
ngx_http_ragnx_cors_origin_allowed(ngx_http_ragnx_cors_conf_t *rccf,
    ngx_str_t *value)
{
    size_t                         len;
    ngx_uint_t                     i;
    ngx_http_ragnx_cors_origin_t   origin, *o;

    if (rccf->any_origin) {
        return NGX_OK;
    }

    /* "null", paths, userinfo, wildcards: all fail to parse */

    if (ngx_http_ragnx_cors_parse_origin(value, &origin, 0) != NGX_OK) {
        return NGX_DECLINED;
    }

    o = rccf->origins->elts;

    for (i = 0; i < rccf->origins->nelts; i++) {

        if (origin.port != o[i].port
            || origin.scheme.len != o[i].scheme.len
            || ngx_strncasecmp(origin.scheme.data, o[i].scheme.data,
                               origin.scheme.len)
               != 0)
        {
            continue;
        }

        if (!o[i].wildcard) {
            if (origin.host.len == o[i].host.len
                && ngx_strncasecmp(origin.host.data, o[i].host.data,
                                   origin.host.len)
                   == 0)
            {
                return NGX_OK;
            }

            continue;
        }

        /*
         * "*.example.com" is kept as ".example.com": the host must end
         * with it and have at least one label before it; labels are never
         * empty, so "example.com" and "evilexample.com" do not match
         */

        len = o[i].host.len;

        if (origin.host.len > len
            && ngx_strncasecmp(origin.host.data + origin.host.len - len,
                               o[i].host.data, len)
               == 0)
        {
            return NGX_OK;
        }
    }

    return NGX_DECLINED;
}


static ngx_int_t
ngx_http_ragnx_cors_headers_allowed(ngx_http_request_t *r,
    ngx_http_ragnx_cors_conf_t *rccf)
{
    u_char           *p, *last;
    ngx_int_t         rc;
    ngx_str_t         name;
    ngx_uint_t        i, n;
    ngx_list_part_t  *part;
    ngx_table_elt_t  *h;

    part = &r->headers_in.headers.part;
    h = part->elts;

    for (i = 0; /* void */; i++) {

        if (i >= part->nelts) {
            if (part->next == NULL) {
                break;
            }

            part = part->next;
            h = part->elts;
            i = 0;
        }

        if (h[i].key.len != ngx_http_ragnx_cors_request_headers.len
            || ngx_strncasecmp(h[i].key.data,
                               ngx_http_ragnx_cors_request_headers.data,
                               h[i].key.len)
               != 0)
        {
            continue;
        }

        p = h[i].value.data;
        last = p + h[i].value.len;

        for ( ;; ) {
            rc = ngx_http_ragnx_cors_next_token(&p, last, &name);

            if (rc == NGX_DONE) {
                break;
            }

            if (rc == NGX_ERROR) {
                ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                              "ragnx cors: preflight with invalid "
                              "request headers \"%V\" denied", &h[i].value);
                return NGX_DECLINED;
            }

            for (n = 0; n < rccf->headers->nnames; n++) {
                if (name.len == rccf->headers->names[n].len
                    && ngx_strncasecmp(name.data,
                                       rccf->headers->names[n].data,
                                       name.len)
                       == 0)
                {
                    break;
                }
            }

            if (n == rccf->headers->nnames) {
                ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                              "ragnx cors: preflight for request header "
                              "\"%V\" denied", &name);
                return NGX_DECLINED;
            }
        }
    }

    return NGX_OK;
}


/*
 * An origin as RFC 6454 serialises it: scheme "://" host [ ":" port ],
 * nothing else.  The host is a registered name of non-empty labels or an
 * IP literal in brackets; "wildcard" allows a leading "*." label (the
 * configuration only).  A port equal to the scheme's default is the same
 * origin as no port.
 */

static ngx_int_t
ngx_http_ragnx_cors_parse_origin(ngx_str_t *value,
    ngx_http_ragnx_cors_origin_t *o, ngx_uint_t wildcard)
{
    u_char     *p, *last, *label, c;
    ngx_int_t   port;

    ngx_memzero(o, sizeof(ngx_http_ragnx_cors_origin_t));

    p = value->data;
    last = p + value->len;

    /* scheme = ALPHA *( ALPHA / DIGIT / "+" / "-" / "." ) */

    if (p == last) {
        return NGX_ERROR;
    }

    c = (u_char) (*p | 0x20);

    if (c < 'a' || c > 'z') {
        return NGX_ERROR;
    }

    while (p < last) {
        c = (u_char) (*p | 0x20);

        if ((c >= 'a' && c <= 'z') || (*p >= '0' && *p <= '9')
            || *p == '+' || *p == '-' || *p == '.')
        {
            p++;
            continue;
        }

        break;
    }

    o->scheme.data = value->data;
    o->scheme.len = p - value->data;

    if (last - p < 3 || ngx_strncmp(p, "://", 3) != 0) {
        return NGX_ERROR;
    }

    p += 3;

    o->host.data = p;

    if (wildcard && last - p > 2 && p[0] == '*' && p[1] == '.') {
        o->wildcard = 1;
        o->host.data = ++p;
        p++;
    }

    if (p < last && *p == '[' && !o->wildcard) {

        /* IP-literal, loosely: the brackets keep it apart from the port */

        for (p++; p < last && *p != ']'; p++) {
            c = (u_char) (*p | 0x20);

            if (!((c >= 'a' && c <= 'f') || (*p >= '0' && *p <= '9')
                  || *p == ':' || *p == '.'))
            {
                return NGX_ERROR;
            }
        }

        if (p == last || p - o->host.data < 3) {
            return NGX_ERROR;
        }

        p++;

    } else {

        for ( ;; ) {
            label = p;

            while (p < last) {
                c = (u_char) (*p | 0x20);

                if ((c >= 'a' && c <= 'z') || (*p >= '0' && *p <= '9')
                    || *p == '-' || *p == '_')
                {
                    p++;
                    continue;
                }

                break;
            }

            if (p == label) {
                return NGX_ERROR;
            }

            if (p == last || *p != '.') {
                break;
            }

            p++;
        }
    }

    o->host.len = p - o->host.data;

    if (p < last && *p == ':') {
        p++;

        /* no empty port, no leading zeros */

        if (p == last || *p == '0' || last - p > 5) {
            return NGX_ERROR;
        }

        port = ngx_atoi(p, last - p);

        if (port < 1 || port > 65535) {
            return NGX_ERROR;
        }

        o->port = (in_port_t) port;

        return NGX_OK;
    }

    if (p != last) {
        return NGX_ERROR;
    }

    if (o->scheme.len == 4
        && ngx_strncasecmp(o->scheme.data, (u_char *) "http", 4) == 0)
    {
        o->port = 80;

    } else if (o->scheme.len == 5
               && ngx_strncasecmp(o->scheme.data, (u_char *) "https", 5) == 0)
    {
        o->port = 443;
    }

    return NGX_OK;
}


/*
 * The next element of a comma-separated list of tokens (a header field
 * list, RFC 9110 section 5.6.1): NGX_OK with the token, NGX_DONE at the
 * end, NGX_ERROR on anything that is not a token.
 */

static ngx_int_t
ngx_http_ragnx_cors_next_token(u_char **pos, u_char *last, ngx_str_t *token)
{
    u_char  *p;

    p = *pos;

    while (p < last && (*p == ' ' || *p == '\t' || *p == ',')) {
        p++;
    }

    if (p == last) {
        *pos = p;
        return NGX_DONE;
    }

    token->data = p;

    while (p < last && ngx_http_ragnx_cors_is_tchar(*p)) {
        p++;
    }

    token->len = p - token->data;

    while (p < last && (*p == ' ' || *p == '\t')) {
        p++;
    }

    if (token->len == 0 || (p < last && *p != ',')) {
        return NGX_ERROR;
    }

    *pos = p;

    return NGX_OK;
}


/*
 * The value of a request header: NGX_DECLINED when absent.  A header sent
 * more than once is not trusted: its value is returned empty, which no
 * origin or method matches.
 */

static ngx_int_t
ngx_http_ragnx_cors_header_in(ngx_http_request_t *r, ngx_str_t *name,
    ngx_str_t *value)
{
    ngx_int_t         rc;
    ngx_uint_t        i;
    ngx_list_part_t  *part;
    ngx_table_elt_t  *h;

    rc = NGX_DECLINED;

    part = &r->headers_in.headers.part;
    h = part->elts;

    for (i = 0; /* void */; i++) {

        if (i >= part->nelts) {
            if (part->next == NULL) {
                break;
            }

            part = part->next;
            h = part->elts;
            i = 0;
        }

        if (h[i].key.len != name->len
            || ngx_strncasecmp(h[i].key.data, name->data, name->len) != 0)
        {
            continue;
        }

        if (rc == NGX_OK) {
            ngx_str_null(value);
            return NGX_OK;
        }

        *value = h[i].value;
        rc = NGX_OK;
    }

    return rc;
}


/*
 * Set a response header to "value", replacing any earlier ones of that
 * name; a NULL value removes them.
 */

static ngx_int_t
ngx_http_ragnx_cors_set_header(ngx_http_request_t *r, ngx_str_t *key,
    ngx_str_t *value)
{
    ngx_uint_t        i;
    ngx_list_part_t  *part;
    ngx_table_elt_t  *h, *found;

    found = NULL;

    part = &r->headers_out.headers.part;
    h = part->elts;

    for (i = 0; /* void */; i++) {

        if (i >= part->nelts) {
            if (part->next == NULL) {
                break;
            }

            part = part->next;
            h = part->elts;
            i = 0;
        }

        if (h[i].hash == 0
            || h[i].key.len != key->len
            || ngx_strncasecmp(h[i].key.data, key->data, key->len) != 0)
        {
            continue;
        }

        if (found == NULL && value) {
            found = &h[i];
            found->value = *value;
            continue;
        }

        h[i].hash = 0;
    }

    if (found || value == NULL) {
        return NGX_OK;
    }

    h = ngx_list_push(&r->headers_out.headers);
    if (h == NULL) {
        return NGX_ERROR;
    }

    h->hash = 1;
    h->key = *key;
    h->value = *value;

    return NGX_OK;
}


/* "Vary: Origin", unless a Vary header already names it (or is "*") */

static ngx_int_t
ngx_http_ragnx_cors_add_vary(ngx_http_request_t *r)
{
    u_char           *p, *last;
    ngx_str_t         token;
    ngx_uint_t        i;
    ngx_list_part_t  *part;
    ngx_table_elt_t  *h;

    part = &r->headers_out.headers.part;
    h = part->elts;

    for (i = 0; /* void */; i++) {

        if (i >= part->nelts) {
            if (part->next == NULL) {
                break;
            }

            part = part->next;
            h = part->elts;
            i = 0;
        }

        if (h[i].hash == 0
            || h[i].key.len != ngx_http_ragnx_cors_vary.len
            || ngx_strncasecmp(h[i].key.data, ngx_http_ragnx_cors_vary.data,
                               h[i].key.len)
               != 0)
        {
            continue;
        }

        p = h[i].value.data;
        last = p + h[i].value.len;

        while (ngx_http_ragnx_cors_next_token(&p, last, &token) == NGX_OK) {

            if ((token.len == 1 && token.data[0] == '*')
                || (token.len == ngx_http_ragnx_cors_origin.len
                    && ngx_strncasecmp(token.data,
                                       ngx_http_ragnx_cors_origin.data,
                                       token.len)
                       == 0))
            {
                return NGX_OK;
            }
        }
    }

    h = ngx_list_push(&r->headers_out.headers);
    if (h == NULL) {
        return NGX_ERROR;
    }

    h->hash = 1;
    h->key = ngx_http_ragnx_cors_vary;
    h->value = ngx_http_ragnx_cors_origin;

    return NGX_OK;
}


static ngx_http_ragnx_cors_ctx_t *
ngx_http_ragnx_cors_get_ctx(ngx_http_request_t *r)
{
    ngx_pool_cleanup_t         *cln;
    ngx_http_ragnx_cors_ctx_t  *ctx;

    ctx = ngx_http_get_module_ctx(r, ngx_http_ragnx_cors_module);

    if (ctx == NULL && (r->internal || r->filter_finalize)) {

        /*
         * if module context was reset by an internal redirect,
         * it can still be found in the cleanup handler
         */

        for (cln = r->pool->cleanup; cln; cln = cln->next) {
            if (cln->handler == ngx_http_ragnx_cors_cleanup) {
                ctx = cln->data;
                ngx_http_set_ctx(r, ctx, ngx_http_ragnx_cors_module);
                break;
            }
        }
    }

    return ctx;
}


static ngx_http_ragnx_cors_ctx_t *
ngx_http_ragnx_cors_create_ctx(ngx_http_request_t *r)
{
    ngx_pool_cleanup_t         *cln;
    ngx_http_ragnx_cors_ctx_t  *ctx;

    cln = ngx_pool_cleanup_add(r->pool, sizeof(ngx_http_ragnx_cors_ctx_t));
    if (cln == NULL) {
        return NULL;
    }

    ctx = cln->data;

    ctx->conf = ngx_http_get_module_loc_conf(r, ngx_http_ragnx_cors_module);
    ctx->preflight = 0;

    cln->handler = ngx_http_ragnx_cors_cleanup;

    ngx_http_set_ctx(r, ctx, ngx_http_ragnx_cors_module);

    return ctx;
}


static void
ngx_http_ragnx_cors_cleanup(void *data)
{
    /*
     * nothing to release: the cleanup only marks where the context is,
     * see ngx_http_ragnx_cors_get_ctx()
     */
}


static void *
ngx_http_ragnx_cors_create_main_conf(ngx_conf_t *cf)
{
    ngx_http_ragnx_cors_main_conf_t  *rcmcf;

    rcmcf = ngx_pcalloc(cf->pool, sizeof(ngx_http_ragnx_cors_main_conf_t));
    if (rcmcf == NULL) {
        return NULL;
    }

    /*
     * set by ngx_pcalloc():
     *
     *     rcmcf->enabled = 0;
     */

    return rcmcf;
}


static void *
ngx_http_ragnx_cors_create_conf(ngx_conf_t *cf)
{
    ngx_http_ragnx_cors_conf_t  *conf;

    conf = ngx_pcalloc(cf->pool, sizeof(ngx_http_ragnx_cors_conf_t));
    if (conf == NULL) {
        return NULL;
    }

    /*
     * set by ngx_pcalloc():
     *
     *     conf->max_age_value = { 0, NULL };
     */

    conf->origins = NGX_CONF_UNSET_PTR;
    conf->any_origin = NGX_CONF_UNSET;
    conf->credentials = NGX_CONF_UNSET;
    conf->methods = NGX_CONF_UNSET_PTR;
    conf->headers = NGX_CONF_UNSET_PTR;
    conf->expose_headers = NGX_CONF_UNSET_PTR;
    conf->max_age = NGX_CONF_UNSET;

    return conf;
}


static char *
ngx_http_ragnx_cors_merge_conf(ngx_conf_t *cf, void *parent, void *child)
{
    ngx_http_ragnx_cors_conf_t *prev = parent;
    ngx_http_ragnx_cors_conf_t *conf = child;

    u_char  *p;

    if (conf->any_origin == NGX_CONF_UNSET) {
        conf->any_file = prev->any_file;
        conf->any_line = prev->any_line;
    }

    if (conf->credentials == NGX_CONF_UNSET) {
        conf->cred_file = prev->cred_file;
        conf->cred_line = prev->cred_line;
    }

    ngx_conf_merge_ptr_value(conf->origins, prev->origins, NULL);
    ngx_conf_merge_value(conf->any_origin, prev->any_origin, 0);
    ngx_conf_merge_value(conf->credentials, prev->credentials, 0);
    ngx_conf_merge_ptr_value(conf->methods, prev->methods,
                             &ngx_http_ragnx_cors_default_methods);
    ngx_conf_merge_ptr_value(conf->headers, prev->headers,
                             &ngx_http_ragnx_cors_default_headers);
    ngx_conf_merge_ptr_value(conf->expose_headers, prev->expose_headers,
                             NULL);
    ngx_conf_merge_sec_value(conf->max_age, prev->max_age, 600);

    if (conf->any_origin && conf->credentials) {
        ngx_log_error(NGX_LOG_EMERG, cf->log, 0,
                      "\"ragnx_cors_origins *\" in %s:%ui cannot be used "
                      "with \"ragnx_cors_credentials on\" in %s:%ui, list "
                      "the origins instead", conf->any_file, conf->any_line,
                      conf->cred_file, conf->cred_line);
        return NGX_CONF_ERROR;
    }

    if (conf->origins == NULL) {
        return NGX_CONF_OK;
    }

    if (prev->max_age_value.data && prev->max_age == conf->max_age) {
        conf->max_age_value = prev->max_age_value;
        return NGX_CONF_OK;
    }

    p = ngx_pnalloc(cf->pool, NGX_TIME_T_LEN);
    if (p == NULL) {
        return NGX_CONF_ERROR;
    }

    conf->max_age_value.data = p;
    conf->max_age_value.len = ngx_sprintf(p, "%T", conf->max_age) - p;

    return NGX_CONF_OK;
}


static ngx_int_t
ngx_http_ragnx_cors_init(ngx_conf_t *cf)
{
    ngx_http_handler_pt              *h;
    ngx_http_core_main_conf_t        *cmcf;
    ngx_http_ragnx_cors_main_conf_t  *rcmcf;

    rcmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_ragnx_cors_module);

    if (!rcmcf->enabled) {
        return NGX_OK;
    }

    cmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_core_module);

    h = ngx_array_push(&cmcf->phases[NGX_HTTP_REWRITE_PHASE].handlers);
    if (h == NULL) {
        return NGX_ERROR;
    }

    *h = ngx_http_ragnx_cors_rewrite_handler;

    /*
     * registered after ngx_http_ragnx_jwt_module's handler (see "config"),
     * so it runs before it: preflights carry no credentials
     */

    h = ngx_array_push(&cmcf->phases[NGX_HTTP_ACCESS_PHASE].handlers);
    if (h == NULL) {
        return NGX_ERROR;
    }

    *h = ngx_http_ragnx_cors_access_handler;

    ngx_http_next_header_filter = ngx_http_top_header_filter;
    ngx_http_top_header_filter = ngx_http_ragnx_cors_header_filter;

    return NGX_OK;
}


static char *
ngx_http_ragnx_cors_credentials(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf)
{
    ngx_http_ragnx_cors_conf_t *rccf = conf;

    char  *rv;

    rv = ngx_conf_set_flag_slot(cf, cmd, conf);

    if (rv != NGX_CONF_OK) {
        return rv;
    }

    rccf->cred_file = cf->conf_file->file.name.data;
    rccf->cred_line = cf->conf_file->line;

    return NGX_CONF_OK;
}


static char *
ngx_http_ragnx_cors_origins(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_ragnx_cors_conf_t *rccf = conf;

    ngx_str_t                        *value;
    ngx_uint_t                        i;
    ngx_http_ragnx_cors_origin_t     *o;
    ngx_http_ragnx_cors_main_conf_t  *rcmcf;

    if (rccf->origins != NGX_CONF_UNSET_PTR) {
        return "is duplicate";
    }

    rcmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_ragnx_cors_module);
    rcmcf->enabled = 1;

    value = cf->args->elts;

    rccf->any_origin = 0;

    if (cf->args->nelts == 2 && ngx_strcmp(value[1].data, "off") == 0) {
        rccf->origins = NULL;
        return NGX_CONF_OK;
    }

    rccf->origins = ngx_array_create(cf->pool, cf->args->nelts - 1,
                                     sizeof(ngx_http_ragnx_cors_origin_t));
    if (rccf->origins == NULL) {
        return NGX_CONF_ERROR;
    }

    for (i = 1; i < cf->args->nelts; i++) {

        if (value[i].len == 1 && value[i].data[0] == '*') {

            if (cf->args->nelts != 2) {
                ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                                   "\"*\" in \"%V\" directive cannot be "
                                   "mixed with other origins", &cmd->name);
                return NGX_CONF_ERROR;
            }

            rccf->any_origin = 1;
            rccf->any_file = cf->conf_file->file.name.data;
            rccf->any_line = cf->conf_file->line;
            continue;
        }

        o = ngx_array_push(rccf->origins);
        if (o == NULL) {
            return NGX_CONF_ERROR;
        }

        if (ngx_http_ragnx_cors_parse_origin(&value[i], o, 1) != NGX_OK) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "invalid origin \"%V\" in \"%V\" directive, "
                               "it must be \"scheme://host[:port]\" or "
                               "\"scheme://*.domain[:port]\"",
                               &value[i], &cmd->name);
            return NGX_CONF_ERROR;
        }
    }

    return NGX_CONF_OK;
}


static char *
ngx_http_ragnx_cors_set_list(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    char  *p = conf;

    u_char                       *d;
    size_t                        len;
    ngx_str_t                    *value;
    ngx_uint_t                    i, j;
    ngx_http_ragnx_cors_list_t  **field, *list;

    field = (ngx_http_ragnx_cors_list_t **) (p + cmd->offset);

    if (*field != NGX_CONF_UNSET_PTR) {
        return "is duplicate";
    }

    value = cf->args->elts;
    len = 0;

    for (i = 1; i < cf->args->nelts; i++) {

        for (j = 0; j < value[i].len; j++) {
            if (!ngx_http_ragnx_cors_is_tchar(value[i].data[j])) {
                break;
            }
        }

        if (value[i].len == 0 || j != value[i].len) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "invalid name \"%V\" in \"%V\" directive",
                               &value[i], &cmd->name);
            return NGX_CONF_ERROR;
        }

        len += value[i].len + sizeof(", ") - 1;
    }

    list = ngx_palloc(cf->pool, sizeof(ngx_http_ragnx_cors_list_t));
    if (list == NULL) {
        return NGX_CONF_ERROR;
    }

    /* cf->args is reused for the next directive: copy the names */

    list->nnames = cf->args->nelts - 1;

    list->names = ngx_palloc(cf->pool, list->nnames * sizeof(ngx_str_t));
    if (list->names == NULL) {
        return NGX_CONF_ERROR;
    }

    d = ngx_pnalloc(cf->pool, len);
    if (d == NULL) {
        return NGX_CONF_ERROR;
    }

    list->value.data = d;

    for (i = 1; i < cf->args->nelts; i++) {
        list->names[i - 1] = value[i];

        if (i > 1) {
            *d++ = ',';
            *d++ = ' ';
        }

        d = ngx_cpymem(d, value[i].data, value[i].len);
    }

    list->value.len = d - list->value.data;

    *field = list;

    return NGX_CONF_OK;
}
