#!/usr/bin/env bash
# Creates a TPU VM (or a queued resource holding one) for jaxtransfer.
set -euo pipefail
# shellcheck source=../lib.sh source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"

usage() {
  cat <<EOF
Usage: $PROG --name NAME --zone ZONE --accelerator-type TYPE [options] [-- EXTRA_GCLOUD_FLAGS...]

Creates a TPU VM with \`gcloud compute tpus tpu-vm create\`, or with --queued a queued resource
(\`gcloud compute tpus queued-resources create NAME --node-id NAME\`) and waits until it is ACTIVE.

Required:
  --name NAME               TPU VM name (also the queued resource's id)
  --zone ZONE               e.g. us-central2-b (v4), us-east5-a (v5p/v6e), us-west4-a (v5e)
  --accelerator-type TYPE   v4-8, v4-32, v5litepod-8, v5p-8, v6e-8, ...
Options:
  --version VERSION         TPU software version (default tpu-ubuntu2204-base; v5e:
                            v2-alpha-tpuv5-lite, v5p: v2-alpha-tpuv5, v6e: v2-alpha-tpuv6e)
  --spot                    Spot VM (cheaper, can be preempted at any time)
  --preemptible             legacy preemptible VM (not with --queued; use --spot there)
  --queued                  request through queued resources (waits in line for capacity; the
                            way to get pods such as v4-32)
  --no-wait                 with --queued: return once the request is made, do not wait for ACTIVE
  --poll-seconds S          with --queued: how often to check the request's state (default 60)
  --project PROJECT         GCP project (default: gcloud's configured project)
  --dry-run                 print the gcloud commands (prefixed with '+ ') and run none; also DRY_RUN=1
  -h, --help                this help
Everything after -- is appended to the create command (e.g. --network=..., --reserved).
EOF
}

NAME='' ZONE='' TYPE='' VERSION=tpu-ubuntu2204-base PROJECT='' PRICING='' QUEUED=0 WAIT=1 POLL=60
while (($#)); do
  case $1 in
    --*=*) set -- "${1%%=*}" "${1#*=}" "${@:2}"; continue ;;
    -h | --help) usage; exit 0 ;;
    --name) need_value "$1" "${2-}"; NAME=$2; shift ;;
    --zone) need_value "$1" "${2-}"; ZONE=$2; shift ;;
    --accelerator-type) need_value "$1" "${2-}"; TYPE=$2; shift ;;
    --version) need_value "$1" "${2-}"; VERSION=$2; shift ;;
    --project) need_value "$1" "${2-}"; PROJECT=$2; shift ;;
    --poll-seconds) need_value "$1" "${2-}"; check_int "$1" "$2" 1; POLL=$2; shift ;;
    --spot | --preemptible)
      [[ -z $PRICING || $PRICING == "$1" ]] || die_usage "--spot and --preemptible exclude each other"
      PRICING=$1 ;;
    --queued) QUEUED=1 ;;
    --no-wait) WAIT=0 ;;
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
check_tpu_names
[[ $TYPE =~ ^v[0-9][a-z0-9]*-[0-9]+$ ]] ||
  die_usage "--accelerator-type '$TYPE' does not look like a TPU type (e.g. v4-8, v5litepod-16, v6e-8)"
if ((QUEUED)) && [[ $PRICING == --preemptible ]]; then
  die_usage "--preemptible is not offered for queued resources; use --spot"
fi
scope_flags
EXTRA=("$@")

if ((QUEUED)); then
  run "$GCLOUD" compute tpus queued-resources create "$NAME" "${SCOPE[@]}" --node-id="$NAME" \
    --accelerator-type="$TYPE" --runtime-version="$VERSION" ${PRICING:+"$PRICING"} ${EXTRA[@]+"${EXTRA[@]}"}
  ((WAIT)) || exit 0
  # Wait in line until the TPU exists; the request can sit in WAITING_FOR_RESOURCES for hours.
  errors=0
  while :; do
    if ! state=$(run "$GCLOUD" compute tpus queued-resources describe "$NAME" "${SCOPE[@]}" \
      --format='value(state.state)'); then
      # A passing API error must not end hours of waiting in line; five in a row do.
      errors=$((errors + 1))
      ((errors < 5)) || die "could not get the state of queued resource $NAME"
      sleep "$POLL"
      continue
    fi
    errors=0
    if is_dry; then exit 0; fi
    case $state in
      ACTIVE) log "queued resource $NAME is ACTIVE"; exit 0 ;;
      ACCEPTED | CREATING | PROVISIONING | WAITING_FOR_RESOURCES)
        log "queued resource $NAME is $state; checking again in ${POLL}s"
        sleep "$POLL" ;;
      *) die "queued resource $NAME is in state '${state:-unknown}'; see \`$GCLOUD compute tpus queued-resources describe $NAME --zone=$ZONE\`" ;;
    esac
  done
else
  run "$GCLOUD" compute tpus tpu-vm create "$NAME" "${SCOPE[@]}" \
    --accelerator-type="$TYPE" --version="$VERSION" ${PRICING:+"$PRICING"} ${EXTRA[@]+"${EXTRA[@]}"}
fi
