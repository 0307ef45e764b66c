
/*
 * ragnx: sealing the secrets of synchronous calls (see ragnx_seal.h), with
 * libsodium; the PEM key files are read with OpenSSL, which both sides
 * link already.
 */


#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <sodium.h>

#include "ragnx_seal.h"


#define RAGNX_SEAL_B64  sodium_base64_VARIANT_URLSAFE_NO_PADDING


static EVP_PKEY *ragnx_seal_pem(const char *path, int private, char *err,
    size_t errlen);


size_t
ragnx_seal_call_size(size_t len)
{
    return sodium_base64_ENCODED_LEN(crypto_box_SEALBYTES
                                     + RAGNX_SEAL_KEY_BYTES + len,
                                     RAGNX_SEAL_B64);
}


size_t
ragnx_seal_reply_size(size_t len)
{
    return 1 + sodium_base64_ENCODED_LEN(crypto_secretbox_NONCEBYTES
                                         + crypto_secretbox_MACBYTES + len,
                                         RAGNX_SEAL_B64);
}


int
ragnx_seal_init(void)
{
    return sodium_init() < 0 ? -1 : 0;
}


static EVP_PKEY *
ragnx_seal_pem(const char *path, int private, char *err, size_t errlen)
{
    FILE      *f;
    EVP_PKEY  *pkey;

    f = fopen(path, "r");
    if (f == NULL) {
        snprintf(err, errlen, "cannot open \"%s\": %s", path,
                 strerror(errno));
        return NULL;
    }

    pkey = private ? PEM_read_PrivateKey(f, NULL, NULL, NULL)
                   : PEM_read_PUBKEY(f, NULL, NULL, NULL);
    fclose(f);
    ERR_clear_error();

    if (pkey == NULL || EVP_PKEY_get_base_id(pkey) != EVP_PKEY_X25519) {
        snprintf(err, errlen, "\"%s\" is not a PEM X25519 %s key", path,
                 private ? "private" : "public");
        EVP_PKEY_free(pkey);
        return NULL;
    }

    return pkey;
}


int
ragnx_seal_load_public(const char *path, unsigned char *pk, char *err,
    size_t errlen)
{
    int        rc;
    size_t     n;
    EVP_PKEY  *pkey;

    pkey = ragnx_seal_pem(path, 0, err, errlen);
    if (pkey == NULL) {
        return -1;
    }

    n = RAGNX_SEAL_KEY_BYTES;
    rc = EVP_PKEY_get_raw_public_key(pkey, pk, &n) == 1
         && n == RAGNX_SEAL_KEY_BYTES ? 0 : -1;
    EVP_PKEY_free(pkey);

    if (rc != 0) {
        snprintf(err, errlen, "cannot read the key in \"%s\"", path);
    }

    return rc;
}


int
ragnx_seal_load_secret(const char *path, unsigned char *pk, unsigned char *sk,
    char *err, size_t errlen)
{
    int        rc;
    size_t     n;
    EVP_PKEY  *pkey;

    pkey = ragnx_seal_pem(path, 1, err, errlen);
    if (pkey == NULL) {
        return -1;
    }

    n = RAGNX_SEAL_KEY_BYTES;
    rc = EVP_PKEY_get_raw_private_key(pkey, sk, &n) == 1
         && n == RAGNX_SEAL_KEY_BYTES
         && crypto_scalarmult_base(pk, sk) == 0 ? 0 : -1;
    EVP_PKEY_free(pkey);

    if (rc != 0) {
        sodium_memzero(sk, RAGNX_SEAL_KEY_BYTES);
        snprintf(err, errlen, "cannot read the key in \"%s\"", path);
    }

    return rc;
}


size_t
ragnx_seal_call(const unsigned char *pk, const unsigned char *key,
    const char *json, size_t len, char *out, size_t size)
{
    size_t          n;
    unsigned char  *m, *c;

    if (size < ragnx_seal_call_size(len)) {
        return 0;
    }

    n = RAGNX_SEAL_KEY_BYTES + len;
    m = sodium_malloc(n + crypto_box_SEALBYTES + n);
    if (m == NULL) {
        return 0;
    }

    c = m + n;
    memcpy(m, key, RAGNX_SEAL_KEY_BYTES);
    memcpy(m + RAGNX_SEAL_KEY_BYTES, json, len);

    if (crypto_box_seal(c, m, n, pk) != 0) {
        sodium_free(m);
        return 0;
    }

    sodium_bin2base64(out, size, c, crypto_box_SEALBYTES + n, RAGNX_SEAL_B64);
    sodium_free(m);

    return strlen(out);
}


long
ragnx_seal_call_open(const unsigned char *pk, const unsigned char *sk,
    const char *in, size_t len, unsigned char *key, char *json)
{
    long            rc;
    size_t          n;
    unsigned char  *c, *m;

    c = sodium_malloc(2 * len + 1);
    if (c == NULL) {
        return -1;
    }

    rc = -1;

    if (sodium_base642bin(c, len, in, len, NULL, &n, NULL, RAGNX_SEAL_B64)
        == 0
        && n >= crypto_box_SEALBYTES + RAGNX_SEAL_KEY_BYTES)
    {
        m = c + len;

        if (crypto_box_seal_open(m, c, n, pk, sk) == 0) {
            n -= crypto_box_SEALBYTES + RAGNX_SEAL_KEY_BYTES;
            memcpy(key, m, RAGNX_SEAL_KEY_BYTES);
            memcpy(json, m + RAGNX_SEAL_KEY_BYTES, n);
            rc = (long) n;
        }
    }

    /* sodium_free() wipes what was opened */
    sodium_free(c);

    return rc;
}


size_t
ragnx_seal_reply(const unsigned char *key, const char *body, size_t len,
    char *out, size_t size)
{
    size_t          n;
    unsigned char  *b;

    if (size < ragnx_seal_reply_size(len)) {
        return 0;
    }

    n = crypto_secretbox_NONCEBYTES + crypto_secretbox_MACBYTES + len;
    b = sodium_malloc(n);
    if (b == NULL) {
        return 0;
    }

    randombytes_buf(b, crypto_secretbox_NONCEBYTES);

    if (crypto_secretbox_easy(b + crypto_secretbox_NONCEBYTES,
                              (const unsigned char *) body, len, b, key)
        != 0)
    {
        sodium_free(b);
        return 0;
    }

    out[0] = RAGNX_SEAL_MARK;
    sodium_bin2base64(out + 1, size - 1, b, n, RAGNX_SEAL_B64);
    sodium_free(b);

    return strlen(out);
}


long
ragnx_seal_reply_open(const unsigned char *key, const char *in, size_t len,
    char *out)
{
    long            rc;
    size_t          n;
    unsigned char  *b;

    if (len < 1 || in[0] != RAGNX_SEAL_MARK) {
        return -1;
    }

    b = sodium_malloc(len);
    if (b == NULL) {
        return -1;
    }

    rc = -1;

    if (sodium_base642bin(b, len, in + 1, len - 1, NULL, &n, NULL,
                          RAGNX_SEAL_B64)
        == 0
        && n >= crypto_secretbox_NONCEBYTES + crypto_secretbox_MACBYTES
        && crypto_secretbox_open_easy((unsigned char *) out,
                                      b + crypto_secretbox_NONCEBYTES,
                                      n - crypto_secretbox_NONCEBYTES, b,
                                      key)
           == 0)
    {
        rc = (long) (n - crypto_secretbox_NONCEBYTES
                     - crypto_secretbox_MACBYTES);
    }

    sodium_free(b);

    return rc;
}
