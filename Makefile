# lina -- build, test, benchmark, install.
#   make            liblina.a, liblina.so and the lina CLI (build/)
#   make test       build and run the whole test suite
#   make asan       the suite under AddressSanitizer + UBSan incl. float-cast-overflow,
#                   every report fatal (build-asan/)
#   make test-clang the suite built by clang with LLVM's OpenMP runtime (build-clang/)
#   make fuzz       libFuzzer on every file parser, FUZZ_TIME (20) s each (clang, build-fuzz/)
#   make test-aarch64  the suite on ARM64: cross-built, run under qemu-user (build-aarch64/)
#   make bench      the benchmark table (results/bench.md)
#   make data       the KJV corpus, tokenizer and token files (data/)
#   make demo       the main job: corpus, train the default model, samples
#   make linearize  results/LINEARIZE.md: linearity per block, ReplaceMe, LoLCATs and Liger on a trained teacher
#   make paper      the papers' synthetic experiments, budgeted (results/PAPER.md; make paper-full: hours)
#   make install PREFIX=/usr/local
#   make python     the Python package in python/ (lina.ops, lina.Model) with liblina.so beside it
CC      ?= cc
# One binary for every CPU of the target: the library is built for the
# baseline (x86-64: -march=x86-64), and the hot kernels (KSRC) are built once
# more per instruction-set path and chosen at run time (src/kern/isa.h).
# ARCH=-march=native gives a build for this machine only.
MACHINE := $(shell $(CC) -dumpmachine 2>/dev/null)
ifneq ($(filter x86_64%,$(MACHINE)),)
ARCH    ?= -march=x86-64 -mtune=generic
ISAS    ?= avx2 avx512
else ifneq ($(filter aarch64%,$(MACHINE)),)
ARCH    ?=
ISAS    ?= neon
else
ARCH    ?=
ISAS    ?=
endif
ISA_FLAGS_avx2   = -mavx2 -mfma
ISA_FLAGS_avx512 = -mavx2 -mfma -mavx512f -mavx512bw -mavx512dq -mavx512vl
# AArch64: Advanced SIMD is in the baseline; the flag selects lina's NEON vectors (isa.h)
ISA_FLAGS_neon   = -DLINA_ISA_NEON_PATH
OPT     ?= -O3
BUILD   ?= build
PREFIX  ?= /usr/local
BLAS_INC ?= /usr/include/x86_64-linux-gnu/openblas-openmp
BLAS_LIB ?= -lopenblas

# Open MPI (distributed training, src/dist): on when mpicc is found, MPI=0 forces a
# build without it, MPI=1 insists on it. Without MPI, lina runs as one process.
MPICC   ?= mpicc
MPI     ?= $(if $(shell command -v $(MPICC) 2>/dev/null),1,0)
ifeq ($(MPI),1)
MPI_CFLAGS := -DLINA_MPI $(shell $(MPICC) --showme:compile 2>/dev/null)
MPI_LIBS   := $(shell $(MPICC) --showme:link 2>/dev/null)
ifeq ($(strip $(MPI_LIBS)),)
$(error MPI=1 but $(MPICC) --showme:link gave nothing: install openmpi-bin libopenmpi-dev)
endif
endif

CFLAGS_BASE = $(MPI_CFLAGS) -std=c11 -ffp-contract=fast -D_DEFAULT_SOURCE -Wall -Wextra -fopenmp -fPIC -MMD -MP -Iinclude -I$(BLAS_INC)
CFLAGS  ?= $(OPT) $(ARCH) -g
ALL_CFLAGS = $(CFLAGS_BASE) $(CFLAGS) $(EXTRA_CFLAGS)
LDLIBS  = $(BLAS_LIB) -lcjson $(MPI_LIBS) -fopenmp -lm

SRC     = $(wildcard src/*/*.c)
# kernel sources compiled once per path in ISAS besides the portable build
KSRC    = src/kern/vmath.c src/kern/gemm.c src/ops/linear_attn.c src/ops/delta.c src/ops/lion.c \
          src/ops/mlstm.c src/ops/softmax_attn.c src/ops/mamba.c src/ops/rwkv7.c src/ops/hgrn.c src/ops/gsa.c \
          src/train/optim.c src/nn/conv.c src/nn/norm.c src/nn/mamba2_layer.c src/nn/rope.c
KOBJ    = $(foreach i,$(ISAS),$(KSRC:%.c=$(BUILD)/%.$(i).o))
OBJ     = $(SRC:%.c=$(BUILD)/%.o) $(KOBJ)
TESTSRC = $(wildcard tests/test_*.c)
TESTBIN = $(TESTSRC:tests/%.c=$(BUILD)/tests/%)
REFSRC  = $(wildcard tests/ref/*.c)
REFOBJ  = $(REFSRC:%.c=$(BUILD)/%.o)
HDRS    = include/lina.h $(wildcard src/*/*.h) $(wildcard tests/*.h) $(wildcard tests/ref/*.h)

# Shared library: liblina.so.MAJOR.MINOR (from LINA_VERSION in lina.h), its
# SONAME liblina.so.MAJOR (liblina.so.0.MINOR while MAJOR is 0: every 0.x minor
# may break the ABI), symlinks to it, and only the functions declared in
# include/lina.h exported (a version script made from the header).
VERSION  := $(shell sed -n 's/^\#define LINA_VERSION "\(.*\)"/\1/p' include/lina.h)
V_MAJOR  := $(word 1,$(subst ., ,$(VERSION)))
V_MINOR  := $(word 2,$(subst ., ,$(VERSION)))
SOFILE   := liblina.so.$(V_MAJOR).$(V_MINOR)
SONAME   := $(if $(filter 0,$(V_MAJOR)),$(SOFILE),liblina.so.$(V_MAJOR))

.PHONY: all test test-suite asan bench install clean
.SECONDARY:
all: $(BUILD)/liblina.a $(BUILD)/$(SOFILE) $(BUILD)/liblina.so $(BUILD)/lina

$(BUILD)/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -c $< -o $@

$(BUILD)/%.avx2.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) $(ISA_FLAGS_avx2) -DLINA_ISA_SUFFIX=_avx2 -c $< -o $@

$(BUILD)/%.avx512.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) $(ISA_FLAGS_avx512) -DLINA_ISA_SUFFIX=_avx512 -c $< -o $@

$(BUILD)/%.neon.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) $(ISA_FLAGS_neon) -DLINA_ISA_SUFFIX=_neon -c $< -o $@

$(BUILD)/liblina.a: $(OBJ)
	@rm -f $@
	ar rcs $@ $^

# the exported symbols: every function declared in lina.h, nothing else
$(BUILD)/lina.map: include/lina.h
	@mkdir -p $(dir $@)
	{ echo '{ global:'; grep -v '^[[:space:]]*\(/\*\|\*\|//\)' include/lina.h | \
	  sed -n 's/^[A-Za-z_].*[ *]\(lina_[a-z0-9_]*\)(.*/  \1;/p' | sort -u; echo 'local: *; };'; } > $@

$(BUILD)/$(SOFILE): $(OBJ) $(BUILD)/lina.map
	$(CC) -shared -Wl,-soname,$(SONAME) -Wl,--version-script,$(BUILD)/lina.map -o $@ $(OBJ) $(LDLIBS) \
	  $(EXTRA_LDFLAGS)

$(BUILD)/liblina.so: $(BUILD)/$(SOFILE)
	cd $(BUILD) && { [ $(SONAME) = $(SOFILE) ] || ln -sf $(SOFILE) $(SONAME); } && ln -sf $(SONAME) liblina.so

$(BUILD)/lina: $(BUILD)/tools/lina.o $(BUILD)/liblina.a
	$(CC) -o $@ $^ $(LDLIBS) $(EXTRA_LDFLAGS)

$(BUILD)/tests/%: tests/%.c $(REFOBJ) $(BUILD)/liblina.a
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -o $@ $< $(REFOBJ) $(BUILD)/liblina.a $(LDLIBS) $(EXTRA_LDFLAGS)

# the kernel tests, run again on every other instruction-set path the CPU has
ISA_TESTS = $(addprefix $(BUILD)/tests/,test_kern test_dd test_delta test_probe test_varlen_kern test_mixers2 test_mamba test_rwkv7 test_hgrn test_gsa test_lion_layer test_model_mamba2 test_nn test_train test_cli)

# `make test` first installs missing Debian build dependencies and the Python tests'
# NumPy and PyTorch (tools/deps.sh: apt-get as root, sudo, or a message naming them),
# then builds and runs the suite.
TEST_PKGS = python3 python3-numpy python3-torch
test:
	@sh tools/deps.sh $(TEST_PKGS)
	@$(MAKE) --no-print-directory test-suite
# the Python tests (tests/python/test_*.py, run by Debian's /usr/bin/python3 with PyTorch)
# load this build's liblina.so; the sanitizer builds leave them out (PYTESTS=)
PYTESTS ?= $(sort $(wildcard tests/python/test_*.py))
test-suite: all $(TESTBIN)
	@LINA_BIN=$(BUILD)/lina ISA_TESTS="$(ISA_TESTS)" LINA_LIBRARY=$(abspath $(BUILD))/liblina.so \
	  sh tests/run.sh $(TESTBIN) $(PYTESTS)

# The Python package: liblina.so copied into python/lina/ so that the package works from
# the checkout (PYTHONPATH=python) and `pip install ./python` installs it with the library.
.PHONY: python
python: $(BUILD)/$(SOFILE)
	cp $(BUILD)/$(SOFILE) python/lina/liblina.so

# clang links LLVM's OpenMP runtime (libomp), which then also serves OpenBLAS's
# OpenMP calls (Debian's OpenBLAS is built against libgomp): the suite once more
# with that pairing
.PHONY: test-clang
test-clang:
	@sh tools/deps.sh clang libomp-dev
	@$(MAKE) --no-print-directory BUILD=build-clang CC=clang test

asan:
	$(MAKE) BUILD=build-asan OPT=-O1 PYTESTS= \
	  EXTRA_CFLAGS="-fsanitize=address,undefined,float-cast-overflow -fno-omit-frame-pointer -fno-sanitize-recover=all" \
	  EXTRA_LDFLAGS="-fsanitize=address,undefined,float-cast-overflow" test

# Fuzzing (fuzz/): libFuzzer targets for the npy, safetensors, config.json,
# tokenizer.json, token-file and trainer.json parsers, built with clang under
# ASan + UBSan (build-fuzz/) and run FUZZ_TIME seconds each from the seed
# corpus in fuzz/corpus/. `make test` replays that corpus (tests/test_fuzz_corpus.c).
FUZZ_TARGETS = npy safetensors config tokenizer tokfile trainer
FUZZ_TIME ?= 20
FUZZ_CC ?= clang
FUZZ_SAN = -fsanitize=address,undefined,float-cast-overflow -fno-sanitize-recover=all -fno-omit-frame-pointer
.PHONY: fuzz fuzz-build
fuzz-build:
	$(MAKE) BUILD=build-fuzz CC=$(FUZZ_CC) OPT=-O1 EXTRA_CFLAGS="$(FUZZ_SAN) -fsanitize=fuzzer-no-link -Wno-pass-failed" \
	  build-fuzz/liblina.a
	for t in $(FUZZ_TARGETS); do \
	  $(FUZZ_CC) -g -O1 $(FUZZ_SAN) -fsanitize=fuzzer -Iinclude -o build-fuzz/fuzz_$$t fuzz/fuzz_$$t.c \
	    build-fuzz/liblina.a $(LDLIBS) || exit 1; \
	done
fuzz: fuzz-build
	sh fuzz/run.sh build-fuzz $(FUZZ_TIME) $(FUZZ_TARGETS)

# ARM64 (aarch64) under emulation: Debian's cross gcc and qemu-user, the arm64
# libraries through multiarch (installed if missing); tools/test_aarch64.sh
.PHONY: test-aarch64
test-aarch64:
	sh tools/test_aarch64.sh

bench: all
	sh bench/run.sh $(BUILD)/lina results/bench.md

# The main job: corpus, the built-in GLA model trained with a progress line,
# checkpoint + loss plot in runs/gla-small/, generated samples (tools/demo.sh).
.PHONY: demo
demo:
	sh tools/demo.sh

# The papers' synthetic experiments, reduced (src/tasks): results/PAPER.md and
# results/*.png. `make paper` is the budgeted report: four single-thread streams
# side by side under nice (MQAR at d 64 then 32: the core seven models on two
# streams, the other model types after them and after S3/S5, parity and
# mod-arith on the third and ICL and MoM on the fourth), one learning rate.
# `make paper-full` runs the full protocol (two learning rates, every MQAR width,
# parity and mod-arith with 3 seeds): several CPU-hours. Both resume from the
# configurations finished earlier with the same settings (results/paper_parts/cells/);
# delete that folder to rerun everything. At the end the sections are rebuilt from
# every kept configuration (--cells none runs nothing) and the report is assembled.
.PHONY: paper paper-full
# results/LINEARIZE.md: linearity per block, ReplaceMe, and the LoLCATs / Liger conversions (lina linearize)
# of a trained softmax teacher, with from-scratch baselines, a recall probe and decode speed
.PHONY: linearize
linearize: $(BUILD)/lina
	LINA=$(BUILD)/lina sh tools/linearize_report.sh

PAPER_RUN = nice -n 10 $(BUILD)/lina paper --out results --threads 1 --resume
# make paper's four streams, balanced by the CPU time of the kept runs (python3 tools/paper_time.py
# reads the streams from `make -n paper`): the MQAR table's core models first on the first two, its
# other model types after them and after the other sections
PAPER_MQ_MORE1 = kda,rwkv7
PAPER_MQ_MORE2 = hgrn
PAPER_MQ_MORE3 = gsa
PAPER_MQ_MORE4 = mamba,forgetting_transformer
paper: $(BUILD)/lina
	{ $(PAPER_RUN) --only mqar --mixers transformer,delta_net,gated_deltanet,gla; \
	  $(PAPER_RUN) --only mqar --mixers $(PAPER_MQ_MORE1); } & \
	{ $(PAPER_RUN) --only mqar --mixers linear_attn,mamba2,retnet; \
	  $(PAPER_RUN) --only mqar --mixers $(PAPER_MQ_MORE2); } & \
	{ $(PAPER_RUN) --only s3s5; $(PAPER_RUN) --only parity,modarith; \
	  $(PAPER_RUN) --only mqar --mixers $(PAPER_MQ_MORE3); } & \
	{ $(PAPER_RUN) --only icl; $(PAPER_RUN) --only mom; \
	  $(PAPER_RUN) --only mqar --mixers $(PAPER_MQ_MORE4); }; \
	wait; $(PAPER_RUN) --only mqar,mom,s3s5,parity,modarith --cells none && $(BUILD)/lina paper --out results --assemble

paper-full: $(BUILD)/lina
	{ $(PAPER_RUN) --full --only mqar --mixers transformer,delta_net,gated_deltanet,gla; \
	  $(PAPER_RUN) --full --only mqar --mixers $(PAPER_MQ_MORE1); } & \
	{ $(PAPER_RUN) --full --only mqar --mixers linear_attn,mamba2,retnet; \
	  $(PAPER_RUN) --full --only mqar --mixers $(PAPER_MQ_MORE2); } & \
	{ $(PAPER_RUN) --full --only s3s5,parity; $(PAPER_RUN) --full --only icl; \
	  $(PAPER_RUN) --full --only mqar --mixers $(PAPER_MQ_MORE3); } & \
	{ $(PAPER_RUN) --full --only mom,modarith; \
	  $(PAPER_RUN) --full --only mqar --mixers $(PAPER_MQ_MORE4); }; \
	wait; $(PAPER_RUN) --full --only mqar,mom,s3s5,parity,modarith --cells none && $(BUILD)/lina paper --out results --assemble

# The default corpus (Debian's bible-kjv), tokenizer and token files in data/.
.PHONY: data
data: $(BUILD)/lina
	LINA=$(BUILD)/lina sh data/make_corpus.sh

# lina.pc carries an rpath to PREFIX/lib, so `cc $$(pkg-config --cflags --libs lina)`
# gives a program that finds liblina.so without LD_LIBRARY_PATH; as root without
# DESTDIR, ldconfig also registers the library.
install: all
	mkdir -p $(DESTDIR)$(PREFIX)/lib/pkgconfig $(DESTDIR)$(PREFIX)/include $(DESTDIR)$(PREFIX)/bin
	cp include/lina.h $(DESTDIR)$(PREFIX)/include/
	cp $(BUILD)/liblina.a $(BUILD)/$(SOFILE) $(DESTDIR)$(PREFIX)/lib/
	cd $(DESTDIR)$(PREFIX)/lib && { [ $(SONAME) = $(SOFILE) ] || ln -sf $(SOFILE) $(SONAME); } && \
	  ln -sf $(SONAME) liblina.so
	cp $(BUILD)/lina $(DESTDIR)$(PREFIX)/bin/
	sed -e 's|@PREFIX@|$(PREFIX)|' -e 's|@VERSION@|$(VERSION)|' lina.pc.in > $(DESTDIR)$(PREFIX)/lib/pkgconfig/lina.pc
	if [ -z "$(DESTDIR)" ] && [ "$$(id -u)" = 0 ] && command -v ldconfig >/dev/null; then ldconfig; fi

clean:
	rm -rf build build-asan build-fuzz build-aarch64 build-clang

	rm -rf build build-asan build-aarch64 build-clang

# header dependencies (-MMD)
-include $(OBJ:.o=.d) $(REFOBJ:.o=.d) $(TESTBIN:=.d) $(BUILD)/tools/lina.d
