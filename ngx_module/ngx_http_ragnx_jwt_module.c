
/*
 * ragnx jwt: bearer token authentication in the access phase.  Owns the
 * ragnx_jwt_* directives, the key material (read and type-checked at
 * configuration time), the checks done on a token before libjwt sees it
 * (the algorithm is pinned by configuration, never taken from the token),
 * the registered claims, and the $ragnx_jwt_sub / $ragnx_jwt_claim_<name>
 * variables.
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include <jwt.h>
#include <jansson.h>
#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "ngx_http_ragnx.h"
#include "ngx_http_ragnx_metrics.h"
#include "ragnx_keyfile.h"


/* a token longer than this is refused before anything is decoded */
#define NGX_HTTP_RAGNX_JWT_MAX_TOKEN     8192

/* a key file larger than this is surely not a key */
#define NGX_HTTP_RAGNX_JWT_MAX_KEY       65536

#define NGX_HTTP_RAGNX_JWT_HMAC          0

/* verified tokens remembered per worker (a power of two), and the
 * longest token worth remembering */
#define NGX_HTTP_RAGNX_JWT_CACHE_SLOTS   1024
#define NGX_HTTP_RAGNX_JWT_CACHE_TOKEN   2048


/* why a token was refused; indexes ngx_http_ragnx_jwt_errors[] */
#define NGX_HTTP_RAGNX_JWT_OK            0
#define NGX_HTTP_RAGNX_JWT_MISSING       1
#define NGX_HTTP_RAGNX_JWT_INVALID       2
#define NGX_HTTP_RAGNX_JWT_EXPIRED       3
#define NGX_HTTP_RAGNX_JWT_NOT_YET       4
#define NGX_HTTP_RAGNX_JWT_ISSUER        5
#define NGX_HTTP_RAGNX_JWT_AUDIENCE      6


typedef struct {
    ngx_str_t                    name;
    jwt_alg_t                    alg;
    int                          key_type;
    ngx_uint_t                   bits;
} ngx_http_ragnx_jwt_alg_t;


/*
 * "file" and "line" say where the "ragnx_jwt" in effect was set, and
 * "key_conf_file" and "key_conf_line" where "ragnx_jwt_key_file" was, so
 * that a mistake found when they meet (perhaps levels apart) names them.
 * "need_sub" is set by the configuration check of a location whose
 * handler needs the token's "sub" (ngx_http_ragnx_jwt_require_subject());
 * "subject" points to it, or, in an "if" or "limit_except" block (whose
 * configuration a request may be served with), to that of the location
 * the block is in.
 */
typedef struct {
    ngx_flag_t                   enable;
    ngx_http_ragnx_jwt_alg_t    *alg;
    ngx_str_t                    key_file;
    ngx_str_t                    key;
    ngx_str_t                    issuer;
    ngx_str_t                    audience;
    time_t                       leeway;
    ngx_str_t                    cookie;
    ngx_flag_t                   need_sub;
    ngx_flag_t                  *subject;
    u_char                      *file;
    ngx_uint_t                   line;
    u_char                      *key_conf_file;
    ngx_uint_t                   key_conf_line;
} ngx_http_ragnx_jwt_loc_conf_t;


/*
 * Per request, once a token is found.  "claims" is its payload: a pool
 * cleanup owns the reference and finds the context again after an
 * internal redirect has reset it.  "sub" points into "claims"; neither
 * is looked at unless "verified" is set.
 */
typedef struct {
    json_t                      *claims;
    ngx_str_t                    sub;
    unsigned                     verified:1;
} ngx_http_ragnx_jwt_ctx_t;


/*
 * A token whose signature and shape were verified once, for the location
 * configuration that verified it.  Only the signature work is skipped on a
 * hit: the whole token is compared byte for byte and every claim (exp and
 * nbf with the current time) is checked again.  Per worker, never shared;
 * a reload starts new workers with an empty cache, so a rotated key never
 * meets a token verified with the old one.
 */
typedef struct {
    void                        *conf;
    u_char                      *token;
    size_t                       len;
    json_t                      *claims;
} ngx_http_ragnx_jwt_cached_t;


static ngx_int_t ngx_http_ragnx_jwt_handler(ngx_http_request_t *r);
static ngx_http_ragnx_jwt_cached_t *ngx_http_ragnx_jwt_cache_slot(
    ngx_http_ragnx_jwt_loc_conf_t *jlcf, ngx_str_t *token, ngx_uint_t *hit);
static void ngx_http_ragnx_jwt_cache_put(ngx_http_ragnx_jwt_cached_t *c,
    ngx_http_ragnx_jwt_loc_conf_t *jlcf, ngx_str_t *token, json_t *claims);
static void ngx_http_ragnx_jwt_exit_process(ngx_cycle_t *cycle);
static ngx_int_t ngx_http_ragnx_jwt_token(ngx_http_request_t *r,
    ngx_http_ragnx_jwt_loc_conf_t *jlcf, ngx_str_t *token);
static ngx_int_t ngx_http_ragnx_jwt_verify(ngx_http_request_t *r,
    ngx_http_ragnx_jwt_loc_conf_t *jlcf, ngx_str_t *token,
    ngx_http_ragnx_jwt_ctx_t *ctx, char **detail);
static ngx_int_t ngx_http_ragnx_jwt_check_header(
    ngx_http_ragnx_jwt_loc_conf_t *jlcf, json_t *header, char **detail);
static ngx_int_t ngx_http_ragnx_jwt_check_signature(ngx_http_request_t *r,
    ngx_http_ragnx_jwt_loc_conf_t *jlcf, ngx_str_t *token, char **detail);
static ngx_int_t ngx_http_ragnx_jwt_check_claims(
    ngx_http_ragnx_jwt_loc_conf_t *jlcf, json_t *claims, char **detail);
static ngx_int_t ngx_http_ragnx_jwt_time_claim(json_t *claims,
    const char *name, double *t);
static ngx_int_t ngx_http_ragnx_jwt_decode_part(ngx_pool_t *pool,
    ngx_str_t *part, ngx_str_t *dst);
static json_t *ngx_http_ragnx_jwt_parse_object(ngx_str_t *json);
static ngx_int_t ngx_http_ragnx_jwt_reject(ngx_http_request_t *r,
    ngx_uint_t reason);
static void ngx_http_ragnx_jwt_cleanup(void *data);
static ngx_http_ragnx_jwt_ctx_t *ngx_http_ragnx_jwt_get_ctx(
    ngx_http_request_t *r);

static ngx_int_t ngx_http_ragnx_jwt_sub_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data);
static ngx_int_t ngx_http_ragnx_jwt_claim_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data);

static ngx_int_t ngx_http_ragnx_jwt_add_variables(ngx_conf_t *cf);
static void *ngx_http_ragnx_jwt_create_loc_conf(ngx_conf_t *cf);
static char *ngx_http_ragnx_jwt_merge_loc_conf(ngx_conf_t *cf, void *parent,
    void *child);
static char *ngx_http_ragnx_jwt_check_key(ngx_conf_t *cf,
    ngx_http_ragnx_jwt_loc_conf_t *jlcf);
static ngx_int_t ngx_http_ragnx_jwt_init(ngx_conf_t *cf);
static char *ngx_http_ragnx_jwt(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_http_ragnx_jwt_alg(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_http_ragnx_jwt_key_file(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static void ngx_http_ragnx_jwt_key_cleanup(void *data);


static ngx_command_t  ngx_http_ragnx_jwt_commands[] = {

    { ngx_string("ragnx_jwt"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_FLAG,
      ngx_http_ragnx_jwt,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_ragnx_jwt_loc_conf_t, enable),
      NULL },

    { ngx_string("ragnx_jwt_key_file"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_http_ragnx_jwt_key_file,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("ragnx_jwt_alg"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_http_ragnx_jwt_alg,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("ragnx_jwt_issuer"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_str_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_ragnx_jwt_loc_conf_t, issuer),
      NULL },

    { ngx_string("ragnx_jwt_audience"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_str_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_ragnx_jwt_loc_conf_t, audience),
      NULL },

    { ngx_string("ragnx_jwt_leeway"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_sec_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_ragnx_jwt_loc_conf_t, leeway),
      NULL },

    { ngx_string("ragnx_jwt_cookie"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_str_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_ragnx_jwt_loc_conf_t, cookie),
      NULL },

      ngx_null_command
};


static ngx_http_module_t  ngx_http_ragnx_jwt_module_ctx = {
    ngx_http_ragnx_jwt_add_variables,      /* preconfiguration */
    ngx_http_ragnx_jwt_init,               /* postconfiguration */

    NULL,                                  /* create main configuration */
    NULL,                                  /* init main configuration */

    NULL,                                  /* create server configuration */
    NULL,                                  /* merge server configuration */

    ngx_http_ragnx_jwt_create_loc_conf,    /* create location configuration */
    ngx_http_ragnx_jwt_merge_loc_conf      /* merge location configuration */
};


ngx_module_t  ngx_http_ragnx_jwt_module = {
    NGX_MODULE_V1,
    &ngx_http_ragnx_jwt_module_ctx,        /* module context */
    ngx_http_ragnx_jwt_commands,           /* module directives */
    NGX_HTTP_MODULE,                       /* module type */
    NULL,                                  /* init master */
    NULL,                                  /* init module */
    NULL,                                  /* init process */
    NULL,                                  /* init thread */
    NULL,                                  /* exit thread */
    ngx_http_ragnx_jwt_exit_process,       /* exit process */
    NULL,                                  /* exit master */
    NGX_MODULE_V1_PADDING
};


/*
 * "bits" is the minimum HMAC secret size (RFC 7518, 3.2: at least the
 * hash size), the minimum RSA modulus size, or the exact EC curve size.
 */

static ngx_http_ragnx_jwt_alg_t  ngx_http_ragnx_jwt_algs[] = {
    { ngx_string("HS256"), JWT_ALG_HS256, NGX_HTTP_RAGNX_JWT_HMAC, 256 },
    { ngx_string("HS384"), JWT_ALG_HS384, NGX_HTTP_RAGNX_JWT_HMAC, 384 },
    { ngx_string("HS512"), JWT_ALG_HS512, NGX_HTTP_RAGNX_JWT_HMAC, 512 },
    { ngx_string("RS256"), JWT_ALG_RS256, EVP_PKEY_RSA, 2048 },
    { ngx_string("RS384"), JWT_ALG_RS384, EVP_PKEY_RSA, 2048 },
    { ngx_string("RS512"), JWT_ALG_RS512, EVP_PKEY_RSA, 2048 },
    { ngx_string("ES256"), JWT_ALG_ES256, EVP_PKEY_EC, 256 },
    { ngx_string("ES384"), JWT_ALG_ES384, EVP_PKEY_EC, 384 },
    { ngx_string("ES512"), JWT_ALG_ES512, EVP_PKEY_EC, 521 },
    { ngx_null_string, JWT_ALG_NONE, 0, 0 }
};


static const char  *ngx_http_ragnx_jwt_errors[] = {
    "",
    "missing token",
    "invalid token",
    "token expired",
    "token not yet valid",
    "invalid issuer",
    "invalid audience"
};


static ngx_http_variable_t  ngx_http_ragnx_jwt_vars[] = {

    { ngx_string("ragnx_jwt_sub"), NULL,
      ngx_http_ragnx_jwt_sub_variable, 0, NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("ragnx_jwt_claim_"), NULL,
      ngx_http_ragnx_jwt_claim_variable, 0,
      NGX_HTTP_VAR_NOCACHEABLE|NGX_HTTP_VAR_PREFIX, 0 },

      ngx_http_null_variable
};


static ngx_int_t
ngx_http_ragnx_jwt_handler(ngx_http_request_t *r)
{
    char                           *detail;
    ngx_uint_t                      hit;
    ngx_http_ragnx_jwt_cached_t    *cached;
    json_t                         *sub;
    ngx_int_t                       rc;
    ngx_str_t                       token;
    ngx_pool_cleanup_t             *cln;
    ngx_http_ragnx_jwt_ctx_t       *ctx;
    ngx_http_ragnx_jwt_loc_conf_t  *jlcf;

    jlcf = ngx_http_get_module_loc_conf(r, ngx_http_ragnx_jwt_module);

    if (!jlcf->enable) {
        return NGX_DECLINED;
    }

    /*
     * An internal redirect resets the context, so a location reached that
     * way checks the token again, against its own configuration.
     */

    ctx = ngx_http_get_module_ctx(r, ngx_http_ragnx_jwt_module);

    if (ctx) {
        return NGX_OK;
    }

    if (ngx_http_ragnx_jwt_token(r, jlcf, &token) != NGX_OK) {
        ngx_log_debug0(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                       "ragnx jwt: no token");

        return ngx_http_ragnx_jwt_reject(r, NGX_HTTP_RAGNX_JWT_MISSING);
    }

    ctx = ngx_pcalloc(r->pool, sizeof(ngx_http_ragnx_jwt_ctx_t));
    if (ctx == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    cln = ngx_pool_cleanup_add(r->pool, 0);
    if (cln == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    cln->handler = ngx_http_ragnx_jwt_cleanup;
    cln->data = ctx;

    detail = NULL;

    cached = ngx_http_ragnx_jwt_cache_slot(jlcf, &token, &hit);

    if (hit) {
        ctx->claims = json_incref(cached->claims);
        rc = ngx_http_ragnx_jwt_check_claims(jlcf, ctx->claims, &detail);

    } else {
        rc = ngx_http_ragnx_jwt_verify(r, jlcf, &token, ctx, &detail);

        if (rc == NGX_HTTP_RAGNX_JWT_OK && cached) {
            ngx_http_ragnx_jwt_cache_put(cached, jlcf, &token, ctx->claims);
        }
    }

    if (rc == NGX_ERROR) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (rc != NGX_HTTP_RAGNX_JWT_OK) {
        ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                      "ragnx jwt: token rejected: %s", detail);

        return ngx_http_ragnx_jwt_reject(r, rc);
    }

    sub = json_object_get(ctx->claims, "sub");

    if (json_is_string(sub)) {
        ctx->sub.data = (u_char *) json_string_value(sub);
        ctx->sub.len = json_string_length(sub);
    }

    ctx->verified = 1;

    ngx_http_set_ctx(r, ctx, ngx_http_ragnx_jwt_module);

    ngx_log_debug1(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "ragnx jwt: accepted, sub \"%V\"", &ctx->sub);

    return NGX_OK;
}


static ngx_http_ragnx_jwt_cached_t  *ngx_http_ragnx_jwt_cache;


/*
 * The slot a token maps to; *hit when it holds this very token for this
 * configuration, else it is the slot to fill once the token is verified.
 * NULL when the token is too long to remember or memory is short.
 */

static ngx_http_ragnx_jwt_cached_t *
ngx_http_ragnx_jwt_cache_slot(ngx_http_ragnx_jwt_loc_conf_t *jlcf,
    ngx_str_t *token, ngx_uint_t *hit)
{
    uint32_t                      hash;
    ngx_http_ragnx_jwt_cached_t  *c;

    *hit = 0;

    if (token->len == 0 || token->len > NGX_HTTP_RAGNX_JWT_CACHE_TOKEN) {
        return NULL;
    }

    if (ngx_http_ragnx_jwt_cache == NULL) {
        ngx_http_ragnx_jwt_cache = ngx_calloc(NGX_HTTP_RAGNX_JWT_CACHE_SLOTS
                                       * sizeof(ngx_http_ragnx_jwt_cached_t),
                                       ngx_cycle->log);
        if (ngx_http_ragnx_jwt_cache == NULL) {
            return NULL;
        }
    }

    hash = ngx_murmur_hash2(token->data, token->len);
    c = &ngx_http_ragnx_jwt_cache[hash & (NGX_HTTP_RAGNX_JWT_CACHE_SLOTS - 1)];

    *hit = (c->claims != NULL
            && c->conf == jlcf
            && c->len == token->len
            && ngx_memcmp(c->token, token->data, token->len) == 0);

    return c;
}


static void
ngx_http_ragnx_jwt_cache_put(ngx_http_ragnx_jwt_cached_t *c,
    ngx_http_ragnx_jwt_loc_conf_t *jlcf, ngx_str_t *token, json_t *claims)
{
    if (c->token == NULL) {
        c->token = ngx_alloc(NGX_HTTP_RAGNX_JWT_CACHE_TOKEN, ngx_cycle->log);
        if (c->token == NULL) {
            return;
        }
    }

    if (c->claims) {
        json_decref(c->claims);
    }

    ngx_memcpy(c->token, token->data, token->len);

    c->conf = jlcf;
    c->len = token->len;
    c->claims = json_incref(claims);
}


static void
ngx_http_ragnx_jwt_exit_process(ngx_cycle_t *cycle)
{
    ngx_uint_t  i;

    if (ngx_http_ragnx_jwt_cache == NULL) {
        return;
    }

    for (i = 0; i < NGX_HTTP_RAGNX_JWT_CACHE_SLOTS; i++) {
        if (ngx_http_ragnx_jwt_cache[i].claims) {
            json_decref(ngx_http_ragnx_jwt_cache[i].claims);
        }

        if (ngx_http_ragnx_jwt_cache[i].token) {
            ngx_free(ngx_http_ragnx_jwt_cache[i].token);
        }
    }

    ngx_free(ngx_http_ragnx_jwt_cache);
    ngx_http_ragnx_jwt_cache = NULL;
}


/*
 * The token from "Authorization: Bearer <token>" (scheme case-insensitive),
 * else from the configured cookie.  An Authorization header with another
 * scheme is not ours: the cookie is tried and, failing that, the request
 * counts as carrying no token.
 */

static ngx_int_t
ngx_http_ragnx_jwt_token(ngx_http_request_t *r,
    ngx_http_ragnx_jwt_loc_conf_t *jlcf, ngx_str_t *token)
{
    u_char           *p, *last;
    ngx_table_elt_t  *h;

    h = r->headers_in.authorization;

    if (h != NULL
        && h->value.len >= sizeof("Bearer") - 1
        && ngx_strncasecmp(h->value.data, (u_char *) "Bearer",
                           sizeof("Bearer") - 1) == 0)
    {
        p = h->value.data + sizeof("Bearer") - 1;
        last = h->value.data + h->value.len;

        if (p == last || *p == ' ') {

            while (p < last && *p == ' ') {
                p++;
            }

            token->data = p;
            token->len = last - p;

            return NGX_OK;
        }
    }

    if (jlcf->cookie.len
        && ngx_http_parse_multi_header_lines(&r->headers_in.cookies,
                                             &jlcf->cookie, token)
           != NGX_DECLINED)
    {
        return NGX_OK;
    }

    return NGX_DECLINED;
}


/*
 * Everything a token must pass, cheapest first.  libjwt 1.10 believes the
 * token's own "alg" and decodes base64 leniently, so the shape of the
 * token and its header are checked here before libjwt sees it: exactly
 * three canonical base64url parts, a header object without duplicate
 * keys whose "alg" is the configured one.  Only then is the signature
 * checked, and only a verified payload has its claims looked at.
 *
 * Returns NGX_HTTP_RAGNX_JWT_OK with ctx->claims set, a refusal reason
 * with *detail set for the log, or NGX_ERROR.  Once parsed, the payload
 * is ctx->claims whatever the outcome, so the pool cleanup frees it.
 */

static ngx_int_t
ngx_http_ragnx_jwt_verify(ngx_http_request_t *r,
    ngx_http_ragnx_jwt_loc_conf_t *jlcf, ngx_str_t *token,
    ngx_http_ragnx_jwt_ctx_t *ctx, char **detail)
{
    u_char     *p, *dot1, *dot2, *last;
    json_t     *header, *payload;
    ngx_int_t   rc;
    ngx_str_t   part, json;

    if (token->len == 0) {
        *detail = "empty token";
        return NGX_HTTP_RAGNX_JWT_INVALID;
    }

    if (token->len > NGX_HTTP_RAGNX_JWT_MAX_TOKEN) {
        *detail = "token too large";
        return NGX_HTTP_RAGNX_JWT_INVALID;
    }

    p = token->data;
    last = p + token->len;

    dot1 = ngx_strlchr(p, last, '.');
    dot2 = dot1 ? ngx_strlchr(dot1 + 1, last, '.') : NULL;

    if (dot2 == NULL || ngx_strlchr(dot2 + 1, last, '.') != NULL) {
        *detail = "token does not have three parts";
        return NGX_HTTP_RAGNX_JWT_INVALID;
    }

    /* the signature: canonical base64url, not empty ("alg":"none") */

    part.data = dot2 + 1;
    part.len = last - part.data;

    rc = ngx_http_ragnx_jwt_decode_part(NULL, &part, NULL);

    if (rc != NGX_OK) {
        *detail = "signature is not canonical base64url";
        return NGX_HTTP_RAGNX_JWT_INVALID;
    }

    /* the header */

    part.data = p;
    part.len = dot1 - p;

    rc = ngx_http_ragnx_jwt_decode_part(r->pool, &part, &json);

    if (rc != NGX_OK) {
        if (rc == NGX_ERROR) {
            return NGX_ERROR;
        }

        *detail = "header is not canonical base64url";
        return NGX_HTTP_RAGNX_JWT_INVALID;
    }

    header = ngx_http_ragnx_jwt_parse_object(&json);

    if (header == NULL) {
        *detail = "header is not a JSON object without duplicate keys";
        return NGX_HTTP_RAGNX_JWT_INVALID;
    }

    rc = ngx_http_ragnx_jwt_check_header(jlcf, header, detail);

    json_decref(header);

    if (rc != NGX_OK) {
        return NGX_HTTP_RAGNX_JWT_INVALID;
    }

    /* the payload */

    part.data = dot1 + 1;
    part.len = dot2 - part.data;

    rc = ngx_http_ragnx_jwt_decode_part(r->pool, &part, &json);

    if (rc != NGX_OK) {
        if (rc == NGX_ERROR) {
            return NGX_ERROR;
        }

        *detail = "payload is not canonical base64url";
        return NGX_HTTP_RAGNX_JWT_INVALID;
    }

    payload = ngx_http_ragnx_jwt_parse_object(&json);

    if (payload == NULL) {
        *detail = "payload is not a JSON object without duplicate keys";
        return NGX_HTTP_RAGNX_JWT_INVALID;
    }

    ctx->claims = payload;

    rc = ngx_http_ragnx_jwt_check_signature(r, jlcf, token, detail);

    if (rc != NGX_HTTP_RAGNX_JWT_OK) {
        return rc;
    }

    return ngx_http_ragnx_jwt_check_claims(jlcf, payload, detail);
}


static ngx_int_t
ngx_http_ragnx_jwt_check_header(ngx_http_ragnx_jwt_loc_conf_t *jlcf,
    json_t *header, char **detail)
{
    json_t     *alg, *typ;
    ngx_str_t  *name;

    alg = json_object_get(header, "alg");

    if (!json_is_string(alg)) {
        *detail = "header \"alg\" is missing or not a string";
        return NGX_ERROR;
    }

    name = &jlcf->alg->name;

    if (json_string_length(alg) != name->len
        || ngx_strncmp(json_string_value(alg), name->data, name->len) != 0)
    {
        *detail = "header \"alg\" is not the configured algorithm";
        return NGX_ERROR;
    }

    typ = json_object_get(header, "typ");

    if (typ != NULL
        && (!json_is_string(typ)
            || json_string_length(typ) != sizeof("JWT") - 1
            || ngx_strncasecmp((u_char *) json_string_value(typ),
                               (u_char *) "JWT", sizeof("JWT") - 1)
               != 0))
    {
        *detail = "header \"typ\" is not \"JWT\"";
        return NGX_ERROR;
    }

    /* RFC 7515, 4.1.11: no extension is understood here */

    if (json_object_get(header, "crit") != NULL) {
        *detail = "header has \"crit\"";
        return NGX_ERROR;
    }

    return NGX_OK;
}


static ngx_int_t
ngx_http_ragnx_jwt_check_signature(ngx_http_request_t *r,
    ngx_http_ragnx_jwt_loc_conf_t *jlcf, ngx_str_t *token, char **detail)
{
    int        err;
    u_char    *s;
    jwt_t     *jwt;
    jwt_alg_t  alg;

    /* libjwt wants a C string; a cookie value is not one */

    s = ngx_pnalloc(r->pool, token->len + 1);
    if (s == NULL) {
        return NGX_ERROR;
    }

    ngx_memcpy(s, token->data, token->len);
    s[token->len] = '\0';

    /*
     * libjwt compares HMACs in constant time and parses a PEM key on each
     * call; the key type was checked against the pinned algorithm at
     * configuration time.
     */

    jwt = NULL;

    err = jwt_decode(&jwt, (char *) s, jlcf->key.data, (int) jlcf->key.len);

    alg = (jwt != NULL) ? jwt_get_alg(jwt) : JWT_ALG_INVAL;

    if (jwt != NULL) {
        jwt_free(jwt);
    }

    if (err != 0) {
        *detail = "signature verification failed";
        return NGX_HTTP_RAGNX_JWT_INVALID;
    }

    if (alg != jlcf->alg->alg) {
        *detail = "verified algorithm is not the configured one";
        return NGX_HTTP_RAGNX_JWT_INVALID;
    }

    return NGX_HTTP_RAGNX_JWT_OK;
}


static ngx_int_t
ngx_http_ragnx_jwt_check_claims(ngx_http_ragnx_jwt_loc_conf_t *jlcf,
    json_t *claims, char **detail)
{
    double      exp, nbf, now, leeway;
    json_t     *iss, *aud, *v, *sub;
    size_t      i;
    ngx_int_t   rc;
    ngx_str_t  *s;

    now = (double) ngx_time();
    leeway = (double) jlcf->leeway;

    rc = ngx_http_ragnx_jwt_time_claim(claims, "exp", &exp);

    if (rc != NGX_OK) {
        *detail = (rc == NGX_DECLINED) ? "no \"exp\" claim"
                                       : "\"exp\" is not a number";
        return NGX_HTTP_RAGNX_JWT_INVALID;
    }

    rc = ngx_http_ragnx_jwt_time_claim(claims, "nbf", &nbf);

    if (rc == NGX_ERROR) {
        *detail = "\"nbf\" is not a number";
        return NGX_HTTP_RAGNX_JWT_INVALID;
    }

    sub = json_object_get(claims, "sub");

    if (sub != NULL && !json_is_string(sub)) {
        *detail = "\"sub\" is not a string";
        return NGX_HTTP_RAGNX_JWT_INVALID;
    }

    if (jlcf->subject && *jlcf->subject && json_string_length(sub) == 0) {
        *detail = "no \"sub\" claim, which this location needs";
        return NGX_HTTP_RAGNX_JWT_INVALID;
    }

    if (now - leeway >= exp) {
        *detail = "token expired";
        return NGX_HTTP_RAGNX_JWT_EXPIRED;
    }

    if (rc == NGX_OK && nbf > now + leeway) {
        *detail = "token not yet valid";
        return NGX_HTTP_RAGNX_JWT_NOT_YET;
    }

    if (jlcf->issuer.len) {
        s = &jlcf->issuer;
        iss = json_object_get(claims, "iss");

        if (!json_is_string(iss)
            || json_string_length(iss) != s->len
            || ngx_strncmp(json_string_value(iss), s->data, s->len) != 0)
        {
            *detail = "\"iss\" is not the configured issuer";
            return NGX_HTTP_RAGNX_JWT_ISSUER;
        }
    }

    if (jlcf->audience.len) {
        s = &jlcf->audience;
        aud = json_object_get(claims, "aud");

        if (json_is_string(aud)) {
            if (json_string_length(aud) == s->len
                && ngx_strncmp(json_string_value(aud), s->data, s->len) == 0)
            {
                return NGX_HTTP_RAGNX_JWT_OK;
            }

        } else if (json_is_array(aud)) {
            json_array_foreach(aud, i, v) {
                if (json_is_string(v)
                    && json_string_length(v) == s->len
                    && ngx_strncmp(json_string_value(v), s->data, s->len)
                       == 0)
                {
                    return NGX_HTTP_RAGNX_JWT_OK;
                }
            }
        }

        *detail = "\"aud\" does not hold the configured audience";
        return NGX_HTTP_RAGNX_JWT_AUDIENCE;
    }

    return NGX_HTTP_RAGNX_JWT_OK;
}


/* NGX_OK with *t, NGX_DECLINED when absent, NGX_ERROR when not a number */

static ngx_int_t
ngx_http_ragnx_jwt_time_claim(json_t *claims, const char *name, double *t)
{
    json_t  *v;

    v = json_object_get(claims, name);

    if (v == NULL) {
        return NGX_DECLINED;
    }

    if (!json_is_number(v)) {
        return NGX_ERROR;
    }

    *t = json_number_value(v);

    return NGX_OK;
}


/*
 * Checks that "part" is canonical base64url (RFC 7515, 2 and appendix C:
 * no padding, no other alphabet, unused bits of the last character zero)
 * and, when "pool" is given, decodes it into "dst".  NGX_DECLINED means
 * not canonical, NGX_ERROR no memory.
 */

static ngx_int_t
ngx_http_ragnx_jwt_decode_part(ngx_pool_t *pool, ngx_str_t *part,
    ngx_str_t *dst)
{
    u_char      c, *p, *last;
    ngx_uint_t  v;

    if (part->len == 0 || part->len % 4 == 1) {
        return NGX_DECLINED;
    }

    v = 0;
    last = part->data + part->len;

    for (p = part->data; p < last; p++) {
        c = *p;

        if (c >= 'A' && c <= 'Z') {
            v = c - 'A';

        } else if (c >= 'a' && c <= 'z') {
            v = c - 'a' + 26;

        } else if (c >= '0' && c <= '9') {
            v = c - '0' + 52;

        } else if (c == '-') {
            v = 62;

        } else if (c == '_') {
            v = 63;

        } else {
            return NGX_DECLINED;
        }
    }

    /* "v" is the last character: 2 or 3 characters left carry 4 or 2 */

    if ((part->len % 4 == 2 && (v & 0x0f))
        || (part->len % 4 == 3 && (v & 0x03)))
    {
        return NGX_DECLINED;
    }

    if (pool == NULL) {
        return NGX_OK;
    }

    dst->data = ngx_pnalloc(pool, ngx_base64_decoded_length(part->len));
    if (dst->data == NULL) {
        return NGX_ERROR;
    }

    if (ngx_decode_base64url(dst, part) != NGX_OK) {
        return NGX_DECLINED;
    }

    return NGX_OK;
}


static json_t *
ngx_http_ragnx_jwt_parse_object(ngx_str_t *json)
{
    json_t        *o;
    json_error_t   err;

    o = json_loadb((char *) json->data, json->len, JSON_REJECT_DUPLICATES,
                   &err);

    if (o != NULL && !json_is_object(o)) {
        json_decref(o);
        return NULL;
    }

    return o;
}


/*
 * With "satisfy all" the refusal is answered here, as JSON; with "satisfy
 * any" nginx decides once every access module has run, so only the
 * challenge is set and 401 returned.
 */

static ngx_int_t
ngx_http_ragnx_jwt_reject(ngx_http_request_t *r, ngx_uint_t reason)
{
    ngx_table_elt_t           *h;
    ngx_http_core_loc_conf_t  *clcf;

    ngx_http_ragnx_metrics_count(jwt[reason]);

    h = ngx_list_push(&r->headers_out.headers);
    if (h == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    h->hash = 1;
    ngx_str_set(&h->key, "WWW-Authenticate");

    if (reason == NGX_HTTP_RAGNX_JWT_MISSING) {
        ngx_str_set(&h->value, "Bearer");

    } else {
        ngx_str_set(&h->value, "Bearer error=\"invalid_token\"");
    }

    r->headers_out.www_authenticate = h;

    clcf = ngx_http_get_module_loc_conf(r, ngx_http_core_module);

    if (clcf->satisfy == NGX_HTTP_SATISFY_ANY) {
        return NGX_HTTP_UNAUTHORIZED;
    }

    return ngx_http_ragnx_finish_error(r, NGX_HTTP_UNAUTHORIZED,
                                       ngx_http_ragnx_jwt_errors[reason],
                                       NULL);
}


static void
ngx_http_ragnx_jwt_cleanup(void *data)
{
    ngx_http_ragnx_jwt_ctx_t  *ctx = data;

    if (ctx->claims) {
        json_decref(ctx->claims);
        ctx->claims = NULL;
    }
}


/*
 * The claims of the token accepted for this request, as realip finds its
 * address: error_page, try_files and named locations reset module
 * contexts, yet the request stays authenticated for its variables, its
 * access log line, and ngx_http_ragnx_jwt_subject().
 */

static ngx_http_ragnx_jwt_ctx_t *
ngx_http_ragnx_jwt_get_ctx(ngx_http_request_t *r)
{
    ngx_pool_cleanup_t        *cln;
    ngx_http_ragnx_jwt_ctx_t  *ctx;

    r = r->main;

    ctx = ngx_http_get_module_ctx(r, ngx_http_ragnx_jwt_module);

    if (ctx == NULL && (r->internal || r->filter_finalize)) {

        for (cln = r->pool->cleanup; cln; cln = cln->next) {
            if (cln->handler == ngx_http_ragnx_jwt_cleanup) {
                ctx = cln->data;

                if (ctx->verified) {
                    return ctx;
                }
            }
        }

        return NULL;
    }

    return ctx;
}


ngx_int_t
ngx_http_ragnx_jwt_subject(ngx_http_request_t *r, ngx_str_t *sub)
{
    ngx_http_ragnx_jwt_ctx_t  *ctx;

    ctx = ngx_http_ragnx_jwt_get_ctx(r);

    if (ctx == NULL || ctx->sub.len == 0) {
        ngx_str_null(sub);
        return NGX_DECLINED;
    }

    *sub = ctx->sub;

    return NGX_OK;
}


ngx_uint_t
ngx_http_ragnx_jwt_enabled(void **loc_conf)
{
    ngx_http_ragnx_jwt_loc_conf_t  *jlcf;

    jlcf = loc_conf[ngx_http_ragnx_jwt_module.ctx_index];

    return jlcf->enable ? 1 : 0;
}


/*
 * A location whose handler needs the subject refuses a token without a
 * non-empty "sub" here, as an invalid token, so the handler never meets
 * an accepted request without one.
 */

void
ngx_http_ragnx_jwt_require_subject(void **loc_conf)
{
    ngx_http_ragnx_jwt_loc_conf_t  *jlcf;

    jlcf = loc_conf[ngx_http_ragnx_jwt_module.ctx_index];

    jlcf->need_sub = 1;
}


static ngx_int_t
ngx_http_ragnx_jwt_sub_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data)
{
    ngx_str_t  sub;

    if (ngx_http_ragnx_jwt_subject(r, &sub) != NGX_OK) {
        v->not_found = 1;
        return NGX_OK;
    }

    v->data = sub.data;
    v->len = sub.len;
    v->valid = 1;
    v->no_cacheable = 0;
    v->not_found = 0;

    return NGX_OK;
}


/*
 * $ragnx_jwt_claim_<name>: strings as they are, numbers and booleans as
 * text, objects and arrays as compact JSON; an absent or null claim is not
 * found.  A string with control characters is not found either, so that a
 * claim cannot split a header it is put into.
 */

static ngx_int_t
ngx_http_ragnx_jwt_claim_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data)
{
    ngx_str_t *name = (ngx_str_t *) data;

    u_char                    *p, *last;
    size_t                     len;
    json_t                    *claim;
    ngx_http_ragnx_jwt_ctx_t  *ctx;

    ctx = ngx_http_ragnx_jwt_get_ctx(r);

    if (ctx == NULL) {
        v->not_found = 1;
        return NGX_OK;
    }

    claim = json_object_getn(ctx->claims,
                             (char *) name->data
                             + sizeof("ragnx_jwt_claim_") - 1,
                             name->len - (sizeof("ragnx_jwt_claim_") - 1));

    if (claim == NULL) {
        v->not_found = 1;
        return NGX_OK;
    }

    switch (json_typeof(claim)) {

    case JSON_STRING:
        p = (u_char *) json_string_value(claim);
        len = json_string_length(claim);

        for (last = p + len; p < last; p++) {
            if ((*p < 0x20 && *p != '\t') || *p == 0x7f) {
                v->not_found = 1;
                return NGX_OK;
            }
        }

        p = (u_char *) json_string_value(claim);
        break;

    case JSON_INTEGER:
        p = ngx_pnalloc(r->pool, NGX_INT64_LEN);
        if (p == NULL) {
            return NGX_ERROR;
        }

        len = ngx_sprintf(p, "%L", (int64_t) json_integer_value(claim)) - p;
        break;

    case JSON_TRUE:
        p = (u_char *) "true";
        len = sizeof("true") - 1;
        break;

    case JSON_FALSE:
        p = (u_char *) "false";
        len = sizeof("false") - 1;
        break;

    case JSON_REAL:
    case JSON_OBJECT:
    case JSON_ARRAY:
        len = json_dumpb(claim, NULL, 0, JSON_COMPACT|JSON_ENCODE_ANY);
        if (len == 0) {
            return NGX_ERROR;
        }

        p = ngx_pnalloc(r->pool, len);
        if (p == NULL) {
            return NGX_ERROR;
        }

        if (json_dumpb(claim, (char *) p, len, JSON_COMPACT|JSON_ENCODE_ANY)
            != len)
        {
            return NGX_ERROR;
        }

        break;

    default: /* JSON_NULL */
        v->not_found = 1;
        return NGX_OK;
    }

    v->data = p;
    v->len = len;
    v->valid = 1;
    v->no_cacheable = 0;
    v->not_found = 0;

    return NGX_OK;
}


static ngx_int_t
ngx_http_ragnx_jwt_add_variables(ngx_conf_t *cf)
{
    ngx_http_variable_t  *var, *v;

    for (v = ngx_http_ragnx_jwt_vars; v->name.len; v++) {
        var = ngx_http_add_variable(cf, &v->name, v->flags);
        if (var == NULL) {
            return NGX_ERROR;
        }

        var->get_handler = v->get_handler;
        var->data = v->data;
    }

    return NGX_OK;
}


static void *
ngx_http_ragnx_jwt_create_loc_conf(ngx_conf_t *cf)
{
    ngx_http_ragnx_jwt_loc_conf_t  *conf;

    conf = ngx_pcalloc(cf->pool, sizeof(ngx_http_ragnx_jwt_loc_conf_t));
    if (conf == NULL) {
        return NULL;
    }

    /*
     * set by ngx_pcalloc():
     *
     *     conf->key_file = { 0, NULL };
     *     conf->key = { 0, NULL };
     *     conf->issuer = { 0, NULL };
     *     conf->audience = { 0, NULL };
     *     conf->cookie = { 0, NULL };
     */

    conf->enable = NGX_CONF_UNSET;
    conf->alg = NGX_CONF_UNSET_PTR;
    conf->leeway = NGX_CONF_UNSET;

    /*
     * set by ngx_pcalloc() too:
     *
     *     conf->need_sub = 0;
     *     conf->subject = NULL;
     *     conf->file = NULL;
     *     conf->key_conf_file = NULL;
     */

    return conf;
}


static char *
ngx_http_ragnx_jwt_merge_loc_conf(ngx_conf_t *cf, void *parent, void *child)
{
    ngx_http_ragnx_jwt_loc_conf_t *prev = parent;
    ngx_http_ragnx_jwt_loc_conf_t *conf = child;

    ngx_http_core_loc_conf_t  *clcf;

    clcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_core_module);

    conf->subject = clcf->noname ? prev->subject : &conf->need_sub;

    if (conf->enable == NGX_CONF_UNSET) {
        conf->enable = (prev->enable == NGX_CONF_UNSET) ? 0 : prev->enable;
        conf->file = prev->file;
        conf->line = prev->line;
    }

    if (conf->key_file.data == NULL) {
        conf->key_conf_file = prev->key_conf_file;
        conf->key_conf_line = prev->key_conf_line;
    }

    ngx_conf_merge_ptr_value(conf->alg, prev->alg,
                             &ngx_http_ragnx_jwt_algs[0]);
    ngx_conf_merge_str_value(conf->key_file, prev->key_file, "");
    ngx_conf_merge_str_value(conf->key, prev->key, "");
    ngx_conf_merge_str_value(conf->issuer, prev->issuer, "");
    ngx_conf_merge_str_value(conf->audience, prev->audience, "");
    ngx_conf_merge_sec_value(conf->leeway, prev->leeway, 30);
    ngx_conf_merge_str_value(conf->cookie, prev->cookie, "");

    if (conf->enable && conf->key.len == 0) {
        ngx_log_error(NGX_LOG_EMERG, cf->log, 0,
                      "no \"ragnx_jwt_key_file\" is defined for the "
                      "\"ragnx_jwt\" directive in %s:%ui",
                      conf->file, conf->line);
        return NGX_CONF_ERROR;
    }

    if (conf->key.len) {
        return ngx_http_ragnx_jwt_check_key(cf, conf);
    }

    return NGX_CONF_OK;
}


/*
 * The key must suit the pinned algorithm: an HMAC secret that is really a
 * public key is the setup of the algorithm confusion attack, and a public
 * key of the wrong type or size would only fail later, per request.
 */

static char *
ngx_http_ragnx_jwt_check_key(ngx_conf_t *cf,
    ngx_http_ragnx_jwt_loc_conf_t *jlcf)
{
    int                        type;
    ngx_uint_t                 bits;
    ragnx_keyfile_t            kf;
    ngx_http_ragnx_jwt_alg_t  *alg;

    alg = jlcf->alg;

    if (ragnx_keyfile_classify(jlcf->key.data, jlcf->key.len, &kf) != 0) {
        return NGX_CONF_ERROR;
    }

    if (alg->key_type == NGX_HTTP_RAGNX_JWT_HMAC) {

        if (kf.kind != RAGNX_KEYFILE_SECRET) {
            ngx_log_error(NGX_LOG_EMERG, cf->log, 0,
                          "\"ragnx_jwt_key_file\" \"%V\" holds a key, not an "
                          "HMAC secret for \"ragnx_jwt_alg %V\" in %s:%ui",
                          &jlcf->key_file, &alg->name,
                          jlcf->key_conf_file, jlcf->key_conf_line);
            return NGX_CONF_ERROR;
        }

        if (jlcf->key.len * 8 < alg->bits) {
            ngx_log_error(NGX_LOG_EMERG, cf->log, 0,
                          "\"ragnx_jwt_key_file\" \"%V\" is too short for "
                          "\"ragnx_jwt_alg %V\": at least %ui bytes are "
                          "required in %s:%ui", &jlcf->key_file, &alg->name,
                          alg->bits / 8, jlcf->key_conf_file,
                          jlcf->key_conf_line);
            return NGX_CONF_ERROR;
        }

        return NGX_CONF_OK;
    }

    /* a PEM public key: a DER one or a private key will not do */

    if (kf.kind != RAGNX_KEYFILE_PUBLIC
        || ngx_strnstr(jlcf->key.data, "-----BEGIN ", jlcf->key.len) == NULL)
    {
        ngx_log_error(NGX_LOG_EMERG, cf->log, 0,
                      "\"ragnx_jwt_key_file\" \"%V\" is not a PEM public "
                      "key, required by \"ragnx_jwt_alg %V\" in %s:%ui",
                      &jlcf->key_file, &alg->name,
                      jlcf->key_conf_file, jlcf->key_conf_line);
        return NGX_CONF_ERROR;
    }

    type = kf.type == RAGNX_KEYFILE_RSA ? EVP_PKEY_RSA
           : kf.type == RAGNX_KEYFILE_EC ? EVP_PKEY_EC : EVP_PKEY_NONE;
    bits = kf.bits;

    if (type != alg->key_type) {
        ngx_log_error(NGX_LOG_EMERG, cf->log, 0,
                      "\"ragnx_jwt_key_file\" \"%V\" is not an %s public "
                      "key, required by \"ragnx_jwt_alg %V\" in %s:%ui",
                      &jlcf->key_file,
                      alg->key_type == EVP_PKEY_RSA ? "RSA" : "EC",
                      &alg->name, jlcf->key_conf_file, jlcf->key_conf_line);
        return NGX_CONF_ERROR;
    }

    if (type == EVP_PKEY_RSA && bits < alg->bits) {
        ngx_log_error(NGX_LOG_EMERG, cf->log, 0,
                      "\"ragnx_jwt_key_file\" \"%V\" is a %ui-bit RSA key, "
                      "\"ragnx_jwt_alg %V\" requires at least %ui in %s:%ui",
                      &jlcf->key_file, bits, &alg->name, alg->bits,
                      jlcf->key_conf_file, jlcf->key_conf_line);
        return NGX_CONF_ERROR;
    }

    if (type == EVP_PKEY_EC && bits != alg->bits) {
        ngx_log_error(NGX_LOG_EMERG, cf->log, 0,
                      "\"ragnx_jwt_key_file\" \"%V\" is a %ui-bit EC key, "
                      "\"ragnx_jwt_alg %V\" requires a %ui-bit curve "
                      "in %s:%ui", &jlcf->key_file, bits, &alg->name,
                      alg->bits, jlcf->key_conf_file, jlcf->key_conf_line);
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


static ngx_int_t
ngx_http_ragnx_jwt_init(ngx_conf_t *cf)
{
    ngx_http_handler_pt        *h;
    ngx_http_core_main_conf_t  *cmcf;

    cmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_core_module);

    h = ngx_array_push(&cmcf->phases[NGX_HTTP_ACCESS_PHASE].handlers);
    if (h == NULL) {
        return NGX_ERROR;
    }

    *h = ngx_http_ragnx_jwt_handler;

    return NGX_OK;
}


/* "ragnx_jwt on | off", remembering where for the merge's messages */

static char *
ngx_http_ragnx_jwt(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_ragnx_jwt_loc_conf_t *jlcf = conf;

    char  *rv;

    rv = ngx_conf_set_flag_slot(cf, cmd, conf);

    if (rv != NGX_CONF_OK) {
        return rv;
    }

    jlcf->file = cf->conf_file->file.name.data;
    jlcf->line = cf->conf_file->line;

    return NGX_CONF_OK;
}


static char *
ngx_http_ragnx_jwt_alg(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_ragnx_jwt_loc_conf_t *jlcf = conf;

    ngx_str_t                 *value;
    ngx_http_ragnx_jwt_alg_t  *alg;

    if (jlcf->alg != NGX_CONF_UNSET_PTR) {
        return "is duplicate";
    }

    value = cf->args->elts;

    for (alg = ngx_http_ragnx_jwt_algs; alg->name.len; alg++) {
        if (alg->name.len == value[1].len
            && ngx_strncmp(alg->name.data, value[1].data, value[1].len) == 0)
        {
            jlcf->alg = alg;
            return NGX_CONF_OK;
        }
    }

    ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                       "invalid value \"%V\" in \"%V\" directive, it must be "
                       "HS256, HS384, HS512, RS256, RS384, RS512, ES256, "
                       "ES384 or ES512", &value[1], &cmd->name);

    return NGX_CONF_ERROR;
}


/*
 * The whole file is the key, byte for byte: an HMAC secret (a trailing
 * newline is part of it) or a PEM public key.  It is read here, once;
 * whether it suits the algorithm is checked when the configuration is
 * merged, as "ragnx_jwt_alg" may come later or from an outer level.
 */

static char *
ngx_http_ragnx_jwt_key_file(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_ragnx_jwt_loc_conf_t *jlcf = conf;

    u_char              *buf;
    size_t               size;
    ssize_t              n;
    ngx_str_t           *value;
    ngx_file_t           file;
    ngx_file_info_t      fi;
    ngx_pool_cleanup_t  *cln;

    if (jlcf->key_file.data) {
        return "is duplicate";
    }

    value = cf->args->elts;

    jlcf->key_file = value[1];
    jlcf->key_conf_file = cf->conf_file->file.name.data;
    jlcf->key_conf_line = cf->conf_file->line;

    if (ngx_conf_full_name(cf->cycle, &jlcf->key_file, 1) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    ngx_memzero(&file, sizeof(ngx_file_t));

    file.name = jlcf->key_file;
    file.log = cf->log;

    file.fd = ngx_open_file(file.name.data, NGX_FILE_RDONLY, NGX_FILE_OPEN,
                            0);

    if (file.fd == NGX_INVALID_FILE) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, ngx_errno,
                           "\"%V\" cannot open \"%V\"",
                           &cmd->name, &file.name);
        return NGX_CONF_ERROR;
    }

    buf = NULL;
    size = 0;

    if (ngx_fd_info(file.fd, &fi) == NGX_FILE_ERROR) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, ngx_errno,
                           "\"%V\" cannot stat \"%V\"",
                           &cmd->name, &file.name);
        goto failed;
    }

    if (!ngx_is_file(&fi)) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"%V\" \"%V\" is not a regular file",
                           &cmd->name, &file.name);
        goto failed;
    }

    size = (size_t) ngx_file_size(&fi);

    if (size == 0 || size > NGX_HTTP_RAGNX_JWT_MAX_KEY) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"%V\" \"%V\" is %s", &cmd->name, &file.name,
                           size ? "too large" : "empty");
        goto failed;
    }

    cln = ngx_pool_cleanup_add(cf->pool, 0);
    if (cln == NULL) {
        goto failed;
    }

    buf = ngx_pnalloc(cf->pool, size + 1);
    if (buf == NULL) {
        goto failed;
    }

    jlcf->key.data = buf;
    jlcf->key.len = size;

    cln->handler = ngx_http_ragnx_jwt_key_cleanup;
    cln->data = &jlcf->key;

    n = ngx_read_file(&file, buf, size, 0);

    if (n == NGX_ERROR) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, ngx_errno,
                           "\"%V\" cannot read \"%V\"",
                           &cmd->name, &file.name);
        goto failed;
    }

    if ((size_t) n != size) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"%V\" read only %z of %uz bytes from \"%V\"",
                           &cmd->name, n, size, &file.name);
        goto failed;
    }

    buf[size] = '\0';

    if (ngx_close_file(file.fd) == NGX_FILE_ERROR) {
        ngx_conf_log_error(NGX_LOG_ALERT, cf, ngx_errno,
                           ngx_close_file_n " \"%V\" failed", &file.name);
    }

    return NGX_CONF_OK;

failed:

    if (ngx_close_file(file.fd) == NGX_FILE_ERROR) {
        ngx_conf_log_error(NGX_LOG_ALERT, cf, ngx_errno,
                           ngx_close_file_n " \"%V\" failed", &file.name);
    }

    return NGX_CONF_ERROR;
}


/* key material does not outlive its configuration in memory */

static void
ngx_http_ragnx_jwt_key_cleanup(void *data)
{
    ngx_str_t  *key = data;

    ngx_explicit_memzero(key->data, key->len);
}
