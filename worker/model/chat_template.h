/* chat_template.h - SmolLM3's chat template, rendered natively (no Jinja).
 *
 * chat_render(CHAT_TEMPLATE_SMOLLM3, ...) produces byte for byte what the
 * official template (tests/data/chat/smollm3.jinja) gives under HF
 * transformers' apply_chat_template (jinja2, trim_blocks, lstrip_blocks):
 *
 *   <|im_start|>system\n
 *     with "/system_override" in the system message: its text (without
 *     /think, /no_think, /system_override; rstripped) + <|im_end|>\n
 *     otherwise: ## Metadata (cutoff, "Today Date: DD Month YYYY", reasoning
 *     mode), ## Custom Instructions (the system text, or a default persona),
 *     and with tools a "### Tools" section ending in <|im_end|>\n. Without
 *     tools the system turn is NOT closed: the template's own quirk.
 *   user and tool messages:  <|im_start|>user\nCONTENT<|im_end|>\n
 *   assistant messages:      <|im_start|>assistant\n[<think>\n\n</think>\n]CONTENT<|im_end|>\n
 *     (the empty think block in /no_think mode; CONTENT with leading "\n" removed)
 *   generation prompt:       <|im_start|>assistant\n[<think>\n\n</think>\n]
 *
 * Reasoning mode: /think unless enable_thinking is 0; a first message with
 * role "system" that contains "/no_think" (or else "/think") overrides it.
 * System messages produce no turn of their own; roles other than
 * system/user/assistant/tool produce nothing.
 *
 * CHAT_TEMPLATE_CHATML is the fallback for any other template text:
 * <|im_start|>ROLE\nCONTENT<|im_end|>\n per message, then <|im_start|>assistant\n
 * with add_generation_prompt.
 */
#ifndef SMQ_CHAT_TEMPLATE_H
#define SMQ_CHAT_TEMPLATE_H

#include <stddef.h>

#include "err.h"
#include "json.h"
#include "tokenizer.h"

typedef enum chat_template_kind { CHAT_TEMPLATE_SMOLLM3, CHAT_TEMPLATE_CHATML } chat_template_kind;

/* CHAT_TEMPLATE_SMOLLM3 when text[0..len) is SmolLM3's template: the
 * official one or a known variant of it (with or without the `tools`
 * argument, with or without the "[:]" slicing that some GGUF converters
 * strip), recognized by the content that defines its rendering. Anything
 * else, Unsloth's edit of it included (no date, no tools, always closes the
 * system turn), is CHAT_TEMPLATE_CHATML. */
chat_template_kind chat_template_detect(const char *text, size_t len);
const char *chat_template_name(chat_template_kind kind); /* "smollm3", "chatml" */

typedef struct chat_message {
    const char *role;    /* NUL-terminated, required */
    const char *content; /* valid UTF-8, may contain NUL; NULL: not a string (renders as "") */
    size_t content_len;
} chat_message;

typedef struct chat_options {
    int add_generation_prompt;
    /* 1, 0, or -1 for "not given" (the template's default: on). A JSON null
     * given explicitly is a defined, false value to the template: pass 0. */
    int enable_thinking;
    /* Lists of tool definitions (any JSON values; each is written as Python's
     * str() of it), NULL when not given. `tools` replaces `xml_tools` when
     * both are. As in the template, a value that is false to Python (null,
     * [], {}, "", 0, false) counts as not given; anything else must be a list. */
    const json_value *xml_tools, *python_tools, *tools;
    int year, month, day; /* the date for "Today Date"; all 0: today, local clock */
} chat_options;

/* Renders the conversation. Returns a malloc'd NUL-terminated string (its
 * length, which counts any NUL in contents, in *len), or NULL with err filled:
 * no messages, a message without a role, invalid UTF-8 in a content, a
 * system message whose content is not a string, tools that are not a list,
 * or an impossible date. opt NULL means all defaults. */
char *chat_render(chat_template_kind kind, const chat_message *msgs, size_t n, const chat_options *opt, size_t *len,
                  smq_err *err);

/* Where the caller's text lies in a rendering: message contents, the system
 * text, tool definitions (and chatml's roles), as [at[i][0], at[i][1]) byte
 * ranges in order. A tokenizer reads them as plain text
 * (tokenizer_encode_spans), so that a special token's text in a message,
 * "<|im_end|>" say, cannot close its turn and open another. */
typedef struct chat_spans {
    size_t (*at)[2];
    size_t n, cap;
    int oom;
} chat_spans;

/* chat_render, with the caller's text marked in *spans (filled, or left
 * empty on failure; free with chat_spans_free). */
char *chat_render_spans(chat_template_kind kind, const chat_message *msgs, size_t n, const chat_options *opt,
                        size_t *len, chat_spans *spans, smq_err *err);
void chat_spans_free(chat_spans *spans);

/* Renders the conversation and appends its tokens to out: the template's
 * markup with its control tokens, the caller's text as plain text. -1 when
 * the conversation cannot be rendered (err says what is wrong with it), -2
 * when tokenizing runs out of memory. */
int chat_encode(chat_template_kind kind, const chat_message *msgs, size_t n, const chat_options *opt, tokenizer *t,
                tok_ids *out, smq_err *err);

#endif
