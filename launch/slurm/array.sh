#!/usr/bin/env bash
# Submits launch/slurm/worker.sbatch as a Slurm job array: N independent workers on one workdir.
set -euo pipefail
# shellcheck source=../lib.sh source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"

usage() {
  cat <<EOF
Usage: $PROG --workers N --workdir DIR [options] -- MAIN_ARGS...

Runs (or with --dry-run prints):
  sbatch --job-name=NAME --array=0-(N-1)[%M] --nodes=1 --ntasks=1 --gpus=G [...] --chdir=PROJECT_ROOT \\
    launch/slurm/worker.sbatch --workdir=DIR MAIN_ARGS...
Each array task is one independent worker (README "Scaling out"): it takes its index from
SLURM_ARRAY_TASK_ID and the worker count from SLURM_ARRAY_TASK_COUNT, runs its share of the
sweep's groups and then helps with the rest. A lost task delays only the groups it held: another
worker takes them over once their lease is older than --config.lease_timeout. Submitting the same
command again resumes. Afterwards, rebuild the summary from every worker's records:
  python -m jaxtransfer.main --config=configs/summarize.py:DIR --workdir=DIR

Required:
  --workers N           array size (number of workers)
  --workdir DIR         results and checkpoints, on a filesystem every node sees (or gs://)
Options:
  --gpus G              GPUs per worker (default 1; 0 for CPU-only workers)
  --max-running M       at most M workers at once (sbatch --array=...%M)
  --time T, --partition P, --account A, --job-name NAME (default jaxtransfer)
  --sbatch-flag FLAG    any other sbatch option (repeatable)
  --dry-run             print the sbatch command (prefixed with '+ ') without running it; also DRY_RUN=1
  -h, --help            this help
Everything after -- goes to jaxtransfer.main unchanged.
EOF
}

WORKERS='' GPUS=1 WORKDIR='' MAX='' TIME='' PARTITION='' ACCOUNT='' JOB=jaxtransfer
FLAGS=()
while (($#)); do
  case $1 in
    --config*) die_usage "jaxtransfer.main's flags go after --: ... -- $1" ;;
    --sbatch-flag=*) [[ -n ${1#*=} ]] || die_usage "--sbatch-flag needs a value"; FLAGS+=("${1#*=}") ;;
    --*=*) set -- "${1%%=*}" "${1#*=}" "${@:2}"; continue ;;
    -h | --help) usage; exit 0 ;;
    --workers) need_value "$1" "${2-}"; check_int "$1" "$2" 1; WORKERS=$2; shift ;;
    --gpus) need_value "$1" "${2-}"; check_int "$1" "$2" 0; GPUS=$2; shift ;;
    --max-running) need_value "$1" "${2-}"; check_int "$1" "$2" 1; MAX=$2; shift ;;
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
need_set --workers "$WORKERS"
need_set --workdir "$WORKDIR"
for arg in "$@"; do
  [[ $arg != --workdir* ]] || die_usage "give the workdir as $PROG --workdir, not after --"
  [[ $arg != --config.num_workers* && $arg != --config.worker_index* ]] ||
    die_usage "the array sets the worker count and index; drop $arg"
done
# The job runs in the project root, so a relative workdir is made absolute from where the user stands.
if [[ $WORKDIR != /* && $WORKDIR != *://* ]]; then WORKDIR=$PWD/$WORKDIR; fi

array="0-$((WORKERS - 1))${MAX:+%$MAX}"
cmd=("${SBATCH:-sbatch}" --job-name="$JOB" --array="$array" --nodes=1 --ntasks=1)
if ((GPUS > 0)); then cmd+=(--gpus="$GPUS"); fi
add_sbatch_options
cmd+=(--chdir="$ROOT" "$LAUNCH_DIR/slurm/worker.sbatch" --workdir="$WORKDIR" "$@")
run "${cmd[@]}"
