"""Where a run's data lives, as its workdir's config.json stores it: portably, with a fingerprint.

An absolute data path ties a committed workdir to the machine that wrote it: `configs/rerun.py`
would fail anywhere else. So local data locations (`data_dir`, `train_file`, `dev_file`) are
stored relative to the workdir, and `data_fingerprint` (sha256 over the files the task reads)
lets a re-run check that the folder it was pointed at holds the same data.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from jaxtransfer.data import custom as custom_data
from jaxtransfer.data import glue
from jaxtransfer.errors import UserError
from jaxtransfer.runtime import config_history

FINGERPRINT = config_history.FINGERPRINT
_digests: dict[tuple[str, int, int], str] = {}  # (path, size, mtime) -> sha256: read each file once


def _is_local(value) -> bool:
  """A path on this machine: not empty (the hub), not `demo` (the built-in set), not a URL."""
  return isinstance(value, str) and value not in ('', 'demo') and '://' not in value


def data_files(values: dict) -> list[Path]:
  """The local files the run's task reads; none for the hub or the built-in demo set."""
  if values.get('task') == custom_data.NAME:
    names = [values.get('train_file'), values.get('dev_file')]
    return [Path(os.path.expanduser(v)) for v in names if _is_local(v)]
  root = values.get('data_dir')
  if not _is_local(root) or values.get('task') not in glue.TASKS:
    return []
  task = glue.get_task(values['task'])
  folder = Path(os.path.expanduser(root)) / task.dirname
  return [folder / f'{split}.tsv' for split in task.splits]


def _digest(path: Path) -> str:
  stat = path.stat()
  key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
  if key not in _digests:
    h = hashlib.sha256()
    with open(path, 'rb') as f:
      for block in iter(lambda: f.read(1 << 20), b''):
        h.update(block)
    _digests[key] = h.hexdigest()
  return _digests[key]


def fingerprint(values: dict) -> str:
  """16 hex digits over the names and contents of the data files; '' when there are none (the
  hub, the demo set) or one is missing (loading the data then names it)."""
  paths = data_files(values)
  if not paths or not all(p.is_file() for p in paths):
    return ''
  h = hashlib.sha256()
  for p in paths:
    h.update(f'{p.name}:{_digest(p)}\n'.encode())
  return h.hexdigest()[:16]


def portable(values: dict, base: str | None) -> dict:
  """`values` as config.json stores them: the fingerprint filled in and, when `base` (a local
  workdir) is given, local data paths relative to it."""
  out = {**values, FINGERPRINT: fingerprint(values)}
  if base is None:
    return out
  for key in config_history.LOCATIONS:
    if _is_local(values.get(key)):
      path = os.path.abspath(os.path.expanduser(values[key]))
      out[key] = os.path.relpath(path, os.path.abspath(base))
  return out


def stored(config, base: str | None) -> dict:
  """The config as config.json holds it (its hash is each record's `config_hash`)."""
  return portable(config_history.resolved(config), base)


def resolve(values: dict, workdir: str) -> dict:
  """config.json's values with relative data paths taken from the workdir (configs/rerun.py)."""
  out = dict(values)
  for key in config_history.LOCATIONS:
    value = values.get(key)
    if _is_local(value) and not os.path.isabs(os.path.expanduser(value)):
      out[key] = os.path.normpath(os.path.join(os.path.abspath(workdir), value))
  return out


def check(config) -> None:
  """UserError when `data_fingerprint` is set (a re-run sets the run's) and the data differs."""
  expected = config.get(FINGERPRINT, '')
  actual = fingerprint(config.to_dict()) if expected else ''
  if expected and actual and actual != expected:
    where = (f'train_file={config.get("train_file")!r}, dev_file={config.get("dev_file")!r}'
             if config.task == custom_data.NAME else f'data_dir={config.data_dir!r}')
    raise UserError(
        f'The data at {where} differs from the data the run was made with (fingerprint {actual}, '
        f'the run has {expected}). Point --config.data_dir (or train_file / dev_file) at the '
        "run's data, or pass --config.data_fingerprint='' to run on this data anyway.")
