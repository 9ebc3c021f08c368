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


def step_widths(lengths: np.ndarray, batch_idx: np.ndarray, batch_w: np.ndarray, multiple: int,
                max_width: int) -> tuple[np.ndarray, float]:
  """The padded width of every training step of a group, and the padding efficiency.

  `batch_idx`/`batch_w` are the group's (T, steps, B) batches; a step's width is the bucket that
  covers its longest real row over all T trials (weight-0 rows are padding and do not count).
  Padding efficiency = real tokens / computed tokens (T x B x width summed over steps).
  """
  real = np.where(batch_w > 0, lengths[batch_idx], 0)
  widths = np.array([bucket_width(int(n), multiple, max_width) for n in real.max(axis=(0, 2))],
                    np.int32)
  computed = real.shape[0] * real.shape[2] * int(widths.sum())
  return widths, float(real.sum()) / max(computed, 1)


def sorted_by_length(data: dict[str, np.ndarray], batch_size: int, multiple: int):
  """For evaluation: (the rows sorted by length, the permutation, the width of each batch of
  `batch_size` sorted rows). Sorting changes no prediction and groups short rows together."""
  if 'attention_mask' not in data:
    n = len(data['labels'])
    return data, np.arange(n), [None] * -(-n // batch_size)
  lengths = data['attention_mask'].sum(1)
  order = np.argsort(lengths, kind='stable')
  out = {k: v[order] for k, v in data.items()}
  longest = [int(lengths[order[lo:lo + batch_size]].max()) for lo in range(0, len(order), batch_size)]
  max_width = data['attention_mask'].shape[1]
  return out, order, [bucket_width(n, multiple, max_width) for n in longest]
