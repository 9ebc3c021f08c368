"""Learned sparsity masks on disk: bit-packed per trial, with their size next to a full fine-tuned copy."""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from jaxtransfer.runtime import files

Params = dict[str, Any]


def packed_bytes(mask: np.ndarray) -> int:
  """Bytes of a {0,1} array stored one bit per entry (np.packbits)."""
  return int(np.ceil(np.asarray(mask).size / 8))


def save_masks(path: str, masks: dict[str, np.ndarray], blocks) -> int:
  """Writes `masks` ({matrix: (n, in, out)} {0,1}, one row per entry of `blocks`) bit-packed to an npz.

  The file holds, per matrix, `<matrix>` (uint8, packbits of the flattened mask) and
  `<matrix>.shape`, plus `blocks` (the encoder block index of each mask row). Returns the packed
  bytes of the masks themselves (the npz adds a few hundred bytes of headers).
  """
  out = {'blocks': np.asarray(blocks, np.int32)}
  total = 0
  for name, m in masks.items():
    m = np.asarray(m)
    assert np.isin(m, (0, 1)).all(), f'{name}: a mask must hold only 0 and 1'
    out[name] = np.packbits(m.astype(bool).reshape(-1))
    out[f'{name}.shape'] = np.asarray(m.shape, np.int64)
    total += out[name].nbytes
  with files.atomic_write(path, 'wb') as f:
    np.savez(f, **out)
  return total


def load_masks(path: str) -> tuple[dict[str, np.ndarray], np.ndarray]:
  """Inverse of `save_masks`: ({matrix: bool (n, in, out)}, block indices)."""
  with np.load(path) as z:
    names = [k for k in z.files if k != 'blocks' and not k.endswith('.shape')]
    masks = {}
    for name in names:
      shape = tuple(int(s) for s in z[f'{name}.shape'])
      masks[name] = np.unpackbits(z[name], count=int(np.prod(shape))).astype(bool).reshape(shape)
    return masks, np.asarray(z['blocks'])


def nbytes(tree: Params) -> int:
  """float32 bytes of every leaf of a param tree (what a fine-tuned copy of it weighs)."""
  import jax
  return int(sum(4 * np.asarray(x).size for x in jax.tree.leaves(tree)))


def trial_masks(program, train: Params, frozen: Params, arrays) -> tuple[dict, np.ndarray]:
  """A masked trial's hard masks of its masked blocks ({matrix: (m, in, out)}) and their indices."""
  f, n = program.frozen_blocks, program.num_blocks
  on = np.asarray(arrays['mask_blocks'][f:n], bool)
  masks = {m: np.asarray(v)[on] for m, v in program.masks(train, frozen, arrays).items()}
  return masks, np.arange(f, n)[on]


def mask_metrics(program, train: Params, frozen: Params, arrays) -> dict[str, float]:
  """What a masked trial costs to store.

  `mask_bytes`: the bit-packed masks of the masked blocks. `head_bytes`: the dense parameters the
  trial trains besides (pooler and classifier). `full_copy_bytes`: a fully fine-tuned copy of the
  same model (every encoder parameter and the head, float32) - what a task costs without masks.
  """
  from jaxtransfer.core import program as program_lib
  masks, _ = trial_masks(program, train, frozen, arrays)
  full = program.export_params(train, frozen, arrays)
  return {'mask_bytes': float(sum(packed_bytes(m) for m in masks.values())),
          'head_bytes': float(nbytes(program_lib.params_of(train, program_lib.HEAD_GROUPS))),
          'full_copy_bytes': float(nbytes(full) + nbytes(train.get('head', {})))}


def save_trial_masks(workdir: str, trial_id: str, program, train: Params, frozen: Params,
                     arrays) -> int:
  """Writes a masked trial's masks to `masks/<trial_id>.npz`; returns their packed bytes."""
  masks, blocks = trial_masks(program, train, frozen, arrays)
  return save_masks(os.path.join(workdir, 'masks', f'{trial_id}.npz'), masks, blocks)


def mask_lines(records: list[dict], metric: str) -> tuple[str, dict, dict]:
  """(x key, {label: [(x, scores)]}, {(method, size): scores}) of a masks run. x is the achieved
  sparsity (mean over seeds); when the run holds one target sparsity and sweeps another key of
  the masks (the mask lr), x is that key: every point would sit at one sparsity otherwise."""
  import json

  from jaxtransfer.report import plots
  from jaxtransfer.report import summary
  scores = summary.group_by_setting(records, metric)
  achieved = summary.group_by_setting(records, 'sparsity')
  masked = [(size, json.loads(setting)) for size, setting in scores
            if json.loads(setting).get('method') == 'mask' and (size, setting) in achieved]
  swept = [k for k in sorted({k for _, s in masked for k in s} - {'method', 'target_sparsity'})
           if len({str(s.get(k)) for _, s in masked}) > 1]
  one_sparsity = len({s.get('target_sparsity') for _, s in masked}) == 1
  x_key = swept[0] if one_sparsity and len(swept) == 1 else 'sparsity'
  lines: dict[str, list[tuple[float, np.ndarray]]] = {}
  baselines = {}
  for (size, setting), values in scores.items():
    s = json.loads(setting)
    if s.get('method') != 'mask':
      baselines[(s.get('method'), size)] = values
      continue
    if (size, setting) not in achieved:
      continue
    drop = ('method', 'target_sparsity', x_key)
    rest = {k: v for k, v in s.items() if k not in drop}
    label = ', '.join([plots.size_label(size)] + [f'{k}={v}' for k, v in sorted(rest.items())])
    x = float(np.mean(achieved[(size, setting)])) if x_key == 'sparsity' else float(s[x_key])
    lines.setdefault(label, []).append((x, values))
  return x_key, lines, baselines


def plot_accuracy_vs_sparsity(workdir: str, records: list[dict], task, model: str,
                              info=None) -> str | None:
  """The task's metric against the achieved sparsity (mean, 95% CI over seeds; a sparsity alone
  is a marker with error bars): one line per train size, masked block set and mask lr; the
  baselines as dashed bands. A run at one sparsity sweeping the mask lr plots against the lr
  (plots/accuracy_vs_mask_lr.png)."""
  from jaxtransfer.report import plots
  metric = task.primary_metric
  x_key, lines, baselines = mask_lines(records, metric)
  if not lines:
    return None
  fig, ax = plots.figure()
  lim = plots.bounds(metric)
  for label, points in lines.items():
    points.sort(key=lambda p: p[0])
    plots.line_with_ci(ax, [p[0] for p in points], [p[1] for p in points], f'masks, {label}',
                       bounds=lim)
  names = {'finetune': 'full fine-tuning', 'head_only': 'frozen encoder, head only'}
  # Fixed colors: axhline does not advance the color cycle, so the baselines would share one.
  styles = {'finetune': ('C2', '--'), 'head_only': ('C1', ':')}
  for (method, size), values in baselines.items():
    color, linestyle = styles.get(method, ('C4', '-.'))
    plots.reference(ax, values, f'{names.get(method, method)}, {plots.size_label(size)}',
                    color=color, linestyle=linestyle, bounds=lim)
  plots.chance_line(ax, info, metric)
  ax.set_ylabel(plots.metric_label(metric))
  xs = sorted({p[0] for points in lines.values() for p in points})
  # Name only the baselines this run has (the demo runs none).
  vs = ', '.join(dict.fromkeys(names.get(m, m) for m, _ in baselines))
  if x_key == 'sparsity':
    ax.set_xlabel('achieved sparsity (fraction of masked-matrix entries zeroed)')
    what = 'Learned masks' + (f' vs {vs}' if vs else '') + ': score vs sparsity'
    note = f'\nonly sparsity {xs[0]:.2f} was run: a point, not a curve' if len(xs) == 1 else ''
  else:
    sparsity = next(r['setting']['target_sparsity'] for r in records
                    if (r.get('setting') or {}).get('method') == 'mask')
    ax.set_xscale('log')
    ax.set_xticks(xs, [f'{x:g}' for x in xs])
    ax.set_xlabel(f'{x_key} (one target sparsity: {sparsity:g})')
    what, note = f'Learned masks at sparsity {sparsity:g}: score vs {x_key}', ''
  ax.set_title(plots.title(what, task.name, model, info) + note, fontsize=10)
  plots.legend(ax, fontsize=8)
  plots.limit_y(ax, metric)
  return plots.save(fig, workdir, 'accuracy_vs_sparsity' if x_key == 'sparsity'
                    else f'accuracy_vs_{x_key}')
