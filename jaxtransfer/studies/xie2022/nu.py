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


# ----------------------------------------------------------------------------- bootstrap over examples


def resample(labels, seed: int, b: int) -> np.ndarray:
  """Resample b's example indices: each class's examples drawn with replacement, as many as it has
  (so |Y| and each class's count, hence ν's class weights, stay as in the data)."""
  rng = np.random.default_rng([int(seed), int(b)])
  labels = np.asarray(labels)
  return np.concatenate([rng.choice(np.flatnonzero(labels == y), int(np.sum(labels == y)))
                         for y in np.unique(labels)])


def bootstrap_nu(feats, labels, num_resamples: int, seed: int = 0, rtol: float = RTOL,
                 chunk: int = 64) -> np.ndarray:
  """ν per layer of features (L, N, H) on each of `num_resamples` resamples (`resample`): (B, L).

  A resample is a count per example (how often it was drawn), so each one costs two products with
  the features (class means, projections on Σ_b's eigenvectors), never a (H, H) Σ_w."""
  feats, labels = np.asarray(feats), np.asarray(labels)
  n = len(labels)
  counts = np.stack([np.bincount(resample(labels, seed, b), minlength=n)
                     for b in range(num_resamples)]).astype(np.uint16)      # (B, N)
  out = np.empty((num_resamples, feats.shape[0]))
  for l in range(feats.shape[0]):
    x = np.asarray(feats[l], np.float64)
    x = x - x.mean(0)  # a common shift changes neither covariances nor mean differences
    for start in range(0, num_resamples, chunk):
      w = counts[start:start + chunk].astype(np.float64)
      out[start:start + len(w), l] = weighted_nu(x, labels, w, rtol)
  return out


def weighted_nu(x: np.ndarray, labels: np.ndarray, w: np.ndarray, rtol: float = RTOL) -> np.ndarray:
  """ν of one layer's centred features x (N, H) under example weights w (b, N), one row per
  resample, each class's weights summing to its count: (b,). As `trace_pinv`: Σ_b = dᵀd/|Y| with
  d the centred class means, its ≤ |Y|−1 eigenpairs from the SVD of d, and ν = Σ_k v_kᵀ Σ_w v_k /
  λ_k / |Y|, where v_kᵀ Σ_w v_k is the classes' mean weighted variance of the projections x·v_k
  (E_w[p²] − m² per class: two matrix products with x, never an (H, H) Σ_w)."""
  classes = np.unique(labels)
  c = len(classes)
  onehot = (labels[None] == classes[:, None]).astype(np.float64)          # (C, N)
  n_y = onehot.sum(1)
  wy = w[:, None, :] * onehot[None]                                        # (b, C, N)
  b = len(w)  # one BLAS product (a broadcast np.matmul over b is ~15x slower):
  mu = (wy.reshape(b * c, -1) @ x).reshape(b, c, -1) / n_y[None, :, None]  # (b, C, H)
  d = mu - mu.mean(1, keepdims=True)
  _, sing, vt = np.linalg.svd(d, full_matrices=False)
  lam, vt = (sing ** 2 / c)[:, :c - 1], vt[:, :c - 1]                      # (b, K), (b, K, H)
  k = lam.shape[1]
  proj = (x @ vt.reshape(b * k, -1).T).reshape(len(x), b, k)               # (N, b, K)
  second = np.stack([wy[i] @ proj[:, i] ** 2 for i in range(b)])          # (b, C, K): Σ w p²
  means = np.einsum('bch,bkh->bck', mu, vt)                                # projected class means
  quad = (second / n_y[None, :, None] - means ** 2).mean(1)                # (b, K): v_kᵀ Σ_w v_k
  keep = lam > rtol * np.maximum(lam[:, :1], 0.0)
  nu = np.where(keep, quad / np.where(keep, lam, 1.0), 0.0).sum(1) / c
  return np.where(keep.any(1), nu, math.inf)


def interval(samples: np.ndarray, level: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
  """The percentile interval of bootstrap samples (B, L), per layer."""
  tail = 50.0 * (1.0 - level)
  return np.percentile(samples, tail, axis=0), np.percentile(samples, 100.0 - tail, axis=0)


def argmin_fraction(samples: np.ndarray) -> np.ndarray:
  """Per block (the columns after the embedding output's), the fraction of resamples in which it
  has the lowest ν: how often ν's pick would be each block."""
  picks = np.argmin(samples[:, 1:], axis=1)
  return np.bincount(picks, minlength=samples.shape[1] - 1) / len(samples)


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
                seed: int = 0, rtol: float = RTOL,
                keep_features: bool = False) -> tuple[np.ndarray, dict[str, Any]]:
  """ν for the embedding output and every block: (L+1,) array, [0] = embeddings, [i] = block i-1.

  One frozen, deterministic forward pass over `data` (input_ids, attention_mask, token_type_ids,
  labels), in batches sorted by length. `max_examples` > 0 uses a random subset of that size.
  Returns (nu, info) with info holding counts and timing; `keep_features` adds the per-example
  token means (info['features'], (L+1, N, H) float32) and their labels (info['labels']), for the
  bootstrap.
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
  kept = Kept(config, rows, labels) if keep_features else None
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
      dropped += _accumulate(moments, *pending, kept)
    pending = (out, labels[sel], len(sel))
  if pending is not None:
    dropped += _accumulate(moments, *pending, kept)
  seconds = time.time() - t0
  if dropped:
    logging.warning('%d examples have no real token after removing special tokens; left out of ν.',
                    dropped)
  info = {'examples': int(moments.counts.sum()), 'class_counts': moments.counts.tolist(),
          'dropped': dropped, 'seconds': seconds}
  if kept is not None:
    info['features'], info['labels'] = kept.features[:, :kept.size], kept.labels[:kept.size]
  return moments.nu(rtol), info


class Kept:
  """The examples' features that entered ν, in the order they did (float32 on the host)."""

  def __init__(self, config: model_config.EncoderConfig, rows, labels):
    self.features = np.zeros((config.num_layers + 1, len(rows), config.hidden_size), np.float32)
    self.labels = np.zeros(len(rows), np.asarray(labels).dtype)
    self.size = 0

  def add(self, feats, labels) -> None:
    n = len(labels)
    self.features[:, self.size:self.size + n] = feats
    self.labels[self.size:self.size + n] = labels
    self.size += n


def _accumulate(moments: Moments, out, labels, n: int, kept: Kept | None = None) -> int:
  feats, count = jax.device_get(out)
  valid = count[:n] > 0
  moments.add(feats[:, :n], labels, valid)
  if kept is not None:
    kept.add(feats[:, :n][:, valid], np.asarray(labels)[valid])
  return int((~valid).sum())
