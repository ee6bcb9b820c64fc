/* chat_template_test.c - SmolLM3's chat template rendered in C, byte for byte.
 *
 * The goldens were rendered by HF's apply_chat_template. The other expected
 * strings were derived from tests/data/chat/smollm3.jinja and checked with
 * jinja2 (trim_blocks, lstrip_blocks), as transformers renders it. */
#include <time.h>

#include "chat_template.h"
#include "json.h"

#include "test.h"

#define HEAD(date, mode)                                                                                               \
    "<|im_start|>system\n## Metadata\n\nKnowledge Cutoff Date: June 2025\nToday Date: " date "\nReasoning Mode: " mode \
    "\n\n## Custom Instructions\n\n"
#define PERSONA_NO_THINK "You are a helpful AI assistant named SmolLM, trained by Hugging Face."
#define PERSONA_THINK                                                                                                  \
    PERSONA_NO_THINK                                                                                                   \
    " Your role as an assistant involves thoroughly exploring questions through a systematic thinking process "        \
    "before providing the final precise and accurate solutions. This requires engaging in a comprehensive cycle of "   \
    "analysis, summarizing, exploration, reassessment, reflection, backtracking, and iteration to develop "            \
    "well-considered thinking process. Please structure your response into two main sections: Thought and Solution "   \
    "using the specified format: <think> Thought section </think> Solution section. In the Thought section, detail "   \
    "your reasoning process in steps. Each step should include detailed considerations such as analysing "             \
    "questions, summarizing relevant findings, brainstorming new ideas, verifying the accuracy of the current "        \
    "steps, refining any errors, and revisiting previous steps. In the Solution section, based on various attempts, "  \
    "explorations, and reflections from the Thought section, systematically present the final solution that you "      \
    "deem correct. The Solution section should be logical, accurate, and concise and detail necessary steps needed "   \
    "to reach the conclusion."
#define XML_HEAD                                                                                                       \
    "### Tools\n\nYou may call one or more functions to assist with the user query.\nYou are provided with function "  \
    "signatures within <tools></tools> XML tags:\n\n<tools>\n"
#define XML_TAIL                                                                                                       \
    "</tools>\n\nFor each function call, return a json object with function name and arguments within "                \
    "<tool_call></tool_call> XML tags:\n<tool_call>\n{\"name\": <function-name>, \"arguments\": "                      \
    "<args-json-object>}\n</tool_call>"
#define PY_HEAD                                                                                                        \
    "When you send a message containing Python code between '<code>' and '</code>' tags, it will be executed in a "    \
    "stateful Jupyter notebook environment, and you will then be given the output to continued reasoning in an "       \
    "agentic loop.\n\nYou can use the following tools in your python code like regular functions:\n<tools>\n"
#define PY_TAIL                                                                                                        \
    "</tools>\n\nThe state persists between code executions: so variables that you define in one step are still "      \
    "available thereafter."
#define TOOLS_END   "\n\n<|im_end|>\n"
#define EMPTY_THINK "<think>\n\n</think>\n"

#define WEATHER_TOOL                                                                                                   \
    "{\"name\":\"get_weather\",\"description\":\"Get weather\",\"parameters\":{\"type\":\"object\",\"properties\":"    \
    "{\"city\":{\"type\":\"string\"}}}}"
#define WEATHER_REPR                                                                                                   \
    "{'name': 'get_weather', 'description': 'Get weather', 'parameters': {'type': 'object', 'properties': {'city': "   \
    "{'type': 'string'}}}}"

/* A message with a string literal as content. */
#define MSG(role, text)                                                                                                \
    {                                                                                                                  \
        role, text, sizeof(text) - 1                                                                                   \
    }

static chat_options opts(int gen, int think, int y, int m, int d)
{
    chat_options o = { 0 };
    o.add_generation_prompt = gen;
    o.enable_thinking = think;
    o.year = y, o.month = m, o.day = d;
    return o;
}

static json_value *parse(const char *text)
{
    smq_err err;
    json_value *v = json_parse(text, strlen(text), "test", &err);
    if (!v)
        test_fail(__FILE__, __LINE__, "%s", err.msg);
    return v;
}

/* Renders and compares with want[0..want_len); on a difference, says where. */
static void check_render_at(const char *file, int line, chat_template_kind kind, const chat_message *msgs, size_t n,
                            const chat_options *o, const char *want, size_t want_len)
{
    smq_err err = { { 0 } };
    size_t len = 0;
    char *got = chat_render(kind, msgs, n, o, &len, &err);
    if (!got) {
        test_fail(file, line, "chat_render failed: %s", err.msg);
        return;
    }
    size_t i = 0;
    while (i < len && i < want_len && got[i] == want[i])
        i++;
    if (i != len || i != want_len || got[len] != 0) {
        size_t from = i > 40 ? i - 40 : 0;
        test_fail(file, line, "rendering differs at byte %zu of %zu (want %zu): got \"%.*s\" expected \"%.*s\"", i, len,
                  want_len, (int)(len - from < 120 ? len - from : 120), got + from,
                  (int)(want_len - from < 120 ? want_len - from : 120), want + from);
    }
    free(got);
}
#define CHECK_RENDER(kind, msgs, n, o, want)                                                                           \
    check_render_at(__FILE__, __LINE__, kind, msgs, n, o, want, sizeof(want) - 1)

/* Checks that rendering fails with a message containing `what`. */
#define CHECK_RENDER_FAILS(kind, msgs, n, o, what)                                                                     \
    do {                                                                                                               \
        smq_err e_ = { { 0 } };                                                                                        \
        size_t l_;                                                                                                     \
        char *r_ = chat_render(kind, msgs, n, o, &l_, &e_);                                                            \
        CHECK_MSG(!r_, "rendered \"%s\" where an error was expected", r_ ? r_ : "");                                   \
        CHECK_CONTAINS(e_.msg, what);                                                                                  \
        free(r_);                                                                                                      \
    } while (0)

/* The 5 conversations HF rendered, byte for byte. */
static void test_goldens(void)
{
    char path[512];
    snprintf(path, sizeof path, "%s/chat/chat_goldens.jsonl", test_data_dir());
    size_t size;
    char *text = test_read_file(path, &size);
    if (!text)
        return;
    int lines = 0;
    for (size_t start = 0; start < size;) {
        const char *nl = memchr(text + start, '\n', size - start);
        size_t end = nl ? (size_t)(nl - text) : size;
        smq_err err;
        json_value *g = json_parse(text + start, end - start, "chat_goldens.jsonl", &err);
        start = end + 1;
        CHECK_MSG(g, "%s", err.msg);
        if (!g)
            continue;
        lines++;
        const json_value *msgs = json_get(g, "messages"), *kw = json_get(g, "kwargs");
        size_t n = json_len(msgs), want_len;
        chat_message m[16] = { { 0 } };
        CHECK(n > 0 && n <= 16);
        for (size_t i = 0; i < n && i < 16; i++) {
            m[i].role = json_string(json_get(json_at(msgs, i), "role"), NULL);
            m[i].content = json_string(json_get(json_at(msgs, i), "content"), &m[i].content_len);
        }
        /* Every golden was rendered with strftime_now() = "15 July 2025". */
        CHECK_STR(json_string(json_get(g, "strftime_now"), NULL), "15 July 2025");
        chat_options o = opts(json_truthy(json_get(kw, "add_generation_prompt")), -1, 2025, 7, 15);
        if (json_get(kw, "enable_thinking"))
            o.enable_thinking = json_truthy(json_get(kw, "enable_thinking"));
        o.xml_tools = json_get(kw, "xml_tools");
        const char *want = json_string(json_get(g, "rendered"), &want_len);
        CHECK(want != NULL);
        if (want && n <= 16)
            check_render_at(__FILE__, __LINE__, CHAT_TEMPLATE_SMOLLM3, m, n, &o, want, want_len);
        json_free(g);
    }
    CHECK_INT(lines, 5);
    free(text);
}

/* docs/smollm3-facts.md section 4, example (d): xml_tools, no_think, user only. */
static void test_facts_example_d(void)
{
    json_value *tools = parse("[" WEATHER_TOOL "]");
    chat_message m[] = { MSG("user", "Weather in Paris?") };
    chat_options o = opts(1, 0, 2026, 1, 1);
    o.xml_tools = tools;
    CHECK_RENDER(CHAT_TEMPLATE_SMOLLM3, m, 1, &o,
                 "<|im_start|>system\n## Metadata\n\nKnowledge Cutoff Date: June 2025\nToday Date: 01 January "
                 "2026\nReasoning Mode: /no_think\n\n## Custom Instructions\n\nYou are a helpful AI assistant named "
                 "SmolLM, trained by Hugging Face.\n\n### Tools\n\nYou may call one or more functions to assist with "
                 "the user query.\nYou are provided with function signatures within <tools></tools> XML "
                 "tags:\n\n<tools>\n{'name': 'get_weather', 'description': 'Get weather', 'parameters': {'type': "
                 "'object', 'properties': {'city': {'type': 'string'}}}}\n</tools>\n\nFor each function call, return "
                 "a json object with function name and arguments within <tool_call></tool_call> XML "
                 "tags:\n<tool_call>\n{\"name\": <function-name>, \"arguments\": "
                 "<args-json-object>}\n</tool_call>\n\n<|im_end|>\n<|im_start|>user\nWeather in "
                 "Paris?<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n");
    json_free(tools);
}

/* `tools` (the OpenAI-style argument) replaces xml_tools; each tool is
 * Python's str() of it: single quotes, "..." around a ', True/None, 1.0. */
static void test_tools_replace_xml_tools(void)
{
    json_value *xml = parse("[" WEATHER_TOOL "]");
    json_value *tools =
        parse("[{\"name\": \"search\", \"description\": \"Search the web; it's fast\", \"parameters\": "
              "{\"type\": \"object\", \"properties\": {\"q\": {\"type\": \"string\"}, \"n\": {\"type\": "
              "\"integer\", \"default\": 5, \"minimum\": 1.0}}, \"required\": [\"q\"], \"strict\": "
              "true, \"extra\": null}}]");
    chat_message m[] = { MSG("system", "Use tools."), MSG("user", "Find SmolLM3") };
    chat_options o = opts(1, -1, 2025, 7, 15);
    o.xml_tools = xml;
    o.tools = tools;
    CHECK_RENDER(
        CHAT_TEMPLATE_SMOLLM3, m, 2, &o,
        HEAD("15 July 2025", "/think") "Use tools.\n\n" XML_HEAD "{'name': 'search', 'description': \"Search the web; "
                                       "it's fast\", 'parameters': {'type': 'object', "
                                       "'properties': {'q': {'type': 'string'}, 'n': {'type': 'integer', 'default': 5, "
                                       "'minimum': 1.0}}, "
                                       "'required': ['q'], 'strict': True, 'extra': None}}\n" XML_TAIL TOOLS_END
                                       "<|im_start|>user\nFind SmolLM3<|im_end|>\n<|im_start|>assistant\n");
    /* An empty `tools` is false to Jinja: xml_tools stays. */
    json_value *empty = parse("[]");
    o.tools = empty;
    o.add_generation_prompt = 0;
    CHECK_RENDER(CHAT_TEMPLATE_SMOLLM3, m, 2, &o,
                 HEAD("15 July 2025", "/think") "Use tools.\n\n" XML_HEAD WEATHER_REPR "\n" XML_TAIL TOOLS_END
                                                "<|im_start|>user\nFind SmolLM3<|im_end|>\n");
    json_free(empty);
    json_free(xml);
    json_free(tools);
}

/* python_tools: its own section; a string tool is written as itself. With
 * both kinds the two sections touch ("</tool_call>When you send"). */
static void test_python_tools(void)
{
    json_value *py = parse("[{\"name\": \"calc\", \"args\": [\"expr\"]}, \"def now() -> str\"]");
    chat_message m[] = { MSG("user", "Compute 2**10") };
    chat_options o = opts(1, 0, 2024, 3, 9);
    o.python_tools = py;
    CHECK_RENDER(CHAT_TEMPLATE_SMOLLM3, m, 1, &o,
                 HEAD("09 March 2024", "/no_think") PERSONA_NO_THINK
                 "\n\n### Tools\n\n" PY_HEAD "{'name': 'calc', 'args': ['expr']}\ndef now() -> str\n" PY_TAIL TOOLS_END
                 "<|im_start|>user\nCompute 2**10<|im_end|>\n<|im_start|>assistant\n" EMPTY_THINK);
    json_free(py);

    json_value *xml = parse("[" WEATHER_TOOL "]");
    py = parse("[\"def f(x)\"]");
    chat_message hi[] = { MSG("user", "Hi") };
    o = opts(0, -1, 2025, 7, 15);
    o.xml_tools = xml;
    o.python_tools = py;
    CHECK_RENDER(CHAT_TEMPLATE_SMOLLM3, hi, 1, &o,
                 HEAD("15 July 2025", "/think") PERSONA_THINK "\n\n" XML_HEAD WEATHER_REPR "\n" XML_TAIL PY_HEAD
                                                              "def f(x)\n" PY_TAIL TOOLS_END
                                                              "<|im_start|>user\nHi<|im_end|>\n");
    json_free(xml);
    json_free(py);
}

/* Tools that are false to Python are no tools: no section, system turn open. */
static void test_falsy_tools(void)
{
    const char *falsy[] = { "[]", "null", "{}", "\"\"", "0", "false" };
    chat_message m[] = { MSG("user", "Hello") };
    for (size_t i = 0; i < sizeof falsy / sizeof falsy[0]; i++) {
        json_value *v = parse(falsy[i]);
        chat_options o = opts(0, 0, 2026, 1, 1);
        o.xml_tools = o.python_tools = o.tools = v;
        CHECK_RENDER(CHAT_TEMPLATE_SMOLLM3, m, 1, &o,
                     HEAD("01 January 2026", "/no_think") PERSONA_NO_THINK "\n\n<|im_start|>user\nHello<|im_end|>\n");
        json_free(v);
    }
}

/* /system_override: the system text alone, closed; no metadata, no tools.
 * /no_think in it still sets the mode. */
static void test_system_override(void)
{
    json_value *tools = parse("[" WEATHER_TOOL "]");
    const char *sys = "You are a pirate. /system_override /no_think \n";
    chat_message m[] = { { "system", sys, strlen(sys) }, MSG("user", "Ahoy"), MSG("assistant", "\n\nArr!") };
    chat_options o = opts(1, -1, 2025, 7, 15);
    o.xml_tools = tools;
    CHECK_RENDER(CHAT_TEMPLATE_SMOLLM3, m, 3, &o,
                 "<|im_start|>system\nYou are a pirate.<|im_end|>\n<|im_start|>user\nAhoy<|im_end|>\n<|im_start|>"
                 "assistant\n" EMPTY_THINK "Arr!<|im_end|>\n<|im_start|>assistant\n" EMPTY_THINK);
    json_free(tools);
}

/* "/think" is a substring test: "/thinking" turns thinking on (over
 * enable_thinking=false) and loses its "/think". "/no_think" wins over it. */
static void test_think_switches(void)
{
    const char *sys = "Keep /thinking short.";
    chat_message m[] = { { "system", sys, strlen(sys) }, MSG("user", "Hi") };
    chat_options o = opts(1, 0, 2025, 7, 15);
    CHECK_RENDER(CHAT_TEMPLATE_SMOLLM3, m, 2, &o,
                 HEAD("15 July 2025", "/think") "Keep ing short.\n\n<|im_start|>user\nHi<|im_end|>\n"
                                                "<|im_start|>assistant\n");
    /* Both present: /no_think wins. Only the first message is looked at. */
    chat_message m2[] = { MSG("system", "/think A /no_think"), MSG("user", "Q"), MSG("system", "/think") };
    o = opts(1, 1, 2025, 7, 15);
    CHECK_RENDER(CHAT_TEMPLATE_SMOLLM3, m2, 3, &o,
                 HEAD("15 July 2025", "/no_think") " A\n\n<|im_start|>user\nQ<|im_end|>\n"
                                                   "<|im_start|>assistant\n" EMPTY_THINK);
    /* The tests see the text as given, the replaces run in order: "/no_/thinkthink"
     * has no "/no_think" (mode /think) but leaves one in the instructions. */
    chat_message m2b[] = { MSG("system", "A /no_/thinkthink"), MSG("user", "Q") };
    o = opts(1, 0, 2025, 7, 15);
    CHECK_RENDER(CHAT_TEMPLATE_SMOLLM3, m2b, 2, &o,
                 HEAD("15 July 2025", "/think") "A /no_think\n\n<|im_start|>user\nQ<|im_end|>\n"
                                                "<|im_start|>assistant\n");
    /* A system message that is only a switch leaves no instructions: the
     * default persona of the mode. */
    chat_message m3[] = { MSG("system", " /no_think "), MSG("user", "Q") };
    o = opts(0, -1, 2025, 7, 15);
    CHECK_RENDER(CHAT_TEMPLATE_SMOLLM3, m3, 2, &o,
                 HEAD("15 July 2025", "/no_think") PERSONA_NO_THINK "\n\n<|im_start|>user\nQ<|im_end|>\n");
    /* A switch in a user message does nothing. */
    chat_message m4[] = { MSG("user", "/no_think Q") };
    CHECK_RENDER(CHAT_TEMPLATE_SMOLLM3, m4, 1, &o,
                 HEAD("15 July 2025", "/think") PERSONA_THINK "\n\n<|im_start|>user\n/no_think Q<|im_end|>\n");
}

/* rstrip() strips what Python calls whitespace (Unicode too), not U+200B. */
static void test_rstrip_unicode(void)
{
    const char *sys = "Be brief.\u3000\u00a0\u2003\u2028\x1c\xc2\x85\t\n\r\v\f /no_think ";
    chat_message m[] = { { "system", sys, strlen(sys) }, MSG("user", "Q") };
    chat_options o = opts(0, -1, 2025, 7, 15);
    CHECK_RENDER(CHAT_TEMPLATE_SMOLLM3, m, 2, &o,
                 HEAD("15 July 2025", "/no_think") "Be brief.\n\n<|im_start|>user\nQ<|im_end|>\n");
    const char *zw = "Be brief.\u3000\n\u200b /no_think \t";
    m[0].content = zw, m[0].content_len = strlen(zw);
    CHECK_RENDER(CHAT_TEMPLATE_SMOLLM3, m, 2, &o,
                 HEAD("15 July 2025", "/no_think") "Be brief.\u3000\n\u200b\n\n<|im_start|>user\nQ<|im_end|>\n");
}

/* A tool call round trip: assistant content loses its leading newlines
 * (only those), a tool result is a user turn, other roles and later system
 * messages render nothing, non-string content renders as "". No generation
 * prompt. */
static void test_turns(void)
{
    const char *call = "\n\n<tool_call>\n{\"name\": \"get_weather\"}\n</tool_call>\n";
    chat_message m[] = {
        MSG("system", "Be brief. /no_think"),
        MSG("user", "What's the weather?"),
        { "assistant", call, strlen(call) },
        MSG("tool", "{\"temp\": 21}"),
        MSG("developer", "ignored"),
        MSG("system", "ignored too"),
        { "assistant", NULL, 0 },
        { "user", NULL, 0 },
        { "tool", NULL, 0 },
        MSG("assistant", " \n\nkept"),
    };
    chat_options o = opts(0, -1, 2028, 2, 29);
    CHECK_RENDER(CHAT_TEMPLATE_SMOLLM3, m, 10, &o,
                 HEAD("29 February 2028", "/no_think") "Be brief.\n\n<|im_start|>user\nWhat's the "
                                                       "weather?<|im_end|>\n<|im_start|>assistant\n" EMPTY_THINK
                                                       "<tool_call>\n{\"name\": \"get_weather\"}\n</tool_call>\n<|im_"
                                                       "end|>\n<|im_start|>user\n{\"temp\": 21}<|im_end|>\n"
                                                       "<|im_start|>assistant\n" EMPTY_THINK "<|im_end|>\n"
                                                       "<|im_start|>user\n<|im_end|>\n<|im_start|>user\n<|im_end|>\n"
                                                       "<|im_start|>assistant\n" EMPTY_THINK " \n\nkept<|im_end|>\n");
    /* Think mode: the assistant's content as is (minus leading "\n"). */
    chat_message t[] = { MSG("user", "Q"), MSG("assistant", "\n<think>\nhm\n</think>\nA") };
    o = opts(1, -1, 2025, 7, 15);
    CHECK_RENDER(CHAT_TEMPLATE_SMOLLM3, t, 2, &o,
                 HEAD("15 July 2025", "/think") PERSONA_THINK
                 "\n\n<|im_start|>user\nQ<|im_end|>\n<|im_start|>assistant\n<think>\nhm\n</think>\nA<|im_end|>\n"
                 "<|im_start|>assistant\n");
}

/* Content may hold U+0000: it is copied, and the length counts it. */
static void test_nul_in_content(void)
{
    chat_message m[] = { MSG("user", "a\0b") };
    chat_options o = opts(0, 0, 2025, 7, 15);
    static const char want[] =
        HEAD("15 July 2025", "/no_think") PERSONA_NO_THINK "\n\n<|im_start|>user\na\0b<|im_end|>\n";
    CHECK_RENDER(CHAT_TEMPLATE_SMOLLM3, m, 1, &o, want);
}

/* All-zero date fields mean today on the local clock, as strftime("%d %B %Y"). */
static void test_clock_date(void)
{
    char before[64], after[64], want_a[96], want_b[96];
    time_t t0 = time(NULL);
    struct tm tm;
    strftime(before, sizeof before, "%d %B %Y", localtime_r(&t0, &tm));
    chat_message m[] = { MSG("user", "Q") };
    smq_err err;
    size_t len;
    char *out = chat_render(CHAT_TEMPLATE_SMOLLM3, m, 1, NULL, &len, &err); /* NULL: all defaults */
    time_t t1 = time(NULL);
    strftime(after, sizeof after, "%d %B %Y", localtime_r(&t1, &tm));
    CHECK_MSG(out, "%s", err.msg);
    snprintf(want_a, sizeof want_a, "\nToday Date: %s\n", before);
    snprintf(want_b, sizeof want_b, "\nToday Date: %s\n", after);
    CHECK_MSG(out && (strstr(out, want_a) || strstr(out, want_b)), "no \"%s\" in the rendering", before);
    /* Defaults: thinking on, no generation prompt. */
    static const char tail[] = "\n\n<|im_start|>user\nQ<|im_end|>\n";
    CHECK(out && strstr(out, "Reasoning Mode: /think\n"));
    CHECK(out && len > sizeof tail && strcmp(out + len - (sizeof tail - 1), tail) == 0);
    free(out);

    /* Given dates: zero-padded day, English month, leap years checked. */
    chat_options o = opts(0, -1, 2024, 2, 29);
    out = chat_render(CHAT_TEMPLATE_SMOLLM3, m, 1, &o, &len, &err);
    CHECK(out && strstr(out, "\nToday Date: 29 February 2024\n"));
    free(out);
    o = opts(0, -1, 2025, 12, 5);
    out = chat_render(CHAT_TEMPLATE_SMOLLM3, m, 1, &o, &len, &err);
    CHECK(out && strstr(out, "\nToday Date: 05 December 2025\n"));
    free(out);
}

static void test_chatml(void)
{
    chat_message m[] = {
        MSG("system", "S"), MSG("user", "Hi\n"), MSG("assistant", "\nA"), { "tool", NULL, 0 }, MSG("critic", "C")
    };
    chat_options o = opts(1, 0, 0, 0, 0);
    CHECK_RENDER(CHAT_TEMPLATE_CHATML, m, 5, &o,
                 "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nHi\n<|im_end|>\n<|im_start|>assistant\n\nA<|im_"
                 "end|>\n<|im_start|>tool\n<|im_end|>\n<|im_start|>critic\nC<|im_end|>\n<|im_start|>assistant\n");
    o.add_generation_prompt = 0;
    CHECK_RENDER(CHAT_TEMPLATE_CHATML, m, 2, &o, "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nHi\n<|im_end|>\n");
    CHECK_RENDER(CHAT_TEMPLATE_CHATML, m, 0, &o, "");
    CHECK_STR(chat_template_name(CHAT_TEMPLATE_CHATML), "chatml");
    CHECK_STR(chat_template_name(CHAT_TEMPLATE_SMOLLM3), "smollm3");
}

/* Replaces every `from` in text[0..*len) by `to`, in place (to is shorter). */
static void replace_all(char *text, size_t *len, const char *from, const char *to)
{
    size_t fl = strlen(from), tl = strlen(to), o = 0;
    for (size_t i = 0; i < *len;) {
        if (*len - i >= fl && memcmp(text + i, from, fl) == 0) {
            memcpy(text + o, to, tl);
            o += tl, i += fl;
        } else {
            text[o++] = text[i++];
        }
    }
    *len = o;
}

static void test_detect(void)
{
    char path[512];
    size_t len;
    snprintf(path, sizeof path, "%s/chat/smollm3.jinja", test_data_dir());
    char *t = test_read_file(path, &len);
    if (!t)
        return;
    CHECK_INT(chat_template_detect(t, len), CHAT_TEMPLATE_SMOLLM3);
    /* Only text[0..len) counts. */
    CHECK_INT(chat_template_detect(t, len / 2), CHAT_TEMPLATE_CHATML);
    /* Variants: with the slicing stripped by a GGUF converter... */
    size_t n = len;
    replace_all(t, &n, "[:]", "");
    CHECK(n == len - 6);
    CHECK_INT(chat_template_detect(t, n), CHAT_TEMPLATE_SMOLLM3);
    /* ...and edits that change the rendering are not SmolLM3's: no date
     * (as in Unsloth's edit), no /system_override. */
    replace_all(t, &n, "Today Date: ", "");
    CHECK_INT(chat_template_detect(t, n), CHAT_TEMPLATE_CHATML);
    free(t);
    t = test_read_file(path, &len);
    n = len;
    replace_all(t, &n, "/system_override", "/override");
    CHECK_INT(chat_template_detect(t, n), CHAT_TEMPLATE_CHATML);
    free(t);

    /* The earlier revision, without the `tools` argument. */
    snprintf(path, sizeof path, "%s/chat/smollm3-no-tools-arg.jinja", test_data_dir());
    t = test_read_file(path, &len);
    if (t) {
        CHECK(!memmem(t, len, "or tools", 8));
        CHECK_INT(chat_template_detect(t, len), CHAT_TEMPLATE_SMOLLM3);
        free(t);
    }

    const char *chatml = "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + "
                         "message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}"
                         "{{ '<|im_start|>assistant\\n' }}{% endif %}";
    CHECK_INT(chat_template_detect(chatml, strlen(chatml)), CHAT_TEMPLATE_CHATML);
    const char *llama3 = "{{ bos_token }}{% for message in messages %}{{ '<|start_header_id|>' + message['role'] + "
                         "'<|end_header_id|>\\n\\n' + message['content'] | trim + '<|eot_id|>' }}{% endfor %}";
    CHECK_INT(chat_template_detect(llama3, strlen(llama3)), CHAT_TEMPLATE_CHATML);
    CHECK_INT(chat_template_detect("", 0), CHAT_TEMPLATE_CHATML);
    CHECK_INT(chat_template_detect(NULL, 0), CHAT_TEMPLATE_CHATML);
}

static void test_errors(void)
{
    chat_message user[] = { MSG("user", "Q") };
    chat_options o = opts(1, -1, 2025, 7, 15);
    CHECK_RENDER_FAILS(CHAT_TEMPLATE_SMOLLM3, user, 0, &o, "messages: empty");
    chat_message norole[] = { MSG("user", "Q"), { NULL, "Q", 1 } };
    CHECK_RENDER_FAILS(CHAT_TEMPLATE_SMOLLM3, norole, 2, &o, "messages[1]: no role");
    CHECK_RENDER_FAILS(CHAT_TEMPLATE_CHATML, norole, 2, &o, "messages[1]: no role");
    chat_message sysnull[] = { { "system", NULL, 0 }, MSG("user", "Q") };
    CHECK_RENDER_FAILS(CHAT_TEMPLATE_SMOLLM3, sysnull, 2, &o,
                       "messages[0]: a system message's content must be a string");
    chat_message bad_utf8[] = { MSG("user", "Q"), MSG("user", "ok \xC3\x28") };
    CHECK_RENDER_FAILS(CHAT_TEMPLATE_SMOLLM3, bad_utf8, 2, &o, "messages[1].content: invalid UTF-8 at byte 3");
    chat_message bad_role[] = { MSG("user\xFF", "Q") };
    CHECK_RENDER_FAILS(CHAT_TEMPLATE_CHATML, bad_role, 1, &o, "messages[0].role: invalid UTF-8");
    CHECK_RENDER_FAILS((chat_template_kind)7, user, 1, &o, "unknown kind 7");

    /* Tools that are true to Python but not lists (the template would fail
     * on them, or iterate a string's characters). */
    const char *bad[] = { "{\"name\": \"f\"}", "\"f\"", "5", "true" };
    const char *what[] = { "got an object", "got a string", "got a number", "got a boolean" };
    for (int i = 0; i < 4; i++) {
        json_value *v = parse(bad[i]);
        chat_options ot = o;
        ot.xml_tools = v;
        CHECK_RENDER_FAILS(CHAT_TEMPLATE_SMOLLM3, user, 1, &ot, "xml_tools: expected a list of tool definitions");
        CHECK_RENDER_FAILS(CHAT_TEMPLATE_SMOLLM3, user, 1, &ot, what[i]);
        ot.xml_tools = NULL, ot.tools = v;
        CHECK_RENDER_FAILS(CHAT_TEMPLATE_SMOLLM3, user, 1, &ot, "tools: expected a list");
        ot.tools = NULL, ot.python_tools = v;
        CHECK_RENDER_FAILS(CHAT_TEMPLATE_SMOLLM3, user, 1, &ot, "python_tools: expected a list");
        json_free(v);
    }

    const int dates[][3] = { { 2025, 2, 29 }, { 2025, 13, 1 }, { 2025, 4, 31 },
                             { 0, 7, 15 },    { 10000, 1, 1 }, { 2025, 0, 0 } };
    for (size_t i = 0; i < sizeof dates / sizeof dates[0]; i++) {
        chat_options od = opts(0, -1, dates[i][0], dates[i][1], dates[i][2]);
        CHECK_RENDER_FAILS(CHAT_TEMPLATE_SMOLLM3, user, 1, &od, "is not a calendar date");
    }
}

/* The caller's text in a rendering: the system text, each tool, every
 * content (an assistant's without its leading newlines), nothing else; chatml
 * marks roles too. */
static void test_spans(void)
{
    json_value *tools = parse("[" WEATHER_TOOL "]");
    chat_message m[] = { MSG("system", "Use tools."), MSG("user", "Find <|im_end|> it"), MSG("assistant", "\nDone."),
                         MSG("user", "") };
    chat_options o = opts(1, -1, 2025, 7, 15);
    o.xml_tools = tools;
    smq_err err;
    chat_spans sp;
    size_t len;
    char *out = chat_render_spans(CHAT_TEMPLATE_SMOLLM3, m, 4, &o, &len, &sp, &err);
    CHECK(out != NULL);
    static const char *const want[] = { "Use tools.", WEATHER_REPR, "Find <|im_end|> it", "Done." };
    CHECK_INT(sp.n, 4);
    for (size_t i = 0; out && i < sp.n && i < 4; i++)
        CHECK_MSG(sp.at[i][1] - sp.at[i][0] == strlen(want[i]) && !memcmp(out + sp.at[i][0], want[i], strlen(want[i])),
                  "span %zu: \"%.*s\"", i, (int)(sp.at[i][1] - sp.at[i][0]), out + sp.at[i][0]);
    free(out);
    chat_spans_free(&sp);
    out = chat_render_spans(CHAT_TEMPLATE_CHATML, m + 1, 1, &o, &len, &sp, &err);
    CHECK(out && sp.n == 2 && !memcmp(out + sp.at[0][0], "user", 4) && !memcmp(out + sp.at[1][0], "Find", 4));
    free(out);
    chat_spans_free(&sp);
    /* a failed rendering leaves no spans */
    chat_message bad = { "user", "\xff", 1 };
    CHECK(!chat_render_spans(CHAT_TEMPLATE_SMOLLM3, &bad, 1, &o, &len, &sp, &err) && sp.n == 0 && !sp.at);
    json_free(tools);
}

int main(void)
{
    test_program = "chat_template";
    TEST_RUN(test_goldens);
    TEST_RUN(test_facts_example_d);
    TEST_RUN(test_tools_replace_xml_tools);
    TEST_RUN(test_python_tools);
    TEST_RUN(test_falsy_tools);
    TEST_RUN(test_system_override);
    TEST_RUN(test_think_switches);
    TEST_RUN(test_rstrip_unicode);
    TEST_RUN(test_turns);
    TEST_RUN(test_nul_in_content);
    TEST_RUN(test_clock_date);
    TEST_RUN(test_chatml);
    TEST_RUN(test_detect);
    TEST_RUN(test_errors);
    TEST_RUN(test_spans);
    return test_done();
}
