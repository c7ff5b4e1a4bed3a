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

.PHONY: all build build-ceph build-deps-ceph demo test test-long test-deps test-deps-ceph test-ceph fuzz bench-nbd bench-journal bench-pair bench-rbd vet clean

# Ceph RBD support (backend type rbd) needs cgo, librbd and librados, so it
# is behind build tags: "ceph" (ours) and "pacific" (go-ceph's, for the
# Ceph 16 libraries of Debian 12). `make build` stays pure Go.
CEPH_TAGS := ceph,pacific
CEPH_BUILD_DEBS := librbd-dev librados-dev gcc libc6-dev
CEPH_DEBS := ceph-mon ceph-osd ceph-common $(CEPH_BUILD_DEBS)
CEPH_CMDS := ceph-mon ceph-osd ceph rbd gcc
CEPH_HEADERS := /usr/include/rbd/librbd.h /usr/include/rados/librados.h
# The two throw-away clusters of test-ceph ("datacenters" a and b).
CEPH_TEST_DIR ?= /tmp/twinblock-ceph-test
CEPH_PORT_A ?= 26789
CEPH_PORT_B ?= 26799

all: build

build:
	$(GO) build -ldflags "$(LDFLAGS)" -o $(BIN) ./cmd/twinblock
	@echo "built $(BIN) without Ceph support; \`make build-ceph\` adds the rbd backend (cgo, librbd)"

# The release build: with the rbd backend (`twinblock bench rbd` too).
build-ceph: build-deps-ceph
	CGO_ENABLED=1 $(GO) build -tags $(CEPH_TAGS) -ldflags "$(LDFLAGS)" -o $(BIN) ./cmd/twinblock

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

# Install what building with Ceph support needs (librbd/librados headers,
# gcc) when missing (Debian, root or sudo).
build-deps-ceph:
	@missing=""; \
	command -v gcc >/dev/null 2>&1 || missing="$$missing gcc"; \
	for h in $(CEPH_HEADERS); do [ -f $$h ] || missing="$$missing $$h"; done; \
	if [ -n "$$missing" ]; then \
	  echo "build-deps-ceph: missing:$$missing; installing $(CEPH_BUILD_DEBS)"; \
	  SUDO=; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
	  $$SUDO apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends $(CEPH_BUILD_DEBS) >/dev/null; \
	fi

# Install Ceph's daemons and CLI (the test clusters) and the build
# dependencies when missing.
test-deps-ceph:
	@missing=""; \
	for c in $(CEPH_CMDS); do command -v $$c >/dev/null 2>&1 || missing="$$missing $$c"; done; \
	for h in $(CEPH_HEADERS); do [ -f $$h ] || missing="$$missing $$h"; done; \
	if [ -n "$$missing" ]; then \
	  echo "test-deps-ceph: missing:$$missing; installing $(CEPH_DEBS)"; \
	  SUDO=; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
	  $$SUDO apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends $(CEPH_DEBS) >/dev/null; \
	fi

vet:
	$(GO) vet ./...
	@if [ -f /usr/include/rbd/librbd.h ] && [ -f /usr/include/rados/librados.h ]; then \
	  echo "$(GO) vet -tags $(CEPH_TAGS) ./..."; $(GO) vet -tags $(CEPH_TAGS) ./...; \
	else echo "vet: -tags $(CEPH_TAGS) skipped (no librbd/librados headers: make test-deps-ceph)"; fi

# Every test: unit tests with the race detector, fuzz seed corpora, and the
# end-to-end tests that drive the real binary with qemu-io, nbdinfo, nbdcopy,
# qemu-img, fio and a real ext4 filesystem.
test: test-deps test-deps-ceph vet
	$(GO) test -race -timeout 20m ./...
	$(MAKE) test-ceph

# The RBD tests against two throw-away single-node clusters on 127.0.0.1
# (scripts/ceph-cluster.sh): the backend contract suite, NBD end to end,
# an RBD->RBD pair across the two clusters, file->RBD migration. The
# clusters are stopped whatever the tests do.
test-ceph: test-deps-ceph test-deps
	@set -e; d=$(CEPH_TEST_DIR); \
	scripts/ceph-cluster.sh stop $$d/a >/dev/null 2>&1 || true; \
	scripts/ceph-cluster.sh stop $$d/b >/dev/null 2>&1 || true; \
	rm -rf $$d; mkdir -p $$d; \
	trap 'scripts/ceph-cluster.sh stop '$$d'/a; scripts/ceph-cluster.sh stop '$$d'/b' EXIT; \
	scripts/ceph-cluster.sh start $$d/a $(CEPH_PORT_A); \
	scripts/ceph-cluster.sh start $$d/b $(CEPH_PORT_B); \
	TWINBLOCK_CEPH_A=$$d/a TWINBLOCK_CEPH_B=$$d/b CGO_ENABLED=1 \
	  $(GO) test -race -tags $(CEPH_TAGS) -count=1 -timeout 10m ./engine/backend/rbd/... ./test/ceph/...

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

# Journal-fronted RBD volume against fio --ioengine=rbd on a raw image of
# the same throw-away cluster (docs/ceph.md).
bench-rbd: build-ceph test-deps test-deps-ceph
	@set -e; d=$(CEPH_TEST_DIR)-bench; \
	scripts/ceph-cluster.sh stop $$d >/dev/null 2>&1 || true; rm -rf $$d; \
	trap 'scripts/ceph-cluster.sh stop '$$d EXIT; \
	scripts/ceph-cluster.sh start $$d $(CEPH_PORT_A); \
	$(BIN) bench rbd --ceph-conf $$d/ceph.conf --keyring $$d/keyring --out docs/bench

clean:
	rm -rf bin
