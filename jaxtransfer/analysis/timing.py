"""Measured wall time of one training step of one trial of a program (what FLOP fractions model)."""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np

from jaxtransfer import optim
from jaxtransfer import step as step_lib


def step_time(program, pretrained, batch: dict[str, np.ndarray], optim_cfg: optim.OptimConfig,
              *, repeats: int = 5, seed: int = 0) -> float:
  """Median seconds of one jitted train step (forward, backward, AdamW update) on `batch`.

  The engine's own step (step.train_step) for a single trial, compiled once and run once untimed
  before `repeats` timed steps, so neither compilation nor the vmapped trial count of the engine's
  groups enters the number.
  """
  arrays = {k: jnp.asarray(v) for k, v in program.defaults().items()}
  arrays.update(seed=jnp.int32(seed), lr=jnp.float32(1e-4))
  step = step_lib.Step(program, optim_cfg, total_steps=1000)
  state, frozen = step_lib.init_state(step, pretrained, arrays)
  batch = {k: jnp.asarray(v) for k, v in batch.items()}
  weights = jnp.ones(len(batch['labels']), jnp.float32)
  run = jax.jit(lambda st, fr, i: step_lib.train_step(step, st, fr, batch, weights, arrays, i)[0],
                donate_argnums=(0,))
  state = jax.block_until_ready(run(state, frozen, 0))
  times = []
  for i in range(repeats):
    t0 = time.perf_counter()
    state = jax.block_until_ready(run(state, frozen, i + 1))
    times.append(time.perf_counter() - t0)
  return float(np.median(times))
