# netman: the front door. `make demo` runs the whole system locally, `make test` runs the tests.
SHELL := /bin/bash
.DEFAULT_GOAL := build

GO          ?= go
BIN         := $(CURDIR)/bin
# CNI plugin binaries used as real delegates by the tests and the demo.
CNI_BIN     ?= $(CURDIR)/.cache/cni/bin
BINARIES    := $(notdir $(wildcard cmd/*))
TEST_FLAGS  ?= -count=1 -timeout 20m
BENCH_FLAGS ?=
# VERSION is stamped into every binary (--version, the *_build_info metrics).
VERSION     ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS     := -X netman/lib/buildinfo.stamp=$(VERSION)

# flanneld and etcd for the simulated foundation (cross-cell tests, the demo).
OVERLAY_BIN ?= $(CURDIR)/.cache/overlay/bin

export CNI_PATH := $(CNI_BIN)
export OVERLAY_BIN

.PHONY: build test unit bench lint fmt deps demo clean

## build: compile every binary under cmd/ into bin/ (static, as the BOSH packages build them), stamped with $(VERSION)
build:
	@mkdir -p $(BIN)
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/ $(addprefix ./cmd/,$(BINARIES))

## deps: install what tests and the demo need (Debian packages, CNI plugins)
deps:
	scripts/install-deps

# Packages whose tests run the code in-process run under the race detector. The
# integration and release packages drive built binaries and tools, which -race does
# not reach, and take most of the suite's time, so they run without it.
NO_RACE_PKGS := /integration$$|/integration/|/internal/boshrelease$$|/internal/testsupport/foundation$$

## test: the whole suite against a throwaway Postgres (or $$DATABASE_URL), as root; -race on the in-process packages
test: deps build
	scripts/with-postgres $(GO) test $(TEST_FLAGS) -race $$($(GO) list ./... | grep -Ev '$(NO_RACE_PKGS)')
	scripts/with-postgres $(GO) test $(TEST_FLAGS) $$($(GO) list ./... | grep -E '$(NO_RACE_PKGS)')

## unit: the tests that need neither root nor a database (they skip outside CI)
unit:
	$(GO) test -count=1 -short ./...

## bench: Go benchmarks plus the policy-server load tool at 100k policies
bench: deps build
	scripts/with-postgres scripts/bench $(BENCH_FLAGS)

## lint: formatting and vet
lint:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...

fmt:
	gofmt -w $$(git ls-files '*.go')

## demo: the whole system on this machine (policy server, wrapper, agent)
demo: deps build
	scripts/demo

clean:
	rm -rf $(BIN) .cache
