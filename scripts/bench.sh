#!/usr/bin/env bash
# Runs the benchmarks and prints their figures. Each benchmark measures its own baseline in the
# same run and prints the ratio. PSLS_BENCH_SMOKE=1: tiny sizes, debug build, shared memory only
# (the test suite uses it to check that the benchmarks still run). pfs_bench measures a disk: its
# full runs put the disk roots in a directory under ${TMPDIR:-/var/tmp}, not in /dev/shm.
set -euo pipefail
cd "$(dirname "$0")/.."
CARGO=${CARGO:-cargo}
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
export OMPI_MCA_rmaps_base_oversubscribe=1 OMPI_MCA_mpi_yield_when_idle=1
export OMPI_MCA_btl_vader_single_copy_mechanism=none
export PSLS_LOG=${PSLS_LOG:-warn}
BENCH_TMP=$(mktemp -d /dev/shm/psls-bench.XXXXXX)
BENCH_DISK=
trap 'rm -rf "$BENCH_TMP" ${BENCH_DISK:+"$BENCH_DISK"}' EXIT
export PSLS_MEMORY_BASE=$BENCH_TMP PSLS_DISK_BASE=$BENCH_TMP

run() {
  local title=$1
  shift
  echo
  echo "## $title"
  echo "\$ $*"
  "$@"
}

if [[ ${PSLS_BENCH_SMOKE:-0} == 1 ]]; then
  $CARGO build --quiet -p psls-bench -p psls-examples
  run "rma_bench (smoke)" mpirun.openmpi -n 2 target/debug/rma_bench
  PSLS_VIRTUAL_NODES=4 run "svm_bench (smoke)" mpirun.openmpi -n 4 target/debug/svm_bench
  PSLS_VIRTUAL_NODES=4 run "pfs_bench (smoke)" mpirun.openmpi -n 4 target/debug/pfs_bench
  PSLS_VIRTUAL_NODES=4 run "ckpt_bench (smoke)" mpirun.openmpi -n 4 target/debug/ckpt_bench
  PSLS_MPIRUN=mpirun.openmpi run "mgs_overhead (smoke)" target/debug/mgs_overhead --out "$BENCH_TMP/plots"
  PSLS_MPIRUN=mpirun.openmpi run "recovery_bench (smoke)" target/debug/recovery_bench
  exit 0
fi

$CARGO build --quiet --release -p psls-bench -p psls-examples
run "rma_bench: Open MPI, shared memory (osc/sm)" \
  mpirun.openmpi -n 2 target/release/rma_bench
run "rma_bench: Open MPI, TCP (btl tcp, osc/ucx over UCX's tcp transport)" \
  mpirun.openmpi -n 2 --mca btl self,tcp --mca osc ^sm -x UCX_TLS=tcp,self target/release/rma_bench

export PSLS_VIRTUAL_NODES=4
run "svm_bench: Open MPI, 4 ranks on 4 virtual nodes (osc/ucx over shared memory)" \
  mpirun.openmpi -n 4 target/release/svm_bench
run "svm_bench: Open MPI, TCP (btl tcp, osc/ucx over UCX's tcp transport)" \
  mpirun.openmpi -n 4 --mca btl self,tcp --mca osc ^sm -x UCX_TLS=tcp,self target/release/svm_bench
BENCH_DISK=$(mktemp -d "${TMPDIR:-/var/tmp}/psls-bench-disk.XXXXXX")
PSLS_DISK_BASE=$BENCH_DISK run "pfs_bench: Open MPI, 4 ranks on 4 virtual nodes, disk roots in $BENCH_DISK" \
  mpirun.openmpi -n 4 target/release/pfs_bench
PSLS_DISK_BASE=$BENCH_DISK run "pfs_bench: Open MPI, TCP (btl tcp, osc/ucx over UCX's tcp transport)" \
  mpirun.openmpi -n 4 --mca btl self,tcp --mca osc ^sm -x UCX_TLS=tcp,self target/release/pfs_bench
PSLS_DISK_BASE=$BENCH_DISK run "ckpt_bench: Open MPI, 4 ranks on 4 virtual nodes, 16 MiB per rank" \
  mpirun.openmpi -n 4 target/release/ckpt_bench
unset PSLS_VIRTUAL_NODES
PSLS_DISK_BASE=$BENCH_DISK PSLS_MPIRUN=mpirun.openmpi run "mgs_overhead: Open MPI, 4 ranks on 4 virtual nodes (plots in docs/)" \
  target/release/mgs_overhead --out docs
PSLS_DISK_BASE=$BENCH_DISK PSLS_MPIRUN=mpirun.openmpi run "recovery_bench: Open MPI, 4 ranks on 4 virtual nodes (+ spares), mgs 16384 x 64" \
  target/release/recovery_bench

MPICC=mpicc.mpich CARGO_TARGET_DIR=target/mpich $CARGO build --quiet --release -p psls-bench
run "rma_bench: MPICH, one host (ch4, shared memory)" \
  mpirun.mpich -n 2 target/mpich/release/rma_bench
PSLS_VIRTUAL_NODES=4 run "svm_bench: MPICH, 4 ranks on 4 virtual nodes" \
  mpirun.mpich -n 4 target/mpich/release/svm_bench
PSLS_VIRTUAL_NODES=4 PSLS_DISK_BASE=$BENCH_DISK run "pfs_bench: MPICH, 4 ranks on 4 virtual nodes" \
  mpirun.mpich -n 4 target/mpich/release/pfs_bench
