/* dequant.c - `smolmq dequant FILE.gguf TENSOR --out OUT.f32`: one tensor,
 * dequantized row by row to little-endian float32 in row-major order. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gguf.h"
#include "quant.h"
#include "tool.h"

static const char *usage_line = "dequant FILE.gguf TENSOR --out OUT.f32";

static int write_rows(const gguf_tensor *t, FILE *out, const char *out_path)
{
    uint64_t row_bytes, n = t->ne[0];
    if (qtype_row_bytes(t->type, n, &row_bytes))
        return tool_fail("dequant", "tensor %s: bad row length %" PRIu64, t->name, n);
    uint64_t rows = n ? t->n_elements / n : 0;
    float *row = malloc((n ? n : 1) * sizeof *row);
    if (!row)
        return tool_fail("dequant", "out of memory for a row of %" PRIu64 " floats", n);
    int rc = 0;
    for (uint64_t r = 0; r < rows && !rc; r++) {
        if (quant_dequant_row(t->type, (const uint8_t *)t->data + r * row_bytes, row, n))
            rc = tool_fail("dequant", "tensor %s: row %" PRIu64 " could not be dequantized", t->name, r);
        else if (fwrite(row, sizeof *row, n, out) != n)
            rc = tool_fail("dequant", "%s: write failed: %s", out_path, strerror(errno));
    }
    free(row);
    return rc;
}

int tool_dequant(int argc, char **argv)
{
    const char *path = NULL, *name = NULL, *out_path = NULL;
    for (int i = 0; i < argc; i++) {
        if (!strcmp(argv[i], "--out")) {
            if (++i >= argc)
                return tool_usage(usage_line, "--out needs a file name");
            out_path = argv[i];
        } else if (argv[i][0] == '-' && argv[i][1]) {
            return tool_usage(usage_line, "unknown option %s", argv[i]);
        } else if (!path) {
            path = argv[i];
        } else if (!name) {
            name = argv[i];
        } else {
            return tool_usage(usage_line, "unexpected argument %s", argv[i]);
        }
    }
    if (!path || !name || !out_path)
        return tool_usage(usage_line, "%s", !path ? "no file given" : !name ? "no tensor named" : "no --out given");

    smq_err err;
    gguf_file *f = gguf_open(path, &err);
    if (!f)
        return tool_fail("dequant", "%s", err.msg);
    const gguf_tensor *t = gguf_find_tensor(f, name);
    int rc;
    if (!t) {
        rc = tool_fail("dequant", "%s: no tensor named %s (it has %" PRIu64 "; `smolmq inspect` lists them)", path,
                       name, f->n_tensors);
    } else if (!quant_can_dequant(t->type)) {
        rc = tool_fail("dequant", "%s: tensor %s has type %s, which smolmq cannot dequantize", path, name,
                       qtype_name(t->type));
    } else {
        FILE *out = fopen(out_path, "wb");
        if (!out) {
            rc = tool_fail("dequant", "%s: cannot create: %s", out_path, strerror(errno));
        } else {
            rc = write_rows(t, out, out_path);
            if (fclose(out) != 0 && !rc)
                rc = tool_fail("dequant", "%s: write failed: %s", out_path, strerror(errno));
            if (rc)
                remove(out_path);
        }
    }
    gguf_close(&f);
    return rc;
}
