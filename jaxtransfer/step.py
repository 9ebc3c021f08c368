"""One trial's training as pure functions: no jit, vmap or sharding inside.

The engine vmaps these over a trial axis, jits them with explicit shardings and donation, and runs
them in device-side loops; benchmarks, the timing helper and tests call the very same functions on
one trial. A trial is a `Step` (static: the program, the optimizer settings, the step count) plus
its per-trial arrays: `seed`, `lr` and whatever the program's `defaults()` lists.

State of one trial: {'train': trainable params, 'opt': optax state} (+ 'frozen' when the frozen
params differ per trial, see `Program.shares_frozen`).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import optax

from jaxtransfer import optim
from jaxtransfer.program import ProgramLike

Arrays = dict[str, Any]
State = dict[str, Any]


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
  return {'train': train, 'opt': tx.init(train)}, frozen


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
  tx, mult = optimizer(step, state['train'], arrays)
  if step.optim.clip_frozen_grads:
    loss, (grads, frozen_grads) = jax.value_and_grad(step.program.loss, argnums=(0, 1))(
        state['train'], frozen, batch, weights, arrays, rng)
    grads = optim.mask_grads(grads, mult)
    norm = jnp.sqrt(optax.tree.norm(grads) ** 2 + optax.tree.norm(frozen_grads) ** 2)
    if step.optim.max_grad_norm > 0:
      grads = optim.clip_by_norm(grads, norm, step.optim.max_grad_norm)
  else:
    loss, grads = jax.value_and_grad(step.program.loss)(state['train'], frozen, batch, weights,
                                                        arrays, rng)
    grads = optim.mask_grads(grads, mult)
    norm = optax.tree.norm(grads)
  updates, opt = tx.update(grads, state['opt'], state['train'])
  new = {**state, 'train': optax.apply_updates(state['train'], updates), 'opt': opt}
  return new, {'loss': loss, 'grad_norm': norm}


def eval_logits(program: ProgramLike, state: State, frozen, batch, arrays: Arrays) -> jax.Array:
  """Logits (or regression values) of one trial on `batch`, dropout off."""
  return program.apply(state['train'], frozen, batch, arrays, deterministic=True)


def report(program: ProgramLike, state: State, frozen, arrays: Arrays) -> dict[str, jax.Array]:
  """Per-trial numbers computed from the params (sparsity, FLOP fractions, ...)."""
  return program.report(state['train'], frozen, arrays)
