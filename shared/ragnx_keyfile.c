
/*
 * ragnx: classification of a JWT key file (ragnx_keyfile.h), with
 * OpenSSL: a PEM private key, else a PEM or DER public key, else PEM
 * armour around something else, else a secret.
 */


#define _GNU_SOURCE                 /* memmem() */

#include <string.h>
#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "ragnx_keyfile.h"


static EVP_PKEY *
ragnx_keyfile_pem(const unsigned char *data, size_t len, int private)
{
    BIO       *bio;
    EVP_PKEY  *pkey;

    bio = BIO_new_mem_buf(data, (int) len);
    if (bio == NULL) {
        return NULL;
    }

    pkey = private ? PEM_read_bio_PrivateKey(bio, NULL, NULL, NULL)
                   : PEM_read_bio_PUBKEY(bio, NULL, NULL, NULL);
    BIO_free(bio);

    return pkey;
}


int
ragnx_keyfile_classify(const unsigned char *data, size_t len,
    ragnx_keyfile_t *kf)
{
    EVP_PKEY             *pkey;
    const unsigned char  *p;

    memset(kf, 0, sizeof(ragnx_keyfile_t));

    if (len > 0x7fffffff) {
        return -1;
    }

    kf->kind = RAGNX_KEYFILE_PRIVATE;
    pkey = ragnx_keyfile_pem(data, len, 1);

    if (pkey == NULL) {
        kf->kind = RAGNX_KEYFILE_PUBLIC;
        pkey = ragnx_keyfile_pem(data, len, 0);
    }

    if (pkey == NULL) {
        p = data;
        pkey = d2i_PUBKEY(NULL, &p, (long) len);
    }

    ERR_clear_error();

    if (pkey == NULL) {
        kf->kind = memmem(data, len, "-----BEGIN ", 11)
                   ? RAGNX_KEYFILE_PEM : RAGNX_KEYFILE_SECRET;
        return 0;
    }

    switch (EVP_PKEY_get_base_id(pkey)) {

    case EVP_PKEY_RSA:
        kf->type = RAGNX_KEYFILE_RSA;
        break;

    case EVP_PKEY_EC:
        kf->type = RAGNX_KEYFILE_EC;
        break;

    default:
        kf->type = RAGNX_KEYFILE_OTHER;
        break;
    }

    kf->bits = EVP_PKEY_get_bits(pkey);

    EVP_PKEY_free(pkey);

    return 0;
}
