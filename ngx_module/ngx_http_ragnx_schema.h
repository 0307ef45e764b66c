
/*
 * ragnx schema: the JSON Schema subset request bodies are checked against.
 * A schema file is compiled once, at configuration time, into a tree the
 * checker walks directly; nothing is interpreted per request.
 */


#ifndef _NGX_HTTP_RAGNX_SCHEMA_H_INCLUDED_
#define _NGX_HTTP_RAGNX_SCHEMA_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>
#include <jansson.h>


/* the "details" key of problems with the document itself */
#define NGX_HTTP_RAGNX_SCHEMA_ROOT        "_root"

/* a body cannot make the error response grow without bound */
#define NGX_HTTP_RAGNX_SCHEMA_MAX_ERRORS  100


typedef struct ngx_http_ragnx_schema_s  ngx_http_ragnx_schema_t;


/*
 * Compile the schema file "name" (a full, NUL-terminated path) into
 * cf->pool.  Logs the reason at NGX_LOG_EMERG and returns NULL when the
 * file cannot be read, is not JSON, or uses a keyword we do not support.
 */
ngx_http_ragnx_schema_t *ngx_http_ragnx_schema_compile(ngx_conf_t *cf,
    ngx_str_t *name);

/*
 * Check "value" against "schema", collecting every failure.  Returns
 * NGX_OK when it is valid; NGX_DECLINED when it is not, with *details set
 * to a new {"<field path>": ["<message>", ...]} object the caller owns;
 * NGX_ERROR when memory runs out.  Paths are only built on failure, from
 * "pool"; "log" hears about regex engine errors.
 */
ngx_int_t ngx_http_ragnx_schema_check(ngx_http_ragnx_schema_t *schema,
    json_t *value, ngx_pool_t *pool, ngx_log_t *log, json_t **details);


#endif /* _NGX_HTTP_RAGNX_SCHEMA_H_INCLUDED_ */
