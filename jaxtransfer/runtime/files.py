"""Writing a file so that readers never see part of it: a temp file beside it, then a rename."""

from __future__ import annotations

import contextlib
import os
import tempfile


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]):
  """Yields a temporary path in `path`'s folder; when the block succeeds it replaces `path` (a
  same-filesystem rename, atomic on POSIX), and on failure it is removed."""
  path = os.fspath(path)
  dirname = os.path.dirname(os.path.abspath(path))
  os.makedirs(dirname, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=dirname, prefix=f'.{os.path.basename(path)}.', suffix='.tmp')
  os.close(fd)
  try:
    yield tmp
    os.chmod(tmp, 0o644)  # mkstemp's 0600 would hide results from other users of a shared workdir
    os.replace(tmp, path)
  finally:
    if os.path.exists(tmp):
      os.unlink(tmp)


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike[str], mode: str = 'w', **open_kwargs):
  """`open(path, mode)` whose content appears at `path` only once the block has succeeded."""
  with atomic_path(path) as tmp:
    with open(tmp, mode, **open_kwargs) as f:
      yield f


def write_csv(path: str | os.PathLike[str], fields, rows, *, extrasaction: str = 'raise') -> None:
  """A CSV with a header of `fields` and one line per mapping in `rows`, written atomically
  (readers see the old file or the whole new one)."""
  import csv
  with atomic_write(path, newline='', encoding='utf-8') as f:
    writer = csv.DictWriter(f, fieldnames=list(fields), extrasaction=extrasaction)
    writer.writeheader()
    writer.writerows(rows)

