
/*
 * ragnx: UTF-8 helpers used by the nginx module and the worker pool.
 * Strict RFC 3629: no overlongs, no surrogates, nothing above U+10FFFF.
 */


#ifndef RAGNX_UTF8_H
#define RAGNX_UTF8_H


#include <stddef.h>
#include <stdint.h>


/* 1 when p[0..len) is valid UTF-8, 0 otherwise */
int ragnx_utf8_valid(const unsigned char *p, size_t len);

/* number of code points in valid UTF-8 */
size_t ragnx_utf8_length(const unsigned char *p, size_t len);

/*
 * Decode one code point at p (at most len bytes).  Returns the number of
 * bytes used and stores the code point in *cp, or returns 0 on an invalid
 * or truncated sequence.
 */
size_t ragnx_utf8_decode(const unsigned char *p, size_t len, uint32_t *cp);

/* encode cp into out (room for 4 bytes); returns the byte count */
size_t ragnx_utf8_encode(uint32_t cp, unsigned char *out);


#endif /* RAGNX_UTF8_H */
