
/*
 * ragnx: synchronous calls from nginx to the worker pool.
 *
 * A call is an entry XADDed to the stream {ragnx}:rpc (MAXLEN ~ 100000)
 * with the fields
 *
 *   id        call id, a v4 UUID minted by the nginx worker
 *   method    register | login | me | chats | messages | chat
 *   reply     the channel the waiting nginx worker SUBSCRIBEs to,
 *             {ragnx}:reply:<hostname>:<pid>
 *   deadline  ms since the epoch after which nobody waits: the pool skips
 *             the call instead of answering it
 *   sub       the JWT subject for authenticated methods, else empty
 *   params    a JSON object: the validated body (register, login), or
 *             {"limit", "before"?, "chatId"?} (chats, messages), or
 *             {"chatId"} (chat), or {}
 *
 * register and login carry a password in and a token out: their params
 * and reply bodies are sealed (ragnx_seal.h), and the pool deletes every
 * call entry as it reads it.
 *
 * "chat" is the module's own call, made by POST /api/ask when a chatId
 * is not in Redis ({ragnx}:chat:<id> expired): 200 when the chat is the
 * caller's, else 404.  The pool puts the owner back in Redis first.
 *
 * The reply is one PUBLISH on that channel: "<call id> <status> <body>",
 * single spaces, status three digits, body the JSON sent to the client as
 * is.  A reply whose id is no longer awaited (timed out, client gone) is
 * dropped by the receiver, so the pool need not care.
 *
 * The pool reads the stream with its consumer group (RAGNX_GROUP), on
 * threads of its own beside the job threads, with NOACK: a call is worth
 * answering only until its deadline (past it the waiting request has had
 * its 504), so redelivery after a crash would serve nobody.
 */


#ifndef RAGNX_RPC_H
#define RAGNX_RPC_H


#include <stddef.h>


#define RAGNX_RPC_REGISTER        1
#define RAGNX_RPC_LOGIN           2
#define RAGNX_RPC_ME              3
#define RAGNX_RPC_CHATS           4
#define RAGNX_RPC_MESSAGES        5
#define RAGNX_RPC_CHAT            6

#define RAGNX_RPC_MAXLEN          "100000"

/* pagination bounds of chats and messages */
#define RAGNX_RPC_LIMIT_MIN       1
#define RAGNX_RPC_LIMIT_MAX       100
#define RAGNX_RPC_LIMIT_DEFAULT   20
#define RAGNX_RPC_CURSOR_MAX      128

/* "<36-char id> <3-digit status> " before the body */
#define RAGNX_RPC_REPLY_HEAD      (36 + 1 + 3 + 1)


typedef struct {
    const char  *id;           /* 36 characters, not NUL-terminated */
    int          status;       /* 100..599 */
    const char  *body;
    size_t       body_len;
} ragnx_rpc_reply_t;


/* RAGNX_RPC_* for a method name, 0 if unknown */
int ragnx_rpc_method(const char *name, size_t len);

/* the name of a RAGNX_RPC_* method, NULL if unknown */
const char *ragnx_rpc_method_name(int method);

/* 1 if the method acts for an authenticated user (needs "sub") */
int ragnx_rpc_method_authenticated(int method);

/* 1 if the method's params and reply are sealed (a secret either way) */
int ragnx_rpc_method_sealed(int method);

/*
 * Split a reply message; pointers go into msg.  Returns 0, or -1 when the
 * message is not "<uuid> <status> <non-empty body>".  On -1 rep->id is
 * still set when the message starts with a well-formed id, else NULL.
 */
int ragnx_rpc_reply_parse(const char *msg, size_t len,
    ragnx_rpc_reply_t *rep);

/*
 * Write a reply message for PUBLISH into out, which must hold
 * RAGNX_RPC_REPLY_HEAD + body_len bytes; returns the length, or 0 when
 * the id or status is invalid.  Not NUL-terminated.
 */
size_t ragnx_rpc_reply_write(char *out, const char *id, int status,
    const char *body, size_t body_len);

/* the "deadline" field: ms since the epoch, or -1 when malformed */
long long ragnx_rpc_deadline(const char *s, size_t len);

/* 1 when a call with this deadline must be skipped at time now (ms) */
int ragnx_rpc_expired(long long deadline, long long now);

/* the "limit" argument: its value, or -1 unless an integer in bounds */
int ragnx_rpc_limit(const char *s, size_t len);

/* 1 for a "before" cursor: 1..RAGNX_RPC_CURSOR_MAX printable ASCII */
int ragnx_rpc_cursor_valid(const char *s, size_t len);

/*
 * 1 for an email address both sides accept: local@domain, ASCII only, a
 * dot-atom local part of up to 64 characters, a domain of two or more LDH
 * labels ending in an alphabetic label of two or more letters, 254 in all.
 * The JSON schema format "email" in nginx and register in the pool use it.
 */
int ragnx_rpc_email_valid(const char *s, size_t len);


#endif /* RAGNX_RPC_H */
