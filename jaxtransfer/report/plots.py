"""Shared figure helpers: one style, mean with 95% CI bands clipped to the metric's range, titles
naming the data and model, the majority-class line, and a legend that explains the bands."""

from __future__ import annotations

import collections
import dataclasses
import os
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np

from jaxtransfer.data import glue as data_lib
from jaxtransfer.report import stats as stats_lib

METRIC_LABELS = {
    'accuracy': 'dev accuracy', 'f1': 'dev F1', 'mcc': 'dev Matthews corr.',
    'pearson': 'dev Pearson r', 'spearman': 'dev Spearman ρ', 'accuracy_mm': 'dev accuracy (mismatched)',
    'sparsity': 'mask sparsity', 'train_flops_fraction': 'training FLOPs / full fine-tuning',
}
BAND_LABEL = 'shaded: 95% CI of the mean'
BAR_LABEL = 'error bars: 95% CI of the mean'
CHANCE_STYLE = dict(color='0.35', linestyle='-.', linewidth=1)


@dataclasses.dataclass(frozen=True)
class RunInfo:
  """What a run's figures say beyond its records: the data it used and the majority-class score."""
  data: str = ''                 # e.g. 'SST-2', 'demo sentiment set (342 train / 85 dev)'
  metric: str = ''               # the metric `chance` is in (the task's primary metric)
  chance: float | None = None    # that metric for always predicting the dev set's majority class


# ----------------------------------------------------------------------------- records to plot


def scores(records: Iterable[Mapping[str, Any]], metric: str,
           where: Callable[[Mapping[str, Any]], bool] = lambda s: True
           ) -> list[tuple[Mapping[str, Any], float]]:
  """(record, value) of ok trials with a finite `metric` whose setting passes `where`."""
  out = []
  for r in records:
    v = (r.get('metrics') or {}).get(metric)
    ok = r.get('status') == 'ok' and v is not None and np.isfinite(v)
    if ok and where(r.get('setting') or {}):
      out.append((r, float(v)))
  return out


def by(pairs: Sequence[tuple[Mapping[str, Any], float]],
       key: Callable[[Mapping[str, Any]], Any]) -> dict[Any, list[float]]:
  out: dict[Any, list[float]] = collections.defaultdict(list)
  for r, v in pairs:
    out[key(r)].append(v)
  return out


def size_order(size) -> float:
  return float('inf') if not size else float(size)


# ----------------------------------------------------------------------------- figures


def metric_label(metric: str) -> str:
  return METRIC_LABELS.get(metric, metric)


def size_label(train_size: int) -> str:
  return 'full training set' if not train_size else f'{train_size:,} examples'


def title(what: str, task: str, model: str, info: RunInfo | None = None) -> str:
  """'<what> — <data>, <model>', on two lines when one would not fit a figure."""
  data = info.data if info is not None and info.data else task_name(task)
  where = f'{data}, {os.path.basename(str(model).rstrip("/"))}'
  return f'{what} — {where}' if len(what) + len(where) < 70 else f'{what}\n{where}'


def task_name(task: str) -> str:
  """GLUE's spelling of a task key ('cola' -> 'CoLA'); other names as given."""
  spec = data_lib.TASKS.get(str(task).strip().lower().replace('-', ''))
  return spec.dirname if spec else str(task)


def subplots(*args, figsize: tuple[float, float] = (6.4, 4.2), dpi: float = 120, **kwargs):
  """(fig, axes) like pyplot.subplots, but a bare Figure: no pyplot, no backend switch (a notebook
  keeps its own), nothing to close; matplotlib is imported only here, when a figure is drawn."""
  from matplotlib.figure import Figure
  fig = Figure(figsize=figsize, dpi=dpi)
  return fig, fig.subplots(*args, **kwargs)


def figure(width: float = 6.4, height: float = 4.2):
  fig, ax = subplots(figsize=(width, height), dpi=120)
  ax.grid(True, alpha=0.3)
  return fig, ax


def bounds(metric: str) -> tuple[float, float]:
  return stats_lib.metric_range(metric)


def mean_ci(values: Sequence[float], bounds: tuple[float, float] = (-np.inf, np.inf)
            ) -> tuple[float, float, float]:
  """(mean, low, high) of a t-based 95% CI clipped to `bounds`; one value: a zero-width band."""
  mean, _, low, high = stats_lib.t_ci(values)
  if not np.isfinite(low):
    low = high = mean
  return mean, float(np.clip(low, *bounds)), float(np.clip(high, *bounds))


def runs(xs: Sequence[float], step: float | None = None) -> list[list[int]]:
  """Indices of `xs` (sorted) split where a grid value between two of them was never run: with
  `step` (the grid's spacing, e.g. 1 for block counts k), neighbours further apart than a step
  start a new run; without one, every x is joined to the next."""
  if not len(xs):
    return []
  out = [[0]]
  for i in range(1, len(xs)):
    if step is not None and xs[i] - xs[i - 1] > step * (1 + 1e-6):
      out.append([])
    out[-1].append(i)
  return out


def line_with_ci(ax, xs: Sequence[float], samples: Sequence[Sequence[float]], label: str,
                 dashed: bool = False, color=None, marker: str = 'o',
                 bounds: tuple[float, float] = (-np.inf, np.inf), step: float | None = None):
  """Mean line with a shaded 95% CI band (clipped to `bounds`) over each run of consecutive x
  positions (`runs`): a line and band across x values never run would show a curve nobody
  measured, so an isolated point is a marker with 95% CI error bars instead."""
  stats = np.array([mean_ci(s, bounds) if len(s) else (np.nan,) * 3 for s in samples])
  xs = np.asarray(xs, float)
  line = None
  for idx in runs(xs, step):
    style = dict(marker=marker, color=color if line is None else line.get_color(),
                 label=label if line is None else None)
    if len(idx) == 1:
      mean, low, high = stats[idx[0]]
      cap = ax.errorbar(xs[idx], [mean], yerr=[[mean - low], [high - mean]], capsize=4,
                        linestyle='none', **style)
      ax.has_ci_bars = True
      line = line or cap.lines[0]
      continue
    seg, = ax.plot(xs[idx], stats[idx, 0], linestyle='--' if dashed else '-', **style)
    band(ax, xs[idx], stats[idx, 1], stats[idx, 2], seg.get_color())
    line = line or seg
  return line


def band(ax, xs, low, high, color, alpha: float = 0.2) -> None:
  """A shaded interval, explained once in the legend by `legend`."""
  ax.fill_between(xs, low, high, alpha=alpha, color=color, lw=0)
  ax.has_ci_band = True


def reference(ax, values: Sequence[float], label: str, color=None, linestyle: str = '--',
              bounds: tuple[float, float] = (-np.inf, np.inf)):
  """A reference run (full fine-tuning, ...) across the whole axis: its mean and 95% CI band."""
  mean, low, high = mean_ci(values, bounds)
  line = ax.axhline(mean, color=color, linestyle=linestyle, label=label)
  ax.axhspan(low, high, color=line.get_color(), alpha=0.12, lw=0)
  ax.has_ci_band = True
  return line


def chance_line(ax, info: RunInfo | None, metric: str, scale: float = 1.0, name: str = '',
                color=None) -> None:
  """The score of always predicting the dev set's majority class (MCC 0), when it applies;
  `name` and `color` tell several tasks' lines apart on one axes."""
  if info is None or info.chance is None or info.metric != metric:
    return
  what = 'MCC 0' if metric == 'mcc' else f'{info.chance:.3f}'
  style = {**CHANCE_STYLE, **({'color': color} if color is not None else {})}
  ax.axhline(info.chance * scale, label=f'always the majority class{name} ({what})', **style)


def legend(ax, **kwargs) -> None:
  """ax.legend plus one entry for the shaded bands, when the axes has any."""
  from matplotlib.patches import Patch
  handles, labels = ax.get_legend_handles_labels()
  if getattr(ax, 'has_ci_band', False):
    handles.append(Patch(color='0.5', alpha=0.3, lw=0))
    labels.append(BAND_LABEL)
  if getattr(ax, 'has_ci_bars', False):
    from matplotlib.lines import Line2D
    handles.append(Line2D([], [], color='0.4', marker='|', markersize=10, linestyle='none'))
    labels.append(BAR_LABEL)
  if handles:
    ax.legend(handles, labels, **kwargs)


def limit_y(ax, metric: str, scale: float = 1.0) -> None:
  """Keeps the y axis inside the metric's range (plus a margin), never beyond what it can be."""
  lo, hi = bounds(metric)
  if not (np.isfinite(lo) and np.isfinite(hi)):
    return
  pad = 0.03 * (hi - lo)
  y0, y1 = ax.get_ylim()
  ax.set_ylim(max(y0, (lo - pad) * scale), min(y1, (hi + pad) * scale))


def save(fig, workdir: str, name: str) -> str:
  """Writes plots/<name>.png (through the Figure's own Agg canvas; a bare Figure needs no close)."""
  path = os.path.join(workdir, 'plots', f'{name}.png')
  os.makedirs(os.path.dirname(path), exist_ok=True)
  fig.tight_layout()
  fig.savefig(path)
  return path
