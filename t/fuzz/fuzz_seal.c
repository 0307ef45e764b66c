
/*
 * ragnx: fuzz target of the sealed secrets of synchronous calls
 * (shared/ragnx_seal.c).  The bytes are opened as a sealed call, as the
 * pool does, and as a sealed reply, as the module does, into the room
 * their callers give; then sealed and opened again, which must give them
 * back (a call only when the bytes open with "{").  Slow by nature:
 * libsodium's guarded sodium_malloc() maps pages for every open.
 */


#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

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

    /*
     * a call's params are an object: only those are sealed again, the
     * sealing costs an X25519 key pair each time
     */
    if (size && s[0] == '{') {
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
    }

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
