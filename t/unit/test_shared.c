
/*
 * ragnx: unit tests of the shared contract: UTF-8, normalisation, cache
 * keys, UUIDs, the job payload and what a JWT key file holds.
 */


#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>
#include <string.h>

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "tap.h"
#include "ragnx_job.h"
#include "ragnx_keyfile.h"
#include "ragnx_keys.h"
#include "ragnx_query.h"
#include "ragnx_utf8.h"
#include "ragnx_uuid.h"


#define U (const unsigned char *)


static const char *
norm(const char *in)
{
    size_t               len;
    static unsigned char out[4096];

    len = ragnx_query_normalize(U in, strlen(in), out);
    if (len == (size_t) -1) {
        return "(invalid)";
    }

    out[len] = '\0';

    return (const char *) out;
}


static void
test_utf8(void)
{
    ok(ragnx_utf8_valid(U "plain ascii", 11), "ascii is valid");
    ok(ragnx_utf8_valid(U "\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80", 9),
       "2, 3 and 4 byte sequences are valid");
    ok(!ragnx_utf8_valid(U "\xc0\xaf", 2), "overlong rejected");
    ok(!ragnx_utf8_valid(U "\xe0\x80\xaf", 3), "3-byte overlong rejected");
    ok(!ragnx_utf8_valid(U "\xed\xa0\x80", 3), "surrogate rejected");
    ok(!ragnx_utf8_valid(U "\xf4\x90\x80\x80", 4), "above U+10FFFF rejected");
    ok(!ragnx_utf8_valid(U "\x80", 1), "lone continuation rejected");
    ok(!ragnx_utf8_valid(U "\xc3", 1), "truncated sequence rejected");
    ok(!ragnx_utf8_valid(U "\xff", 1), "0xff rejected");
    ok(ragnx_utf8_length(U "h\xc3\xa9llo \xf0\x9f\x98\x80", 11) == 7,
       "length counts code points");
}


static void
test_normalize(void)
{
    char a[RAGNX_DIGEST_LEN + 1], b[RAGNX_DIGEST_LEN + 1];

    is_str(norm("  Hello   World \t\n"), "hello world",
           "ascii lower-cased, trimmed, collapsed");
    is_str(norm("\xc3\x89"
                "COLE \xc3\x80 PARIS"),
           "\xc3\xa9"
           "cole \xc3\xa0 paris",
           "Latin-1 upper case lowered");
    is_str(norm("\xc3\x97"), "\xc3\x97", "multiplication sign unchanged");
    is_str(norm("\xc5\x81\xc3\x93"
                "D\xc5\xb9"),
           "\xc5\x82\xc3\xb3"
           "d\xc5\xba",
           "Latin Extended-A lowered (Polish)");
    is_str(norm("\xce\x91\xce\x98\xce\x97\xce\x9d\xce\x91"),
           "\xce\xb1\xce\xb8\xce\xb7\xce\xbd\xce\xb1", "Greek lowered");
    is_str(norm("\xd0\x9c\xd0\x9e\xd0\xa1\xd0\x9a\xd0\x92\xd0\x90"),
           "\xd0\xbc\xd0\xbe\xd1\x81\xd0\xba\xd0\xb2\xd0\xb0",
           "Cyrillic lowered");
    is_str(norm("a\xc2\xa0\xc2\xa0"
                "b\xe3\x80\x80"
                "c\xe2\x80\x83"),
           "a b c", "Unicode spaces collapse and trim");
    is_str(norm("\xf0\x9f\x98\x80  X"), "\xf0\x9f\x98\x80 x",
           "4-byte characters pass through whole");
    is_str(norm(""), "", "empty stays empty");
    is_str(norm("   "), "", "only spaces becomes empty");
    is_str(norm("ab\xc3"), "(invalid)", "truncated UTF-8 refused");
    is_str(norm("\xed\xa0\x80"), "(invalid)", "surrogate refused");

    ok(ragnx_query_digest(U "", 0, a) == 0
           && strcmp(a, "e3b0c44298fc1c149afbf4c8996fb924"
                        "27ae41e4649b934ca495991b7852b855")
                  == 0,
       "digest of empty string is SHA-256");
    ok(ragnx_query_digest(U "abc", 3, b) == 0
           && strcmp(b, "ba7816bf8f01cfea414140de5dae2223"
                        "b00361a396177a9cb410ff61f20015ad")
                  == 0,
       "digest of abc is SHA-256");
}


static void
test_cache_key(void)
{
    char   d[RAGNX_DIGEST_LEN + 1], k1[256], k2[256], k3[256];
    size_t n;

    ragnx_query_digest(U "what is ragnx", 13, d);

    n = ragnx_cache_key(d, "m@1", 3, k1, sizeof(k1));
    ok(n == strlen(k1) && strncmp(k1, "{ragnx}:cache:", 14) == 0,
       "cache key has the hash-tagged prefix");
    ok(strcmp(k1 + n - 4, ":m@1") == 0, "cache key ends with generation");

    ragnx_cache_key(d, "m@2", 3, k2, sizeof(k2));
    ok(strcmp(k1, k2) != 0, "corpus version bump changes the key");

    ragnx_cache_key(d, "other@1", 7, k3, sizeof(k3));
    ok(strcmp(k1, k3) != 0, "model switch changes the key");

    ok(ragnx_cache_key(d, "m@1", 3, k3, 20) == 0, "too small buffer refused");
}


static void
test_inflight_field(void)
{
    char   d[RAGNX_DIGEST_LEN + 1], f[256], k[256];
    size_t n, m;

    ragnx_query_digest(U "what is ragnx", 13, d);

    n = ragnx_inflight_field(d, "m@1", 3, f, sizeof(f));
    ok(n == RAGNX_DIGEST_LEN + 4 && n == strlen(f),
       "in-flight field is digest, separator and generation");
    ok(strncmp(f, d, RAGNX_DIGEST_LEN) == 0 && strcmp(f + n - 4, ":m@1") == 0,
       "in-flight field is <digest>:<gen>");

    m = ragnx_cache_key(d, "m@1", 3, k, sizeof(k));
    ok(m == sizeof(RAGNX_KEY_CACHE) - 1 + n
           && strncmp(k, RAGNX_KEY_CACHE, sizeof(RAGNX_KEY_CACHE) - 1) == 0
           && strcmp(k + sizeof(RAGNX_KEY_CACHE) - 1, f) == 0,
       "cache key is the cache prefix and the in-flight field");

    ok(ragnx_inflight_field(d, "m@1", 3, f, n) == 0,
       "in-flight field: no room for the NUL refused");
    ok(ragnx_inflight_field(d, "m@1", 3, f, n + 1) == n,
       "in-flight field: an exact fit accepted");
    ok(ragnx_cache_key(d, "m@1", 3, k, 5) == 0,
       "cache key: no room for the prefix refused");
}


/* pkey written as a PEM private (1) or public (0) key, or DER public (2) */
static int
keyfile_of(EVP_PKEY *pkey, int how, ragnx_keyfile_t *kf)
{
    int            rc, n;
    BIO           *bio;
    char          *data;
    unsigned char *der, *p;

    if (how == 2) {
        n = i2d_PUBKEY(pkey, NULL);
        der = malloc(n);
        p = der;
        i2d_PUBKEY(pkey, &p);
        rc = ragnx_keyfile_classify(der, n, kf);
        free(der);
        return rc;
    }

    bio = BIO_new(BIO_s_mem());
    if (how == 1) {
        PEM_write_bio_PrivateKey(bio, pkey, NULL, NULL, 0, NULL, NULL);
    } else {
        PEM_write_bio_PUBKEY(bio, pkey);
    }

    n = (int) BIO_get_mem_data(bio, &data);
    rc = ragnx_keyfile_classify((unsigned char *) data, n, kf);
    BIO_free(bio);

    return rc;
}


static void
test_keyfile(void)
{
    EVP_PKEY       *rsa, *ec;
    ragnx_keyfile_t kf;
    const char     *secret = "0123456789abcdef0123456789abcdef";
    const char     *armour = "-----BEGIN PUBLIC KEY-----\nnot base64\n";

    ok(ragnx_keyfile_classify((const unsigned char *) secret, 32, &kf) == 0
           && kf.kind == RAGNX_KEYFILE_SECRET && kf.type == 0 && kf.bits == 0,
       "keyfile: plain bytes are a secret");
    ok(ragnx_keyfile_classify((const unsigned char *) armour, strlen(armour),
                              &kf)
               == 0
           && kf.kind == RAGNX_KEYFILE_PEM,
       "keyfile: PEM armour around no key is not a secret");

    rsa = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t) 2048);
    ec = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");

    ok(keyfile_of(rsa, 1, &kf) == 0 && kf.kind == RAGNX_KEYFILE_PRIVATE
           && kf.type == RAGNX_KEYFILE_RSA && kf.bits == 2048,
       "keyfile: RSA private key, 2048 bits");
    ok(keyfile_of(rsa, 0, &kf) == 0 && kf.kind == RAGNX_KEYFILE_PUBLIC
           && kf.type == RAGNX_KEYFILE_RSA && kf.bits == 2048,
       "keyfile: RSA public key, 2048 bits");
    ok(keyfile_of(ec, 1, &kf) == 0 && kf.kind == RAGNX_KEYFILE_PRIVATE
           && kf.type == RAGNX_KEYFILE_EC && kf.bits == 256,
       "keyfile: EC private key, 256 bits");
    ok(keyfile_of(ec, 0, &kf) == 0 && kf.kind == RAGNX_KEYFILE_PUBLIC
           && kf.type == RAGNX_KEYFILE_EC && kf.bits == 256,
       "keyfile: EC public key, 256 bits");
    ok(keyfile_of(ec, 2, &kf) == 0 && kf.kind == RAGNX_KEYFILE_PUBLIC
           && kf.type == RAGNX_KEYFILE_EC && kf.bits == 256,
       "keyfile: DER public key is a key, not a secret");

    EVP_PKEY_free(rsa);
    EVP_PKEY_free(ec);
}


static void
test_uuid(void)
{
    int  i, good;
    char u[37], v[37];

    ok(ragnx_uuid_v4(u) == 0, "uuid generated");
    ok(strlen(u) == 36 && ragnx_uuid_valid(u, 36), "uuid is well formed");
    ok(u[14] == '4' && strchr("89ab", u[19]) != NULL,
       "uuid has version 4 and the RFC 4122 variant");

    good = 1;
    for (i = 0; i < 1000; i++) {
        ragnx_uuid_v4(v);
        if (strcmp(u, v) == 0 || !ragnx_uuid_valid(v, 36)) {
            good = 0;
        }
    }
    ok(good, "1000 more uuids are valid and differ");

    {
        char a[33], b[33];

        ok(ragnx_request_id_new(a) == 0 && ragnx_request_id_new(b) == 0,
           "request ids generated");
        ok(strlen(a) == 32 && strspn(a, "0123456789abcdef") == 32
               && ragnx_rid_valid(a, 32),
           "a request id: 32 lowercase hex digits, a valid rid (%s)", a);
        ok(strcmp(a, b) != 0, "two request ids differ");
    }

    ok(ragnx_uuid_v7(u, 1733480000123LL) == 0
           && ragnx_uuid_v7(v, 1733480000124LL) == 0,
       "v7 uuids generated");
    ok(ragnx_uuid_valid(u, 36) && u[14] == '7' && strchr("89ab", u[19]),
       "v7: well formed, version 7, the RFC 4122 variant");
    ok(strncmp(u, "01939b75-aa7b", 13) == 0,
       "v7: the time in the first 48 bits (%.13s)", u);
    ok(strcmp(u, v) < 0, "v7: a later id sorts after");
    ragnx_uuid_v7(v, 1733480000123LL);
    ok(strcmp(u + 15, v + 15) != 0, "v7: the rest is random");

    {
        int   fds[2], st;
        char  child[37], parent[37];
        pid_t pid;

        /* the parent has buffered random bytes: the child must not reuse */
        ok(pipe(fds) == 0, "pipe");
        pid = fork();
        if (pid == 0) {
            ragnx_uuid_v4(child);
            if (write(fds[1], child, 37) != 37) {
                _exit(1);
            }
            _exit(0);
        }
        ragnx_uuid_v4(parent);
        ok(read(fds[0], child, 37) == 37 && waitpid(pid, &st, 0) == pid,
           "child made a uuid");
        ok(strcmp(child, parent) != 0, "a forked child draws other bytes");
    }

    ok(ragnx_uuid_valid("123e4567-E89B-12d3-a456-426614174000", 36),
       "mixed case accepted");
    ok(!ragnx_uuid_valid("123e4567-e89b-12d3-a456-42661417400", 35),
       "short refused");
    ok(!ragnx_uuid_valid("123e4567-e89b-12d3-a456-4266141740001", 37),
       "a hex digit after a uuid is refused");
    ok(!ragnx_uuid_valid("123e4567xe89b-12d3-a456-426614174000", 36),
       "bad separator refused");
    ok(!ragnx_uuid_valid("123e4567-e89b-12d3-a456-42661417400g", 36),
       "non-hex refused");
    ok(!ragnx_uuid_valid("../../../etc/passwd-aaaaaaaaaaaaaaaaa", 36),
       "path refused");
}


static void
test_chat_id(void)
{
    int  i, good;
    char a[37], b[37], up[37];

    ok(ragnx_chat_id("alice", 5, a) == 0, "a chat id for alice");
    ok(strlen(a) == 36 && ragnx_uuid_valid(a, 36) && a[14] == '4'
           && strchr("89ab", a[19]) != NULL,
       "it is a v4 UUID: %s", a);
    ok(ragnx_chat_id_owned(a, "alice", 5), "bound to alice");
    ok(!ragnx_chat_id_owned(a, "alicf", 5), "not to alicf");
    ok(!ragnx_chat_id_owned(a, "ali", 3)
           && !ragnx_chat_id_owned(a, "alicex", 6),
       "nor to a prefix or an extension of alice");
    ok(!ragnx_chat_id_owned(a, "", 0), "nor to nobody");

    for (i = 0; i < 36; i++) {
        up[i] = (char) (a[i] >= 'a' && a[i] <= 'f' ? a[i] - 32 : a[i]);
    }
    up[36] = '\0';
    ok(ragnx_chat_id_owned(up, "alice", 5), "upper case is the same id");

    for (i = 0, good = 1; i < 1000; i++) {
        ragnx_chat_id("alice", 5, b);
        if (strcmp(a, b) == 0 || !ragnx_chat_id_owned(b, "alice", 5)
            || ragnx_chat_id_owned(b, "bob", 3)) {
            good = 0;
        }
    }
    ok(good, "1000 more: all differ, all alice's, none bob's");

    ok(!ragnx_chat_id_owned("123e4567-e89b-42d3-a456-426614174000", "alice", 5),
       "a random v4 UUID is nobody's");
    memcpy(b, a, 37);
    b[35] = b[35] == '0' ? '1' : '0';
    ok(!ragnx_chat_id_owned(b, "alice", 5), "a changed digit is not hers");
    memcpy(b, a, 37);
    b[0] = b[0] == '0' ? '1' : '0';
    ok(!ragnx_chat_id_owned(b, "alice", 5), "nor a changed nonce");

    /* the whole tag counts: each of its digits, its lowest bit flipped */

    for (i = 19, good = 1; i < 36; i++) {
        if (a[i] == '-') {
            continue;
        }

        memcpy(b, a, 37);
        b[i] = "1032547698badcfe"[(a[i] & 0xf) + (a[i] > '9' ? 9 : 0)];

        if (ragnx_chat_id_owned(b, "alice", 5)) {
            good = 0;
        }
    }
    ok(good, "a change in any digit of the tag is not hers");
}


static void
test_job(void)
{
    char        err[128], *s;
    json_t     *o;
    ragnx_job_t job, out;

    memset(&job, 0, sizeof(job));
    job.id = "2f1c5d2e-8b7a-4c1d-9e3f-0a1b2c3d4e5f";
    job.owner = "user-1";
    job.chat_id = "6a0b4c3d-2e1f-4a5b-8c7d-9e0f1a2b3c4d";
    job.query = "What is \"ragnx\"?";
    job.digest = "ba7816bf8f01cfea414140de5dae2223"
                 "b00361a396177a9cb410ff61f20015ad";
    job.gen = "m@1";
    job.created = 1700000000000LL;

    o = ragnx_job_encode(&job);
    ok(o && json_object_get(o, "type") == NULL
           && json_object_get(o, "gen") == NULL
           && json_object_get(o, "result") == NULL,
       "the payload has no type, gen or result: fields beside it");
    s = json_dumps(o, JSON_COMPACT);
    json_decref(o);

    ok(ragnx_job_decode(s, strlen(s), &out, err, sizeof(err)) == 0,
       "a payload round-trips");
    ok(strcmp(out.query, job.query) == 0 && strcmp(out.owner, "user-1") == 0
           && out.created == job.created && out.gen == NULL && !out.chat_scope,
       "fields survive; gen is the entry's, not decoded");
    ragnx_job_free(&out);
    free(s);

#define BAD(json, why)                                                    \
    ok(ragnx_job_decode(json, strlen(json), &out, err, sizeof(err)) == -1 \
           && out.root == NULL,                                           \
       why " (%s)", err)

    {
        char    buf[1024];
        size_t  n;
        json_t *w;

        memset(&job, 0, sizeof(job));
        job.id = "2f1c5d2e-8b7a-4c1d-9e3f-0a1b2c3d4e5f";
        job.owner = "u\"ser\\1";
        job.chat_id = "6a0b4c3d-2e1f-4a5b-8c7d-9e0f1a2b3c4d";
        job.query = "line\nbreak \x01 \"quoted\" caf\xc3\xa9";
        job.digest = "ba7816bf8f01cfea414140de5dae2223"
                     "b00361a396177a9cb410ff61f20015ad";
        job.created = 1700000000123LL;

        n = ragnx_job_write(&job, buf, sizeof(buf));
        w = json_loadb(buf, n, JSON_REJECT_DUPLICATES, NULL);
        o = ragnx_job_encode(&job);
        ok(n > 0 && w && json_equal(w, o),
           "ragnx_job_write gives what ragnx_job_encode gives");
        json_decref(w);
        json_decref(o);
        ok(ragnx_job_write(&job, buf, 100) == 0, "too small buffer refused");

        job.chat_scope = 1;
        job.created = 7;
        n = ragnx_job_write(&job, buf, sizeof(buf));
        w = json_loadb(buf, n, JSON_REJECT_DUPLICATES, NULL);
        o = ragnx_job_encode(&job);
        ok(n > 0 && w && json_equal(w, o)
               && strcmp(json_string_value(json_object_get(w, "scope")), "chat")
                      == 0,
           "... and for a chat's question, with its scope");
        json_decref(w);
        json_decref(o);
        ok(ragnx_job_decode(buf, n, &out, err, sizeof(err)) == 0
               && out.chat_scope && strcmp(out.owner, job.owner) == 0
               && strcmp(out.query, job.query) == 0,
           "... which the pool reads as it was written");
        ragnx_job_free(&out);

        ok(out.rid == NULL, "a payload without a request id has none");

        job.rid = "Req-1_a.b:c";
        n = ragnx_job_write(&job, buf, sizeof(buf));
        w = json_loadb(buf, n, JSON_REJECT_DUPLICATES, NULL);
        o = ragnx_job_encode(&job);
        ok(n > 0 && w && json_equal(w, o)
               && strcmp(json_string_value(json_object_get(w, "rid")),
                         "Req-1_a.b:c")
                      == 0,
           "a request id is written as encoded");
        json_decref(w);
        json_decref(o);
        ok(ragnx_job_decode(buf, n, &out, err, sizeof(err)) == 0 && out.rid
               && strcmp(out.rid, job.rid) == 0,
           "... and read back");
        ragnx_job_free(&out);

        job.rid = "a b";
        ok(ragnx_job_write(&job, buf, sizeof(buf)) == 0,
           "a request id with a space is not written");
        job.rid = "x\"y";
        ok(ragnx_job_write(&job, buf, sizeof(buf)) == 0,
           "... nor one with a quote");
        memset(err, 'r', RAGNX_RID_MAX + 1);
        err[RAGNX_RID_MAX + 1] = '\0';
        job.rid = err;
        ok(ragnx_job_write(&job, buf, sizeof(buf)) == 0,
           "... nor one longer than RAGNX_RID_MAX");
        err[RAGNX_RID_MAX] = '\0';
        ok(ragnx_rid_valid(err, RAGNX_RID_MAX) && !ragnx_rid_valid(err, 0)
               && !ragnx_rid_valid("\xc3\xa9", 2),
           "RAGNX_RID_MAX safe bytes pass; empty and non-ASCII do not");
    }

    BAD("", "empty payload refused");
    BAD("[1]", "array refused");
    BAD("{\"v\":3}", "future version refused");
    BAD("{\"v\":1,\"id\":\"2f1c5d2e-8b7a-4c1d-9e3f-0a1b2c3d4e5f\"}",
        "the old version (type and gen inside) refused");
    BAD("{\"v\":2,\"v\":2}", "duplicate keys refused");
    BAD("{\"v\":2,\"id\":\"../x\",\"owner\":\"u\","
        "\"chatId\":\"x\",\"query\":\"q\",\"digest\":\"d\"}",
        "non-uuid id refused");
    BAD("{\"v\":2,\"id\":"
        "\"2f1c5d2e-8b7a-4c1d-9e3f-0a1b2c3d4e5f\",\"owner\":\"u\","
        "\"chatId\":\"6a0b4c3d-2e1f-4a5b-8c7d-9e0f1a2b3c4d\",\"query\":\"q\","
        "\"digest\":\"ba7816bf8f01cfea414140de5dae2223"
        "b00361a396177a9cb410ff61f20015ad\",\"scope\":\"all\"}",
        "unknown scope refused");
    BAD("{\"v\":2,\"id\":"
        "\"2f1c5d2e-8b7a-4c1d-9e3f-0a1b2c3d4e5f\",\"owner\":\"u\","
        "\"chatId\":\"6a0b4c3d-2e1f-4a5b-8c7d-9e0f1a2b3c4d\",\"query\":\"q\","
        "\"digest\":\"ba7816bf8f01cfea414140de5dae2223"
        "b00361a396177a9cb410ff61f20015ad\",\"rid\":\"a\\\"b\"}",
        "a request id with a quote refused");
    BAD("{\"v\":2,\"id\":"
        "\"2f1c5d2e-8b7a-4c1d-9e3f-0a1b2c3d4e5f\",\"owner\":\"u\","
        "\"chatId\":\"6a0b4c3d-2e1f-4a5b-8c7d-9e0f1a2b3c4d\",\"query\":\"q\","
        "\"digest\":\"ba7816bf8f01cfea414140de5dae2223"
        "b00361a396177a9cb410ff61f20015ad\",\"rid\":7}",
        "a request id that is no string refused");
    BAD("{\"v\":2,\"id\":"
        "\"2f1c5d2e-8b7a-4c1d-9e3f-0a1b2c3d4e5f\",\"owner\":\"u\","
        "\"chatId\":\"6a0b4c3d-2e1f-4a5b-8c7d-9e0f1a2b3c4d\",\"query\":\"q\","
        "\"digest\":\"ba7816bf8f01cfea414140de5dae2223"
        "b00361a396177a9cb410ff61f200\\f5ad\"}",
        "a digest of 64 characters but not hex refused (written unescaped)");
    BAD("{\"v\":2,\"id\":"
        "\"2f1c5d2e-8b7a-4c1d-9e3f-0a1b2c3d4e5f\",\"owner\":\"u\","
        "\"chatId\":\"6a0b4c3d-2e1f-4a5b-8c7d-9e0f1a2b3c4d\",\"query\":\"q\","
        "\"digest\":\"BA7816BF8F01CFEA414140DE5DAE2223"
        "B00361A396177A9CB410FF61F20015AD\"}",
        "an upper-case digest refused (not a cache key the module makes)");
}


int
main(void)
{
    test_utf8();
    test_normalize();
    test_cache_key();
    test_inflight_field();
    test_keyfile();
    test_uuid();
    test_chat_id();
    test_job();
    ragnx_query_cleanup();

    return done_testing();
}
