
/*
 * bench/stream's client: many server-sent event streams read at once
 * with epoll, one thread.
 *
 *   stream-client HOST PORT FILE SECONDS
 *
 * FILE holds one HTTP/1.0 request a line ("\r\n" written as the four
 * characters \ r \ n); each is sent on a connection of its own, and the
 * response read until the server closes it.  Connections are opened at
 * most 256 at a time, so that a listen queue does not overflow.  In
 * every line read, "@T" and 16 digits is the wall clock in microseconds
 * at which the writer (the mock LLM) sent it: the time the read returned
 * minus that is one latency sample (in the data of a piece only:
 * "done" repeats the whole answer).
 *
 * Through the stack, an event's id is its Redis stream entry's, whose
 * first part is the millisecond Redis appended it: the latency is then
 * split in two at that point (to a millisecond), mock to Redis (the
 * pool) and Redis to client (nginx), printed as a "split" line.
 *
 * Prints "open N SECONDS" once every response's headers are in (for the
 * caller's figures with all streams open), then one line of results:
 * streams, headers, closed, "event: delta" lines (or the provider's
 * content deltas), "event: done", errors and restarts, samples, and the
 * latency p50/p99/max in microseconds.
 */


#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>


#define SC_LINE      65536
#define SC_INFLIGHT  256


typedef struct {
    int        fd;
    char      *req;
    size_t     req_len;
    size_t     sent;
    char      *buf;
    size_t     len;
    int        head;
    int        closed;
    int        connected;
    int        delta;       /* the event being read is a piece */
    int        error;       /* the event being read is "error" */
    long long  id_ms;       /* its id's time: when Redis appended it */
} sc_conn_t;


static long long   *sc_lat, *sc_pool, *sc_ngx;
static size_t       sc_nlat, sc_maxlat, sc_nsplit;
static long         sc_deltas, sc_done, sc_errors, sc_restarts;
static char         sc_error[256];      /* the first error's data */


static long long
sc_now_us(void)
{
    struct timespec  ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    return (long long) ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}


static long long
sc_mono_ms(void)
{
    struct timespec  ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long) ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}


static int
sc_cmp(const void *a, const void *b)
{
    long long  x = *(const long long *) a, y = *(const long long *) b;

    return (x > y) - (x < y);
}


/* one whole line of a response body */

static void
sc_line(sc_conn_t *c, const char *p, size_t n, long long now)
{
    const char  *q, *end;
    long long    ts;
    int          i;

    end = p + n;

    if (n >= 6 && memcmp(p, "event:", 6) == 0) {
        c->delta = 0;
        c->error = 0;
    }

    if (c->error && n >= 5 && memcmp(p, "data:", 5) == 0
        && sc_error[0] == '\0')
    {
        snprintf(sc_error, sizeof(sc_error), "%.*s",
                 (int) (n < 200 ? n : 200), p);
    }

    if (n > 4 && memcmp(p, "id: ", 4) == 0) {
        c->id_ms = atoll(p + 4);
    }

    if (n >= 12 && memcmp(p, "event: delta", 12) == 0) {
        sc_deltas++;
        c->delta = 1;

    } else if (n >= 11 && memcmp(p, "event: done", 11) == 0) {
        sc_done++;

    } else if (n >= 12 && memcmp(p, "event: error", 12) == 0) {
        sc_errors++;
        c->error = 1;

    } else if (n >= 14 && memcmp(p, "event: restart", 14) == 0) {
        sc_restarts++;

    } else if (n >= 26 && memcmp(p, "event: content_block_delta", 26) == 0) {
        sc_deltas++;
        c->delta = 1;
    }

    /* a piece's own stamps, not those in "done"'s whole answer */

    if (!c->delta || n < 5 || memcmp(p, "data:", 5) != 0) {
        return;
    }

    for (q = p; q + 18 <= end; q++) {
        q = memchr(q, '@', end - q - 17);
        if (q == NULL) {
            break;
        }

        if (q[1] != 'T') {
            continue;
        }

        ts = 0;

        for (i = 2; i < 18 && q[i] >= '0' && q[i] <= '9'; i++) {
            ts = ts * 10 + (q[i] - '0');
        }

        if (i < 18 || ts == 0) {
            continue;
        }

        if (sc_nlat == sc_maxlat) {
            sc_maxlat = sc_maxlat ? 2 * sc_maxlat : 65536;
            sc_lat = realloc(sc_lat, sc_maxlat * sizeof(long long));
            sc_pool = realloc(sc_pool, sc_maxlat * sizeof(long long));
            sc_ngx = realloc(sc_ngx, sc_maxlat * sizeof(long long));
            if (sc_lat == NULL || sc_pool == NULL || sc_ngx == NULL) {
                perror("realloc");
                exit(1);
            }
        }

        sc_lat[sc_nlat++] = now - ts;

        /* through Redis: the entry id's millisecond splits the time */
        if (c->id_ms) {
            sc_pool[sc_nsplit] = c->id_ms * 1000 - ts;
            sc_ngx[sc_nsplit++] = now - c->id_ms * 1000;
        }

        q += 17;
    }
}


static void
sc_read(sc_conn_t *c, long *heads)
{
    char       *p, *nl;
    ssize_t     n;
    long long   now;

    for ( ;; ) {
        n = read(c->fd, c->buf + c->len, SC_LINE - c->len);
        now = sc_now_us();

        if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
            return;
        }

        if (n <= 0) {
            c->closed = 1;
            close(c->fd);
            return;
        }

        c->len += n;
        p = c->buf;

        if (!c->head) {
            nl = memmem(p, c->len, "\r\n\r\n", 4);
            if (nl == NULL) {
                continue;
            }

            c->head = 1;
            (*heads)++;
            p = nl + 4;
        }

        while ((nl = memchr(p, '\n', c->buf + c->len - p)) != NULL) {
            sc_line(c, p, nl - p, now);
            p = nl + 1;
        }

        c->len -= p - c->buf;
        memmove(c->buf, p, c->len);

        if (c->len == SC_LINE) {
            c->len = 0;     /* a line this long is not an event's */
        }
    }
}


static int
sc_connect(sc_conn_t *c, struct sockaddr_in *sa, int ep)
{
    int                 one = 1;
    struct epoll_event  ev;

    c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    if (c->fd < 0) {
        perror("socket");
        return -1;
    }

    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));

    if (connect(c->fd, (struct sockaddr *) sa, sizeof(*sa)) < 0
        && errno != EINPROGRESS)
    {
        perror("connect");
        return -1;
    }

    ev.events = EPOLLIN | EPOLLOUT;
    ev.data.ptr = c;

    return epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &ev);
}


int
main(int argc, char **argv)
{
    int                  ep, i, n, opened_said;
    long                 nc, heads, closed, next, inflight;
    char                *line, *p, *q;
    size_t               cap;
    ssize_t              len;
    FILE                *f;
    sc_conn_t           *conns, *c;
    long long            t0, deadline;
    struct sockaddr_in   sa;
    struct epoll_event   evs[1024], ev;

    if (argc != 5) {
        fprintf(stderr, "usage: %s HOST PORT FILE SECONDS\n", argv[0]);
        return 2;
    }

    memset(&sa, 0, sizeof(sa));
    sa.sin_family = AF_INET;
    sa.sin_port = htons(atoi(argv[2]));
    inet_pton(AF_INET, argv[1], &sa.sin_addr);

    f = fopen(argv[3], "r");
    if (f == NULL) {
        perror(argv[3]);
        return 1;
    }

    conns = NULL;
    nc = 0;
    line = NULL;
    cap = 0;

    while ((len = getline(&line, &cap, f)) > 0) {
        if (line[len - 1] == '\n') {
            line[--len] = '\0';
        }

        if (len == 0) {
            continue;
        }

        conns = realloc(conns, (nc + 1) * sizeof(sc_conn_t));
        if (conns == NULL) {
            perror("realloc");
            return 1;
        }

        c = &conns[nc++];
        memset(c, 0, sizeof(*c));
        c->req = malloc(len + 1);
        c->buf = malloc(SC_LINE);
        if (c->req == NULL || c->buf == NULL) {
            perror("malloc");
            return 1;
        }

        for (p = line, q = c->req; *p; p++) {
            if (p[0] == '\\' && p[1] == 'r') {
                *q++ = '\r';
                p++;

            } else if (p[0] == '\\' && p[1] == 'n') {
                *q++ = '\n';
                p++;

            } else {
                *q++ = *p;
            }
        }

        c->req_len = q - c->req;
    }

    fclose(f);
    free(line);

    ep = epoll_create1(0);
    t0 = sc_mono_ms();
    deadline = t0 + atol(argv[4]) * 1000;
    heads = closed = next = inflight = 0;
    opened_said = 0;

    while (closed < nc && sc_mono_ms() < deadline) {
        while (next < nc && inflight < SC_INFLIGHT) {
            if (sc_connect(&conns[next++], &sa, ep) != 0) {
                return 1;
            }

            inflight++;
        }

        n = epoll_wait(ep, evs, 1024, 100);

        for (i = 0; i < n; i++) {
            c = evs[i].data.ptr;

            if (c->closed) {
                continue;
            }

            if (!c->connected && (evs[i].events & (EPOLLOUT | EPOLLERR))) {
                c->connected = 1;
                inflight--;
            }

            if (c->sent < c->req_len && (evs[i].events & EPOLLOUT)) {
                len = write(c->fd, c->req + c->sent, c->req_len - c->sent);
                if (len > 0) {
                    c->sent += len;
                }

                if (c->sent == c->req_len) {
                    ev.events = EPOLLIN;
                    ev.data.ptr = c;
                    epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
                }
            }

            if (evs[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR)) {
                sc_read(c, &heads);

                if (c->closed) {
                    closed++;
                }
            }
        }

        if (!opened_said && heads == nc) {
            printf("open %ld %.3f\n", nc, (sc_mono_ms() - t0) / 1000.0);
            fflush(stdout);
            opened_said = 1;
        }
    }

    qsort(sc_lat, sc_nlat, sizeof(long long), sc_cmp);
    qsort(sc_pool, sc_nsplit, sizeof(long long), sc_cmp);
    qsort(sc_ngx, sc_nsplit, sizeof(long long), sc_cmp);

    if (sc_error[0]) {
        printf("first error %s\n", sc_error);
    }

    if (sc_nsplit) {
        printf("split mock-to-redis p50=%lld p99=%lld "
               "redis-to-client p50=%lld p99=%lld\n",
               sc_pool[sc_nsplit / 2], sc_pool[sc_nsplit * 99 / 100],
               sc_ngx[sc_nsplit / 2], sc_ngx[sc_nsplit * 99 / 100]);
    }

    printf("streams=%ld headers=%ld closed=%ld deltas=%ld done=%ld "
           "errors=%ld restarts=%ld samples=%zu p50=%lld p99=%lld "
           "max=%lld seconds=%.3f\n", nc, heads, closed, sc_deltas, sc_done,
           sc_errors, sc_restarts, sc_nlat,
           sc_nlat ? sc_lat[sc_nlat / 2] : -1,
           sc_nlat ? sc_lat[sc_nlat * 99 / 100] : -1,
           sc_nlat ? sc_lat[sc_nlat - 1] : -1,
           (sc_mono_ms() - t0) / 1000.0);

    return closed == nc ? 0 : 1;
}
