"""Figures of the variability study (Xie et al. 2022): ν per block, quality vs training cost."""

from __future__ import annotations

import json
import os
from typing import Mapping, Sequence

import numpy as np

from jaxtransfer.report import summary
from jaxtransfer.runtime import files
from jaxtransfer.report import plots

METHOD_COLORS = {'finetune': 'C0', 'adapter': 'C1', 'lora': 'C2', 'bitfit': 'C3'}
FULL_LABELS = {'finetune': 'full fine-tuning', 'adapter': 'full adapter-tuning',
               'lora': 'full LoRA', 'bitfit': 'full BitFit'}
PLACEMENT_MARKERS = {'auto': 'o', 'fixed': 'D', 'top': 's', 'full': '*'}
PLACEMENT_LABELS = {'auto': 'ν-selected head', 'fixed': 'given head block', 'top': 'top blocks',
                    'full': 'full'}


def plot_variability(workdir: str, curves: Mapping[str, Sequence[float]], task: str, model: str,
                     head_block: int | None = None, name: str = 'variability',
                     info: plots.RunInfo | None = None,
                     bands: Mapping[str, tuple[Sequence[float], Sequence[float]]] | None = None) -> str:
  """ν per block (x = -1 for the embedding output), one line per curve, with its bootstrap 95% CI
  as a band where `bands` has one (every layer is measured: the band joins measured points); a
  log axis only when the values span more than a decade (with a label on every tick it has)."""
  fig, ax = plots.figure()
  bands = bands or {}
  for label, nu in curves.items():
    nu = np.asarray(nu, float)
    blocks = np.arange(-1, len(nu) - 1)
    line, = ax.plot(blocks, nu, marker='o', label=label)
    if label in bands:
      ax.fill_between(blocks, *bands[label], color=line.get_color(), alpha=0.2, lw=0)
    if head_block is None:
      best = 1 + int(np.argmin(nu[1:]))
      ax.scatter([blocks[best]], [nu[best]], s=120, facecolors='none', edgecolors='k', zorder=3)
  if head_block is not None:
    ax.axvline(head_block, color='k', linestyle=':', label=f'head block {head_block}')
  _nu_axis(ax, np.concatenate([np.asarray(v, float) for v in curves.values()]))
  n = max(len(v) for v in curves.values())
  ax.set_xticks(range(-1, n - 1), ['emb'] + [str(i) for i in range(n - 1)])
  ax.set_xlabel('block (output of)')
  ax.set_ylabel('ν = tr(Σ_w Σ_b⁺) / |Y|  (lower: more class-specialized)')
  if len(curves) > 1 or head_block is not None:
    ax.legend()
  ax.set_title(plots.title('Hidden-state variability (circle: lowest block)', task, model, info),
               fontsize=10)
  return plots.save(fig, workdir, name)


def _nu_axis(ax, values: np.ndarray) -> None:
  """Linear within a decade; beyond, log with ticks at 1, 2 and 5 of each decade, all labelled
  in plain numbers (a bare log axis over less than two decades shows one or two ticks)."""
  from matplotlib import ticker
  values = values[np.isfinite(values)]
  if not len(values) or values.min() <= 0 or values.max() / values.min() <= 10:
    return
  ax.set_yscale('log')
  ax.yaxis.set_major_locator(ticker.LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
  ax.yaxis.set_major_formatter(ticker.FuncFormatter(lambda y, _: f'{y:g}'))
  ax.yaxis.set_minor_formatter(ticker.NullFormatter())


def _label(setting: dict) -> str:
  p = setting.get('placement', '')
  if p == 'full':
    return FULL_LABELS.get(setting['method'], f'full {setting["method"]}')
  return (f'{PLACEMENT_LABELS.get(p, p)}: {setting["method"]}, head {setting["head_block"]}, '
          f'm={setting["num_tuned_blocks"]}')


def plot_select(workdir: str, records: Sequence[dict], task: str, model: str, metric: str,
                info: plots.RunInfo | None = None) -> str:
  """Dev metric (mean, 95% CI) against training FLOPs fraction and measured step time."""
  by = summary.group_by_setting(records, metric)
  cost = summary.group_by_setting(records, 'train_flops_fraction')
  step = summary.group_by_setting(records, 'step_time_s')
  fig, axes = plots.subplots(1, 2, figsize=(11, 4.4), dpi=120, sharey=True)
  for ax, xs, xlabel in ((axes[0], cost, plots.metric_label('train_flops_fraction')),
                         (axes[1], step, 'measured training step time (s, one trial)')):
    ax.grid(True, alpha=0.3)
    for key, values in by.items():
      setting = json.loads(key[1])
      if key not in xs:
        continue
      mean, low, high = plots.mean_ci(values, plots.bounds(metric))
      x = float(np.mean(xs[key]))
      p = setting.get('placement', 'auto')
      ax.errorbar([x], [mean], yerr=[[mean - low], [high - mean]], capsize=3,
                  marker=PLACEMENT_MARKERS.get(p, 'o'), markersize=10 if p == 'full' else 7,
                  color=METHOD_COLORS.get(setting.get('method'), 'C4'), linestyle='none',
                  label=_label(setting))
    plots.chance_line(ax, info, metric)
    plots.limit_y(ax, metric)
    ax.set_xlabel(xlabel)
  axes[0].set_ylabel(plots.metric_label(metric))
  handles, labels = axes[0].get_legend_handles_labels()
  fig.legend(handles, labels, loc='lower center', ncol=2, fontsize=8, frameon=False)
  sizes = sorted({r.get('train_size') for r in records})
  what = 'Classifier placement and tuned blocks'
  if len(sizes) == 1:
    what += f' ({plots.size_label(sizes[0])})'
  fig.suptitle(plots.title(what, task, model, info), fontsize=10)
  fig.tight_layout(rect=(0, 0.08 + 0.035 * ((len(labels) + 1) // 2), 1, 1))
  # Not plots.save: its tight_layout would drop the room kept for the shared legend.
  path = os.path.join(workdir, 'plots', 'select.png')
  os.makedirs(os.path.dirname(path), exist_ok=True)
  fig.savefig(path)
  return path


def combine_variability(workdirs: Sequence[str], outdir: str) -> dict[str, np.ndarray]:
  """Concatenates the variability.csv of several workdirs into outdir/variability.csv and plots
  every (task, model) curve in outdir/plots/variability.png."""
  import csv  # pylint: disable=g-import-not-at-top
  rows = []
  for w in workdirs:
    with open(os.path.join(w, 'variability.csv'), newline='') as f:
      rows += list(csv.DictReader(f))
  os.makedirs(outdir, exist_ok=True)
  fields = ['task', 'model', 'block', 'nu']
  fields += [k for k in ('nu_lo', 'nu_hi', 'argmin_fraction') if any(k in r for r in rows)]
  files.write_csv(os.path.join(outdir, 'variability.csv'), fields, rows)
  points: dict[str, list[dict]] = {}
  models = sorted({r['model'] for r in rows})
  for r in rows:
    label = r['task'] if len(models) == 1 else f'{r["task"]} ({r["model"]})'
    points.setdefault(label, []).append(r)
  column = lambda rs, k: np.array([float(r[k]) for r in sorted(rs, key=lambda r: int(r['block']))])
  curves = {k: column(rs, 'nu') for k, rs in points.items()}
  bands = {k: (column(rs, 'nu_lo'), column(rs, 'nu_hi')) for k, rs in points.items()
           if all(r.get('nu_lo') for r in rs)}
  plot_variability(outdir, curves, '+'.join(dict.fromkeys(r['task'] for r in rows)),
                   ', '.join(models), bands=bands)
  return curves


if __name__ == '__main__':
  # python -m jaxtransfer.studies.xie2022.analysis OUTDIR WORKDIR...: one table and figure of ν over workdirs.
  import sys  # pylint: disable=g-import-not-at-top
  combine_variability(sys.argv[2:], sys.argv[1])
