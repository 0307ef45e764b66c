
/*
 * ragnx: UUIDs from the kernel's CSPRNG (getrandom(2) never blocks once
 * the pool is initialised, which is long done when nginx serves).
 */


#include <errno.h>
#include <sys/random.h>

#include "ragnx_uuid.h"


int
ragnx_uuid_v4(char *out)
{
    int                 i, j;
    ssize_t             n;
    unsigned char       b[16];
    static const char   digits[] = "0123456789abcdef";

    do {
        n = getrandom(b, sizeof(b), 0);
    } while (n == -1 && errno == EINTR);

    if (n != (ssize_t) sizeof(b)) {
        return -1;
    }

    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;

    for (i = 0, j = 0; i < 16; i++) {
        if (i == 4 || i == 6 || i == 8 || i == 10) {
            out[j++] = '-';
        }

        out[j++] = digits[b[i] >> 4];
        out[j++] = digits[b[i] & 0xf];
    }

    out[j] = '\0';

    return 0;
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
