"""Figures a researcher can read: bands clipped to the metric's range and explained in the legend,
the majority-class line, reference lines that span the axis, titles naming the data used."""

import json

import numpy as np
import pytest
import scipy.stats
import sklearn.metrics

from jaxtransfer.data import glue as data_lib
from jaxtransfer.report import stats as stats_lib
from jaxtransfer.studies.radiya2020 import distances as closeness
from jaxtransfer.report import finetune as finetune_figs
from jaxtransfer.studies.radiya2020 import masks
from jaxtransfer.report import plots
from jaxtransfer.studies.xie2022 import analysis as xie
from jaxtransfer.studies import base

INFO = plots.RunInfo('demo sentiment set (342 train / 85 dev)', 'accuracy', 0.509)


@pytest.fixture
def figures(monkeypatch):
  """Keeps every figure a plot function saves, so its artists can be inspected."""
  kept = []
  save = plots.save

  def keep(fig, workdir, name):
    kept.append(fig)
    return save(fig, workdir, name)

  monkeypatch.setattr(plots, 'save', keep)
  return kept


def _record(setting, seed, value, metric='accuracy', size=0, **metrics):
  return {'trial_id': json.dumps(setting) + str(seed), 'task': 'sst2', 'model': 'minilm-l6',
          'seed': seed, 'train_size': size, 'setting': setting, 'status': 'ok',
          'metrics': {metric: value, **metrics}, 'train_loss': 0.5}


def _legend_texts(ax):
  return [t.get_text() for t in ax.get_legend().get_texts()]


def test_band_is_clipped_to_the_range_and_explained(tmp_path):
  fig, ax = plots.figure()
  samples = [[0.40, 0.95], [0.60, 0.62]]
  plots.line_with_ci(ax, [0, 1], samples, 'two seeds', bounds=plots.bounds('accuracy'))
  plots.chance_line(ax, INFO, 'accuracy')
  plots.legend(ax)
  band = ax.collections[0].get_paths()[0].vertices[:, 1]
  for i, x in enumerate(samples):
    x = np.asarray(x)
    low, high = scipy.stats.t.interval(0.95, len(x) - 1, loc=x.mean(), scale=scipy.stats.sem(x))
    assert np.any(np.isclose(band, np.clip(low, 0, 1))) and np.any(np.isclose(band, min(high, 1)))
  assert band.min() >= 0.0 and band.max() <= 1.0
  assert plots.BAND_LABEL in _legend_texts(ax)
  assert 'always the majority class (0.509)' in _legend_texts(ax)
  chance = [line for line in ax.get_lines() if line.get_label().startswith('always')]
  assert chance[0].get_ydata()[0] == 0.509
  plots.limit_y(ax, 'accuracy')
  assert ax.get_ylim()[0] >= -0.03 and ax.get_ylim()[1] <= 1.03


@pytest.mark.parametrize('task, labels', [
    ('sst2', [1, 1, 0, 1, 0]), ('cola', [1, 1, 1, 0]), ('mrpc', [1, 1, 0]), ('mrpc', [0, 0, 1]),
    ('rte', [0, 1, 1, 0])])
def test_majority_score_matches_sklearn(task, labels):
  spec = data_lib.get_task(task)
  labels = np.asarray(labels)
  major = np.bincount(labels).argmax()
  constant = np.full_like(labels, major)
  expected = {'accuracy': sklearn.metrics.accuracy_score, 'f1': sklearn.metrics.f1_score,
              'mcc': sklearn.metrics.matthews_corrcoef}[spec.primary_metric](labels, constant)
  assert base.majority_score(spec, labels) == pytest.approx(expected)
  assert base.majority_score(data_lib.get_task('stsb'), np.array([0.5, 1.0])) is None


def test_titles_spell_glue_tasks_as_glue_does():
  assert plots.title('What', 'cola', 'minilm-l6') == 'What — CoLA, minilm-l6'
  assert 'SST-2' in plots.title('What', 'sst-2', '/models/minilm-l6/')
  assert 'my_task' in plots.title('What', 'my_task', 'm')


def test_demo_figures_name_the_demo_data(minilm, tmp_path):
  data = data_lib.load_task_data('sst2', 'demo', minilm.tokenizer, minilm.path, 32,
                                 cache_dir=str(tmp_path))
  rows = {s: (tmp_path / 'demo' / 'SST-2' / f'{s}.tsv').read_text().splitlines()[1:]
          for s in ('train', 'dev')}
  config = type('C', (), {'data_dir': 'demo'})
  info = base.run_info(config, data, len(data.dev['']))
  assert info.data == f'demo sentiment set ({len(rows["train"])} train / {len(rows["dev"])} dev)'
  assert 'SST-2' not in plots.title('What', 'sst2', 'minilm-l6', info)
  share = np.mean([int(r.split('\t')[1]) for r in rows['dev']])
  assert info.chance == pytest.approx(max(share, 1 - share))
  real = type('C', (), {'data_dir': '/data/glue'})
  data.dev[''] = data.dev[''].take(np.arange(32))
  assert (base.run_info(real, data, len(rows['dev'])).data
          == f'SST-2 (first 32 of {len(rows["dev"])} dev examples)')


def test_finetune_draws_every_trial(tmp_path, figures):
  recs = [_record({}, s, v) for s, v in ((1, 0.8), (2, 0.4), (3, 0.7))]
  path = finetune_figs.plot_trials(str(tmp_path), recs, 'accuracy', INFO)
  assert path.endswith('plots/finetune_trials.png')
  ax = figures[0].axes[0]
  from matplotlib.collections import PathCollection
  points = [c.get_offsets()[:, 1] for c in ax.collections if isinstance(c, PathCollection)]
  assert sorted(np.concatenate(points)) == [0.4, 0.7, 0.8]
  assert 'demo sentiment set' in figures[0]._suptitle.get_text()


def test_critical_blocks_reference_spans_the_axis(tmp_path, figures):
  """With one r, full fine-tuning drawn from r to r had a legend entry and no line."""
  recs = [_record({'tuned': 'all'}, s, v) for s, v in ((1, 0.8), (2, 0.82))]
  recs += [_record({'r': 2, 'tuned': t, 'blocks': [0, 1]}, s, v)
           for t in ('most_changed', 'least_changed') for s, v in ((1, 0.7), (2, 0.75))]
  closeness.plot_critical(str(tmp_path), recs, data_lib.get_task('sst2'), 'minilm-l6', INFO)
  ax = figures[0].axes[0]
  full = next(line for line in ax.get_lines() if line.get_label().startswith('full fine-tuning'))
  assert list(full.get_xdata()) == [0, 1]  # axes coordinates: the whole width
  assert full.get_ydata()[0] == pytest.approx(0.81)
  for line in ax.get_lines():
    assert line.get_label() in _legend_texts(ax) or line.get_label().startswith('_')


def test_critical_orders_picking_the_same_blocks_both_show(tmp_path, figures):
  """most_changed = top when the top blocks move most: same scores, drawn side by side with their
  95% CI as error bars (a band over one r has no width)."""
  recs = [_record({'r': 2, 'tuned': t, 'blocks': [4, 5]}, s, v)
          for t in ('most_changed', 'top') for s, v in ((1, 0.7), (2, 0.75), (3, 0.8))]
  closeness.plot_critical(str(tmp_path), recs, data_lib.get_task('sst2'), 'minilm-l6', INFO)
  ax = figures[0].axes[0]
  bars = {c.get_label(): c for c in ax.containers}
  assert set(bars) == {'most changed, full training set', 'top, full training set'}
  xs = [bars[k].lines[0].get_xdata()[0] for k in sorted(bars)]
  assert xs[0] != xs[1] and all(abs(x - 2) < 0.5 for x in xs)
  mean, _, low, high = stats_lib.t_ci([0.7, 0.75, 0.8])
  segment = bars['top, full training set'].lines[2][0].get_segments()[0]
  assert segment[:, 1] == pytest.approx([low, high])
  assert bars['top, full training set'].lines[0].get_ydata()[0] == pytest.approx(mean)


def test_sparsity_baselines_have_their_own_colors(tmp_path, figures):
  recs = [_record({'method': 'mask', 'target_sparsity': sp}, s, 0.7, sparsity=sp)
          for sp in (0.1, 0.5) for s in (1, 2)]
  recs += [_record({'method': m}, s, v) for m, v in (('finetune', 0.8), ('head_only', 0.6))
           for s in (1, 2)]
  masks.plot_accuracy_vs_sparsity(str(tmp_path), recs, data_lib.get_task('sst2'), 'm', INFO)
  lines = {l.get_label(): l for l in figures[0].axes[0].get_lines()}
  ft, head = (lines[k] for k in ('full fine-tuning, full training set',
                                 'frozen encoder, head only, full training set'))
  assert ft.get_color() != head.get_color() and ft.get_linestyle() != head.get_linestyle()
  assert ft.get_ydata()[0] == pytest.approx(0.8) and head.get_ydata()[0] == pytest.approx(0.6)


def test_sparsity_title_names_only_the_baselines_run(tmp_path, figures):
  recs = [_record({'method': 'mask', 'target_sparsity': sp}, s, 0.7, sparsity=sp)
          for sp in (0.05, 0.5) for s in (1, 2)]
  masks.plot_accuracy_vs_sparsity(str(tmp_path), recs, data_lib.get_task('sst2'), 'm', INFO)
  assert 'fine-tuning' not in figures[0].axes[0].get_title()
  recs += [_record({'method': 'finetune'}, s, 0.8) for s in (1, 2)]
  masks.plot_accuracy_vs_sparsity(str(tmp_path), recs, data_lib.get_task('sst2'), 'm', INFO)
  assert 'vs full fine-tuning' in figures[1].axes[0].get_title()


@pytest.mark.parametrize('nu, scale', [([3.1, 2.5, 2.2, 2.0, 1.9, 1.7, 1.8], 'linear'),
                                       ([300, 30, 10, 3, 1, 0.5, 0.4], 'log')])
def test_variability_axis_has_readable_ticks(tmp_path, figures, nu, scale):
  xie.plot_variability(str(tmp_path), {'sst2': np.array(nu)}, 'sst2', 'm', info=INFO)
  ax = figures[0].axes[0]
  assert ax.get_yscale() == scale
  lo, hi = ax.get_ylim()
  shown = [t for t in ax.get_yticks() if lo <= t <= hi]
  labels = [t.get_text() for t in ax.get_yticklabels() if t.get_text()]
  assert len(shown) >= 4 and len(labels) >= 4, (shown, labels)


def test_bands_join_only_consecutive_k_and_lone_points_get_error_bars():
  # k = 0, 1, 2 run, 3 and 5 not: one band over 0..2, markers with 95% CI bars at 4 and 6.
  xs, samples = [0, 1, 2, 4, 6], [[0.5, 0.6], [0.6, 0.7], [0.7, 0.8], [0.7, 0.9], [0.8, 0.84]]
  fig, ax = plots.figure()
  plots.line_with_ci(ax, xs, samples, 'k', bounds=plots.bounds('accuracy'), step=1)
  plots.legend(ax)
  assert plots.runs(xs, 1) == [[0, 1, 2], [3], [4]] and plots.runs(xs) == [[0, 1, 2, 3, 4]]
  bands = [c for c in ax.collections
           if type(c).__name__ in ('PolyCollection', 'FillBetweenPolyCollection')]
  assert len(bands) == 1
  assert bands[0].get_paths()[0].vertices[:, 0].min() == 0
  assert bands[0].get_paths()[0].vertices[:, 0].max() == 2
  bars = [c for c in ax.collections if type(c).__name__ == 'LineCollection']
  segments = sorted(seg[0].tolist() for c in bars for seg in [c.get_segments()] if len(seg))
  for x, vals in ((4, samples[3]), (6, samples[4])):
    low, high = scipy.stats.t.interval(0.95, 1, loc=np.mean(vals), scale=scipy.stats.sem(vals))
    want = [[x, max(low, 0.0)], [x, min(high, 1.0)]]
    assert any(np.allclose(s, want) for s in segments), (x, segments)
  lines = [l for l in ax.get_lines() if len(l.get_xdata()) > 1]
  assert [list(l.get_xdata()) for l in lines] == [[0, 1, 2]]
  assert plots.BAR_LABEL in _legend_texts(ax) and plots.BAND_LABEL in _legend_texts(ax)


def test_masks_plot_at_the_achieved_sparsity_or_against_the_swept_lr(tmp_path, figures):
  # Two targets: x is the achieved sparsity (here not the target), one point per target.
  recs = [_record({'method': 'mask', 'target_sparsity': t}, s, 0.7, sparsity=a)
          for t, a in ((0.1, 0.12), (0.5, 0.47)) for s in (1, 2)]
  path = masks.plot_accuracy_vs_sparsity(str(tmp_path), recs, data_lib.get_task('sst2'), 'm', INFO)
  assert path.endswith('accuracy_vs_sparsity.png')
  xs = [l.get_xdata() for l in figures[0].axes[0].get_lines() if l.get_label().startswith('masks')]
  assert list(xs[0]) == pytest.approx([0.12, 0.47])
  # One target, three mask lrs (results/radiya2020/sst2_mask_lr): the lr is the x axis.
  recs = [_record({'method': 'mask', 'target_sparsity': 0.1, 'mask_lr': lr}, 1, v, sparsity=0.1)
          for lr, v in ((3e-3, 0.80), (1e-2, 0.82), (3e-2, 0.83))]
  path = masks.plot_accuracy_vs_sparsity(str(tmp_path), recs, data_lib.get_task('sst2'), 'm', INFO)
  assert path.endswith('accuracy_vs_mask_lr.png')
  ax = figures[1].axes[0]
  line = next(l for l in ax.get_lines() if l.get_label().startswith('masks'))
  assert list(line.get_xdata()) == pytest.approx([3e-3, 1e-2, 3e-2])
  assert list(line.get_ydata()) == pytest.approx([0.80, 0.82, 0.83])
  assert ax.get_xscale() == 'log' and 'sparsity 0.1' in ax.get_title()
  # One target and nothing swept: a marker with error bars, and the title says so.
  recs = [_record({'method': 'mask', 'target_sparsity': 0.1}, s, v, sparsity=0.1)
          for s, v in ((1, 0.8), (2, 0.9))]
  masks.plot_accuracy_vs_sparsity(str(tmp_path), recs, data_lib.get_task('sst2'), 'm', INFO)
  assert 'only sparsity 0.10 was run' in figures[2].axes[0].get_title()


def test_merged_figures_read_the_majority_class_from_the_workdirs_dev_set(tmp_path):
  (tmp_path / 'SST-2').mkdir()
  (tmp_path / 'SST-2' / 'dev.tsv').write_text('sentence\tlabel\na\t1\nb\t1\nc\t0\nd\t1\n')
  configs = {'cola/reinit': {'task': 'cola', 'data_dir': str(tmp_path)},
             'sst2/reinit': {'task': 'sst2', 'data_dir': str(tmp_path), 'eval_max_examples': 0}}
  info = base.merged_run_info(configs, 'sst2')
  assert (info.data, info.metric, info.chance) == ('SST-2', 'accuracy', 0.75)
  assert base.merged_run_info(configs, 'cola') is None  # no CoLA dev set there
  assert base.merged_run_info({'x': {'task': 'sst2', 'data_dir': 'demo'}}, 'sst2') is None
