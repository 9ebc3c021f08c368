"""How far fine-tuning moves each block from the pretrained weights (Radiya-Dixit & Wang 2020).

Per block and per weight matrix: L1 distance ||w_ft - w_pt||_1, the same per parameter, and the
angle between w_ft and w_pt. The scale these are read against is the distance between two
independent random initialisations of the same architecture (trial id `random-init`).
"""

from __future__ import annotations

import csv
import os
from typing import Any, Iterable, Sequence

import jax
import numpy as np

from jaxtransfer.runtime import files
from jaxtransfer.models import config as model_config
from jaxtransfer.core import program as program_lib
from jaxtransfer.report import plots
from jaxtransfer.models import bert

Params = dict[str, Any]
FIELDS = ('trial_id', 'block', 'matrix', 'l1', 'l1_per_param', 'angle_rad')
MATRICES = program_lib.MASKABLE   # the weight matrices of a block, reported one by one
ALL = 'all'                        # every parameter of the block (kernels, biases, LayerNorms)
EMBEDDINGS = 'embeddings'          # block -1: the embedding tables and their LayerNorm
RANDOM_INIT = 'random-init'
METRICS = ('l1', 'l1_per_param', 'angle_rad')


# ----------------------------------------------------------------------------- distances


def distance(a: Sequence[np.ndarray], b: Sequence[np.ndarray]) -> dict[str, float]:
  """L1, L1 per parameter and angle between the concatenations of the arrays `a` and `b`.

  The angle is 2 atan2(|u - v|, |u + v|) for the unit vectors u = a/|a|, v = b/|b|: arccos(u . v),
  but accurate for the small angles fine-tuning gives, where the arccos of a cosine near 1 is
  not. Two float64 passes over the arrays (norms, then |u - v|), no concatenated copy.
  """
  pairs = list(zip(a, b, strict=True))
  assert all(np.shape(x) == np.shape(y) for x, y in pairs), [(np.shape(x), np.shape(y)) for x, y in pairs]
  f64 = lambda t: np.asarray(t, np.float64).ravel()
  l1 = aa = bb = 0.0
  for x, y in pairs:
    x, y = f64(x), f64(y)
    l1, aa, bb = l1 + float(np.abs(x - y).sum()), aa + float(x @ x), bb + float(y @ y)
  size = sum(np.size(x) for x, _ in pairs)
  na, nb = np.sqrt(aa), np.sqrt(bb)
  if na == 0 or nb == 0:
    angle = float('nan')
  else:
    diff2 = sum(float(np.square(f64(x) / na - f64(y) / nb).sum()) for x, y in pairs)
    angle = float(2 * np.arctan2(np.sqrt(diff2), np.sqrt(max(4 - diff2, 0.0))))
  return {'l1': l1, 'l1_per_param': l1 / max(size, 1), 'angle_rad': angle}


def block_rows(params: Params, ref: Params) -> list[dict[str, Any]]:
  """Rows (without trial_id) comparing two stacked encoders block by block.

  Block -1 is the embeddings (matrix `embeddings`); each block i >= 0 has one row per weight
  matrix (its kernel) and one row `all` over every parameter of the block. Blocks beyond the
  shorter encoder are skipped.
  """
  rows = [{'block': -1, 'matrix': EMBEDDINGS,
           **distance(jax.tree.leaves(params['embeddings']), jax.tree.leaves(ref['embeddings']))}]
  blocks, ref_blocks = params['blocks'], ref['blocks']
  n = min(np.shape(blocks['query']['kernel'])[0], np.shape(ref_blocks['query']['kernel'])[0])
  for i in range(n):
    take = lambda tree: [np.asarray(x)[i] for x in jax.tree.leaves(tree)]
    for m in MATRICES:
      rows.append({'block': i, 'matrix': m,
                   **distance([np.asarray(blocks[m]['kernel'])[i]],
                              [np.asarray(ref_blocks[m]['kernel'])[i]])})
    rows.append({'block': i, 'matrix': ALL, **distance(take(blocks), take(ref_blocks))})
  return rows


def random_init_rows(config: model_config.EncoderConfig, seed: int = 0) -> list[dict[str, Any]]:
  """The scale: two independent random initialisations (HF's init) of the same architecture."""
  init = jax.jit(bert.init_params, static_argnums=0)
  k1, k2 = jax.random.split(jax.random.key(seed))
  a = jax.tree.map(np.asarray, init(config, k1))
  b = jax.tree.map(np.asarray, init(config, k2))
  return [{'trial_id': RANDOM_INIT, **r} for r in block_rows(a, b)]


# ----------------------------------------------------------------------------- closeness.csv


def csv_path(workdir: str) -> str:
  return os.path.join(workdir, 'closeness.csv')


def read_rows(path: str) -> list[dict[str, Any]]:
  if not os.path.exists(path):
    return []
  with open(path, newline='') as f:
    return [{'trial_id': r['trial_id'], 'block': int(r['block']), 'matrix': r['matrix'],
             **{k: float(r[k]) for k in METRICS}} for r in csv.DictReader(f)]


def write_rows(path: str, rows: Iterable[dict[str, Any]]) -> None:
  """Adds `rows` to the csv, replacing earlier rows of the same trial ids (a group that reran after
  a crash), atomically (temp file + rename)."""
  rows = list(rows)
  new_ids = {r['trial_id'] for r in rows}
  kept = [r for r in read_rows(path) if r['trial_id'] not in new_ids]
  files.write_csv(path, FIELDS, ({k: (repr(float(r[k])) if k in METRICS else r[k]) for k in FIELDS}
                                 for r in kept + rows))


def write_trial_rows(ctx, trial, params) -> None:
  """A finished trial's closeness rows (its encoder vs the pretrained one) into closeness.csv."""
  exported = trial.program.export_params(params.train, params.frozen, params.arrays)
  rows = [{'trial_id': trial.trial_id, **r} for r in block_rows(exported, ctx.pretrained.params)]
  write_rows(csv_path(ctx.workdir), rows)


def write_random_init(ctx) -> None:
  path = csv_path(ctx.workdir)
  if not any(r['trial_id'] == RANDOM_INIT for r in read_rows(path)):
    write_rows(path, random_init_rows(ctx.pretrained.config))


# ----------------------------------------------------------------------------- ranking


def per_block(rows: Iterable[dict[str, Any]], trial_ids: Iterable[str], metric: str,
              matrix: str = ALL, embeddings: bool = False) -> dict[int, list[float]]:
  """{block: [value per trial]} for one matrix (default: whole blocks); with `embeddings`, block -1
  (the embeddings) too."""
  ids = set(trial_ids)
  out: dict[int, list[float]] = {}
  for r in rows:
    wanted = r['matrix'] == matrix and r['block'] >= 0
    wanted |= embeddings and r['matrix'] == EMBEDDINGS
    if r['trial_id'] in ids and wanted:
      out.setdefault(r['block'], []).append(r[metric])
  return dict(sorted(out.items()))


def rank_blocks(rows: Iterable[dict[str, Any]], trial_ids: Iterable[str],
                metric: str = 'l1_per_param') -> list[int]:
  """Blocks from the most changed by fine-tuning to the least (mean over the trials)."""
  means = {b: float(np.mean(v)) for b, v in per_block(rows, trial_ids, metric).items()}
  if not means:
    raise ValueError('no closeness rows for these trials')
  return sorted(means, key=lambda b: (-means[b], b))


# ----------------------------------------------------------------------------- figures


def plot_per_block(workdir: str, rows: list[dict[str, Any]], groups: dict[str, list[str]],
                   task: str, model: str, name: str = 'closeness_per_block',
                   info: plots.RunInfo | None = None) -> str:
  """L1 per parameter and angle per block (mean, 95% CI over trials) for each group of trials,
  with the two-random-inits scale dashed."""
  fig, axes = plots.subplots(1, 2, figsize=(11, 4.2), dpi=120)
  for ax, metric, label in ((axes[0], 'l1_per_param', 'L1 distance per parameter'),
                            (axes[1], 'angle_rad', 'angle (radians)')):
    ax.grid(True, alpha=0.3)
    for group, ids in groups.items():
      # Zero distances (frozen parts) have no place on a log axis.
      vals = {b: v for b, v in per_block(rows, ids, metric, embeddings=True).items()
              if min(v) > 0}
      if vals:
        plots.line_with_ci(ax, list(vals), list(vals.values()), group)
    scale = per_block(rows, [RANDOM_INIT], metric, embeddings=True)
    if scale:
      ax.plot(list(scale), [v[0] for v in scale.values()], 'k--', label='two random inits')
    ax.set_yscale('log')
    blocks = sorted({r['block'] for r in rows})
    ax.set_xticks(blocks, ['emb' if b < 0 else str(b) for b in blocks])
    ax.set_xlabel('block')
    ax.set_ylabel(label)
    plots.legend(ax, fontsize=8)
  fig.suptitle(plots.title('Distance from the pretrained weights', task, model, info))
  return plots.save(fig, workdir, name)


def plot_matrix_heatmap(workdir: str, rows: list[dict[str, Any]], trial_ids: list[str], task: str,
                        model: str, metric: str = 'l1_per_param',
                        name: str = 'closeness_per_matrix', info: plots.RunInfo | None = None) -> str:
  """Mean distance per (weight matrix, block) over the trials, as a heat map."""
  blocks = sorted({r['block'] for r in rows if r['block'] >= 0 and r['trial_id'] in set(trial_ids)})
  grid = np.array([[np.mean(per_block(rows, trial_ids, metric, m).get(b, [np.nan])) for b in blocks]
                   for m in MATRICES])
  fig, ax = plots.figure(7, 3.6)
  ax.grid(False)
  im = ax.imshow(grid, aspect='auto', cmap='viridis')
  ax.set_xticks(range(len(blocks)), [str(b) for b in blocks])
  ax.set_yticks(range(len(MATRICES)), MATRICES)
  ax.set_xlabel('block')
  fig.colorbar(im, ax=ax, label=metric.replace('_', ' '))
  ax.set_title(plots.title(f'{metric.replace("_", " ")} per matrix', task, model, info),
               fontsize=9)
  return plots.save(fig, workdir, name)


def plot_critical(workdir: str, records: list[dict], task, model: str,
                  info: plots.RunInfo | None = None) -> str | None:
  """The task's metric against r, the number of tuned blocks, per way of choosing them (mean, 95%
  CI over seeds); full fine-tuning dashed across the whole axis."""
  import json

  from jaxtransfer.report import summary
  metric = task.primary_metric
  lines: dict[str, dict[int, np.ndarray]] = {}
  full = {}
  for (size, setting), values in summary.group_by_setting(records, metric).items():
    s = json.loads(setting)
    if s.get('tuned') == 'all':
      full[size] = values
    elif 'r' in s:
      label = f'{s["tuned"].replace("_", " ")}, {plots.size_label(size)}'
      lines.setdefault(label, {})[int(s['r'])] = values
  if not lines:
    return None
  fig, ax = plots.figure()
  lim = plots.bounds(metric)
  for i, (label, by_r) in enumerate(lines.items()):
    rs = sorted(by_r)
    # Side by side with error bars: two orders that pick the same blocks (most changed = top when
    # the top blocks move most) score the same and would hide each other; a band over one r
    # would have no width.
    stats = np.array([plots.mean_ci(by_r[r], lim) for r in rs])
    err = np.nan_to_num(np.abs(stats[:, 1:] - stats[:, :1]).T)
    ax.errorbar(np.asarray(rs) + 0.12 * (i - (len(lines) - 1) / 2), stats[:, 0], yerr=err,
                marker='o', capsize=3, label=label)
  xs = sorted({r for by_r in lines.values() for r in by_r})
  for size, values in full.items():
    # Across the whole axis: with one r, a line from xs[0] to xs[-1] would have no length.
    plots.reference(ax, values, f'full fine-tuning, {plots.size_label(size)}', color='C7',
                    bounds=lim)
  plots.chance_line(ax, info, metric)
  ax.set_xticks(xs)
  ax.set_xlim(xs[0] - 0.5, xs[-1] + 0.5)
  ax.set_xlabel('blocks fine-tuned (r; embeddings frozen); bars: 95% CI of the mean')
  ax.set_ylabel(plots.metric_label(metric))
  ax.set_title(plots.title('Fine-tuning only r blocks', task.name, model, info), fontsize=10)
  plots.legend(ax, fontsize=8)
  plots.limit_y(ax, metric)
  return plots.save(fig, workdir, 'critical_blocks')
