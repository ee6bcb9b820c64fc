/* gguf_writer.h - writes GGUF v3 files (for `smolmq synth` and tests).
 *
 * Metadata is encoded as it is set; tensors are declared with a callback that
 * fills their bytes when the file is written, so a 2 GB model is produced
 * tensor by tensor without ever being held in memory whole. The file is
 * written under a temporary name and renamed into place only when complete.
 */
#ifndef SMQ_GGUF_WRITER_H
#define SMQ_GGUF_WRITER_H

#include <stdint.h>

#include "err.h"
#include "gguf.h"
#include "qtype.h"

typedef struct gguf_writer gguf_writer;

/* Fills dst with the tensor's n_bytes bytes; returns 0 or -1 with err set. */
typedef int (*gguf_fill_fn)(void *ctx, void *dst, uint64_t n_bytes, smq_err *err);

gguf_writer *gguf_writer_new(void);
void gguf_writer_destroy(gguf_writer **self);

/* Metadata setters: each appends one key (a key set twice is an error). */
int gguf_writer_set_u32(gguf_writer *self, const char *key, uint32_t v, smq_err *err);
int gguf_writer_set_u64(gguf_writer *self, const char *key, uint64_t v, smq_err *err);
int gguf_writer_set_i32(gguf_writer *self, const char *key, int32_t v, smq_err *err);
int gguf_writer_set_f32(gguf_writer *self, const char *key, float v, smq_err *err);
int gguf_writer_set_bool(gguf_writer *self, const char *key, int v, smq_err *err);
int gguf_writer_set_str(gguf_writer *self, const char *key, const char *v, smq_err *err);
/* Any value, e.g. one read from another file (arrays are copied deeply). */
int gguf_writer_set_value(gguf_writer *self, const char *key, const gguf_value *v, smq_err *err);

/* Declares a tensor; n_dims in 1..4, ne[0] a multiple of the type's block. */
int gguf_writer_add_tensor(gguf_writer *self, const char *name, qtype type, uint32_t n_dims, const uint64_t *ne,
                           gguf_fill_fn fill, void *ctx, smq_err *err);

/* Writes the file (alignment from general.alignment when set, else 32). */
int gguf_writer_write(gguf_writer *self, const char *path, smq_err *err);

#endif
