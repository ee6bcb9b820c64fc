/* tokenizer.c - byte-level BPE (see tokenizer.h for what it promises).
 *
 * Layout of the work:
 *   load:    vocabulary strings -> id map; merges "A B" -> (id A, id B) -> (rank,
 *            id of AB); the 256 byte-level characters; the added tokens indexed
 *            by first byte; each token's decoded piece; the pre-tokenizer regex.
 *   encode:  added tokens split the text; the regex splits each piece into
 *            words; each word's bytes start as byte tokens and the lowest-rank
 *            adjacent pair is merged until none is left (a heap keeps this
 *            O(n log n) for long words). Words seen before come from a cache.
 *   decode:  pieces concatenated, then llama.cpp's space clean-up.
 */
#include "tokenizer.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include "utf8.h"

/* ---- pre-tokenizers, as data: a regex and two flags per tokenizer.ggml.pre ---- */

typedef struct pre_tokenizer {
    const char *names; /* '|'-separated tokenizer.ggml.pre values */
    const char *regex;
    int ignore_merges; /* a word that is itself a token is not merged */
    int clean_spaces;  /* detokenizer clean-up */
} pre_tokenizer;

#define LLAMA3_REGEX                                                                                                   \
    "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| "            \
    "?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"
#define GPT2_REGEX "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+"

static const pre_tokenizer pre_tokenizers[] = {
    /* SmolLM3: Llama-3's regex, merges applied to every word. */
    { "smaug-bpe", LLAMA3_REGEX, 0, 1 },
    { "llama-bpe|llama3|llama-v3", LLAMA3_REGEX, 1, 1 },
    { "default|gpt2|gpt-2", GPT2_REGEX, 0, 1 },
};

static const pre_tokenizer *find_pre(const char *name, size_t len)
{
    for (size_t i = 0; i < sizeof pre_tokenizers / sizeof pre_tokenizers[0]; i++) {
        const char *p = pre_tokenizers[i].names;
        while (*p) {
            const char *bar = strchr(p, '|');
            size_t n = bar ? (size_t)(bar - p) : strlen(p);
            if (n == len && !memcmp(p, name, n))
                return &pre_tokenizers[i];
            p += n + (bar != NULL);
        }
    }
    return NULL;
}

/* ---- hashing ---- */

static uint64_t hash_bytes(const void *p, size_t n)
{
    const uint8_t *s = p;
    uint64_t h = 0x9E3779B97F4A7C15ull ^ (n * 0xff51afd7ed558ccdull);
    while (n >= 8) {
        uint64_t v;
        memcpy(&v, s, 8);
        h = (h ^ v) * 0xbf58476d1ce4e5b9ull;
        h ^= h >> 29;
        s += 8;
        n -= 8;
    }
    uint64_t v = 0;
    memcpy(&v, s, n);
    h = (h ^ v) * 0x94d049bb133111ebull;
    h ^= h >> 31;
    h *= 0xbf58476d1ce4e5b9ull;
    return h ^ (h >> 29);
}

static uint64_t hash_u64(uint64_t x)
{
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdull;
    x ^= x >> 33;
    return x;
}

/* Smallest power of two >= 2n (load factor <= 1/2). */
static uint64_t table_size(uint64_t n)
{
    uint64_t s = 16;
    while (s < 2 * n)
        s *= 2;
    return s;
}

/* ---- the tokenizer ---- */

typedef struct special_token {
    int32_t id;
    uint32_t len;
    const char *text;
    uint8_t type;
} special_token;

/* A cached word: its bytes in cache_keys, its ids in cache_ids. */
typedef struct cache_entry {
    uint64_t hash;
    uint32_t key_off, key_len, ids_off, n_ids;
} cache_entry;

#define CACHE_SLOTS     (1u << 16)
#define CACHE_MAX_WORD  64
#define CACHE_KEY_BYTES (4u << 20)
#define CACHE_MAX_IDS   (1u << 20)

/* Heap item for the merge loop: the pair (left, its right neighbour) as it
 * was when pushed; stale if either symbol has changed since. */
typedef struct bpe_pair {
    uint32_t rank;
    int32_t left, id_l, id_r;
} bpe_pair;

typedef struct bpe_sym {
    int32_t id, prev, next;
} bpe_sym;

struct tokenizer {
    uint32_t n_vocab;
    char *texts; /* all vocabulary strings, NUL-separated */
    uint32_t *text_off, *text_len;
    char *pieces; /* decoded pieces */
    uint32_t *piece_off, *piece_len;
    uint8_t *types;

    uint32_t *tok_slots; /* id + 1, 0 = empty */
    uint64_t tok_mask;

    uint64_t *merge_keys; /* (a + 1) << 32 | b; 0 = empty */
    uint64_t *merge_vals; /* rank << 32 | merged id */
    uint64_t merge_mask;

    int32_t byte_tok[256]; /* the token of each byte's character */
    int16_t cp_byte[324];  /* byte of a byte-level code point, or -1 */

    special_token *specials; /* sorted by first byte, then longest first */
    uint32_t n_specials;
    uint32_t special_first[257]; /* specials[special_first[b] .. special_first[b+1]) start with byte b */

    const pre_tokenizer *pre;
    char *pre_name;
    pcre2_code *re;
    pcre2_match_data *md;
    int jit;

    int32_t bos, eos, pad;

    /* word cache */
    uint32_t *cache_slots; /* entry index + 1 */
    cache_entry *cache;
    uint32_t n_cache;
    char *cache_keys;
    uint32_t cache_keys_len;
    int32_t *cache_ids;
    uint32_t cache_ids_len;

    /* merge scratch */
    bpe_sym *syms;
    bpe_pair *heap;
    size_t syms_cap, heap_cap;
};

int tok_ids_push(tok_ids *v, int32_t id)
{
    if (v->n == v->cap) {
        size_t cap = v->cap ? v->cap * 2 : 64;
        int32_t *ids = realloc(v->ids, cap * sizeof *ids);
        if (!ids)
            return -1;
        v->ids = ids;
        v->cap = cap;
    }
    v->ids[v->n++] = id;
    return 0;
}

void tok_ids_free(tok_ids *v)
{
    free(v->ids);
    memset(v, 0, sizeof *v);
}

uint32_t tokenizer_n_vocab(const tokenizer *t)
{
    return t->n_vocab;
}

token_type tokenizer_token_type(const tokenizer *t, int32_t id)
{
    return id >= 0 && (uint32_t)id < t->n_vocab ? (token_type)t->types[id] : TOKEN_UNDEFINED;
}

const char *tokenizer_token_text(const tokenizer *t, int32_t id, size_t *len)
{
    if (id < 0 || (uint32_t)id >= t->n_vocab) {
        *len = 0;
        return NULL;
    }
    *len = t->text_len[id];
    return t->texts + t->text_off[id];
}

int32_t tokenizer_find(const tokenizer *t, const char *text, size_t len)
{
    for (uint64_t i = hash_bytes(text, len) & t->tok_mask;; i = (i + 1) & t->tok_mask) {
        uint32_t s = t->tok_slots[i];
        if (!s)
            return -1;
        uint32_t id = s - 1;
        if (t->text_len[id] == len && !memcmp(t->texts + t->text_off[id], text, len))
            return (int32_t)id;
    }
}

int32_t tokenizer_bos(const tokenizer *t)
{
    return t->bos;
}
int32_t tokenizer_eos(const tokenizer *t)
{
    return t->eos;
}
int32_t tokenizer_pad(const tokenizer *t)
{
    return t->pad;
}
const char *tokenizer_pre_name(const tokenizer *t)
{
    return t->pre_name;
}

/* Rank and merged id of the pair (a, b); 0 if they do not merge. */
static int merge_lookup(const tokenizer *t, int32_t a, int32_t b, uint32_t *rank, int32_t *merged)
{
    uint64_t key = ((uint64_t)(uint32_t)a + 1) << 32 | (uint32_t)b;
    for (uint64_t i = hash_u64(key) & t->merge_mask;; i = (i + 1) & t->merge_mask) {
        uint64_t k = t->merge_keys[i];
        if (k == key) {
            *rank = (uint32_t)(t->merge_vals[i] >> 32);
            *merged = (int32_t)(uint32_t)t->merge_vals[i];
            return 1;
        }
        if (k == 0)
            return 0;
    }
}

/* GPT-2's byte-level alphabet: printable bytes stand for themselves, the
 * others (controls, space, 127-160, 173) for code points 256, 257, ... */
static uint32_t byte_to_cp(int b)
{
    if ((b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255))
        return (uint32_t)b;
    int n = 0;
    for (int c = 0; c < b; c++)
        if (!((c >= 33 && c <= 126) || (c >= 161 && c <= 172) || (c >= 174 && c <= 255)))
            n++;
    return 256u + (uint32_t)n;
}

static int load_vocab(tokenizer *t, const gguf_file *f, smq_err *err)
{
    const gguf_array *tokens, *types = NULL;
    if (gguf_get_arr(f, "tokenizer.ggml.tokens", GGUF_TYPE_STRING, &tokens, err))
        return -1;
    if (tokens->count == 0 || tokens->count > INT32_MAX)
        return smq_err_set(err, "%s: tokenizer.ggml.tokens has %" PRIu64 " entries", f->path, tokens->count);
    t->n_vocab = (uint32_t)tokens->count;
    if (gguf_find_kv(f, "tokenizer.ggml.token_type")) {
        if (gguf_get_arr(f, "tokenizer.ggml.token_type", GGUF_TYPE_COUNT, &types, err))
            return -1;
        if (types->count != tokens->count || !gguf_type_size(types->elem_type))
            return smq_err_set(err, "%s: tokenizer.ggml.token_type has %" PRIu64 " %s entries for %" PRIu64 " tokens",
                               f->path, types->count, gguf_type_name(types->elem_type), tokens->count);
    }
    uint64_t total = 0;
    for (uint32_t i = 0; i < t->n_vocab; i++)
        total += tokens->strs[i].len + 1;
    if (total > UINT32_MAX)
        return smq_err_set(err, "%s: vocabulary strings take %" PRIu64 " bytes", f->path, total);
    t->texts = malloc(total);
    t->text_off = malloc(t->n_vocab * sizeof *t->text_off);
    t->text_len = malloc(t->n_vocab * sizeof *t->text_len);
    t->types = malloc(t->n_vocab);
    t->tok_mask = table_size(t->n_vocab) - 1;
    t->tok_slots = calloc(t->tok_mask + 1, sizeof *t->tok_slots);
    if (!t->texts || !t->text_off || !t->text_len || !t->types || !t->tok_slots)
        return smq_err_set(err, "%s: out of memory for the vocabulary", f->path);
    uint32_t off = 0;
    for (uint32_t i = 0; i < t->n_vocab; i++) {
        const gguf_str *s = &tokens->strs[i];
        memcpy(t->texts + off, s->ptr, s->len);
        t->texts[off + s->len] = 0;
        t->text_off[i] = off;
        t->text_len[i] = (uint32_t)s->len;
        off += (uint32_t)s->len + 1;
        int64_t ty = TOKEN_NORMAL;
        if (types && (gguf_arr_i64(types, i, &ty) || ty < 0 || ty > TOKEN_BYTE))
            return smq_err_set(err, "%s: tokenizer.ggml.token_type[%" PRIu32 "] is not a token type (0..6)", f->path,
                               i);
        t->types[i] = (uint8_t)ty;
        /* First entry wins for duplicate strings, as a map insert would. */
        if (tokenizer_find(t, s->ptr, s->len) < 0) {
            uint64_t h = hash_bytes(s->ptr, s->len) & t->tok_mask;
            while (t->tok_slots[h])
                h = (h + 1) & t->tok_mask;
            t->tok_slots[h] = i + 1;
        }
    }

    for (int b = 0; b < 256; b++) {
        char u[4];
        size_t n = utf8_encode(byte_to_cp(b), u);
        t->byte_tok[b] = tokenizer_find(t, u, n);
        if (t->byte_tok[b] < 0)
            return smq_err_set(err, "%s: the vocabulary lacks the byte-level token for byte 0x%02x", f->path, b);
    }
    for (int c = 0; c < 324; c++)
        t->cp_byte[c] = -1;
    for (int b = 0; b < 256; b++)
        t->cp_byte[byte_to_cp(b)] = (int16_t)b;
    return 0;
}

static int load_merges(tokenizer *t, const gguf_file *f, smq_err *err)
{
    const gguf_array *merges;
    if (gguf_get_arr(f, "tokenizer.ggml.merges", GGUF_TYPE_STRING, &merges, err))
        return -1;
    if (merges->count > UINT32_MAX / 2)
        return smq_err_set(err, "%s: %" PRIu64 " merges", f->path, merges->count);
    t->merge_mask = table_size(merges->count) - 1;
    t->merge_keys = calloc(t->merge_mask + 1, sizeof *t->merge_keys);
    t->merge_vals = malloc((t->merge_mask + 1) * sizeof *t->merge_vals);
    char *joined = malloc(1024);
    if (!t->merge_keys || !t->merge_vals || !joined) {
        free(joined);
        return smq_err_set(err, "%s: out of memory for the merges", f->path);
    }
    int rc = 0;
    for (uint32_t r = 0; r < merges->count && !rc; r++) {
        const gguf_str *m = &merges->strs[r];
        const char *sp = memchr(m->ptr, ' ', m->len);
        if (!sp || sp == m->ptr || sp == m->ptr + m->len - 1 || m->len > 1023) {
            rc = smq_err_set(err, "%s: tokenizer.ggml.merges[%" PRIu32 "] is not \"LEFT RIGHT\"", f->path, r);
            break;
        }
        size_t la = (size_t)(sp - m->ptr), lb = m->len - la - 1;
        int32_t a = tokenizer_find(t, m->ptr, la), b = tokenizer_find(t, sp + 1, lb);
        memcpy(joined, m->ptr, la);
        memcpy(joined + la, sp + 1, lb);
        int32_t ab = tokenizer_find(t, joined, la + lb);
        /* A merge whose parts or result are not tokens can never apply. */
        if (a < 0 || b < 0 || ab < 0)
            continue;
        uint64_t key = ((uint64_t)(uint32_t)a + 1) << 32 | (uint32_t)b;
        uint64_t i = hash_u64(key) & t->merge_mask;
        while (t->merge_keys[i] && t->merge_keys[i] != key)
            i = (i + 1) & t->merge_mask;
        if (t->merge_keys[i])
            continue; /* the lower rank (seen first) wins */
        t->merge_keys[i] = key;
        t->merge_vals[i] = (uint64_t)r << 32 | (uint32_t)ab;
    }
    free(joined);
    return rc;
}

static int cmp_special(const void *pa, const void *pb)
{
    const special_token *a = pa, *b = pb;
    uint8_t fa = (uint8_t)a->text[0], fb = (uint8_t)b->text[0];
    if (fa != fb)
        return fa < fb ? -1 : 1;
    if (a->len != b->len)
        return a->len > b->len ? -1 : 1;
    return a->id < b->id ? -1 : a->id > b->id;
}

/* Added tokens are matched as whole strings before the regex runs. */
static int index_specials(tokenizer *t, smq_err *err)
{
    uint32_t n = 0;
    for (uint32_t i = 0; i < t->n_vocab; i++)
        if ((t->types[i] == TOKEN_CONTROL || t->types[i] == TOKEN_USER_DEFINED || t->types[i] == TOKEN_UNKNOWN) &&
            t->text_len[i] > 0)
            n++;
    t->specials = malloc((n ? n : 1) * sizeof *t->specials);
    if (!t->specials)
        return smq_err_set(err, "out of memory");
    n = 0;
    for (uint32_t i = 0; i < t->n_vocab; i++) {
        if (!((t->types[i] == TOKEN_CONTROL || t->types[i] == TOKEN_USER_DEFINED || t->types[i] == TOKEN_UNKNOWN) &&
              t->text_len[i] > 0))
            continue;
        const char *text = t->texts + t->text_off[i];
        if (!utf8_valid(text, t->text_len[i], 0))
            continue; /* could never be matched at a character boundary */
        t->specials[n++] = (special_token){ (int32_t)i, t->text_len[i], text, t->types[i] };
    }
    t->n_specials = n;
    qsort(t->specials, n, sizeof *t->specials, cmp_special);
    uint32_t k = 0;
    for (int b = 0; b < 256; b++) {
        t->special_first[b] = k;
        while (k < n && (uint8_t)t->specials[k].text[0] == b)
            k++;
    }
    t->special_first[256] = n;
    return 0;
}

/* What each token decodes to (llama.cpp's token_to_piece), computed once. */
static int build_pieces(tokenizer *t, smq_err *err)
{
    uint64_t total = 0;
    for (uint32_t i = 0; i < t->n_vocab; i++)
        total += t->text_len[i];
    t->pieces = malloc(total ? total : 1);
    t->piece_off = malloc(t->n_vocab * sizeof *t->piece_off);
    t->piece_len = malloc(t->n_vocab * sizeof *t->piece_len);
    if (!t->pieces || !t->piece_off || !t->piece_len)
        return smq_err_set(err, "out of memory");
    uint32_t off = 0;
    for (uint32_t i = 0; i < t->n_vocab; i++) {
        const char *s = t->texts + t->text_off[i];
        size_t n = t->text_len[i];
        t->piece_off[i] = off;
        if (t->types[i] == TOKEN_NORMAL || t->types[i] == TOKEN_UNDEFINED) {
            /* Byte-level characters back to bytes; anything else (not in a
             * well-formed vocabulary) is kept as it is. */
            size_t j = 0;
            while (j < n) {
                uint32_t cp;
                int len = utf8_next(s + j, n - j, &cp);
                if (len == 0) {
                    t->pieces[off++] = s[j++];
                } else if (cp < 324 && t->cp_byte[cp] >= 0) {
                    t->pieces[off++] = (char)t->cp_byte[cp];
                    j += (size_t)len;
                } else {
                    memcpy(t->pieces + off, s + j, (size_t)len);
                    off += (uint32_t)len;
                    j += (size_t)len;
                }
            }
        } else if (t->types[i] == TOKEN_CONTROL || t->types[i] == TOKEN_USER_DEFINED) {
            memcpy(t->pieces + off, s, n);
            off += (uint32_t)n;
        }
        t->piece_len[i] = off - t->piece_off[i];
    }
    return 0;
}

static int compile_regex(tokenizer *t, smq_err *err)
{
    int code;
    PCRE2_SIZE at;
    t->re = pcre2_compile((PCRE2_SPTR)t->pre->regex, PCRE2_ZERO_TERMINATED, PCRE2_UTF | PCRE2_UCP, &code, &at, NULL);
    if (!t->re) {
        PCRE2_UCHAR msg[256];
        pcre2_get_error_message(code, msg, sizeof msg);
        return smq_err_set(err, "pre-tokenizer %s: regex error at %zu: %s", t->pre_name, (size_t)at, (char *)msg);
    }
    t->jit = pcre2_jit_compile(t->re, PCRE2_JIT_COMPLETE) == 0;
    t->md = pcre2_match_data_create_from_pattern(t->re, NULL);
    if (!t->md)
        return smq_err_set(err, "out of memory");
    return 0;
}

static int special_id(const gguf_file *f, const char *key, uint32_t n_vocab, int32_t *out, smq_err *err)
{
    uint32_t id;
    *out = -1;
    if (!gguf_find_kv(f, key))
        return 0;
    if (gguf_get_u32(f, key, &id, err))
        return -1;
    if (id >= n_vocab)
        return smq_err_set(err, "%s: %s is %" PRIu32 ", past the vocabulary of %" PRIu32, f->path, key, id, n_vocab);
    *out = (int32_t)id;
    return 0;
}

tokenizer *tokenizer_load(const gguf_file *f, smq_err *err)
{
    gguf_str model, pre;
    if (gguf_get_str(f, "tokenizer.ggml.model", &model, err))
        return NULL;
    if (model.len != 4 || memcmp(model.ptr, "gpt2", 4)) {
        smq_err_set(err, "%s: tokenizer.ggml.model is \"%.*s\"; only byte-level BPE (\"gpt2\") is supported", f->path,
                    (int)(model.len > 64 ? 64 : model.len), model.ptr);
        return NULL;
    }
    if (!gguf_find_kv(f, "tokenizer.ggml.pre")) {
        pre.ptr = "default";
        pre.len = 7;
    } else if (gguf_get_str(f, "tokenizer.ggml.pre", &pre, err)) {
        return NULL;
    }
    tokenizer *t = calloc(1, sizeof *t);
    if (!t) {
        smq_err_set(err, "out of memory");
        return NULL;
    }
    t->pre = find_pre(pre.ptr, pre.len);
    t->pre_name = strndup(pre.ptr, pre.len);
    if (!t->pre) {
        smq_err_set(err, "%s: unsupported pre-tokenizer \"%.*s\" (supported: smaug-bpe, llama-bpe, gpt2)", f->path,
                    (int)(pre.len > 64 ? 64 : pre.len), pre.ptr);
        tokenizer_destroy(&t);
        return NULL;
    }
    t->cache_slots = calloc(CACHE_SLOTS, sizeof *t->cache_slots);
    t->cache = malloc(CACHE_SLOTS / 2 * sizeof *t->cache);
    t->cache_keys = malloc(CACHE_KEY_BYTES);
    t->cache_ids = malloc(CACHE_MAX_IDS * sizeof *t->cache_ids);
    if (!t->pre_name || !t->cache_slots || !t->cache || !t->cache_keys || !t->cache_ids) {
        smq_err_set(err, "out of memory");
        tokenizer_destroy(&t);
        return NULL;
    }
    if (load_vocab(t, f, err) || load_merges(t, f, err) || index_specials(t, err) || build_pieces(t, err) ||
        compile_regex(t, err) || special_id(f, "tokenizer.ggml.bos_token_id", t->n_vocab, &t->bos, err) ||
        special_id(f, "tokenizer.ggml.eos_token_id", t->n_vocab, &t->eos, err) ||
        special_id(f, "tokenizer.ggml.padding_token_id", t->n_vocab, &t->pad, err)) {
        tokenizer_destroy(&t);
        return NULL;
    }
    return t;
}

void tokenizer_destroy(tokenizer **self)
{
    tokenizer *t = *self;
    if (!t)
        return;
    free(t->texts);
    free(t->text_off);
    free(t->text_len);
    free(t->pieces);
    free(t->piece_off);
    free(t->piece_len);
    free(t->types);
    free(t->tok_slots);
    free(t->merge_keys);
    free(t->merge_vals);
    free(t->specials);
    free(t->pre_name);
    if (t->md)
        pcre2_match_data_free(t->md);
    if (t->re)
        pcre2_code_free(t->re);
    free(t->cache_slots);
    free(t->cache);
    free(t->cache_keys);
    free(t->cache_ids);
    free(t->syms);
    free(t->heap);
    free(t);
    *self = NULL;
}

/* ---- BPE on one word ---- */

static int pair_less(const bpe_pair *a, const bpe_pair *b)
{
    return a->rank < b->rank || (a->rank == b->rank && a->left < b->left);
}

static void heap_push(bpe_pair *h, size_t *n, bpe_pair p)
{
    size_t i = (*n)++;
    while (i > 0) {
        size_t parent = (i - 1) / 2;
        if (!pair_less(&p, &h[parent]))
            break;
        h[i] = h[parent];
        i = parent;
    }
    h[i] = p;
}

static bpe_pair heap_pop(bpe_pair *h, size_t *n)
{
    bpe_pair top = h[0], last = h[--*n];
    size_t i = 0;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= *n)
            break;
        if (c + 1 < *n && pair_less(&h[c + 1], &h[c]))
            c++;
        if (!pair_less(&h[c], &last))
            break;
        h[i] = h[c];
        i = c;
    }
    if (*n)
        h[i] = last;
    return top;
}

static void push_pair(tokenizer *t, size_t *n_heap, int32_t left)
{
    int32_t right = t->syms[left].next;
    if (left < 0 || right < 0)
        return;
    uint32_t rank;
    int32_t merged;
    if (merge_lookup(t, t->syms[left].id, t->syms[right].id, &rank, &merged))
        heap_push(t->heap, n_heap, (bpe_pair){ rank, left, t->syms[left].id, t->syms[right].id });
}

/* Merges the bytes of one word into tokens, appending them to out. */
static int bpe_word(tokenizer *t, const char *w, size_t n, tok_ids *out)
{
    if (t->pre->ignore_merges) {
        int32_t id = tokenizer_find(t, w, n);
        if (id >= 0)
            return tok_ids_push(out, id);
    }
    if (n > t->syms_cap) {
        size_t cap = n < 256 ? 256 : n;
        bpe_sym *s = realloc(t->syms, cap * sizeof *s);
        bpe_pair *h = s ? realloc(t->heap, cap * sizeof *h) : NULL;
        if (s)
            t->syms = s;
        if (h)
            t->heap = h;
        if (!s || !h)
            return -1;
        t->syms_cap = t->heap_cap = cap;
    }
    for (size_t i = 0; i < n; i++)
        t->syms[i] = (bpe_sym){ t->byte_tok[(uint8_t)w[i]], (int32_t)i - 1, i + 1 < n ? (int32_t)i + 1 : -1 };
    size_t n_heap = 0;
    for (size_t i = 0; i + 1 < n; i++)
        push_pair(t, &n_heap, (int32_t)i);
    while (n_heap) {
        bpe_pair p = heap_pop(t->heap, &n_heap);
        bpe_sym *l = &t->syms[p.left];
        /* Stale: the left symbol was merged away or changed, or its right
         * neighbour is no longer the one this pair was made with. */
        if (l->id != p.id_l || l->next < 0 || t->syms[l->next].id != p.id_r)
            continue;
        uint32_t rank;
        int32_t merged;
        merge_lookup(t, p.id_l, p.id_r, &rank, &merged);
        int32_t r = l->next;
        l->id = merged;
        l->next = t->syms[r].next;
        if (l->next >= 0)
            t->syms[l->next].prev = p.left;
        t->syms[r].id = -1; /* dead */
        if (l->prev >= 0)
            push_pair(t, &n_heap, l->prev);
        push_pair(t, &n_heap, p.left);
    }
    for (int32_t i = 0; i >= 0; i = t->syms[i].next)
        if (tok_ids_push(out, t->syms[i].id))
            return -1;
    return 0;
}

static void cache_clear(tokenizer *t)
{
    memset(t->cache_slots, 0, CACHE_SLOTS * sizeof *t->cache_slots);
    t->n_cache = 0;
    t->cache_keys_len = 0;
    t->cache_ids_len = 0;
}

/* A word through the cache: most words of real text repeat. */
static int encode_word(tokenizer *t, const char *w, size_t n, tok_ids *out)
{
    if (n > CACHE_MAX_WORD)
        return bpe_word(t, w, n, out);
    uint64_t h = hash_bytes(w, n);
    uint32_t slot = (uint32_t)h & (CACHE_SLOTS - 1);
    for (;; slot = (slot + 1) & (CACHE_SLOTS - 1)) {
        uint32_t e = t->cache_slots[slot];
        if (!e)
            break;
        const cache_entry *c = &t->cache[e - 1];
        if (c->hash == h && c->key_len == n && !memcmp(t->cache_keys + c->key_off, w, n)) {
            for (uint32_t i = 0; i < c->n_ids; i++)
                if (tok_ids_push(out, t->cache_ids[c->ids_off + i]))
                    return -1;
            return 0;
        }
    }
    size_t before = out->n;
    if (bpe_word(t, w, n, out))
        return -1;
    uint32_t n_ids = (uint32_t)(out->n - before);
    if (t->n_cache + 1 >= CACHE_SLOTS / 2 || t->cache_keys_len + n > CACHE_KEY_BYTES ||
        t->cache_ids_len + n_ids > CACHE_MAX_IDS) {
        cache_clear(t);
        for (slot = (uint32_t)h & (CACHE_SLOTS - 1); t->cache_slots[slot]; slot = (slot + 1) & (CACHE_SLOTS - 1))
            ;
    }
    cache_entry *c = &t->cache[t->n_cache];
    *c = (cache_entry){ h, t->cache_keys_len, (uint32_t)n, t->cache_ids_len, n_ids };
    memcpy(t->cache_keys + c->key_off, w, n);
    memcpy(t->cache_ids + c->ids_off, out->ids + before, n_ids * sizeof *out->ids);
    t->cache_keys_len += (uint32_t)n;
    t->cache_ids_len += n_ids;
    t->cache_slots[slot] = ++t->n_cache;
    return 0;
}

/* Text between added tokens: the regex's words, each merged. */
static int encode_fragment(tokenizer *t, const char *s, size_t n, tok_ids *out, smq_err *err)
{
    size_t at = 0;
    while (at < n) {
        int rc = t->jit ? pcre2_jit_match(t->re, (PCRE2_SPTR)s, n, at, PCRE2_NO_UTF_CHECK, t->md, NULL)
                        : pcre2_match(t->re, (PCRE2_SPTR)s, n, at, PCRE2_NO_UTF_CHECK, t->md, NULL);
        size_t a, b;
        if (rc >= 0) {
            PCRE2_SIZE *ov = pcre2_get_ovector_pointer(t->md);
            a = ov[0];
            b = ov[1];
        } else if (rc == PCRE2_ERROR_NOMATCH) {
            a = b = n;
        } else {
            return smq_err_set(err, "pre-tokenizer regex failed (PCRE2 error %d)", rc);
        }
        /* Text the regex skips (it matches everything for the known
         * patterns) is still encoded, as one word. */
        if (a > at && encode_word(t, s + at, a - at, out))
            return smq_err_set(err, "out of memory");
        if (b == a) { /* empty match: step over one character */
            if (a >= n)
                break;
            uint32_t cp;
            int len = utf8_next(s + a, n - a, &cp);
            b = a + (size_t)(len ? len : 1);
            if (encode_word(t, s + a, b - a, out))
                return smq_err_set(err, "out of memory");
        } else if (encode_word(t, s + a, b - a, out)) {
            return smq_err_set(err, "out of memory");
        }
        at = b;
    }
    return 0;
}

int tokenizer_encode(tokenizer *t, const char *text, size_t len, int parse_special, tok_ids *out, smq_err *err)
{
    const size_t all[1][2] = { { 0, len } };
    return tokenizer_encode_spans(t, text, len, all, parse_special ? 0 : 1, out, err);
}

int tokenizer_encode_spans(tokenizer *t, const char *text, size_t len, const size_t (*plain)[2], size_t n_plain,
                           tok_ids *out, smq_err *err)
{
    char *copy = NULL;
    const char *s = text;
    if (!utf8_valid(text, len, 1)) {
        copy = utf8_sanitize(text, len, &len);
        if (!copy)
            return smq_err_set(err, "out of memory for %zu bytes of text", len);
        s = copy;
        /* the ranges no longer line up: all of it is plain text */
        static const size_t everything[1][2] = { { 0, SIZE_MAX } };
        plain = n_plain ? everything : plain;
        n_plain = n_plain ? 1 : 0;
    }
    int rc = 0;
    size_t frag = 0, i = 0, k = 0; /* plain[k]: the first range not behind i */
    while (i < len && !rc) {
        uint8_t c = (uint8_t)s[i];
        while (k < n_plain && plain[k][1] <= i)
            k++;
        /* control tokens only where the whole of them lies outside the plain ranges */
        size_t room = k == n_plain ? len - i : plain[k][0] > i ? plain[k][0] - i : 0;
        const special_token *hit = NULL;
        for (uint32_t j = t->special_first[c]; j < t->special_first[c + 1]; j++) {
            const special_token *sp = &t->specials[j];
            if (sp->type != TOKEN_USER_DEFINED && sp->len > room)
                continue;
            if (sp->len <= len - i && !memcmp(s + i, sp->text, sp->len)) {
                hit = sp; /* longest first */
                break;
            }
        }
        if (!hit) {
            i++;
            continue;
        }
        rc = encode_fragment(t, s + frag, i - frag, out, err);
        if (!rc && tok_ids_push(out, hit->id))
            rc = smq_err_set(err, "out of memory");
        i += hit->len;
        frag = i;
    }
    if (!rc)
        rc = encode_fragment(t, s + frag, len - frag, out, err);
    free(copy);
    return rc;
}

/* ---- decoding ---- */

const char *tokenizer_piece(const tokenizer *t, int32_t id, int special, size_t *len)
{
    if (id < 0 || (uint32_t)id >= t->n_vocab) {
        *len = 0;
        return NULL;
    }
    *len = (t->types[id] == TOKEN_CONTROL && !special) ? 0 : t->piece_len[id];
    return t->pieces + t->piece_off[id];
}

int tokenizer_clean_spaces(const tokenizer *t)
{
    return t->pre->clean_spaces;
}
