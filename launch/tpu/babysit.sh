#!/usr/bin/env bash
# Keeps a sweep going on a spot/preemptible TPU: recreates the VM when it is gone or preempted and
# re-runs the same command on the same workdir, which resumes the sweep.
set -euo pipefail
# shellcheck source=../lib.sh source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"

usage() {
  cat <<EOF
Usage: $PROG --name NAME --zone ZONE --accelerator-type TYPE --workdir gs://BUCKET/PATH [options] -- MAIN_ARGS...

Loop (run it in tmux/screen on a machine that stays up):
  1. state = \`gcloud compute tpus tpu-vm describe NAME --format='value(state)'\` (with --queued the
     queued resource's state first)
  2. VM missing, PREEMPTED, TERMINATED, ...: delete.sh (if there is something to delete),
     create.sh, setup.sh; still CREATING/queued/...: wait; READY: go on (setup.sh on the first
     pass, so the VM runs this tree's code)
  3. run.sh --kill-stale (all workers); exit 0 -> done; exit 2 (bad input) -> stop, exit 2;
     other failure -> sleep, back to 1. A failed run on a VM that was preempted meanwhile is not
     counted against --max-retries.
The code is packed once at the start and the same tarball is sent on every re-creation, so
editing this tree while the babysitter runs does not change the sweep's code.

Required:
  --name NAME, --zone ZONE, --accelerator-type TYPE   as for create.sh
  --workdir DIR                                       as for run.sh (gs://...)
Options passed on to create.sh: --version V, --spot, --preemptible, --queued, --project P
Options passed on to setup.sh:  --repo URL, --branch B (default: tarball of this tree)
Options passed on to run.sh:    --env KEY=VALUE (repeatable)
  --max-retries N     give up after N failed attempts not explained by preemption (default 10;
                      -1 = never)
  --sleep S           seconds between attempts and between state checks (default 60)
  --skip-setup        do not run setup.sh on the first pass when the VM is already READY
  --delete-when-done  delete the VM once the run succeeded
  --dry-run           one pass: print every command (prefixed with '+ ') and run none; also
                      DRY_RUN=1. The state is taken as READY, or \$BABYSIT_FAKE_STATE
                      (e.g. PREEMPTED, MISSING) when set.
  -h, --help          this help
EOF
}

NAME='' ZONE='' TYPE='' WORKDIR='' PROJECT='' REPO='' BRANCH='' QUEUED=0
CREATE_OPTS=() SETUP_OPTS=() RUN_OPTS=()
MAX_RETRIES=10 SLEEP=60 SKIP_SETUP=0 DELETE_WHEN_DONE=0
while (($#)); do
  case $1 in
    --config*) die_usage "jaxtransfer.main's flags go after --: ... -- $1" ;;
    --*=*) set -- "${1%%=*}" "${1#*=}" "${@:2}"; continue ;;
    -h | --help) usage; exit 0 ;;
    --name) need_value "$1" "${2-}"; NAME=$2; shift ;;
    --zone) need_value "$1" "${2-}"; ZONE=$2; shift ;;
    --project) need_value "$1" "${2-}"; PROJECT=$2; shift ;;
    --accelerator-type) need_value "$1" "${2-}"; TYPE=$2; shift ;;
    --version) need_value "$1" "${2-}"; CREATE_OPTS+=("$1" "$2"); shift ;;
    --spot | --preemptible) CREATE_OPTS+=("$1") ;;
    --queued) QUEUED=1 ;;
    --repo) need_value "$1" "${2-}"; REPO=$2; shift ;;
    --branch) need_value "$1" "${2-}"; BRANCH=$2; shift ;;
    --workdir) need_value "$1" "${2-}"; WORKDIR=$2; shift ;;
    --env) need_value "$1" "${2-}"; RUN_OPTS+=("$1" "$2"); shift ;;
    --max-retries) need_value "$1" "${2-}"; check_int "$1" "$2" -1; MAX_RETRIES=$2; shift ;;
    --sleep) need_value "$1" "${2-}"; check_int "$1" "$2" 0; SLEEP=$2; shift ;;
    --skip-setup) SKIP_SETUP=1 ;;
    --delete-when-done) DELETE_WHEN_DONE=1 ;;
    --dry-run) DRY_RUN=1 ;;
    --) shift; break ;;
    -*) die_usage "unknown option $1" ;;
    *) die_usage "unexpected argument '$1'" ;;
  esac
  shift
done
need_set --name "$NAME"
need_set --zone "$ZONE"
need_set --accelerator-type "$TYPE"
need_set --workdir "$WORKDIR"
check_tpu_names
[[ -z $BRANCH || -n $REPO ]] || die_usage "--branch needs --repo"
export DRY_RUN=${DRY_RUN:-0}
scope_flags

COMMON=(--name "$NAME" --zone "$ZONE")
if [[ -n $PROJECT ]]; then COMMON+=(--project "$PROJECT"); fi
if ((QUEUED)); then CREATE_OPTS+=(--queued); fi
CREATE_ARGS=("${COMMON[@]}" --accelerator-type "$TYPE" ${CREATE_OPTS[@]+"${CREATE_OPTS[@]}"})
DELETE_ARGS=("${COMMON[@]}")
if ((QUEUED)); then DELETE_ARGS+=(--queued); fi
RUN_ARGS=("${COMMON[@]}" --workdir "$WORKDIR" --kill-stale ${RUN_OPTS[@]+"${RUN_OPTS[@]}"} -- "$@")
# create.sh and run.sh check their own arguments: a dry pass of each catches a mistake (exit 2)
# now rather than after the first VM is made.
DRY_RUN=1 bash "$LAUNCH_DIR/tpu/create.sh" "${CREATE_ARGS[@]}" >/dev/null
DRY_RUN=1 bash "$LAUNCH_DIR/tpu/run.sh" "${RUN_ARGS[@]}" >/dev/null

if [[ -n $REPO ]]; then
  SETUP_OPTS=(--repo "$REPO")
  if [[ -n $BRANCH ]]; then SETUP_OPTS+=(--branch "$BRANCH"); fi
else
  if is_dry; then tmp=$(mktemp -d -u); else tmp=$(mktemp -d); fi
  trap 'rm -rf "$tmp"' EXIT
  make_tarball "$tmp/$REMOTE_DIR.tar.gz"
  SETUP_OPTS=(--tarball "$tmp/$REMOTE_DIR.tar.gz")
fi

# The VM's state: READY, PREEMPTED, ..., MISSING when there is none. With --queued, the queued
# resource's state decides first (QUEUED_* while it waits for capacity).
vm_state() {
  local qr='' node=''
  if ((QUEUED)); then
    qr=$(run "$GCLOUD" compute tpus queued-resources describe "$NAME" "${SCOPE[@]}" \
      --format='value(state.state)') || qr=''
  fi
  if is_dry || [[ -n ${BABYSIT_FAKE_STATE-} ]]; then
    if is_dry; then run "$GCLOUD" compute tpus tpu-vm describe "$NAME" "${SCOPE[@]}" --format='value(state)'; fi
    echo "${BABYSIT_FAKE_STATE:-READY}"
    return
  fi
  if ((QUEUED)); then
    case $qr in
      '') echo MISSING; return ;;
      ACTIVE) ;;
      ACCEPTED | CREATING | PROVISIONING | WAITING_FOR_RESOURCES | DELETING) echo "QUEUED_$qr"; return ;;
      *) echo "QUEUED_RESOURCE_$qr"; return ;;  # FAILED, SUSPENDED, ...: make a new one.
    esac
  fi
  node=$(run "$GCLOUD" compute tpus tpu-vm describe "$NAME" "${SCOPE[@]}" --format='value(state)') || node=''
  echo "${node:-MISSING}"
}

# Runs one step; exit 2 ends the babysitter (bad input), other failures return non-zero.
step() {
  local rc=0
  bash "$LAUNCH_DIR/tpu/$1" "${@:2}" || rc=$?
  if ((rc == 2)); then
    log "$1 exited 2 (bad input); not retrying"
    exit 2
  fi
  return "$rc"
}

failures=0 state='' need_setup=$((!SKIP_SETUP))
while :; do
  if [[ -z $state ]]; then state=$(vm_state); fi
  log "VM $NAME: $state"
  case $state in
    CREATING | STARTING | RESTARTING | REPAIRING | REIMAGING | STOPPING | DELETING | HIDING | UNHIDING | QUEUED_*)
      if is_dry; then exit 0; fi
      state=''
      sleep "$SLEEP"
      continue ;;
  esac
  rc=0 had_vm=0  # had_vm: a VM existed during this attempt, so losing it explains a failure
  if [[ $state == READY ]]; then
    had_vm=1
  else
    if [[ $state != MISSING ]] || ((QUEUED)); then step delete.sh "${DELETE_ARGS[@]}" || true; fi
    need_setup=1  # A new VM has nothing on it.
    step create.sh "${CREATE_ARGS[@]}" || rc=$?
    if ((rc == 0)); then had_vm=1; fi
  fi
  if ((rc == 0 && need_setup)); then
    step setup.sh "${COMMON[@]}" "${SETUP_OPTS[@]}" || rc=$?
    if ((rc == 0)); then need_setup=0; fi
  fi
  if ((rc == 0)); then step run.sh "${RUN_ARGS[@]}" || rc=$?; fi
  if is_dry; then exit 0; fi
  if ((rc == 0)); then
    log "the sweep is complete"
    if ((DELETE_WHEN_DONE)); then step delete.sh "${DELETE_ARGS[@]}"; fi
    exit 0
  fi
  state=$(vm_state)
  if ((had_vm)) && [[ $state != READY ]]; then
    log "attempt failed (exit code $rc) and the VM is now $state: preempted; not counted as a failure"
  else
    failures=$((failures + 1))
    log "attempt failed with exit code $rc ($failures failed so far, --max-retries $MAX_RETRIES)"
    if ((MAX_RETRIES >= 0 && failures > MAX_RETRIES)); then
      log "giving up"
      exit "$rc"
    fi
  fi
  sleep "$SLEEP"
done
