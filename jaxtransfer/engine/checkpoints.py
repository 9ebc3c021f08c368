"""The group in flight on disk: one orbax checkpoint folder per group, removed once its records are
written (a local or remote `gs://` root)."""

from __future__ import annotations

import os
import shutil

from flax import serialization
import jax
import jax.numpy as jnp
import orbax.checkpoint as ocp
from absl import logging
from etils import epath

from jaxtransfer.runtime import distributed as dist


def _without_empty(tree):
  """The state as nested dicts (its dataclasses' fields by name, absent ones dropped), zero-size
  leaves (a program that trains no block still has stacked block arrays of length 0) as None:
  orbax refuses to save them, and there is nothing in them to save."""
  tree = {k: v for k, v in serialization.to_state_dict(tree).items() if v is not None}
  return jax.tree.map(lambda x: None if x.size == 0 else x, tree)


def _with_empty(abstract, restored):
  """`restored` in the structure of `abstract`, its zero-size leaves put back as empty arrays."""
  target = {k: v for k, v in serialization.to_state_dict(abstract).items() if v is not None}
  leaves, treedef = jax.tree.flatten(target)
  got = jax.tree.flatten(restored, is_leaf=lambda x: x is None)[0]
  out = [jax.device_put(jnp.zeros(a.shape, a.dtype), a.sharding) if r is None else r
         for a, r in zip(leaves, got)]
  state = jax.tree.unflatten(treedef, out)
  full = serialization.to_state_dict(abstract)
  return serialization.from_state_dict(abstract, {k: state.get(k) for k in full})


def _check(state, abstract, meta, step: int) -> None:
  """A restored checkpoint agrees with its metadata and with the group: the step it was saved at,
  every shape and dtype."""
  saved = meta.get('step') if isinstance(meta, dict) else None
  if saved != step:
    raise ValueError(f'its metadata says step {saved}')
  for got, want in zip(jax.tree.leaves(state), jax.tree.leaves(abstract)):
    if got.shape != want.shape or got.dtype != want.dtype:
      raise ValueError(f'an array of shape {got.shape} {got.dtype} where the group has '
                       f'{want.shape} {want.dtype}')


class GroupCheckpoints:
  """Save / restore the stacked state of one group, plus JSON metadata (step, periodic evals).

  The last two checkpoints are kept: a torn newest one (a kill mid-upload, a full disk) is set
  aside and the group resumes from the one before, or from step 0 when none is readable.
  """

  KEEP = 2

  def __init__(self, root: str, group_id: str):
    self.root, self.group_id = root, group_id
    self.mngr = ocp.CheckpointManager(f'{root}/{group_id}', options=ocp.CheckpointManagerOptions(
        max_to_keep=self.KEEP, create=True))

  def latest_step(self) -> int | None:
    return self.mngr.latest_step()

  def restore(self, abstract_state, sharding):
    """(state, meta) of the newest readable checkpoint, the state placed with `sharding`; None when
    none is readable (each unreadable one is set aside with a warning)."""
    abstract = jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sharding),
                            abstract_state)
    for step in sorted(self.mngr.all_steps(), reverse=True):
      try:
        restored = self.mngr.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(_without_empty(abstract)), meta=ocp.args.JsonRestore()))
        state = _with_empty(abstract, restored['state'])
        _check(state, abstract, restored['meta'], step)
        return state, restored['meta']
      except Exception as e:  # noqa: BLE001 -- any failure to read it back means: not usable
        self._set_aside(step, e)
    return None

  def _set_aside(self, step: int, error: Exception) -> None:
    """Moves an unreadable checkpoint out of the manager's sight (process 0), kept for a look."""
    src = f'{self.root}/{self.group_id}/{step}'
    logging.warning('Checkpoint %s cannot be restored (%s: %s); set aside as %s.unreadable.', src,
                    type(error).__name__, str(error).splitlines()[0][:200] if str(error) else '',
                    step)
    if dist.is_main():
      path = epath.Path(src)
      target = epath.Path(f'{src}.unreadable')
      if target.exists():
        target.rmtree()
      path.rename(target)
    dist.barrier(f'set-aside-{self.group_id}-{step}')
    self.mngr.reload()

  def save(self, step: int, state, meta: dict) -> None:
    self.mngr.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(_without_empty(state)),
                                                 meta=ocp.args.JsonSave(meta)))
    self.mngr.wait_until_finished()

  def close(self) -> None:
    self.mngr.close()

  def remove(self) -> None:
    """Deletes this group's folder (process 0), and the root when it is left empty."""
    if not dist.is_main():
      return
    if '://' in self.root:
      path = epath.Path(f'{self.root}/{self.group_id}')
      if path.exists():
        path.rmtree()
      return
    shutil.rmtree(os.path.join(self.root, self.group_id), ignore_errors=True)
    try:
      os.rmdir(self.root)  # only when empty
    except OSError:
      pass  # not empty (another group's checkpoints, another worker's), or removed by one
