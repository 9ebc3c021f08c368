"""The engine on real data, side by side: a seed alone vs the same seed vmapped with others.

  python benchmarks/engine_real_data.py [--data_dir=../shared/glue] [--kill]

SST-2 with 1,000 training examples, the packaged MiniLM, lr 1e-4, 150 steps of batch 16, length 64
(HF PyTorch gets 0.81 dev accuracy there). Prints each trial's dev accuracy in both runs and their
difference; with --kill also runs the sweep as a subprocess, kills it with SIGKILL after its first
checkpoint, re-runs it, and compares the records with the uninterrupted sweep.
"""

import argparse
import json
import os
import pathlib
import signal
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
COMMON = ['--config=configs/finetune.py', '--config.model=minilm-l6', '--config.task=sst2',
          '--config.train_sizes=(1000,)', '--config.learning_rate=1e-4',
          '--config.num_train_steps=150', '--config.batch_size=16', '--config.max_seq_length=64',
          '--config.log_every=25']


def run(workdir, seeds, data_dir, extra=()):
  t = time.time()
  proc = subprocess.run([sys.executable, '-m', 'jaxtransfer.main', *COMMON, f'--workdir={workdir}',
                         f'--config.data_dir={data_dir}', f'--config.seeds={seeds}', *extra],
                        cwd=ROOT, capture_output=True, text=True)
  if proc.returncode:
    sys.exit(proc.stderr[-3000:])
  return records(workdir), time.time() - t


def records(workdir):
  path = pathlib.Path(workdir) / 'trials.jsonl'
  return {r['trial_id']: r for r in map(json.loads, path.read_text().splitlines())}


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--data_dir', default=str(ROOT.parent / 'shared' / 'glue'))
  parser.add_argument('--kill', action='store_true', help='also check kill -9 + resume')
  args = parser.parse_args()
  tmp = pathlib.Path(tempfile.mkdtemp(prefix='jt-engine-'))
  many, t_many = run(tmp / 'vmapped', '(1,2,3)', args.data_dir)
  alone, t_alone = run(tmp / 'alone', '(2,)', args.data_dir)
  print(f'{"trial":<14} {"vmapped x3":>11} {"alone":>8}')
  for tid, rec in sorted(many.items()):
    a = alone.get(tid, {}).get('metrics', {}).get('accuracy')
    print(f'{tid:<14} {rec["metrics"]["accuracy"]:>11.4f} {"-" if a is None else f"{a:.4f}":>8}')
  tid = next(iter(alone))
  diff = abs(alone[tid]['metrics']['accuracy'] - many[tid]['metrics']['accuracy'])
  mean = sum(r['metrics']['accuracy'] for r in many.values()) / len(many)
  print(f'mean dev accuracy (3 seeds): {mean:.4f}; |alone - vmapped| for {tid}: {diff:.4f}')
  print(f'wall: 3 trials vmapped {t_many:.0f} s, 1 trial alone {t_alone:.0f} s '
        f'(ratio per trial {t_alone / (t_many / 3):.2f}x)')
  if not args.kill:
    return
  work = tmp / 'killed'
  extra = ['--config.checkpoint_every=50']
  cmd = [sys.executable, '-m', 'jaxtransfer.main', *COMMON, f'--workdir={work}',
         f'--config.data_dir={args.data_dir}', '--config.seeds=(1,2,3)', *extra]
  proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  while not [p for p in (work / 'checkpoints').glob('g*/*') if p.name.isdigit()]:
    time.sleep(0.1)
  time.sleep(2.0)  # kill somewhere after the first checkpoint, mid-chunk
  os.kill(proc.pid, signal.SIGKILL)
  proc.wait()
  resumed, _ = run(work, '(1,2,3)', args.data_dir, extra)
  lines = (work / 'trials.jsonl').read_text().splitlines()
  same = all(resumed[t]['metrics'] == many[t]['metrics'] for t in many)
  print(f'kill -9 after the first checkpoint, then re-run: {len(lines)} lines for {len(many)} '
        f'trials; metrics identical to the uninterrupted sweep: {same}')


if __name__ == '__main__':
  main()
