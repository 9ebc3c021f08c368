"""The pure step (step.py) as programs over a group of trials: vmapped over the trial axis, jitted
with explicit shardings (trials sharded over every device, shared data replicated) and donation.

One `GroupFunctions` per (program, step count). Token batches are cut to a static width per call
(length buckets, see batching.py) or packed into a static `packing.Layout` (`step.step_batch`):
the training chunk is compiled ahead of time once per (trial count, width or layout), so compile
time is measured apart and `memory_analysis()` is available.
"""

from __future__ import annotations

from typing import Any

from flax import struct
import jax
import jax.numpy as jnp

from jaxtransfer.core import step as step_lib
from jaxtransfer.runtime import distributed as dist


def over_trials(f, in_axes=0):
  """jax.vmap(f, in_axes) over the leading trial axis; for a group of one trial, f itself on the
  arguments with that axis taken off (and put back on its outputs). The same function either way,
  but XLA-CPU lowers a vmapped matmul to a batched dot and copies its weights transposed for it
  on every step, even for a batch of one: a MiniLM training step of 3 packed rows of 80 tokens
  took 153 ms vmapped, 121 ms unvmapped."""
  batched = jax.vmap(f, in_axes=in_axes)

  def call(*args):
    axes = in_axes if isinstance(in_axes, (tuple, list)) else (in_axes,) * len(args)
    mapped = jax.tree.leaves([a for a, ax in zip(args, axes) if ax is not None])
    if not mapped or mapped[0].shape[0] != 1:
      return batched(*args)
    one = [a if ax is None else jax.tree.map(lambda x: x[0], a) for a, ax in zip(args, axes)]
    return jax.tree.map(lambda x: x[None], f(*one))

  return call

@struct.dataclass
class LoopStats:
  """Running sums the training loop keeps per trial between log lines, and its first bad step."""
  bad_step: jax.Array   # first step with a non-finite loss, -1 for none
  loss_sum: jax.Array
  gnorm_sum: jax.Array
  count: jax.Array

  @classmethod
  def fresh(cls, bad_step=-1) -> LoopStats:
    return cls(bad_step=jnp.asarray(bad_step, jnp.int32), loss_sum=jnp.float32(0),
               gnorm_sum=jnp.float32(0), count=jnp.int32(0))


@struct.dataclass
class TrialState:
  """One trial's engine state: the step's state, its own frozen params (None when every trial
  of the program shares them: `Program.shares_frozen`), and the loop's running sums."""
  step: step_lib.State
  frozen: Any
  stats: LoopStats

  def frozen_or(self, shared):
    return shared if self.frozen is None else self.frozen


def init_trial(step: step_lib.Step, pretrained, arrays) -> TrialState:
  state, frozen = step_lib.init_state(step, pretrained, arrays)
  return TrialState(step=state, frozen=None if step.program.shares_frozen else frozen,
                    stats=LoopStats.fresh())


def train_chunk_trial(step: step_lib.Step, state, frozen_shared, arrays, data, start, stop, reset,
                      layout):
  """Steps [start, stop) of one trial in a device-side loop; batches are gathered on device from
  the replicated training data by the trial's `batch_idx` (`layout`: see `step_batch`). The
  running sums start over when `reset`; non-finite losses are recorded (the first bad step), not
  summed."""
  frozen = state.frozen_or(frozen_shared)

  def body(i, carry):
    st, stats = carry
    batch = step_lib.step_batch(data, arrays, i, layout)
    new, m = step_lib.train_step(step, st, frozen, batch, arrays['batch_w'][i], arrays, i)
    finite = jnp.isfinite(m['loss'])
    return new, LoopStats(
        bad_step=jnp.where((stats.bad_step < 0) & ~finite, i, stats.bad_step),
        loss_sum=stats.loss_sum + jnp.where(finite, m['loss'], 0.0),
        gnorm_sum=stats.gnorm_sum + jnp.where(finite, m['grad_norm'], 0.0),
        count=stats.count + 1)

  stats = jax.tree.map(lambda f, s: jnp.where(reset, f, s), LoopStats.fresh(state.stats.bad_step),
                       state.stats)
  st, stats = jax.lax.fori_loop(start, stop, body, (state.step, stats))
  return state.replace(step=st, stats=stats)


class GroupFunctions:
  """init / train-chunk / predict / report for one group structure, jitted over the trial axis."""

  def __init__(self, step: step_lib.Step, mesh, eval_batch_size: int):
    self.step = step
    program = step.program
    trial, rep = dist.trial_sharding(mesh), dist.replicated(mesh)
    vmap_trials = lambda f: over_trials(f, in_axes=(0, None, 0))
    self.init = jax.jit(over_trials(lambda p, a: init_trial(step, p, a), in_axes=(None, 0)),
                        out_shardings=trial)
    self.shared_frozen = jax.jit(lambda p: step_lib.shared_frozen(program, p), out_shardings=rep)

    def train(state, frozen_shared, arrays, data, start, stop, reset, layout):
      one = lambda s, a: train_chunk_trial(step, s, frozen_shared, a, data, start, stop, reset,
                                           layout)
      return over_trials(one)(state, arrays)

    self.train = jax.jit(train, static_argnums=(7,), donate_argnums=(0,),
                         in_shardings=(trial, rep, trial, rep, None, None, None),
                         out_shardings=trial)

    # Prediction stays vmapped even for one trial: measured, the forward pass alone ran faster
    # as batched dots than unvmapped (4 x 872 SST-2 dev sentences, MiniLM: 9.6 vs 10.6 s).
    def logits(state, frozen_shared, arrays, chunk):
      return jax.vmap(lambda s, a: step_lib.eval_logits(
          program, s.step, s.frozen_or(frozen_shared), chunk, a))(state, arrays)

    def predict(state, frozen_shared, arrays, dev, start, width):
      rows = start + jnp.arange(eval_batch_size)
      return logits(state, frozen_shared, arrays, step_lib.take_rows(dev, rows, width))

    self.predict = jax.jit(predict, static_argnums=(5,),
                           in_shardings=(trial, rep, trial, rep, None), out_shardings=trial)

    def predict_packed(state, frozen_shared, arrays, calls, i):
      chunk = jax.tree.map(lambda a: a[i], calls)  # call i of a split packed for inference
      return logits(state, frozen_shared, arrays, chunk)

    self.predict_packed = jax.jit(predict_packed, in_shardings=(trial, rep, trial, rep, None),
                                  out_shardings=trial)
    self.report = jax.jit(
        vmap_trials(lambda s, f, a: step_lib.report(program, s.step, s.frozen_or(f), a)),
        in_shardings=(trial, rep, trial), out_shardings=trial)
    self._train_compiled: dict[tuple, Any] = {}

  def train_key(self, arrays, layout) -> tuple:
    """The training chunk's cache key: (trial count, layout)."""
    return jax.tree.leaves(arrays)[0].shape[0], layout

  def has_train(self, key: tuple) -> bool:
    return key in self._train_compiled

  def compile_train(self, state, frozen_shared, arrays, data, layout):
    """The training chunk compiled for these arguments' shapes (arrays or ShapeDtypeStructs):
    what `compiled_train` caches; callable from another thread (ahead.py)."""
    return self.train.lower(state, frozen_shared, arrays, data, jnp.int32(0), jnp.int32(1),
                            jnp.bool_(True), layout).compile()

  def adopt(self, compiled: dict) -> None:
    """Executables compiled elsewhere ({key: executable}, ahead.py) join the cache."""
    for key, exe in compiled.items():
      self._train_compiled.setdefault(key, exe)

  def compiled_train(self, state, frozen_shared, arrays, data, layout):
    """(executable, newly compiled?) of the training chunk for this trial count and layout (a
    width, None for the data's, or a packing.Layout)."""
    key = self.train_key(arrays, layout)
    if key in self._train_compiled:
      return self._train_compiled[key], False
    exe = self.compile_train(state, frozen_shared, arrays, data, layout)
    self._train_compiled[key] = exe
    return exe, True
