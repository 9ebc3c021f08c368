"""A small hand-written sentiment set in GLUE SST-2 layout, for the offline demo."""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path

import numpy as np

from jaxtransfer.runtime import files
from jaxtransfer.errors import UserError

# Short review-style sentences written for this project (movies, books, products, restaurants,
# hotels, apps, services). Some are mild and some use negation, so the task is not trivial.
# They ship as package data, one sentence per line (UTF-8), in `demo_set/positive.tsv` and
# `demo_set/negative.tsv`; their order feeds the seeded split, so it is part of the contract.
_DEMO_SET = 'demo_set'


def _load(name: str) -> tuple[str, ...]:
  """The sentences of `demo_set/<name>.tsv`, in file order (read from the installed package)."""
  path = resources.files('jaxtransfer.data') / _DEMO_SET / f'{name}.tsv'
  text = path.read_text(encoding='utf-8')
  if not text.endswith('\n'):
    raise ValueError(f'demo_set/{name}.tsv must end with a newline.')
  sentences = tuple(text[:-1].split('\n'))
  for i, s in enumerate(sentences, 1):
    if not s or s != s.strip() or '\t' in s or '\r' in s:
      raise ValueError(f'demo_set/{name}.tsv line {i}: empty, padded, or has a tab: {s!r}')
  return sentences


POSITIVE: tuple[str, ...] = _load('positive')
NEGATIVE: tuple[str, ...] = _load('negative')

_HEADER = 'sentence\tlabel\n'


def _split(rng: np.random.RandomState, n: int, dev_fraction: float) -> tuple[list, list]:
  """Stratified split of one class: a permutation, the first round(fraction * n) go to dev."""
  perm = rng.permutation(n)
  n_dev = int(round(dev_fraction * n))
  return sorted(perm[n_dev:]), sorted(perm[:n_dev])


def _write_if_changed(path: Path, text: str) -> None:
  """Atomic write that leaves an identical file alone, so its mtime (a cache key) is stable."""
  if path.is_file() and path.read_text(encoding='utf-8') == text:
    return
  with files.atomic_write(path, encoding='utf-8') as f:
    f.write(text)


def write_sst2(dir: str, dev_fraction: float = 0.2, seed: int = 0) -> Path:  # pylint: disable=redefined-builtin
  """Writes `dir/SST-2/train.tsv` and `dev.tsv` (GLUE SST-2 layout) and returns `dir/SST-2`.

  The split is stratified by label and deterministic in `seed`; the rows of each file are
  shuffled so that the labels are interleaved.
  """
  if not 0.0 < dev_fraction < 1.0:
    raise ValueError(f'dev_fraction must be in (0, 1), got {dev_fraction}.')
  rng = np.random.RandomState(seed)
  rows = {'train': [], 'dev': []}
  for label, sentences in ((1, POSITIVE), (0, NEGATIVE)):
    train_idx, dev_idx = _split(rng, len(sentences), dev_fraction)
    rows['train'] += [(sentences[i], label) for i in train_idx]
    rows['dev'] += [(sentences[i], label) for i in dev_idx]
  out = Path(dir) / 'SST-2'
  for split, split_rows in rows.items():
    order = rng.permutation(len(split_rows))
    text = _HEADER + ''.join(f'{split_rows[i][0]}\t{split_rows[i][1]}\n' for i in order)
    _write_if_changed(out / f'{split}.tsv', text)
  return out


def prepare(task_name: str, cache_dir: str) -> str:
  """`data_dir=demo`: writes the built-in set under the cache (once) and returns its GLUE root."""
  if task_name != 'sst2':
    raise UserError(
        f'data_dir=demo is the packaged demo sentiment set, which only serves task sst2, not '
        f'{task_name!r}. Set --config.task=sst2, or point --config.data_dir at GLUE data.')
  data_dir = os.path.join(cache_dir, 'demo')
  try:
    write_sst2(data_dir)
  except OSError as e:
    raise UserError(
        f'Could not write the demo data under {data_dir} ({e}). Set the JAXTRANSFER_CACHE '
        f'environment variable to a writable folder.') from None
  return data_dir
