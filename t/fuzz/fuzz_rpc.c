
/*
 * ragnx: fuzz target of the synchronous call contract (shared/ragnx_rpc.c,
 * shared/ragnx_seal.c).  The same bytes are read as a reply ("<id> <status>
 * <body>"), as each parameter checked on the pool's side, as a sealed call
 * and as a sealed reply; then sealed and opened again, which must give
 * them back.
 */


#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "ragnx_rpc.h"
#include "ragnx_seal.h"


static unsigned char pk[crypto_box_PUBLICKEYBYTES];
static unsigned char sk[crypto_box_SECRETKEYBYTES];
static unsigned char key[RAGNX_SEAL_KEY_BYTES];


int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
    unsigned char seed[crypto_box_SEEDBYTES];

    if (ragnx_seal_init() != 0) {
        abort();
    }

    memset(seed, 7, sizeof(seed));
    crypto_box_seed_keypair(pk, sk, seed);
    memset(key, 9, sizeof(key));

    return 0;
}


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
    long          n;
    char         *s, *json, *sealed;
    size_t        cap, len;
    unsigned char opened[RAGNX_SEAL_KEY_BYTES];

    /* a copy of exactly size bytes, so that ASan sees any overread */
    s = malloc(size ? size : 1);
    json = malloc(size + 1);
    if (s == NULL || json == NULL) {
        abort();
    }

    memcpy(s, data, size);
    parse(s, size);

    /* as the pool opens a call: into raw_len + 1 bytes */
    n = ragnx_seal_call_open(pk, sk, s, size, opened, json);
    if (n > (long) size) {
        abort();
    }

    /* as the module opens a reply: into body_len bytes */
    n = ragnx_seal_reply_open(key, s, size, json);
    if (n > (long) size) {
        abort();
    }

    cap = ragnx_seal_call_size(size);
    sealed = malloc(cap);
    if (sealed == NULL) {
        abort();
    }

    len = ragnx_seal_call(pk, key, s, size, sealed, cap);
    if (len == 0 || len >= cap) {
        abort();
    }

    n = ragnx_seal_call_open(pk, sk, sealed, len, opened, json);
    if (n != (long) size || memcmp(json, s, size) != 0
        || memcmp(opened, key, sizeof(key)) != 0) {
        abort();
    }

    free(sealed);

    cap = ragnx_seal_reply_size(size);
    sealed = malloc(cap);
    if (sealed == NULL) {
        abort();
    }

    len = ragnx_seal_reply(key, s, size, sealed, cap);
    if (len == 0 || len >= cap) {
        abort();
    }

    n = ragnx_seal_reply_open(key, sealed, len, json);
    if (n != (long) size || memcmp(json, s, size) != 0) {
        abort();
    }

    free(sealed);
    free(json);
    free(s);

    return 0;
}
