
/*
 * ragnx: unit tests of the chunk rank computed from the question's terms
 * in a chunk (ragnx_rank.h), against values ts_rank_cd gives.
 */


#include <string.h>

#include "tap.h"
#include "ragnx_rank.h"


static double
rank(const char *s)
{
    return ragnx_rank_hits(s, strlen(s));
}


int
main(void)
{
    char   buf[8192];
    size_t i, n;

    /* each as ts_rank_cd(text::tsvector, 'a | b | ...'::tsquery) */
    ok(rank("'17':2A,4B,9,24 'cach':14,29,44") == 1.9,
       "title, heading and body positions: 1.0 + 0.4 + 5 x 0.1");
    ok(rank("'x':1C") == 0.2, "C weighs 0.2");
    ok(rank("") == 0.0, "no terms, no rank");
    ok(rank("'x'") == 0.0, "a lexeme without positions counts nothing");
    ok(rank("'x' 'y':3A") == 1.0, "one without and one with positions");
    ok(rank("'it''s':1A") == 1.0, "a doubled quote inside a lexeme");
    ok(rank("'a\\\\b':3C 'c':4") == 0.3, "an escaped backslash");
    ok(rank("'a\\'b':5B") == 0.4, "a backslash-escaped quote");
    ok(rank("'x':1,2,3A") == rank("'y':7A 'z':1,2"),
       "the same weights in another order rank exactly the same");
    ok(rank("'x':1A,junk") == 1.0, "malformed positions stop the count");
    ok(rank("'abc") == 0.0, "an unterminated lexeme counts nothing");
    ok(rank("abc':1A") == 0.0, "an unquoted lexeme counts nothing");
    ok(ragnx_rank_hits("'x':1A 'y':2A", 6) == 1.0,
       "the length bounds the text");

    n = 0;
    n += (size_t) snprintf(buf, sizeof(buf), "'w':");
    for (i = 1; i <= 1000; i++) {
        n += (size_t) snprintf(buf + n, sizeof(buf) - n, "%zu%s", i,
                               i < 1000 ? "," : "");
    }
    ok(rank(buf) == 100.0, "a thousand body positions: 100");

    return done_testing();
}
