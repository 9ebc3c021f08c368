"""Dropout whose mask does not depend on how wide a batch is padded."""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

_MAX_TOKENS = 1 << 15  # token positions per row; an attention entry (q, k) is keyed q * this + k
_GOLDEN = np.uint32(0x9E3779B9)  # Weyl increment (2^32 / golden ratio), as in splitmix


def _mix(x: jax.Array) -> jax.Array:
  """A bijective 32-bit integer hash (Wellons' lowbias32: two multiply-xorshift rounds)."""
  x = x ^ (x >> 16)
  x = x * np.uint32(0x7FEB352D)
  x = x ^ (x >> 15)
  x = x * np.uint32(0x846CA68B)
  return x ^ (x >> 16)


def _key_words(rng) -> tuple[jax.Array, jax.Array]:
  if jnp.issubdtype(rng.dtype, jax.dtypes.prng_key):
    rng = jax.random.key_data(rng)
  words = rng.reshape(-1).astype(jnp.uint32)
  return words[0], words[-1]


def token_keep_mask(rng, keep: float, shape, token_axes: tuple[int, ...]) -> jax.Array:
  """Bernoulli(keep) mask of `shape` whose entry at each position depends only on `rng` and that
  position's indices, never on the sizes along `token_axes`.

  Batches are padded to a width that varies with their longest row (and, in a vmapped group, with
  the other trials' rows): a mask drawn for the whole shape would change with that width and make
  a trial's result depend on its neighbours. Each entry is instead a counter-based hash of the key,
  its token position (or attention entry) and its index over the other axes, whose sizes are fixed
  per trial. A hash costs a few integer ops per entry where threefry costs ~100 (dropout was 12% of
  a MiniLM training step on CPU with threefry); masks are only drawn, never used as crypto.
  """
  k0, k1 = _key_words(rng)
  sizes = [shape[a] for a in token_axes]
  rest = tuple(n for a, n in enumerate(shape) if a not in token_axes)
  grids = jnp.meshgrid(*[jnp.arange(n, dtype=jnp.uint32) for n in sizes], indexing='ij')
  index = grids[0] if len(grids) == 1 else grids[0] * np.uint32(_MAX_TOKENS) + grids[1]
  position_seed = _mix(_mix(index ^ k0) + k1)                       # (*sizes,)
  counter = jnp.arange(1, math.prod(rest) + 1, dtype=jnp.uint32).reshape(rest) * _GOLDEN
  bits = _mix(position_seed.reshape(*sizes, *(1,) * len(rest)) + counter)
  mask = bits < np.uint32(min(round(keep * 2.0**32), 2**32 - 1))
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
