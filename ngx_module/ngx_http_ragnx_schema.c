
/*
 * ragnx schema: compiles a JSON Schema file (the subset OpenAPI uses) into
 * a tree at configuration time, and checks parsed request bodies against
 * that tree, collecting every failure as a readable message per field path.
 */


#include <ngx_config.h>
#include <ngx_core.h>

#include "ngx_http_ragnx_schema.h"
#include "ragnx_rpc.h"
#include "ragnx_utf8.h"


#define NGX_HTTP_RAGNX_SCHEMA_NULL      0x0001
#define NGX_HTTP_RAGNX_SCHEMA_BOOLEAN   0x0002
#define NGX_HTTP_RAGNX_SCHEMA_OBJECT    0x0004
#define NGX_HTTP_RAGNX_SCHEMA_ARRAY     0x0008
#define NGX_HTTP_RAGNX_SCHEMA_NUMBER    0x0010
#define NGX_HTTP_RAGNX_SCHEMA_INTEGER   0x0020
#define NGX_HTTP_RAGNX_SCHEMA_STRING    0x0040

/* additionalProperties */
#define NGX_HTTP_RAGNX_SCHEMA_ALLOW     0
#define NGX_HTTP_RAGNX_SCHEMA_DENY      1
#define NGX_HTTP_RAGNX_SCHEMA_CHECK     2

#define NGX_HTTP_RAGNX_SCHEMA_UUID      1
#define NGX_HTTP_RAGNX_SCHEMA_EMAIL     2

/* reals within this range are exact enough to test for integers */
#define NGX_HTTP_RAGNX_SCHEMA_INT_MAX   9007199254740992.0


typedef struct {
    ngx_str_t                      name;
    ngx_http_ragnx_schema_t       *schema;     /* NULL: only in "required" */
    ngx_uint_t                     required;   /* unsigned  required:1; */
} ngx_http_ragnx_schema_prop_t;


/* a numeric keyword: minLength, maxItems, minimum... */
typedef struct {
    double                         value;
    char                          *message;
} ngx_http_ragnx_schema_limit_t;


struct ngx_http_ragnx_schema_s {
    ngx_uint_t                     types;      /* 0: any type */
    char                          *type_message;

    json_t                        *enum_values;
    char                          *enum_message;
    json_t                        *const_value;
    char                          *const_message;

    ngx_array_t                    props;      /* in schema order */
    ngx_http_ragnx_schema_prop_t **sorted;     /* by name, for lookups */
    ngx_uint_t                     additional;
    ngx_http_ragnx_schema_t       *additional_schema;

    ngx_http_ragnx_schema_t       *items;
    ngx_http_ragnx_schema_limit_t *min_items;
    ngx_http_ragnx_schema_limit_t *max_items;

    ngx_http_ragnx_schema_limit_t *min_length;
    ngx_http_ragnx_schema_limit_t *max_length;
#if (NGX_PCRE)
    ngx_regex_t                   *pattern;
#endif
    ngx_uint_t                     format;
    char                          *format_message;

    ngx_http_ragnx_schema_limit_t *minimum;
    ngx_http_ragnx_schema_limit_t *maximum;
    ngx_http_ragnx_schema_limit_t *exclusive_minimum;
    ngx_http_ragnx_schema_limit_t *exclusive_maximum;

    unsigned                       never:1;    /* the schema "false" */
};


typedef struct {
    ngx_conf_t                    *cf;
    ngx_str_t                     *file;
    ngx_str_t                      pointer;    /* "#/properties/query" */
} ngx_http_ragnx_schema_compile_t;


typedef struct ngx_http_ragnx_schema_keyword_s
    ngx_http_ragnx_schema_keyword_t;

typedef char *(*ngx_http_ragnx_schema_set_pt)(
    ngx_http_ragnx_schema_compile_t *sc, ngx_http_ragnx_schema_t *s,
    json_t *value, ngx_http_ragnx_schema_keyword_t *kw);

struct ngx_http_ragnx_schema_keyword_s {
    ngx_str_t                      name;
    ngx_http_ragnx_schema_set_pt   set;        /* NULL: an annotation */
    ngx_uint_t                     offset;
    char                          *post;
};


typedef struct {
    ngx_str_t                      name;
    ngx_uint_t                     type;
    char                          *text;
} ngx_http_ragnx_schema_type_t;


typedef struct ngx_http_ragnx_schema_path_s  ngx_http_ragnx_schema_path_t;

/* a field path, kept on the C stack while the checker descends */
struct ngx_http_ragnx_schema_path_s {
    ngx_http_ragnx_schema_path_t  *parent;
    const char                    *key;        /* NULL: an array index */
    size_t                         len;        /* key length, or the index */
};


typedef struct {
    ngx_pool_t                    *pool;
    ngx_log_t                     *log;
    json_t                        *details;
    ngx_uint_t                     errors;
} ngx_http_ragnx_schema_ctx_t;


static ngx_http_ragnx_schema_t *ngx_http_ragnx_schema_node(
    ngx_http_ragnx_schema_compile_t *sc, json_t *json);
static ngx_http_ragnx_schema_t *ngx_http_ragnx_schema_child(
    ngx_http_ragnx_schema_compile_t *sc, json_t *json, char *keyword,
    ngx_str_t *name);
static ngx_http_ragnx_schema_keyword_t *ngx_http_ragnx_schema_keyword(
    const char *name);
static void ngx_http_ragnx_schema_cleanup(void *data);
static ngx_int_t ngx_http_ragnx_schema_text(ngx_pool_t *pool, json_t *value,
    ngx_str_t *text);
static ngx_int_t ngx_http_ragnx_schema_cmp(const u_char *a, size_t alen,
    const u_char *b, size_t blen);
static ngx_int_t ngx_http_ragnx_schema_cmp_props(const void *one,
    const void *two);

static char *ngx_http_ragnx_schema_type(ngx_http_ragnx_schema_compile_t *sc,
    ngx_http_ragnx_schema_t *s, json_t *value,
    ngx_http_ragnx_schema_keyword_t *kw);
static char *ngx_http_ragnx_schema_enum(ngx_http_ragnx_schema_compile_t *sc,
    ngx_http_ragnx_schema_t *s, json_t *value,
    ngx_http_ragnx_schema_keyword_t *kw);
static char *ngx_http_ragnx_schema_const(ngx_http_ragnx_schema_compile_t *sc,
    ngx_http_ragnx_schema_t *s, json_t *value,
    ngx_http_ragnx_schema_keyword_t *kw);
static char *ngx_http_ragnx_schema_properties(
    ngx_http_ragnx_schema_compile_t *sc, ngx_http_ragnx_schema_t *s,
    json_t *value, ngx_http_ragnx_schema_keyword_t *kw);
static char *ngx_http_ragnx_schema_required(
    ngx_http_ragnx_schema_compile_t *sc, ngx_http_ragnx_schema_t *s,
    json_t *value, ngx_http_ragnx_schema_keyword_t *kw);
static char *ngx_http_ragnx_schema_additional(
    ngx_http_ragnx_schema_compile_t *sc, ngx_http_ragnx_schema_t *s,
    json_t *value, ngx_http_ragnx_schema_keyword_t *kw);
static char *ngx_http_ragnx_schema_items(ngx_http_ragnx_schema_compile_t *sc,
    ngx_http_ragnx_schema_t *s, json_t *value,
    ngx_http_ragnx_schema_keyword_t *kw);
static char *ngx_http_ragnx_schema_count(ngx_http_ragnx_schema_compile_t *sc,
    ngx_http_ragnx_schema_t *s, json_t *value,
    ngx_http_ragnx_schema_keyword_t *kw);
static char *ngx_http_ragnx_schema_bound(ngx_http_ragnx_schema_compile_t *sc,
    ngx_http_ragnx_schema_t *s, json_t *value,
    ngx_http_ragnx_schema_keyword_t *kw);
static char *ngx_http_ragnx_schema_pattern(
    ngx_http_ragnx_schema_compile_t *sc, ngx_http_ragnx_schema_t *s,
    json_t *value, ngx_http_ragnx_schema_keyword_t *kw);
static char *ngx_http_ragnx_schema_format(ngx_http_ragnx_schema_compile_t *sc,
    ngx_http_ragnx_schema_t *s, json_t *value,
    ngx_http_ragnx_schema_keyword_t *kw);

static ngx_int_t ngx_http_ragnx_schema_walk(ngx_http_ragnx_schema_ctx_t *ctx,
    ngx_http_ragnx_schema_t *s, json_t *value,
    ngx_http_ragnx_schema_path_t *path);
static ngx_int_t ngx_http_ragnx_schema_walk_object(
    ngx_http_ragnx_schema_ctx_t *ctx, ngx_http_ragnx_schema_t *s,
    json_t *value, ngx_http_ragnx_schema_path_t *path);
static ngx_int_t ngx_http_ragnx_schema_walk_array(
    ngx_http_ragnx_schema_ctx_t *ctx, ngx_http_ragnx_schema_t *s,
    json_t *value, ngx_http_ragnx_schema_path_t *path);
static ngx_int_t ngx_http_ragnx_schema_walk_string(
    ngx_http_ragnx_schema_ctx_t *ctx, ngx_http_ragnx_schema_t *s,
    json_t *value, ngx_http_ragnx_schema_path_t *path);
static ngx_int_t ngx_http_ragnx_schema_walk_number(
    ngx_http_ragnx_schema_ctx_t *ctx, ngx_http_ragnx_schema_t *s,
    json_t *value, ngx_http_ragnx_schema_path_t *path);
static ngx_int_t ngx_http_ragnx_schema_fail(ngx_http_ragnx_schema_ctx_t *ctx,
    ngx_http_ragnx_schema_path_t *path, const char *message);
static ngx_uint_t ngx_http_ragnx_schema_type_of(json_t *value);
static ngx_uint_t ngx_http_ragnx_schema_equal(json_t *a, json_t *b);
static ngx_http_ragnx_schema_prop_t *ngx_http_ragnx_schema_lookup(
    ngx_http_ragnx_schema_t *s, const char *key, size_t len);
static ngx_uint_t ngx_http_ragnx_schema_uuid(u_char *p, size_t len);


/*
 * Keywords are applied in this order, so "required" sees "properties" and
 * "maxLength" sees "minLength", whatever order the file lists them in.
 */

static ngx_http_ragnx_schema_keyword_t  ngx_http_ragnx_schema_keywords[] = {

    { ngx_string("type"),
      ngx_http_ragnx_schema_type,
      0,
      NULL },

    { ngx_string("enum"),
      ngx_http_ragnx_schema_enum,
      0,
      NULL },

    { ngx_string("const"),
      ngx_http_ragnx_schema_const,
      0,
      NULL },

    { ngx_string("properties"),
      ngx_http_ragnx_schema_properties,
      0,
      NULL },

    { ngx_string("required"),
      ngx_http_ragnx_schema_required,
      0,
      NULL },

    { ngx_string("additionalProperties"),
      ngx_http_ragnx_schema_additional,
      0,
      NULL },

    { ngx_string("items"),
      ngx_http_ragnx_schema_items,
      0,
      NULL },

    { ngx_string("minItems"),
      ngx_http_ragnx_schema_count,
      offsetof(ngx_http_ragnx_schema_t, min_items),
      "must have at least %uL item%s%Z" },

    { ngx_string("maxItems"),
      ngx_http_ragnx_schema_count,
      offsetof(ngx_http_ragnx_schema_t, max_items),
      "must have at most %uL item%s%Z" },

    { ngx_string("minLength"),
      ngx_http_ragnx_schema_count,
      offsetof(ngx_http_ragnx_schema_t, min_length),
      "must be at least %uL character%s%Z" },

    { ngx_string("maxLength"),
      ngx_http_ragnx_schema_count,
      offsetof(ngx_http_ragnx_schema_t, max_length),
      "must be at most %uL character%s%Z" },

    { ngx_string("pattern"),
      ngx_http_ragnx_schema_pattern,
      0,
      NULL },

    { ngx_string("format"),
      ngx_http_ragnx_schema_format,
      0,
      NULL },

    { ngx_string("minimum"),
      ngx_http_ragnx_schema_bound,
      offsetof(ngx_http_ragnx_schema_t, minimum),
      ">=" },

    { ngx_string("maximum"),
      ngx_http_ragnx_schema_bound,
      offsetof(ngx_http_ragnx_schema_t, maximum),
      "<=" },

    { ngx_string("exclusiveMinimum"),
      ngx_http_ragnx_schema_bound,
      offsetof(ngx_http_ragnx_schema_t, exclusive_minimum),
      ">" },

    { ngx_string("exclusiveMaximum"),
      ngx_http_ragnx_schema_bound,
      offsetof(ngx_http_ragnx_schema_t, exclusive_maximum),
      "<" },

    /* annotations: accepted and ignored */

    { ngx_string("$schema"), NULL, 0, NULL },
    { ngx_string("$id"), NULL, 0, NULL },
    { ngx_string("$comment"), NULL, 0, NULL },
    { ngx_string("title"), NULL, 0, NULL },
    { ngx_string("description"), NULL, 0, NULL },
    { ngx_string("default"), NULL, 0, NULL },
    { ngx_string("examples"), NULL, 0, NULL },

    { ngx_null_string, NULL, 0, NULL }
};


static ngx_http_ragnx_schema_type_t  ngx_http_ragnx_schema_types[] = {
    { ngx_string("object"), NGX_HTTP_RAGNX_SCHEMA_OBJECT, "an object" },
    { ngx_string("array"), NGX_HTTP_RAGNX_SCHEMA_ARRAY, "an array" },
    { ngx_string("string"), NGX_HTTP_RAGNX_SCHEMA_STRING, "a string" },
    { ngx_string("number"), NGX_HTTP_RAGNX_SCHEMA_NUMBER, "a number" },
    { ngx_string("integer"), NGX_HTTP_RAGNX_SCHEMA_INTEGER, "an integer" },
    { ngx_string("boolean"), NGX_HTTP_RAGNX_SCHEMA_BOOLEAN, "a boolean" },
    { ngx_string("null"), NGX_HTTP_RAGNX_SCHEMA_NULL, "null" },
    { ngx_null_string, 0, NULL }
};


ngx_http_ragnx_schema_t *
ngx_http_ragnx_schema_compile(ngx_conf_t *cf, ngx_str_t *name)
{
    json_t                           *doc;
    ngx_fd_t                          fd;
    json_error_t                      err;
    ngx_pool_cleanup_t               *cln;
    ngx_http_ragnx_schema_compile_t   sc;

    fd = ngx_open_file(name->data, NGX_FILE_RDONLY, NGX_FILE_OPEN, 0);

    if (fd == NGX_INVALID_FILE) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, ngx_errno,
                           ngx_open_file_n " schema \"%s\" failed",
                           name->data);
        return NULL;
    }

    doc = json_loadfd(fd, JSON_REJECT_DUPLICATES, &err);

    if (ngx_close_file(fd) == NGX_FILE_ERROR) {
        ngx_conf_log_error(NGX_LOG_ALERT, cf, ngx_errno,
                           ngx_close_file_n " schema \"%s\" failed",
                           name->data);
    }

    if (doc == NULL) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid JSON in schema \"%s\": %s "
                           "at line %d, column %d",
                           name->data, err.text, err.line, err.column);
        return NULL;
    }

    /* enum and const values, and the messages, point into the document */

    cln = ngx_pool_cleanup_add(cf->pool, 0);
    if (cln == NULL) {
        json_decref(doc);
        return NULL;
    }

    cln->handler = ngx_http_ragnx_schema_cleanup;
    cln->data = doc;

    sc.cf = cf;
    sc.file = name;
    ngx_str_set(&sc.pointer, "#");

    return ngx_http_ragnx_schema_node(&sc, doc);
}


static void
ngx_http_ragnx_schema_cleanup(void *data)
{
    json_t  *doc = data;

    json_decref(doc);
}


static ngx_http_ragnx_schema_t *
ngx_http_ragnx_schema_node(ngx_http_ragnx_schema_compile_t *sc, json_t *json)
{
    char                             *rv;
    void                             *iter;
    json_t                           *value;
    ngx_uint_t                        i;
    const char                       *key;
    ngx_http_ragnx_schema_t          *s;
    ngx_http_ragnx_schema_prop_t     *prop;
    ngx_http_ragnx_schema_keyword_t  *kw;

    s = ngx_pcalloc(sc->cf->pool, sizeof(ngx_http_ragnx_schema_t));
    if (s == NULL) {
        return NULL;
    }

    if (json_is_boolean(json)) {
        s->never = json_is_false(json);
        return s;
    }

    if (!json_is_object(json)) {
        ngx_conf_log_error(NGX_LOG_EMERG, sc->cf, 0,
                           "schema at \"%V\" in \"%V\" is not an object "
                           "or a boolean", &sc->pointer, sc->file);
        return NULL;
    }

    for (iter = json_object_iter(json);
         iter;
         iter = json_object_iter_next(json, iter))
    {
        key = json_object_iter_key(iter);

        if (ngx_http_ragnx_schema_keyword(key) == NULL) {
            ngx_conf_log_error(NGX_LOG_EMERG, sc->cf, 0,
                               "unsupported keyword \"%s\" at \"%V\" "
                               "in schema \"%V\"",
                               key, &sc->pointer, sc->file);
            return NULL;
        }
    }

    for (kw = ngx_http_ragnx_schema_keywords; kw->name.len; kw++) {

        if (kw->set == NULL) {
            continue;
        }

        value = json_object_get(json, (char *) kw->name.data);
        if (value == NULL) {
            continue;
        }

        rv = kw->set(sc, s, value, kw);

        if (rv == NGX_CONF_OK) {
            continue;
        }

        if (rv != NGX_CONF_ERROR) {
            ngx_conf_log_error(NGX_LOG_EMERG, sc->cf, 0,
                               "\"%V\" %s at \"%V\" in schema \"%V\"",
                               &kw->name, rv, &sc->pointer, sc->file);
        }

        return NULL;
    }

    if (s->props.nelts) {
        s->sorted = ngx_palloc(sc->cf->pool,
                               s->props.nelts * sizeof(void *));
        if (s->sorted == NULL) {
            return NULL;
        }

        prop = s->props.elts;

        for (i = 0; i < s->props.nelts; i++) {
            s->sorted[i] = &prop[i];
        }

        ngx_sort(s->sorted, s->props.nelts, sizeof(void *),
                 ngx_http_ragnx_schema_cmp_props);
    }

    return s;
}


static ngx_http_ragnx_schema_t *
ngx_http_ragnx_schema_child(ngx_http_ragnx_schema_compile_t *sc, json_t *json,
    char *keyword, ngx_str_t *name)
{
    u_char                   *p;
    size_t                    len;
    ngx_str_t                 saved;
    ngx_http_ragnx_schema_t  *s;

    saved = sc->pointer;

    len = saved.len + 1 + ngx_strlen(keyword) + (name ? 1 + name->len : 0);

    p = ngx_pnalloc(sc->cf->temp_pool, len);
    if (p == NULL) {
        return NULL;
    }

    sc->pointer.data = p;

    p = ngx_sprintf(p, "%V/%s", &saved, keyword);

    if (name) {
        p = ngx_sprintf(p, "/%V", name);
    }

    sc->pointer.len = p - sc->pointer.data;

    s = ngx_http_ragnx_schema_node(sc, json);

    sc->pointer = saved;

    return s;
}


static ngx_http_ragnx_schema_keyword_t *
ngx_http_ragnx_schema_keyword(const char *name)
{
    ngx_http_ragnx_schema_keyword_t  *kw;

    for (kw = ngx_http_ragnx_schema_keywords; kw->name.len; kw++) {
        if (ngx_strcmp(kw->name.data, name) == 0) {
            return kw;
        }
    }

    return NULL;
}


/* the text a message shows for a value: strings bare, the rest as JSON */

static ngx_int_t
ngx_http_ragnx_schema_text(ngx_pool_t *pool, json_t *value, ngx_str_t *text)
{
    char  *s;

    if (json_is_string(value)) {
        text->data = (u_char *) json_string_value(value);
        text->len = json_string_length(value);
        return NGX_OK;
    }

    s = json_dumps(value, JSON_ENCODE_ANY|JSON_COMPACT
                          |JSON_REAL_PRECISION(15));
    if (s == NULL) {
        return NGX_ERROR;
    }

    text->len = ngx_strlen(s);
    text->data = ngx_pnalloc(pool, text->len);

    if (text->data) {
        ngx_memcpy(text->data, s, text->len);
    }

    free(s);

    return text->data ? NGX_OK : NGX_ERROR;
}


static ngx_int_t
ngx_http_ragnx_schema_cmp(const u_char *a, size_t alen, const u_char *b,
    size_t blen)
{
    ngx_int_t  rc;

    rc = ngx_memcmp(a, b, ngx_min(alen, blen));

    if (rc != 0) {
        return rc;
    }

    return (alen < blen) ? -1 : (alen > blen);
}


static ngx_int_t
ngx_http_ragnx_schema_cmp_props(const void *one, const void *two)
{
    ngx_http_ragnx_schema_prop_t  *a, *b;

    a = *(ngx_http_ragnx_schema_prop_t **) one;
    b = *(ngx_http_ragnx_schema_prop_t **) two;

    return ngx_http_ragnx_schema_cmp(a->name.data, a->name.len,
                                     b->name.data, b->name.len);
}


static char *
ngx_http_ragnx_schema_type(ngx_http_ragnx_schema_compile_t *sc,
    ngx_http_ragnx_schema_t *s, json_t *value,
    ngx_http_ragnx_schema_keyword_t *kw)
{
    u_char                        *p;
    size_t                         i, n, len;
    json_t                        *name;
    ngx_http_ragnx_schema_type_t  *t, *found[8];

    if (json_is_string(value)) {
        n = 1;

    } else if (json_is_array(value)
               && json_array_size(value) > 0
               && json_array_size(value) < 8)
    {
        n = json_array_size(value);

    } else {
        return "must be a type name or an array of type names";
    }

    len = sizeof("must be ") - 1;

    for (i = 0; i < n; i++) {
        name = json_is_string(value) ? value : json_array_get(value, i);

        if (!json_is_string(name)) {
            return "must be a type name or an array of type names";
        }

        for (t = ngx_http_ragnx_schema_types; t->name.len; t++) {
            if (ngx_strcmp(t->name.data, json_string_value(name)) == 0) {
                break;
            }
        }

        if (t->name.len == 0) {
            ngx_conf_log_error(NGX_LOG_EMERG, sc->cf, 0,
                               "unknown type \"%s\" at \"%V\" in schema "
                               "\"%V\"", json_string_value(name),
                               &sc->pointer, sc->file);
            return NGX_CONF_ERROR;
        }

        if (s->types & t->type) {
            return "lists a type twice";
        }

        s->types |= t->type;
        found[i] = t;
        len += ngx_strlen(t->text) + sizeof(", ") - 1;
    }

    /* "must be a string", "must be a string or null", "a, b or c" */

    p = ngx_pnalloc(sc->cf->pool, len + 1);
    if (p == NULL) {
        return NGX_CONF_ERROR;
    }

    s->type_message = (char *) p;

    p = ngx_cpymem(p, "must be ", sizeof("must be ") - 1);

    for (i = 0; i < n; i++) {
        if (i > 0) {
            p = (i == n - 1) ? ngx_cpymem(p, " or ", 4)
                             : ngx_cpymem(p, ", ", 2);
        }

        p = ngx_cpymem(p, found[i]->text, ngx_strlen(found[i]->text));
    }

    *p = '\0';

    return NGX_CONF_OK;
}


static char *
ngx_http_ragnx_schema_enum(ngx_http_ragnx_schema_compile_t *sc,
    ngx_http_ragnx_schema_t *s, json_t *value,
    ngx_http_ragnx_schema_keyword_t *kw)
{
    u_char     *p;
    size_t      i, n, len;
    ngx_str_t  *text;

    n = json_is_array(value) ? json_array_size(value) : 0;

    if (n == 0) {
        return "must be a non-empty array";
    }

    text = ngx_palloc(sc->cf->temp_pool, n * sizeof(ngx_str_t));
    if (text == NULL) {
        return NGX_CONF_ERROR;
    }

    len = sizeof("must be one of: ") - 1;

    for (i = 0; i < n; i++) {
        if (ngx_http_ragnx_schema_text(sc->cf->temp_pool,
                                       json_array_get(value, i), &text[i])
            != NGX_OK)
        {
            return NGX_CONF_ERROR;
        }

        len += text[i].len + sizeof(", ") - 1;
    }

    p = ngx_pnalloc(sc->cf->pool, len + 1);
    if (p == NULL) {
        return NGX_CONF_ERROR;
    }

    s->enum_message = (char *) p;

    p = ngx_cpymem(p, "must be one of: ", sizeof("must be one of: ") - 1);

    for (i = 0; i < n; i++) {
        if (i > 0) {
            p = ngx_cpymem(p, ", ", 2);
        }

        p = ngx_cpymem(p, text[i].data, text[i].len);
    }

    *p = '\0';

    s->enum_values = value;

    return NGX_CONF_OK;
}


static char *
ngx_http_ragnx_schema_const(ngx_http_ragnx_schema_compile_t *sc,
    ngx_http_ragnx_schema_t *s, json_t *value,
    ngx_http_ragnx_schema_keyword_t *kw)
{
    u_char     *p;
    ngx_str_t   text;

    if (ngx_http_ragnx_schema_text(sc->cf->temp_pool, value, &text)
        != NGX_OK)
    {
        return NGX_CONF_ERROR;
    }

    p = ngx_pnalloc(sc->cf->pool, sizeof("must be equal to ") + text.len);
    if (p == NULL) {
        return NGX_CONF_ERROR;
    }

    ngx_sprintf(p, "must be equal to %V%Z", &text);

    s->const_message = (char *) p;
    s->const_value = value;

    return NGX_CONF_OK;
}


static char *
ngx_http_ragnx_schema_properties(ngx_http_ragnx_schema_compile_t *sc,
    ngx_http_ragnx_schema_t *s, json_t *value,
    ngx_http_ragnx_schema_keyword_t *kw)
{
    void                          *iter;
    ngx_str_t                      name;
    ngx_http_ragnx_schema_prop_t  *prop;

    if (!json_is_object(value)) {
        return "must be an object";
    }

    if (ngx_array_init(&s->props, sc->cf->pool, json_object_size(value) + 1,
                       sizeof(ngx_http_ragnx_schema_prop_t))
        != NGX_OK)
    {
        return NGX_CONF_ERROR;
    }

    for (iter = json_object_iter(value);
         iter;
         iter = json_object_iter_next(value, iter))
    {
        prop = ngx_array_push(&s->props);
        if (prop == NULL) {
            return NGX_CONF_ERROR;
        }

        name.len = json_object_iter_key_len(iter);
        name.data = ngx_pnalloc(sc->cf->pool, name.len);
        if (name.data == NULL) {
            return NGX_CONF_ERROR;
        }

        ngx_memcpy(name.data, json_object_iter_key(iter), name.len);

        prop->name = name;
        prop->required = 0;
        prop->schema = ngx_http_ragnx_schema_child(sc,
                                                 json_object_iter_value(iter),
                                                 "properties", &name);
        if (prop->schema == NULL) {
            return NGX_CONF_ERROR;
        }
    }

    return NGX_CONF_OK;
}


static char *
ngx_http_ragnx_schema_required(ngx_http_ragnx_schema_compile_t *sc,
    ngx_http_ragnx_schema_t *s, json_t *value,
    ngx_http_ragnx_schema_keyword_t *kw)
{
    size_t                         i, len;
    json_t                        *name;
    ngx_uint_t                     j;
    const char                    *key;
    ngx_http_ragnx_schema_prop_t  *prop;

    if (!json_is_array(value)) {
        return "must be an array of property names";
    }

    if (s->props.elts == NULL
        && ngx_array_init(&s->props, sc->cf->pool,
                          json_array_size(value) + 1,
                          sizeof(ngx_http_ragnx_schema_prop_t))
           != NGX_OK)
    {
        return NGX_CONF_ERROR;
    }

    json_array_foreach(value, i, name) {

        if (!json_is_string(name)) {
            return "must be an array of property names";
        }

        key = json_string_value(name);
        len = json_string_length(name);

        prop = s->props.elts;

        for (j = 0; j < s->props.nelts; j++) {
            if (ngx_http_ragnx_schema_cmp(prop[j].name.data, prop[j].name.len,
                                          (u_char *) key, len)
                == 0)
            {
                break;
            }
        }

        if (j < s->props.nelts) {
            prop = &prop[j];

            if (prop->required) {
                return "lists a property twice";
            }

        } else {
            /* required, but its value may be anything */

            prop = ngx_array_push(&s->props);
            if (prop == NULL) {
                return NGX_CONF_ERROR;
            }

            prop->name.len = len;
            prop->name.data = ngx_pnalloc(sc->cf->pool, len);
            if (prop->name.data == NULL) {
                return NGX_CONF_ERROR;
            }

            ngx_memcpy(prop->name.data, key, len);
            prop->schema = NULL;
        }

        prop->required = 1;
    }

    return NGX_CONF_OK;
}


static char *
ngx_http_ragnx_schema_additional(ngx_http_ragnx_schema_compile_t *sc,
    ngx_http_ragnx_schema_t *s, json_t *value,
    ngx_http_ragnx_schema_keyword_t *kw)
{
    if (json_is_boolean(value)) {
        s->additional = json_is_true(value) ? NGX_HTTP_RAGNX_SCHEMA_ALLOW
                                            : NGX_HTTP_RAGNX_SCHEMA_DENY;
        return NGX_CONF_OK;
    }

    if (!json_is_object(value)) {
        return "must be a boolean or a schema";
    }

    s->additional_schema = ngx_http_ragnx_schema_child(sc, value,
                                                  "additionalProperties",
                                                  NULL);
    if (s->additional_schema == NULL) {
        return NGX_CONF_ERROR;
    }

    s->additional = NGX_HTTP_RAGNX_SCHEMA_CHECK;

    return NGX_CONF_OK;
}


static char *
ngx_http_ragnx_schema_items(ngx_http_ragnx_schema_compile_t *sc,
    ngx_http_ragnx_schema_t *s, json_t *value,
    ngx_http_ragnx_schema_keyword_t *kw)
{
    if (!json_is_object(value) && !json_is_boolean(value)) {
        return "must be a schema (the tuple form is not supported)";
    }

    s->items = ngx_http_ragnx_schema_child(sc, value, "items", NULL);
    if (s->items == NULL) {
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


static char *
ngx_http_ragnx_schema_count(ngx_http_ragnx_schema_compile_t *sc,
    ngx_http_ragnx_schema_t *s, json_t *value,
    ngx_http_ragnx_schema_keyword_t *kw)
{
    char                            *p;
    double                           n;
    ngx_http_ragnx_schema_limit_t   *limit, **field;

    if (!(ngx_http_ragnx_schema_type_of(value) & NGX_HTTP_RAGNX_SCHEMA_INTEGER)
        || json_number_value(value) < 0)
    {
        return "must be a non-negative integer";
    }

    n = json_number_value(value);

    limit = ngx_palloc(sc->cf->pool, sizeof(ngx_http_ragnx_schema_limit_t));
    if (limit == NULL) {
        return NGX_CONF_ERROR;
    }

    p = ngx_pnalloc(sc->cf->pool, ngx_strlen(kw->post) + NGX_INT64_LEN);
    if (p == NULL) {
        return NGX_CONF_ERROR;
    }

    ngx_sprintf((u_char *) p, kw->post, (uint64_t) n, (n == 1) ? "" : "s");

    limit->value = n;
    limit->message = p;

    field = (ngx_http_ragnx_schema_limit_t **) ((char *) s + kw->offset);
    *field = limit;

    if ((s->min_length && s->max_length
         && s->min_length->value > s->max_length->value)
        || (s->min_items && s->max_items
            && s->min_items->value > s->max_items->value))
    {
        return "is less than its minimum";
    }

    return NGX_CONF_OK;
}


static char *
ngx_http_ragnx_schema_bound(ngx_http_ragnx_schema_compile_t *sc,
    ngx_http_ragnx_schema_t *s, json_t *value,
    ngx_http_ragnx_schema_keyword_t *kw)
{
    u_char                          *p;
    ngx_str_t                        text;
    ngx_http_ragnx_schema_limit_t   *limit, **field;

    if (!json_is_number(value)) {
        /* draft 4 had "exclusiveMinimum": true */
        return "must be a number";
    }

    if (ngx_http_ragnx_schema_text(sc->cf->temp_pool, value, &text)
        != NGX_OK)
    {
        return NGX_CONF_ERROR;
    }

    limit = ngx_palloc(sc->cf->pool, sizeof(ngx_http_ragnx_schema_limit_t));
    if (limit == NULL) {
        return NGX_CONF_ERROR;
    }

    p = ngx_pnalloc(sc->cf->pool,
                    sizeof("must be  ") + ngx_strlen(kw->post) + text.len);
    if (p == NULL) {
        return NGX_CONF_ERROR;
    }

    ngx_sprintf(p, "must be %s %V%Z", kw->post, &text);

    limit->value = json_number_value(value);
    limit->message = (char *) p;

    field = (ngx_http_ragnx_schema_limit_t **) ((char *) s + kw->offset);
    *field = limit;

    return NGX_CONF_OK;
}


static char *
ngx_http_ragnx_schema_pattern(ngx_http_ragnx_schema_compile_t *sc,
    ngx_http_ragnx_schema_t *s, json_t *value,
    ngx_http_ragnx_schema_keyword_t *kw)
{
#if (NGX_PCRE)
    u_char               *p;
    size_t                len;
    ngx_regex_compile_t   rc;
    u_char                errstr[NGX_MAX_CONF_ERRSTR];

#if (NGX_PCRE2)
#define NGX_HTTP_RAGNX_SCHEMA_UTF  "(*UTF)"
#else
#define NGX_HTTP_RAGNX_SCHEMA_UTF  "(*UTF8)"
#endif

    if (!json_is_string(value)) {
        return "must be a string";
    }

    /* match code points, not bytes: bodies are valid UTF-8 by now */

    len = sizeof(NGX_HTTP_RAGNX_SCHEMA_UTF) - 1 + json_string_length(value);

    p = ngx_pnalloc(sc->cf->pool, len + 1);
    if (p == NULL) {
        return NGX_CONF_ERROR;
    }

    ngx_memzero(&rc, sizeof(ngx_regex_compile_t));

    rc.pattern.data = p;
    rc.pattern.len = len;
    rc.pool = sc->cf->pool;
    rc.err.len = NGX_MAX_CONF_ERRSTR;
    rc.err.data = errstr;

    p = ngx_cpymem(p, NGX_HTTP_RAGNX_SCHEMA_UTF,
                   sizeof(NGX_HTTP_RAGNX_SCHEMA_UTF) - 1);
    p = ngx_cpymem(p, json_string_value(value), json_string_length(value));
    *p = '\0';

    if (ngx_regex_compile(&rc) != NGX_OK) {
        ngx_conf_log_error(NGX_LOG_EMERG, sc->cf, 0,
                           "invalid \"pattern\" at \"%V\" in schema \"%V\": "
                           "%V", &sc->pointer, sc->file, &rc.err);
        return NGX_CONF_ERROR;
    }

    s->pattern = rc.regex;

    return NGX_CONF_OK;

#else

    return "needs nginx built with PCRE";

#endif
}


static char *
ngx_http_ragnx_schema_format(ngx_http_ragnx_schema_compile_t *sc,
    ngx_http_ragnx_schema_t *s, json_t *value,
    ngx_http_ragnx_schema_keyword_t *kw)
{
    const char  *name;

    if (!json_is_string(value)) {
        return "must be a string";
    }

    name = json_string_value(value);

    if (ngx_strcmp(name, "uuid") == 0) {
        s->format = NGX_HTTP_RAGNX_SCHEMA_UUID;
        s->format_message = "must be a valid uuid";

    } else if (ngx_strcmp(name, "email") == 0) {
        s->format = NGX_HTTP_RAGNX_SCHEMA_EMAIL;
        s->format_message = "must be a valid email";

    } else {
        ngx_conf_log_error(NGX_LOG_EMERG, sc->cf, 0,
                           "unsupported format \"%s\" at \"%V\" in schema "
                           "\"%V\"", name, &sc->pointer, sc->file);
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


ngx_int_t
ngx_http_ragnx_schema_check(ngx_http_ragnx_schema_t *schema, json_t *value,
    ngx_pool_t *pool, ngx_log_t *log, json_t **details)
{
    ngx_http_ragnx_schema_ctx_t  ctx;

    ctx.pool = pool;
    ctx.log = log;
    ctx.details = NULL;
    ctx.errors = 0;

    if (ngx_http_ragnx_schema_walk(&ctx, schema, value, NULL) != NGX_OK) {
        if (ctx.details) {
            json_decref(ctx.details);
        }

        return NGX_ERROR;
    }

    if (ctx.details == NULL) {
        return NGX_OK;
    }

    *details = ctx.details;

    return NGX_DECLINED;
}


static ngx_int_t
ngx_http_ragnx_schema_walk(ngx_http_ragnx_schema_ctx_t *ctx,
    ngx_http_ragnx_schema_t *s, json_t *value,
    ngx_http_ragnx_schema_path_t *path)
{
    size_t      i;
    json_t     *v;
    ngx_uint_t  type;

    if (ctx->errors >= NGX_HTTP_RAGNX_SCHEMA_MAX_ERRORS) {
        return NGX_OK;
    }

    if (s->never) {
        return ngx_http_ragnx_schema_fail(ctx, path, "is not allowed");
    }

    type = ngx_http_ragnx_schema_type_of(value);

    if (s->types && (s->types & type) == 0) {
        return ngx_http_ragnx_schema_fail(ctx, path, s->type_message);
    }

    if (s->enum_values) {
        json_array_foreach(s->enum_values, i, v) {
            if (ngx_http_ragnx_schema_equal(value, v)) {
                break;
            }
        }

        if (i == json_array_size(s->enum_values)
            && ngx_http_ragnx_schema_fail(ctx, path, s->enum_message)
               != NGX_OK)
        {
            return NGX_ERROR;
        }
    }

    if (s->const_value
        && !ngx_http_ragnx_schema_equal(value, s->const_value)
        && ngx_http_ragnx_schema_fail(ctx, path, s->const_message) != NGX_OK)
    {
        return NGX_ERROR;
    }

    switch (type) {

    case NGX_HTTP_RAGNX_SCHEMA_OBJECT:
        return ngx_http_ragnx_schema_walk_object(ctx, s, value, path);

    case NGX_HTTP_RAGNX_SCHEMA_ARRAY:
        return ngx_http_ragnx_schema_walk_array(ctx, s, value, path);

    case NGX_HTTP_RAGNX_SCHEMA_STRING:
        return ngx_http_ragnx_schema_walk_string(ctx, s, value, path);

    case NGX_HTTP_RAGNX_SCHEMA_NUMBER:
    case NGX_HTTP_RAGNX_SCHEMA_NUMBER|NGX_HTTP_RAGNX_SCHEMA_INTEGER:
        return ngx_http_ragnx_schema_walk_number(ctx, s, value, path);

    default:
        return NGX_OK;
    }
}


static ngx_int_t
ngx_http_ragnx_schema_walk_object(ngx_http_ragnx_schema_ctx_t *ctx,
    ngx_http_ragnx_schema_t *s, json_t *value,
    ngx_http_ragnx_schema_path_t *path)
{
    void                          *iter;
    json_t                        *v;
    ngx_uint_t                     i, found;
    ngx_http_ragnx_schema_path_t   field;
    ngx_http_ragnx_schema_prop_t  *prop;

    field.parent = path;

    found = 0;
    prop = s->props.elts;

    for (i = 0; i < s->props.nelts; i++) {
        field.key = (char *) prop[i].name.data;
        field.len = prop[i].name.len;

        v = json_object_getn(value, field.key, field.len);

        if (v == NULL) {
            if (prop[i].required
                && ngx_http_ragnx_schema_fail(ctx, &field, "is required")
                   != NGX_OK)
            {
                return NGX_ERROR;
            }

            continue;
        }

        if (prop[i].schema == NULL) {
            continue;
        }

        found++;

        if (ngx_http_ragnx_schema_walk(ctx, prop[i].schema, v, &field)
            != NGX_OK)
        {
            return NGX_ERROR;
        }
    }

    if (s->additional == NGX_HTTP_RAGNX_SCHEMA_ALLOW
        || found == json_object_size(value))
    {
        return NGX_OK;
    }

    /* keys the schema does not list */

    for (iter = json_object_iter(value);
         iter;
         iter = json_object_iter_next(value, iter))
    {
        field.key = json_object_iter_key(iter);
        field.len = json_object_iter_key_len(iter);

        prop = ngx_http_ragnx_schema_lookup(s, field.key, field.len);

        if (prop && prop->schema) {
            continue;
        }

        if (s->additional == NGX_HTTP_RAGNX_SCHEMA_DENY) {
            if (ngx_http_ragnx_schema_fail(ctx, &field, "unknown field")
                != NGX_OK)
            {
                return NGX_ERROR;
            }

            continue;
        }

        if (ngx_http_ragnx_schema_walk(ctx, s->additional_schema,
                                       json_object_iter_value(iter), &field)
            != NGX_OK)
        {
            return NGX_ERROR;
        }
    }

    return NGX_OK;
}


static ngx_int_t
ngx_http_ragnx_schema_walk_array(ngx_http_ragnx_schema_ctx_t *ctx,
    ngx_http_ragnx_schema_t *s, json_t *value,
    ngx_http_ragnx_schema_path_t *path)
{
    size_t                         i, n;
    json_t                        *v;
    ngx_http_ragnx_schema_path_t   item;

    n = json_array_size(value);

    if (s->min_items
        && n < s->min_items->value
        && ngx_http_ragnx_schema_fail(ctx, path, s->min_items->message)
           != NGX_OK)
    {
        return NGX_ERROR;
    }

    if (s->max_items
        && n > s->max_items->value
        && ngx_http_ragnx_schema_fail(ctx, path, s->max_items->message)
           != NGX_OK)
    {
        return NGX_ERROR;
    }

    if (s->items == NULL) {
        return NGX_OK;
    }

    item.parent = path;
    item.key = NULL;

    json_array_foreach(value, i, v) {
        item.len = i;

        if (ngx_http_ragnx_schema_walk(ctx, s->items, v, &item) != NGX_OK) {
            return NGX_ERROR;
        }
    }

    return NGX_OK;
}


static ngx_int_t
ngx_http_ragnx_schema_walk_string(ngx_http_ragnx_schema_ctx_t *ctx,
    ngx_http_ragnx_schema_t *s, json_t *value,
    ngx_http_ragnx_schema_path_t *path)
{
    size_t      n;
    ngx_str_t   str;
    ngx_uint_t  ok;
#if (NGX_PCRE)
    ngx_int_t   rc;
#endif

    str.data = (u_char *) json_string_value(value);
    str.len = json_string_length(value);

    if (s->min_length || s->max_length) {

        /* jansson keeps strings as valid UTF-8: count code points */

        n = ragnx_utf8_length(str.data, str.len);

        if (s->min_length
            && n < s->min_length->value
            && ngx_http_ragnx_schema_fail(ctx, path, s->min_length->message)
               != NGX_OK)
        {
            return NGX_ERROR;
        }

        if (s->max_length
            && n > s->max_length->value
            && ngx_http_ragnx_schema_fail(ctx, path, s->max_length->message)
               != NGX_OK)
        {
            return NGX_ERROR;
        }
    }

#if (NGX_PCRE)

    if (s->pattern) {
        rc = ngx_regex_exec(s->pattern, &str, NULL, 0);

        if (rc < NGX_REGEX_NO_MATCHED) {
            /* e.g. the match limit: count it as no match */
            ngx_log_error(NGX_LOG_ERR, ctx->log, 0,
                          ngx_regex_exec_n " failed: %i", rc);
        }

        if (rc < 0
            && ngx_http_ragnx_schema_fail(ctx, path, "must match pattern")
               != NGX_OK)
        {
            return NGX_ERROR;
        }
    }

#endif

    switch (s->format) {

    case NGX_HTTP_RAGNX_SCHEMA_UUID:
        ok = ngx_http_ragnx_schema_uuid(str.data, str.len);
        break;

    case NGX_HTTP_RAGNX_SCHEMA_EMAIL:
        ok = ragnx_rpc_email_valid((const char *) str.data, str.len);
        break;

    default:
        ok = 1;
    }

    if (!ok) {
        return ngx_http_ragnx_schema_fail(ctx, path, s->format_message);
    }

    return NGX_OK;
}


static ngx_int_t
ngx_http_ragnx_schema_walk_number(ngx_http_ragnx_schema_ctx_t *ctx,
    ngx_http_ragnx_schema_t *s, json_t *value,
    ngx_http_ragnx_schema_path_t *path)
{
    double  n;

    n = json_number_value(value);

    if (s->minimum
        && n < s->minimum->value
        && ngx_http_ragnx_schema_fail(ctx, path, s->minimum->message)
           != NGX_OK)
    {
        return NGX_ERROR;
    }

    if (s->maximum
        && n > s->maximum->value
        && ngx_http_ragnx_schema_fail(ctx, path, s->maximum->message)
           != NGX_OK)
    {
        return NGX_ERROR;
    }

    if (s->exclusive_minimum
        && n <= s->exclusive_minimum->value
        && ngx_http_ragnx_schema_fail(ctx, path,
                                      s->exclusive_minimum->message)
           != NGX_OK)
    {
        return NGX_ERROR;
    }

    if (s->exclusive_maximum
        && n >= s->exclusive_maximum->value
        && ngx_http_ragnx_schema_fail(ctx, path,
                                      s->exclusive_maximum->message)
           != NGX_OK)
    {
        return NGX_ERROR;
    }

    return NGX_OK;
}


/*
 * Record "message" under the dotted path ("user.email", "items.2.name");
 * the path string is only built here, on failure.
 */

static ngx_int_t
ngx_http_ragnx_schema_fail(ngx_http_ragnx_schema_ctx_t *ctx,
    ngx_http_ragnx_schema_path_t *path, const char *message)
{
    u_char                        *key, *p;
    size_t                         len, n;
    json_t                        *list;
    ngx_http_ragnx_schema_path_t  *pp;

    if (ctx->errors >= NGX_HTTP_RAGNX_SCHEMA_MAX_ERRORS) {
        return NGX_OK;
    }

    ctx->errors++;

    if (ctx->details == NULL) {
        ctx->details = json_object();
        if (ctx->details == NULL) {
            return NGX_ERROR;
        }
    }

    if (path == NULL) {
        key = (u_char *) NGX_HTTP_RAGNX_SCHEMA_ROOT;
        len = sizeof(NGX_HTTP_RAGNX_SCHEMA_ROOT) - 1;

    } else {
        len = 0;

        for (pp = path; pp; pp = pp->parent) {
            if (pp->key) {
                len += pp->len;

            } else {
                n = pp->len;

                do {
                    len++;
                    n /= 10;
                } while (n);
            }

            if (pp->parent) {
                len++;
            }
        }

        key = ngx_pnalloc(ctx->pool, len);
        if (key == NULL) {
            return NGX_ERROR;
        }

        p = key + len;

        for (pp = path; pp; pp = pp->parent) {
            if (pp->key) {
                p -= pp->len;
                ngx_memcpy(p, pp->key, pp->len);

            } else {
                n = pp->len;

                do {
                    *--p = (u_char) ('0' + n % 10);
                    n /= 10;
                } while (n);
            }

            if (pp->parent) {
                *--p = '.';
            }
        }
    }

    list = json_object_getn(ctx->details, (char *) key, len);

    if (list == NULL) {
        list = json_array();

        if (json_object_setn_new(ctx->details, (char *) key, len, list)
            != 0)
        {
            return NGX_ERROR;
        }
    }

    if (json_array_append_new(list, json_string(message)) != 0) {
        return NGX_ERROR;
    }

    return NGX_OK;
}


static ngx_uint_t
ngx_http_ragnx_schema_type_of(json_t *value)
{
    double  n;

    switch (json_typeof(value)) {

    case JSON_OBJECT:
        return NGX_HTTP_RAGNX_SCHEMA_OBJECT;

    case JSON_ARRAY:
        return NGX_HTTP_RAGNX_SCHEMA_ARRAY;

    case JSON_STRING:
        return NGX_HTTP_RAGNX_SCHEMA_STRING;

    case JSON_INTEGER:
        return NGX_HTTP_RAGNX_SCHEMA_NUMBER|NGX_HTTP_RAGNX_SCHEMA_INTEGER;

    case JSON_REAL:

        /* since draft 6, 1.0 is an integer */

        n = json_real_value(value);

        if (n > -NGX_HTTP_RAGNX_SCHEMA_INT_MAX
            && n < NGX_HTTP_RAGNX_SCHEMA_INT_MAX
            && n == (double) (int64_t) n)
        {
            return NGX_HTTP_RAGNX_SCHEMA_NUMBER
                   |NGX_HTTP_RAGNX_SCHEMA_INTEGER;
        }

        return NGX_HTTP_RAGNX_SCHEMA_NUMBER;

    case JSON_TRUE:
    case JSON_FALSE:
        return NGX_HTTP_RAGNX_SCHEMA_BOOLEAN;

    default: /* JSON_NULL */
        return NGX_HTTP_RAGNX_SCHEMA_NULL;
    }
}


static ngx_uint_t
ngx_http_ragnx_schema_equal(json_t *a, json_t *b)
{
    /* jansson tells 1 from 1.0; JSON Schema does not */

    if (json_is_number(a) && json_is_number(b)) {
        return json_number_value(a) == json_number_value(b);
    }

    return json_equal(a, b);
}


static ngx_http_ragnx_schema_prop_t *
ngx_http_ragnx_schema_lookup(ngx_http_ragnx_schema_t *s, const char *key,
    size_t len)
{
    ngx_int_t                      rc;
    ngx_uint_t                     lo, hi, mid;
    ngx_http_ragnx_schema_prop_t  *prop;

    lo = 0;
    hi = s->props.nelts;

    while (lo < hi) {
        mid = lo + (hi - lo) / 2;
        prop = s->sorted[mid];

        rc = ngx_http_ragnx_schema_cmp((u_char *) key, len,
                                       prop->name.data, prop->name.len);
        if (rc == 0) {
            return prop;
        }

        if (rc < 0) {
            hi = mid;

        } else {
            lo = mid + 1;
        }
    }

    return NULL;
}


/* 8-4-4-4-12 hex digits, any version, either case */

static ngx_uint_t
ngx_http_ragnx_schema_uuid(u_char *p, size_t len)
{
    u_char      c;
    ngx_uint_t  i;

    if (len != 36) {
        return 0;
    }

    for (i = 0; i < 36; i++) {
        c = p[i];

        if (i == 8 || i == 13 || i == 18 || i == 23) {
            if (c != '-') {
                return 0;
            }

            continue;
        }

        if (!((c >= '0' && c <= '9')
              || (c >= 'a' && c <= 'f')
              || (c >= 'A' && c <= 'F')))
        {
            return 0;
        }
    }

    return 1;
}

