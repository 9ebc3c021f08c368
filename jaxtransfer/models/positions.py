"""Position tables the encoder families compute in numpy, as HF transformers does."""

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

