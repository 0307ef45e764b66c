
/*
 * ragnx: fuzz target of the JWT checks
 * (ngx_module/ngx_http_ragnx_jwt_module.c, included whole for its static
 * functions) with HS256, an issuer, an audience and a subject required.
 * Each input is verified as a token; read as a JSON header, checked as
 * one; and read as a JSON payload, signed with the configured key and
 * verified, so that the claims are checked past the signature.  A token
 * accepted must hold an "exp" to come, the issuer, the audience and a
 * subject.
 */


#include "../../ngx_module/ngx_http_ragnx_jwt_module.c"

#include <openssl/hmac.h>


#define NOW 1700000000

static ngx_time_t                    now = {.sec = NOW};
static ngx_flag_t                    subject = 1;
static ngx_http_ragnx_jwt_loc_conf_t jlcf;


int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
    ngx_cached_time = &now;

    jlcf.enable = 1;
    jlcf.alg = &ngx_http_ragnx_jwt_algs[0];
    ngx_str_set(&jlcf.key, "0123456789abcdef0123456789abcdef");
    ngx_str_set(&jlcf.issuer, "ragnx");
    ngx_str_set(&jlcf.audience, "ragnx-api");
    jlcf.leeway = 30;
    jlcf.subject = &subject;

    return 0;
}


static ngx_int_t
verify(const u_char *token, size_t len, json_t **claims)
{
    char                    *detail;
    ngx_int_t                rc;
    ngx_str_t                t;
    ngx_pool_t              *pool;
    ngx_http_request_t       r;
    ngx_http_ragnx_jwt_ctx_t ctx;
    static ngx_log_t         log;

    pool = ngx_create_pool(1024, &log);
    if (pool == NULL) {
        abort();
    }

    /* a copy of exactly len bytes, so that ASan sees any overread */
    t.len = len;
    t.data = ngx_pnalloc(pool, len ? len : 1);
    memcpy(t.data, token, len);

    ngx_memzero(&r, sizeof(ngx_http_request_t));
    ngx_memzero(&ctx, sizeof(ngx_http_ragnx_jwt_ctx_t));
    r.pool = pool;
    detail = NULL;

    rc = ngx_http_ragnx_jwt_verify(&r, &jlcf, &t, &ctx, &detail);

    if (rc == NGX_ERROR || (rc != NGX_HTTP_RAGNX_JWT_OK && detail == NULL)) {
        abort(); /* no memory is never the answer here; a refusal says why */
    }

    *claims = ctx.claims;
    ngx_destroy_pool(pool);

    return rc;
}


static void
accepted(json_t *claims)
{
    json_t *exp, *aud, *v;
    size_t  i;
    int     found;

    exp = json_object_get(claims, "exp");
    aud = json_object_get(claims, "aud");

    found = json_is_string(aud)
            && strcmp(json_string_value(aud), "ragnx-api") == 0;

    json_array_foreach(aud, i, v)
    {
        found |= json_is_string(v)
                 && json_string_length(v) == sizeof("ragnx-api") - 1
                 && memcmp(json_string_value(v), "ragnx-api", 9) == 0;
    }

    if (!json_is_number(exp) || json_number_value(exp) <= NOW - 30
        || !json_is_string(json_object_get(claims, "iss"))
        || strcmp(json_string_value(json_object_get(claims, "iss")), "ragnx")
               != 0
        || !found || json_string_length(json_object_get(claims, "sub")) == 0) {
        abort();
    }
}


static size_t
b64url(const u_char *in, size_t len, u_char *out)
{
    ngx_str_t src, dst;

    src.data = (u_char *) in;
    src.len = len;
    dst.data = out;
    ngx_encode_base64url(&dst, &src);

    return dst.len;
}


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char         *detail;
    u_char       *token, *p, mac[EVP_MAX_MD_SIZE];
    json_t       *claims, *o;
    ngx_str_t     s;
    unsigned int  maclen;
    static u_char head[] = "{\"alg\":\"HS256\",\"typ\":\"JWT\"}";

    /* the input as a token */

    claims = NULL;
    if (verify(data, size, &claims) == NGX_HTTP_RAGNX_JWT_OK) {
        accepted(claims);
    }

    json_decref(claims);

    /* the input as a header */

    s.data = (u_char *) data;
    s.len = size;
    o = ngx_http_ragnx_jwt_parse_object(&s);

    if (o == NULL) {
        return 0;
    }

    detail = NULL;
    if (ngx_http_ragnx_jwt_check_header(&jlcf, o, &detail) != NGX_OK
        && detail == NULL) {
        abort();
    }

    json_decref(o);

    /* the input as a payload, signed */

    token = malloc(ngx_base64_encoded_length(sizeof(head) + size)
                   + ngx_base64_encoded_length(EVP_MAX_MD_SIZE) + 2);
    if (token == NULL) {
        abort();
    }

    p = token + b64url(head, sizeof(head) - 1, token);
    *p++ = '.';
    p += b64url(data, size, p);

    if (HMAC(EVP_sha256(), jlcf.key.data, (int) jlcf.key.len, token, p - token,
             mac, &maclen)
        == NULL) {
        abort();
    }

    *p++ = '.';
    p += b64url(mac, maclen, p);

    claims = NULL;
    if (verify(token, p - token, &claims) == NGX_HTTP_RAGNX_JWT_OK) {
        accepted(claims);
    }

    json_decref(claims);
    free(token);

    return 0;
}
