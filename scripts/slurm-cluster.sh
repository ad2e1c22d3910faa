#!/usr/bin/env bash
# Emulated multi-node Slurm cluster on one host (Debian slurm-wlm + munge).
# Everything (config, munge key/socket, spool, logs, pid files) lives in a state
# directory; nothing under /etc is touched.  See `--help`.
set -euo pipefail

STATE=$(realpath -m "${PSLS_SLURM_DIR:-/tmp/psls-slurm}")
CTLD_PORT=${PSLS_SLURM_CTLD_PORT:-16817}
NODE_PORT_BASE=${PSLS_SLURM_NODE_PORT_BASE:-17000} # node nK listens on BASE+K
CPUS=${PSLS_SLURM_CPUS:-4}                         # CPUs advertised per node
SLURMD_TIMEOUT=${PSLS_SLURM_SLURMD_TIMEOUT:-10}    # s until a dead node is DOWN
START_TIMEOUT=${PSLS_SLURM_START_TIMEOUT:-90}      # s to wait for all nodes idle
CONF=$STATE/slurm.conf
SOCK=$STATE/munge/munge.socket
LOG=$STATE/log
RUN=$STATE/run
export SLURM_CONF=$CONF

usage() {
  cat <<EOF
Usage: $(basename "$0") COMMAND [ARGS]

Runs a real Slurm cluster of N emulated nodes (n1..nN) on this host: one
munged, one slurmctld and one 'slurmd -N nK' per node, all from Debian's
slurm-wlm and munge packages. State lives in \$PSLS_SLURM_DIR ($STATE).

Commands:
  install         apt-get install slurm-wlm munge (sudo when not root) if missing
  start [N]       start munged, slurmctld and N slurmd's (default 4); idempotent;
                  waits until sinfo shows all N nodes idle
  stop            stop every daemon this script started (via pid files), cancel
                  jobs, remove the runtime state (config/key/logs kept)
  status          show daemons, sinfo and squeue
  env             print export lines for clients (eval "\$($0 env)")
  kill-node NAME  SIGKILL that node's slurmd and all its job steps/tasks; Slurm
                  marks it DOWN ("Not responding") after ~20-30s; a later
                  'start' restarts its slurmd and the node returns to service

Environment: PSLS_SLURM_DIR, PSLS_SLURM_CTLD_PORT ($CTLD_PORT),
  PSLS_SLURM_NODE_PORT_BASE ($NODE_PORT_BASE), PSLS_SLURM_CPUS ($CPUS),
  PSLS_SLURM_SLURMD_TIMEOUT ($SLURMD_TIMEOUT), PSLS_SLURM_START_TIMEOUT ($START_TIMEOUT).
Clients need SLURM_CONF=$CONF (see 'env').
EOF
}

die() { echo "slurm-cluster: ERROR: $*" >&2; exit 1; }
info() { echo "slurm-cluster: $*"; }

# pid of a daemon we started if its pid file names a live process whose
# /proc entry proves it is ours (right binary + our state dir); else empty.
our_pid() { # pidfile binary-name marker
  local pf=$1 bin=$2 marker=$3 pid
  [[ -s $pf ]] || return 0
  pid=$(tr -dc '0-9' <"$pf")
  [[ -n $pid ]] && alive "$pid" || return 0
  [[ $(readlink "/proc/$pid/exe" 2>/dev/null) == */"$bin"* ]] || return 0 # slurmd-wlm
  tr '\0' '\n' <"/proc/$pid/cmdline" 2>/dev/null | grep -qxF -- "$marker" \
    || tr '\0' '\n' <"/proc/$pid/environ" 2>/dev/null | grep -qxF -- "$marker" \
    || return 0
  echo "$pid"
}
munged_pid() { our_pid "$RUN/munged.pid" munged "--socket=$SOCK"; }
ctld_pid() { our_pid "$RUN/slurmctld.pid" slurmctld "$CONF"; }
slurmd_pid() { our_pid "$RUN/slurmd-$1.pid" slurmd "PSLS_SLURM_NODE=$STATE/$1"; }
nnodes() { cat "$STATE/nodes" 2>/dev/null || echo 0; }

# Pids of node $1's slurmd (marker in its environment) and slurmstepd's (they
# hold that node's log file open), plus all their descendants (job tasks).
node_procs() {
  local marker="PSLS_SLURM_NODE=$STATE/$1" p f line rest roots=() all=""
  for p in /proc/[0-9]*; do
    case $(readlink "$p/exe" 2>/dev/null) in
      */slurmd*) grep -qzxF -- "$marker" "$p/environ" 2>/dev/null && roots+=("${p#/proc/}") ;;
      */slurmstepd*) find "$p/fd" -maxdepth 1 -lname "$LOG/slurmd-$1.log" 2>/dev/null | grep -q . \
                       && roots+=("${p#/proc/}") ;;
    esac
  done
  ((${#roots[@]})) || return 0
  for f in /proc/[0-9]*/stat; do  # "pid ppid" table; comm may contain spaces
    read -r line <"$f" 2>/dev/null || continue
    rest=${line##*) }; rest=${rest#* }
    all+="${line%% *} ${rest%% *}"$'\n'
  done
  local frontier=("${roots[@]}") seen=" ${roots[*]} " next c
  while ((${#frontier[@]})); do
    next=()
    for p in "${frontier[@]}"; do
      # shellcheck disable=SC2013
      for c in $(awk -v pp="$p" '$2==pp {print $1}' <<<"$all"); do
        [[ $seen == *" $c "* ]] || { seen+="$c "; next+=("$c"); }
      done
    done
    frontier=("${next[@]+"${next[@]}"}")
  done
  echo "$seen"
}

kill_node() { # name
  local n=$1 pids pid round
  [[ -f $STATE/nodes ]] || die "no cluster state in $STATE"
  [[ $n =~ ^n[0-9]+$ && ${n#n} -ge 1 && ${n#n} -le $(nnodes) ]] || die "unknown node '$n' (cluster has n1..n$(nnodes))"
  # Never stop/kill ourselves or our ancestors (e.g. when run from a task on $n).
  local self=" " p=$$ line rest
  while ((p > 1)) && read -r line <"/proc/$p/stat" 2>/dev/null; do
    self+="$p "; rest=${line##*) }; rest=${rest#* }; p=${rest%% *}
  done
  for round in 1 2 3; do  # repeat: catch children forked while we were looking
    pids=""
    for pid in $(node_procs "$n"); do [[ $self == *" $pid "* ]] || pids+="$pid "; done
    [[ -n ${pids// /} ]] || break
    # shellcheck disable=SC2086
    kill -STOP $pids 2>/dev/null || true
    # shellcheck disable=SC2086
    kill -KILL $pids 2>/dev/null || true
    sleep 0.2
  done
  rm -f "$RUN/slurmd-$n.pid"
  info "killed slurmd and job processes of $n; slurmctld marks it DOWN within ~30s"
  [[ $round -gt 1 ]] || info "(no live processes were found for $n)"
}

write_conf() { # nodes
  local n=$1 host user
  host=$(hostname -s)
  user=$(id -un)
  cat >"$CONF" <<EOF
# Generated by scripts/slurm-cluster.sh -- emulated $n-node cluster.
ClusterName=psls
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=$CTLD_PORT
SlurmUser=$user
SlurmdUser=$user
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$SOCK
StateSaveLocation=$STATE/ctld
SlurmdSpoolDir=$STATE/spool/%n
SlurmctldPidFile=$RUN/slurmctld.pid
SlurmdPidFile=$RUN/slurmd-%n.pid
SlurmctldLogFile=$LOG/slurmctld.log
SlurmdLogFile=$LOG/slurmd-%n.log
SlurmctldDebug=info
SlurmdDebug=info
TmpFS=$STATE/tmp/%n
PlugStackConfig=$STATE/plugstack.conf
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MailProg=/bin/true
SwitchType=switch/none
MpiDefault=none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SlurmdParameters=config_overrides
ReturnToService=2
SlurmdTimeout=$SLURMD_TIMEOUT
SlurmctldTimeout=30
MessageTimeout=10
InactiveLimit=0
KillWait=5
MinJobAge=60
NodeName=n[1-$n] NodeHostname=$host NodeAddr=127.0.0.1 Port=[$((NODE_PORT_BASE + 1))-$((NODE_PORT_BASE + n))] CPUs=$CPUS State=UNKNOWN
PartitionName=psls Nodes=ALL Default=YES MaxTime=INFINITE State=UP OverSubscribe=FORCE:4
EOF
  : >"$STATE/plugstack.conf"
}

start_munged() {
  [[ -n $(munged_pid) ]] && return 0
  mkdir -p "$STATE/munge" && chmod 755 "$STATE/munge"  # socket must be reachable
  if [[ ! -s $STATE/munge/munge.key ]]; then
    dd if=/dev/urandom of="$STATE/munge/munge.key" bs=1 count=1024 status=none \
      || die "could not generate munge key $STATE/munge/munge.key"
  fi
  chmod 400 "$STATE/munge/munge.key"
  rm -f "$SOCK" "$SOCK.lock"
  munged --socket="$SOCK" --key-file="$STATE/munge/munge.key" \
    --pid-file="$RUN/munged.pid" --log-file="$LOG/munged.log" \
    --seed-file="$STATE/munge/munged.seed" --force \
    || die "munged failed to start; read $LOG/munged.log"
  local i
  for i in $(seq 50); do
    munge -S "$SOCK" -n 2>/dev/null | unmunge -S "$SOCK" >/dev/null 2>&1 && return 0
    sleep 0.2
  done
  die "munged started but credentials do not round-trip on $SOCK; read $LOG/munged.log"
}

start_slurmd() { # name
  local n=$1
  [[ -n $(slurmd_pid "$n") ]] && return 0
  mkdir -p "$STATE/spool/$n" "$STATE/tmp/$n"
  PSLS_SLURM_NODE=$STATE/$n slurmd -f "$CONF" -N "$n" \
    || die "slurmd for $n failed to start; read $LOG/slurmd-$n.log"
}

node_states() { sinfo -h -N -o '%N %T' 2>/dev/null | sort -u; }

cmd_start() {
  local n=${1:-4} cur up=0 i
  [[ $n =~ ^[1-9][0-9]*$ ]] || die "start: node count must be a positive integer, got '$n'"
  for b in munged slurmctld slurmd sinfo srun; do
    command -v "$b" >/dev/null || die "$b not found; run '$0 install' first"
  done
  cur=$(nnodes)
  if [[ -n $(ctld_pid) ]]; then
    [[ $cur == "$n" ]] || die "cluster already running with $cur nodes in $STATE; run '$0 stop' first"
    up=1
  else
    # Fresh start: kill leftovers of ours (if any) and regenerate everything.
    stop_daemons quiet
    rm -rf "$STATE/ctld" "$STATE/spool" "$STATE/tmp" "$RUN" "$LOG.prev"
    [[ ! -d $LOG ]] || mv "$LOG" "$LOG.prev"
    mkdir -p "$STATE" "$LOG" "$RUN" "$STATE/ctld"
    echo "$n" >"$STATE/nodes"
    write_conf "$n"
  fi
  start_munged
  if ((!up)); then
    slurmctld -f "$CONF" -c || die "slurmctld failed to start; read $LOG/slurmctld.log"
    for i in $(seq 50); do scontrol ping >/dev/null 2>&1 && break; sleep 0.2; done
    scontrol ping 2>/dev/null | grep -q UP || die "slurmctld is not answering; read $LOG/slurmctld.log"
  fi
  for i in $(seq 1 "$n"); do start_slurmd "n$i"; done
  local t0=$SECONDS deadline=$((SECONDS + START_TIMEOUT)) idle
  while :; do
    idle=$(node_states | awk '$2=="idle" || $2=="mixed" || $2=="allocated"' | wc -l)
    ((idle == n)) && break
    [[ -n $(ctld_pid) ]] || die "slurmctld exited; read $LOG/slurmctld.log"
    for i in $(seq 1 "$n"); do  # pid files appear shortly after daemonizing
      ((SECONDS < t0 + 5)) || [[ -n $(slurmd_pid "n$i") ]] \
        || die "slurmd n$i exited; read $LOG/slurmd-n$i.log"
    done
    if ((SECONDS >= deadline)); then
      node_states >&2
      die "not all $n nodes became idle within ${START_TIMEOUT}s; read $LOG/slurmctld.log and $LOG/slurmd-nK.log"
    fi
    sleep 0.5
  done
  ((up)) && info "cluster was already running (missing daemons restarted if any)"
  info "up: $n nodes n1..n$n (CPUs=$CPUS each), partition 'psls', controller port $CTLD_PORT"
  info "state: $STATE  logs: $LOG"
  info "clients: export SLURM_CONF=$CONF"
  sinfo
}

alive() { # pid: exists and is not a zombie
  local s
  read -r s <"/proc/$1/stat" 2>/dev/null || return 1
  s=${s##*) }
  [[ ${s:0:1} != Z ]]
}

STOPPED=0
stop_pid() { # pid
  local pid=$1 i
  [[ -n $pid ]] || return 0
  STOPPED=$((STOPPED + 1))
  kill -TERM "$pid" 2>/dev/null || return 0
  for i in $(seq 100); do alive "$pid" || return 0; sleep 0.1; done
  kill -KILL "$pid" 2>/dev/null || true
}

stop_daemons() { # [quiet]
  local i n
  n=$(nnodes)
  if [[ -n $(ctld_pid) ]]; then  # cancel jobs so steps are torn down cleanly
    scancel --quiet --partition=psls 2>/dev/null || true
    sleep 1
  fi
  for ((i = 1; i <= n; i++)); do
    stop_pid "$(slurmd_pid "n$i")"
    kill_node "n$i" >/dev/null  # leftover slurmstepd/tasks of our nodes only
  done
  stop_pid "$(ctld_pid)"
  stop_pid "$(munged_pid)"
  [[ ${1:-} == quiet ]] || info "stopped $STOPPED daemon(s) under $STATE"
}

cmd_stop() {
  [[ -d $STATE ]] || { info "nothing to stop ($STATE does not exist)"; return 0; }
  stop_daemons
  rm -rf "$STATE/ctld" "$STATE/spool" "$STATE/tmp" "$RUN" "$SOCK" "$SOCK.lock"
}

cmd_status() {
  local n i rc=0
  n=$(nnodes)
  ((n)) || { info "not configured (no $STATE/nodes)"; return 1; }
  printf '%-10s %s\n' munged "$(munged_pid || true)" slurmctld "$(ctld_pid || true)"
  for ((i = 1; i <= n; i++)); do printf '%-10s %s\n' "slurmd n$i" "$(slurmd_pid "n$i")"; done
  [[ -n $(ctld_pid) ]] || { info "slurmctld is not running"; return 1; }
  sinfo -N -l || rc=$?
  squeue || rc=$?
  return "$rc"
}

cmd_install() {
  local missing=0 sudo=()
  for b in munged slurmctld slurmd srun; do command -v "$b" >/dev/null || missing=1; done
  ((missing)) || { info "slurm-wlm and munge already installed ($(slurmd -V))"; return 0; }
  ((EUID == 0)) || sudo=(sudo)
  export DEBIAN_FRONTEND=noninteractive
  "${sudo[@]}" apt-get update -q || die "apt-get update failed"
  "${sudo[@]}" apt-get install -y -q slurm-wlm munge || die "apt-get install slurm-wlm munge failed"
}

cmd_env() {
  echo "export SLURM_CONF=$CONF"
  echo "export PSLS_SLURM_DIR=$STATE"
  # Open MPI: emulated nodes share one host, so its shared-memory BTL (vader)
  # collides between "nodes"; use TCP over loopback only.
  echo "export OMPI_MCA_btl=self,tcp"
  echo "export OMPI_MCA_btl_tcp_if_include=lo"
  echo "export OMPI_MCA_oob_tcp_if_include=lo"
}

case ${1:-} in
  start) cmd_start "${2:-4}" ;;
  stop) cmd_stop ;;
  status) cmd_status ;;
  env) cmd_env ;;
  kill-node) [[ -n ${2:-} ]] || die "usage: $0 kill-node NAME"; kill_node "$2" ;;
  install) cmd_install ;;
  -h | --help | help) usage ;;
  *) usage >&2; exit 2 ;;
esac
