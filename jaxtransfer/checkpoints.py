"""The group in flight on disk: one orbax checkpoint folder per group, removed once its records are
written (a local or remote `gs://` root)."""

from __future__ import annotations

import os
import shutil

import jax
import orbax.checkpoint as ocp

from jaxtransfer import distributed as dist


class GroupCheckpoints:
  """Save / restore the stacked state of one group, plus JSON metadata (step, periodic evals)."""

  def __init__(self, root: str, group_id: str):
    self.root, self.group_id = root, group_id
    self.mngr = ocp.CheckpointManager(f'{root}/{group_id}', options=ocp.CheckpointManagerOptions(
        max_to_keep=1, create=True))

  def latest_step(self) -> int | None:
    return self.mngr.latest_step()

  def restore(self, abstract_state, sharding):
    """(state, meta) of the latest checkpoint, the state placed with `sharding`."""
    abstract = jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sharding),
                            abstract_state)
    restored = self.mngr.restore(self.mngr.latest_step(), args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract), meta=ocp.args.JsonRestore()))
    return restored['state'], restored['meta']

  def save(self, step: int, state, meta: dict) -> None:
    self.mngr.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                                 meta=ocp.args.JsonSave(meta)))
    self.mngr.wait_until_finished()

  def close(self) -> None:
    self.mngr.close()

  def remove(self) -> None:
    """Deletes this group's folder (process 0), and the root when it is left empty."""
    if not dist.is_main():
      return
    if '://' in self.root:
      from etils import epath
      path = epath.Path(f'{self.root}/{self.group_id}')
      if path.exists():
        path.rmtree()
      return
    shutil.rmtree(os.path.join(self.root, self.group_id), ignore_errors=True)
    if os.path.isdir(self.root) and not os.listdir(self.root):
      os.rmdir(self.root)
