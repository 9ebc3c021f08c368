"""Independent workers sharing one workdir: a Slurm array, a Kubernetes indexed Job, any N
processes started with the same command.

Unlike jax.distributed, the workers never talk to each other, so one lost worker stops nothing:
each takes its share of the sweep's groups (group j belongs to worker j mod N), then helps with
the rest. A worker runs a group only under its lease, `leases/<group_id>.json` in the workdir,
which it refreshes while it trains (a heartbeat); a lease whose heartbeat is older than
`lease_timeout` belongs to a dead worker and is taken over, resuming from that group's
checkpoint. Records go to `records/<group_id>.jsonl`, one file (or object) per group, which
`records.read_records` merges with trials.jsonl, so writers never share a file, on local and
shared disks and on gs:// alike.
"""

from __future__ import annotations

import dataclasses
import json
import os
import socket
import time

from absl import logging

from jaxtransfer.errors import UserError

LEASES = 'leases'
# Array indices as the schedulers set them: Slurm (with the array's first index and its size),
# Kubernetes indexed Jobs (the size is the Job's `completions`, given as num_workers).
ENV_INDEX = ('SLURM_ARRAY_TASK_ID', 'JOB_COMPLETION_INDEX')


@dataclasses.dataclass(frozen=True)
class Workers:
  """This process's place among `count` independent workers."""
  index: int
  count: int

  @classmethod
  def from_config(cls, config, env=os.environ) -> Workers | None:
    """None unless the run is split over workers: --config.num_workers > 1, or a scheduler's
    array (SLURM_ARRAY_TASK_COUNT > 1)."""
    count = int(config.get('num_workers', 0) or 0)
    index = int(config.get('worker_index', -1))
    if not count and int(env.get('SLURM_ARRAY_TASK_COUNT', '0') or 0) > 1:
      count = int(env['SLURM_ARRAY_TASK_COUNT'])
    if count <= 1:
      return None
    if index < 0:
      index = _index_from_env(env)
    if not 0 <= index < count:
      raise UserError(
          f'worker_index={index} is outside 0..{count - 1} for num_workers={count}. Give '
          '--config.worker_index=I with 0 <= I < num_workers, or run as a Slurm array / '
          'Kubernetes indexed Job, whose index is read from SLURM_ARRAY_TASK_ID or '
          'JOB_COMPLETION_INDEX.')
    return cls(index, count)

  def order(self, groups: list) -> list:
    """This worker's own groups first, then the others' (started where the next worker's share
    begins), so that a worker which finishes early helps instead of idling."""
    mine = [g for j, g in enumerate(groups) if j % self.count == self.index]
    rest = [g for j, g in enumerate(groups) if j % self.count != self.index]
    shift = sum(1 for j in range(len(groups)) if j % self.count < self.index)
    return mine + rest[shift:] + rest[:shift]


def _index_from_env(env) -> int:
  if env.get('SLURM_ARRAY_TASK_ID'):
    return int(env['SLURM_ARRAY_TASK_ID']) - int(env.get('SLURM_ARRAY_TASK_MIN', '0') or 0)
  if env.get('JOB_COMPLETION_INDEX'):
    return int(env['JOB_COMPLETION_INDEX'])
  raise UserError('num_workers > 1 but no worker index: give --config.worker_index=I, or run as '
                  f'a Slurm array or Kubernetes indexed Job (one of {", ".join(ENV_INDEX)}).')


class Leases:
  """Who runs which group: one small JSON file per group (`owner`, `time` of the last heartbeat)
  in `root`, a local or shared directory or a gs:// prefix (through etils.epath)."""

  def __init__(self, root: str, timeout_s: float, owner: str | None = None):
    self.root, self.timeout_s = str(root).rstrip('/'), float(timeout_s)
    self.owner = owner or f'{socket.gethostname()}:{os.getpid()}'
    self._beat: dict[str, float] = {}

  def _path(self, group_id: str):
    from etils import epath
    return epath.Path(f'{self.root}/{LEASES}/{group_id}.json')

  def _read(self, group_id: str) -> dict | None:
    try:
      return json.loads(self._path(group_id).read_text())
    except (FileNotFoundError, ValueError):
      return None

  def _write(self, group_id: str) -> None:
    path = self._path(group_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f'.{path.name}.{os.getpid()}.tmp'
    tmp.write_text(json.dumps({'owner': self.owner, 'time': time.time()}))
    tmp.replace(path)  # whole, never half-written (an object store writes objects whole anyway)
    self._beat[group_id] = time.time()

  def acquire(self, group_id: str) -> bool:
    """Takes the group's lease if it is free, ours, or stale; False when another worker holds it.
    Two workers taking the same stale lease at once both write, and the one that reads back
    another's name steps aside."""
    held = self._read(group_id)
    if held is not None and held.get('owner') != self.owner:
      age = time.time() - float(held.get('time', 0))
      if age < self.timeout_s:
        return False
      logging.warning('Taking over group %s from %s (no heartbeat for %.0f s).', group_id,
                      held.get('owner'), age)
    self._write(group_id)
    time.sleep(0.05)
    mine = (self._read(group_id) or {}).get('owner') == self.owner
    return mine

  def heartbeat(self, group_id: str) -> None:
    """Refreshes the lease, at most every tenth of the timeout."""
    if time.time() - self._beat.get(group_id, 0.0) >= self.timeout_s / 10:
      self._write(group_id)

  def release(self, group_id: str) -> None:
    path = self._path(group_id)
    if (self._read(group_id) or {}).get('owner') == self.owner:
      path.unlink(missing_ok=True)
    self._beat.pop(group_id, None)
