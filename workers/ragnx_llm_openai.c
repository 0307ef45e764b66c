
/*
 * ragnx worker pool: OpenAI-compatible chat completions
 * (POST <base>/chat/completions: llama.cpp server, vLLM, Ollama, hosted).
 * llm_base_url includes the version prefix, e.g. http://127.0.0.1:8000/v1.
 */


#include <stdio.h>
#include <string.h>

#include "ragnx_worker.h"
#include "ragnx_llm.h"


static struct curl_slist *ragnx_openai_headers(struct curl_slist *h);
static void ragnx_openai_request(const ragnx_prompt_t *prompt,
    ragnx_llm_body_t *body);
static int ragnx_openai_response(json_t *res, ragnx_answer_t *ans);
static void ragnx_openai_event(ragnx_llm_stream_t *s, const char *name,
    json_t *data);


const ragnx_llm_provider_t  ragnx_llm_openai = {
    "/chat/completions",
    ragnx_openai_headers,
    ragnx_openai_request,
    ragnx_openai_response,
    ragnx_openai_event
};


static struct curl_slist *
ragnx_openai_headers(struct curl_slist *h)
{
    char  buf[4200];

    if (ragnx_conf->llm_api_key == NULL) {
        return h;
    }

    snprintf(buf, sizeof(buf), "Authorization: Bearer %s",
             ragnx_conf->llm_api_key);
    h = curl_slist_append(h, buf);
    memset(buf, 0, sizeof(buf));

    return h;
}


static void
ragnx_openai_request(const ragnx_prompt_t *prompt, ragnx_llm_body_t *body)
{
    ragnx_llm_head(body);
    ragnx_llm_raw(body, ",\"messages\":");
    ragnx_llm_messages(prompt, 1, body);
    ragnx_llm_raw(body, ragnx_conf->llm_stream
                        ? ",\"stream\":true,"
                          "\"stream_options\":{\"include_usage\":true}}"
                        : "}");
}


/* {"choices":[{"message":{"content":...}}], "usage":{...}} */

static int
ragnx_openai_response(json_t *res, ragnx_answer_t *ans)
{
    json_t  *v, *usage;

    v = json_array_get(json_object_get(res, "choices"), 0);

    /* cut at max_tokens: an answer, but not one to cache */
    usage = json_object_get(v, "finish_reason");
    ans->truncated = json_is_string(usage)
                     && strcmp(json_string_value(usage), "length") == 0;

    v = json_object_get(json_object_get(v, "message"), "content");

    if (!json_is_string(v) || json_string_length(v) == 0) {
        return RAGNX_ERROR;
    }

    ans->answer = strdup(json_string_value(v));
    if (ans->answer == NULL) {
        return RAGNX_ERROR;
    }

    usage = json_object_get(res, "usage");
    v = json_object_get(usage, "prompt_tokens");
    ans->input_tokens = json_is_integer(v) ? (long) json_integer_value(v)
                                           : -1;
    v = json_object_get(usage, "completion_tokens");
    ans->output_tokens = json_is_integer(v) ? (long) json_integer_value(v)
                                            : -1;

    return RAGNX_OK;
}


/*
 * stream: true with stream_options.include_usage: chunks whose first
 * choice's delta holds the text and, once, a finish_reason; a last chunk
 * with no choices and the usage; then "[DONE]" (ragnx_llm.c).  A chunk
 * with an "error" object ends the answer as failed.
 */

static void
ragnx_openai_event(ragnx_llm_stream_t *s, const char *name, json_t *data)
{
    json_t  *v, *choice, *usage;

    v = json_object_get(data, "error");

    if (v) {
        v = json_object_get(v, "message");
        ragnx_log_job(RAGNX_LOG_WARN, s->prompt->job,
                      RAGNX_ERR_LLM_BAD_RESPONSE, "llm stream error: %.200s",
                      json_is_string(v) ? json_string_value(v) : "(none)");
        s->failed = 1;
        return;
    }

    choice = json_array_get(json_object_get(data, "choices"), 0);
    v = json_object_get(json_object_get(choice, "delta"), "content");

    if (json_is_string(v)) {
        ragnx_llm_text(s, json_string_value(v), json_string_length(v));
    }

    v = json_object_get(choice, "finish_reason");

    if (json_is_string(v)) {
        /* cut at max_tokens: an answer, but not one to cache */
        s->truncated = strcmp(json_string_value(v), "length") == 0;
    }

    usage = json_object_get(data, "usage");
    v = json_object_get(usage, "prompt_tokens");

    if (json_is_integer(v)) {
        s->input_tokens = (long) json_integer_value(v);
    }

    v = json_object_get(usage, "completion_tokens");

    if (json_is_integer(v)) {
        s->output_tokens = (long) json_integer_value(v);
    }
}
