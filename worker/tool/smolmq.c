/* smolmq - the command-line tool: model files and (in later verbs) the
 * inference core. `smolmq help` lists the verbs. */
#include <stdio.h>
#include <string.h>

#include "tool.h"

static const struct verb {
    const char *name;
    int (*run)(int argc, char **argv);
    const char *summary;
} verbs[] = {
    { "inspect", tool_inspect, "inspect FILE.gguf [--json]      hyper-parameters, tokenizer, tensors" },
    { "dequant", tool_dequant, "dequant FILE.gguf TENSOR --out OUT.f32   a tensor as little-endian float32" },
    { "synth", tool_synth,
      "synth --preset tiny|smollm3-3b [--seed N] --out FILE.gguf [--vocab SOURCE.gguf]\n"
      "                                  a SmolLM3 Q4_K_M model with deterministic random weights" },
    { "tokenize", tool_tokenize, "tokenize --model M [--special] (--text TEXT | --jsonl IN.jsonl)   ids as JSON" },
    { "detokenize", tool_detokenize, "detokenize --model M [--special] ID...   the text of token ids" },
    { "template", tool_template,
      "template --model M --input CONV.json [--date YYYY-MM-DD] [--ids]   a chat through the chat template" },
    { "logits", tool_logits, "logits --model M --ids 1,2,3 --out F.f32 [--all]   float32 logits of the last position" },
    { "generate", tool_generate,
      "generate --model M (--prompt TEXT | --ids 1,2,3) [--max-tokens N] [--temperature T] [--top-p P] [--top-k K]\n"
      "         [--min-p P] [--seed S] [--stop STR] [--no-think] [--json] [--threads N]   stream an answer" },
    { "chat", tool_chat, "chat --model M [--threads N] [--ctx-size N] [--temperature T]   multi-turn terminal chat" },
#ifndef SMQ_NO_NET
    { "ask", tool_ask,
      "ask [--broker ENDPOINT] [--model NAME] [--no-think] [--max-tokens N] [--temperature T] [--seed S]\n"
      "    [--system TEXT] [--show-reasoning|--hide-reasoning] [--json] \"question\"   ask a smolmq broker" },
#endif
    { "bench", tool_bench,
      "bench --model M [--prompt-len P] [--gen N] [--batch B] [--threads T] [--exact]   speed beside the roofline" },
};

static int usage(FILE *f)
{
    fprintf(f, "usage: smolmq VERB [ARGS]\n\nverbs:\n");
    for (size_t i = 0; i < sizeof verbs / sizeof verbs[0]; i++)
        fprintf(f, "  %s\n", verbs[i].summary);
    return f == stderr ? 2 : 0;
}

int main(int argc, char **argv)
{
    if (argc < 2)
        return usage(stderr);
    if (!strcmp(argv[1], "help") || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h"))
        return usage(stdout);
    for (size_t i = 0; i < sizeof verbs / sizeof verbs[0]; i++)
        if (!strcmp(argv[1], verbs[i].name))
            return verbs[i].run(argc - 2, argv + 2);
    fprintf(stderr, "smolmq: unknown verb \"%s\"\n", argv[1]);
    return usage(stderr);
}
