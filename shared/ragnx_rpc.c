
/*
 * ragnx: the synchronous call contract (ragnx_rpc.h): method names, the
 * reply message format, deadlines and the pagination arguments, checked
 * the same way on both sides.
 */


#include <string.h>

#include "ragnx_rpc.h"
#include "ragnx_uuid.h"


static const char  *ragnx_rpc_methods[] = {
    NULL,
    "register",
    "login",
    "me",
    "chats",
    "messages",
    "chat"
};


#define RAGNX_RPC_NMETHODS                                                   \
    (int) (sizeof(ragnx_rpc_methods) / sizeof(ragnx_rpc_methods[0]))


static long long ragnx_rpc_number(const char *s, size_t len, size_t max);


int
ragnx_rpc_method(const char *name, size_t len)
{
    int  m;

    for (m = 1; m < RAGNX_RPC_NMETHODS; m++) {
        if (strlen(ragnx_rpc_methods[m]) == len
            && memcmp(ragnx_rpc_methods[m], name, len) == 0)
        {
            return m;
        }
    }

    return 0;
}


const char *
ragnx_rpc_method_name(int method)
{
    if (method < 1 || method >= RAGNX_RPC_NMETHODS) {
        return NULL;
    }

    return ragnx_rpc_methods[method];
}


int
ragnx_rpc_method_authenticated(int method)
{
    return method == RAGNX_RPC_ME || method == RAGNX_RPC_CHATS
           || method == RAGNX_RPC_MESSAGES || method == RAGNX_RPC_CHAT;
}


int
ragnx_rpc_method_sealed(int method)
{
    return method == RAGNX_RPC_REGISTER || method == RAGNX_RPC_LOGIN;
}


int
ragnx_rpc_reply_parse(const char *msg, size_t len, ragnx_rpc_reply_t *rep)
{
    int  i, status;

    rep->id = NULL;
    rep->status = 0;
    rep->body = NULL;
    rep->body_len = 0;

    if (len < 36 || !ragnx_uuid_valid(msg, 36)) {
        return -1;
    }

    rep->id = msg;

    if (len <= RAGNX_RPC_REPLY_HEAD || msg[36] != ' ' || msg[40] != ' ') {
        return -1;
    }

    status = 0;

    for (i = 37; i < 40; i++) {
        if (msg[i] < '0' || msg[i] > '9') {
            return -1;
        }

        status = status * 10 + (msg[i] - '0');
    }

    if (status < 100 || status > 599) {
        return -1;
    }

    rep->status = status;
    rep->body = msg + RAGNX_RPC_REPLY_HEAD;
    rep->body_len = len - RAGNX_RPC_REPLY_HEAD;

    return 0;
}


size_t
ragnx_rpc_reply_write(char *out, const char *id, int status,
    const char *body, size_t body_len)
{
    if (id == NULL || !ragnx_uuid_valid(id, 36) || status < 100
        || status > 599 || body_len == 0)
    {
        return 0;
    }

    memcpy(out, id, 36);
    out[36] = ' ';
    out[37] = (char) ('0' + status / 100);
    out[38] = (char) ('0' + status / 10 % 10);
    out[39] = (char) ('0' + status % 10);
    out[40] = ' ';
    memcpy(out + RAGNX_RPC_REPLY_HEAD, body, body_len);

    return RAGNX_RPC_REPLY_HEAD + body_len;
}


long long
ragnx_rpc_deadline(const char *s, size_t len)
{
    /* 13 digits until the year 2286 */
    return ragnx_rpc_number(s, len, 15);
}


int
ragnx_rpc_expired(long long deadline, long long now)
{
    return deadline <= 0 || now >= deadline;
}


int
ragnx_rpc_limit(const char *s, size_t len)
{
    long long  n;

    n = ragnx_rpc_number(s, len, 3);

    if (n < RAGNX_RPC_LIMIT_MIN || n > RAGNX_RPC_LIMIT_MAX) {
        return -1;
    }

    return (int) n;
}


/* 1 to max decimal digits, nothing else; -1 otherwise */

static long long
ragnx_rpc_number(const char *s, size_t len, size_t max)
{
    size_t     i;
    long long  n;

    if (len == 0 || len > max) {
        return -1;
    }

    n = 0;

    for (i = 0; i < len; i++) {
        if (s[i] < '0' || s[i] > '9') {
            return -1;
        }

        n = n * 10 + (s[i] - '0');
    }

    return n;
}


int
ragnx_rpc_cursor_valid(const char *s, size_t len)
{
    size_t  i;

    if (len == 0 || len > RAGNX_RPC_CURSOR_MAX) {
        return 0;
    }

    for (i = 0; i < len; i++) {
        if (s[i] < 0x21 || s[i] > 0x7e) {
            return 0;
        }
    }

    return 1;
}


/* ASCII only, whatever the locale */

static int
ragnx_rpc_alpha(unsigned char c)
{
    c |= 0x20;
    return c >= 'a' && c <= 'z';
}


static int
ragnx_rpc_alnum(unsigned char c)
{
    return ragnx_rpc_alpha(c) || (c >= '0' && c <= '9');
}


int
ragnx_rpc_email_valid(const char *s, size_t len)
{
    const unsigned char  *p, *q, *at, *last, *label;

    static const char  specials[] = "!#$%&'*+/=?^_`{|}~-";

    if (len > 254) {
        return 0;
    }

    p = (const unsigned char *) s;
    last = p + len;
    at = memchr(p, '@', len);

    if (at == NULL || at == p || at - p > 64) {
        return 0;
    }

    for (q = p; q < at; q++) {
        if (*q == '.') {
            if (q == p || q + 1 == at || q[1] == '.') {
                return 0;
            }

            continue;
        }

        if (!ragnx_rpc_alnum(*q)
            && (*q == '\0' || strchr(specials, *q) == NULL))
        {
            return 0;
        }
    }

    q = at + 1;

    for ( ;; ) {
        label = q;

        while (q < last && *q != '.') {
            if (!ragnx_rpc_alnum(*q) && *q != '-') {
                return 0;
            }

            q++;
        }

        if (q == label || q - label > 63 || *label == '-' || q[-1] == '-') {
            return 0;
        }

        if (q == last) {
            break;
        }

        q++;
    }

    if (label == at + 1 || q - label < 2) {
        /* one label only, or a one-letter top-level label */
        return 0;
    }

    for (q = label; q < last; q++) {
        if (!ragnx_rpc_alpha(*q)) {
            return 0;
        }
    }

    return 1;
}
