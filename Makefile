# ragnx: `make` builds the nginx module (and the worker pool), `make test`
# runs the whole suite, `make run` starts the stack.  See README.md.

SHELL      := /bin/bash
NGX_SRC    ?= /usr/share/nginx/src
BUILD      ?= build
SAN        ?= 0
CC         ?= cc
NGX_CONF_EXTRA ?=

WARN        = -Wall -Wextra -Werror -Wno-unused-parameter
OPT         = -g -O2
ifeq ($(SAN),1)
SANFLAGS    = -fsanitize=address,undefined -fno-omit-frame-pointer
OPT         = -g -O1
endif

ABS_BUILD   = $(abspath $(BUILD))
NGX_BUILD   = $(ABS_BUILD)/nginx
MODULE      = $(NGX_BUILD)/objs/ngx_http_ragnx_module.so

# the Lua scripts, embedded as C string macros by scripts/embed-lua: one
# generated header per side
GEN         = $(ABS_BUILD)/gen
MODULE_LUA  = $(GEN)/ragnx_lua_module.h
WORKER_LUA  = $(GEN)/ragnx_lua_workers.h

MODULE_SRCS = config $(wildcard ngx_module/*.c ngx_module/*.h) \
              $(wildcard shared/*.c shared/*.h) $(MODULE_LUA)
SHARED_SRCS = $(wildcard shared/*.c)
UNIT_SRCS   = $(wildcard t/unit/*.c)
UNIT_BINS   = $(patsubst t/unit/%.c,$(ABS_BUILD)/unit/%,$(UNIT_SRCS))

CFLAGS_C    = -std=gnu11 $(OPT) $(WARN) $(SANFLAGS) -Ishared -It/unit

# the worker pool daemon and its CLI
WORKER      = $(ABS_BUILD)/workers/ragnx-worker
WORKER_SRCS = $(wildcard workers/*.c)
WORKER_OBJS = $(patsubst workers/%.c,$(ABS_BUILD)/workers/%.o,$(WORKER_SRCS)) \
              $(patsubst shared/%.c,$(ABS_BUILD)/workers/shared_%.o,$(SHARED_SRCS)) \
              $(ABS_BUILD)/workers/ragnx_migrations.o
WORKER_CFLAGS = -std=gnu11 $(OPT) $(WARN) $(SANFLAGS) -pthread -Ishared \
              -Iworkers -I$(GEN) -I/usr/include/postgresql \
              -I/usr/include/hiredis
WORKER_LIBS = -lhiredis -lpq -lcurl -ljansson -ljwt -lsodium -lcrypto -pthread

.PHONY: all module unit worker test test-asan test-debug lint run reset deps \
        openapi clean bench bench-pool bench-stack mutate fuzz fuzz-build \
        image test-image

all: module unit worker

worker: $(WORKER)

$(WORKER): $(WORKER_OBJS)
	$(CC) $(SANFLAGS) -o $@ $^ $(WORKER_LIBS)

$(ABS_BUILD)/workers/%.o: workers/%.c $(wildcard workers/*.h shared/*.h) \
                          $(WORKER_LUA)
	@mkdir -p $(dir $@)
	$(CC) $(WORKER_CFLAGS) -c -o $@ $<

$(ABS_BUILD)/workers/shared_%.o: shared/%.c $(wildcard shared/*.h)
	@mkdir -p $(dir $@)
	$(CC) $(WORKER_CFLAGS) -c -o $@ $<

$(ABS_BUILD)/workers/ragnx_migrations.c: scripts/embed-sql $(wildcard sql/*.sql)
	@mkdir -p $(dir $@)
	./scripts/embed-sql $(sort $(wildcard sql/*.sql)) > $@

$(ABS_BUILD)/workers/ragnx_migrations.o: $(ABS_BUILD)/workers/ragnx_migrations.c
	$(CC) $(WORKER_CFLAGS) -c -o $@ $<

$(MODULE_LUA): scripts/embed-lua shared/ragnx_keys.h \
               $(wildcard ngx_module/lua/*.lua)
	@mkdir -p $(dir $@)
	./scripts/embed-lua shared/ragnx_keys.h \
	    $(sort $(wildcard ngx_module/lua/*.lua)) > $@.tmp
	mv $@.tmp $@

$(WORKER_LUA): scripts/embed-lua shared/ragnx_keys.h \
               $(wildcard workers/lua/*.lua)
	@mkdir -p $(dir $@)
	./scripts/embed-lua shared/ragnx_keys.h \
	    $(sort $(wildcard workers/lua/*.lua)) > $@.tmp
	mv $@.tmp $@

deps:
	@./scripts/deps

# docs/openapi.json from docs/openapi.template.json and schemas/*.json
# (make lint and t/openapi.t check that it is up to date)
openapi:
	./scripts/openapi

module: $(MODULE)

# Build against the distro's nginx source with its own configure flags so
# the result loads into /usr/sbin/nginx (same --with-compat signature).
# config finds the generated header of the Lua scripts in RAGNX_GEN.
$(NGX_BUILD)/objs/Makefile: config
	rm -rf $(NGX_BUILD)
	mkdir -p $(ABS_BUILD)
	cp -r $(NGX_SRC) $(NGX_BUILD)
	cd $(NGX_BUILD) && source ./conf_flags \
	    && RAGNX_GEN=$(GEN) \
	       ./configure "$${NGX_CONF_FLAGS[@]}" $(NGX_CONF_EXTRA) \
	       --with-cc-opt="$(OPT) -fPIC $(WARN) $(SANFLAGS)" \
	       --with-ld-opt="$(SANFLAGS)" \
	       --add-dynamic-module=$(CURDIR) > configure.log \
	    || { cat configure.log; exit 1; }

$(MODULE): $(NGX_BUILD)/objs/Makefile $(MODULE_SRCS)
	$(MAKE) -s -C $(NGX_BUILD) -f objs/Makefile modules

unit: $(UNIT_BINS)

$(ABS_BUILD)/unit/%: t/unit/%.c $(SHARED_SRCS) $(wildcard shared/*.h)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_C) -o $@ $< $(SHARED_SRCS) -ljansson -lsodium -lcrypto

test: deps
	$(MAKE) all fuzz-build
	$(MAKE) lint
	RAGNX_MODULE=$(MODULE) RAGNX_BUILD=$(ABS_BUILD) RAGNX_REQUIRE_BROWSER=1 \
	    ./scripts/prove

# The same suite with the module built under ASan + UBSan.  The distro
# nginx is not instrumented, so the sanitizer runtimes are preloaded; the
# harness fails a test on any sanitizer report or [alert] in the logs.
test-asan: deps
	$(MAKE) BUILD=build-asan SAN=1 all fuzz-build
	RAGNX_MODULE=$(abspath build-asan)/nginx/objs/ngx_http_ragnx_module.so \
	RAGNX_BUILD=$(abspath build-asan) RAGNX_SANITIZE=1 \
	RAGNX_REQUIRE_BROWSER=1 ./scripts/prove

# The module built against nginx configured --with-debug, in its own build
# directory, and t/debug.t run with its error_log at "debug": the
# ngx_log_debug lines of the async paths compile and print.  The distro
# nginx is built --with-debug too, so this module loads into it.
DEBUG_BUILD = $(abspath build-debug)

test-debug: deps
	$(MAKE) BUILD=build-debug NGX_CONF_EXTRA=--with-debug module
	grep -q '^#define NGX_DEBUG  1' \
	    $(DEBUG_BUILD)/nginx/objs/ngx_auto_config.h
	RAGNX_DEBUG_MODULE=$(DEBUG_BUILD)/nginx/objs/ngx_http_ragnx_module.so \
	RAGNX_BUILD=$(DEBUG_BUILD) prove t/debug.t

# Plausible bugs (t/mutants.txt) applied one at a time to a scratch copy:
# each must make its tests fail.  Not part of `make test`: it takes a while.
mutate: deps
	./scripts/mutate

# libFuzzer targets (t/fuzz/fuzz_<name>.c), built with clang-14 against
# the project's own sources.  `make test` replays each over its seed corpus
# (t/fuzz.t); `make fuzz` runs each for FUZZ_TIME seconds or FUZZ_RUNS
# executions, growing a corpus under $(BUILD)/fuzz/corpus.  Not part of
# `make test`: it takes a while.
FUZZ_CC     ?= clang-14
FUZZ_TIME   ?= 60
FUZZ_RUNS   ?= -1
FUZZ_FLAGS  = -std=gnu11 -g -O1 -fno-omit-frame-pointer $(WARN) \
              -fsanitize=fuzzer,address,undefined \
              -fno-sanitize-recover=undefined -Ishared -Iworkers \
              -I/usr/include/postgresql -I/usr/include/hiredis
FUZZ_SRCS   = $(wildcard t/fuzz/fuzz_*.c)
FUZZ_BINS   = $(patsubst t/fuzz/%.c,$(ABS_BUILD)/fuzz/%,$(FUZZ_SRCS))
FUZZ_LIBS   = -ljansson -lsodium -lcrypto

# each target's sources besides its own file and shared/, and its flags:
# module code links nginx's few core functions from t/fuzz/ngx_shim.c
# (nginx-dev ships headers only) and takes the configured tree's headers
FUZZ_config = workers/ragnx_config.c
FUZZ_NGX    = t/fuzz/ngx_shim.c
FUZZ_NGX_CFLAGS = -Ingx_module -I$(NGX_BUILD)/objs -I$(NGX_SRC)/src/core \
              -I$(NGX_SRC)/src/event -I$(NGX_SRC)/src/event/modules \
              -I$(NGX_SRC)/src/os/unix -I$(NGX_SRC)/src/http \
              -I$(NGX_SRC)/src/http/modules -I$(NGX_SRC)/src/http/v2 -I$(GEN)
FUZZ_schema = ngx_module/ngx_http_ragnx_schema.c $(FUZZ_NGX)
FUZZ_CFLAGS_schema = $(FUZZ_NGX_CFLAGS) \
              -DRAGNX_ROOT='"$(CURDIR)"'
FUZZ_LIBS_schema = -lpcre2-8
# a module file included whole: its static functions are the target
FUZZ_cors   = $(FUZZ_NGX)
FUZZ_CFLAGS_cors = $(FUZZ_NGX_CFLAGS)
FUZZ_LIBS_cors = -lpcre2-8
FUZZ_jwt    = $(FUZZ_NGX)
FUZZ_CFLAGS_jwt = $(FUZZ_NGX_CFLAGS)
FUZZ_LIBS_jwt = -lpcre2-8 -ljwt

$(ABS_BUILD)/fuzz/fuzz_config: $(FUZZ_config)
$(ABS_BUILD)/fuzz/fuzz_cors: ngx_module/ngx_http_ragnx_cors_module.c \
                             $(FUZZ_NGX) $(NGX_BUILD)/objs/Makefile
$(ABS_BUILD)/fuzz/fuzz_jwt: ngx_module/ngx_http_ragnx_jwt_module.c \
                            $(FUZZ_NGX) $(NGX_BUILD)/objs/Makefile
$(ABS_BUILD)/fuzz/fuzz_schema: $(FUZZ_schema) $(NGX_BUILD)/objs/Makefile \
                               $(wildcard schemas/*.json t/fuzz/schemas/*.json \
                                          ngx_module/*.h)

fuzz-build: $(FUZZ_BINS)

$(ABS_BUILD)/fuzz/fuzz_%: t/fuzz/fuzz_%.c $(SHARED_SRCS) \
                          $(wildcard shared/*.h workers/*.h)
	@command -v $(FUZZ_CC) >/dev/null \
	    || { echo "$(FUZZ_CC) not found: run scripts/deps" >&2; exit 1; }
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_FLAGS) $(FUZZ_CFLAGS_$*) -o $@ $< $(FUZZ_$*) \
	    $(SHARED_SRCS) $(FUZZ_LIBS) $(FUZZ_LIBS_$*)

fuzz: deps fuzz-build
	RAGNX_BUILD=$(ABS_BUILD) ./scripts/fuzz $(FUZZ_TIME) $(FUZZ_RUNS) \
	    $(patsubst t/fuzz/fuzz_%.c,%,$(FUZZ_SRCS))

# the page's address first, before the output of installing and building
run:
	@echo "ragnx: the chat page will be at http://127.0.0.1:$${PORT:-8080}/"
	@./scripts/deps
	$(MAKE) all
	./scripts/run

# The images with podman (scripts/image: nginx and worker from the
# Dockerfile, on a debian:bookworm made locally with debootstrap), and the
# compose stack run end to end in containers (scripts/test-image).  Not
# part of `make test`: podman comes with scripts/deps --image.
image:
	@./scripts/deps --image
	./scripts/image

test-image:
	@./scripts/deps --image
	./scripts/test-image

reset:
	@if [ -L var/pg ]; then rm -rf "$$(readlink -f var/pg)"; fi
	rm -rf var

lint:
	@./scripts/lint

bench: deps all
	./bench/gateway
	./bench/ask
	RAGNX_BUILD=$(ABS_BUILD) ./bench/accounts

# bench/pool also runs its reference, a BullMQ + node-postgres worker
# (bench/reference): Node.js and npm come with scripts/deps --bench
bench-pool: deps worker
	@./scripts/deps --bench
	RAGNX_BUILD=$(ABS_BUILD) ./bench/pool

# bench/stack: the stack as make run starts it (scripts/run) under cache
# hits, and bench/pool's drain with its reference
bench-stack: deps all
	@./scripts/deps --bench
	RAGNX_BUILD=$(ABS_BUILD) ./bench/stack

clean:
	rm -rf build build-asan build-debug
