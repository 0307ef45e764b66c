
/*
 * A test's LD_PRELOAD: clock_gettime(CLOCK_REALTIME) shifted by the
 * milliseconds written in the file named by $RAGNX_CLOCK_SHIFT (read on
 * every call; no file, no shift).  The other clocks are left alone, so a
 * test steps one process's wall clock as NTP or an operator would.
 */


#define _GNU_SOURCE
#include <dlfcn.h>
#include <fcntl.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>


typedef int (*ragnx_clock_gettime_pt)(clockid_t id, struct timespec *ts);


int
clock_gettime(clockid_t id, struct timespec *ts)
{
    int                            fd, rc;
    char                           buf[32];
    ssize_t                        n;
    long long                      ms;
    const char                    *path;
    static ragnx_clock_gettime_pt  real;

    if (real == NULL) {
        real = (ragnx_clock_gettime_pt) dlsym(RTLD_NEXT, "clock_gettime");
    }

    rc = real(id, ts);
    path = getenv("RAGNX_CLOCK_SHIFT");

    if (rc != 0 || id != CLOCK_REALTIME || path == NULL) {
        return rc;
    }

    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd == -1) {
        return rc;
    }

    n = read(fd, buf, sizeof(buf) - 1);
    close(fd);

    if (n <= 0) {
        return rc;
    }

    buf[n] = '\0';
    ms = strtoll(buf, NULL, 10);

    ts->tv_sec += ms / 1000;
    ts->tv_nsec += (ms % 1000) * 1000000;

    if (ts->tv_nsec < 0) {
        ts->tv_sec--;
        ts->tv_nsec += 1000000000;

    } else if (ts->tv_nsec >= 1000000000) {
        ts->tv_sec++;
        ts->tv_nsec -= 1000000000;
    }

    return rc;
}
