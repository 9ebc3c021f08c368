"""Layer interventions as pure transforms of the stacked parameter pytree, driven by per-trial arrays.

Each intervention is a small frozen dataclass (static: part of the compiled program) whose
`apply(params, arrays, rng)` reads its per-trial arrays, so trials that differ only in those arrays
(which blocks to reinitialize, which order to stack them in) share one compiled program.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxtransfer.errors import UserError
from jaxtransfer.models import bert

Params = dict[str, Any]
REINIT_SCHEMES = ('bert', 'tamkin2020')
# Tamkin et al.'s code: scipy.stats.truncnorm(-0.04, 0.04, scale=0.02), i.e. bounds of +-0.04 in
# *standard* units, scaled by 0.02: nearly uniform on +-0.0008 (std ~4.6e-4), not N(0, 0.02^2).
TAMKIN_TRUNC, TAMKIN_SCALE = 0.04, 0.02


# ----------------------------------------------------------------------------- block-axis helpers


def select_blocks(mask, new: Params, old: Params) -> Params:
  """Per block (leading axis), `new` where mask is true, else `old`."""
  def pick(n, o):
    m = jnp.reshape(mask, (-1,) + (1,) * (o.ndim - 1))
    return jnp.where(m, n.astype(o.dtype), o)
  return jax.tree.map(pick, new, old)


def permute_blocks(blocks: Params, perm) -> Params:
  """Block i of the result is block perm[i] of the input."""
  return jax.tree.map(lambda p: jnp.take(p, perm, axis=0), blocks)


def fresh_blocks(config: bert.EncoderConfig, rng, n: int, scheme: str, pretrained: Params) -> Params:
  """n freshly initialised blocks in one of the named schemes (stacked like `pretrained`)."""
  def trunc(key, shape, lower, upper, scale):
    return scale * jax.random.truncated_normal(key, lower, upper, shape, jnp.float32)

  leaves, treedef = jax.tree_util.tree_flatten_with_path(pretrained)
  keys = jax.random.split(rng, len(leaves))
  out = []
  for (path, old), key in zip(leaves, keys):
    name = jax.tree_util.keystr(path)
    is_ln = "_ln'" in name
    if scheme == 'bert':
      # Google BERT's init: truncated normal at 2 sigma, std = initializer_range; zero bias; LN 1/0.
      if name.endswith("['kernel']"):
        new = trunc(key, old.shape, -2.0, 2.0, config.initializer_range)
      elif name.endswith("['scale']"):
        new = jnp.ones_like(old)
      else:
        new = jnp.zeros_like(old)
    elif scheme == 'tamkin2020':
      # Only Linear weights are redrawn; Linear biases keep their pretrained values; LN reset.
      if name.endswith("['kernel']"):
        new = trunc(key, old.shape, -TAMKIN_TRUNC, TAMKIN_TRUNC, TAMKIN_SCALE)
      elif is_ln:
        new = jnp.ones_like(old) if name.endswith("['scale']") else jnp.zeros_like(old)
      else:
        new = old
    else:
      raise UserError(f'reinit_scheme={scheme!r} is not one of {REINIT_SCHEMES}.')
    out.append(new)
  del n
  return jax.tree_util.tree_unflatten(treedef, out)


# ----------------------------------------------------------------------------- interventions


@dataclasses.dataclass(frozen=True)
class Permute:
  """Stacks the pretrained blocks in the order `arrays['perm']` (L ints)."""

  def defaults(self, num_layers: int) -> dict[str, np.ndarray]:
    return {'perm': np.arange(num_layers, dtype=np.int32)}

  def apply(self, config, params: Params, arrays, rng) -> Params:
    del config, rng
    return {**params, 'blocks': permute_blocks(params['blocks'], arrays['perm'])}


@dataclasses.dataclass(frozen=True)
class Reinit:
  """Reinitializes the blocks where `arrays['reinit']` (L bools) is true, in a named scheme."""
  scheme: str = 'bert'

  def defaults(self, num_layers: int) -> dict[str, np.ndarray]:
    return {'reinit': np.zeros(num_layers, dtype=bool)}

  def apply(self, config, params: Params, arrays, rng) -> Params:
    blocks = params['blocks']
    fresh = fresh_blocks(config, rng, config.num_layers, self.scheme, blocks)
    return {**params, 'blocks': select_blocks(arrays['reinit'], fresh, blocks)}


def check_permutation(perm, num_layers: int) -> None:
  perm = list(perm)
  if sorted(perm) != list(range(num_layers)):
    raise UserError(f'Block order {perm} is not a permutation of 0..{num_layers - 1}. Give each block '
                    f'index from 0 to {num_layers - 1} exactly once.')


def check_block_index(name: str, value: int, lo: int, hi: int, num_layers: int) -> None:
  if not lo <= value <= hi:
    raise UserError(f'{name}={value} is out of range for a model with {num_layers} blocks: it must '
                    f'be between {lo} and {hi}. Change --config.{name.split("[")[0]}.')


# ----------------------------------------------------------------------------- sparsity masks


def binary_mask(scores, sparsity: float):
  """{0,1} mask keeping the top (1 - sparsity) fraction of `scores`, with a straight-through gradient.

  Forward: the hard mask. Backward: d mask / d scores = 1, so scores learn from dL/d(w * mask) * w
  (Mallya et al.'s Piggyback, Ramanujan et al.'s edge-popup, Zhao et al. 2020).
  """
  flat = scores.reshape(-1)
  k = jnp.clip(jnp.round(flat.shape[0] * sparsity).astype(jnp.int32), 0, flat.shape[0] - 1)
  threshold = jnp.sort(flat)[k]
  hard = (scores >= threshold).astype(scores.dtype)
  hard = jnp.where(sparsity <= 0, jnp.ones_like(hard), hard)
  return scores + jax.lax.stop_gradient(hard - scores)


def apply_masks(blocks: Params, scores: Params, sparsity, block_mask) -> Params:
  """Multiplies the masked matrices of the stacked blocks by their learned binary masks.

  `scores` has the kernels to mask ({'query': {'kernel': (n, in, out)}, ...}); `block_mask` (n,)
  says which blocks are masked (others keep the dense weights).
  """
  out = dict(blocks)
  for name, s in scores.items():
    kernel = blocks[name]['kernel']
    mask = jax.vmap(lambda sc: binary_mask(sc, sparsity))(s['kernel'])
    mask = jnp.where(block_mask[:, None, None], mask, jax.lax.stop_gradient(jnp.ones_like(mask)))
    out[name] = {**blocks[name], 'kernel': kernel * mask.astype(kernel.dtype)}
  return out
