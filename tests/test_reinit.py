"""The Tamkin et al. studies on a tiny model: reinit k-sweep, block reinit, permutation, figures."""

import csv
import logging
import pathlib

import jax
import numpy as np
import pytest

import helpers

from configs import block_reinit as block_cfg
from configs import permute as permute_cfg
from configs import reinit as reinit_cfg
from jaxtransfer.engine import trials as trials_lib
from jaxtransfer.runtime import records as records_lib
from jaxtransfer import train
from jaxtransfer.errors import UserError
from jaxtransfer.studies.tamkin2020 import reinit as reinit_exp

from helpers import make_tiny_model_dir


@pytest.fixture(scope='module')
def tiny6(tmp_path_factory) -> pathlib.Path:
  """6 blocks like the packaged MiniLM, so a k-sweep has its 7 settings."""
  return make_tiny_model_dir(tmp_path_factory.mktemp('tiny6'), num_layers=6)


@pytest.fixture(scope='module')
def cache(tmp_path_factory) -> pathlib.Path:
  """Tokenized demo data, shared by the runs of this file."""
  return tmp_path_factory.mktemp('cache')


def _config(module, model_dir, cache, **overrides):
  c = module.get_config('demo')
  c.model = str(model_dir)
  c.cache_dir = str(cache)
  c.max_seq_length = 32
  c.batch_size = 8
  c.num_train_steps = 3
  c.train_sizes = (100,)
  c.log_every = 3
  c.trials_per_program = 64  # these tests check that a sweep is one vmapped group (CPU default: 1)
  for k, v in overrides.items():
    c[k] = v
  return c


def _records(workdir):
  return records_lib.read_records(pathlib.Path(workdir) / 'trials.jsonl')


def test_k_sweep_is_one_compiled_group(tiny6, tmp_path, caplog, cache):
  """7 settings x 2 seeds differ only in per-trial arrays: one group, one compilation."""
  caplog.set_level(logging.INFO, logger='absl')
  work = tmp_path / 'reinit'
  train.train_and_evaluate(_config(reinit_cfg, tiny6, cache), str(work))
  recs = _records(work)
  assert sorted({r['setting']['k'] for r in recs}) == list(range(7))
  assert len(recs) == 14 and all(r['status'] == 'ok' for r in recs)
  assert len({r['group'] for r in recs}) == 1 and recs[0]['group_trials'] == 14
  compiles = [m for m in caplog.messages if m.startswith('Compiled the training step')]
  assert len(compiles) == 1, compiles
  assert all(r['setting']['reinit_scheme'] == 'bert' for r in recs)
  assert {p.name for p in (work / 'plots').iterdir()} == {'reinit_vs_k.png', 'reinit_trials.png'}
  with open(work / 'summary.csv', newline='') as f:
    rows = [r for r in csv.DictReader(f) if r['metric'] == 'accuracy']
  assert len(rows) == 7 and all(r['n'] == '2' for r in rows)
  assert all(float(r['ci95_low']) <= float(r['mean']) <= float(r['ci95_high']) for r in rows)


def test_block_reinit_windows_and_references_share_one_program(tiny_model_dir, tmp_path, cache):
  """Windows and both reference lines differ only in the reinit mask: one engine group (the same
  Program as the k-sweep above, so its end-to-end run is not repeated here)."""
  cfg = _config(block_cfg, tiny_model_dir, cache, starts=(-1,), block_size=2, seeds=(1, 2))
  study = reinit_exp.BlockReinit()
  ctx = study.load(cfg, str(tmp_path))
  study.validate(ctx)
  trials = study.trials(ctx)
  masks = {(t.setting['mode'], t.setting.get('start')): t.arrays['reinit'].tolist() for t in trials}
  assert masks == {('full', None): [False] * 3, ('all_reinit', None): [True] * 3,
                   ('reinit', 0): [True, True, False], ('reinit', 1): [False, True, True],
                   ('preserve', 0): [False, False, True], ('preserve', 1): [True, False, False]}
  assert len(trials) == 12 and len({t.trial_id for t in trials}) == 12
  groups = trials_lib.group_trials(trials, lambda t: 3, lambda program: 100)
  assert len(groups) == 1


def test_permute_records_the_order_and_runs_in_one_group(tiny_model_dir, tmp_path, cache):
  cfg = _config(permute_cfg, tiny_model_dir, cache, seeds=(1,))
  train.train_and_evaluate(cfg, str(tmp_path / 'perm'))
  recs = _records(tmp_path / 'perm')
  perms = {r['setting']['permutation_seed']: r['setting']['order'] for r in recs
           if r['setting']['mode'] == 'permuted'}
  assert perms == {p: np.random.RandomState(p).permutation(3).tolist() for p in (1, 2, 3)}
  assert {r['setting']['mode'] for r in recs} == {'full', 'all_reinit', 'permuted'}
  assert len({r['group'] for r in recs}) == 1
  assert (tmp_path / 'perm' / 'plots' / 'permute.png').exists()


def _paper_reinit(*overrides):
  c = helpers.load_config(pathlib.Path(reinit_cfg.__file__), *overrides)
  reinit_exp.ProgressiveReinit().resolve(c)
  return c


def test_explicit_seeds_win_over_small_size_seeds(tiny_model_dir, tmp_path, cache, caplog):
  """reinit.py's paper protocol runs 50 seeds at 500 examples, but --config.seeds is what runs."""
  paper = _paper_reinit()
  assert reinit_exp.seeds_for(paper, 500) == list(range(1, 51))
  assert reinit_exp.seeds_for(paper, 5000) == reinit_exp.seeds_for(paper, 0) == [1, 2, 3]
  given = _paper_reinit('--config.seeds=[0,1]', '--config.train_sizes=[100]')
  assert reinit_exp.seeds_for(given, 100) == [0, 1] and given.small_size_seeds == 0
  # The same through the study on a model: 2 seeds x (L+1 = 4) values of k, counted in the log.
  caplog.set_level(logging.INFO, logger='absl')
  for k in ('model', 'cache_dir'):
    given[k] = str(tiny_model_dir if k == 'model' else cache)
  given.data_dir, given.max_seq_length = 'demo', 32
  study = reinit_exp.ProgressiveReinit()
  trials = study.trials(study.load(given, str(tmp_path)))
  assert sorted((t.seed, t.setting['k']) for t in trials) == [(s, k) for s in (0, 1)
                                                              for k in range(4)]
  assert 'reinit: 8 trials (100 examples: 4 settings x 2 seeds).' in caplog.messages


@pytest.mark.parametrize('module, overrides, match', [
    (reinit_cfg, {'ks': (0, 4)}, 'ks=4'),
    (reinit_cfg, {'reinit_scheme': 'xavier'}, 'reinit_scheme'),
    (reinit_cfg, {'reinit_lr_multiplier': 0.0}, 'reinit_lr_multiplier'),
    (block_cfg, {'starts': (2,), 'block_size': 2}, 'starts=2'),
    (block_cfg, {'block_size': 4}, 'block_size=4'),
    (block_cfg, {'mode': 'sideways'}, 'mode'),
    (permute_cfg, {'permutation_seeds': (-1,)}, 'permutation_seeds'),
])
def test_bad_indices_are_user_errors(tiny_model_dir, tmp_path, module, overrides, match, cache):
  cfg = _config(module, tiny_model_dir, cache, **overrides)
  with pytest.raises(UserError, match=match):
    train.train_and_evaluate(cfg, str(tmp_path / 'bad'))
  assert not (tmp_path / 'bad' / 'trials.jsonl').exists()


def test_reinit_lr_multiplier_scales_only_reinitialized_blocks(tiny_model_dir, tmp_path, cache):
  """The 5x ablation: block_lr is 5 on the reinitialized blocks, and the program turns it into
  per-leaf multipliers along the block axis (the head and embeddings keep 1)."""
  cfg = _config(reinit_cfg, tiny_model_dir, cache, ks=(1,), seeds=(1,),
                reinit_lr_multiplier=5.0)
  study = reinit_exp.ProgressiveReinit()
  ctx = study.load(cfg, str(tmp_path))
  (trial,) = study.trials(ctx)
  assert trial.setting == {'k': 1, 'reinit_scheme': 'bert', 'reinit_lr_multiplier': 5.0}
  np.testing.assert_array_equal(trial.arrays['reinit'], [False, True, True])
  np.testing.assert_array_equal(trial.arrays['block_lr'], [1, 5, 5])
  arrays = {k: jax.numpy.asarray(trial.arrays.get(k, v))
            for k, v in trial.program.defaults().items()}
  train, _ = trial.program.init(ctx.pretrained.params, arrays, jax.random.key(0))
  mult = trial.program.lr_multipliers(train, arrays)
  q = np.broadcast_to(mult['blocks']['query']['kernel'], train['blocks']['query']['kernel'].shape)
  np.testing.assert_array_equal(q[0], 1.0)
  np.testing.assert_array_equal(q[1:], 5.0)
  assert float(mult['head']['classifier']['kernel']) == 1.0
  assert float(mult['embeddings']['word_embeddings']['embedding']) == 1.0


def _fake_runs(root: pathlib.Path) -> list[pathlib.Path]:
  """Workdirs of every study (two tasks), with scores that rise with the pretrained blocks kept."""
  rng = np.random.default_rng(0)
  runs = {}

  def rec(task, exp, size, seed, setting, score):
    metric = 'mcc' if task == 'cola' else 'accuracy'
    return {'trial_id': f'{exp}-{size}-{sorted(setting.items())}-{seed}', 'experiment': exp,
            'task': task, 'model': 'minilm-l6', 'seed': seed, 'train_size': size,
            'setting': setting, 'metrics': {metric: score + rng.normal(0, 0.02)},
            'status': 'ok', 'error': None, 'steps': 10, 'wall_s': 1.0}

  for task in ('sst2', 'cola'):
    runs[f'{task}/reinit'] = [rec(task, 'reinit', n, s, {'k': k, 'reinit_scheme': 'bert',
                                                         'reinit_lr_multiplier': 1.0},
                                  0.5 + 0.05 * k + (0.1 if n > 500 else 0))
                              for n in (500, 2000) for k in range(7) for s in (1, 2, 3)]
    runs[f'{task}/probe'] = [rec(task, 'probe', 0, s, {'k': k}, 0.55 + 0.03 * k)
                             for k in range(7) for s in (1, 2, 3)]
  refs = [({'mode': 'full'}, 0.85), ({'mode': 'all_reinit'}, 0.55)]
  runs['sst2/block'] = [rec('sst2', 'block_reinit', 5000, s, {**st, 'reinit_scheme': 'bert'}, v)
                        for st, v in refs + [({'mode': m, 'start': i, 'block_size': 3}, 0.7)
                                             for m in ('reinit', 'preserve') for i in range(4)]
                        for s in (1, 2, 3)]
  runs['sst2/permute'] = [rec('sst2', 'permute', 5000, s, {**st, 'reinit_scheme': 'bert'}, v)
                          for st, v in refs + [({'mode': 'permuted', 'permutation_seed': p,
                                                 'order': [0]}, 0.6 + 0.02 * p)
                                               for p in range(1, 11)]
                          for s in (1, 2, 3)]
  dirs = []
  for name, recs in runs.items():
    d = root / name
    d.mkdir(parents=True)
    records_lib.append_records(d / 'trials.jsonl', recs)
    dirs.append(d)
  return dirs


def test_figures_and_merged_summary(tmp_path):
  from jaxtransfer.studies.tamkin2020 import analysis as tamkin
  dirs = _fake_runs(tmp_path / 'runs')
  saved = tamkin.combine([str(d) for d in dirs], str(tmp_path / 'out'))
  names = {pathlib.Path(p).name for p in saved}
  assert names == {'sst2_reinit_vs_k.png', 'sst2_reinit_trials.png', 'sst2_probe_vs_k.png',
                   'cola_reinit_vs_k.png', 'cola_reinit_trials.png', 'cola_probe_vs_k.png',
                   'sst2_block_reinit.png', 'sst2_permute.png'}
  assert all(pathlib.Path(p).stat().st_size > 10_000 for p in saved)
  merged = records_lib.read_records(tmp_path / 'out' / 'trials.jsonl')
  assert len(merged) == sum(len(records_lib.read_records(d / 'trials.jsonl')) for d in dirs)
  with open(tmp_path / 'out' / 'summary.csv', newline='') as f:
    rows = list(csv.DictReader(f))
  assert {(r['task'], r['experiment']) for r in rows} == {
      ('sst2', 'reinit'), ('sst2', 'probe'), ('cola', 'reinit'), ('cola', 'probe'),
      ('sst2', 'block_reinit'), ('sst2', 'permute')}


def test_permutation_rank_correlations_across_tasks_and_sizes(tmp_path):
  """permute_correlations.csv: per (task, size), each permutation's mean over seeds; Spearman and
  Pearson between every two runs over the permutations both have (scipy on the same means)."""
  import scipy.stats
  from jaxtransfer.studies.tamkin2020 import permutations
  rs = np.random.RandomState(0)
  base_score = rs.uniform(0.6, 0.9, 6)
  runs = {('sst2', 500): base_score, ('sst2', 5000): base_score + rs.normal(0, 0.02, 6),
          ('cola', 500): rs.uniform(0.1, 0.4, 6)}
  records = [{'experiment': 'permute', 'status': 'ok', 'task': task, 'train_size': size,
              'setting': {'mode': 'permuted', 'permutation_seed': p + 1},
              'metrics': {'accuracy' if task == 'sst2' else 'mcc': float(v + 0.01 * seed)}}
             for (task, size), scores in runs.items() for p, v in enumerate(scores)
             for seed in (1, 2) if not (task == 'cola' and p == 5)]
  records.append({'experiment': 'permute', 'status': 'ok', 'task': 'sst2', 'train_size': 500,
                  'setting': {'mode': 'full'}, 'metrics': {'accuracy': 0.99}})  # not a permutation
  metric_of = lambda task: 'accuracy' if task == 'sst2' else 'mcc'
  rows = {(r['a'], r['b']): r for r in permutations.correlations(records, metric_of)}
  assert set(rows) == {('cola/n500', 'sst2/n500'), ('cola/n500', 'sst2/n5000'),
                       ('sst2/n500', 'sst2/n5000')}
  for (a, b), row in rows.items():
    (ta, na), (tb, nb) = [(x.split('/')[0], int(x.split('/n')[1])) for x in (a, b)]
    n = 5 if 'cola' in (ta, tb) else 6
    x, y = runs[(ta, na)][:n] + 0.015, runs[(tb, nb)][:n] + 0.015   # mean over seeds 1, 2
    assert row['permutations'] == n
    np.testing.assert_allclose(row['spearman'], scipy.stats.spearmanr(x, y)[0], atol=1e-12)
    np.testing.assert_allclose(row['pearson'], scipy.stats.pearsonr(x, y)[0], atol=1e-9)
  assert rows[('sst2/n500', 'sst2/n5000')]['pearson'] > 0.9
  [path] = permutations.write_correlations(str(tmp_path), records, metric_of)
  with open(path, newline='') as f:
    assert len(list(csv.DictReader(f))) == 3


class _Six:
  num_layers = 6


@pytest.mark.parametrize('overrides, distinct', [((), 8), (('--config.block_size=3',
                                                            '--config.starts=(0,3)'), 4)])
def test_block_reinit_demo_runs_no_trial_twice(overrides, distinct, caplog):
  """On MiniLM's 6 blocks the demo's windows never coincide; windows of 3 do, and the log says so."""
  caplog.set_level(logging.WARNING, logger='absl')
  ctx = type('Ctx', (), {'config': helpers.load_config(f'{block_cfg.__file__}:demo', *overrides),
                         'pretrained': _Six()})()
  settings = reinit_exp.BlockReinit().settings(ctx)
  masks = {tuple(s.arrays['reinit'].tolist()) for s in settings}
  assert len(masks) == distinct
  same = [m for m in caplog.messages if 'the same trial runs twice' in m]
  assert len(same) == len(settings) - distinct
  if same:
    assert 'reinit 0-2 and preserve 3-5' in ' '.join(same)


def test_scratch_runs_alone_as_its_own_program_and_off_keeps_the_hash(tiny6, tmp_path, cache):
  """scratch=True with ks=() is one trial per seed, mode 'scratch', in the Reinit(scratch) program;
  off, the key hashes as if the config lacked it (finished workdirs keep their config_hash)."""
  from jaxtransfer.runtime import config_history
  cfg = _config(reinit_cfg, tiny6, cache, seeds=(1, 2), ks=(), scratch=True)
  study = reinit_exp.ProgressiveReinit()
  trials = study.trials(study.load(cfg, str(tmp_path)))
  assert [t.setting['mode'] for t in trials] == ['scratch'] * 2
  assert trials[0].trial_id == 'n100-modescratch-reinit_lr_multiplier1.0-reinit_schemebert-s1'
  assert all(iv.scratch for iv in trials[0].program.interventions if hasattr(iv, 'scratch'))
  np.testing.assert_array_equal(trials[0].arrays['reinit'], [True] * 6)
  off = config_history.resolved(_config(reinit_cfg, tiny6, cache))
  assert off['scratch'] is False
  assert config_history.config_hash(off) == config_history.config_hash(
      {k: v for k, v in off.items() if k != 'scratch'})
  assert config_history.config_hash({**off, 'scratch': True}) != config_history.config_hash(off)
