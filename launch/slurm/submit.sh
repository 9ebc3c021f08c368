#!/usr/bin/env bash
# Submits launch/slurm/jaxtransfer.sbatch with the node and GPU counts given here.
set -euo pipefail
# shellcheck source=../lib.sh source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"

usage() {
  cat <<EOF
Usage: $PROG --nodes N --gpus-per-node G --workdir DIR [options] -- MAIN_ARGS...

Runs (or with --dry-run prints):
  sbatch --job-name=NAME --nodes=N --ntasks-per-node=1 --gpus-per-node=G [...] --chdir=PROJECT_ROOT \\
    launch/slurm/jaxtransfer.sbatch --workdir=DIR MAIN_ARGS...
One process per node drives all its GPUs; with N > 1 the processes join through
jax.distributed (see jaxtransfer.sbatch). Submit with the project's venv active: the job
inherits this environment. Submitting the same command again resumes the sweep in DIR.

Required:
  --nodes N             number of nodes
  --gpus-per-node G     GPUs per node
  --workdir DIR         results and checkpoints; on a filesystem all nodes see (a relative path is
                        taken from the current directory)
Options:
  --time T              wall-clock limit (sbatch --time, e.g. 24:00:00)
  --partition P, --account A, --job-name NAME (default jaxtransfer)
  --sbatch-flag FLAG    any other sbatch option, e.g. --sbatch-flag=--qos=high (repeatable)
  --dry-run             print the sbatch command (prefixed with '+ ') without running it; also DRY_RUN=1
  -h, --help            this help
Everything after -- goes to jaxtransfer.main unchanged.
EOF
}

NODES='' GPUS='' WORKDIR='' TIME='' PARTITION='' ACCOUNT='' JOB=jaxtransfer
FLAGS=()
while (($#)); do
  case $1 in
    --config*) die_usage "jaxtransfer.main's flags go after --: ... -- $1" ;;
    --sbatch-flag=*) [[ -n ${1#*=} ]] || die_usage "--sbatch-flag needs a value"; FLAGS+=("${1#*=}") ;;
    --*=*) set -- "${1%%=*}" "${1#*=}" "${@:2}"; continue ;;
    -h | --help) usage; exit 0 ;;
    --nodes) need_value "$1" "${2-}"; check_int "$1" "$2" 1; NODES=$2; shift ;;
    --gpus-per-node) need_value "$1" "${2-}"; check_int "$1" "$2" 1; GPUS=$2; shift ;;
    --workdir) need_value "$1" "${2-}"; WORKDIR=$2; shift ;;
    --time) need_value "$1" "${2-}"; TIME=$2; shift ;;
    --partition) need_value "$1" "${2-}"; PARTITION=$2; shift ;;
    --account) need_value "$1" "${2-}"; ACCOUNT=$2; shift ;;
    --job-name) need_value "$1" "${2-}"; JOB=$2; shift ;;
    --sbatch-flag) [[ -n ${2-} ]] || die_usage "--sbatch-flag needs a value"; FLAGS+=("$2"); shift ;;
    --dry-run) DRY_RUN=1 ;;
    --) shift; break ;;
    -*) die_usage "unknown option $1" ;;
    *) die_usage "unexpected argument '$1'" ;;
  esac
  shift
done
need_set --nodes "$NODES"
need_set --gpus-per-node "$GPUS"
need_set --workdir "$WORKDIR"
for arg in "$@"; do
  [[ $arg != --workdir* ]] || die_usage "give the workdir as $PROG --workdir, not after --"
done
# The job runs in the project root (configs/... resolve there), so a relative workdir is made
# absolute from where the user stands.
if [[ $WORKDIR != /* && $WORKDIR != *://* ]]; then WORKDIR=$PWD/$WORKDIR; fi

cmd=("${SBATCH:-sbatch}" --job-name="$JOB" --nodes="$NODES" --ntasks-per-node=1 --gpus-per-node="$GPUS")
add_sbatch_options
cmd+=(--chdir="$ROOT" "$LAUNCH_DIR/slurm/jaxtransfer.sbatch" --workdir="$WORKDIR" "$@")
run "${cmd[@]}"
