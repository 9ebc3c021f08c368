"""Summary statistics of trial records per (train size, setting, metric), and summary.csv."""

from __future__ import annotations

import collections
import csv
import json
import math
import os
from collections.abc import Iterable, Mapping
from typing import Any

from absl import logging
import numpy as np

from jaxtransfer.report import stats
from jaxtransfer.runtime import files
from jaxtransfer.runtime import records as records_lib
from jaxtransfer.runtime.records import json_safe

SettingKey = tuple[Any, str]  # (train_size, setting rendered as compact sorted JSON)

# Header of summary.csv, fixed by docs/CONTRACT.md.
SUMMARY_FIELDS = (
    'experiment', 'task', 'model', 'train_size', 'setting', 'metric',
    'n', 'mean', 'std', 'ci95_low', 'ci95_high', 'n_degenerate',
)

REASON_FAILED = 'failed'
REASON_DEGENERATE = 'degenerate'  # left out of the means with exclude_degenerate
REASON_NON_FINITE = 'non-finite metric'
REASON_NO_METRICS = 'no metrics'


def setting_json(setting: Mapping[str, Any] | None) -> str:
  """The canonical text of a setting: compact JSON with sorted keys ('{}' for none)."""
  return json.dumps(json_safe(dict(setting or {})), sort_keys=True, separators=(',', ':'))


def _order(value: Any) -> tuple[Any, ...]:
  """A total order over JSON-like values: numbers numerically (k=2 before k=10), then strings."""
  if value is None:
    return (0,)
  if isinstance(value, bool):
    return (1, int(value))
  if isinstance(value, (int, float)):
    return (2, float(value))
  if isinstance(value, str):
    return (3, value)
  if isinstance(value, (list, tuple)):
    return (4, tuple(_order(v) for v in value))
  if isinstance(value, Mapping):
    return (5, tuple((str(k), _order(v)) for k, v in sorted(value.items())))
  return (6, repr(value))


def _setting_order(text: str) -> tuple[Any, ...]:
  return _order(json.loads(text))


def _finite(value: Any) -> bool:
  return (isinstance(value, (int, float, np.number)) and not isinstance(value, bool)
          and math.isfinite(float(value)))


def _rows(groups, n_degenerate) -> list[dict[str, Any]]:
  """summary.csv's rows from the values per (experiment, task, model, size, setting, metric)."""
  rows = []
  for (experiment, task, model, train_size, setting, metric), values in groups.items():
    mean, std, low, high = stats.t_ci(values, 0.95)
    low, high = stats.clip_ci(metric, low, high)
    rows.append({
        'experiment': experiment, 'task': task, 'model': model, 'train_size': train_size,
        'setting': setting, 'metric': metric, 'n': len(values), 'mean': mean, 'std': std,
        'ci95_low': low, 'ci95_high': high, 'n_degenerate': n_degenerate[(train_size, setting)],
    })
  rows.sort(key=lambda row: (_order(row['train_size']), _setting_order(row['setting']),
                             row['metric'], _order(row['experiment']), _order(row['task']),
                             _order(row['model'])))
  return rows


def summarize(records: Iterable[Mapping[str, Any]], exclude_degenerate: bool = False
              ) -> tuple[list[dict[str, Any]], dict[SettingKey, dict[str, int]]]:
  """Per-(experiment, task, model, train_size, setting, metric) statistics of the ok trials.

  Returns (rows, left_out). Each row has exactly the keys of SUMMARY_FIELDS; `setting` is the
  setting as compact JSON with sorted keys; the t interval is clipped to the metric's range. Rows are sorted by train_size, setting (numbers
  numerically), metric, then experiment/task/model. Only trials with status "ok" count, and
  each metric only where its value is finite (a NaN f1 leaves the trial out of f1's row only).

  left_out maps (train_size, setting_json) to {'total': trials seen, reason: trials left
  out}, with reasons 'failed' (status not "ok"; other statuses count under their own name),
  'non-finite metric' (left out of at least one metric's row) and 'no metrics'. Every key
  seen appears, so callers can log "2 of 30 trials left out (failed)".

  `n_degenerate` counts the setting's ok trials that ended degenerate (every prediction one class,
  or dev accuracy at the majority class's: the record's `degenerate`); they count in the means
  unless `exclude_degenerate`, which leaves them out (reason 'degenerate').
  """
  groups: dict[tuple[Any, ...], list[float]] = collections.defaultdict(list)
  left_out: dict[SettingKey, dict[str, int]] = {}
  n_degenerate: dict[SettingKey, int] = collections.Counter()
  for r in records:
    setting = setting_json(r.get('setting'))
    skey = (r.get('train_size'), setting)
    counts = left_out.setdefault(skey, {'total': 0})
    counts['total'] += 1
    status = r.get('status')
    if status == 'ok' and r.get('degenerate'):
      n_degenerate[skey] += 1
      if exclude_degenerate:
        counts[REASON_DEGENERATE] = counts.get(REASON_DEGENERATE, 0) + 1
        continue
    if status != 'ok':
      reason = REASON_FAILED if status in ('failed', None) else str(status)
      counts[reason] = counts.get(reason, 0) + 1
      continue
    metrics = r.get('metrics') or {}
    if not metrics:
      counts[REASON_NO_METRICS] = counts.get(REASON_NO_METRICS, 0) + 1
      continue
    any_bad = False
    for name, value in metrics.items():
      if not _finite(value):
        any_bad = True
        continue
      key = (r.get('experiment'), r.get('task'), r.get('model'), r.get('train_size'), setting, name)
      groups[key].append(float(value))
    if any_bad:
      counts[REASON_NON_FINITE] = counts.get(REASON_NON_FINITE, 0) + 1

  rows = _rows(groups, n_degenerate)
  left_out = dict(sorted(left_out.items(),
                         key=lambda kv: (_order(kv[0][0]), _setting_order(kv[0][1]))))
  return rows, left_out


def describe_left_out(left_out: Mapping[SettingKey, Mapping[str, int]]) -> list[str]:
  """One line per setting that lost trials, e.g. 'train_size=500 setting={"k":3}: 2 of 30 ...'."""
  lines = []
  for (train_size, setting), counts in left_out.items():
    reasons = {k: v for k, v in counts.items() if k != 'total' and v}
    if not reasons:
      continue
    lost = sum(reasons.values())
    why = ', '.join(f'{v} {k}' for k, v in sorted(reasons.items()))
    lines.append(f'train_size={train_size} setting={setting}: {lost} of {counts["total"]} '
                 f'trials left out ({why})')
  return lines


def _words(value: Any) -> str:
  if isinstance(value, float):
    return f'{value:g}'
  if isinstance(value, (list, tuple)):
    return ','.join(map(_words, value))
  return str(value)


def describe_row(row: Mapping[str, Any]) -> str:
  """A summary row in words: 'sst2, 1,000 train examples, k=3: accuracy 0.812 (95% CI
  0.781..0.843, 3 trials)'."""
  size = row['train_size']
  parts = [str(row['task']), f'{size:,} train examples' if size else 'full training set']
  parts += [f'{k}={_words(v)}' for k, v in json.loads(row['setting']).items()]
  ci = (f'95% CI {row["ci95_low"]:.3f}..{row["ci95_high"]:.3f}, ' if _finite(row['ci95_low'])
        else '')
  trials = f'{row["n"]} trial' + ('s' if row['n'] != 1 else '')
  return f'{", ".join(parts)}: {row["metric"]} {row["mean"]:.3f} ({ci}{trials})'


def write_summary_csv(path: str | os.PathLike[str], records: Iterable[Mapping[str, Any]],
                      exclude_degenerate: bool = False) -> list[dict[str, Any]]:
  """Writes summary.csv at `path` atomically (temp file + os.replace) and returns its rows.

  Undefined statistics (std and CI of a single trial) are written as 'nan'.
  """
  records = list(records)
  rows, left_out = summarize(records, exclude_degenerate)
  n_bad = sum(1 for r in records if r.get('status') == 'ok' and r.get('degenerate'))
  if n_bad:
    logging.warning('%d of %d finished trials are degenerate (every prediction one class, or dev '
                    'accuracy at the majority class): %s.', n_bad, len(records),
                    'left out of the means (exclude_degenerate)' if exclude_degenerate
                    else 'counted in the means; n_degenerate in summary.csv says where')
  for line in describe_left_out(left_out):
    logging.warning('%s', line)
  with files.atomic_write(path, newline='', encoding='utf-8') as f:
    writer = csv.DictWriter(f, fieldnames=SUMMARY_FIELDS)
    writer.writeheader()
    writer.writerows(rows)
    f.flush()
    os.fsync(f.fileno())
  records_lib.fsync_dir(os.path.dirname(os.path.abspath(path)))
  return rows


def group_by_setting(records: Iterable[Mapping[str, Any]],
                     metric: str) -> dict[SettingKey, np.ndarray]:
  """Values of `metric` over ok trials with a finite value, per (train_size, setting_json).

  Keys are in the same order as summary rows; values keep record order.
  """
  out: dict[SettingKey, list[float]] = collections.defaultdict(list)
  for r in records:
    if r.get('status') != 'ok':
      continue
    value = (r.get('metrics') or {}).get(metric)
    if _finite(value):
      out[(r.get('train_size'), setting_json(r.get('setting')))].append(float(value))
  ordered = sorted(out.items(), key=lambda kv: (_order(kv[0][0]), _setting_order(kv[0][1])))
  return {k: np.asarray(v, dtype=np.float64) for k, v in ordered}
