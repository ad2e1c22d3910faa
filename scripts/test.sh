#!/usr/bin/env bash
# The whole test suite: lints, unit tests, multi-rank tests under mpirun with Open MPI and with
# MPICH, and multi-rank tests under srun on an emulated 4-node Slurm cluster.
set -euo pipefail
cd "$(dirname "$0")/.."
CARGO=${CARGO:-cargo}
step() { echo; echo "=== $*"; }

step "format and lints"
$CARGO fmt --all -- --check
$CARGO clippy --workspace --all-targets --quiet -- -D warnings

step "Open MPI: unit and multi-rank tests (mpirun)"
# The multi-rank tests run the workspace's binaries (examples, psls-launch) and link the C
# library (bindings/c): build them all, libraries included.
$CARGO build --workspace
PSLS_MPI=openmpi $CARGO test --workspace

step "MPICH: multi-rank tests (mpirun.mpich)"
export_mpich() { export MPICC=mpicc.mpich CARGO_TARGET_DIR=target/mpich PSLS_MPI=mpich; }
(export_mpich && $CARGO build --workspace && $CARGO test -p psls-tests)

step "Slurm: multi-rank tests under srun on an emulated cluster"
scripts/slurm-cluster.sh start 4
trap 'scripts/slurm-cluster.sh stop >/dev/null 2>&1 || true' EXIT
eval "$(scripts/slurm-cluster.sh env)"
# MPICH runs over PMI-2; Open MPI over PMIx, with TCP on loopback between the emulated nodes.
(export_mpich && PSLS_TEST_SLURM=1 $CARGO test -p psls-tests --test slurm)
PSLS_MPI=openmpi PSLS_TEST_SLURM=1 $CARGO test -p psls-tests --test slurm
# A node of the allocation lost for real (slurmd killed) and the spare taking over; alone,
# after the others, since it takes a node down (the test brings it back).
(export_mpich && PSLS_TEST_SLURM=1 $CARGO test -p psls-tests --test slurm_recovery)
PSLS_MPI=openmpi PSLS_TEST_SLURM=1 $CARGO test -p psls-tests --test slurm_recovery
# The batch template (slurm/psls-job.sbatch) submitted with sbatch, a node killed mid-job; alone,
# since it takes a node down (the test brings it back).
(export_mpich && PSLS_TEST_SLURM=1 $CARGO test -p psls-tests --test slurm_batch)
PSLS_MPI=openmpi PSLS_TEST_SLURM=1 $CARGO test -p psls-tests --test slurm_batch

step "benchmarks build and run (smoke: tiny sizes, figures not checked)"
PSLS_BENCH_SMOKE=1 scripts/bench.sh >/dev/null

echo
echo "=== all tests passed"
