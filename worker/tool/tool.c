/* tool.c - what every verb shares: flag values, the chat template kind,
 * the clock and error reports (tool.h). Linked into smolmq and into the
 * programs that run the model as a service (smolmq-worker). */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "chat_template.h"
#include "gguf.h"
#include "tool.h"

int tool_parse_num(const char *s, double lo, double hi, double *out)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end || !(v >= lo && v <= hi))
        return -1;
    *out = v;
    return 0;
}

int tool_template_kind(const char *verb, const gguf_file *f)
{
    gguf_str tmpl = { "", 0 };
    if (gguf_find_kv(f, "tokenizer.chat_template"))
        gguf_get_str(f, "tokenizer.chat_template", &tmpl, NULL);
    chat_template_kind kind = chat_template_detect(tmpl.ptr, tmpl.len);
    if (kind != CHAT_TEMPLATE_SMOLLM3)
        fprintf(stderr, "smolmq %s: %s: %s; using plain ChatML\n", verb, f->path,
                tmpl.len ? "the chat template is not SmolLM3's" : "the file has no chat template");
    return (int)kind;
}

double tool_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

int tool_fail(const char *verb, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "smolmq %s: ", verb);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    return 1;
}

int tool_usage(const char *usage_line, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "smolmq: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\nusage: smolmq %s\n", usage_line);
    va_end(ap);
    return 2;
}
