
/*
 * ragnx: the sealing of calls (ragnx_seal.h) for test stand-ins written in
 * Perl, which has no libsodium here: not a test itself.
 *
 *   seal_tool open KEYFILE        stdin: a sealed params field; stdout:
 *                                 the reply key (hex), a newline, JSON
 *   seal_tool seal KEYHEX         stdin: a reply body; stdout: it sealed
 *   seal_tool call PUBFILE KEYHEX stdin: params JSON; stdout: sealed as
 *                                 nginx seals them
 *   seal_tool unseal KEYHEX       stdin: a sealed reply body; stdout: it
 */


#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sodium.h>

#include "ragnx_seal.h"


int
main(int argc, char **argv)
{
    char          in[65536], hex[65], err[256] = "", *out;
    long          n;
    size_t        len, size, klen;
    unsigned char pk[32], sk[32], key[32];

    len = fread(in, 1, sizeof(in) - 1, stdin);
    in[len] = '\0';

    if (argc < 3 || ragnx_seal_init() != 0) {
        fprintf(stderr, "usage: seal_tool open KEYFILE | seal KEYHEX | "
                        "call PUBFILE KEYHEX | unseal KEYHEX\n");
        return 2;
    }

    if (strcmp(argv[1], "open") == 0) {
        if (ragnx_seal_load_secret(argv[2], pk, sk, err, sizeof(err)) != 0) {
            fprintf(stderr, "seal_tool: %s\n", err);
            return 1;
        }

        out = malloc(len + 1);
        n = ragnx_seal_call_open(pk, sk, in, len, key, out);
        if (n < 0) {
            fprintf(stderr, "seal_tool: not sealed for this key\n");
            return 1;
        }

        sodium_bin2hex(hex, sizeof(hex), key, sizeof(key));
        printf("%s\n%.*s", hex, (int) n, out);
        free(out);
        return 0;
    }

    if (strcmp(argv[1], "call") == 0) {
        if (argc != 4
            || ragnx_seal_load_public(argv[2], pk, err, sizeof(err)) != 0) {
            fprintf(stderr, "seal_tool: %s\n", err);
            return 2;
        }

        argv[2] = argv[3];
    }

    if (sodium_hex2bin(key, sizeof(key), argv[2], strlen(argv[2]), NULL, &klen,
                       NULL)
            != 0
        || klen != sizeof(key)) {
        fprintf(stderr, "seal_tool: a key is 64 hex digits\n");
        return 2;
    }

    if (strcmp(argv[1], "call") == 0) {
        size = ragnx_seal_call_size(len);
        out = malloc(size);
        if (ragnx_seal_call(pk, key, in, len, out, size) == 0) {
            return 1;
        }

    } else if (strcmp(argv[1], "unseal") == 0) {
        out = malloc(len + 1);
        n = ragnx_seal_reply_open(key, in, len, out);
        if (n < 0) {
            return 1;
        }
        out[n] = '\0';

    } else {
        size = ragnx_seal_reply_size(len);
        out = malloc(size);
        if (ragnx_seal_reply(key, in, len, out, size) == 0) {
            return 1;
        }
    }

    fputs(out, stdout);
    free(out);
    return 0;
}
