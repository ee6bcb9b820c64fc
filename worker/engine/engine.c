/* engine.c - see engine.h. The life of a sequence:
 *
 *   queued --admit--> running --(prefill chunks, then one token a step)--> finished
 *
 * Admission reuses the longest cached prefix (pages of finished sequences
 * whose tokens equal the start of the new prompt): whole pages are shared,
 * a partly matching last page is copied, and only the rest is prefilled.
 * Pages are allocated as positions are reached; when the pool runs dry the
 * prefix cache gives pages back first, and a sequence that still cannot get
 * one waits (running sequences are never disturbed).
 */
#include "engine.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "kv_pages.h"

enum seq_state { SEQ_QUEUED, SEQ_RUNNING, SEQ_DONE };

typedef struct sequence {
    uint64_t id;
    void *user;
    enum seq_state state;
    int cancel;
    int32_t *tokens; /* prompt, then generated */
    uint32_t n_tokens, cap_tokens;
    uint32_t n_prompt, n_generated, n_reused;
    uint32_t n_thinking; /* generated tokens of the thinking block, its markers included */
    uint32_t pos;        /* tokens[0..pos) are in the KV cache */
    uint32_t *pages;
    uint32_t n_pages, cap_pages;
    sampler smp;
    uint32_t max_tokens;
    char *stop[ENGINE_MAX_STOP];
    uint32_t n_stop;
    detok_stream detok;
    int reasoning; /* inside <think> ... </think> */
    sbuf held;     /* text of the current channel held back for stop strings */
    float *logits;
    sample_pick pick; /* this step's pick: the backend may choose the token itself (pick.token >= 0) */
    int picking;      /* the pick was prepared: the step samples */
    uint32_t chunk;   /* tokens fed this step */
    struct sequence *next;
} sequence;

typedef struct prefix_entry {
    int32_t *tokens;
    uint32_t n;
    uint32_t *pages;
    uint32_t n_pages;
    uint64_t last_used;
} prefix_entry;

struct engine {
    const model *m;
    tokenizer *tok;
    backend *b;
    engine_config cfg;
    kv_pool pool;
    sequence *head, *tail;
    uint32_t n_running;
    uint64_t next_id, clock;
    prefix_entry *prefix;
    uint32_t n_prefix;
    int32_t think_open, think_close;
    uint8_t *eog; /* per token: ends a turn */
    float *scratch_logits;
    fwd_seq *fs;
    sequence **fs_seq;
    uint32_t cap_fs;
    void (*progress)(void *ctx); /* engine_set_progress */
    void *progress_ctx;
};

const char *finish_reason_name(finish_reason r)
{
    static const char *names[] = { "none", "eog", "stop_string", "length", "context_full", "cancelled", "error" };
    return (unsigned)r < sizeof names / sizeof names[0] ? names[r] : "?";
}

/* ---- setup ---- */

static void mark_eog(engine *e)
{
    /* The model's end-of-sequence token, and the turn enders llama.cpp
     * treats as end of generation when the vocabulary has them. */
    static const char *enders[] = { "<|im_end|>",    "<|eot_id|>", "<|eom_id|>",   "<|end_of_text|>",
                                    "<|endoftext|>", "<|end|>",    "<end_of_turn>" };
    if (tokenizer_eos(e->tok) >= 0)
        e->eog[tokenizer_eos(e->tok)] = 1;
    for (size_t i = 0; i < sizeof enders / sizeof enders[0]; i++) {
        int32_t id = tokenizer_find(e->tok, enders[i], strlen(enders[i]));
        if (id >= 0 && tokenizer_token_type(e->tok, id) == TOKEN_CONTROL)
            e->eog[id] = 1;
    }
}

engine *engine_new(const model *m, tokenizer *t, const backend_ops *ops, const engine_config *cfg, smq_err *err)
{
    if (tokenizer_n_vocab(t) != m->hp.n_vocab) {
        smq_err_set(err, "the tokenizer has %" PRIu32 " tokens, the model %" PRIu32, tokenizer_n_vocab(t),
                    m->hp.n_vocab);
        return NULL;
    }
    if (m->hp.n_vocab > SC_MAX_VOCAB) {
        smq_err_set(err, "a vocabulary of %" PRIu32 " tokens: the sampler takes up to %u", m->hp.n_vocab,
                    (unsigned)SC_MAX_VOCAB);
        return NULL;
    }
    engine *e = calloc(1, sizeof *e);
    if (!e) {
        smq_err_set(err, "out of memory");
        return NULL;
    }
    e->m = m;
    e->tok = t;
    e->cfg = *cfg;
    engine_config *c = &e->cfg;
    if (!c->n_ctx)
        c->n_ctx = model_context(m);
    if (c->n_ctx > model_context(m)) {
        smq_err_set(err, "a context of %" PRIu32 " is past the model's %" PRIu32, c->n_ctx, model_context(m));
        free(e);
        return NULL;
    }
    if (!c->page_size)
        c->page_size = 16;
    if (!c->n_pages)
        c->n_pages = (c->n_ctx + c->page_size - 1) / c->page_size;
    if (!c->max_step_tokens)
        c->max_step_tokens = 512;
    if (!c->max_seqs)
        c->max_seqs = 64;
    if (!c->prefix_entries)
        c->prefix_entries = 16;
    e->next_id = 1;
    backend_config bc = { c->n_pages, c->page_size, c->n_threads, c->exact, c->gpu };
    e->b = ops->create(m, &bc, err);
    e->eog = calloc(m->hp.n_vocab, 1);
    e->scratch_logits = malloc(m->hp.n_vocab * sizeof(float));
    e->prefix = calloc(c->prefix_entries, sizeof *e->prefix);
    if (!e->b || !e->eog || !e->scratch_logits || !e->prefix || kv_pool_init(&e->pool, c->n_pages, c->page_size)) {
        if (e->b)
            smq_err_set(err, "out of memory");
        engine_destroy(&e);
        return NULL;
    }
    e->think_open = tokenizer_find(t, "<think>", 7);
    e->think_close = tokenizer_find(t, "</think>", 8);
    mark_eog(e);
    return e;
}

static void seq_free(engine *e, sequence *s)
{
    for (uint32_t i = 0; i < s->n_pages; i++)
        kv_page_release(&e->pool, s->pages[i]);
    for (uint32_t i = 0; i < s->n_stop; i++)
        free(s->stop[i]);
    sampler_free(&s->smp);
    sbuf_free(&s->held);
    free(s->tokens);
    free(s->pages);
    free(s->logits);
    free(s);
}

static void prefix_drop(engine *e, uint32_t i)
{
    prefix_entry *p = &e->prefix[i];
    for (uint32_t k = 0; k < p->n_pages; k++)
        kv_page_release(&e->pool, p->pages[k]);
    free(p->tokens);
    free(p->pages);
    e->prefix[i] = e->prefix[--e->n_prefix];
}

void engine_destroy(engine **self)
{
    engine *e = *self;
    if (!e)
        return;
    while (e->head) {
        sequence *s = e->head;
        e->head = s->next;
        seq_free(e, s);
    }
    while (e->n_prefix)
        prefix_drop(e, 0);
    if (e->b)
        e->b->ops->destroy(&e->b);
    kv_pool_free(&e->pool);
    free(e->prefix);
    free(e->eog);
    free(e->scratch_logits);
    free(e->fs);
    free(e->fs_seq);
    free(e);
    *self = NULL;
}

/* ---- submitting ---- */

uint64_t engine_submit(engine *e, const seq_request *r, smq_err *err)
{
    if (r->n_prompt == 0)
        return smq_err_set(err, "the prompt is empty"), 0;
    if (r->n_prompt >= e->cfg.n_ctx)
        return smq_err_set(
                   err, "the prompt has %" PRIu32 " tokens; the context holds %" PRIu32 " (prompt and answer together)",
                   r->n_prompt, e->cfg.n_ctx),
               0;
    uint32_t need = (r->n_prompt + 1 + e->cfg.page_size - 1) / e->cfg.page_size;
    if (need > e->cfg.n_pages)
        return smq_err_set(err, "the prompt needs %" PRIu32 " KV pages; the pool has %" PRIu32, need, e->cfg.n_pages),
               0;
    for (uint32_t i = 0; i < r->n_prompt; i++)
        if (r->prompt[i] < 0 || (uint32_t)r->prompt[i] >= e->m->hp.n_vocab)
            return smq_err_set(err, "prompt token %" PRIu32 " (%" PRId32 ") is outside the vocabulary", i,
                               r->prompt[i]),
                   0;
    if (sampling_validate(&r->sampling, err) || r->n_stop > ENGINE_MAX_STOP)
        return r->n_stop > ENGINE_MAX_STOP ? (smq_err_set(err, "at most %d stop strings", ENGINE_MAX_STOP), 0) : 0;
    sequence *s = calloc(1, sizeof *s);
    if (!s)
        return smq_err_set(err, "out of memory"), 0;
    s->cap_tokens = r->n_prompt + 64;
    s->tokens = malloc(s->cap_tokens * sizeof *s->tokens);
    s->logits = malloc(e->m->hp.n_vocab * sizeof *s->logits);
    int oom = !s->tokens || !s->logits;
    for (uint32_t i = 0; i < r->n_stop && !oom; i++) {
        if (!r->stop[i] || !r->stop[i][0])
            continue;
        if (!(s->stop[s->n_stop++] = strdup(r->stop[i])))
            oom = 1;
    }
    if (oom) {
        seq_free(e, s);
        return smq_err_set(err, "out of memory"), 0;
    }
    memcpy(s->tokens, r->prompt, r->n_prompt * sizeof *s->tokens);
    s->n_tokens = s->n_prompt = r->n_prompt;
    s->id = e->next_id++;
    s->user = r->user;
    s->max_tokens = r->max_tokens;
    sampler_init(&s->smp, &r->sampling);
    detok_init(&s->detok, e->tok, 0);
    if (e->tail)
        e->tail->next = s;
    else
        e->head = s;
    e->tail = s;
    return s->id;
}

int engine_cancel(engine *e, uint64_t id)
{
    for (sequence *s = e->head; s; s = s->next)
        if (s->id == id && s->state != SEQ_DONE) {
            s->cancel = 1;
            return 0;
        }
    return -1;
}

/* ---- pages ---- */

/* A page, taking one back from the prefix cache (least recently used
 * first) when none is free. -1 when there is none. */
static int64_t page_get(engine *e)
{
    int64_t p;
    while ((p = kv_page_alloc(&e->pool)) < 0 && e->n_prefix) {
        uint32_t lru = 0;
        for (uint32_t i = 1; i < e->n_prefix; i++)
            if (e->prefix[i].last_used < e->prefix[lru].last_used)
                lru = i;
        prefix_drop(e, lru);
    }
    return p;
}

static int seq_push_page(sequence *s, uint32_t page)
{
    if (s->n_pages == s->cap_pages) {
        uint32_t cap = s->cap_pages ? s->cap_pages * 2 : 8;
        uint32_t *p = realloc(s->pages, cap * sizeof *p);
        if (!p)
            return -1;
        s->pages = p;
        s->cap_pages = cap;
    }
    s->pages[s->n_pages++] = page;
    return 0;
}

/* Pages for positions up to end (exclusive); returns how many positions are
 * covered (may be less than end when the pool is exhausted). */
static uint32_t cover(engine *e, sequence *s, uint32_t end)
{
    uint32_t P = e->cfg.page_size;
    while (s->n_pages * P < end) {
        int64_t p = page_get(e);
        if (p < 0)
            break;
        if (seq_push_page(s, (uint32_t)p)) {
            kv_page_release(&e->pool, (uint32_t)p);
            break;
        }
    }
    return s->n_pages * P < end ? s->n_pages * P : end;
}

/* Reuses the longest cached prefix of s's prompt (leaving at least one
 * token to compute, for the logits). */
static int reuse_prefix(engine *e, sequence *s, smq_err *err)
{
    uint32_t best_len = 0, best = 0, P = e->cfg.page_size;
    for (uint32_t i = 0; i < e->n_prefix; i++) {
        const prefix_entry *p = &e->prefix[i];
        uint32_t n = p->n < s->n_prompt - 1 ? p->n : s->n_prompt - 1, k = 0;
        while (k < n && p->tokens[k] == s->tokens[k])
            k++;
        if (k > best_len)
            best_len = k, best = i;
    }
    if (best_len == 0)
        return 0;
    prefix_entry *p = &e->prefix[best];
    p->last_used = ++e->clock;
    uint32_t full = best_len / P, rest = best_len % P;
    for (uint32_t k = 0; k < full; k++) {
        kv_page_retain(&e->pool, p->pages[k]);
        if (seq_push_page(s, p->pages[k])) {
            kv_page_release(&e->pool, p->pages[k]);
            return smq_err_set(err, "out of memory");
        }
    }
    if (rest) {
        /* The partly matching page is copied: s will write after it. */
        int64_t page = kv_page_alloc(&e->pool);
        if (page < 0 || seq_push_page(s, (uint32_t)page)) {
            if (page >= 0)
                kv_page_release(&e->pool, (uint32_t)page);
            best_len = full * P; /* share only the whole pages */
        } else {
            uint32_t dst = (uint32_t)page;
            if (e->b->ops->copy_kv(e->b, &p->pages[full], &dst, rest, err))
                return -1;
        }
    }
    s->pos = s->n_reused = best_len;
    return 0;
}

/* A finished sequence's cache becomes a prefix entry (its pages move). */
static void keep_prefix(engine *e, sequence *s)
{
    if (s->pos == 0 || e->cfg.prefix_entries == 0)
        return;
    if (e->n_prefix == e->cfg.prefix_entries) {
        uint32_t lru = 0;
        for (uint32_t i = 1; i < e->n_prefix; i++)
            if (e->prefix[i].last_used < e->prefix[lru].last_used)
                lru = i;
        prefix_drop(e, lru);
    }
    uint32_t P = e->cfg.page_size, n_pages = (s->pos + P - 1) / P;
    int32_t *toks = malloc(s->pos * sizeof *toks);
    if (!toks)
        return;
    memcpy(toks, s->tokens, s->pos * sizeof *toks);
    /* Pages past the cached positions (allocated ahead) go back now. */
    for (uint32_t i = n_pages; i < s->n_pages; i++)
        kv_page_release(&e->pool, s->pages[i]);
    e->prefix[e->n_prefix++] = (prefix_entry){ toks, s->pos, s->pages, n_pages, ++e->clock };
    s->pages = NULL;
    s->n_pages = s->cap_pages = 0;
}

/* ---- text: thinking split, stop strings ---- */

typedef struct deltas {
    sbuf reasoning, content;
} deltas;

static sbuf *channel(sequence *s, deltas *d)
{
    return s->reasoning ? &d->reasoning : &d->content;
}

/* Emits the held text of the current channel up to n bytes. */
static void emit_held(sequence *s, deltas *d, size_t n)
{
    if (!s->held.data)
        return; /* nothing held yet */
    sbuf_append(channel(s, d), s->held.data, n);
    memmove(s->held.data, s->held.data + n, s->held.len - n);
    s->held.len -= n;
    s->held.data[s->held.len] = 0;
}

/* Checks the held text for stop strings: 1 when one matched (the text
 * before it is emitted, the rest dropped). Otherwise emits all but the
 * longest tail that could still grow into a stop string. */
static int check_stops(sequence *s, deltas *d)
{
    if (!s->held.len)
        return 0;
    size_t first = (size_t)-1;
    for (uint32_t i = 0; i < s->n_stop; i++) {
        const char *hit = memmem(s->held.data, s->held.len, s->stop[i], strlen(s->stop[i]));
        if (hit && (size_t)(hit - s->held.data) < first)
            first = (size_t)(hit - s->held.data);
    }
    if (first != (size_t)-1) {
        emit_held(s, d, first);
        s->held.len = 0;
        return 1;
    }
    size_t keep = 0;
    for (uint32_t i = 0; i < s->n_stop; i++) {
        size_t L = strlen(s->stop[i]);
        for (size_t k = L - 1; k > keep; k--)
            if (k <= s->held.len && !memcmp(s->held.data + s->held.len - k, s->stop[i], k)) {
                keep = k;
                break;
            }
    }
    /* Never split a character: hold back to its start. */
    size_t cut = s->held.len - keep;
    while (cut > 0 && cut < s->held.len && ((unsigned char)s->held.data[cut] & 0xC0) == 0x80)
        cut--;
    emit_held(s, d, cut);
    return 0;
}

/* Everything still held back goes out (the sequence ends, or the channel changes). */
static void flush_text(sequence *s, deltas *d)
{
    detok_flush(&s->detok, &s->held);
    emit_held(s, d, s->held.len);
}

/* A sampled token: its text, the channel it belongs to, and whether it ends
 * the sequence. */
static finish_reason take_token(engine *e, sequence *s, int32_t tok, deltas *d)
{
    finish_reason fin = FINISH_NONE;
    s->n_generated++;
    if (s->reasoning || tok == e->think_open)
        s->n_thinking++; /* </think> counts, as it comes while reasoning */
    if (e->eog[tok]) {
        fin = FINISH_EOG;
    } else if (tok == e->think_open || tok == e->think_close) {
        if (check_stops(s, d))
            return FINISH_STOP_STRING;
        flush_text(s, d);
        s->reasoning = tok == e->think_open;
    } else {
        smq_err err;
        detok_feed(&s->detok, tok, &s->held, &err);
        if (check_stops(s, d))
            return FINISH_STOP_STRING;
    }
    if (fin == FINISH_NONE && s->max_tokens && s->n_generated >= s->max_tokens)
        fin = FINISH_LENGTH;
    if (fin == FINISH_NONE && s->n_tokens >= e->cfg.n_ctx)
        fin = FINISH_CONTEXT;
    if (fin != FINISH_NONE) {
        if (check_stops(s, d))
            return FINISH_STOP_STRING;
        flush_text(s, d);
    }
    return fin;
}

/* ---- the step ---- */

static void send(engine_event_fn fn, void *ctx, sequence *s, int32_t tok, deltas *d, finish_reason fin,
                 const char *error)
{
    engine_event ev = { s->id,
                        s->user,
                        tok,
                        d->reasoning.data ? d->reasoning.data : "",
                        d->reasoning.len,
                        d->content.data ? d->content.data : "",
                        d->content.len,
                        fin,
                        error,
                        s->n_prompt,
                        s->n_generated,
                        s->n_reused,
                        s->n_thinking };
    if (fn)
        fn(ctx, &ev);
}

static void unlink_seq(engine *e, sequence *s)
{
    sequence **pp = &e->head, *prev = NULL;
    while (*pp && *pp != s) {
        prev = *pp;
        pp = &(*pp)->next;
    }
    if (*pp)
        *pp = s->next;
    if (e->tail == s)
        e->tail = prev;
}

static void finish(engine *e, sequence *s, engine_event_fn fn, void *ctx, int32_t tok, deltas *d, finish_reason fin,
                   const char *error)
{
    send(fn, ctx, s, tok, d, fin, error);
    if (s->state == SEQ_RUNNING)
        e->n_running--;
    s->state = SEQ_DONE;
    if (fin != FINISH_ERROR)
        keep_prefix(e, s);
    unlink_seq(e, s);
    seq_free(e, s);
}

static int grow_fs(engine *e, uint32_t n)
{
    if (n <= e->cap_fs)
        return 0;
    fwd_seq *fs = realloc(e->fs, n * sizeof *fs);
    if (fs)
        e->fs = fs;
    sequence **ss = realloc(e->fs_seq, n * sizeof *ss);
    if (ss)
        e->fs_seq = ss;
    if (!fs || !ss)
        return -1;
    e->cap_fs = n;
    return 0;
}

int engine_step(engine *e, engine_event_fn fn, void *ctx, smq_err *err)
{
    deltas none = { { 0 }, { 0 } };
    /* Cancellations first: their pages are free for this step. */
    for (sequence *s = e->head, *next; s; s = next) {
        next = s->next;
        if (s->cancel)
            finish(e, s, fn, ctx, -1, &none, FINISH_CANCELLED, NULL);
    }
    /* Admit queued sequences, in order, while there is room. */
    for (sequence *s = e->head; s && e->n_running < e->cfg.max_seqs; s = s->next) {
        if (s->state != SEQ_QUEUED)
            continue;
        uint32_t need = (s->n_tokens + 1 + e->cfg.page_size - 1) / e->cfg.page_size;
        if (need > e->pool.n_free) {
            /* Pages held only by the prefix cache can come back. */
            uint32_t reclaimable = e->pool.n_free;
            for (uint32_t i = 0; i < e->n_prefix; i++)
                for (uint32_t k = 0; k < e->prefix[i].n_pages; k++)
                    reclaimable += e->pool.refs[e->prefix[i].pages[k]] == 1;
            if (need > reclaimable)
                break; /* it waits, and so do those behind it (first come, first served) */
        }
        if (reuse_prefix(e, s, err))
            return -1;
        s->state = SEQ_RUNNING;
        e->n_running++;
    }

    /* The batch: one token from each generating sequence, then prompt
     * chunks within the step's budget. */
    if (grow_fs(e, e->n_running ? e->n_running : 1))
        return smq_err_set(err, "out of memory");
    uint32_t n = 0, budget = e->cfg.max_step_tokens;
    for (int pass = 0; pass < 2; pass++) {
        for (sequence *s = e->head; s; s = s->next) {
            if (s->state != SEQ_RUNNING)
                continue;
            uint32_t left = s->n_tokens - s->pos;
            int decoding = s->n_generated > 0 && left == 1; /* a preempted one re-reads its history as a prompt */
            if ((pass == 0) != decoding)
                continue;
            /* A generating sequence always gets its one token; prompts share
             * what is left of the budget. */
            uint32_t want = decoding ? left : left < budget ? left : budget;
            uint32_t end = cover(e, s, s->pos + want);
            s->chunk = end > s->pos ? end - s->pos : 0;
            if (!s->chunk)
                continue;
            budget = budget > s->chunk ? budget - s->chunk : 0;
            /* A step that samples offers the backend the pick, so that only
             * the token need come back (from a device). */
            s->pick.token = -1;
            s->picking =
                s->pos + s->chunk == s->n_tokens && !sampler_prepare(&s->smp, s->tokens, s->n_tokens, &s->pick);
            e->fs[n] =
                (fwd_seq){ s->tokens + s->pos,          s->chunk, s->pos, s->pages, s->n_pages, 0, s->logits, !decoding,
                           s->picking ? &s->pick : NULL };
            e->fs_seq[n++] = s;
        }
    }
    if (n == 0) {
        if (e->n_running > 0) {
            /* Every running sequence waits for a page. Preempt the youngest:
             * its pages go back and it queues again with all its tokens as
             * the prompt, to be recomputed when there is room (its output so
             * far stands). Alone, it can never fit: it ends. */
            sequence *young = NULL;
            for (sequence *s = e->head; s; s = s->next)
                if (s->state == SEQ_RUNNING)
                    young = s;
            if (e->n_running == 1) {
                finish(e, young, fn, ctx, -1, &none, FINISH_ERROR, "the KV cache is full");
            } else {
                for (uint32_t i = 0; i < young->n_pages; i++)
                    kv_page_release(&e->pool, young->pages[i]);
                young->n_pages = 0;
                young->pos = 0;
                young->state = SEQ_QUEUED;
                e->n_running--;
            }
        }
        uint32_t left = 0;
        for (sequence *s = e->head; s; s = s->next)
            left++;
        return (int)left;
    }

    fwd_batch batch = { e->fs, n, e->progress, e->progress_ctx };
    if (e->b->ops->forward(e->b, &batch, err)) {
        for (uint32_t i = 0; i < n; i++)
            finish(e, e->fs_seq[i], fn, ctx, -1, &none, FINISH_ERROR, err->msg);
        return -1;
    }
    for (uint32_t i = 0; i < n; i++) {
        sequence *s = e->fs_seq[i];
        s->pos += s->chunk;
        if (s->pos < s->n_tokens)
            continue;                /* more prompt to read */
        int32_t tok = s->pick.token; /* -1 when the backend left it here, or preparing ran out of memory */
        if (tok < 0 && s->picking) {
            memcpy(e->scratch_logits, s->logits, e->m->hp.n_vocab * sizeof(float));
            tok = sampler_choose(&s->smp, e->scratch_logits, e->m->hp.n_vocab, &s->pick);
            if (e->progress) /* a pick over the whole vocabulary: a millisecond or more each */
                e->progress(e->progress_ctx);
        }
        deltas d = { { 0 }, { 0 } };
        if (tok >= 0 && s->n_tokens == s->cap_tokens) {
            int32_t *grown = realloc(s->tokens, 2 * s->cap_tokens * sizeof *grown);
            if (grown) {
                s->tokens = grown;
                s->cap_tokens *= 2;
            } else {
                tok = -1;
            }
        }
        if (tok < 0) {
            finish(e, s, fn, ctx, -1, &d, FINISH_ERROR, "out of memory");
            continue;
        }
        s->tokens[s->n_tokens++] = tok;
        finish_reason fin = take_token(e, s, tok, &d);
        if (fin == FINISH_NONE)
            send(fn, ctx, s, tok, &d, FINISH_NONE, NULL);
        else
            finish(e, s, fn, ctx, tok, &d, fin, NULL);
        sbuf_free(&d.reasoning);
        sbuf_free(&d.content);
    }
    uint32_t left = 0;
    for (sequence *s = e->head; s; s = s->next)
        left++;
    return (int)left;
}

uint32_t engine_free_pages(const engine *e)
{
    return e->pool.n_free;
}

uint32_t engine_n_ctx(const engine *e)
{
    return e->cfg.n_ctx;
}

void engine_set_max_step_tokens(engine *e, uint32_t n)
{
    e->cfg.max_step_tokens = n ? n : 512;
}

void engine_set_progress(engine *e, void (*fn)(void *ctx), void *ctx)
{
    e->progress = fn;
    e->progress_ctx = ctx;
}

int engine_seq_waiting(const engine *e, uint64_t seq)
{
    for (const sequence *s = e->head; s; s = s->next)
        if (s->id == seq)
            return s->state == SEQ_QUEUED;
    return -1;
}

const backend *engine_backend(const engine *e)
{
    return e->b;
}

const float *engine_last_logits(const engine *e, uint64_t seq)
{
    for (const sequence *s = e->head; s; s = s->next)
        if (s->id == seq)
            return s->logits;
    return NULL;
}
