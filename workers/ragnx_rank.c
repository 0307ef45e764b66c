
/*
 * ragnx: the cover density rank of a chunk, computed here from the
 * positions of the question's terms in it.
 *
 * The question is a plain OR of lexemes (retrieval ORs its terms), and for
 * such a query every position holding one of them is a cover of its own,
 * so ts_rank_cd's default sum is the weight of each such position:
 * title (A) 1.0, heading (B) 0.4, C 0.2, body (D) 0.1.  PostgreSQL
 * allocates and clears 32 KiB per query item on each ts_rank_cd call,
 * several times what finding the chunk costs; the statement sends the
 * chunk's tsvector cut down to the question's lexemes as text instead,
 * and this counts it.  Counting in tenths keeps equal chunks exactly
 * equal, so ties fall to the chunk id as they should.
 */


#include "ragnx_rank.h"


/*
 * The text form of a tsvector (tsvectorout): entries separated by a
 * space, each a quoted lexeme ('' and \\ escaped) and, when it has
 * positions, ':' and a comma-separated list of numbers, each followed by
 * A, B or C, or nothing for D.  An entry without positions counts for
 * nothing, as in ts_rank_cd.  Malformed text ends the count where it
 * stops making sense.
 */

double
ragnx_rank_hits(const char *hits, size_t len)
{
    long         tenths;
    const char  *p, *end;

    tenths = 0;
    p = hits;
    end = hits + len;

    while (p < end) {

        if (*p == ' ') {
            p++;
            continue;
        }

        if (*p++ != '\'') {
            break;
        }

        /* the lexeme */

        while (p < end) {
            if (*p == '\\' && p + 1 < end) {
                p += 2;

            } else if (*p == '\'') {
                if (p + 1 < end && p[1] == '\'') {
                    p += 2;
                } else {
                    break;
                }

            } else {
                p++;
            }
        }

        if (p == end) {
            break;
        }

        p++;

        if (p == end || *p != ':') {
            continue;
        }

        /* its positions */

        for (p++; p < end && *p >= '0' && *p <= '9'; p++) {

            while (p < end && *p >= '0' && *p <= '9') {
                p++;
            }

            if (p < end && *p == 'A') {
                tenths += 10;
                p++;

            } else if (p < end && *p == 'B') {
                tenths += 4;
                p++;

            } else if (p < end && *p == 'C') {
                tenths += 2;
                p++;

            } else {
                tenths += 1;
            }

            if (p == end || *p != ',') {
                break;
            }
        }
    }

    return tenths / 10.0;
}
