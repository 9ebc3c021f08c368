"""Hidden-state variability ν per layer (Xie et al. 2022): one frozen forward pass, no training."""

from __future__ import annotations

import csv
import os

import numpy as np
from absl import logging

from jaxtransfer.data import glue as data_lib
from jaxtransfer.errors import UserError
from jaxtransfer.runtime import distributed as dist
from jaxtransfer.runtime import files
from jaxtransfer.studies.xie2022 import nu as var_lib
from jaxtransfer.studies.xie2022 import analysis as xie
from jaxtransfer.studies import base

CSV = 'variability.csv'
FIELDS = ('task', 'model', 'block', 'nu')
# With the bootstrap (variability.py's variability_bootstrap > 0): ν's 95% percentile interval
# over within-class resamples of the examples, and the fraction of resamples whose lowest-ν block
# is this one (blank for the embedding output, which ν's pick never is).
CI_FIELDS = ('nu_lo', 'nu_hi', 'argmin_fraction')


def compute(ctx: base.Context, bootstrap: int = 0) -> tuple[np.ndarray, dict | None]:
  """ν for block -1 (embedding output) .. L-1 over the training split, (L+1,), and with
  `bootstrap` resamples its CI columns (`CI_FIELDS`: (L+1,) arrays), else None."""
  base.require_classification(ctx.task, 'hidden-state variability')
  c, pre = ctx.config, ctx.pretrained
  nu, info = var_lib.variability(
      pre.config, pre.params, ctx.data.train.as_dict(), ctx.task.num_labels,
      var_lib.special_ids(pre.tokenizer), batch_size=c.eval_batch_size,
      max_examples=c.variability_max_examples, rtol=c.variability_rtol,
      keep_features=bootstrap > 0)
  logging.info('ν over %d training examples (classes %s) in %.1f s (one forward pass): %s',
               info['examples'], info['class_counts'], info['seconds'],
               ', '.join(f'{b}: {v:.4f}' for b, v in zip(range(-1, len(nu) - 1), nu)))
  if not bootstrap:
    return nu, None
  return nu, bootstrap_columns(info['features'], info['labels'], bootstrap,
                               int(c.variability_bootstrap_seed), c.variability_rtol)


def bootstrap_columns(feats, labels, num_resamples: int, seed: int, rtol: float) -> dict:
  """The CI_FIELDS of ν per layer from `num_resamples` within-class resamples."""
  samples = var_lib.bootstrap_nu(feats, labels, num_resamples, seed, rtol)
  lo, hi = var_lib.interval(samples)
  picks = np.concatenate([[np.nan], var_lib.argmin_fraction(samples)])
  logging.info('ν bootstrap (%d resamples): lowest-ν block %s', num_resamples,
               ', '.join(f'{b}: {f:.1%}' for b, f in enumerate(picks[1:]) if f))
  return {'nu_lo': lo, 'nu_hi': hi, 'argmin_fraction': picks}


def write_csv(path: str, task: str, model: str, nu: np.ndarray, ci: dict | None = None) -> None:
  with files.atomic_write(path, newline='') as f:
    w = csv.writer(f)
    w.writerow(FIELDS + (CI_FIELDS if ci else ()))
    for i, (block, v) in enumerate(zip(range(-1, len(nu) - 1), nu)):
      extra = [_cell(ci[k][i]) for k in CI_FIELDS] if ci else []
      w.writerow([task, model, block, repr(float(v))] + extra)


def _cell(value: float) -> str:
  return '' if np.isnan(value) else repr(float(value))


def read_csv(path: str, task: str, model: str, num_layers: int) -> np.ndarray | None:
  """ν from an existing variability.csv when it is this task's and model's, else None."""
  if not os.path.exists(path):
    return None
  with open(path, newline='') as f:
    rows = [r for r in csv.DictReader(f) if r['task'] == task and r['model'] == model]
  by_block = {int(r['block']): float(r['nu']) for r in rows}
  if sorted(by_block) != list(range(-1, num_layers)):
    return None
  return np.array([by_block[b] for b in range(-1, num_layers)])


def load_or_compute(ctx: base.Context) -> np.ndarray:
  """ν from the workdir's variability.csv if it holds this task and model, else one forward pass
  (then written there with its plot)."""
  path = os.path.join(ctx.workdir, CSV)
  nu = read_csv(path, ctx.task.name, ctx.config.model, ctx.pretrained.num_layers)
  if nu is not None:
    logging.info('Using ν from %s.', path)
    return nu
  nu, _ = compute(ctx)
  if dist.is_main():
    write_csv(path, ctx.task.name, ctx.config.model, nu)
    xie.plot_variability(ctx.workdir, {ctx.task.name: nu}, ctx.task.name, ctx.config.model,
                         info=ctx.info)
  return nu


class Variability(base.Experiment):
  name = 'variability'
  fine_tunes = False  # one forward pass of the pretrained model: nothing to compare it with

  def run(self, config, workdir, task=None) -> list[dict]:
    base.check_similarity_keys(self, config)
    task = config.task if task is None else task
    base.require_classification(data_lib.spec_of(task), 'hidden-state variability')
    ctx = self.load(config, workdir, task)
    if config.variability_bootstrap < 0:
      raise UserError(f'variability_bootstrap={config.variability_bootstrap} must be >= 0 (0 = no '
                      'CI; 1000 = the default) (--config.variability_bootstrap).')
    nu, ci = compute(ctx, int(config.variability_bootstrap))
    if dist.is_main():
      write_csv(os.path.join(ctx.workdir, CSV), ctx.task.name, config.model, nu, ci)
      bands = {ctx.task.name: (ci['nu_lo'], ci['nu_hi'])} if ci else None
      xie.plot_variability(ctx.workdir, {ctx.task.name: nu}, ctx.task.name, config.model,
                           info=ctx.info, bands=bands)
      best = int(np.argmin(nu[1:]))
      logging.info('Lowest ν among blocks: block %d (ν = %.4f).', best, nu[1 + best])
    return []


