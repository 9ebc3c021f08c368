"""Lee et al. (2019) tables and figures: task x trainable blocks, Lee's aggregation and mean ± CI.

  python -m jaxtransfer.studies.lee2019.analysis --out=results/lee2019 results/lee2019/{sst2,cola,mrpc,rte}

merges the trials of one freeze.py workdir per task into one table (table.md, table.csv), the
merged trials.jsonl and summary.csv, and plots/ under --out.
"""

from __future__ import annotations

import argparse
import collections
import json
import math
import os
import sys
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from jaxtransfer.data import glue as data_lib
from jaxtransfer.runtime import files
from jaxtransfer.runtime import records as records_lib
from jaxtransfer.report import stats as stats_lib
from jaxtransfer.report import summary
from jaxtransfer.report import plots
from jaxtransfer.studies import base

KEY = 'trainable_blocks'
FLOPS = 'train_flops_fraction'

# docs/PROTOCOLS.md §2: bert-base-uncased (L = 12), dev x100, Lee aggregation; keys are trainable
# blocks k.
PAPER_BERT_BASE = {
    'cola': {12: 58.26, 6: 53.27, 5: 51.85, 4: 50.59, 3: 47.49, 2: 44.01, 1: 42.10, 0: 29.59},
    'sst2': {12: 92.69, 6: 92.06, 5: 91.75, 4: 91.15, 3: 90.84, 2: 90.89, 1: 91.33, 0: 85.03},
    'mrpc': {12: 90.30, 6: 87.70, 5: 86.90, 4: 86.65, 3: 85.45, 2: 84.33, 1: 82.31, 0: 81.42},
    'stsb': {12: 88.87, 6: 88.47, 5: 88.34, 4: 88.36, 3: 87.97, 2: 87.38, 1: 86.18, 0: 77.97},
    'qqp': {12: 87.89, 6: 86.92, 5: 86.44, 4: 85.97, 3: 85.33, 2: 84.30, 1: 82.17, 0: 71.98},
    'mnli': {12: 84.34, 6: 83.91, 5: 83.60, 4: 83.30, 3: 81.98, 2: 79.94, 1: 76.22, 0: 56.36},
    'qnli': {12: 91.38, 6: 91.14, 5: 90.77, 4: 90.34, 3: 89.52, 2: 88.04, 1: 85.32, 0: 74.46},
    'rte': {12: 67.55, 6: 68.71, 5: 66.67, 4: 63.85, 3: 62.32, 2: 59.93, 1: 57.87, 0: 57.82},
}
# The paper's own "Rel. %" row (it averages over more columns than the 8 shown above).
PAPER_BERT_BASE_REL = {12: 100.0, 6: 98.51, 5: 97.58, 4: 96.57, 3: 94.98, 2: 92.85, 1: 90.26,
                       0: 78.18}
PAPER_LAYERS = 12

METRIC_SHORT = {'accuracy': 'acc', 'f1': 'F1', 'mcc': 'MCC', 'spearman': 'Spearman ρ',
                'pearson': 'Pearson r'}
CSV_FIELDS = ('task', 'model', 'train_size', 'metric', 'trainable_blocks', 'setting', 'n',
              'lee', 'relative_lee', 'mean', 'std', 'ci95_low', 'ci95_high', 'relative_mean',
              'train_flops_fraction')


def setting_label(k: int, num_layers: int) -> str:
  """The paper's column names: 'Full', 'i–(L-1)' (blocks trained, 0-based), 'None'."""
  if k == num_layers:
    return 'Full'
  if k == 0:
    return 'None'
  return f'{num_layers - k}' if k == 1 else f'{num_layers - k}–{num_layers - 1}'


def task_label(name: str, metric: str) -> str:
  """'SST-2 acc' (a task's display name and its metric)."""
  return f'{name} {METRIC_SHORT.get(metric, metric)}'


def relative_to_full(table: Mapping[int, float], num_layers: int) -> dict[int, float]:
  """Each k's score as % of full fine-tuning's (nan without a finite, positive full score)."""
  full = table.get(num_layers, math.nan)
  ok = np.isfinite(full) and full > 0
  return {k: (100.0 * v / full if ok else math.nan) for k, v in table.items()}


def paper_relative(tasks: Sequence[str] = ()) -> dict[int, float]:
  """Mean over the paper's task columns (all 8, or those of `tasks` it has) of (setting / full)
  x 100, as `rows` computes ours: one task gives that task's own row."""
  chosen = [t for t in tasks if t in PAPER_BERT_BASE] or list(PAPER_BERT_BASE)
  rel = [relative_to_full(PAPER_BERT_BASE[t], PAPER_LAYERS) for t in chosen]
  return {k: float(np.mean([r[k] for r in rel])) for k in PAPER_BERT_BASE_REL}


# ----------------------------------------------------------------------------- the table


def rows(records: Iterable[Mapping[str, Any]], num_layers: Mapping[str, int],
         workdirs: Sequence[str] = ()) -> list[dict]:
  """One row per (task, model, train_size, k): Lee aggregate and mean ± CI of the task's metric.

  Scores are x100. `relative_*` is % of the same task's full fine-tuning (k = L) by the same
  statistic. Only ok trials with a finite metric count (as in summary.csv).
  """
  by_task = collections.defaultdict(list)
  for r in records:
    if KEY in (r.get('setting') or {}):
      by_task[(r['task'], r.get('model'), r.get('train_size'))].append(r)
  out = []
  for (task, model, size), recs in sorted(by_task.items(), key=lambda kv: str(kv[0])):
    spec = data_lib.record_spec(task, recs, workdirs)
    metric, L = spec.primary_metric, num_layers[task]
    ks = sorted({int(r['setting'][KEY]) for r in recs}, reverse=True)
    values = {k: 100.0 * _values([r for r in recs if r['setting'][KEY] == k], metric) for k in ks}
    flops = {k: _values([r for r in recs if r['setting'][KEY] == k], FLOPS) for k in ks}
    lee = {k: stats_lib.lee_aggregate(v) for k, v in values.items()}
    mean = {k: stats_lib.t_ci(v) for k, v in values.items()}
    rel_lee = relative_to_full(lee, L)
    rel_mean = relative_to_full({k: m[0] for k, m in mean.items()}, L)
    for k in ks:
      m, std, lo, hi = mean[k]
      out.append({'task': task, 'task_name': spec.dirname, 'model': model, 'train_size': size,
                  'metric': metric,
                  'trainable_blocks': k, 'setting': setting_label(k, L), 'n': len(values[k]),
                  'lee': lee[k], 'relative_lee': rel_lee[k], 'mean': m, 'std': std,
                  'ci95_low': lo, 'ci95_high': hi, 'relative_mean': rel_mean[k],
                  'train_flops_fraction': float(np.mean(flops[k])) if len(flops[k]) else math.nan})
  return out


def _values(records, metric: str) -> np.ndarray:
  return np.asarray([r['metrics'][metric] for r in records if r.get('status') == 'ok'
                     and np.isfinite(r.get('metrics', {}).get(metric, math.nan))], np.float64)


def _fmt(x: float, digits: int = 2) -> str:
  return '–' if not np.isfinite(x) else f'{x:.{digits}f}'


def markdown(table: Sequence[Mapping[str, Any]]) -> str:
  """The paper's layout (task x setting) twice: Lee's aggregation, then plain mean ± 95% CI."""
  if not table:
    return '(no finished trials)\n'
  ks = sorted({r['trainable_blocks'] for r in table}, reverse=True)
  keys = list(dict.fromkeys((r['task'], r['model'], r['train_size']) for r in table))
  cell = {(r['task'], r['model'], r['train_size'], r['trainable_blocks']): r for r in table}
  multi = len({(m, s) for _, m, s in keys}) > 1

  def name(key):
    task, model, size = key
    extra = f' ({os.path.basename(str(model))}, {plots.size_label(size)})' if multi else ''
    row = next(r for r in table if r['task'] == task)
    return task_label(row['task_name'], row['metric']) + extra

  labels = {k: next(r['setting'] for r in table if r['trainable_blocks'] == k) for k in ks}
  header = '| Task | ' + ' | '.join(labels[k] for k in ks) + ' |\n|---|' + '---|' * len(ks) + '\n'
  get = lambda key, k, f: cell[(*key, k)][f] if (*key, k) in cell else math.nan

  lines = ['## Lee et al. aggregation (dev ×100: mean of the runs above 0.9 × the best, zero '
           'runs dropped)\n', header]
  for key in keys:
    lines.append(f'| {name(key)} | ' + ' | '.join(_fmt(get(key, k, 'lee')) for k in ks) + ' |\n')
  # Every column of a Rel. % row averages the same tasks: those with a score in every column.
  complete = [key for key in keys if all((*key, k) in cell for k in ks)]
  relative = lambda field: ' | '.join(
      _fmt(np.mean([get(key, k, field) for key in complete]) if complete else math.nan)
      for k in ks)
  lines.append(f'| Rel. % | {relative("relative_lee")} |\n')
  lines.append('| train FLOPs / full | ' + ' | '.join(
      _fmt(np.nanmean([get(key, k, 'train_flops_fraction') for key in keys])) for k in ks) + ' |\n')
  over = ', '.join(name(key) for key in complete) or 'none: no task has every column'
  lines.append('\n"Rel. %" is the mean over tasks of each task\'s score as % of its full '
               f'fine-tuning score, over the tasks with a score in every column ({over}). '
               'Columns name the blocks trained (0-based); embeddings train only under Full; '
               'pooler and classifier always train.\n\n')
  lines += ['## Plain mean ± 95% CI half-width (dev ×100; n runs)\n', header]
  for key in keys:
    cells = []
    for k in ks:
      if (*key, k) not in cell:
        cells.append('–')
        continue
      r = cell[(*key, k)]
      half = (r['ci95_high'] - r['ci95_low']) / 2
      cells.append(f'{_fmt(r["mean"])} ± {_fmt(half)} ({r["n"]})')
    lines.append(f'| {name(key)} | ' + ' | '.join(cells) + ' |\n')
  lines.append(f'| Rel. % | {relative("relative_mean")} |\n')
  return ''.join(lines)


def write_csv(path: str, table: Sequence[Mapping[str, Any]]) -> None:
  files.write_csv(path, CSV_FIELDS, table, extrasaction='ignore')


# ----------------------------------------------------------------------------- the figure


def relative_curves(records: Sequence[Mapping[str, Any]], table: Sequence[Mapping[str, Any]],
                    num_layers: Mapping[str, int]) -> list[tuple]:
  """Per (task, model, train_size): (task, model, size, L, ks, samples, bounds, metric), each
  run's score as % of the plain mean of the task's full fine-tuning runs.

  The plain mean, not Lee's aggregate, so that the Full point sits at 100 and each curve's means
  are the table's `relative_mean` (Lee's aggregate drops runs below 0.9 x the best; dividing all
  runs by it put CoLA's Full at 94%).
  """
  full = {(r['task'], r['model'], r['train_size']): r['mean'] for r in table
          if r['trainable_blocks'] == num_layers[r['task']]}
  curves = []
  for (task, model, size), ref in full.items():
    if not np.isfinite(ref) or ref <= 0:
      continue
    recs = [r for r in records if r['task'] == task and r.get('model') == model
            and r.get('train_size') == size and KEY in (r.get('setting') or {})]
    metric = data_lib.record_spec(task, recs).primary_metric
    ks = sorted({int(r['setting'][KEY]) for r in recs})
    samples = [100.0 * 100.0 * _values([r for r in recs if r['setting'][KEY] == k], metric) / ref
               for k in ks]
    # A score's range, as % of this task's full fine-tuning score.
    lim = tuple(100.0 * 100.0 * b / ref for b in plots.bounds(metric))
    curves.append((task, model, size, num_layers[task], ks, samples, lim, metric))
  return curves


def mean_relative(table: Sequence[Mapping[str, Any]],
                  num_layers: Mapping[str, int]) -> dict[float, float]:
  """The table's plain-mean Rel. % row by fraction of blocks trained k / L, over the tasks with
  every k (as `markdown` averages); empty unless two or more tasks qualify."""
  keys = list(dict.fromkeys((r['task'], r['model'], r['train_size']) for r in table))
  fractions = sorted({r['trainable_blocks'] / num_layers[r['task']] for r in table})
  cell = {(r['task'], r['model'], r['train_size'], r['trainable_blocks'] / num_layers[r['task']]):
          r['relative_mean'] for r in table}
  complete = [key for key in keys if all((*key, f) in cell for f in fractions)]
  if len(complete) < 2:
    return {}
  return {f: float(np.mean([cell[(*key, f)] for key in complete])) for f in fractions}


def plot_relative(workdir: str, records: Sequence[Mapping[str, Any]],
                  table: Sequence[Mapping[str, Any]], num_layers: Mapping[str, int],
                  info: plots.RunInfo | None = None,
                  infos: Mapping[str, plots.RunInfo | None] | None = None) -> list[str]:
  """Score as % of full fine-tuning vs trainable blocks: one line per task (mean ± 95% CI over
  runs, `relative_curves`), and against the fraction of blocks trained beside the paper's
  BERT-base row of the same tasks and ours (`mean_relative`). Each task's majority-class score
  (`info` for a single run, `infos` by task for merged ones) is drawn in its curve's color."""
  curves = relative_curves(records, table, num_layers)
  if not curves:
    return []
  full = {(r['task'], r['model'], r['train_size']): r['mean'] for r in table
          if r['trainable_blocks'] == num_layers[r['task']]}
  names = {r['task']: r['task_name'] for r in table}
  models = sorted({os.path.basename(str(m)) for _, m, *_ in curves})
  infos = dict(infos or {})
  if info is not None and len({c[0] for c in curves}) == 1:
    infos[curves[0][0]] = info
  chance = lambda ax, curve, color: plots.chance_line(
      ax, infos.get(curve[0]), curve[-1], 100.0 * 100.0 / full[curve[:3]],
      '' if len(curves) == 1 else f', {names[curve[0]]}', None if len(curves) == 1 else color)
  return [_plot_vs_k(workdir, curves, names, models, info, chance),
          _plot_vs_fraction(workdir, curves, table, num_layers, names, models, info, chance)]


def _plot_vs_k(workdir, curves, names, models, info, chance) -> str:
  multi = len({(m, s) for _, m, s, *_ in curves}) > 1
  fig, ax = plots.figure()
  for curve in curves:
    task, model, size, L, ks, samples, lim, metric = curve
    label = _curve_label(names[task], metric, info) + (f' ({os.path.basename(str(model))}, '
                                        f'{plots.size_label(size)})' if multi else '')
    line = plots.line_with_ci(ax, ks, samples, label, bounds=lim, step=1)
    chance(ax, curve, line.get_color())
  ax.axhline(90, color='gray', linestyle=':', linewidth=1, label='90% of full')
  ax.set_xlabel('trainable blocks k (top k of L; k = L: full fine-tuning incl. embeddings)')
  ax.set_ylabel('dev score, % of full fine-tuning (mean of its runs)')
  ax.set_xticks(sorted({k for c in curves for k in c[4]}))
  _legend(ax, len(curves))
  tasks = (info.data if info is not None and info.data else
           ', '.join(names[t] for t in dict.fromkeys(c[0] for c in curves)))
  ax.set_title(f'Freezing: relative score vs trainable blocks\n{tasks}, {", ".join(models)}',
               fontsize=9)
  return plots.save(fig, workdir, 'relative_vs_trainable_blocks')


def _plot_vs_fraction(workdir, curves, table, num_layers, names, models, info, chance) -> str:
  fig, ax = plots.figure()
  for curve in curves:
    task, _, _, L, ks, samples, lim, metric = curve
    line = plots.line_with_ci(ax, [k / L for k in ks], samples,
                              _curve_label(names[task], metric, info), bounds=lim, step=1 / L)
    chance(ax, curve, line.get_color())
  # The paper's row over the same tasks (a task's own row in its own workdir), not its 8-task one.
  tasks = list(dict.fromkeys(c[0] for c in curves))
  paper, pk = paper_relative(tasks), sorted(PAPER_BERT_BASE_REL)
  which = [names[t] for t in tasks if t in PAPER_BERT_BASE]
  what = ((which[0] + ' row') if len(which) == 1 else
          f'mean over {", ".join(which)}' if which else 'mean over its 8 tasks')
  _row(ax, [k / PAPER_LAYERS for k in pk], [paper[k] for k in pk], 1 / PAPER_LAYERS,
       linestyle='--', marker='s', label=f'Lee et al., BERT-base ({what})')
  ours_row = mean_relative(table, num_layers)
  if ours_row:
    L = max(c[3] for c in curves)
    _row(ax, list(ours_row), list(ours_row.values()), 1 / L, linestyle='-', marker='D',
         linewidth=2, label='ours, mean over tasks (Rel. % row, plain means)')
  ax.axhline(90, color='gray', linestyle=':', linewidth=1)
  ax.set_xlabel('fraction of blocks trained (k / L)')
  ax.set_ylabel('dev score, % of full fine-tuning (mean of its runs)')
  _legend(ax, len(curves))
  ours = f'{", ".join(models)} on {info.data}' if info is not None and info.data else ', '.join(models)
  ax.set_title(f'Ours ({ours})\nvs Lee et al. BERT-base', fontsize=9)
  return plots.save(fig, workdir, 'relative_vs_fraction_vs_paper')


def _row(ax, xs, ys, step: float, **style) -> None:
  """A row of means (no spread) in black, joined only across neighbouring grid values that were
  run (`plots.runs`): the paper ran no k between L/2 and L either."""
  for i, idx in enumerate(plots.runs(xs, step)):
    ax.plot([xs[j] for j in idx], [ys[j] for j in idx], color='black',
            **{**style, 'label': style.get('label') if i == 0 else None})


def _legend(ax, n_curves: int) -> None:
  """Beside the axes when several tasks' curves and majority lines would cover the data."""
  if n_curves > 1:
    ax.figure.set_size_inches(9.6, 4.2)
    plots.legend(ax, fontsize=7, loc='upper left', bbox_to_anchor=(1.01, 1.0))
  else:
    plots.legend(ax, fontsize=7)


# ----------------------------------------------------------------------------- entry points


def _curve_label(name: str, metric: str, info: plots.RunInfo | None) -> str:
  """'SST-2 acc'; a single run names its own data ('demo sentiment set acc')."""
  if info is None or not info.data:
    return task_label(name, metric)
  return f'{info.data.split(" (")[0]} {METRIC_SHORT.get(metric, metric)}'


def write_all(workdir: str, records: Sequence[Mapping[str, Any]],
              num_layers: Mapping[str, int], info: plots.RunInfo | None = None,
              sources: Sequence[str] = (),
              infos: Mapping[str, plots.RunInfo | None] | None = None) -> list[dict]:
  """table.md, table.csv and plots/ in `workdir`; returns the table rows. A custom task's name
  comes from the task.json of `workdir` or of the first of `sources` (the merged workdirs)."""
  table = rows(records, num_layers, (workdir, *sources))
  with open(os.path.join(workdir, 'table.md'), 'w', encoding='utf-8') as f:
    if info is not None and info.data:
      f.write(f'Data: {info.data}.\n\n')
    f.write(markdown(table))
  write_csv(os.path.join(workdir, 'table.csv'), table)
  plot_relative(workdir, records, table, num_layers, info, infos)
  return table


def infer_num_layers(records: Iterable[Mapping[str, Any]]) -> dict[str, int]:
  """L per task from the largest k run (the sweep includes full fine-tuning, k = L)."""
  out: dict[str, int] = {}
  for r in records:
    if KEY in (r.get('setting') or {}):
      out[r['task']] = max(out.get(r['task'], 0), int(r['setting'][KEY]))
  return out


def combine(workdirs: Sequence[str], out: str, num_layers: int = 0) -> list[dict]:
  """Merges freeze.py workdirs (one per task) into `out`: trials.jsonl, summary.csv, config.json
  (each run's resolved config, by workdir), table.md, table.csv and plots/."""
  records, configs = [], {}
  for d in workdirs:
    recs = records_lib.read_records(os.path.join(d, 'trials.jsonl'))
    if not recs:
      raise SystemExit(f'{d} has no trials.jsonl records')
    records += recs
    with open(os.path.join(d, 'config.json'), encoding='utf-8') as f:
      configs[os.path.relpath(d, out)] = json.load(f)
  os.makedirs(out, exist_ok=True)
  path = os.path.join(out, 'trials.jsonl')
  if os.path.exists(path):
    os.remove(path)
  records_lib.append_records(path, records)
  summary.write_summary_csv(os.path.join(out, 'summary.csv'), records)
  with open(os.path.join(out, 'config.json'), 'w', encoding='utf-8') as f:
    json.dump(configs, f, indent=2, sort_keys=True)
  layers = infer_num_layers(records)
  if num_layers:
    layers = {t: num_layers for t in layers}
  infos = {t: base.merged_run_info(configs, t) for t in layers}
  return write_all(out, records, layers, sources=workdirs, infos=infos)


def main(argv: Sequence[str] | None = None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('workdirs', nargs='+', help='freeze.py workdirs (one per task)')
  parser.add_argument('--out', required=True, help='where the merged table and plots go')
  parser.add_argument('--num_layers', type=int, default=0,
                      help='L of the model (default: the largest trainable_blocks run)')
  args = parser.parse_args(argv)
  table = combine(args.workdirs, args.out, args.num_layers)
  sys.stdout.write(markdown(table))


if __name__ == '__main__':
  main()
