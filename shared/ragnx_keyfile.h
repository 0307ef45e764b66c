
/*
 * ragnx: what a JWT key file holds, for both sides to check it against
 * the pinned algorithm at start: an HMAC secret (no key in it), a public
 * or a private key (RSA, EC, other) and its size in bits.  The module
 * verifies with a secret or a public key, the pool signs with a secret or
 * a private key; both refuse a secret that is really a key (the setup of
 * the algorithm confusion attack).
 */


#ifndef RAGNX_KEYFILE_H
#define RAGNX_KEYFILE_H


#include <stddef.h>


#define RAGNX_KEYFILE_SECRET    0   /* no key in it: an HMAC secret */
#define RAGNX_KEYFILE_PUBLIC    1   /* a public key, PEM or DER */
#define RAGNX_KEYFILE_PRIVATE   2   /* a PEM private key */
#define RAGNX_KEYFILE_PEM       3   /* PEM armour, but no key it can read */

#define RAGNX_KEYFILE_RSA       1
#define RAGNX_KEYFILE_EC        2
#define RAGNX_KEYFILE_OTHER     3


typedef struct {
    int     kind;                   /* RAGNX_KEYFILE_SECRET ... _PEM */
    int     type;                   /* RSA, EC or OTHER; 0 for no key */
    int     bits;                   /* key size; 0 for no key */
} ragnx_keyfile_t;


/* classify len bytes of a key file; -1 when out of memory */
int ragnx_keyfile_classify(const unsigned char *data, size_t len,
    ragnx_keyfile_t *kf);


#endif /* RAGNX_KEYFILE_H */
