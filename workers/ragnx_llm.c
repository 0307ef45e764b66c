
/*
 * ragnx worker pool: the LLM interface.  A provider is chosen by
 * llm_provider; the HTTP ones (ragnx_llm_anthropic.c, ragnx_llm_openai.c)
 * build a request and read a response, and this file does the transfer
 * with libcurl (one easy handle per thread, so connections are kept
 * alive), the error classification and Retry-After.  The extractive
 * provider answers from the retrieved passages with no network.
 */


#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <curl/curl.h>

#include "ragnx_worker.h"
#include "ragnx_llm.h"
#include "ragnx_job.h"


#define RAGNX_LLM_MAX_RESPONSE  (8 * 1024 * 1024)
#define RAGNX_EXTRACT_LEN       600
#define RAGNX_LLM_PIECE         48


/* an event's data (one event, not the whole answer) */
#define RAGNX_LLM_MAX_EVENT     (256 * 1024)


struct ragnx_llm_s {
    CURL                         *curl;
    char                         *buf;
    size_t                        len;
    size_t                        size;
    long                          retry_after;      /* ms, -1: none */
    int                           overflow;
    int                           mode;     /* RAGNX_LLM_UNKNOWN ... */
    size_t                        dlen;     /* the event's data so far */
    char                          event[64];        /* its "event:" */
    const ragnx_llm_provider_t   *provider;
    ragnx_llm_stream_t            stream;
    ragnx_err_t                   error;    /* the last failure's class */
};


/* how a response's body is read: decided at its first bytes */
#define RAGNX_LLM_UNKNOWN       0
#define RAGNX_LLM_WHOLE         1       /* JSON, read whole */
#define RAGNX_LLM_EVENTS        2       /* text/event-stream, as it comes */


static size_t ragnx_llm_write(char *data, size_t size, size_t n,
    void *userp);
static size_t ragnx_llm_header(char *data, size_t size, size_t n,
    void *userp);
static size_t ragnx_llm_events(ragnx_llm_t *llm, char *data, size_t n);
static void ragnx_llm_pieces(const ragnx_prompt_t *prompt, const char *text);
static void ragnx_llm_dispatch(ragnx_llm_t *llm);
static int ragnx_llm_streamed(ragnx_llm_t *llm, const ragnx_prompt_t *prompt,
    ragnx_answer_t *ans, char *err, size_t errlen);
static int ragnx_llm_http(ragnx_llm_t *llm,
    const ragnx_llm_provider_t *provider, const ragnx_prompt_t *prompt,
    ragnx_answer_t *ans, long *retry_after_ms, char *err, size_t errlen);


const char  ragnx_llm_system[] =
    "You answer questions about the user's documents. Use only the "
    "numbered context passages; when they do not contain the answer, say "
    "so. Be concise and name the sources you used.";


ragnx_llm_t *
ragnx_llm_create(void)
{
    ragnx_llm_t  *llm;

    llm = calloc(1, sizeof(ragnx_llm_t));
    if (llm == NULL) {
        return NULL;
    }

    llm->curl = curl_easy_init();
    if (llm->curl == NULL) {
        free(llm);
        return NULL;
    }

    return llm;
}


void
ragnx_llm_destroy(ragnx_llm_t *llm)
{
    if (llm == NULL) {
        return;
    }

    curl_easy_cleanup(llm->curl);
    free(llm->buf);
    free(llm->stream.text);
    free(llm);
}


void
ragnx_answer_free(ragnx_answer_t *ans)
{
    free(ans->answer);
    json_decref(ans->sources);
    memset(ans, 0, sizeof(ragnx_answer_t));
}


/* distinct document paths of the passages, best first */

json_t *
ragnx_llm_sources(const ragnx_passage_t *p, int n)
{
    int      i;
    size_t   j;
    json_t  *a, *v;

    a = json_array();
    if (a == NULL) {
        return NULL;
    }

    for (i = 0; i < n; i++) {
        json_array_foreach(a, j, v) {
            if (strcmp(json_string_value(v), p[i].path) == 0) {
                break;
            }
        }

        if (j == json_array_size(a)) {
            json_array_append_new(a, json_string(p[i].path));
        }
    }

    return a;
}


/* the user turn: numbered passages, then the question */

char *
ragnx_llm_context(const ragnx_prompt_t *prompt)
{
    int      i;
    char    *s, *p;
    size_t   size;

    size = strlen(prompt->job->query) + 64;

    for (i = 0; i < prompt->npassages; i++) {
        size += strlen(prompt->passages[i].path)
                + strlen(prompt->passages[i].heading)
                + strlen(prompt->passages[i].body) + 32;
    }

    s = malloc(size);
    if (s == NULL) {
        return NULL;
    }

    p = s;
    p += sprintf(p, "Context:\n");

    for (i = 0; i < prompt->npassages; i++) {
        p += sprintf(p, "\n[%d] %s%s%s\n%s\n", i + 1,
                     prompt->passages[i].path,
                     prompt->passages[i].heading[0] ? " - " : "",
                     prompt->passages[i].heading, prompt->passages[i].body);
    }

    sprintf(p, "\nQuestion: %s", prompt->job->query);

    return s;
}


int
ragnx_llm_extractive(const ragnx_prompt_t *prompt, ragnx_answer_t *ans)
{
    int                     i, n;
    char                   *s, *p;
    size_t                  len;
    const ragnx_passage_t  *ps;

    memset(ans, 0, sizeof(ragnx_answer_t));
    ans->input_tokens = -1;
    ans->output_tokens = -1;
    ans->model = "extractive";

    /* the best passage, and the next one if it covers the question as well */
    n = prompt->npassages < 2 ? prompt->npassages : 2;

    if (n == 2 && prompt->passages[1].cover < prompt->passages[0].cover) {
        n = 1;
    }

    if (n == 0) {
        ans->answer = strdup("I could not find anything about that in the "
                             "documents.");
        ans->sources = json_array();

        if (ans->answer == NULL || ans->sources == NULL) {
            return RAGNX_AGAIN;
        }

        ragnx_llm_pieces(prompt, ans->answer);

        return RAGNX_OK;
    }

    s = malloc(n * (RAGNX_EXTRACT_LEN + 1024) + 1);
    if (s == NULL) {
        return RAGNX_AGAIN;
    }

    p = s;

    for (i = 0; i < n; i++) {
        ps = &prompt->passages[i];
        len = strlen(ps->body);

        if (len > RAGNX_EXTRACT_LEN) {
            len = RAGNX_EXTRACT_LEN;
            while (len > 0 && ((unsigned char) ps->body[len] & 0xc0) == 0x80)
            {
                len--;
            }
        }

        p += snprintf(p, 1024, "%sFrom %.200s%s%.200s: ", i ? "\n\n" : "",
                      ps->title, ps->heading[0] ? " (" : "",
                      ps->heading);

        if (ps->heading[0]) {
            p[-2] = ')';
            p[-1] = ':';
            *p++ = ' ';
        }

        memcpy(p, ps->body, len);
        p += len;

        if (len < strlen(ps->body)) {
            p += sprintf(p, "...");
        }
    }

    *p = '\0';

    ans->answer = s;
    ans->sources = ragnx_llm_sources(prompt->passages, n);

    if (ans->sources == NULL) {
        return RAGNX_AGAIN;
    }

    ragnx_llm_pieces(prompt, s);

    return RAGNX_OK;
}


/*
 * An answer made at once, told as a provider would stream it: pieces of
 * at least RAGNX_LLM_PIECE bytes, each cut after a space (never inside a
 * UTF-8 character).
 */

static void
ragnx_llm_pieces(const ragnx_prompt_t *prompt, const char *text)
{
    const char  *p, *sp;

    if (prompt->delta == NULL) {
        return;
    }

    while (*text) {
        p = text + strnlen(text, RAGNX_LLM_PIECE);
        sp = *p ? strchr(p, ' ') : NULL;
        p = sp ? sp + 1 : text + strlen(text);

        prompt->delta(prompt->data, text, p - text);
        text = p;
    }
}


int
ragnx_llm_answer(ragnx_llm_t *llm, const ragnx_prompt_t *prompt,
    ragnx_answer_t *ans, long *retry_after_ms, char *err, size_t errlen)
{
    *retry_after_ms = -1;
    llm->error = RAGNX_ERR_NONE;

    switch (ragnx_conf->llm_kind) {

    case RAGNX_LLM_ANTHROPIC:
        return ragnx_llm_http(llm, &ragnx_llm_anthropic, prompt, ans,
                              retry_after_ms, err, errlen);

    case RAGNX_LLM_OPENAI:
        return ragnx_llm_http(llm, &ragnx_llm_openai, prompt, ans,
                              retry_after_ms, err, errlen);

    default:
        return ragnx_llm_extractive(prompt, ans);
    }
}


/* the class of the last failure of ragnx_llm_answer(), for the log */

ragnx_err_t
ragnx_llm_error(const ragnx_llm_t *llm)
{
    return llm->error;
}


static size_t
ragnx_llm_write(char *data, size_t size, size_t n, void *userp)
{
    char         *nb;
    long          status;
    size_t        need;
    const char   *type;
    ragnx_llm_t  *llm = userp;

    n *= size;

    if (llm->mode == RAGNX_LLM_UNKNOWN) {
        status = 0;
        type = NULL;
        curl_easy_getinfo(llm->curl, CURLINFO_RESPONSE_CODE, &status);
        curl_easy_getinfo(llm->curl, CURLINFO_CONTENT_TYPE, &type);

        /* an error is JSON whatever was asked: read whole, as before */
        llm->mode = status == 200 && type
                    && strncasecmp(type, "text/event-stream", 17) == 0
                    ? RAGNX_LLM_EVENTS : RAGNX_LLM_WHOLE;
    }

    if (llm->mode == RAGNX_LLM_EVENTS) {
        return ragnx_llm_events(llm, data, n);
    }

    need = llm->len + n + 1;

    if (need > RAGNX_LLM_MAX_RESPONSE) {
        llm->overflow = 1;
        return 0;
    }

    if (need > llm->size) {
        nb = realloc(llm->buf, need * 2);
        if (nb == NULL) {
            return 0;
        }

        llm->buf = nb;
        llm->size = need * 2;
    }

    memcpy(llm->buf + llm->len, data, n);
    llm->len += n;
    llm->buf[llm->len] = '\0';

    return n;
}


static size_t
ragnx_llm_header(char *data, size_t size, size_t n, void *userp)
{
    char         *v, *end, tmp[128];
    long          secs;
    size_t        len;
    time_t        t;
    ragnx_llm_t  *llm = userp;

    len = size * n;

    if (len > 12 && strncasecmp(data, "retry-after:", 12) == 0) {
        v = data + 12;
        len -= 12;

        while (len && isspace((unsigned char) *v)) {
            v++;
            len--;
        }

        while (len && isspace((unsigned char) v[len - 1])) {
            len--;
        }

        if (len >= sizeof(tmp)) {
            return size * n;
        }

        memcpy(tmp, v, len);
        tmp[len] = '\0';

        secs = strtol(tmp, &end, 10);

        if (end != tmp && *end == '\0' && secs >= 0) {
            llm->retry_after = secs * 1000;

        } else {
            t = curl_getdate(tmp, NULL);
            if (t != -1) {
                secs = (long) (t - time(NULL));
                llm->retry_after = secs > 0 ? secs * 1000 : 0;
            }
        }
    }

    return size * n;
}


static int
ragnx_llm_http(ragnx_llm_t *llm, const ragnx_llm_provider_t *provider,
    const ragnx_prompt_t *prompt, ragnx_answer_t *ans, long *retry_after_ms,
    char *err, size_t errlen)
{
    int                  rc;
    long                 status;
    char                 url[2200];
    size_t               blen;
    json_t              *res;
    ragnx_llm_body_t     body;
    CURL                *c;
    CURLcode             code;
    json_error_t         e;
    struct curl_slist   *headers;

    memset(ans, 0, sizeof(ragnx_answer_t));

    memset(&body, 0, sizeof(ragnx_llm_body_t));
    provider->request(prompt, &body);

    if (body.failed || body.data == NULL) {
        free(body.data);
        snprintf(err, errlen, "out of memory");
        llm->error = RAGNX_ERR_INTERNAL;
        return RAGNX_AGAIN;
    }

    blen = strlen(ragnx_conf->llm_base_url);
    snprintf(url, sizeof(url), "%.*s%s", (int) blen
             - (blen && ragnx_conf->llm_base_url[blen - 1] == '/'),
             ragnx_conf->llm_base_url, provider->path);

    headers = curl_slist_append(NULL, "Content-Type: application/json");
    headers = provider->headers(headers);

    c = llm->curl;
    curl_easy_reset(c);
    llm->len = 0;
    llm->overflow = 0;
    llm->retry_after = -1;
    llm->mode = RAGNX_LLM_UNKNOWN;
    llm->dlen = 0;
    llm->event[0] = '\0';
    llm->provider = provider;
    llm->stream.len = 0;
    llm->stream.input_tokens = -1;
    llm->stream.output_tokens = -1;
    llm->stream.truncated = 0;
    llm->stream.done = 0;
    llm->stream.failed = 0;
    llm->stream.prompt = prompt;

    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, headers);
    curl_easy_setopt(c, CURLOPT_POSTFIELDS, body.data);
    curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE, (long) body.len);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, ragnx_conf->llm_timeout);
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS,
                     ragnx_conf->llm_connect_timeout);
    curl_easy_setopt(c, CURLOPT_LOW_SPEED_LIMIT, 1L);
    curl_easy_setopt(c, CURLOPT_LOW_SPEED_TIME,
                     ragnx_conf->llm_timeout >= 2000
                     ? ragnx_conf->llm_timeout / 1000 : 1L);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, ragnx_llm_write);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, llm);
    curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, ragnx_llm_header);
    curl_easy_setopt(c, CURLOPT_HEADERDATA, llm);
    curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");

    code = curl_easy_perform(c);

    curl_slist_free_all(headers);
    free(body.data);

    if (code != CURLE_OK) {
        ragnx_metrics_llm(0);
        llm->error = llm->overflow ? RAGNX_ERR_LLM_BAD_RESPONSE
                     : code == CURLE_OPERATION_TIMEDOUT
                     ? RAGNX_ERR_LLM_TIMEOUT : RAGNX_ERR_LLM_NETWORK;
        ragnx_log_job(RAGNX_LOG_WARN, prompt->job, llm->error,
                      "llm request failed: %s", curl_easy_strerror(code));
        snprintf(err, errlen, llm->overflow ? "LLM response too large"
                              : code == CURLE_OPERATION_TIMEDOUT
                              ? "LLM timed out" : "LLM unavailable");
        return RAGNX_AGAIN;
    }

    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
    ragnx_metrics_llm(status);

    if (status == 429 || status == 408 || status >= 500) {
        llm->error = status == 429 ? RAGNX_ERR_LLM_HTTP_429
                     : status == 408 ? RAGNX_ERR_LLM_TIMEOUT
                     : RAGNX_ERR_LLM_HTTP_5XX;
        ragnx_log_job(RAGNX_LOG_WARN, prompt->job, llm->error,
                      "llm answered %ld", status);
        *retry_after_ms = llm->retry_after;
        snprintf(err, errlen, status == 429 ? "LLM rate limited"
                                            : "LLM unavailable");
        return RAGNX_AGAIN;
    }

    if (status == 401 || status == 403) {
        /* the key, not the job: ragnx_breaker.c logs it, rate-limited */
        llm->error = RAGNX_ERR_LLM_HTTP_4XX;
        ragnx_log_job(RAGNX_LOG_DEBUG, prompt->job, llm->error,
                      "llm answered %ld: %.200s", status,
                      llm->buf ? llm->buf : "");
        snprintf(err, errlen, status == 401 ? "LLM unauthorized"
                                            : "LLM forbidden");
        return RAGNX_DENIED;
    }

    if (status != 200) {
        llm->error = status >= 400 ? RAGNX_ERR_LLM_HTTP_4XX
                                   : RAGNX_ERR_LLM_BAD_RESPONSE;
        ragnx_log_job(RAGNX_LOG_WARN, prompt->job, llm->error,
                      "llm answered %ld: %.200s", status,
                      llm->buf ? llm->buf : "");
        snprintf(err, errlen, "LLM rejected the request");
        return RAGNX_DECLINED;
    }

    if (llm->mode == RAGNX_LLM_EVENTS) {
        return ragnx_llm_streamed(llm, prompt, ans, err, errlen);
    }

    res = json_loadb(llm->buf ? llm->buf : "", llm->len, 0, &e);
    if (res == NULL) {
        llm->error = RAGNX_ERR_LLM_BAD_RESPONSE;
        ragnx_log_job(RAGNX_LOG_WARN, prompt->job, llm->error,
                      "llm response is not JSON: %s", e.text);
        snprintf(err, errlen, "LLM returned a malformed response");
        return RAGNX_AGAIN;
    }

    ans->input_tokens = -1;
    ans->output_tokens = -1;
    ans->model = ragnx_conf->llm_model;

    rc = provider->response(res, ans);
    json_decref(res);

    if (rc != RAGNX_OK) {
        ragnx_answer_free(ans);
        snprintf(err, errlen, "LLM returned a malformed response");
        llm->error = RAGNX_ERR_LLM_BAD_RESPONSE;
        return RAGNX_AGAIN;
    }

    ans->sources = ragnx_llm_sources(prompt->passages, prompt->npassages);
    if (ans->sources == NULL) {
        ragnx_answer_free(ans);
        snprintf(err, errlen, "out of memory");
        llm->error = RAGNX_ERR_INTERNAL;
        return RAGNX_AGAIN;
    }

    return RAGNX_OK;
}


/*
 * A text/event-stream body as it arrives: lines of "event: name" and
 * "data: ..." (several data lines joined by a newline), an empty line
 * ending each event, ":" a comment.  The partial line waits in llm->buf.
 */

static size_t
ragnx_llm_events(ragnx_llm_t *llm, char *data, size_t n)
{
    char    *nb, *line, *end, *nl;
    size_t   need;

    need = llm->len + n + 1;

    if (need > RAGNX_LLM_MAX_EVENT) {
        llm->overflow = 1;
        return 0;
    }

    if (need > llm->size) {
        nb = realloc(llm->buf, need * 2);
        if (nb == NULL) {
            return 0;
        }

        llm->buf = nb;
        llm->size = need * 2;
    }

    memcpy(llm->buf + llm->len, data, n);
    llm->len += n;
    llm->buf[llm->len] = '\0';

    /* whole lines; the data of the event being read is kept at the front */

    line = llm->buf + llm->dlen;
    end = llm->buf + llm->len;

    while ((nl = memchr(line, '\n', end - line)) != NULL) {
        *nl = '\0';

        if (nl > line && nl[-1] == '\r') {
            nl[-1] = '\0';
        }

        if (*line == '\0') {
            llm->buf[llm->dlen] = '\0';
            ragnx_llm_dispatch(llm);
            llm->dlen = 0;

        } else if (strncmp(line, "data:", 5) == 0) {
            line += 5 + (line[5] == ' ');

            if (llm->dlen) {
                llm->buf[llm->dlen++] = '\n';
            }

            need = strlen(line);
            memmove(llm->buf + llm->dlen, line, need);
            llm->dlen += need;

        } else if (strncmp(line, "event:", 6) == 0) {
            line += 6 + (line[6] == ' ');
            snprintf(llm->event, sizeof(llm->event), "%s", line);
        }

        line = nl + 1;
    }

    /* the partial line after the event's data */
    need = end - line;
    memmove(llm->buf + llm->dlen, line, need);
    llm->len = llm->dlen + need;
    llm->buf[llm->len] = '\0';

    return llm->stream.failed ? 0 : n;
}


/* one event, whose data is the NUL-terminated start of llm->buf */

static void
ragnx_llm_dispatch(ragnx_llm_t *llm)
{
    json_t        *data;
    json_error_t   e;

    if (llm->dlen == 0) {
        llm->event[0] = '\0';
        return;
    }

    if (strcmp(llm->buf, "[DONE]") == 0) {
        llm->stream.done = 1;
        llm->event[0] = '\0';
        return;
    }

    data = json_loadb(llm->buf, llm->dlen, 0, &e);

    if (data == NULL) {
        ragnx_log_job(RAGNX_LOG_WARN, llm->stream.prompt->job,
                      RAGNX_ERR_LLM_BAD_RESPONSE, "llm event is not JSON: %s",
                      e.text);
        llm->stream.failed = 1;

    } else {
        llm->provider->event(&llm->stream, llm->event, data);
        json_decref(data);
    }

    llm->event[0] = '\0';
}


/* a piece of the answer: kept, and told to whoever listens */

void
ragnx_llm_text(ragnx_llm_stream_t *s, const char *text, size_t len)
{
    char    *nb;
    size_t   need;

    if (len == 0 || s->failed) {
        return;
    }

    need = s->len + len + 1;

    if (need > RAGNX_LLM_MAX_RESPONSE) {
        s->failed = 1;
        return;
    }

    if (need > s->size) {
        nb = realloc(s->text, need * 2);
        if (nb == NULL) {
            s->failed = 1;
            return;
        }

        s->text = nb;
        s->size = need * 2;
    }

    memcpy(s->text + s->len, text, len);
    s->len += len;
    s->text[s->len] = '\0';

    if (s->prompt->delta) {
        s->prompt->delta(s->prompt->data, text, len);
    }
}


/* the answer a complete stream made */

static int
ragnx_llm_streamed(ragnx_llm_t *llm, const ragnx_prompt_t *prompt,
    ragnx_answer_t *ans, char *err, size_t errlen)
{
    ragnx_llm_stream_t  *s;

    s = &llm->stream;

    /* a last event the server did not close with an empty line */
    if (!s->failed && llm->dlen) {
        llm->buf[llm->dlen] = '\0';
        ragnx_llm_dispatch(llm);
        llm->dlen = 0;
    }

    if (s->failed || !s->done || s->len == 0) {
        llm->error = !s->failed && !s->done ? RAGNX_ERR_LLM_NETWORK
                                            : RAGNX_ERR_LLM_BAD_RESPONSE;
        ragnx_log_job(RAGNX_LOG_WARN, prompt->job, llm->error,
                      "llm stream %s", s->failed ? "failed"
                                       : !s->done ? "ended early"
                                       : "held no text");
        snprintf(err, errlen, s->failed || !s->done
                              ? "LLM stream interrupted"
                              : "LLM returned a malformed response");
        return RAGNX_AGAIN;
    }

    ans->answer = malloc(s->len + 1);
    ans->sources = ragnx_llm_sources(prompt->passages, prompt->npassages);

    if (ans->answer == NULL || ans->sources == NULL) {
        ragnx_answer_free(ans);
        snprintf(err, errlen, "out of memory");
        llm->error = RAGNX_ERR_INTERNAL;
        return RAGNX_AGAIN;
    }

    memcpy(ans->answer, s->text, s->len + 1);
    ans->input_tokens = s->input_tokens;
    ans->output_tokens = s->output_tokens;
    ans->truncated = s->truncated;
    ans->model = ragnx_conf->llm_model;

    return RAGNX_OK;
}


/* history turns, then the context and question; system first if asked */

void
ragnx_llm_messages(const ragnx_prompt_t *prompt, int with_system,
    ragnx_llm_body_t *body)
{
    int    i;
    char  *ctx;

    ragnx_llm_raw(body, "[");

    if (with_system) {
        ragnx_llm_raw(body, "{\"role\":\"system\",\"content\":");
        ragnx_llm_string(body, ragnx_llm_system);
        ragnx_llm_raw(body, "},");
    }

    /* the Messages API wants the conversation to open with the user */
    for (i = 0; i < prompt->nhistory
                && strcmp(prompt->history[i].role, "user") != 0; i++)
    {
        /* skip */
    }

    for ( /* void */ ; i < prompt->nhistory; i++) {
        ragnx_llm_raw(body, "{\"role\":");
        ragnx_llm_string(body, prompt->history[i].role);
        ragnx_llm_raw(body, ",\"content\":");
        ragnx_llm_string(body, prompt->history[i].content);
        ragnx_llm_raw(body, "},");
    }

    ctx = ragnx_llm_context(prompt);
    if (ctx == NULL) {
        body->failed = 1;
        return;
    }

    ragnx_llm_raw(body, "{\"role\":\"user\",\"content\":");
    ragnx_llm_string(body, ctx);
    ragnx_llm_raw(body, "}]");
    free(ctx);
}


/* room for n more bytes and a NUL at the end of body; NULL: out of memory */

static char *
ragnx_llm_room(ragnx_llm_body_t *body, size_t n)
{
    char    *p;
    size_t   size;

    if (body->failed) {
        return NULL;
    }

    if (body->len + n + 1 > body->size) {
        size = body->size ? body->size : 8192;

        while (size < body->len + n + 1) {
            size *= 2;
        }

        p = realloc(body->data, size);
        if (p == NULL) {
            body->failed = 1;
            return NULL;
        }

        body->data = p;
        body->size = size;
    }

    return body->data + body->len;
}


/* a request body's start, as every provider has it: model, max_tokens */

void
ragnx_llm_head(ragnx_llm_body_t *body)
{
    char  n[32];

    snprintf(n, sizeof(n), "%ld", ragnx_conf->llm_max_tokens);

    ragnx_llm_raw(body, "{\"model\":");
    ragnx_llm_string(body, ragnx_conf->llm_model);
    ragnx_llm_raw(body, ",\"max_tokens\":");
    ragnx_llm_raw(body, n);
}


void
ragnx_llm_raw(ragnx_llm_body_t *body, const char *text)
{
    char    *p;
    size_t   n;

    n = strlen(text);

    p = ragnx_llm_room(body, n);
    if (p == NULL) {
        return;
    }

    memcpy(p, text, n + 1);
    body->len += n;
}


/*
 * s as a JSON string (ragnx_json_escape(), as the module writes its job
 * payloads).  Every text here is UTF-8 already: the question was decoded
 * by jansson, passages and history come from a UTF8 database, and the
 * settings are checked when read.
 */

void
ragnx_llm_string(ragnx_llm_body_t *body, const char *s)
{
    char    *p;
    size_t   n;

    n = strlen(s);

    p = ragnx_llm_room(body, 6 * n + 2);
    if (p == NULL) {
        return;
    }

    *p++ = '"';
    p += ragnx_json_escape(s, n, p);
    *p++ = '"';
    *p = '\0';

    body->len = p - body->data;
}
