/* tool_backend.c - `--backend cpu|cuda|auto` and `--gpu N` for every verb
 * that runs the model.
 *
 * Compiled twice: with SMQ_CUDA=1 into the binaries that link the CUDA
 * backend, without it into CPU-only ones, which then say plainly that they
 * have no CUDA backend. `auto` (the default) takes the GPU when there is one
 * and the model fits it, else the CPU, and says which on stderr. */
#include <stdio.h>
#include <string.h>

#include "backend.h"
#include "tool.h"

#ifdef SMQ_CUDA
#include "cuda_backend.h"
#include "dequant.h"

#endif

const backend_ops *tool_pick_backend(const char *verb, const char *name, int gpu, const model *m, uint32_t n_pages,
                                     uint32_t page_size)
{
#ifdef SMQ_CUDA
    static const char *available = "cpu, cuda, auto";
#else
    static const char *available = "cpu, auto";
#endif
    if (!name)
        name = "auto";
    if (!strcmp(name, "cpu"))
        return &cpu_backend_ops;
    if (strcmp(name, "cuda") && strcmp(name, "auto")) {
        tool_fail(verb, "backend \"%s\" is not available in this build (available: %s)", name, available);
        return NULL;
    }
#ifdef SMQ_CUDA
    int n = cuda_device_count();
    if (!strcmp(name, "cuda")) {
        if (gpu < n)
            return &cuda_backend_ops;
        if (n == 0)
            tool_fail(verb, "backend \"cuda\" is not available in this build on this machine: no usable CUDA device "
                            "(no NVIDIA GPU, or no driver)");
        else
            tool_fail(verb, "backend \"cuda\": --gpu %d does not exist (this machine has %d CUDA device%s)", gpu, n,
                      n == 1 ? "" : "s");
        return NULL;
    }
    backend_config cfg = { n_pages, page_size, 0, 0, gpu };
    char desc[256];
    smq_err err;
    if (n > 0 && cuda_backend_probe(m, &cfg, desc, sizeof desc, &err) == 0) {
        fprintf(stderr, "smolmq %s: backend auto: cuda on %s\n", verb, desc);
        return &cuda_backend_ops;
    }
    fprintf(stderr, "smolmq %s: backend auto: cpu (%s)\n", verb, n > 0 ? err.msg : "no usable CUDA device");
    return &cpu_backend_ops;
#else
    (void)gpu;
    (void)m;
    (void)n_pages;
    (void)page_size;
    if (!strcmp(name, "cuda")) {
        tool_fail(verb, "backend \"cuda\" is not available in this build (built without CUDA: build with nvcc present "
                        "and CUDA=1)");
        return NULL;
    }
    fprintf(stderr, "smolmq %s: backend auto: cpu (this build has no CUDA backend)\n", verb);
    return &cpu_backend_ops;
#endif
}

uint32_t tool_gpu_step_nodes(const struct backend *b)
{
#ifdef SMQ_CUDA
    return b && b->ops == &cuda_backend_ops ? cuda_backend_step_nodes(b) : 0;
#else
    (void)b;
    return 0;
#endif
}

double tool_gpu_read_bandwidth(int gpu)
{
#ifdef SMQ_CUDA
    return cuda_read_bandwidth(gpu);
#else
    (void)gpu;
    return 0;
#endif
}
