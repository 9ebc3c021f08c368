"""One trial's training as pure functions: no jit, vmap or sharding inside.

The engine vmaps these over a trial axis, jits them with explicit shardings and donation, and runs
them in device-side loops; benchmarks, the timing helper and tests call the very same functions on
one trial. A trial is a `Step` (static: the program, the optimizer settings, the step count) plus
its per-trial arrays: `seed`, `lr`, the data plan (`batch_idx`, `batch_w`, and `pack_row` /
`pack_col` when packed) and whatever the program's `defaults()` lists. One trial in a plain loop:

    state, frozen = init_state(step, pretrained, arrays)
    for i in range(step.total_steps):
      batch = step_batch(data, arrays, i, layout)
      state, metrics = train_step(step, state, frozen, batch, arrays['batch_w'][i], arrays, i)
"""

from __future__ import annotations

import dataclasses
from typing import Any

from flax import struct
import jax
import jax.numpy as jnp
import optax

from jaxtransfer.core import optim
from jaxtransfer.core import packing
from jaxtransfer.core.program import ProgramLike

Arrays = dict[str, Any]


@struct.dataclass
class State:
  """One trial's training state: its trainable params and their optax state."""
  train: Any
  opt: Any


@dataclasses.dataclass(frozen=True)
class Step:
  """What one compiled training program is specialised on (hashable: a jit cache key)."""
  program: ProgramLike
  optim: optim.OptimConfig
  total_steps: int


def init_rng(arrays: Arrays) -> jax.Array:
  """New parameters (head, reinitialized blocks, adapters) draw from the trial's seed."""
  return jax.random.fold_in(jax.random.key(arrays['seed']), 1)


def dropout_rng(arrays: Arrays, step) -> jax.Array:
  """Dropout of step `step`: a function of the seed and the step alone, so a resumed run and a
  trial run beside others draw the same masks."""
  return jax.random.fold_in(jax.random.fold_in(jax.random.key(arrays['seed']), 0), step)


def optimizer(step: Step, train, arrays: Arrays) -> tuple[optax.GradientTransformation, Any]:
  """AdamW for this trial's trainable params: its peak lr, HF's no-decay rule, per-leaf lr
  multipliers (0 = frozen by a per-block mask). Returns (tx, multipliers)."""
  program = step.program
  decay = jax.tree_util.tree_map_with_path(
      lambda p, _: program.decays(tuple(k.key for k in p)), train)
  mult = program.lr_multipliers(train, arrays)
  return optim.make_tx(step.optim, arrays['lr'], step.total_steps, decay, mult), mult


def init_state(step: Step, pretrained, arrays: Arrays) -> tuple[State, Any]:
  """(state, frozen params) of one trial built from the pretrained params."""
  train, frozen = step.program.init(pretrained, arrays, init_rng(arrays))
  tx, _ = optimizer(step, train, arrays)
  return State(train=train, opt=tx.init(train)), frozen


def shared_frozen(program: ProgramLike, pretrained) -> Any:
  """The frozen params every trial of a `shares_frozen` program uses (neutral arrays, any rng)."""
  defaults = {k: jnp.asarray(v) for k, v in program.defaults().items()}
  return program.init(pretrained, defaults, jax.random.key(0))[1]


def train_step(step: Step, state: State, frozen, batch, weights, arrays: Arrays, index):
  """One AdamW step on `batch` (weights 0 mark padding examples); `index` is the global step.

  Returns (state, {'loss', 'grad_norm'}). The gradient is taken of the trainable params only;
  masked-out gradients are zeroed before clipping, as frozen parameters have none. With
  `clip_frozen_grads` (Lee et al.'s code: clip_grad_norm_ over model.parameters()) the frozen
  params are differentiated too, for the clipping norm only (the program must let the backward
  pass reach them: `Program.grads_of_frozen`); `grad_norm` is then that norm.
  """
  rng = dropout_rng(arrays, index)
  tx, mult = optimizer(step, state.train, arrays)
  if step.optim.clip_frozen_grads:
    loss, (grads, frozen_grads) = jax.value_and_grad(step.program.loss, argnums=(0, 1))(
        state.train, frozen, batch, weights, arrays, rng)
    grads = optim.mask_grads(grads, mult)
    norm = jnp.sqrt(optax.tree.norm(grads) ** 2 + optax.tree.norm(frozen_grads) ** 2)
  else:
    loss, grads = jax.value_and_grad(step.program.loss)(state.train, frozen, batch, weights,
                                                        arrays, rng)
    grads = optim.mask_grads(grads, mult)
    norm = optax.tree.norm(grads)
  grads = optim.clip(grads, norm, step.optim.max_grad_norm)
  updates, opt = tx.update(grads, state.opt, state.train)
  new = state.replace(train=optax.apply_updates(state.train, updates), opt=opt)
  return new, {'loss': loss, 'grad_norm': norm}


def eval_logits(program: ProgramLike, state: State, frozen, batch, arrays: Arrays) -> jax.Array:
  """Logits (or regression values) of one trial on `batch`, dropout off."""
  return program.apply(state.train, frozen, batch, arrays, deterministic=True)


def report(program: ProgramLike, state: State, frozen, arrays: Arrays) -> dict[str, jax.Array]:
  """Per-trial numbers computed from the params (sparsity, FLOP fractions, ...)."""
  return program.report(state.train, frozen, arrays)


def take_rows(data, idx, width: int | None):
  """Rows `idx` of the tokenized data (`Encoded.as_dict()`), token arrays cut to `width` columns."""
  return {k: (a[idx][:, :width] if width and a.ndim == 2 else a[idx]) for k, a in data.items()}


def step_batch(data, arrays: Arrays, i, layout):
  """Step i's batch of one trial: its rows `arrays['batch_idx'][i]` of the training data, cut to a
  width (`layout` an int, or None for the data's own), or packed by the trial's plan (`pack_row`,
  `pack_col`) into a `packing.Layout`."""
  idx = arrays['batch_idx'][i]
  if isinstance(layout, packing.Layout):
    rows = take_rows(data, idx, layout.width)
    return packing.pack(rows, arrays['pack_row'][i], arrays['pack_col'][i], layout.rows,
                        layout.width)
  return take_rows(data, idx, layout)
