"""Training step time of top-k-of-L vs full fine-tuning (Lee et al.'s freezing), side by side.

  flock /tmp/jaxtransfer-heavy.lock python benchmarks/freeze_step_time.py \
      [--model=minilm-l6] [--k=2] [--batch=16] [--length=64] [--steps=10] [--rounds=5]

Builds the engine's training step (loss -> grads of the trainable part only -> mask -> clip ->
AdamW -> update) for each setting, on real SST-2 batches (../shared/glue, else the demo set),
compiles both, runs warm-up steps, then alternates timed rounds of `steps` steps between the
settings (so a load change on a shared machine hits both) and prints the median time per step,
the speed-up and the speed-up `Program.train_flops_fraction` predicts. (XLA's cost_analysis is no
use here: it counts a scan body once, not once per block.)
"""

from __future__ import annotations

import argparse
import os
import pathlib
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import jaxtransfer as jt  # noqa: E402
from jaxtransfer.data import glue as data_lib  # noqa: E402
from jaxtransfer.core import optim  # noqa: E402
from jaxtransfer.core import program as program_lib  # noqa: E402
from jaxtransfer.core import step as step_lib  # noqa: E402

GLUE = ROOT.parent / 'shared' / 'glue'


def make_step(program, lr: float, total_steps: int):
  """The engine's own step (step.py), trials vmapped: per-trial params, optimizer state, batch and
  seed; frozen params shared, as the engine broadcasts them."""
  step = step_lib.Step(program, optim.OptimConfig(), total_steps)
  with_seed = lambda arrays, seed: {**arrays, 'seed': seed, 'lr': jnp.float32(lr)}

  def init(pretrained, arrays, seeds):
    states, frozen = jax.vmap(
        lambda s: step_lib.init_state(step, pretrained, with_seed(arrays, s)))(seeds)
    return states, jax.tree.map(lambda a: a[0], frozen)

  def one(state, frozen, arrays, batch, seed, index):
    w = jnp.ones(batch['labels'].shape, jnp.float32)
    return step_lib.train_step(step, state, frozen, batch, w, with_seed(arrays, seed), index)[0]

  vmapped = jax.vmap(one, in_axes=(0, None, None, 0, 0, None))
  return jax.jit(init), jax.jit(vmapped, donate_argnums=(0,))


def main():
  p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  p.add_argument('--model', default='minilm-l6')
  p.add_argument('--k', type=int, default=2, help='trainable top blocks of the frozen setting')
  p.add_argument('--batch', type=int, default=16)
  p.add_argument('--length', type=int, default=64)
  p.add_argument('--steps', type=int, default=10, help='steps per timed round')
  p.add_argument('--rounds', type=int, default=5)
  p.add_argument('--warmup', type=int, default=3)
  p.add_argument('--trials', type=int, default=1, help='trials vmapped in one step, as the engine')
  args = p.parse_args()

  pre = jt.load_pretrained(args.model)
  L = pre.config.num_layers
  data_dir = str(GLUE) if GLUE.is_dir() else 'demo'
  train = data_lib.load_task_data('sst2', data_dir, pre.tokenizer, pre.path, args.length,
                                  splits=('train',)).train
  rs = np.random.RandomState(0)
  n_batches = args.warmup + args.steps
  batches = []
  for _ in range(n_batches):
    idx = np.stack([rs.choice(len(train), args.batch, replace=False) for _ in range(args.trials)])
    batches.append({k: jnp.asarray(v[idx]) for k, v in train.as_dict().items()})
  real = np.mean([b['attention_mask'].sum(-1).max() for b in batches])
  print(f'{args.model}: L={L}, batch {args.batch} x length {args.length} (SST-2 from {data_dir}; '
        f'longest real row per batch {real:.0f} tokens on average), {args.trials} trial(s) per '
        f'step, {jax.device_count()} {jax.devices()[0].platform} device(s)')

  settings = {'full': dict(frozen_blocks=0, train_embeddings=True),
              f'top-{args.k}': dict(frozen_blocks=L - args.k, train_embeddings=False)}
  runs = {}
  for name, kw in settings.items():
    program = program_lib.Program(encoder=pre.config, num_labels=2, num_blocks=L,
                                  head='pooler' if pre.config.has_pooler else 'mlp', **kw)
    arrays = {k: jnp.asarray(v) for k, v in program.defaults().items()}
    init, step = make_step(program, 1e-4, 1000)
    seeds = jnp.arange(1, args.trials + 1, dtype=jnp.int32)
    state, fr = init(pre.params, arrays, seeds)
    t0 = time.time()
    compiled = step.lower(state, fr, arrays, batches[0], seeds, 0).compile()
    compile_s = time.time() - t0
    n_train = sum(x.size for x in jax.tree.leaves(state.train)) // args.trials
    n_opt = sum(x.size for x in jax.tree.leaves(state.opt) if x.ndim > 1) // args.trials
    runs[name] = dict(program=program, step=compiled, state=state, frozen=fr, arrays=arrays,
                      seeds=seeds, times=[])
    print(f'  {name:>6}: compiled in {compile_s:.1f} s; trainable params {n_train:,}, optimizer '
          f'moments {n_opt:,} per trial; train_flops_fraction {program.train_flops_fraction():.3f}')

  def run(r, batch_list):
    state = r['state']
    for i, b in enumerate(batch_list):
      state = r['step'](state, r['frozen'], r['arrays'], b, r['seeds'], i)
    r['state'] = jax.block_until_ready(state)

  for r in runs.values():
    run(r, batches[:args.warmup])
  timed = batches[args.warmup:]
  for _ in range(args.rounds):
    for r in runs.values():
      t0 = time.perf_counter()
      run(r, timed)
      r['times'].append((time.perf_counter() - t0) / len(timed))

  (a, ra), (b, rb) = runs.items()
  ta, tb = np.median(ra['times']), np.median(rb['times'])
  print(f'median step time ({args.trials} trial(s)) over {args.rounds} rounds x {args.steps} '
        'steps:')
  for name, r in runs.items():
    print(f'  {name:>6}: {1e3 * np.median(r["times"]):.1f} ms/step '
          f'(rounds: {", ".join(f"{1e3 * t:.0f}" for t in r["times"])} ms)')
  print(f'speed-up {a} / {b}: {ta / tb:.2f}x per step (FLOP count predicts '
        f'{ra["program"].train_flops_fraction() / rb["program"].train_flops_fraction():.2f}x)')


if __name__ == '__main__':
  os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
  main()
