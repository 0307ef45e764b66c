
/*
 * ragnx worker pool: what an HTTP LLM provider supplies to ragnx_llm.c.
 */


#ifndef RAGNX_LLM_H
#define RAGNX_LLM_H


#include <curl/curl.h>
#include <jansson.h>

#include "ragnx_worker.h"


/*
 * A request body, written as JSON text: jansson's json_dumps() decodes
 * every code point of every string, 32 us for a 5 KB prompt, where
 * copying the bytes and escaping a few takes 2.
 */

typedef struct {
    char    *data;
    size_t   len;
    size_t   size;
    int      failed;        /* out of memory */
} ragnx_llm_body_t;


/*
 * A streamed answer as its events arrive (text/event-stream): the text so
 * far, and what the closing events said.
 */
typedef struct {
    char                  *text;
    size_t                 len;
    size_t                 size;
    long                   input_tokens;    /* -1: not reported */
    long                   output_tokens;
    int                    truncated;       /* cut at llm_max_tokens */
    int                    done;            /* the provider's end seen */
    int                    failed;          /* an error event, or memory */
    const ragnx_prompt_t  *prompt;          /* its delta sink */
} ragnx_llm_stream_t;

typedef struct {
    const char          *path;        /* appended to llm_base_url */
    struct curl_slist *(*headers)(struct curl_slist *h);
    void               (*request)(const ragnx_prompt_t *prompt,
                                  ragnx_llm_body_t *body);
    int                (*response)(json_t *res, ragnx_answer_t *ans);
    /* one server-sent event of a streamed answer: its name and data */
    void               (*event)(ragnx_llm_stream_t *s, const char *name,
                                json_t *data);
} ragnx_llm_provider_t;


extern const ragnx_llm_provider_t  ragnx_llm_anthropic;
extern const ragnx_llm_provider_t  ragnx_llm_openai;
extern const char                  ragnx_llm_system[];


void ragnx_llm_messages(const ragnx_prompt_t *prompt, int with_system,
    ragnx_llm_body_t *body);
void ragnx_llm_head(ragnx_llm_body_t *body);
void ragnx_llm_raw(ragnx_llm_body_t *body, const char *text);
void ragnx_llm_string(ragnx_llm_body_t *body, const char *s);
void ragnx_llm_text(ragnx_llm_stream_t *s, const char *text, size_t len);


#endif /* RAGNX_LLM_H */
