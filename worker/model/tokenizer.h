/* tokenizer.h - byte-level BPE as a GGUF describes it (tokenizer.ggml.model
 * "gpt2"), text to token ids and back, exactly as llama.cpp does.
 *
 * Encoding: the text is split on added tokens (CONTROL ones only when the
 * caller asks for special-token parsing; USER_DEFINED ones always, so
 * `<think>` is one token even in user text while `<|im_start|>` typed by a
 * user stays plain text), each piece between them is split into words by the
 * pre-tokenizer regex of tokenizer.ggml.pre (PCRE2, JIT), and each word's
 * bytes are merged by the merge ranks.
 *
 * Invalid UTF-8 in the input is read as U+FFFD, one per byte that does not
 * start a valid sequence (as llama.cpp does); encoding never fails on text.
 *
 * Decoding follows llama.cpp's detokenizer, including its clean-up of spaces
 * before punctuation and contractions (" ," -> ",", " 's" -> "'s"), which the
 * vocabulary asks for by default. detok_stream does the same incrementally for
 * streaming: it emits text only at character boundaries, never invalid UTF-8,
 * and the concatenation of what it emits equals tokenizer_decode's result
 * (with any invalid UTF-8 there replaced by U+FFFD).
 *
 * A tokenizer is used by one thread at a time (encode keeps a word cache).
 */
#ifndef SMQ_TOKENIZER_H
#define SMQ_TOKENIZER_H

#include <stddef.h>
#include <stdint.h>

#include "err.h"
#include "gguf.h"
#include "sbuf.h"

/* tokenizer.ggml.token_type values. */
typedef enum token_type {
    TOKEN_UNDEFINED = 0,
    TOKEN_NORMAL = 1,
    TOKEN_UNKNOWN = 2,
    TOKEN_CONTROL = 3,
    TOKEN_USER_DEFINED = 4,
    TOKEN_UNUSED = 5,
    TOKEN_BYTE = 6,
} token_type;

/* A growable array of token ids. */
typedef struct tok_ids {
    int32_t *ids;
    size_t n, cap;
} tok_ids;

int tok_ids_push(tok_ids *v, int32_t id);
void tok_ids_free(tok_ids *v);

typedef struct tokenizer tokenizer;

/* Builds the tokenizer from the file's tokenizer.* metadata (copied: the file
 * may be closed afterwards). Fails naming what is missing or malformed. */
tokenizer *tokenizer_load(const gguf_file *f, smq_err *err);
void tokenizer_destroy(tokenizer **self);

uint32_t tokenizer_n_vocab(const tokenizer *t);
token_type tokenizer_token_type(const tokenizer *t, int32_t id);
/* The vocabulary entry as stored (byte-level characters); NULL if id is out of range. */
const char *tokenizer_token_text(const tokenizer *t, int32_t id, size_t *len);
/* The id of the vocabulary entry equal to text, or -1. */
int32_t tokenizer_find(const tokenizer *t, const char *text, size_t len);
/* Special ids from the metadata; -1 where the file names none. */
int32_t tokenizer_bos(const tokenizer *t);
int32_t tokenizer_eos(const tokenizer *t);
int32_t tokenizer_pad(const tokenizer *t);
const char *tokenizer_pre_name(const tokenizer *t);
/* Whether decoding applies llama.cpp's space clean-up (the pre-tokenizer's choice). */
int tokenizer_clean_spaces(const tokenizer *t);

/* Appends the ids of text[0..len) to out. parse_special: match CONTROL
 * tokens' text as those tokens (chat templates do; user text must not).
 * Fails only when out of memory. */
int tokenizer_encode(tokenizer *t, const char *text, size_t len, int parse_special, tok_ids *out, smq_err *err);
/* The same with control tokens matched everywhere except within the plain
 * ranges [plain[i][0], plain[i][1]) (sorted, not overlapping), which read as
 * user text: a chat rendering whose messages must not open or close turns
 * (chat_render_spans). */
int tokenizer_encode_spans(tokenizer *t, const char *text, size_t len, const size_t (*plain)[2], size_t n_plain,
                           tok_ids *out, smq_err *err);

/* The bytes token id stands for: byte-decoded text for normal tokens, the
 * text itself for user-defined ones, and for control tokens their text when
 * special is set, else nothing. NULL (and *len 0) for an id out of range. */
const char *tokenizer_piece(const tokenizer *t, int32_t id, int special, size_t *len);

/* Appends the text of ids to out, cleaned up as the vocabulary asks. Fails
 * naming the first id out of range. The result may hold invalid UTF-8 when
 * the ids split a character (byte tokens); detok_stream never emits that. */
int tokenizer_decode(const tokenizer *t, const int32_t *ids, size_t n, int special, sbuf *out, smq_err *err);

/* ---- streaming (detok.c) ---- */

/* The clean-up passes as a transducer: llama.cpp runs three passes over the
 * whole text; each looks at most two characters ahead, so each can run as it
 * goes, holding back the few characters still undecided. */
typedef struct text_cleaner {
    int n1, n2, n3; /* characters held by each pass */
    char h2[2], h3[3];
} text_cleaner;

typedef struct detok_stream {
    const tokenizer *t;
    int special, clean;
    text_cleaner cleaner;
    unsigned char utf8[4]; /* an incomplete character held back */
    int n_utf8, need_utf8;
} detok_stream;

void detok_init(detok_stream *d, const tokenizer *t, int special);
/* Appends to out the text that token id makes final. */
int detok_feed(detok_stream *d, int32_t id, sbuf *out, smq_err *err);
/* Appends what is still held back (an incomplete character as U+FFFD). */
void detok_flush(detok_stream *d, sbuf *out);

#endif
