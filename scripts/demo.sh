#!/usr/bin/env bash
# The demo: a PSLS job of 4 ranks on 4 virtual nodes of this host, started by psls-launch; it
# prints the node map and the buddy ring. Its roots (under /dev/shm and /var/tmp, keyed by the
# demo's job id) and run directory are removed at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=target/release
JOB=demo-$$
RUN_DIR=$(mktemp -d /tmp/psls-demo.XXXXXX)
cleanup() { rm -rf "/dev/shm/psls-$(id -u)/$JOB" "${TMPDIR:-/var/tmp}/psls-$(id -u)/$JOB" "$RUN_DIR"; }
trap cleanup EXIT
echo "== PSLS demo: 4 ranks on 4 virtual nodes"
echo "\$ psls-launch -n 4 --virtual-nodes 4 -- $BIN/hello"
"$BIN/psls-launch" -n 4 --virtual-nodes 4 --job-id "$JOB" --run-dir "$RUN_DIR" -- "$BIN/hello"
echo "== demo finished"
