/* goldens.h - the peer's model goldens (tests/data/model_goldens/tiny) for
 * the tests of the forward pass and the engine. */
#ifndef SMQ_TEST_GOLDENS_H
#define SMQ_TEST_GOLDENS_H

#include "json.h"
#include "model.h"
#include "test.h"

/* model_goldens/tiny/NAME parsed, or NULL (with a FAIL). */
static inline json_value *golden_json(const char *name)
{
    char path[512];
    snprintf(path, sizeof path, "%s/model_goldens/tiny/%s", test_data_dir(), name);
    size_t len;
    char *text = test_read_file(path, &len);
    smq_err err;
    json_value *v = text ? json_parse(text, len, path, &err) : NULL;
    if (text && !v)
        test_fail(__FILE__, __LINE__, "%s", err.msg);
    free(text);
    return v;
}

/* The ids of prompt i of prompts.json (malloc'd), count in *n. */
static inline int32_t *golden_prompt(const json_value *prompts, size_t i, uint32_t *n)
{
    const json_value *ids = json_get(json_at(prompts, i), "ids");
    *n = (uint32_t)json_len(ids);
    int32_t *t = malloc((*n ? *n : 1) * sizeof *t);
    for (uint32_t k = 0; k < *n; k++)
        t[k] = (int32_t)json_integer(json_at(ids, k));
    return t;
}

/* The tiny test model the goldens were made with, or NULL (the reason on
 * stderr). */
static inline model *golden_model(void)
{
    char path[512];
    snprintf(path, sizeof path, "%s/models/smollm3-tiny-q4_k_m.gguf", test_data_dir());
    smq_err err;
    model *m = model_load(path, NULL, &err);
    if (!m)
        fprintf(stderr, "%s\n", err.msg);
    return m;
}

#endif
