
/*
 * ragnx: query normalisation and the cache digest.  The module and the
 * pool must agree byte for byte, so both call these.
 */


#ifndef RAGNX_QUERY_H
#define RAGNX_QUERY_H


#include <stddef.h>


/*
 * Normalise UTF-8 "in" into "out" (room for len * 2 bytes: lower-casing
 * can grow a character by at most one byte): lower-case (ASCII, Latin-1,
 * Latin Extended-A, Greek, Cyrillic, fullwidth Latin), trim, collapse runs
 * of Unicode white space to one ASCII space.  Returns the output length,
 * or (size_t) -1 when the input is not valid UTF-8.
 */
size_t ragnx_query_normalize(const unsigned char *in, size_t len,
    unsigned char *out);

/* SHA-256 of the normalised query, as 64 lower-case hex digits + NUL */
int ragnx_query_digest(const unsigned char *norm, size_t len, char *hex);

/*
 * Write the in-flight field "<digest>:<gen>" (digest: RAGNX_DIGEST_LEN
 * hex digits) into out (size bytes), NUL-terminated; returns the length,
 * or 0 when it does not fit.  The ask script in the module builds the
 * same string in Lua from the same macros (t/keys.t compares the two).
 */
size_t ragnx_inflight_field(const char *digest, const char *gen,
    size_t genlen, char *out, size_t size);

/* the same for the cache key: "{ragnx}:cache:" and the in-flight field */
size_t ragnx_cache_key(const char *digest, const char *gen, size_t genlen,
    char *out, size_t size);

/* release what ragnx_query_digest() keeps between calls (at exit) */
void ragnx_query_cleanup(void);

/* code point to lower case, for the ranges listed above */
unsigned int ragnx_unicode_lower(unsigned int cp);


#endif /* RAGNX_QUERY_H */
