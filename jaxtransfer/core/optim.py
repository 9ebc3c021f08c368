"""AdamW as in the papers (HF/PyTorch semantics) from optax parts, built per trial so that the peak
learning rate and per-parameter multipliers can be traced arrays."""

from __future__ import annotations

import dataclasses

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
  clip_frozen_grads: bool = False  # the clipping norm also counts the frozen params' gradients
  warmup_ratio: float = 0.0
  warmup_steps: int = 0

  @classmethod
  def from_config(cls, config) -> OptimConfig:
    return cls(weight_decay=config.weight_decay, adam_b1=config.adam_b1, adam_b2=config.adam_b2,
               adam_eps=config.adam_eps, max_grad_norm=config.max_grad_norm,
               clip_frozen_grads=config.get('clip_frozen_grads', False),
               warmup_ratio=config.warmup_ratio, warmup_steps=config.warmup_steps)

  def warmup(self, total_steps: int) -> int:
    return self.warmup_steps or int(round(self.warmup_ratio * total_steps))


def linear_schedule(peak, total_steps: int, warmup_steps: int) -> optax.Schedule:
  """transformers.get_linear_schedule_with_warmup: 0 -> peak over warmup, then linearly to 0."""
  decay = optax.linear_schedule(peak, 0.0, max(total_steps - warmup_steps, 1))
  if not warmup_steps:
    return decay
  return optax.join_schedules([optax.linear_schedule(0.0, peak, warmup_steps), decay],
                              [warmup_steps])


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


def clip(grads, norm, max_norm: float):
  """Both clipping rules, as the papers' code clips: torch.nn.utils.clip_grad_norm_ with `norm`
  computed by the caller, over the trainable gradients (HF Trainer) or over every parameter's,
  frozen ones included (Lee et al.'s code: `clip_frozen_grads`): grads x min(1, max_norm /
  (norm + 1e-6)). `max_norm` 0 = no clipping."""
  if max_norm <= 0:
    return grads
  scale = jnp.minimum(1.0, max_norm / (norm + 1e-6))
  return jax.tree.map(lambda g: (g * scale).astype(g.dtype), grads)


def make_tx(cfg: OptimConfig, learning_rate, total_steps: int, decay_mask, multipliers):
  """`optax.adamw` (bias-corrected, eps outside the sqrt, decoupled weight decay only where
  `decay_mask` is True: HF's no-decay rule), then per-leaf multipliers. The step clips the
  gradients before this chain (`clip`), since one clipping rule needs the frozen params' norm.

  `learning_rate` may be a traced per-trial scalar: the transform is rebuilt inside the vmapped
  step, and its state's structure does not depend on the value.
  """
  schedule = linear_schedule(learning_rate, total_steps, cfg.warmup(total_steps))
  adamw = optax.adamw(schedule, b1=cfg.adam_b1, b2=cfg.adam_b2, eps=cfg.adam_eps,
                      weight_decay=cfg.weight_decay, mask=decay_mask)
  return optax.chain(adamw, scale_by_tree(multipliers))
