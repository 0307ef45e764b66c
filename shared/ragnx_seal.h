
/*
 * ragnx: secrets in the synchronous calls (ragnx_rpc.h), sealed so that
 * nothing a Redis client, the AOF or an RDB file can read holds them.
 *
 * The pool owns an X25519 key pair (rpc_key_file, PEM, as `openssl
 * genpkey -algorithm X25519` writes it); nginx holds only its public half
 * (ragnx_rpc_seal_key).  For a method that carries a secret (register,
 * login: a password in, a token out):
 *
 *   params  base64url(crypto_box_seal(reply key || params JSON)): only the
 *           pool can open it; the reply key is 32 random bytes nginx
 *           makes for this one call
 *   reply   "~" base64url(nonce || crypto_secretbox(body, reply key)):
 *           only the nginx worker that made the call can open it
 *
 * A reply body that does not start with "~" is a plain JSON error from a
 * pool that could not open the call (no key, a bad seal).
 */


#ifndef RAGNX_SEAL_H
#define RAGNX_SEAL_H


#include <stddef.h>


#define RAGNX_SEAL_KEY_BYTES   32
#define RAGNX_SEAL_MARK        '~'

/* room for a sealed call of len bytes of JSON, with the NUL */
size_t ragnx_seal_call_size(size_t len);

/* room for a sealed reply body of len bytes, with the NUL */
size_t ragnx_seal_reply_size(size_t len);

/* sodium_init() once; 0 or -1 */
int ragnx_seal_init(void);

/*
 * Read an X25519 key from a PEM file: the public key (nginx) or the
 * private key, whose public half is derived (pool).  0, or -1 with a
 * reason in err.
 */
int ragnx_seal_load_public(const char *path, unsigned char *pk, char *err,
    size_t errlen);
int ragnx_seal_load_secret(const char *path, unsigned char *pk,
    unsigned char *sk, char *err, size_t errlen);

/*
 * Seal key || json for pk into out (ragnx_seal_call_size(len) bytes),
 * NUL-terminated; returns the length, 0 on failure.
 */
size_t ragnx_seal_call(const unsigned char *pk, const unsigned char *key,
    const char *json, size_t len, char *out, size_t size);

/*
 * Open a sealed call: the reply key into key, the JSON into json (room
 * for len bytes: it is always shorter than what was sealed); returns the
 * JSON's length, or -1 when the seal is not valid for this key pair.
 */
long ragnx_seal_call_open(const unsigned char *pk, const unsigned char *sk,
    const char *in, size_t len, unsigned char *key, char *json);

/*
 * Seal a reply body with the call's key into out
 * (ragnx_seal_reply_size(len) bytes), NUL-terminated; returns the length,
 * 0 on failure.
 */
size_t ragnx_seal_reply(const unsigned char *key, const char *body,
    size_t len, char *out, size_t size);

/*
 * Open a sealed reply body into out (room for len bytes); returns the
 * plain length, or -1 when it is not one sealed with key.
 */
long ragnx_seal_reply_open(const unsigned char *key, const char *in,
    size_t len, char *out);


#endif /* RAGNX_SEAL_H */
