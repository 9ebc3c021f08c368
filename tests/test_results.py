"""Tests for jaxtransfer.report.summary: trials.jsonl durability, statistics and summary.csv."""

from __future__ import annotations

import csv
import json
import logging
import math
import multiprocessing
import os

import numpy as np
import pytest
import scipy.stats

from jaxtransfer.runtime import records as records_lib

from jaxtransfer.report import stats as stats_lib

from jaxtransfer.report import summary


def _record(trial_id, seed=0, k=12, train_size=500, status='ok', metrics=None, **extra):
  rec = {
      'trial_id': trial_id, 'experiment': 'reinit', 'task': 'sst2', 'model': 'bert-base-uncased',
      'seed': seed, 'train_size': train_size, 'setting': {'k': k},
      'metrics': {'accuracy': 0.9} if metrics is None else metrics,
      'status': status, 'error': None if status == 'ok' else 'boom', 'steps': 10, 'wall_s': 1.5,
  }
  rec.update(extra)
  return rec


def _lines(path):
  with open(path, 'rb') as f:
    data = f.read()
  assert data.endswith(b'\n')
  return [json.loads(line) for line in data.split(b'\n')[:-1]]


# ---------------------------------------------------------------------------- t_ci


@pytest.mark.parametrize('values', [[0.1, 0.2], [0.91, 0.88, 0.93], list(np.linspace(0, 1, 50))])
@pytest.mark.parametrize('confidence', [0.95, 0.9])
def test_t_ci_matches_scipy(values, confidence):
  mean, std, low, high = stats_lib.t_ci(values, confidence)
  x = np.asarray(values)
  exp_low, exp_high = scipy.stats.t.interval(confidence, len(x) - 1, loc=x.mean(),
                                             scale=scipy.stats.sem(x))
  assert mean == pytest.approx(x.mean(), rel=1e-12)
  assert std == pytest.approx(x.std(ddof=1), rel=1e-12)
  assert low == pytest.approx(exp_low, rel=1e-12)
  assert high == pytest.approx(exp_high, rel=1e-12)


def test_t_ci_small_n():
  mean, std, low, high = stats_lib.t_ci([0.5])
  assert mean == 0.5 and math.isnan(std) and math.isnan(low) and math.isnan(high)
  assert all(math.isnan(v) for v in stats_lib.t_ci([]))
  assert stats_lib.t_ci([0.3, 0.3, 0.3])[1:] == (0.0, 0.3, 0.3)
  with pytest.raises(ValueError):
    stats_lib.t_ci([1.0, 2.0], confidence=1.0)


# ---------------------------------------------------------------------------- lee_aggregate


def test_lee_aggregate():
  # best 0.60 -> threshold 0.54: keep 0.60, 0.58, 0.55; drop 0.50 and the zero run.
  assert stats_lib.lee_aggregate([0.60, 0.58, 0.55, 0.50, 0.0]) == pytest.approx((0.60 + 0.58 + 0.55) / 3)
  # Exactly at the threshold is not "> 0.9 x best".
  assert stats_lib.lee_aggregate([1.0, 0.9]) == pytest.approx(1.0)
  assert stats_lib.lee_aggregate([0.8]) == pytest.approx(0.8)
  assert stats_lib.lee_aggregate([0.7, float('nan'), 0.65]) == pytest.approx(0.675)
  assert math.isnan(stats_lib.lee_aggregate([0.0, 0.0]))
  assert math.isnan(stats_lib.lee_aggregate([]))


# ---------------------------------------------------------------------------- trials.jsonl


def test_append_and_read_roundtrip(tmp_path):
  path = tmp_path / 'trials.jsonl'
  assert records_lib.read_records(path) == []
  assert records_lib.finished_ids(path) == set()
  group = [_record('a', extra_key=[1, 2]), _record('b', status='failed', metrics={})]
  records_lib.append_records(path, group)
  records_lib.append_records(path, [_record('c', metrics={'accuracy': np.float32(0.5)})])
  got = records_lib.read_records(path)
  assert [r['trial_id'] for r in got] == ['a', 'b', 'c']
  assert got[0] == group[0]  # extra keys preserved
  assert list(got[0]) == list(group[0])  # key order preserved
  assert got[2]['metrics']['accuracy'] == 0.5
  assert records_lib.finished_ids(path) == {'a', 'b', 'c'}
  assert len(_lines(path)) == 3


def test_non_finite_metrics_written_as_null(tmp_path):
  path = tmp_path / 'trials.jsonl'
  records_lib.append_records(path, [_record('a', metrics={'mcc': float('nan'), 'f1': float('inf'),
                                                      'acc': np.float64('-inf'), 'x': 0.25})])
  raw = path.read_text()
  assert 'NaN' not in raw and 'Infinity' not in raw
  # json.loads with a hook that rejects NaN literals: strict JSON only.
  def reject(token):
    raise ValueError(token)
  (line,) = raw.splitlines()
  rec = json.loads(line, parse_constant=reject)
  assert rec['metrics'] == {'mcc': None, 'f1': None, 'acc': None, 'x': 0.25}


def test_torn_tail_is_dropped_before_append(tmp_path):
  path = tmp_path / 'trials.jsonl'
  records_lib.append_records(path, [_record('a'), _record('b')])
  with open(path, 'ab') as f:  # what a kill -9 mid-write leaves behind
    f.write(b'{"trial_id":"torn","metrics":{"accur')
  # Readers ignore the torn line without error.
  assert [r['trial_id'] for r in records_lib.read_records(path)] == ['a', 'b']
  records_lib.append_records(path, [_record('c'), _record('d')])
  raw = path.read_bytes()
  assert b'torn' not in raw
  assert [r['trial_id'] for r in _lines(path)] == ['a', 'b', 'c', 'd']
  assert [r['trial_id'] for r in records_lib.read_records(path)] == ['a', 'b', 'c', 'd']


def test_torn_only_fragment(tmp_path):
  path = tmp_path / 'trials.jsonl'
  path.write_bytes(b'{"trial_id":"to')  # killed during the very first write
  assert records_lib.read_records(path) == []
  records_lib.append_records(path, [_record('a')])
  assert [r['trial_id'] for r in _lines(path)] == ['a']


def test_read_skips_invalid_and_duplicate(tmp_path, caplog):
  path = tmp_path / 'trials.jsonl'
  records_lib.append_records(path, [_record('a', seed=1)])
  with open(path, 'ab') as f:
    f.write(b'not json\n[1, 2]\n')
  records_lib.append_records(path, [_record('a', seed=2), _record('b')])
  with caplog.at_level(logging.WARNING):
    got = records_lib.read_records(path)
  assert [(r['trial_id'], r['seed']) for r in got] == [('a', 1), ('b', 0)]
  assert any('Duplicate trial_id' in m for m in caplog.messages)


def _append_worker(path, worker, barrier):
  barrier.wait()  # start together so the two writers really race
  i = 0
  group_size = 1
  while i < 200:
    n = min(group_size, 200 - i)
    # Long lines (> PIPE_BUF) make interleaving likely if writes were not atomic.
    group = [_record(f'w{worker}-{j}', seed=j, error='x' * (3000 + 97 * j % 500), group=i)
             for j in range(i, i + n)]
    records_lib.append_records(path, group)
    i += n
    group_size = group_size % 4 + 1


def test_concurrent_appends_do_not_interleave(tmp_path):
  path = str(tmp_path / 'trials.jsonl')
  ctx = multiprocessing.get_context('fork')
  barrier = ctx.Barrier(2)
  procs = [ctx.Process(target=_append_worker, args=(path, w, barrier)) for w in range(2)]
  for p in procs:
    p.start()
  for p in procs:
    p.join(60)
    assert p.exitcode == 0
  lines = _lines(path)  # every line is valid JSON
  assert len(lines) == 400
  ids = [r['trial_id'] for r in lines]
  assert set(ids) == {f'w{w}-{j}' for w in range(2) for j in range(200)}
  # Each group (one append) is contiguous and in order.
  pos = {tid: i for i, tid in enumerate(ids)}
  for r in lines:
    w, j = r['trial_id'][1:].split('-')
    first = pos[f'w{w}-{r["group"]}']
    assert pos[r['trial_id']] == first + int(j) - r['group']


# ---------------------------------------------------------------------------- summaries


def _synthetic():
  recs = []
  acc = {12: [0.90, 0.92, 0.91, 0.89], 2: [0.70, 0.74, 0.72], 0: [0.5]}
  for k, values in acc.items():
    for seed, v in enumerate(values):
      recs.append(_record(f'k{k}-s{seed}', seed=seed, k=k, metrics={'accuracy': v, 'f1': v - 0.1}))
  recs.append(_record('k12-failed', seed=9, k=12, status='failed', metrics={}))
  recs.append(_record('k2-nan', seed=9, k=2, metrics={'accuracy': float('nan'), 'f1': 0.6}))
  recs.append(_record('k2-null', seed=8, k=2, metrics={'accuracy': None, 'f1': 0.64}))
  return recs, acc


def test_summarize(tmp_path):
  recs, acc = _synthetic()
  rows, left_out = summary.summarize(recs)
  assert all(tuple(r) == summary.SUMMARY_FIELDS for r in rows)
  # Natural order: k=0 < k=2 < k=12, then metric name.
  assert [(r['setting'], r['metric']) for r in rows] == [
      ('{"k":0}', 'accuracy'), ('{"k":0}', 'f1'), ('{"k":2}', 'accuracy'), ('{"k":2}', 'f1'),
      ('{"k":12}', 'accuracy'), ('{"k":12}', 'f1')]
  by = {(r['setting'], r['metric']): r for r in rows}
  for k, values in acc.items():
    row = by[(f'{{"k":{k}}}', 'accuracy')]
    mean, std, low, high = stats_lib.t_ci(values)
    assert row['n'] == len(values)
    assert row['mean'] == pytest.approx(np.mean(values))
    assert (row['experiment'], row['task'], row['model'], row['train_size']) == (
        'reinit', 'sst2', 'bert-base-uncased', 500)
    if len(values) > 1:
      assert (row['std'], row['ci95_low'], row['ci95_high']) == pytest.approx((std, low, high))
  # The NaN/None accuracies are left out of accuracy only, not out of f1.
  assert by[('{"k":2}', 'accuracy')]['n'] == 3
  f1 = by[('{"k":2}', 'f1')]
  assert f1['n'] == 5
  assert f1['mean'] == pytest.approx(np.mean([0.6, 0.64, 0.6, 0.62, 0.64]))
  assert by[('{"k":12}', 'accuracy')]['n'] == 4  # the failed trial is not counted
  assert left_out == {
      (500, '{"k":0}'): {'total': 1},
      (500, '{"k":2}'): {'total': 5, 'non-finite metric': 2},
      (500, '{"k":12}'): {'total': 5, 'failed': 1},
  }
  assert summary.describe_left_out(left_out) == [
      'train_size=500 setting={"k":2}: 2 of 5 trials left out (2 non-finite metric)',
      'train_size=500 setting={"k":12}: 1 of 5 trials left out (1 failed)']


def test_summarize_reads_back_from_jsonl(tmp_path):
  # NaN written as null on disk gives the same summary as the in-memory NaN.
  recs, _ = _synthetic()
  path = tmp_path / 'trials.jsonl'
  records_lib.append_records(path, recs)
  assert summary.summarize(records_lib.read_records(path)) == summary.summarize(recs)


def test_write_summary_csv(tmp_path, caplog):
  recs, _ = _synthetic()
  path = tmp_path / 'summary.csv'
  with caplog.at_level(logging.WARNING):
    rows = summary.write_summary_csv(path, recs)
  assert any('1 of 5 trials left out (1 failed)' in m for m in caplog.messages)
  assert os.listdir(tmp_path) == ['summary.csv']  # no temp file left behind
  with open(path, newline='') as f:
    header = f.readline().strip()
    f.seek(0)
    got = list(csv.DictReader(f))
  assert header == ('experiment,task,model,train_size,setting,metric,n,mean,std,ci95_low,ci95_high,'
                    'n_degenerate')
  assert len(got) == len(rows) == 6
  assert got[0]['setting'] == '{"k":0}' and got[0]['std'] == 'nan'
  assert float(got[-1]['mean']) == rows[-1]['mean']  # full precision
  assert json.loads(got[-1]['setting']) == {'k': 12}
  # Rewriting replaces the file.
  summary.write_summary_csv(path, recs[:2])
  with open(path, newline='') as f:
    assert len(list(csv.DictReader(f))) == 2


def test_group_by_setting():
  recs, acc = _synthetic()
  groups = summary.group_by_setting(recs, 'accuracy')
  assert list(groups) == [(500, '{"k":0}'), (500, '{"k":2}'), (500, '{"k":12}')]
  for k, values in acc.items():
    np.testing.assert_allclose(groups[(500, f'{{"k":{k}}}')], values)
  assert summary.group_by_setting(recs, 'missing') == {}


def test_summary_lines_read_in_words():
  recs = [_record(f'a{s}', seed=s, k=3, train_size=1000, metrics={'accuracy': v})
          for s, v in enumerate((0.80, 0.82, 0.81))]
  recs.append(_record('full', train_size=0, k=None, metrics={'accuracy': 0.5}, setting={}))
  rows, _ = summary.summarize(recs)
  lines = [summary.describe_row(r) for r in rows if r['metric'] == 'accuracy']
  mean, _, low, high = stats_lib.t_ci([0.80, 0.82, 0.81])
  assert lines == ['sst2, full training set: accuracy 0.500 (1 trial)',
                   f'sst2, 1,000 train examples, k=3: accuracy {mean:.3f} '
                   f'(95% CI {low:.3f}..{high:.3f}, 3 trials)']


@pytest.mark.parametrize('metric, values, lo, hi', [
    ('accuracy', [0.40, 0.95], 0.0, 1.0),          # t interval of 2 trials: far outside [0, 1]
    ('accuracy', [0.55, 0.60, 0.99], 0.0, 1.0),
    ('mcc', [-0.9, 0.8], -1.0, 1.0),
    ('sparsity/query', [0.05, 0.5], 0.0, 1.0),
    ('l1_per_param', [1e-3, 9e-3], -np.inf, np.inf),  # no range: not clipped
])
def test_summary_interval_is_clipped_to_the_metric_range(metric, values, lo, hi):
  recs = [_record(f't{i}', seed=i, metrics={metric: v}) for i, v in enumerate(values)]
  (row,), _ = summary.summarize(recs)
  x = np.asarray(values)
  t_low, t_high = scipy.stats.t.interval(0.95, len(x) - 1, loc=x.mean(), scale=scipy.stats.sem(x))
  assert row['ci95_low'] == pytest.approx(max(t_low, lo))
  assert row['ci95_high'] == pytest.approx(min(t_high, hi))
  assert lo <= row['ci95_low'] <= row['mean'] <= row['ci95_high'] <= hi
  if metric == 'accuracy' and len(values) == 2:
    assert t_low < 0 and t_high > 1 and (row['ci95_low'], row['ci95_high']) == (0.0, 1.0)
