"""Tamkin et al. 2020: pretrained blocks reinitialized (progressively or as a window) or permuted,
then the whole model fine-tuned.

The three studies share one structure: the standard Program with `Reinit(scheme)` (and `Permute()`
for the permutation study), driven by per-trial arrays that say which blocks to reinitialize and in
which order to stack them. Trials of one scheme and training size differ only in those arrays, so
they run in ONE compiled, vmapped group (the engine groups by program and step count).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
from absl import logging

from jaxtransfer.core import interventions as iv
from jaxtransfer.studies.tamkin2020 import permutations
from jaxtransfer.report import plots
from jaxtransfer.studies.tamkin2020 import analysis as tamkin
from jaxtransfer.engine.engine import Trial
from jaxtransfer.errors import UserError
from jaxtransfer.studies import base

ALL = -1  # in ks / starts: every valid value for the model's number of blocks


# ----------------------------------------------------------------------------- config parsing


def choices(value, key: str, allowed: tuple[str, ...]) -> list[str]:
  """A comma-separated string (or a list) of names, each one of `allowed`."""
  items = value.split(',') if isinstance(value, str) else list(value)
  items = list(dict.fromkeys(str(v).strip() for v in items if str(v).strip()))
  bad = [v for v in items if v not in allowed]
  if bad or not items:
    raise UserError(f'{key}={value!r} is not valid: give one or more of {", ".join(allowed)}, '
                    f'comma-separated (e.g. --config.{key}={allowed[0]}).')
  return items


def expand(values, key: str, lo: int, hi: int, num_layers: int) -> list[int]:
  """Sweep values with ALL (-1) standing for lo..hi; each one checked against the model's L."""
  out = []
  for v in values:
    if int(v) == ALL:
      out.extend(range(lo, hi + 1))
    else:
      iv.check_block_index(key, int(v), lo, hi, num_layers)
      out.append(int(v))
  if not out:
    raise UserError(f'{key} is empty: give at least one value, or (-1,) for all of {lo}..{hi} '
                    f'(--config.{key}).')
  return list(dict.fromkeys(out))


PAPER_SEEDS = (1, 2, 3)


def resolve_seeds(config) -> None:
  """reinit.py leaves `seeds` unset for the paper's protocol (PAPER_SEEDS, and small_size_seeds at
  small sizes); explicit seeds are what runs, at every size."""
  if config.seeds is None:
    config.seeds = PAPER_SEEDS
  elif config.get('small_size_seeds', 0):
    logging.info('seeds=%s given: they run at every train size (small_size_seeds=%d is off).',
                 list(config.seeds), config.small_size_seeds)
    config.small_size_seeds = 0


def seeds_for(config, train_size: int) -> list[int]:
  """The seeds of one training size: 1..small_size_seeds at small sizes (the paper's 50 trials at
  500 examples), else `seeds`."""
  n_small = config.get('small_size_seeds', 0)
  if n_small and 0 < train_size <= config.small_size:
    return list(range(1, n_small + 1))
  return [int(s) for s in config.seeds]


def log_trial_count(study: str, config, n_settings: int, n_trials: int) -> None:
  """The count before any training: settings x seeds per train size."""
  per_size = '; '.join(f'{plots.size_label(int(s))}: {n_settings} settings x '
                       f'{len(seeds_for(config, int(s)))} seeds' for s in config.train_sizes)
  logging.info('%s: %d trials (%s).', study, n_trials, per_size)
  n_small = config.get('small_size_seeds', 0)
  if n_small and any(0 < int(s) <= config.small_size for s in config.train_sizes):
    logging.info('small_size_seeds=%d: train sizes up to %d run seeds 1..%d instead of seeds=%s '
                 '(an explicit --config.seeds, or small_size_seeds=0, turns this off).', n_small,
                 config.small_size, n_small, list(config.seeds))


# ----------------------------------------------------------------------------- the studies


@dataclasses.dataclass
class Setting:
  """One point of a study: what its records report, its per-trial arrays and its scheme."""
  values: dict[str, Any]
  arrays: dict[str, np.ndarray]
  scheme: str
  scratch: bool = False  # the embeddings and pooler reinitialized too (`Reinit(scratch=True)`)


class BlockStudy(base.Experiment):
  """Pretrained blocks transformed by per-trial arrays, then fine-tuned end to end."""
  permutes = False

  def settings(self, ctx: base.Context) -> list[Setting]:
    raise NotImplementedError

  def validate(self, ctx):
    c = ctx.config
    if c.get('reinit_lr_multiplier', 1.0) <= 0:
      raise UserError(f'reinit_lr_multiplier={c.reinit_lr_multiplier} must be positive (1.0 = the '
                      'same lr as the pretrained blocks, 5.0 = the paper\'s ablation).')
    if c.get('small_size_seeds', 0) < 0:
      raise UserError(f'small_size_seeds={c.small_size_seeds} must be >= 0 (0 = use seeds).')
    self.settings(ctx)  # every index checked against the model's L

  def program(self, ctx, scheme: str, scratch: bool = False):
    ivs = (iv.Permute(),) if self.permutes else ()
    keep_ln = bool(ctx.config.get('keep_layer_norm', False))
    return base.make_program(ctx, interventions=ivs + (iv.Reinit(scheme, keep_ln, scratch),))

  def trials(self, ctx):
    out = []
    settings = self.settings(ctx)
    for size in ctx.config.train_sizes:
      for s in settings:
        program = self.program(ctx, s.scheme, s.scratch)
        for seed in seeds_for(ctx.config, int(size)):
          out.append(Trial(seed, int(size), s.values, program, arrays=s.arrays))
    log_trial_count(self.name, ctx.config, len(settings), len(out))
    return out

  def schemes(self, ctx) -> list[str]:
    return choices(ctx.config.reinit_scheme, 'reinit_scheme', iv.REINIT_SCHEMES)

  @staticmethod
  def reinit_arrays(mask: np.ndarray, lr_multiplier: float = 1.0) -> dict[str, np.ndarray]:
    """The reinit mask, and the reinitialized blocks' lr multiplier through `block_lr`."""
    return {'reinit': np.asarray(mask, bool),
            'block_lr': np.where(mask, lr_multiplier, 1.0).astype(np.float32)}

  def references(self, ctx, scheme: str) -> list[Setting]:
    """The full pretrained model and every block reinitialized (embeddings only preserved)."""
    L = ctx.pretrained.num_layers
    return [Setting({'mode': 'full', 'reinit_scheme': scheme},
                    self.reinit_arrays(np.zeros(L, bool)), scheme),
            Setting({'mode': 'all_reinit', 'reinit_scheme': scheme},
                    self.reinit_arrays(np.ones(L, bool)), scheme)]


class ProgressiveReinit(BlockStudy):
  """Blocks with index >= k reinitialized (k kept), for each k (Fig. 2); with `scratch`, also the
  model trained from scratch (embeddings and pooler reinitialized too): the floor k = 0 lacks."""
  name = 'reinit'
  sweep_keys = ('ks', 'reinit_scheme', 'reinit_lr_multiplier', 'small_size_seeds', 'scratch')

  def resolve(self, config):
    resolve_seeds(config)

  def settings(self, ctx):
    c, L = ctx.config, ctx.pretrained.num_layers
    mult = float(c.reinit_lr_multiplier)
    scratch = bool(c.get('scratch', False))
    ks = expand(c.ks, 'ks', 0, L, L) if len(c.ks) or not scratch else []  # ks=() + scratch: alone
    out = []
    for scheme in self.schemes(ctx):
      out += [Setting({'k': k, 'reinit_scheme': scheme, 'reinit_lr_multiplier': mult},
                      self.reinit_arrays(iv.reinit_from(k, L), mult), scheme)
              for k in ks]
      if scratch:
        out.append(Setting({'mode': 'scratch', 'reinit_scheme': scheme,
                            'reinit_lr_multiplier': mult},
                           self.reinit_arrays(np.ones(L, bool), mult), scheme, scratch=True))
    return out

  def reference_setting(self, ctx, records):
    """The unmodified model, k = L (when the sweep ran it), of each scheme and lr multiplier."""
    L, ks = ctx.pretrained.num_layers, ctx.config.ks
    return {'k': L} if len(ks) and L in expand(ks, 'ks', 0, L, L) else None

  def validate(self, ctx):
    super().validate(ctx)
    if ctx.config.probe_dir:
      tamkin.read_workdir(ctx.config.probe_dir)  # fail now, not after training

  def finalize(self, ctx, records):
    probe = tamkin.read_workdir(ctx.config.probe_dir) if ctx.config.probe_dir else []
    tamkin.plot_reinit(ctx.workdir, records, probe, ctx.task.primary_metric,
                       num_layers=ctx.pretrained.num_layers, info=ctx.info)
    tamkin.plot_trials(ctx.workdir, records, ctx.task.primary_metric,
                       num_layers=ctx.pretrained.num_layers, info=ctx.info)


def warn_same_masks(settings: list[Setting], num_layers: int) -> None:
  """Settings with one reinit mask are one trial run twice (e.g. reinit 0-2 = preserve 3-5 on 6
  blocks): both stay, as each is a point of its own curve, but the log says so."""
  seen: dict[tuple, dict] = {}
  for s in settings:
    key = (s.scheme, tuple(np.asarray(s.arrays['reinit']).tolist()))
    if key in seen:
      logging.warning('%s and %s reinitialize the same blocks of %d: the same trial runs twice '
                      '(change block_size or starts to avoid it).', _words(seen[key]),
                      _words(s.values), num_layers)
    seen.setdefault(key, s.values)


def _words(values: dict) -> str:
  mode = values['mode']
  if 'start' not in values:
    return {'full': 'the full model', 'all_reinit': 'every block reinitialized'}.get(mode, mode)
  return f'{mode} {values["start"]}-{values["start"] + values["block_size"] - 1}'


class BlockReinit(BlockStudy):
  """A window of `block_size` blocks reinitialized, or the only ones kept (Fig. 3)."""
  name = 'block_reinit'
  sweep_keys = ('starts', 'block_size', 'mode', 'reinit_scheme', 'small_size_seeds')

  def settings(self, ctx):
    c, L = ctx.config, ctx.pretrained.num_layers
    size = int(c.block_size)
    iv.check_block_index('block_size', size, 1, L, L)
    modes = choices(c.mode, 'mode', ('reinit', 'preserve'))
    starts = expand(c.starts, 'starts', 0, L - size, L)
    out = []
    for scheme in self.schemes(ctx):
      out += self.references(ctx, scheme)
      out += [Setting({'mode': mode, 'start': s, 'block_size': size, 'reinit_scheme': scheme},
                      self.reinit_arrays(iv.block_reinit_mask(s, size, L, mode)), scheme)
              for mode in modes for s in starts]
    warn_same_masks(out, L)
    return out

  def finalize(self, ctx, records):
    tamkin.plot_block_reinit(ctx.workdir, records, ctx.task.primary_metric,
                             num_layers=ctx.pretrained.num_layers, info=ctx.info)


class Permutation(BlockStudy):
  """Pretrained blocks stacked in the order np.random.RandomState(p).permutation(L) (Fig. 4)."""
  name = 'permute'
  permutes = True
  sweep_keys = ('permutation_seeds', 'reinit_scheme', 'small_size_seeds')

  def settings(self, ctx):
    c, L = ctx.config, ctx.pretrained.num_layers
    seeds = [int(p) for p in c.permutation_seeds]
    if not seeds:
      raise UserError('permutation_seeds is empty: give at least one, e.g. '
                      '--config.permutation_seeds="[1,2,3]".')
    schemes = self.schemes(ctx)
    scheme = schemes[0]  # nothing is reinitialized in a permuted model; this names its program
    keep = np.zeros(L, bool)
    out = self.references(ctx, scheme)
    out += [r for other in schemes[1:] for r in self.references(ctx, other)[1:]]
    for p in dict.fromkeys(seeds):
      perm = iv.tamkin_permutation(p, L)
      out.append(Setting({'mode': 'permuted', 'permutation_seed': p, 'order': perm.tolist(),
                          'reinit_scheme': scheme},
                         {**self.reinit_arrays(keep), 'perm': perm}, scheme))
    return out

  def finalize(self, ctx, records):
    tamkin.plot_permute(ctx.workdir, records, ctx.task.primary_metric, info=ctx.info)
    # Between train sizes of this task; across tasks: python -m jaxtransfer.studies.tamkin2020.analysis.
    permutations.write_correlations(ctx.workdir, records, lambda _: ctx.task.primary_metric)
