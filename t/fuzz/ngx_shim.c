
/*
 * ragnx: the few nginx core functions the fuzz targets of module code
 * call, for a target linked without nginx (nginx-dev ships headers only).
 * Pools are malloc() lists, so that ASan sees every allocation on its own;
 * ngx_sprintf knows the conversions the module uses; logging goes nowhere.
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ngx_http_ragnx.h"
#include "ngx_http_ragnx_metrics.h"


volatile ngx_cycle_t *ngx_cycle;
volatile ngx_time_t  *ngx_cached_time;

/* what a module file included whole refers to, never reached: see below */
ngx_module_t                     ngx_http_core_module;
ngx_http_output_header_filter_pt ngx_http_top_header_filter;

/* no metrics zone: nothing is counted */
ngx_http_ragnx_metrics_t *ngx_http_ragnx_metrics;


typedef struct ngx_shim_block_s ngx_shim_block_t;

struct ngx_shim_block_s {
    ngx_shim_block_t *next;
    max_align_t       data[];
};


void *
ngx_alloc(size_t size, ngx_log_t *log)
{
    return malloc(size);
}


void *
ngx_calloc(size_t size, ngx_log_t *log)
{
    return calloc(1, size);
}


void
ngx_explicit_memzero(void *buf, size_t n)
{
    explicit_bzero(buf, n);
}


ngx_pool_t *
ngx_create_pool(size_t size, ngx_log_t *log)
{
    ngx_pool_t *p;

    p = calloc(1, sizeof(ngx_pool_t));
    if (p != NULL) {
        p->log = log;
    }

    return p;
}


void
ngx_destroy_pool(ngx_pool_t *pool)
{
    ngx_pool_cleanup_t *c;
    ngx_shim_block_t   *b, *next;

    for (c = pool->cleanup; c; c = c->next) {
        if (c->handler) {
            c->handler(c->data);
        }
    }

    for (b = (ngx_shim_block_t *) pool->large; b; b = next) {
        next = b->next;
        free(b);
    }

    free(pool);
}


void *
ngx_palloc(ngx_pool_t *pool, size_t size)
{
    ngx_shim_block_t *b;

    b = malloc(sizeof(ngx_shim_block_t) + size);
    if (b == NULL) {
        return NULL;
    }

    b->next = (ngx_shim_block_t *) pool->large;
    pool->large = (ngx_pool_large_t *) b;

    return b->data;
}


void *
ngx_pnalloc(ngx_pool_t *pool, size_t size)
{
    return ngx_palloc(pool, size);
}


void *
ngx_pcalloc(ngx_pool_t *pool, size_t size)
{
    void *p;

    p = ngx_palloc(pool, size);
    if (p) {
        memset(p, 0, size);
    }

    return p;
}


ngx_pool_cleanup_t *
ngx_pool_cleanup_add(ngx_pool_t *p, size_t size)
{
    ngx_pool_cleanup_t *c;

    c = ngx_palloc(p, sizeof(ngx_pool_cleanup_t));
    if (c == NULL) {
        return NULL;
    }

    c->data = size ? ngx_palloc(p, size) : NULL;
    c->handler = NULL;
    c->next = p->cleanup;
    p->cleanup = c;

    return c;
}


void *
ngx_array_push(ngx_array_t *a)
{
    void *elts;

    if (a->nelts == a->nalloc) {
        elts = ngx_palloc(a->pool, 2 * a->nalloc * a->size + a->size);
        if (elts == NULL) {
            return NULL;
        }

        memcpy(elts, a->elts, a->nelts * a->size);
        a->elts = elts;
        a->nalloc = 2 * a->nalloc + 1;
    }

    return (u_char *) a->elts + a->size * a->nelts++;
}


/* %V, %s, %i, %ui, %uL, %d, %Z and %%: what the module's formats use */

u_char *
ngx_vslprintf(u_char *buf, u_char *last, const char *fmt, va_list args)
{
    int         n;
    size_t      len;
    ngx_str_t  *v;
    const char *s;

    while (*fmt && buf < last) {
        if (*fmt != '%') {
            *buf++ = *fmt++;
            continue;
        }

        fmt++;
        len = 0;
        n = 0;

        switch (*fmt++) {
        case 'V':
            v = va_arg(args, ngx_str_t *);
            len = ngx_min((size_t) (last - buf), v->len);
            memcpy(buf, v->data, len);
            break;
        case 's':
            s = va_arg(args, const char *);
            len = ngx_min((size_t) (last - buf), strlen(s));
            memcpy(buf, s, len);
            break;
        case 'i':
            n = snprintf((char *) buf, last - buf, "%ld",
                         (long) va_arg(args, ngx_int_t));
            break;
        case 'd':
            n = snprintf((char *) buf, last - buf, "%d", va_arg(args, int));
            break;
        case 'u':
            if (*fmt == 'L') {
                n = snprintf((char *) buf, last - buf, "%llu",
                             (unsigned long long) va_arg(args, uint64_t));
            } else {
                n = snprintf((char *) buf, last - buf, "%lu",
                             (unsigned long) va_arg(args, ngx_uint_t));
            }
            fmt++;
            break;
        case 'Z':
            *buf = '\0';
            len = 1;
            break;
        case '%':
            *buf = '%';
            len = 1;
            break;
        default:
            abort(); /* a conversion the shim does not know */
        }

        buf += len + ngx_min((size_t) n, (size_t) (last - buf - len));
    }

    return buf;
}


u_char *ngx_cdecl
ngx_sprintf(u_char *buf, const char *fmt, ...)
{
    u_char *p;
    va_list args;

    va_start(args, fmt);
    p = ngx_vslprintf(buf, (void *) -1, fmt, args);
    va_end(args);

    return p;
}


u_char *ngx_cdecl
ngx_snprintf(u_char *buf, size_t max, const char *fmt, ...)
{
    u_char *p;
    va_list args;

    va_start(args, fmt);
    p = ngx_vslprintf(buf, buf + max, fmt, args);
    va_end(args);

    return p;
}


void ngx_cdecl
ngx_conf_log_error(ngx_uint_t level, ngx_conf_t *cf, ngx_err_t err,
                   const char *fmt, ...)
{
    u_char  errstr[NGX_MAX_CONF_ERRSTR];
    va_list args;

    va_start(args, fmt);
    ngx_vslprintf(errstr, errstr + sizeof(errstr), fmt, args);
    va_end(args);
}


void ngx_cdecl
ngx_log_error_core(ngx_uint_t level, ngx_log_t *log, ngx_err_t err,
                   const char *fmt, ...)
{
    u_char  errstr[NGX_MAX_ERROR_STR];
    va_list args;

    va_start(args, fmt);
    ngx_vslprintf(errstr, errstr + sizeof(errstr), fmt, args);
    va_end(args);
}


ngx_int_t
ngx_strncasecmp(u_char *s1, u_char *s2, size_t n)
{
    return strncasecmp((char *) s1, (char *) s2, n);
}


ngx_int_t
ngx_atoi(u_char *line, size_t n)
{
    ngx_int_t value;

    if (n == 0) {
        return NGX_ERROR;
    }

    for (value = 0; n--; line++) {
        if (*line < '0' || *line > '9' || value >= NGX_MAX_INT_T_VALUE / 10) {
            return NGX_ERROR;
        }

        value = value * 10 + (*line - '0');
    }

    return value;
}


/* base64url without padding, as nginx's own */

static const u_char ngx_shim_b64url[]
    = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";


void
ngx_encode_base64url(ngx_str_t *dst, ngx_str_t *src)
{
    u_char *d, *s;
    size_t  len;

    len = src->len;
    s = src->data;
    d = dst->data;

    while (len > 2) {
        *d++ = ngx_shim_b64url[(s[0] >> 2) & 0x3f];
        *d++ = ngx_shim_b64url[((s[0] & 3) << 4) | (s[1] >> 4)];
        *d++ = ngx_shim_b64url[((s[1] & 0x0f) << 2) | (s[2] >> 6)];
        *d++ = ngx_shim_b64url[s[2] & 0x3f];
        s += 3;
        len -= 3;
    }

    if (len) {
        *d++ = ngx_shim_b64url[(s[0] >> 2) & 0x3f];

        if (len == 1) {
            *d++ = ngx_shim_b64url[(s[0] & 3) << 4];

        } else {
            *d++ = ngx_shim_b64url[((s[0] & 3) << 4) | (s[1] >> 4)];
            *d++ = ngx_shim_b64url[(s[1] & 0x0f) << 2];
        }
    }

    dst->len = d - dst->data;
}


ngx_int_t
ngx_decode_base64url(ngx_str_t *dst, ngx_str_t *src)
{
    size_t  i, n, bits;
    u_char *d, *c;

    d = dst->data;
    n = 0;
    bits = 0;

    if (src->len % 4 == 1) {
        return NGX_ERROR;
    }

    for (i = 0; i < src->len; i++) {
        c = (u_char *) strchr((char *) ngx_shim_b64url, src->data[i]);
        if (src->data[i] == '\0' || c == NULL) {
            return NGX_ERROR;
        }

        bits = (bits << 6) | (size_t) (c - ngx_shim_b64url);
        n += 6;

        if (n >= 8) {
            n -= 8;
            *d++ = (u_char) (bits >> n);
        }
    }

    dst->len = d - dst->data;

    return NGX_OK;
}


/* insertion sort, as nginx's own */

void
ngx_sort(void *base, size_t n, size_t size,
         ngx_int_t (*cmp)(const void *, const void *))
{
    u_char *p1, *p2, *p;

    p = malloc(size);
    if (p == NULL) {
        abort();
    }

    for (p1 = (u_char *) base + size; p1 < (u_char *) base + n * size;
         p1 += size) {
        memcpy(p, p1, size);

        for (p2 = p1; p2 > (u_char *) base && cmp(p2 - size, p) > 0;
             p2 -= size) {
            memcpy(p2, p2 - size, size);
        }

        memcpy(p2, p, size);
    }

    free(p);
}


ngx_int_t
ngx_regex_compile(ngx_regex_compile_t *rc)
{
    int        errcode;
    PCRE2_SIZE erroff;

    rc->regex = pcre2_compile(rc->pattern.data, rc->pattern.len, 0, &errcode,
                              &erroff, NULL);
    if (rc->regex == NULL) {
        rc->err.len
            = pcre2_get_error_message(errcode, rc->err.data, rc->err.len);
        return NGX_ERROR;
    }

    return NGX_OK;
}


ngx_int_t
ngx_regex_exec(ngx_regex_t *re, ngx_str_t *s, int *captures, ngx_uint_t size)
{
    int               rc;
    pcre2_match_data *md;

    md = pcre2_match_data_create_from_pattern(re, NULL);
    if (md == NULL) {
        return NGX_ERROR;
    }

    rc = pcre2_match(re, s->data, s->len, 0, 0, md, NULL);
    pcre2_match_data_free(md);

    return rc;
}


/*
 * A target that includes a whole module file links its request handlers
 * and directive handlers too; they are never called, and abort if they
 * are.
 */

void
ngx_http_finalize_request(ngx_http_request_t *r, ngx_int_t rc)
{
    abort();
}


ngx_int_t
ngx_http_send_header(ngx_http_request_t *r)
{
    abort();
}


ngx_int_t
ngx_http_discard_request_body(ngx_http_request_t *r)
{
    abort();
}


ngx_int_t
ngx_http_ragnx_finish_error(ngx_http_request_t *r, ngx_uint_t status,
                            const char *error, json_t *details)
{
    abort();
}


void *
ngx_list_push(ngx_list_t *l)
{
    abort();
}


ngx_array_t *
ngx_array_create(ngx_pool_t *p, ngx_uint_t n, size_t size)
{
    abort();
}


char *
ngx_conf_set_flag_slot(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    abort();
}


char *
ngx_conf_set_sec_slot(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    abort();
}


uint32_t
ngx_murmur_hash2(u_char *data, size_t len)
{
    abort();
}


u_char *
ngx_strnstr(u_char *s1, char *s2, size_t n)
{
    abort();
}


ssize_t
ngx_read_file(ngx_file_t *file, u_char *buf, size_t size, off_t offset)
{
    abort();
}


ngx_int_t
ngx_conf_full_name(ngx_cycle_t *cycle, ngx_str_t *name, ngx_uint_t conf_prefix)
{
    abort();
}


char *
ngx_conf_set_str_slot(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    abort();
}


ngx_http_variable_t *
ngx_http_add_variable(ngx_conf_t *cf, ngx_str_t *name, ngx_uint_t flags)
{
    abort();
}


ngx_int_t
ngx_http_parse_multi_header_lines(ngx_array_t *headers, ngx_str_t *name,
                                  ngx_str_t *value)
{
    abort();
}
