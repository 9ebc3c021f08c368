#!/usr/bin/env bash
# Runs `python -m jaxtransfer.main` on every worker of a TPU VM at once (one JAX process per host).
set -euo pipefail
# shellcheck source=../lib.sh source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"

usage() {
  cat <<EOF
Usage: $PROG --name NAME --zone ZONE --workdir gs://BUCKET/PATH [options] -- MAIN_ARGS...

Runs, on all workers (--worker=all), in ~/$REMOTE_DIR (see setup.sh):
  JAXTRANSFER_MULTIHOST=1 .venv/bin/python -m jaxtransfer.main --workdir=WORKDIR MAIN_ARGS...
JAXTRANSFER_MULTIHOST=1 makes jaxtransfer call jax.distributed.initialize(), which finds the other
hosts by itself on TPU VMs. Re-running the same command on the same workdir resumes the sweep.

Exit code: 0 when every worker succeeded; 2 when a worker reported bad input (exit 2), so there
is no point in retrying; otherwise non-zero.

Required:
  --name NAME          TPU VM name
  --zone ZONE          its zone
  --workdir DIR        where results and checkpoints go; use gs:// (shared by all hosts, and it
                       outlives the VM, which is what makes resume after preemption work)
Options:
  --env KEY=VALUE      extra environment variable for jaxtransfer.main (repeatable)
  --kill-stale         first kill whatever holds the TPU on the workers (a run left over from a
                       dropped ssh connection) and remove the libtpu lock file
  --project PROJECT    GCP project (default: gcloud's configured project)
  --dry-run            print the gcloud command (prefixed with '+ ') without running it; also DRY_RUN=1
  -h, --help           this help
Everything after -- goes to jaxtransfer.main unchanged (spaces and quotes included), e.g.
  -- --config=configs/reinit.py --config.task=rte '--config.seeds=[0,1,2]'
EOF
}

NAME='' ZONE='' PROJECT='' WORKDIR='' KILL_STALE=0
ENVS=()
while (($#)); do
  case $1 in
    --config*) die_usage "jaxtransfer.main's flags go after --: ... -- $1" ;;
    --*=*) set -- "${1%%=*}" "${1#*=}" "${@:2}"; continue ;;
    -h | --help) usage; exit 0 ;;
    --name) need_value "$1" "${2-}"; NAME=$2; shift ;;
    --zone) need_value "$1" "${2-}"; ZONE=$2; shift ;;
    --project) need_value "$1" "${2-}"; PROJECT=$2; shift ;;
    --workdir) need_value "$1" "${2-}"; WORKDIR=$2; shift ;;
    --env)
      need_value "$1" "${2-}"
      [[ $2 =~ ^[A-Za-z_][A-Za-z0-9_]*= ]] || die_usage "--env wants KEY=VALUE, got '$2'"
      ENVS+=("$2"); shift ;;
    --kill-stale) KILL_STALE=1 ;;
    --dry-run) DRY_RUN=1 ;;
    --) shift; break ;;
    -*) die_usage "unknown option $1" ;;
    *) die_usage "unexpected argument '$1'" ;;
  esac
  shift
done
need_set --name "$NAME"
need_set --zone "$ZONE"
need_set --workdir "$WORKDIR"
check_tpu_names
for arg in "$@"; do
  [[ $arg != --workdir* ]] || die_usage "give the workdir as $PROG --workdir, not after --"
done
if [[ $WORKDIR != gs://* ]]; then
  log "warning: --workdir $WORKDIR is not on gs://: each worker writes its own copy, and it is lost with the VM"
fi
scope_flags

# The command the workers' shell runs; every word from here is quoted for it.
words=(JAXTRANSFER_MULTIHOST=1 PYTHONUNBUFFERED=1)
for kv in ${ENVS[@]+"${ENVS[@]}"}; do
  words+=("${kv%%=*}=$(shquote "${kv#*=}")")  # KEY stays bare so the shell sees an assignment.
done
remote="cd ~/$REMOTE_DIR && ${words[*]} $(shjoin .venv/bin/python -m jaxtransfer.main --workdir="$WORKDIR" "$@")"
# Each worker reports its exit code: `tpu-vm ssh --worker=all` passes on only the first non-zero
# one in worker order (older gcloud releases none), and a 2 on any worker must show as 2.
# shellcheck disable=SC2016  # expanded by the workers' shell
remote+='; rc=$?; echo "[jaxtransfer] exit code $rc on $(hostname)"; exit $rc'
if ((KILL_STALE)); then
  remote="if sudo fuser -k /dev/accel* /dev/vfio/[0-9]* >/dev/null 2>&1; then sleep 2; fi; sudo rm -f /tmp/libtpu_lockfile; $remote"
fi
cmd=("$GCLOUD" compute tpus tpu-vm ssh "$NAME" "${SCOPE[@]}" --worker=all --command="$remote")

if is_dry; then
  run "${cmd[@]}"
  exit 0
fi
out=$(mktemp)
trap 'rm -f "$out"' EXIT
rc=0
run "${cmd[@]}" 2>&1 | tee "$out" || rc=$?
codes=$(sed -n 's/.*\[jaxtransfer\] exit code \([0-9][0-9]*\) on .*/\1/p' "$out" | sort -un)
if grep -qx 2 <<<"$codes"; then
  rc=2
elif ((rc == 0)); then
  bad=$(grep -vx 0 <<<"$codes" | head -n 1 || true)
  rc=${bad:-0}
fi
if ((rc != 0)); then log "exit code $rc (worker exit codes: $(tr '\n' ' ' <<<"$codes"))"; fi
exit "$rc"
