
/*
 * ragnx worker pool: what an HTTP LLM provider supplies to ragnx_llm.c.
 */


#ifndef RAGNX_LLM_H
#define RAGNX_LLM_H


#include <curl/curl.h>
#include <jansson.h>

#include "ragnx_worker.h"


typedef struct {
    const char          *path;        /* appended to llm_base_url */
    struct curl_slist *(*headers)(struct curl_slist *h);
    json_t            *(*request)(const ragnx_prompt_t *prompt);
    int                (*response)(json_t *res, ragnx_answer_t *ans);
} ragnx_llm_provider_t;


extern const ragnx_llm_provider_t  ragnx_llm_anthropic;
extern const ragnx_llm_provider_t  ragnx_llm_openai;
extern const char                  ragnx_llm_system[];


json_t *ragnx_llm_messages(const ragnx_prompt_t *prompt, int with_system);


#endif /* RAGNX_LLM_H */
