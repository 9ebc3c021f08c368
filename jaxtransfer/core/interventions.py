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
from jaxtransfer.models import config as model_config

Params = dict[str, Any]
REINIT_SCHEMES = ('bert', 'tamkin2020', 'family')
# Tamkin et al.'s code: scipy.stats.truncnorm(-0.04, 0.04, scale=0.02), i.e. bounds of +-0.04 in
# *standard* units, scaled by 0.02: nearly uniform on +-0.0008 (std ~4.6e-4), not N(0, 0.02^2).
TAMKIN_TRUNC, TAMKIN_SCALE = 0.04, 0.02
MATRICES = ('kernel', 'embedding')  # leaves drawn from the scheme's distribution (Dense, Embed)
# What a from-scratch model (`Reinit(scratch=True)`) reinitializes besides every block.
SCRATCH_PARTS = ('embeddings', 'pooler')


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


def is_layer_norm(name: str) -> bool:
  """Whether a sub-module is a LayerNorm (`attention_ln`, `LayerNorm`, ModernBERT's `final_norm`)."""
  return name.endswith(('_ln', 'norm')) or name == 'LayerNorm'


def fresh_blocks(config: model_config.EncoderConfig, rng, scheme: str, pretrained: Params) -> Params:
  """Freshly initialised params shaped like `pretrained` (the stacked blocks; for a from-scratch
  model also the embeddings and the pooler, whose tables init as kernels do), in a named scheme.

  'bert': Google BERT's init, every parameter new: kernels from a normal with std
  `initializer_range` truncated at 2 sigma (tf.truncated_normal_initializer), zero biases,
  LayerNorm 1/0. 'tamkin2020': what Tamkin et al.'s code did: kernels from
  `scipy.stats.truncnorm(-0.04, 0.04, scale=0.02)`, biases keep their pretrained values,
  LayerNorm 1/0. 'family': the checkpoint family's own HF `_init_weights` (`family_init`).
  """
  if scheme not in REINIT_SCHEMES:
    raise UserError(f'reinit_scheme={scheme!r} is not one of {", ".join(REINIT_SCHEMES)}. Use bert '
                    '(clean BERT init), tamkin2020 (their code) or family (the model family\'s own '
                    'HF init) with --config.reinit_scheme.')
  lower, upper, scale = ((-2.0, 2.0, config.initializer_range) if scheme == 'bert'
                         else (-TAMKIN_TRUNC, TAMKIN_TRUNC, TAMKIN_SCALE))
  leaves, treedef = jax.tree_util.tree_flatten_with_path(pretrained)
  keys = jax.random.split(rng, len(leaves))
  out = []
  for (path, old), key in zip(leaves, keys):
    names = [str(getattr(k, 'key', k)) for k in path]
    if names[-1] in MATRICES and scheme == 'family':
      new = family_init(config, names[-2], key, old.shape)
    elif names[-1] in MATRICES:
      new = scale * jax.random.truncated_normal(key, lower, upper, old.shape, jnp.float32)
    elif is_layer_norm(names[-2]):
      new = jnp.ones_like(old) if names[-1] == 'scale' else jnp.zeros_like(old)
    else:  # Linear biases
      new = old if scheme == 'tamkin2020' else jnp.zeros_like(old)  # only their code kept them
    out.append(new.astype(old.dtype))
  return jax.tree_util.tree_unflatten(treedef, out)


def family_init(config: model_config.EncoderConfig, matrix: str, key, shape) -> jax.Array:
  """A block matrix as the family's HF `_init_weights` draws it (biases 0, norms 1/0 as ever).

  ModernBERT: truncated normal at +-initializer_cutoff_factor std, std initializer_range for
  Wqkv and Wi and initializer_range / sqrt(2 L) for both output projections (Wo). The others
  (BERT, RoBERTa, DistilBERT, ELECTRA, DeBERTa-v2): normal(0, initializer_range), untruncated.
  """
  std = config.initializer_range
  if config.model_type != 'modernbert':
    return std * jax.random.normal(key, shape, jnp.float32)
  if matrix in ('attention_output', 'output'):
    std = std / np.sqrt(2.0 * config.num_layers)
  cut = config.initializer_cutoff
  return std * jax.random.truncated_normal(key, -cut, cut, shape, jnp.float32)


# ----------------------------------------------------------------------------- per-trial arrays


def reinit_from(k: int, num_layers: int) -> np.ndarray:
  """Progressive reinit (Tamkin et al.): blocks with index >= k are reinitialized, k of them kept."""
  check_block_index('ks', k, 0, num_layers, num_layers)
  return np.arange(num_layers) >= k


def block_reinit_mask(start: int, size: int, num_layers: int, mode: str) -> np.ndarray:
  """Blocks start..start+size-1 reinitialized (`reinit`), or the only ones kept (`preserve`)."""
  check_block_index('block_size', size, 1, num_layers, num_layers)
  check_block_index('starts', start, 0, num_layers - size, num_layers)
  inside = (np.arange(num_layers) >= start) & (np.arange(num_layers) < start + size)
  if mode not in ('reinit', 'preserve'):
    raise UserError(f'mode={mode!r} must be reinit or preserve (--config.mode).')
  return inside if mode == 'reinit' else ~inside


def tamkin_permutation(p: int, num_layers: int) -> np.ndarray:
  """Tamkin et al.'s layer order for permutation seed p: np.random.RandomState(p).permutation(L)."""
  if not 0 <= int(p) < 2**32:
    raise UserError(f'permutation_seeds contains {p}, which np.random.RandomState cannot take: use '
                    'integers between 0 and 2**32-1 (--config.permutation_seeds).')
  perm = np.random.RandomState(int(p)).permutation(num_layers).astype(np.int32)
  check_permutation(perm, num_layers)
  return perm


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
  """Reinitializes the blocks where `arrays['reinit']` (L bools) is true, in a named scheme;
  `keep_layer_norm` keeps their pretrained LayerNorms (Tamkin et al.'s --keep_layer_norm ablation).
  `scratch` also reinitializes the embeddings (word, position, token type, their LayerNorm) and
  the pretrained pooler: nothing of the checkpoint is left (with an all-true mask)."""
  scheme: str = 'bert'
  keep_layer_norm: bool = False
  scratch: bool = False

  def defaults(self, num_layers: int) -> dict[str, np.ndarray]:
    return {'reinit': np.zeros(num_layers, dtype=bool)}

  def apply(self, config, params: Params, arrays, rng) -> Params:
    blocks = params['blocks']
    out = {**params, 'blocks': select_blocks(arrays['reinit'], self.fresh(config, rng, blocks),
                                             blocks)}
    if self.scratch:  # a key of its own (folded): the fresh blocks equal k = 0's of the same seed
      rest = {k: params[k] for k in SCRATCH_PARTS if k in params}
      out.update(self.fresh(config, jax.random.fold_in(rng, 1), rest))
    return out

  def fresh(self, config, rng, pretrained: Params) -> Params:
    """Fresh params in this scheme, the pretrained LayerNorms kept under `keep_layer_norm`."""
    new = fresh_blocks(config, rng, self.scheme, pretrained)
    if not self.keep_layer_norm:
      return new
    keep = lambda path, n, o: o if any(is_layer_norm(str(getattr(k, 'key', k))) for k in path) else n
    return jax.tree_util.tree_map_with_path(keep, new, pretrained)


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


def _order_key(x):
  """float32 -> uint32 with the same order (IEEE bits, sign flipped; negatives' bits inverted)."""
  b = jax.lax.bitcast_convert_type(x.astype(jnp.float32), jnp.uint32)
  return jnp.where(b >> 31 == 1, ~b, b | jnp.uint32(0x80000000))


def _from_order_key(key):
  b = jnp.where(key >> 31 == 1, key & jnp.uint32(0x7fffffff), ~key)
  return jax.lax.bitcast_convert_type(b, jnp.float32)


def kth_smallest(x, k):
  """The k-th smallest entry of `x` (0-based), exactly: what jnp.sort(x.ravel())[k] gives.

  A bisection over the 32-bit order keys: 32 counting passes, no sort. XLA's CPU sort of the
  ~10M mask scores of a small BERT costs seconds per step; this costs a tenth of that.
  """
  keys = _order_key(x.reshape(-1))

  def body(_, bounds):
    lo, hi = bounds
    mid = lo + (hi - lo) // 2
    above_k = jnp.sum(keys <= mid, dtype=jnp.int32) > k  # the answer is <= mid
    return jnp.where(above_k, lo, mid + 1), jnp.where(above_k, mid, hi)

  lo, _ = jax.lax.fori_loop(0, 32, body, (jnp.min(keys), jnp.max(keys)))
  return _from_order_key(lo).astype(x.dtype)


def num_zeroed(size: int, sparsity):
  """Entries a top-k mask zeroes in a matrix of `size` entries: round(size * sparsity)."""
  return jnp.clip(jnp.round(size * sparsity).astype(jnp.int32), 0, size)


def hard_mask(scores, sparsity):
  """{0,1} mask (scores' dtype) zeroing the round(size * sparsity) smallest scores, keeping the rest.

  Ties at the threshold are kept, so the achieved sparsity is at most the target (exact without
  ties, which real-valued scores do not have).
  """
  k = num_zeroed(scores.size, sparsity)
  threshold = kth_smallest(scores, jnp.minimum(k, scores.size - 1))
  keep = (scores >= threshold) & (k < scores.size)
  return keep.astype(scores.dtype)


def binary_mask(scores, sparsity):
  """`hard_mask` in the forward pass with a straight-through gradient d mask / d scores = 1.

  Scores then learn from dL/d(w * mask) * w (Mallya et al.'s Piggyback, Ramanujan et al.'s
  edge-popup, Zhao et al. 2020). Written as hard + (s - stop_gradient(s)) so the forward value is
  exactly 0 or 1 (s + (hard - s) can round to 1 - 2^-24).
  """
  hard = jax.lax.stop_gradient(hard_mask(scores, sparsity))
  return hard + (scores - jax.lax.stop_gradient(scores))


def block_masks(scores: Params, sparsity, block_mask, *, straight_through: bool = True) -> Params:
  """{matrix: (n, in, out) mask}: per block a top-k mask of the scores, all ones where
  `block_mask` (n,) is false (those blocks keep their dense weights)."""
  fn = binary_mask if straight_through else hard_mask
  out = {}
  for name, s in scores.items():
    mask = jax.vmap(lambda sc: fn(sc, sparsity))(s['kernel'])
    out[name] = jnp.where(jnp.reshape(block_mask, (-1, 1, 1)), mask,
                          jax.lax.stop_gradient(jnp.ones_like(mask)))
  return out


def apply_masks(blocks: Params, scores: Params, sparsity, block_mask) -> Params:
  """Multiplies the masked matrices of the stacked blocks by their learned binary masks.

  `scores` has the kernels to mask ({'query': {'kernel': (n, in, out)}, ...}); `block_mask` (n,)
  says which blocks are masked (others keep the dense weights).
  """
  out = dict(blocks)
  for name, mask in block_masks(scores, sparsity, block_mask).items():
    kernel = blocks[name]['kernel']
    out[name] = {**blocks[name], 'kernel': kernel * mask.astype(kernel.dtype)}
  return out
