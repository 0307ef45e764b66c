
/*
 * ragnx worker pool: logging.  One write(2) per line on an O_APPEND
 * descriptor, so lines of threads and processes never interleave.  And
 * the clocks: the wall clock for what is stored or compared with other
 * hosts (createdAt, due times, call deadlines), the monotonic clock for
 * intervals, timeouts and deadlines of waits, which a step of the wall
 * clock (NTP, an operator) must not stretch or cut short.
 */


#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "ragnx_worker.h"


static int    ragnx_log_fd = 2;
static char  *ragnx_log_path;           /* log_file as opened at start */
static char   ragnx_log_prefix[64] = "ragnx";
static const char  *ragnx_log_levels[] = { "error", "warn", "info", "debug" };


int
ragnx_log_open(const char *path)
{
    int  fd;

    if (path == NULL) {
        return RAGNX_OK;
    }

    fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
    if (fd == -1) {
        return RAGNX_ERROR;
    }

    free(ragnx_log_path);
    ragnx_log_path = strdup(path);

    if (ragnx_log_fd != 2) {
        close(ragnx_log_fd);
    }

    ragnx_log_fd = fd;

    return RAGNX_OK;
}


/*
 * SIGHUP: log_file opened again by its name, so a file moved away (by
 * logrotate) stops growing.  dup2() swaps the descriptor in one step:
 * a thread writing meanwhile writes whole to the old file or the new,
 * never to a closed or reused descriptor.
 */

int
ragnx_log_reopen(void)
{
    int  fd;

    if (ragnx_log_path == NULL) {
        return RAGNX_OK;
    }

    fd = open(ragnx_log_path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC,
              0644);
    if (fd == -1) {
        return RAGNX_ERROR;
    }

    if (dup2(fd, ragnx_log_fd) == -1) {
        close(fd);
        return RAGNX_ERROR;
    }

    close(fd);
    fcntl(ragnx_log_fd, F_SETFD, FD_CLOEXEC);

    return RAGNX_OK;
}


const char *
ragnx_log_file(void)
{
    return ragnx_log_path;
}


void
ragnx_log_set_prefix(const char *prefix)
{
    snprintf(ragnx_log_prefix, sizeof(ragnx_log_prefix), "%s", prefix);
}


void
ragnx_log(int level, const char *fmt, ...)
{
    int             n, m;
    char            buf[2048];
    va_list         args;
    struct tm       tm;
    struct timeval  tv;

    if (ragnx_conf && level > ragnx_conf->log_level) {
        return;
    }

    gettimeofday(&tv, NULL);
    gmtime_r(&tv.tv_sec, &tm);

    n = snprintf(buf, sizeof(buf),
                 "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ [%s] %s %d: ",
                 tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour,
                 tm.tm_min, tm.tm_sec, (long) tv.tv_usec / 1000,
                 ragnx_log_levels[level], ragnx_log_prefix, (int) getpid());

    va_start(args, fmt);
    m = vsnprintf(buf + n, sizeof(buf) - n - 1, fmt, args);
    va_end(args);

    if (m < 0) {
        m = 0;
    }

    n += m;
    if (n > (int) sizeof(buf) - 2) {
        n = sizeof(buf) - 2;
    }

    buf[n++] = '\n';

    if (write(ragnx_log_fd, buf, n) < 0) {
        /* nowhere left to complain */
    }
}


/* wall time in ms since the epoch: for what is stored or sent */

long long
ragnx_now_ms(void)
{
    struct timespec  ts;

    clock_gettime(CLOCK_REALTIME, &ts);

    return (long long) ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}


/* monotonic time in ms: for intervals, never stored */

long long
ragnx_mono_ms(void)
{
    struct timespec  ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);

    return (long long) ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}


/* a condition variable whose timed waits take ragnx_deadline()'s clock */

void
ragnx_cond_init(pthread_cond_t *cond)
{
    pthread_condattr_t  attr;

    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    pthread_cond_init(cond, &attr);
    pthread_condattr_destroy(&attr);
}


/*
 * now + ms on CLOCK_MONOTONIC, for pthread_cond_timedwait() on a
 * condition variable made by ragnx_cond_init()
 */

void
ragnx_deadline(struct timespec *ts, long ms)
{
    clock_gettime(CLOCK_MONOTONIC, ts);
    ts->tv_sec += ms / 1000;
    ts->tv_nsec += (ms % 1000) * 1000000;

    if (ts->tv_nsec >= 1000000000) {
        ts->tv_sec++;
        ts->tv_nsec -= 1000000000;
    }
}


void
ragnx_sleep_ms(long ms)
{
    struct timespec  ts;

    ts.tv_sec = ms / 1000;
    ts.tv_nsec = (ms % 1000) * 1000000;

    while (nanosleep(&ts, &ts) == -1 && errno == EINTR) {
        /* a signal: sleep on */
    }
}
