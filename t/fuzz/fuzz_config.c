
/*
 * ragnx: fuzz target of the worker pool's config file parser
 * (workers/ragnx_config.c).  ragnx_conf_load takes a path: the input is
 * written to a memory file and loaded through /proc/self/fd.  A file is
 * loaded or refused with a reason; a loaded one is freed.
 */


#define _GNU_SOURCE /* memfd_create() */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

#include "ragnx_worker.h"


static int  fd = -1;
static char path[64];


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char          err[1024];
    ragnx_conf_t *conf;

    if (fd == -1) {
        fd = memfd_create("ragnx.conf", 0);
        if (fd == -1) {
            abort();
        }

        snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
    }

    if (ftruncate(fd, 0) != 0
        || (size && pwrite(fd, data, size, 0) != (ssize_t) size)) {
        abort();
    }

    err[0] = '\0';
    conf = ragnx_conf_load(path, RAGNX_CONF_KEYS, err, sizeof(err));

    if (conf == NULL) {
        if (err[0] == '\0') {
            abort(); /* a refusal says why */
        }

        return 0;
    }

    ragnx_conf_free(conf);

    return 0;
}
