
/*
 * ragnx: UUID v4 and v7 generation and validation.  Ids taken from a URL
 * are checked with ragnx_uuid_valid() before they become part of a key.
 */


#ifndef RAGNX_UUID_H
#define RAGNX_UUID_H


#include <stddef.h>


/* write a random (v4) UUID, 36 characters + NUL; -1 on failure */
int ragnx_uuid_v4(char *out);

/*
 * A request id: 16 random bytes as 32 hex digits + NUL, the form of
 * nginx's $request_id, from the same buffered bytes as the UUIDs (nginx's
 * own calls OpenSSL's RAND_bytes, about 6,600 instructions each); -1 on
 * failure.
 */
int ragnx_request_id_new(char *out);

/*
 * A job's id: a v7 UUID, the time (ms since the epoch) in its first 48
 * bits and 74 random bits after.  Ids made in order sort in order, so
 * PostgreSQL adds each message's (job_id, role) key at the end of its
 * index rather than on a random page: half the cost of writing a
 * message.  36 characters + NUL; -1 on failure.
 */
int ragnx_uuid_v7(char *out, long long ms);

/* 1 for the canonical 8-4-4-4-12 hex form (any version), else 0 */
int ragnx_uuid_valid(const char *s, size_t len);

/*
 * A new chat's id, bound to its owner: a v4 UUID whose first half holds
 * 60 random bits and whose second half 62 bits of a BLAKE2b hash of the
 * owner and those bits.  Anyone can make an id bound to themselves, and
 * nobody one bound to another owner, so nginx knows a chat it made is
 * the caller's without asking Redis or the pool; an id that is not bound
 * to the caller (another's, or one made before ids were bound) is looked
 * up.  Writes 36 characters + NUL; -1 on failure.
 */
int ragnx_chat_id(const char *owner, size_t len, char *out);

/* 1 when the valid UUID s (any case) is bound to owner, else 0 */
int ragnx_chat_id_owned(const char *s, const char *owner, size_t len);


#endif /* RAGNX_UUID_H */
