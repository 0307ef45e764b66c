
/*
 * ragnx: fuzz target of the query normaliser and digest
 * (shared/ragnx_query.c).  Properties: the output fits the documented
 * len * 2 bytes, is valid UTF-8, has no leading, trailing or doubled
 * space, and normalising it again changes nothing.
 */


#define _GNU_SOURCE /* memmem() */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "ragnx_keys.h"
#include "ragnx_query.h"
#include "ragnx_utf8.h"


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char           hex[RAGNX_DIGEST_LEN + 1];
    size_t         n, m;
    unsigned char *out, *again;

    /* exactly the documented room, so that ASan sees any overrun */
    out = malloc(size ? size * 2 : 1);
    again = malloc(size ? size * 2 : 1);
    if (out == NULL || again == NULL) {
        abort();
    }

    n = ragnx_query_normalize(data, size, out);

    if (n == (size_t) -1) {
        if (ragnx_utf8_valid(data, size)) {
            abort(); /* rejected valid UTF-8 */
        }

        goto done;
    }

    if (n > size * 2 || !ragnx_utf8_valid(out, n)) {
        abort();
    }

    if (n && (out[0] == ' ' || out[n - 1] == ' ')) {
        abort();
    }

    if (n > 1 && memmem(out, n, "  ", 2) != NULL) {
        abort();
    }

    m = ragnx_query_normalize(out, n, again);
    if (m != n || memcmp(out, again, n) != 0) {
        abort(); /* not idempotent */
    }

    if (ragnx_query_digest(out, n, hex) != 0
        || strlen(hex) != RAGNX_DIGEST_LEN) {
        abort();
    }

done:

    free(out);
    free(again);

    return 0;
}
