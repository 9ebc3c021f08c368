"""Closeness (Radiya-Dixit & Wang 2020): how far fine-tuning moves each block, and tuning only the
most changed ("critical") blocks.

Phase 1 fine-tunes every parameter and writes, per trial, block and weight matrix, the distance of
the fine-tuned weights from the pretrained ones to `closeness.csv`. Phase 2 (when `critical_r` is
set) ranks the blocks by that distance (mean over the phase-1 seeds of each train size, or from
another run's `rank_from` csv) and fine-tunes only r of them: the r most changed, the r least
changed, or the top r by position. Any set of blocks is a per-trial `block_lr` 0/1 mask, so every
phase-2 trial of a run shares ONE compiled program (embeddings frozen, pooler and classifier
trained).
"""

from __future__ import annotations

import json
import os

import numpy as np
from absl import logging

from jaxtransfer.runtime import distributed as dist
from jaxtransfer.runtime import records as records_lib
from jaxtransfer.studies.radiya2020 import distances as closeness
from jaxtransfer.report import plots
from jaxtransfer.errors import UserError, check_choices
from jaxtransfer.engine import trials as trials_lib
from jaxtransfer.studies import base

ORDERS = ('most_changed', 'least_changed', 'top')
FULL = 'all'  # the `tuned` value of full fine-tuning


def chosen_blocks(order: str, r: int, ranking: list[int], num_layers: int) -> list[int]:
  """The r blocks that train: from the top of the ranking, its bottom, or the last r by index."""
  if order == 'most_changed':
    return sorted(ranking[:r])
  if order == 'least_changed':
    return sorted(ranking[len(ranking) - r:])
  if order == 'top':
    return list(range(num_layers - r, num_layers))
  raise ValueError(order)


def full_finetuning_records(csv_path: str) -> list[dict]:
  """The finished full fine-tuning trials of the run that wrote `csv_path` (closeness.py's
  `tuned=all`, sparsity.py's `method=finetune`), from the trials.jsonl beside it; [] if none."""
  path = os.path.join(os.path.dirname(os.path.abspath(csv_path)), 'trials.jsonl')
  if not os.path.exists(path):
    return []
  return [r for r in records_lib.read_records(path) if r['status'] == 'ok'
          and r['setting'] in ({'tuned': FULL}, {'method': 'finetune'})]


def full_finetuning_ids(csv_path: str) -> set[str]:
  return {r['trial_id'] for r in full_finetuning_records(csv_path)}


class Closeness(base.Experiment):
  name = 'closeness'
  sweep_keys = ('critical_r', 'critical_orders')

  def validate(self, ctx):
    c, L = ctx.config, ctx.pretrained.config.num_layers
    for r in c.critical_r:
      if isinstance(r, bool) or not isinstance(r, int) or not 1 <= r <= L:
        raise UserError(f'critical_r={list(c.critical_r)} has {r}: the number of blocks to tune must '
                        f'be a whole number in 1..{L} ({c.model} has {L} blocks). Fix '
                        '--config.critical_r, or give [] for distances only.')
    if c.critical_orders:
      check_choices('critical_orders', c.critical_orders, ORDERS, many=True)
    check_choices('rank_metric', c.rank_metric, closeness.METRICS)
    if not c.full_finetuning and not (c.rank_from and c.critical_r):
      raise UserError('full_finetuning=False leaves nothing to run unless the critical-block sweep '
                      'ranks from another run: set --config.critical_r and --config.rank_from.')
    if c.rank_from and not os.path.isfile(c.rank_from):
      raise UserError(f'rank_from={c.rank_from!r} is not a file. Give the closeness.csv of an '
                      'earlier closeness run, or leave it empty to rank by this run\'s full '
                      'fine-tuning trials.')

  # ------------------------------------------------------------------------- trials

  def full_trials(self, ctx):
    program = base.make_program(ctx)
    return [trials_lib.Trial(seed, size, {'tuned': FULL}, program)
            for size, seed, _ in base.grid(ctx.config)]

  def rankings(self, ctx, full) -> dict[int, list[int]]:
    """{train_size: blocks from most to least changed}: from `rank_from`, or from the closeness rows
    of this run's finished full fine-tuning trials."""
    c = ctx.config
    if c.rank_from:
      rows = closeness.read_rows(c.rank_from)
      ids = full_finetuning_ids(c.rank_from) or {r['trial_id'] for r in rows} - {closeness.RANDOM_INIT}
      ranking = closeness.rank_blocks(rows, ids, c.rank_metric)
      return {int(size): ranking for size in c.train_sizes}
    rows = closeness.read_rows(closeness.csv_path(ctx.workdir))
    have = {r['trial_id'] for r in rows}
    out = {}
    for size in c.train_sizes:
      ids = [t.trial_id for t in full if t.train_size == int(size) and t.trial_id in have]
      if not ids:  # a failed trial has no rows
        raise UserError(f'No full fine-tuning trial of train size {size} finished, so the blocks '
                        'cannot be ranked for critical_r. See trials.jsonl for the errors, or '
                        'give --config.rank_from=<closeness.csv of another run>.')
      out[int(size)] = closeness.rank_blocks(rows, ids, c.rank_metric)
    return out

  def trials(self, ctx):
    """Phase 1: full fine-tuning (unless ranked from another run's csv)."""
    c = ctx.config
    return self.full_trials(ctx) if c.full_finetuning or not c.rank_from else []

  def critical_trials(self, ctx, rankings) -> list:
    """Phase 2: only r blocks tuned, chosen by each order, one compiled program for all."""
    L = ctx.pretrained.config.num_layers
    program = base.make_program(ctx, train_embeddings=False)
    out = []
    for size, seed, setting in base.grid(ctx.config, r=[int(r) for r in ctx.config.critical_r],
                                         tuned=list(ctx.config.critical_orders)):
      blocks = chosen_blocks(setting['tuned'], setting['r'], rankings[size], L)
      arrays = {'block_lr': np.isin(np.arange(L), blocks).astype(np.float32)}
      out.append(trials_lib.Trial(seed, size, {**setting, 'blocks': blocks}, program, arrays))
    return out

  def execute(self, ctx, engine, trials):
    """Phase 1 on the engine, then (with critical_r) phase 2 on the same engine, ranked by phase
    1's closeness.csv."""
    records = engine.run(trials) if trials else []
    if not ctx.config.critical_r:
      return records
    if trials:
      logging.info('Phase 1 (full fine-tuning) finished; ranking blocks by %s for the critical-'
                   'block sweep.', ctx.config.rank_metric)
    rankings = self.rankings(ctx, trials)
    if dist.is_main():
      self._write_rankings(ctx, rankings)
    critical = base.expand_learning_rates(ctx.config, self.critical_trials(ctx, rankings))
    return records + engine.run(critical)

  def _write_rankings(self, ctx, rankings):
    path = os.path.join(ctx.workdir, 'critical_blocks.json')
    info = {'metric': ctx.config.rank_metric, 'source': ctx.config.rank_from or 'this run',
            'ranking': {str(k): v for k, v in rankings.items()}}
    with open(path, 'w') as f:
      json.dump(info, f, indent=2)
    logging.info('Blocks from most to least changed by fine-tuning: %s', info['ranking'])

  # ------------------------------------------------------------------------- outputs

  def uses_params(self, ctx, program):
    return True

  def write_outputs(self, ctx, trial, params):
    super().write_outputs(ctx, trial, params)
    closeness.write_trial_rows(ctx, trial, params)

  def finalize(self, ctx, records):
    closeness.write_random_init(ctx)
    rows = closeness.read_rows(closeness.csv_path(ctx.workdir))
    full = [r for r in records if r['setting'].get('tuned') == FULL and r['status'] == 'ok']
    groups = {}
    for r in full:
      groups.setdefault(f'full fine-tuning, {plots.size_label(r["train_size"])}',
                        []).append(r['trial_id'])
    if groups:
      closeness.plot_per_block(ctx.workdir, rows, groups, ctx.task.name, ctx.config.model,
                               info=ctx.info)
      closeness.plot_matrix_heatmap(ctx.workdir, rows, [r['trial_id'] for r in full],
                                    ctx.task.name, ctx.config.model, info=ctx.info)
    # Ranked from another run: its full fine-tuning trials are the reference line.
    source = full_finetuning_records(ctx.config.rank_from) if ctx.config.rank_from else []
    reference = [{**r, 'setting': {'tuned': FULL}} for r in source]
    closeness.plot_critical(ctx.workdir, records + reference, ctx.task, ctx.config.model,
                            ctx.info)


