"""Closeness: distances against numpy, export -> transformers -> the same per-block L1, critical blocks."""

import csv
import json

import numpy as np
import pytest
import torch
import transformers

from jaxtransfer.models import config as model_config
from configs import closeness as closeness_cfg
from jaxtransfer.runtime import records as records_lib
from jaxtransfer import train
from jaxtransfer.studies.radiya2020 import distances as closeness
from jaxtransfer.studies.radiya2020 import closeness as closeness_exp

# ----------------------------------------------------------------------------- distances


def test_distance_matches_numpy():
  rng = np.random.default_rng(0)
  a = [rng.normal(size=(20, 30)).astype(np.float32), rng.normal(size=11).astype(np.float32)]
  for scale in (1e-4, 0.1, 3.0):
    b = [x + scale * rng.normal(size=x.shape).astype(np.float32) for x in a]
    x = np.concatenate([t.ravel() for t in a]).astype(np.float64)
    y = np.concatenate([t.ravel() for t in b]).astype(np.float64)
    got = closeness.distance(b, a)
    assert got['l1'] == pytest.approx(np.abs(x - y).sum(), rel=1e-12)
    assert got['l1_per_param'] == pytest.approx(np.abs(x - y).mean(), rel=1e-12)
    cos = x @ y / np.linalg.norm(x) / np.linalg.norm(y)
    assert got['angle_rad'] == pytest.approx(np.arccos(np.clip(cos, -1, 1)), rel=1e-6, abs=1e-7)


def test_small_angles_are_exact():
  """A rotation by 1e-7 rad in a random plane: arccos of the cosine could not resolve it."""
  rng = np.random.default_rng(1)
  u = rng.normal(size=500)
  u /= np.linalg.norm(u)
  v = rng.normal(size=500)
  v -= (v @ u) * u
  v /= np.linalg.norm(v)
  theta = 1e-7
  got = closeness.distance([3.0 * (np.cos(theta) * u + np.sin(theta) * v)], [u])['angle_rad']
  assert got == pytest.approx(theta, rel=1e-6)
  assert closeness.distance([u], [2 * u])['angle_rad'] == pytest.approx(0, abs=1e-12)
  assert closeness.distance([u], [-u])['angle_rad'] == pytest.approx(np.pi, rel=1e-6)


def test_random_init_scale_matches_theory():
  """Two independent N(0, s^2) kernels: E|x - y| = 2s/sqrt(pi), orthogonal (angle pi/2)."""
  cfg = model_config.EncoderConfig(vocab_size=50, hidden_size=64, num_layers=2, num_heads=4,
                           intermediate_size=128, max_position_embeddings=16)
  rows = closeness.random_init_rows(cfg)
  kernels = [r for r in rows if r['matrix'] in closeness.MATRICES]
  assert {r['trial_id'] for r in rows} == {closeness.RANDOM_INIT} and len(kernels) == 12
  for r in kernels:
    assert r['l1_per_param'] == pytest.approx(2 * 0.02 / np.sqrt(np.pi), rel=0.03)
    assert r['angle_rad'] == pytest.approx(np.pi / 2, abs=0.05)


def test_rank_and_csv_rewrite(tmp_path):
  rows = [{'trial_id': t, 'block': b, 'matrix': closeness.ALL, 'l1': 1.0, 'l1_per_param': v,
           'angle_rad': 0.1}
          for t, vals in (('a', [3, 1, 2, 5]), ('b', [3, 2, 1, 4])) for b, v in enumerate(vals)]
  assert closeness.rank_blocks(rows, ['a', 'b']) == [3, 0, 1, 2]  # means 3, 1.5, 1.5, 4.5; ties by index
  path = str(tmp_path / 'closeness.csv')
  closeness.write_rows(path, rows)
  closeness.write_rows(path, [dict(r, l1=9.0) for r in rows if r['trial_id'] == 'a'])  # a reran
  with open(path) as f:
    back = list(csv.DictReader(f))
  assert list(back[0]) == list(closeness.FIELDS)
  assert len(back) == 8 and sorted(float(r['l1']) for r in back if r['trial_id'] == 'a') == [9.0] * 4


# ----------------------------------------------------------------------------- end to end


def _config(tiny_model_dir, work, **kw):
  c = closeness_cfg.get_config('demo')
  c.model, c.cache_dir = str(tiny_model_dir), str(work / 'cache')
  c.max_seq_length, c.num_train_steps, c.train_sizes, c.seeds = 32, 5, (64,), (1,)
  c.eval_max_examples, c.learning_rate, c.export_model = 32, 1e-3, True
  c.trials_per_program = 64  # the critical sweep is checked to be one vmapped program
  for k, v in kw.items():
    c[k] = v
  return c


@pytest.fixture(scope='module')
def critical_run(tiny_model_dir, tmp_path_factory):
  """Full fine-tuning (phase 1), then the 1 most / least changed block (phase 2), exported."""
  work = tmp_path_factory.mktemp('closeness')
  captured = {}
  original = closeness_exp.Closeness.write_outputs

  def spy(self, ctx, trial, params):
    captured[trial.trial_id] = (trial.program, params.train, params.frozen, params.arrays)
    original(self, ctx, trial, params)

  closeness_exp.Closeness.write_outputs = spy
  try:
    train.train_and_evaluate(_config(tiny_model_dir, work, critical_r=(1,)), str(work / 'run'))
  finally:
    closeness_exp.Closeness.write_outputs = original
  return work / 'run', records_lib.read_records(work / 'run' / 'trials.jsonl'), captured


def _hf_state(model_dir):
  model = transformers.AutoModel.from_pretrained(str(model_dir))
  return {k: v.detach().numpy().astype(np.float64) for k, v in model.state_dict().items()}


def test_exported_model_loads_and_gives_closeness_csv(critical_run, tiny_model_dir):
  work, recs, captured = critical_run
  pre = _hf_state(tiny_model_dir)
  rows = closeness.read_rows(str(work / 'closeness.csv'))
  L = 3
  for rec in recs:
    tid = rec['trial_id']
    ft = _hf_state(work / 'models' / tid)
    assert set(ft) == set(pre)
    for i in range(L):
      keys = [k for k in pre if k.startswith(f'encoder.layer.{i}.')]
      l1 = sum(np.abs(ft[k] - pre[k]).sum() for k in keys)
      n = sum(pre[k].size for k in keys)
      (row,) = [r for r in rows if r['trial_id'] == tid and r['block'] == i and r['matrix'] == 'all']
      assert row['l1'] == pytest.approx(l1, rel=1e-9, abs=1e-12), (tid, i)
      assert row['l1_per_param'] == pytest.approx(l1 / n, rel=1e-9, abs=1e-15)
      w = f'encoder.layer.{i}.attention.self.query.weight'
      (q,) = [r for r in rows if r['trial_id'] == tid and r['block'] == i and r['matrix'] == 'query']
      assert q['l1'] == pytest.approx(np.abs(ft[w] - pre[w]).sum(), rel=1e-9, abs=1e-12)


def test_exported_classifier_matches_our_forward(critical_run, tiny_model_dir):
  work, recs, captured = critical_run
  tok = transformers.AutoTokenizer.from_pretrained(str(tiny_model_dir))
  enc = tok(['a fine film', 'the worst soup I have had, and cold'], padding=True, return_tensors='np')
  batch = {k: enc[k].astype(np.int32) for k in ('input_ids', 'attention_mask', 'token_type_ids')}
  for rec in recs:
    program, tr, fr, arrays = captured[rec['trial_id']]
    ours = np.asarray(program.apply(tr, fr, batch, arrays))
    model = transformers.AutoModelForSequenceClassification.from_pretrained(
        str(work / 'models' / rec['trial_id'])).eval()
    with torch.no_grad():
      ref = model(**{k: torch.tensor(v).long() for k, v in batch.items()}).logits.numpy()
    np.testing.assert_allclose(ours, ref, atol=1e-5)


def test_critical_sweep_tunes_only_the_ranked_blocks(critical_run):
  work, recs, _ = critical_run
  rows = closeness.read_rows(str(work / 'closeness.csv'))
  full = [r['trial_id'] for r in recs if r['setting']['tuned'] == 'all']
  assert len(full) == 1 and len(recs) == 3  # full, most_changed, least_changed
  # The ranking, recomputed here from the csv: l1_per_param of each block (mean over seeds).
  mean = {b: np.mean([r['l1_per_param'] for r in rows if r['trial_id'] in full and r['block'] == b
                      and r['matrix'] == 'all']) for b in range(3)}
  order = sorted(mean, key=lambda b: -mean[b])
  assert json.loads((work / 'critical_blocks.json').read_text())['ranking'] == {'64': order}
  for rec in recs:
    s = rec['setting']
    if s['tuned'] == 'all':
      continue
    assert s['blocks'] == ([order[0]] if s['tuned'] == 'most_changed' else [order[-1]])
    dist = {r['block']: r['l1'] for r in rows if r['trial_id'] == rec['trial_id']
            and r['matrix'] in ('all', 'embeddings')}
    assert dist[-1] == 0.0  # embeddings frozen
    for b in range(3):
      assert (dist[b] > 0) == (b in s['blocks']), (s, dist)
  assert len({r['group'] for r in recs if r['setting']['tuned'] != 'all'}) == 1  # one program
  for name in ('closeness_per_block', 'closeness_per_matrix', 'critical_blocks'):
    assert (work / 'plots' / f'{name}.png').exists()
  assert any(r['trial_id'] == closeness.RANDOM_INIT for r in rows)


def test_rank_from_another_run_uses_its_full_finetuning_trials(tmp_path):
  rows = [{'trial_id': t, 'block': b, 'matrix': closeness.ALL, 'l1': 1.0, 'l1_per_param': v,
           'angle_rad': 0.1}
          for t, vals in (('ft', [1, 3, 2]), ('mask', [9, 0, 0])) for b, v in enumerate(vals)]
  closeness.write_rows(str(tmp_path / 'closeness.csv'), rows)
  records_lib.append_records(tmp_path / 'trials.jsonl', [
      {'trial_id': 'ft', 'setting': {'method': 'finetune'}, 'status': 'ok', 'metrics': {}},
      {'trial_id': 'mask', 'setting': {'method': 'mask', 'target_sparsity': 0.1}, 'status': 'ok',
       'metrics': {}}])
  assert closeness_exp.full_finetuning_ids(str(tmp_path / 'closeness.csv')) == {'ft'}
  assert [r['trial_id'] for r in closeness_exp.full_finetuning_records(
      str(tmp_path / 'closeness.csv'))] == ['ft']
  assert closeness.rank_blocks(rows, {'ft'}) == [1, 2, 0]
  assert closeness_exp.chosen_blocks('most_changed', 2, [1, 2, 0], 3) == [1, 2]
  assert closeness_exp.chosen_blocks('least_changed', 1, [1, 2, 0], 3) == [0]
  assert closeness_exp.chosen_blocks('top', 2, [1, 2, 0], 3) == [1, 2]
