# sluice — see README.md. Every target works from a clean clone with Go 1.26.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c

GO      ?= go
BIN     := $(CURDIR)/bin
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
# SourceDir records this checkout in bin/sluice: `sluice plugin init` builds new plugins against its sdk/.
LDFLAGS := -s -w -X github.com/sluicehq/sluice/runtime/cli.Version=$(VERSION) -X github.com/sluicehq/sluice/runtime/cli.SourceDir=$(CURDIR)
# bin/ holds static binaries (no libc): they run on any Linux and each maps 1–2 MiB less than with cgo (make
# bench, W5: 113 → 108 MiB). Only the builds: the race detector of make test needs cgo.
BUILD_ENV := CGO_ENABLED=0
# Every module in the workspace (go.work): sdk, runtime, transforms, plugins/*, examples/*, services, chaos, bench.
MODULES  = $(shell $(GO) list -m -f '{{.Dir}}')
# First-party plugins: every plugins/<module>/cmd/<name> builds bin/plugins/<name>.
PLUGIN_CMDS = $(wildcard plugins/*/cmd/*)
PLUGINS  = $(notdir $(PLUGIN_CMDS))
BENCHTIME ?= 3x
# How long `make fuzz` runs each fuzz target.
FUZZTIME ?= 20s

.PHONY: all build plugins test test-short fuzz demo chaos bench bench-micro docs status-page generate check-generated lint install-lint fmt clean

all: build

build: plugins ## bin/sluice and every plugin in bin/plugins/
	cd runtime && $(BUILD_ENV) $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/sluice ./cmd/sluice

plugins:
	@mkdir -p $(BIN)/plugins
	@for c in $(PLUGIN_CMDS); do \
	  p=$$(basename $$c); echo "build bin/plugins/$$p"; \
	  (cd $$(dirname $$(dirname $$c)) && $(BUILD_ENV) $(GO) build -trimpath -ldflags '-s -w' -o $(BIN)/plugins/$$p ./cmd/$$p); \
	done
	@chmod go-w $(BIN) $(BIN)/plugins $(BIN)/plugins/* # sluice refuses plugins others could replace (umask 002)
	@for c in $(wildcard plugins/*/tools/*); do \
	  p=$$(basename $$c); echo "build bin/$$p"; \
	  (cd $$(dirname $$(dirname $$c)) && $(BUILD_ENV) $(GO) build -trimpath -ldflags '-s -w' -o $(BIN)/$$p ./tools/$$p); \
	done

test: ## every module's tests, with the race detector (runtime/cli runs the bad-input corpus: minutes, hence the timeout)
	@for m in $(MODULES); do \
	  echo "== $${m#$(CURDIR)/}"; \
	  (cd $$m && $(GO) vet ./... && $(GO) test -race -count=1 -timeout 30m ./...); \
	done

test-short: ## every module's tests without -race (quick local loop)
	@for m in $(MODULES); do (cd $$m && $(GO) test -count=1 ./...); done

fuzz: ## every fuzz target (func FuzzX in *_test.go), FUZZTIME each; a crasher fails it and stays in testdata/fuzz/FuzzX/
	@failed=""; \
	for f in $$(grep -rl --include='*_test.go' --exclude-dir=.git --exclude-dir=bin --exclude-dir=out '^func Fuzz' . | sort); do \
	  dir=$$(dirname $$f); \
	  for t in $$(sed -n 's/^func \(Fuzz[A-Za-z0-9_]*\)(.*/\1/p' $$f); do \
	    echo "== fuzz $${dir#./} $$t ($(FUZZTIME))"; \
	    (cd $$dir && $(GO) test -run '^$$' -fuzz "^$$t$$" -fuzztime $(FUZZTIME) .) || failed="$$failed $${dir#./}:$$t"; \
	  done; \
	done; \
	if [ -n "$$failed" ]; then echo "fuzz: failed:$$failed (the inputs are in each package's testdata/fuzz/; commit them as seed corpus once fixed)"; exit 1; fi

demo: build ## run configs/quickstart.yaml (generate → file), then MongoDB → Redis → Kafka (services/demo.sh)
	@rm -rf out/quickstart && mkdir -p out/quickstart
	$(BIN)/sluice run --data-dir out/quickstart/state configs/quickstart.yaml
	@echo "output: out/quickstart/orders.jsonl ($$(wc -l < out/quickstart/orders.jsonl) lines); first line:"
	@head -c 300 out/quickstart/orders.jsonl | head -1
	bash services/demo.sh

CHAOS_FLAGS ?=
chaos: build ## SIGKILL the host, plugins, redis-server and Kafka under load; check every record once, in order (chaos/; CHAOS_FLAGS="-seed N -records N -kills N")
	cd chaos && $(GO) run . -bin $(BIN) $(CHAOS_FLAGS)

BENCH_FLAGS ?=
bench: build ## W1, W5, W2 and B3 end to end, rounds alternating the programs, to bench/results/ (README Performance; BENCH_RECORDS, BENCH_ROUNDS, BENCH_FLAGS)
	cd bench && $(GO) run . -bin $(BIN) $(BENCH_FLAGS)

bench-micro: ## the Go micro-benchmarks: the pipeline (generate → discard), the codec, transforms, the Redis and Kafka plugins
	cd runtime && $(GO) test -run '^$$' -bench 'Pipeline' -benchtime $(BENCHTIME) -benchmem ./pipeline/
	cd sdk && $(GO) test -run '^$$' -bench . -benchmem ./record/
	cd plugins/generate && $(GO) test -run '^$$' -bench . -benchmem ./...
	cd transforms && $(GO) test -run '^$$' -bench . -benchmem -count 3 .
	cd plugins/redis && $(GO) test -run '^$$' -bench . -benchmem .
	cd plugins/kafka && $(GO) test -run '^$$' -bench Produce -benchtime 100000x .

docs: build ## regenerate docs/plugins/*.md from the plugins' specs
	@mkdir -p docs/plugins
	@for p in $(PLUGINS); do $(BIN)/sluice plugins describe --markdown $$p > docs/plugins/$$p.md; done

status-page: ## docs/status-page.png: the status page during a run, in headless chromium (apt-get install chromium)
	@command -v chromium >/dev/null || { echo "status-page needs chromium (apt-get install chromium)" >&2; exit 1; }
	cd runtime && SLUICE_STATUS_PAGE_PNG=$(CURDIR)/docs/status-page.png $(GO) test -count=1 -run 'TestStatusPageInChromium$$' -v ./api/ | grep -E '^(---|ok|FAIL)|wrote'

generate: ## regenerate protobuf code (needs protoc, protoc-gen-go v1.36.12, protoc-gen-go-grpc v1.6.2; see .ci/run)
	cd sdk && PATH="$$PATH:$$($(GO) env GOPATH)/bin" protoc -I proto \
	  --go_out=. --go_opt=module=github.com/sluicehq/sluice/sdk \
	  --go-grpc_out=. --go-grpc_opt=module=github.com/sluicehq/sluice/sdk proto/sluice.proto

check-generated: generate docs ## fail if committed generated code (sdk/proto) or plugin docs (docs/plugins) are stale
	@stale=$$(git status --porcelain -- sdk/proto docs/plugins); \
	if [ -n "$$stale" ]; then \
	  echo "check-generated: generated files differ from what is committed (make generate, make docs; then commit):"; \
	  echo "$$stale"; git --no-pager diff --stat -- sdk/proto docs/plugins; exit 1; \
	fi

# golangci-lint: the version make lint wants (.ci/run installs it with go install).
GOLANGCI_LINT_VERSION := v2.15.0
GOLANGCI_LINT_PKG := github.com/golangci/golangci-lint/v2/cmd/golangci-lint
GOLANGCI_LINT ?= $(shell PATH="$$PATH:$$($(GO) env GOPATH)/bin" command -v golangci-lint)

lint: ## gofmt, go vet and golangci-lint (.golangci.yml) on every module
	@bad=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$bad" ]; then echo "gofmt:"; echo "$$bad"; exit 1; fi
	@for m in $(MODULES); do (cd $$m && $(GO) vet ./...); done
	@if [ -z "$(GOLANGCI_LINT)" ]; then echo "lint needs golangci-lint $(GOLANGCI_LINT_VERSION): make install-lint (go install $(GOLANGCI_LINT_PKG)@$(GOLANGCI_LINT_VERSION))" >&2; exit 1; fi
	@for m in $(MODULES); do echo "== golangci-lint $${m#$(CURDIR)/}"; (cd $$m && $(GOLANGCI_LINT) run ./...); done

install-lint: ## install the golangci-lint make lint wants into $(go env GOPATH)/bin
	$(GO) install $(GOLANGCI_LINT_PKG)@$(GOLANGCI_LINT_VERSION)

fmt:
	gofmt -w $$(git ls-files '*.go')

clean:
	rm -rf bin out .sluice
