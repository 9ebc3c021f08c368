"""Workdirs on local disk or in object storage (gs://...), through a local mirror.

Object stores cannot append to a file, and plots, TensorBoard and the crash-safe trials.jsonl
writer want a POSIX directory. So a remote workdir is mirrored: the mirror is filled from the
remote at start (that is what makes a preempted TPU VM's rerun resume), every file written is
uploaded after each group and at the end, and orbax checkpoints go straight to the remote, which
every host of a pod sees.
"""

from __future__ import annotations

import hashlib
import os
import shutil

from absl import logging

from jaxtransfer.runtime import distributed as dist
from jaxtransfer.runtime import files
from jaxtransfer.errors import UserError

CHECKPOINTS = 'checkpoints'


def is_remote(path: str) -> bool:
  return '://' in str(path)


def _epath(path: str):
  from etils import epath  # orbax's own path library: gs:// through gcsfs (or TensorFlow)
  return epath.Path(path)


class Workdir:
  """Where a run writes: `local` (a directory, the mirror for a remote one) and `checkpoints`."""

  def __init__(self, path: str, mirror_root: str | None = None):
    self.path = str(path).rstrip('/')
    self.remote = self.path if is_remote(self.path) else None
    if self.remote:
      root = mirror_root or os.path.join(os.path.expanduser('~'), '.cache', 'jaxtransfer', 'mirrors')
      digest = hashlib.sha1(self.remote.encode()).hexdigest()[:10]
      self.local = os.path.join(root, f'{os.path.basename(self.remote)}-{digest}')
      self.checkpoints = f'{self.remote}/{CHECKPOINTS}'
    else:
      self.local = self.path
      self.checkpoints = os.path.abspath(os.path.join(self.path, CHECKPOINTS))

  @property
  def data_base(self) -> str | None:
    """What config.json's data paths are relative to: a local workdir itself; None (absolute
    paths) for a remote one, whose mirror's place says nothing about another machine's."""
    return None if self.remote else self.local

  def pull(self, sub: str = '') -> None:
    """Copies the remote workdir's files (not its checkpoints; with `sub`, only that folder's)
    into the mirror."""
    os.makedirs(self.local, exist_ok=True)
    if not self.remote:
      return
    try:
      root = _epath(self.remote)
      if not (root / sub).exists():
        return
      for src in _files(root / sub, skip=root / CHECKPOINTS):
        rel = str(src.relative_to(root))
        dst = os.path.join(self.local, rel)
        if sub and os.path.exists(dst):
          continue  # a finished group's records never change
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        with files.atomic_write(dst, 'wb') as f:
          f.write(src.read_bytes())
    except ImportError as e:
      raise UserError(f'workdir={self.remote!r} needs a filesystem library for that storage '
                      f'({e}). For gs:// install gcsfs (pip install gcsfs), or use a local '
                      'or gcsfuse-mounted directory.') from None
    if not sub:
      logging.info('Mirroring %s in %s.', self.remote, self.local)

  def push(self) -> None:
    """Uploads every file of the mirror (process 0 only; checkpoints are written remotely)."""
    if not self.remote or not dist.is_main() or not os.path.isdir(self.local):
      return  # no mirror: the run discarded the workdir it created (bad input)
    root = _epath(self.remote)
    for dirpath, dirnames, filenames in os.walk(self.local):
      dirnames[:] = [d for d in dirnames if d != CHECKPOINTS]
      for name in filenames:
        if name.endswith('.tmp'):
          continue
        src = os.path.join(dirpath, name)
        dst = root / os.path.relpath(src, self.local)
        dst.parent.mkdir(parents=True, exist_ok=True)
        with open(src, 'rb') as f:
          dst.write_bytes(f.read())


  def discard(self) -> None:
    """Removes the mirror and, for a remote workdir, the remote folder (checkpoint folders
    included): for a workdir this run created that holds no result."""
    shutil.rmtree(self.local, ignore_errors=True)
    if self.remote:
      root = _epath(self.remote)
      if root.exists():
        root.rmtree()


def _files(folder, skip):
  """Every file under `folder` but those under `skip`, listed folder by folder: object stores
  refuse a recursive glob, and the checkpoints (most of the objects) are never listed."""
  for entry in folder.iterdir():
    if entry.is_dir():
      if str(entry) != str(skip):
        yield from _files(entry, skip)
    else:
      yield entry


def exists(path: str) -> bool:
  """Whether the workdir is there already, on local disk or in object storage."""
  if not is_remote(path):
    return os.path.exists(path)
  try:
    return _epath(path).exists()
  except Exception:  # noqa: BLE001 -- no filesystem library: open_workdir says how to fix it
    return False


def open_workdir(path: str) -> Workdir:
  """Resolves the run's workdir and fills a remote one's mirror (process 0), for every process."""
  wd = Workdir(path)
  if dist.is_main():
    wd.pull()
  dist.barrier('workdir-pulled')
  return wd
