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
import optax  # noqa: E402

import jaxtransfer as jt  # noqa: E402
from jaxtransfer import data as data_lib  # noqa: E402
from jaxtransfer import optim  # noqa: E402
from jaxtransfer import program as program_lib  # noqa: E402

GLUE = ROOT.parent / 'shared' / 'glue'


def make_step(program, lr: float, total_steps: int, trials: int):
  """The engine's training step: `trials` trials vmapped (per-trial params, optimizer state, batch
  and dropout key; frozen params shared, as the engine broadcasts them)."""
  cfg = optim.OptimConfig()

  def tx_of(train, arrays):
    labels = jax.tree_util.tree_map_with_path(
        lambda p, _: 'decay' if program.decays(tuple(k.key for k in p)) else 'no_decay', train)
    mult = program.lr_multipliers(train, arrays)
    return optim.make_tx(cfg, lr, total_steps, labels, mult), mult

  def init_one(pretrained, arrays, rng):
    train, frozen = program.init(pretrained, arrays, rng)
    return train, frozen, tx_of(train, arrays)[0].init(train)

  def step_one(train, opt, frozen, arrays, batch, rng):
    tx, mult = tx_of(train, arrays)
    w = jnp.ones(batch['labels'].shape, jnp.float32)
    loss, grads = jax.value_and_grad(program.loss)(train, frozen, batch, w, arrays, rng)
    grads = optim.mask_grads(grads, mult)
    updates, opt = tx.update(grads, opt, train)
    return optax.apply_updates(train, updates), opt, loss

  def init(pretrained, arrays, rngs):
    train, frozen, opt = jax.vmap(init_one, in_axes=(None, None, 0))(pretrained, arrays, rngs)
    return train, jax.tree.map(lambda a: a[0], frozen), opt

  step = jax.vmap(step_one, in_axes=(0, 0, None, None, 0, 0))
  return jax.jit(init), jax.jit(step, donate_argnums=(0, 1))


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
    init, step = make_step(program, 1e-4, 1000, args.trials)
    tr, fr, opt = init(pre.params, arrays, jax.random.split(jax.random.key(0), args.trials))
    rng = jax.random.split(jax.random.key(1), args.trials)
    t0 = time.time()
    compiled = step.lower(tr, opt, fr, arrays, batches[0], rng).compile()
    compile_s = time.time() - t0
    n_train = sum(x.size for x in jax.tree.leaves(tr)) // args.trials
    n_opt = sum(x.size for x in jax.tree.leaves(opt) if x.ndim > 1) // args.trials
    runs[name] = dict(program=program, step=compiled, state=[tr, opt], frozen=fr, arrays=arrays,
                      rng=rng, times=[])
    print(f'  {name:>6}: compiled in {compile_s:.1f} s; trainable params {n_train:,}, optimizer '
          f'moments {n_opt:,} per trial; train_flops_fraction {program.train_flops_fraction():.3f}')

  def run(r, batch_list):
    tr, opt = r['state']
    for b in batch_list:
      tr, opt, loss = r['step'](tr, opt, r['frozen'], r['arrays'], b, r['rng'])
    jax.block_until_ready((tr, opt, loss))
    r['state'] = [tr, opt]

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
