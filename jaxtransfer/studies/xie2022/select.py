"""Variability-guided classifier placement with partial fine-tuning, adapters, LoRA or BitFit
(Xie et al. 2022; Hu et al. 2021; Ben Zaken et al. 2022).

The head reads the output of block h (`head_block`, `auto` = the block of lowest ν); blocks above h
are never computed. The m blocks ending at h are tuned (fine-tuned, Houlsby adapters + their
LayerNorms, LoRA factors, or their biases); embeddings and blocks below are frozen and not
differentiated. Baselines in the same sweep: the top m blocks with the head on top, and every
method on all blocks. Every trial reports what it trains and stores (`analysis/storage.py`).
"""

from __future__ import annotations

import json

import numpy as np
from absl import logging

from jaxtransfer.data import glue as data_lib
from jaxtransfer.engine import trials as trials_lib
from jaxtransfer.engine import batching
from jaxtransfer.core import interventions as iv
from jaxtransfer.core import optim
from jaxtransfer.core import storage
from jaxtransfer.engine import timing
from jaxtransfer.studies.xie2022 import analysis as xie
from jaxtransfer.errors import UserError, check_choices
from jaxtransfer.models.blocks import ADAPTER_STYLES
from jaxtransfer.studies import base
from jaxtransfer.studies.xie2022 import variability

METHODS = ('finetune', 'adapter', 'lora', 'bitfit')


def choose_head_block(nu: np.ndarray, tolerance: float = 0.0) -> int:
  """The lowest block whose ν is within (1 + tolerance) × the smallest block ν (0: the argmin).

  `nu` is (L+1,) with nu[0] the embedding output, which is never a head position.
  """
  blocks = np.asarray(nu[1:], float)
  best = float(np.min(blocks))
  return int(np.flatnonzero(blocks <= best * (1.0 + tolerance))[0])


def parse_head_block(value, num_layers: int) -> int | None:
  """None for 'auto', else the block index (checked)."""
  text = str(value).strip().lower()
  if text == 'auto':
    return None
  try:
    h = int(text)
  except ValueError:
    raise UserError(f"head_block={value!r} must be 'auto' or a block index between 0 and "
                    f"{num_layers - 1} (several comma-separated, or 'all', sweep the head's "
                    'position). Set --config.head_block.') from None
  iv.check_block_index('head_block', h, 0, num_layers - 1, num_layers)
  return h


def parse_head_blocks(value, num_layers: int) -> list[int] | None:
  """None for 'auto'; else the head positions swept: one block index, several comma-separated
  ('0,2,5') or 'all' (every block 0..L-1)."""
  text = str(value).strip().lower()
  if text == 'all':
    return list(range(num_layers))
  parts = [p for p in text.strip('()[]').split(',') if p.strip()]
  if len(parts) == 1 and parts[0].strip() == 'auto':
    return None
  heads = [parse_head_block(p if p.strip() != 'auto' else value, num_layers) for p in parts]
  if not heads:
    raise UserError(f"head_block={value!r} is empty: give 'auto', a block index, several "
                    "comma-separated or 'all' (--config.head_block).")
  return list(dict.fromkeys(heads))


def parse_tuned_blocks(value, num_layers: int) -> tuple[int, int] | None:
  """None for '' (the m blocks ending at the head), else the inclusive range 'a-b' (or 'a')."""
  text = str(value).strip()
  if not text:
    return None
  parts = text.split('-')
  try:
    lo, hi = int(parts[0]), int(parts[-1])
  except ValueError:
    lo = hi = -1
  if len(parts) > 2 or not 0 <= lo <= hi < num_layers:
    raise UserError(f"tuned_blocks={value!r} must be a block range 'a-b' (or one block 'a') with "
                    f'0 <= a <= b <= {num_layers - 1}, e.g. --config.tuned_blocks=3-4, or empty '
                    'for the num_tuned_blocks blocks ending at the head.')
  return lo, hi


def range_arrays(num_layers: int, lo: int, hi: int) -> dict[str, np.ndarray]:
  """Per-trial lr multipliers that tune blocks lo..hi only: the blocks between hi and the head are
  computed and differentiated (the gradient passes through them) but never updated."""
  block_lr = np.zeros(num_layers, np.float32)
  block_lr[lo:hi + 1] = 1.0
  return {'block_lr': block_lr}


def make_program(ctx: base.Context, head_block: int, num_tuned: int, method: str,
                 full: bool = False, first_tuned: int | None = None):
  """Head on block `head_block`, the `num_tuned` blocks ending there tuned by `method`.

  `full`: every block tuned (full fine-tuning also trains the embeddings, as plain fine-tuning
  does, and full BitFit their biases; full adapter- and LoRA-tuning keep them frozen).
  """
  n = head_block + 1
  first = n - num_tuned if first_tuned is None else first_tuned
  kw = dict(num_blocks=n, frozen_blocks=0 if full else first, report_flops=True,
            train_embeddings=full and method in ('finetune', 'bitfit'))
  kw.update(base.method_options(ctx.config, method))
  return base.make_program(ctx, **kw)


class Select(base.Experiment):
  name = 'select'
  trains_heads_on_frozen_blocks = True
  sweep_keys = ('num_tuned_blocks', 'method', 'baselines', 'head_block', 'auto_tolerance',
                'tuned_blocks')

  def load(self, config, workdir, task=None) -> base.Context:
    # Before tokenizing anything.
    task = config.task if task is None else task
    base.require_classification(data_lib.spec_of(task), 'variability-guided selection')
    return super().load(config, workdir, task)

  def validate(self, ctx: base.Context) -> None:
    c, L = ctx.config, ctx.pretrained.num_layers
    parse_head_blocks(c.head_block, L)
    check_choices('method', c.method, METHODS, many=True)
    check_choices('adapter_style', c.get('adapter_style', 'houlsby'), ADAPTER_STYLES)
    base.check_method_keys(c, c.method, ctx.pretrained)
    for m in c.num_tuned_blocks:
      iv.check_block_index('num_tuned_blocks', int(m), 1, L, L)
    if c.auto_tolerance < 0:
      raise UserError(f'auto_tolerance={c.auto_tolerance} must be ≥ 0 (--config.auto_tolerance).')
    if parse_tuned_blocks(c.get('tuned_blocks', ''), L) and 'adapter' in c.method:
      raise UserError('tuned_blocks with method=adapter: adapters would sit untrained in the blocks '
                      'between the range and the head. Use method finetune, lora or bitfit with '
                      '--config.tuned_blocks, or leave tuned_blocks empty.')

  def settings(self, ctx: base.Context, head: int, placement: str, cap_tuned: bool = False):
    """(setting, program, learning rate) for every swept and baseline setting. `cap_tuned` (a
    sweep of head positions): m is at most the head block + 1 (under a head at block 0, block 0
    alone is tuned) instead of an error."""
    c, L = ctx.config, ctx.pretrained.num_layers
    lr = {m: base.method_learning_rate(c, m) for m in METHODS}
    out = []
    rng = parse_tuned_blocks(c.get('tuned_blocks', ''), L)
    if rng:
      out.extend(self._range_settings(ctx, head, placement, rng, lr))
    for m in map(int, c.num_tuned_blocks) if not rng else ():
      if m > head + 1 and cap_tuned:
        logging.info('head block %d: %d tuned blocks (num_tuned_blocks=%d is more than it has).',
                     head, head + 1, m)
        m = head + 1
      if m > head + 1:
        raise UserError(f'num_tuned_blocks={m} is more than the {head + 1} blocks up to the head '
                        f'block {head}. Use at most {head + 1}, or place the head higher '
                        '(--config.num_tuned_blocks, --config.head_block).')
      for method in c.method:
        out.append(({'placement': placement, 'head_block': head, 'num_tuned_blocks': m,
                     'method': method}, make_program(ctx, head, m, method), lr[method]))
    if c.baselines:
      if head != L - 1:
        for m in [rng[1] - rng[0] + 1] if rng else map(int, c.num_tuned_blocks):
          for method in c.method:
            out.append(({'placement': 'top', 'head_block': L - 1, 'num_tuned_blocks': m,
                         'method': method}, make_program(ctx, L - 1, m, method), lr[method]))
      else:
        logging.info('The head block is the top block: the top-m baselines are the same trials.')
      for method in c.method:
        out.append(({'placement': 'full', 'head_block': L - 1, 'num_tuned_blocks': L,
                     'method': method}, make_program(ctx, L - 1, L, method, full=True),
                    lr[method]))
    return out

  @staticmethod
  def _range_settings(ctx, head: int, placement: str, rng: tuple[int, int], lr):
    """tuned_blocks=a-b (the authors' scripts, e.g. head at 23 with blocks 16-17 tuned)."""
    lo, hi = rng
    if hi > head:
      raise UserError(f'tuned_blocks={lo}-{hi} reaches above the head block {head}: the head reads '
                      f'block {head} and nothing above it is computed. Use a range ending at or '
                      'below the head (--config.tuned_blocks, --config.head_block).')
    arrays = range_arrays(ctx.pretrained.num_layers, lo, hi)
    return [({'placement': placement, 'head_block': head, 'num_tuned_blocks': hi - lo + 1,
              'tuned_blocks': f'{lo}-{hi}', 'method': method},
             make_program(ctx, head, hi - lo + 1, method, first_tuned=lo), lr[method], arrays)
            for method in ctx.config.method]

  def trials(self, ctx: base.Context) -> list[trials_lib.Trial]:
    c, L = ctx.config, ctx.pretrained.num_layers
    heads = parse_head_blocks(c.head_block, L)
    placement = 'fixed'
    if heads is None:
      nu = variability.load_or_compute(ctx)
      heads = [choose_head_block(nu, c.auto_tolerance)]
      placement = 'auto'
      logging.info('head_block=auto: block %d (ν = %.4f; lowest block ν %.4f, tolerance %g).',
                   heads[0], nu[1 + heads[0]], np.min(nu[1:]), c.auto_tolerance)
    out, seen = [], set()
    for head in heads:
      for setting, program, lr, *arrays in self.settings(ctx, head, placement, len(heads) > 1):
        key = json.dumps(setting, sort_keys=True)  # the baselines are the same under every head
        if key not in seen:
          seen.add(key)
          out += self.seed_trials(c, setting, program, lr, arrays)
    return out

  @staticmethod
  def seed_trials(c, setting, program, lr, arrays) -> list[trials_lib.Trial]:
    out = []
    for size in c.train_sizes:
      for seed in c.seeds:
        out.append(trials_lib.Trial(int(seed), int(size), setting, program, learning_rate=lr,
                                    arrays=dict(*arrays)))
    return out

  def prepare(self, ctx: base.Context, trials) -> dict:
    """Per program: what it trains and stores (`storage.param_metrics`) and, with
    `measure_step_time`, `step_time_s`: one trial's train step measured on a real batch, every
    program of the run side by side."""
    programs = list(dict.fromkeys(t.program for t in trials))
    out = {p: storage.param_metrics(p, ctx.pretrained.params) for p in programs}
    if ctx.config.measure_step_time:
      for program, t in zip(programs, self._step_times(ctx, programs)):
        out[program] = {**out[program], 'step_time_s': t}
        logging.info('Measured step time %.4f s (train_flops_fraction %.3f).', t,
                     program.train_flops_fraction())
    return out

  def trial_metrics(self, ctx: base.Context, trial, params) -> dict[str, float]:
    return dict(ctx.prepared[trial.program])

  @staticmethod
  def _step_times(ctx: base.Context, programs) -> list[float]:
    """Seconds of one train step of each program, on the same real batch."""
    # One batch of the longest training example's width, padded: the same for every setting, so
    # the times compare what the settings compute (the engine's packed steps scale them alike).
    data = batching.trim_padding(ctx.data.train.as_dict())
    rows = np.arange(min(ctx.config.batch_size, len(data['labels'])))
    batch = {k: v[rows] for k, v in data.items()}
    return timing.step_times(programs, ctx.pretrained.params, batch,
                             optim.OptimConfig.from_config(ctx.config))

  def finalize(self, ctx: base.Context, records: list[dict]) -> None:
    xie.plot_select(ctx.workdir, records, ctx.task.name, ctx.config.model,
                    ctx.task.primary_metric, ctx.info)


