"""Shared figure helpers: one style, mean with 95% CI bands, titles naming task and model."""

from __future__ import annotations

import os
from typing import Sequence

import matplotlib

matplotlib.use('Agg')  # files only; never needs a display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from jaxtransfer import results  # noqa: E402

METRIC_LABELS = {
    'accuracy': 'dev accuracy', 'f1': 'dev F1', 'mcc': 'dev Matthews corr.',
    'pearson': 'dev Pearson r', 'spearman': 'dev Spearman ρ', 'accuracy_mm': 'dev accuracy (mismatched)',
    'sparsity': 'mask sparsity', 'train_flops_fraction': 'training FLOPs / full fine-tuning',
}


def metric_label(metric: str) -> str:
  return METRIC_LABELS.get(metric, metric)


def size_label(train_size: int) -> str:
  return 'full training set' if not train_size else f'{train_size:,} examples'


def title(what: str, task: str, model: str) -> str:
  return f'{what} — {task.upper()}, {os.path.basename(str(model).rstrip("/"))}'


def figure(width: float = 6.4, height: float = 4.2):
  fig, ax = plt.subplots(figsize=(width, height), dpi=120)
  ax.grid(True, alpha=0.3)
  return fig, ax


def mean_ci(values: Sequence[float]) -> tuple[float, float, float]:
  """(mean, low, high) of a t-based 95% CI; a single value gives a zero-width band."""
  mean, _, low, high = results.t_ci(values)
  if not np.isfinite(low):
    low = high = mean
  return mean, low, high


def line_with_ci(ax, xs: Sequence[float], samples: Sequence[Sequence[float]], label: str,
                 dashed: bool = False, color=None, marker: str = 'o'):
  """Mean line over the x positions with a shaded 95% CI band."""
  stats = np.array([mean_ci(s) if len(s) else (np.nan,) * 3 for s in samples])
  line, = ax.plot(xs, stats[:, 0], linestyle='--' if dashed else '-', marker=marker, label=label,
                  color=color)
  ax.fill_between(xs, stats[:, 1], stats[:, 2], alpha=0.2, color=line.get_color())
  return line


def save(fig, workdir: str, name: str) -> str:
  """Writes plots/<name>.png and closes the figure."""
  path = os.path.join(workdir, 'plots', f'{name}.png')
  os.makedirs(os.path.dirname(path), exist_ok=True)
  fig.tight_layout()
  fig.savefig(path)
  plt.close(fig)
  return path
