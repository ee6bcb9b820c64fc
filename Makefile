# smolmq build.
#
#   make              build every program into build/bin (optimized, with debug info)
#   make test         build and run every test this machine can run
#   make test-gpu     the GPU tests only (skipped, and counted so, without a GPU)
#   make fuzz         run each libFuzzer target for FUZZ_SECONDS (default 60)
#   make run          start the system on its built-in default
#   make gpu-bundle   the inference core, GPU tests and data for a bare GPU host (build/gpu-bundle)
#   make SAN=1 ...    the same with AddressSanitizer + UndefinedBehaviorSanitizer (in build/san)
#   make CUDA=0 ...   CPU only, even where nvcc is present
#   make deps         install the Debian packages the build and tests need (only missing ones)
#   make programs     the four programs only (smolmq, smolmq-broker, -worker, -gateway)
#   make install      the programs, the built-in model and the systemd units under PREFIX

SAN ?= 0
CUDA ?= auto
# NET=0: the `smolmq` tool without its network verb (`ask`), so that it needs
# neither libzmq nor msgpack-c (the GPU bundle).
NET ?= 1
FUZZ_SECONDS ?= 60

CC ?= cc
ifeq ($(origin CC),default)
CC := gcc
endif

ifeq ($(SAN),1)
BUILD ?= build/san
SANFLAGS := -fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer
# CUDA's runtime and ASan do not mix well; sanitized builds are CPU-only.
CUDA := 0
else
BUILD ?= build
SANFLAGS :=
endif

NVCC ?= $(shell command -v nvcc 2>/dev/null || { [ -x /usr/local/cuda/bin/nvcc ] && echo /usr/local/cuda/bin/nvcc; })
ifeq ($(CUDA),auto)
ifneq ($(NVCC),)
CUDA := 1
else
CUDA := 0
$(info nvcc not found: building the CPU path only (install the CUDA toolkit for the GPU backend))
endif
endif
CUDA_HOME ?= $(patsubst %/bin/nvcc,%,$(NVCC))

INCLUDES := -Icommon -Iproto -Igateway -Ibroker -Iworker/server -Iworker/model -Iworker/engine -Iworker/backend -Iworker/backend/cpu -Iworker/backend/cuda
CFLAGS_BASE := -std=c11 -D_GNU_SOURCE -O2 -g -Wall -Wextra -Werror -Wshadow -Wstrict-prototypes \
	-Wno-missing-field-initializers -pthread
CFLAGS := $(CFLAGS_BASE) $(SANFLAGS) $(INCLUDES) $(EXTRA_CFLAGS)
LDFLAGS := $(SANFLAGS) -pthread
LDLIBS := -lpcre2-8 -lm

# sm_90 (H100/H200) and what users most likely run: A100 (80), RTX 30xx/A10 (86), L4/RTX 40xx (89).
CUDA_ARCHS := 80 86 89 90
NVCCFLAGS := -std=c++17 -O3 -g -Werror all-warnings -Xcompiler -Wall,-Wextra,-Werror \
	$(foreach a,$(CUDA_ARCHS),-gencode arch=compute_$(a),code=sm_$(a)) $(INCLUDES) \
	-DSMQ_CUDA_LIBDIR='"$(CUDA_HOME)/lib64"'
# cuBLAS (prompts' products, gemm.cu) is loaded at run time, from the loader's
# path or this toolkit's lib64: not linked, so that the binaries start without it.
# Static CUDA runtime: the binaries run on a bare GPU host with only the driver.
CUDA_LDLIBS := -L$(CUDA_HOME)/lib64 -lcudart_static -ldl -lrt -lstdc++

COMMON_SRC := common/err.c common/utf8.c common/sbuf.c common/json.c common/json_repr.c common/sd_notify.c
MODEL_SRC := worker/model/gguf.c worker/model/gguf_writer.c worker/model/quant.c worker/model/tokenizer.c worker/model/detok.c \
	worker/model/chat_template.c worker/model/model.c
BACKEND_SRC := worker/backend/backend.c worker/backend/rope.c worker/backend/cpu/cpu_backend.c worker/backend/cpu/cpu_ops.c worker/backend/cpu/threadpool.c \
	worker/backend/cpu/qdot.c
ENGINE_SRC := worker/engine/engine.c worker/engine/kv_pages.c worker/engine/sampler.c
TOOL_SRC := worker/tool/smolmq.c worker/tool/tool.c worker/tool/inspect.c worker/tool/dequant.c worker/tool/synth.c \
	worker/tool/json_out.c worker/tool/tokenize.c worker/tool/template.c \
	worker/tool/generate.c worker/tool/bench.c worker/tool/chat.c worker/tool/ask.c
CUDA_SRC := worker/backend/cuda/dequant.cu worker/backend/cuda/matvec.cu worker/backend/cuda/fwd_kernels.cu \
	worker/backend/cuda/prompt_attention.cu worker/backend/cuda/gemm.cu worker/backend/cuda/sample.cu \
	worker/backend/cuda/cuda_backend.cu

# The network side: the protocol codec (msgpack-c), the C client library
# (libzmq), the broker (czmq) and the worker process. The inference core and
# the GPU tests do not link these, so they run on a bare GPU host.
PROTO_SRC := proto/proto.c
CLIENT_SRC := proto/client.c
# CURVE certificates for the DEALER side (worker, gateway): needs libzmq.
CURVE_SRC := proto/curve_cert.c
# What the gateway takes from common/: not json.c, whose json_string() and
# json_integer() would shadow jansson's functions of the same names.
COMMON_NET_SRC := common/err.c common/utf8.c common/sbuf.c common/sd_notify.c
BROKER_SRC := $(wildcard broker/*.c)
WORKER_SRV_SRC := $(wildcard worker/server/*.c)
GATEWAY_SRC := $(wildcard gateway/*.c)
NET_LIBS := -lzmq -lmsgpackc

obj = $(patsubst %.c,$(BUILD)/obj/%.o,$(1))
CORE_OBJ := $(call obj,$(COMMON_SRC) $(MODEL_SRC) $(BACKEND_SRC) $(ENGINE_SRC))
TOOL_OBJ := $(call obj,$(TOOL_SRC))
PROTO_OBJ := $(call obj,$(PROTO_SRC))
CLIENT_OBJ := $(call obj,$(CLIENT_SRC))
CUDA_OBJ := $(patsubst %.cu,$(BUILD)/obj/%.cu.o,$(CUDA_SRC))

BIN := $(BUILD)/bin/smolmq
BROKER_BIN := $(BUILD)/bin/smolmq-broker
WORKER_BIN := $(BUILD)/bin/smolmq-worker
GATEWAY_BIN := $(BUILD)/bin/smolmq-gateway
UNIT_TESTS := $(BUILD)/tests/gguf_test $(BUILD)/tests/quant_test $(BUILD)/tests/tokenizer_test \
	$(BUILD)/tests/json_test $(BUILD)/tests/chat_template_test $(BUILD)/tests/cpu_backend_test \
	$(BUILD)/tests/engine_test $(BUILD)/tests/sampler_test $(BUILD)/tests/proto_test $(BUILD)/tests/sha1_test \
	$(BUILD)/tests/openai_response_test $(BUILD)/tests/sd_notify_test $(BUILD)/tests/step_budget_test
GPU_TESTS := $(BUILD)/tests/quant_gpu_test $(BUILD)/tests/matvec_gpu_test $(BUILD)/tests/attention_gpu_test \
	$(BUILD)/tests/sample_gpu_test \
	$(BUILD)/tests/cuda_backend_gpu_test
EMU := $(BUILD)/emu
comma := ,
space := $(subst ,, )
EMU_CXXFLAGS := -std=c++17 -O2 -g -ffp-contract=off -Wall -Wextra -Werror -Wno-unused-function -Wno-unknown-pragmas \
	-Wno-sign-compare -Wno-unused-variable $(SANFLAGS) \
	-include tests/emu/cuda_emu.h -Itests/emu -I$(CUDA_HOME)/include $(INCLUDES) -Itests \
	-DSMQ_CUDA_LIBDIR='"$(CUDA_HOME)/lib64"'
# The loads and stores of the files that launch kernels with programmatic
# dependent launch call emu.cpp's hooks, which check launch.cuh's contract
# (cuda_emu.h); other files, the tests' own code and the emulation's hot
# spots (EMU_UNHOOKED) are left alone, for speed.
EMU_ACCESS_HOOKS := -fsanitize=kernel-address --param asan-instrumentation-with-call-threshold=0 \
	--param asan-stack=0 --param asan-globals=0
EMU_HOOKED := $(patsubst %.cu,$(EMU)/obj/%.o,$(shell grep -l pdl_launch $(CUDA_SRC))) $(EMU)/obj/tests/emu/emu_test.o
EMU_OBJ := $(patsubst %.cu,$(EMU)/obj/%.o,$(CUDA_SRC)) $(EMU)/obj/tests/emu/emu.o
EMU_CUBLAS := $(EMU)/libcublas_emu.so
EMU_TESTS := $(patsubst $(BUILD)/tests/%,$(EMU)/tests/%,$(GPU_TESTS)) $(EMU)/tests/emu_test
EMU_BIN := $(EMU)/bin/smolmq
# make test runs them all (some 2 minutes), but for the emulated backend's
# six slowest tests (make test-emu runs them): the prompt routes, chunks and
# greedy decode are also checked by the others at less cost (goldens through
# cuBLAS and the tensor cores, batches, prefix reuse), the fused norm and the
# device's picks by the kernels' own tests; the overlapped launches' contract
# is checked in every test (the emulation launches with PDL), and what the
# test adds, the same bits without PDL, is trivially true where kernels run
# one after another.
EMU_SLOW := $(subst $(space),$(comma),$(addprefix emu:cuda_backend_gpu/,test_greedy_decode test_chunked_prefill \
	test_routes test_fused_norm test_device_pick test_overlapped_launches))
# The tool's backend choice (tool_backend.c) is compiled with -DSMQ_CUDA=1 into
# its own object where the binary has the CUDA backend. The setting is kept in
# a file rewritten (at parse time) only when CUDA= changes, which relinks the
# binary. (A file per setting would not do: under .SECONDARY a missing
# prerequisite does not force a relink.)
CUDA_SETTING := $(BUILD)/obj/cuda-setting
ifneq ($(shell cat $(CUDA_SETTING) 2>/dev/null),$(CUDA))
$(shell mkdir -p $(BUILD)/obj && echo $(CUDA) > $(CUDA_SETTING))
endif
ifeq ($(CUDA),1)
GPU_BENCH_BIN := $(BUILD)/bench/gpu_matvec_bench
ALL_TESTS_BIN := $(UNIT_TESTS) $(GPU_TESTS) $(EMU_TESTS)
EMU_TOOL := $(EMU_BIN)
# The kernels' tests once more with the threads taking turns in reverse:
# a read of another thread's write with no barrier between shows one way.
# In make test-emu (some 80 s: make test keeps CI well under 20 minutes).
EMU_REVERSE_RUN := SMQ_EMU_ORDER=reverse $(filter-out %/cuda_backend_gpu_test %/emu_test,$(EMU_TESTS))
TOOL_BACKEND_OBJ := $(BUILD)/obj/worker/tool/tool_backend.cuda.o
BACKENDS_OBJ := $(CORE_OBJ) $(CUDA_OBJ)
BIN_LIBS := $(CUDA_LDLIBS) $(LDLIBS)
else
ALL_TESTS_BIN := $(UNIT_TESTS)
TOOL_BACKEND_OBJ := $(BUILD)/obj/worker/tool/tool_backend.o
BACKENDS_OBJ := $(CORE_OBJ)
BIN_LIBS := $(LDLIBS)
endif

.SECONDARY:

.PHONY: all deps build programs install bench bench-gpu tests test test-unit test-gpu test-emu fuzz fuzz-build $(addprefix fuzz-run-,$(FUZZ_TARGETS)) run clean format gpu-bundle \
	gpu-bundle-parts

all: deps build

deps:
ifneq ($(DEPS_DONE),1)
	@sh deploy/deps.sh
endif

build: $(BIN) $(BROKER_BIN) $(WORKER_BIN) $(GATEWAY_BIN) $(ALL_TESTS_BIN) $(GPU_BENCH_BIN) $(EMU_TOOL)

programs: $(BIN) $(BROKER_BIN) $(WORKER_BIN) $(GATEWAY_BIN)

# The built-in model: random weights, the real tokenizer (make run, the units
# and the container image serve it when no MODEL is named).
TINY_MODEL := $(BUILD)/models/smolmq-tiny.gguf
$(TINY_MODEL): $(BIN)
	@mkdir -p $(dir $@)
	$(BIN) synth --preset tiny --seed 1 --out $@ >/dev/null

# make install [PREFIX=/usr/local] [DESTDIR=]: the programs into PREFIX/bin,
# the built-in model and an example settings file into PREFIX/share/smolmq,
# the systemd units (deploy/systemd, their paths under PREFIX) into
# PREFIX/lib/systemd/system and their user into PREFIX/lib/sysusers.d
# (created at once when installing into the running system's /usr/local or /usr).
PREFIX ?= /usr/local
install: programs $(TINY_MODEL)
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(PREFIX)/share/smolmq $(DESTDIR)$(PREFIX)/lib/systemd/system \
		$(DESTDIR)$(PREFIX)/lib/sysusers.d
	install -m 755 $(BIN) $(BROKER_BIN) $(WORKER_BIN) $(GATEWAY_BIN) $(DESTDIR)$(PREFIX)/bin/
	install -m 644 $(TINY_MODEL) deploy/systemd/smolmq.env $(DESTDIR)$(PREFIX)/share/smolmq/
	for u in deploy/systemd/*.service; do \
		sed 's|/usr/local/|$(PREFIX)/|g' $$u > $(DESTDIR)$(PREFIX)/lib/systemd/system/$$(basename $$u) || exit 1; \
	done
	install -m 644 deploy/systemd/smolmq.sysusers $(DESTDIR)$(PREFIX)/lib/sysusers.d/smolmq.conf
	@# Into the running system (no DESTDIR, a system prefix): the user now.
	@if [ -z "$(DESTDIR)" ] && { [ "$(PREFIX)" = /usr/local ] || [ "$(PREFIX)" = /usr ]; } && \
		[ -d /run/systemd/system ]; then \
		systemd-sysusers $(PREFIX)/lib/sysusers.d/smolmq.conf && systemctl daemon-reload; fi

# Every compile waits for `deps` (order-only), so that `make -j` on a fresh
# machine installs the compilers before it uses them.
$(BUILD)/obj/%.o: %.c | deps
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -MMD -MP -c $< -o $@

$(BUILD)/obj/%.cu.o: %.cu | deps
	@mkdir -p $(dir $@)
	$(NVCC) $(NVCCFLAGS) -MMD -MP -c $< -o $@

# The integer dot-product kernels: their fixed-count loops must unroll so that
# the per-block arrays live in registers (at -O2 gcc keeps them on the stack).
$(BUILD)/obj/worker/backend/cpu/qdot.o: CFLAGS += -O3 -funroll-loops

ifeq ($(NET),1)
BIN_OBJ := $(TOOL_OBJ) $(TOOL_BACKEND_OBJ) $(CLIENT_OBJ) $(call obj,$(CURVE_SRC)) $(PROTO_OBJ) $(BACKENDS_OBJ)
BIN_NET_LIBS := $(NET_LIBS)
else
BIN_OBJ := $(filter-out %/ask.o,$(TOOL_OBJ)) $(TOOL_BACKEND_OBJ) $(BACKENDS_OBJ)
BIN_NET_LIBS :=
$(BUILD)/obj/worker/tool/smolmq.o: CFLAGS += -DSMQ_NO_NET
endif
$(BIN): $(BIN_OBJ) $(CUDA_SETTING)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) $(BIN_OBJ) $(BIN_LIBS) $(BIN_NET_LIBS) -o $@

BROKER_OBJ := $(call obj,$(BROKER_SRC) $(PROTO_SRC) $(COMMON_SRC))
$(BROKER_BIN): $(BROKER_OBJ)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) $(BROKER_OBJ) -lczmq $(NET_LIBS) -lm -o $@

# The gateway: libuv, http-parser, wslay, jansson, and the web chat's files
# embedded (gateway/web bundled by its build.sh, then gateway/embed.py).
WEB_OUT := $(BUILD)/web
WEB_SRC := $(shell find gateway/web -path gateway/web/node_modules -prune -o -type f -print 2>/dev/null)
$(WEB_OUT)/.built: $(WEB_SRC) | deps
	@rm -rf $(WEB_OUT) && mkdir -p $(WEB_OUT)
	sh gateway/web/build.sh $(WEB_OUT)
	@touch $@
$(BUILD)/gen/web_assets.c: $(WEB_OUT)/.built gateway/embed.py
	@mkdir -p $(dir $@)
	python3 gateway/embed.py $(WEB_OUT) $@
$(BUILD)/obj/gen/web_assets.o: $(BUILD)/gen/web_assets.c gateway/web_assets.h
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -Igateway -c $< -o $@
GATEWAY_OBJ := $(call obj,$(GATEWAY_SRC) $(PROTO_SRC) $(CURVE_SRC) $(COMMON_NET_SRC)) $(BUILD)/obj/gen/web_assets.o
$(GATEWAY_BIN): $(GATEWAY_OBJ)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) $(GATEWAY_OBJ) -luv -lhttp_parser -lwslay -ljansson $(NET_LIBS) -lm -o $@

WORKER_OBJ := $(call obj,$(WORKER_SRV_SRC) $(CURVE_SRC)) $(BUILD)/obj/worker/tool/tool.o $(TOOL_BACKEND_OBJ) $(PROTO_OBJ) $(BACKENDS_OBJ)
$(WORKER_BIN): $(WORKER_OBJ) $(CUDA_SETTING)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) $(WORKER_OBJ) $(BIN_LIBS) $(NET_LIBS) -o $@

$(BUILD)/obj/worker/tool/tool_backend.cuda.o: worker/tool/tool_backend.c | deps
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -DSMQ_CUDA=1 -MMD -MP -c $< -o $@

$(BUILD)/tests/%_test: $(BUILD)/obj/tests/%_test.o $(CORE_OBJ)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) $^ $(LDLIBS) -o $@

$(BUILD)/tests/proto_test: $(BUILD)/obj/tests/proto_test.o $(PROTO_OBJ) $(CORE_OBJ)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) $^ $(LDLIBS) -lmsgpackc -o $@

$(BUILD)/tests/sha1_test: $(BUILD)/obj/tests/sha1_test.o $(BUILD)/obj/gateway/sha1.o $(CORE_OBJ)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) $^ $(LDLIBS) -o $@

$(BUILD)/tests/step_budget_test: $(BUILD)/obj/tests/step_budget_test.o $(BUILD)/obj/worker/server/step_budget.o \
		$(CORE_OBJ)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) $^ $(LDLIBS) -o $@

$(BUILD)/tests/sd_notify_test: $(BUILD)/obj/tests/sd_notify_test.o $(BUILD)/obj/common/sd_notify.o
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) $^ -o $@

# Not CORE_OBJ: common/json.c's names clash with jansson's (COMMON_NET_SRC).
$(BUILD)/tests/openai_response_test: $(BUILD)/obj/tests/openai_response_test.o \
		$(call obj,gateway/openai_response.c $(COMMON_NET_SRC))
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) $^ -ljansson -lm -o $@

$(BUILD)/obj/tests/%.o: tests/%.c | deps
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -Itests -MMD -MP -c $< -o $@

$(BUILD)/tests/%_gpu_test: $(BUILD)/obj/tests/gpu/%_gpu_test.o $(CUDA_OBJ) $(CORE_OBJ)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) $^ $(CUDA_LDLIBS) $(LDLIBS) -o $@

$(BUILD)/obj/tests/gpu/%.o: tests/gpu/%.c | deps
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -Itests -I$(CUDA_HOME)/include -MMD -MP -c $< -o $@

# GPU tests of kernels whose launchers take CUDA types: .cu files.
$(BUILD)/tests/%_gpu_test: $(BUILD)/obj/tests/gpu/%_gpu_test.cu.o $(CUDA_OBJ) $(CORE_OBJ)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) $^ $(CUDA_LDLIBS) $(LDLIBS) -o $@

$(BUILD)/obj/tests/gpu/%.cu.o: tests/gpu/%.cu | deps
	@mkdir -p $(dir $@)
	$(NVCC) $(NVCCFLAGS) -Itests -MMD -MP -c $< -o $@

# The CUDA code on the host emulation of the device (tests/emu/cuda_emu.h):
# the kernels and the GPU tests compiled by the host compiler, run where
# there is no GPU (as "emu:" tests). WMMA is tests/emu/mma.h; cuBLAS is a
# library of its own, which the programs find beside them (-rdynamic: its
# calls into the emulation resolve against the program).

$(EMU)/obj/%.o: %.cu | deps
	@mkdir -p $(dir $@)
	$(CXX) $(EMU_CXXFLAGS) $(HOOKS) -x c++ -MMD -MP -c $< -o $@
$(EMU_HOOKED): HOOKS := $(EMU_ACCESS_HOOKS)
# The programs that serve (the tool, the worker) link those files compiled
# without the hooks: the tests above check the contract, and the hooks made
# the emulated worker's chats several times slower.
EMU_PLAIN_OBJ := $(patsubst %.o,%.plain.o,$(filter $(EMU_HOOKED),$(EMU_OBJ))) $(filter-out $(EMU_HOOKED),$(EMU_OBJ))
$(EMU)/obj/%.plain.o: %.cu | deps
	@mkdir -p $(dir $@)
	$(CXX) $(EMU_CXXFLAGS) -x c++ -MMD -MP -c $< -o $@

$(EMU)/obj/%.o: %.cpp | deps
	@mkdir -p $(dir $@)
	$(CXX) $(EMU_CXXFLAGS) -MMD -MP -c $< -o $@

$(EMU)/obj/%.o: %.c | deps
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -DSMQ_CUDA_EMU=1 -Itests -Itests/emu -I$(CUDA_HOME)/include -MMD -MP -c $< -o $@

$(EMU_CUBLAS): tests/emu/cublas_emu.cpp tests/emu/cuda_emu.h | deps
	@mkdir -p $(dir $@)
	$(CXX) $(EMU_CXXFLAGS) -fPIC -shared $< -o $@

EMU_LINK = mkdir -p $(dir $@) && $(CXX) $(LDFLAGS) -rdynamic $^ $(LDLIBS) -ldl -o $@
$(EMU)/tests/%_gpu_test: $(EMU)/obj/tests/gpu/%_gpu_test.o $(EMU_OBJ) $(CORE_OBJ) | $(EMU_CUBLAS)
	$(EMU_LINK)

# The emulation's own test: what it computes, and what it refuses.
$(EMU)/tests/emu_test: $(EMU)/obj/tests/emu/emu_test.o $(EMU_OBJ) $(CORE_OBJ) | $(EMU_CUBLAS)
	$(EMU_LINK)

# The smolmq tool on the emulation, without the network verbs (ask): the
# tool's tests run `--backend cuda` through it.
EMU_TOOL_OBJ := $(filter-out %/ask.o %/smolmq.o,$(TOOL_OBJ)) $(EMU)/obj/worker/tool/smolmq.o \
	$(EMU)/obj/worker/tool/tool_backend.o
$(EMU)/obj/worker/tool/smolmq.o: CFLAGS += -DSMQ_NO_NET
$(EMU)/obj/worker/tool/tool_backend.o: CFLAGS += -DSMQ_CUDA=1
$(EMU_BIN): $(EMU_TOOL_OBJ) $(EMU_PLAIN_OBJ) $(CORE_OBJ) | $(EMU_CUBLAS)
	$(EMU_LINK)

# ... and the worker, whose tests then serve chats through the CUDA backend.
EMU_WORKER := $(EMU)/bin/smolmq-worker
$(EMU_WORKER): $(call obj,$(WORKER_SRV_SRC) $(CURVE_SRC)) $(BUILD)/obj/worker/tool/tool.o \
		$(EMU)/obj/worker/tool/tool_backend.o $(PROTO_OBJ) $(EMU_PLAIN_OBJ) $(CORE_OBJ) | $(EMU_CUBLAS)
	$(EMU_LINK) $(NET_LIBS)

# The suite: unit tests, then the command-line tests against the built binary,
# then the network side (worker, broker, clients on loopback).
# SMQ_TEST_QUICK=1 (set for sanitized runs) skips the 2 GB synth test.
# The Python tests need Debian's python3-zmq, python3-msgpack,
# python3-websockets and python3-yaml: the first
# python3 that has them (a pyenv python3 on PATH usually does not).
NET_TESTS := tests/worker_test.py tests/cluster_test.py tests/ask_fake_broker_test.py \
	proto/clients/python/test_client.py tests/gateway_test.py tests/gateway_clients_test.py
PICK_PYTHON = $$(for p in python3 /usr/bin/python3; do $$p -c 'import zmq, msgpack, websockets, yaml' 2>/dev/null && { echo $$p; break; }; done)
# deploy/'s files, run as what they describe (not under SAN: they install
# and run the plain build's programs).
DEPLOY_TESTS := tests/deploy_test.py
test: all
	@SMQ_PYTHON=$(PICK_PYTHON) SMQ_BIN=$(BIN) SMQ_BUILD=$(BUILD) SMQ_TEST_SKIP=$(EMU_SLOW) sh tests/run.sh $(ALL_TESTS_BIN) tests/smolmq_test.py $(NET_TESTS) $(DEPLOY_TESTS)

test-unit: all
	@SMQ_PYTHON=$(PICK_PYTHON) SMQ_BIN=$(BIN) SMQ_BUILD=$(BUILD) SMQ_TEST_QUICK=1 sh tests/run.sh $(UNIT_TESTS) tests/smolmq_test.py $(NET_TESTS)

# The GPU tests on the host emulation of the device (tests/emu), every one:
# no GPU needed, some 20 minutes on a 2-core machine (the backend's test
# alone 17, past tests/run.sh's 15-minute default limit: hence an hour).
# With the network libraries (NET=1) also the worker's tests, its chats
# served by the emulated CUDA backend (every wait and the heartbeat interval
# 20 times longer; heartbeat timing is not checked): 16 minutes, its worker
# and tool built without the PDL contract's hooks (EMU_PLAIN_OBJ).
ifeq ($(NET),1)
EMU_SERVE := $(EMU_BIN) $(EMU_WORKER)
EMU_SERVE_TESTS := tests/worker_test.py
endif
test-emu:
ifeq ($(CUDA),1)
	@$(MAKE) --no-print-directory $(EMU_TESTS) $(EMU_SERVE) DEPS_DONE=1
	@SMQ_PYTHON=$(PICK_PYTHON) SMQ_BUILD=$(EMU) SMQ_TEST_BACKEND=cuda SMQ_TEST_SLOWER=20 SMQ_TEST_TIMEOUT=3600 \
		sh tests/run.sh $(EMU_TESTS) $(EMU_SERVE_TESTS) $(EMU_REVERSE_RUN)
else
	@echo "SKIP emu: no CUDA build (the emulation needs the CUDA headers)" | sh tests/run.sh --count-stdin
endif

# Needs only gcc and nvcc (no `deps`), so it also runs on a bare GPU host.
test-gpu:
ifeq ($(CUDA),1)
	@$(MAKE) --no-print-directory $(GPU_TESTS) DEPS_DONE=1
	@sh tests/run.sh $(GPU_TESTS)
else
	@echo "test-gpu: built without CUDA (nvcc not found or CUDA=0): GPU tests skipped"
	@echo "SKIP gpu: no CUDA build" | sh tests/run.sh --count-stdin
endif

# `make gpu-bundle`: what a bare GPU host needs to run the inference core and
# its GPU checks, in build/gpu-bundle/: smolmq without its network verb, the
# GPU tests and benchmark (stripped; the CUDA runtime is linked statically, so
# they need only libc, PCRE2 and the NVIDIA driver), the test data they read,
# tests/run.sh and bench/cuda_device_check.sh. Built in a build folder of its
# own (NET=0). Run it from inside the folder: sh gpu-check.sh.
# GPU_BUNDLE_DATA=0 leaves the test data out (43 MB instead of 82), for a
# host that has the repository: SMQ_TEST_DATA=/path/to/repo/tests/data.
GPU_BUNDLE := build/gpu-bundle
# The same folder as one gzipped tar (11 MB instead of 41: the binaries
# share the static CUDA runtime), for a device call that carries it beside
# the working tree (docs/BENCHMARKS.md has the command).
GPU_CARRY := build/gpu-carry
GPU_BUNDLE_BUILD := build/gpu-bundle-build
gpu-bundle-parts: $(BIN) $(GPU_TESTS) $(GPU_BENCH_BIN)

gpu-bundle:
ifeq ($(CUDA),1)
	@$(MAKE) --no-print-directory NET=0 BUILD=$(GPU_BUNDLE_BUILD) gpu-bundle-parts
	@rm -rf $(GPU_BUNDLE) && mkdir -p $(GPU_BUNDLE)/bin $(GPU_BUNDLE)/tests/data $(GPU_BUNDLE)/bench
	cp $(GPU_BUNDLE_BUILD)/bin/smolmq $(GPU_BUNDLE)/bin/
	cp $(patsubst $(BUILD)/%,$(GPU_BUNDLE_BUILD)/%,$(GPU_TESTS)) $(GPU_BUNDLE)/tests/
	cp $(GPU_BUNDLE_BUILD)/bench/gpu_matvec_bench $(GPU_BUNDLE)/bench/
	strip $(GPU_BUNDLE)/bin/* $(GPU_BUNDLE)/tests/*_test $(GPU_BUNDLE)/bench/*
	$(if $(filter 0,$(GPU_BUNDLE_DATA)),,cp -r tests/data/models tests/data/model_goldens tests/data/quant $(GPU_BUNDLE)/tests/data/)
	cp tests/run.sh $(GPU_BUNDLE)/tests/
	cp bench/cuda_device_check.sh $(GPU_BUNDLE)/gpu-check.sh
	cp bench/cuda_profile.sh bench/ncu_summary.py $(GPU_BUNDLE)/bench/
	@mkdir -p $(GPU_CARRY) && tar -czf $(GPU_CARRY)/gpu-bundle.tgz -C $(dir $(GPU_BUNDLE)) $(notdir $(GPU_BUNDLE))
	@du -sh $(GPU_BUNDLE) $(GPU_CARRY)/gpu-bundle.tgz
	@echo "gpu-bundle: $(GPU_BUNDLE): copy it (or $(GPU_CARRY)/gpu-bundle.tgz) to the GPU host and run: cd gpu-bundle && sh gpu-check.sh"
else
	@echo "gpu-bundle: needs the CUDA toolkit (nvcc) and CUDA=1"; exit 1
endif

# libFuzzer targets (clang). Each runs for FUZZ_SECONDS over a scratch corpus
# seeded from tests/fuzz/corpus/<target>; crashes are saved in build/fuzz/.
FUZZ_TARGETS := gguf tokenizer json proto gateway
FUZZ_CFLAGS := $(CFLAGS_BASE) -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all $(INCLUDES)

fuzz-build: deps $(foreach t,$(FUZZ_TARGETS),build/fuzz/$(t)_fuzz)

build/fuzz/%_fuzz: tests/fuzz/%_fuzz.c $(COMMON_SRC) $(MODEL_SRC) $(wildcard common/*.h worker/model/*.h)
	@mkdir -p $(dir $@)
	clang $(FUZZ_CFLAGS) $< $(COMMON_SRC) $(MODEL_SRC) -lpcre2-8 -lm -o $@

build/fuzz/proto_fuzz: tests/fuzz/proto_fuzz.c $(PROTO_SRC) $(COMMON_SRC) $(wildcard common/*.h proto/*.h)
	@mkdir -p $(dir $@)
	clang $(FUZZ_CFLAGS) $< $(PROTO_SRC) $(COMMON_SRC) -lmsgpackc -lm -o $@

# The gateway's request parsing (gateway/openai_request.c: JSON body -> CHAT) and
# HTTP request framing (gateway/http_request.c), without the event loop.
build/fuzz/gateway_fuzz: tests/fuzz/gateway_fuzz.c gateway/openai_request.c gateway/http_request.c \
		gateway/openai_response.c $(PROTO_SRC) $(COMMON_NET_SRC) $(wildcard common/*.h proto/*.h gateway/*.h)
	@mkdir -p $(dir $@)
	clang $(FUZZ_CFLAGS) $< gateway/openai_request.c gateway/http_request.c gateway/openai_response.c $(PROTO_SRC) \
		$(COMMON_NET_SRC) -ljansson -lhttp_parser -lmsgpackc -lm -o $@

# One rule a target, so that `make -j2 fuzz` runs two at once (each fuzzer
# uses one core); each prints its lines when it ends.
fuzz: $(addprefix fuzz-run-,$(FUZZ_TARGETS))

fuzz-run-%: fuzz-build
	@mkdir -p build/fuzz/corpus/$* build/fuzz/crashes/$*
	@build/fuzz/$*_fuzz -max_total_time=$(FUZZ_SECONDS) -print_final_stats=1 \
		-artifact_prefix=build/fuzz/crashes/$*/ build/fuzz/corpus/$* tests/fuzz/corpus/$* \
		2>build/fuzz/$*.log || { tail -n 40 build/fuzz/$*.log; echo "fuzz: $* FAILED (log: build/fuzz/$*.log)"; exit 1; }
	@echo "fuzz: $* for $(FUZZ_SECONDS) s: $$(grep -E '^stat::number_of_executed_units|^#[0-9]+.*DONE' build/fuzz/$*.log | tail -n 2 | tr '\n' ' ')"

# Benchmarks: each prints its figure beside a reference measured in the same run.
BENCH_BIN := $(BUILD)/bench/tokenize_bench $(BUILD)/bench/qdot_bench $(BUILD)/bench/broker_bench

$(BUILD)/bench/broker_bench: $(BUILD)/obj/bench/broker_bench.o $(PROTO_OBJ) $(call obj,$(COMMON_SRC))
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) $^ $(NET_LIBS) -lm -o $@

$(BUILD)/bench/%: $(BUILD)/obj/bench/%.o $(CORE_OBJ)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) $^ $(LDLIBS) -o $@

$(BUILD)/obj/bench/%.o: bench/%.c | deps
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -MMD -MP -c $< -o $@

# GPU benchmarks (CUDA builds): a .cu with its own main, linked like the GPU tests.
$(BUILD)/bench/gpu_%: $(BUILD)/obj/bench/gpu_%.cu.o $(CUDA_OBJ) $(CORE_OBJ)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) $^ $(CUDA_LDLIBS) $(LDLIBS) -o $@

bench-gpu: $(GPU_BENCH_BIN)
ifeq ($(CUDA),1)
	$(BUILD)/bench/gpu_matvec_bench
else
	@echo "bench-gpu: built without CUDA: nothing to run"
endif

bench: all $(BENCH_BIN) $(BROKER_BIN) $(GATEWAY_BIN)
	taskset -c 0 $(BUILD)/bench/tokenize_bench tests/data/models/smollm3-tiny-q4_k_m.gguf
	taskset -c 0 $(BUILD)/bench/qdot_bench 64
	$(BUILD)/bench/broker_bench $(BROKER_BIN) 8 20000 $(GATEWAY_BIN)
	SMQ_BIN=$(BIN) sh bench/synth_bench.sh

# `make run`: a local cluster (broker, WORKERS workers, gateway) until Ctrl-C;
# the built-in tiny model unless MODEL=/path/model.gguf (deploy/run.sh).
# exec: run.sh is make's own child, so that a SIGTERM to make alone (which
# make passes to its children) stops the cluster; through an intermediate
# shell it went no further, and the cluster ran on without make.
run: all
	@MODEL="$(MODEL)" WORKERS="$(WORKERS)" exec bash deploy/run.sh $(BUILD)

format:
	clang-format -i $$(git ls-files '*.c' '*.h' '*.cu')

clean:
	rm -rf build

-include $(shell find $(BUILD)/obj $(EMU)/obj -name '*.d' 2>/dev/null)
