
/*
 * ragnx: fuzz target of the JSON Schema checker
 * (ngx_module/ngx_http_ragnx_schema.c) with the shipped schemas, every
 * .json file in schemas/, and t/fuzz/schemas/ (every keyword the compiler
 * knows, as t/validate.t uses them).  They are compiled once, as nginx -t
 * would; each input is parsed as the validate module parses a body, then
 * checked against every schema.  A check passes, or fails with details;
 * it never errs.  nginx's pools and formatting come from ngx_shim.c.
 */


#include <glob.h>
#include <ngx_config.h>
#include <ngx_core.h>

#include "ngx_http_ragnx_schema.h"


#define SCHEMAS_MAX 16


static ngx_log_t                log;
static ngx_conf_t               conf;
static ngx_http_ragnx_schema_t *schemas[SCHEMAS_MAX];
static ngx_uint_t               nschemas;


int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
    size_t     i;
    glob_t     g;
    ngx_str_t *name;

    log.log_level = NGX_LOG_ERR;
    conf.pool = ngx_create_pool(1024, &log);
    conf.temp_pool = ngx_create_pool(1024, &log);
    conf.log = &log;

    if (conf.pool == NULL || conf.temp_pool == NULL
        || glob(RAGNX_ROOT "/schemas/*.json", 0, NULL, &g)
        || glob(RAGNX_ROOT "/t/fuzz/schemas/*.json", GLOB_APPEND, NULL, &g)) {
        abort();
    }

    for (i = 0; i < g.gl_pathc && nschemas < SCHEMAS_MAX; i++) {
        name = ngx_palloc(conf.pool, sizeof(ngx_str_t));
        name->len = strlen(g.gl_pathv[i]);
        name->data = ngx_pnalloc(conf.pool, name->len + 1);
        memcpy(name->data, g.gl_pathv[i], name->len + 1);

        schemas[nschemas] = ngx_http_ragnx_schema_compile(&conf, name);
        if (schemas[nschemas++] == NULL) {
            abort(); /* a shipped schema that does not compile */
        }
    }

    globfree(&g);

    return 0;
}


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char       *text;
    json_t     *body, *details;
    ngx_int_t   rc;
    ngx_uint_t  i;
    ngx_pool_t *pool;

    body = json_loadb((const char *) data, size,
                      JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, NULL);
    if (body == NULL) {
        return 0;
    }

    for (i = 0; i < nschemas; i++) {
        pool = ngx_create_pool(1024, &log);
        if (pool == NULL) {
            abort();
        }

        details = NULL;
        rc = ngx_http_ragnx_schema_check(schemas[i], body, pool, &log,
                                         &details);

        if (rc == NGX_DECLINED) {
            text = json_dumps(details, 0);
            if (!json_is_object(details) || json_object_size(details) == 0
                || text == NULL) {
                abort(); /* a failure says where and why */
            }

            free(text);

        } else if (rc != NGX_OK || details != NULL) {
            abort();
        }

        json_decref(details);
        ngx_destroy_pool(pool);
    }

    json_decref(body);

    return 0;
}
