
/*
 * ragnx rpc: calls to the worker pool made by other modules' handlers
 * (POST /api/ask asks whose chat a chatId is), over the same stream,
 * reply channel and table of pending calls as the ragnx_rpc locations.
 */


#ifndef _NGX_HTTP_RAGNX_RPC_H_INCLUDED_
#define _NGX_HTTP_RAGNX_RPC_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>
#include <jansson.h>

#include "ngx_http_ragnx_redis.h"


/*
 * Called once from a posted event with the outcome: the pool's status
 * and body, or status alone (503, 504, 502, 500) with body == NULL when
 * the call failed on our side.  Returns what ngx_http_finalize_request()
 * is then given: a response's rc, or NGX_DONE when the handler started
 * more asynchronous work that holds its own reference to the request.
 */
typedef ngx_int_t (*ngx_http_ragnx_rpc_done_pt)(ngx_http_request_t *r,
    ngx_uint_t status, ngx_str_t *body);

/*
 * At configuration time: this location makes calls, so every worker
 * subscribes to its reply channel on srv.
 */
ngx_int_t ngx_http_ragnx_rpc_enable(ngx_conf_t *cf,
    ngx_http_ragnx_redis_srv_t *srv);

/*
 * Send a call for r; params is borrowed.  NGX_OK: the request's count was
 * raised and done runs later, exactly once.  NGX_DECLINED: Redis or the
 * reply channel is not available, nothing was sent.  NGX_ERROR otherwise.
 * The timeout is the location's ragnx_rpc_timeout.
 */
ngx_int_t ngx_http_ragnx_rpc_call(ngx_http_request_t *r, ngx_uint_t method,
    ngx_http_ragnx_redis_srv_t *srv, ngx_str_t *sub, json_t *params,
    ngx_http_ragnx_rpc_done_pt done);


#endif /* _NGX_HTTP_RAGNX_RPC_H_INCLUDED_ */
