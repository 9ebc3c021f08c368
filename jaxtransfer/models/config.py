"""Each encoder family's architecture, read from its HF config.json (`EncoderConfig.from_hf`)."""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import jax
import jax.numpy as jnp

from jaxtransfer.errors import UserError


_ACTIVATIONS = {
    'gelu': functools.partial(jax.nn.gelu, approximate=False),  # HF "gelu" is the exact erf form
    'gelu_python': functools.partial(jax.nn.gelu, approximate=False),
    'gelu_new': functools.partial(jax.nn.gelu, approximate=True),
    'gelu_pytorch_tanh': functools.partial(jax.nn.gelu, approximate=True),
    'relu': jax.nn.relu,
    'silu': jax.nn.silu,
    'swish': jax.nn.silu,
    'tanh': jnp.tanh,
}

# HF model_type -> the family (our `model_type`), which every other module switches on.
FAMILIES = {
    'bert': 'bert',
    'roberta': 'roberta', 'xlm-roberta': 'roberta', 'camembert': 'roberta',
    'distilbert': 'distilbert',
    'electra': 'electra',
    'deberta-v2': 'deberta-v2',
    'modernbert': 'modernbert',
    'mpnet': 'mpnet',
}
# HF's MPNetEncoder buckets relative positions into 32 buckets whatever the config says (its
# compute_position_bias is called with the default num_buckets=32, max_distance=128).
MPNET_BUCKETS, MPNET_MAX_DISTANCE = 32, 128


def activation(name: str):
  if name not in _ACTIVATIONS:
    raise ValueError(f'Unsupported activation {name!r}; supported: {sorted(_ACTIVATIONS)}')
  return _ACTIVATIONS[name]


@dataclasses.dataclass(frozen=True)
class EncoderConfig:
  """The architecture, read from an HF `config.json` (hashable: it is static in every jit)."""
  vocab_size: int
  hidden_size: int = 768
  num_layers: int = 12
  num_heads: int = 12
  intermediate_size: int = 3072
  max_position_embeddings: int = 512
  type_vocab_size: int = 2             # 0: no token type embeddings
  layer_norm_eps: float = 1e-12
  hidden_act: str = 'gelu'
  initializer_range: float = 0.02
  hidden_dropout: float = 0.1
  attention_dropout: float = 0.1
  pad_token_id: int = 0
  model_type: str = 'bert'  # the family: a value of FAMILIES (roberta: positions past the padding)
  has_pooler: bool = True
  source_model_type: str = ''          # HF's model_type ('xlm-roberta', ...); '' = model_type
  # Embeddings.
  embedding_size: int = 0              # 0 = hidden_size; else projected (ELECTRA, DeBERTa-v2)
  absolute_positions: bool = True      # learned absolute position table
  sinusoidal_positions: bool = False   # DistilBERT's fixed sinusoidal init of that table
  embedding_dropout: float | None = None  # None = hidden_dropout
  # Blocks.
  head_dim: int = 0                    # 0 = hidden_size // num_heads
  pre_norm: bool = False               # ModernBERT
  glu: bool = False                    # GeGLU feed-forward (ModernBERT)
  attention_biases: bool = True
  mlp_biases: bool = True
  norm_biases: bool = True
  mlp_dropout: float = 0.0             # pre-norm: dropout inside the FFN (before its output)
  # DeBERTa-v2 disentangled attention.
  relative_attention: bool = False
  pos_att_type: tuple[str, ...] = ()   # 'c2p', 'p2c'
  position_buckets: int = 0
  max_relative_positions: int = 0
  share_att_key: bool = False
  norm_rel_ebd: bool = False
  # MPNet: one relative position bias (T5-style buckets), shared by every block.
  relative_attention_buckets: int = 0  # rows of the (buckets, heads) table; 0: no such bias
  # ModernBERT rotary attention.
  global_layers: tuple[bool, ...] = ()  # per block position: True global, False sliding window
  rope_theta_global: float = 10000.0
  rope_theta_local: float = 10000.0
  local_window: int = 0                # half window: a token sees keys with |q - k| <= this
  final_norm: bool = False
  initializer_cutoff: float = 0.0      # truncated-normal init at +-cutoff std (0: plain normal)
  # The family's classifier (models/heads.py).
  pooler_act: str = 'tanh'
  pooler_bias: bool = True
  pooler_dropout: float = 0.0          # dropout before the pooler's dense layer
  classifier_dropout: float | None = None  # before the final linear layer; None = hidden_dropout

  @classmethod
  def from_hf(cls, hf: dict[str, Any], has_pooler: bool = True) -> EncoderConfig:
    """The architecture of an HF config.json; UserError for a family or option we do not model."""
    source = hf.get('model_type', 'bert')
    if source not in FAMILIES:
      raise UserError(
          f'model_type {source!r} is not a supported encoder family. jaxtransfer supports '
          f'{", ".join(sorted(FAMILIES))} (see the README\'s table of families).')
    family = FAMILIES[source]
    common = dict(model_type=family, source_model_type=source, has_pooler=has_pooler,
                  vocab_size=hf['vocab_size'],
                  initializer_range=hf.get('initializer_range', 0.02),
                  pad_token_id=hf.get('pad_token_id', 0) or 0,
                  max_position_embeddings=hf.get('max_position_embeddings', 512))
    return cls(**common, **_FROM_HF[family](hf))

  def to_hf(self) -> dict[str, Any]:
    """The HF config keys this architecture determines (merged over the source config on export)."""
    if self.model_type not in ('bert', 'roberta', 'electra', 'deberta-v2'):
      # The other families name their keys differently; their source config carries them.
      return {'model_type': self.hf_model_type}
    out = {
        'model_type': self.hf_model_type,
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
    if self.model_type in ('electra', 'deberta-v2'):
      out['embedding_size'] = self.embedding_width
    return out

  @property
  def hf_model_type(self) -> str:
    return self.source_model_type or self.model_type

  @property
  def activation(self):
    return activation(self.hidden_act)

  @property
  def embedding_width(self) -> int:
    return self.embedding_size or self.hidden_size

  @property
  def attention_head_dim(self) -> int:
    return self.head_dim or self.hidden_size // self.num_heads

  @property
  def relative_span(self) -> int:
    """DeBERTa's attention span: half the rows of the relative position table."""
    return self.position_buckets if self.position_buckets > 0 else self.max_relative_positions

  @property
  def position_padding_id(self) -> int:
    """The id whose tokens keep the padding position (roberta, mpnet: positions start after it).
    HF's MPNetEmbeddings hard-code padding_idx = 1, whatever pad_token_id says."""
    return 1 if self.model_type == 'mpnet' else self.pad_token_id

  @property
  def embeddings_dropout(self) -> float:
    return self.hidden_dropout if self.embedding_dropout is None else self.embedding_dropout


# ----------------------------------------------------------------------------- HF config parsing


def _bert_like(hf: dict[str, Any]) -> dict[str, Any]:
  if hf.get('position_embedding_type', 'absolute') not in ('absolute', None):
    raise UserError(f'position_embedding_type={hf["position_embedding_type"]!r} is not supported; '
                    'jaxtransfer models absolute position embeddings for BERT, RoBERTa and ELECTRA.')
  return dict(hidden_size=hf['hidden_size'], num_layers=hf['num_hidden_layers'],
              num_heads=hf['num_attention_heads'], intermediate_size=hf['intermediate_size'],
              type_vocab_size=hf.get('type_vocab_size', 2),
              layer_norm_eps=hf.get('layer_norm_eps', 1e-12), hidden_act=hf.get('hidden_act', 'gelu'),
              hidden_dropout=hf.get('hidden_dropout_prob', 0.1),
              attention_dropout=hf.get('attention_probs_dropout_prob', 0.1),
              classifier_dropout=hf.get('classifier_dropout'))


def _electra(hf):
  out = _bert_like(hf)
  # ElectraClassificationHead: dropout, dense, gelu, dropout, out_proj (one dropout rate).
  drop = hf.get('classifier_dropout')
  drop = out['hidden_dropout'] if drop is None else drop
  return {**out, 'embedding_size': hf.get('embedding_size', hf['hidden_size']),
          'pooler_act': 'gelu', 'pooler_dropout': drop, 'classifier_dropout': drop}


def _distilbert(hf):
  return dict(hidden_size=hf.get('dim', hf.get('hidden_size', 768)),
              num_layers=hf.get('n_layers', hf.get('num_hidden_layers', 6)),
              num_heads=hf.get('n_heads', hf.get('num_attention_heads', 12)),
              intermediate_size=hf.get('hidden_dim', 3072), type_vocab_size=0,
              layer_norm_eps=1e-12,  # hard-coded in HF's DistilBERT
              hidden_act=hf.get('activation', 'gelu'), hidden_dropout=hf.get('dropout', 0.1),
              attention_dropout=hf.get('attention_dropout', 0.1),
              sinusoidal_positions=bool(hf.get('sinusoidal_pos_embds', False)),
              pooler_act='relu', classifier_dropout=hf.get('seq_classif_dropout', 0.2))


def _deberta_v2(hf):
  if hf.get('conv_kernel_size', 0):
    raise UserError(
        f'This DeBERTa-v2 checkpoint has a convolution after its first layer (conv_kernel_size='
        f'{hf["conv_kernel_size"]}, the xlarge/xxlarge models), which jaxtransfer does not model; '
        'use a checkpoint without it (e.g. microsoft/deberta-v3-base).')
  hidden = hf['hidden_size']
  if hf.get('pooler_hidden_size', hidden) != hidden:
    raise UserError(f'pooler_hidden_size={hf["pooler_hidden_size"]} differs from hidden_size='
                    f'{hidden}; DeBERTa-v2 classifiers need them equal.')
  pos_att = hf.get('pos_att_type') or []
  if isinstance(pos_att, str):
    pos_att = [x.strip() for x in pos_att.lower().split('|')]
  pos_att = tuple(p for p in ('c2p', 'p2c') if p in pos_att)
  relative = bool(hf.get('relative_attention', False))
  max_rel = hf.get('max_relative_positions', -1)
  if max_rel < 1:
    max_rel = hf.get('max_position_embeddings', 512)
  norm = [x.strip() for x in str(hf.get('norm_rel_ebd', 'none')).lower().split('|')]
  drop = hf.get('cls_dropout')
  num_heads = hf['num_attention_heads']
  return dict(hidden_size=hidden, num_layers=hf['num_hidden_layers'], num_heads=num_heads,
              intermediate_size=hf['intermediate_size'], type_vocab_size=hf.get('type_vocab_size', 0),
              layer_norm_eps=hf.get('layer_norm_eps', 1e-7), hidden_act=hf.get('hidden_act', 'gelu'),
              hidden_dropout=hf.get('hidden_dropout_prob', 0.1),
              attention_dropout=hf.get('attention_probs_dropout_prob', 0.1),
              embedding_size=hf.get('embedding_size', hidden),
              absolute_positions=bool(hf.get('position_biased_input', True)),
              head_dim=hf.get('attention_head_size', hidden // num_heads),
              relative_attention=relative, pos_att_type=pos_att,
              position_buckets=max(hf.get('position_buckets', -1), 0), max_relative_positions=max_rel,
              share_att_key=bool(hf.get('share_att_key', False)),
              norm_rel_ebd='layer_norm' in norm,
              pooler_act=hf.get('pooler_hidden_act', 'gelu'),
              pooler_dropout=hf.get('pooler_dropout', 0.0), classifier_dropout=drop)


def _modernbert(hf):
  num_layers = hf['num_hidden_layers']
  types = hf.get('layer_types')
  if types is None:
    every = hf.get('global_attn_every_n_layers', 3)
    types = ['sliding_attention' if i % every else 'full_attention' for i in range(num_layers)]
  if len(types) != num_layers or not set(types) <= {'full_attention', 'sliding_attention'}:
    raise UserError(f'layer_types={types} must name full_attention or sliding_attention for each of '
                    f'the {num_layers} layers.')
  rope = hf.get('rope_parameters') or {}
  theta = {}
  for kind, legacy, default in (('full_attention', 'global_rope_theta', 160000.0),
                                ('sliding_attention', 'local_rope_theta', 10000.0)):
    p = rope.get(kind) or {}
    if p.get('rope_type', 'default') != 'default' or hf.get('rope_scaling'):
      raise UserError(f'ModernBERT rope_type {p.get("rope_type")!r} (RoPE scaling) is not '
                      'supported; jaxtransfer models the default rotary embedding.')
    theta[kind] = float(p.get('rope_theta') or hf.get(legacy) or default)
  cutoff = hf.get('initializer_cutoff_factor', 2.0)
  attn_drop = hf.get('attention_dropout', 0.0)
  return dict(hidden_size=hf['hidden_size'], num_layers=num_layers,
              num_heads=hf['num_attention_heads'], intermediate_size=hf['intermediate_size'],
              type_vocab_size=0, layer_norm_eps=hf.get('norm_eps', 1e-5),
              hidden_act=hf.get('hidden_activation', 'gelu'),
              hidden_dropout=attn_drop,  # the dropout on the attention output (HF's out_drop)
              attention_dropout=attn_drop, embedding_dropout=hf.get('embedding_dropout', 0.0),
              mlp_dropout=hf.get('mlp_dropout', 0.0), absolute_positions=False, pre_norm=True,
              glu=True, attention_biases=bool(hf.get('attention_bias', False)),
              mlp_biases=bool(hf.get('mlp_bias', False)), norm_biases=bool(hf.get('norm_bias', False)),
              global_layers=tuple(t == 'full_attention' for t in types),
              rope_theta_global=theta['full_attention'], rope_theta_local=theta['sliding_attention'],
              local_window=hf.get('local_attention', 128) // 2, final_norm=True,
              initializer_cutoff=3.0 if cutoff is None else float(cutoff),
              pooler_act=hf.get('classifier_activation', 'gelu'),
              pooler_bias=bool(hf.get('classifier_bias', False)),
              classifier_dropout=hf.get('classifier_dropout', 0.0))


def _mpnet(hf):
  buckets = hf.get('relative_attention_num_buckets', MPNET_BUCKETS)
  if buckets < MPNET_BUCKETS:
    raise UserError(
        f'relative_attention_num_buckets={buckets}: HF\'s MPNet looks up {MPNET_BUCKETS} relative '
        f'position buckets whatever this says, so a table of fewer rows cannot run in transformers '
        f'either; use a checkpoint with relative_attention_num_buckets >= {MPNET_BUCKETS}.')
  out = _bert_like({k: v for k, v in hf.items() if k != 'position_embedding_type'})
  # MPNetClassificationHead: dropout, dense, tanh, dropout, out_proj, at hidden_dropout_prob.
  return {**out, 'type_vocab_size': 0, 'relative_attention_buckets': buckets,
          'classifier_dropout': None}


_FROM_HF = {'bert': _bert_like, 'roberta': _bert_like, 'electra': _electra,
            'distilbert': _distilbert, 'deberta-v2': _deberta_v2, 'modernbert': _modernbert,
            'mpnet': _mpnet}
