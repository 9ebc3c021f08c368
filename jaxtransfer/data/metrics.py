"""GLUE metrics: numpy for the classification scores (matching sklearn.metrics), scipy.stats for the
correlations."""

from __future__ import annotations

import numpy as np

from jaxtransfer.data.types import TaskSpec


def _pair(a, b) -> tuple[np.ndarray, np.ndarray]:
  a, b = np.asarray(a).ravel(), np.asarray(b).ravel()
  if a.shape != b.shape:
    raise ValueError(f'Length mismatch: {a.shape[0]} vs {b.shape[0]}.')
  return a, b


def accuracy(preds, labels) -> float:
  """Fraction of exact matches."""
  preds, labels = _pair(preds, labels)
  return float(np.mean(preds == labels)) if preds.size else float('nan')


def f1(preds, labels) -> float:
  """Binary F1 of the positive class 1; 0.0 when there are no positives at all (as sklearn)."""
  preds, labels = _pair(preds, labels)
  tp = np.sum((preds == 1) & (labels == 1))
  fp = np.sum((preds == 1) & (labels != 1))
  fn = np.sum((preds != 1) & (labels == 1))
  denom = 2 * tp + fp + fn
  return float(2 * tp / denom) if denom else 0.0


def matthews_corrcoef(preds, labels) -> float:
  """Multiclass Matthews correlation (sklearn's formula); 0.0 when undefined."""
  preds, labels = _pair(preds, labels)
  classes, inv = np.unique(np.concatenate([labels, preds]), return_inverse=True)
  k, n = len(classes), len(labels)
  conf = np.zeros((k, k), np.float64)  # float: n**2 products overflow int64 for big n.
  np.add.at(conf, (inv[:n], inv[n:]), 1.0)
  t_sum, p_sum = conf.sum(axis=1), conf.sum(axis=0)
  n_correct = np.trace(conf)
  cov_ytyp = n_correct * n - t_sum @ p_sum
  cov_ypyp = n * n - p_sum @ p_sum
  cov_ytyt = n * n - t_sum @ t_sum
  if cov_ypyp * cov_ytyt == 0:  # A constant prediction or label vector.
    return 0.0
  return float(cov_ytyp / np.sqrt(cov_ytyt * cov_ypyp))


def _correlation(fn, x, y) -> float:
  """scipy's correlation, nan for constant inputs or fewer than 2 points (as scipy reports it)."""
  x, y = _pair(x, y)
  if x.size < 2 or np.all(x == x.flat[0]) or np.all(y == y.flat[0]):
    return float('nan')
  return float(fn(x.astype(np.float64), y.astype(np.float64)).statistic)


def pearson(x, y) -> float:
  """Pearson correlation (scipy.stats.pearsonr)."""
  import scipy.stats  # here: importing scipy.stats takes ~0.5 s, and only STS-B needs it
  return _correlation(scipy.stats.pearsonr, x, y)


def spearman(x, y) -> float:
  """Spearman rank correlation, average ranks for ties (scipy.stats.spearmanr)."""
  import scipy.stats
  return _correlation(scipy.stats.spearmanr, x, y)


_FNS = {
    'accuracy': accuracy,
    'f1': f1,
    'mcc': matthews_corrcoef,
    'pearson': pearson,
    'spearman': spearman,
}


def metric_function(name: str):
  """The function of a metric's name without split suffix (`accuracy`, `f1`, `mcc`, `pearson`,
  `spearman`): f(predictions, labels) -> float."""
  return _FNS[name]


def _preds(task: TaskSpec, outputs) -> np.ndarray:
  """What the metrics read from model outputs: class ids (argmax of (N, C) logits, or given as
  (N,) integers), or (N,) scores for regression."""
  outputs = np.asarray(outputs)
  if task.is_regression:
    if outputs.ndim == 2 and outputs.shape[1] == 1:
      outputs = outputs[:, 0]
    if outputs.ndim != 1:
      raise ValueError(f'Regression outputs must be (N,) or (N, 1), got {outputs.shape}.')
    return outputs
  if outputs.ndim == 2:
    return np.argmax(outputs, axis=-1)
  if outputs.ndim == 1 and np.issubdtype(outputs.dtype, np.integer):
    return outputs
  raise ValueError(f'Classification outputs must be (N, C) logits, got {outputs.shape}.')


def predictions(task: TaskSpec, outputs) -> np.ndarray:
  """The predictions behind `compute_metrics(task, outputs, ...)`, compact enough to keep: int16
  class ids (int32 past 32,767 classes) or float32 scores; `compute_metrics` on them gives the
  same values (the float32 scores are what the model computed)."""
  preds = _preds(task, outputs)
  if task.is_regression:
    return preds.astype(np.float32)
  return preds.astype(np.int16 if task.num_labels < 2 ** 15 else np.int32)


def compute_metrics(task: TaskSpec, outputs: np.ndarray, labels: np.ndarray, *,
                    suffix: str = '') -> dict[str, float]:
  """The task's metrics for model outputs.

  Args:
    task: the task spec.
    outputs: logits (N, C) for classification (argmax is the prediction; (N,) integer class ids
      are accepted too), or (N,) / (N, 1) predicted scores for regression.
    labels: (N,) gold labels.
    suffix: appended to every metric name, e.g. '_mm' for MNLI's mismatched dev split.

  Returns:
    {metric name + suffix: value}, the task's primary metric first.
  """
  labels = np.asarray(labels).ravel()
  preds = _preds(task, outputs)
  if len(preds) != len(labels):
    raise ValueError(f'{len(preds)} predictions for {len(labels)} labels.')
  return {f'{name}{suffix}': _FNS[name](preds, labels) for name in task.metrics}
