"""Which examples go in which batch, and how wide each batch is padded: one place for all of it.

Padding columns past a batch's longest row change nothing (they are masked), so every batch is cut
to a bucket width: its longest row rounded up to a multiple, capped at the data's width. Few
distinct widths means few compiled shapes.
"""

from __future__ import annotations

import math

import numpy as np


def bucket_width(longest: int, multiple: int, max_width: int) -> int:
  """The smallest multiple of `multiple` covering `longest` (at least one multiple), capped."""
  return int(min(max_width, max(multiple, math.ceil(longest / multiple) * multiple)))


def trim_padding(data: dict[str, np.ndarray], multiple: int = 8) -> dict[str, np.ndarray]:
  """Drops all-padding columns beyond the longest example (rounded up): same outputs, less work."""
  if 'attention_mask' not in data:
    return data
  mask = data['attention_mask']
  width = bucket_width(int(mask.sum(1).max()), multiple, mask.shape[1])
  return {k: (v[:, :width] if v.ndim == 2 and k != 'labels' else v) for k, v in data.items()}


def by_length(mask: np.ndarray, batch_size: int, rows=None, multiple: int = 16):
  """(row indices, width) batches of `rows` (default all) sorted by length, for inference passes
  whose order does not matter: similar lengths share a batch, so little is padded."""
  rows = np.arange(len(mask)) if rows is None else np.asarray(rows, np.int64)
  lengths = mask[rows].sum(1)
  order = rows[np.argsort(lengths, kind='stable')]
  for lo in range(0, len(order), batch_size):
    idx = order[lo:lo + batch_size]
    yield idx, bucket_width(int(mask[idx].sum(1).max()), multiple, mask.shape[1])
