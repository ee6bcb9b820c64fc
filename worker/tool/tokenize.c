/* tokenize.c - `smolmq tokenize` and `smolmq detokenize`: the model's
 * tokenizer from the command line.
 *
 *   smolmq tokenize --model M [--special] (--text TEXT | --jsonl IN.jsonl)
 *   smolmq detokenize --model M [--special] ID...
 *
 * --jsonl reads one JSON object with a "text" field per line and writes one
 * {"ids": [...]} line per input line; the model is loaded once. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gguf.h"
#include "json.h"
#include "json_out.h"
#include "tokenizer.h"
#include "tool.h"

static const char *tok_usage = "tokenize --model M [--special] (--text TEXT | --jsonl IN.jsonl)";
static const char *detok_usage = "detokenize --model M [--special] ID...";

/* Opens the model and builds its tokenizer; the file is closed again. */
tokenizer *tool_load_tokenizer(const char *verb, const char *path)
{
    smq_err err;
    gguf_file *f = gguf_open(path, &err);
    if (!f) {
        tool_fail(verb, "%s", err.msg);
        return NULL;
    }
    tokenizer *t = tokenizer_load(f, &err);
    gguf_close(&f);
    if (!t)
        tool_fail(verb, "%s", err.msg);
    return t;
}

static void print_ids(const tok_ids *ids, int as_object)
{
    json_out j;
    json_init(&j, stdout);
    if (as_object) {
        json_obj_begin(&j);
        json_key(&j, "ids");
    }
    json_arr_begin(&j);
    for (size_t i = 0; i < ids->n; i++)
        json_i64(&j, ids->ids[i]);
    if (as_object) {
        json_arr_end(&j);
        json_obj_end(&j);
    } else {
        json_arr_end(&j);
    }
}

/* Each line: {"text": "..."} -> {"ids": [...]}. A bad line is reported with
 * its number and stops the run (nothing is skipped silently). */
static int tokenize_jsonl(tokenizer *t, const char *path, int special)
{
    FILE *in = strcmp(path, "-") ? fopen(path, "rb") : stdin;
    if (!in)
        return tool_fail("tokenize", "%s: cannot open: %s", path, strerror(errno));
    char *line = NULL;
    size_t cap = 0;
    ssize_t n;
    int rc = 0;
    unsigned long lineno = 0;
    tok_ids ids = { 0 };
    while (!rc && (n = getline(&line, &cap, in)) >= 0) {
        lineno++;
        while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r'))
            n--;
        char name[64];
        snprintf(name, sizeof name, "line %lu", lineno);
        smq_err err;
        json_value *v = json_parse(line, (size_t)n, name, &err);
        size_t len;
        const char *text = v ? json_string(json_get(v, "text"), &len) : NULL;
        if (!v) {
            rc = tool_fail("tokenize", "%s: %s", path, err.msg);
        } else if (!text) {
            rc = tool_fail("tokenize", "%s: line %lu: no string field \"text\"", path, lineno);
        } else {
            ids.n = 0;
            if (tokenizer_encode(t, text, len, special, &ids, &err))
                rc = tool_fail("tokenize", "%s: line %lu: %s", path, lineno, err.msg);
            else
                print_ids(&ids, 1);
        }
        json_free(v);
    }
    if (!rc && ferror(in))
        rc = tool_fail("tokenize", "%s: read error: %s", path, strerror(errno));
    free(line);
    tok_ids_free(&ids);
    if (in != stdin)
        fclose(in);
    return rc;
}

int tool_tokenize(int argc, char **argv)
{
    const char *model = NULL, *text = NULL, *jsonl = NULL;
    int special = 0;
    for (int i = 0; i < argc; i++) {
        if (!strcmp(argv[i], "--special")) {
            special = 1;
        } else if (!strcmp(argv[i], "--model") || !strcmp(argv[i], "--text") || !strcmp(argv[i], "--jsonl")) {
            if (i + 1 >= argc)
                return tool_usage(tok_usage, "%s needs a value", argv[i]);
            const char **slot = !strcmp(argv[i], "--model") ? &model : !strcmp(argv[i], "--text") ? &text : &jsonl;
            *slot = argv[++i];
        } else {
            return tool_usage(tok_usage, "unknown argument %s", argv[i]);
        }
    }
    if (!model)
        return tool_usage(tok_usage, "no --model given");
    if (!text == !jsonl)
        return tool_usage(tok_usage, "give exactly one of --text and --jsonl");
    tokenizer *t = tool_load_tokenizer("tokenize", model);
    if (!t)
        return 1;
    int rc = 0;
    if (jsonl) {
        rc = tokenize_jsonl(t, jsonl, special);
    } else {
        tok_ids ids = { 0 };
        smq_err err;
        if (tokenizer_encode(t, text, strlen(text), special, &ids, &err))
            rc = tool_fail("tokenize", "%s", err.msg);
        else
            print_ids(&ids, 0);
        tok_ids_free(&ids);
    }
    tokenizer_destroy(&t);
    return rc;
}

int tool_detokenize(int argc, char **argv)
{
    const char *model = NULL;
    int special = 0;
    tok_ids ids = { 0 };
    int rc = 0;
    for (int i = 0; i < argc && !rc; i++) {
        if (!strcmp(argv[i], "--special")) {
            special = 1;
        } else if (!strcmp(argv[i], "--model")) {
            if (i + 1 >= argc)
                rc = tool_usage(detok_usage, "--model needs a value");
            else
                model = argv[++i];
        } else {
            char *end;
            errno = 0;
            long v = strtol(argv[i], &end, 10);
            if (errno || end == argv[i] || *end || v < 0 || v > INT32_MAX)
                rc = tool_usage(detok_usage, "\"%s\" is not a token id", argv[i]);
            else if (tok_ids_push(&ids, (int32_t)v))
                rc = tool_fail("detokenize", "out of memory");
        }
    }
    if (!rc && !model)
        rc = tool_usage(detok_usage, "no --model given");
    tokenizer *t = rc ? NULL : tool_load_tokenizer("detokenize", model);
    if (!rc && !t)
        rc = 1;
    if (!rc) {
        sbuf out = { 0 };
        smq_err err;
        if (tokenizer_decode(t, ids.ids, ids.n, special, &out, &err))
            rc = tool_fail("detokenize", "%s", err.msg);
        else
            fwrite(out.data, 1, out.len, stdout);
        sbuf_free(&out);
    }
    tokenizer_destroy(&t);
    tok_ids_free(&ids);
    return rc;
}
