# certagent: see README.md. `make demo` and `make test` are the two commands
# a new user needs; `make bench` prints the figures.
SHELL := /bin/bash
GO ?= go
# Computed once per make run (a commit made meanwhile must not rename the packages).
ifndef VERSION
VERSION := $(shell packaging/version.sh 2>/dev/null || echo 0.0.0-dev)
endif
DEB_ARCH ?= $(shell dpkg --print-architecture 2>/dev/null || echo amd64)
LDFLAGS := -X main.version=$(VERSION)

.PHONY: test-ca-rotation all build test unit integration demo bench lint k8s-tools fuzz clean package e2e modcheck

all: build

# build makes bin/certagent, the binary the integration tests run: with the
# test hooks (CERTAGENT_TEST_CRASH_AT, _PAUSE_AT, _STOP_WATCHDOG; build tag
# certagent_testhooks). The shipped binary (package) has none.
build:
	$(GO) build -tags certagent_testhooks -trimpath -ldflags "$(LDFLAGS)" -o bin/certagent ./cmd/certagent

# k8s-tools builds the real kubeadm, kube-apiserver, kube-controller-manager,
# kubelet and containerd once per version into a cache outside the work tree
# (about 8 min cold).
k8s-tools:
	@bash test/k8stools/build.sh kubelet >/dev/null
	@bash test/k8stools/build.sh containerd >/dev/null

# modcheck proves every go.mod here resolves from the module proxy in an
# empty module cache (a machine's own cache can hide a refused module).
modcheck:
	@bash test/modcheck.sh

# lint: gofmt, go vet, import grouping (goimports: standard library, then
# other modules, then this module's packages) and staticcheck, both pinned
# in test/lint/go.mod.
LINT := $(GO) tool -modfile=test/lint/go.mod
lint:
	@out=$$(gofmt -l .); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	@out=$$($(LINT) goimports -local github.com/certagent/certagent -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go' -not -path './.git/*')); \
	  if [ -n "$$out" ]; then echo "imports need grouping (goimports -local github.com/certagent/certagent -w):"; echo "$$out"; exit 1; fi
	$(LINT) staticcheck ./...

# test runs every test: lint, unit tests with -race, and the integration
# tests against the real kubeadm (built and cached by k8s-tools).
# -parallel 4: the real-kubelet nodes mostly wait for certificates to
# expire; run at once (not two by two, the default on 2 cores) they add
# the longest one's time, not the sum.
test: modcheck lint build package
	@bash test/deps.sh
	@[ "$$(id -u)" = 0 ] || echo "*** NOT ROOT: the end-to-end tests on a systemd-nspawn node and the fault tests are SKIPPED ***"
	@[ "$$(id -u)" != 0 ] || bash test/nspawn/rootfs.sh >/dev/null
	@kube_bin=$$(bash test/k8stools/build.sh kubelet) && containerd_bin=$$(bash test/k8stools/build.sh containerd) && \
	CERTAGENT_BIN=$(CURDIR)/bin/certagent CERTAGENT_KUBE_BIN=$$kube_bin CERTAGENT_CONTAINERD_BIN=$$containerd_bin CERTAGENT_REQUIRE_INTEGRATION=1 \
	CERTAGENT_DEB=$$(ls $(CURDIR)/dist/certagent_*.deb) \
	  $(GO) test -race -count=1 -parallel 4 -timeout 40m ./...

# test-ca-rotation runs only the CA rotation's end-to-end proof
# (TestE2ECARotation: a real control plane and a real kubelet node, the
# whole rotation, then once more with certagent killed in every phase;
# about 4.5 min), which make test runs too.
test-ca-rotation: build package
	@bash test/deps.sh
	@bash test/nspawn/rootfs.sh >/dev/null
	@kube_bin=$$(bash test/k8stools/build.sh kubelet) && containerd_bin=$$(bash test/k8stools/build.sh containerd) && \
	CERTAGENT_BIN=$(CURDIR)/bin/certagent CERTAGENT_KUBE_BIN=$$kube_bin CERTAGENT_CONTAINERD_BIN=$$containerd_bin \
	CERTAGENT_DEB=$$(ls $(CURDIR)/dist/certagent_*.deb) \
	  $(GO) test -count=1 -v -timeout 20m -run TestE2ECARotation ./test/integration

# e2e runs only the end-to-end tests of the package on a real systemd node.
e2e: build package
	@bash test/deps.sh
	@[ "$$(id -u)" != 0 ] || bash test/nspawn/rootfs.sh >/dev/null
	@[ "$$(id -u)" = 0 ] || echo "*** NOT ROOT: the end-to-end tests need root (systemd-nspawn) and are SKIPPED ***"
	@kube_bin=$$(bash test/k8stools/build.sh kubelet) && containerd_bin=$$(bash test/k8stools/build.sh containerd) && \
	CERTAGENT_BIN=$(CURDIR)/bin/certagent CERTAGENT_KUBE_BIN=$$kube_bin CERTAGENT_CONTAINERD_BIN=$$containerd_bin \
	CERTAGENT_DEB=$$(ls $(CURDIR)/dist/certagent_*.deb) \
	  $(GO) test -count=1 -parallel 4 -v -run 'E2E|RPM' ./test/integration

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

# package builds dist/certagent_<version>_<arch>.deb and
# dist/certagent-<version>.<arch>.rpm, with completion scripts and man pages, with nfpm (pinned in packaging/tools/go.mod, run by packaging/nfpm.sh).
package:
	@rm -rf dist && mkdir -p dist/bin
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags "-s -w $(LDFLAGS)" -o dist/bin/certagent ./cmd/certagent
	@# Shell completion (cobra's) and man pages (cobra/doc, the hidden `certagent man DIR`).
	@mkdir -p dist/completion dist/man
	dist/bin/certagent completion bash > dist/completion/certagent.bash
	dist/bin/certagent completion zsh > dist/completion/_certagent
	dist/bin/certagent completion fish > dist/completion/certagent.fish
	dist/bin/certagent man dist/man
	gzip -9n dist/man/*.8
	@debver=$$(echo "$(VERSION)" | sed 's/-/~/'); \
	  printf 'certagent (%s) unstable; urgency=medium\n\n  * Built from git %s.\n\n -- certagent maintainers <certagent@example.com>  %s\n' \
	  "$$debver" "$$(git rev-parse --short HEAD 2>/dev/null || echo unknown)" "$$(date -R -u -d @$$(git log -1 --format=%ct 2>/dev/null || date +%s))" \
	  | gzip -9n > dist/changelog.gz
	VERSION=$(VERSION) ARCH=$(DEB_ARCH) BIN=dist/bin/certagent CHANGELOG=dist/changelog.gz \
	  GO=$(GO) packaging/nfpm.sh package -f packaging/nfpm.yaml -p deb -t dist/certagent_$(VERSION)_$(DEB_ARCH).deb
	VERSION=$(VERSION) ARCH=$(DEB_ARCH) BIN=dist/bin/certagent CHANGELOG=dist/changelog.gz \
	  GO=$(GO) packaging/nfpm.sh package -f packaging/nfpm.yaml -p rpm -t dist/certagent-$(VERSION).$$(case $(DEB_ARCH) in amd64) echo x86_64;; arm64) echo aarch64;; *) echo $(DEB_ARCH);; esac).rpm
	@ls -l dist/*.deb dist/*.rpm dist/bin/certagent

clean:
	rm -rf bin dist
