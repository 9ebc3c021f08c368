"""BERT/RoBERTa encoder in Flax with the L blocks stacked on a leading axis and applied by scan."""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

Params = dict[str, Any]

# The names every study addresses a block's parameters by (masks, closeness, LayerNorm-only tuning).
BLOCK_MATRICES = ('query', 'key', 'value', 'attention_output', 'intermediate', 'output')
BLOCK_LAYER_NORMS = ('attention_ln', 'output_ln')

_ACTIVATIONS = {
    'gelu': functools.partial(jax.nn.gelu, approximate=False),  # HF "gelu" is the exact erf form
    'gelu_new': functools.partial(jax.nn.gelu, approximate=True),
    'gelu_pytorch_tanh': functools.partial(jax.nn.gelu, approximate=True),
    'relu': jax.nn.relu,
}


@dataclasses.dataclass(frozen=True)
class EncoderConfig:
  """The architecture, read from an HF `config.json` (hashable: it is static in every jit)."""
  vocab_size: int
  hidden_size: int = 768
  num_layers: int = 12
  num_heads: int = 12
  intermediate_size: int = 3072
  max_position_embeddings: int = 512
  type_vocab_size: int = 2
  layer_norm_eps: float = 1e-12
  hidden_act: str = 'gelu'
  initializer_range: float = 0.02
  hidden_dropout: float = 0.1
  attention_dropout: float = 0.1
  pad_token_id: int = 0
  model_type: str = 'bert'  # 'bert' or 'roberta' (positions offset past the padding index)
  has_pooler: bool = True

  @classmethod
  def from_hf(cls, hf: dict[str, Any], has_pooler: bool = True) -> EncoderConfig:
    model_type = hf.get('model_type', 'bert')
    if model_type in ('xlm-roberta', 'camembert'):
      model_type = 'roberta'
    return cls(
        vocab_size=hf['vocab_size'],
        hidden_size=hf['hidden_size'],
        num_layers=hf['num_hidden_layers'],
        num_heads=hf['num_attention_heads'],
        intermediate_size=hf['intermediate_size'],
        max_position_embeddings=hf.get('max_position_embeddings', 512),
        type_vocab_size=hf.get('type_vocab_size', 2),
        layer_norm_eps=hf.get('layer_norm_eps', 1e-12),
        hidden_act=hf.get('hidden_act', 'gelu'),
        initializer_range=hf.get('initializer_range', 0.02),
        hidden_dropout=hf.get('hidden_dropout_prob', 0.1),
        attention_dropout=hf.get('attention_probs_dropout_prob', 0.1),
        pad_token_id=hf.get('pad_token_id', 0) or 0,
        model_type=model_type,
        has_pooler=has_pooler,
    )

  def to_hf(self) -> dict[str, Any]:
    """The HF config keys this architecture determines (merged over the source config on export)."""
    return {
        'model_type': self.model_type,
        'vocab_size': self.vocab_size,
        'hidden_size': self.hidden_size,
        'num_hidden_layers': self.num_layers,
        'num_attention_heads': self.num_heads,
        'intermediate_size': self.intermediate_size,
        'max_position_embeddings': self.max_position_embeddings,
        'type_vocab_size': self.type_vocab_size,
        'layer_norm_eps': self.layer_norm_eps,
        'hidden_act': self.hidden_act,
        'initializer_range': self.initializer_range,
        'hidden_dropout_prob': self.hidden_dropout,
        'attention_probs_dropout_prob': self.attention_dropout,
        'pad_token_id': self.pad_token_id,
    }

  @property
  def activation(self):
    if self.hidden_act not in _ACTIVATIONS:
      raise ValueError(f'Unsupported hidden_act {self.hidden_act!r}; supported: {sorted(_ACTIVATIONS)}')
    return _ACTIVATIONS[self.hidden_act]


_MAX_TOKENS = 1 << 15  # token positions per row; an attention entry (q, k) is keyed q * this + k


def token_keep_mask(rng, keep: float, shape, token_axes: tuple[int, ...]) -> jax.Array:
  """Bernoulli(keep) mask of `shape` whose entry at each position depends only on `rng` and that
  position's indices, never on the sizes along `token_axes`.

  Batches are padded to a width that varies with their longest row (and, in a vmapped group, with
  the other trials' rows): a mask drawn for the whole shape would change with that width and make
  a trial's result depend on its neighbours. Each token position (or attention entry) gets its own
  key instead, and the mask over the remaining axes is drawn from it.
  """
  sizes = [shape[a] for a in token_axes]
  rest = tuple(n for a, n in enumerate(shape) if a not in token_axes)
  grids = jnp.meshgrid(*[jnp.arange(n) for n in sizes], indexing='ij')
  index = grids[0] if len(grids) == 1 else grids[0] * _MAX_TOKENS + grids[1]
  keys = jax.vmap(lambda i: jax.random.fold_in(rng, i))(index.ravel())
  mask = jax.vmap(lambda k: jax.random.bernoulli(k, keep, rest))(keys).reshape(*sizes, *rest)
  order = list(token_axes) + [a for a in range(len(shape)) if a not in token_axes]
  return jnp.transpose(mask, [order.index(a) for a in range(len(shape))])


class TokenDropout(nn.Module):
  """Inverted dropout (as nn.Dropout) with a mask that does not depend on the padded width."""
  rate: float
  token_axes: tuple[int, ...] = (1,)

  @nn.compact
  def __call__(self, x, deterministic: bool = True):
    if deterministic or self.rate == 0:
      return x
    keep = 1.0 - self.rate
    mask = token_keep_mask(self.make_rng('dropout'), keep, x.shape, self.token_axes)
    return jnp.where(mask, x / keep, 0).astype(x.dtype)


def _dense(config: EncoderConfig, features: int, name: str, dtype) -> nn.Dense:
  # HF's _init_weights: normal(0, initializer_range) weights, zero biases.
  return nn.Dense(features, name=name, dtype=dtype, param_dtype=jnp.float32,
                  kernel_init=nn.initializers.normal(config.initializer_range))


def _layer_norm(config: EncoderConfig, name: str, dtype) -> nn.LayerNorm:
  # LayerNorm statistics stay in fp32 even under bf16 compute.
  return nn.LayerNorm(epsilon=config.layer_norm_eps, name=name, dtype=dtype, param_dtype=jnp.float32)


class Embeddings(nn.Module):
  """Word + learned absolute position + token type embeddings, then LayerNorm and dropout."""
  config: EncoderConfig
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, input_ids, token_type_ids, deterministic: bool = True):
    c = self.config
    init = nn.initializers.normal(c.initializer_range)
    embed = lambda n, name: nn.Embed(n, c.hidden_size, embedding_init=init, name=name,
                                     param_dtype=jnp.float32)
    if c.model_type == 'roberta':
      # fairseq positions: count real tokens, starting after the padding index; padding keeps it.
      real = (input_ids != c.pad_token_id).astype(jnp.int32)
      positions = jnp.cumsum(real, axis=1) * real + c.pad_token_id
    else:
      positions = jnp.broadcast_to(jnp.arange(input_ids.shape[1]), input_ids.shape)
    x = (embed(c.vocab_size, 'word_embeddings')(input_ids)
         + embed(c.max_position_embeddings, 'position_embeddings')(positions)
         + embed(c.type_vocab_size, 'token_type_embeddings')(token_type_ids))
    x = _layer_norm(c, 'LayerNorm', self.dtype)(x)
    return TokenDropout(c.hidden_dropout)(x, deterministic=deterministic)


class Adapter(nn.Module):
  """Houlsby bottleneck adapter with its own residual: x + up(relu(down(x)))."""
  config: EncoderConfig
  size: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    h = jax.nn.relu(_dense(self.config, self.size, 'down', self.dtype)(x))
    return x + _dense(self.config, self.config.hidden_size, 'up', self.dtype)(h)


class _DenseParams(nn.Module):
  """A Dense layer's parameters, declared (same names and init as `_dense`) but not applied, so the
  block can fuse several layers into one matmul."""
  features: int
  init_std: float

  @nn.compact
  def __call__(self, in_features: int):
    kernel = self.param('kernel', nn.initializers.normal(self.init_std),
                        (in_features, self.features), jnp.float32)
    bias = self.param('bias', nn.initializers.zeros_init(), (self.features,), jnp.float32)
    return kernel, bias


class Block(nn.Module):
  """One post-LayerNorm transformer block (self-attention, then feed-forward)."""
  config: EncoderConfig
  adapter_size: int = 0
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, attention_bias, deterministic: bool = True):
    c, dt = self.config, self.dtype
    b, s, _ = x.shape
    head_dim = c.hidden_size // c.num_heads
    # Query, key and value as one (H, 3H) matmul: one pass over x, and one matmul (not three plus
    # two adds) for the gradient that flows back into x.
    qkv = [_DenseParams(c.hidden_size, c.initializer_range, name=n)(x.shape[-1])
           for n in ('query', 'key', 'value')]
    kernel = jnp.concatenate([k for k, _ in qkv], axis=1).astype(dt)
    bias = jnp.concatenate([b_ for _, b_ in qkv]).astype(dt)
    qkv = (jnp.dot(x.astype(dt), kernel) + bias).reshape(b, s, 3, c.num_heads, head_dim)
    q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]
    logits = jnp.einsum('bqhd,bkhd->bhqk', q, k) / jnp.sqrt(head_dim).astype(dt)
    # Softmax in fp32: bf16 logits lose the small differences attention depends on.
    probs = jax.nn.softmax(logits.astype(jnp.float32) + attention_bias, axis=-1).astype(dt)
    probs = TokenDropout(c.attention_dropout, (2, 3))(probs, deterministic=deterministic)
    ctx = jnp.einsum('bhqk,bkhd->bqhd', probs, v).reshape(b, s, c.hidden_size)
    a = _dense(c, c.hidden_size, 'attention_output', dt)(ctx)
    a = TokenDropout(c.hidden_dropout)(a, deterministic=deterministic)
    if self.adapter_size:
      a = Adapter(c, self.adapter_size, dt, name='attention_adapter')(a)
    x = _layer_norm(c, 'attention_ln', dt)(a + x)
    h = c.activation(_dense(c, c.intermediate_size, 'intermediate', dt)(x))
    o = _dense(c, c.hidden_size, 'output', dt)(h)
    o = TokenDropout(c.hidden_dropout)(o, deterministic=deterministic)
    if self.adapter_size:
      o = Adapter(c, self.adapter_size, dt, name='output_adapter')(o)
    return _layer_norm(c, 'output_ln', dt)(o + x)


# ----------------------------------------------------------------------------- functional API


def attention_bias(attention_mask) -> jax.Array:
  """Additive (B, 1, 1, S) bias: 0 for real tokens, a large negative number for padding."""
  return jnp.where(attention_mask[:, None, None, :] > 0, 0.0, jnp.finfo(jnp.float32).min)


def embed(config: EncoderConfig, params: Params, input_ids, token_type_ids=None, *,
          deterministic: bool = True, rng=None, dtype=jnp.float32) -> jax.Array:
  if token_type_ids is None:
    token_type_ids = jnp.zeros_like(input_ids)
  # Blocks fold in their index (0..L-1); the embeddings take a key no block index can reach.
  rngs = None if deterministic else {'dropout': jax.random.fold_in(rng, 2**31 - 1)}
  return Embeddings(config, dtype).apply({'params': params}, input_ids, token_type_ids,
                                         deterministic, rngs=rngs)


def apply_blocks(config: EncoderConfig, blocks: Params, x, attention_mask, *, first_index: int = 0,
                 deterministic: bool = True, rng=None, adapter_size: int = 0,
                 dtype=jnp.float32, collect: bool = False, remat: bool = False):
  """Runs the stacked `blocks` (leading axis n) over x with one lax.scan.

  `first_index` is the global index of blocks[0]: dropout keys are folded from it, so a block draws
  the same dropout mask whether it runs in one scan or in a frozen-prefix/trainable-suffix split.
  `remat` keeps only each block's input for the backward pass and recomputes the block there
  (one more forward pass, ~1/3 more compute, for activation memory of one (B, S, H) per block
  instead of ~16 plus the attention maps); the dropout masks are recomputed identically.
  Returns the final hidden state, and with `collect` also every block's output (n, B, S, H).
  """
  n = jax.tree.leaves(blocks)[0].shape[0]
  bias = attention_bias(attention_mask)
  module = Block(config, adapter_size, dtype)

  def body(h, xs):
    p, i = xs
    rngs = None if deterministic else {'dropout': jax.random.fold_in(rng, i)}
    h = module.apply({'params': p}, h, bias, deterministic, rngs=rngs)
    return h, (h if collect else None)

  if remat:
    body = jax.checkpoint(body, prevent_cse=False)  # prevent_cse is not needed inside scan
  x, outs = jax.lax.scan(body, x, (blocks, first_index + jnp.arange(n)))
  return (x, outs) if collect else x


def take_blocks(blocks: Params, start: int, stop: int) -> Params:
  """Static slice [start, stop) of the stacked blocks (blocks outside it are never computed)."""
  return jax.tree.map(lambda p: p[start:stop], blocks)


def hidden_states(config: EncoderConfig, params: Params, input_ids, attention_mask,
                  token_type_ids=None, *, num_blocks: int | None = None, deterministic: bool = True,
                  rng=None, dtype=jnp.float32) -> jax.Array:
  """Every hidden state, (n+1, B, S, H): [0] the embedding output, [i] the output of block i-1.

  `num_blocks` (default all L) stops after the first n blocks; the blocks above are not computed.
  """
  n = config.num_layers if num_blocks is None else num_blocks
  if not 0 <= n <= config.num_layers:
    raise ValueError(f'num_blocks={n} is outside 0..{config.num_layers}')
  x = embed(config, params['embeddings'], input_ids, token_type_ids, deterministic=deterministic,
            rng=rng, dtype=dtype)
  if n == 0:
    return x[None]
  _, outs = apply_blocks(config, take_blocks(params['blocks'], 0, n), x, attention_mask,
                         deterministic=deterministic, rng=rng, dtype=dtype, collect=True)
  return jnp.concatenate([x[None], outs], axis=0)


def pool(config: EncoderConfig, pooler: Params, x, dtype=jnp.float32) -> jax.Array:
  """BERT's pooler: tanh(dense(first token))."""
  return jnp.tanh(_dense(config, config.hidden_size, 'pooler', dtype).apply({'params': pooler}, x[:, 0]))


# ----------------------------------------------------------------------------- random init


def init_params(config: EncoderConfig, rng) -> Params:
  """A randomly initialised encoder in HF's scheme (normal(initializer_range), zero bias, LN 1/0)."""
  k_emb, k_blocks, k_pool = jax.random.split(rng, 3)
  ids = jnp.zeros((1, 2), jnp.int32)
  params = {
      'embeddings': Embeddings(config).init(k_emb, ids, ids)['params'],
      'blocks': init_blocks(config, k_blocks, config.num_layers),
  }
  if config.has_pooler:
    dense = _dense(config, config.hidden_size, 'pooler', jnp.float32)
    params['pooler'] = dense.init(k_pool, jnp.zeros((1, config.hidden_size)))['params']
  return params


def init_blocks(config: EncoderConfig, rng, n: int, adapter_size: int = 0) -> Params:
  """n freshly initialised blocks, stacked on axis 0."""
  x = jnp.zeros((1, 2, config.hidden_size))
  bias = jnp.zeros((1, 1, 1, 2))
  init = lambda k: Block(config, adapter_size).init(k, x, bias)['params']
  return jax.vmap(init)(jax.random.split(rng, n))


def init_adapters(config: EncoderConfig, rng, n: int, size: int) -> Params:
  """n stacked pairs of Houlsby adapters (normal(0.02) weights, zero biases), keyed as in a Block."""
  x = jnp.zeros((1, 2, config.hidden_size))

  def init(k):
    k1, k2 = jax.random.split(k)
    return {'attention_adapter': Adapter(config, size).init(k1, x)['params'],
            'output_adapter': Adapter(config, size).init(k2, x)['params']}

  return jax.vmap(init)(jax.random.split(rng, n))
