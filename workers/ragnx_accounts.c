
/*
 * ragnx worker pool: accounts, the synchronous calls register, login and
 * me, and the helpers every call of the pool answers with (ragnx_chats.c
 * uses them too).
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
#include "ragnx_rpc.h"
#include "ragnx_utf8.h"
#include "ragnx_uuid.h"


#define RAGNX_PASSWORD_MIN   8
#define RAGNX_PASSWORD_MAX   128
#define RAGNX_NAME_MAX       100

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


static sem_t   ragnx_hash_sem;
static char    ragnx_dummy_hash[crypto_pwhash_STRBYTES];


static int ragnx_acc_hash_enter(const ragnx_call_t *c);
static json_t *ragnx_acc_user(PGresult *res, int row);
static int ragnx_acc_session(int status, PGresult *res, char **body);
static char *ragnx_acc_token(const char *sub);


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


const char *
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

int
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


int
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


int
ragnx_acc_error(int status, const char *msg, char **body)
{
    *body = ragnx_acc_dump(json_pack("{s:s}", "error", msg));
    return status;
}


/* Zod-style, as the nginx validator answers: {error, details: {f: [m]}} */

int
ragnx_acc_invalid(const char *field, const char *msg, char **body)
{
    *body = ragnx_acc_dump(json_pack("{s:s, s:{s:[s]}}",
                                     "error", "Validation failed",
                                     "details", field, msg));
    return 400;
}


/* the body, compact; consumes v; NULL when v is (out of memory) */

char *
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
