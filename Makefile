# twinblock — see README.md. `make demo` and `make test` work on a fresh Debian machine.
SHELL := /bin/bash
GO ?= go
BIN := bin/twinblock
VERSION ?= $(shell git describe --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -X main.version=$(VERSION)
DEMO_DIR ?= demo
# Debian packages the tests drive: real NBD clients and baselines.
TEST_DEBS := qemu-utils libnbd-bin python3-libnbd fio nbdkit e2fsprogs fuse3 util-linux
TEST_CMDS := qemu-io qemu-img qemu-nbd nbdinfo nbdcopy nbdfuse nbdsh fio nbdkit mkfs.ext4 e2fsck losetup

.PHONY: all build demo test test-long test-deps fuzz bench-nbd bench-journal bench-pair vet clean

all: build

build:
	$(GO) build -ldflags "$(LDFLAGS)" -o $(BIN) ./cmd/twinblock

# Serve a demo volume in the foreground at nbd://127.0.0.1:10809/vol0.
demo: build
	@bash scripts/demo.sh "$(BIN)" "$(DEMO_DIR)"

# Install the NBD clients the tests use when they are missing (Debian, root or sudo).
test-deps:
	@missing=""; \
	for c in $(TEST_CMDS); do command -v $$c >/dev/null 2>&1 || [ -x /usr/sbin/$$c ] || [ -x /sbin/$$c ] || missing="$$missing $$c"; done; \
	/usr/bin/python3 -c 'import nbd' >/dev/null 2>&1 || missing="$$missing python3-libnbd"; \
	if [ -n "$$missing" ]; then \
	  echo "test-deps: missing:$$missing; installing $(TEST_DEBS)"; \
	  SUDO=; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
	  $$SUDO apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends $(TEST_DEBS) >/dev/null; \
	fi

vet:
	$(GO) vet ./...

# Every test: unit tests with the race detector, fuzz seed corpora, and the
# end-to-end tests that drive the real binary with qemu-io, nbdinfo, nbdcopy,
# qemu-img, fio and a real ext4 filesystem.
test: test-deps vet
	$(GO) test -race -timeout 20m ./...

# The crash tests with many more kill points (standalone and pair) and
# journal crash seeds: minutes, not for every CI run.
test-long: test-deps
	TWINBLOCK_KILL_POINTS=40 TWINBLOCK_PAIR_KILL_POINTS=150 JOURNAL_CRASH_SEEDS=2000 \
	  $(GO) test -race -count=1 -timeout 60m -run 'Kill|Crash' ./test/e2e/ ./journal/ ./engine/

# Run every fuzz target for FUZZTIME each (default 30s).
FUZZTIME ?= 30s
fuzz:
	@for pkg in $$($(GO) list ./...); do \
	  for f in $$($(GO) test -list '^Fuzz' $$pkg 2>/dev/null | grep '^Fuzz'); do \
	    echo "== $$pkg $$f"; $(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZTIME) $$pkg || exit 1; \
	  done; \
	done

# fio against twinblock, nbdkit and go-nbd's stock server, TCP and unix socket.
bench-nbd: build test-deps
	$(BIN) bench nbd --out docs/bench

# Journal/durability and replication benchmarks (docs/benchmarks.md).
bench-journal: build test-deps
	$(BIN) bench journal --out docs/bench
bench-pair: build test-deps
	$(BIN) bench pair --out docs/bench

clean:
	rm -rf bin
