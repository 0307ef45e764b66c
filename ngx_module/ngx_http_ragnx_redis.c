
/*
 * ragnx redis: the hiredis <-> nginx event adapter and the per-worker
 * connection pool the other ragnx modules send commands through.
 *
 * Nothing here blocks: connects are non-blocking (addresses are resolved
 * at config time), replies are read on level-triggered read events, and
 * every command has its own timer.  A command that times out fails only
 * its request; its late reply is read and dropped, so one slow reply does
 * not take the connection (and every other pending command) down.
 *
 * Subscriptions: one more connection per worker and subscription, in
 * pub/sub mode on a channel named after the worker, so that the worker
 * pool can address replies to the nginx worker whose request waits.
 *
 * $ragnx_redis_time: the round trips of a request's commands, added up
 * in a small ctx of this module, for the access log.
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>
#include <openssl/evp.h>

#include "ngx_http_ragnx.h"
#include "ngx_http_ragnx_redis.h"
#include "ngx_http_ragnx_metrics.h"


#define NGX_HTTP_RAGNX_REDIS_DISCONNECTED  0
#define NGX_HTTP_RAGNX_REDIS_CONNECTING    1
#define NGX_HTTP_RAGNX_REDIS_READY         2

#define NGX_HTTP_RAGNX_REDIS_BACKOFF_MIN   100
#define NGX_HTTP_RAGNX_REDIS_BACKOFF_MAX   5000
#define NGX_HTTP_RAGNX_REDIS_MAX_ARGS      32
#define NGX_HTTP_RAGNX_REDIS_LATER         1     /* ms a later write waits */


/* a request's time waiting on Redis, us: $ragnx_redis_time */
typedef struct {
    uint64_t                      us;
} ngx_http_ragnx_redis_time_t;

static ngx_str_t  ngx_http_ragnx_redis_time_name =
    ngx_string("ragnx_redis_time");


typedef struct ngx_http_ragnx_redis_conn_s  ngx_http_ragnx_redis_conn_t;


struct ngx_http_ragnx_redis_srv_s {
    ngx_str_t                      name;       /* as configured, for logs */
    char                          *host;       /* NUL-terminated IP */
    char                          *path;       /* unix socket, or NULL */
    int                            port;
    ngx_int_t                      db;
    ngx_uint_t                     size;
    ngx_str_t                      user;       /* ACL user, or empty */
    ngx_str_t                      password;
    ngx_msec_t                     timeout;
    ngx_msec_t                     connect_timeout;
    ngx_uint_t                     max_pending;
    ngx_uint_t                     role;       /* queue or cache */
    u_char                        *file;       /* where it is configured */
    ngx_uint_t                     line;

    ngx_http_ragnx_redis_conn_t   *conns;
    ngx_uint_t                     next;
};


struct ngx_http_ragnx_redis_conn_s {
    ngx_http_ragnx_redis_srv_t    *srv;
    redisAsyncContext             *ac;
    ngx_connection_t              *c;
    ngx_event_t                    timer;      /* connect timeout, retry */
    ngx_event_t                    flush;      /* posted: write the batch */
    ngx_event_t                    later;      /* timer: write the batch */
    ngx_uint_t                     flushing;
    ngx_uint_t                     deferring;  /* queueing a later command */
    ngx_msec_t                     backoff;
    ngx_msec_t                     last_read;  /* or since a reply is owed */
    ngx_msec_t                     deadline;   /* latest of a pending script */
    ngx_uint_t                     suspect;    /* silent: no new commands */
    ngx_uint_t                     pending;
    ngx_uint_t                     state;
    ngx_log_t                     *log;
    ngx_http_ragnx_redis_sub_t    *sub;        /* a subscriber, or NULL */
    ngx_http_ragnx_redis_cmd_t    *expiring;   /* timed out, reading first */
};


struct ngx_http_ragnx_redis_sub_s {
    ngx_http_ragnx_redis_srv_t       *srv;
    ngx_str_t                         prefix;
    ngx_str_t                         channel;   /* <prefix><host>:<pid> */
    ngx_http_ragnx_redis_message_pt   handler;
    void                             *data;
    ngx_http_ragnx_redis_conn_t      *conn;
    ngx_uint_t                        subscribed;
};


struct ngx_http_ragnx_redis_cmd_s {
    ngx_http_ragnx_redis_wait_t   *wait;       /* NULL once detached */
    ngx_http_ragnx_redis_done_pt   done;       /* requestless commands */
    void                          *data;
    ngx_http_ragnx_redis_conn_t   *conn;
    uint64_t                       start;      /* us, 0 if not counted */
    ngx_msec_t                     deadline;   /* the wait's, or 0 */
    ngx_uint_t                     overdue;    /* timed out once */
    ngx_event_t                    timer;
};


typedef struct {
    ngx_str_t                      body;
    u_char                         sha[41];
} ngx_http_ragnx_redis_script_t;


typedef struct {
    ngx_http_ragnx_redis_srv_t    *queue;
    ngx_http_ragnx_redis_srv_t    *cache;
    ngx_msec_t                     timeout;
    ngx_msec_t                     connect_timeout;
    ngx_uint_t                     max_pending;
    ngx_array_t                    scripts;    /* script_t */
    ngx_array_t                    subs;       /* sub_t * */
} ngx_http_ragnx_redis_main_conf_t;


static void ngx_http_ragnx_redis_conn_init(ngx_http_ragnx_redis_conn_t *rc,
    ngx_http_ragnx_redis_srv_t *srv, ngx_cycle_t *cycle);
static void ngx_http_ragnx_redis_connect(ngx_http_ragnx_redis_conn_t *rc);
static void ngx_http_ragnx_redis_schedule(ngx_http_ragnx_redis_conn_t *rc);
static void ngx_http_ragnx_redis_timer_handler(ngx_event_t *ev);
static void ngx_http_ragnx_redis_on_connect(const redisAsyncContext *ac,
    int status);
static void ngx_http_ragnx_redis_on_disconnect(const redisAsyncContext *ac,
    int status);
static void ngx_http_ragnx_redis_auth_reply(redisAsyncContext *ac,
    void *reply, void *privdata);
static void ngx_http_ragnx_redis_handshake_reply(redisAsyncContext *ac,
    void *reply, void *privdata);
static void ngx_http_ragnx_redis_load_scripts(
    ngx_http_ragnx_redis_conn_t *rc);
static void ngx_http_ragnx_redis_reply(redisAsyncContext *ac, void *reply,
    void *privdata);
static void ngx_http_ragnx_redis_cmd_timeout(ngx_event_t *ev);
static ngx_int_t ngx_http_ragnx_redis_unread(ngx_http_ragnx_redis_conn_t *rc);
static u_char *ngx_http_ragnx_redis_decimal(u_char *p, size_t n);
static ngx_int_t ngx_http_ragnx_redis_give_up(
    ngx_http_ragnx_redis_conn_t *rc);
static void ngx_http_ragnx_redis_wait_done(ngx_http_ragnx_redis_wait_t *w,
    redisReply *reply, ngx_int_t rc);
static void ngx_http_ragnx_redis_wait_handler(ngx_event_t *ev);
static void ngx_http_ragnx_redis_wait_cleanup(void *data);
static ngx_http_ragnx_redis_conn_t *ngx_http_ragnx_redis_pick(
    ngx_http_ragnx_redis_srv_t *srv);
static ngx_http_ragnx_redis_cmd_t *ngx_http_ragnx_redis_queue(
    ngx_http_ragnx_redis_conn_t *rc, int argc, const char **argv,
    const size_t *argvlen);
static size_t ngx_http_ragnx_redis_format(int argc, const char **argv,
    const size_t *argvlen, ngx_log_t *log);
static ngx_int_t ngx_http_ragnx_redis_send_cmd(
    ngx_http_ragnx_redis_srv_t *srv, ngx_uint_t later,
    ngx_http_ragnx_redis_done_pt done, void *data, int argc,
    const char **argv, const size_t *argvlen);
static void ngx_http_ragnx_redis_sub_reply(redisAsyncContext *ac,
    void *reply, void *privdata);
static void ngx_http_ragnx_redis_sub_lost(ngx_http_ragnx_redis_sub_t *sub);

static int ngx_http_ragnx_redis_attach(ngx_http_ragnx_redis_conn_t *rc,
    redisAsyncContext *ac);
static void ngx_http_ragnx_redis_read_handler(ngx_event_t *ev);
static void ngx_http_ragnx_redis_write_handler(ngx_event_t *ev);
static void ngx_http_ragnx_redis_flush_handler(ngx_event_t *ev);
static void ngx_http_ragnx_redis_add_read(void *privdata);
static void ngx_http_ragnx_redis_del_read(void *privdata);
static void ngx_http_ragnx_redis_add_write(void *privdata);
static void ngx_http_ragnx_redis_del_write(void *privdata);
static void ngx_http_ragnx_redis_cleanup(void *privdata);

static ngx_int_t ngx_http_ragnx_redis_time_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data);
static ngx_int_t ngx_http_ragnx_redis_add_variables(ngx_conf_t *cf);
static void *ngx_http_ragnx_redis_create_main_conf(ngx_conf_t *cf);
static char *ngx_http_ragnx_redis_init_main_conf(ngx_conf_t *cf, void *conf);
static ngx_int_t ngx_http_ragnx_redis_init_process(ngx_cycle_t *cycle);
static void ngx_http_ragnx_redis_exit_process(ngx_cycle_t *cycle);
static char *ngx_http_ragnx_redis_server_conf(ngx_conf_t *cf,
    ngx_command_t *cmd, void *conf);


static ngx_command_t  ngx_http_ragnx_redis_commands[] = {

    { ngx_string("ragnx_redis"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_1MORE,
      ngx_http_ragnx_redis_server_conf,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_ragnx_redis_main_conf_t, queue),
      NULL },

    { ngx_string("ragnx_redis_cache"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_1MORE,
      ngx_http_ragnx_redis_server_conf,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_ragnx_redis_main_conf_t, cache),
      NULL },

    { ngx_string("ragnx_redis_timeout"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_msec_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_ragnx_redis_main_conf_t, timeout),
      &ngx_http_ragnx_positive_msec_p },

    { ngx_string("ragnx_redis_connect_timeout"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_msec_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_ragnx_redis_main_conf_t, connect_timeout),
      &ngx_http_ragnx_positive_msec_p },

    { ngx_string("ragnx_redis_max_pending"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_num_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_ragnx_redis_main_conf_t, max_pending),
      &ngx_http_ragnx_positive_num_p },

      ngx_null_command
};


static ngx_http_module_t  ngx_http_ragnx_redis_module_ctx = {
    ngx_http_ragnx_redis_add_variables,    /* preconfiguration */
    NULL,                                  /* postconfiguration */

    ngx_http_ragnx_redis_create_main_conf, /* create main configuration */
    ngx_http_ragnx_redis_init_main_conf,   /* init main configuration */

    NULL,                                  /* create server configuration */
    NULL,                                  /* merge server configuration */

    NULL,                                  /* create location configuration */
    NULL                                   /* merge location configuration */
};


ngx_module_t  ngx_http_ragnx_redis_module = {
    NGX_MODULE_V1,
    &ngx_http_ragnx_redis_module_ctx,      /* module context */
    ngx_http_ragnx_redis_commands,         /* module directives */
    NGX_HTTP_MODULE,                       /* module type */
    NULL,                                  /* init master */
    NULL,                                  /* init module */
    ngx_http_ragnx_redis_init_process,     /* init process */
    NULL,                                  /* init thread */
    NULL,                                  /* exit thread */
    ngx_http_ragnx_redis_exit_process,     /* exit process */
    NULL,                                  /* exit master */
    NGX_MODULE_V1_PADDING
};


static ngx_uint_t  ngx_http_ragnx_redis_exiting;

/* this worker's buffer for formatting commands, as large as the largest */
static u_char     *ngx_http_ragnx_redis_buf;
static size_t      ngx_http_ragnx_redis_buf_size;


/* the adapter: hiredis's event hooks mapped to nginx events */


static int
ngx_http_ragnx_redis_attach(ngx_http_ragnx_redis_conn_t *rc,
    redisAsyncContext *ac)
{
    ngx_connection_t  *c;

    c = ngx_get_connection(ac->c.fd, rc->log);
    if (c == NULL) {
        return REDIS_ERR;
    }

    c->data = rc;
    c->read->handler = ngx_http_ragnx_redis_read_handler;
    c->write->handler = ngx_http_ragnx_redis_write_handler;
    c->read->log = rc->log;
    c->write->log = rc->log;

    rc->c = c;
    rc->ac = ac;

    ac->data = rc;
    ac->ev.data = rc;
    ac->ev.addRead = ngx_http_ragnx_redis_add_read;
    ac->ev.delRead = ngx_http_ragnx_redis_del_read;
    ac->ev.addWrite = ngx_http_ragnx_redis_add_write;
    ac->ev.delWrite = ngx_http_ragnx_redis_del_write;
    ac->ev.cleanup = ngx_http_ragnx_redis_cleanup;

    return REDIS_OK;
}


static void
ngx_http_ragnx_redis_read_handler(ngx_event_t *ev)
{
    ngx_connection_t             *c;
    ngx_http_ragnx_redis_conn_t  *rc;

    c = ev->data;
    rc = c->data;

    /*
     * Level-triggered: hiredis reads at most 16 KiB per call and the event
     * fires again while more is buffered.  rc->c may be freed inside.
     */

    redisAsyncHandleRead(rc->ac);
}


static void
ngx_http_ragnx_redis_write_handler(ngx_event_t *ev)
{
    ngx_connection_t             *c;
    ngx_http_ragnx_redis_conn_t  *rc;

    c = ev->data;
    rc = c->data;

    redisAsyncHandleWrite(rc->ac);
}


static void
ngx_http_ragnx_redis_add_read(void *privdata)
{
    ngx_http_ragnx_redis_conn_t  *rc = privdata;

    if (rc->c && !rc->c->read->active) {
        (void) ngx_add_event(rc->c->read, NGX_READ_EVENT, 0);
    }
}


static void
ngx_http_ragnx_redis_del_read(void *privdata)
{
    ngx_http_ragnx_redis_conn_t  *rc = privdata;

    if (rc->c && rc->c->read->active) {
        (void) ngx_del_event(rc->c->read, NGX_READ_EVENT, 0);
    }
}


/*
 * Commands are not written one by one: the first command of an event loop
 * iteration posts a flush event, which runs after the iteration's other
 * events and writes everything queued meanwhile in one write(), with no
 * epoll_ctl() calls.  Only a socket that does not take it all (or a
 * connect in progress) waits for a real write event.
 */

static void
ngx_http_ragnx_redis_add_write(void *privdata)
{
    ngx_http_ragnx_redis_conn_t  *rc = privdata;

    if (rc->c == NULL) {
        return;
    }

    if (rc->state == NGX_HTTP_RAGNX_REDIS_READY && !rc->flushing) {
        if (rc->flush.posted || rc->c->write->active) {
            return;
        }

        if (rc->deferring) {
            if (!rc->later.timer_set) {
                ngx_add_timer(&rc->later, NGX_HTTP_RAGNX_REDIS_LATER);
            }

            return;
        }

        if (rc->later.timer_set) {
            ngx_del_timer(&rc->later);
        }

        ngx_post_event(&rc->flush, &ngx_posted_events);

        return;
    }

    if (!rc->c->write->active) {
        (void) ngx_add_event(rc->c->write, NGX_WRITE_EVENT, 0);
    }
}


static void
ngx_http_ragnx_redis_del_write(void *privdata)
{
    ngx_http_ragnx_redis_conn_t  *rc = privdata;

    if (rc->flush.posted) {
        ngx_delete_posted_event(&rc->flush);
    }

    if (rc->later.timer_set) {
        ngx_del_timer(&rc->later);
    }

    if (rc->c && rc->c->write->active) {
        (void) ngx_del_event(rc->c->write, NGX_WRITE_EVENT, 0);
    }
}


static void
ngx_http_ragnx_redis_flush_handler(ngx_event_t *ev)
{
    ngx_http_ragnx_redis_conn_t  *rc;

    rc = ev->data;

    if (rc->later.timer_set) {
        ngx_del_timer(&rc->later);
    }

    if (rc->ac == NULL) {
        return;
    }

    ngx_log_debug2(NGX_LOG_DEBUG_HTTP, rc->log, 0,
                   "ragnx redis \"%V\" flush, %ui pending",
                   &rc->srv->name, rc->pending);

    /* an unfinished write now asks for a real write event */
    rc->flushing = 1;
    redisAsyncHandleWrite(rc->ac);
    rc->flushing = 0;
}


/*
 * hiredis frees the context (and closes the socket) right after this, on
 * any disconnect or failed connect: release the nginx side and retry.
 */

static void
ngx_http_ragnx_redis_cleanup(void *privdata)
{
    ngx_connection_t             *c;
    ngx_http_ragnx_redis_conn_t  *rc = privdata;

    c = rc->c;

    if (c) {
        ngx_http_ragnx_redis_del_read(rc);
        ngx_http_ragnx_redis_del_write(rc);

        if (c->read->posted) {
            ngx_delete_posted_event(c->read);
        }

        if (c->write->posted) {
            ngx_delete_posted_event(c->write);
        }

        ngx_free_connection(c);
        c->fd = (ngx_socket_t) -1;
    }

    if (rc->flush.posted) {
        ngx_delete_posted_event(&rc->flush);
    }

    if (rc->later.timer_set) {
        ngx_del_timer(&rc->later);
    }

    rc->c = NULL;
    rc->ac = NULL;
    rc->flushing = 0;
    rc->pending = 0;
    rc->state = NGX_HTTP_RAGNX_REDIS_DISCONNECTED;

    if (rc->sub) {
        ngx_http_ragnx_redis_sub_lost(rc->sub);
    }

    ngx_http_ragnx_redis_schedule(rc);
}


/* connections */


static void
ngx_http_ragnx_redis_connect(ngx_http_ragnx_redis_conn_t *rc)
{
    redisAsyncContext           *ac;
    ngx_http_ragnx_redis_srv_t  *srv;

    srv = rc->srv;

    ngx_log_debug2(NGX_LOG_DEBUG_HTTP, rc->log, 0,
                   "ragnx redis \"%V\" connect%s", &srv->name,
                   rc->sub ? " (subscriber)" : "");

    if (srv->path) {
        ac = redisAsyncConnectUnix(srv->path);

    } else {
        ac = redisAsyncConnect(srv->host, srv->port);
    }

    if (ac == NULL || ac->err) {
        ngx_log_error(NGX_LOG_ERR, rc->log, 0,
                      "ragnx redis \"%V\" connect failed: %s", &srv->name,
                      ac ? ac->errstr : "out of memory");
        if (ac) {
            redisAsyncFree(ac);
        }

        ngx_http_ragnx_redis_schedule(rc);
        return;
    }

    if (ngx_http_ragnx_redis_attach(rc, ac) != REDIS_OK) {
        redisAsyncFree(ac);
        ngx_http_ragnx_redis_schedule(rc);
        return;
    }

    rc->state = NGX_HTTP_RAGNX_REDIS_CONNECTING;

    redisAsyncSetDisconnectCallback(ac, ngx_http_ragnx_redis_on_disconnect);

    /* hiredis learns of the connect from the first write event */
    redisAsyncSetConnectCallback(ac, ngx_http_ragnx_redis_on_connect);
    ngx_http_ragnx_redis_add_read(rc);
    ngx_http_ragnx_redis_add_write(rc);

    ngx_add_timer(&rc->timer, srv->connect_timeout);
}


/* backoff doubles from 100 ms to 5 s, with up to 50% jitter */

static void
ngx_http_ragnx_redis_schedule(ngx_http_ragnx_redis_conn_t *rc)
{
    ngx_msec_t  delay;

    if (ngx_http_ragnx_redis_exiting) {
        return;
    }

    if (rc->timer.timer_set) {
        ngx_del_timer(&rc->timer);
    }

    rc->backoff = rc->backoff ? ngx_min(rc->backoff * 2,
                                        NGX_HTTP_RAGNX_REDIS_BACKOFF_MAX)
                              : NGX_HTTP_RAGNX_REDIS_BACKOFF_MIN;

    delay = rc->backoff / 2 + (ngx_msec_t) ngx_random() % (rc->backoff / 2);

    ngx_log_debug3(NGX_LOG_DEBUG_HTTP, rc->log, 0,
                   "ragnx redis \"%V\" reconnect in %M ms (backoff %M ms)",
                   &rc->srv->name, delay, rc->backoff);

    ngx_add_timer(&rc->timer, delay);
}


static void
ngx_http_ragnx_redis_timer_handler(ngx_event_t *ev)
{
    ngx_http_ragnx_redis_conn_t  *rc;

    rc = ev->data;

    if (rc->state == NGX_HTTP_RAGNX_REDIS_CONNECTING) {
        ngx_log_error(NGX_LOG_ERR, rc->log, 0,
                      "ragnx redis \"%V\" connect timed out", &rc->srv->name);

        /* the cleanup hook schedules the next attempt */
        redisAsyncFree(rc->ac);
        return;
    }

    if (rc->state == NGX_HTTP_RAGNX_REDIS_DISCONNECTED) {
        ngx_http_ragnx_metrics_count(redis_reconnects[rc->srv->role]);
        ngx_http_ragnx_redis_connect(rc);
        return;
    }

    /* a silent connection kept for a script's deadline: still silent? */

    if (rc->suspect && rc->ac && !ngx_http_ragnx_redis_unread(rc)) {
        (void) ngx_http_ragnx_redis_give_up(rc);
    }
}


static void
ngx_http_ragnx_redis_on_connect(const redisAsyncContext *ac, int status)
{
    int                           n;
    const char                   *argv[3];
    size_t                        argvlen[3];
    u_char                        db[NGX_INT_T_LEN];
    ngx_http_ragnx_redis_srv_t   *srv;
    ngx_http_ragnx_redis_conn_t  *rc;

    rc = ac->data;
    srv = rc->srv;

    if (status != REDIS_OK) {
        ngx_log_error(NGX_LOG_ERR, rc->log, 0,
                      "ragnx redis \"%V\" connect failed: %s",
                      &srv->name, ac->errstr);
        return;
    }

    if (rc->timer.timer_set) {
        ngx_del_timer(&rc->timer);
    }

    if (rc->backoff) {
        ngx_log_error(NGX_LOG_NOTICE, rc->log, 0,
                      "ragnx redis \"%V\" connected", &srv->name);

    } else {
        ngx_log_debug1(NGX_LOG_DEBUG_HTTP, rc->log, 0,
                       "ragnx redis \"%V\" connected", &srv->name);
    }

    rc->state = NGX_HTTP_RAGNX_REDIS_READY;
    rc->pending = 0;
    rc->suspect = 0;
    rc->last_read = ngx_current_msec;

    /*
     * A subscriber keeps backing off until its channel is confirmed, a
     * connection that authenticates until AUTH succeeds: a wrong password
     * retries every 5 s, not every 100 ms.
     */
    if (rc->sub == NULL && srv->password.len == 0) {
        rc->backoff = 0;
    }

    /*
     * Commands on one connection are answered in order, so requests may
     * be pipelined right behind the handshake.  Every connection, the
     * subscriber's too, authenticates first, on every reconnect.
     */

    if (srv->password.len) {
        n = 0;
        argv[n] = "AUTH";
        argvlen[n++] = 4;

        if (srv->user.len) {
            argv[n] = (const char *) srv->user.data;
            argvlen[n++] = srv->user.len;
        }

        argv[n] = (const char *) srv->password.data;
        argvlen[n++] = srv->password.len;
        redisAsyncCommandArgv((redisAsyncContext *) ac,
                              ngx_http_ragnx_redis_auth_reply, rc, n,
                              argv, argvlen);
    }

    if (rc->sub) {
        /*
         * A subscriber only reads: TCP keepalive (15 s) is what notices a
         * peer that vanished without closing.  Not on a unix socket: it
         * has no peer to vanish, and hiredis, failing to set TCP_KEEPIDLE
         * there, would mark the context failed.  Pub/sub ignores the db;
         * the channel is confirmed in sub_reply.
         */

        if (srv->path == NULL) {
            (void) redisEnableKeepAlive((redisContext *) &ac->c);
        }

        ngx_log_debug2(NGX_LOG_DEBUG_HTTP, rc->log, 0,
                       "ragnx redis \"%V\" subscribing to \"%V\"",
                       &srv->name, &rc->sub->channel);

        argv[0] = "SUBSCRIBE";
        argvlen[0] = 9;
        argv[1] = (const char *) rc->sub->channel.data;
        argvlen[1] = rc->sub->channel.len;
        redisAsyncCommandArgv((redisAsyncContext *) ac,
                              ngx_http_ragnx_redis_sub_reply, rc, 2,
                              argv, argvlen);
        return;
    }

    if (srv->db) {
        argv[0] = "SELECT";
        argvlen[0] = 6;
        argv[1] = (const char *) db;
        argvlen[1] = ngx_sprintf(db, "%i", srv->db) - db;
        redisAsyncCommandArgv((redisAsyncContext *) ac,
                              ngx_http_ragnx_redis_handshake_reply, rc, 2,
                              argv, argvlen);
    }

    ngx_http_ragnx_redis_load_scripts(rc);
}


static void
ngx_http_ragnx_redis_on_disconnect(const redisAsyncContext *ac, int status)
{
    ngx_http_ragnx_redis_conn_t  *rc;

    rc = ac->data;

    if (status != REDIS_OK && !ngx_http_ragnx_redis_exiting) {
        ngx_log_error(NGX_LOG_ERR, rc->log, 0,
                      "ragnx redis \"%V\" connection lost: %s",
                      &rc->srv->name, ac->errstr ? ac->errstr : "closed");
    }
}


/*
 * The reply to AUTH: an error reply says why (WRONGPASS, a user that is
 * off), never the password.  Commands pipelined behind it fail with the
 * connection, so their requests answer 503 at once.
 */

static void
ngx_http_ragnx_redis_auth_reply(redisAsyncContext *ac, void *reply,
    void *privdata)
{
    redisReply                   *rr = reply;
    ngx_str_t                    *user;
    ngx_http_ragnx_redis_conn_t  *rc = privdata;
    static ngx_str_t              deflt = ngx_string("default");

    if (rr == NULL) {
        return;
    }

    if (rr->type != REDIS_REPLY_ERROR) {
        ngx_log_debug1(NGX_LOG_DEBUG_HTTP, rc->log, 0,
                       "ragnx redis \"%V\" authenticated", &rc->srv->name);

        if (rc->sub == NULL) {
            rc->backoff = 0;
        }

        return;
    }

    user = rc->srv->user.len ? &rc->srv->user : &deflt;

    ngx_log_error(NGX_LOG_ERR, rc->log, 0,
                  "ragnx redis \"%V\" authentication as user \"%V\" "
                  "failed: %*s", &rc->srv->name, user, (size_t) rr->len,
                  rr->str);

    /* deferred by hiredis while in a callback; cleanup retries */
    redisAsyncFree(ac);
}


static void
ngx_http_ragnx_redis_handshake_reply(redisAsyncContext *ac, void *reply,
    void *privdata)
{
    redisReply                   *rr = reply;
    ngx_http_ragnx_redis_conn_t  *rc = privdata;

    if (rr && rr->type == REDIS_REPLY_ERROR) {
        ngx_log_error(NGX_LOG_ERR, rc->log, 0,
                      "ragnx redis \"%V\" handshake failed: %*s",
                      &rc->srv->name, (size_t) rr->len, rr->str);

        /* deferred by hiredis while in a callback; cleanup retries */
        redisAsyncFree(ac);
    }
}


static void
ngx_http_ragnx_redis_load_scripts(ngx_http_ragnx_redis_conn_t *rc)
{
    const char                        *argv[3];
    size_t                             argvlen[3];
    ngx_uint_t                         i;
    ngx_http_ragnx_redis_script_t     *s;
    ngx_http_ragnx_redis_main_conf_t  *rmcf;

    rmcf = ngx_http_cycle_get_module_main_conf(ngx_cycle,
                                               ngx_http_ragnx_redis_module);
    s = rmcf->scripts.elts;

    for (i = 0; i < rmcf->scripts.nelts; i++) {
        argv[0] = "SCRIPT";
        argvlen[0] = 6;
        argv[1] = "LOAD";
        argvlen[1] = 4;
        argv[2] = (const char *) s[i].body.data;
        argvlen[2] = s[i].body.len;

        redisAsyncCommandArgv(rc->ac, ngx_http_ragnx_redis_handshake_reply,
                              rc, 3, argv, argvlen);
    }
}


/* commands */


/*
 * A usable connection: one that writes in this iteration anyway (its
 * flush posted or timed) if there is one, else the next, round robin.
 * An iteration's commands then go out together on one connection, in one
 * write, and come back in one read, and the next iteration's may start on
 * another.  Spread over two connections per iteration instead, the
 * enqueue ran about 5% slower (nginx's CPU per request up by 1 - 2 us).
 * The other connections stand in for one that is down or has
 * ragnx_redis_max_pending commands in flight.
 */

static ngx_http_ragnx_redis_conn_t *
ngx_http_ragnx_redis_pick(ngx_http_ragnx_redis_srv_t *srv)
{
    ngx_uint_t                    i, n;
    ngx_http_ragnx_redis_conn_t  *rc, *usable;

    if (srv->conns == NULL) {
        return NULL;
    }

    usable = NULL;

    for (i = 0; i < srv->size; i++) {
        n = srv->next++ % srv->size;
        rc = &srv->conns[n];

        if (rc->state != NGX_HTTP_RAGNX_REDIS_READY
            || rc->pending >= srv->max_pending
            || rc->suspect)
        {
            continue;
        }

        if (rc->flush.posted || rc->later.timer_set) {
            return rc;
        }

        if (usable == NULL) {
            usable = rc;
        }
    }

    return usable;
}


ngx_int_t
ngx_http_ragnx_redis_call(ngx_http_request_t *r,
    ngx_http_ragnx_redis_wait_t *w, ngx_http_ragnx_redis_srv_t *srv,
    int argc, const char **argv, const size_t *argvlen)
{
    ngx_pool_cleanup_t           *cln;
    ngx_http_ragnx_redis_cmd_t   *cmd;
    ngx_http_ragnx_redis_conn_t  *rc;
    ngx_http_ragnx_redis_time_t  *t;

    rc = ngx_http_ragnx_redis_pick(srv);
    if (rc == NULL) {
        ngx_http_ragnx_metrics_count(
            redis_errors[srv->role][NGX_HTTP_RAGNX_METRICS_REDIS_NO_CONN]);
        return NGX_ERROR;
    }

    if (!w->cleanup) {
        cln = ngx_pool_cleanup_add(r->pool, 0);
        if (cln == NULL) {
            return NGX_ERROR;
        }

        cln->handler = ngx_http_ragnx_redis_wait_cleanup;
        cln->data = w;
        w->cleanup = 1;

        w->request = r;
        w->event.handler = ngx_http_ragnx_redis_wait_handler;
        w->event.data = w;
        w->event.log = r->connection->log;
    }

    if (ngx_http_get_module_ctx(r, ngx_http_ragnx_redis_module) == NULL) {
        t = ngx_pcalloc(r->pool, sizeof(ngx_http_ragnx_redis_time_t));
        if (t == NULL) {
            return NGX_ERROR;
        }

        ngx_http_set_ctx(r, t, ngx_http_ragnx_redis_module);
    }

    cmd = ngx_http_ragnx_redis_queue(rc, argc, argv, argvlen);
    if (cmd == NULL) {
        return NGX_ERROR;
    }

    cmd->wait = w;
    cmd->deadline = w->deadline;
    w->cmd = cmd;
    w->rc = NGX_OK;

    if (w->deadline && (ngx_msec_int_t) (w->deadline - rc->deadline) > 0) {
        rc->deadline = w->deadline;
    }

    if (cmd->start == 0) {
        cmd->start = ngx_http_ragnx_metrics_now();
    }

    r->main->count++;

    ngx_log_debug4(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "ragnx redis \"%V\" call \"%*s\" queued, %ui pending",
                   &srv->name, argvlen[0], argv[0], rc->pending);

    return NGX_OK;
}


ngx_int_t
ngx_http_ragnx_redis_send(ngx_http_ragnx_redis_srv_t *srv,
    ngx_http_ragnx_redis_done_pt done, void *data, int argc,
    const char **argv, const size_t *argvlen)
{
    return ngx_http_ragnx_redis_send_cmd(srv, 0, done, data, argc, argv,
                                         argvlen);
}


/*
 * A command of no request that need not go out at once: it is written
 * with the next command on its connection, or within a millisecond.  At a
 * low rate of requests this saves Redis and nginx a wake-up each.
 */

ngx_int_t
ngx_http_ragnx_redis_send_later(ngx_http_ragnx_redis_srv_t *srv,
    ngx_http_ragnx_redis_done_pt done, void *data, int argc,
    const char **argv, const size_t *argvlen)
{
    return ngx_http_ragnx_redis_send_cmd(srv, 1, done, data, argc, argv,
                                         argvlen);
}


static ngx_int_t
ngx_http_ragnx_redis_send_cmd(ngx_http_ragnx_redis_srv_t *srv,
    ngx_uint_t later, ngx_http_ragnx_redis_done_pt done, void *data,
    int argc, const char **argv, const size_t *argvlen)
{
    ngx_http_ragnx_redis_cmd_t   *cmd;
    ngx_http_ragnx_redis_conn_t  *rc;

    rc = ngx_http_ragnx_redis_pick(srv);
    if (rc == NULL) {
        ngx_http_ragnx_metrics_count(
            redis_errors[srv->role][NGX_HTTP_RAGNX_METRICS_REDIS_NO_CONN]);
        return NGX_ERROR;
    }

    rc->deferring = later;
    cmd = ngx_http_ragnx_redis_queue(rc, argc, argv, argvlen);
    rc->deferring = 0;

    if (cmd == NULL) {
        return NGX_ERROR;
    }

    cmd->done = done;
    cmd->data = data;

    ngx_log_debug5(NGX_LOG_DEBUG_HTTP, rc->log, 0,
                   "ragnx redis \"%V\" command \"%*s\" queued%s, "
                   "%ui pending", &srv->name, argvlen[0], argv[0],
                   later ? " for later" : "", rc->pending);

    return NGX_OK;
}


/*
 * Queue a command on rc with its own timer.  The command object is on the
 * heap, not in a request pool: it lives until hiredis answers or frees it.
 * The timer is not cancelable: a worker shutting down gracefully waits
 * (up to the timeout) for every reply, so requests waiting on Redis are
 * answered and written commands are not cut off with the connection.
 */

static ngx_http_ragnx_redis_cmd_t *
ngx_http_ragnx_redis_queue(ngx_http_ragnx_redis_conn_t *rc, int argc,
    const char **argv, const size_t *argvlen)
{
    size_t                       len;
    ngx_http_ragnx_redis_cmd_t  *cmd;

    cmd = ngx_calloc(sizeof(ngx_http_ragnx_redis_cmd_t), rc->log);
    if (cmd == NULL) {
        return NULL;
    }

    len = ngx_http_ragnx_redis_format(argc, argv, argvlen, rc->log);

    if (len == 0
        || redisAsyncFormattedCommand(rc->ac, ngx_http_ragnx_redis_reply, cmd,
                                      (char *) ngx_http_ragnx_redis_buf, len)
           != REDIS_OK)
    {
        ngx_free(cmd);
        return NULL;
    }

    cmd->conn = rc;

    /* a server owes nothing while idle: silence counts from here */
    if (rc->pending == 0) {
        rc->last_read = ngx_current_msec;
    }

    if (ngx_http_ragnx_metrics) {
        cmd->start = ngx_http_ragnx_metrics_now();
    }

    cmd->timer.handler = ngx_http_ragnx_redis_cmd_timeout;
    cmd->timer.data = cmd;
    cmd->timer.log = rc->log;
    ngx_add_timer(&cmd->timer, rc->srv->timeout);

    rc->pending++;

    return cmd;
}


/*
 * The command in Redis's protocol, in this worker's buffer; its length, or
 * 0 on failure.  hiredis's own formatting builds it in a string grown
 * argument by argument and frees it once copied into the output buffer.
 */

static size_t
ngx_http_ragnx_redis_format(int argc, const char **argv,
    const size_t *argvlen, ngx_log_t *log)
{
    int      i;
    u_char  *p;
    size_t   len;

    len = sizeof("*\r\n") - 1 + NGX_INT_T_LEN;

    for (i = 0; i < argc; i++) {
        len += sizeof("$\r\n\r\n") - 1 + NGX_SIZE_T_LEN + argvlen[i];
    }

    if (len > ngx_http_ragnx_redis_buf_size) {
        p = ngx_alloc(ngx_max(len, 4096), log);
        if (p == NULL) {
            return 0;
        }

        ngx_free(ngx_http_ragnx_redis_buf);
        ngx_http_ragnx_redis_buf = p;
        ngx_http_ragnx_redis_buf_size = ngx_max(len, 4096);
    }

    /* by hand: ngx_sprintf() cost a hit 3,500 instructions here */

    p = ngx_http_ragnx_redis_buf;
    *p++ = '*';
    p = ngx_http_ragnx_redis_decimal(p, argc);
    *p++ = '\r';
    *p++ = '\n';

    for (i = 0; i < argc; i++) {
        *p++ = '$';
        p = ngx_http_ragnx_redis_decimal(p, argvlen[i]);
        *p++ = '\r';
        *p++ = '\n';
        p = ngx_cpymem(p, argv[i], argvlen[i]);
        *p++ = '\r';
        *p++ = '\n';
    }

    return p - ngx_http_ragnx_redis_buf;
}


static u_char *
ngx_http_ragnx_redis_decimal(u_char *p, size_t n)
{
    u_char  digits[NGX_SIZE_T_LEN], *d;

    d = digits + sizeof(digits);

    do {
        *--d = (u_char) ('0' + n % 10);
        n /= 10;
    } while (n);

    return ngx_cpymem(p, d, digits + sizeof(digits) - d);
}


ngx_int_t
ngx_http_ragnx_redis_eval(ngx_http_request_t *r,
    ngx_http_ragnx_redis_wait_t *w, ngx_http_ragnx_redis_srv_t *srv,
    ngx_uint_t script, int argc, const char **argv, const size_t *argvlen)
{
    int                                i;
    size_t                             lens[NGX_HTTP_RAGNX_REDIS_MAX_ARGS];
    const char                        *args[NGX_HTTP_RAGNX_REDIS_MAX_ARGS];
    ngx_http_ragnx_redis_script_t     *s;
    ngx_http_ragnx_redis_main_conf_t  *rmcf;

    if (argc + 2 > NGX_HTTP_RAGNX_REDIS_MAX_ARGS) {
        return NGX_ERROR;
    }

    rmcf = ngx_http_get_module_main_conf(r, ngx_http_ragnx_redis_module);
    s = rmcf->scripts.elts;

    args[0] = "EVALSHA";
    lens[0] = 7;
    args[1] = (const char *) s[script].sha;
    lens[1] = 40;

    for (i = 0; i < argc; i++) {
        args[i + 2] = argv[i];
        lens[i + 2] = argvlen[i];
    }

    return ngx_http_ragnx_redis_call(r, w, srv, argc + 2, args, lens);
}


static void
ngx_http_ragnx_redis_reply(redisAsyncContext *ac, void *reply,
    void *privdata)
{
    redisReply                   *rr = reply;
    ngx_http_ragnx_redis_cmd_t   *cmd = privdata;
    ngx_http_ragnx_redis_conn_t  *rc;
    ngx_http_ragnx_redis_time_t  *t;

    rc = cmd->conn;

    ngx_log_debug4(NGX_LOG_DEBUG_HTTP, rc->log, 0,
                   "ragnx redis \"%V\" reply type:%d, %ui pending%s",
                   &rc->srv->name, rr ? rr->type : 0, rc->pending,
                   cmd->wait || cmd->done ? "" : ", no one waits");

    if (rr) {
        rc->last_read = ngx_current_msec;
        rc->suspect = 0;

        if (rc->pending) {
            rc->pending--;
        }

        /* SCRIPT FLUSH on the server: load the scripts again */
        if (rr->type == REDIS_REPLY_ERROR && rr->len >= 8
            && ngx_strncmp(rr->str, "NOSCRIPT", 8) == 0)
        {
            ngx_http_ragnx_redis_load_scripts(rc);
        }

        ngx_http_ragnx_metrics_redis(rc->srv->role, cmd->start);

        if (cmd->wait && cmd->start) {
            t = ngx_http_get_module_ctx(cmd->wait->request,
                                        ngx_http_ragnx_redis_module);
            if (t) {
                t->us += ngx_http_ragnx_metrics_now() - cmd->start;
            }
        }

        if (rr->type == REDIS_REPLY_ERROR) {
            ngx_http_ragnx_metrics_count(
                redis_errors[rc->srv->role]
                            [NGX_HTTP_RAGNX_METRICS_REDIS_REPLY]);
        }

    } else if ((cmd->wait || cmd->done) && !ngx_http_ragnx_redis_exiting) {
        ngx_http_ragnx_metrics_count(
            redis_errors[rc->srv->role][NGX_HTTP_RAGNX_METRICS_REDIS_LOST]);
    }

    if (cmd->timer.timer_set) {
        ngx_del_timer(&cmd->timer);
    }

    if (cmd->wait) {
        ngx_http_ragnx_redis_wait_done(cmd->wait, rr,
                                       rr ? NGX_OK
                                          : NGX_HTTP_RAGNX_REDIS_DOWN);

    } else if (cmd->done) {
        cmd->done(cmd->data, rr);
    }

    if (rc->expiring == cmd) {
        rc->expiring = NULL;
    }

    ngx_free(cmd);
}


static void
ngx_http_ragnx_redis_cmd_timeout(ngx_event_t *ev)
{
    ngx_uint_t                    n, silent;
    ngx_msec_t                    now;
    ngx_msec_int_t                wait;
    ngx_http_ragnx_redis_cmd_t   *cmd;
    ngx_http_ragnx_redis_conn_t  *rc;

    cmd = ev->data;
    rc = cmd->conn;

    /*
     * Replies waiting unread in the socket (this worker was busy, and the
     * timer's turn came before the read's) may hold this command's: read
     * them first.  A script Redis ran before its deadline has written what
     * it wrote, and its request gets that reply, not a 503.  Bounded: 64
     * reads of hiredis's 16 KiB.  cmd is freed if its reply comes.
     */

    rc->expiring = cmd;

    for (n = 0;
         n < 64 && rc->expiring && rc->ac && ngx_http_ragnx_redis_unread(rc);
         n++)
    {
        redisAsyncHandleRead(rc->ac);
    }

    if (rc->expiring == NULL) {
        return;
    }

    rc->expiring = NULL;

    if (!cmd->overdue) {
        cmd->overdue = 1;
        ngx_http_ragnx_metrics_count(redis_timeouts[rc->srv->role]);
    }

    /*
     * A server that has answered nothing for three timeouts is presumed
     * gone (stopped, partitioned), unless replies wait unread in the
     * socket: the commands they answer were carried out.
     */

    now = ngx_current_msec;
    silent = rc->ac != NULL
             && now - rc->last_read >= 3 * rc->srv->timeout
             && !ngx_http_ragnx_redis_unread(rc);

    /*
     * A script with a deadline has acted or not by the time its reply is
     * written, and Redis may write it long after the deadline (a Redis
     * resuming from a stop drains its backlog before it writes replies):
     * a 503 on a timer could tell a client that nothing was asked when it
     * was.  So its request waits for the reply, or for the connection to
     * be given up; this timer only checks on the connection.
     */

    if (cmd->deadline && rc->ac) {
        if (cmd->wait && cmd->overdue == 1) {
            cmd->overdue = 2;
            ngx_log_error(NGX_LOG_WARN, rc->log, 0,
                          "ragnx redis \"%V\" script timed out, "
                          "waiting for its reply", &rc->srv->name);
        }

        if (silent && ngx_http_ragnx_redis_give_up(rc) == NGX_OK) {
            return;     /* cmd is freed, its request answered */
        }

        wait = silent ? (ngx_msec_int_t) (rc->deadline - now) + 1
                      : (ngx_msec_int_t) (rc->last_read
                                          + 3 * rc->srv->timeout - now);

        ngx_add_timer(&cmd->timer, (ngx_msec_t) ngx_max(wait, 1));
        return;
    }

    if (cmd->wait) {
        ngx_log_error(NGX_LOG_WARN, rc->log, 0,
                      "ragnx redis \"%V\" command timed out",
                      &rc->srv->name);

        ngx_http_ragnx_redis_wait_done(cmd->wait, NULL,
                                       NGX_HTTP_RAGNX_REDIS_TIMEOUT);

    } else if (cmd->done) {
        ngx_log_debug1(NGX_LOG_DEBUG_HTTP, rc->log, 0,
                       "ragnx redis \"%V\" command timed out",
                       &rc->srv->name);

        cmd->done(cmd->data, NULL);
        cmd->done = NULL;
    }

    /*
     * The command stays queued in hiredis and its late reply is dropped.
     * Giving the connection up frees cmd, so it comes last.
     */

    if (silent) {
        (void) ngx_http_ragnx_redis_give_up(rc);
    }
}


/*
 * Drop a silent connection and reconnect, failing its pending commands:
 * not while a script in it may still act (its deadline to come), since
 * its reply would be lost.  Until then no new command goes on it, and the
 * scripts' timers come back.  NGX_OK when dropped.
 */

static ngx_int_t
ngx_http_ragnx_redis_give_up(ngx_http_ragnx_redis_conn_t *rc)
{
    ngx_msec_int_t  left;

    left = (ngx_msec_int_t) (rc->deadline - ngx_current_msec);

    if (left >= 0) {
        rc->suspect = 1;

        /* looked at again then, whichever timers are left */
        if (!rc->timer.timer_set) {
            ngx_add_timer(&rc->timer, (ngx_msec_t) left + 1);
        }

        return NGX_AGAIN;
    }

    ngx_log_error(NGX_LOG_ERR, rc->log, 0,
                  "ragnx redis \"%V\" not answering, reconnecting",
                  &rc->srv->name);

    rc->suspect = 0;
    redisAsyncFree(rc->ac);

    return NGX_OK;
}


static ngx_int_t
ngx_http_ragnx_redis_unread(ngx_http_ragnx_redis_conn_t *rc)
{
    u_char  b;

    return rc->c != NULL
           && recv(rc->c->fd, &b, 1, MSG_PEEK|MSG_DONTWAIT) == 1;
}


/* the request side: detached on cleanup, resumed from a posted event */


static void
ngx_http_ragnx_redis_wait_done(ngx_http_ragnx_redis_wait_t *w,
    redisReply *reply, ngx_int_t rc)
{
    w->cmd->wait = NULL;
    w->cmd = NULL;
    w->rc = rc;

    ngx_log_debug1(NGX_LOG_DEBUG_HTTP, w->event.log, 0,
                   "ragnx redis reply for request, rc:%i", rc);

    w->reply(w->request, reply, rc);

    ngx_post_event(&w->event, &ngx_posted_events);
}


static void
ngx_http_ragnx_redis_wait_handler(ngx_event_t *ev)
{
    ngx_connection_t             *c;
    ngx_http_request_t           *r;
    ngx_http_ragnx_redis_wait_t  *w;

    w = ev->data;
    r = w->request;
    c = r->connection;

    ngx_log_debug2(NGX_LOG_DEBUG_HTTP, c->log, 0,
                   "ragnx redis resume \"%V\", rc:%i", &r->uri, w->rc);

    w->resume(r);

    ngx_http_run_posted_requests(c);
}


static void
ngx_http_ragnx_redis_wait_cleanup(void *data)
{
    ngx_http_ragnx_redis_wait_t  *w = data;

    if (w->cmd) {
        ngx_log_debug0(NGX_LOG_DEBUG_HTTP, w->event.log, 0,
                       "ragnx redis request gone, reply detached");

        /* the reply, when it comes, finds no request */
        w->cmd->wait = NULL;
        w->cmd = NULL;
    }

    if (w->event.posted) {
        ngx_delete_posted_event(&w->event);
    }
}


/* subscriptions: replies addressed to this worker */


/*
 * hiredis calls this for every message on the subscribed channel (and for
 * the SUBSCRIBE confirmation) with the same privdata, and once with a
 * NULL reply when the context goes away.  rc is per worker and outlives
 * the context.
 */

static void
ngx_http_ragnx_redis_sub_reply(redisAsyncContext *ac, void *reply,
    void *privdata)
{
    redisReply                   *rr = reply;
    ngx_str_t                     msg;
    redisReply                   *kind, *payload;
    ngx_http_ragnx_redis_sub_t   *sub;
    ngx_http_ragnx_redis_conn_t  *rc = privdata;

    sub = rc->sub;

    if (rr == NULL) {
        ngx_http_ragnx_redis_sub_lost(sub);
        return;
    }

    rc->last_read = ngx_current_msec;

    if (rr->type != REDIS_REPLY_ARRAY || rr->elements != 3
        || rr->element[0]->type != REDIS_REPLY_STRING)
    {
        ngx_log_error(NGX_LOG_ERR, rc->log, 0,
                      "ragnx redis \"%V\" unexpected reply on \"%V\"",
                      &rc->srv->name, &sub->channel);
        return;
    }

    kind = rr->element[0];
    payload = rr->element[2];

    if (kind->len == 7 && ngx_strncmp(kind->str, "message", 7) == 0) {

        if (payload->type != REDIS_REPLY_STRING) {
            return;
        }

        msg.data = (u_char *) payload->str;
        msg.len = payload->len;

        ngx_log_debug3(NGX_LOG_DEBUG_HTTP, rc->log, 0,
                       "ragnx redis \"%V\" message on \"%V\", %uz bytes",
                       &rc->srv->name, &sub->channel, msg.len);

        sub->handler(&msg, sub->data);
        return;
    }

    if (kind->len == 9 && ngx_strncmp(kind->str, "subscribe", 9) == 0) {
        ngx_log_error(NGX_LOG_INFO, rc->log, 0,
                      "ragnx redis \"%V\" subscribed to \"%V\"",
                      &rc->srv->name, &sub->channel);
        sub->subscribed = 1;
        rc->backoff = 0;
        return;
    }

    if (kind->len == 11 && ngx_strncmp(kind->str, "unsubscribe", 11) == 0) {
        ngx_http_ragnx_redis_sub_lost(sub);
    }
}


static void
ngx_http_ragnx_redis_sub_lost(ngx_http_ragnx_redis_sub_t *sub)
{
    if (!sub->subscribed) {
        ngx_log_debug2(NGX_LOG_DEBUG_HTTP, sub->conn->log, 0,
                       "ragnx redis \"%V\" subscription to \"%V\" "
                       "not held", &sub->srv->name, &sub->channel);
        return;
    }

    sub->subscribed = 0;

    if (!ngx_http_ragnx_redis_exiting) {
        ngx_log_error(NGX_LOG_ERR, sub->conn->log, 0,
                      "ragnx redis \"%V\" subscription to \"%V\" lost",
                      &sub->srv->name, &sub->channel);
    }

    sub->handler(NULL, sub->data);
}


ngx_http_ragnx_redis_sub_t *
ngx_http_ragnx_redis_subscribe(ngx_conf_t *cf,
    ngx_http_ragnx_redis_srv_t *srv, ngx_str_t *prefix,
    ngx_http_ragnx_redis_message_pt handler, void *data)
{
    ngx_uint_t                         i;
    ngx_http_ragnx_redis_sub_t        *sub, **subp;
    ngx_http_ragnx_redis_main_conf_t  *rmcf;

    rmcf = ngx_http_conf_get_module_main_conf(cf,
                                              ngx_http_ragnx_redis_module);

    subp = rmcf->subs.elts;

    for (i = 0; i < rmcf->subs.nelts; i++) {
        if (subp[i]->srv == srv
            && subp[i]->prefix.len == prefix->len
            && ngx_strncmp(subp[i]->prefix.data, prefix->data, prefix->len)
               == 0)
        {
            return subp[i];
        }
    }

    sub = ngx_pcalloc(cf->pool, sizeof(ngx_http_ragnx_redis_sub_t));
    if (sub == NULL) {
        return NULL;
    }

    subp = ngx_array_push(&rmcf->subs);
    if (subp == NULL) {
        return NULL;
    }

    sub->srv = srv;
    sub->prefix = *prefix;
    sub->handler = handler;
    sub->data = data;

    *subp = sub;

    return sub;
}


ngx_str_t *
ngx_http_ragnx_redis_channel(ngx_http_ragnx_redis_sub_t *sub)
{
    if (sub == NULL || !sub->subscribed) {
        return NULL;
    }

    return &sub->channel;
}


ngx_uint_t
ngx_http_ragnx_redis_ready(ngx_http_ragnx_redis_srv_t *srv)
{
    ngx_uint_t  i;

    if (srv->conns == NULL) {
        return 0;
    }

    for (i = 0; i < srv->size; i++) {
        if (srv->conns[i].state == NGX_HTTP_RAGNX_REDIS_READY) {
            return 1;
        }
    }

    return 0;
}


ngx_msec_t
ngx_http_ragnx_redis_timeout(ngx_http_ragnx_redis_srv_t *srv)
{
    return srv->timeout;
}


ngx_http_ragnx_redis_srv_t *
ngx_http_ragnx_redis_server(ngx_conf_t *cf, ngx_uint_t which)
{
    ngx_http_ragnx_redis_main_conf_t  *rmcf;

    rmcf = ngx_http_conf_get_module_main_conf(cf,
                                              ngx_http_ragnx_redis_module);

    if (which == NGX_HTTP_RAGNX_REDIS_CACHE && rmcf->cache) {
        return rmcf->cache;
    }

    return rmcf->queue;
}


ngx_int_t
ngx_http_ragnx_redis_script(ngx_conf_t *cf, ngx_str_t *body)
{
    unsigned int                       i, len;
    u_char                             md[EVP_MAX_MD_SIZE];
    ngx_http_ragnx_redis_script_t     *s;
    ngx_http_ragnx_redis_main_conf_t  *rmcf;
    static u_char                      hex[] = "0123456789abcdef";

    rmcf = ngx_http_conf_get_module_main_conf(cf,
                                              ngx_http_ragnx_redis_module);

    s = rmcf->scripts.elts;

    for (i = 0; i < rmcf->scripts.nelts; i++) {
        if (s[i].body.data == body->data) {
            return i;
        }
    }

    s = ngx_array_push(&rmcf->scripts);
    if (s == NULL) {
        return NGX_ERROR;
    }

    s->body = *body;

    if (EVP_Digest(body->data, body->len, md, &len, EVP_sha1(), NULL) != 1) {
        return NGX_ERROR;
    }

    for (i = 0; i < len; i++) {
        s->sha[2 * i] = hex[md[i] >> 4];
        s->sha[2 * i + 1] = hex[md[i] & 0xf];
    }

    s->sha[40] = '\0';

    return rmcf->scripts.nelts - 1;
}


/* configuration and process lifetime */


/*
 * $ragnx_redis_time: seconds with microseconds, as "0.000153"; not found
 * for a request that sent no command (or, after an internal redirect to
 * an error page, whose ctx nginx cleared).
 */

static ngx_int_t
ngx_http_ragnx_redis_time_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data)
{
    u_char                       *p;
    ngx_http_ragnx_redis_time_t  *t;

    t = ngx_http_get_module_ctx(r, ngx_http_ragnx_redis_module);

    if (t == NULL) {
        v->not_found = 1;
        return NGX_OK;
    }

    p = ngx_pnalloc(r->pool, NGX_TIME_T_LEN + 8);
    if (p == NULL) {
        return NGX_ERROR;
    }

    v->len = ngx_sprintf(p, "%uL.%06uL", t->us / 1000000, t->us % 1000000)
             - p;
    v->data = p;
    v->valid = 1;
    v->no_cacheable = 0;
    v->not_found = 0;

    return NGX_OK;
}


static ngx_int_t
ngx_http_ragnx_redis_add_variables(ngx_conf_t *cf)
{
    ngx_http_variable_t  *var;

    var = ngx_http_add_variable(cf, &ngx_http_ragnx_redis_time_name,
                                NGX_HTTP_VAR_NOCACHEABLE);
    if (var == NULL) {
        return NGX_ERROR;
    }

    var->get_handler = ngx_http_ragnx_redis_time_variable;

    return NGX_OK;
}


static void *
ngx_http_ragnx_redis_create_main_conf(ngx_conf_t *cf)
{
    ngx_http_ragnx_redis_main_conf_t  *rmcf;

    rmcf = ngx_pcalloc(cf->pool, sizeof(ngx_http_ragnx_redis_main_conf_t));
    if (rmcf == NULL) {
        return NULL;
    }

    rmcf->timeout = NGX_CONF_UNSET_MSEC;
    rmcf->connect_timeout = NGX_CONF_UNSET_MSEC;
    rmcf->max_pending = NGX_CONF_UNSET_UINT;

    if (ngx_array_init(&rmcf->scripts, cf->pool, 4,
                       sizeof(ngx_http_ragnx_redis_script_t))
        != NGX_OK)
    {
        return NULL;
    }

    if (ngx_array_init(&rmcf->subs, cf->pool, 1,
                       sizeof(ngx_http_ragnx_redis_sub_t *))
        != NGX_OK)
    {
        return NULL;
    }

    return rmcf;
}


static char *
ngx_http_ragnx_redis_init_main_conf(ngx_conf_t *cf, void *conf)
{
    ngx_http_ragnx_redis_main_conf_t  *rmcf = conf;

    ngx_uint_t                   i;
    ngx_http_ragnx_redis_srv_t  *srv[2];

    ngx_conf_init_msec_value(rmcf->timeout, 500);
    ngx_conf_init_msec_value(rmcf->connect_timeout, 1000);
    ngx_conf_init_uint_value(rmcf->max_pending, 4096);

    if (rmcf->cache && rmcf->queue == NULL) {
        ngx_log_error(NGX_LOG_EMERG, cf->log, 0,
                      "no \"ragnx_redis\" is defined for the "
                      "\"ragnx_redis_cache\" directive in %s:%ui",
                      rmcf->cache->file, rmcf->cache->line);
        return NGX_CONF_ERROR;
    }

    srv[0] = rmcf->queue;
    srv[1] = rmcf->cache;

    for (i = 0; i < 2; i++) {
        if (srv[i]) {
            srv[i]->timeout = rmcf->timeout;
            srv[i]->connect_timeout = rmcf->connect_timeout;
            srv[i]->max_pending = rmcf->max_pending;
        }
    }

    return NGX_CONF_OK;
}


static ngx_int_t
ngx_http_ragnx_redis_init_process(ngx_cycle_t *cycle)
{
    u_char                            *p;
    ngx_uint_t                         i, k;
    ngx_http_ragnx_redis_sub_t       **subp, *sub;
    ngx_http_ragnx_redis_srv_t        *srv[2];
    ngx_http_ragnx_redis_main_conf_t  *rmcf;

    if (ngx_process != NGX_PROCESS_WORKER
        && ngx_process != NGX_PROCESS_SINGLE)
    {
        return NGX_OK;
    }

    rmcf = ngx_http_cycle_get_module_main_conf(cycle,
                                               ngx_http_ragnx_redis_module);
    if (rmcf == NULL) {
        return NGX_OK;
    }

    ngx_http_ragnx_redis_exiting = 0;

    srv[0] = rmcf->queue;
    srv[1] = rmcf->cache;

    for (k = 0; k < 2; k++) {
        if (srv[k] == NULL) {
            continue;
        }

        srv[k]->conns = ngx_pcalloc(cycle->pool,
                                    srv[k]->size
                                    * sizeof(ngx_http_ragnx_redis_conn_t));
        if (srv[k]->conns == NULL) {
            return NGX_ERROR;
        }

        for (i = 0; i < srv[k]->size; i++) {
            ngx_http_ragnx_redis_conn_init(&srv[k]->conns[i], srv[k], cycle);
        }
    }

    subp = rmcf->subs.elts;

    for (i = 0; i < rmcf->subs.nelts; i++) {
        sub = subp[i];

        /* the channel names this worker: <prefix><hostname>:<pid> */

        sub->channel.data = ngx_pnalloc(cycle->pool,
                                        sub->prefix.len
                                        + cycle->hostname.len + 1
                                        + NGX_INT64_LEN);
        sub->conn = ngx_pcalloc(cycle->pool,
                                sizeof(ngx_http_ragnx_redis_conn_t));

        if (sub->channel.data == NULL || sub->conn == NULL) {
            return NGX_ERROR;
        }

        p = ngx_sprintf(sub->channel.data, "%V%V:%P", &sub->prefix,
                        &cycle->hostname, ngx_pid);
        sub->channel.len = p - sub->channel.data;
        sub->subscribed = 0;

        sub->conn->sub = sub;
        ngx_http_ragnx_redis_conn_init(sub->conn, sub->srv, cycle);
    }

    return NGX_OK;
}


static void
ngx_http_ragnx_redis_conn_init(ngx_http_ragnx_redis_conn_t *rc,
    ngx_http_ragnx_redis_srv_t *srv, ngx_cycle_t *cycle)
{
    rc->srv = srv;
    rc->log = cycle->log;
    rc->timer.handler = ngx_http_ragnx_redis_timer_handler;
    rc->timer.data = rc;
    rc->timer.log = cycle->log;
    rc->timer.cancelable = 1;
    rc->flush.handler = ngx_http_ragnx_redis_flush_handler;
    rc->flush.data = rc;
    rc->flush.log = cycle->log;
    rc->later.handler = ngx_http_ragnx_redis_flush_handler;
    rc->later.data = rc;
    rc->later.log = cycle->log;   /* not cancelable: shutdown waits */

    ngx_http_ragnx_redis_connect(rc);
}


static void
ngx_http_ragnx_redis_exit_process(ngx_cycle_t *cycle)
{
    ngx_uint_t                         i, k;
    ngx_http_ragnx_redis_sub_t       **subp;
    ngx_http_ragnx_redis_srv_t        *srv[2];
    ngx_http_ragnx_redis_conn_t       *rc;
    ngx_http_ragnx_redis_main_conf_t  *rmcf;

    rmcf = ngx_http_cycle_get_module_main_conf(cycle,
                                               ngx_http_ragnx_redis_module);
    if (rmcf == NULL) {
        return;
    }

    ngx_http_ragnx_redis_exiting = 1;

    srv[0] = rmcf->queue;
    srv[1] = rmcf->cache;

    for (k = 0; k < 2; k++) {
        if (srv[k] == NULL || srv[k]->conns == NULL) {
            continue;
        }

        for (i = 0; i < srv[k]->size; i++) {
            rc = &srv[k]->conns[i];

            if (rc->timer.timer_set) {
                ngx_del_timer(&rc->timer);
            }

            if (rc->later.timer_set) {
                ngx_del_timer(&rc->later);
            }

            if (rc->ac) {
                redisAsyncFree(rc->ac);
            }
        }
    }

    subp = rmcf->subs.elts;

    for (i = 0; i < rmcf->subs.nelts; i++) {
        rc = subp[i]->conn;

        if (rc == NULL) {
            continue;
        }

        if (rc->timer.timer_set) {
            ngx_del_timer(&rc->timer);
        }

        if (rc->ac) {
            redisAsyncFree(rc->ac);
        }
    }

    ngx_free(ngx_http_ragnx_redis_buf);
    ngx_http_ragnx_redis_buf = NULL;
    ngx_http_ragnx_redis_buf_size = 0;
}


/*
 * ragnx_redis ADDRESS [db=N] [pool=N] [user=NAME] [password_file=PATH];
 * ADDRESS is host:port (resolved now, never per request) or unix:/path.
 * With user=, AUTH names that ACL user; it needs a password_file.
 */

static char *
ngx_http_ragnx_redis_server_conf(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf)
{
    char  *p = conf;

    u_char                       *s;
    size_t                        len;
    ssize_t                       n;
    ngx_fd_t                      fd;
    ngx_str_t                    *value, path;
    ngx_url_t                     u;
    ngx_uint_t                    i;
    ngx_file_info_t               fi;
    ngx_http_ragnx_redis_srv_t  **field, *srv;

    field = (ngx_http_ragnx_redis_srv_t **) (p + cmd->offset);

    if (*field) {
        return "is duplicate";
    }

    value = cf->args->elts;

    srv = ngx_pcalloc(cf->pool, sizeof(ngx_http_ragnx_redis_srv_t));
    if (srv == NULL) {
        return NGX_CONF_ERROR;
    }

    srv->name = value[1];
    srv->size = 2;
    srv->role = (cmd->offset
                 == offsetof(ngx_http_ragnx_redis_main_conf_t, cache))
                ? NGX_HTTP_RAGNX_REDIS_CACHE : NGX_HTTP_RAGNX_REDIS_QUEUE;
    srv->file = cf->conf_file->file.name.data;
    srv->line = cf->conf_file->line;

    ngx_memzero(&u, sizeof(ngx_url_t));
    u.url = value[1];
    u.default_port = 6379;

    if (ngx_parse_url(cf->pool, &u) != NGX_OK) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid redis address \"%V\" in \"%V\": %s",
                           &value[1], &cmd->name,
                           u.err ? u.err : "cannot parse");
        return NGX_CONF_ERROR;
    }

    if (u.naddrs == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "no address for \"%V\" in \"%V\"",
                           &value[1], &cmd->name);
        return NGX_CONF_ERROR;
    }

    if (u.family == AF_UNIX) {
        len = value[1].len - 5;
        srv->path = ngx_pnalloc(cf->pool, len + 1);
        if (srv->path == NULL) {
            return NGX_CONF_ERROR;
        }

        ngx_cpystrn((u_char *) srv->path, value[1].data + 5, len + 1);

    } else {
        srv->host = ngx_pcalloc(cf->pool, NGX_SOCKADDR_STRLEN + 1);
        if (srv->host == NULL) {
            return NGX_CONF_ERROR;
        }

        (void) ngx_sock_ntop(u.addrs[0].sockaddr, u.addrs[0].socklen,
                             (u_char *) srv->host, NGX_SOCKADDR_STRLEN, 0);
        srv->port = ngx_inet_get_port(u.addrs[0].sockaddr);
    }

    for (i = 2; i < cf->args->nelts; i++) {

        if (ngx_strncmp(value[i].data, "db=", 3) == 0) {
            srv->db = ngx_atoi(value[i].data + 3, value[i].len - 3);
            if (srv->db == NGX_ERROR) {
                goto invalid;
            }

            continue;
        }

        if (ngx_strncmp(value[i].data, "pool=", 5) == 0) {
            n = ngx_atoi(value[i].data + 5, value[i].len - 5);
            if (n <= 0 || n > 64) {
                goto invalid;
            }

            srv->size = n;
            continue;
        }

        if (ngx_strncmp(value[i].data, "user=", 5) == 0) {
            srv->user.data = value[i].data + 5;
            srv->user.len = value[i].len - 5;

            if (srv->user.len == 0 || srv->user.len > 128) {
                goto invalid;
            }

            for (s = srv->user.data; s < srv->user.data + srv->user.len; s++)
            {
                if (*s <= ' ' || *s == 0x7f) {
                    goto invalid;
                }
            }

            continue;
        }

        if (ngx_strncmp(value[i].data, "password_file=", 14) == 0) {
            path.data = value[i].data + 14;
            path.len = value[i].len - 14;

            if (ngx_conf_full_name(cf->cycle, &path, 1) != NGX_OK) {
                return NGX_CONF_ERROR;
            }

            fd = ngx_open_file(path.data, NGX_FILE_RDONLY, NGX_FILE_OPEN, 0);
            if (fd == NGX_INVALID_FILE) {
                ngx_conf_log_error(NGX_LOG_EMERG, cf, ngx_errno,
                                   "cannot open redis password file \"%V\"",
                                   &path);
                return NGX_CONF_ERROR;
            }

            if (ngx_fd_info(fd, &fi) == NGX_FILE_ERROR
                || ngx_file_size(&fi) > 4096)
            {
                ngx_close_file(fd);
                ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                                   "bad redis password file \"%V\"", &path);
                return NGX_CONF_ERROR;
            }

            len = (size_t) ngx_file_size(&fi);
            s = ngx_pnalloc(cf->pool, len + 1);
            if (s == NULL) {
                ngx_close_file(fd);
                return NGX_CONF_ERROR;
            }

            n = ngx_read_fd(fd, s, len);
            ngx_close_file(fd);

            if (n != (ssize_t) len) {
                ngx_conf_log_error(NGX_LOG_EMERG, cf, ngx_errno,
                                   "cannot read redis password file \"%V\"",
                                   &path);
                return NGX_CONF_ERROR;
            }

            while (len && (s[len - 1] == '\n' || s[len - 1] == '\r')) {
                len--;
            }

            if (len == 0) {
                ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                                   "empty redis password file \"%V\"",
                                   &path);
                return NGX_CONF_ERROR;
            }

            srv->password.data = s;
            srv->password.len = len;
            continue;
        }

        goto invalid;
    }

    if (srv->user.len && srv->password.len == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"user=\" requires \"password_file=\" in \"%V\"",
                           &cmd->name);
        return NGX_CONF_ERROR;
    }

    *field = srv;

    return NGX_CONF_OK;

invalid:

    ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                       "invalid parameter \"%V\" in \"%V\"", &value[i],
                       &cmd->name);

    return NGX_CONF_ERROR;
}
