
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


extern ngx_module_t  ngx_http_ragnx_module;
extern ngx_module_t  ngx_http_ragnx_jwt_module;
extern ngx_module_t  ngx_http_ragnx_validate_module;
extern ngx_module_t  ngx_http_ragnx_cors_module;


#endif /* _NGX_HTTP_RAGNX_H_INCLUDED_ */
