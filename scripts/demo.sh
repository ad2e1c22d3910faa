#!/usr/bin/env bash
# The demo: PSLS jobs of 4 ranks on 4 virtual nodes of this host, started by psls-launch.
#  1. hello: the node map and the buddy ring.
#  2. mgs (Modified Gram-Schmidt in global memory, a checkpoint every 4 vectors): a fault-free
#     run; a run in which rank 1 crashes, and the same command again, which restarts from the
#     last memory checkpoint; a run that dies after a permanent checkpoint, then a "power cut"
#     (every memory root wiped), and the command again, which restarts from the disks. Every
#     run must end with the fault-free run's checksum of Q.
# Everything lives under temporary roots, removed at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=target/release
JOB=demo-$$
RUN_DIR=$(mktemp -d /tmp/psls-demo.XXXXXX)
MEM=$(mktemp -d /dev/shm/psls-demo-mem.XXXXXX)
DISK=$(mktemp -d "${TMPDIR:-/var/tmp}/psls-demo-disk.XXXXXX")
cleanup() { rm -rf "/dev/shm/psls-$(id -u)/$JOB" "${TMPDIR:-/var/tmp}/psls-$(id -u)/$JOB" "$RUN_DIR" "$MEM" "$DISK"; }
trap cleanup EXIT
export PSLS_MEMORY_BASE=$MEM PSLS_DISK_BASE=$DISK PSLS_CKPT_NAME=$JOB PSLS_LOG=${PSLS_LOG:-warn}

echo "== PSLS demo: 4 ranks on 4 virtual nodes"
echo "\$ psls-launch -n 4 --virtual-nodes 4 -- $BIN/hello"
"$BIN/psls-launch" -n 4 --virtual-nodes 4 --job-id "$JOB" --run-dir "$RUN_DIR" -- "$BIN/hello"

MGS_ARGS=(--rows 2048 --vectors 64 --every 4)
mgs() {
  "$BIN/psls-launch" -n 4 --virtual-nodes 4 --job-id "$JOB" --run-dir "$RUN_DIR" -- \
    "$BIN/mgs" "${MGS_ARGS[@]}" "$@" 2>&1 | grep -E '^mgs:|psls-launch: job .* (failed|killed)' || true
}
checksum() { sed -n 's/.*checksum \([0-9a-f]*\).*/\1/p' | tail -1; }
# Runs mgs again; it must restart as PATTERN says and end with the fault-free checksum.
restarts() {
  local out got
  out=$(mgs); echo "$out"
  got=$(echo "$out" | checksum)
  grep -q "$1" <<<"$out" || { echo "demo: the run did not print '$1'" >&2; exit 1; }
  [[ $got == "$want" ]] || { echo "demo: checksum $got differs from $want" >&2; exit 1; }
}

echo
echo "== mgs, no failure (checkpoint every 4 vectors; every 10th checkpoint is permanent)"
echo "\$ psls-launch ... -- $BIN/mgs ${MGS_ARGS[*]}"
out=$(mgs); echo "$out"
want=$(echo "$out" | checksum)
[[ -n $want ]] || { echo "demo: the fault-free run printed no checksum" >&2; exit 1; }

echo
echo "== mgs, rank 1 crashes at vector 13; then the same command again"
mgs --crash-at 13 --crash-rank 1
restarts 'restarted from checkpoint 4 at vector 12'
echo "-> restarted from the memory checkpoint; same result as without the crash"

echo
echo "== mgs with a permanent checkpoint every 3rd call; the job dies at vector 26, then a power cut"
export PSLS_CKPT_PERMANENT_EVERY=3
mgs --crash-at 26 --crash-rank 0
rm -rf "${MEM:?}"/*
echo "(every memory root wiped: the memory checkpoints are gone)"
restarts 'restarted from checkpoint 6 at vector 20'
echo "-> restarted from the permanent checkpoint on the mirrored disks; same result"
echo
echo "== demo finished"
