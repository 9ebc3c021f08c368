"""Learned binary masks: top-k selection, straight-through gradient, storage, and a composed trial."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import transformers

import jaxtransfer as jt
from configs import sparsity as sparsity_cfg
from jaxtransfer.core import interventions as iv
from jaxtransfer.core import program as program_lib
from jaxtransfer.runtime import records as records_lib
from jaxtransfer import train
from jaxtransfer.studies.radiya2020 import masks as masks_lib
from jaxtransfer.studies.radiya2020 import sparsity as sparsity_exp

# ----------------------------------------------------------------------------- top-k masks


@pytest.mark.parametrize('shape', [(1,), (7,), (33, 17), (64, 96)])
def test_kth_smallest_is_the_sorted_entry(shape):
  rng = np.random.default_rng(sum(shape))
  x = rng.normal(size=shape).astype(np.float32)
  x.flat[::5] = x.flat[0]  # ties
  x.flat[1::7] = -np.abs(x.flat[1::7]) * 1e30  # huge negatives
  want = np.sort(x.ravel())
  for k in sorted({0, 1, x.size // 3, x.size - 1} & set(range(x.size))):
    assert float(iv.kth_smallest(jnp.asarray(x), k)) == want[k]


@pytest.mark.parametrize('sparsity', [0.0, 0.013, 0.1, 0.5, 0.93, 1.0])
def test_hard_mask_zeroes_exactly_the_target_fraction(sparsity):
  scores = np.random.default_rng(1).normal(size=(48, 80)).astype(np.float32)
  mask = np.asarray(iv.hard_mask(jnp.asarray(scores), sparsity))
  k = int(np.round(scores.size * sparsity))
  assert set(np.unique(mask)) <= {0.0, 1.0}
  assert (mask == 0).sum() == k
  # The zeroed entries are the k lowest scores.
  order = np.argsort(scores.ravel())
  assert (mask.ravel()[order[:k]] == 0).all() and (mask.ravel()[order[k:]] == 1).all()


def test_straight_through_gradient_is_dL_dmasked_weight_times_weight():
  rng = np.random.default_rng(2)
  w = rng.normal(size=(6, 5)).astype(np.float64)
  s = rng.normal(size=(6, 5)).astype(np.float32)
  x = rng.normal(size=(4, 6)).astype(np.float64)
  blocks = {'query': {'kernel': w[None].astype(np.float32), 'bias': np.zeros((1, 5), np.float32)}}

  def loss(scores):
    out = iv.apply_masks(blocks, {'query': {'kernel': scores}}, 0.4, jnp.ones(1, bool))
    return jnp.sum(jnp.tanh(x.astype(np.float32) @ out['query']['kernel'][0]))

  got = np.asarray(jax.grad(loss)(jnp.asarray(s[None])))[0]
  # By hand: m = top-60% of s; L = sum tanh(x (w*m)); dL/d(w*m) = x^T (1 - tanh^2); ds = that * w.
  m = (s >= np.sort(s.ravel())[12]).astype(np.float64)
  assert m.sum() == 18
  h = np.tanh(x @ (w * m))
  want = (x.T @ (1 - h**2)) * w
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
  # Unmasked blocks pass no gradient to their scores.
  off = lambda sc: jnp.sum(iv.apply_masks(blocks, {'query': {'kernel': sc}}, 0.4,
                                          jnp.zeros(1, bool))['query']['kernel'])
  assert float(jnp.abs(jax.grad(off)(jnp.asarray(s[None]))).max()) == 0.0


def test_masked_forward_multiplies_exact_zeros_and_ones():
  rng = np.random.default_rng(3)
  s = jnp.asarray(rng.uniform(0.1, 0.9, size=(2, 16, 16)).astype(np.float32))
  m = iv.block_masks({'q': {'kernel': s}}, 0.25, jnp.array([True, False]))['q']
  assert set(np.unique(np.asarray(m))) == {0.0, 1.0}  # hard + (s - sg(s)): exactly 0 or 1
  assert float((m[0] == 0).mean()) == 0.25 and bool((m[1] == 1).all())


def test_bitpacked_masks_round_trip(tmp_path):
  rng = np.random.default_rng(4)
  masks = {'query': rng.random((2, 7, 9)) < 0.3, 'intermediate': rng.random((2, 7, 13)) < 0.6}
  path = str(tmp_path / 'm.npz')
  nbytes = masks_lib.save_masks(path, masks, [1, 3])
  assert nbytes == int(np.ceil(2 * 7 * 9 / 8)) + int(np.ceil(2 * 7 * 13 / 8))
  back, blocks = masks_lib.load_masks(path)
  assert list(blocks) == [1, 3] and set(back) == set(masks)
  for k in masks:
    assert back[k].dtype == bool and np.array_equal(back[k], masks[k])


# ----------------------------------------------------------------------------- a composed run


@pytest.fixture(scope='module')
def composed(tiny_model_dir, tmp_path_factory):
  """One real sparsity run: block 0 frozen, block 2 reinitialized, blocks 1-2 masked at 30%."""
  work = tmp_path_factory.mktemp('sparsity')
  c = sparsity_cfg.get_config('demo')
  c.model, c.cache_dir = str(tiny_model_dir), str(work / 'cache')
  c.max_seq_length, c.num_train_steps, c.train_sizes, c.seeds = 32, 6, (64,), (1,)
  c.eval_max_examples = 32
  c.target_sparsity, c.mask_blocks, c.frozen_blocks, c.reinit_blocks = (0.3,), (1, 2), 1, (2,)
  c.masked_matrices = ('query', 'value', 'intermediate')
  c.weight_decay, c.export_model = 0.1, True
  captured = {}
  original = sparsity_exp.Sparsity.write_outputs

  def spy(self, ctx, trial, params):
    captured[trial.trial_id] = (trial.program, jax.tree.map(np.asarray, params.train),
                                jax.tree.map(np.asarray, params.frozen), params.arrays)
    original(self, ctx, trial, params)

  sparsity_exp.Sparsity.write_outputs = spy
  try:
    train.train_and_evaluate(c, str(work / 'run'))
  finally:
    sparsity_exp.Sparsity.write_outputs = original
  (rec,) = records_lib.read_records(work / 'run' / 'trials.jsonl')
  pre = jt.load_pretrained(str(tiny_model_dir))
  return work / 'run', rec, captured[rec['trial_id']], pre


def _hf_blocks(model_dir):
  """The exported encoder's blocks, read back through transformers (torch layout -> stacked)."""
  from jaxtransfer.models import convert
  model = transformers.AutoModel.from_pretrained(str(model_dir))
  return convert.stack({k: v.detach().numpy() for k, v in model.state_dict().items()})['blocks']


def test_composed_trial_freezes_reinits_and_masks(composed):
  work, rec, (program, tr, fr, arrays), pre = composed
  assert rec['status'] == 'ok'
  assert program.frozen_blocks == 1 and program.block_params == 'none'
  pb = pre.params['blocks']
  # Frozen prefix: block 0 is the pretrained block, bit for bit, and unmasked.
  for m, leaves in fr['blocks_frozen'].items():
    for leaf, value in leaves.items():
      assert np.array_equal(value[0], pb[m][leaf][0]), (m, leaf)
  # Blocks 1..2 are not trainable; block 1 is pretrained, block 2 a fresh BERT init.
  assert 'blocks' not in tr and set(tr) == {'mask_scores', 'pooler', 'head'}
  assert np.array_equal(fr['blocks']['query']['kernel'][0], pb['query']['kernel'][1])
  assert np.array_equal(fr['blocks']['output_ln']['scale'][0], pb['output_ln']['scale'][1])
  fresh = fr['blocks']['query']['kernel'][1]
  assert not np.isclose(fresh, pb['query']['kernel'][2]).any()
  assert abs(fresh.std() - 0.88 * pre.config.initializer_range) < 0.003  # truncated at 2 sigma
  assert np.array_equal(fr['blocks']['output_ln']['scale'][1], np.ones_like(pb['output_ln']['scale'][2]))
  # The frozen weights are the ones the trial started from: rebuild its init (the engine draws a
  # trial's init key as fold_in(key(seed), 1)) and compare.
  init_train, init_frozen = program.init(pre.params, {k: jnp.asarray(v) for k, v in arrays.items()
                                                      if k in program.defaults()},
                                         jax.random.fold_in(jax.random.key(1), 1))
  for a, b in zip(jax.tree.leaves(init_frozen), jax.tree.leaves(fr)):
    assert np.array_equal(np.asarray(a), b)
  # The mask scores did learn.
  moved = [np.abs(np.asarray(init_train['mask_scores'][m]['kernel']) - tr['mask_scores'][m]['kernel']).max()
           for m in program.masked]
  assert min(moved) > 0


def test_exported_masked_model_is_the_pretrained_weights_times_the_mask(composed):
  work, rec, (program, tr, fr, arrays), pre = composed
  hf = _hf_blocks(work / 'models' / rec['trial_id'])
  saved, blocks = masks_lib.load_masks(str(work / 'masks' / f'{rec["trial_id"]}.npz'))
  assert list(blocks) == [1, 2] and set(saved) == {'query', 'value', 'intermediate'}
  for m in saved:
    # Block 1 starts from the pretrained weights, block 2 from its reinit (frozen blocks [1, 3)).
    starts = {1: pre.params['blocks'][m]['kernel'][1], 2: fr['blocks'][m]['kernel'][1]}
    for row, b in enumerate(blocks):
      np.testing.assert_array_equal(hf[m]['kernel'][b], starts[b] * saved[m][row])
      assert 0 < saved[m][row].mean() < 1
  for m in ('key', 'attention_output', 'output'):  # unmasked matrices: untouched
    np.testing.assert_array_equal(hf[m]['kernel'][:2], pre.params['blocks'][m]['kernel'][:2])
  np.testing.assert_array_equal(hf['query']['kernel'][0], pre.params['blocks']['query']['kernel'][0])


def test_reported_sparsity_is_the_target_over_masked_matrices(composed):
  work, rec, _, _ = composed
  saved, _ = masks_lib.load_masks(str(work / 'masks' / f'{rec["trial_id"]}.npz'))
  m = rec['metrics']
  zeros = sum(int((~v).sum()) for v in saved.values())
  total = sum(v.size for v in saved.values())
  assert m['sparsity'] == pytest.approx(zeros / total, abs=1e-7)
  for name, v in saved.items():
    per_block = v.reshape(v.shape[0], -1)
    k = round(per_block.shape[1] * 0.3)
    assert ((~per_block).sum(1) == k).all()  # exactly round(0.3 x size) zeros per block
    assert m[f'sparsity/{name}'] == pytest.approx(k / per_block.shape[1], abs=1e-7)
  assert abs(m['sparsity'] - 0.3) < 1e-3
  assert m['mask_bytes'] == sum(int(np.ceil(v.size / 8)) for v in saved.values())
  assert m['full_copy_bytes'] > 50 * m['mask_bytes']
  assert os.path.exists(work / 'plots' / 'accuracy_vs_sparsity.png')


def test_mask_scores_get_their_own_learning_rate_and_no_decay(tiny_model_dir):
  pre = jt.load_pretrained(str(tiny_model_dir))
  prog = program_lib.Program(pre.config, 2, 3, block_params='none', train_embeddings=False,
                             masked=('query',))
  arrays = {k: jnp.asarray(v) for k, v in prog.defaults().items()}
  arrays['mask_lr'] = jnp.float32(50.0)
  arrays['block_lr'] = jnp.array([1.0, 0.0, 1.0])
  train, _ = prog.init(pre.params, arrays, jax.random.key(0))
  mult = prog.lr_multipliers(train, arrays)
  np.testing.assert_array_equal(np.asarray(mult['mask_scores']['query']['kernel']).ravel(), [50, 0, 50])
  assert float(mult['head']['classifier']['kernel']) == 1.0
  assert not prog.decays(('mask_scores', 'query', 'kernel'))
  # Scores start as |w| / mean|w| per block: the first mask is magnitude pruning.
  s = np.asarray(train['mask_scores']['query']['kernel'])
  w = np.abs(pre.params['blocks']['query']['kernel'])
  np.testing.assert_allclose(s, w / w.mean(axis=(1, 2), keepdims=True), rtol=1e-6)


def test_bad_sparsity_config_is_a_user_error(tiny_model_dir, tmp_path):
  from jaxtransfer.errors import UserError
  c = sparsity_cfg.get_config('demo')
  c.model, c.cache_dir = str(tiny_model_dir), str(tmp_path / 'cache')
  c.max_seq_length = 32
  for key, value in (('target_sparsity', (1.5,)), ('mask_blocks', (7,)),
                     ('masked_matrices', ('query', 'pooler')), ('baselines', ('lora',))):
    bad = c.copy_and_resolve_references()
    bad[key] = value
    with pytest.raises(UserError, match=key):
      train.train_and_evaluate(bad, str(tmp_path / key))
