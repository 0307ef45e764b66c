
/*
 * ragnx: types and helpers shared by the modules in ngx_http_ragnx_module.so.
 */


#ifndef _NGX_HTTP_RAGNX_H_INCLUDED_
#define _NGX_HTTP_RAGNX_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>
#include <jansson.h>


/*
 * Send "body" as an application/json response with "status".  The body
 * is serialised compactly into the request pool; the caller keeps its
 * reference.  Returns what ngx_http_output_filter() returns, so content
 * handlers can return it and phase handlers can pass it to
 * ngx_http_finalize_request().
 */
ngx_int_t ngx_http_ragnx_send_json(ngx_http_request_t *r, ngx_uint_t status,
    json_t *body);

/* the same for a body already serialised into b (request memory) */
ngx_int_t ngx_http_ragnx_send_json_buf(ngx_http_request_t *r,
    ngx_uint_t status, ngx_buf_t *b);

/* {"error": msg} plus "details" when given; "details" is borrowed */
ngx_int_t ngx_http_ragnx_send_error(ngx_http_request_t *r, ngx_uint_t status,
    const char *msg, json_t *details);

/* 405 {"error":"Method not allowed"} with "Allow: allow" */
ngx_int_t ngx_http_ragnx_send_not_allowed(ngx_http_request_t *r,
    const char *allow);

/*
 * For phase handlers (access, precontent): send the JSON error, finalize
 * the request, and return NGX_DONE so the phase engine stops.
 */
ngx_int_t ngx_http_ragnx_finish_error(ngx_http_request_t *r,
    ngx_uint_t status, const char *msg, json_t *details);

/* short, stable message for an HTTP error status ("Not Found") */
const char *ngx_http_ragnx_status_message(ngx_uint_t status);

/*
 * The request body parsed and validated by ngx_http_ragnx_validate_module,
 * or NULL when the location validates nothing.  Owned by the request:
 * freed by a pool cleanup, so callers must not json_decref() it.
 */
json_t *ngx_http_ragnx_validated_body(ngx_http_request_t *r);

/*
 * The "sub" claim of the token ngx_http_ragnx_jwt_module accepted for this
 * request (or its main request): NGX_OK with *sub pointing into memory the
 * request owns, or NGX_DECLINED with *sub empty when no token was accepted
 * or the token has no non-empty "sub".  Still valid after an internal
 * redirect.
 */
ngx_int_t ngx_http_ragnx_jwt_subject(ngx_http_request_t *r, ngx_str_t *sub);

/*
 * $ragnx_request_id: NGX_OK with *id NUL-terminated in request memory,
 * a valid ragnx_rid_valid() id, or NGX_DECLINED with *id empty when nginx
 * has none.
 */
ngx_int_t ngx_http_ragnx_request_id(ngx_http_request_t *r, ngx_str_t *id);

/* a request header nginx keeps no pointer to: the last one named, or NULL */
ngx_table_elt_t *ngx_http_ragnx_header_in(ngx_http_request_t *r,
    const char *name);


/*
 * What a ragnx content handler needs from the rest of its location.  The
 * directive that sets the handler says so with ngx_http_ragnx_handler(),
 * which remembers the location and the directive's file and line; once
 * every module's configuration is merged, ngx_http_ragnx_module checks
 * each such location, so that one that cannot work fails "nginx -t" with
 * a message naming the directive, and the handlers need not check per
 * request.
 */
#define NGX_HTTP_RAGNX_NEEDS_SUBJECT  0x01  /* "ragnx_jwt on", satisfy all,
                                               tokens with a "sub" */
#define NGX_HTTP_RAGNX_NEEDS_BODY     0x02  /* "ragnx_validate_schema" */
#define NGX_HTTP_RAGNX_NEEDS_REDIS    0x04  /* "ragnx_redis" */
#define NGX_HTTP_RAGNX_NO_BODY        0x08  /* GET only: no schema */
#define NGX_HTTP_RAGNX_NO_TOKEN       0x10  /* called without a token */

/*
 * Sets clcf->handler of the location being parsed; "directive" names it
 * in messages ("ragnx_rpc me") and must live as long as the cycle.
 */
char *ngx_http_ragnx_handler(ngx_conf_t *cf, ngx_str_t *directive,
    ngx_http_handler_pt handler, ngx_uint_t needs);

/*
 * Post handlers for ngx_conf_set_msec_slot / ngx_conf_set_num_slot /
 * ngx_conf_set_sec_slot directives where 0 cannot work (every Redis
 * command would time out, every question find the queue full...): the
 * directive fails at once, naming its file and line.
 */
extern ngx_conf_post_t  ngx_http_ragnx_positive_msec_p;
extern ngx_conf_post_t  ngx_http_ragnx_positive_num_p;
extern ngx_conf_post_t  ngx_http_ragnx_positive_sec_p;

/* configuration time, on a location's loc_conf array, for the check */
ngx_uint_t ngx_http_ragnx_jwt_enabled(void **loc_conf);
void ngx_http_ragnx_jwt_require_subject(void **loc_conf);
ngx_uint_t ngx_http_ragnx_validate_enabled(void **loc_conf);


extern ngx_module_t  ngx_http_ragnx_module;
extern ngx_module_t  ngx_http_ragnx_jwt_module;
extern ngx_module_t  ngx_http_ragnx_validate_module;
extern ngx_module_t  ngx_http_ragnx_cors_module;


#endif /* _NGX_HTTP_RAGNX_H_INCLUDED_ */
