
/*
 * ragnx: the cache key and in-flight field of a question, as the C code
 * of both sides builds them (ragnx_query.h), for t/keys.t to compare with
 * what the module's ask script writes: not a test itself.
 *
 *   keys_tool DIGEST GEN    stdout: the cache key, a newline, the
 *                           in-flight field, a newline
 */


#include <stdio.h>
#include <string.h>

#include "ragnx_keys.h"
#include "ragnx_query.h"


int
main(int argc, char **argv)
{
    char   key[1024], field[1024];
    size_t len, n, m;

    if (argc != 3 || strlen(argv[1]) != RAGNX_DIGEST_LEN) {
        fprintf(stderr, "usage: keys_tool DIGEST GEN\n");
        return 2;
    }

    len = strlen(argv[2]);
    n = ragnx_cache_key(argv[1], argv[2], len, key, sizeof(key));
    m = ragnx_inflight_field(argv[1], argv[2], len, field, sizeof(field));

    if (n == 0 || m == 0) {
        fprintf(stderr, "keys_tool: generation too long\n");
        return 1;
    }

    printf("%s\n%s\n", key, field);

    return 0;
}
