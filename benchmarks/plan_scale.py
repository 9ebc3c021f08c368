"""Host time to plan a sweep at MNLI scale: each trial's batches and their packing.

  python benchmarks/plan_scale.py                      # 16 trials, 392,702 examples, batch 32, 3 epochs
  python benchmarks/plan_scale.py --tokenize           # also time tokenizing and caching SST-2

What the engine does for a group before its first step (`Engine.group_arrays` and
`packing.Planner.group`), on real token lengths: QNLI's sentence pairs (its dev set, MiniLM
tokenizer, length 128) tiled to MNLI's 392,702 examples (neither MNLI nor QNLI's training set
is in ../shared/glue). `--tokenize` times reading, tokenizing and caching SST-2's 67,349
training sentences, and 392,702 sentence pairs (QNLI's dev pairs tiled to MNLI's size), cold and
read back from the cache. Side by
side, on the first trial's first `--loop_steps` steps, the per-step `packing.plan_step` loop the
planner used before and the vectorized `packing.plan`, with the ratio. The last line is
`planned T trials x S steps in X s`.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import sys
import tempfile
import time

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _tile_qnli(data_dir: str, out: str, n: int) -> None:
  """A GLUE-format QNLI folder whose train.tsv repeats QNLI's dev pairs to n rows."""
  lines = (pathlib.Path(data_dir) / 'QNLI' / 'dev.tsv').read_text().splitlines()
  header, rows = lines[0], lines[1:]
  os.makedirs(os.path.join(out, 'QNLI'))
  with open(os.path.join(out, 'QNLI', 'train.tsv'), 'w') as f:
    f.write(header + '\n')
    for i in range(n):
      f.write(f'{i}\t' + rows[i % len(rows)].split('\t', 1)[1] + '\n')


def time_tokenizing(load, data_dir: str, task: str, what: str) -> None:
  """Reads, tokenizes and caches a task's training set cold, then reads it back from the cache."""
  with tempfile.TemporaryDirectory() as fresh:
    t0 = time.time()
    td = load(task, 'train', fresh, data_dir)
    cold = time.time() - t0
    t0 = time.time()
    load(task, 'train', fresh, data_dir)
    warm = time.time() - t0
  n = len(td.train.labels)
  print(f'read, tokenized and cached {n} {what} in {cold:.1f} s ({n / cold:.0f}/s); '
        f'read back from the cache in {warm:.2f} s')


def pair_lengths(data_dir: str, cache_dir: str, tokenize: bool) -> np.ndarray:
  """QNLI's dev token lengths through the project's own reader, tokenizer and cache."""
  import jaxtransfer as jt
  from jaxtransfer.data import glue as data_lib
  pre = jt.load_pretrained('minilm-l6')
  load = lambda task, split, cache, root=data_dir: data_lib.load_task_data(
      task, root, pre.tokenizer, pre.path, 128, splits=(split,), cache_dir=cache)
  if tokenize:
    time_tokenizing(load, data_dir, 'sst2', 'sentences')
    with tempfile.TemporaryDirectory() as tiled:
      _tile_qnli(data_dir, tiled, 392_702)  # MNLI's training set size, as pairs
      time_tokenizing(load, tiled, 'qnli', 'sentence pairs (QNLI dev tiled)')
  dev = load('qnli', 'dev', cache_dir).dev
  return np.asarray(next(iter(dev.values())).attention_mask.sum(1))


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument('--trials', type=int, default=16)
  p.add_argument('--examples', type=int, default=392_702)  # MNLI's training set
  p.add_argument('--batch', type=int, default=32)
  p.add_argument('--epochs', type=int, default=3)
  p.add_argument('--multiple', type=int, default=16)  # configs/base.py pad_to_multiple_of
  p.add_argument('--data_dir', default=str(ROOT.parent / 'shared' / 'glue'))
  p.add_argument('--cache_dir', default=os.path.expanduser('~/.cache/jaxtransfer'))
  p.add_argument('--tokenize', action='store_true')
  p.add_argument('--loop_steps', type=int, default=2000)
  args = p.parse_args(argv)
  from jaxtransfer.core import packing
  from jaxtransfer.engine import trials as trials_lib

  base = pair_lengths(args.data_dir, args.cache_dir, args.tokenize)
  lengths = np.resize(base, args.examples)
  steps = -(-args.examples // args.batch) * args.epochs
  t0 = time.time()
  batches = [trials_lib.trial_batches(seed, args.examples, 0, args.batch, steps)
             for seed in range(1, args.trials + 1)]
  idx, w = np.stack([b[0] for b in batches]), np.stack([b[1] for b in batches])
  t_batches = time.time() - t0
  planner = packing.Planner(lengths, args.batch, args.multiple, on_cpu=False)
  t0 = time.time()
  width, rows, row, col = planner.group(384, steps, idx, w, args.trials)
  t_pack = time.time() - t0

  k = min(args.loop_steps, steps)
  t0 = time.time()
  for s in range(k):
    packing.plan_step(np.minimum(lengths[idx[0, s]], width), w[0, s], width)
  t_loop = time.time() - t0
  t0 = time.time()
  packing.plan(lengths, idx[:1, :k], w[:1, :k], width)
  t_vec = time.time() - t0
  print(f'{k} steps of one trial: plan_step loop {t_loop:.2f} s, vectorized plan {t_vec:.3f} s '
        f'({t_loop / t_vec:.0f}x); the loop would take {t_loop / k * steps * args.trials:.0f} s '
        'for the whole sweep')
  print(f'batches {t_batches:.1f} s, packing {t_pack:.1f} s (width {width}, rows per step '
        f'{sorted(set(rows.tolist()))})')
  print(f'planned {args.trials} trials x {steps} steps in {t_batches + t_pack:.1f} s')


if __name__ == '__main__':
  main()
