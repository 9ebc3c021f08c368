"""Tamkin et al. (2020) figures: score vs blocks kept, block reinit, permutations, single trials.

  python -m jaxtransfer.studies.tamkin2020.analysis --out=results/tamkin2020 results/tamkin2020/sst2/* ...

merges reinit.py / block_reinit.py / permute.py / probe.py workdirs (any tasks) into `out`: one
summary.csv, a merged trials.jsonl (trial ids prefixed with task/experiment, as ids repeat across
tasks), plots/<task>_*.png, with each task's probing curve drawn dashed in its reinit figure, and
permute_correlations.csv: Spearman / Pearson of the permutations' scores between every two
(task, train size) permute runs (analysis/permutations.py).
The same functions draw a single run's figures at the end of the run.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
from typing import Any, Mapping, Sequence

import numpy as np
import scipy.stats

from jaxtransfer.runtime import records as records_lib

from jaxtransfer.report import summary
from jaxtransfer.studies.tamkin2020 import permutations
from jaxtransfer.data import glue as data_lib
from jaxtransfer.report import plots
from jaxtransfer.studies import base
from jaxtransfer.errors import UserError

Record = Mapping[str, Any]
PROBE_COLORS = ('black', 'dimgray', 'tab:brown', 'tab:olive', 'tab:pink', 'tab:cyan')
FULL_COLOR, REINIT_COLOR = 'tab:blue', 'tab:red'
MIX = 'mix'  # probe.py's scalar-mix probe: its setting's `k`


# ----------------------------------------------------------------------------- record helpers


def read_workdir(workdir: str) -> list[dict]:
  """The records of a finished run, for another study's figure (e.g. probe_dir)."""
  path = os.path.join(workdir, 'trials.jsonl')
  recs = records_lib.read_records(path)
  if not recs:
    raise UserError(f'{path} holds no trial records: point --config.probe_dir at the workdir of a '
                    'finished probe.py run (or leave it empty).')
  return recs


def one_layer(setting: Mapping[str, Any]) -> bool:
  """A setting of a trial at one k (not a scalar mix, not an MDL portion probe)."""
  return 'k' in setting and setting['k'] != MIX and 'mdl_portion' not in setting


def _meta(records: Sequence[Record]) -> tuple[str, str]:
  r = records[0] if records else {}
  return str(r.get('task', '')), str(r.get('model', ''))


def _variants(pairs, keys: Sequence[str]) -> list[tuple]:
  return sorted({tuple(r['setting'].get(k) for k in keys) for r, _ in pairs},
                key=lambda t: tuple(str(x) for x in t))


def _suffix(variant: tuple, keys: Sequence[str], n_variants: int) -> str:
  """File-name suffix naming a scheme / lr multiplier, only when a run holds several."""
  if n_variants == 1:
    return ''
  return ''.join(f'_{k.replace("reinit_", "")}{v}' for k, v in zip(keys, variant))


def _variant_text(variant: tuple, keys: Sequence[str]) -> str:
  parts = []
  for k, v in zip(keys, variant):
    if k == 'reinit_scheme' and v:
      parts.append(f'reinit scheme: {v}')
    elif k == 'reinit_lr_multiplier' and v not in (None, 1.0):
      parts.append(f'reinitialized blocks at {v:g}× lr')
  return ', '.join(parts)


def _band(ax, lo, hi, x0, x1, color, label=None, alpha=0.15):
  ax.fill_between([x0, x1], [lo, lo], [hi, hi], color=color, alpha=alpha, label=label, lw=0)


def _finish(ax, metric: str, info, **legend_kw) -> None:
  """The majority-class line, the legend (with the bands explained) and a y axis inside the
  metric's range."""
  plots.chance_line(ax, info, metric)
  plots.legend(ax, **legend_kw)
  plots.limit_y(ax, metric)


# ----------------------------------------------------------------------------- Fig. 2


def plot_reinit(workdir: str, records: Sequence[Record], probe_records: Sequence[Record],
                metric: str, num_layers: int = 0, prefix: str = '',
                info: plots.RunInfo | None = None) -> list[str]:
  """Score vs number of pretrained blocks kept, one line per training size with 95% CI bands, the
  from-scratch model (reinit.py's `scratch`) as a dotted level of the same color, and the
  linear-probing curve dashed (Tamkin et al. Fig. 2)."""
  pairs = plots.scores(records, metric, lambda s: 'k' in s)
  if not pairs:
    return []
  task, model = _meta([r for r, _ in pairs])
  probe = plots.scores([r for r in probe_records if r.get('task') == task], metric, one_layer)
  scratch = plots.scores(records, metric, lambda s: s.get('mode') == 'scratch')
  keys = ('reinit_scheme', 'reinit_lr_multiplier')
  variants = _variants(pairs, keys)
  lim = plots.bounds(metric)
  saved = []
  for variant in variants:
    sub = [(r, v) for r, v in pairs if tuple(r['setting'].get(k) for k in keys) == variant]
    fig, ax = plots.figure(9.0, 4.2)  # the legend beside the axes, off the error bars
    ks = sorted({r['setting']['k'] for r, _ in sub} | {r['setting']['k'] for r, _ in probe})
    colors = {}
    for size in sorted({r['train_size'] for r, _ in sub}, key=plots.size_order):
      per_k = plots.by([(r, v) for r, v in sub if r['train_size'] == size],
                       lambda r: r['setting']['k'])
      xs = sorted(per_k)
      line = plots.line_with_ci(ax, xs, [per_k[k] for k in xs],
                                f'fine-tuned, {plots.size_label(size)}', bounds=lim, step=1)
      colors[size] = line.get_color()
      floor = [v for r, v in scratch if r['train_size'] == size
               and tuple(r['setting'].get(k) for k in keys) == variant]
      if floor:  # the from-scratch model (nothing pretrained) has no k: a level across the axis
        plots.reference(ax, floor, f'from scratch, {plots.size_label(size)}',
                        color=colors[size], linestyle=':', bounds=lim)
    spare, used = iter(PROBE_COLORS), set()
    for (size, read), per_k in probe_lines(probe).items():
      xs = sorted(per_k)
      # A probe trained on as many examples as a fine-tuning line shares its color.
      color = colors.get(size) if colors.get(size) not in used else None
      color = color or next(spare)
      used.add(color)
      plots.line_with_ci(ax, xs, [per_k[k] for k in xs],
                         f'linear probe on {read}, {plots.size_label(size)}', dashed=True,
                         color=color, marker='s', bounds=lim, step=1)
    L = num_layers or max(ks)
    ax.set_xticks(range(0, L + 1))
    ax.set_xlabel(f'pretrained blocks kept, k (blocks k..{L - 1} reinitialized)')
    ax.set_ylabel(plots.metric_label(metric))
    what = 'Progressive reinitialization'
    extra = _variant_text(variant, keys)
    ax.set_title(plots.title(what, task, model, info) + (f'\n{extra}' if extra else ''),
                 fontsize=10)
    _finish(ax, metric, info, fontsize=8, loc='upper left', bbox_to_anchor=(1.01, 1.0))
    name = f'{prefix}reinit_vs_k{_suffix(variant, keys, len(variants))}'
    saved.append(plots.save(fig, workdir, name))
  return saved


def probe_read(setting: Mapping[str, Any]) -> str:
  """What a probe reads, in words: '[CLS] → pooler', 'token mean', ..."""
  what = 'token mean' if setting.get('pooling') == 'mean' else '[CLS]'
  return what + (' → pooler' if setting.get('pooler', True) else '')


def probe_lines(pairs) -> dict[tuple[Any, str], dict[int, list[float]]]:
  """{(train_size, what it reads): {k: scores}}, sizes in order."""
  out: dict[tuple[Any, str], dict[int, list[float]]] = {}
  for r, v in sorted(pairs, key=lambda p: (plots.size_order(p[0]['train_size']),
                                           probe_read(p[0]['setting']))):
    key = (r['train_size'], probe_read(r['setting']))
    line = out.setdefault(key, collections.defaultdict(list))
    line[r['setting']['k']].append(v)
  return out


def plot_probe(workdir: str, records: Sequence[Record], metric: str, prefix: str = '',
               info: plots.RunInfo | None = None) -> list[str]:
  """Linear-probe score vs the block it reads (k = 0: embeddings), one line per training size
  and kind of probe; with scalar-mix probes, their score as a band and (right) their mean weight
  per layer as bars."""
  pairs = plots.scores(records, metric, one_layer)
  mixes = plots.scores(records, metric, lambda s: s.get('k') == MIX)
  if not pairs and not mixes:
    return []
  task, model = _meta([r for r, _ in pairs + mixes])
  fig, axes = plots.subplots(1, 2 if mixes else 1, figsize=(11.0 if mixes else 6.4, 4.2),
                             dpi=120, squeeze=False)
  ax = axes[0][0]
  ax.grid(True, alpha=0.3)
  for (size, read), per_k in probe_lines(pairs).items():
    xs = sorted(per_k)
    plots.line_with_ci(ax, xs, [per_k[k] for k in xs], f'{read}, {plots.size_label(size)}',
                       dashed=True, marker='s', bounds=plots.bounds(metric), step=1)
  for (size, read), per_k in probe_lines(mixes).items():
    plots.reference(ax, per_k[MIX], f'scalar mix of all layers, {read}, {plots.size_label(size)}',
                    linestyle=':', bounds=plots.bounds(metric))
  ks = sorted({r['setting']['k'] for r, _ in pairs})
  if ks:
    ax.set_xticks(ks)
  ax.set_xlabel('probed layer k (0 = embeddings, k = output of block k-1)')
  ax.set_ylabel(plots.metric_label(metric))
  ax.set_title(plots.title('Linear probe on the frozen model', task, model, info), fontsize=10)
  _finish(ax, metric, info, fontsize=8)
  if mixes:
    plot_mix_weights(axes[0][1], [r for r, _ in mixes])
  return [plots.save(fig, workdir, f'{prefix}probe_vs_k')]


def plot_mix_weights(ax, records: Sequence[Record]) -> None:
  """The scalar-mix probes' softmax weights per layer (`mix_weights/<j>`): mean over seeds, as bars
  (one set per training size), with each seed's weights as dots."""
  sizes = sorted({r['train_size'] for r in records}, key=plots.size_order)
  width = 0.8 / len(sizes)
  for i, size in enumerate(sizes):
    sub = [r for r in records if r['train_size'] == size]
    layers = sorted(int(k.split('/')[1]) for k in sub[0]['metrics'] if k.startswith('mix_weights/'))
    w = np.array([[r['metrics'][f'mix_weights/{j}'] for j in layers] for r in sub])
    xs = np.array(layers) + (i - (len(sizes) - 1) / 2) * width
    ax.bar(xs, w.mean(0), width, alpha=0.7, label=f'mean weight, {plots.size_label(size)}')
    ax.scatter(np.repeat(xs[None], len(w), 0), w, s=8, color='black', alpha=0.5, zorder=3)
    ax.set_xticks(layers)
  ax.grid(True, alpha=0.3, axis='y')
  ax.set_xlabel('layer (0 = embeddings, j = output of block j-1)')
  ax.set_ylabel('scalar-mix weight softmax(w)_j')
  ax.set_title('what the scalar mix reads (dots: one seed)', fontsize=9)
  ax.legend(fontsize=8)


# ----------------------------------------------------------------------------- Fig. 5


def plot_trials(workdir: str, records: Sequence[Record], metric: str, num_layers: int = 0,
                max_size: int = 5000, prefix: str = '',
                info: plots.RunInfo | None = None) -> list[str]:
  """Every trial's score vs k at the small training sizes (Tamkin et al. Fig. 5): with little
  data, runs split into ones that learned and ones stuck at chance."""
  pairs = plots.scores(records, metric, lambda s: 'k' in s)
  sizes = sorted({r['train_size'] for r, _ in pairs if 0 < r['train_size'] <= max_size})
  if not sizes:
    return []
  task, model = _meta([r for r, _ in pairs])
  fig, axes = plots.subplots(1, len(sizes), figsize=(4.2 * len(sizes) + 0.8, 4.0), dpi=120,
                             sharey=True, squeeze=False)
  rng = np.random.default_rng(0)  # jitter only
  for ax, size in zip(axes[0], sizes):
    sub = [(r, v) for r, v in pairs if r['train_size'] == size]
    ks = np.array([r['setting']['k'] for r, _ in sub], float)
    vs = np.array([v for _, v in sub])
    ax.scatter(ks + rng.uniform(-0.18, 0.18, len(ks)), vs, s=14, alpha=0.6, label='one trial')
    per_k = plots.by(sub, lambda r: r['setting']['k'])
    xs = sorted(per_k)
    ax.plot(xs, [np.mean(per_k[k]) for k in xs], 'k_', markersize=18, mew=2, label='mean')
    plots.chance_line(ax, info, metric)
    L = num_layers or int(max(xs))
    ax.set_xticks(range(0, L + 1))
    ax.grid(True, alpha=0.3)
    ax.set_xlabel('pretrained blocks kept, k')
    ax.set_title(f'{plots.size_label(size)} ({len(sub)} trials)', fontsize=9)
  axes[0][0].set_ylabel(plots.metric_label(metric))
  axes[0][0].legend(fontsize=8)
  plots.limit_y(axes[0][0], metric)
  fig.suptitle(plots.title('Per-trial scores at small training sizes', task, model, info),
               fontsize=10)
  return [plots.save(fig, workdir, f'{prefix}reinit_trials')]


# ----------------------------------------------------------------------------- Fig. 3


def plot_block_reinit(workdir: str, records: Sequence[Record], metric: str, num_layers: int = 0,
                      prefix: str = '', info: plots.RunInfo | None = None) -> list[str]:
  """Score vs the window of blocks reinitialized / preserved, with the full model and embeddings
  only (every block reinitialized) as reference lines (Tamkin et al. Fig. 3)."""
  del num_layers
  pairs = plots.scores(records, metric, lambda s: 'mode' in s)
  if not pairs:
    return []
  task, model = _meta([r for r, _ in pairs])
  variants = sorted({(r['train_size'], r['setting'].get('reinit_scheme')) for r, _ in pairs},
                    key=lambda t: (plots.size_order(t[0]), str(t[1])))
  saved = []
  for size, scheme in variants:
    sub = [(r, v) for r, v in pairs
           if r['train_size'] == size and r['setting'].get('reinit_scheme') == scheme]
    windows = [(r, v) for r, v in sub if r['setting']['mode'] in ('reinit', 'preserve')]
    if not windows:
      continue
    fig, ax = plots.figure(9.0, 4.4)
    starts = sorted({r['setting']['start'] for r, _ in windows})
    size_b = windows[0][0]['setting']['block_size']
    x0, x1 = min(starts) - 0.3, max(starts) + 0.3
    refs = plots.by([(r, v) for r, v in sub if r['setting']['mode'] in ('full', 'all_reinit')],
              lambda r: r['setting']['mode'])
    for mode, label, color, ls in (('full', 'full pretrained model', FULL_COLOR, '-'),
                                   ('all_reinit', 'embeddings only preserved', REINIT_COLOR, ':')):
      if mode in refs:
        plots.reference(ax, refs[mode], label, color, ls, plots.bounds(metric))
    for mode, label in (('reinit', f'{size_b} blocks reinitialized, rest kept'),
                        ('preserve', f'{size_b} blocks preserved, rest reinitialized')):
      per_s = plots.by([(r, v) for r, v in windows if r['setting']['mode'] == mode],
                 lambda r: r['setting']['start'])
      if per_s:
        xs = sorted(per_s)
        plots.line_with_ci(ax, xs, [per_s[s] for s in xs], label,
                           marker='o' if mode == 'reinit' else '^', bounds=plots.bounds(metric),
                           step=1)
    ax.set_xticks(starts)
    ax.set_xticklabels([f'{s}–{s + size_b - 1}' for s in starts])
    ax.set_xlabel('blocks in the window (0-based)')
    ax.set_ylabel(plots.metric_label(metric))
    ax.set_xlim(x0, x1)
    ax.set_title(plots.title(f'Block reinitialization, {plots.size_label(size)}', task, model, info)
                 + (f'\nreinit scheme: {scheme}' if scheme else ''), fontsize=10)
    _finish(ax, metric, info, fontsize=7, loc='upper left', bbox_to_anchor=(1.01, 1.0))
    name = f'{prefix}block_reinit' + (f'_n{size or "full"}_{scheme}' if len(variants) > 1 else '')
    saved.append(plots.save(fig, workdir, name))
  return saved


# ----------------------------------------------------------------------------- Fig. 4


def plot_permute(workdir: str, records: Sequence[Record], metric: str,
                 prefix: str = '', info: plots.RunInfo | None = None) -> list[str]:
  """Each permutation's score (mean over seeds) as a point, their mean with 95% CI and density,
  against the full and all-reinitialized models' mean ± 2σ bands (Tamkin et al. Fig. 4)."""
  pairs = plots.scores(records, metric, lambda s: 'mode' in s)
  if not pairs:
    return []
  task, model = _meta([r for r, _ in pairs])
  sizes = sorted({r['train_size'] for r, _ in pairs}, key=plots.size_order)
  fig, ax = plots.figure(2.6 * len(sizes) + 4.4, 4.6)
  lo_hi = plots.bounds(metric)
  labelled = set()

  def once(label):
    if label in labelled:
      return None
    labelled.add(label)
    return label

  for x, size in enumerate(sizes):
    sub = [(r, v) for r, v in pairs if r['train_size'] == size]
    refs = plots.by(sub, lambda r: r['setting']['mode'])
    for mode, label, color in (('full', 'full model, mean ± 2σ', FULL_COLOR),
                               ('all_reinit', 'all blocks reinitialized, mean ± 2σ',
                                REINIT_COLOR)):
      if mode in refs:
        vals = np.asarray(refs[mode])
        sd = vals.std(ddof=1) if len(vals) > 1 else 0.0
        ax.hlines(vals.mean(), x - 0.42, x + 0.42, colors=color)
        lo, hi = np.clip([vals.mean() - 2 * sd, vals.mean() + 2 * sd], *lo_hi)
        _band(ax, lo, hi, x - 0.42, x + 0.42, color, once(label))
    per_p = plots.by([(r, v) for r, v in sub if r['setting']['mode'] == 'permuted'],
               lambda r: r['setting']['permutation_seed'])
    if not per_p:
      continue
    pts = np.array([np.mean(v) for v in per_p.values()])
    jitter = np.random.default_rng(0).uniform(-0.12, 0.12, len(pts))
    ax.scatter(x - 0.15 + jitter, pts, s=18, color='tab:purple', alpha=0.7, zorder=3,
               label=once('one permutation (mean over seeds)'))
    mean, lo, hi = plots.mean_ci(pts, lo_hi)
    ax.errorbar([x + 0.05], [mean], yerr=[[mean - lo], [hi - mean]], fmt='D', color='black',
                capsize=4, zorder=4, label=once('permutations: mean, 95% CI'))
    if len(pts) > 2 and np.ptp(pts) > 0:
      grid = np.linspace(*np.clip([pts.min() - 2 * pts.std(), pts.max() + 2 * pts.std()],
                                  *lo_hi), 100)
      dens = scipy.stats.gaussian_kde(pts)(grid)
      ax.fill_betweenx(grid, x + 0.15, x + 0.15 + 0.25 * dens / dens.max(), color='tab:purple',
                       alpha=0.25, lw=0, label=once('density of permutations'))
  ax.set_xticks(range(len(sizes)))
  ax.set_xticklabels([plots.size_label(s) for s in sizes])
  ax.set_xlim(-0.6, len(sizes) - 0.4)
  ax.set_xlabel('training set')
  ax.set_ylabel(plots.metric_label(metric))
  ax.set_title(plots.title('Pretrained blocks in a permuted order', task, model, info),
               fontsize=10)
  _finish(ax, metric, info, fontsize=7, loc='upper left', bbox_to_anchor=(1.01, 1.0))
  return [plots.save(fig, workdir, f'{prefix}permute')]


# ----------------------------------------------------------------------------- merging runs


def plot_all(out: str, records: Sequence[Record], prefix_tasks: bool = True,
             configs: Mapping[str, Mapping[str, Any]] | None = None) -> list[str]:
  """Every figure the records support, per task (plots/<task>_<figure>.png); `configs` (the
  merged workdirs' config.json) give each task's dev set for the majority-class line."""
  saved = []
  tasks = sorted({r.get('task') for r in records})
  for task in tasks:
    metric = data_lib.record_spec(task, records).primary_metric
    of = lambda exp: [r for r in records if r.get('task') == task and r.get('experiment') == exp]
    prefix = f'{task}_' if prefix_tasks else ''
    info = base.merged_run_info(configs or {}, task)
    saved += plot_reinit(out, of('reinit'), of('probe'), metric, prefix=prefix, info=info)
    saved += plot_trials(out, of('reinit'), metric, prefix=prefix, info=info)
    saved += plot_probe(out, of('probe'), metric, prefix=prefix, info=info)
    saved += plot_block_reinit(out, of('block_reinit'), metric, prefix=prefix, info=info)
    saved += plot_permute(out, of('permute'), metric, prefix=prefix, info=info)
  return saved


def combine(workdirs: Sequence[str], out: str) -> list[str]:
  """Merges study workdirs into `out`: summary.csv, trials.jsonl, config.json and plots/."""
  records, configs = [], {}
  for d in workdirs:
    records += read_workdir(d)
    cfg = os.path.join(d, 'config.json')
    if os.path.exists(cfg):
      with open(cfg, encoding='utf-8') as f:
        configs[os.path.relpath(d, out)] = json.load(f)
  os.makedirs(out, exist_ok=True)
  path = os.path.join(out, 'trials.jsonl')
  if os.path.exists(path):
    os.remove(path)
  merged = [{**r, 'trial_id': f'{r.get("task")}/{r.get("experiment")}/{r["trial_id"]}'}
            for r in records]
  records_lib.append_records(path, merged)
  summary.write_summary_csv(os.path.join(out, 'summary.csv'), records)
  with open(os.path.join(out, 'config.json'), 'w', encoding='utf-8') as f:
    json.dump(configs, f, indent=2, sort_keys=True)
  metric_of = lambda task: data_lib.record_spec(task, records).primary_metric
  return (permutations.write_correlations(out, records, metric_of)
          + plot_all(out, records, configs=configs))


def main(argv: Sequence[str] | None = None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('workdirs', nargs='+', help='reinit/block_reinit/permute/probe workdirs')
  parser.add_argument('--out', required=True, help='where the merged summary and plots go')
  args = parser.parse_args(argv)
  for path in combine(args.workdirs, args.out):
    print(path)


if __name__ == '__main__':
  main()
