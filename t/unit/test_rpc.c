
/*
 * ragnx: unit tests of the synchronous call contract (ragnx_rpc.h):
 * method names, the reply message both ways, deadlines, paging arguments,
 * and the sealing of calls and replies (ragnx_seal.h).
 */


#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <sodium.h>

#include "tap.h"
#include "ragnx_rpc.h"
#include "ragnx_seal.h"


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


/* an X25519 key pair as openssl genpkey writes it: private and public PEM */
static int
pem_pair(const char *priv, const char *pub)
{
    int           rc;
    FILE         *f, *g;
    EVP_PKEY     *k;
    EVP_PKEY_CTX *ctx;

    k = NULL;
    ctx = EVP_PKEY_CTX_new_id(EVP_PKEY_X25519, NULL);
    if (ctx == NULL || EVP_PKEY_keygen_init(ctx) != 1
        || EVP_PKEY_keygen(ctx, &k) != 1) {
        EVP_PKEY_CTX_free(ctx);
        return -1;
    }

    f = fopen(priv, "w");
    g = fopen(pub, "w");
    rc = f && g && PEM_write_PrivateKey(f, k, NULL, NULL, 0, NULL, NULL)
                 && PEM_write_PUBKEY(g, k)
             ? 0
             : -1;
    if (f) {
        fclose(f);
    }
    if (g) {
        fclose(g);
    }
    EVP_PKEY_free(k);
    EVP_PKEY_CTX_free(ctx);
    return rc;
}


static void
test_seal(void)
{
    char dir[] = "/tmp/ragnx-seal-XXXXXX", priv[64], pub[64], err[256], *c, *b,
         *b2, json[256], out[256];
    long          n;
    size_t        len;
    unsigned char pk[32], pk2[32], sk[32], key[32], got[32], other[32];
    const char   *params = "{\"email\":\"a@b.example\",\"password\":"
                           "\"a distinctive secret\"}";
    const char   *body = "{\"token\":\"eyJ.x.y\"}";

    ok(ragnx_seal_init() == 0, "libsodium starts");
    ok(mkdtemp(dir) != NULL, "a directory for the keys");
    snprintf(priv, sizeof(priv), "%s/rpc.key", dir);
    snprintf(pub, sizeof(pub), "%s/rpc.pub", dir);
    ok(pem_pair(priv, pub) == 0, "an X25519 key pair in PEM");

    ok(ragnx_seal_load_public(pub, pk, err, sizeof(err)) == 0,
       "the public key loads");
    ok(ragnx_seal_load_secret(priv, pk2, sk, err, sizeof(err)) == 0,
       "the private key loads");
    ok(memcmp(pk, pk2, 32) == 0, "and its public half is the same");
    ok(ragnx_seal_load_public(priv, pk2, err, sizeof(err)) == -1
           && strstr(err, "not a PEM X25519 public key") != NULL,
       "a private key is not a public one: %s", err);
    ok(ragnx_seal_load_secret(pub, pk2, sk, err, sizeof(err)) == -1,
       "nor the other way round");
    ok(ragnx_seal_load_public("/nonexistent/rpc.pub", pk2, err, sizeof(err))
               == -1
           && strstr(err, "cannot open") != NULL,
       "a missing file says so");
    ragnx_seal_load_secret(priv, pk2, sk, err, sizeof(err));

    randombytes_buf(key, sizeof(key));
    len = ragnx_seal_call_size(strlen(params));
    c = malloc(len);
    ok(ragnx_seal_call(pk, key, params, strlen(params), c, len) == len - 1,
       "a call is sealed to the size said");
    ok(strstr(c, "secret") == NULL && strchr(c, '"') == NULL,
       "no trace of the params in it");
    ok(ragnx_seal_call(pk, key, params, strlen(params), c, len - 1) == 0,
       "a buffer too small is refused");
    ragnx_seal_call(pk, key, params, strlen(params), c, len);

    n = ragnx_seal_call_open(pk, sk, c, strlen(c), got, json);
    ok(n == (long) strlen(params) && memcmp(json, params, n) == 0,
       "the pool opens it");
    ok(memcmp(got, key, 32) == 0, "with the reply key inside");

    crypto_box_keypair(pk2, other);
    ok(ragnx_seal_call_open(pk2, other, c, strlen(c), got, json) == -1,
       "another key pair cannot");
    c[10] = c[10] == 'A' ? 'B' : 'A';
    ok(ragnx_seal_call_open(pk, sk, c, strlen(c), got, json) == -1,
       "a changed seal does not open");
    ok(ragnx_seal_call_open(pk, sk, "{\"email\":1}", 11, got, json) == -1,
       "plain JSON does not open");
    free(c);

    len = ragnx_seal_reply_size(strlen(body));
    b = malloc(len);
    ok(ragnx_seal_reply(key, body, strlen(body), b, len) == len - 1
           && b[0] == RAGNX_SEAL_MARK,
       "a reply is sealed, marked");
    ok(strstr(b, "token") == NULL, "no trace of the token in it");
    b2 = malloc(len);
    ragnx_seal_reply(key, body, strlen(body), b2, len);
    ok(strcmp(b, b2) != 0, "sealed twice, it differs (a fresh nonce)");
    free(b2);
    n = ragnx_seal_reply_open(key, b, strlen(b), out);
    ok(n == (long) strlen(body) && memcmp(out, body, n) == 0,
       "the caller opens it");
    ok(ragnx_seal_reply_open(other, b, strlen(b), out) == -1,
       "with no other key");
    ok(ragnx_seal_reply_open(key, body, strlen(body), out) == -1,
       "an unmarked body is not a sealed one");
    free(b);

    unlink(priv);
    unlink(pub);
    rmdir(dir);
}


int
main(void)
{
    test_methods();
    test_reply();
    test_deadline();
    test_paging();
    test_seal();

    return done_testing();
}
