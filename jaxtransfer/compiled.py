"""The pure step (step.py) as programs over a group of trials: vmapped over the trial axis, jitted
with explicit shardings (trials sharded over every device, shared data replicated) and donation.

One `GroupFunctions` per (program, step count). Token batches are cut to a static width per call
(length buckets, see batching.py) or packed into a static `packing.Layout`: the training chunk is
compiled ahead of time once per (trial count, width or layout), so compile time is measured apart
and `memory_analysis()` is available.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from jaxtransfer import distributed as dist
from jaxtransfer import packing
from jaxtransfer import step as step_lib

# Running sums the training loop keeps per trial between log lines.
STATS = ('bad_step', 'loss_sum', 'gnorm_sum', 'count')


def _frozen(state, frozen_shared):
  return state['frozen'] if 'frozen' in state else frozen_shared


def fresh_stats(bad_step=-1) -> dict[str, jax.Array]:
  return {'bad_step': jnp.asarray(bad_step, jnp.int32), 'loss_sum': jnp.float32(0),
          'gnorm_sum': jnp.float32(0), 'count': jnp.int32(0)}


def init_trial(step: step_lib.Step, pretrained, arrays):
  """One trial's engine state: the step's state, its own frozen params when they differ per
  trial, and the running sums."""
  state, frozen = step_lib.init_state(step, pretrained, arrays)
  if not step.program.shares_frozen:
    state['frozen'] = frozen
  return {**state, **fresh_stats()}


def take_rows(data, idx, width: int | None):
  """Rows `idx` of the (replicated, device-resident) data, token arrays cut to `width` columns."""
  return {k: (a[idx][:, :width] if width and a.ndim == 2 else a[idx]) for k, a in data.items()}


def step_batch(data, arrays, i, layout):
  """Step i's batch of one trial: its rows of the training data, cut to a width, or packed by the
  trial's plan (`pack_row`/`pack_col`) into `layout`."""
  idx = arrays['batch_idx'][i]
  if isinstance(layout, packing.Layout):
    rows = take_rows(data, idx, layout.width)
    return packing.pack(rows, arrays['pack_row'][i], arrays['pack_col'][i], layout.rows,
                        layout.width)
  return take_rows(data, idx, layout)


def train_chunk_trial(step: step_lib.Step, state, frozen_shared, arrays, data, start, stop, reset,
                      layout):
  """Steps [start, stop) of one trial in a device-side loop; batches are gathered on device from
  the replicated training data by the trial's `batch_idx` (`layout`: see `step_batch`). The
  running sums start over when `reset`; non-finite losses are recorded (the first bad step), not
  summed."""
  frozen = _frozen(state, frozen_shared)

  def body(i, st):
    w = arrays['batch_w'][i]
    batch = step_batch(data, arrays, i, layout)
    new, m = step_lib.train_step(step, st, frozen, batch, w, arrays, i)
    finite = jnp.isfinite(m['loss'])
    return {**new,
            'bad_step': jnp.where((st['bad_step'] < 0) & ~finite, i, st['bad_step']),
            'loss_sum': st['loss_sum'] + jnp.where(finite, m['loss'], 0.0),
            'gnorm_sum': st['gnorm_sum'] + jnp.where(finite, m['grad_norm'], 0.0),
            'count': st['count'] + 1}

  fresh = fresh_stats(state['bad_step'])
  stats = {k: jnp.where(reset, fresh[k], state[k]) for k in STATS}
  return jax.lax.fori_loop(start, stop, body, {**state, **stats})


class GroupFunctions:
  """init / train-chunk / predict / report for one group structure, jitted over the trial axis."""

  def __init__(self, step: step_lib.Step, mesh, eval_batch_size: int):
    self.step = step
    program = step.program
    trial, rep = dist.trial_sharding(mesh), dist.replicated(mesh)
    vmap_trials = lambda f: jax.vmap(f, in_axes=(0, None, 0))
    self.init = jax.jit(jax.vmap(lambda p, a: init_trial(step, p, a), in_axes=(None, 0)),
                        out_shardings=trial)
    self.shared_frozen = jax.jit(lambda p: step_lib.shared_frozen(program, p), out_shardings=rep)

    def train(state, frozen_shared, arrays, data, start, stop, reset, layout):
      one = lambda s, a: train_chunk_trial(step, s, frozen_shared, a, data, start, stop, reset,
                                           layout)
      return jax.vmap(one)(state, arrays)

    self.train = jax.jit(train, static_argnums=(7,), donate_argnums=(0,),
                         in_shardings=(trial, rep, trial, rep, None, None, None),
                         out_shardings=trial)

    def predict(state, frozen_shared, arrays, dev, start, width):
      rows = start + jnp.arange(eval_batch_size)
      chunk = take_rows(dev, rows, width)
      return jax.vmap(lambda s, a: step_lib.eval_logits(program, s, _frozen(s, frozen_shared),
                                                        chunk, a))(state, arrays)

    self.predict = jax.jit(predict, static_argnums=(5,),
                           in_shardings=(trial, rep, trial, rep, None), out_shardings=trial)
    self.report = jax.jit(
        vmap_trials(lambda s, f, a: step_lib.report(program, s, _frozen(s, f), a)),
        in_shardings=(trial, rep, trial), out_shardings=trial)
    self._train_compiled: dict[tuple, Any] = {}

  def compiled_train(self, state, frozen_shared, arrays, data, layout):
    """(executable, newly compiled?) of the training chunk for this trial count and layout (a
    width, None for the data's, or a packing.Layout)."""
    key = (jax.tree.leaves(arrays)[0].shape[0], layout)
    if key in self._train_compiled:
      return self._train_compiled[key], False
    exe = self.train.lower(state, frozen_shared, arrays, data, jnp.int32(0), jnp.int32(1),
                           jnp.bool_(True), layout).compile()
    self._train_compiled[key] = exe
    return exe, True
