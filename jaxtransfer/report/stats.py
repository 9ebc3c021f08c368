"""Statistics over trials: the t interval of the mean (clipped to a metric's range) and Lee et
al.'s aggregate."""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np
import scipy.special  # stdtrit is scipy.stats.t.ppf without importing scipy.stats (~0.5 s)

# The values a metric can take; intervals are clipped to them (a t interval over 2-3 trials easily
# leaves [0, 1]). Per-matrix variants ('sparsity/query') share their metric's range.
METRIC_RANGES = {
    'accuracy': (0.0, 1.0), 'accuracy_mm': (0.0, 1.0), 'f1': (0.0, 1.0), 'sparsity': (0.0, 1.0),
    'cka': (0.0, 1.0), 'mcc': (-1.0, 1.0), 'pearson': (-1.0, 1.0), 'spearman': (-1.0, 1.0),
}


def t_ci(values: Iterable[float], confidence: float = 0.95) -> tuple[float, float, float, float]:
  """Returns (mean, std, low, high): sample std (ddof=1) and the Student-t interval of the mean.

  low/high = mean ∓ t_{(1+c)/2, n-1} · std/√n. With n = 1 the std and the interval are
  undefined (nan) while the mean is the single value; with n = 0 everything is nan.
  """
  if not 0.0 < confidence < 1.0:
    raise ValueError(f'confidence must lie in (0, 1), got {confidence}')
  x = np.asarray(list(values) if not isinstance(values, np.ndarray) else values,
                 dtype=np.float64).ravel()
  n = x.size
  if n == 0:
    return (math.nan,) * 4
  mean = float(np.mean(x))
  if n == 1:
    return mean, math.nan, math.nan, math.nan
  std = float(np.std(x, ddof=1))
  half = float(scipy.special.stdtrit(n - 1, (1.0 + confidence) / 2.0)) * std / math.sqrt(n)
  return mean, std, mean - half, mean + half


def metric_range(metric: str) -> tuple[float, float]:
  """(low, high) a metric can take; (-inf, inf) for the unbounded ones (distances, bytes, ...).
  The held-out split's `selection_<name>` has its metric's range."""
  name = str(metric).split('/')[0]
  name = name[len('selection_'):] if name.startswith('selection_') else name
  return METRIC_RANGES.get(name, (-math.inf, math.inf))


def clip_ci(metric: str, low: float, high: float) -> tuple[float, float]:
  """The interval clipped to the metric's range (nan stays nan)."""
  lo, hi = metric_range(metric)
  return (min(max(low, lo), hi) if math.isfinite(low) else low,
          min(max(high, lo), hi) if math.isfinite(high) else high)


def lee_aggregate(values: Iterable[float]) -> float:
  """Lee et al.'s table aggregate: drop zero runs, keep runs > 0.9 × best, return their mean.

  Zero runs are degenerate (e.g. MCC 0 for a constant classifier). Non-finite values are
  dropped as well. Returns nan if nothing is kept (including when the best run is <= 0).
  """
  x = np.asarray(list(values) if not isinstance(values, np.ndarray) else values,
                 dtype=np.float64).ravel()
  x = x[np.isfinite(x) & (x != 0.0)]
  if x.size == 0:
    return math.nan
  kept = x[x > 0.9 * np.max(x)]
  return float(np.mean(kept)) if kept.size else math.nan
