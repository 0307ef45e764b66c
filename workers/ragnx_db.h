
/*
 * ragnx worker pool: what the PostgreSQL files share beyond
 * ragnx_worker.h.  A request is the statements of one job step (at most
 * 3), named by their index in ragnx_statements (ragnx_store.c, the
 * domain SQL); ragnx_db_pipeline.c runs queued requests in pipelines on
 * the connections of the pool (ragnx_db.c): see ragnx_db_submit().
 */


#ifndef RAGNX_DB_H
#define RAGNX_DB_H


#include <pthread.h>
#include <libpq-fe.h>

#include "ragnx_worker.h"


#define RAGNX_DB_REQ_MAX    3

typedef struct ragnx_db_req_s  ragnx_db_req_t;

struct ragnx_db_req_s {
    ragnx_db_req_t     *next;
    pthread_cond_t      cond;
    int                 n;
    const int          *stmts;
    const char *const  *params[RAGNX_DB_REQ_MAX];
    PGresult           *res[RAGNX_DB_REQ_MAX];
    int                 state;          /* RAGNX_DB_QUEUED ... */
    int                 ok;
    int                 failure;        /* when not ok: RAGNX_DB_E... */
};

/* why a request failed */
#define RAGNX_DB_ESTATEMENT    0        /* a statement's error */
#define RAGNX_DB_ETIMEDOUT     1        /* no answer in db_query_timeout */
#define RAGNX_DB_ELOST         2        /* the connection was lost */
#define RAGNX_DB_EUNAVAILABLE  3        /* connecting failed */
#define RAGNX_DB_EBUSY         4        /* no connection free in time */


struct ragnx_db_pool_s {
    pthread_mutex_t   lock;
    pthread_cond_t    cond;
    ragnx_db_req_t   *head;         /* requests waiting for a connection */
    int               queued;       /* how many */
    int               holders;      /* connections serving the queue */
    unsigned long     served;       /* pipelines they have finished */
    ragnx_db_req_t  **tail;
    PGconn          **idle;
    int               nidle;
    int               total;        /* open or lent connections */
    int               size;
    long              timeout;
    char             *conninfo;
    char             *password;
};


/* statements prepared on the pooled connections, on first use */

typedef struct {
    const char   *name;
    int           nparams;
    const char   *sql;
} ragnx_db_stmt_t;

#define RAGNX_STMT_CHAT      0
#define RAGNX_STMT_HISTORY   1
#define RAGNX_STMT_RETRIEVE  2
#define RAGNX_STMT_EXCHANGE  3
#define RAGNX_STMT_PLAIN     4
#define RAGNX_STMT_N         5

extern const ragnx_db_stmt_t  ragnx_statements[];


PGconn *ragnx_db_pool_connect(ragnx_db_pool_t *pool);
void ragnx_db_purge(ragnx_db_pool_t *pool);
int ragnx_db_submit(ragnx_db_pool_t *pool, ragnx_db_req_t *req);
const char *ragnx_db_reason(const ragnx_db_req_t *req);
int ragnx_db_ok(PGconn *conn, PGresult *res, ExecStatusType want,
    const char *what);
int ragnx_db_wait(PGconn *conn, long long deadline);
void ragnx_db_log_failure(PGconn *conn, int rc, const char *what);


#endif /* RAGNX_DB_H */
