"""The word-table rows each trial trains: those its training data reaches (Program.embedding_rows).

A fine-tuning trial on 1,000 SST-2 sentences reaches ~3,500 of MiniLM's 30,522 word-table rows.
Dense AdamW still reads and writes all of them every step (the table is half of MiniLM's 22.7M
parameters): a zero gradient row, with zero moments and no weight decay, gets an update of exactly
zero. Training only the reached rows is therefore the same optimizer, with the gradient, the
moments and the update of K rows instead of the vocabulary. The rows come from the trial's
examples (`trial_subset`), a superset of what its steps read, so every id a training batch holds
is one of them; K is the most rows any trial of a program needs, rounded up, so that every group
of the program runs one compiled step.
"""

from __future__ import annotations

import math

import numpy as np

from jaxtransfer.core import program as program_lib
from jaxtransfer.engine import trials as trials_lib

ROUND = 512         # K is a multiple of this: sweeps of similar subsets share one compiled shape
MAX_FRACTION = 0.75  # above this share of the vocabulary the dense table is as cheap


def eligible(program, weight_decay: float) -> bool:
  """Whether `program` trains its word table whole with an optimizer that leaves an untouched row
  exactly where it is: a `Program` whose table trains, with no weight decay on it."""
  if not isinstance(program, program_lib.Program) or program.grads_of_frozen:
    return False
  table = program_lib.WORD_TABLE
  return program.is_trainable(table) and (weight_decay == 0 or not program.decays(table))


def trial_rows(input_ids: np.ndarray, subset: np.ndarray, vocab_size: int) -> np.ndarray:
  """Sorted ids a trial's training batches can hold: those of its examples, of example 0 (the row
  weight-0 padding examples of a partial batch point at) and id 0 (a packed row's padding)."""
  seen = np.zeros(vocab_size, bool)
  seen[input_ids[subset]] = True
  seen[input_ids[0]] = True
  seen[0] = True
  return np.flatnonzero(seen).astype(np.int32)


def rows_of(trial, input_ids: np.ndarray, vocab_size: int, cache: dict) -> np.ndarray:
  """`trial_rows` of a trial's subset, computed once per (seed, size) in `cache`."""
  n = len(input_ids)
  size = trial.train_size if 0 < trial.train_size < n else 0
  key = (trial.seed if size else None, size)
  if key not in cache:
    cache[key] = trial_rows(input_ids, trials_lib.trial_subset(trial.seed, n, size), vocab_size)
  return cache[key]


def table_size(needed: int, vocab_size: int) -> int:
  """K for a program whose trials need at most `needed` rows; 0 (the dense table) when the saving
  is small."""
  k = min(vocab_size, ROUND * math.ceil(needed / ROUND))
  return k if k <= MAX_FRACTION * vocab_size else 0


def padded(rows: np.ndarray, k: int, vocab_size: int) -> np.ndarray:
  """`rows` padded to K with the vocabulary size: an id no batch holds, dropped on the way back."""
  out = np.full(k, vocab_size, np.int32)
  out[:len(rows)] = rows
  return out
