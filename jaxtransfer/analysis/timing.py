"""Measured wall time of one training step of one trial of a program (what FLOP fractions model)."""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxtransfer import optim


def step_time(program, pretrained, batch: dict[str, np.ndarray], optim_cfg: optim.OptimConfig,
              *, repeats: int = 5, seed: int = 0) -> float:
  """Median seconds of one jitted train step (forward, backward, AdamW update) on `batch`.

  A single trial, compiled once and run once untimed before `repeats` timed steps, so neither
  compilation nor the vmapped trial count of the engine's groups enters the number.
  """
  arrays = {k: jnp.asarray(v) for k, v in program.defaults().items()}
  train, frozen = program.init(pretrained, arrays, jax.random.key(seed))
  labels = jax.tree_util.tree_map_with_path(
      lambda p, _: 'decay' if program.decays(tuple(k.key for k in p)) else 'no_decay', train)
  mult = program.lr_multipliers(train, arrays)
  tx = optim.make_tx(optim_cfg, 1e-4, 1000, labels, mult)
  batch = {k: jnp.asarray(v) for k, v in batch.items()}
  weights = jnp.ones(len(batch['labels']), jnp.float32)

  @jax.jit
  def step(train, opt, frozen, rng):
    _, grads = jax.value_and_grad(program.loss)(train, frozen, batch, weights, arrays, rng)
    updates, opt = tx.update(optim.mask_grads(grads, mult), opt, train)
    return optax.apply_updates(train, updates), opt

  state = jax.block_until_ready(step(train, tx.init(train), frozen, jax.random.key(0)))
  times = []
  for i in range(repeats):
    t0 = time.perf_counter()
    state = jax.block_until_ready(step(*state, frozen, jax.random.key(i + 1)))
    times.append(time.perf_counter() - t0)
  return float(np.median(times))
