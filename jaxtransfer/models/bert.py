"""The pretrained encoders in Flax, with the L blocks stacked on a leading axis and applied by scan.

Every family maps onto one parameter layout, so that the studies (reinit, permutation, freezing,
masks, closeness, FLOP counts) address the same names in every model; what differs between
families is a static field of `EncoderConfig`, read from the HF config in `from_hf`:

  blocks (stacked, leading axis L)
    query key value          attention projections (ModernBERT: its fused Wqkv, split in three)
    attention_output         attention output projection
    attention_ln             post-norm: LayerNorm after the attention residual;
                             pre-norm (ModernBERT): the norm before attention (attn_norm; block
                             position 0 has none in HF and applies the identity, its entry is 1/0)
    intermediate             first FFN matrix (ModernBERT: Wi, (H, 2I), columns [:I] the GELU
                             input and [I:] the gate, in HF's chunk order)
    output                   second FFN matrix
    output_ln                post-norm: LayerNorm after the FFN residual; pre-norm: mlp_norm
    pos_key, pos_query       DeBERTa-v2 without share_att_key only: the position projections
  embeddings
    word_embeddings, position_embeddings, token_type_embeddings   (those the family has)
    LayerNorm                the embedding LayerNorm (ModernBERT: embeddings.norm)
    embeddings_project       ELECTRA, embedding_size != hidden_size: Linear after the LayerNorm
    embed_proj               DeBERTa-v2, embedding_size != hidden_size: Linear before it
    rel_embeddings, rel_embeddings_norm   DeBERTa-v2: the relative position table every block
                             reads, and its LayerNorm (norm_rel_ebd) - HF's encoder.rel_embeddings
    relative_attention_bias  MPNet: the (buckets, heads) relative position bias every block adds
                             to its attention scores - HF's encoder.relative_attention_bias
    final_norm               ModernBERT: the norm after the last block
  pooler                     what the classifier reads through (BERT's pooler; the family heads
                             of models/heads.py)

Per-block differences stay arrays over the block axis: ModernBERT's local (sliding-window) vs
global attention and their rotary bases are selected inside the scan from `global_layers`
indexed by the block's position.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxtransfer.models import lora as lora_lib
from jaxtransfer.models import positions as pos_lib
from jaxtransfer.models.dropout import TokenDropout
from jaxtransfer.models import heads
from jaxtransfer.models.blocks import Adapter, block_module, dense, layer_norm
from jaxtransfer.models import config as model_config
from jaxtransfer.models.config import EncoderConfig

Params = dict[str, Any]

# The names every study addresses a block's parameters by (masks, closeness, LayerNorm-only tuning).
BLOCK_MATRICES = ('query', 'key', 'value', 'attention_output', 'intermediate', 'output')
BLOCK_LAYER_NORMS = ('attention_ln', 'output_ln')


def matrix_shapes(config: EncoderConfig) -> dict[str, tuple[int, int]]:
  """(in, out) of every block matrix (ModernBERT's intermediate is its fused GeGLU input, 2I)."""
  h, a = config.hidden_size, config.num_heads * config.attention_head_dim
  i = config.intermediate_size
  return {'query': (h, a), 'key': (h, a), 'value': (h, a), 'attention_output': (a, h),
          'intermediate': (h, (2 if config.glu else 1) * i), 'output': (i, h)}


# ----------------------------------------------------------------------------- embeddings


def _sinusoidal_init(key, shape, dtype=jnp.float32):
  del key
  return jnp.asarray(pos_lib.sinusoidal_table(*shape), dtype)


class Embeddings(nn.Module):
  """Word (+ absolute position) (+ token type) embeddings, LayerNorm, dropout; the projections of
  ELECTRA (after) and DeBERTa-v2 (before the LayerNorm) when embedding_size != hidden_size."""
  config: EncoderConfig
  dtype: Any = jnp.float32
  word_rows: int = 0  # rows of the word table given (some rows of it: `embed`); 0 = the vocabulary

  @nn.compact
  def __call__(self, input_ids, token_type_ids, deterministic: bool = True, attention_mask=None,
               position_ids=None, word_ids=None):
    c = self.config
    init = nn.initializers.normal(c.initializer_range)
    width = c.embedding_width
    embed = lambda n, name, fn=init: nn.Embed(n, width, embedding_init=fn, name=name,
                                              param_dtype=jnp.float32)
    x = embed(self.word_rows or c.vocab_size, 'word_embeddings')(
        input_ids if word_ids is None else word_ids)
    if c.absolute_positions:
      after_padding = c.model_type in ('roberta', 'mpnet')
      pad = c.position_padding_id
      if position_ids is not None:
        # Packed rows (packing.py): each example's positions restart at 0 (fairseq's after the
        # padding index).
        positions = position_ids + (pad + 1 if after_padding else 0)
      elif after_padding:
        # fairseq positions: count real tokens, starting after the padding index; padding keeps it.
        real = (input_ids != pad).astype(jnp.int32)
        positions = jnp.cumsum(real, axis=1) * real + pad
      else:
        positions = jnp.broadcast_to(jnp.arange(input_ids.shape[1]), input_ids.shape)
      table = embed(c.max_position_embeddings, 'position_embeddings',
                    _sinusoidal_init if c.sinusoidal_positions else init)
      x = x + table(positions)
    if c.type_vocab_size > 0:
      x = x + embed(c.type_vocab_size, 'token_type_embeddings')(token_type_ids)
    if c.model_type == 'deberta-v2' and width != c.hidden_size:
      x = dense(c, c.hidden_size, 'embed_proj', self.dtype, use_bias=False)(x)
    x = layer_norm(c, 'LayerNorm', self.dtype)(x)
    if c.model_type == 'deberta-v2' and attention_mask is not None:
      x = x * attention_mask[..., None].astype(x.dtype)  # DeBERTa zeroes the padding positions
    x = TokenDropout(c.embeddings_dropout)(x, deterministic=deterministic)
    if c.model_type == 'electra' and width != c.hidden_size:
      x = dense(c, c.hidden_size, 'embeddings_project', self.dtype)(x)
    return x


# ----------------------------------------------------------------------------- functional API

# Entries of `embeddings` that the embedding layer itself does not use.
SHARED_EMBEDDINGS = ('rel_embeddings', 'rel_embeddings_norm', 'final_norm', 'relative_attention_bias')


def attention_bias(attention_mask, segment_ids=None) -> jax.Array:
  """Additive (B, 1, 1, S) bias: 0 for real tokens, a large negative number for padding. With
  `segment_ids` (packed rows, packing.py), (B, 1, S, S): a token sees only its own segment's."""
  if segment_ids is not None:
    same = (segment_ids[:, :, None] == segment_ids[:, None, :]) & (segment_ids[:, None, :] > 0)
    return jnp.where(same[:, None], 0.0, jnp.finfo(jnp.float32).min)
  return jnp.where(attention_mask[:, None, None, :] > 0, 0.0, jnp.finfo(jnp.float32).min)


def embed(config: EncoderConfig, params: Params, input_ids, token_type_ids=None, *,
          attention_mask=None, position_ids=None, deterministic: bool = True, rng=None,
          dtype=jnp.float32, word_rows=None) -> jax.Array:
  """The embedding layer's output. `word_rows` (sorted vocabulary ids): the word table in `params`
  holds only these rows, and every id in `input_ids` is one of them (a training batch of a trial
  whose table trains as the rows its data reaches: Program.embedding_rows)."""
  if token_type_ids is None:
    token_type_ids = jnp.zeros_like(input_ids)
  # Blocks fold in their index (0..L-1); the embeddings take a key no block index can reach.
  rngs = None if deterministic else {'dropout': jax.random.fold_in(rng, 2**31 - 1)}
  own = {k: v for k, v in params.items() if k not in SHARED_EMBEDDINGS}
  word_ids, rows = None, 0
  if word_rows is not None:  # the ids as rows of the given table; the rest still reads input_ids
    word_ids = jnp.searchsorted(word_rows, input_ids).astype(input_ids.dtype)
    rows = word_rows.shape[-1]
  return Embeddings(config, dtype, rows).apply({'params': own}, input_ids, token_type_ids,
                                               deterministic, attention_mask, position_ids,
                                               word_ids, rngs=rngs)


def relative_embeddings(config: EncoderConfig, embeddings: Params | None):
  """DeBERTa-v2's relative position table as the blocks read it (after norm_rel_ebd), or None."""
  if not config.relative_attention:
    return None
  if embeddings is None or 'rel_embeddings' not in embeddings:
    raise ValueError('DeBERTa-v2 blocks read the relative position table: pass embeddings=')
  table = embeddings['rel_embeddings']['embedding']
  if config.norm_rel_ebd:
    ln = nn.LayerNorm(epsilon=config.layer_norm_eps, param_dtype=jnp.float32)
    table = ln.apply({'params': embeddings['rel_embeddings_norm']}, table)
  return table


def position_bias(config: EncoderConfig, embeddings: Params | None, seq: int):
  """MPNet's relative position bias (1, heads, S, S), read from the shared (buckets, heads) table
  once per forward and added to every block's attention scores (0 for the other families)."""
  if not config.relative_attention_buckets:
    return 0.0
  if embeddings is None or 'relative_attention_bias' not in embeddings:
    raise ValueError('MPNet blocks read the relative position bias: pass embeddings=')
  table = embeddings['relative_attention_bias']['embedding']
  index = pos_lib.t5_buckets(seq, model_config.MPNET_BUCKETS, model_config.MPNET_MAX_DISTANCE)
  return jnp.transpose(table[index], (2, 0, 1))[None].astype(jnp.float32)


def final_norm(config: EncoderConfig, embeddings: Params, x, dtype=jnp.float32):
  """ModernBERT's norm after the last block (the identity for the other families)."""
  if not config.final_norm:
    return x
  return layer_norm(config, 'final_norm', dtype).apply({'params': embeddings['final_norm']}, x)


def apply_blocks(config: EncoderConfig, blocks: Params, x, attention_mask, *, first_index: int = 0,
                 deterministic: bool = True, rng=None, adapter_size: int = 0,
                 dtype=jnp.float32, collect: bool = False, remat: bool = False,
                 embeddings: Params | None = None, lora: lora_lib.Lora | None = None,
                 segment_ids=None, adapter_style: str = 'houlsby'):
  """Runs the stacked `blocks` (leading axis n) over x with one lax.scan.

  `first_index` is the global index of blocks[0]: dropout keys are folded from it, so a block draws
  the same dropout mask whether it runs in one scan or in a frozen-prefix/trainable-suffix split;
  per-position behaviour (ModernBERT's global/local layers) is selected by it too.
  `embeddings` are needed by families whose blocks read a shared table (DeBERTa-v2's relative
  positions). `lora`: the blocks also hold `lora` factors, added to their target matrices.
  `segment_ids`: x holds packed rows (packing.py); attention stays within each segment.
  `adapter_style`: where the adapters sit (blocks.ADAPTER_STYLES).
  `remat` keeps only each block's input for the backward pass and recomputes the block there
  (one more forward pass, ~1/3 more compute, for activation memory of one (B, S, H) per block
  instead of ~16 plus the attention maps); the dropout masks are recomputed identically.
  Returns the final hidden state, and with `collect` also every block's output (n, B, S, H).
  """
  n = jax.tree.leaves(blocks)[0].shape[0]
  bias = attention_bias(attention_mask, segment_ids) + position_bias(config, embeddings, x.shape[1])
  rel = relative_embeddings(config, embeddings)
  module = block_module(config)(config, adapter_size, dtype, lora, adapter_style)

  def body(h, xs):
    p, i = xs
    rngs = None if deterministic else {'dropout': jax.random.fold_in(rng, i)}
    h = module.apply({'params': p}, h, bias, deterministic, rel, i, rngs=rngs)
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

  These are HF's `output_hidden_states`: with all L blocks, ModernBERT's last one is after its
  final norm. `num_blocks` (default all L) stops after the first n blocks; the blocks above are
  not computed.
  """
  n = config.num_layers if num_blocks is None else num_blocks
  if not 0 <= n <= config.num_layers:
    raise ValueError(f'num_blocks={n} is outside 0..{config.num_layers}')
  emb = params['embeddings']
  x = embed(config, emb, input_ids, token_type_ids, attention_mask=attention_mask,
            deterministic=deterministic, rng=rng, dtype=dtype)
  if n == 0:
    return x[None]
  _, outs = apply_blocks(config, take_blocks(params['blocks'], 0, n), x, attention_mask,
                         deterministic=deterministic, rng=rng, dtype=dtype, collect=True,
                         embeddings=emb)
  if config.final_norm and n == config.num_layers:
    outs = outs.at[-1].set(final_norm(config, emb, outs[-1], dtype).astype(outs.dtype))
  return jnp.concatenate([x[None], outs], axis=0)


def pool(config: EncoderConfig, pooler: Params, x, dtype=jnp.float32) -> jax.Array:
  """The pooler on the first token of x (B, S, H): BERT's tanh(dense), or the family's own."""
  return heads.pool(config, pooler, x[:, 0], dtype=dtype)


# ----------------------------------------------------------------------------- random init


def init_embeddings(config: EncoderConfig, rng) -> Params:
  """The `embeddings` entry in HF's scheme, including the tables the blocks share."""
  ids = jnp.zeros((1, 2), jnp.int32)
  params = dict(Embeddings(config).init(rng, ids, ids)['params'])
  k_rel = jax.random.fold_in(rng, 1)
  if config.relative_attention:
    rows = 2 * config.relative_span
    params['rel_embeddings'] = {'embedding': config.initializer_range * jax.random.normal(
        k_rel, (rows, config.hidden_size), jnp.float32)}
    if config.norm_rel_ebd:
      params['rel_embeddings_norm'] = {'scale': jnp.ones(config.hidden_size, jnp.float32),
                                       'bias': jnp.zeros(config.hidden_size, jnp.float32)}
  if config.relative_attention_buckets:
    params['relative_attention_bias'] = {'embedding': config.initializer_range * jax.random.normal(
        jax.random.fold_in(rng, 2), (config.relative_attention_buckets, config.num_heads),
        jnp.float32)}
  if config.final_norm:
    norm = {'scale': jnp.ones(config.hidden_size, jnp.float32)}
    if config.norm_biases:
      norm['bias'] = jnp.zeros(config.hidden_size, jnp.float32)
    params['final_norm'] = norm
  return params


def init_params(config: EncoderConfig, rng) -> Params:
  """A randomly initialised encoder in HF's scheme (normal(initializer_range), zero bias, LN 1/0)."""
  from jaxtransfer.models import heads
  k_emb, k_blocks, k_pool = jax.random.split(rng, 3)
  params = {
      'embeddings': init_embeddings(config, k_emb),
      'blocks': init_blocks(config, k_blocks, config.num_layers),
  }
  if config.has_pooler:
    params['pooler'] = heads.init_pooler(config, k_pool)
  return params


def _block_init_args(config: EncoderConfig):
  x = jnp.zeros((1, 2, config.hidden_size))
  bias = jnp.zeros((1, 1, 1, 2))
  rel = (jnp.zeros((2 * config.relative_span, config.hidden_size))
         if config.relative_attention else None)
  return x, bias, True, rel, 0


def init_blocks(config: EncoderConfig, rng, n: int, adapter_size: int = 0) -> Params:
  """n freshly initialised blocks, stacked on axis 0."""
  args = _block_init_args(config)
  module = block_module(config)
  init = lambda k: module(config, adapter_size).init(k, *args)['params']
  return jax.vmap(init)(jax.random.split(rng, n))


def init_adapters(config: EncoderConfig, rng, n: int, size: int) -> Params:
  """n stacked pairs of Houlsby adapters (normal(0.02) weights, zero biases), keyed as in a Block."""
  x = jnp.zeros((1, 2, config.hidden_size))

  def init(k):
    k1, k2 = jax.random.split(k)
    return {'attention_adapter': Adapter(config, size).init(k1, x)['params'],
            'output_adapter': Adapter(config, size).init(k2, x)['params']}

  return jax.vmap(init)(jax.random.split(rng, n))

