"""Tests for jaxtransfer.data.metrics against sklearn.metrics and scipy.stats."""

import warnings

import numpy as np
import pytest
from scipy import stats
from sklearn import metrics as skm

from jaxtransfer.data import glue as data
from jaxtransfer.data import metrics


def _label_sets():
  rng = np.random.RandomState(0)
  for n in (1, 2, 7, 50, 500):
    for k in (2, 3):
      yield rng.randint(0, k, n), rng.randint(0, k, n)
  yield np.ones(20, int), np.r_[np.ones(10, int), np.zeros(10, int)]  # All-one predictions.
  yield np.zeros(20, int), np.r_[np.ones(10, int), np.zeros(10, int)]  # No positive predicted.
  yield np.zeros(20, int), np.zeros(20, int)  # No positives anywhere.
  yield np.r_[np.ones(10, int), np.zeros(10, int)], np.ones(20, int)  # Constant labels.
  yield np.arange(10) % 2, np.arange(10) % 2  # Perfect.
  yield 1 - np.arange(10) % 2, np.arange(10) % 2  # Perfectly wrong.


@pytest.mark.parametrize('preds,labels', list(_label_sets()))
def test_classification_metrics_match_sklearn(preds, labels):
  with warnings.catch_warnings():
    warnings.simplefilter('ignore')  # sklearn warns on the degenerate cases.
    assert metrics.accuracy(preds, labels) == pytest.approx(skm.accuracy_score(labels, preds))
    assert metrics.matthews_corrcoef(preds, labels) == pytest.approx(
        skm.matthews_corrcoef(labels, preds), abs=1e-12)
    if max(preds.max(), labels.max()) <= 1:
      assert metrics.f1(preds, labels) == pytest.approx(
          skm.f1_score(labels, preds, zero_division=0.0), abs=1e-12)


def test_degenerate_values():
  ones, mixed = np.ones(8, int), np.arange(8) % 2
  assert metrics.matthews_corrcoef(ones, mixed) == 0.0
  assert metrics.f1(np.zeros(8, int), mixed) == 0.0
  assert metrics.f1(np.zeros(8, int), np.zeros(8, int)) == 0.0
  assert metrics.f1(ones, mixed) == pytest.approx(2 / 3)


def _value_pairs():
  rng = np.random.RandomState(1)
  for n in (2, 3, 10, 200):
    x = rng.randn(n)
    yield x, 0.5 * x + rng.randn(n)
  x = rng.randint(0, 4, 100).astype(float)  # Heavy ties in both.
  yield x, np.round(x + rng.rand(100) * 2)
  yield np.round(rng.rand(30) * 5, 1), np.round(rng.rand(30) * 5, 1)  # STS-B-like scores.
  yield np.arange(10.0), np.arange(10.0) ** 3  # Monotone: spearman 1.
  yield 1e8 + rng.rand(50), rng.rand(50)  # Large offset.


@pytest.mark.parametrize('x,y', list(_value_pairs()))
def test_correlations_match_scipy(x, y):
  assert metrics.pearson(x, y) == pytest.approx(stats.pearsonr(x, y)[0], abs=1e-9)
  assert metrics.spearman(x, y) == pytest.approx(stats.spearmanr(x, y)[0], abs=1e-9)


def test_correlations_of_constants_are_nan():
  with warnings.catch_warnings():
    warnings.simplefilter('ignore')
    assert np.isnan(stats.pearsonr(np.ones(5), np.arange(5.0))[0])  # The convention we follow.
  assert np.isnan(metrics.pearson(np.ones(5), np.arange(5.0)))
  assert np.isnan(metrics.spearman(np.arange(5.0), np.full(5, 2.0)))
  assert np.isnan(metrics.pearson([1.0], [2.0]))


def test_length_mismatch_raises():
  with pytest.raises(ValueError):
    metrics.accuracy([1, 0], [1])


def test_compute_metrics_names_per_task():
  rng = np.random.RandomState(2)
  expected = {
      'cola': ['mcc', 'accuracy'],
      'sst2': ['accuracy'],
      'mrpc': ['f1', 'accuracy'],
      'qqp': ['f1', 'accuracy'],
      'stsb': ['pearson', 'spearman'],
      'mnli': ['accuracy'],
      'qnli': ['accuracy'],
      'rte': ['accuracy'],
      'wnli': ['accuracy'],
  }
  assert set(expected) == set(data.TASKS)
  for name, names in expected.items():
    task = data.get_task(name)
    assert task.primary_metric == names[0] or (name == 'stsb' and
                                               task.primary_metric == 'spearman')
    if task.is_regression:
      out, labels = rng.rand(40, 1) * 5, rng.rand(40) * 5
    else:
      out, labels = rng.randn(40, task.num_labels), rng.randint(0, task.num_labels, 40)
    result = metrics.compute_metrics(task, out, labels)
    assert list(result) == names
    assert all(isinstance(v, float) for v in result.values())


def test_compute_metrics_values():
  logits = np.array([[2.0, 1.0], [0.0, 3.0], [1.0, 0.0], [0.0, 1.0]])
  labels = np.array([0, 1, 1, 1])
  preds = logits.argmax(-1)
  got = metrics.compute_metrics(data.get_task('mrpc'), logits, labels)
  assert got == {'f1': pytest.approx(skm.f1_score(labels, preds)), 'accuracy': 0.75}
  got = metrics.compute_metrics(data.get_task('cola'), logits, labels)
  assert got['mcc'] == pytest.approx(skm.matthews_corrcoef(labels, preds))
  # Integer predictions are accepted in place of logits.
  assert metrics.compute_metrics(data.get_task('rte'), preds, labels) == {'accuracy': 0.75}
  # MNLI's mismatched dev split reports accuracy_mm.
  mnli = data.get_task('mnli')
  got = metrics.compute_metrics(mnli, np.eye(3)[[0, 1, 2]], np.array([0, 1, 1]), suffix='_mm')
  assert got == {'accuracy_mm': pytest.approx(2 / 3)}
  # Regression: (N,) and (N, 1) give the same.
  x = np.array([0.1, 2.0, 2.0, 4.5])
  y = np.array([0.0, 1.5, 3.0, 5.0])
  stsb = data.get_task('stsb')
  a = metrics.compute_metrics(stsb, x, y)
  assert a == metrics.compute_metrics(stsb, x[:, None], y)
  assert a['pearson'] == pytest.approx(stats.pearsonr(x, y)[0])
  assert a['spearman'] == pytest.approx(stats.spearmanr(x, y)[0])
  with pytest.raises(ValueError):
    metrics.compute_metrics(stsb, np.zeros((4, 2)), y)
  with pytest.raises(ValueError):
    metrics.compute_metrics(mnli, np.zeros((3, 3)), np.zeros(4))
