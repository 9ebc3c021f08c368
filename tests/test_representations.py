"""Representations beside weights: linear CKA per layer (representation_similarity=True) against
numpy and against HF PyTorch hidden states of the exported trials."""

import csv

import jax
import ml_collections
import numpy as np
import pytest
import torch
import transformers

import helpers
import jaxtransfer as jt
from configs import permute as permute_cfg
from configs import reinit as reinit_cfg
from jaxtransfer import train
from jaxtransfer.core import program as program_lib
from jaxtransfer.engine import trials as trials_lib
from jaxtransfer.errors import UserError
from jaxtransfer.studies import base, representations
from jaxtransfer.studies.tamkin2020 import probe
from jaxtransfer.studies.xie2022 import variability
from jaxtransfer.data import glue
from jaxtransfer.models import pretrained
from jaxtransfer.report import cka
from jaxtransfer.runtime import records as records_lib


def _numpy_cka(x, y):
  """Kornblith et al.'s linear CKA of (n, d) features, float64, centered."""
  x = np.asarray(x, np.float64) - np.mean(x, 0)
  y = np.asarray(y, np.float64) - np.mean(y, 0)
  return np.linalg.norm(y.T @ x) ** 2 / (np.linalg.norm(x.T @ x) * np.linalg.norm(y.T @ y))


def _cka_in_batches(x, y, cuts, pad=3):
  """cka.py over (1, B, S, H) batches of the tokens, each with `pad` padding tokens (weight 0)
  holding junk that must not count."""
  parts = []
  for lo, hi in zip(cuts[:-1], cuts[1:]):
    junk = np.full((pad, x.shape[1]), 1e3, np.float32)
    a = np.concatenate([x[lo:hi], junk])[None, None]
    b = np.concatenate([y[lo:hi], junk])[None, None]
    w = np.concatenate([np.ones(hi - lo), np.zeros(pad)]).astype(np.float32)[None]
    parts.append(cka.batch_moments(a, b, w))
  return float(cka.linear_cka(cka.combine(parts))[0])


def test_cka_matches_numpy_and_its_invariances():
  rng = np.random.default_rng(0)
  n, d = 300, 12
  # A large common offset: batch-wise centering must not lose it to cancellation.
  x = (rng.normal(size=(n, d)) + 50.0).astype(np.float32)
  y = (x @ rng.normal(size=(d, d)) + rng.normal(size=(n, d))).astype(np.float32)
  cuts = [0, 7, 130, 131, 300]
  assert _cka_in_batches(x, y, cuts) == pytest.approx(_numpy_cka(x, y), abs=1e-6)
  assert _cka_in_batches(x, x, cuts) == pytest.approx(1.0, abs=1e-6)
  q, _ = np.linalg.qr(rng.normal(size=(d, d)))
  rotated = (3.5 * x @ q + 7.0).astype(np.float32)  # orthogonal, isotropic scale, shift
  assert _cka_in_batches(x, rotated, cuts) == pytest.approx(1.0, abs=1e-5)
  other = rng.normal(size=(n, d)).astype(np.float32)
  assert _cka_in_batches(x, other, cuts) == pytest.approx(_numpy_cka(x, other), abs=1e-6)


def test_a_frozen_prefix_and_a_truncated_head_give_the_pretrained_layers_they_compute(
    tiny_model_dir):
  """An untrained program with block 0 frozen and only 2 of 3 blocks computed: its hidden states
  are jt.hidden_states' first 3, and its CKA is 1 at the 3 layers it computes (none for block 2)."""
  pre = jt.load_pretrained(str(tiny_model_dir))
  prog = program_lib.Program(encoder=pre.config, num_labels=2, num_blocks=2, frozen_blocks=1)
  train_p, frozen = prog.init(pre.params, prog.defaults(), jax.random.key(0))
  ids, mask, types = helpers.random_batch(np.random.default_rng(0), 1000, 40, 24, pad_id=0)
  batch = {'input_ids': ids, 'attention_mask': mask, 'token_type_ids': types}
  got = prog.hidden_states(train_p, frozen, batch, prog.defaults())
  want = jt.hidden_states(pre.config, pre.params, ids, mask, types)[:3]
  np.testing.assert_allclose(got, want, atol=1e-5)
  config = ml_collections.ConfigDict({'eval_batch_size': 16, 'similarity_examples': 30})
  params = trials_lib.TrialParams(train_p, frozen, prog.defaults())
  values = representations.trial_cka(config, pre.params, {**batch, 'labels': np.zeros(40)}, prog,
                                     params)
  np.testing.assert_allclose(values, np.ones(3), atol=1e-6)


def test_probes_refuse_representation_similarity():
  config = ml_collections.ConfigDict({'representation_similarity': True,
                                      'similarity_examples': 256})
  for study in (probe.Probe(), variability.Variability()):
    with pytest.raises(UserError, match='does not change the encoder'):
      base.check_similarity_keys(study, config)
  config.similarity_examples = 0
  with pytest.raises(UserError, match='similarity_examples=0'):
    base.check_similarity_keys(base.Experiment(), config)


EXAMPLES = 24


@pytest.fixture(scope='module')
def wide_init_dir(tmp_path_factory):
  """A tiny random BERT whose blocks matter: at BERT's init scale (0.02) a tiny model's blocks
  barely move the residual stream, and every layer's CKA would be ~1."""
  return helpers.make_tiny_model_dir(tmp_path_factory.mktemp('tiny-wide'), initializer_range=0.3)


@pytest.fixture(scope='module', params=['reinit', 'permute'])
def study_run(request, wide_init_dir, tmp_path_factory):
  """On the tiny BERT, all fine-tuned, exported, with CKA per layer: reinit.py's k = 3
  (unmodified) and k = 1 (blocks 1, 2 reinitialized), 2 seeds; or permute.py's full,
  all-reinitialized and one permuted model."""
  work = tmp_path_factory.mktemp('representations')
  if request.param == 'reinit':
    c = reinit_cfg.get_config('demo')
    c.ks, c.seeds = (3, 1), (1, 2)
  else:
    c = permute_cfg.get_config('demo')
    c.permutation_seeds, c.seeds = (2,), (1,)
  c.model, c.cache_dir = str(wide_init_dir), str(work / 'cache')
  c.train_sizes, c.num_train_steps = (64,), 5
  c.learning_rate, c.eval_max_examples, c.export_model = 1e-3, 40, True
  c.representation_similarity, c.similarity_examples = True, EXAMPLES
  train.train_and_evaluate(c, str(work / 'run'))
  return work / 'run', c


def _hidden_states(model_dir, batch):
  model = transformers.AutoModel.from_pretrained(str(model_dir)).eval().double()
  with torch.no_grad():
    out = model(**{k: torch.as_tensor(v) for k, v in batch.items()}, output_hidden_states=True)
  return [h.numpy() for h in out.hidden_states]


def test_cka_per_layer_equals_hf_pytorch_of_the_exported_trials(study_run, wide_init_dir):
  """Permuted and reinitialized trials too: block i against the pretrained block i."""
  run, c = study_run
  tok = pretrained.load_pretrained(str(wide_init_dir)).tokenizer
  dev = glue.load_task_data('sst2', 'demo', tok, str(wide_init_dir), c.max_seq_length,
                            splits=('dev',), cache_dir=c.cache_dir).dev[''].as_dict()
  batch = {k: dev[k][:EXAMPLES] for k in ('input_ids', 'attention_mask', 'token_type_ids')}
  real = batch['attention_mask'].astype(bool)
  ref = _hidden_states(wide_init_dir, batch)
  with open(run / 'representations.csv', newline='') as f:
    rows = {(r['trial_id'], int(r['layer'])): float(r['cka']) for r in csv.DictReader(f)}
  recs = records_lib.read_records(run / 'trials.jsonl')
  assert len(recs) in (3, 4) and all(r['status'] == 'ok' for r in recs)
  for rec in recs:
    hs = _hidden_states(run / 'models' / rec['trial_id'], batch)
    for layer in range(4):
      want = _numpy_cka(ref[layer][real], hs[layer][real])
      got = rows[(rec['trial_id'], layer)]
      assert got == pytest.approx(want, abs=1e-5), (rec['setting'], layer)
      assert rec['metrics'][f'cka/{layer}'] == got
  # Reinitialized blocks are far from the pretrained ones; the embedding output stays close.
  moved = [r for r in recs
           if r['setting'].get('k') == 1 or r['setting'].get('mode', 'full') != 'full']
  assert moved and all(r['metrics']['cka/3'] < 0.8 < 0.99 < r['metrics']['cka/0'] for r in moved)
  assert (run / 'plots' / 'cka_by_layer.png').stat().st_size > 0
