"""Devices, the trial mesh and multi-host setup (JAX's own runtime: jax.distributed)."""

from __future__ import annotations

import os

import jax
import numpy as np
from absl import logging
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from jaxtransfer.errors import UserError

TRIALS = 'trials'
_initialized = False


def initialize() -> None:
  """Joins the multi-host runtime when this is one process of several; a no-op otherwise.

  TPU VM pods: set JAXTRANSFER_MULTIHOST=1 and JAX finds its peers itself. Elsewhere (GPU nodes,
  the local multi-process twin): JAXTRANSFER_COORDINATOR=host:port, JAXTRANSFER_NUM_PROCESSES,
  JAXTRANSFER_PROCESS_ID. A plain single CPU host never calls jax.distributed.
  """
  global _initialized
  if _initialized:
    return
  env = {k: os.environ.get(f'JAXTRANSFER_{k}') for k in ('COORDINATOR', 'NUM_PROCESSES', 'PROCESS_ID')}
  if any(env.values()):
    try:
      num, pid = int(env['NUM_PROCESSES'] or ''), int(env['PROCESS_ID'] or '')
      assert env['COORDINATOR'] and ':' in env['COORDINATOR'] and 0 <= pid < num
    except (ValueError, AssertionError):
      raise UserError(
          f'Incomplete multi-process settings: JAXTRANSFER_COORDINATOR={env["COORDINATOR"]!r}, '
          f'JAXTRANSFER_NUM_PROCESSES={env["NUM_PROCESSES"]!r}, JAXTRANSFER_PROCESS_ID='
          f'{env["PROCESS_ID"]!r}. Set all three (host:port, N, 0 <= id < N), e.g. with '
          'launch/local_multiprocess.sh, or none for a single process.') from None
    logging.info('Joining %d processes as process %d (coordinator %s).', num, pid,
                 env['COORDINATOR'])
    jax.distributed.initialize(coordinator_address=env['COORDINATOR'], num_processes=num,
                               process_id=pid)
    _initialized = True
  elif os.environ.get('JAXTRANSFER_MULTIHOST') == '1':
    jax.distributed.initialize()
    _initialized = True


def is_main() -> bool:
  """Process 0 writes the workdir; every process computes."""
  return jax.process_index() == 0


def trial_mesh() -> Mesh:
  """One mesh axis, 'trials', over every device of every host."""
  return Mesh(np.asarray(jax.devices()), (TRIALS,))


def trial_sharding(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P(TRIALS))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def put(tree, sharding: NamedSharding):
  """Host numpy arrays (the same on every process) -> global arrays with `sharding`.

  Each process materializes only its addressable shards, so with the trial axis sharded a host
  transfers only its own trials' data.
  """
  def one(a):
    a = np.asarray(a)
    return jax.make_array_from_callback(a.shape, sharding, lambda idx: a[idx])
  return jax.tree.map(one, tree)


def gather(tree):
  """Global arrays -> numpy on every process."""
  if jax.process_count() == 1:
    return jax.tree.map(np.asarray, jax.device_get(tree))
  return jax.tree.map(np.asarray, multihost_utils.process_allgather(tree, tiled=True))


def agree(flag: bool) -> bool:
  """Process 0's `flag` on every process (a decision only process 0 can make, e.g. from files)."""
  if jax.process_count() == 1:
    return bool(flag)
  return bool(multihost_utils.broadcast_one_to_all(np.int32(flag)))


def any_process(flag: bool) -> bool:
  """True on every process when `flag` is true on any (one host's preemption notice stops all of
  them at the same step). A collective: every process calls it at the same point."""
  if jax.process_count() == 1:
    return bool(flag)
  return bool(np.asarray(multihost_utils.process_allgather(np.int32(flag))).any())


def agree_chunk(step_s: float, stop: bool) -> tuple[float, bool]:
  """Process 0's step time (so every process cuts the next chunk of the shared program at the
  same step) and whether any process must stop, in one collective."""
  if jax.process_count() == 1:
    return step_s, bool(stop)
  both = np.asarray(multihost_utils.process_allgather(np.asarray([step_s, float(stop)])))
  return float(both[0, 0]), bool(both[:, 1].any())


def barrier(name: str) -> None:
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices(name)
