"""Every config's :demo at tiny sizes, per-trial metrics in one JSON; `--compare A B` diffs two.

A refactoring check: run it before and after a change that must not change results, then

    python benchmarks/tiny_sweep.py --out /tmp/before.json   # on the old tree
    python benchmarks/tiny_sweep.py --out /tmp/after.json    # on the new tree
    python benchmarks/tiny_sweep.py --compare /tmp/before.json /tmp/after.json

The last line reads `max |diff| X over N metrics of T trials in C configs` (or names what differs).
"""

import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
import time

CONFIGS = ('finetune', 'reinit', 'block_reinit', 'permute', 'probe', 'freeze', 'variability',
           'select', 'closeness', 'sparsity')
TINY = ('--config.num_train_steps=4', '--config.seeds=1', '--config.eval_max_examples=32',
        '--config.log_every=2')
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_config(name: str, root: str) -> dict:
  workdir = os.path.join(root, name)
  cmd = [sys.executable, '-m', 'jaxtransfer.main', f'--config=configs/{name}.py:demo',
         f'--workdir={workdir}', *TINY]
  start = time.time()
  proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
  if proc.returncode != 0:
    raise SystemExit(f'{name} exited {proc.returncode}:\n{proc.stderr[-3000:]}')
  out = {}
  path = os.path.join(workdir, 'trials.jsonl')
  if os.path.exists(path):
    with open(path) as f:
      for line in f:
        r = json.loads(line)
        out[r['trial_id']] = {k: v for k, v in r['metrics'].items() if isinstance(v, (int, float))}
  var = os.path.join(workdir, 'variability.csv')
  if os.path.exists(var):
    with open(var) as f:
      for row in csv.DictReader(f):
        out[f'nu-block{row["block"]}'] = {'nu': float(row['nu'])}
  print(f'{name}: {len(out)} trials in {time.time() - start:.0f} s', flush=True)
  return out


def compare(a_path: str, b_path: str) -> None:
  with open(a_path) as f:
    a = json.load(f)
  with open(b_path) as f:
    b = json.load(f)
  worst, n, trials, problems = 0.0, 0, 0, []
  for config in sorted(set(a) | set(b)):
    ta, tb = a.get(config, {}), b.get(config, {})
    if set(ta) != set(tb):
      problems.append(f'{config}: trials differ: {sorted(set(ta) ^ set(tb))}')
    for trial in sorted(set(ta) & set(tb)):
      trials += 1
      ma, mb = ta[trial], tb[trial]
      if set(ma) != set(mb):
        problems.append(f'{config}/{trial}: metrics differ: {sorted(set(ma) ^ set(mb))}')
      for m in sorted(set(ma) & set(mb)):
        n += 1
        d = abs(float(ma[m]) - float(mb[m]))
        if d > 1e-6:
          problems.append(f'{config}/{trial}/{m}: {ma[m]} vs {mb[m]}')
        worst = max(worst, d)
  for p in problems:
    print(p)
  print(f'max |diff| {worst:.3g} over {n} metrics of {trials} trials in {len(set(a) | set(b))} '
        f'configs{"" if not problems else f"; {len(problems)} problems"}')


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--out', help='JSON file for {config: {trial_id: metrics}}')
  parser.add_argument('--configs', default=','.join(CONFIGS))
  parser.add_argument('--compare', nargs=2, metavar=('A', 'B'))
  args = parser.parse_args()
  if args.compare:
    compare(*args.compare)
    return
  results = {}
  with tempfile.TemporaryDirectory() as root:
    for name in args.configs.split(','):
      results[name] = run_config(name, root)
  with open(args.out, 'w') as f:
    json.dump(results, f, indent=1, sort_keys=True)
  print(f'wrote {args.out}: {sum(len(v) for v in results.values())} trials')


if __name__ == '__main__':
  main()
