
/*
 * ragnx worker pool: the command line, the supervisor and the worker
 * processes.
 *
 *   ragnx-worker [-c file] [-t | -T]        run the pool (foreground)
 *   ragnx-worker [-c file] migrate          apply sql/ migrations
 *   ragnx-worker [-c file] ingest [--prune] PATH...
 *   ragnx-worker [-c file] jobs [retry ID | drop ID]
 *
 * The supervisor forks `workers` processes and restarts any that dies.
 * Each worker process runs `concurrency` job threads (each with its own
 * Redis connection and curl handle; Postgres connections come from a pool
 * of db_pool / workers) and one maintenance thread.  Signal handlers only
 * set flags.  SIGTERM drains: the supervisor passes it on, workers stop
 * reading, finish their jobs (up to drain_timeout) and exit 0; a second
 * SIGTERM exits at once.  SIGHUP re-reads the configuration and, when it
 * is valid, replaces the workers gracefully (old ones drain); when it is
 * not, logs why and keeps the old one.  Both SIGHUP and SIGUSR1 open
 * log_file again by its name, in the supervisor and every worker
 * process; SIGUSR1 does only that.
 */


#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <curl/curl.h>

#include "ragnx_worker.h"


#define RAGNX_MAX_WORKERS     64


typedef struct {
    pid_t         pid;
    int           retiring;        /* draining after a reload */
    long long     started;
} ragnx_proc_t;


volatile sig_atomic_t  ragnx_quit;
volatile sig_atomic_t  ragnx_reload;
static volatile sig_atomic_t  ragnx_relog;
int                    ragnx_gen_claim;
static volatile sig_atomic_t  ragnx_reopen;
static volatile sig_atomic_t  ragnx_child;
static volatile sig_atomic_t  ragnx_terms;

static ragnx_proc_t     ragnx_procs[RAGNX_MAX_WORKERS * 2];
static ragnx_redis_t    ragnx_super_redis;  /* the supervisor's handovers */
static char            *ragnx_pid_file;     /* the pid file written */
static int              ragnx_running;
static pthread_mutex_t  ragnx_running_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t   ragnx_running_cond;


static void ragnx_usage(void);
static void ragnx_signal(int signo);
static void ragnx_worker_signal(int signo);
static int ragnx_supervise(void);
static int ragnx_pid_write(const char *path);
static void ragnx_pid_remove(void);
static pid_t ragnx_spawn(int index);
static void ragnx_handover(pid_t pid);
static void ragnx_worker_process(int index);
static void ragnx_worker_reopen(void);
static void *ragnx_job_thread(void *data);
static void *ragnx_call_thread(void *data);
static int ragnx_cmd_migrate(void);


static void
ragnx_usage(void)
{
    fprintf(stderr,
            "usage: ragnx-worker [-c file] [-t | -T]\n"
            "       ragnx-worker [-c file] migrate\n"
            "       ragnx-worker [-c file] ingest [--prune] PATH...\n"
            "       ragnx-worker [-c file] jobs [retry ID | drop ID]\n"
            "\n"
            "  -c file  configuration file (default: $RAGNX_CONFIG)\n"
            "  -t       check the configuration and exit\n"
            "  -T       check, print the effective settings and exit\n");
}


int
main(int argc, char **argv)
{
    int            i, test, rc;
    char           err[1024];
    unsigned       flags;
    const char    *path;
    ragnx_conf_t  *conf;

    path = getenv("RAGNX_CONFIG");
    test = 0;

    for (i = 1; i < argc && argv[i][0] == '-'; i++) {
        if (strcmp(argv[i], "-c") == 0 && i + 1 < argc) {
            path = argv[++i];

        } else if (strcmp(argv[i], "-t") == 0) {
            test = 1;

        } else if (strcmp(argv[i], "-T") == 0) {
            test = 2;

        } else if (strcmp(argv[i], "-v") == 0) {
            printf("ragnx-worker " RAGNX_VERSION "\n");
            return 0;

        } else {
            ragnx_usage();
            return 2;
        }
    }

    /*
     * The pool and -t read the key files; the commands sign no token and
     * open no call, so a key that is absent or unreadable where they run
     * does not stop them.
     */
    flags = RAGNX_CONF_KEYS;
    if (!test && i < argc
        && (strcmp(argv[i], "migrate") == 0 || strcmp(argv[i], "ingest") == 0
            || strcmp(argv[i], "jobs") == 0))
    {
        flags = 0;
    }

    conf = ragnx_conf_load(path, flags, err, sizeof(err));
    if (conf == NULL) {
        fprintf(stderr, "ragnx-worker: %s\n", err);
        if (test) {
            fprintf(stderr, "ragnx-worker: configuration test failed\n");
        }

        return 1;
    }

    ragnx_conf = conf;
    ragnx_queue_init();

    if (test) {
        if (test == 2) {
            ragnx_conf_dump(conf);
        }

        fprintf(stderr, "ragnx-worker: configuration %s is ok\n",
                path ? path : "(defaults)");
        return 0;
    }

    if (i < argc) {
        if (strcmp(argv[i], "migrate") == 0 && i + 1 == argc) {
            rc = ragnx_cmd_migrate();

        } else if (strcmp(argv[i], "ingest") == 0 && i + 1 < argc) {
            rc = ragnx_ingest(argc - i - 1, argv + i + 1);

        } else if (strcmp(argv[i], "jobs") == 0) {
            rc = ragnx_jobs_cli(argc - i - 1, argv + i + 1);

        } else {
            ragnx_usage();
            rc = 2;
        }

        ragnx_conf_free(conf);
        return rc;
    }

    if (ragnx_log_open(conf->log_file) != RAGNX_OK) {
        fprintf(stderr, "ragnx-worker: log_file: cannot open \"%s\": %s\n",
                conf->log_file, strerror(errno));
        return 1;
    }

    return ragnx_supervise();
}


static int
ragnx_cmd_migrate(void)
{
    int      rc;
    PGconn  *conn;

    conn = ragnx_db_connect(ragnx_conf->database,
                            ragnx_conf->database_password);
    if (conn == NULL) {
        return 1;
    }

    rc = ragnx_db_migrate(conn);
    PQfinish(conn);

    return rc == RAGNX_OK ? 0 : 1;
}


/* supervisor */


static void
ragnx_signal(int signo)
{
    switch (signo) {

    case SIGTERM:
    case SIGINT:
        ragnx_quit = 1;
        ragnx_terms++;
        break;

    case SIGHUP:
        ragnx_reload = 1;
        break;

    case SIGUSR1:
        ragnx_relog = 1;
        break;

    case SIGCHLD:
        ragnx_child = 1;
        break;
    }
}


static pid_t
ragnx_spawn(int index)
{
    pid_t  pid, parent;

    parent = getpid();
    pid = fork();

    if (pid == -1) {
        ragnx_log(RAGNX_LOG_ERROR, "fork failed: %s", strerror(errno));
        return -1;
    }

    if (pid == 0) {
        /* a supervisor killed with SIGKILL must not leave orphans */
        prctl(PR_SET_PDEATHSIG, SIGTERM);
        if (getppid() != parent) {
            _exit(0);
        }

        ragnx_worker_process(index);
        _exit(0);
    }

    ragnx_log(RAGNX_LOG_INFO, "started worker %d, pid %d", index, (int) pid);

    return pid;
}


static int
ragnx_supervise(void)
{
    int               i, n, rc, status, alive, forwarded;
    char              err[1024];
    pid_t             pid;
    sigset_t          mask, old;
    ragnx_conf_t     *conf, *current;
    struct sigaction  sa;

    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = ragnx_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGHUP, &sa, NULL);
    sigaction(SIGUSR1, &sa, NULL);
    sigaction(SIGCHLD, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);

    sigemptyset(&mask);
    sigaddset(&mask, SIGTERM);
    sigaddset(&mask, SIGINT);
    sigaddset(&mask, SIGHUP);
    sigaddset(&mask, SIGUSR1);
    sigaddset(&mask, SIGCHLD);
    sigprocmask(SIG_BLOCK, &mask, &old);

    ragnx_log_set_prefix("supervisor");

    if (ragnx_redis_check() != RAGNX_OK) {
        ragnx_log(RAGNX_LOG_ERROR, "redis refused the credentials: "
                  "not starting");
        return 1;
    }

    if (ragnx_conf->pid_file
        && ragnx_pid_write(ragnx_conf->pid_file) != RAGNX_OK)
    {
        return 1;
    }

    if (curl_global_init(CURL_GLOBAL_ALL) != CURLE_OK) {
        ragnx_log(RAGNX_LOG_ERROR, "curl_global_init failed");
        return 1;
    }

    ragnx_log(RAGNX_LOG_INFO, "ragnx-worker " RAGNX_VERSION " starting: %ld "
              "workers x %ld jobs, provider %s, model %s", ragnx_conf->workers,
              ragnx_conf->concurrency, ragnx_conf->llm_provider,
              ragnx_conf->llm_model);

    /*
     * workers started with the pool or a reload claim the cache
     * generation for their model; one restarted after a crash does not
     * take it from another model's pools
     */
    ragnx_gen_claim = 1;

    n = (int) ragnx_conf->workers;
    for (i = 0; i < n; i++) {
        ragnx_procs[i].pid = ragnx_spawn(i);
        ragnx_procs[i].started = ragnx_mono_ms();
    }

    ragnx_gen_claim = 0;

    forwarded = 0;

    for ( ;; ) {
        sigsuspend(&old);

        if (ragnx_child) {
            ragnx_child = 0;

            while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
                for (i = 0; i < RAGNX_MAX_WORKERS * 2; i++) {
                    if (ragnx_procs[i].pid != pid) {
                        continue;
                    }

                    if (WIFSIGNALED(status)) {
                        ragnx_log(ragnx_quit ? RAGNX_LOG_INFO
                                             : RAGNX_LOG_ERROR,
                                  "worker %d (pid %d) exited on signal %d",
                                  i, (int) pid, WTERMSIG(status));
                    } else {
                        ragnx_log(RAGNX_LOG_INFO,
                                  "worker %d (pid %d) exited with code %d",
                                  i, (int) pid, WEXITSTATUS(status));
                    }

                    ragnx_procs[i].pid = 0;
                    ragnx_handover(pid);

                    if (ragnx_quit || ragnx_procs[i].retiring
                        || i >= ragnx_conf->workers)
                    {
                        ragnx_procs[i].retiring = 0;
                        break;
                    }

                    /* a crash: restart, not faster than once a second */
                    if (ragnx_mono_ms() - ragnx_procs[i].started < 1000) {
                        ragnx_sleep_ms(1000);
                    }

                    ragnx_procs[i].pid = ragnx_spawn(i);
                    ragnx_procs[i].started = ragnx_mono_ms();
                    break;
                }
            }
        }

        /*
         * log_file again by its name (logrotate moves it, then sends
         * SIGUSR1 or SIGHUP), here and in the workers; on SIGHUP whether
         * the new configuration turns out valid or not
         */

        if ((ragnx_relog || ragnx_reload) && !ragnx_quit) {
            ragnx_relog = 0;

            if (ragnx_log_reopen() != RAGNX_OK) {
                ragnx_log(RAGNX_LOG_ERROR, "log_file: cannot reopen "
                          "\"%s\": %s", ragnx_log_file(), strerror(errno));

            } else if (ragnx_log_file()) {
                ragnx_log(RAGNX_LOG_INFO, "log_file reopened");
            }

            for (i = 0; i < RAGNX_MAX_WORKERS * 2; i++) {
                if (ragnx_procs[i].pid) {
                    kill(ragnx_procs[i].pid, SIGUSR1);
                }
            }
        }

        if (ragnx_reload && !ragnx_quit) {
            ragnx_reload = 0;

            conf = ragnx_conf_load(ragnx_conf->config_file,
                                   RAGNX_CONF_KEYS, err, sizeof(err));
            if (conf == NULL) {
                ragnx_log(RAGNX_LOG_ERROR, "reload failed, keeping the "
                          "current configuration: %s", err);
                continue;
            }

            /* the new credentials must work before the old ones go */
            current = ragnx_conf;
            ragnx_conf = conf;
            rc = ragnx_redis_check();
            ragnx_conf = current;

            if (rc != RAGNX_OK) {
                ragnx_log(RAGNX_LOG_ERROR, "reload failed, keeping the "
                          "current configuration: redis refused the new "
                          "credentials");
                ragnx_conf_free(conf);
                continue;
            }

            ragnx_log(RAGNX_LOG_INFO, "reloading: replacing the workers");

            /* handovers connect again, with the new settings */
            ragnx_redis_close(&ragnx_super_redis);

            /* the old workers drain in their slots + RAGNX_MAX_WORKERS */
            for (i = 0; i < RAGNX_MAX_WORKERS; i++) {
                if (ragnx_procs[i].pid == 0) {
                    continue;
                }

                n = i + RAGNX_MAX_WORKERS;

                if (ragnx_procs[n].pid != 0) {
                    /* still draining from an earlier reload: hurry it */
                    kill(ragnx_procs[n].pid, SIGTERM);
                    continue;
                }

                ragnx_procs[n] = ragnx_procs[i];
                ragnx_procs[n].retiring = 1;
                ragnx_procs[i].pid = 0;
                kill(ragnx_procs[n].pid, SIGTERM);
            }

            ragnx_conf_free(ragnx_conf);
            ragnx_conf = conf;

            ragnx_gen_claim = 1;

            for (i = 0; i < ragnx_conf->workers; i++) {
                if (ragnx_procs[i].pid == 0) {
                    ragnx_procs[i].pid = ragnx_spawn(i);
                    ragnx_procs[i].started = ragnx_mono_ms();
                }
            }

            ragnx_gen_claim = 0;
        }

        if (ragnx_quit) {
            if (forwarded < ragnx_terms) {
                ragnx_log(RAGNX_LOG_INFO, forwarded == 0
                          ? "draining: waiting for jobs in flight"
                          : "second SIGTERM: exiting now");
                forwarded = ragnx_terms;

                for (i = 0; i < RAGNX_MAX_WORKERS * 2; i++) {
                    if (ragnx_procs[i].pid) {
                        kill(ragnx_procs[i].pid, SIGTERM);

                        if (forwarded > 1) {
                            kill(ragnx_procs[i].pid, SIGTERM);
                        }
                    }
                }
            }

            alive = 0;
            for (i = 0; i < RAGNX_MAX_WORKERS * 2; i++) {
                alive += ragnx_procs[i].pid != 0;
            }

            if (alive == 0) {
                break;
            }
        }
    }

    ragnx_log(RAGNX_LOG_INFO, "exiting");

    ragnx_pid_remove();
    ragnx_redis_close(&ragnx_super_redis);

    curl_global_cleanup();
    ragnx_conf_free(ragnx_conf);

    return forwarded > 1 ? 1 : 0;
}


/*
 * A worker process is gone, and every thread of it with it: the entries
 * its consumers still held (a crash, a second SIGTERM, a drain cut at
 * drain_timeout) go back to their streams at once, for the living,
 * instead of waiting out visibility_timeout.  Nothing of that process
 * can still be running their jobs, so none runs twice at once.
 */

static void
ragnx_handover(pid_t pid)
{
    char  prefix[80];

    ragnx_consumer_prefix(prefix, sizeof(prefix), (long) pid);

    /* the kept connection may have gone stale (Redis restarted): again */
    if (ragnx_queue_handover(&ragnx_super_redis, prefix) != RAGNX_OK
        && ragnx_super_redis.ctx == NULL
        && ragnx_queue_handover(&ragnx_super_redis, prefix) != RAGNX_OK)
    {
        ragnx_log(RAGNX_LOG_WARN, "could not hand over the entries of "
                  "%s*: they are requeued after visibility_timeout", prefix);
    }
}


/*
 * The pid file: written at start; removed at exit only if it is the one
 * this process wrote and still holds its pid.  pid_file takes a restart
 * to change, so a reload that sets or changes it must not make the exit
 * remove a file this process never wrote (another instance's, say).
 */

static int
ragnx_pid_write(const char *path)
{
    FILE  *f;

    f = fopen(path, "w");
    if (f == NULL) {
        ragnx_log(RAGNX_LOG_ERROR, "pid_file: cannot write \"%s\": %s",
                  path, strerror(errno));
        return RAGNX_ERROR;
    }

    fprintf(f, "%d\n", (int) getpid());

    if (fclose(f) != 0) {
        ragnx_log(RAGNX_LOG_ERROR, "pid_file: cannot write \"%s\": %s",
                  path, strerror(errno));
        unlink(path);
        return RAGNX_ERROR;
    }

    ragnx_pid_file = strdup(path);

    return RAGNX_OK;
}


static void
ragnx_pid_remove(void)
{
    int    pid;
    FILE  *f;

    if (ragnx_pid_file == NULL) {
        return;
    }

    f = fopen(ragnx_pid_file, "r");

    if (f) {
        if (fscanf(f, "%d", &pid) == 1 && pid == (int) getpid()) {
            unlink(ragnx_pid_file);
        }

        fclose(f);
    }

    free(ragnx_pid_file);
    ragnx_pid_file = NULL;
}


/* worker process */


static void
ragnx_worker_signal(int signo)
{
    if (signo == SIGHUP || signo == SIGUSR1) {
        ragnx_reopen = 1;
        return;
    }

    if (signo == SIGTERM || signo == SIGINT) {
        if (ragnx_quit) {
            /* the second one: jobs in flight will be reclaimed */
            _exit(1);
        }

        ragnx_quit = 1;
    }
}


static void
ragnx_worker_reopen(void)
{
    if (!ragnx_reopen) {
        return;
    }

    ragnx_reopen = 0;

    if (ragnx_log_reopen() != RAGNX_OK) {
        ragnx_log(RAGNX_LOG_ERROR, "log_file: cannot reopen \"%s\": %s",
                  ragnx_log_file(), strerror(errno));

    } else if (ragnx_log_file()) {
        ragnx_log(RAGNX_LOG_INFO, "log_file reopened");
    }
}


static void
ragnx_worker_process(int index)
{
    int               i, n, m, k, size, rc;
    void           *(*run)(void *);
    char              name[32], prefix[80];
    pthread_t         tid;
    pthread_attr_t    attr;
    sigset_t          mask;
    ragnx_thread_t   *threads;
    ragnx_db_pool_t  *db;
    struct timespec   deadline;
    struct sigaction  sa;

    snprintf(name, sizeof(name), "worker %d", index);
    ragnx_log_set_prefix(name);

    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = ragnx_worker_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    sa.sa_flags = SA_RESTART;
    sigaction(SIGHUP, &sa, NULL);
    sigaction(SIGUSR1, &sa, NULL);
    signal(SIGCHLD, SIG_DFL);

    ragnx_quit = 0;
    ragnx_reopen = 0;
    ragnx_cond_init(&ragnx_running_cond);

    /*
     * SIGHUP and SIGUSR1 (reopen the log) only to this thread: the others
     * block them
     */
    sigemptyset(&mask);
    sigaddset(&mask, SIGHUP);
    sigaddset(&mask, SIGUSR1);
    sigprocmask(SIG_SETMASK, &mask, NULL);

    srandom((unsigned) (getpid() ^ ragnx_now_ms()));

    n = (int) ragnx_conf->concurrency;
    m = (int) ragnx_conf->rpc_concurrency;
    k = (int) ragnx_conf->record_concurrency;

    if (ragnx_accounts_init() != RAGNX_OK) {
        _exit(2);
    }

    size = (int) ((ragnx_conf->db_pool + ragnx_conf->workers - 1)
                  / ragnx_conf->workers);
    if (size * ragnx_conf->workers > ragnx_conf->db_pool) {
        size = (int) (ragnx_conf->db_pool / ragnx_conf->workers);
    }

    if (size < 1) {
        size = 1;
    }

    db = ragnx_db_pool_create(ragnx_conf->database,
                              ragnx_conf->database_password, size,
                              ragnx_conf->db_timeout);
    /*
     * job threads, the maintenance thread, the check thread, call
     * threads, record threads
     */
    threads = calloc(n + 2 + m + k, sizeof(ragnx_thread_t));

    if (db == NULL || threads == NULL || ragnx_maint_init(n) != RAGNX_OK) {
        ragnx_log(RAGNX_LOG_ERROR, "out of memory");
        _exit(2);
    }

    ragnx_consumer_prefix(prefix, sizeof(prefix), (long) getpid());
    ragnx_metrics_init();

    pthread_attr_init(&attr);
    pthread_attr_setstacksize(&attr, 256 * 1024);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);

    ragnx_running = n + m + k;

    for (i = 0; i <= n + 1 + m + k; i++) {
        threads[i].index = i;
        threads[i].db = db;
        snprintf(threads[i].redis.consumer, sizeof(threads[i].redis.consumer),
                 "%s%d", prefix, i);

        if (i < n) {
            ragnx_maint_slot(i, threads[i].redis.consumer);

            threads[i].llm = ragnx_llm_create();
            if (threads[i].llm == NULL) {
                ragnx_log(RAGNX_LOG_ERROR, "curl_easy_init failed");
                _exit(2);
            }
        }

        run = i < n ? ragnx_job_thread
                    : i == n ? ragnx_maint_thread
                    : i == n + 1 ? ragnx_check_thread
                    : i <= n + 1 + m ? ragnx_call_thread
                                     : ragnx_record_thread;

        rc = pthread_create(&tid, &attr, run, &threads[i]);
        if (rc != 0) {
            ragnx_log(RAGNX_LOG_ERROR, "pthread_create: %s", strerror(rc));
            _exit(2);
        }
    }

    ragnx_log(RAGNX_LOG_INFO, "%d job threads, %d call threads, %d record "
              "threads, up to %d postgres connections (and one per record "
              "thread)", n, m, k, size);

    sigemptyset(&mask);
    pthread_sigmask(SIG_SETMASK, &mask, NULL);

    /* wait for SIGTERM, then for the job threads, up to drain_timeout */

    while (!ragnx_quit) {
        ragnx_worker_reopen();
        ragnx_sleep_ms(100);
    }

    /*
     * a reload sends SIGUSR1, then SIGTERM: the lines of the drain go to
     * the new file too
     */
    ragnx_worker_reopen();

    ragnx_log(RAGNX_LOG_INFO, "draining %d job and call threads",
              ragnx_running);

    ragnx_deadline(&deadline, ragnx_conf->drain_timeout);

    pthread_mutex_lock(&ragnx_running_lock);

    while (ragnx_running > 0) {
        if (pthread_cond_timedwait(&ragnx_running_cond, &ragnx_running_lock,
                                   &deadline)
            != 0)
        {
            break;
        }
    }

    rc = ragnx_running;
    pthread_mutex_unlock(&ragnx_running_lock);

    ragnx_metrics_leave();

    if (rc > 0) {
        ragnx_log(RAGNX_LOG_WARN, "drain timeout: %d jobs left in flight "
                  "(they will be reclaimed)", rc);
        _exit(1);
    }

    ragnx_log(RAGNX_LOG_INFO, "drained");
    _exit(0);
}


static void *
ragnx_job_thread(void *data)
{
    int              rc;
    long             backoff;
    ragnx_entry_t    e, next;
    ragnx_thread_t  *t = data;

    backoff = 100;
    memset(&next, 0, sizeof(ragnx_entry_t));

    while (!ragnx_quit) {
        if (next.entry[0] != '\0') {
            /* read by the script that completed the previous job */
            e = next;
            memset(&next, 0, sizeof(ragnx_entry_t));

        } else {
            if (!ragnx_may_read(&backoff, RAGNX_OK)) {
                continue;
            }

            rc = ragnx_queue_read(&t->redis, &e, 1000);

            if (!ragnx_may_read(&backoff, rc) || rc == RAGNX_AGAIN) {
                continue;
            }
        }

        if (ragnx_quit) {
            /* SIGTERM arrived while we waited: take no new job */
            ragnx_queue_release(&t->redis, &e);
            ragnx_entry_free(&e);
            break;
        }

        ragnx_maint_hold(t->index, &e);

        ragnx_work(t, &e, ragnx_quit ? NULL : &next);

        ragnx_maint_release(t->index);

        ragnx_entry_free(&e);
    }

    if (next.entry[0] != '\0') {
        /* read ahead as SIGTERM came: back to the stream for others */
        ragnx_queue_release(&t->redis, &next);
        ragnx_entry_free(&next);
    }

    ragnx_thread_exit(t);

    return NULL;
}


/*
 * Calls: read one, answer it, until SIGTERM; a call being answered is
 * finished before the process exits, as a job is.
 */

static void *
ragnx_call_thread(void *data)
{
    int              rc;
    long             backoff;
    ragnx_call_t     c;
    ragnx_thread_t  *t = data;

    backoff = 100;

    while (!ragnx_quit) {
        if (!ragnx_may_read(&backoff, RAGNX_OK)) {
            continue;
        }

        rc = ragnx_call_read(&t->redis, &c, 1000);

        if (!ragnx_may_read(&backoff, rc)) {
            continue;
        }

        if (rc == RAGNX_OK) {
            ragnx_call_serve(t, &c);

        } else if (rc == RAGNX_DECLINED) {
            ragnx_call_reject(&t->redis, &c);
        }

        ragnx_call_free(&c);
    }

    ragnx_call_flush(&t->redis);
    ragnx_thread_exit(t);

    return NULL;
}


/*
 * For the reading threads: 0 (after a pause) while the maintenance thread
 * has not seen a usable database yet, or after a Redis error, backing off
 * exponentially with jitter up to 5 s; else 1, and the backoff resets.
 */

int
ragnx_may_read(long *backoff, int rc)
{
    if (!ragnx_maint_ready()) {
        ragnx_sleep_ms(100);
        return 0;
    }

    if (rc == RAGNX_ERROR) {
        ragnx_sleep_ms(*backoff + random() % (*backoff / 2 + 1));
        *backoff = *backoff < 5000 ? *backoff * 2 : 5000;
        return 0;
    }

    *backoff = 100;

    return 1;
}


/*
 * "<host>-<pid>-": a worker process's consumers are named this and a
 * thread's index, so the supervisor knows them from the pid alone
 */

void
ragnx_consumer_prefix(char *buf, size_t len, long pid)
{
    char  host[64];

    if (gethostname(host, sizeof(host)) != 0) {
        snprintf(host, sizeof(host), "host");
    }

    host[sizeof(host) - 1] = '\0';

    snprintf(buf, len, "%s-%ld-", host, pid);
}


/* a job or call thread is done: the draining process counts them */

void
ragnx_thread_exit(ragnx_thread_t *t)
{
    ragnx_redis_close(&t->redis);

    pthread_mutex_lock(&ragnx_running_lock);
    ragnx_running--;
    pthread_cond_signal(&ragnx_running_cond);
    pthread_mutex_unlock(&ragnx_running_lock);
}
