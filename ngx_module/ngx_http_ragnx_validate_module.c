
/*
 * ragnx validate: placeholder module, filled in by its own change.
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ngx_http_ragnx.h"


static ngx_http_module_t  ngx_http_ragnx_validate_module_ctx = {
    NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL
};


ngx_module_t  ngx_http_ragnx_validate_module = {
    NGX_MODULE_V1,
    &ngx_http_ragnx_validate_module_ctx,
    NULL,
    NGX_HTTP_MODULE,
    NULL, NULL, NULL, NULL, NULL, NULL, NULL,
    NGX_MODULE_V1_PADDING
};


json_t *
ngx_http_ragnx_validated_body(ngx_http_request_t *r)
{
    return NULL;
}
