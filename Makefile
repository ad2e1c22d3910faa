# PSLS: the two commands are `make demo` and `make test`. Both install missing system
# packages first (scripts/deps.sh), then build.
SHELL := /bin/bash
CARGO ?= cargo

.PHONY: demo test deps build build-mpich bench clean slurm-up slurm-down help

help:
	@echo "make demo    run the demo (4 virtual nodes)"
	@echo "make test    run the whole test suite (Open MPI, MPICH, emulated Slurm)"
	@echo "make bench   run the benchmarks and print their figures"

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
