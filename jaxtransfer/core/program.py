"""What one compiled group of trials computes: the model structure and how a trial's params are built.

A `Program` is static (hashable): trials that share one run in the same `jit(vmap(...))`. Everything
that differs between them is a per-trial array (`arrays`): block permutations, reinit masks,
per-block learning-rate multipliers, the learning rate itself. The trial engine only calls the
methods of `ProgramLike`, so a study plugs in by choosing a Program and the arrays, or by writing
its own class with the same methods (see `experiments/probe.py`).

A trial's params are nested dicts whose top-level keys are the parameter groups of `GROUPS`;
what trains is decided per group (`Program.is_trainable`), and a key outside `GROUPS` is an error
rather than silently trained.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Protocol

from flax import traverse_util
import jax
import jax.numpy as jnp
import numpy as np

from jaxtransfer.core import interventions as iv
from jaxtransfer.models import config as model_config
from jaxtransfer.core import packing
from jaxtransfer.models import bert
from jaxtransfer.models import flops
from jaxtransfer.models import heads
from jaxtransfer.models import lora as lora_lib
from jaxtransfer.models.heads import LinearHead, MlpHead

Params = dict[str, Any]
HEADS = ('pooler', 'mlp')
MASKABLE = bert.BLOCK_MATRICES
BLOCK_PARAMS = ('all', 'layernorm', 'bias', 'none')

# The parameter groups of a trial, declared once: what each top-level key holds.
GROUPS = {
    'embeddings': 'word/position/type embeddings and their LayerNorm (and the tables outside '
                  'the blocks: DeBERTa\'s relative positions, ModernBERT\'s final norm); trained '
                  'only with full fine-tuning (`train_embeddings` and no frozen blocks)',
    'blocks_frozen': 'blocks [0, f): frozen and computed without gradient (no backward pass)',
    'blocks': "blocks [f, n): trained ('all'), only their LayerNorms ('layernorm'), only their "
              "biases ('bias': BitFit, which also limits the embeddings and a pretrained pooler to "
              "their biases), or fixed ('none': under learned masks, or LoRA)",
    'adapters': 'Houlsby adapters of blocks [f, n) (always trained)',
    'lora': 'LoRA factors A (in, r), B (r, out) of the target matrices of blocks [f, n) (always '
            'trained)',
    'mask_scores': 'sparsity-mask scores of the masked matrices of blocks [f, n) (always trained)',
    'pooler': "BERT's pooler dense layer, or the dense part of the family's own head "
              "(models/heads.py; trained unless `train_pooler=False`)",
    'head': 'the classifier (always trained)',
    'vocab_table': 'the whole word table, frozen, beside the rows of it a trial trains '
                   '(`embedding_rows`): what the rows its data never reaches keep (`densify`)',
}
HEAD_GROUPS = ('pooler', 'head')  # what a trial adds on top of the encoder
BLOCK_GROUPS = ('blocks', 'adapters', 'lora', 'mask_scores')  # stacked: one row per block [f, n)
WORD_TABLE = ('embeddings', 'word_embeddings', 'embedding')


class ProgramLike(Protocol):
  """What the engine and `step.py` call on a program (static and hashable: one compiled group)."""
  shares_frozen: bool   # frozen params identical across trials (broadcast, not copied per trial)
  is_regression: bool
  supports_packing: bool  # apply/loss take packed batches (packing.py) as well as padded ones
  hidden_size: int        # width of a token's hidden state (the packing planner's attention cost)

  def activation_bytes(self, batch_size: int, seq_len: int) -> int:
    """Rough device memory of one trial's saved activations in a training step."""

  def describe(self) -> str:
    """The program's settings in one line, for the log."""

  def defaults(self) -> dict[str, np.ndarray]:
    """Per-trial arrays the program reads, with their neutral values."""

  def init(self, pretrained: Params, arrays, rng) -> tuple[Params, Params]:
    """One trial's (trainable, frozen) params. Pure; vmappable."""

  def lr_multipliers(self, train: Params, arrays) -> Params:
    """Per-leaf learning-rate multipliers of the trainable params (0 = not updated)."""

  def decays(self, path: tuple[str, ...]) -> bool:
    """Whether weight decay applies to the trainable leaf at `path`."""

  def apply(self, train: Params, frozen: Params, batch, arrays, *, deterministic: bool = True,
            rng=None) -> jax.Array:
    """Logits (B, C) or regression values (B, 1)."""

  def loss(self, train: Params, frozen: Params, batch, weights, arrays, rng) -> jax.Array:
    """Weighted mean training loss over the batch."""

  def report(self, train: Params, frozen: Params, arrays) -> dict[str, jax.Array]:
    """Per-trial numbers the record's metrics carry besides the dev scores."""


def weighted_loss(out, labels, weights, is_regression: bool) -> jax.Array:
  """Weighted mean loss over a batch (weights 0 mark padding examples): CE, or MSE."""
  if is_regression:
    per_example = (out[:, 0] - labels) ** 2
  else:
    logp = jax.nn.log_softmax(out)
    per_example = -jnp.take_along_axis(logp, labels[:, None].astype(jnp.int32), 1)[:, 0]
  return (per_example * weights).sum() / jnp.maximum(weights.sum(), 1.0)


def block_activation_bytes(encoder, batch_size: int, seq_len: int) -> int:
  """~ 16 saved (B, S, H)-sized tensors per block plus the attention maps, float32."""
  per_block = batch_size * seq_len * (16 * encoder.hidden_size + 2 * encoder.num_heads * seq_len)
  return per_block * 4 * encoder.num_layers


def describe_fields(program, skip=('encoder',)) -> str:
  """A dataclass program's fields but `skip` as `name=value, ...`."""
  fields = getattr(program, '__dataclass_fields__', {})
  return ', '.join(f'{k}={getattr(program, k)!r}' for k in fields if k not in skip) or repr(program)


def _unit_magnitude(kernel):
  """|w| / mean|w| over each block's matrix (stacked kernels (n, in, out))."""
  mag = jnp.abs(kernel)
  return mag / jnp.maximum(jnp.mean(mag, axis=(1, 2), keepdims=True), 1e-12)


def merge(a: Params, b: Params) -> Params:
  """Union of two param trees with disjoint leaves."""
  flat = traverse_util.flatten_dict(a)
  flat.update(traverse_util.flatten_dict(b))
  return traverse_util.unflatten_dict(flat)


def dense_params(program, train: Params, frozen: Params, arrays) -> tuple[Params, Params]:
  """(train, frozen) with the whole word table in `train` (`Program.densify`): what exports,
  distances and parameter counts read. Programs without a partial table are returned as given."""
  densify = getattr(program, 'densify', None)
  return (train, frozen) if densify is None else densify(train, frozen, arrays)


def params_of(tree: Params, groups) -> Params:
  """The entries of a param tree that belong to the named groups."""
  return {k: v for k, v in tree.items() if k in groups}


@dataclasses.dataclass(frozen=True)
class Program:
  """A pretrained encoder + classifier, with the study's interventions and what trains."""
  encoder: model_config.EncoderConfig
  num_labels: int
  num_blocks: int                      # blocks computed; those above are never run
  frozen_blocks: int = 0               # blocks [0, f) frozen and not differentiated
  train_embeddings: bool = True        # only meaningful with frozen_blocks == 0
  block_params: str = 'all'            # what trains in blocks [f, n): 'all' | 'layernorm' | 'bias'
                                       # | 'none'
  head: str = 'pooler'                 # 'pooler' (BERT) | 'mlp' (RoBERTa / Xie et al.)
  pretrained_pooler: bool = True       # start BERT's pooler from the checkpoint when it has one
  train_pooler: bool = True
  pooling: str = 'cls'                 # 'cls' (first token) | 'mean' (real tokens)
  adapter_size: int = 0                # Houlsby adapters in blocks [f, n)
  adapter_style: str = 'houlsby'       # 'houlsby' | 'xie' (attention adapter before the dropout,
                                       # each adapter with its own dropout: Xie et al.'s code)
  lora: lora_lib.Lora | None = None    # LoRA factors in blocks [f, n)
  masked: tuple[str, ...] = ()         # matrices of blocks [f, n) with learned binary masks
  interventions: tuple[Any, ...] = ()  # applied to the pretrained params, in order
  dtype: str = 'float32'               # compute dtype; params stay fp32
  report_flops: bool = False           # add train_flops_fraction to the trial's metrics
  remat: bool = False                  # recompute each tuned block in the backward pass
  head_init: str = 'normal'            # 'normal' (BERT's) | 'torch' (nn.Linear's default; mlp head)
  grads_of_frozen: bool = False        # let the backward pass reach the frozen params too (their
                                       # gradients count in the clipping norm: Lee et al.'s code)
  layer_lr_decay: float = 1.0          # layer-wise lr decay d (`layer_decay`); 1.0 = off
  flops_seq_len: int = 128             # tokens per row at which train_flops_fraction counts
  embedding_rows: int = 0              # > 0: the word table trains as the rows `vocab_rows` (K of
                                       # them, sorted, padded with the vocabulary size): those the
                                       # trial's training data reaches (set by the engine)

  def __post_init__(self):
    assert 0 <= self.frozen_blocks <= self.num_blocks <= self.encoder.num_layers, self
    assert self.head in HEADS and self.block_params in BLOCK_PARAMS, self
    assert set(self.masked) <= set(MASKABLE), self.masked
    assert self.lora is None or set(self.lora.targets) <= set(MASKABLE), self.lora
    assert 0 < self.layer_lr_decay <= 1, self.layer_lr_decay

  # ------------------------------------------------------------------------- structure

  @property
  def is_regression(self) -> bool:
    return self.num_labels == 1

  # Every op is per token except attention and pooling, which read packed batches' segments.
  supports_packing = True

  @property
  def compute_dtype(self):
    return jnp.bfloat16 if self.dtype == 'bfloat16' else jnp.float32

  @property
  def uses_pooler(self) -> bool:
    # DistilBERT, ELECTRA, DeBERTa, ModernBERT: their own head is a pooler + linear (models/heads.py).
    return self.head == 'pooler' or heads.has_own_head(self.encoder)

  @property
  def _pooler_from_checkpoint(self) -> bool:
    return self.pretrained_pooler and self.encoder.has_pooler

  @property
  def shares_frozen(self) -> bool:
    """Frozen params are identical across trials (broadcast, not copied) unless an intervention
    rewrites the pretrained weights per trial."""
    return not self.interventions

  def defaults(self) -> dict[str, np.ndarray]:
    """Per-trial arrays and their neutral values; a study overrides some of them per trial."""
    out = {'block_lr': np.ones(self.encoder.num_layers, np.float32),
           'mask_blocks': np.ones(self.encoder.num_layers, bool),
           'sparsity': np.float32(0.5),
           'mask_lr': np.float32(1.0)}  # lr multiplier of the mask scores
    for intervention in self.interventions:
      out.update(intervention.defaults(self.encoder.num_layers))
    if self.embedding_rows:
      out['vocab_rows'] = np.arange(self.embedding_rows, dtype=np.int32)
    return out

  def is_trainable(self, path: tuple[str, ...]) -> bool:
    """Whether the leaf at `path` trains, decided by its parameter group (see GROUPS)."""
    group = path[0]
    # BitFit: of the pretrained parameters that train, only the biases do.
    bias_only = self.block_params == 'bias' and path[-1] != 'bias'
    if group == 'embeddings':
      return self.train_embeddings and self.frozen_blocks == 0 and not bias_only
    if group == 'blocks_frozen':
      return False
    if group == 'blocks':
      if self.block_params == 'layernorm':
        return path[1] in bert.BLOCK_LAYER_NORMS
      return self.block_params == 'all' or (self.block_params == 'bias' and path[-1] == 'bias')
    if group == 'pooler':
      # A fresh pooler (a checkpoint without one) is part of the new head and trains whole.
      return self.train_pooler and not (bias_only and self._pooler_from_checkpoint)
    if group in ('head', 'adapters', 'lora', 'mask_scores'):
      return True
    if group == 'vocab_table':
      return False
    raise ValueError(f'parameter group {group!r} (at {"/".join(path)}) is not one of '
                     f'{", ".join(GROUPS)}: declare it in program.GROUPS and decide whether it '
                     'trains in Program.is_trainable.')

  @staticmethod
  def decays(path: tuple[str, ...]) -> bool:
    """HF's no-decay rule: no weight decay on biases and LayerNorm parameters (leaves `bias` and
    `scale`), nor on mask scores, which are ranks, not weights."""
    return path[-1] not in ('bias', 'scale') and path[0] != 'mask_scores'

  # ------------------------------------------------------------------------- params

  def init(self, pretrained: Params, arrays: dict[str, Any], rng) -> tuple[Params, Params]:
    """Builds one trial's (trainable, frozen) params from the pretrained ones. Pure; vmappable."""
    c, f, n = self.encoder, self.frozen_blocks, self.num_blocks
    k_iv, k_head, k_pool, k_adapt, k_mask = jax.random.split(rng, 5)
    params = {k: v for k, v in pretrained.items()}
    for i, intervention in enumerate(self.interventions):
      params = intervention.apply(c, params, arrays, jax.random.fold_in(k_iv, i))
    blocks = params['blocks']
    full: Params = {
        'embeddings': params['embeddings'],
        'blocks': bert.take_blocks(blocks, f, n),
    }
    if f:
      full['blocks_frozen'] = bert.take_blocks(blocks, 0, f)
    if self.uses_pooler:
      if self.pretrained_pooler and 'pooler' in params:
        full['pooler'] = params['pooler']
      else:
        full['pooler'] = heads.init_pooler(c, k_pool)
    full['head'] = self._head_module().init(k_head, jnp.zeros((1, c.hidden_size)))['params']
    if self.adapter_size and n > f:
      full['adapters'] = bert.init_adapters(c, k_adapt, n - f, self.adapter_size)
    if self.lora and n > f:
      # A key of its own (folded, not split) leaves every other new parameter's init unchanged.
      shapes = tuple((t, blocks[t]['kernel'].shape[1:]) for t in self.lora.targets)
      full['lora'] = lora_lib.init(self.lora, shapes, jax.random.fold_in(rng, 5), n - f)
    if self.masked and n > f:
      # Scores start at |w| / mean|w| per block and matrix: the first mask is magnitude pruning at
      # the target sparsity, and on this unit scale one mask learning rate means the same relative
      # step in every matrix (MiniLM's mean |w| differs 2x between matrices; models differ more).
      full['mask_scores'] = {m: {'kernel': _unit_magnitude(full['blocks'][m]['kernel'])}
                             for m in self.masked}
    if self.embedding_rows:
      full = _table_rows(full, arrays['vocab_rows'])
    return self.split(full)

  def densify(self, train: Params, frozen: Params, arrays) -> tuple[Params, Params]:
    """(train, frozen) as the dense program has them: the trained rows written back into the
    whole word table (the other rows are the table's own: with no weight decay on it, AdamW leaves
    a row whose gradient was always zero exactly where it started). Without `embedding_rows`, as
    given."""
    if 'vocab_table' not in frozen:
      return train, frozen
    rows = train['embeddings']['word_embeddings']['embedding']
    table = jnp.asarray(frozen['vocab_table']['embedding'])
    table = table.at[arrays['vocab_rows']].set(rows, mode='drop')  # padding ids are out of range
    embeddings = {**train['embeddings'], 'word_embeddings': {'embedding': table}}
    return ({**train, 'embeddings': embeddings},
            {k: v for k, v in frozen.items() if k != 'vocab_table'})

  def split(self, full: Params) -> tuple[Params, Params]:
    flat = traverse_util.flatten_dict(full)
    train = {p: v for p, v in flat.items() if self.is_trainable(p)}
    frozen = {p: v for p, v in flat.items() if not self.is_trainable(p)}
    return traverse_util.unflatten_dict(train), traverse_util.unflatten_dict(frozen)

  def lr_multipliers(self, train: Params, arrays) -> Params:
    """Per-leaf learning-rate multipliers: `block_lr[f:n]` along the block axis of stacked leaves,
    times the layer-wise decay (`layer_decay`). A product, so a 0 (a frozen block) stays 0 and the
    reinit studies' multiplier composes with the decay."""
    per_block = arrays['block_lr'][self.frozen_blocks:self.num_blocks] * self.layer_decay('blocks')

    def mult(path, leaf):
      keys = tuple(k.key for k in path)
      if keys[0] in BLOCK_GROUPS:
        m = per_block.reshape((-1,) + (1,) * (leaf.ndim - 1))
        return m * arrays['mask_lr'] if keys[0] == 'mask_scores' else m
      return jnp.asarray(self.layer_decay(*keys), jnp.float32)

    return jax.tree_util.tree_map_with_path(mult, train)

  def layer_decay(self, group: str, *rest: str) -> np.ndarray:
    """Layer-wise lr decay as Zhang et al. 2021's code defines it, over the n blocks computed (the
    head sits on block n - 1): head and pooler x1, block i x d^(n - i) (per row for the block
    groups), the embeddings x d^(n + 1). ModernBERT's final norm, after the last block, goes with
    the head (depth n + 1, where BEiT's code puts a final norm); DeBERTa's relative position
    table, read by every block, with the embeddings."""
    d, f, n = self.layer_lr_decay, self.frozen_blocks, self.num_blocks
    if group in BLOCK_GROUPS:
      return (d ** (n - np.arange(f, n))).astype(np.float32)
    if group == 'embeddings' and rest[:1] != ('final_norm',):
      return np.float32(d ** (n + 1))
    return np.float32(1.0)

  # ------------------------------------------------------------------------- forward

  def _head_module(self):
    c = self.encoder
    if not self.uses_pooler:
      return MlpHead(c.hidden_size, self.num_labels, heads.classifier_dropout(c), c.initializer_range,
                     torch_init=self.head_init == 'torch')
    return LinearHead(self.num_labels, heads.classifier_dropout(c), heads.classifier_std(c))

  def features(self, params: Params, batch, arrays, *, deterministic: bool, rng=None,
               word_rows=None):
    """The encoder up to block n: last hidden state (B, S, H) (packed: (rows, width, H))."""
    x, _ = self._encode(params, batch, arrays, deterministic=deterministic, rng=rng,
                        word_rows=word_rows)
    return bert.final_norm(self.encoder, params['embeddings'], x, self.compute_dtype)

  def hidden_states(self, train: Params, frozen: Params, batch, arrays) -> jax.Array:
    """Every hidden state this trial computes, in eval mode, (n+1, B, S, H): [0] the embedding
    output, [i] the output of block i-1 (adapters, masks and LoRA applied), as
    `bert.hidden_states` gives them (ModernBERT's final norm on the last one only when all L
    blocks run)."""
    params = merge(*self.densify(train, frozen, arrays))
    _, outs = self._encode(params, batch, arrays, deterministic=True, collect=True)
    hs = jnp.concatenate(outs, axis=0)
    if self.encoder.final_norm and self.num_blocks == self.encoder.num_layers:
      last = bert.final_norm(self.encoder, params['embeddings'], hs[-1], self.compute_dtype)
      hs = hs.at[-1].set(last.astype(hs.dtype))
    return hs

  def _encode(self, params: Params, batch, arrays, *, deterministic: bool, rng=None,
              collect: bool = False, word_rows=None):
    """(the output of block n before any final norm, with `collect` the list of hidden states
    [(1, B, S, H) embedding output, (k, B, S, H) per run of blocks])."""
    c, f, n, dt = self.encoder, self.frozen_blocks, self.num_blocks, self.compute_dtype
    ids, mask = batch['input_ids'], batch['attention_mask']
    kw = dict(deterministic=deterministic, rng=rng, dtype=dt)
    # Hidden states are read as bert.hidden_states gives them (DeBERTa zeroes padding positions).
    x = bert.embed(c, params['embeddings'], ids, batch.get('token_type_ids'),
                   attention_mask=mask if collect else None,
                   position_ids=batch.get('position_ids'), word_rows=word_rows, **kw)
    outs = [x[None]]
    kw.update(embeddings=params['embeddings'],  # DeBERTa's blocks read its relative positions
              segment_ids=batch.get('segment_ids'), collect=collect)

    def run(blocks, x, first, **more):
      out = bert.apply_blocks(c, blocks, x, mask, first_index=first, **kw, **more)
      if not collect:
        return out
      outs.append(out[1])
      return out[0]

    if f:
      x = run(params['blocks_frozen'], x, 0)
    if n > f:
      if (f or not self.train_embeddings) and not self.grads_of_frozen:
        # Nothing below is trained: make sure no backward pass reaches the frozen prefix.
        x = jax.lax.stop_gradient(x)
      blocks = params['blocks']
      if self.masked:
        blocks = iv.apply_masks(blocks, params['mask_scores'], arrays['sparsity'],
                                arrays['mask_blocks'][f:n])
      if self.adapter_size:
        blocks = {**blocks, **params['adapters']}
      if self.lora:
        blocks = {**blocks, 'lora': params['lora']}
      x = run(blocks, x, f, adapter_size=self.adapter_size, adapter_style=self.adapter_style,
              lora=self.lora, remat=self.remat)
    return x, outs

  def apply(self, train: Params, frozen: Params, batch, arrays, *, deterministic: bool = True,
            rng=None):
    """Logits (B, C), or regression values (B, 1)."""
    return self._logits(merge(*self.densify(train, frozen, arrays)), batch, arrays,
                        deterministic=deterministic, rng=rng)

  def _logits(self, params: Params, batch, arrays, *, deterministic: bool, rng=None,
              word_rows=None):
    x = self.features(params, batch, arrays, deterministic=deterministic, rng=rng,
                      word_rows=word_rows)
    if packing.is_packed(batch):
      pooled = packing.pool(x, batch, self.pooling, batch['labels'].shape[0])
    elif self.pooling == 'mean':
      m = batch['attention_mask'][..., None].astype(x.dtype)
      pooled = (x * m).sum(1) / jnp.maximum(m.sum(1), 1)
    else:
      pooled = x[:, 0]
    if self.uses_pooler:
      pooled = heads.pool(self.encoder, params['pooler'], pooled, dtype=self.compute_dtype,
                          deterministic=deterministic,
                          rng=None if deterministic else jax.random.fold_in(rng, 2**31 - 3))
    rngs = None if deterministic else {'dropout': jax.random.fold_in(rng, 2**31 - 2)}
    out = self._head_module().apply({'params': params['head']}, pooled.astype(jnp.float32),
                                    deterministic, rngs=rngs)
    return out.astype(jnp.float32)

  def loss(self, train: Params, frozen: Params, batch, weights, arrays, rng):
    """Weighted mean loss over the batch (weights 0 mark padding examples): CE, or MSE."""
    # A training batch holds only ids of the rows its trial trains (`embedding_rows`): the lookup
    # reads them in place, and the gradient and AdamW touch K rows instead of the vocabulary.
    rows = arrays['vocab_rows'] if self.embedding_rows else None
    out = self._logits(merge(train, frozen), batch, arrays, deterministic=False, rng=rng,
                       word_rows=rows)
    return weighted_loss(out, batch['labels'], weights, self.is_regression)

  @property
  def hidden_size(self) -> int:
    return self.encoder.hidden_size

  def activation_bytes(self, batch_size: int, seq_len: int) -> int:
    return block_activation_bytes(self.encoder, batch_size, seq_len)

  def describe(self) -> str:
    return describe_fields(self)

  def report(self, train: Params, frozen: Params, arrays) -> dict[str, jax.Array]:
    """Per-trial numbers that the record's metrics carry besides the dev scores."""
    out = {}
    if self.report_flops:
      out['train_flops_fraction'] = jnp.float32(self.train_flops_fraction())
    if self.masked and self.num_blocks > self.frozen_blocks:
      # docs/CONTRACT.md: the fraction of masked-matrix entries set to zero, over the masked
      # blocks only.
      masks = self.masks(train, frozen, arrays)
      on = arrays['mask_blocks'][self.frozen_blocks:self.num_blocks].astype(jnp.float32)
      zeros = {m: jnp.sum((1 - masks[m]) * on[:, None, None]) for m in self.masked}
      sizes = {m: jnp.sum(on) * masks[m][0].size for m in self.masked}
      for m in self.masked:
        out[f'sparsity/{m}'] = zeros[m] / jnp.maximum(sizes[m], 1)
      out['sparsity'] = sum(zeros.values()) / jnp.maximum(sum(sizes.values()), 1)
    return out

  def masks(self, train: Params, frozen: Params, arrays) -> Params:
    """The hard {0,1} masks of blocks [f, n): {matrix: (n - f, in, out)}, ones in unmasked blocks."""
    scores = merge(train, frozen)['mask_scores']
    return iv.block_masks(scores, arrays['sparsity'],
                          arrays['mask_blocks'][self.frozen_blocks:self.num_blocks],
                          straight_through=False)

  def train_flops_fraction(self) -> float:
    """Training FLOPs per example relative to full fine-tuning of all L blocks, with each family's
    block cost (models/flops.py) at `flops_seq_len` tokens. Forward through every computed block;
    backward through the differentiated ones: activation gradients (the weight matrices once,
    the attention scores twice: both their inputs are activations; the tuned blocks run in one
    scan, so the lowest one computes its input's gradient too) and, for trained weights, weight
    gradients (the matrices once more); adapters and LoRA paths always train (3x)."""
    c, seq = self.encoder, self.flops_seq_len
    L, f, n = c.num_layers, self.frozen_blocks, self.num_blocks
    m = flops.block_matmuls(c)
    attention = flops.block_forward(c, seq) - m
    backward_blocks = n - f
    # Mask scores need the same outer products as weight gradients; LayerNorm-only and bias-only
    # training do not.
    weight_grads = backward_blocks if (self.block_params == 'all' or self.masked) else 0
    cost = n * (m + attention) + backward_blocks * (m + 2 * attention) + weight_grads * m
    if self.grads_of_frozen:  # the frozen prefix is differentiated too (weights: for the norm)
      cost += f * (2 * m + 2 * attention)
    if self.adapter_size:
      cost += 3 * backward_blocks * flops.adapter_forward(c, self.adapter_size)
    if self.lora:
      cost += 3 * backward_blocks * flops.lora_forward(c, self.lora)
    return float(cost / (3 * L * (m + attention)))

  # ------------------------------------------------------------------------- export

  def export_params(self, train: Params, frozen: Params, arrays) -> Params:
    """The encoder as a plain stacked tree (n blocks, masks multiplied in, LoRA merged as
    W + scale·A·B) for convert.export."""
    if self.adapter_size:
      raise ValueError('HF BERT/RoBERTa have no adapter layers: adapter-tuned trials cannot be '
                       'exported as transformers models.')
    train, frozen = self.densify(train, frozen, arrays)
    params = jax.tree.map(np.asarray, merge(train, frozen))
    blocks = params['blocks']
    if self.masked and self.num_blocks > self.frozen_blocks:
      masks = self.masks(train, frozen, arrays)
      blocks = {**blocks, **{m: {**blocks[m], 'kernel': blocks[m]['kernel'] * np.asarray(masks[m])}
                             for m in self.masked}}
    if self.lora and self.num_blocks > self.frozen_blocks:
      blocks = lora_lib.merge(blocks, params['lora'], self.lora)
    if self.frozen_blocks:
      blocks = jax.tree.map(lambda a, b: np.concatenate([a, b]), params['blocks_frozen'], blocks)
    out = {'embeddings': params['embeddings'], 'blocks': jax.tree.map(np.asarray, blocks)}
    if 'pooler' in params:
      out['pooler'] = params['pooler']
    return out

  def export_head(self, train: Params, frozen: Params) -> dict[str, np.ndarray]:
    """The classifier in HF's *ForSequenceClassification names (torch layout)."""
    return heads.export_head(self.encoder, self.head, merge(train, frozen)['head'])


def _table_rows(full: Params, rows) -> Params:
  """`full` with the word table's rows `rows` as its trained table (ids past the vocabulary, the
  padding of `rows`: zero rows no batch reads) and the whole table kept frozen beside them."""
  table = full['embeddings']['word_embeddings']['embedding']
  part = jnp.take(table, rows, axis=0, mode='fill', fill_value=0)
  embeddings = {**full['embeddings'], 'word_embeddings': {'embedding': part}}
  return {**full, 'embeddings': embeddings, 'vocab_table': {'embedding': table}}
