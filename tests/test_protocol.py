"""The sweep protocol a reviewer accepts: learning rates as a trial axis in one compiled group, a
held-out selection split that chooses checkpoints and rates (never dev), best.csv, and degenerate
(majority-class) trials counted."""

import json

import numpy as np
import pytest

import helpers
from configs import finetune as finetune_cfg
from jaxtransfer.data import glue as data_lib
from jaxtransfer.data.tokenize import Encoded
from jaxtransfer.engine import evaluation
from jaxtransfer.engine import outcomes
from jaxtransfer.engine import trials as trials_lib
from jaxtransfer.report import best as best_lib
from jaxtransfer.report import summary
from jaxtransfer.runtime import records as records_lib
from jaxtransfer.studies import base


def _encoded(labels):
  n = len(labels)
  ids = np.arange(n, dtype=np.int32)[:, None] + np.zeros((1, 4), np.int32)
  return Encoded(ids, np.ones((n, 4), np.int32), np.zeros((n, 4), np.int32),
                 np.asarray(labels, np.int32))


@pytest.mark.parametrize('size', [0.1, 0.25, 37])
def test_selection_split_is_stratified_disjoint_and_fixed(size):
  labels = np.array([0] * 300 + [1] * 100 + [2] * 47)
  rest, held = data_lib.hold_out(_encoded(labels), data_lib.get_task('mnli'), size, seed=3)
  n_held = round(size * len(labels)) if size < 1 else size
  assert len(held) == n_held and len(rest) + len(held) == len(labels)
  rows = lambda e: set(e.input_ids[:, 0].tolist())
  assert not rows(rest) & rows(held)  # no example on both sides
  for c in range(3):  # each class held out in proportion (largest remainder: within one)
    assert abs((held.labels == c).sum() - n_held * (labels == c).mean()) < 1
  again = data_lib.hold_out(_encoded(labels), data_lib.get_task('mnli'), size, seed=3)[1]
  assert rows(again) == rows(held)  # the same for every trial (and every re-run)


def test_every_trial_trains_only_on_the_rest(tiny_model_dir, tmp_path):
  """The study's training data excludes the held-out rows, so every trial's subset (drawn from it)
  is disjoint from the selection split."""
  config = finetune_cfg.get_config('demo')
  config.model, config.cache_dir, config.max_seq_length = str(tiny_model_dir), str(tmp_path), 32
  config.selection_split = 0.2
  ctx = base.Experiment().load(config, str(tmp_path / 'w'))
  train, held = ctx.data.train.as_dict(), ctx.data.dev[base.SELECTION].as_dict()
  key = lambda d: {tuple(r[m > 0]) for r, m in zip(d['input_ids'], d['attention_mask'])}
  assert len(held['labels']) == round(0.2 * (len(train['labels']) + len(held['labels'])))
  assert not key(train) & key(held)
  subset = trials_lib.trial_subset(1, len(train['labels']), 100)
  assert subset.max() < len(train['labels'])


def test_learning_rates_expand_every_trial_and_scale_method_rates():
  config = finetune_cfg.get_config()
  config.learning_rate, config.learning_rates = 2e-5, (1e-5, 4e-5)
  plain = trials_lib.Trial(1, 0, {'k': 3}, 'program')
  adapter = trials_lib.Trial(1, 0, {'k': 2}, 'program', learning_rate=1e-3)
  got = base.expand_learning_rates(config, [plain, adapter])
  assert [t.setting for t in got] == [{'k': 3, 'learning_rate': 1e-5}, {'k': 3, 'learning_rate': 4e-5},
                                      {'k': 2, 'learning_rate': 1e-5}, {'k': 2, 'learning_rate': 4e-5}]
  assert [t.learning_rate for t in got[:2]] == [1e-5, 4e-5]
  np.testing.assert_allclose([t.learning_rate for t in got[2:]], [5e-4, 2e-3])  # x 0.5, x 2
  assert len({t.trial_id for t in got}) == 4
  config.learning_rates = ()
  assert base.expand_learning_rates(config, [plain]) == [plain]


def test_select_best_chooses_by_the_selection_split_never_dev():
  spec = trials_lib.RunSpec(experiment='t', model='m', task=data_lib.get_task('rte'), workdir='',
                            batch_size=8, learning_rate=1e-5, select_best=True)
  evals = [{'step': 10, 'metrics': [{'accuracy': 0.9, 'selection_accuracy': 0.6}]},
           {'step': 20, 'metrics': [{'accuracy': 0.5, 'selection_accuracy': 0.7}]},
           {'step': 30, 'metrics': [{'accuracy': 0.8, 'selection_accuracy': 0.65}]}]
  chosen, step = outcomes.chosen_eval(spec, 30, [evals[-1]['metrics'][0]], evals, 0)
  assert step == 20 and chosen['accuracy'] == 0.5
  without = [{'step': e['step'], 'metrics': [{'accuracy': e['metrics'][0]['accuracy']}]}
             for e in evals]
  assert outcomes.chosen_eval(spec, 30, [without[-1]['metrics'][0]], without, 0)[1] == 10


def _record(seed, lr, dev, sel=None, degenerate=False, k=3):
  metrics = {'accuracy': dev, **({'selection_accuracy': sel} if sel is not None else {})}
  return {'trial_id': f'k{k}-lr{lr}-s{seed}', 'experiment': 'freeze', 'task': 'rte', 'model': 'm',
          'seed': seed, 'train_size': 0, 'setting': {'k': k, 'learning_rate': lr},
          'metrics': metrics, 'status': 'ok', 'degenerate': degenerate}


def test_best_picks_the_rate_by_selection_and_reports_its_dev_scores(tmp_path):
  # Dev favours 1e-4 (it is what is reported); the selection split favours 3e-5.
  records = [_record(s, 3e-5, dev, sel) for s, dev, sel in ((1, .60, .70), (2, .62, .72))]
  records += [_record(s, 1e-4, dev, sel) for s, dev, sel in ((1, .66, .50), (2, .68, .52))]
  records += [_record(s, 1e-4, .5, .5, degenerate=True, k=0) for s in (1, 2)]
  records += [_record(s, 3e-5, .55, .51, k=0) for s in (1, 2)]
  rows = best_lib.write(str(tmp_path), records, 'accuracy')
  by_k = {json.loads(r['setting'])['k']: r for r in rows}
  assert by_k[3]['learning_rate'] == 3e-5 and by_k[3]['selected_on'] == 'selection'
  np.testing.assert_allclose(by_k[3]['mean'], 0.61)
  assert by_k[0]['learning_rate'] == 3e-5 and by_k[0]['n_degenerate'] == 0
  assert (tmp_path / 'best.csv').exists() and (tmp_path / 'plots' / 'best_learning_rate.png').exists()
  chosen = best_lib.chosen_records(records, rows)
  assert sorted(r['trial_id'] for r in chosen) == ['k0-lr3e-05-s1', 'k0-lr3e-05-s2',
                                                   'k3-lr3e-05-s1', 'k3-lr3e-05-s2']
  assert all('learning_rate' not in r['setting'] for r in chosen)
  # Without a selection split the choice is made on dev, and best.csv says so.
  dev_only = [{**r, 'metrics': {'accuracy': r['metrics']['accuracy']}} for r in records]
  rows = {json.loads(r['setting'])['k']: r for r in best_lib.choose(dev_only, 'accuracy')}
  assert rows[3]['learning_rate'] == 1e-4 and rows[3]['selected_on'] == 'dev'


def test_degenerate_trials_are_counted_and_can_be_excluded():
  task = data_lib.get_task('rte')
  labels = np.array([0, 0, 0, 1])  # majority 'entailment' scores 0.75
  one_class = np.tile([[2.0, 0.0]], (4, 1))
  assert evaluation.degenerate(task, one_class, labels)
  at_majority = np.array([[1, 0], [1, 0], [0, 1], [1, 0.]])  # 2 of 4 right: below 0.75
  assert evaluation.degenerate(task, at_majority, labels)
  good = np.array([[1, 0], [1, 0], [1, 0], [0, 1.]])
  assert not evaluation.degenerate(task, good, labels)
  stsb = data_lib.get_task('stsb')
  assert evaluation.degenerate(stsb, np.full((4, 1), 2.5), np.array([1., 2, 3, 4]))
  assert not evaluation.degenerate(stsb, np.array([[1.], [2], [2.5], [4]]), np.array([1., 2, 3, 4]))
  records = [_record(1, 1e-5, .5, degenerate=True), _record(2, 1e-5, .7), _record(3, 1e-5, .8)]
  rows, left_out = summary.summarize(records)
  row = next(r for r in rows if r['metric'] == 'accuracy')
  assert (row['n'], row['n_degenerate']) == (3, 1) and abs(row['mean'] - 2 / 3) < 1e-12
  rows, left_out = summary.summarize(records, exclude_degenerate=True)
  row = next(r for r in rows if r['metric'] == 'accuracy')
  assert (row['n'], row['n_degenerate']) == (2, 1) and abs(row['mean'] - 0.75) < 1e-12
  assert 'degenerate' in summary.describe_left_out(left_out)[0]


def test_demo_lr_grid_is_one_group_and_a_trial_equals_its_lone_run(tiny_model_dir, tmp_path):
  """learning_rates=(3e-4, 1e-3) x two seeds with a 20% selection split and trials_per_program=4:
  one compiled group of 4, selection metrics in every record, best.csv naming the chosen rate;
  and the rate-3e-4, seed-2 trial run alone (no axis) gives the same record to 1e-6."""
  common = ['--config=configs/finetune.py:demo', f'--config.model={tiny_model_dir}',
            f'--config.cache_dir={tmp_path / "cache"}', '--config.max_seq_length=32',
            '--config.num_train_steps=12', '--config.selection_split=0.2',
            '--config.log_every=6']
  grid = tmp_path / 'grid'
  proc = helpers.run_main(*common, f'--workdir={grid}', '--config.learning_rates=3e-4,1e-3',
                          '--config.seeds=1,2', '--config.trials_per_program=4')
  assert proc.returncode == 0, proc.stderr[-3000:]
  recs = records_lib.read_records(grid / 'trials.jsonl')
  assert len(recs) == 4 and len({r['group'] for r in recs}) == 1 and recs[0]['group_trials'] == 4
  assert all('selection_accuracy' in r['metrics'] and 'accuracy' in r['metrics'] for r in recs)
  assert sorted(r['learning_rate'] for r in recs) == [3e-4, 3e-4, 1e-3, 1e-3]
  best = (grid / 'best.csv').read_text().splitlines()
  assert len(best) == 2 and ',selection,' in best[1]
  lone = tmp_path / 'lone'
  proc = helpers.run_main(*common, f'--workdir={lone}', '--config.learning_rate=3e-4',
                          '--config.seeds=2')
  assert proc.returncode == 0, proc.stderr[-3000:]
  alone = records_lib.read_records(lone / 'trials.jsonl')[0]
  twin = next(r for r in recs if r['seed'] == 2 and r['learning_rate'] == 3e-4)
  for name, value in alone['metrics'].items():
    assert abs(value - twin['metrics'][name]) <= 1e-6, name
  assert abs(alone['train_loss'] - twin['train_loss']) <= 1e-6
