#!/usr/bin/env bash
# Runs N jaxtransfer processes on this machine, joined by JAX's multi-process runtime: the
# multi-host code path, testable on one CPU box.
set -euo pipefail
# shellcheck source=lib.sh source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

usage() {
  cat <<EOF
Usage: $PROG [--dry-run] N [jaxtransfer.main args...]

Starts N processes of \`\$PYTHON -m jaxtransfer.main ARGS...\` on this machine, process i with
  JAXTRANSFER_COORDINATOR=127.0.0.1:PORT  JAXTRANSFER_NUM_PROCESSES=N  JAXTRANSFER_PROCESS_ID=i
  JAX_PLATFORMS=cpu (unless JAX_PLATFORMS is set)  PYTHONUNBUFFERED=1
which jaxtransfer passes to jax.distributed.initialize(). Waits for all; if one fails, stops the
others and exits with its exit code (2 if any process exited 2: bad input).

Example (from the project root):
  $PROG 2 --config=configs/finetune.py --workdir=/tmp/jt-mp --config.model=minilm-l6

Environment:
  PYTHON                   interpreter (default: python)
  JAXTRANSFER_PORT         coordinator port (default: a free one)
  LOGDIR                   write process i's output to \$LOGDIR/process_i.log instead of
                           printing it on stdout prefixed with '[process i] '
  CPU_DEVICES_PER_PROCESS  K > 1: each process gets K CPU devices (XLA_FLAGS
                           --xla_force_host_platform_device_count=K), to exercise sharding
  KILL_GRACE               seconds between SIGTERM and SIGKILL when stopping the others (default 10)
  PREEMPT_WAIT             when a process exits 75 (preempted), seconds the others get to checkpoint
                           the same step and exit on their own before they are stopped (default 120)
  DRY_RUN=1 or --dry-run   print the N commands, prefixed with '+ ', and start nothing
EOF
}

case ${1-} in
  -h | --help) usage; exit 0 ;;
  --dry-run) DRY_RUN=1; shift ;;
esac
(($#)) || die_usage "N (the number of processes) is required"
N=$1
shift
[[ $N =~ ^[1-9][0-9]{0,3}$ ]] || die_usage "N must be a positive integer, got '$N'"
PYTHON=${PYTHON:-python}
GRACE=${KILL_GRACE:-10}
[[ $GRACE =~ ^[0-9]+$ ]] || die_usage "KILL_GRACE must be a whole number of seconds, got '$GRACE'"
PREEMPT_WAIT=${PREEMPT_WAIT:-120}
[[ $PREEMPT_WAIT =~ ^[0-9]+$ ]] || die_usage "PREEMPT_WAIT must be a whole number of seconds, got '$PREEMPT_WAIT'"

free_port() {  # Asks the OS for a free port (bound and released at once; the race is harmless here).
  local py port
  for py in python3 python "$PYTHON"; do
    port=$("$py" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])' 2>/dev/null) || continue
    if [[ $port =~ ^[0-9]+$ ]]; then echo "$port"; return; fi
  done
  die "no Python found to pick a free port; set JAXTRANSFER_PORT"
}
PORT=${JAXTRANSFER_PORT:-$(free_port)}
if ! [[ $PORT =~ ^[0-9]{1,5}$ ]] || ((PORT == 0 || PORT > 65535)); then
  die_usage "JAXTRANSFER_PORT must be a port number, got '$PORT'"
fi

export JAXTRANSFER_COORDINATOR=127.0.0.1:$PORT JAXTRANSFER_NUM_PROCESSES=$N
export JAX_PLATFORMS=${JAX_PLATFORMS-cpu} PYTHONUNBUFFERED=${PYTHONUNBUFFERED-1}
unset JAXTRANSFER_MULTIHOST  # The explicit coordinator is meant, not TPU auto-detection.
if [[ -n ${CPU_DEVICES_PER_PROCESS-} ]]; then
  [[ $CPU_DEVICES_PER_PROCESS =~ ^[1-9][0-9]*$ ]] || die_usage "CPU_DEVICES_PER_PROCESS must be a positive integer"
  export XLA_FLAGS="${XLA_FLAGS:+$XLA_FLAGS }--xla_force_host_platform_device_count=$CPU_DEVICES_PER_PROCESS"
fi

if is_dry; then
  for ((i = 0; i < N; i++)); do
    run env JAXTRANSFER_COORDINATOR="$JAXTRANSFER_COORDINATOR" JAXTRANSFER_NUM_PROCESSES="$N" \
      JAXTRANSFER_PROCESS_ID="$i" JAX_PLATFORMS="$JAX_PLATFORMS" "$PYTHON" -m jaxtransfer.main "$@"
  done
  exit 0
fi
if [[ -n ${LOGDIR-} ]]; then mkdir -p "$LOGDIR"; fi

prefix() {  # Line by line, so output shows up as it comes (mawk's awk would hold it back).
  local line
  while IFS= read -r line || [[ -n $line ]]; do printf '[process %s] %s\n' "$1" "$line"; done
}

# Job control puts every process (with its output filter and anything it spawns) in its own
# process group, so stopping one reaches all of it.
set -m
PIDS=()
for ((i = 0; i < N; i++)); do
  if [[ -n ${LOGDIR-} ]]; then
    JAXTRANSFER_PROCESS_ID=$i "$PYTHON" -m jaxtransfer.main "$@" </dev/null >"$LOGDIR/process_$i.log" 2>&1 &
  else
    { JAXTRANSFER_PROCESS_ID=$i "$PYTHON" -m jaxtransfer.main "$@" </dev/null 2>&1 | prefix "$i"; } &
  fi
  PIDS+=("$!")
done
set +m
log "started $N processes (coordinator $JAXTRANSFER_COORDINATOR${LOGDIR:+, logs in $LOGDIR/process_*.log})"

STATUS=()  # exit code per process, empty while it runs
alive() { [[ -z ${STATUS[$1]-} ]]; }
reap() {  # Records the exit code of every process that has ended.
  local i
  for ((i = 0; i < N; i++)); do
    if alive "$i" && ! kill -0 "${PIDS[i]}" 2>/dev/null; then
      STATUS[i]=0
      wait "${PIDS[i]}" || STATUS[i]=$?
    fi
  done
}
stop_all() {  # SIGTERM to every running process group, SIGKILL after $GRACE seconds.
  local i t
  for ((i = 0; i < N; i++)); do
    if alive "$i"; then kill -TERM -- "-${PIDS[i]}" 2>/dev/null || true; fi
  done
  for ((t = 0; t < GRACE * 10; t++)); do
    reap
    [[ ${#STATUS[@]} -lt $N ]] || return 0
    sleep 0.1
  done
  for ((i = 0; i < N; i++)); do
    if alive "$i"; then kill -KILL -- "-${PIDS[i]}" 2>/dev/null || true; fi
  done
  reap
}
trap stop_all EXIT  # Never leave processes behind, whatever ends this script.
trap 'log "interrupted; stopping all processes"; stop_all; exit 130' INT
trap 'log "terminated; stopping all processes"; stop_all; exit 143' TERM

first=-1
while [[ ${#STATUS[@]} -lt $N ]]; do
  reap
  for ((i = 0; i < N; i++)); do
    if ! alive "$i" && ((STATUS[i] != 0)); then first=$i; break 2; fi
  done
  sleep 0.1
done
if ((first < 0)); then exit 0; fi

rc=${STATUS[first]}
if ((rc == 75)); then
  # Preempted: the others saw the same stop at the same step and are checkpointing it; give them
  # time to finish on their own rather than cutting their checkpoint short.
  log "process $first was preempted (exit 75); waiting up to ${PREEMPT_WAIT}s for the others"
  for ((t = 0; t < PREEMPT_WAIT * 10 && ${#STATUS[@]} < N; t++)); do
    reap
    sleep 0.1
  done
else
  log "process $first exited with code $rc; stopping the others"
fi
stop_all
for ((i = 0; i < N; i++)); do log "process $i exited with code ${STATUS[i]}"; done
for ((i = 0; i < N; i++)); do
  # Bad input (2) wins: it is what the user must fix, and no retry will help. (A process stopped
  # here ends with 143 or 137, never 2.)
  if ((STATUS[i] == 2)); then rc=2; fi
done
if [[ -n ${LOGDIR-} ]]; then
  log "last lines of $LOGDIR/process_$first.log:"
  tail -n 20 "$LOGDIR/process_$first.log" >&2 || true
fi
exit "$rc"
