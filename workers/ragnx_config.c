
/*
 * ragnx worker pool: the settings table, the config file and the
 * environment.  Every setting is declared once below with its type,
 * bounds, default and whether SIGHUP applies it; a file line is
 * "name = value" (or "name value"), "#" starts a comment, and RAGNX_<NAME>
 * in the environment overrides the file.  Secrets (API key, passwords)
 * come from *_file settings or the environment and are never logged.
 */


#define _GNU_SOURCE

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>

#include <sodium.h>

#include "ragnx_worker.h"
#include "ragnx_keyfile.h"
#include "ragnx_seal.h"
#include "ragnx_utf8.h"


#define RAGNX_SET_INT    1
#define RAGNX_SET_STR    2
#define RAGNX_SET_ENUM   3


typedef struct {
    const char   *name;
    int           type;
    size_t        offset;
    long          min;
    long          max;
    const char   *def;          /* default as text, NULL: unset */
    int           reloadable;
    const char   *values;       /* enum: space-separated names */
    size_t        enum_offset;  /* enum: where the index goes */
} ragnx_setting_t;


#define RAGNX_OFF(f)  offsetof(ragnx_conf_t, f)


static const ragnx_setting_t  ragnx_settings[] = {

    { "workers", RAGNX_SET_INT, RAGNX_OFF(workers), 1, 64, "2", 1,
      NULL, 0 },
    { "concurrency", RAGNX_SET_INT, RAGNX_OFF(concurrency), 1, 1024, "16", 1,
      NULL, 0 },
    { "redis_host", RAGNX_SET_STR, RAGNX_OFF(redis_host), 1, 255,
      "127.0.0.1", 1, NULL, 0 },
    { "redis_port", RAGNX_SET_INT, RAGNX_OFF(redis_port), 1, 65535, "6379",
      1, NULL, 0 },
    { "redis_user", RAGNX_SET_STR, RAGNX_OFF(redis_user), 1, 128, NULL, 1,
      NULL, 0 },
    { "redis_password_file", RAGNX_SET_STR, RAGNX_OFF(redis_password_file),
      1, 4096, NULL, 1, NULL, 0 },
    { "redis_timeout", RAGNX_SET_INT, RAGNX_OFF(redis_timeout), 100, 60000,
      "5000", 1, NULL, 0 },
    { "database", RAGNX_SET_STR, RAGNX_OFF(database), 1, 4096,
      "dbname=ragnx", 1, NULL, 0 },
    { "database_password_file", RAGNX_SET_STR,
      RAGNX_OFF(database_password_file), 1, 4096, NULL, 1, NULL, 0 },
    { "db_pool", RAGNX_SET_INT, RAGNX_OFF(db_pool), 1, 1000, "8", 1,
      NULL, 0 },
    { "db_timeout", RAGNX_SET_INT, RAGNX_OFF(db_timeout), 10, 600000,
      "10000", 1, NULL, 0 },
    { "db_query_timeout", RAGNX_SET_INT, RAGNX_OFF(db_query_timeout), 100,
      3600000, "15000", 1, NULL, 0 },
    { "llm_provider", RAGNX_SET_ENUM, RAGNX_OFF(llm_provider), 0, 0,
      "extractive", 1, "extractive anthropic openai", RAGNX_OFF(llm_kind) },
    { "llm_base_url", RAGNX_SET_STR, RAGNX_OFF(llm_base_url), 1, 2048, NULL,
      1, NULL, 0 },
    { "llm_model", RAGNX_SET_STR, RAGNX_OFF(llm_model), 1, 200, NULL, 1,
      NULL, 0 },
    { "llm_api_key_file", RAGNX_SET_STR, RAGNX_OFF(llm_api_key_file), 1,
      4096, NULL, 1, NULL, 0 },
    { "llm_timeout", RAGNX_SET_INT, RAGNX_OFF(llm_timeout), 100, 3600000,
      "60000", 1, NULL, 0 },
    { "llm_connect_timeout", RAGNX_SET_INT, RAGNX_OFF(llm_connect_timeout),
      10, 600000, "5000", 1, NULL, 0 },
    { "llm_max_tokens", RAGNX_SET_INT, RAGNX_OFF(llm_max_tokens), 1, 200000,
      "1024", 1, NULL, 0 },
    { "llm_stream", RAGNX_SET_INT, RAGNX_OFF(llm_stream), 0, 1, "1", 1,
      NULL, 0 },
    { "top_k", RAGNX_SET_INT, RAGNX_OFF(top_k), 1, 50, "5", 1, NULL, 0 },
    { "rank_candidates", RAGNX_SET_INT, RAGNX_OFF(rank_candidates), 1,
      100000, "20", 1, NULL, 0 },
    { "history", RAGNX_SET_INT, RAGNX_OFF(history), 0, 100, "6", 1,
      NULL, 0 },
    { "chunk_size", RAGNX_SET_INT, RAGNX_OFF(chunk_size), 200, 100000,
      "1500", 1, NULL, 0 },
    { "max_attempts", RAGNX_SET_INT, RAGNX_OFF(max_attempts), 1, 100, "3", 1,
      NULL, 0 },
    { "retry_base", RAGNX_SET_INT, RAGNX_OFF(retry_base), 1, 3600000,
      "1000", 1, NULL, 0 },
    { "retry_max", RAGNX_SET_INT, RAGNX_OFF(retry_max), 1, 86400000,
      "60000", 1, NULL, 0 },
    /*
     * heartbeats run every visibility_timeout / 3, but only at a turn of
     * the maintenance loop (RAGNX_MAINT_TURN, 200 ms): 1 s leaves a beat
     * 2 turns of slack (a slow Redis command, a busy machine) before a
     * live job's entry looks idle for the whole timeout
     */
    { "visibility_timeout", RAGNX_SET_INT, RAGNX_OFF(visibility_timeout),
      RAGNX_VISIBILITY_MIN, 86400000, "30000", 1, NULL, 0 },
    { "job_retention", RAGNX_SET_INT, RAGNX_OFF(job_retention), 1, 31536000,
      "3600", 1, NULL, 0 },
    { "cache_ttl", RAGNX_SET_INT, RAGNX_OFF(cache_ttl), 1, 31536000, "3600",
      1, NULL, 0 },
    { "dead_max", RAGNX_SET_INT, RAGNX_OFF(dead_max), 1, 100000000, "10000",
      1, NULL, 0 },
    /*
     * may be shorter than llm_timeout: heartbeats go on until the process
     * exits, and only then does the supervisor hand its jobs over, so a
     * job cut short runs again, never twice at once (docs/workers.md)
     */
    { "drain_timeout", RAGNX_SET_INT, RAGNX_OFF(drain_timeout), 0, 3600000,
      "30000", 1, NULL, 0 },
    { "rpc_concurrency", RAGNX_SET_INT, RAGNX_OFF(rpc_concurrency), 1, 256,
      "4", 1, NULL, 0 },
    { "record_concurrency", RAGNX_SET_INT, RAGNX_OFF(record_concurrency), 1,
      64, "1", 1, NULL, 0 },
    { "record_batch", RAGNX_SET_INT, RAGNX_OFF(record_batch), 1, 10000,
      "512", 1, NULL, 0 },
    { "hash_concurrency", RAGNX_SET_INT, RAGNX_OFF(hash_concurrency), 1, 64,
      "2", 1, NULL, 0 },
    { "password_opslimit", RAGNX_SET_INT, RAGNX_OFF(password_opslimit), 1,
      64, "2", 1, NULL, 0 },
    { "password_memlimit", RAGNX_SET_INT, RAGNX_OFF(password_memlimit), 8,
      4194304, "65536", 1, NULL, 0 },
    { "jwt_alg", RAGNX_SET_ENUM, RAGNX_OFF(jwt_alg), 0, 0, "HS256", 1,
      "HS256 RS256 ES256", RAGNX_OFF(jwt_alg) },
    { "jwt_key_file", RAGNX_SET_STR, RAGNX_OFF(jwt_key_file), 1, 4096, NULL,
      1, NULL, 0 },
    { "rpc_key_file", RAGNX_SET_STR, RAGNX_OFF(rpc_key_file), 1, 4096, NULL,
      1, NULL, 0 },
    { "jwt_ttl", RAGNX_SET_INT, RAGNX_OFF(jwt_ttl), 60, 31536000, "604800",
      1, NULL, 0 },
    { "jwt_issuer", RAGNX_SET_STR, RAGNX_OFF(jwt_issuer), 1, 255, NULL, 1,
      NULL, 0 },
    { "jwt_audience", RAGNX_SET_STR, RAGNX_OFF(jwt_audience), 1, 255, NULL,
      1, NULL, 0 },
    { "pid_file", RAGNX_SET_STR, RAGNX_OFF(pid_file), 1, 4096, NULL, 0,
      NULL, 0 },
    { "log_file", RAGNX_SET_STR, RAGNX_OFF(log_file), 1, 4096, NULL, 0,
      NULL, 0 },
    { "log_level", RAGNX_SET_ENUM, RAGNX_OFF(log_level), 0, 0, "info", 1,
      "error warn info debug", RAGNX_OFF(log_level) },

    { NULL, 0, 0, 0, 0, NULL, 0, NULL, 0 }
};


ragnx_conf_t  *ragnx_conf;


static int ragnx_conf_set(ragnx_conf_t *conf, const ragnx_setting_t *s,
    const char *value, const char *where, char *err, size_t errlen);
static char *ragnx_conf_read_secret(const char *path, const char *name,
    char *err, size_t errlen);
static char *ragnx_conf_trim(char *s);
static int ragnx_conf_jwt_key(ragnx_conf_t *conf, char *err, size_t errlen);


static char *
ragnx_conf_trim(char *s)
{
    char  *e;

    while (isspace((unsigned char) *s)) {
        s++;
    }

    e = s + strlen(s);

    while (e > s && isspace((unsigned char) e[-1])) {
        *--e = '\0';
    }

    return s;
}


static int
ragnx_conf_set(ragnx_conf_t *conf, const ragnx_setting_t *s,
    const char *value, const char *where, char *err, size_t errlen)
{
    long         n;
    char        *end, **sp, *dup;
    const char  *v;
    size_t       len;
    int          idx;

    switch (s->type) {

    case RAGNX_SET_INT:
        errno = 0;
        n = strtol(value, &end, 10);

        if (errno || end == value || *end != '\0') {
            snprintf(err, errlen, "%s: \"%s\" is not a number in %s",
                     s->name, value, where);
            return RAGNX_ERROR;
        }

        if (n < s->min || n > s->max) {
            snprintf(err, errlen, "%s: %ld is out of range %ld..%ld in %s",
                     s->name, n, s->min, s->max, where);
            return RAGNX_ERROR;
        }

        *(long *) ((char *) conf + s->offset) = n;
        return RAGNX_OK;

    case RAGNX_SET_STR:
        len = strlen(value);

        if ((long) len < s->min || (long) len > s->max) {
            snprintf(err, errlen, "%s: length must be %ld..%ld in %s",
                     s->name, s->min, s->max, where);
            return RAGNX_ERROR;
        }

        /* settings are text: the model name, say, goes into JSON */
        if (!ragnx_utf8_valid((const unsigned char *) value, len)) {
            snprintf(err, errlen, "%s: not UTF-8 in %s", s->name, where);
            return RAGNX_ERROR;
        }

        break;

    default: /* RAGNX_SET_ENUM */
        len = strlen(value);
        idx = 0;

        for (v = s->values; *v; idx++) {
            n = strcspn(v, " ");

            if ((size_t) n == len && strncmp(v, value, len) == 0) {
                *(long *) ((char *) conf + s->enum_offset) = idx;

                if (s->enum_offset == s->offset) {
                    return RAGNX_OK;
                }

                goto set_string;
            }

            v += n;
            v += (*v == ' ');
        }

        snprintf(err, errlen, "%s: \"%s\" is not one of: %s in %s",
                 s->name, value, s->values, where);
        return RAGNX_ERROR;
    }

set_string:

    dup = strdup(value);
    if (dup == NULL) {
        snprintf(err, errlen, "out of memory");
        return RAGNX_ERROR;
    }

    sp = (char **) ((char *) conf + s->offset);
    free(*sp);
    *sp = dup;

    return RAGNX_OK;
}


static char *
ragnx_conf_read_secret(const char *path, const char *name, char *err,
    size_t errlen)
{
    FILE    *f;
    char     buf[4096];
    size_t   n;

    f = fopen(path, "r");
    if (f == NULL) {
        snprintf(err, errlen, "%s: cannot open \"%s\": %s", name, path,
                 strerror(errno));
        return NULL;
    }

    n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = '\0';

    return strdup(ragnx_conf_trim(buf));
}


ragnx_conf_t *
ragnx_conf_load(const char *path, unsigned flags, char *err, size_t errlen)
{
    FILE                   *f;
    char                    line[8192], env[128], where[4200], msg[512],
                           *p, *name, *value, *secret;
    size_t                  i;
    unsigned                lineno;
    ragnx_conf_t           *conf;
    const ragnx_setting_t  *s;

    conf = calloc(1, sizeof(ragnx_conf_t));
    if (conf == NULL) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }

    for (s = ragnx_settings; s->name; s++) {
        if (s->def
            && ragnx_conf_set(conf, s, s->def, "defaults", err, errlen)
               != RAGNX_OK)
        {
            goto failed;
        }
    }

    if (path) {
        conf->config_file = strdup(path);

        f = fopen(path, "r");
        if (f == NULL) {
            snprintf(err, errlen, "cannot open config file \"%s\": %s",
                     path, strerror(errno));
            goto failed;
        }

        lineno = 0;

        while (fgets(line, sizeof(line), f)) {
            lineno++;

            p = strchr(line, '#');
            if (p) {
                *p = '\0';
            }

            name = ragnx_conf_trim(line);
            if (*name == '\0') {
                continue;
            }

            value = name + strcspn(name, " \t=");
            if (*value) {
                *value++ = '\0';
            }

            value = ragnx_conf_trim(value);
            if (*value == '=') {
                value = ragnx_conf_trim(value + 1);
            }

            snprintf(where, sizeof(where), "%s:%u", path, lineno);

            for (s = ragnx_settings; s->name; s++) {
                if (strcmp(s->name, name) == 0) {
                    break;
                }
            }

            if (s->name == NULL) {
                snprintf(err, errlen, "unknown setting \"%s\" in %s", name,
                         where);
                fclose(f);
                goto failed;
            }

            if (ragnx_conf_set(conf, s, value, where, err, errlen)
                != RAGNX_OK)
            {
                fclose(f);
                goto failed;
            }
        }

        fclose(f);
    }

    for (s = ragnx_settings; s->name; s++) {
        p = env + snprintf(env, sizeof(env), "RAGNX_");

        for (i = 0; s->name[i]; i++) {
            *p++ = toupper((unsigned char) s->name[i]);
        }

        *p = '\0';

        value = getenv(env);
        if (value == NULL) {
            continue;
        }

        snprintf(where, sizeof(where), "environment %s", env);

        if (ragnx_conf_set(conf, s, value, where, err, errlen) != RAGNX_OK) {
            goto failed;
        }
    }

    /* secrets: a file named by a setting, else the environment */

    if (conf->llm_api_key_file) {
        secret = ragnx_conf_read_secret(conf->llm_api_key_file,
                                        "llm_api_key_file", err, errlen);
        if (secret == NULL) {
            goto failed;
        }

        conf->llm_api_key = secret;

    } else if ((value = getenv("RAGNX_LLM_API_KEY")) != NULL) {
        conf->llm_api_key = strdup(value);
    }

    if (conf->redis_password_file) {
        secret = ragnx_conf_read_secret(conf->redis_password_file,
                                        "redis_password_file", err, errlen);
        if (secret == NULL) {
            goto failed;
        }

        conf->redis_password = secret;

    } else if ((value = getenv("RAGNX_REDIS_PASSWORD")) != NULL) {
        conf->redis_password = strdup(value);
    }

    if (conf->redis_password && conf->redis_password[0] == '\0') {
        snprintf(err, errlen, "%s: the Redis password is empty",
                 conf->redis_password_file ? "redis_password_file"
                                           : "RAGNX_REDIS_PASSWORD");
        goto failed;
    }

    if (conf->redis_user) {
        for (p = conf->redis_user; *p; p++) {
            if ((unsigned char) *p <= ' ' || *p == 0x7f) {
                snprintf(err, errlen, "redis_user: must not contain spaces "
                         "or control characters");
                goto failed;
            }
        }

        if (conf->redis_password == NULL) {
            snprintf(err, errlen, "redis_user: requires redis_password_file "
                     "(or RAGNX_REDIS_PASSWORD)");
            goto failed;
        }
    }

    if (conf->database_password_file) {
        secret = ragnx_conf_read_secret(conf->database_password_file,
                                        "database_password_file", err,
                                        errlen);
        if (secret == NULL) {
            goto failed;
        }

        conf->database_password = secret;
    }

    if (conf->rpc_key_file && (flags & RAGNX_CONF_KEYS)) {
        if (ragnx_seal_init() != 0
            || ragnx_seal_load_secret(conf->rpc_key_file, conf->rpc_pk,
                                      conf->rpc_sk, msg, sizeof(msg))
               != 0)
        {
            snprintf(err, errlen, "rpc_key_file: %s", msg);
            goto failed;
        }

        conf->rpc_key_set = 1;
    }

    if ((flags & RAGNX_CONF_KEYS)
        && ragnx_conf_jwt_key(conf, err, errlen) != RAGNX_OK)
    {
        goto failed;
    }

    /* rules between settings */

    if (conf->llm_kind != RAGNX_LLM_EXTRACTIVE) {
        if (conf->llm_base_url == NULL) {
            snprintf(err, errlen, "llm_base_url: required for provider "
                     "\"%s\"", conf->llm_provider);
            goto failed;
        }

        if (conf->llm_model == NULL) {
            snprintf(err, errlen, "llm_model: required for provider \"%s\"",
                     conf->llm_provider);
            goto failed;
        }

        if (strncmp(conf->llm_base_url, "http://", 7) != 0
            && strncmp(conf->llm_base_url, "https://", 8) != 0)
        {
            snprintf(err, errlen, "llm_base_url: must start with http:// "
                     "or https://");
            goto failed;
        }

        if (conf->llm_kind == RAGNX_LLM_ANTHROPIC
            && conf->llm_api_key == NULL)
        {
            snprintf(err, errlen, "llm_api_key_file: required for provider "
                     "\"anthropic\" (or set RAGNX_LLM_API_KEY)");
            goto failed;
        }
    }

    if (conf->llm_model == NULL) {
        conf->llm_model = strdup("extractive");
    }

    if (strchr(conf->llm_model, '@') || strchr(conf->llm_model, ':')) {
        snprintf(err, errlen, "llm_model: must not contain '@' or ':'");
        goto failed;
    }

    if (conf->retry_max < conf->retry_base) {
        snprintf(err, errlen, "retry_max: must not be below retry_base");
        goto failed;
    }

    /* a job waiting for its retry must not outlive its hash */
    if (conf->retry_max > conf->job_retention * 1000 / 2) {
        snprintf(err, errlen, "retry_max: must not be above half of "
                 "job_retention (%ld ms)", conf->job_retention * 1000 / 2);
        goto failed;
    }

    return conf;

failed:

    ragnx_conf_free(conf);
    return NULL;
}


void
ragnx_conf_free(ragnx_conf_t *conf)
{
    const ragnx_setting_t  *s;

    if (conf == NULL) {
        return;
    }

    for (s = ragnx_settings; s->name; s++) {
        if (s->type == RAGNX_SET_STR
            || (s->type == RAGNX_SET_ENUM && s->offset != s->enum_offset))
        {
            free(*(char **) ((char *) conf + s->offset));
        }
    }

    if (conf->llm_api_key) {
        memset(conf->llm_api_key, 0, strlen(conf->llm_api_key));
        free(conf->llm_api_key);
    }

    if (conf->redis_password) {
        memset(conf->redis_password, 0, strlen(conf->redis_password));
        free(conf->redis_password);
    }

    if (conf->database_password) {
        memset(conf->database_password, 0, strlen(conf->database_password));
        free(conf->database_password);
    }

    if (conf->jwt_key) {
        memset(conf->jwt_key, 0, conf->jwt_key_len);
        free(conf->jwt_key);
    }

    sodium_memzero(conf->rpc_sk, sizeof(conf->rpc_sk));

    free(conf->config_file);
    free(conf);
}


/*
 * The key that signs the tokens register and login issue: the whole file
 * (or RAGNX_JWT_KEY), byte for byte, as the nginx module reads its
 * ragnx_jwt_key_file, so one HS256 secret file serves both sides.  With
 * RS256 or ES256 it is a PEM private key and nginx holds the public one.
 * Checked here so that "ragnx-worker -t" rejects a key that would fail to
 * sign.  Without a key, register and login answer 503.
 */

static int
ragnx_conf_jwt_key(ragnx_conf_t *conf, char *err, size_t errlen)
{
    int              ok;
    FILE            *f;
    size_t           n;
    const char      *env;
    unsigned char    buf[65536];
    ragnx_keyfile_t  kf;

    if (conf->jwt_key_file) {
        f = fopen(conf->jwt_key_file, "r");
        if (f == NULL) {
            snprintf(err, errlen, "jwt_key_file: cannot open \"%s\": %s",
                     conf->jwt_key_file, strerror(errno));
            return RAGNX_ERROR;
        }

        n = fread(buf, 1, sizeof(buf), f);
        ok = !ferror(f) && feof(f);
        fclose(f);

        if (!ok) {
            snprintf(err, errlen, "jwt_key_file: cannot read \"%s\" "
                     "(64 KiB at most)", conf->jwt_key_file);
            return RAGNX_ERROR;
        }

    } else if ((env = getenv("RAGNX_JWT_KEY")) != NULL) {
        n = strlen(env);
        if (n > sizeof(buf)) {
            snprintf(err, errlen, "RAGNX_JWT_KEY: too long");
            return RAGNX_ERROR;
        }

        memcpy(buf, env, n);

    } else {
        return RAGNX_OK;
    }

    ok = 0;

    if (ragnx_keyfile_classify(buf, n, &kf) != 0) {
        snprintf(err, errlen, "out of memory");

    } else if (conf->jwt_alg == RAGNX_JWT_HS256) {
        if (kf.kind != RAGNX_KEYFILE_SECRET) {
            snprintf(err, errlen, "jwt_key_file: holds a PEM key, not an "
                     "HS256 secret");

        } else if (n < 32) {
            snprintf(err, errlen, "jwt_key_file: an HS256 secret needs at "
                     "least 32 bytes");

        } else {
            ok = 1;
        }

    } else if (kf.kind != RAGNX_KEYFILE_PRIVATE) {
        snprintf(err, errlen, "jwt_key_file: not a PEM private key for %s",
                 conf->jwt_alg == RAGNX_JWT_RS256 ? "RS256" : "ES256");

    } else if (conf->jwt_alg == RAGNX_JWT_RS256) {
        if (kf.type != RAGNX_KEYFILE_RSA || kf.bits < 2048) {
            snprintf(err, errlen, "jwt_key_file: RS256 needs an RSA "
                     "private key of 2048 bits or more");
        } else {
            ok = 1;
        }

    } else if (kf.type != RAGNX_KEYFILE_EC || kf.bits != 256) {
        snprintf(err, errlen, "jwt_key_file: ES256 needs a P-256 EC "
                 "private key");

    } else {
        ok = 1;
    }

    if (ok) {
        conf->jwt_key = malloc(n);
        if (conf->jwt_key == NULL) {
            snprintf(err, errlen, "out of memory");
            ok = 0;

        } else {
            memcpy(conf->jwt_key, buf, n);
            conf->jwt_key_len = n;
        }
    }

    memset(buf, 0, n);

    return ok ? RAGNX_OK : RAGNX_ERROR;
}


/* the effective settings, for -T; secrets are never printed */

void
ragnx_conf_dump(const ragnx_conf_t *conf)
{
    long                    idx;
    size_t                  n;
    const char             *v;
    const ragnx_setting_t  *s;

    for (s = ragnx_settings; s->name; s++) {
        if (s->type == RAGNX_SET_INT) {
            printf("%-24s %ld\n", s->name,
                   *(long *) ((const char *) conf + s->offset));
            continue;
        }

        if (s->type == RAGNX_SET_ENUM && s->offset == s->enum_offset) {
            /* the name of the value, from the list */
            idx = *(long *) ((const char *) conf + s->offset);

            for (v = s->values; idx > 0 && *v; idx--) {
                v += strcspn(v, " ");
                v += (*v == ' ');
            }

            n = strcspn(v, " ");
            printf("%-24s %.*s\n", s->name, (int) n, v);
            continue;
        }

        v = *(char **) ((const char *) conf + s->offset);
        printf("%-24s %s%s\n", s->name, v ? v : "(unset)",
               s->reloadable ? "" : "  (restart to change)");
    }
}
