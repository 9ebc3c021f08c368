#!/usr/bin/env bash
# Deletes a TPU VM (or its queued resource, and with it the VM).
set -euo pipefail
# shellcheck source=../lib.sh source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"

usage() {
  cat <<EOF
Usage: $PROG --name NAME --zone ZONE [--queued] [--project PROJECT] [--dry-run]

Deletes the TPU VM NAME without asking. With --queued, deletes the queued resource NAME with
--force, which also deletes its VM. Results written to gs:// are untouched.

  --name NAME          TPU VM / queued resource name
  --zone ZONE          its zone
  --queued             it was created with create.sh --queued
  --project PROJECT    GCP project (default: gcloud's configured project)
  --dry-run            print the gcloud command (prefixed with '+ ') without running it; also DRY_RUN=1
  -h, --help           this help
EOF
}

NAME='' ZONE='' PROJECT='' QUEUED=0
while (($#)); do
  case $1 in
    --*=*) set -- "${1%%=*}" "${1#*=}" "${@:2}"; continue ;;
    -h | --help) usage; exit 0 ;;
    --name) need_value "$1" "${2-}"; NAME=$2; shift ;;
    --zone) need_value "$1" "${2-}"; ZONE=$2; shift ;;
    --project) need_value "$1" "${2-}"; PROJECT=$2; shift ;;
    --queued) QUEUED=1 ;;
    --dry-run) DRY_RUN=1 ;;
    -*) die_usage "unknown option $1" ;;
    *) die_usage "unexpected argument '$1'" ;;
  esac
  shift
done
need_set --name "$NAME"
need_set --zone "$ZONE"
check_tpu_names
scope_flags

if ((QUEUED)); then
  run "$GCLOUD" compute tpus queued-resources delete "$NAME" "${SCOPE[@]}" --force --quiet
else
  run "$GCLOUD" compute tpus tpu-vm delete "$NAME" "${SCOPE[@]}" --quiet
fi
