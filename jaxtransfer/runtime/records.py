"""Trial records in a workdir: crash-safe appends to trials.jsonl and reading them back."""

from __future__ import annotations

import fcntl
import json
import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

from absl import logging
import numpy as np

from jaxtransfer.runtime import files


Record = dict[str, Any]

# How far back to look per read when searching for the last newline of a torn file.
_TAIL_CHUNK = 1 << 16



def json_safe(value: Any) -> Any:
  """Returns `value` with NaN/inf floats as None and numpy/JAX scalars and arrays as Python values.

  Strict JSON has no NaN/Infinity literals; writing null keeps every line parseable by any
  JSON reader (pandas, jq, other languages), not just Python's lenient one.
  """
  if isinstance(value, Mapping):
    return {str(k): json_safe(v) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return [json_safe(v) for v in value]
  if isinstance(value, (str, bool, int)) or value is None:
    return value
  if isinstance(value, float):
    return value if math.isfinite(value) else None
  if isinstance(value, np.generic) or (hasattr(value, 'shape') and hasattr(value, 'tolist')):
    # numpy scalars/arrays and jax arrays: tolist() gives plain Python numbers.
    return json_safe(np.asarray(value).tolist())
  raise TypeError(f'trial record value {value!r} of type {type(value).__name__} is not JSON-serializable')


def _encode_records(records: Sequence[Mapping[str, Any]]) -> bytes:
  """One compact JSON object per line, key order preserved, ASCII only (so no raw newlines)."""
  lines = []
  for record in records:
    if not isinstance(record, Mapping):
      raise TypeError(f'a trial record must be a dict, got {type(record).__name__}')
    lines.append(json.dumps(json_safe(record), sort_keys=False, allow_nan=False,
                            separators=(',', ':'), ensure_ascii=True))
  return ''.join(line + '\n' for line in lines).encode('ascii')


def _drop_torn_tail(fd: int) -> None:
  """Truncates the file to just after its last newline if it does not end with one.

  A process killed mid-write can leave a partial line; appending after it would glue the
  next record onto the fragment and corrupt both, so the fragment is cut off first.
  """
  size = os.fstat(fd).st_size
  if size == 0 or os.pread(fd, 1, size - 1) == b'\n':
    return
  end = size
  keep = 0
  while end > 0:
    start = max(0, end - _TAIL_CHUNK)
    chunk = os.pread(fd, end - start, start)
    i = chunk.rfind(b'\n')
    if i >= 0:
      keep = start + i + 1
      break
    end = start
  logging.warning('Dropping a torn last line (%d bytes) from %s before appending.',
                  size - keep, _fd_name(fd))
  os.ftruncate(fd, keep)


def _fd_name(fd: int) -> str:
  try:
    return os.readlink(f'/proc/self/fd/{fd}')
  except OSError:
    return f'fd {fd}'


def append_records(path: str | os.PathLike[str], records: Sequence[Mapping[str, Any]]) -> None:
  """Appends a finished group of trial records to `path` in one write, then fsyncs.

  One `os.write` on an O_APPEND descriptor puts the whole group at the end of the file in one
  piece, so concurrent writers never interleave inside a line. An exclusive flock around the
  torn-tail repair and the write additionally keeps a writer from truncating another one's
  record (the repair reads then truncates, which is not atomic on its own), and covers file
  systems where O_APPEND alone is weaker.
  """
  if not records:
    return
  data = _encode_records(records)
  path = os.fspath(path)
  existed = os.path.exists(path)
  fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
  try:
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
      _drop_torn_tail(fd)
      written = os.write(fd, data)
      # Short writes only happen in unusual conditions (signals, quotas); finish under the
      # lock so the group still ends up contiguous.
      while written < len(data):
        written += os.write(fd, data[written:])
      os.fsync(fd)
    finally:
      fcntl.flock(fd, fcntl.LOCK_UN)
  finally:
    os.close(fd)
  if not existed:
    fsync_dir(os.path.dirname(os.path.abspath(path)))


def fsync_dir(dirname: str) -> None:
  """Makes a newly created or renamed entry durable (the directory itself must be synced)."""
  try:
    fd = os.open(dirname, os.O_RDONLY)
  except OSError:
    return
  try:
    os.fsync(fd)
  except OSError:
    pass  # Some file systems refuse fsync on directories; the data itself is already synced.
  finally:
    os.close(fd)


TRIALS = 'trials.jsonl'
GROUPS_DIR = 'records'  # beside trials.jsonl: one file per group written by independent workers


def write_group(path: str | os.PathLike[str], group_id: str,
                records: Sequence[Mapping[str, Any]]) -> str:
  """Writes a finished group's records to `records/<group_id>.jsonl` beside trials.jsonl `path`,
  whole (a rename): the file of one writer, so workers never contend for a file or an object."""
  target = os.path.join(os.path.dirname(os.path.abspath(path)), GROUPS_DIR, f'{group_id}.jsonl')
  with files.atomic_write(target, 'wb') as f:
    f.write(_encode_records(records))
  return target


def read_records(path: str | os.PathLike[str]) -> list[Record]:
  """Returns every complete, valid record in `path` in file order, then (for a workdir's
  trials.jsonl) those of the per-group files in `records/` beside it (`write_group`); [] if none.

  A torn last line (no trailing newline, from a kill mid-write) is ignored silently. Invalid
  complete lines are skipped with a warning. Of records sharing a trial_id, the first wins.
  """
  groups = os.path.join(os.path.dirname(os.path.abspath(path)), GROUPS_DIR)
  merge = os.path.basename(os.fspath(path)) == TRIALS and os.path.isdir(groups)
  parts = [path] + (sorted(os.path.join(groups, n) for n in os.listdir(groups)
                           if n.endswith('.jsonl')) if merge else [])
  records: list[Record] = []
  seen: set[Any] = set()
  for part in parts:
    records += _read_one(part, seen)
  return records


def _read_one(path, seen: set) -> list[Record]:
  """The records of one file not already `seen` (updated)."""
  try:
    with open(path, 'rb') as f:
      data = f.read()
  except FileNotFoundError:
    return []
  lines = data.split(b'\n')
  torn = lines.pop()  # Empty when the file ends with a newline, as it should.
  if torn.strip():
    logging.info('Ignoring a torn last line (%d bytes) in %s.', len(torn), path)
  records: list[Record] = []
  for lineno, line in enumerate(lines, start=1):
    if not line.strip():
      continue
    try:
      record = json.loads(line)
    except ValueError:  # JSONDecodeError and UnicodeDecodeError both derive from ValueError.
      logging.warning('Skipping invalid line %d in %s: %r', lineno, path, line[:120])
      continue
    if not isinstance(record, dict):
      logging.warning('Skipping line %d in %s: not a JSON object.', lineno, path)
      continue
    trial_id = record.get('trial_id')
    if trial_id is not None:
      if trial_id in seen:
        logging.warning('Duplicate trial_id %r on line %d of %s: keeping the first record.',
                        trial_id, lineno, path)
        continue
      seen.add(trial_id)
    records.append(record)
  return records


def finished_ids(path: str | os.PathLike[str]) -> set[str]:
  """Ids of every trial recorded in `path`, failed ones included (a failed trial is finished)."""
  return {r['trial_id'] for r in read_records(path) if r.get('trial_id') is not None}
