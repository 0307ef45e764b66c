
/*
 * ragnx: UUID v4 generation and validation.  Ids taken from a URL are
 * checked with ragnx_uuid_valid() before they become part of a key.
 */


#ifndef RAGNX_UUID_H
#define RAGNX_UUID_H


#include <stddef.h>


/* write a random (v4) UUID, 36 characters + NUL; -1 on failure */
int ragnx_uuid_v4(char *out);

/* 1 for the canonical 8-4-4-4-12 hex form (any version), else 0 */
int ragnx_uuid_valid(const char *s, size_t len);


#endif /* RAGNX_UUID_H */
