
/*
 * ragnx worker pool: the Anthropic Messages API (POST /v1/messages).
 */


#include <stdio.h>
#include <string.h>

#include "ragnx_worker.h"
#include "ragnx_llm.h"


static struct curl_slist *ragnx_anthropic_headers(struct curl_slist *h);
static void ragnx_anthropic_request(const ragnx_prompt_t *prompt,
    ragnx_llm_body_t *body);
static int ragnx_anthropic_response(json_t *res, ragnx_answer_t *ans);
static void ragnx_anthropic_event(ragnx_llm_stream_t *s, const char *name,
    json_t *data);


const ragnx_llm_provider_t  ragnx_llm_anthropic = {
    "/v1/messages",
    ragnx_anthropic_headers,
    ragnx_anthropic_request,
    ragnx_anthropic_response,
    ragnx_anthropic_event
};


static struct curl_slist *
ragnx_anthropic_headers(struct curl_slist *h)
{
    char  buf[4200];

    /* the key goes into the header list only, never into a log line */
    snprintf(buf, sizeof(buf), "x-api-key: %s",
             ragnx_conf->llm_api_key ? ragnx_conf->llm_api_key : "");
    h = curl_slist_append(h, buf);
    memset(buf, 0, sizeof(buf));

    return curl_slist_append(h, "anthropic-version: 2023-06-01");
}


static void
ragnx_anthropic_request(const ragnx_prompt_t *prompt, ragnx_llm_body_t *body)
{
    ragnx_llm_head(body);
    ragnx_llm_raw(body, ",\"system\":");
    ragnx_llm_string(body, ragnx_llm_system);
    ragnx_llm_raw(body, ",\"messages\":");
    ragnx_llm_messages(prompt, 0, body);
    ragnx_llm_raw(body, ragnx_conf->llm_stream ? ",\"stream\":true}" : "}");
}


/* {"content":[{"type":"text","text":...}], "usage":{...}} */

static int
ragnx_anthropic_response(json_t *res, ragnx_answer_t *ans)
{
    size_t   i;
    json_t  *content, *part, *usage, *v;
    char    *s;
    size_t   len, n;

    content = json_object_get(res, "content");
    if (!json_is_array(content)) {
        return RAGNX_ERROR;
    }

    len = 0;
    json_array_foreach(content, i, part) {
        v = json_object_get(part, "text");
        if (json_is_string(v)) {
            len += json_string_length(v);
        }
    }

    s = malloc(len + 1);
    if (s == NULL) {
        return RAGNX_ERROR;
    }

    n = 0;
    json_array_foreach(content, i, part) {
        v = json_object_get(part, "text");
        if (json_is_string(v)) {
            memcpy(s + n, json_string_value(v), json_string_length(v));
            n += json_string_length(v);
        }
    }

    s[n] = '\0';

    if (n == 0) {
        free(s);
        return RAGNX_ERROR;
    }

    ans->answer = s;

    /* cut at max_tokens: an answer, but not one to cache */
    v = json_object_get(res, "stop_reason");
    ans->truncated = json_is_string(v)
                     && strcmp(json_string_value(v), "max_tokens") == 0;

    usage = json_object_get(res, "usage");
    v = json_object_get(usage, "input_tokens");
    ans->input_tokens = json_is_integer(v) ? (long) json_integer_value(v)
                                           : -1;
    v = json_object_get(usage, "output_tokens");
    ans->output_tokens = json_is_integer(v) ? (long) json_integer_value(v)
                                            : -1;

    return RAGNX_OK;
}


/*
 * stream: true.  message_start (input tokens), content_block_delta
 * (text_delta: the text), message_delta (stop_reason, output tokens),
 * message_stop (the end); an error event ends the answer as failed.
 * Other events (ping, content_block_start and _stop) carry nothing the
 * answer needs.
 */

static void
ragnx_anthropic_event(ragnx_llm_stream_t *s, const char *name, json_t *data)
{
    json_t      *v, *usage;
    const char  *type;

    type = json_string_value(json_object_get(data, "type"));
    if (type == NULL) {
        type = name;
    }

    if (strcmp(type, "content_block_delta") == 0) {
        v = json_object_get(json_object_get(data, "delta"), "text");

        if (json_is_string(v)) {
            ragnx_llm_text(s, json_string_value(v), json_string_length(v));
        }

    } else if (strcmp(type, "message_start") == 0) {
        usage = json_object_get(json_object_get(data, "message"), "usage");
        v = json_object_get(usage, "input_tokens");

        if (json_is_integer(v)) {
            s->input_tokens = (long) json_integer_value(v);
        }

    } else if (strcmp(type, "message_delta") == 0) {
        v = json_object_get(json_object_get(data, "delta"), "stop_reason");

        /* cut at max_tokens: an answer, but not one to cache */
        s->truncated = json_is_string(v)
                       && strcmp(json_string_value(v), "max_tokens") == 0;

        v = json_object_get(json_object_get(data, "usage"), "output_tokens");

        if (json_is_integer(v)) {
            s->output_tokens = (long) json_integer_value(v);
        }

    } else if (strcmp(type, "message_stop") == 0) {
        s->done = 1;

    } else if (strcmp(type, "error") == 0) {
        v = json_object_get(json_object_get(data, "error"), "message");
        ragnx_log_job(RAGNX_LOG_WARN, s->prompt->job,
                      RAGNX_ERR_LLM_BAD_RESPONSE, "llm stream error: %.200s",
                      json_is_string(v) ? json_string_value(v) : "(none)");
        s->failed = 1;
    }
}
