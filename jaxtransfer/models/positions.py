"""Position tables the encoder families compute from the (static) sequence length, in numpy.

Each mirrors HF transformers' float32 arithmetic step by step: DeBERTa's log buckets go through
`ceil`, where float64 rounding could move a relative position into the neighbouring bucket.
"""

from __future__ import annotations

import numpy as np


def sinusoidal_table(num_positions: int, dim: int) -> np.ndarray:
  """DistilBERT's fixed table (`sinusoidal_pos_embds`): sin on even, cos on odd features."""
  pos = np.arange(num_positions)[:, None]
  enc = pos / np.power(10000, 2 * (np.arange(dim)[None] // 2) / dim)
  out = np.zeros((num_positions, dim), np.float32)
  out[:, 0::2] = np.sin(enc[:, 0::2])
  out[:, 1::2] = np.cos(enc[:, 1::2])
  return out


def log_buckets(rel: np.ndarray, bucket_size: int, max_position: int) -> np.ndarray:
  """DeBERTa-v2's `make_log_bucket_position`: exact within +-bucket_size/2, logarithmic beyond."""
  sign = np.sign(rel)
  mid = bucket_size // 2
  abs_pos = np.where((rel < mid) & (rel > -mid), mid - 1, np.abs(rel))
  ratio = abs_pos.astype(np.float32) / np.float32(mid)
  scale = np.log(np.float32((max_position - 1) / mid))
  log_pos = np.ceil(np.log(ratio) / scale * np.float32(mid - 1)) + np.float32(mid)
  return np.where(abs_pos <= mid, rel, log_pos * sign).astype(np.int64)


def deberta_indices(seq: int, position_buckets: int, max_relative_positions: int, span: int):
  """Gather indices into the (2 span)-row relative embedding table, both (S, S) int32.

  c2p[q, k] picks the position embedding that query q's content attends to at key k;
  p2c[k, q] the one key k's content is attended from by query q (HF gathers it in that layout
  and transposes).
  """
  ids = np.arange(seq)
  rel = ids[:, None] - ids[None, :]
  if position_buckets > 0 and max_relative_positions > 0:
    rel = log_buckets(rel, position_buckets, max_relative_positions)
  c2p = np.clip(rel + span, 0, 2 * span - 1)
  p2c = np.clip(-rel + span, 0, 2 * span - 1)
  return c2p.astype(np.int32), p2c.astype(np.int32)


def rotary(seq: int, head_dim: int, theta: float) -> tuple[np.ndarray, np.ndarray]:
  """RoPE cos and sin, (S, head_dim) float32, halves concatenated as in HF's `rotate_half`."""
  inv_freq = 1.0 / (np.float32(theta) ** (np.arange(0, head_dim, 2, dtype=np.float32) / head_dim))
  freqs = np.arange(seq, dtype=np.float32)[:, None] * inv_freq.astype(np.float32)[None]
  emb = np.concatenate([freqs, freqs], axis=-1)
  return np.cos(emb).astype(np.float32), np.sin(emb).astype(np.float32)


def sliding_window(seq: int, half_window: int) -> np.ndarray:
  """(S, S) bool: |q - k| <= half_window, ModernBERT's local attention."""
  ids = np.arange(seq)
  return np.abs(ids[:, None] - ids[None, :]) <= half_window


def t5_buckets(seq: int, num_buckets: int, max_distance: int) -> np.ndarray:
  """MPNet's `relative_position_bucket` (T5's, bidirectional) of key k - query q, (S, S) int32:
  half the buckets per direction, exact below a quarter of them, logarithmic up to max_distance.

  Packed rows need nothing else: a segment is contiguous, so two of its tokens are as far apart
  as in the padded row, and the attention mask hides the other segments.
  """
  ids = np.arange(seq)
  n = ids[:, None] - ids[None, :]  # HF: -(memory - context)
  half = num_buckets // 2
  out = (n < 0).astype(np.int64) * half
  n = np.abs(n)
  exact = half // 2
  # float32 as torch computes it, truncated toward zero by .to(torch.long).
  ratio = np.maximum(n, 1).astype(np.float32) / np.float32(exact)
  large = exact + (np.log(ratio) / np.float32(np.log(max_distance / exact))
                   * np.float32(half - exact)).astype(np.int64)
  large = np.minimum(large, half - 1)
  return (out + np.where(n < exact, n, large)).astype(np.int32)
