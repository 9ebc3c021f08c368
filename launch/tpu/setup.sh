#!/usr/bin/env bash
# Copies the project to every worker of a TPU VM and runs worker_setup.sh there.
set -euo pipefail
# shellcheck source=../lib.sh source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"

usage() {
  cat <<EOF
Usage: $PROG --name NAME --zone ZONE [--repo URL [--branch BRANCH] | --tarball FILE] [options]

Puts the project in ~/$REMOTE_DIR on all workers (--worker=all) and runs
launch/tpu/worker_setup.sh there (venv if missing, jax[tpu], the project, MiniLM). Safe to re-run:
the code is replaced, .venv is kept.

Code source (default: a tarball of this working tree, uncommitted edits included, results/ left out):
  --repo URL          git clone URL on the workers instead (they need access to it)
  --branch BRANCH     with --repo: branch or tag (default: the remote's default branch)
  --tarball FILE      send this tarball (made by an earlier call; babysit.sh uses it to keep the
                      code fixed across re-creations)
Required:
  --name NAME         TPU VM name
  --zone ZONE         its zone
Options:
  --project PROJECT   GCP project (default: gcloud's configured project)
  --dry-run           print the commands (prefixed with '+ ') and run none; also DRY_RUN=1
  -h, --help          this help
EOF
}

NAME='' ZONE='' PROJECT='' REPO='' BRANCH='' TARBALL=''
while (($#)); do
  case $1 in
    --*=*) set -- "${1%%=*}" "${1#*=}" "${@:2}"; continue ;;
    -h | --help) usage; exit 0 ;;
    --name) need_value "$1" "${2-}"; NAME=$2; shift ;;
    --zone) need_value "$1" "${2-}"; ZONE=$2; shift ;;
    --project) need_value "$1" "${2-}"; PROJECT=$2; shift ;;
    --repo) need_value "$1" "${2-}"; REPO=$2; shift ;;
    --branch) need_value "$1" "${2-}"; BRANCH=$2; shift ;;
    --tarball) need_value "$1" "${2-}"; TARBALL=$2; shift ;;
    --dry-run) DRY_RUN=1 ;;
    -*) die_usage "unknown option $1" ;;
    *) die_usage "unexpected argument '$1'" ;;
  esac
  shift
done
need_set --name "$NAME"
need_set --zone "$ZONE"
check_tpu_names
[[ -z $REPO || -z $TARBALL ]] || die_usage "--repo and --tarball exclude each other"
[[ -z $BRANCH || -n $REPO ]] || die_usage "--branch needs --repo"
if [[ -n $TARBALL ]] && ! is_dry && [[ ! -f $TARBALL ]]; then
  die_usage "--tarball $TARBALL: no such file"
fi
scope_flags

# shellcheck disable=SC2088  # The workers' shell expands the ~, not this one.
dir="~/$REMOTE_DIR"
worker_setup="bash $dir/launch/tpu/worker_setup.sh"
if [[ -n $REPO ]]; then
  # Update an existing clone in place (keeps .venv); otherwise clone afresh.
  clone=(git clone --depth=1)
  if [[ -n $BRANCH ]]; then clone+=(--branch "$BRANCH"); fi
  remote="if [ -d $dir/.git ]; then git -C $dir fetch --depth=1 origin $(shquote "${BRANCH:-HEAD}")"
  remote+=" && git -C $dir reset --hard FETCH_HEAD; else rm -rf $dir && $(shjoin "${clone[@]}" "$REPO") $dir; fi"
  remote+=" && $worker_setup"
  run "$GCLOUD" compute tpus tpu-vm ssh "$NAME" "${SCOPE[@]}" --worker=all --command="$remote"
else
  if [[ -z $TARBALL ]]; then
    if is_dry; then tmp=$(mktemp -d -u); else tmp=$(mktemp -d); fi  # -u: only a name
    trap 'rm -rf "$tmp"' EXIT
    TARBALL=$tmp/$REMOTE_DIR.tar.gz
    make_tarball "$TARBALL"
  fi
  run "$GCLOUD" compute tpus tpu-vm scp "$TARBALL" "$NAME:$REMOTE_DIR.tar.gz" "${SCOPE[@]}" --worker=all
  # Replace the code but keep .venv, so files deleted here do not linger there.
  remote="mkdir -p $dir && find $dir -mindepth 1 -maxdepth 1 ! -name .venv -exec rm -rf {} +"
  remote+=" && tar -xzf ~/$REMOTE_DIR.tar.gz -C $dir && rm -f ~/$REMOTE_DIR.tar.gz && $worker_setup"
  run "$GCLOUD" compute tpus tpu-vm ssh "$NAME" "${SCOPE[@]}" --worker=all --command="$remote"
fi
