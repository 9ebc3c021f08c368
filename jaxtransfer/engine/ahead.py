"""Compiling the next program's training step while the current group trains (`compile_ahead`).

A sweep over programs (freeze k blocks, reinitialize past k, tune only some blocks) compiles a new
training step for every program, while the host waits on the device (an accelerator) or leaves
cores idle between steps, evaluations and records (a CPU). The engine hands the training steps
of the next group with another program to one background thread once the current group's first
steps have run; that group adopts the executables when it first needs one, waiting for the
thread if it is still compiling. Only shapes known before the group starts are compiled ahead: a
program without token data, or packed row counts decided over the whole sweep
(`packing.Planner.prepare`); anything else compiles when its group reaches it, as before.

Measured on 2 CPU cores, `configs/freeze.py:demo` (5 programs x 2 seeds, cold XLA cache): 52.4 /
52.5 s without, 49.3 / 48.8 s with, every compile after the first done before its group started.
"""

from __future__ import annotations

import concurrent.futures
import time
from typing import Any, Callable

from absl import logging
import jax

from jaxtransfer.core import packing


def compile_group(fns, group, arrays_np: dict, pretrained, data, planner, no_tokens: bool) -> dict:
  """{key: executable} of the group's training steps whose shapes are known before it starts
  and are not compiled yet (`planner` None: packing is off). Runs in the background thread: it
  plans, traces and compiles, and changes nothing the main thread reads."""
  todo = []
  for layout in layouts(group, arrays_np, planner, no_tokens):
    key = fns.train_key(arrays_np, layout)
    if not fns.has_train(key):
      todo.append((key, layout))
  if not todo:
    return {}
  arrays = jax.eval_shape(lambda a: a, arrays_np)
  state = jax.eval_shape(fns.init, pretrained, arrays)
  frozen = jax.eval_shape(fns.shared_frozen, pretrained) if group.program.shares_frozen else {}
  return {key: fns.compile_train(state, frozen, arrays, data, layout) for key, layout in todo}


def layouts(group, arrays_np: dict, planner, no_tokens: bool) -> list:
  """The layouts the group's steps will use, where they are known before it starts (adding its
  packing plan to `arrays_np`, as the engine's `_pack` will); [] where they are not."""
  if no_tokens:
    return [None]
  if planner is None or not group.program.supports_packing:
    return []  # length buckets: the widths come with the group's own batches
  got = planner.rows_ahead(group.program.hidden_size, group.steps, arrays_np['batch_idx'],
                           arrays_np['batch_w'])
  if got is None:
    return []
  width, counts, row, col = got
  arrays_np.update(pack_row=row, pack_col=col)
  return [packing.Layout(width, rows) for rows in counts]


class AheadCompiler:
  """One background thread and the compiles handed to it, per GroupFunctions."""

  def __init__(self):
    self._pool: concurrent.futures.ThreadPoolExecutor | None = None
    self._jobs: dict[Any, concurrent.futures.Future] = {}

  def submit(self, fns, job: Callable[[], dict]) -> None:
    """Runs `job` (returning {key: executable} for `fns`) in the background, once per fns until
    it is collected."""
    if fns in self._jobs:
      return
    if self._pool is None:
      self._pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix='compile-ahead')

    def timed():
      t0 = time.time()
      return job(), time.time() - t0

    self._jobs[fns] = self._pool.submit(timed)

  def collect(self, fns) -> float:
    """Adds what was compiled ahead for `fns` to its cache; returns the seconds waited for it.
    A compile that failed in the background is logged and left to the group itself."""
    future = self._jobs.pop(fns, None)
    if future is None:
      return 0.0
    t0 = time.time()
    try:
      compiled, seconds = future.result()
    except Exception as e:  # pylint: disable=broad-except
      logging.warning('Compiling ahead failed (%s: %s); the group compiles its own step.',
                      type(e).__name__, e)
      return time.time() - t0
    waited = time.time() - t0
    if compiled:
      fns.adopt(compiled)
      logging.info('Took %d training step(s) compiled ahead (%s) in %.1f s in the background; '
                   'waited %.1f s for them.', len(compiled),
                   ', '.join(str(layout) for _, layout in compiled), seconds, waited)
    return waited

  def close(self) -> None:
    """Drops what is queued; a compile in flight finishes in its thread and is discarded."""
    if self._pool is not None:
      self._pool.shutdown(wait=False, cancel_futures=True)
      self._pool = None
    self._jobs.clear()
