#!/usr/bin/env bash
# The demo: PSLS on 4 ranks over 4 virtual nodes of this host; prints the node map and the
# buddy ring. Roots go under /dev/shm and /var/tmp, keyed by a demo job id, removed at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=target/release
JOB=demo-$$
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
export OMPI_MCA_rmaps_base_oversubscribe=1 OMPI_MCA_mpi_yield_when_idle=1
export OMPI_MCA_btl_vader_single_copy_mechanism=none
export PSLS_VIRTUAL_NODES=4 PSLS_JOB_ID=$JOB PSLS_DISK_BASE=/var/tmp PSLS_MEMORY_BASE=/dev/shm
cleanup() { rm -rf "/dev/shm/psls-$(id -u)/$JOB" "/var/tmp/psls-$(id -u)/$JOB"; }
trap cleanup EXIT
echo "== PSLS demo: 4 ranks on 4 virtual nodes (mpirun.openmpi -n 4 $BIN/hello)"
mpirun.openmpi -n 4 "$BIN/hello"
echo "== demo finished"
