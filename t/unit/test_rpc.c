
/*
 * ragnx: unit tests of the synchronous call contract (ragnx_rpc.h):
 * method names, the reply message both ways, deadlines, paging arguments.
 */


#include <string.h>

#include "tap.h"
#include "ragnx_rpc.h"


#define ID "0b5e6c1d-2f3a-4b4c-9d8e-7f6a5b4c3d2e"


static int
parse(const char *msg, ragnx_rpc_reply_t *rep)
{
    return ragnx_rpc_reply_parse(msg, strlen(msg), rep);
}


static void
test_methods(void)
{
    ok(ragnx_rpc_method("register", 8) == RAGNX_RPC_REGISTER, "register");
    ok(ragnx_rpc_method("login", 5) == RAGNX_RPC_LOGIN, "login");
    ok(ragnx_rpc_method("me", 2) == RAGNX_RPC_ME, "me");
    ok(ragnx_rpc_method("chats", 5) == RAGNX_RPC_CHATS, "chats");
    ok(ragnx_rpc_method("messages", 8) == RAGNX_RPC_MESSAGES, "messages");
    ok(ragnx_rpc_method("chat", 4) == RAGNX_RPC_CHAT, "chat");
    ok(ragnx_rpc_method("mes", 3) == 0, "a prefix is not a method");
    ok(ragnx_rpc_method("ME", 2) == 0, "names are case-sensitive");
    ok(ragnx_rpc_method("", 0) == 0, "empty is not a method");
    is_str(ragnx_rpc_method_name(RAGNX_RPC_CHATS), "chats", "name of chats");
    ok(ragnx_rpc_method_name(0) == NULL, "no name for 0");
    ok(ragnx_rpc_method_name(7) == NULL, "no name past the last");
    ok(ragnx_rpc_method_authenticated(RAGNX_RPC_ME)
           && ragnx_rpc_method_authenticated(RAGNX_RPC_CHATS)
           && ragnx_rpc_method_authenticated(RAGNX_RPC_MESSAGES)
           && ragnx_rpc_method_authenticated(RAGNX_RPC_CHAT),
       "me, chats, messages act for a user");
    ok(!ragnx_rpc_method_authenticated(RAGNX_RPC_REGISTER)
           && !ragnx_rpc_method_authenticated(RAGNX_RPC_LOGIN),
       "register and login do not");
}


static void
test_reply(void)
{
    char              buf[128];
    size_t            n;
    ragnx_rpc_reply_t rep;

    ok(parse(ID " 201 {\"token\":\"t\"}", &rep) == 0, "a reply parses");
    ok(rep.id && memcmp(rep.id, ID, 36) == 0, "its id");
    ok(rep.status == 201, "its status");
    ok(rep.body_len == 13 && memcmp(rep.body, "{\"token\":\"t\"}", 13) == 0,
       "its body, as is");

    ok(parse(ID " 200 a b  c", &rep) == 0 && rep.body_len == 6,
       "spaces in the body are the body's");

    ok(parse(ID " 200 ", &rep) == -1 && rep.id != NULL,
       "an empty body is refused, the id still known");
    ok(parse(ID " 20x {}", &rep) == -1 && rep.id != NULL,
       "a bad status is refused, the id still known");
    ok(parse(ID " 099 {}", &rep) == -1, "status below 100 refused");
    ok(parse(ID " 600 {}", &rep) == -1, "status above 599 refused");
    ok(parse(ID "  200 {}", &rep) == -1, "two spaces refused");
    ok(parse(ID " 2000 {}", &rep) == -1, "four-digit status refused");
    ok(parse(ID, &rep) == -1 && rep.id != NULL, "an id alone is refused");
    ok(parse("not a reply at all, but long enough to be one", &rep) == -1
           && rep.id == NULL,
       "no id, no id");
    ok(parse("short", &rep) == -1 && rep.id == NULL, "short refused");

    n = ragnx_rpc_reply_write(buf, ID, 404, "{\"error\":\"x\"}", 13);
    ok(n == RAGNX_RPC_REPLY_HEAD + 13, "write: length");
    ok(n && ragnx_rpc_reply_parse(buf, n, &rep) == 0 && rep.status == 404
           && rep.body_len == 13 && memcmp(rep.id, ID, 36) == 0,
       "write then parse: the same reply");
    ok(ragnx_rpc_reply_write(buf, "nope", 200, "{}", 2) == 0,
       "write: bad id refused");
    ok(ragnx_rpc_reply_write(buf, ID, 99, "{}", 2) == 0,
       "write: bad status refused");
    ok(ragnx_rpc_reply_write(buf, ID, 200, "", 0) == 0,
       "write: empty body refused");
}


static void
test_deadline(void)
{
    ok(!ragnx_rpc_expired(2000, 1999), "before the deadline: wanted");
    ok(ragnx_rpc_expired(2000, 2000), "at the deadline: skipped");
    ok(ragnx_rpc_expired(2000, 2001), "after: skipped");
    ok(ragnx_rpc_expired(0, 1), "no deadline: skipped");
    ok(ragnx_rpc_deadline("1767225600000", 13) == 1767225600000LL,
       "deadline field parsed");
    ok(ragnx_rpc_deadline("", 0) == -1, "empty deadline refused");
    ok(ragnx_rpc_deadline("12a", 3) == -1, "non-digit deadline refused");
    ok(ragnx_rpc_deadline("-1", 2) == -1, "negative deadline refused");
    ok(ragnx_rpc_deadline("1234567890123456", 16) == -1,
       "absurd deadline refused");
}


static void
test_paging(void)
{
    ok(ragnx_rpc_limit("1", 1) == 1, "limit 1");
    ok(ragnx_rpc_limit("100", 3) == 100, "limit 100");
    ok(ragnx_rpc_limit("0", 1) == -1, "limit 0 refused");
    ok(ragnx_rpc_limit("101", 3) == -1, "limit 101 refused");
    ok(ragnx_rpc_limit("", 0) == -1, "empty limit refused");
    ok(ragnx_rpc_limit("-5", 2) == -1, "negative limit refused");
    ok(ragnx_rpc_limit("1e2", 3) == -1, "exponent refused");
    ok(ragnx_rpc_limit("0010", 4) == -1, "more than 3 digits refused");

    ok(ragnx_rpc_cursor_valid("2024-01-01T00:00:00.000Z", 24),
       "a timestamp cursor");
    ok(ragnx_rpc_cursor_valid("abc~!", 5), "printable ASCII cursor");
    ok(!ragnx_rpc_cursor_valid("", 0), "empty cursor refused");
    ok(!ragnx_rpc_cursor_valid("a b", 3), "space refused");
    ok(!ragnx_rpc_cursor_valid("a\nb", 3), "control refused");
    ok(!ragnx_rpc_cursor_valid("\xc3\xa9", 2), "non-ASCII refused");
    ok(ragnx_rpc_cursor_valid(
           "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
           "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
           RAGNX_RPC_CURSOR_MAX),
       "a cursor of the maximum length");
    ok(!ragnx_rpc_cursor_valid(
           "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
           "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
           RAGNX_RPC_CURSOR_MAX + 1),
       "one more refused");
}


int
main(void)
{
    test_methods();
    test_reply();
    test_deadline();
    test_paging();

    return done_testing();
}
