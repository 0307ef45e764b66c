
/*
 * ragnx: ranking of retrieved chunks by the question's terms they hold.
 */


#ifndef RAGNX_RANK_H
#define RAGNX_RANK_H


#include <stddef.h>


double ragnx_rank_hits(const char *hits, size_t len);


#endif /* RAGNX_RANK_H */
