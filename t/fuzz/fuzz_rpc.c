
/*
 * ragnx: fuzz target of the synchronous call contract's parsers
 * (shared/ragnx_rpc.c).  The same bytes are read as a reply ("<id>
 * <status> <body>"), whose head written again must be the same, and as
 * each call parameter the pool checks: method, deadline, limit, cursor,
 * e-mail.  The sealed secrets have their own target, fuzz_seal.c.
 */


#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "ragnx_rpc.h"


static void
parse(const char *s, size_t len)
{
    int               m;
    char              out[RAGNX_RPC_REPLY_HEAD + 1];
    ragnx_rpc_reply_t rep;

    m = ragnx_rpc_method(s, len);
    if (m > 0
        && (ragnx_rpc_method_name(m) == NULL
            || ragnx_rpc_method(ragnx_rpc_method_name(m),
                                strlen(ragnx_rpc_method_name(m)))
                   != m)) {
        abort();
    }

    if (ragnx_rpc_reply_parse(s, len, &rep) == 0) {
        if (rep.status < 100 || rep.status > 599 || rep.body_len == 0
            || rep.body + rep.body_len != s + len) {
            abort();
        }

        /* the same head written again */
        if (ragnx_rpc_reply_write(out, rep.id, rep.status, "x", 1)
                != RAGNX_RPC_REPLY_HEAD + 1
            || memcmp(out, s, RAGNX_RPC_REPLY_HEAD) != 0) {
            abort();
        }
    }

    (void) ragnx_rpc_expired(ragnx_rpc_deadline(s, len), 0);
    m = ragnx_rpc_limit(s, len);
    if (m != -1 && (m < RAGNX_RPC_LIMIT_MIN || m > RAGNX_RPC_LIMIT_MAX)) {
        abort();
    }

    (void) ragnx_rpc_cursor_valid(s, len);
    (void) ragnx_rpc_email_valid(s, len);
}


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *s;

    /* a copy of exactly size bytes, so that ASan sees any overread */
    s = malloc(size ? size : 1);
    if (s == NULL) {
        abort();
    }

    memcpy(s, data, size);
    parse(s, size);
    free(s);

    return 0;
}
