"""The largest trial count T whose vmapped training step fits on one device.

  python benchmarks/max_trials.py --device=gpu --model=bert-base --batch=8 --length=128 \
      --dtype=bfloat16 [--verify]
  flock /tmp/jaxtransfer-heavy.lock python benchmarks/max_trials.py      # CPU: MiniLM, host memory

Compiles the engine's own training program (`Engine.functions(group).train`) for T = 1, 2, 4,
... trials from abstract shapes only, reads XLA's buffer assignment (`compiled.memory_analysis()`:
arguments + outputs - donated aliases + temporaries) and the evaluation program's, and doubles T
until the step no longer fits in `--headroom` of the device's memory limit (GPU: the allocator's
`bytes_limit`; CPU: the engine's share of host memory); then bisects. `--verify` then really runs
two training steps at the T found (GPU), stepping down on an out-of-memory error. Takes the same
model/batch/length/dtype options as throughput.py, whose `--trials=0` calls this.
"""

from __future__ import annotations

import os
import pathlib
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import throughput  # noqa: E402  (shared options, model configs and data)

ROOT = throughput.ROOT


def setup(args):
  """(engine, program, trial factory) for these options, the device chosen by --device."""
  if args.device == 'cpu':
    os.environ['JAX_PLATFORMS'] = 'cpu'
  else:
    os.environ.setdefault('JAX_PLATFORMS', 'cuda')
    os.environ.setdefault('XLA_PYTHON_CLIENT_MEM_FRACTION', '0.92')
  os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
  sys.path.insert(0, str(ROOT))
  import jax
  from absl import logging
  from jaxtransfer.data import glue as data_lib
  from jaxtransfer.engine import engine as engine_lib
  from jaxtransfer.engine import trials as trials_lib
  from jaxtransfer.models import config as model_config
  from jaxtransfer.models import bert
  from jaxtransfer.models import pretrained as pretrained_lib

  logging.set_verbosity(logging.WARNING)
  enc, path = throughput.hf_config(args)
  if path is None:
    config = model_config.EncoderConfig.from_hf(enc)
    # Shapes are all that matter here: abstract params, never materialized.
    params = jax.eval_shape(lambda k: bert.init_params(config, k), jax.random.key(0))
  else:
    pre = pretrained_lib.load_pretrained(path, with_tokenizer=False)
    config, params = pre.config, pre.params
  train, dev = throughput.make_data(args, enc, path)
  program = throughput.make_program(args, config)
  spec = trials_lib.RunSpec(experiment='max_trials', model=args.model,
                            task=data_lib.get_task('sst2'), workdir='/tmp/unused',
                            batch_size=args.batch, learning_rate=args.lr,
                            num_train_steps=args.steps, eval_batch_size=args.eval_batch,
                            pack_sequences=False)  # the bound: every row at the full width
  eng = engine_lib.Engine(spec, params, train, {'': dev})
  size = throughput.trial_train_size(args, len(train['labels']))
  make_trials = lambda t: [trials_lib.Trial(seed=s, train_size=size, setting={}, program=program)
                           for s in range(1, t + 1)]
  return eng, program, make_trials


def program_bytes(eng, program, trials, steps: int) -> dict[str, int]:
  """XLA's peak buffer bytes of the training step and of one evaluation batch for these trials."""
  import jax
  import jax.numpy as jnp
  import numpy as np
  from jaxtransfer.runtime import distributed as dist
  from jaxtransfer.engine import trials as trials_lib

  group = trials_lib.Group(program, steps, trials)
  fns = eng.functions(group)
  arrays_np = eng.group_arrays(group)
  trial_sh, rep = dist.trial_sharding(eng.mesh), dist.replicated(eng.mesh)
  sds = lambda tree, sh: jax.tree.map(
      lambda a: jax.ShapeDtypeStruct(np.shape(a), a.dtype, sharding=sh), tree)
  arrays, pretrained = sds(arrays_np, trial_sh), sds(eng.pretrained, rep)
  data = sds(eng.train_data, rep)
  dev = sds(eng.dev_data[''], rep)
  state = jax.eval_shape(fns.init, pretrained, arrays)
  state = jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=trial_sh), state)
  frozen = sds(jax.eval_shape(fns.shared_frozen, pretrained), rep) if program.shares_frozen else {}

  def peak(compiled):
    m = compiled.memory_analysis()
    return int(m.argument_size_in_bytes + m.output_size_in_bytes - m.alias_size_in_bytes
               + m.temp_size_in_bytes)

  width = int(np.shape(eng.train_data['input_ids'])[1])  # rows at the full width: the worst step
  train_exe, _ = fns.compiled_train(state, frozen, arrays, data, width)
  dev_width = int(np.shape(eng.dev_data['']['input_ids'])[1])
  return {'train': peak(train_exe),
          'eval': peak(fns.predict.lower(state, frozen, arrays, dev, jnp.int32(0),
                                         dev_width).compile())}


def device_limit() -> int:
  import jax
  from jaxtransfer.engine import trials as trials_lib
  stats = jax.local_devices()[0].memory_stats() or {}
  return int(stats.get('bytes_limit') or trials_lib.device_memory_bytes())


def find_max_trials(args, log=print) -> int:
  eng, program, make_trials = setup(args)
  limit = int(args.headroom * device_limit())
  log(f'device memory limit x {args.headroom}: {limit / 2**30:.1f} GiB')
  seen: dict[int, int] = {}

  def fits(t: int) -> bool:
    t0 = time.time()
    b = program_bytes(eng, program, make_trials(t), args.steps)
    seen[t] = max(b.values())
    log(f'  T={t:>4}: train step {b["train"] / 2**30:6.2f} GiB, eval {b["eval"] / 2**30:6.2f} GiB '
        f'({b["train"] / t / 2**20:.0f} MiB/trial; compiled in {time.time() - t0:.0f} s) -> '
        f'{"fits" if seen[t] <= limit else "too big"}')
    return seen[t] <= limit

  if not fits(1):
    raise SystemExit('not even one trial fits')
  lo, hi = 1, None
  t = 2
  while hi is None and t <= args.max:
    if fits(t):
      lo, t = t, 2 * t
    else:
      hi = t
  if hi is None:
    log(f'stopped at --max={args.max}')
  else:
    while hi - lo > max(1, lo // 8):  # within 1/8: a compile costs more than the last few trials
      mid = (lo + hi) // 2
      lo, hi = (mid, hi) if fits(mid) else (lo, mid)
  if args.verify:
    lo = verify(eng, program, make_trials, lo, args, log)
  return lo


def verify(eng, program, make_trials, t: int, args, log) -> int:
  """Runs two real training steps at T trials, stepping down by 1/8 on out-of-memory."""
  import jax
  import jax.numpy as jnp
  from jaxtransfer.runtime import distributed as dist
  from jaxtransfer.engine import trials as trials_lib
  if any(isinstance(a, jax.ShapeDtypeStruct) for a in jax.tree.leaves(eng.pretrained)):
    from jaxtransfer.models import bert
    eng.pretrained = jax.device_get(jax.jit(bert.init_params, static_argnums=0)(
        program.encoder, jax.random.key(0)))
  while t >= 1:
    group = trials_lib.Group(program, args.steps, make_trials(t))
    try:
      fns = eng.functions(group)
      arrays = dist.put(eng.group_arrays(group), dist.trial_sharding(eng.mesh))
      pretrained = eng.on_device('pretrained', lambda: eng.pretrained)
      data = eng.on_device('train', lambda: eng.train_data)
      frozen = fns.shared_frozen(pretrained) if program.shares_frozen else {}
      state = fns.init(pretrained, arrays)
      state = jax.block_until_ready(fns.train(state, frozen, arrays, data, jnp.int32(0),
                                              jnp.int32(2)))
      log(f'  verified: T={t} runs')
      del state
      return t
    except Exception as e:  # XlaRuntimeError RESOURCE_EXHAUSTED
      if 'RESOURCE_EXHAUSTED' not in str(e) and 'out of memory' not in str(e).lower():
        raise
      log(f'  T={t}: out of memory when run; trying fewer')
      t -= max(1, t // 8)
  raise SystemExit('no trial count runs')


def main():
  parser = throughput.make_parser(__doc__)
  parser.add_argument('--verify', action='store_true', help='run two real steps at the T found')
  parser.add_argument('--headroom', type=float, default=0.9, help='fraction of the limit to fill')
  parser.add_argument('--max', type=int, default=512, help='largest T tried')
  args = throughput.parse_args(parser=parser)
  t = find_max_trials(args)
  print(f'MAX_TRIALS={t}  ({args.model}, {args.device}, batch {args.batch}, length {args.length}, '
        f'{args.dtype})')


if __name__ == '__main__':
  main()
