
/*
 * ragnx worker pool: logging.  One JSON object per line, written with
 * one write(2) on an O_APPEND descriptor, so lines of threads and
 * processes never interleave (docs/operations.md lists the fields).  And
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

#include "ragnx_utf8.h"
#include "ragnx_worker.h"


static int    ragnx_log_fd = 2;
static char  *ragnx_log_path;           /* log_file as opened at start */
static char   ragnx_log_prefix[64] = "ragnx";
static int    ragnx_log_pid;           /* cached: one per process */
/* the call from nginx this thread serves: ragnx_log_set_call() */
static __thread ragnx_log_fields_t  ragnx_log_call;
static const char  *ragnx_log_levels[] = { "error", "warn", "info", "debug" };

static size_t ragnx_log_escape(const char *s, size_t len, char *out,
    size_t size, int *cut);

/* in the order of ragnx_err_t */
static const char  *ragnx_err_names[] = {
    "", "llm_timeout", "llm_network", "llm_http_429", "llm_http_4xx",
    "llm_http_5xx", "llm_bad_response", "llm_breaker_open", "pg", "redis",
    "bad_payload", "chat", "internal"
};


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
    ragnx_log_pid = (int) getpid();
}


const char *
ragnx_err_name(ragnx_err_t error)
{
    if ((size_t) error >= sizeof(ragnx_err_names) / sizeof(char *)) {
        return "internal";
    }

    return ragnx_err_names[error];
}


/*
 * s[0..len) as the body of a JSON string into out, at most size bytes:
 * quotes, backslashes and control characters escaped, a byte that is
 * not part of valid UTF-8 replaced by U+FFFD.  Stops before a character
 * that does not fit, never inside an escape or a sequence, and then sets
 * *cut.  Returns the bytes written.
 */

static size_t
ragnx_log_escape(const char *s, size_t len, char *out, size_t size, int *cut)
{
    char                 esc[8];
    size_t               i, n, k, m;
    uint32_t             cp;
    const char          *from;
    unsigned char        c;
    static const char    hex[] = "0123456789abcdef";

    n = 0;
    *cut = 0;

    for (i = 0; i < len; i += k) {
        c = (unsigned char) s[i];
        from = esc;
        k = 1;
        m = 2;

        if (c == '"' || c == '\\') {
            esc[0] = '\\';
            esc[1] = (char) c;

        } else if (c == '\n' || c == '\t') {
            esc[0] = '\\';
            esc[1] = c == '\n' ? 'n' : 't';

        } else if (c < 0x20 || c == 0x7f) {
            memcpy(esc, "\\u00", 4);
            esc[4] = hex[c >> 4];
            esc[5] = hex[c & 0xf];
            m = 6;

        } else if (c < 0x80) {
            from = s + i;
            m = 1;

        } else {
            k = ragnx_utf8_decode((const unsigned char *) s + i, len - i,
                                  &cp);

            if (k == 0) {
                k = 1;
                memcpy(esc, "\\ufffd", 6);
                m = 6;

            } else {
                from = s + i;
                m = k;
            }
        }

        /* m bytes for k of s: all of them or none */

        if (n + m > size) {
            *cut = 1;
            break;
        }

        memcpy(out + n, from, m);
        n += m;
    }

    return n;
}


/* ,"name":"v" in at most room bytes (v cut to fit), nothing if v is NULL */

static char *
ragnx_log_string(char *p, const char *name, const char *v, size_t room)
{
    int     cut;
    size_t  len;

    len = strlen(name);

    if (v == NULL || room < len + 8) {
        return p;
    }

    *p++ = ',';
    *p++ = '"';
    p = memcpy(p, name, len);
    p += len;
    p = memcpy(p, "\":\"", 3);
    p += 3;
    p += ragnx_log_escape(v, strlen(v), p, room - len - 7, &cut);
    *p++ = '"';

    return p;
}


/*
 * One line: {"ts","level","msg","pid","proc", then what f says}.  The
 * line is built on the stack and written with one write(2); it is at
 * most RAGNX_LOG_LINE bytes: a message too long for it is cut (at a
 * character) and ends in "...", so the line stays valid JSON.
 */

#define RAGNX_LOG_LINE  2048

static void
ragnx_log_write(int level, const ragnx_log_fields_t *f, const char *fmt,
    va_list args)
{
    int                  m, cut;
    char                 buf[RAGNX_LOG_LINE], tail[768], msg[RAGNX_LOG_LINE];
    char                *p, *t, *end;
    size_t               room;
    struct tm            tm;
    struct timeval       tv;
    ragnx_log_fields_t   call;

    m = vsnprintf(msg, sizeof(msg), fmt, args);

    if (m < 0) {
        m = 0;

    } else if (m >= (int) sizeof(msg)) {
        m = sizeof(msg) - 1;
    }

    /*
     * The fields after the message first: they are not cut.  Each is
     * bounded (ids, a 63-byte prefix, numbers), about 540 bytes in all.
     */

    t = tail;
    end = tail + sizeof(tail);

    t += snprintf(t, end - t, ",\"pid\":%d",
                  ragnx_log_pid ? ragnx_log_pid : (int) getpid());
    t = ragnx_log_string(t, "proc", ragnx_log_prefix, 80);

    if (ragnx_log_call.call && (f == NULL || f->job == NULL)) {
        if (f) {
            call = *f;
            call.call = ragnx_log_call.call;
            call.rid = ragnx_log_call.rid;
            f = &call;

        } else {
            f = &ragnx_log_call;
        }
    }

    if (f) {
        t = ragnx_log_string(t, "job", f->job, 64);
        t = ragnx_log_string(t, "call", f->call, 64);
        t = ragnx_log_string(t, "rid", f->rid, RAGNX_RID_MAX + 16);
        t = ragnx_log_string(t, "chat", f->chat, 64);

        if (f->error != RAGNX_ERR_NONE) {
            t = ragnx_log_string(t, "error", ragnx_err_name(f->error), 40);
        }

        if (f->timed) {
            t += snprintf(t, end - t, ",\"wait_ms\":%lld,\"retrieve_ms\":"
                          "%lld,\"llm_ms\":%lld,\"persist_ms\":%lld",
                          f->wait_ms, f->retrieve_ms, f->llm_ms,
                          f->persist_ms);
        }

        /* a count the provider did not give is left out */

        if (f->tokens && f->tokens_in >= 0) {
            t += snprintf(t, end - t, ",\"tokens_in\":%ld", f->tokens_in);
        }

        if (f->tokens && f->tokens_out >= 0) {
            t += snprintf(t, end - t, ",\"tokens_out\":%ld", f->tokens_out);
        }
    }

    gettimeofday(&tv, NULL);
    gmtime_r(&tv.tv_sec, &tm);

    p = buf;
    p += snprintf(p, 96, "{\"ts\":\"%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ\","
                  "\"level\":\"%s\",\"msg\":\"",
                  tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour,
                  tm.tm_min, tm.tm_sec, (long) tv.tv_usec / 1000,
                  ragnx_log_levels[level]);

    /* room for the message: less the tail, '"', "...", '}' and '\n' */

    room = sizeof(buf) - (p - buf) - (t - tail) - 6;
    p += ragnx_log_escape(msg, m, p, room, &cut);

    if (cut || m == (int) sizeof(msg) - 1) {
        p = memcpy(p, "...", 3);
        p += 3;
    }

    *p++ = '"';
    p = memcpy(p, tail, t - tail);
    p += t - tail;
    *p++ = '}';
    *p++ = '\n';

    if (write(ragnx_log_fd, buf, p - buf) < 0) {
        /* nowhere left to complain */
    }
}


/*
 * The call from nginx this thread is serving (ragnx_calls.c): its lines
 * carry the call's request id, as a job's lines carry the job's.
 */

void
ragnx_log_set_call(const char *id, const char *rid)
{
    ragnx_log_call.call = id;
    ragnx_log_call.rid = rid;
}


void
ragnx_log(int level, const char *fmt, ...)
{
    va_list  args;

    if (ragnx_conf && level > ragnx_conf->log_level) {
        return;
    }

    va_start(args, fmt);
    ragnx_log_write(level, NULL, fmt, args);
    va_end(args);
}


/* a line about a job: its id, request id and chat, and an error class */

void
ragnx_log_job(int level, const ragnx_job_t *job, ragnx_err_t error,
    const char *fmt, ...)
{
    va_list             args;
    ragnx_log_fields_t  f;

    if (ragnx_conf && level > ragnx_conf->log_level) {
        return;
    }

    memset(&f, 0, sizeof(ragnx_log_fields_t));

    if (job) {
        f.job = job->id;
        f.rid = job->rid;
        f.chat = job->chat_id;
    }

    f.error = error;

    va_start(args, fmt);
    ragnx_log_write(level, &f, fmt, args);
    va_end(args);
}


void
ragnx_log_fields(int level, const ragnx_log_fields_t *f, const char *fmt, ...)
{
    va_list  args;

    if (ragnx_conf && level > ragnx_conf->log_level) {
        return;
    }

    va_start(args, fmt);
    ragnx_log_write(level, f, fmt, args);
    va_end(args);
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
