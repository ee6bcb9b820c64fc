/* json_out.h - a small streaming JSON writer for the tool's --json output.
 * Commas and nesting are tracked here so callers only say what comes next. */
#ifndef SMQ_JSON_OUT_H
#define SMQ_JSON_OUT_H

#include <stdint.h>
#include <stdio.h>

#define JSON_MAX_DEPTH 32

typedef struct json_out {
    FILE *f;
    int depth;
    int count[JSON_MAX_DEPTH]; /* elements written at each open level */
    int after_key;
} json_out;

void json_init(json_out *j, FILE *f);
void json_obj_begin(json_out *j);
void json_obj_end(json_out *j);
void json_arr_begin(json_out *j);
void json_arr_end(json_out *j);
void json_key(json_out *j, const char *key);
/* Bytes that are not valid UTF-8 are written as U+FFFD. */
void json_strn(json_out *j, const char *s, uint64_t n);
void json_str(json_out *j, const char *s);
void json_u64(json_out *j, uint64_t v);
void json_i64(json_out *j, int64_t v);
void json_f64(json_out *j, double v); /* non-finite values as null */
void json_bool(json_out *j, int v);

#endif
