/* chat_request.h - a decoded CHAT made into what engine_submit() takes.
 *
 * The messages are rendered with the model's chat template (thinking on or
 * off) and tokenized exactly as `smolmq generate --prompt` does for one user
 * message, and the sampling fields are mapped onto sampling_params starting
 * from sampling_defaults(), so that a request and that command give the
 * same text for the same seed.
 */
#ifndef SMQ_CHAT_REQUEST_H
#define SMQ_CHAT_REQUEST_H

#include <stdint.h>

#include "chat_template.h"
#include "engine.h"
#include "err.h"
#include "proto.h"
#include "tokenizer.h"

typedef struct chat_request {
    tok_ids prompt;
    char *stop[ENGINE_MAX_STOP]; /* NUL-terminated copies of the CHAT's stop strings */
    seq_request req;             /* points into prompt and stop */
} chat_request;

/* Fills r from c (r is zeroed first). seed is used when c has none. Returns
 * 0, or -1 with *code (SMQ_E_BAD_REQUEST, or SMQ_E_INTERNAL when out of
 * memory) and err naming the field ("messages[1].role: ...") when the
 * request cannot be rendered: a role the template does not know, invalid
 * UTF-8, a stop string with a NUL byte. */
int chat_request_build(chat_request *r, const smq_chat *c, chat_template_kind kind, tokenizer *t, uint64_t seed,
                       const char **code, smq_err *err);
void chat_request_free(chat_request *r);

#endif
