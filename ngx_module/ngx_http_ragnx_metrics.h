
/*
 * ragnx metrics: the counters every nginx worker adds to, in one shared
 * memory zone ("ragnx_metrics"), and what the other ragnx modules call to
 * count.  Each count is one atomic add, with no lock; nothing is counted
 * while no location has "ragnx_metrics" (ngx_http_ragnx_metrics is NULL).
 */


#ifndef _NGX_HTTP_RAGNX_METRICS_H_INCLUDED_
#define _NGX_HTTP_RAGNX_METRICS_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>


/* the routes a request is counted under, by the ragnx directive served */
#define NGX_HTTP_RAGNX_METRICS_NONE          0
#define NGX_HTTP_RAGNX_METRICS_ASK           1
#define NGX_HTTP_RAGNX_METRICS_ASK_STATUS    2
#define NGX_HTTP_RAGNX_METRICS_HEALTH        3
#define NGX_HTTP_RAGNX_METRICS_METRICS       4
#define NGX_HTTP_RAGNX_METRICS_RPC           5   /* + RAGNX_RPC_* - 1 */
#define NGX_HTTP_RAGNX_METRICS_ROUTES        10

/* outcomes of a request besides those its status names */
#define NGX_HTTP_RAGNX_METRICS_OK            0
#define NGX_HTTP_RAGNX_METRICS_HIT           1
#define NGX_HTTP_RAGNX_METRICS_MISS          2
#define NGX_HTTP_RAGNX_METRICS_FOLLOWER      3
#define NGX_HTTP_RAGNX_METRICS_FULL          4
#define NGX_HTTP_RAGNX_METRICS_BY_STATUS     5   /* the others, by status */
#define NGX_HTTP_RAGNX_METRICS_OUTCOMES      23

/* calls to the pool (shared/ragnx_rpc.h methods) by outcome */
#define NGX_HTTP_RAGNX_METRICS_RPC_OK           0   /* the pool's 2xx */
#define NGX_HTTP_RAGNX_METRICS_RPC_REFUSED      1   /* the pool's 4xx */
#define NGX_HTTP_RAGNX_METRICS_RPC_FAILED       2   /* the pool's 5xx */
#define NGX_HTTP_RAGNX_METRICS_RPC_BAD_REPLY    3   /* 502 */
#define NGX_HTTP_RAGNX_METRICS_RPC_TIMEOUT      4   /* 504 */
#define NGX_HTTP_RAGNX_METRICS_RPC_UNAVAILABLE  5   /* not sent: 503 */
#define NGX_HTTP_RAGNX_METRICS_RPC_OUTCOMES     6
#define NGX_HTTP_RAGNX_METRICS_RPC_METHODS      7   /* RAGNX_RPC_* + 1 */

/* Redis errors by kind */
#define NGX_HTTP_RAGNX_METRICS_REDIS_REPLY      0   /* an error reply */
#define NGX_HTTP_RAGNX_METRICS_REDIS_LOST       1   /* connection lost */
#define NGX_HTTP_RAGNX_METRICS_REDIS_NO_CONN    2   /* none usable */
#define NGX_HTTP_RAGNX_METRICS_REDIS_KINDS      3

#define NGX_HTTP_RAGNX_METRICS_JWT_REASONS      7   /* jwt module's + 1 */
#define NGX_HTTP_RAGNX_METRICS_BUCKETS          16  /* at most, with +Inf */


/*
 * A histogram: the observations of each bucket alone (the exposition
 * makes them cumulative, so +Inf is always the count), and their sum in
 * microseconds.
 */
typedef struct {
    ngx_atomic_t   bucket[NGX_HTTP_RAGNX_METRICS_BUCKETS];
    ngx_atomic_t   sum;
} ngx_http_ragnx_metrics_hist_t;


typedef struct {
    ngx_atomic_t                    requests[NGX_HTTP_RAGNX_METRICS_ROUTES]
                                        [NGX_HTTP_RAGNX_METRICS_OUTCOMES];
    ngx_http_ragnx_metrics_hist_t   duration[NGX_HTTP_RAGNX_METRICS_ROUTES];
    ngx_atomic_t                    jwt[NGX_HTTP_RAGNX_METRICS_JWT_REASONS];
    ngx_http_ragnx_metrics_hist_t   redis[2];      /* queue, cache */
    ngx_atomic_t                    redis_errors[2]
                                        [NGX_HTTP_RAGNX_METRICS_REDIS_KINDS];
    ngx_atomic_t                    redis_timeouts[2];
    ngx_atomic_t                    redis_reconnects[2];
    ngx_atomic_t                    rpc[NGX_HTTP_RAGNX_METRICS_RPC_METHODS]
                                        [NGX_HTTP_RAGNX_METRICS_RPC_OUTCOMES];
} ngx_http_ragnx_metrics_t;


/* in the zone; NULL while no location has "ragnx_metrics" */
extern ngx_http_ragnx_metrics_t  *ngx_http_ragnx_metrics;


#define ngx_http_ragnx_metrics_count(field)                                  \
    if (ngx_http_ragnx_metrics) {                                             \
        (void) ngx_atomic_fetch_add(&ngx_http_ragnx_metrics->field, 1);      \
    }


/* a monotonic clock in microseconds, for Redis latencies */
uint64_t ngx_http_ragnx_metrics_now(void);

/* a Redis command's round trip, from ngx_http_ragnx_metrics_now() */
void ngx_http_ragnx_metrics_redis(ngx_uint_t server, uint64_t start);

/* a call to the pool has ended: the pool's status, or one of ours */
void ngx_http_ragnx_metrics_rpc(ngx_uint_t method, ngx_uint_t status,
    ngx_uint_t ours);

/*
 * At configuration time, from ngx_http_ragnx_handler(): the location
 * being parsed is counted under the route of "directive".
 */
void ngx_http_ragnx_metrics_route(ngx_conf_t *cf, ngx_str_t *directive);

/* for the log phase: NGX_HTTP_RAGNX_METRICS_FOLLOWER, _FULL, or _OK */
ngx_uint_t ngx_http_ragnx_ask_outcome(ngx_http_request_t *r);


extern ngx_module_t  ngx_http_ragnx_metrics_module;


#endif /* _NGX_HTTP_RAGNX_METRICS_H_INCLUDED_ */
