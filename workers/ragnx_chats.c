
/*
 * ragnx worker pool: chat history, the synchronous calls chats and
 * messages, and the module's own "chat" (whose chat is this?), all three
 * behind one ownership rule (ragnx_acc_owner).  They answer with the
 * helpers of ragnx_accounts.c.
 */


#include <stdio.h>
#include <string.h>

#include "ragnx_worker.h"
#include "ragnx_keys.h"
#include "ragnx_rpc.h"
#include "ragnx_uuid.h"


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

/*
 * The newest page before the cursor, put oldest first by the caller.
 * chat_messages (sql/007_record_chats.sql) adds the exchange a chat's
 * own row holds, at seq -1 and 0: a cursor is never below 0.
 */
static const char  ragnx_sql_messages[] =
    "SELECT seq, id, role, content, coalesce(sources, '[]'), "
    RAGNX_TS("created_at") ", truncated, model = 'cache' "
    "FROM chat_messages "
    "WHERE chat_id = $1 AND ($2::bigint IS NULL OR seq < $2) "
    "ORDER BY seq DESC LIMIT $3";


static int ragnx_acc_page(const ragnx_call_t *c, int *limit, char *limit_s,
    const char **before, char **body);
static int ragnx_acc_owner(ragnx_thread_t *t, const ragnx_call_t *c,
    const char *chat, PGconn **conn, PGresult **res, char **body);


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

        /* an answer cut at the LLM's token limit says so */
        if (msg && PQgetvalue(res, i, 6)[0] == 't') {
            json_object_set_new(msg, "truncated", json_true());
        }

        /*
         * An answer not written for this chat: a cache hit's, or that of
         * an identical question being answered at the time (a record,
         * sql/007_record_chats.sql), as the page showed it when asked.
         */
        if (msg && PQgetvalue(res, i, 7)[0] == 't') {
            json_object_set_new(msg, "source", json_string("cache"));
        }

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
