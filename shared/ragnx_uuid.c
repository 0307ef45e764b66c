
/*
 * ragnx: UUIDs from the kernel's CSPRNG (getrandom(2) never blocks once
 * the pool is initialised, which is long done when nginx serves).  Random
 * bytes are fetched 4 KiB at a time: one system call per 256 ids instead
 * of one per id.  A fork empties the child's buffer (pthread_atfork), so
 * a forked worker never hands out its parent's bytes.
 */


#include <errno.h>
#include <string.h>
#include <pthread.h>
#include <sys/random.h>
#include <sodium.h>

#include "ragnx_uuid.h"


#define RAGNX_RANDOM_BUF  4096


static int ragnx_random(unsigned char *out, size_t len);
static void ragnx_random_forked(void);
static void ragnx_uuid_text(const unsigned char *b, char *out);
static int ragnx_chat_tag(const unsigned char *nonce, const char *owner,
    size_t len, unsigned char *tag);


#define RAGNX_CHAT_DOMAIN  "ragnx chat id v1"


static size_t         ragnx_random_avail;
static unsigned char  ragnx_random_buf[RAGNX_RANDOM_BUF];


static void
ragnx_random_forked(void)
{
    memset(ragnx_random_buf, 0, sizeof(ragnx_random_buf));
    ragnx_random_avail = 0;
}


static int
ragnx_random(unsigned char *out, size_t len)
{
    ssize_t               n;
    size_t               *avail;
    unsigned char        *buf;
    static int            registered;

    if (!registered) {
        if (pthread_atfork(NULL, NULL, ragnx_random_forked) != 0) {
            return -1;
        }

        registered = 1;
    }

    avail = &ragnx_random_avail;
    buf = ragnx_random_buf;

    if (*avail < len) {
        do {
            n = getrandom(buf, RAGNX_RANDOM_BUF, 0);
        } while (n == -1 && errno == EINTR);

        if (n != RAGNX_RANDOM_BUF) {
            *avail = 0;
            return -1;
        }

        *avail = RAGNX_RANDOM_BUF;
    }

    /* take from the end and wipe what was handed out */
    *avail -= len;
    memcpy(out, buf + *avail, len);
    memset(buf + *avail, 0, len);

    return 0;
}


int
ragnx_request_id_new(char *out)
{
    int                 i;
    unsigned char       b[16];
    static const char   digits[] = "0123456789abcdef";

    if (ragnx_random(b, sizeof(b)) != 0) {
        return -1;
    }

    for (i = 0; i < 16; i++) {
        *out++ = digits[b[i] >> 4];
        *out++ = digits[b[i] & 0xf];
    }

    *out = '\0';

    return 0;
}


int
ragnx_uuid_v4(char *out)
{
    unsigned char  b[16];

    if (ragnx_random(b, sizeof(b)) != 0) {
        return -1;
    }

    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;

    ragnx_uuid_text(b, out);

    return 0;
}


int
ragnx_uuid_v7(char *out, long long ms)
{
    int            i;
    unsigned char  b[16];

    if (ragnx_random(b + 6, sizeof(b) - 6) != 0) {
        return -1;
    }

    for (i = 5; i >= 0; i--) {
        b[i] = (unsigned char) (ms & 0xff);
        ms >>= 8;
    }

    b[6] = (b[6] & 0x0f) | 0x70;
    b[8] = (b[8] & 0x3f) | 0x80;

    ragnx_uuid_text(b, out);

    return 0;
}


static void
ragnx_uuid_text(const unsigned char *b, char *out)
{
    int                 i;
    static const char   digits[] = "0123456789abcdef";

    for (i = 0; i < 16; i++) {
        *out++ = digits[b[i] >> 4];
        *out++ = digits[b[i] & 0xf];

        if ((0x2a8 >> i) & 1) {     /* after bytes 3, 5, 7 and 9 */
            *out++ = '-';
        }
    }

    *out = '\0';
}


/* the second half of a chat id: the hash, with the variant's two bits */

static int
ragnx_chat_tag(const unsigned char *nonce, const char *owner, size_t len,
    unsigned char *tag)
{
    unsigned char             m[256];
    crypto_generichash_state  st;
    static int                inited;

    /* once: sodium_init() takes a lock every time */

    if (!inited) {
        if (sodium_init() < 0) {
            return -1;
        }

        inited = 1;
    }

    /* one call for the usual owner (a user id); streamed for a long one */

    if (sizeof(RAGNX_CHAT_DOMAIN) + 8 + len <= sizeof(m)) {
        memcpy(m, RAGNX_CHAT_DOMAIN, sizeof(RAGNX_CHAT_DOMAIN));
        memcpy(m + sizeof(RAGNX_CHAT_DOMAIN), nonce, 8);
        memcpy(m + sizeof(RAGNX_CHAT_DOMAIN) + 8, owner, len);

        if (crypto_generichash(tag, 8, m, sizeof(RAGNX_CHAT_DOMAIN) + 8 + len,
                               NULL, 0)
            != 0)
        {
            return -1;
        }

    } else if (crypto_generichash_init(&st, NULL, 0, 8) != 0
               || crypto_generichash_update(&st,
                                  (const unsigned char *) RAGNX_CHAT_DOMAIN,
                                  sizeof(RAGNX_CHAT_DOMAIN))
                  != 0
               || crypto_generichash_update(&st, nonce, 8) != 0
               || crypto_generichash_update(&st,
                                            (const unsigned char *) owner,
                                            len)
                  != 0
               || crypto_generichash_final(&st, tag, 8) != 0)
    {
        return -1;
    }

    tag[0] = (tag[0] & 0x3f) | 0x80;

    return 0;
}


int
ragnx_chat_id(const char *owner, size_t len, char *out)
{
    unsigned char  b[16];

    if (ragnx_random(b, 8) != 0) {
        return -1;
    }

    b[6] = (b[6] & 0x0f) | 0x40;

    if (ragnx_chat_tag(b, owner, len, b + 8) != 0) {
        return -1;
    }

    ragnx_uuid_text(b, out);

    return 0;
}


int
ragnx_chat_id_owned(const char *s, const char *owner, size_t len)
{
    int            i, j, hi, lo;
    unsigned char  b[16], tag[8];

    for (i = 0, j = 0; i < 16; i++) {
        if (s[j] == '-') {
            j++;
        }

        hi = (s[j] & 0xf) + (s[j] > '9' ? 9 : 0);
        lo = (s[j + 1] & 0xf) + (s[j + 1] > '9' ? 9 : 0);
        b[i] = (unsigned char) (hi << 4 | lo);
        j += 2;
    }

    if ((b[6] & 0xf0) != 0x40 || ragnx_chat_tag(b, owner, len, tag) != 0) {
        return 0;
    }

    return memcmp(tag, b + 8, 8) == 0;
}


int
ragnx_uuid_valid(const char *s, size_t len)
{
    size_t  i;
    char    c;

    if (len != 36) {
        return 0;
    }

    for (i = 0; i < len; i++) {
        c = s[i];

        if (i == 8 || i == 13 || i == 18 || i == 23) {
            if (c != '-') {
                return 0;
            }

            continue;
        }

        if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f')
              || (c >= 'A' && c <= 'F')))
        {
            return 0;
        }
    }

    return 1;
}
