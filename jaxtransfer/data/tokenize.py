"""Tokenized splits: padded numpy arrays, and their on-disk cache (keyed by tokenizer, task, split,
length and the source file's identity)."""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import itertools
import json
import logging
import os
from pathlib import Path
from typing import Any
import zipfile

import numpy as np

from jaxtransfer.data.types import Examples, TaskSpec
from jaxtransfer.errors import UserError
from jaxtransfer.runtime import files


# --------------------------------------------------------------------------------------------
# Tokenization.


@dataclasses.dataclass
class Encoded:
  """Tokenized split as numpy arrays padded to max_seq_length."""
  input_ids: np.ndarray       # (N, S) int32
  attention_mask: np.ndarray  # (N, S) int32
  token_type_ids: np.ndarray  # (N, S) int32
  labels: np.ndarray          # (N,) int32, or float32 for regression

  def __len__(self) -> int:
    return len(self.labels)

  def take(self, idx) -> Encoded:
    """Rows `idx` (indices, a boolean mask or a slice) as a new Encoded."""
    return Encoded(**{k: v[idx] for k, v in self.as_dict().items()})

  def as_dict(self) -> dict[str, np.ndarray]:
    return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}


_ENCODE_CHUNK = 8192  # Rows per tokenizer call: bounds the peak memory of the Python lists.


def encode(examples: Examples, tokenizer, max_seq_length: int) -> Encoded:
  """Tokenizes (text_a[, text_b]) with truncation and padding to max_seq_length.

  Gives what `tokenizer(text_a, text_b, truncation=True, max_length=max_seq_length,
  padding='max_length')` gives; for fast tokenizers it calls their Rust backend directly.
  """
  pair = examples.text_b is not None
  special = tokenizer.num_special_tokens_to_add(pair=pair)
  if max_seq_length <= special:
    raise UserError(
        f'max_seq_length={max_seq_length} leaves no room for text: the tokenizer adds {special} '
        f'special tokens per {"pair" if pair else "sentence"}. Set --config.max_seq_length to '
        f'e.g. 128.')
  limit = getattr(tokenizer, 'model_max_length', None)
  if limit and limit < 1_000_000 and max_seq_length > limit:  # Unset limits are ~1e30.
    raise UserError(
        f'max_seq_length={max_seq_length} exceeds what this tokenizer/model supports '
        f'({limit}). Set --config.max_seq_length to at most {limit}.')
  n = len(examples.text_a)
  out = {k: np.zeros((n, max_seq_length), np.int32)
         for k in ('input_ids', 'attention_mask', 'token_type_ids')}
  backend = _fast_backend(tokenizer)
  for lo in range(0, n, _ENCODE_CHUNK):
    hi = min(n, lo + _ENCODE_CHUNK)
    text_a = examples.text_a[lo:hi]
    text_b = examples.text_b[lo:hi] if pair else None
    if backend is None:
      enc = tokenizer(text_a, text_b, truncation=True, max_length=max_seq_length,
                      padding='max_length', return_tensors='np')
    else:
      enc = _encode_backend(backend, tokenizer, text_a, text_b, max_seq_length)
    for k, v in out.items():
      if k in enc:  # RoBERTa-style tokenizers give no token_type_ids: keep the zeros.
        v[lo:hi] = enc[k]
  return Encoded(labels=np.asarray(examples.labels).copy(), **out)


# Where Hugging Face defines the call of its plain fast tokenizers (and models/tokenizer_file.py
# hands its call to one); classes that rewrite it (LUKE's entities, LayoutLM's boxes, ...) encode
# differently, so they keep their own call.
_HF_CALL = {'__call__': ('PreTrainedTokenizerBase.__call__', 'TokenizerFile.__call__'),
            '_encode_plus': ('TokenizersBackend._encode_plus',)}


def _fast_backend(tokenizer):
  """The `tokenizers.Tokenizer` behind a plain fast tokenizer, else None (slow ones)."""
  backend = getattr(tokenizer, 'backend_tokenizer', None)
  if backend is None or getattr(tokenizer, 'pad_token_id', None) is None:
    return None  # Without a pad token HF's own call raises the error to act on.
  for name, qualnames in _HF_CALL.items():
    method = getattr(type(tokenizer), name, None)
    if method is not None and method.__qualname__ not in qualnames:
      return None
  return backend


def _encode_backend(backend, tokenizer, text_a, text_b, max_seq_length) -> dict[str, np.ndarray]:
  """HF's call on a fast tokenizer without its per-row Python conversion: the Rust backend
  truncates (longest_first, on the tokenizer's truncation side) and numpy pads."""
  batch = list(text_a) if text_b is None else list(zip(text_a, text_b))
  with _backend_settings(backend, tokenizer, max_seq_length):
    encodings = backend.encode_batch(batch, add_special_tokens=True)
  ids = [e.ids for e in encodings]
  lengths = np.fromiter(map(len, ids), np.int64, len(ids))
  cols = np.arange(max_seq_length)
  if tokenizer.padding_side == 'left':
    mask = cols >= max_seq_length - lengths[:, None]
  else:
    mask = cols < lengths[:, None]
  out = {'input_ids': _padded(ids, lengths, mask, tokenizer.pad_token_id)}
  # HF returns these two only when the model takes them (its return_* defaults).
  names = tokenizer.model_input_names
  if 'attention_mask' in names:
    out['attention_mask'] = mask.astype(np.int32)
  if 'token_type_ids' in names:
    out['token_type_ids'] = _padded([e.type_ids for e in encodings], lengths, mask,
                                    tokenizer.pad_token_type_id)
  return out


def _padded(rows: list[list[int]], lengths: np.ndarray, mask: np.ndarray, pad: int) -> np.ndarray:
  """Ragged rows written into the True cells of `mask` (row-major), `pad` elsewhere."""
  out = np.full(mask.shape, pad, np.int32)
  out[mask] = np.fromiter(itertools.chain.from_iterable(rows), np.int32, int(lengths.sum()))
  return out


@contextlib.contextmanager
def _backend_settings(backend, tokenizer, max_seq_length: int):
  """The backend set as HF's call sets it, less padding; its previous settings restored after,
  so code calling the backend itself sees no change."""
  saved = backend.truncation, backend.padding, backend.encode_special_tokens
  backend.enable_truncation(max_seq_length, stride=0, strategy='longest_first',
                            direction=tokenizer.truncation_side)
  backend.no_padding()
  backend.encode_special_tokens = bool(getattr(tokenizer, 'split_special_tokens', False))
  try:
    yield
  finally:
    truncation, padding, backend.encode_special_tokens = saved
    if truncation is None:
      backend.no_truncation()
    else:
      backend.enable_truncation(**truncation)
    if padding is None:
      backend.no_padding()
    else:
      backend.enable_padding(**padding)


# --------------------------------------------------------------------------------------------
# The on-disk cache of tokenized splits.


def default_cache_dir() -> str:
  return os.environ.get('JAXTRANSFER_CACHE') or os.path.expanduser('~/.cache/jaxtransfer')


def cache_path(cache_dir: str, task: TaskSpec, split: str, key: dict[str, Any]) -> Path:
  digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:24]
  return Path(cache_dir) / 'encoded' / f'{task.name}-{split}-{digest}.npz'


def load_cached(path: Path, max_seq_length: int) -> Encoded | None:
  if not path.is_file():
    return None
  try:
    with np.load(path, allow_pickle=False) as z:
      enc = Encoded(**{f.name: z[f.name] for f in dataclasses.fields(Encoded)})
  except (OSError, ValueError, KeyError, EOFError, TypeError, zipfile.BadZipFile) as e:
    logging.warning('Ignoring unreadable cache file %s (%s); re-encoding.', path, e)
    return None
  n = len(enc.labels)
  if enc.labels.ndim != 1 or any(
      a.shape != (n, max_seq_length) for a in (enc.input_ids, enc.attention_mask,
                                                enc.token_type_ids)):
    logging.warning('Ignoring cache file %s with unexpected shapes; re-encoding.', path)
    return None
  return enc


def save_cached(path: Path, enc: Encoded) -> None:
  try:
    with files.atomic_write(path, 'wb') as f:
      np.savez(f, **enc.as_dict())
  except OSError as e:
    # A cache that cannot be written only costs time; the run itself can go on.
    logging.warning('Could not write cache file %s (%s); continuing without it.', path, e)
