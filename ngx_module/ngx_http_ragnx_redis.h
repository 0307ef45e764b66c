
/*
 * ragnx: Redis from inside nginx.  hiredis's async API on nginx's event
 * loop, a small persistent pool per worker and server, per-command timers,
 * reconnection with backoff, requests that can go away while their
 * reply is pending, and a per-worker SUBSCRIBE connection for replies
 * addressed to this worker.
 */


#ifndef _NGX_HTTP_RAGNX_REDIS_H_INCLUDED_
#define _NGX_HTTP_RAGNX_REDIS_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>
#include <hiredis/hiredis.h>
#include <hiredis/async.h>


#define NGX_HTTP_RAGNX_REDIS_QUEUE    0
#define NGX_HTTP_RAGNX_REDIS_CACHE    1

/* outcome passed to reply handlers besides NGX_OK */
#define NGX_HTTP_RAGNX_REDIS_DOWN     NGX_DECLINED  /* no usable connection */
#define NGX_HTTP_RAGNX_REDIS_TIMEOUT  NGX_ABORT     /* no reply in time */


typedef struct ngx_http_ragnx_redis_srv_s   ngx_http_ragnx_redis_srv_t;
typedef struct ngx_http_ragnx_redis_cmd_s   ngx_http_ragnx_redis_cmd_t;
typedef struct ngx_http_ragnx_redis_wait_s  ngx_http_ragnx_redis_wait_t;
typedef struct ngx_http_ragnx_redis_sub_s   ngx_http_ragnx_redis_sub_t;


/*
 * Called from inside a hiredis callback or a timer with the reply (NULL
 * unless rc == NGX_OK).  It must only copy what it needs out of the reply
 * (which hiredis frees on return) into request memory: the request is
 * resumed later from a posted event, never from here.
 */
typedef void (*ngx_http_ragnx_redis_reply_pt)(ngx_http_request_t *r,
    redisReply *reply, ngx_int_t rc);

/*
 * For commands no request waits for (background refreshes, writes whose
 * outcome is only logged): called once with the reply, or NULL on error
 * or timeout, from inside hiredis or a timer; copy, do not re-enter nginx.
 */
typedef void (*ngx_http_ragnx_redis_done_pt)(void *data, redisReply *reply);

/* called from a posted event once the reply is in: respond or go on */
typedef void (*ngx_http_ragnx_redis_resume_pt)(ngx_http_request_t *r);

/*
 * Called from inside a hiredis callback with a message published on the
 * worker's channel (valid only during the call), or with msg == NULL when
 * the subscription is lost: until it is confirmed again, messages sent to
 * the channel are lost.  Like a reply handler it must only copy, never
 * respond to a request from here.
 */
typedef void (*ngx_http_ragnx_redis_message_pt)(ngx_str_t *msg, void *data);


/*
 * One pending call of a request, embedded in the caller's request ctx.
 * Ownership across the async boundary: the command object (heap) points
 * back at this waiter; a request pool cleanup clears that pointer, so a
 * late reply finds nothing and the command is freed by hiredis's callback.
 */
struct ngx_http_ragnx_redis_wait_s {
    ngx_http_request_t              *request;
    ngx_http_ragnx_redis_cmd_t      *cmd;
    ngx_http_ragnx_redis_reply_pt    reply;
    ngx_http_ragnx_redis_resume_pt   resume;
    ngx_event_t                      event;
    ngx_int_t                        rc;
    /*
     * For a script that refuses to act after a deadline (ngx_current_msec,
     * 0 for none): its reply, not ragnx_redis_timeout, says what happened.
     * The request waits past the timeout for it, until the connection is
     * given up, and that not before the deadline.
     */
    ngx_msec_t                       deadline;
    unsigned                         cleanup:1;
};


/* the server (queue or cache) a location talks to; NULL if none */
ngx_http_ragnx_redis_srv_t *ngx_http_ragnx_redis_server(ngx_conf_t *cf,
    ngx_uint_t which);

/*
 * Send a command for request r; on return NGX_OK the request's count was
 * raised and w->resume runs later (exactly once).  NGX_ERROR: nothing was
 * sent and nothing will run.
 */
ngx_int_t ngx_http_ragnx_redis_call(ngx_http_request_t *r,
    ngx_http_ragnx_redis_wait_t *w, ngx_http_ragnx_redis_srv_t *srv,
    int argc, const char **argv, const size_t *argvlen);

/* a command of no request; NGX_ERROR when it could not be sent */
ngx_int_t ngx_http_ragnx_redis_send(ngx_http_ragnx_redis_srv_t *srv,
    ngx_http_ragnx_redis_done_pt done, void *data, int argc,
    const char **argv, const size_t *argvlen);

/* the same, written with the next command or within a millisecond */
ngx_int_t ngx_http_ragnx_redis_send_later(ngx_http_ragnx_redis_srv_t *srv,
    ngx_http_ragnx_redis_done_pt done, void *data, int argc,
    const char **argv, const size_t *argvlen);

/*
 * EVALSHA of a script registered at config time with
 * ngx_http_ragnx_redis_script(); argv holds numkeys, keys and args.
 */
ngx_int_t ngx_http_ragnx_redis_eval(ngx_http_request_t *r,
    ngx_http_ragnx_redis_wait_t *w, ngx_http_ragnx_redis_srv_t *srv,
    ngx_uint_t script, int argc, const char **argv, const size_t *argvlen);

/* register a Lua script; loaded on every connection; returns its index */
ngx_int_t ngx_http_ragnx_redis_script(ngx_conf_t *cf, ngx_str_t *body);

/* 1 when at least one connection to srv is up */
ngx_uint_t ngx_http_ragnx_redis_ready(ngx_http_ragnx_redis_srv_t *srv);

ngx_msec_t ngx_http_ragnx_redis_timeout(ngx_http_ragnx_redis_srv_t *srv);

/*
 * At configuration time: every worker keeps one more connection to srv,
 * SUBSCRIBEd to the channel "<prefix><hostname>:<pid>", created in
 * init_process, reconnected with the pool's backoff, closed in
 * exit_process.  The same prefix on the same server gives the same
 * subscription.  NULL on allocation failure.
 */
ngx_http_ragnx_redis_sub_t *ngx_http_ragnx_redis_subscribe(ngx_conf_t *cf,
    ngx_http_ragnx_redis_srv_t *srv, ngx_str_t *prefix,
    ngx_http_ragnx_redis_message_pt handler, void *data);

/* the worker's channel while the subscription is confirmed, else NULL */
ngx_str_t *ngx_http_ragnx_redis_channel(ngx_http_ragnx_redis_sub_t *sub);


extern ngx_module_t  ngx_http_ragnx_redis_module;


#endif /* _NGX_HTTP_RAGNX_REDIS_H_INCLUDED_ */
