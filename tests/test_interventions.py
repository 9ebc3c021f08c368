"""Reinit / permute interventions: masks, the two init schemes' distributions, pytree transforms."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats

import jaxtransfer as jt
from jaxtransfer.core import interventions as iv
from jaxtransfer.core import program as program_lib
from jaxtransfer.errors import UserError
from jaxtransfer.models import bert

L = 4
# Big enough matrices for distribution tests (the intermediate kernel alone is 4 x 64 x 512).
CONFIG = jt.EncoderConfig(vocab_size=50, hidden_size=64, num_layers=L, num_heads=4,
                          intermediate_size=512, max_position_embeddings=32)


@pytest.fixture(scope='module')
def pretrained():
  # Pretrained-looking values everywhere: non-zero biases, LayerNorms away from 1/0.
  rng = np.random.default_rng(0)
  shapes = jax.eval_shape(lambda k: bert.init_params(CONFIG, k), jax.random.key(0))
  return jax.tree.map(lambda s: (0.3 * rng.normal(size=s.shape) + 0.5).astype(np.float32), shapes)


def _leaves(blocks):
  return {jax.tree_util.keystr(p): np.asarray(v)
          for p, v in jax.tree_util.tree_flatten_with_path(blocks)[0]}


# ----------------------------------------------------------------------------- per-trial arrays


def test_reinit_from_keeps_the_first_k_blocks():
  np.testing.assert_array_equal(iv.reinit_from(L, L), [False] * L)   # plain model
  np.testing.assert_array_equal(iv.reinit_from(0, L), [True] * L)    # all reinitialized
  np.testing.assert_array_equal(iv.reinit_from(1, L), [False, True, True, True])
  for bad in (-1, L + 1):
    with pytest.raises(UserError, match='ks'):
      iv.reinit_from(bad, L)


def test_block_window_reinit_and_preserve_are_complements():
  got = iv.block_reinit_mask(1, 2, L, 'reinit')
  np.testing.assert_array_equal(got, [False, True, True, False])
  np.testing.assert_array_equal(iv.block_reinit_mask(1, 2, L, 'preserve'), ~got)
  np.testing.assert_array_equal(iv.block_reinit_mask(0, L, L, 'preserve'), [False] * L)
  with pytest.raises(UserError, match='starts'):
    iv.block_reinit_mask(3, 2, L, 'reinit')  # window 3..4 does not fit 4 blocks
  with pytest.raises(UserError, match='block_size'):
    iv.block_reinit_mask(0, L + 1, L, 'reinit')
  with pytest.raises(UserError, match='mode'):
    iv.block_reinit_mask(0, 2, L, 'both')


def test_tamkin_permutation_is_numpys_legacy_draw():
  # numpy's legacy generator is frozen API: RandomState(1).permutation(12) printed by numpy.
  np.testing.assert_array_equal(iv.tamkin_permutation(1, 12),
                                [2, 3, 4, 10, 1, 6, 0, 7, 11, 9, 8, 5])
  for p in range(1, 11):
    np.testing.assert_array_equal(iv.tamkin_permutation(p, 12),
                                  np.random.RandomState(p).permutation(12))
  with pytest.raises(UserError, match='permutation_seeds'):
    iv.tamkin_permutation(-3, 12)
  with pytest.raises(UserError, match='not a permutation'):
    iv.check_permutation([0, 0, 1, 2], 4)


# ----------------------------------------------------------------------------- transforms


def test_permute_moves_whole_blocks(pretrained):
  perm = iv.tamkin_permutation(3, L)
  out = iv.Permute().apply(CONFIG, pretrained, {'perm': jnp.asarray(perm)}, None)
  for name, leaf in _leaves(out['blocks']).items():
    np.testing.assert_array_equal(leaf, _leaves(pretrained['blocks'])[name][perm], err_msg=name)
  np.testing.assert_array_equal(out['embeddings']['word_embeddings']['embedding'],
                                pretrained['embeddings']['word_embeddings']['embedding'])


@pytest.mark.parametrize('scheme', iv.REINIT_SCHEMES)
def test_reinit_touches_only_masked_blocks(pretrained, scheme):
  mask = iv.reinit_from(2, L)
  out = iv.Reinit(scheme).apply(CONFIG, pretrained, {'reinit': jnp.asarray(mask)},
                                jax.random.key(5))
  old, new = _leaves(pretrained['blocks']), _leaves(out['blocks'])
  for name in old:
    np.testing.assert_array_equal(new[name][:2], old[name][:2], err_msg=name)  # kept bit for bit
    top = new[name][2:]
    if name.endswith("['kernel']"):
      assert not np.allclose(top, old[name][2:]), name
    elif "_ln'" in name:
      np.testing.assert_array_equal(top, 1.0 if name.endswith("['scale']") else 0.0, err_msg=name)
    elif scheme != 'tamkin2020':
      np.testing.assert_array_equal(top, 0.0, err_msg=name)  # Linear biases zeroed (HF too)
    else:
      np.testing.assert_array_equal(top, old[name][2:], err_msg=name)  # their code kept them
  # Embeddings and pooler are never touched.
  for part in ('embeddings', 'pooler'):
    for a, b in zip(jax.tree.leaves(out[part]), jax.tree.leaves(pretrained[part])):
      np.testing.assert_array_equal(a, b)


def test_keep_layer_norm_keeps_only_the_reinitialized_blocks_layer_norms(pretrained):
  """Tamkin et al.'s --keep_layer_norm ablation: the same fresh kernels and biases as a plain
  reinit with the same key, the pretrained LayerNorms."""
  mask = {'reinit': jnp.asarray(iv.reinit_from(2, L))}
  plain = _leaves(iv.Reinit('bert').apply(CONFIG, pretrained, mask, jax.random.key(5))['blocks'])
  kept = _leaves(iv.Reinit('bert', keep_layer_norm=True).apply(CONFIG, pretrained, mask,
                                                                jax.random.key(5))['blocks'])
  old = _leaves(pretrained['blocks'])
  assert any("_ln'" in name for name in old)
  for name in old:
    want = old[name] if "_ln'" in name else plain[name]
    np.testing.assert_array_equal(kept[name], want, err_msg=name)


def _fresh_kernels(pretrained, scheme, seed=0):
  fresh = iv.fresh_blocks(CONFIG, jax.random.key(seed), scheme, pretrained['blocks'])
  return np.concatenate([np.asarray(v).ravel() for k, v in _leaves(fresh).items()
                         if k.endswith("['kernel']")])


def test_bert_scheme_is_a_2_sigma_truncated_normal(pretrained):
  w = _fresh_kernels(pretrained, 'bert')
  ref = scipy.stats.truncnorm(-2, 2, scale=CONFIG.initializer_range)
  assert scipy.stats.kstest(w, ref.cdf).pvalue > 1e-3
  assert np.abs(w).max() <= 2 * CONFIG.initializer_range
  np.testing.assert_allclose(w.std(), ref.std(), rtol=0.01)  # 0.0176, not 0.02
  # The test can tell the clean truncation apart from a plain normal of the same scale.
  assert scipy.stats.kstest(w, scipy.stats.norm(scale=CONFIG.initializer_range).cdf).pvalue < 1e-6


def test_tamkin_scheme_matches_scipy_truncnorm_of_their_code(pretrained):
  w = _fresh_kernels(pretrained, 'tamkin2020')
  ref = scipy.stats.truncnorm(-0.04, 0.04, scale=0.02)  # verbatim from their reinit code
  assert scipy.stats.kstest(w, ref.cdf).pvalue > 1e-3
  assert np.abs(w).max() <= 0.0008
  np.testing.assert_allclose(w.std(), ref.std(), rtol=0.01)
  np.testing.assert_allclose(ref.std(), 4.6e-4, rtol=0.01)  # docs/PROTOCOLS.md's figure
  # ~uniform on +-0.0008: the fraction within half the range is about one half.
  assert 0.48 < np.mean(np.abs(w) < 0.0004) < 0.52
  assert scipy.stats.kstest(w, scipy.stats.norm(scale=0.02).cdf).pvalue < 1e-6


def test_same_seed_same_fresh_blocks_whatever_k(pretrained):
  """Settings of one seed reinitialize a block to the same values (a controlled comparison),
  different seeds to different ones."""
  reinit = iv.Reinit('bert')
  apply = lambda k, seed: _leaves(reinit.apply(CONFIG, pretrained,
                                               {'reinit': jnp.asarray(iv.reinit_from(k, L))},
                                               jax.random.key(seed))['blocks'])
  a, b, c = apply(1, 0), apply(3, 0), apply(3, 1)
  name = "['query']['kernel']"
  np.testing.assert_array_equal(a[name][3], b[name][3])
  assert not np.allclose(b[name][3], c[name][3])


def test_vmapped_reinit_equals_one_mask_at_a_time(pretrained):
  masks = np.stack([iv.reinit_from(k, L) for k in range(L + 1)])
  keys = jax.random.split(jax.random.key(2), L + 1)
  reinit = iv.Reinit('tamkin2020')
  batched = jax.jit(jax.vmap(lambda m, k: reinit.apply(CONFIG, pretrained, {'reinit': m}, k)))(
      jnp.asarray(masks), keys)
  for i in range(L + 1):
    one = reinit.apply(CONFIG, pretrained, {'reinit': jnp.asarray(masks[i])}, keys[i])
    for x, y in zip(jax.tree.leaves(one), jax.tree.leaves(batched)):
      np.testing.assert_allclose(np.asarray(y)[i], np.asarray(x), rtol=0, atol=0)


def test_program_permutes_then_reinitializes(pretrained):
  """Program.init with (Permute, Reinit): position i holds pretrained block perm[i] unless
  position i is reinitialized; embeddings and pooler are the pretrained ones."""
  prog = program_lib.Program(encoder=CONFIG, num_labels=2, num_blocks=L,
                             interventions=(iv.Permute(), iv.Reinit('tamkin2020')))
  perm = iv.tamkin_permutation(2, L)
  mask = iv.block_reinit_mask(1, 1, L, 'reinit')
  arrays = {**{k: jnp.asarray(v) for k, v in prog.defaults().items()},
            'perm': jnp.asarray(perm), 'reinit': jnp.asarray(mask)}
  train, frozen = prog.init(pretrained, arrays, jax.random.key(0))
  params = program_lib.merge(train, frozen)
  got, old = _leaves(params['blocks']), _leaves(pretrained['blocks'])
  for name in old:
    for i in range(L):
      if not mask[i]:
        np.testing.assert_array_equal(got[name][i], old[name][perm[i]], err_msg=f'{name} {i}')
  # tamkin2020 keeps the biases of the block that moved into the reinitialized position.
  np.testing.assert_array_equal(got["['query']['bias']"][1], old["['query']['bias']"][perm[1]])
  assert np.abs(got["['query']['kernel']"][1]).max() <= 0.0008
  np.testing.assert_array_equal(params['pooler']['kernel'], pretrained['pooler']['kernel'])


def test_unknown_scheme_is_a_user_error(pretrained):
  with pytest.raises(UserError, match='reinit_scheme'):
    iv.fresh_blocks(CONFIG, jax.random.key(0), 'xavier', pretrained['blocks'])


def _named(tree):
  return {jax.tree_util.keystr(p): np.asarray(v) for p, v in
          jax.tree_util.tree_flatten_with_path(tree)[0]}


@pytest.mark.parametrize('scheme,std', [
    ('family', CONFIG.initializer_range),  # HF's normal(0, initializer_range)
    ('bert', scipy.stats.truncnorm(-2, 2, scale=CONFIG.initializer_range).std())])
def test_scratch_reinitializes_every_leaf_in_the_models_init(pretrained, scheme, std):
  """Nothing pretrained is left: tables and kernels zero-mean at the init's std, LayerNorms 1/0,
  biases 0; the blocks are k = 0's (the same key), and k = 0 alone keeps the embeddings."""
  mask = {'reinit': jnp.ones(L, bool)}
  out = iv.Reinit(scheme, scratch=True).apply(CONFIG, pretrained, mask, jax.random.key(5))
  old, new = _named(pretrained), _named(out)
  assert set(new) == set(old)
  for name, leaf in new.items():
    assert not np.any(leaf == old[name]), name
    if name.endswith(("['kernel']", "['embedding']")):
      np.testing.assert_allclose(leaf.std(), std, rtol=0.1, err_msg=name)
      assert abs(leaf.mean()) < 4 * std / np.sqrt(leaf.size), name
    else:  # LayerNorm scales 1, their biases and Linear biases 0
      np.testing.assert_array_equal(leaf, 1.0 if "norm']['scale']" in name.lower().replace(
          "_ln']", "norm']") else 0.0, err_msg=name)
  k0 = iv.Reinit(scheme).apply(CONFIG, pretrained, mask, jax.random.key(5))
  for name, leaf in _named(k0['blocks']).items():
    np.testing.assert_array_equal(_named(out['blocks'])[name], leaf, err_msg=name)
  for part in ('embeddings', 'pooler'):
    for name, leaf in _named(k0[part]).items():
      np.testing.assert_array_equal(leaf, _named(pretrained[part])[name], err_msg=name)
