"""The transformer blocks the encoders stack: post-LayerNorm (BERT, RoBERTa, DistilBERT,
ELECTRA, DeBERTa-v2 with its disentangled attention) and pre-norm (ModernBERT)."""

from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxtransfer.models import lora as lora_lib
from jaxtransfer.models import positions as pos_lib
from jaxtransfer.models.dropout import TokenDropout
from jaxtransfer.models.config import EncoderConfig


def dense(config: EncoderConfig, features: int, name: str, dtype, use_bias: bool = True) -> nn.Dense:
  # HF's _init_weights: normal(0, initializer_range) weights, zero biases.
  return nn.Dense(features, name=name, dtype=dtype, param_dtype=jnp.float32, use_bias=use_bias,
                  kernel_init=nn.initializers.normal(config.initializer_range))


def layer_norm(config: EncoderConfig, name: str, dtype) -> nn.LayerNorm:
  # LayerNorm statistics stay in fp32 even under bf16 compute.
  return nn.LayerNorm(epsilon=config.layer_norm_eps, name=name, dtype=dtype, param_dtype=jnp.float32,
                      use_bias=config.norm_biases)


ADAPTER_STYLES = ('houlsby', 'xie')


class Adapter(nn.Module):
  """Houlsby bottleneck adapter with its own residual: x + dropout(up(relu(down(x)))), the dropout
  only when `dropout` > 0 (Xie et al.'s adapters have one of their own; Houlsby's none)."""
  config: EncoderConfig
  size: int
  dtype: Any = jnp.float32
  dropout: float = 0.0

  @nn.compact
  def __call__(self, x, deterministic: bool = True):
    h = jax.nn.relu(dense(self.config, self.size, 'down', self.dtype)(x))
    h = dense(self.config, self.config.hidden_size, 'up', self.dtype)(h)
    return x + TokenDropout(self.dropout)(h, deterministic=deterministic)


def _adapt(module: nn.Module, name: str, x, deterministic: bool):
  """The block's adapter `name` on x (the identity without adapters)."""
  if not module.adapter_size:
    return x
  own = module.config.hidden_dropout if module.adapter_style == 'xie' else 0.0
  return Adapter(module.config, module.adapter_size, module.dtype, own, name=name)(x, deterministic)


def _attention_out(module: nn.Module, a, deterministic: bool):
  """Dropout and the attention adapter on the attention output: Houlsby's adapter after the
  dropout; Xie et al.'s (their modeling_roberta.py) before it."""
  drop = TokenDropout(module.config.hidden_dropout)
  if module.adapter_style == 'xie':
    return drop(_adapt(module, 'attention_adapter', a, deterministic), deterministic=deterministic)
  return _adapt(module, 'attention_adapter', drop(a, deterministic=deterministic), deterministic)


class _DenseParams(nn.Module):
  """A Dense layer's parameters, declared (same names and init as `dense`) but not applied, so the
  block can fuse several layers into one matmul."""
  features: int
  init_std: float
  use_bias: bool = True

  @nn.compact
  def __call__(self, in_features: int):
    kernel = self.param('kernel', nn.initializers.normal(self.init_std),
                        (in_features, self.features), jnp.float32)
    bias = (self.param('bias', nn.initializers.zeros_init(), (self.features,), jnp.float32)
            if self.use_bias else None)
    return kernel, bias


def _qkv(c: EncoderConfig, x, dt, low_rank):
  """Query, key and value as one (H, 3A) matmul: one pass over x, and one matmul (not three plus
  two adds) for the gradient that flows back into x; LoRA targets among them add their low-rank
  path to the fused output. Returns q, k, v (B, S, heads, d) and the three (kernel, bias) pairs."""
  b, s, _ = x.shape
  d = c.attention_head_dim
  layers = [_DenseParams(c.num_heads * d, c.initializer_range, c.attention_biases, name=n)(x.shape[-1])
            for n in ('query', 'key', 'value')]
  kernel = jnp.concatenate([k for k, _ in layers], axis=1).astype(dt)
  qkv = jnp.dot(x.astype(dt), kernel)
  if c.attention_biases:
    qkv = qkv + jnp.concatenate([b_ for _, b_ in layers]).astype(dt)
  qkv = low_rank(x, qkv, ('query', 'key', 'value')).reshape(b, s, 3, c.num_heads, d)
  return qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2], layers


def _attend(c: EncoderConfig, logits, v, attention_bias, deterministic, dt):
  # Softmax in fp32: bf16 logits lose the small differences attention depends on.
  probs = jax.nn.softmax(logits.astype(jnp.float32) + attention_bias, axis=-1).astype(dt)
  probs = TokenDropout(c.attention_dropout, (2, 3))(probs, deterministic=deterministic)
  b, _, s, _ = probs.shape
  return jnp.einsum('bhqk,bkhd->bqhd', probs, v).reshape(b, s, -1)


def _low_rank_fn(module: nn.Module, deterministic: bool):
  """`lora.low_rank` bound to a block's LoRA factors (read from its params, whatever the family's
  shapes) and dropout; the identity on a block without LoRA."""
  lora = module.lora
  if lora is None:
    return lambda x, y, names, drop=None: y
  drop = None
  if lora.dropout:
    drop = functools.partial(TokenDropout(lora.dropout, name='lora_dropout'),
                             deterministic=deterministic)
  return functools.partial(lora_lib.low_rank, lora, module.get_variable('params', 'lora'),
                           drop=drop, dtype=module.dtype)


def _gather_rel(scores, index):
  """scores (B, h, S, R) gathered along R at index (S, S) -> (B, h, S, S)."""
  return jnp.take_along_axis(scores, jnp.broadcast_to(index, scores.shape[:2] + index.shape), axis=-1)


class Block(nn.Module):
  """One post-LayerNorm transformer block (self-attention, then feed-forward); with DeBERTa-v2's
  disentangled attention (content-to-position and position-to-content terms) when configured."""
  config: EncoderConfig
  adapter_size: int = 0
  dtype: Any = jnp.float32
  lora: lora_lib.Lora | None = None  # low-rank updates of some matrices (factors under 'lora')
  adapter_style: str = 'houlsby'     # where the adapters sit: ADAPTER_STYLES, see _attention_out

  @nn.compact
  def __call__(self, x, attention_bias, deterministic: bool = True, rel=None, index=None):
    del index
    c, dt = self.config, self.dtype
    d = c.attention_head_dim
    low_rank = _low_rank_fn(self, deterministic)
    q, k, v, proj = _qkv(c, x, dt, low_rank)
    if c.model_type == 'deberta-v2':
      scale = jnp.sqrt(jnp.float32(d * (1 + len(c.pos_att_type)))).astype(dt)
      logits = jnp.einsum('bqhd,bkhd->bhqk', q, k) / scale
      if c.relative_attention:
        logits = logits + self._relative(q, k, proj, rel, deterministic, low_rank) / scale
    else:
      logits = jnp.einsum('bqhd,bkhd->bhqk', q, k) / jnp.sqrt(d).astype(dt)
    ctx = _attend(c, logits, v, attention_bias, deterministic, dt)
    a = low_rank(ctx, dense(c, c.hidden_size, 'attention_output', dt)(ctx), ('attention_output',))
    a = _attention_out(self, a, deterministic)
    x = layer_norm(c, 'attention_ln', dt)(a + x)
    h = c.activation(low_rank(x, dense(c, c.intermediate_size, 'intermediate', dt)(x),
                              ('intermediate',)))
    o = low_rank(h, dense(c, c.hidden_size, 'output', dt)(h), ('output',))
    o = TokenDropout(c.hidden_dropout)(o, deterministic=deterministic)
    o = _adapt(self, 'output_adapter', o, deterministic)
    return layer_norm(c, 'output_ln', dt)(o + x)

  def _relative(self, q, k, proj, rel, deterministic, low_rank):
    """DeBERTa-v2's c2p + p2c attention scores (unscaled), (B, heads, S, S). The shared key and
    query projections of the positions carry their LoRA updates too, as the merged export's do."""
    c, dt = self.config, self.dtype
    s, d = q.shape[1], c.attention_head_dim
    rel = nn.Dropout(c.hidden_dropout)(rel.astype(dt), deterministic=deterministic)  # pos_dropout

    def project(kb, name):
      y = low_rank(rel, jnp.dot(rel, kb[0].astype(dt)) + kb[1].astype(dt), (name,), drop=None)
      return y.reshape(-1, c.num_heads, d)

    c2p_idx, p2c_idx = pos_lib.deberta_indices(s, c.position_buckets, c.max_relative_positions,
                                               c.relative_span)
    score = 0.0
    if 'c2p' in c.pos_att_type:
      pos_k = (project(proj[1], 'key') if c.share_att_key
               else dense(c, c.num_heads * d, 'pos_key', dt)(rel).reshape(-1, c.num_heads, d))
      score = score + _gather_rel(jnp.einsum('bqhd,rhd->bhqr', q, pos_k), c2p_idx)
    if 'p2c' in c.pos_att_type:
      pos_q = (project(proj[0], 'query') if c.share_att_key
               else dense(c, c.num_heads * d, 'pos_query', dt)(rel).reshape(-1, c.num_heads, d))
      p2c = _gather_rel(jnp.einsum('bkhd,rhd->bhkr', k, pos_q), p2c_idx)  # [.., key, query]
      score = score + jnp.swapaxes(p2c, -1, -2)
    return score


def _rotate_half(x):
  half = x.shape[-1] // 2
  return jnp.concatenate([-x[..., half:], x[..., :half]], axis=-1)


class PreNormBlock(nn.Module):
  """ModernBERT's block: x + attn(norm(x)) with rotary positions and global or sliding-window
  attention, then x + Wo(act(in) * gate) of norm(x); block position 0 skips the first norm."""
  config: EncoderConfig
  adapter_size: int = 0
  dtype: Any = jnp.float32
  lora: lora_lib.Lora | None = None
  adapter_style: str = 'houlsby'

  @nn.compact
  def __call__(self, x, attention_bias, deterministic: bool = True, rel=None, index=None):
    del rel
    c, dt = self.config, self.dtype
    s, d = x.shape[1], c.attention_head_dim
    low_rank = _low_rank_fn(self, deterministic)
    index = jnp.asarray(0 if index is None else index)
    is_global = jnp.asarray(c.global_layers)[index]
    h = jnp.where(index == 0, x.astype(dt), layer_norm(c, 'attention_ln', dt)(x))
    q, k, v, _ = _qkv(c, h, dt, low_rank)
    cos_g, sin_g = pos_lib.rotary(s, d, c.rope_theta_global)
    cos_l, sin_l = pos_lib.rotary(s, d, c.rope_theta_local)
    cos = jnp.where(is_global, cos_g, cos_l)[None, :, None, :].astype(dt)
    sin = jnp.where(is_global, sin_g, sin_l)[None, :, None, :].astype(dt)
    q, k = q * cos + _rotate_half(q) * sin, k * cos + _rotate_half(k) * sin
    logits = jnp.einsum('bqhd,bkhd->bhqk', q, k) / jnp.sqrt(d).astype(dt)
    # Local layers also mask keys outside the window (one where, so masked logits stay finite).
    window = pos_lib.sliding_window(s, c.local_window)[None, None]
    bias = jnp.where(is_global | window, attention_bias, jnp.finfo(jnp.float32).min)
    ctx = _attend(c, logits, v, bias, deterministic, dt)
    a = low_rank(ctx, dense(c, c.hidden_size, 'attention_output', dt, c.attention_biases)(ctx),
                 ('attention_output',))
    a = _attention_out(self, a, deterministic)
    x = x + a
    m = layer_norm(c, 'output_ln', dt)(x)
    wi = low_rank(m, dense(c, 2 * c.intermediate_size, 'intermediate', dt, c.mlp_biases)(m),
                  ('intermediate',))
    inp, gate = wi[..., :c.intermediate_size], wi[..., c.intermediate_size:]
    g = TokenDropout(c.mlp_dropout)(c.activation(inp) * gate, deterministic=deterministic)
    o = low_rank(g, dense(c, c.hidden_size, 'output', dt, c.mlp_biases)(g), ('output',))
    return x + _adapt(self, 'output_adapter', o, deterministic)


def block_module(config: EncoderConfig):
  return PreNormBlock if config.pre_norm else Block
