"""Measured wall time of one training step of one trial of a program (what FLOP fractions model)."""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np

from jaxtransfer.core import optim
from jaxtransfer.core import step as step_lib


def step_times(programs, pretrained, batch: dict[str, np.ndarray], optim_cfg: optim.OptimConfig,
               *, rounds: int = 3, repeats: int = 5, seed: int = 0) -> list[float]:
  """Median seconds of one jitted train step (forward, backward, AdamW update) of each program on
  `batch`, measured side by side.

  The engine's own step (step.train_step) for a single trial, compiled once and run once untimed
  before each timed stretch, so neither compilation nor the vmapped trial count of the engine's
  groups enters the number. `rounds` passes over all the programs, `repeats` timed steps each: a
  change in the machine's load while measuring falls on every program alike rather than on
  whichever was timed then. One program's state is alive at a time.
  """
  batch = {k: jnp.asarray(v) for k, v in batch.items()}
  weights = jnp.ones(len(batch['labels']), jnp.float32)
  runs = []
  for program in programs:
    arrays = {k: jnp.asarray(v) for k, v in program.defaults().items()}
    arrays.update(seed=jnp.int32(seed), lr=jnp.float32(1e-4))
    step = step_lib.Step(program, optim_cfg, total_steps=1000)
    run = jax.jit(lambda st, fr, i, step=step, arrays=arrays: step_lib.train_step(
        step, st, fr, batch, weights, arrays, i)[0], donate_argnums=(0,))
    runs.append((step, arrays, run))
  times = [[] for _ in programs]
  for _ in range(rounds):
    for (step, arrays, run), out in zip(runs, times):
      state, frozen = step_lib.init_state(step, pretrained, arrays)
      # A copy: the step donates its state, which may hold the pretrained arrays themselves.
      state = jax.tree.map(jnp.copy, state)
      state = jax.block_until_ready(run(state, frozen, 0))  # compiles in the first round
      for i in range(repeats):
        t0 = time.perf_counter()
        state = jax.block_until_ready(run(state, frozen, i + 1))
        out.append(time.perf_counter() - t0)
      del state, frozen
  return [float(np.median(t)) for t in times]


def step_time(program, pretrained, batch: dict[str, np.ndarray], optim_cfg: optim.OptimConfig,
              *, repeats: int = 5, seed: int = 0) -> float:
  """Median seconds of one train step of one program (`step_times` of one program, one round)."""
  return step_times([program], pretrained, batch, optim_cfg, rounds=1, repeats=repeats,
                    seed=seed)[0]
