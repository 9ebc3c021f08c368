"""The paired bootstrap over dev examples and seeds (Dror et al. 2018, "The Hitchhiker's Guide to
Testing Statistical Significance in NLP"): how sure is "A beats B"?

summary.csv's t interval over 3 seeds sees only the seeds' spread; the dev set is a sample too
(RTE has 277 examples), and its noise is shared by every setting scored on it. Here each replicate
resamples the dev examples (the same indices for A and B, so the noise both share cancels) and the
seeds (the same draws for A and B, trials paired by seed and train size), scores every resampled
trial by the metric, averages over the resampled seeds and takes A - B. Reported: the observed
difference of the seed means, the 95% percentile interval of the replicates, and the fraction of
replicates <= 0 (a one-sided p-value for A > B).

The replicates are vectorized: a resample is a row of draw counts per dev example, and every
metric is computed from count-weighted sums (confusion counts; weighted moments of scores or of
the resample's average ranks), equal to `data.metrics` on the resampled rows.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import os
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from absl import logging
import numpy as np

from jaxtransfer.data import glue
from jaxtransfer.data import metrics as metrics_lib
from jaxtransfer.data.types import TaskSpec
from jaxtransfer.errors import UserError
from jaxtransfer.report import summary
from jaxtransfer.runtime import files
from jaxtransfer.runtime import predictions as predictions_lib
from jaxtransfer.runtime import records as records_lib

REPLICATES = 1000
CHUNK_CELLS = 1 << 22  # replicates x dev examples per vectorized chunk (~32 MB of float64 counts)

# Header of differences.csv, fixed by docs/CONTRACT.md.
DIFFERENCE_FIELDS = ('train_size', 'setting', 'reference', 'metric', 'n', 'diff', 'ci95_low',
                     'ci95_high', 'p')


@dataclasses.dataclass(frozen=True)
class Difference:
  """A - B by the paired bootstrap, over `n_seeds` paired trials and `n_dev` dev examples."""
  metric: str
  n_seeds: int
  n_dev: int
  mean_a: float
  mean_b: float
  diff: float        # mean_a - mean_b, the observed difference of the seed means
  ci95_low: float    # 2.5th / 97.5th percentiles of the replicates' differences
  ci95_high: float
  p: float           # fraction of replicates <= 0: the one-sided p-value for A > B
  replicates: int    # replicates with a finite difference (an undefined correlation drops one)


# ----------------------------------------------------------------------------- metrics of resamples


def split_metric(name: str) -> tuple[str, str]:
  """('accuracy', '_mm') for 'accuracy_mm': the metric function's name and the dev split suffix."""
  base, _, rest = name.partition('_')
  return base, f'_{rest}' if rest else ''


def _weighted(w: np.ndarray, x: np.ndarray) -> np.ndarray:
  """Count-weighted sums over the examples: (R, N) counts x (T, N) values -> (R, T)."""
  return w @ np.asarray(x, np.float64).T


def _accuracy(preds, labels, w):
  return _weighted(w, preds == labels) / w.sum(1, keepdims=True)


def _f1(preds, labels, w):
  """Binary F1 of class 1; 0 without any positive, as `metrics.f1`."""
  p, y = preds == 1, labels == 1
  tp, fp, fn = _weighted(w, p & y), _weighted(w, p & ~y), _weighted(w, ~p & y)
  denom = 2 * tp + fp + fn
  with np.errstate(invalid='ignore', divide='ignore'):
    return np.where(denom > 0, 2 * tp / denom, 0.0)


def _mcc(preds, labels, w):
  """Multiclass Matthews correlation from the resamples' confusion sums (`metrics`' formula)."""
  classes = np.unique(np.concatenate([labels, preds.ravel()]))
  n = w.sum(1, keepdims=True)
  t_sum = _weighted(w, labels[None] == classes[:, None])                       # (R, K)
  hot = (preds[:, :, None] == classes).transpose(0, 2, 1).reshape(-1, len(labels))
  p_sum = _weighted(w, hot).reshape(len(w), len(preds), len(classes))         # (R, T, K)
  cov_ytyp = _weighted(w, preds == labels) * n - np.einsum('rk,rtk->rt', t_sum, p_sum)
  cov_ypyp = n * n - (p_sum ** 2).sum(-1)
  cov_ytyt = n * n - (t_sum ** 2).sum(-1, keepdims=True)
  denom = cov_ypyp * cov_ytyt
  with np.errstate(invalid='ignore', divide='ignore'):
    return np.where(denom == 0, 0.0, cov_ytyp / np.sqrt(np.where(denom == 0, 1, denom)))


def _pearson_rows(x, y, w):
  """Count-weighted Pearson correlation of each row (R, N); nan where either side is constant
  (as `metrics.pearson`). Centred first, so a constant row's variance is exactly 0."""
  n = w.sum(1, keepdims=True)
  dx = x - (w * x).sum(1, keepdims=True) / n
  dy = y - (w * y).sum(1, keepdims=True) / n
  vx, vy = (w * dx * dx).sum(1), (w * dy * dy).sum(1)
  with np.errstate(invalid='ignore', divide='ignore'):
    return np.where((vx > 0) & (vy > 0), (w * dx * dy).sum(1) / np.sqrt(vx * vy), np.nan)


def _midranks(values, w):
  """Every example's average rank within each resample (ties averaged, as scipy's rankdata on
  the resampled rows): the copies of smaller values, plus the mean position among its own."""
  uniq, inv = np.unique(values, return_inverse=True)
  order = np.argsort(inv, kind='stable')
  starts = np.searchsorted(inv[order], np.arange(len(uniq)))
  copies = np.add.reduceat(w[:, order], starts, axis=1)                     # (R, distinct)
  return (np.cumsum(copies, axis=1) - (copies - 1) / 2)[:, inv]


def _pearson(preds, labels, w):
  y = np.broadcast_to(labels.astype(np.float64), w.shape)
  return np.stack([_pearson_rows(np.broadcast_to(p.astype(np.float64), w.shape), y, w)
                   for p in preds], axis=1)


def _spearman(preds, labels, w):
  y = _midranks(labels, w)
  return np.stack([_pearson_rows(_midranks(p, w), y, w) for p in preds], axis=1)


_RESAMPLED = {'accuracy': _accuracy, 'f1': _f1, 'mcc': _mcc, 'pearson': _pearson,
              'spearman': _spearman}


def resampled_scores(metric: str, preds: np.ndarray, labels: np.ndarray,
                     counts: np.ndarray) -> np.ndarray:
  """(R, T): the metric (a name of `data.metrics`, no split suffix) of each of T trials'
  predictions (T, N) on each of R resamples of the dev set, given as draw counts (R, N)."""
  if metric not in _RESAMPLED:
    raise UserError(f'metric {metric!r} is not one of {", ".join(_RESAMPLED)}.')
  preds, labels = np.asarray(preds), np.asarray(labels).ravel()
  return _RESAMPLED[metric](preds, labels, np.asarray(counts, np.float64))


# ----------------------------------------------------------------------------- the bootstrap


def _draws(rng: np.random.Generator, n: int, size: int) -> np.ndarray:
  """(size, n) counts of each of n items in `size` resamples of n draws with replacement."""
  idx = rng.integers(0, n, (size, n)) + n * np.arange(size)[:, None]
  return np.bincount(idx.ravel(), minlength=size * n).reshape(size, n)


def paired_bootstrap(preds_a, preds_b, labels, metric: str, replicates: int = REPLICATES,
                     seed: int = 0) -> Difference:
  """A - B over paired trials: `preds_a[i]` and `preds_b[i]` (S, N) are the dev predictions of
  one seed (and train size) under A and B, scored against `labels` (N,) by `metric` (e.g.
  'accuracy', 'mcc'; a split suffix such as '_mm' only names the result). Seeded: the same
  inputs and seed give the same interval."""
  a, b, labels = np.asarray(preds_a), np.asarray(preds_b), np.asarray(labels).ravel()
  if a.ndim != 2 or a.shape != b.shape or a.shape[1] != len(labels) or not a.size:
    raise ValueError(f'paired predictions of shapes {a.shape} and {b.shape} for {len(labels)} '
                     'labels: expected (seeds, dev examples) each')
  if replicates < 1:
    raise UserError(f'replicates={replicates}: give at least 1 (1,000 is the default).')
  base, _ = split_metric(metric)
  if base not in _RESAMPLED:
    raise UserError(f'metric {metric!r} is not one of {", ".join(_RESAMPLED)} (with a dev split '
                    'suffix such as _mm).')
  fn = metrics_lib.metric_function(base)
  mean_a = float(np.mean([fn(p, labels) for p in a]))
  mean_b = float(np.mean([fn(p, labels) for p in b]))
  (s, n), both = a.shape, np.concatenate([a, b])
  rng = np.random.default_rng(seed)
  diffs = []
  chunk = max(1, CHUNK_CELLS // n)
  for lo in range(0, replicates, chunk):
    r = min(chunk, replicates - lo)
    dev, seeds = _draws(rng, n, r), _draws(rng, s, r)
    scores = resampled_scores(base, both, labels, dev)
    d = np.where(seeds > 0, scores[:, :s] - scores[:, s:], 0.0)  # undrawn: adds 0, even if nan
    diffs.append((d * seeds).sum(1) / s)
  diffs = np.concatenate(diffs)
  diffs = diffs[np.isfinite(diffs)]
  low, high = np.percentile(diffs, [2.5, 97.5]) if diffs.size else (np.nan, np.nan)
  return Difference(metric, s, n, mean_a, mean_b, mean_a - mean_b, float(low), float(high),
                    float(np.mean(diffs <= 0)) if diffs.size else np.nan, int(diffs.size))


# ----------------------------------------------------------------------------- trials of a workdir


def matches(setting: Mapping[str, Any] | None, query: Mapping[str, Any]) -> bool:
  """Whether a record's setting has every key=value of `query` (other keys may be anything)."""
  setting = setting or {}
  return all(k in setting and _same(setting[k], v) for k, v in query.items())


def _same(a, b) -> bool:
  """Equal as JSON values: 1 == 1.0, but True != 1, '6' != 6, and lists item by item."""
  if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
    return len(a) == len(b) and all(map(_same, a, b))
  if isinstance(a, bool) or isinstance(b, bool):
    return type(a) is type(b) and a == b
  return a == b


def pair_trials(recs_a: Sequence[Mapping], recs_b: Sequence[Mapping], preds: Mapping,
                suffix: str, workdir: str):
  """(seeds, A (S, N), B (S, N), labels, unpaired seeds) of two settings' ok trials at one train
  size, paired by seed; UserError when an ok trial has no predictions or the dev sets differ."""
  missing = [r['trial_id'] for r in (*recs_a, *recs_b) if r['trial_id'] not in preds
             or suffix not in preds[r['trial_id']].preds]
  if missing:
    raise UserError(
        f'No dev predictions for {len(missing)} trial(s) of {workdir} ({", ".join(missing[:4])}'
        f'{", ..." if len(missing) > 4 else ""}): {predictions_lib.DIRNAME}/ lacks them (a run '
        'made before predictions were kept, or their files were deleted). Run those settings '
        'again in a new --workdir; every ok trial then keeps its predictions.')
  by_a = {r['seed']: preds[r['trial_id']] for r in recs_a}
  by_b = {r['seed']: preds[r['trial_id']] for r in recs_b}
  seeds = sorted(set(by_a) & set(by_b))
  unpaired = sorted(set(by_a) ^ set(by_b))
  if not seeds:
    raise UserError(f'The two settings share no seed with an ok trial in {workdir} (A: seeds '
                    f'{sorted(by_a)}, B: {sorted(by_b)}). Run both with the same --config.seeds.')
  labels = by_a[seeds[0]].labels[suffix]
  if any(not np.array_equal(t.labels[suffix], labels)
         for t in (*(by_a[s] for s in seeds), *(by_b[s] for s in seeds))):
    raise UserError(f'The trials of the two settings in {workdir} were scored on different dev '
                    'examples (another eval_max_examples or data): compare trials of one dev set.')
  return (seeds, np.stack([by_a[s].preds[suffix] for s in seeds]),
          np.stack([by_b[s].preds[suffix] for s in seeds]), labels, unpaired)


def read_workdir(workdir: str) -> tuple[list[dict], TaskSpec]:
  """The records of a finished run's workdir and its task; UserError when there are none."""
  if '://' in str(workdir):
    raise UserError(f'{workdir} is a remote workdir: compare its local mirror (the run logs '
                    '"Mirroring ... in DIR") or a copy of it (gsutil -m cp -r).')
  if not os.path.isdir(workdir):
    raise UserError(f'Workdir {workdir} does not exist: give the --workdir of a finished run '
                    '(the directory that holds its trials.jsonl).')
  records = records_lib.read_records(os.path.join(workdir, 'trials.jsonl'))
  if not records:
    raise UserError(f'{workdir} holds no trial records (trials.jsonl is missing or empty): give '
                    'the --workdir of a run that finished some trials.')
  # A custom task is read from the workdir's task.json, as every analysis reads it.
  return records, glue.record_spec(records[0].get('task'), records, (workdir,))


def choose_metric(task: TaskSpec, metric: str | None) -> str:
  """`metric`, or the task's primary one, checked against what the task reports."""
  allowed = [m + s for s in task.dev_splits for m in task.metrics]
  metric = metric or task.primary_metric
  if metric not in allowed:
    raise UserError(f'--metric {metric}: the {task.name} trials report {", ".join(allowed)}; '
                    f'choose one of them (the default is the task\'s own, {task.primary_metric}).')
  return metric


def _words(query: Mapping[str, Any]) -> str:
  return ','.join(f'{k}={json.dumps(v) if not isinstance(v, str) else v}'
                  for k, v in query.items())


def select_setting(records: Sequence[Mapping], query: Mapping[str, Any], flag: str,
                   workdir: str) -> str:
  """The one setting (as summary.setting_json) of `records` that `query` matches."""
  # dict.fromkeys: distinct settings in the order the study ran them
  found = list(dict.fromkeys(summary.setting_json(r.get('setting')) for r in records
                             if matches(r.get('setting'), query)))
  if len(found) == 1:
    return found[0]
  if not found:
    known = list(dict.fromkeys(summary.setting_json(r.get('setting')) for r in records))
    shown = ', '.join(known[:8]) + (f' and {len(known) - 8} more' if len(known) > 8 else '')
    example = _words(json.loads(known[0]))
    raise UserError(f'--{flag} {_words(query)} matches no setting of the trials in '
                    f'{workdir}/trials.jsonl, whose settings are {shown}. Give key=value pairs '
                    f'of one of them, comma-separated (e.g. --{flag} {example}).')
  raise UserError(f'--{flag} {_words(query)} matches {len(found)} settings in {workdir} '
                  f'({", ".join(found[:6])}): add key=value pairs that pick one, '
                  f'comma-separated (e.g. --{flag} {_words(json.loads(found[0]))}).')


@dataclasses.dataclass(frozen=True)
class Comparison:
  """Two settings of a workdir at one train size."""
  train_size: int
  setting_a: str      # summary.setting_json
  setting_b: str
  difference: Difference
  seeds: list[int]     # paired
  unpaired: list[int]  # seeds with an ok trial under one setting only


def compare_workdir(workdir: str, a: Mapping[str, Any], b: Mapping[str, Any],
                    metric: str | None = None, train_size: int | None = None,
                    replicates: int = REPLICATES, seed: int = 0) -> list[Comparison]:
  """A - B by the paired bootstrap for the settings `a` and `b` select (key=value pairs matched
  against the records' settings), at `train_size` or at every size both ran."""
  records, task = read_workdir(workdir)
  metric = choose_metric(task, metric)
  text_a, text_b = (select_setting(records, q, f, workdir) for q, f in ((a, 'a'), (b, 'b')))
  ok = [r for r in records if r.get('status') == 'ok']
  recs = {t: [r for r in ok if summary.setting_json(r.get('setting')) == t]
          for t in (text_a, text_b)}
  sizes = sorted({r['train_size'] for r in recs[text_a]} & {r['train_size'] for r in recs[text_b]})
  if train_size is not None:
    if train_size not in sizes:
      raise UserError(f'--train_size {train_size}: both settings have ok trials at train sizes '
                      f'{sizes or "none"} in {workdir}; give one of them (0 = the whole set).')
    sizes = [train_size]
  if not sizes:
    raise UserError(f'{text_a} and {text_b} have no train size where both have ok trials in '
                    f'{workdir}: compare settings that ran (and finished) at the same size.')
  preds = predictions_lib.for_records(workdir, recs[text_a] + recs[text_b])
  out = []
  for size in sizes:
    at = {t: [r for r in rs if r['train_size'] == size] for t, rs in recs.items()}
    seeds, pa, pb, labels, unpaired = pair_trials(at[text_a], at[text_b], preds,
                                                  split_metric(metric)[1], workdir)
    out.append(Comparison(size, text_a, text_b,
                          paired_bootstrap(pa, pb, labels, metric, replicates, seed), seeds,
                          unpaired))
  return out


def format_comparisons(workdir: str, comparisons: Sequence[Comparison], replicates: int,
                       seed: int) -> str:
  """The comparison as a table, headed by what was compared and how."""
  first = comparisons[0]
  lines = [f'Paired bootstrap over dev examples and seeds (Dror et al. 2018) in {workdir}, '
           f'{replicates:,} replicates (seed {seed}):',
           f'  A = {first.setting_a}', f'  B = {first.setting_b}',
           f'{"train_size":>10}  {"metric":<11} {"seeds":>5} {"dev":>6}  {"mean A":>7}  '
           f'{"mean B":>7}  {"A - B":>8}  {"95% CI":<20}  {"p":>6}']
  for c in comparisons:
    d = c.difference
    size = 'full' if not c.train_size else str(c.train_size)
    lines.append(f'{size:>10}  {d.metric:<11} {d.n_seeds:>5} {d.n_dev:>6}  {d.mean_a:7.4f}  '
                 f'{d.mean_b:7.4f}  {d.diff:+8.4f}  [{d.ci95_low:+.4f}, {d.ci95_high:+.4f}]  '
                 f'{d.p:6.4f}')
  lines.append('p: the fraction of replicates with A - B <= 0, a one-sided p-value for A > B.')
  for c in comparisons:
    if c.unpaired:
      lines.append(f'Left out at train size {c.train_size or "full"}: seeds {c.unpaired}, '
                   'with an ok trial under one setting only.')
  return '\n'.join(lines)


# ----------------------------------------------------------------------------- differences.csv


def differences(records: Iterable[Mapping], preds: Mapping, reference: Mapping[str, Any],
                metric: str, replicates: int = REPLICATES, seed: int = 0,
                workdir: str = '') -> list[dict[str, Any]]:
  """Every setting's paired-bootstrap difference to its reference, per train size: the setting
  with `reference`'s key=values and the compared setting's own other values ({'k': 6} compares
  {'k': 3, 'scheme': 'bert'} with {'k': 6, 'scheme': 'bert'}). A setting whose reference did not
  run, or whose trials cannot be paired, is left out with a warning."""
  by = collections.defaultdict(list)
  for r in records:
    if r.get('status') == 'ok':
      by[(r['train_size'], summary.setting_json(r.get('setting')))].append(r)
  rows = []
  for (size, text) in by:  # the order the study ran them: its sweep's
    setting = json.loads(text)
    if matches(setting, reference):
      continue
    ref = summary.setting_json({**setting, **reference})
    if (size, ref) not in by:
      logging.warning('differences.csv: %s at train size %s has no reference %s.', text, size, ref)
      continue
    try:
      _, pa, pb, labels, _ = pair_trials(by[(size, text)], by[(size, ref)], preds,
                                         split_metric(metric)[1], workdir)
    except UserError as e:
      logging.warning('differences.csv leaves out %s at train size %s: %s', text, size, e)
      continue
    d = paired_bootstrap(pa, pb, labels, metric, replicates, seed)
    rows.append({'train_size': size, 'setting': text, 'reference': ref, 'metric': metric,
                 'n': d.n_seeds, 'diff': d.diff, 'ci95_low': d.ci95_low,
                 'ci95_high': d.ci95_high, 'p': d.p})
  return rows


def write_differences_csv(workdir: str, records: Sequence[Mapping], reference: Mapping[str, Any],
                          metric: str) -> list[dict[str, Any]]:
  """differences.csv in `workdir` (atomically), from the records and their predictions/."""
  rows = differences(records, predictions_lib.for_records(workdir, records), reference, metric,
                     workdir=workdir)
  files.write_csv(os.path.join(workdir, 'differences.csv'), DIFFERENCE_FIELDS, rows)
  return rows
