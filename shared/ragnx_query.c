
/*
 * ragnx: query normalisation and cache digest (see ragnx_query.h).
 */


#include <string.h>
#include <openssl/evp.h>

#include "ragnx_keys.h"
#include "ragnx_query.h"
#include "ragnx_utf8.h"


static int ragnx_unicode_space(unsigned int cp);


static EVP_MD  *ragnx_sha256;


void
ragnx_query_cleanup(void)
{
    EVP_MD_free(ragnx_sha256);
    ragnx_sha256 = NULL;
}


unsigned int
ragnx_unicode_lower(unsigned int cp)
{
    if (cp < 0x80) {
        return (cp >= 'A' && cp <= 'Z') ? cp + 32 : cp;
    }

    /* Latin-1 supplement: À..Þ except × */
    if (cp >= 0xc0 && cp <= 0xde && cp != 0xd7) {
        return cp + 32;
    }

    /* Latin Extended-A: pairs, upper case first */
    if (cp >= 0x100 && cp <= 0x17f) {

        if (cp == 0x130) {
            return 'i';
        }

        if (cp == 0x178) {
            return 0xff;
        }

        if ((cp >= 0x139 && cp <= 0x148) || (cp >= 0x179 && cp <= 0x17e)) {
            return (cp & 1) ? cp + 1 : cp;
        }

        if (cp == 0x131 || cp == 0x138 || cp == 0x149 || cp == 0x17f) {
            return cp;
        }

        return (cp & 1) ? cp : cp + 1;
    }

    /* Greek */
    if ((cp >= 0x391 && cp <= 0x3a9 && cp != 0x3a2)) {
        return cp + 32;
    }

    switch (cp) {
    case 0x386:
        return 0x3ac;
    case 0x388:
    case 0x389:
    case 0x38a:
        return cp + 37;
    case 0x38c:
        return 0x3cc;
    case 0x38e:
    case 0x38f:
        return cp + 63;
    }

    /* Cyrillic */
    if (cp >= 0x410 && cp <= 0x42f) {
        return cp + 32;
    }

    if (cp >= 0x400 && cp <= 0x40f) {
        return cp + 80;
    }

    /* fullwidth Latin */
    if (cp >= 0xff21 && cp <= 0xff3a) {
        return cp + 32;
    }

    return cp;
}


static int
ragnx_unicode_space(unsigned int cp)
{
    switch (cp) {
    case ' ':
    case '\t':
    case '\n':
    case '\v':
    case '\f':
    case '\r':
    case 0x85:
    case 0xa0:
    case 0x1680:
    case 0x2028:
    case 0x2029:
    case 0x202f:
    case 0x205f:
    case 0x3000:
        return 1;
    }

    return cp >= 0x2000 && cp <= 0x200a;
}


size_t
ragnx_query_normalize(const unsigned char *in, size_t len,
    unsigned char *out)
{
    int           space;
    size_t        n, o;
    uint32_t      cp;

    o = 0;
    space = 0;

    while (len) {
        n = ragnx_utf8_decode(in, len, &cp);
        if (n == 0) {
            return (size_t) -1;
        }

        in += n;
        len -= n;

        if (ragnx_unicode_space(cp)) {
            space = 1;
            continue;
        }

        /* a run of spaces becomes one, and only between words */
        if (space && o) {
            out[o++] = ' ';
        }

        space = 0;
        o += ragnx_utf8_encode(ragnx_unicode_lower(cp), out + o);
    }

    return o;
}


int
ragnx_query_digest(const unsigned char *norm, size_t len, char *hex)
{
    unsigned int          i, mdlen;
    unsigned char         md[EVP_MAX_MD_SIZE];
    static const char     digits[] = "0123456789abcdef";

    /* fetched once: an implicit fetch per call costs more than the hash */
    if (ragnx_sha256 == NULL) {
        ragnx_sha256 = EVP_MD_fetch(NULL, "SHA256", NULL);
        if (ragnx_sha256 == NULL) {
            return -1;
        }
    }

    if (EVP_Digest(norm, len, md, &mdlen, ragnx_sha256, NULL) != 1) {
        return -1;
    }

    for (i = 0; i < mdlen; i++) {
        hex[2 * i] = digits[md[i] >> 4];
        hex[2 * i + 1] = digits[md[i] & 0xf];
    }

    hex[2 * mdlen] = '\0';

    return 0;
}


size_t
ragnx_inflight_field(const char *digest, const char *gen, size_t genlen,
    char *out, size_t size)
{
    char    *p;
    size_t   len;

    len = RAGNX_DIGEST_LEN + sizeof(RAGNX_KEY_GEN_SEP) - 1 + genlen;

    if (len + 1 > size) {
        return 0;
    }

    p = out;
    memcpy(p, digest, RAGNX_DIGEST_LEN);
    p += RAGNX_DIGEST_LEN;
    memcpy(p, RAGNX_KEY_GEN_SEP, sizeof(RAGNX_KEY_GEN_SEP) - 1);
    p += sizeof(RAGNX_KEY_GEN_SEP) - 1;
    memcpy(p, gen, genlen);
    p[genlen] = '\0';

    return len;
}


size_t
ragnx_cache_key(const char *digest, const char *gen, size_t genlen,
    char *out, size_t size)
{
    size_t  n;

    if (size < sizeof(RAGNX_KEY_CACHE)) {
        return 0;
    }

    memcpy(out, RAGNX_KEY_CACHE, sizeof(RAGNX_KEY_CACHE) - 1);

    n = ragnx_inflight_field(digest, gen, genlen,
                             out + sizeof(RAGNX_KEY_CACHE) - 1,
                             size - (sizeof(RAGNX_KEY_CACHE) - 1));

    return n ? sizeof(RAGNX_KEY_CACHE) - 1 + n : 0;
}
