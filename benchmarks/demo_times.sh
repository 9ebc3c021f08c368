#!/usr/bin/env bash
# Wall time and peak resident memory of every :demo preset, as a new user runs them: each one cold,
# with its own empty tokenization and XLA caches and workdir (your ~/.cache is not touched).
#   bash benchmarks/demo_times.sh [demo ...]      # default: all ten
set -euo pipefail
cd "$(dirname "$0")/.."
demos=("$@")
[ ${#demos[@]} -eq 0 ] && demos=(finetune reinit block_reinit permute probe freeze variability \
                                 select closeness sparsity)
for c in "${demos[@]}"; do
  tmp=$(mktemp -d)
  JAXTRANSFER_CACHE=$tmp/cache JAXTRANSFER_XLA_CACHE=$tmp/xla python3 - "$c" "$tmp" <<'PY'
import resource, subprocess, sys, time
c, tmp = sys.argv[1:]
t = time.time()
p = subprocess.run([sys.executable, '-m', 'jaxtransfer.main', f'--config=configs/{c}.py:demo',
                    f'--workdir={tmp}/work'], capture_output=True, text=True)
rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20
print(f'{c:13s} exit {p.returncode}  {time.time() - t:6.1f} s  peak RSS {rss:5.2f} GB', flush=True)
if p.returncode:
  print(p.stderr[-1500:])
PY
  rm -rf "$tmp"
done
