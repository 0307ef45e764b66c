
/*
 * ragnx worker pool: `ragnx-worker ingest [--prune] PATH...`.  Text and
 * Markdown files (directories recursively) are cut into chunks at headings
 * and paragraphs, at most chunk_size bytes each, and stored by path; a file
 * whose SHA-256 did not change is left alone, so re-ingesting changes
 * nothing.  --prune removes documents not found under the given paths.
 * When anything changed, the corpus version goes up and with it the cache
 * generation {ragnx}:gen: no answer computed from the old corpus is served.
 */


#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <openssl/sha.h>

#include "ragnx_worker.h"


#define RAGNX_INGEST_MAX_FILE  (16 * 1024 * 1024)


typedef struct {
    PGconn       *conn;
    json_t       *seen;          /* paths found, for --prune */
    int           changed;
    int           unchanged;
    int           failed;
} ragnx_ingest_t;


typedef struct {
    char         *heading;
    char         *body;
} ragnx_chunk_t;


static int ragnx_ingest_path(ragnx_ingest_t *in, const char *path,
    const char *rel);
static int ragnx_ingest_file(ragnx_ingest_t *in, const char *path,
    const char *rel);
static int ragnx_ingest_store(ragnx_ingest_t *in, const char *rel,
    const char *title, const char *hash, ragnx_chunk_t *chunks, int n);
static int ragnx_chunk(char *text, size_t max, ragnx_chunk_t **chunks,
    int *n, char **title);
static int ragnx_chunk_add(ragnx_chunk_t **chunks, int *n, int *cap,
    const char *heading, const char *body, size_t len);
static int ragnx_ingest_wanted(const char *name);


static int
ragnx_ingest_wanted(const char *name)
{
    const char  *dot;

    dot = strrchr(name, '.');

    return dot && (strcmp(dot, ".md") == 0 || strcmp(dot, ".markdown") == 0
                   || strcmp(dot, ".txt") == 0);
}


int
ragnx_ingest(int argc, char **argv)
{
    int              i, prune, rc, removed;
    char            *seen, gen[256];
    const char      *base, *params[1];
    PGresult        *res;
    long long        version;
    struct stat      st;
    ragnx_redis_t    r;
    ragnx_ingest_t   in;

    memset(&in, 0, sizeof(ragnx_ingest_t));
    prune = 0;

    if (argc > 0 && strcmp(argv[0], "--prune") == 0) {
        prune = 1;
        argc--;
        argv++;
    }

    if (argc == 0) {
        fprintf(stderr, "usage: ragnx-worker ingest [--prune] PATH...\n");
        return 2;
    }

    in.conn = ragnx_db_connect(ragnx_conf->database,
                               ragnx_conf->database_password);
    if (in.conn == NULL) {
        return 1;
    }

    in.seen = json_array();

    for (i = 0; i < argc; i++) {
        if (stat(argv[i], &st) != 0) {
            fprintf(stderr, "ragnx-worker: %s: %s\n", argv[i],
                    strerror(errno));
            in.failed++;
            continue;
        }

        if (S_ISDIR(st.st_mode)) {
            ragnx_ingest_path(&in, argv[i], "");

        } else {
            base = strrchr(argv[i], '/');
            ragnx_ingest_file(&in, argv[i], base ? base + 1 : argv[i]);
        }
    }

    removed = 0;

    if (prune && in.failed == 0) {
        seen = json_dumps(in.seen, JSON_COMPACT);
        params[0] = seen;

        res = PQexecParams(in.conn, "DELETE FROM documents WHERE path NOT IN "
                           "(SELECT jsonb_array_elements_text($1::jsonb))",
                           1, NULL, params, NULL, NULL, 0);

        if (PQresultStatus(res) == PGRES_COMMAND_OK) {
            removed = atoi(PQcmdTuples(res));

        } else {
            fprintf(stderr, "ragnx-worker: prune: %s",
                    PQresultErrorMessage(res));
            in.failed++;
        }

        PQclear(res);
        free(seen);
    }

    version = ragnx_db_corpus_version(in.conn);

    if (in.changed + removed > 0) {
        res = PQexec(in.conn, "UPDATE corpus SET version = version + 1 "
                     "RETURNING version");

        if (PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) == 1) {
            version = atoll(PQgetvalue(res, 0, 0));
        }

        PQclear(res);

        memset(&r, 0, sizeof(ragnx_redis_t));

        if (ragnx_queue_set_gen(&r, version, RAGNX_GEN_BUMP, gen,
                                sizeof(gen))
            != RAGNX_OK)
        {
            fprintf(stderr, "ragnx-worker: could not set the cache "
                    "generation in Redis: the pool sets it within 5 s\n");
        }

        ragnx_redis_close(&r);
    }

    printf("ingested: %d changed, %d unchanged, %d removed, %d failed; "
           "corpus version %lld\n", in.changed, in.unchanged, removed,
           in.failed, version);

    rc = in.failed ? 1 : 0;

    json_decref(in.seen);
    PQfinish(in.conn);

    return rc;
}


static int
ragnx_ingest_path(ragnx_ingest_t *in, const char *path, const char *rel)
{
    int             i, n;
    char            full[4096], sub[4096];
    struct stat     st;
    struct dirent **names;

    n = scandir(path, &names, NULL, alphasort);
    if (n < 0) {
        fprintf(stderr, "ragnx-worker: %s: %s\n", path, strerror(errno));
        in->failed++;
        return RAGNX_ERROR;
    }

    for (i = 0; i < n; i++) {
        if (names[i]->d_name[0] == '.') {
            free(names[i]);
            continue;
        }

        snprintf(full, sizeof(full), "%s/%s", path, names[i]->d_name);
        snprintf(sub, sizeof(sub), "%s%s%s", rel, rel[0] ? "/" : "",
                 names[i]->d_name);
        free(names[i]);

        if (stat(full, &st) != 0) {
            continue;
        }

        if (S_ISDIR(st.st_mode)) {
            ragnx_ingest_path(in, full, sub);

        } else if (S_ISREG(st.st_mode) && ragnx_ingest_wanted(sub)) {
            ragnx_ingest_file(in, full, sub);
        }
    }

    free(names);

    return RAGNX_OK;
}


static int
ragnx_ingest_file(ragnx_ingest_t *in, const char *path, const char *rel)
{
    int             i, n, rc;
    char           *text, *title, hash[SHA256_DIGEST_LENGTH * 2 + 1];
    FILE           *f;
    size_t          len;
    const char     *params[1];
    PGresult       *res;
    ragnx_chunk_t  *chunks;
    unsigned char   md[SHA256_DIGEST_LENGTH];

    f = fopen(path, "rb");
    if (f == NULL) {
        fprintf(stderr, "ragnx-worker: %s: %s\n", path, strerror(errno));
        in->failed++;
        return RAGNX_ERROR;
    }

    text = malloc(RAGNX_INGEST_MAX_FILE + 1);
    if (text == NULL) {
        fclose(f);
        in->failed++;
        return RAGNX_ERROR;
    }

    len = fread(text, 1, RAGNX_INGEST_MAX_FILE + 1, f);
    fclose(f);

    if (len > RAGNX_INGEST_MAX_FILE || memchr(text, '\0', len)) {
        fprintf(stderr, "ragnx-worker: %s: too large or not text, "
                "skipped\n", path);
        free(text);
        in->failed++;
        return RAGNX_ERROR;
    }

    text[len] = '\0';
    json_array_append_new(in->seen, json_string(rel));

    SHA256((unsigned char *) text, len, md);
    for (i = 0; i < SHA256_DIGEST_LENGTH; i++) {
        sprintf(hash + i * 2, "%02x", md[i]);
    }

    params[0] = rel;
    res = PQexecParams(in->conn, "SELECT content_hash FROM documents "
                       "WHERE path = $1", 1, NULL, params, NULL, NULL, 0);

    if (PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) == 1
        && strcmp(PQgetvalue(res, 0, 0), hash) == 0)
    {
        PQclear(res);
        free(text);
        in->unchanged++;
        return RAGNX_OK;
    }

    PQclear(res);

    if (ragnx_chunk(text, (size_t) ragnx_conf->chunk_size, &chunks, &n,
                    &title)
        != RAGNX_OK)
    {
        free(text);
        in->failed++;
        return RAGNX_ERROR;
    }

    rc = ragnx_ingest_store(in, rel, title ? title : rel, hash, chunks, n);

    for (i = 0; i < n; i++) {
        free(chunks[i].heading);
        free(chunks[i].body);
    }

    free(chunks);
    free(title);
    free(text);

    if (rc == RAGNX_OK) {
        in->changed++;

    } else {
        in->failed++;
    }

    return rc;
}


static int
ragnx_ingest_store(ragnx_ingest_t *in, const char *rel, const char *title,
    const char *hash, ragnx_chunk_t *chunks, int n)
{
    int          i, ok;
    char         seq[16], id[32];
    const char  *params[6];
    PGresult    *res;

    res = PQexec(in->conn, "BEGIN");
    PQclear(res);

    params[0] = rel;
    params[1] = title;
    params[2] = hash;

    res = PQexecParams(in->conn, "INSERT INTO documents (path, title, "
                       "content_hash) VALUES ($1, $2, $3) ON CONFLICT (path) "
                       "DO UPDATE SET title = excluded.title, content_hash = "
                       "excluded.content_hash, updated_at = now() "
                       "RETURNING id", 3, NULL, params, NULL, NULL, 0);

    ok = PQresultStatus(res) == PGRES_TUPLES_OK;
    if (ok) {
        snprintf(id, sizeof(id), "%s", PQgetvalue(res, 0, 0));
    }

    PQclear(res);

    if (ok) {
        params[0] = id;
        res = PQexecParams(in->conn, "DELETE FROM chunks WHERE "
                           "document_id = $1", 1, NULL, params, NULL, NULL,
                           0);
        ok = PQresultStatus(res) == PGRES_COMMAND_OK;
        PQclear(res);
    }

    for (i = 0; ok && i < n; i++) {
        snprintf(seq, sizeof(seq), "%d", i);
        params[0] = id;
        params[1] = seq;
        params[2] = title;
        params[3] = chunks[i].heading;
        params[4] = chunks[i].body;
        params[5] = rel;

        res = PQexecParams(in->conn, "INSERT INTO chunks (document_id, seq, "
                           "title, heading, body, path) VALUES ($1, $2, $3, "
                           "$4, $5, $6)", 6, NULL, params, NULL, NULL, 0);
        ok = PQresultStatus(res) == PGRES_COMMAND_OK;
        if (!ok) {
            fprintf(stderr, "ragnx-worker: %s: %s", rel,
                    PQresultErrorMessage(res));
        }

        PQclear(res);
    }

    res = PQexec(in->conn, ok ? "COMMIT" : "ROLLBACK");
    ok = ok && PQresultStatus(res) == PGRES_COMMAND_OK;
    PQclear(res);

    if (!ok) {
        fprintf(stderr, "ragnx-worker: %s: not stored: %s", rel,
                PQerrorMessage(in->conn));
        return RAGNX_ERROR;
    }

    return RAGNX_OK;
}


static int
ragnx_chunk_add(ragnx_chunk_t **chunks, int *n, int *cap,
    const char *heading, const char *body, size_t len)
{
    ragnx_chunk_t  *nc;

    while (len > 0 && (body[len - 1] == '\n' || body[len - 1] == ' ')) {
        len--;
    }

    if (len == 0) {
        return RAGNX_OK;
    }

    if (*n == *cap) {
        *cap = *cap ? *cap * 2 : 16;
        nc = realloc(*chunks, *cap * sizeof(ragnx_chunk_t));
        if (nc == NULL) {
            return RAGNX_ERROR;
        }

        *chunks = nc;
    }

    (*chunks)[*n].heading = strdup(heading);
    (*chunks)[*n].body = strndup(body, len);
    (*n)++;

    return RAGNX_OK;
}


/*
 * Cut text into chunks: a Markdown heading starts a new section (and is
 * the chunk's heading); paragraphs of a section are packed together up to
 * max bytes; a longer paragraph is cut at a space.  The first "# " heading
 * is the title.
 */

static int
ragnx_chunk(char *text, size_t max, ragnx_chunk_t **chunks, int *n,
    char **title)
{
    int      cap;
    char    *line, *next, *heading, *buf, *h;
    size_t   len, blen, plen, cut;

    *chunks = NULL;
    *n = 0;
    *title = NULL;
    cap = 0;

    buf = malloc(strlen(text) + 2);
    heading = strdup("");
    if (buf == NULL || heading == NULL) {
        free(buf);
        free(heading);
        return RAGNX_ERROR;
    }

    blen = 0;

    for (line = text; line && *line; line = next) {
        next = strchr(line, '\n');
        len = next ? (size_t) (next - line) : strlen(line);
        if (next) {
            next++;
        }

        if (len && line[len - 1] == '\r') {
            len--;
        }

        if (line[0] == '#') {
            h = line;
            while (h < line + len && *h == '#') {
                h++;
            }

            if (h < line + len && *h == ' ' && h - line <= 6) {
                ragnx_chunk_add(chunks, n, &cap, heading, buf, blen);
                blen = 0;

                while (h < line + len && *h == ' ') {
                    h++;
                }

                free(heading);
                heading = strndup(h, line + len - h);

                if (*title == NULL && line[1] == ' ') {
                    *title = strdup(heading);
                }

                continue;
            }
        }

        /* a blank line ends a paragraph: flush when the next would not fit */
        if (len == 0) {
            if (blen && buf[blen - 1] != '\n') {
                buf[blen++] = '\n';
            }

            continue;
        }

        plen = len + 1;

        if (blen + plen > max && blen > 0
            && buf[blen - 1] == '\n')
        {
            ragnx_chunk_add(chunks, n, &cap, heading, buf, blen);
            blen = 0;
        }

        while (blen + plen > max) {
            /* one paragraph longer than max: cut it at a space */
            cut = max - blen;
            while (cut > max / 2 && line[cut] != ' ') {
                cut--;
            }

            memcpy(buf + blen, line, cut);
            blen += cut;
            ragnx_chunk_add(chunks, n, &cap, heading, buf, blen);
            blen = 0;
            line += cut;
            len -= cut;
            plen = len + 1;
        }

        memcpy(buf + blen, line, len);
        blen += len;
        buf[blen++] = ' ';
    }

    ragnx_chunk_add(chunks, n, &cap, heading, buf, blen);

    free(heading);
    free(buf);

    return RAGNX_OK;
}
