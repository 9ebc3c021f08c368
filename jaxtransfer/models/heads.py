"""Each family's sequence-classification head, as HF's `...ForSequenceClassification` builds it.

Every head is a pooler (the `pooler` entry of the params: dense + activation, ModernBERT adds a
norm) followed by dropout and the linear classifier (`LinearHead`), so the pooler is what
a study keeps, trains or freezes like BERT's:

  bert, roberta  pooler: tanh(dense(x[CLS]))                              (BertPooler)
  distilbert     pooler: relu(pre_classifier(x)), then seq_classif_dropout
  electra        pooler: gelu(dense(dropout(x))), classifier = out_proj   (ElectraClassificationHead)
  deberta-v2     pooler: act(dense(dropout(x))), then cls_dropout          (ContextPooler)
  modernbert     pooler: norm(act(dense(x))), then classifier_dropout      (ModernBertPredictionHead;
                 a ModernBertForMaskedLM checkpoint's `head` is this pretrained pooler, as in HF)

RoBERTa's and MPNet's own head (dense-tanh-out_proj on <s>, without a pretrained pooler: HF's
RobertaClassificationHead, MPNetClassificationHead) is `MlpHead`, fresh in HF's init
(normal(initializer_range) kernels, zero biases) under every reinit_scheme.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxtransfer.models import blocks
from jaxtransfer.models import config as model_config

Params = dict[str, Any]
# Families whose classifier is always their own pooler + linear ('pooler' and 'mlp' both mean it).
OWN_HEAD = ('distilbert', 'electra', 'deberta-v2', 'modernbert')
# Families whose HF classifier is a dense-tanh-out_proj on <s> that never reads the pooler, even
# when the checkpoint carries one (a RobertaModel or MPNetModel saved with save_pretrained does).
MLP_HEAD = ('roberta', 'mpnet')


def torch_linear_init(fan_in: int) -> dict:
  """torch.nn.Linear's default init: kaiming_uniform(a=sqrt(5)) weights and uniform biases, both
  U(-1/sqrt(fan_in), 1/sqrt(fan_in))."""
  bound = 1.0 / np.sqrt(fan_in)
  uniform = lambda key, shape, dtype=jnp.float32: jax.random.uniform(key, shape, dtype, -bound,
                                                                     bound)
  return {'kernel_init': uniform, 'bias_init': uniform}


class MlpHead(nn.Module):
  """dropout -> Linear(H,H) -> tanh -> dropout -> Linear(H,C): RoBERTa's classification head (and Xie's).

  `torch_init`: PyTorch's default Linear init (Xie et al.'s head is a plain PyTorch module)
  instead of BERT's normal(init_std) kernels and zero biases."""
  hidden: int
  num_labels: int
  dropout: float
  init_std: float
  torch_init: bool = False

  @nn.compact
  def __call__(self, x, deterministic: bool = True):
    def init(fan_in):
      if self.torch_init:
        return torch_linear_init(fan_in)
      return {'kernel_init': nn.initializers.normal(self.init_std)}

    x = nn.Dropout(self.dropout)(x, deterministic=deterministic)
    x = jnp.tanh(nn.Dense(self.hidden, name='dense', **init(x.shape[-1]))(x))
    x = nn.Dropout(self.dropout)(x, deterministic=deterministic)
    return nn.Dense(self.num_labels, name='out_proj', **init(self.hidden))(x)


class LinearHead(nn.Module):
  """dropout -> Linear(H,C): BertForSequenceClassification's classifier after the pooler."""
  num_labels: int
  dropout: float
  init_std: float

  @nn.compact
  def __call__(self, x, deterministic: bool = True):
    x = nn.Dropout(self.dropout)(x, deterministic=deterministic)
    return nn.Dense(self.num_labels, kernel_init=nn.initializers.normal(self.init_std),
                    name='classifier')(x)


def has_own_head(config: model_config.EncoderConfig) -> bool:
  return config.model_type in OWN_HEAD


def _act(name: str):
  return jnp.tanh if name == 'tanh' else model_config.activation(name)


def _modernbert_std(config: model_config.EncoderConfig) -> float:
  # ModernBERT's _init_weights: "out" std for the prediction head's dense layer.
  return config.initializer_range / math.sqrt(2.0 * config.num_layers)


def init_pooler(config: model_config.EncoderConfig, rng) -> Params:
  """A fresh pooler in the family's init (HF's _init_weights)."""
  c, h = config, config.hidden_size
  if c.model_type != 'modernbert':
    dense = nn.Dense(h, kernel_init=nn.initializers.normal(c.initializer_range))
    return dense.init(rng, jnp.zeros((1, h)))['params']
  std, cut = _modernbert_std(c), c.initializer_cutoff
  kernel = std * jax.random.truncated_normal(rng, -cut, cut, (h, h), jnp.float32)
  dense = {'kernel': kernel, **({'bias': jnp.zeros(h, jnp.float32)} if c.pooler_bias else {})}
  norm = {'scale': jnp.ones(h, jnp.float32), **({'bias': jnp.zeros(h, jnp.float32)} if c.norm_biases else {})}
  return {'dense': dense, 'norm': norm}


def pool(config: model_config.EncoderConfig, pooler: Params, v, *, dtype=jnp.float32,
         deterministic: bool = True, rng=None) -> jax.Array:
  """The pooler on the pooled vectors v (B, H)."""
  c = config
  if c.pooler_dropout and not deterministic:
    v = nn.Dropout(c.pooler_dropout).apply({}, v, False, rngs={'dropout': rng})
  if c.model_type == 'modernbert':
    dense = nn.Dense(c.hidden_size, dtype=dtype, use_bias=c.pooler_bias)
    h = _act(c.pooler_act)(dense.apply({'params': pooler['dense']}, v))
    norm = nn.LayerNorm(epsilon=c.layer_norm_eps, dtype=dtype, use_bias=c.norm_biases)
    return norm.apply({'params': pooler['norm']}, h)
  dense = blocks.dense(c, c.hidden_size, 'pooler', dtype)
  return _act(c.pooler_act)(dense.apply({'params': pooler}, v))


def classifier_dropout(config: model_config.EncoderConfig) -> float:
  """The dropout before the final linear layer."""
  if config.classifier_dropout is None:
    return config.hidden_dropout
  return config.classifier_dropout


def classifier_std(config: model_config.EncoderConfig) -> float:
  """The init std of a fresh classifier (ModernBERT: hidden_size**-0.5, "final_out")."""
  return config.hidden_size ** -0.5 if config.model_type == 'modernbert' else config.initializer_range


def export_head(config: model_config.EncoderConfig, head_kind: str, head: Params) -> dict[str, np.ndarray]:
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


def pooler_head_as_roberta(pooler: Params, head: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
  """A RoBERTa-family head=pooler classifier (pooler + linear, BERT's) in the names of HF's
  RobertaClassificationHead, which has no pooler: its dense-tanh-out_proj on the first token is
  the same function (only where dropout sits in training differs)."""
  return {'classifier.dense.weight': np.asarray(pooler['kernel']).T,
          'classifier.dense.bias': np.asarray(pooler['bias']),
          'classifier.out_proj.weight': head['classifier.weight'],
          'classifier.out_proj.bias': head['classifier.bias']}


def export_config(config: model_config.EncoderConfig, pooling: str) -> dict[str, Any]:
  """HF config keys that make the exported classifier pool as the trial did."""
  if config.model_type == 'modernbert':
    return {'classifier_pooling': pooling}
  return {}


def label_config(num_labels: int, label_names: Sequence[str] = ()) -> dict[str, Any]:
  """HF config keys naming the exported classifier's outputs: the task's class names (in class-id
  order) as id2label / label2id, so a reloaded model predicts names; one output is regression."""
  if num_labels == 1:
    return {'num_labels': 1, 'problem_type': 'regression'}
  if not label_names:  # no task at hand: transformers fills in its LABEL_i names
    return {'num_labels': num_labels}
  names = [str(n) for n in label_names]  # JSON keys and values: a custom task's ids may be ints
  if len(names) != num_labels:
    raise ValueError(f'{num_labels} classifier outputs but {len(names)} label names {names}')
  return {'num_labels': num_labels, 'id2label': dict(enumerate(names)),
          'label2id': {n: i for i, n in enumerate(names)}}
