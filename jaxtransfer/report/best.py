"""The learning rate chosen per setting (best.csv): by the held-out selection split when the run
has one, else by dev (and then said so), with the chosen rate's dev mean and 95% CI."""

from __future__ import annotations

import collections
import json
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from absl import logging
import numpy as np

from jaxtransfer.report import stats
from jaxtransfer.report import summary
from jaxtransfer.runtime import files

LR = 'learning_rate'
BEST_FIELDS = ('experiment', 'task', 'model', 'train_size', 'setting', 'learning_rate',
               'selected_on', 'metric', 'selection_mean', 'n', 'mean', 'std', 'ci95_low',
               'ci95_high', 'n_degenerate', 'learning_rates')


def _without_lr(setting: Mapping[str, Any] | None) -> dict[str, Any]:
  return {k: v for k, v in (setting or {}).items() if k != LR}


def _value(record: Mapping[str, Any], metric: str) -> float:
  v = (record.get('metrics') or {}).get(metric)
  return float(v) if isinstance(v, (int, float)) and math.isfinite(v) else math.nan


def choose(records: Iterable[Mapping[str, Any]], metric: str,
           exclude_degenerate: bool = False) -> list[dict[str, Any]]:
  """One row per (experiment, task, model, train size, setting without its rate): the rate whose
  trials have the best mean `selection_<metric>` over seeds (or, without a selection split, the
  best mean dev `metric`), and that rate's dev statistics."""
  cells: dict[tuple, dict[float, list]] = collections.defaultdict(lambda: collections.defaultdict(list))
  for r in records:
    if r.get('status') != 'ok' or (exclude_degenerate and r.get('degenerate')):
      continue
    setting = r.get('setting') or {}
    lr = float(setting.get(LR, r.get(LR) or math.nan))
    key = (r.get('experiment'), r.get('task'), r.get('model'), r.get('train_size'),
           summary.setting_json(_without_lr(setting)))
    cells[key][lr].append(r)
  rows = []
  for (experiment, task, model, size, setting), by_lr in cells.items():
    on = 'selection' if all(f'selection_{metric}' in (r.get('metrics') or {})
                            for rs in by_lr.values() for r in rs) else 'dev'
    score = lambda rs: np.nanmean([_value(r, f'selection_{metric}' if on == 'selection'
                                          else metric) for r in rs] or [math.nan])
    scored = {lr: score(rs) for lr, rs in by_lr.items()}
    lr = max(sorted(scored), key=lambda k: np.nan_to_num(scored[k], nan=-np.inf))
    chosen = by_lr[lr]
    mean, std, low, high = stats.t_ci([v for r in chosen if not math.isnan(v := _value(r, metric))])
    low, high = stats.clip_ci(metric, low, high)
    rows.append({'experiment': experiment, 'task': task, 'model': model, 'train_size': size,
                 'setting': setting, 'learning_rate': lr, 'selected_on': on, 'metric': metric,
                 'selection_mean': scored[lr], 'n': len(chosen), 'mean': mean, 'std': std,
                 'ci95_low': low, 'ci95_high': high,
                 'n_degenerate': sum(1 for r in chosen if r.get('degenerate')),
                 'learning_rates': ' '.join(f'{k:g}' for k in sorted(by_lr))})
  return rows


def chosen_records(records: Sequence[Mapping[str, Any]], rows: Sequence[Mapping[str, Any]]
                   ) -> list[dict[str, Any]]:
  """The records of each setting's chosen rate, their settings without the rate: what a study's
  own tables and figures draw when rates are swept."""
  pick = {(r['experiment'], r['task'], r['model'], r['train_size'], r['setting']): r[LR]
          for r in rows}
  out = []
  for r in records:
    setting = r.get('setting') or {}
    key = (r.get('experiment'), r.get('task'), r.get('model'), r.get('train_size'),
           summary.setting_json(_without_lr(setting)))
    if LR in setting and key in pick and float(setting[LR]) == pick[key]:
      out.append({**r, 'setting': _without_lr(setting)})
  return out


def write_csv(path: str, rows: Sequence[Mapping[str, Any]]) -> None:
  files.write_csv(path, BEST_FIELDS, rows)
  for r in rows:
    logging.info('best.csv: train_size=%s %s: learning_rate %g (selected on %s%s), dev %s %.4f '
                 '(95%% CI %.4f..%.4f, %d seeds, %d degenerate)', r['train_size'], r['setting'],
                 r['learning_rate'], r['selected_on'],
                 '' if r['selected_on'] == 'selection' else ': the reported set itself',
                 r['metric'], r['mean'], r['ci95_low'], r['ci95_high'], r['n'], r['n_degenerate'])


def plot(workdir: str, rows: Sequence[Mapping[str, Any]], info=None) -> str | None:
  """plots/best_learning_rate.png: each setting's dev score at its chosen rate (mean, 95% CI),
  the rate written above it."""
  from jaxtransfer.report import plots
  if not rows:
    return None
  fig, ax = plots.figure(max(6.4, 0.6 * len(rows)), 4.2)
  xs = np.arange(len(rows))
  means = np.array([r['mean'] for r in rows])
  err = np.array([[r['mean'] - r['ci95_low'], r['ci95_high'] - r['mean']] for r in rows]).T
  ax.errorbar(xs, means, yerr=np.nan_to_num(err), fmt='o', capsize=3)
  for x, r in zip(xs, rows):
    ax.annotate(f'{r["learning_rate"]:g}', (x, r['mean']), textcoords='offset points',
                xytext=(0, 8), ha='center', fontsize=7)
  labels = [_label(r) for r in rows]
  ax.set_xticks(xs, labels, rotation=45, ha='right', fontsize=7)
  plots.chance_line(ax, info, rows[0]['metric'])
  ax.set_ylabel(plots.METRIC_LABELS.get(rows[0]['metric'], rows[0]['metric']))
  on = rows[0]['selected_on']
  ax.set_title(f'Dev score at the learning rate chosen per setting (on the {on} '
               f'{"split" if on == "selection" else "set itself"})', fontsize=9)
  plots.legend(ax, fontsize=8)
  return plots.save(fig, workdir, 'best_learning_rate')


def _label(row: Mapping[str, Any]) -> str:
  setting = json.loads(row['setting'])
  text = ', '.join(f'{k}={v}' for k, v in setting.items()) or 'all'
  return text if row['train_size'] in (0, None) else f'n={row["train_size"]}, {text}'


def write(workdir: str, records: Sequence[Mapping[str, Any]], metric: str, info=None,
          exclude_degenerate: bool = False) -> list[dict[str, Any]]:
  """best.csv and its figure in `workdir`; returns the rows."""
  rows = choose(records, metric, exclude_degenerate)
  write_csv(os.path.join(workdir, 'best.csv'), rows)
  plot(workdir, rows, info)
  if rows and rows[0]['selected_on'] == 'dev':
    logging.warning('best.csv: the learning rates were selected on dev, the set they are reported '
                    'on (no selection split): set --config.selection_split to choose on held-out '
                    'training data instead.')
  return rows
