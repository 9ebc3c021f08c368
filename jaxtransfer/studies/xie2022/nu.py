"""Hidden-state variability ν per layer (Xie et al. 2022), from one streamed frozen forward pass.

For layer ℓ, h_n is the mean of the layer's output over example n's real tokens (no [CLS]/<s>,
[SEP]/</s>, padding). With class means h̄_y and their unweighted mean h̄:

  Σ_w = 1/|Y| Σ_y 1/|G_y| Σ_{n∈G_y} (h_n − h̄_y)(h_n − h̄_y)ᵀ     (biased, every class weighs the same)
  Σ_b = 1/|Y| Σ_y (h̄_y − h̄)(h̄_y − h̄)ᵀ
  ν(ℓ) = 1/|Y| · trace(Σ_w Σ_b⁺)

Σ_b has rank ≤ |Y|−1, so its pseudo-inverse keeps only eigenvalues above a relative tolerance and at
most |Y|−1 of them: NumPy's default pinv cutoff (1e-15, relative) would invert round-off noise and
give ν ~ 1e14 (the authors' torch pinv, with its larger default cutoff, does not). The pass keeps per-class counts, sums and sums of outer products in float64 on the host,
never the hidden states themselves.
"""

from __future__ import annotations

import functools
import math
import time
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from jaxtransfer.engine import batching
from jaxtransfer.models import config as model_config
from jaxtransfer.errors import UserError
from jaxtransfer.models import bert

RTOL = 1e-8  # eigenvalues of Σ_b below RTOL × the largest are round-off, not signal


# ----------------------------------------------------------------------------- the formula


def trace_pinv(sw: np.ndarray, sb: np.ndarray, rank: int, rtol: float = RTOL) -> float:
  """trace(Σ_w Σ_b⁺) with Σ_b⁺ from a symmetric eigendecomposition cut to ≤ `rank` eigenvalues
  above rtol × the largest: Σ_k v_kᵀ Σ_w v_k / λ_k."""
  lam, vec = np.linalg.eigh(np.asarray(sb, np.float64))
  lam, vec = lam[::-1][:rank], vec[:, ::-1][:, :rank]  # largest first; rank ≤ |Y| − 1
  keep = lam > rtol * max(lam[0], 0.0) if lam.size else lam > 0
  if not keep.any():
    return math.inf  # identical class means: no between-class variation at all
  lam, vec = lam[keep], vec[:, keep]
  quad = np.einsum('hk,hj,jk->k', vec, np.asarray(sw, np.float64), vec)
  return float(np.sum(quad / lam))


def nu_from_moments(counts: np.ndarray, sums: np.ndarray, outer: np.ndarray,
                    rtol: float = RTOL) -> np.ndarray:
  """ν per layer from per-class moments: counts (C,), sums (C, L, H), outer (C, L, H, H).

  The moments may be taken about any common shift (covariances and mean differences do not
  depend on it). Classes without examples are left out of Y.
  """
  present = np.asarray(counts) > 0
  if present.sum() < 2:
    raise UserError(f'Variability needs examples of at least two classes; the training data has '
                    f'{int(present.sum())} class(es) with examples (counts {list(counts)}). Use '
                    'a classification task with its training split.')
  n = np.asarray(counts, np.float64)[present]
  mu = sums[present] / n[:, None, None]                                  # (C, L, H)
  cov = outer[present] / n[:, None, None, None] - mu[..., :, None] * mu[..., None, :]
  sw = cov.mean(0)                                                       # (L, H, H)
  d = mu - mu.mean(0)
  sb = np.einsum('clh,clk->lhk', d, d) / len(n)
  c = len(n)
  return np.array([trace_pinv(sw[l], sb[l], c - 1, rtol) / c for l in range(sw.shape[0])])


class Moments:
  """Streaming per-class count, sum and sum of outer products of (L, H) features, in float64."""

  def __init__(self, num_classes: int):
    self.num_classes = num_classes
    self.counts = np.zeros(num_classes, np.int64)
    self.sums = self.outer = self.shift = None

  def add(self, feats, labels, valid=None) -> None:
    """feats (L, B, H) (any float dtype), labels (B,) ints; rows with valid False are skipped."""
    feats = np.asarray(feats, np.float64)
    labels = np.asarray(labels)
    valid = np.ones(labels.shape, bool) if valid is None else np.asarray(valid, bool)
    if not valid.any():
      return
    if self.shift is None:
      # Moments about the first batch's mean: the sums of outer products then hold deviations,
      # not the squared common offset, so Σ = E[xxᵀ] − μμᵀ does not cancel large numbers.
      L, _, H = feats.shape
      self.shift = feats[:, valid].mean(1)
      self.sums = np.zeros((self.num_classes, L, H))
      self.outer = np.zeros((self.num_classes, L, H, H))
    x = feats - self.shift[:, None]
    for y in np.unique(labels[valid]):
      if not 0 <= y < self.num_classes:
        raise ValueError(f'label {y} outside 0..{self.num_classes - 1}')
      xs = x[:, valid & (labels == y)]                                   # (L, b, H)
      self.counts[y] += xs.shape[1]
      self.sums[y] += xs.sum(1)
      self.outer[y] += np.matmul(xs.transpose(0, 2, 1), xs)

  def nu(self, rtol: float = RTOL) -> np.ndarray:
    if self.sums is None:
      raise UserError('No example had a real (non-special) token: variability is undefined.')
    return nu_from_moments(self.counts, self.sums, self.outer, rtol)


def nu_from_features(feats, labels, num_classes: int | None = None, rtol: float = RTOL) -> np.ndarray:
  """ν per layer of in-memory features (L, N, H) or (N, H) (tests, small probes)."""
  feats = np.asarray(feats)
  if feats.ndim == 2:
    feats = feats[None]
  labels = np.asarray(labels)
  m = Moments(int(num_classes or labels.max() + 1))
  m.add(feats, labels)
  return m.nu(rtol)


# ----------------------------------------------------------------------------- the forward pass


def special_ids(tokenizer) -> tuple[int, ...]:
  """Ids of [CLS]/<s>, [SEP]/</s> and padding: not text, so left out of the token means.

  [UNK] and [MASK] are not excluded: an unknown word is still a word of the sentence (the authors'
  code drops RoBERTa ids ≤ 2, i.e. <s>, <pad>, </s>, and keeps <unk> = 3).
  """
  names = ('cls_token_id', 'sep_token_id', 'bos_token_id', 'eos_token_id', 'pad_token_id')
  return tuple(sorted({i for i in (getattr(tokenizer, n, None) for n in names) if i is not None}))


@functools.partial(jax.jit, static_argnames=('config',))
def token_means(config: model_config.EncoderConfig, params, input_ids, attention_mask, token_type_ids,
                exclude) -> tuple[jax.Array, jax.Array]:
  """Per-example mean over real tokens of every hidden state: (L+1, B, H), and the token counts.

  The first position is always left out ([CLS]/<s>), as are `exclude` ids and padding.
  """
  hs = bert.hidden_states(config, params, input_ids, attention_mask, token_type_ids)
  real = (attention_mask > 0) & ~jnp.isin(input_ids, exclude)
  real = real.at[:, 0].set(False)
  count = real.sum(1)
  w = real.astype(hs.dtype) / jnp.maximum(count, 1)[:, None].astype(hs.dtype)
  return jnp.einsum('lbsh,bs->lbh', hs, w, precision=jax.lax.Precision.HIGHEST), count


def variability(config: model_config.EncoderConfig, params, data: dict[str, np.ndarray], num_labels: int,
                exclude: Sequence[int], *, batch_size: int = 128, max_examples: int = 0,
                seed: int = 0, rtol: float = RTOL) -> tuple[np.ndarray, dict[str, Any]]:
  """ν for the embedding output and every block: (L+1,) array, [0] = embeddings, [i] = block i-1.

  One frozen, deterministic forward pass over `data` (input_ids, attention_mask, token_type_ids,
  labels), in batches sorted by length. `max_examples` > 0 uses a random subset of that size.
  Returns (nu, info) with info holding counts and timing.
  """
  labels = np.asarray(data['labels'])
  if labels.dtype.kind == 'f':
    raise UserError('Variability is defined for classification tasks only (class means); these '
                    'labels are real-valued. Choose a classification task (--config.task).')
  n_total = len(labels)
  rows = np.arange(n_total)
  if 0 < max_examples < n_total:
    rows = np.sort(np.random.RandomState(seed).choice(n_total, max_examples, replace=False))
  enc_params = {'embeddings': params['embeddings'], 'blocks': params['blocks']}
  exclude = jnp.asarray(np.array(list(exclude) or [-1], np.int32))
  moments = Moments(num_labels)
  t0 = time.time()
  pending = None
  dropped = 0
  for sel, width in batching.by_length(np.asarray(data['attention_mask']), batch_size, rows):
    pad = batch_size - len(sel)
    take = lambda k: np.pad(np.asarray(data[k])[sel][:, :width], ((0, pad), (0, 0)))
    # Dispatch this batch before accumulating the previous one: device and host work overlap.
    out = token_means(config, enc_params, take('input_ids'), take('attention_mask'),
                      take('token_type_ids'), exclude)
    if pending is not None:
      dropped += _accumulate(moments, *pending)
    pending = (out, labels[sel], len(sel))
  if pending is not None:
    dropped += _accumulate(moments, *pending)
  seconds = time.time() - t0
  if dropped:
    logging.warning('%d examples have no real token after removing special tokens; left out of ν.',
                    dropped)
  info = {'examples': int(moments.counts.sum()), 'class_counts': moments.counts.tolist(),
          'dropped': dropped, 'seconds': seconds}
  return moments.nu(rtol), info


def _accumulate(moments: Moments, out, labels, n: int) -> int:
  feats, count = jax.device_get(out)
  valid = count[:n] > 0
  moments.add(feats[:, :n], labels, valid)
  return int((~valid).sum())
