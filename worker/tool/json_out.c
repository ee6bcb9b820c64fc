#include "json_out.h"

#include <inttypes.h>
#include <math.h>
#include <string.h>

#include "utf8.h"

void json_init(json_out *j, FILE *f)
{
    memset(j, 0, sizeof *j);
    j->f = f;
}

/* Writes the separator a new value needs at the current level. */
static void value_start(json_out *j)
{
    if (j->after_key) {
        j->after_key = 0;
        return;
    }
    if (j->depth > 0 && j->count[j->depth - 1]++ > 0)
        fputc(',', j->f);
}

static void open_level(json_out *j, char c)
{
    value_start(j);
    fputc(c, j->f);
    if (j->depth < JSON_MAX_DEPTH)
        j->count[j->depth] = 0;
    j->depth++;
}

static void close_level(json_out *j, char c)
{
    j->depth--;
    fputc(c, j->f);
    if (j->depth == 0)
        fputc('\n', j->f);
}

void json_obj_begin(json_out *j)
{
    open_level(j, '{');
}
void json_obj_end(json_out *j)
{
    close_level(j, '}');
}
void json_arr_begin(json_out *j)
{
    open_level(j, '[');
}
void json_arr_end(json_out *j)
{
    close_level(j, ']');
}

static void write_string(FILE *f, const char *s, uint64_t n)
{
    fputc('"', f);
    uint64_t i = 0;
    while (i < n) {
        uint32_t cp;
        int len = utf8_next(s + i, (size_t)(n - i), &cp);
        if (!len) {
            fputs("\\ufffd", f);
            i++;
            continue;
        }
        if (cp == '"' || cp == '\\')
            fprintf(f, "\\%c", (char)cp);
        else if (cp == '\n')
            fputs("\\n", f);
        else if (cp == '\t')
            fputs("\\t", f);
        else if (cp == '\r')
            fputs("\\r", f);
        else if (cp < 0x20 || cp == 0x7F)
            fprintf(f, "\\u%04" PRIx32, cp);
        else
            fwrite(s + i, 1, (size_t)len, f);
        i += (uint64_t)len;
    }
    fputc('"', f);
}

void json_key(json_out *j, const char *key)
{
    value_start(j);
    write_string(j->f, key, strlen(key));
    fputc(':', j->f);
    j->after_key = 1;
}

void json_strn(json_out *j, const char *s, uint64_t n)
{
    value_start(j);
    write_string(j->f, s, n);
}

void json_str(json_out *j, const char *s)
{
    json_strn(j, s, strlen(s));
}

void json_u64(json_out *j, uint64_t v)
{
    value_start(j);
    fprintf(j->f, "%" PRIu64, v);
}

void json_i64(json_out *j, int64_t v)
{
    value_start(j);
    fprintf(j->f, "%" PRId64, v);
}

void json_f64(json_out *j, double v)
{
    value_start(j);
    if (isfinite(v))
        fprintf(j->f, "%.17g", v);
    else
        fputs("null", j->f);
}

void json_bool(json_out *j, int v)
{
    value_start(j);
    fputs(v ? "true" : "false", j->f);
}
