# PSLS: the two commands are `make demo` and `make test`. Both install missing system
# packages first (scripts/deps.sh), then build.
SHELL := /bin/bash
CARGO ?= cargo

.PHONY: demo test deps build build-mpich bench clean slurm-up slurm-down help install install-files

help:
	@echo "make demo    run the demo (4 virtual nodes)"
	@echo "make test    run the whole test suite (Open MPI, MPICH, emulated Slurm)"
	@echo "make bench   run the benchmarks and print their figures"
	@echo "make install PREFIX=DIR   install the C library, psls.h, psls.pc, the Fortran module and psls-launch"

deps:
	@scripts/deps.sh

build: deps
	$(CARGO) build --release --workspace

# Binaries built against MPICH go to their own target directory.
build-mpich: deps
	MPICC=mpicc.mpich CARGO_TARGET_DIR=target/mpich $(CARGO) build --release --workspace

demo: build
	@scripts/demo.sh

test: deps
	@scripts/test.sh

bench: build
	@scripts/bench.sh

slurm-up: deps
	@scripts/slurm-cluster.sh start 5

slurm-down:
	@scripts/slurm-cluster.sh stop

clean:
	$(CARGO) clean

# The C and Fortran API and the launcher, under PREFIX (default /usr/local):
#   lib/libpsls.a lib/libpsls.so include/psls.h lib/pkgconfig/psls.pc bin/psls-launch bin/psls-pfs
#   include/psls.mod lib/libpslsf.a (the Fortran module, built with bindings/fortran/build.sh)
# Programs then build with mpicc and pkg-config (docs/c-api.md, docs/fortran.md).
# `install-files` copies what cargo built (INSTALL_FROM, the release directory by default).
PREFIX ?= /usr/local
INSTALL_FROM ?= $(or $(CARGO_TARGET_DIR),target)/release
VERSION := $(shell sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n 1)

install:
	$(CARGO) build --release -p psls-c -p psls-launch -p psls-tools
	@$(MAKE) --no-print-directory install-files INSTALL_FROM='$(INSTALL_FROM)' PREFIX='$(PREFIX)'

install-files:
	@set -euo pipefail; \
	prefix='$(abspath $(PREFIX))'; from='$(INSTALL_FROM)'; \
	for f in libpsls.a libpsls.so psls-launch; do \
	  [[ -f $$from/$$f ]] || { echo "install: $$from/$$f is missing: build it first (make install does)" >&2; exit 1; }; \
	done; \
	install -d "$$prefix/lib/pkgconfig" "$$prefix/include" "$$prefix/bin"; \
	install -m 644 "$$from/libpsls.a" "$$prefix/lib/"; \
	install -m 755 "$$from/libpsls.so" "$$prefix/lib/"; \
	install -m 644 bindings/c/include/psls.h "$$prefix/include/"; \
	install -m 755 "$$from/psls-launch" "$$prefix/bin/"; \
	if [[ -f $$from/psls-pfs ]]; then install -m 755 "$$from/psls-pfs" "$$prefix/bin/"; fi; \
	sed -e "s|@PREFIX@|$$prefix|" -e "s|@VERSION@|$(VERSION)|" bindings/c/psls.pc.in \
	  > "$$prefix/lib/pkgconfig/psls.pc"; \
	if [[ -x bindings/fortran/build.sh ]]; then \
	  tmp=$$(mktemp -d); trap 'rm -rf "$$tmp"' EXIT; \
	  bindings/fortran/build.sh "$$tmp" >/dev/null; \
	  install -m 644 "$$tmp/psls.mod" "$$prefix/include/"; \
	  install -m 644 "$$tmp/libpslsf.a" "$$prefix/lib/"; \
	else \
	  echo "install: note: bindings/fortran/build.sh is absent: no Fortran module installed"; \
	fi; \
	echo "installed PSLS $(VERSION) under $$prefix (pkg-config: PKG_CONFIG_PATH=$$prefix/lib/pkgconfig)"
