#!/usr/bin/env bash
# The demo: PSLS jobs of 4 ranks on 4 virtual nodes of this host, plus a spare node, started
# and watched by psls-launch.
#  1. hello: the node map and the buddy ring.
#  2. mgs (Modified Gram-Schmidt in global memory, a checkpoint every 4 vectors), fault-free:
#     its checksum of Q is the reference.
#  3. mgs again, and node vnode2 is lost mid-run (its ranks killed at checkpoint 7, its memory
#     and disk roots wiped, the node marked dead). psls-launch sees the failure, probes the
#     nodes, puts the spare vnode4 in vnode2's place and relaunches; the job restores the
#     memory checkpoint from the other copies and finishes. Its checksum must be the
#     reference's: "result identical to a fault-free run" is checked, not printed blindly.
#  4. mgs with a permanent checkpoint every 3rd call, and a power cut (every memory root wiped):
#     the job comes back from the mirrored disks.
# Everything lives under temporary roots, removed at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=target/release
RUN_DIR=$(mktemp -d /tmp/psls-demo.XXXXXX)
MEM=$(mktemp -d /dev/shm/psls-demo-mem.XXXXXX)
DISK=$(mktemp -d "${TMPDIR:-/var/tmp}/psls-demo-disk.XXXXXX")
trap 'rm -rf "$RUN_DIR" "$MEM" "$DISK"' EXIT
export PSLS_MEMORY_BASE=$MEM PSLS_DISK_BASE=$DISK PSLS_LOG=${PSLS_LOG:-warn}

echo "== PSLS demo: 4 ranks on 4 virtual nodes"
echo "\$ psls-launch -n 4 --virtual-nodes 4 -- $BIN/hello"
"$BIN/psls-launch" -n 4 --virtual-nodes 4 --job-id demo-hello --run-dir "$RUN_DIR/hello" -- "$BIN/hello"

MGS=("$BIN/mgs" --rows 4096 --vectors 64 --every 4)
# Runs psls-launch on mgs with the given launcher options; shows the launcher's events and
# mgs's lines, and keeps the whole output in $out.
mgs() {
  local job=$1
  shift
  echo "\$ psls-launch -n 4 --virtual-nodes 4 $* -- ${MGS[*]}"
  out=$("$BIN/psls-launch" -n 4 --virtual-nodes 4 --job-id "$job" --run-dir "$RUN_DIR/$job" \
    "$@" -- "${MGS[@]}" 2>&1) || { echo "$out"; echo "demo: the job failed" >&2; exit 1; }
  grep -E '^mgs:|^psls-launch: (job|failure|probe|spare|restart|launch [1-9]|inject)|WARN' <<<"$out" || true
}
checksum() { sed -n 's/.*checksum \([0-9a-f]*\).*/\1/p' <<<"$1" | tail -1; }
# The run must have printed PATTERN and ended with the fault-free checksum.
identical() {
  local got
  got=$(checksum "$out")
  grep -q "$1" <<<"$out" || { echo "demo: the run did not print '$1'" >&2; exit 1; }
  [[ -n $got && $got == "$want" ]] || { echo "demo: checksum '$got' differs from the fault-free '$want'" >&2; exit 1; }
  echo "-> result identical to a fault-free run (checksum $got)"
}

echo
echo "== mgs, no failure: the reference result"
mgs demo-ref
want=$(checksum "$out")
[[ -n $want ]] || { echo "demo: the fault-free run printed no checksum" >&2; exit 1; }

echo
echo "== mgs on 4 nodes + 1 spare; node vnode2 is lost at checkpoint 7"
mgs demo-loss --spares 1 --inject lose-node:node=vnode2:epoch=7
identical 'spare vnode4 replaces lost node vnode2'

echo
echo "== mgs with a permanent checkpoint every 3rd call; a power cut at checkpoint 8"
PSLS_CKPT_PERMANENT_EVERY=3 mgs demo-power --inject power-cut:epoch=8
identical 'resumed from permanent checkpoint 6'
echo
echo "== demo finished"
