# shellcheck shell=bash
# Shared helpers for the launch scripts: quoting, dry runs, argument checks, the code tarball.
# Sourced, never run. Expects the caller to have `set -euo pipefail` and a `usage` function.

LAUNCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$LAUNCH_DIR")
PROG=$(basename "$0")
GCLOUD=${GCLOUD:-gcloud}  # Overridable so that tests can put a fake gcloud in its place.
# shellcheck disable=SC2034  # used by the scripts that source this file
REMOTE_DIR=jaxtransfer    # The project's folder on every TPU worker, relative to $HOME.
# Dry-run lines go to the caller's stdout even from inside $(...), so commands whose output is
# captured (describe) are still shown.
exec 3>&1

is_dry() {
  case ${DRY_RUN:-0} in
    0 | '' | false | no) return 1 ;;
    *) return 0 ;;
  esac
}

# Quotes one word for a POSIX shell exactly as Python's shlex.quote does, so a dry-run line can be
# pasted into a shell or parsed back with shlex.split.
shquote() {
  local LC_ALL=C s=$1
  if [[ -z $s ]]; then
    printf "''"
  elif [[ $s =~ ^[a-zA-Z0-9_@%+=:,./-]+$ ]]; then
    printf '%s' "$s"
  else
    printf "'%s'" "${s//\'/\'\"\'\"\'}"
  fi
}

shjoin() {
  local out='' w
  for w in "$@"; do
    out+="${out:+ }$(shquote "$w")"
  done
  printf '%s' "$out"
}

# Runs a command; first echoes it as `+ cmd` (stderr, or stdout under a dry run, where nothing runs).
run() {
  if is_dry; then
    printf '+ %s\n' "$(shjoin "$@")" >&3
  else
    printf '+ %s\n' "$(shjoin "$@")" >&2
    "$@"
  fi
}

log() { printf '[%s] %s\n' "$PROG" "$*" >&2; }
die() { log "error: $*"; exit 1; }

# Bad command line: message, usage, exit 2 (the project's "bad input" code).
die_usage() {
  printf '%s: error: %s\n\n' "$PROG" "$1" >&2
  usage >&2
  exit 2
}

# `need_value --opt "${2-}"`: the option must be followed by a value that is not another option.
need_value() {
  [[ -n ${2-} && ${2-} != --* ]] || die_usage "$1 needs a value"
}

need_set() {
  local opt=$1 value=${2-}
  [[ -n $value ]] || die_usage "$opt is required"
}

check_int() {  # check_int --opt VALUE [min]
  if ! [[ $2 =~ ^-?[0-9]{1,9}$ ]] || (($2 < ${3:-0})); then
    die_usage "$1 must be an integer >= ${3:-0}, got '$2'"
  fi
}

check_tpu_names() {  # The names gcloud accepts, checked here so a typo fails before anything runs.
  [[ $NAME =~ ^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$ ]] ||
    die_usage "--name '$NAME' is not a valid TPU name (lowercase letters, digits and '-', starting with a letter)"
  [[ $ZONE =~ ^[a-z]+-[a-z]+[0-9]+-[a-z]$ ]] ||
    die_usage "--zone '$ZONE' does not look like a zone (e.g. us-central2-b)"
}

# gcloud's scope flags, shared by every TPU command.
scope_flags() {
  SCOPE=(--zone="$ZONE")
  if [[ -n ${PROJECT-} ]]; then SCOPE+=(--project="$PROJECT"); fi
}

# Writes a tar.gz of the project as the working tree has it (tracked and untracked files that git
# does not ignore; results/ left out) so uncommitted edits travel too.
make_tarball() {
  local out=$1
  if git -C "$ROOT" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
    if is_dry; then
      printf '+ %s\n' "git -C $(shquote "$ROOT") ls-files -z --cached --others --exclude-standard -- . ':(exclude)results' | tar -czf $(shquote "$out") -C $(shquote "$ROOT") --null -T -" >&3
      return
    fi
    log "packing $ROOT into $out"
    git -C "$ROOT" ls-files -z --cached --others --exclude-standard -- . ':(exclude)results' |
      while IFS= read -r -d '' f; do
        # Tracked files deleted in the working tree are still listed; tar would fail on them.
        if [[ -e $ROOT/$f || -L $ROOT/$f ]]; then printf '%s\0' "$f"; fi
      done |
      tar -czf "$out" -C "$ROOT" --null -T -
  else
    run tar -czf "$out" -C "$ROOT" --exclude=./.git --exclude=./.venv --exclude=./venv \
      --exclude=./results --exclude='__pycache__' .
  fi
}

# The sbatch options both Slurm launchers take (--time, --partition, --account, --sbatch-flag),
# appended to the caller's `cmd` array.
add_sbatch_options() {
  if [[ -n ${TIME-} ]]; then cmd+=(--time="$TIME"); fi
  if [[ -n ${PARTITION-} ]]; then cmd+=(--partition="$PARTITION"); fi
  if [[ -n ${ACCOUNT-} ]]; then cmd+=(--account="$ACCOUNT"); fi
  cmd+=(${FLAGS[@]+"${FLAGS[@]}"})
}
