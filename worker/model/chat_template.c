/* chat_template.c - SmolLM3's chat template in C, and the ChatML fallback.
 *
 * chat_render_smollm3() follows the Jinja template top to bottom: defaults,
 * reasoning mode, the system header (override, or metadata + instructions +
 * tools), the message loop, the generation prompt. The string operations are
 * Python's, as the template calls them: `in` (substring), str.replace,
 * str.rstrip() (Unicode whitespace) and str.lstrip("\n"); `tool | string` is
 * Python's str() of the tool (json_str_python).
 */
#include "chat_template.h"

#include "sbuf.h"
#include "utf8.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static const char persona_think[] =
    "You are a helpful AI assistant named SmolLM, trained by Hugging Face. Your role as an assistant involves "
    "thoroughly exploring questions through a systematic thinking process before providing the final precise and "
    "accurate solutions. This requires engaging in a comprehensive cycle of analysis, summarizing, exploration, "
    "reassessment, reflection, backtracking, and iteration to develop well-considered thinking process. Please "
    "structure your response into two main sections: Thought and Solution using the specified format: <think> "
    "Thought section </think> Solution section. In the Thought section, detail your reasoning process in steps. Each "
    "step should include detailed considerations such as analysing questions, summarizing relevant findings, "
    "brainstorming new ideas, verifying the accuracy of the current steps, refining any errors, and revisiting "
    "previous steps. In the Solution section, based on various attempts, explorations, and reflections from the "
    "Thought section, systematically present the final solution that you deem correct. The Solution section should "
    "be logical, accurate, and concise and detail necessary steps needed to reach the conclusion.";
static const char persona_no_think[] = "You are a helpful AI assistant named SmolLM, trained by Hugging Face.";

static const char xml_tools_head[] =
    "You may call one or more functions to assist with the user query.\n"
    "You are provided with function signatures within <tools></tools> XML tags:\n\n<tools>\n";
static const char xml_tools_tail[] =
    "</tools>\n\nFor each function call, return a json object with function name and arguments within "
    "<tool_call></tool_call> XML tags:\n<tool_call>\n{\"name\": <function-name>, \"arguments\": "
    "<args-json-object>}\n</tool_call>";
static const char python_tools_head[] =
    "When you send a message containing Python code between '<code>' and '</code>' tags, it will be executed in a "
    "stateful Jupyter notebook environment, and you will then be given the output to continued reasoning in an "
    "agentic loop.\n\nYou can use the following tools in your python code like regular functions:\n<tools>\n";
static const char python_tools_tail[] = "</tools>\n\nThe state persists between code executions: so variables that "
                                        "you define in one step are still available thereafter.";

static const char empty_think[] = "<think>\n\n</think>\n";

/* Text that only SmolLM3's template (and its variants that render the same)
 * contains: the metadata block with the date, the override, both kinds of
 * tools. Unsloth's edit lacks the date, the override and the tools. */
static const char *const smollm3_markers[] = {
    "<|im_start|>system",
    "## Metadata",
    "Knowledge Cutoff Date: June 2025",
    "Today Date: ",
    "strftime_now",
    "Reasoning Mode: ",
    "/no_think",
    "## Custom Instructions",
    "/system_override",
    "xml_tools",
    "python_tools",
    "<|im_start|>assistant",
};

static int contains(const char *s, size_t n, const char *needle)
{
    return memmem(s ? s : "", n, needle, strlen(needle)) != NULL;
}

chat_template_kind chat_template_detect(const char *text, size_t len)
{
    for (size_t i = 0; i < sizeof smollm3_markers / sizeof smollm3_markers[0]; i++)
        if (!contains(text, len, smollm3_markers[i]))
            return CHAT_TEMPLATE_CHATML;
    return CHAT_TEMPLATE_SMOLLM3;
}

const char *chat_template_name(chat_template_kind kind)
{
    return kind == CHAT_TEMPLATE_SMOLLM3 ? "smollm3" : kind == CHAT_TEMPLATE_CHATML ? "chatml" : "?";
}

/* Python's str.isspace() for one code point. */
static int py_isspace(uint32_t c)
{
    return (c >= 0x09 && c <= 0x0D) || (c >= 0x1C && c <= 0x20) || c == 0x85 || c == 0xA0 || c == 0x1680 ||
           (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F || c == 0x205F || c == 0x3000;
}

/* Length of s[0..n) (valid UTF-8) after Python's str.rstrip(). */
static size_t rstrip_len(const char *s, size_t n)
{
    while (n > 0) {
        size_t start = n - 1;
        while (start > 0 && n - start < 4 && ((unsigned char)s[start] & 0xC0) == 0x80)
            start--;
        uint32_t cp;
        if ((size_t)utf8_next(s + start, n - start, &cp) != n - start || !py_isspace(cp))
            break;
        n = start;
    }
    return n;
}

/* s.replace(needle, "") into *out (replacing its contents). */
static int remove_all(const char *s, size_t n, const char *needle, sbuf *out)
{
    size_t nl = strlen(needle);
    if (!s)
        s = "";
    out->len = 0;
    if (sbuf_append(out, "", 0))
        return -1;
    for (;;) {
        const char *hit = memmem(s, n, needle, nl);
        size_t keep = hit ? (size_t)(hit - s) : n;
        if (sbuf_append(out, s, keep))
            return -1;
        if (!hit)
            return 0;
        s += keep + nl;
        n -= keep + nl;
    }
}

/* Offset of the first byte of s[0..n) that is not valid UTF-8, or n. */
static size_t utf8_error_at(const char *s, size_t n)
{
    size_t i = 0;
    uint32_t cp;
    while (i < n) {
        int k = utf8_next(s + i, n - i, &cp);
        if (!k)
            return i;
        i += (size_t)k;
    }
    return n;
}

static int check_messages(const chat_message *msgs, size_t n, smq_err *err)
{
    for (size_t i = 0; i < n; i++) {
        if (!msgs[i].role)
            return smq_err_set(err, "messages[%zu]: no role (each message needs a \"role\" string)", i);
        if (!utf8_valid(msgs[i].role, strlen(msgs[i].role), 0))
            return smq_err_set(err, "messages[%zu].role: invalid UTF-8", i);
        if (msgs[i].content) {
            size_t at = utf8_error_at(msgs[i].content, msgs[i].content_len);
            if (at < msgs[i].content_len)
                return smq_err_set(err, "messages[%zu].content: invalid UTF-8 at byte %zu", i, at);
        }
    }
    return 0;
}

static int days_in_month(int year, int month)
{
    static const int days[12] = { 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31 };
    int leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
    return days[month - 1] + (month == 2 && leap);
}

/* "DD Month YYYY", as strftime("%d %B %Y") in the C locale (the names are
 * our own table, so a process locale cannot translate them). */
static int format_date(const chat_options *opt, char out[32], smq_err *err)
{
    static const char *const months[12] = { "January", "February", "March",     "April",   "May",      "June",
                                            "July",    "August",   "September", "October", "November", "December" };
    int y = opt->year, m = opt->month, d = opt->day;
    if (!y && !m && !d) {
        time_t now = time(NULL);
        struct tm tm;
        if (!localtime_r(&now, &tm))
            return smq_err_set(err, "chat template: cannot read the local date");
        y = tm.tm_year + 1900, m = tm.tm_mon + 1, d = tm.tm_mday;
    }
    if (y < 1 || y > 9999 || m < 1 || m > 12 || d < 1 || d > days_in_month(y, m))
        return smq_err_set(err, "chat template: date %d-%02d-%02d is not a calendar date (year 1-9999)", y, m, d);
    snprintf(out, 32, "%02d %s %d", d, months[m - 1], y);
    return 0;
}

/* Records [b, e) as the caller's text (merged with a span ending at b). */
static void span_add(chat_spans *sp, size_t b, size_t e)
{
    if (!sp || b == e)
        return;
    if (sp->n && sp->at[sp->n - 1][1] == b) {
        sp->at[sp->n - 1][1] = e;
        return;
    }
    if (sp->n == sp->cap) {
        size_t cap = sp->cap ? 2 * sp->cap : 16;
        size_t(*at)[2] = realloc(sp->at, cap * sizeof *at);
        if (!at) {
            sp->oom = 1;
            return;
        }
        sp->at = at;
        sp->cap = cap;
    }
    sp->at[sp->n][0] = b;
    sp->at[sp->n++][1] = e;
}

/* Appends the caller's text, recording where it lies. */
static void put_text(sbuf *r, chat_spans *sp, const char *s, size_t n)
{
    size_t at = r->len;
    sbuf_append(r, s, n);
    if (!r->oom)
        span_add(sp, at, r->len);
}

/* One tool list of the "### Tools" section: head, str(tool) + "\n" each, tail. */
static void put_tools(sbuf *r, chat_spans *sp, const json_value *list, const char *head, const char *tail)
{
    sbuf_puts(r, head);
    for (size_t i = 0; i < json_len(list); i++) {
        size_t at = r->len;
        json_str_python(json_at(list, i), r);
        if (!r->oom)
            span_add(sp, at, r->len);
        sbuf_putc(r, '\n');
    }
    sbuf_puts(r, tail);
}

/* A tools argument as the template uses it: NULL when false to Python. */
static int tool_list(const json_value *v, const char *name, const json_value **list, smq_err *err)
{
    *list = NULL;
    if (!json_truthy(v))
        return 0;
    if (json_typeof(v) != JSON_ARRAY) {
        const char *type = json_type_name(json_typeof(v));
        return smq_err_set(err, "%s: expected a list of tool definitions, got %s %s (put the tools in a [...] list)",
                           name, strchr("aeiou", type[0]) ? "an" : "a", type);
    }
    *list = v;
    return 0;
}

/* The system turn's header when there is no /system_override. */
static int put_metadata(sbuf *r, chat_spans *sp, const chat_options *opt, int think, const char *custom,
                        size_t custom_len, smq_err *err)
{
    char date[32];
    const json_value *xml, *python;
    if (format_date(opt, date, err))
        return -1;
    /* `tools`, when given, replaces `xml_tools`. */
    if (json_truthy(opt->tools) ? tool_list(opt->tools, "tools", &xml, err)
                                : tool_list(opt->xml_tools, "xml_tools", &xml, err))
        return -1;
    if (tool_list(opt->python_tools, "python_tools", &python, err))
        return -1;

    sbuf_puts(r, "## Metadata\n\nKnowledge Cutoff Date: June 2025\nToday Date: ");
    sbuf_puts(r, date);
    sbuf_puts(r, think ? "\nReasoning Mode: /think\n\n" : "\nReasoning Mode: /no_think\n\n");
    sbuf_puts(r, "## Custom Instructions\n\n");
    if (custom_len)
        put_text(r, sp, custom, custom_len);
    else
        sbuf_puts(r, think ? persona_think : persona_no_think);
    sbuf_puts(r, "\n\n");
    if (xml || python) {
        sbuf_puts(r, "### Tools\n\n");
        if (xml)
            put_tools(r, sp, xml, xml_tools_head, xml_tools_tail);
        if (python)
            put_tools(r, sp, python, python_tools_head, python_tools_tail);
        sbuf_puts(r, "\n\n<|im_end|>\n");
    }
    return 0;
}

static int render_smollm3(sbuf *r, chat_spans *sp, const chat_message *msgs, size_t n, const chat_options *opt,
                          smq_err *err)
{
    if (n == 0)
        return smq_err_set(err, "messages: empty (SmolLM3's template needs at least one message)");
    const chat_message *sys = strcmp(msgs[0].role, "system") == 0 ? &msgs[0] : NULL;
    if (sys && !sys->content)
        return smq_err_set(err, "messages[0]: a system message's content must be a string");

    /* Reasoning mode and custom instructions, from the flag and the system
     * message. A failed allocation only sets r->oom: chat_render reports it. */
    int think = opt->enable_thinking != 0;
    sbuf custom = { 0 }, tmp = { 0 };
    if (sys) {
        if (contains(sys->content, sys->content_len, "/no_think"))
            think = 0;
        else if (contains(sys->content, sys->content_len, "/think"))
            think = 1;
        if (remove_all(sys->content, sys->content_len, "/no_think", &tmp) ||
            remove_all(tmp.data, tmp.len, "/think", &custom))
            r->oom = 1;
        custom.len = rstrip_len(custom.data, custom.len);
    }

    sbuf_puts(r, "<|im_start|>system\n");
    int rc = 0;
    if (sys && contains(sys->content, sys->content_len, "/system_override")) {
        if (remove_all(custom.data, custom.len, "/system_override", &tmp))
            r->oom = 1;
        put_text(r, sp, tmp.data, rstrip_len(tmp.data, tmp.len));
        sbuf_puts(r, "<|im_end|>\n");
    } else {
        rc = put_metadata(r, sp, opt, think, custom.data, custom.len, err);
    }
    sbuf_free(&custom);
    sbuf_free(&tmp);
    if (rc)
        return -1;

    for (size_t i = 0; i < n; i++) {
        const char *role = msgs[i].role, *c = msgs[i].content ? msgs[i].content : "";
        size_t cl = msgs[i].content ? msgs[i].content_len : 0;
        if (strcmp(role, "user") == 0 || strcmp(role, "tool") == 0) {
            sbuf_puts(r, "<|im_start|>user\n");
            put_text(r, sp, c, cl);
            sbuf_puts(r, "<|im_end|>\n");
        } else if (strcmp(role, "assistant") == 0) {
            while (cl && *c == '\n')
                c++, cl--;
            sbuf_puts(r, "<|im_start|>assistant\n");
            if (!think)
                sbuf_puts(r, empty_think);
            put_text(r, sp, c, cl);
            sbuf_puts(r, "<|im_end|>\n");
        }
    }
    if (opt->add_generation_prompt) {
        sbuf_puts(r, "<|im_start|>assistant\n");
        if (!think)
            sbuf_puts(r, empty_think);
    }
    return 0;
}

static void render_chatml(sbuf *r, chat_spans *sp, const chat_message *msgs, size_t n, const chat_options *opt)
{
    for (size_t i = 0; i < n; i++) {
        sbuf_puts(r, "<|im_start|>");
        put_text(r, sp, msgs[i].role, strlen(msgs[i].role));
        sbuf_puts(r, "\n");
        if (msgs[i].content)
            put_text(r, sp, msgs[i].content, msgs[i].content_len);
        sbuf_puts(r, "<|im_end|>\n");
    }
    if (opt->add_generation_prompt)
        sbuf_puts(r, "<|im_start|>assistant\n");
}

char *chat_render(chat_template_kind kind, const chat_message *msgs, size_t n, const chat_options *opt, size_t *len,
                  smq_err *err)
{
    return chat_render_spans(kind, msgs, n, opt, len, NULL, err);
}

char *chat_render_spans(chat_template_kind kind, const chat_message *msgs, size_t n, const chat_options *opt,
                        size_t *len, chat_spans *spans, smq_err *err)
{
    static const chat_options defaults = { .enable_thinking = -1 };
    sbuf r = { 0 };
    if (spans)
        memset(spans, 0, sizeof *spans);
    if (!opt)
        opt = &defaults;
    if (n && !msgs) {
        smq_err_set(err, "messages: NULL with a count of %zu", n);
        return NULL;
    }
    if (check_messages(msgs, n, err))
        return NULL;
    if (kind == CHAT_TEMPLATE_SMOLLM3) {
        if (render_smollm3(&r, spans, msgs, n, opt, err))
            goto fail;
    } else if (kind == CHAT_TEMPLATE_CHATML) {
        render_chatml(&r, spans, msgs, n, opt);
    } else {
        smq_err_set(err, "chat template: unknown kind %d", (int)kind);
        goto fail;
    }
    /* An empty rendering still needs its terminating NUL. */
    sbuf_append(&r, "", 0);
    if (r.oom || (spans && spans->oom)) {
        smq_err_set(err, "chat template: out of memory rendering %zu messages", n);
        goto fail;
    }
    return sbuf_take(&r, len);
fail:
    sbuf_free(&r);
    chat_spans_free(spans);
    return NULL;
}

void chat_spans_free(chat_spans *spans)
{
    if (spans) {
        free(spans->at);
        memset(spans, 0, sizeof *spans);
    }
}

int chat_encode(chat_template_kind kind, const chat_message *msgs, size_t n, const chat_options *opt, tokenizer *t,
                tok_ids *out, smq_err *err)
{
    chat_spans spans;
    size_t len;
    char *text = chat_render_spans(kind, msgs, n, opt, &len, &spans, err);
    if (!text)
        return -1;
    int rc = tokenizer_encode_spans(t, text, len, (const size_t(*)[2])spans.at, spans.n, out, err) ? -2 : 0;
    free(text);
    chat_spans_free(&spans);
    return rc;
}
