"""Comparisons a reviewer trusts: every ok trial's dev predictions kept in predictions/, the paired
bootstrap over dev examples and seeds (report/bootstrap.py) against a naive loop, differences.csv
and `python -m jaxtransfer.compare`."""

import csv
import json
import os

import numpy as np
import pytest

import helpers

from jaxtransfer.data import metrics as metrics_lib
from jaxtransfer.errors import UserError
from jaxtransfer.report import bootstrap
from jaxtransfer.runtime import predictions as predictions_lib
from jaxtransfer.runtime import records as records_lib


# ----------------------------------------------------------------------------- the bootstrap


def _naive_bootstrap(a, b, labels, metric, replicates, seed):
  """Dror et al.'s paired bootstrap written plainly: per replicate, draw dev indices and seeds
  with replacement (the same for A and B), score each drawn seed's resampled predictions one by
  one, average, subtract."""
  rng = np.random.default_rng(seed)
  fn = metrics_lib.metric_function(metric)
  n_seeds, n = len(a), len(labels)
  diffs = []
  for _ in range(replicates):
    idx = rng.integers(0, n, n)
    drawn = rng.integers(0, n_seeds, n_seeds)
    total = 0.0
    for s in drawn:
      if metric == 'accuracy':  # a loop, to share nothing with the vectorized path
        score_a = sum(1 for j in idx if a[s][j] == labels[j]) / n
        score_b = sum(1 for j in idx if b[s][j] == labels[j]) / n
      else:
        score_a, score_b = fn(a[s][idx], labels[idx]), fn(b[s][idx], labels[idx])
      total += score_a - score_b
    diffs.append(total / n_seeds)
  diffs = np.asarray(diffs)
  return diffs, np.percentile(diffs, [2.5, 97.5]), float(np.mean(diffs <= 0))


def _with_accuracy(labels, n_correct, rng, num_labels):
  """Predictions right on exactly `n_correct` random dev examples, another class elsewhere."""
  preds = (labels + rng.integers(1, num_labels, len(labels))) % num_labels
  right = rng.choice(len(labels), n_correct, replace=False)
  preds[right] = labels[right]
  return preds


@pytest.mark.parametrize('metric,num_labels,shift', [('accuracy', 2, 20), ('accuracy', 2, 3),
                                                     ('mcc', 3, 20)])
def test_bootstrap_matches_a_naive_reference(metric, num_labels, shift):
  """A beats B by `shift` of 200 dev examples on every seed (A: 150/170/160 right): the observed
  difference is exact, and the interval and p of 4,000 replicates agree with the naive loop's
  within Monte-Carlo error (a 2.5% quantile of 4,000 draws moves by ~0.04 bootstrap sd)."""
  rng = np.random.default_rng(7)
  n = 200
  labels = rng.integers(0, num_labels, n)
  a = np.stack([_with_accuracy(labels, k, rng, num_labels) for k in (150, 170, 160)])
  b = np.stack([_with_accuracy(labels, k - shift, rng, num_labels) for k in (150, 170, 160)])
  got = bootstrap.paired_bootstrap(a, b, labels, metric, replicates=4000, seed=1)
  diffs, (low, high), p = _naive_bootstrap(a, b, labels, metric, 4000, seed=2)
  fn = metrics_lib.metric_function(metric)
  assert got.mean_a == pytest.approx(np.mean([fn(x, labels) for x in a]), abs=1e-12)
  assert got.diff == pytest.approx(got.mean_a - got.mean_b, abs=1e-12)
  if metric == 'accuracy':
    assert got.diff == pytest.approx(shift / n, abs=1e-12)
  assert (got.n_seeds, got.n_dev, got.replicates) == (3, n, 4000)
  tol = 0.2 * diffs.std()
  assert got.ci95_low == pytest.approx(low, abs=tol)
  assert got.ci95_high == pytest.approx(high, abs=tol)
  assert got.p == pytest.approx(p, abs=0.03)
  assert got.ci95_low < got.diff < got.ci95_high
  if shift == 20:  # 10 points on 200 examples: well outside the noise
    assert got.ci95_low > 0 and got.p < 0.01


def test_identical_settings_differ_by_nothing():
  rng = np.random.default_rng(0)
  labels = rng.integers(0, 2, 277)
  a = rng.integers(0, 2, (3, 277))
  d = bootstrap.paired_bootstrap(a, a.copy(), labels, 'accuracy')
  assert d.diff == 0 and d.ci95_low <= 0 <= d.ci95_high and d.p == 1.0
  assert d.replicates == 1000


def test_same_seed_same_interval_and_another_seed_another():
  rng = np.random.default_rng(0)
  labels = rng.integers(0, 2, 100)
  a, b = rng.integers(0, 2, (2, 100)), rng.integers(0, 2, (2, 100))
  one = bootstrap.paired_bootstrap(a, b, labels, 'f1', replicates=300, seed=3)
  assert one == bootstrap.paired_bootstrap(a, b, labels, 'f1', replicates=300, seed=3)
  assert one != bootstrap.paired_bootstrap(a, b, labels, 'f1', replicates=300, seed=4)


@pytest.mark.parametrize('metric', ['accuracy', 'f1', 'mcc', 'pearson', 'spearman'])
def test_vectorized_resamples_equal_the_metrics_on_resampled_rows(metric):
  """The count-weighted metrics equal data.metrics on the resampled rows, ties included."""
  rng = np.random.default_rng(1)
  n, trials = 150, 3
  if metric in ('pearson', 'spearman'):
    labels = np.round(rng.normal(size=n) * 2).astype(np.float32) / 2  # ties
    preds = np.round(labels + rng.normal(size=(trials, n))).astype(np.float32)
  else:
    k = 2 if metric == 'f1' else 3
    labels, preds = rng.integers(0, k, n), rng.integers(0, k, (trials, n)).astype(np.int16)
  idx = rng.integers(0, n, (20, n))
  counts = np.stack([np.bincount(i, minlength=n) for i in idx])
  got = bootstrap.resampled_scores(metric, preds, labels, counts)
  fn = metrics_lib.metric_function(metric)
  want = [[fn(p[i], labels[i]) for p in preds] for i in idx]
  np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)


def test_settings_on_the_command_line():
  from jaxtransfer import compare
  assert compare.parse_setting('k=6,reinit_scheme=bert', 'a') == {'k': 6, 'reinit_scheme': 'bert'}
  assert compare.parse_setting('tuned_blocks=[2,3],lr=1e-4', 'a') == {'tuned_blocks': [2, 3],
                                                                      'lr': 1e-4}
  with pytest.raises(UserError, match='--b'):
    compare.parse_setting('k', 'b')
  assert bootstrap.matches({'k': 6, 'reinit_scheme': 'bert'}, {'k': 6.0})
  assert not bootstrap.matches({'k': 6}, {'k': '6'})
  assert not bootstrap.matches({'keep_layer_norm': True}, {'keep_layer_norm': 1})


# ----------------------------------------------------------------------------- the engine's files


def test_predictions_come_back_in_the_dev_sets_own_order():
  """Evaluation runs on the dev rows sorted by length; the kept predictions are in dev order."""
  from jaxtransfer.data import glue
  from jaxtransfer.engine.evaluation import DevSets
  rng = np.random.default_rng(0)
  lengths = rng.integers(1, 12, 37)
  mask = (np.arange(12)[None] < lengths[:, None]).astype(np.int32)
  labels = rng.integers(0, 3, 37).astype(np.int32)
  dev = {'input_ids': mask.copy(), 'attention_mask': mask, 'labels': labels}
  sets = DevSets({'': dev}, glue.get_task('mnli'), batch_size=8, multiple=4, mesh=None)
  sorted_labels = sets.splits[''][1]
  assert not np.array_equal(sorted_labels, labels)
  logits = np.eye(3, dtype=np.float32)[np.stack([sorted_labels, (sorted_labels + 1) % 3])]
  got = sets.predictions('', logits)
  assert got.dtype == np.int16
  np.testing.assert_array_equal(got, np.stack([labels, (labels + 1) % 3]))


def test_an_interrupted_group_keeps_the_predictions_of_its_chosen_eval(tiny_model_dir, tmp_path):
  """select_best may report an eval made before a checkpoint: its predictions ride in the
  checkpoint, so a resumed group still writes the predictions behind every record."""
  import jaxtransfer as jt
  from jaxtransfer.core import program as program_lib
  from jaxtransfer.data import glue
  from jaxtransfer.engine import engine as engine_lib
  from jaxtransfer.engine import trials as trials_lib
  pre = jt.load_pretrained(str(tiny_model_dir))
  data = glue.load_task_data('sst2', 'demo', pre.tokenizer, pre.path, 32,
                             cache_dir=str(tmp_path / 'cache'))
  prog = program_lib.Program(encoder=pre.config, num_labels=2, num_blocks=pre.config.num_layers)
  spec = trials_lib.RunSpec(experiment='t', model='tiny', task=data.task, workdir=str(tmp_path),
                            batch_size=8, learning_rate=1e-12, num_train_steps=6, log_every=2,
                            checkpoint_every=0, eval_batch_size=32, eval_every=2,
                            select_best=True)
  make = lambda: engine_lib.Engine(spec, pre.params, data.train.as_dict(),
                                   {k: v.as_dict() for k, v in data.dev.items()})
  trials = [trials_lib.Trial(1, 64, {}, prog)]
  first = make()
  evaluate = first.dev_sets.evaluate

  def evaluate_then_stop(*args, **kw):  # a SIGTERM arriving during the first periodic eval
    first._stop = True
    return evaluate(*args, **kw)

  first.dev_sets.evaluate = evaluate_then_stop
  with pytest.raises(trials_lib.Preempted, match='at step 2'):
    first.run(trials)
  assert not os.path.exists(tmp_path / predictions_lib.DIRNAME)
  record, = make().run(trials)
  preds = helpers.predictions_by_trial(tmp_path)[record['trial_id']]
  assert metrics_lib.accuracy(preds.preds[''], preds.labels['']) == record['metrics']['accuracy']
  # A learning rate of ~0 keeps every eval's score: the first (step 2, before the stop) wins.
  assert record['best_step'] == 2


# ----------------------------------------------------------------------------- end to end


@pytest.fixture(scope='module')
def freeze_run(tiny_model_dir, tmp_path_factory):
  """Freeze on the demo set: k = 3 (all of the tiny model's blocks) and 0, two seeds each, the
  first 40 dev examples evaluated."""
  tmp = tmp_path_factory.mktemp('freeze')
  work = tmp / 'work'
  args = ['--config=configs/freeze.py:demo', f'--workdir={work}',
          f'--config.model={tiny_model_dir}', f'--config.cache_dir={tmp / "cache"}',
          '--config.trainable_blocks=(3,0)', '--config.seeds=(1,2)',
          '--config.num_train_steps=4', '--config.eval_max_examples=40',
          '--config.max_seq_length=32', '--config.batch_size=8', '--config.eval_batch_size=16',
          '--config.trials_per_program=2',  # one group (and file) of both seeds per k
          # A record may report an eval before the last: its predictions must be the file's.
          '--config.eval_every=2', '--config.select_best=True']
  proc = helpers.run_main(*args)
  assert proc.returncode == 0, proc.stderr[-3000:]
  return work, args


def test_every_ok_trial_keeps_the_predictions_behind_its_record(freeze_run):
  work, _ = freeze_run
  records = records_lib.read_records(work / 'trials.jsonl')
  assert len(records) == 4 and all(r['status'] == 'ok' for r in records)
  files = sorted(p.name for p in (work / predictions_lib.DIRNAME).iterdir())
  assert files == sorted({f'{r["group"]}.npz' for r in records}) and len(files) == 2
  preds = helpers.predictions_by_trial(work)
  assert set(preds) == {r['trial_id'] for r in records}
  for r in records:
    p = preds[r['trial_id']]
    assert set(p.preds) == {''} and p.preds[''].dtype == np.int16 and p.preds[''].shape == (40,)
    assert metrics_lib.accuracy(p.preds[''], p.labels['']) == r['metrics']['accuracy']
  with np.load(work / predictions_lib.DIRNAME / files[0]) as z:
    assert sorted(z.files) == ['labels', 'preds', 'trial_ids'] and z['preds'].shape == (2, 40)


def test_a_resumed_run_keeps_them_once(freeze_run):
  """Re-running the finished command reruns nothing and rewrites no prediction file."""
  work, args = freeze_run
  folder = work / predictions_lib.DIRNAME
  before = {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in folder.iterdir()}
  proc = helpers.run_main(*args)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in folder.iterdir()} == before
  assert len(records_lib.read_records(work / 'trials.jsonl')) == 4


def test_differences_csv_and_the_command_line_agree(freeze_run):
  work, _ = freeze_run
  with open(work / 'differences.csv', newline='') as f:
    rows = list(csv.DictReader(f))
  assert list(rows[0]) == list(bootstrap.DIFFERENCE_FIELDS)
  assert [(json.loads(r['setting']), json.loads(r['reference']), r['metric'], r['n'])
          for r in rows] == [({'trainable_blocks': 0}, {'trainable_blocks': 3}, 'accuracy', '2')]
  proc = helpers.run_compare(work, '--a', 'trainable_blocks=0', '--b', 'trainable_blocks=3')
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert 'A - B' in proc.stdout and f'{float(rows[0]["diff"]):+.4f}' in proc.stdout
  assert f'[{float(rows[0]["ci95_low"]):+.4f}, {float(rows[0]["ci95_high"]):+.4f}]' in proc.stdout
  got = bootstrap.compare_workdir(str(work), {'trainable_blocks': 0}, {'trainable_blocks': 3})
  assert got[0].difference.diff == pytest.approx(float(rows[0]['diff']), abs=1e-12)
  assert got[0].seeds == [1, 2] and got[0].difference.n_dev == 40


def test_bad_comparisons_are_exit_2_with_one_paragraph(freeze_run, tmp_path):
  work, _ = freeze_run
  proc = helpers.run_compare(work, '--a', 'trainable_blocks=5', '--b', 'trainable_blocks=0')
  helpers.assert_bad_input(proc, '--a trainable_blocks=5 matches no setting',
                           '{"trainable_blocks":3}')
  assert len(proc.stderr.strip().split('\n\n')) == 1
  helpers.assert_bad_input(helpers.run_compare(tmp_path / 'nope', '--a', 'k=1', '--b', 'k=2'),
                           'does not exist')
  helpers.assert_bad_input(helpers.run_compare(work, '--a', 'trainable_blocks=3', '--b',
                                               'trainable_blocks=0', '--metric', 'mcc'),
                           '--metric mcc', 'accuracy')
  helpers.assert_bad_input(helpers.run_compare(work, '--a', 'trainable_blocks=3'), '--b')


def test_trials_without_predictions_are_named(freeze_run, tmp_path):
  """A workdir from before predictions were kept: the comparison names the trials and the fix."""
  work, _ = freeze_run
  old = tmp_path / 'old'
  old.mkdir()
  (old / 'trials.jsonl').write_bytes((work / 'trials.jsonl').read_bytes())
  with pytest.raises(UserError, match='No dev predictions for 4 trial'):
    bootstrap.compare_workdir(str(old), {'trainable_blocks': 0}, {'trainable_blocks': 3})
  assert not os.path.exists(old / 'differences.csv')
