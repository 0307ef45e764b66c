
/*
 * ragnx: a minimal TAP producer for the C unit tests run by prove.
 */


#ifndef RAGNX_TAP_H
#define RAGNX_TAP_H


#include <stdio.h>
#include <string.h>


static int tap_n;
static int tap_failed;


#define ok(cond, ...)                                                 \
    do {                                                              \
        int tap_c = (cond) ? 1 : 0;                                   \
        tap_n++;                                                      \
        if (!tap_c) {                                                 \
            tap_failed++;                                             \
        }                                                             \
        printf("%sok %d - ", tap_c ? "" : "not ", tap_n);             \
        printf(__VA_ARGS__);                                          \
        printf("\n");                                                 \
        if (!tap_c) {                                                 \
            printf("#   failed at %s line %d\n", __FILE__, __LINE__); \
        }                                                             \
    } while (0)

#define is_str(got, want, ...)                              \
    do {                                                    \
        const char *tap_g = (got), *tap_w = (want);         \
        ok(tap_g &&strcmp(tap_g, tap_w) == 0, __VA_ARGS__); \
        if (!(tap_g && strcmp(tap_g, tap_w) == 0)) {        \
            printf("#   got: '%s'\n#   expected: '%s'\n",   \
                   tap_g ? tap_g : "(null)", tap_w);        \
        }                                                   \
    } while (0)

#define done_testing() (printf("1..%d\n", tap_n), tap_failed ? 1 : 0)


#endif /* RAGNX_TAP_H */
