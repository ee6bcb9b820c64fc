/* tool.h - the verbs of the `smolmq` command-line tool. Each takes the
 * arguments after the verb and returns the process exit status (0 ok, 1 on a
 * failure it has reported, 2 on a usage error). */
#ifndef SMQ_TOOL_H
#define SMQ_TOOL_H

#include <stdint.h>

int tool_inspect(int argc, char **argv);
int tool_dequant(int argc, char **argv);
int tool_synth(int argc, char **argv);
int tool_tokenize(int argc, char **argv);
int tool_detokenize(int argc, char **argv);
int tool_template(int argc, char **argv);
int tool_logits(int argc, char **argv);
int tool_generate(int argc, char **argv);
int tool_bench(int argc, char **argv);
int tool_chat(int argc, char **argv);
int tool_ask(int argc, char **argv);

/* Opens a model file and builds its tokenizer (the file is closed again);
 * NULL after reporting the error under the verb's name. */
struct tokenizer *tool_load_tokenizer(const char *verb, const char *path);

/* A number in [lo, hi] from a flag's value; -1 for anything else
 * (trailing text, out of range, not a number). */
int tool_parse_num(const char *s, double lo, double hi, double *out);

/* The file's chat template kind: SmolLM3's, else plain ChatML, saying so on
 * stderr once under the verb's name. */
struct gguf_file;
int tool_template_kind(const char *verb, const struct gguf_file *f);

/* The backend for --backend NAME (cpu, cuda or auto; NULL: auto) and --gpu
 * GPU, for model m with a KV pool of n_pages pages of page_size tokens. auto
 * takes the GPU when this build has the CUDA backend and m fits the GPU, else
 * the CPU, and says which on stderr. NULL after reporting why not under the
 * verb's name (tool_backend.c). */
struct backend_ops;
struct model;
const struct backend_ops *tool_pick_backend(const char *verb, const char *name, int gpu, const struct model *m,
                                            uint32_t n_pages, uint32_t page_size);
/* GB/s of reading GPU gpu's memory, measured now; 0 without the CUDA backend. */
double tool_gpu_read_bandwidth(int gpu);
/* Nodes (launches, copies) of b's one-token decode step graph; 0 when b is
 * not the CUDA backend or has captured none. */
struct backend;
uint32_t tool_gpu_step_nodes(const struct backend *b);

/* Seconds on the monotonic clock, for timings. */
double tool_now(void);

/* Prints "smolmq VERB: message" to stderr; returns 1. */
int tool_fail(const char *verb, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* A usage error: the message, then the verb's usage line; returns 2. */
int tool_usage(const char *usage, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#endif
