"""Token dropout masks: Bernoulli(keep) entries, independent of the padded width and of each other."""

import jax
import numpy as np
import pytest
import scipy.stats

from jaxtransfer.models.dropout import token_keep_mask


@pytest.mark.parametrize('shape,axes', [((16, 48, 384), (1,)), ((8, 12, 40, 40), (2, 3))])
def test_mask_does_not_depend_on_the_padded_width(shape, axes):
  key = jax.random.PRNGKey(3)
  wider = list(shape)
  for a in axes:
    wider[a] += 24
  small = np.asarray(token_keep_mask(key, 0.9, shape, axes))
  big = np.asarray(token_keep_mask(key, 0.9, tuple(wider), axes))
  assert (big[tuple(slice(0, n) for n in shape)] == small).all()


@pytest.mark.parametrize('keep', [0.9, 0.5, 0.2])
def test_entries_are_bernoulli_keep(keep):
  m = np.asarray(token_keep_mask(jax.random.PRNGKey(0), keep, (16, 64, 256), (1,)))
  # Two-sided binomial test of the kept fraction over 262,144 entries.
  assert scipy.stats.binomtest(int(m.sum()), m.size, keep).pvalue > 1e-3
  # Neighbours along every axis (hidden unit, token, row) are uncorrelated.
  f = m.astype(float)
  for axis in range(3):
    a, b = np.take(f, range(f.shape[axis] - 1), axis), np.take(f, range(1, f.shape[axis]), axis)
    assert abs(np.corrcoef(a.ravel(), b.ravel())[0, 1]) < 0.01


def test_keys_give_independent_masks_and_typed_keys_work():
  shape = (16, 32, 384)
  a = np.asarray(token_keep_mask(jax.random.PRNGKey(1), 0.9, shape, (1,)))
  b = np.asarray(token_keep_mask(jax.random.PRNGKey(2), 0.9, shape, (1,)))
  # Independent Bernoulli(0.9) masks agree on 0.9^2 + 0.1^2 = 0.82 of the entries.
  assert abs((a == b).mean() - 0.82) < 0.005
  folded = np.asarray(token_keep_mask(jax.random.fold_in(jax.random.PRNGKey(1), 1), 0.9, shape,
                                      (1,)))
  assert abs((a == folded).mean() - 0.82) < 0.005
  typed = np.asarray(token_keep_mask(jax.random.key(1), 0.9, shape, (1,)))
  assert (typed == a).all()
