"""AdamW as in the papers (HF/PyTorch semantics), built per trial so hyperparameters can be arrays."""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax


@dataclasses.dataclass(frozen=True)
class OptimConfig:
  """Static optimizer settings shared by every trial of a run."""
  weight_decay: float = 0.0
  adam_b1: float = 0.9
  adam_b2: float = 0.999
  adam_eps: float = 1e-8
  max_grad_norm: float = 1.0  # 0 disables clipping
  warmup_ratio: float = 0.0
  warmup_steps: int = 0

  @classmethod
  def from_config(cls, config) -> OptimConfig:
    return cls(weight_decay=config.weight_decay, adam_b1=config.adam_b1, adam_b2=config.adam_b2,
               adam_eps=config.adam_eps, max_grad_norm=config.max_grad_norm,
               warmup_ratio=config.warmup_ratio, warmup_steps=config.warmup_steps)


def linear_schedule(peak, total_steps, warmup_steps) -> Callable[[Any], Any]:
  """transformers.get_linear_schedule_with_warmup: 0 -> peak over warmup, then linearly to 0."""
  total = jnp.asarray(total_steps, jnp.float32)
  warm = jnp.asarray(warmup_steps, jnp.float32)

  def schedule(count):
    count = jnp.asarray(count, jnp.float32)
    up = count / jnp.maximum(warm, 1.0)
    down = jnp.maximum(0.0, (total - count) / jnp.maximum(total - warm, 1.0))
    return peak * jnp.where(count < warm, up, down)

  return schedule


def scale_by_tree(multipliers) -> optax.GradientTransformation:
  """Multiplies updates leaf-wise by a tree of (broadcastable) multipliers."""
  def update(updates, state, params=None):
    del params
    return jax.tree.map(lambda u, m: u * m.astype(u.dtype), updates, multipliers), state
  return optax.GradientTransformation(lambda params: optax.EmptyState(), update)


def mask_grads(grads, multipliers):
  """Zeroes gradients where the lr multiplier is 0 (blocks frozen by a per-block mask), so they
  neither count towards the clipping norm nor reach Adam's moments."""
  return jax.tree.map(lambda g, m: jnp.where(m != 0, g, 0).astype(g.dtype), grads, multipliers)


def make_tx(cfg: OptimConfig, learning_rate, total_steps: int, decay_labels, multipliers):
  """AdamW with HF semantics: clip the global norm, Adam (bias-corrected, eps outside the sqrt),
  decoupled weight decay on the 'decay' leaves only, then `lr(step)` and per-leaf multipliers.

  `learning_rate` may be a traced per-trial scalar: the transform is rebuilt inside the vmapped
  step, and its state's structure does not depend on the value.
  """
  warmup = cfg.warmup_steps or int(round(cfg.warmup_ratio * total_steps))
  schedule = linear_schedule(learning_rate, total_steps, warmup)
  adam = lambda wd: optax.chain(
      optax.scale_by_adam(b1=cfg.adam_b1, b2=cfg.adam_b2, eps=cfg.adam_eps),
      optax.add_decayed_weights(wd),
      optax.scale_by_learning_rate(schedule),
  )
  # Biases and LayerNorm params are labelled 'no_decay' (HF's run_glue rule).
  tx = optax.multi_transform({'decay': adam(cfg.weight_decay), 'no_decay': adam(0.0)}, decay_labels)
  parts = [optax.clip_by_global_norm(cfg.max_grad_norm)] if cfg.max_grad_norm > 0 else []
  return optax.chain(*parts, tx, scale_by_tree(multipliers))
