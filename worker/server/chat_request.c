/* chat_request.c - see chat_request.h. */
#include "chat_request.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

_Static_assert(SMQ_STOP_MAX <= ENGINE_MAX_STOP, "the engine must take every stop string a CHAT may carry");

/* The template's roles as C strings: the decoded role is not NUL-terminated,
 * and only these four mean anything to the template (PROTOCOL.md §3). */
static const char *role_name(smq_str role)
{
    static const char *roles[] = { "system", "user", "assistant", "tool" };
    for (size_t i = 0; i < sizeof roles / sizeof roles[0]; i++)
        if (role.n == strlen(roles[i]) && !memcmp(role.p, roles[i], role.n))
            return roles[i];
    return NULL;
}

static int fail(const char **code, const char *what)
{
    *code = what;
    return -1;
}

int chat_request_build(chat_request *r, const smq_chat *c, chat_template_kind kind, tokenizer *t, uint64_t seed,
                       const char **code, smq_err *err)
{
    memset(r, 0, sizeof *r);
    if (c->n_messages == 0)
        return smq_err_set(err, "messages: empty"), fail(code, SMQ_E_BAD_REQUEST);
    chat_message *msgs = calloc(c->n_messages, sizeof *msgs);
    if (!msgs)
        return smq_err_set(err, "out of memory"), fail(code, SMQ_E_INTERNAL);
    for (uint32_t i = 0; i < c->n_messages; i++) {
        msgs[i].role = role_name(c->messages[i].role);
        if (!msgs[i].role) {
            free(msgs);
            smq_err_set(err, "messages[%" PRIu32 "].role: \"%.*s\" is not one of system, user, assistant, tool", i,
                        (int)(c->messages[i].role.n < 32 ? c->messages[i].role.n : 32), c->messages[i].role.p);
            return fail(code, SMQ_E_BAD_REQUEST);
        }
        /* chat_render reads a NULL content as "not a string": an empty one must point somewhere. */
        msgs[i].content = c->messages[i].content.p ? c->messages[i].content.p : "";
        msgs[i].content_len = c->messages[i].content.n;
    }
    /* What `smolmq generate` renders: the generation prompt, thinking as asked, today's date. */
    chat_options opt = { 0 };
    opt.add_generation_prompt = 1;
    opt.enable_thinking = c->thinking ? 1 : 0;
    /* Messages are plain text: a special token's text in one cannot open or close a turn. */
    int rc = chat_encode(kind, msgs, c->n_messages, &opt, t, &r->prompt, err);
    free(msgs);
    if (rc) {
        chat_request_free(r);
        return fail(code, rc == -2 ? SMQ_E_INTERNAL : SMQ_E_BAD_REQUEST);
    }

    for (uint32_t i = 0; i < c->n_stop; i++) {
        if (memchr(c->stop[i].p, 0, c->stop[i].n)) {
            chat_request_free(r);
            smq_err_set(err, "stop[%" PRIu32 "]: contains a NUL character", i);
            return fail(code, SMQ_E_BAD_REQUEST);
        }
        if (!(r->stop[i] = strndup(c->stop[i].p, c->stop[i].n))) {
            chat_request_free(r);
            smq_err_set(err, "out of memory");
            return fail(code, SMQ_E_INTERNAL);
        }
        r->req.stop[i] = r->stop[i];
    }
    r->req.n_stop = c->n_stop;

    /* The decoder filled the protocol's defaults for absent fields; they are
     * sampling_defaults()' (0.6, 0.95, no top-k, min-p or penalties), and
     * penalty_last_n, which a CHAT cannot set, keeps its default. */
    sampling_params sp = sampling_defaults();
    sp.temperature = c->temperature;
    sp.top_p = c->top_p;
    sp.top_k = c->top_k > INT32_MAX ? INT32_MAX : (int32_t)c->top_k;
    sp.min_p = c->min_p;
    sp.repeat_penalty = c->repeat_penalty;
    sp.presence_penalty = c->presence_penalty;
    sp.frequency_penalty = c->frequency_penalty;
    sp.seed = c->has_seed ? c->seed : seed;
    if (sampling_validate(&sp, err)) {
        chat_request_free(r);
        return fail(code, SMQ_E_BAD_REQUEST);
    }
    r->req.sampling = sp;
    r->req.prompt = r->prompt.ids;
    r->req.n_prompt = (uint32_t)r->prompt.n;
    r->req.max_tokens = c->max_tokens;
    return 0;
}

void chat_request_free(chat_request *r)
{
    tok_ids_free(&r->prompt);
    for (int i = 0; i < ENGINE_MAX_STOP; i++)
        free(r->stop[i]);
    memset(r, 0, sizeof *r);
}
