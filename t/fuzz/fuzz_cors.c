
/*
 * ragnx: fuzz target of the CORS origin parser and matcher
 * (ngx_module/ngx_http_ragnx_cors_module.c, included whole for its static
 * functions; the linker drops the rest of the module).  Each input is
 * parsed as an Origin header and as a configured origin, matched against
 * a configured list, and read as a header field list of tokens.
 */


#include "../../ngx_module/ngx_http_ragnx_cors_module.c"


static ngx_array_t                origins;
static ngx_http_ragnx_cors_conf_t conf;


static void
allow(const char *s)
{
    ngx_str_t                     v;
    ngx_http_ragnx_cors_origin_t *o;

    v.data = (u_char *) s;
    v.len = strlen(s);
    o = ngx_array_push(&origins);

    if (o == NULL || ngx_http_ragnx_cors_parse_origin(&v, o, 1) != NGX_OK) {
        abort();
    }
}


int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
    static ngx_log_t log;
    ngx_pool_t      *pool;

    pool = ngx_create_pool(1024, &log);
    if (pool == NULL
        || ngx_array_init(&origins, pool, 4,
                          sizeof(ngx_http_ragnx_cors_origin_t))
               != NGX_OK) {
        abort();
    }

    allow("https://app.example.com");
    allow("http://localhost:8080");
    allow("https://*.example.org");
    allow("http://[::1]:3000");
    conf.origins = &origins;

    return 0;
}


static int
inside(ngx_str_t *s, const uint8_t *data, size_t size)
{
    return s->data >= data && s->data + s->len <= data + size;
}


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    u_char                      *p, *last;
    ngx_int_t                    rc;
    ngx_str_t                    v, token;
    ngx_uint_t                   wildcard;
    ngx_http_ragnx_cors_origin_t o;

    /* a copy of exactly size bytes, so that ASan sees any overread */
    v.len = size;
    v.data = malloc(size ? size : 1);
    if (v.data == NULL) {
        abort();
    }

    memcpy(v.data, data, size);

    for (wildcard = 0; wildcard < 2; wildcard++) {
        if (ngx_http_ragnx_cors_parse_origin(&v, &o, wildcard) != NGX_OK) {
            continue;
        }

        if (o.scheme.len == 0 || o.host.len == 0
            || !inside(&o.scheme, v.data, size)
            || !inside(&o.host, v.data, size) || (o.wildcard && !wildcard)) {
            abort();
        }
    }

    rc = ngx_http_ragnx_cors_origin_allowed(&conf, &v);

    if (rc == NGX_OK && ngx_http_ragnx_cors_parse_origin(&v, &o, 0) != NGX_OK) {
        abort(); /* allowed, yet not an origin */
    }

    p = v.data;
    last = v.data + size;

    while ((rc = ngx_http_ragnx_cors_next_token(&p, last, &token)) == NGX_OK) {
        if (token.len == 0 || !inside(&token, v.data, size)) {
            abort();
        }
    }

    if (rc != NGX_DONE && rc != NGX_ERROR) {
        abort();
    }

    free(v.data);

    return 0;
}
