# certagent: see README.md. `make demo` and `make test` are the two commands
# a new user needs; `make bench` prints the figures.
SHELL := /bin/bash
GO ?= go
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo 0.0.0-dev)
LDFLAGS := -X main.version=$(VERSION)
KUBE_VERSION ?= 1.37.2
export KUBE_VERSION

.PHONY: all build test unit integration demo bench lint k8s-tools fuzz clean

all: build

build:
	$(GO) build -trimpath -ldflags "$(LDFLAGS)" -o bin/certagent ./cmd/certagent

# k8s-tools builds the real kubeadm, kube-apiserver and kube-controller-manager
# once per version into a cache outside the work tree (about 6 min cold).
k8s-tools:
	@bash test/k8stools/build.sh >/dev/null

lint:
	@out=$$(gofmt -l .); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...

# test runs every test: lint, unit tests with -race, and the integration
# tests against the real kubeadm (built and cached by k8s-tools).
test: lint build
	@bash test/deps.sh
	@kube_bin=$$(bash test/k8stools/build.sh) && \
	CERTAGENT_BIN=$(CURDIR)/bin/certagent CERTAGENT_KUBE_BIN=$$kube_bin CERTAGENT_REQUIRE_INTEGRATION=1 \
	  $(GO) test -race -count=1 ./...

unit:
	$(GO) test -race -count=1 $$($(GO) list ./... | grep -v /test/)

demo: build
	@./bin/certagent demo

# bench prints the figures: in-process scan benchmarks and whole-process
# comparisons with kubeadm.
bench: build
	@bash test/deps.sh
	@kube_bin=$$(bash test/k8stools/build.sh) && \
	CERTAGENT_BIN=$(CURDIR)/bin/certagent CERTAGENT_KUBE_BIN=$$kube_bin \
	  $(GO) test -run '^$$' -bench . -benchmem -count=1 ./agent/... ./rotate/... ./test/...

fuzz:
	$(GO) test -run '^$$' -fuzz FuzzParseBundle -fuzztime 30s ./rotate/pki
	$(GO) test -run '^$$' -fuzz FuzzParseKubeconfig -fuzztime 30s ./rotate/pki

clean:
	rm -rf bin dist
