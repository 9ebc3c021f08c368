"""Does bf16 compute (fp32 master weights) fine-tune as well as fp32? Real SST-2, side by side.

  flock /tmp/jaxtransfer-heavy.lock python benchmarks/bf16_accuracy.py \
      [--model=minilm-l6] [--train_size=1000] [--steps=150] [--batch=16] [--length=64] \
      [--lr=1e-4] [--seeds=1,2,3]

Runs the same trials (seed -> training subset, data order, dropout, head init) twice through the
engine, once with `Program(dtype='float32')` and once with `dtype='bfloat16'` (two compiled
groups), then prints the SST-2 dev accuracy of every seed under both and the paired difference.
The seed fixes everything except the compute precision, so the per-seed difference is the effect
of bf16 alone (plus the chaos of training, which the spread across seeds shows).
"""

from __future__ import annotations

import argparse
import os
import pathlib
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
GLUE = ROOT.parent / 'shared' / 'glue'


def main():
  p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  p.add_argument('--model', default='minilm-l6')
  p.add_argument('--train_size', type=int, default=1000)
  p.add_argument('--steps', type=int, default=150)
  p.add_argument('--batch', type=int, default=16)
  p.add_argument('--length', type=int, default=64)
  p.add_argument('--lr', type=float, default=1e-4)
  p.add_argument('--seeds', default='1,2,3')
  p.add_argument('--workdir', default='', help='keep trials.jsonl here (default: a temp dir)')
  args = p.parse_args()
  os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

  import numpy as np
  from absl import logging
  from scipy import stats
  import jaxtransfer as jt
  from jaxtransfer.data import glue as data_lib
  from jaxtransfer.engine import engine as engine_lib
  from jaxtransfer.engine import trials as trials_lib
  from jaxtransfer.core import program as program_lib

  logging.set_verbosity(logging.WARNING)
  if not GLUE.is_dir():
    raise SystemExit(f'needs the real GLUE data at {GLUE}')
  pre = jt.load_pretrained(args.model)
  data = data_lib.load_task_data('sst2', str(GLUE), pre.tokenizer, pre.path, args.length)
  seeds = [int(s) for s in args.seeds.split(',')]
  dtypes = ('float32', 'bfloat16')
  trials = []
  for dtype in dtypes:
    program = program_lib.Program(encoder=pre.config, num_labels=2, num_blocks=pre.num_layers,
                                  head='pooler' if pre.config.has_pooler else 'mlp', dtype=dtype)
    trials += [trials_lib.Trial(seed, args.train_size, {'dtype': dtype}, program) for seed in seeds]
  with tempfile.TemporaryDirectory() as tmp:
    workdir = args.workdir or tmp
    spec = trials_lib.RunSpec(experiment='bf16_accuracy', model=args.model, task=data.task,
                              workdir=workdir, batch_size=args.batch, learning_rate=args.lr,
                              num_train_steps=args.steps, checkpoint_every=0,
                              trials_per_program=len(seeds))
    t0 = time.time()
    records = engine_lib.Engine(spec, pre.params, data.train.as_dict(),
                                {k: v.as_dict() for k, v in data.dev.items()}).run(trials)
    wall = time.time() - t0
  acc = {(r['setting']['dtype'], r['seed']): r['metrics'].get('accuracy', np.nan) for r in records}
  info = {r['setting']['dtype']: r for r in records}
  print(f'\nSST-2 dev accuracy ({len(data.dev[""])} examples), {args.model}, {args.train_size} '
        f'training examples, {args.steps} steps, batch {args.batch}, length {args.length}, '
        f'lr {args.lr} ({wall:.0f} s)')
  print(f'  {"seed":>6}{"fp32":>10}{"bf16":>10}{"bf16-fp32":>12}')
  diffs = []
  for s in seeds:
    a, b = acc[('float32', s)], acc[('bfloat16', s)]
    diffs.append(b - a)
    print(f'  {s:>6}{a:>10.4f}{b:>10.4f}{b - a:>+12.4f}')
  a = np.array([acc[('float32', s)] for s in seeds])
  b = np.array([acc[('bfloat16', s)] for s in seeds])
  d = np.array(diffs)
  half = stats.t.ppf(0.975, len(d) - 1) * d.std(ddof=1) / np.sqrt(len(d)) if len(d) > 1 else np.nan
  print(f'  {"mean":>6}{a.mean():>10.4f}{b.mean():>10.4f}{d.mean():>+12.4f}  (95% CI of the paired '
        f'difference {d.mean() - half:+.4f}..{d.mean() + half:+.4f}; seed-to-seed std fp32 '
        f'{a.std(ddof=1):.4f}, bf16 {b.std(ddof=1):.4f})')
  for dtype in dtypes:
    r = info[dtype]
    print(f'  {dtype}: group wall {r["wall_s"]:.0f} s (compile {r["compile_s"]:.0f} s), final train '
          f'loss mean {np.mean([x["train_loss"] for x in records if x["setting"]["dtype"] == dtype]):.4f}')


if __name__ == '__main__':
  main()
