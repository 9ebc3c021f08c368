"""Plain fine-tuning's figure: every trial's dev score and final training loss, per train size."""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

from jaxtransfer.report import plots

Record = Mapping[str, Any]


def plot_trials(workdir: str, records: Sequence[Record], metric: str,
                info: plots.RunInfo | None = None) -> str | None:
  """Left: each trial's dev metric (labelled by seed) and their mean with a 95% CI, per training
  size, beside the majority-class score. Right: each trial's training loss over its last
  logged steps."""
  pairs = plots.scores(records, metric)
  if not pairs:
    return None
  task, model = str(pairs[0][0].get('task', '')), str(pairs[0][0].get('model', ''))
  sizes = sorted({r['train_size'] for r, _ in pairs}, key=plots.size_order)
  fig, (ax, ax_loss) = plots.subplots(1, 2, figsize=(10.5, 4.2), dpi=120)
  jitter = np.random.default_rng(0)  # positions only
  labelled: set[str] = set()
  once = lambda label: None if label in labelled or labelled.add(label) else label
  for x, size in enumerate(sizes):
    sub = [(r, v) for r, v in pairs if r['train_size'] == size]
    xs = x - 0.1 + jitter.uniform(-0.08, 0.08, len(sub))
    ax.scatter(xs, [v for _, v in sub], s=22, color='tab:blue', alpha=0.8, zorder=3,
               label=once('one trial'))
    if len(sub) <= 12:
      for xi, (r, v) in zip(xs, sub):
        ax.annotate(f's{r["seed"]}', (xi, v), xytext=(-14, 0), textcoords='offset points',
                    fontsize=7, va='center')
    mean, low, high = plots.mean_ci([v for _, v in sub], plots.bounds(metric))
    ax.errorbar([x + 0.15], [mean], yerr=[[mean - low], [high - mean]], fmt='D', color='black',
                capsize=4, zorder=4, label=once('mean, 95% CI'))
    losses = [(r['seed'], r['train_loss']) for r, _ in sub
              if isinstance(r.get('train_loss'), (int, float)) and np.isfinite(r['train_loss'])]
    ax_loss.scatter(x + jitter.uniform(-0.08, 0.08, len(losses)), [l for _, l in losses], s=22,
                    color='tab:orange', alpha=0.8)
  plots.chance_line(ax, info, metric)
  for a, ylabel in ((ax, plots.metric_label(metric)),
                    (ax_loss, 'training loss (mean over the last logged steps)')):
    a.grid(True, alpha=0.3)
    a.set_xticks(range(len(sizes)), [plots.size_label(s) for s in sizes])
    a.set_xlim(-0.6, len(sizes) - 0.4)
    a.set_xlabel('training set')
    a.set_ylabel(ylabel)
  plots.limit_y(ax, metric)
  plots.legend(ax, fontsize=8)
  ax.set_title('dev score per trial', fontsize=9)
  ax_loss.set_title('final training loss per trial', fontsize=9)
  fig.suptitle(plots.title('Fine-tuning every parameter', task, model, info), fontsize=10)
  return plots.save(fig, workdir, 'finetune_trials')
