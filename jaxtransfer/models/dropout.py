"""Dropout whose mask does not depend on how wide a batch is padded."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

_MAX_TOKENS = 1 << 15  # token positions per row; an attention entry (q, k) is keyed q * this + k


def token_keep_mask(rng, keep: float, shape, token_axes: tuple[int, ...]) -> jax.Array:
  """Bernoulli(keep) mask of `shape` whose entry at each position depends only on `rng` and that
  position's indices, never on the sizes along `token_axes`.

  Batches are padded to a width that varies with their longest row (and, in a vmapped group, with
  the other trials' rows): a mask drawn for the whole shape would change with that width and make
  a trial's result depend on its neighbours. Each token position (or attention entry) gets its own
  key instead, and the mask over the remaining axes is drawn from it.
  """
  sizes = [shape[a] for a in token_axes]
  rest = tuple(n for a, n in enumerate(shape) if a not in token_axes)
  grids = jnp.meshgrid(*[jnp.arange(n) for n in sizes], indexing='ij')
  index = grids[0] if len(grids) == 1 else grids[0] * _MAX_TOKENS + grids[1]
  keys = jax.vmap(lambda i: jax.random.fold_in(rng, i))(index.ravel())
  mask = jax.vmap(lambda k: jax.random.bernoulli(k, keep, rest))(keys).reshape(*sizes, *rest)
  order = list(token_axes) + [a for a in range(len(shape)) if a not in token_axes]
  return jnp.transpose(mask, [order.index(a) for a in range(len(shape))])


class TokenDropout(nn.Module):
  """Inverted dropout (as nn.Dropout) on token-shaped tensors: (B, S, ...) with token axis 1, or
  attention maps (B, heads, Q, K) with `token_axes=(2, 3)`."""
  rate: float
  token_axes: tuple[int, ...] = (1,)

  @nn.compact
  def __call__(self, x, deterministic: bool = True):
    if deterministic or self.rate == 0:
      return x
    keep = 1.0 - self.rate
    mask = token_keep_mask(self.make_rng('dropout'), keep, x.shape, self.token_axes)
    return jnp.where(mask, x / keep, 0).astype(x.dtype)
