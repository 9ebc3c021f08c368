"""Each family's sequence-classification head, as HF's `...ForSequenceClassification` builds it.

Every head is a pooler (the `pooler` entry of the params: dense + activation) followed by
dropout and the linear classifier (`program.LinearHead`), so the pooler is what a study keeps,
trains or freezes like BERT's:

  bert, roberta  pooler: tanh(dense(x[CLS]))                              (BertPooler)
  distilbert     pooler: relu(pre_classifier(x)), then seq_classif_dropout
  electra        pooler: gelu(dense(dropout(x))), classifier = out_proj   (ElectraClassificationHead)
  deberta-v2     pooler: act(dense(dropout(x))), then cls_dropout          (ContextPooler)

RoBERTa's own head (dense-tanh-out_proj without a pretrained pooler) is `program.MlpHead`.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxtransfer.models import bert

Params = dict[str, Any]
# Families whose classifier is always their own pooler + linear ('pooler' and 'mlp' both mean it).
OWN_HEAD = ('distilbert', 'electra', 'deberta-v2')


def has_own_head(config: bert.EncoderConfig) -> bool:
  return config.model_type in OWN_HEAD


def _act(name: str):
  return jnp.tanh if name == 'tanh' else bert.activation(name)


def init_pooler(config: bert.EncoderConfig, rng) -> Params:
  """A fresh pooler in the family's init (HF's _init_weights)."""
  c, h = config, config.hidden_size
  dense = nn.Dense(h, kernel_init=nn.initializers.normal(c.initializer_range))
  return dense.init(rng, jnp.zeros((1, h)))['params']


def pool(config: bert.EncoderConfig, pooler: Params, v, *, dtype=jnp.float32,
         deterministic: bool = True, rng=None) -> jax.Array:
  """The pooler on the pooled vectors v (B, H)."""
  c = config
  if c.pooler_dropout and not deterministic:
    v = nn.Dropout(c.pooler_dropout).apply({}, v, False, rngs={'dropout': rng})
  dense = bert._dense(c, c.hidden_size, 'pooler', dtype)
  return _act(c.pooler_act)(dense.apply({'params': pooler}, v))


def classifier_dropout(config: bert.EncoderConfig) -> float:
  """The dropout before the final linear layer."""
  if config.classifier_dropout is None:
    return config.hidden_dropout
  return config.classifier_dropout


def classifier_std(config: bert.EncoderConfig) -> float:
  """The init std of a fresh classifier."""
  return config.initializer_range


def export_head(config: bert.EncoderConfig, head_kind: str, head: Params) -> dict[str, np.ndarray]:
  """The classifier in HF's *ForSequenceClassification names (torch layout); the pooler is
  exported with the encoder (convert.unstack)."""
  head = {k: {n: np.asarray(a) for n, a in v.items()} for k, v in head.items()}
  if head_kind == 'mlp' and not has_own_head(config):
    return {'classifier.dense.weight': head['dense']['kernel'].T,
            'classifier.dense.bias': head['dense']['bias'],
            'classifier.out_proj.weight': head['out_proj']['kernel'].T,
            'classifier.out_proj.bias': head['out_proj']['bias']}
  name = 'classifier.out_proj' if config.model_type == 'electra' else 'classifier'
  return {f'{name}.weight': head['classifier']['kernel'].T,
          f'{name}.bias': head['classifier']['bias']}

