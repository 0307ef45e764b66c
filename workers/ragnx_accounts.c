
/*
 * ragnx worker pool: accounts and chat history, the synchronous calls
 * register, login, me, chats and messages, and the module's own "chat"
 * (whose chat is this?).
 *
 * Passwords are hashed with argon2id (crypto_pwhash_str); each hash takes
 * password_memlimit of memory, so a process computes at most
 * hash_concurrency of them at once and a call waits for a turn no longer
 * than its deadline.  Login spends one hash on an unknown email too,
 * against a dummy made at start with the same parameters, so both failures
 * cost the same time and return the same body.  The dummy has the
 * parameters of a fresh hash, so it costs what a real verify does.
 *
 * Tokens carry sub (the user id), iat, exp and, when set, iss and aud; they
 * are signed with jwt_key_file, the key (or the private half of the key
 * pair) the nginx module verifies with.
 */


#include <errno.h>
#include <semaphore.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <jwt.h>
#include <sodium.h>

#include "ragnx_worker.h"
#include "ragnx_keys.h"
#include "ragnx_rpc.h"
#include "ragnx_utf8.h"
#include "ragnx_uuid.h"


#define RAGNX_PASSWORD_MIN   8
#define RAGNX_PASSWORD_MAX   128
#define RAGNX_NAME_MAX       100

/* timestamps as the API shows them: ISO 8601, UTC, milliseconds */
#define RAGNX_TS(col)                                                         \
    "to_char(" col " AT TIME ZONE 'UTC', "                                    \
    "'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"')"

#define RAGNX_USER_COLS  "id, email, name, " RAGNX_TS("created_at")


static const char  ragnx_sql_email_taken[] =
    "SELECT 1 FROM users WHERE lower(email) = lower($1)";

static const char  ragnx_sql_register[] =
    "INSERT INTO users (email, password_hash, name) VALUES ($1, $2, $3) "
    "RETURNING " RAGNX_USER_COLS;

static const char  ragnx_sql_login[] =
    "SELECT " RAGNX_USER_COLS ", password_hash FROM users "
    "WHERE lower(email) = lower($1)";

/* only if nobody changed it meanwhile */
static const char  ragnx_sql_rehash[] =
    "UPDATE users SET password_hash = $2 WHERE id = $1 "
    "AND password_hash = $3";

static const char  ragnx_sql_me[] =
    "SELECT " RAGNX_USER_COLS " FROM users WHERE id = $1";

/*
 * Newest activity first; the cursor is the last row's (updated_at in
 * microseconds since the epoch, id), compared as a row so that equal
 * times still page exactly once.
 */
static const char  ragnx_sql_chats[] =
    "SELECT id, title, " RAGNX_TS("created_at") ", "
    RAGNX_TS("updated_at") ", "
    "(extract(epoch FROM updated_at) * 1000000)::bigint "
    "FROM chats WHERE owner = $1 AND ($2::bigint IS NULL "
    "OR (updated_at, id) < ('epoch'::timestamptz "
    "+ $2::bigint * interval '1 microsecond', $3::uuid)) "
    "ORDER BY updated_at DESC, id DESC LIMIT $4";

static const char  ragnx_sql_chat_owner[] =
    "SELECT owner FROM chats WHERE id = $1";

/* the newest page before the cursor, put oldest first by the caller */
static const char  ragnx_sql_messages[] =
    "SELECT seq, id, role, content, coalesce(sources, '[]'), "
    RAGNX_TS("created_at") " FROM messages WHERE chat_id = $1 "
    "AND ($2::bigint IS NULL OR seq < $2) ORDER BY seq DESC LIMIT $3";


static sem_t   ragnx_hash_sem;
static char    ragnx_dummy_hash[crypto_pwhash_STRBYTES];


static char *ragnx_acc_dump(json_t *v);
static int ragnx_acc_error(int status, const char *msg, char **body);
static int ragnx_acc_invalid(const char *field, const char *msg,
    char **body);
static int ragnx_acc_db(ragnx_thread_t *t, const ragnx_call_t *c,
    PGconn **conn, char **body);
static int ragnx_acc_owner(ragnx_thread_t *t, const ragnx_call_t *c,
    const char *chat, PGconn **conn, PGresult **res, char **body);
static int ragnx_acc_failed(ragnx_thread_t *t, PGconn *conn, PGresult *res,
    const char *what, char **body);
static int ragnx_acc_hash_enter(const ragnx_call_t *c);
static json_t *ragnx_acc_user(PGresult *res, int row);
static int ragnx_acc_session(int status, PGresult *res, char **body);
static char *ragnx_acc_token(const char *sub);
static const char *ragnx_acc_string(const ragnx_call_t *c, const char *name,
    size_t *len);
static int ragnx_acc_page(const ragnx_call_t *c, int *limit, char *limit_s,
    const char **before, char **body);


/* per worker process, before the call threads start */

int
ragnx_accounts_init(void)
{
    char           salt64[32], hash64[64];
    unsigned char  salt[crypto_pwhash_SALTBYTES], hash[32];

    if (sodium_init() < 0) {
        ragnx_log(RAGNX_LOG_ERROR, "sodium_init failed");
        return RAGNX_ERROR;
    }

    if (sem_init(&ragnx_hash_sem, 0, (unsigned) ragnx_conf->hash_concurrency)
        != 0)
    {
        ragnx_log(RAGNX_LOG_ERROR, "sem_init: %s", strerror(errno));
        return RAGNX_ERROR;
    }

    /*
     * The dummy for unknown emails is written, not computed: verifying
     * against it costs a full hash with these parameters either way, and
     * the process does not start with a 64 MiB peak for it.
     */

    randombytes_buf(salt, sizeof(salt));
    randombytes_buf(hash, sizeof(hash));

    sodium_bin2base64(salt64, sizeof(salt64), salt, sizeof(salt),
                      sodium_base64_VARIANT_ORIGINAL_NO_PADDING);
    sodium_bin2base64(hash64, sizeof(hash64), hash, sizeof(hash),
                      sodium_base64_VARIANT_ORIGINAL_NO_PADDING);

    snprintf(ragnx_dummy_hash, sizeof(ragnx_dummy_hash),
             "%sv=19$m=%ld,t=%ld,p=1$%s$%s", crypto_pwhash_argon2id_STRPREFIX,
             ragnx_conf->password_memlimit, ragnx_conf->password_opslimit,
             salt64, hash64);

    if (ragnx_conf->jwt_key == NULL) {
        ragnx_log(RAGNX_LOG_WARN, "no jwt_key_file: register and login "
                  "answer 503");
    }

    return RAGNX_OK;
}


/* register: {email, password, name?} -> 201 {token, user} */

int
ragnx_account_register(ragnx_thread_t *t, const ragnx_call_t *c, char **body)
{
    int          rc;
    char         hash[crypto_pwhash_STRBYTES];
    size_t       elen, plen, nlen;
    PGconn      *conn;
    PGresult    *res;
    const char  *email, *password, *name, *params[3], *state;

    if (ragnx_conf->jwt_key == NULL) {
        return ragnx_acc_error(503, "accounts unavailable", body);
    }

    email = ragnx_acc_string(c, "email", &elen);
    password = ragnx_acc_string(c, "password", &plen);
    name = ragnx_acc_string(c, "name", &nlen);

    if (email == NULL || !ragnx_rpc_email_valid(email, elen)) {
        return ragnx_acc_invalid("email", "must be a valid email", body);
    }

    if (password == NULL
        || ragnx_utf8_length((const unsigned char *) password, plen)
           < RAGNX_PASSWORD_MIN)
    {
        return ragnx_acc_invalid("password",
                                 "must be at least 8 characters", body);
    }

    if (ragnx_utf8_length((const unsigned char *) password, plen)
        > RAGNX_PASSWORD_MAX)
    {
        return ragnx_acc_invalid("password",
                                 "must be at most 128 characters", body);
    }

    if (json_object_get(c->params, "name") != NULL
        && !json_is_null(json_object_get(c->params, "name"))
        && (name == NULL
            || ragnx_utf8_length((const unsigned char *) name, nlen)
               > RAGNX_NAME_MAX
            || memchr(name, '\0', nlen)))
    {
        return ragnx_acc_invalid("name", "must be a string of at most 100 "
                                 "characters", body);
    }

    rc = ragnx_acc_db(t, c, &conn, body);
    if (conn == NULL) {
        return rc;
    }

    /* a taken email costs no hash; the unique index still decides races */

    params[0] = email;
    res = ragnx_db_query(conn, "ragnx_email_taken", ragnx_sql_email_taken, 1,
                         params);

    if (res == NULL || PQresultStatus(res) != PGRES_TUPLES_OK) {
        return ragnx_acc_failed(t, conn, res, "register", body);
    }

    if (PQntuples(res) > 0) {
        PQclear(res);
        ragnx_db_put(t->db, conn, 0);
        return ragnx_acc_error(409, "Email already registered", body);
    }

    PQclear(res);

    /* no connection is held while hashing: the hash takes longest */
    ragnx_db_put(t->db, conn, 0);

    if (ragnx_acc_hash_enter(c) != RAGNX_OK) {
        return 0;
    }

    rc = crypto_pwhash_str(hash, password, plen,
                           (unsigned long long) ragnx_conf->password_opslimit,
                           (size_t) ragnx_conf->password_memlimit * 1024);
    sem_post(&ragnx_hash_sem);

    if (rc != 0) {
        ragnx_log(RAGNX_LOG_ERROR, "crypto_pwhash_str failed (memory)");
        return ragnx_acc_error(503, "Service unavailable", body);
    }

    rc = ragnx_acc_db(t, c, &conn, body);
    if (conn == NULL) {
        return rc;
    }

    params[0] = email;
    params[1] = hash;
    params[2] = name;

    res = ragnx_db_query(conn, "ragnx_register", ragnx_sql_register, 3,
                         params);

    state = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;

    if (state && strcmp(state, "23505") == 0) {
        /* registered meanwhile by another call */
        PQclear(res);
        ragnx_db_put(t->db, conn, 0);
        return ragnx_acc_error(409, "Email already registered", body);
    }

    if (res == NULL || PQresultStatus(res) != PGRES_TUPLES_OK
        || PQntuples(res) != 1)
    {
        return ragnx_acc_failed(t, conn, res, "register", body);
    }

    rc = ragnx_acc_session(201, res, body);

    PQclear(res);
    ragnx_db_put(t->db, conn, 0);

    return rc;
}


/* login: {email, password} -> 200 {token, user} or the one 401 */

int
ragnx_account_login(ragnx_thread_t *t, const ragnx_call_t *c, char **body)
{
    int          rc, ok, found;
    char         hash[crypto_pwhash_STRBYTES], fresh[crypto_pwhash_STRBYTES];
    size_t       elen, plen;
    PGconn      *conn;
    PGresult    *res, *up;
    const char  *email, *password, *params[3];

    if (ragnx_conf->jwt_key == NULL) {
        return ragnx_acc_error(503, "accounts unavailable", body);
    }

    email = ragnx_acc_string(c, "email", &elen);
    password = ragnx_acc_string(c, "password", &plen);

    if (email == NULL || password == NULL) {
        return ragnx_acc_invalid(email ? "password" : "email",
                                 "is required", body);
    }

    rc = ragnx_acc_db(t, c, &conn, body);
    if (conn == NULL) {
        return rc;
    }

    params[0] = email;
    res = ragnx_db_query(conn, "ragnx_login", ragnx_sql_login, 1, params);

    if (res == NULL || PQresultStatus(res) != PGRES_TUPLES_OK) {
        return ragnx_acc_failed(t, conn, res, "login", body);
    }

    ragnx_db_put(t->db, conn, 0);

    found = PQntuples(res) == 1
            && (size_t) PQgetlength(res, 0, 4) < sizeof(hash);

    if (found) {
        memcpy(hash, PQgetvalue(res, 0, 4), PQgetlength(res, 0, 4) + 1);

    } else {
        memcpy(hash, ragnx_dummy_hash, sizeof(hash));
    }

    if (ragnx_acc_hash_enter(c) != RAGNX_OK) {
        PQclear(res);
        return 0;
    }

    ok = crypto_pwhash_str_verify(hash, password, plen) == 0 && found;

    if (!found) {
        /* the tests count these: no timing is needed to see it happen */
        ragnx_log(RAGNX_LOG_DEBUG, "login: verified against the dummy hash");
    }

    /* parameters changed since this hash was made: store a new one */

    rc = -1;

    if (ok && crypto_pwhash_str_needs_rehash(hash,
                  (unsigned long long) ragnx_conf->password_opslimit,
                  (size_t) ragnx_conf->password_memlimit * 1024) != 0)
    {
        rc = crypto_pwhash_str(fresh, password, plen,
                  (unsigned long long) ragnx_conf->password_opslimit,
                  (size_t) ragnx_conf->password_memlimit * 1024);
    }

    sem_post(&ragnx_hash_sem);

    if (!ok) {
        PQclear(res);
        return ragnx_acc_error(401, "Invalid email or password", body);
    }

    if (rc == 0) {
        conn = ragnx_db_get_within(t->db, ragnx_conf->db_timeout);

        if (conn) {
            params[0] = PQgetvalue(res, 0, 0);
            params[1] = fresh;
            params[2] = hash;

            up = ragnx_db_query(conn, "ragnx_rehash", ragnx_sql_rehash, 3,
                                params);

            if (up == NULL || PQresultStatus(up) != PGRES_COMMAND_OK) {
                /* the old hash still works: log and go on */
                ragnx_log(RAGNX_LOG_WARN, "rehash of user %s failed: %s",
                          params[0], up ? PQresultErrorMessage(up)
                                        : PQerrorMessage(conn));
            }

            PQclear(up);
            ragnx_db_put(t->db, conn, PQstatus(conn) != CONNECTION_OK);
        }
    }

    rc = ragnx_acc_session(200, res, body);

    PQclear(res);

    return rc;
}


/* me: the user of the token's sub, 404 once deleted */

int
ragnx_account_me(ragnx_thread_t *t, const ragnx_call_t *c, char **body)
{
    int          rc;
    json_t      *user;
    PGconn      *conn;
    PGresult    *res;
    const char  *params[1];

    /* a token from another issuer may carry any sub: not one of ours */

    if (!ragnx_uuid_valid(c->sub, strlen(c->sub))) {
        return ragnx_acc_error(404, "User not found", body);
    }

    rc = ragnx_acc_db(t, c, &conn, body);
    if (conn == NULL) {
        return rc;
    }

    params[0] = c->sub;
    res = ragnx_db_query(conn, "ragnx_me", ragnx_sql_me, 1, params);

    if (res == NULL || PQresultStatus(res) != PGRES_TUPLES_OK) {
        return ragnx_acc_failed(t, conn, res, "me", body);
    }

    ragnx_db_put(t->db, conn, 0);

    if (PQntuples(res) != 1) {
        PQclear(res);
        return ragnx_acc_error(404, "User not found", body);
    }

    user = ragnx_acc_user(res, 0);
    PQclear(res);

    *body = ragnx_acc_dump(user);

    return 200;
}


/* chats: {limit, before?} -> {chats: [...], next} */

int
ragnx_account_chats(ragnx_thread_t *t, const ragnx_call_t *c, char **body)
{
    int          rc, i, n, limit;
    char         limit_s[16], micros[24], cursor[80];
    json_t      *out, *list, *chat;
    size_t       len;
    PGconn      *conn;
    PGresult    *res;
    const char  *before, *us, *params[4];

    rc = ragnx_acc_page(c, &limit, limit_s, &before, body);
    if (rc != RAGNX_OK) {
        return rc;
    }

    params[0] = c->sub;
    params[1] = NULL;
    params[2] = NULL;
    params[3] = limit_s;

    if (before) {
        /* "<microseconds>_<chat id>", as written below */
        us = strchr(before, '_');
        len = us ? (size_t) (us - before) : 0;

        /* 18 digits at most: any bigint, never an overflow in SQL */
        if (len == 0 || len > 18
            || strspn(before, "0123456789") != len
            || !ragnx_uuid_valid(us + 1, strlen(us + 1)))
        {
            return ragnx_acc_invalid("before", "must be a cursor from a "
                                     "previous page", body);
        }

        memcpy(micros, before, len);
        micros[len] = '\0';
        params[1] = micros;
        params[2] = us + 1;
    }

    rc = ragnx_acc_db(t, c, &conn, body);
    if (conn == NULL) {
        return rc;
    }

    res = ragnx_db_query(conn, "ragnx_chats", ragnx_sql_chats, 4, params);

    if (res == NULL || PQresultStatus(res) != PGRES_TUPLES_OK) {
        return ragnx_acc_failed(t, conn, res, "chats", body);
    }

    ragnx_db_put(t->db, conn, 0);

    n = PQntuples(res);
    list = json_array();

    /* one row more than asked for says there is a next page */

    for (i = 0; i < n && i < limit - 1; i++) {
        chat = json_pack("{s:s, s:s%, s:s, s:s}",
                         "id", PQgetvalue(res, i, 0),
                         "title", PQgetvalue(res, i, 1),
                         (size_t) PQgetlength(res, i, 1),
                         "createdAt", PQgetvalue(res, i, 2),
                         "updatedAt", PQgetvalue(res, i, 3));
        json_array_append_new(list, chat);
    }

    cursor[0] = '\0';

    if (n == limit && i > 0) {
        snprintf(cursor, sizeof(cursor), "%s_%s", PQgetvalue(res, i - 1, 4),
                 PQgetvalue(res, i - 1, 0));
    }

    PQclear(res);

    out = json_pack("{s:o, s:o}", "chats", list,
                    "next", cursor[0] ? json_string(cursor) : json_null());

    *body = ragnx_acc_dump(out);

    return 200;
}


/* messages: {chatId, limit, before?} -> {messages: [...], next} */

int
ragnx_account_messages(ragnx_thread_t *t, const ragnx_call_t *c, char **body)
{
    int          rc, i, n, limit, mine;
    char         limit_s[16];
    json_t      *out, *list, *msg, *sources;
    size_t       len;
    PGconn      *conn;
    PGresult    *res;
    const char  *before, *chat, *params[3];

    chat = ragnx_acc_string(c, "chatId", &len);

    if (chat == NULL || !ragnx_uuid_valid(chat, len)) {
        return ragnx_acc_error(400, "Invalid chat id", body);
    }

    rc = ragnx_acc_page(c, &limit, limit_s, &before, body);
    if (rc != RAGNX_OK) {
        return rc;
    }

    if (before
        && (strspn(before, "0123456789") != strlen(before)
            || strlen(before) > 18))
    {
        return ragnx_acc_invalid("before", "must be a cursor from a "
                                 "previous page", body);
    }

    rc = ragnx_acc_owner(t, c, chat, &conn, &res, body);
    if (conn == NULL) {
        return rc;
    }

    /* another user's chat and no chat look the same */
    mine = PQntuples(res) == 1 && strcmp(PQgetvalue(res, 0, 0), c->sub) == 0;
    PQclear(res);

    if (!mine) {
        ragnx_db_put(t->db, conn, 0);
        return ragnx_acc_error(404, "Chat not found", body);
    }

    params[0] = chat;
    params[1] = before;
    params[2] = limit_s;

    res = ragnx_db_query(conn, "ragnx_messages", ragnx_sql_messages, 3,
                         params);

    if (res == NULL || PQresultStatus(res) != PGRES_TUPLES_OK) {
        return ragnx_acc_failed(t, conn, res, "messages", body);
    }

    ragnx_db_put(t->db, conn, 0);

    n = PQntuples(res);
    if (n > limit - 1) {
        n = limit - 1;
    }

    list = json_array();

    /* newest first from the query; the page goes out oldest first */

    for (i = n - 1; i >= 0; i--) {
        sources = json_loads(PQgetvalue(res, i, 4), 0, NULL);

        msg = json_pack("{s:s, s:s, s:s%, s:o, s:s}",
                        "id", PQgetvalue(res, i, 1),
                        "role", PQgetvalue(res, i, 2),
                        "content", PQgetvalue(res, i, 3),
                        (size_t) PQgetlength(res, i, 3),
                        "sources", sources ? sources : json_array(),
                        "createdAt", PQgetvalue(res, i, 5));
        json_array_append_new(list, msg);
    }

    out = json_pack("{s:o, s:o}", "messages", list,
                    "next", PQntuples(res) == limit && n > 0
                            ? json_string(PQgetvalue(res, n - 1, 0))
                            : json_null());

    PQclear(res);

    *body = ragnx_acc_dump(out);

    return 200;
}


/*
 * Whose chat is this: asked by POST /api/ask for a chatId that Redis no
 * longer knows.  The owner goes back into Redis ({ragnx}:chat:<id>, sent
 * before the reply, on the same connection), so the module's next look
 * finds it there, for the owner and for anyone probing; then 200 for
 * the owner, 404 otherwise (another user's chat and no chat look the
 * same).
 */

int
ragnx_account_chat(ragnx_thread_t *t, const ragnx_call_t *c, char **body)
{
    int          rc, mine;
    size_t       len;
    PGconn      *conn;
    PGresult    *res;
    const char  *chat;

    chat = ragnx_acc_string(c, "chatId", &len);

    if (chat == NULL || !ragnx_uuid_valid(chat, len)) {
        return ragnx_acc_error(400, "Invalid chat id", body);
    }

    rc = ragnx_acc_owner(t, c, chat, &conn, &res, body);
    if (conn == NULL) {
        return rc;
    }

    ragnx_db_put(t->db, conn, 0);

    mine = 0;

    if (PQntuples(res) == 1) {
        mine = strcmp(PQgetvalue(res, 0, 0), c->sub) == 0;
        ragnx_call_append(&t->redis, "SET " RAGNX_KEY_CHAT "%s %s EX %d",
                          chat, PQgetvalue(res, 0, 0), RAGNX_CHAT_TTL);
    }

    PQclear(res);

    if (!mine) {
        return ragnx_acc_error(404, "Chat not found", body);
    }

    *body = ragnx_acc_dump(json_pack("{s:s}", "chatId", chat));

    return 200;
}


/* limit and before of chats and messages; limit_s is limit + 1 */

static int
ragnx_acc_page(const ragnx_call_t *c, int *limit, char *limit_s,
    const char **before, char **body)
{
    json_t  *v;

    v = json_object_get(c->params, "limit");
    *limit = RAGNX_RPC_LIMIT_DEFAULT;

    if (v) {
        if (!json_is_integer(v)
            || json_integer_value(v) < RAGNX_RPC_LIMIT_MIN
            || json_integer_value(v) > RAGNX_RPC_LIMIT_MAX)
        {
            return ragnx_acc_invalid("limit", "must be an integer from 1 to "
                                     "100", body);
        }

        *limit = (int) json_integer_value(v);
    }

    /* one more row than the page, to know whether another follows */
    (*limit)++;
    snprintf(limit_s, 16, "%d", *limit);

    v = json_object_get(c->params, "before");
    *before = NULL;

    if (v && !json_is_null(v)) {
        if (!json_is_string(v)
            || !ragnx_rpc_cursor_valid(json_string_value(v),
                                       json_string_length(v)))
        {
            return ragnx_acc_invalid("before", "must be a cursor from a "
                                     "previous page", body);
        }

        *before = json_string_value(v);
    }

    return RAGNX_OK;
}


static const char *
ragnx_acc_string(const ragnx_call_t *c, const char *name, size_t *len)
{
    json_t  *v;

    v = json_object_get(c->params, name);

    if (!json_is_string(v)) {
        *len = 0;
        return NULL;
    }

    *len = json_string_length(v);

    return json_string_value(v);
}


/*
 * A connection for a call, waiting no longer than the call may: NULL with
 * the status to return (503, or 0 when the deadline passed meanwhile).
 */

static int
ragnx_acc_db(ragnx_thread_t *t, const ragnx_call_t *c, PGconn **conn,
    char **body)
{
    long long  left;

    left = c->deadline - ragnx_now_ms();

    if (left <= 0) {
        *conn = NULL;
        return 0;
    }

    *conn = ragnx_db_get_within(t->db, left < ragnx_conf->db_timeout
                                       ? (long) left
                                       : ragnx_conf->db_timeout);
    if (*conn == NULL) {
        return ragnx_acc_error(503, "database unavailable", body);
    }

    return RAGNX_OK;
}


/*
 * The row of chat's owner (none: no such chat) in *res, on a connection
 * the caller then holds; or *conn NULL and the status to return.  Both
 * "chat" and "messages" ask it: one ownership rule.
 */

static int
ragnx_acc_owner(ragnx_thread_t *t, const ragnx_call_t *c, const char *chat,
    PGconn **conn, PGresult **res, char **body)
{
    int          rc;
    const char  *params[1];

    rc = ragnx_acc_db(t, c, conn, body);
    if (*conn == NULL) {
        return rc;
    }

    params[0] = chat;
    *res = ragnx_db_query(*conn, "ragnx_chat_owner", ragnx_sql_chat_owner, 1,
                          params);

    if (*res == NULL || PQresultStatus(*res) != PGRES_TUPLES_OK) {
        rc = ragnx_acc_failed(t, *conn, *res, ragnx_rpc_method_name(c->method),
                              body);
        *conn = NULL;
        return rc;
    }

    return RAGNX_OK;
}


static int
ragnx_acc_failed(ragnx_thread_t *t, PGconn *conn, PGresult *res,
    const char *what, char **body)
{
    int  broken;

    broken = PQstatus(conn) != CONNECTION_OK;

    ragnx_log(RAGNX_LOG_ERROR, "postgres %s: %s", what,
              res ? PQresultErrorMessage(res) : PQerrorMessage(conn));

    PQclear(res);
    ragnx_db_put(t->db, conn, broken);

    if (broken) {
        return ragnx_acc_error(503, "database unavailable", body);
    }

    return ragnx_acc_error(500, "Internal server error", body);
}


/* a turn to hash, waited for until the call's deadline at most */

static int
ragnx_acc_hash_enter(const ragnx_call_t *c)
{
    struct timespec  ts;

    ts.tv_sec = c->deadline / 1000;
    ts.tv_nsec = (c->deadline % 1000) * 1000000;

    while (sem_timedwait(&ragnx_hash_sem, &ts) != 0) {
        if (errno != EINTR) {
            return RAGNX_ERROR;
        }
    }

    return RAGNX_OK;
}


/* id, email, name, createdAt from the first four columns of a row */

static json_t *
ragnx_acc_user(PGresult *res, int row)
{
    return json_pack("{s:s, s:s%, s:o, s:s}",
                     "id", PQgetvalue(res, row, 0),
                     "email", PQgetvalue(res, row, 1),
                     (size_t) PQgetlength(res, row, 1),
                     "name", PQgetisnull(res, row, 2)
                             ? json_null()
                             : json_stringn(PQgetvalue(res, row, 2),
                                            PQgetlength(res, row, 2)),
                     "createdAt", PQgetvalue(res, row, 3));
}


static int
ragnx_acc_session(int status, PGresult *res, char **body)
{
    char    *token;
    json_t  *user;

    token = ragnx_acc_token(PQgetvalue(res, 0, 0));
    if (token == NULL) {
        ragnx_log(RAGNX_LOG_ERROR, "cannot sign a token: %s",
                  strerror(errno));
        return ragnx_acc_error(500, "Internal server error", body);
    }

    user = ragnx_acc_user(res, 0);

    *body = ragnx_acc_dump(json_pack("{s:s, s:o}", "token", token,
                                     "user", user));
    free(token);

    return status;
}


static char *
ragnx_acc_token(const char *sub)
{
    char       *token;
    jwt_t      *jwt;
    time_t      now;
    jwt_alg_t   alg;

    switch (ragnx_conf->jwt_alg) {
    case RAGNX_JWT_RS256:
        alg = JWT_ALG_RS256;
        break;
    case RAGNX_JWT_ES256:
        alg = JWT_ALG_ES256;
        break;
    default:
        alg = JWT_ALG_HS256;
    }

    if (jwt_new(&jwt) != 0) {
        return NULL;
    }

    token = NULL;
    now = time(NULL);

    if (jwt_add_grant(jwt, "sub", sub) == 0
        && jwt_add_grant_int(jwt, "iat", (long) now) == 0
        && jwt_add_grant_int(jwt, "exp", (long) now + ragnx_conf->jwt_ttl)
           == 0
        && (ragnx_conf->jwt_issuer == NULL
            || jwt_add_grant(jwt, "iss", ragnx_conf->jwt_issuer) == 0)
        && (ragnx_conf->jwt_audience == NULL
            || jwt_add_grant(jwt, "aud", ragnx_conf->jwt_audience) == 0)
        && jwt_set_alg(jwt, alg, ragnx_conf->jwt_key,
                       (int) ragnx_conf->jwt_key_len) == 0)
    {
        token = jwt_encode_str(jwt);
    }

    jwt_free(jwt);

    return token;
}


static int
ragnx_acc_error(int status, const char *msg, char **body)
{
    *body = ragnx_acc_dump(json_pack("{s:s}", "error", msg));
    return status;
}


/* Zod-style, as the nginx validator answers: {error, details: {f: [m]}} */

static int
ragnx_acc_invalid(const char *field, const char *msg, char **body)
{
    *body = ragnx_acc_dump(json_pack("{s:s, s:{s:[s]}}",
                                     "error", "Validation failed",
                                     "details", field, msg));
    return 400;
}


/* the body, compact; consumes v; NULL when v is (out of memory) */

static char *
ragnx_acc_dump(json_t *v)
{
    char  *s;

    if (v == NULL) {
        return NULL;
    }

    s = json_dumps(v, JSON_COMPACT);
    json_decref(v);

    return s;
}
