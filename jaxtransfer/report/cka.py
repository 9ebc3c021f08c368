"""Linear CKA (Kornblith et al. 2019) between two sets of hidden states, accumulated over batches.

Each batch contributes its token count, its means and its covariance sums around its own means,
computed on the device in float32 (centering inside the batch, so nothing cancels); the batches
are combined on the host in float64 with the exact pairwise-update formula (Chan et al. 1979), so
the result is the CKA of the centered features of all tokens at once:
  CKA(X, Y) = ||Yc^T Xc||_F^2 / (||Xc^T Xc||_F ||Yc^T Yc||_F).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np


@dataclasses.dataclass
class Moments:
  """Per layer: token count, means of a and b, and the centered sums a^T a, b^T b, b^T a."""
  n: np.ndarray       # (K,)
  mean_a: np.ndarray  # (K, H)
  mean_b: np.ndarray  # (K, H)
  caa: np.ndarray     # (K, H, H)
  cbb: np.ndarray
  cba: np.ndarray


def batch_moments(a: jax.Array, b: jax.Array, weights: jax.Array) -> dict[str, jax.Array]:
  """One batch's moments of a and b (K, B, S, H) over the tokens whose weight is 1 (B, S)."""
  k, h = a.shape[0], a.shape[-1]
  w = weights.reshape(-1).astype(jnp.float32)
  n = jnp.maximum(w.sum(), 1.0)

  def center(x):
    x = x.reshape(k, -1, h).astype(jnp.float32)
    mean = jnp.einsum('t,kth->kh', w, x, precision='highest') / n
    return (x - mean[:, None]) * w[None, :, None], mean

  ac, ma = center(a)
  bc, mb = center(b)
  gram = lambda p, q: jnp.einsum('kti,ktj->kij', p, q, precision='highest')
  return {'n': jnp.broadcast_to(w.sum(), (k,)), 'mean_a': ma, 'mean_b': mb,
          'caa': gram(ac, ac), 'cbb': gram(bc, bc), 'cba': gram(bc, ac)}


def combine(parts) -> Moments:
  """The moments of the union of batches (float64): C = sum_b C_b + n_b (m_b - m)(m_b - m)^T."""
  parts = [jax.tree.map(lambda x: np.asarray(x, np.float64), p) for p in parts]
  parts = [p for p in parts if p['n'][0] > 0]
  n = sum(p['n'] for p in parts)
  mean = lambda key: sum(p['n'][:, None] * p[key] for p in parts) / n[:, None]
  ma, mb = mean('mean_a'), mean('mean_b')

  def total(key, u, v):
    outer = lambda p: np.einsum('k,ki,kj->kij', p['n'], p[u[0]] - u[1], p[v[0]] - v[1])
    return sum(p[key] + outer(p) for p in parts)

  a, b = ('mean_a', ma), ('mean_b', mb)
  return Moments(n, ma, mb, total('caa', a, a), total('cbb', b, b), total('cba', b, a))


def linear_cka(m: Moments) -> np.ndarray:
  """(K,) linear CKA per layer; nan where either side has no variance."""
  fro = lambda c: np.sqrt(np.einsum('kij,kij->k', c, c))
  denom = fro(m.caa) * fro(m.cbb)
  with np.errstate(invalid='ignore', divide='ignore'):
    return np.where(denom > 0, np.einsum('kij,kij->k', m.cba, m.cba) / denom, np.nan)
