"""HF state dict <-> stacked Flax pytree, as a pure pair (`stack`, `unstack`), and HF export.

One `Layout` per family says where HF keeps each parameter; models/bert.py's docstring says what
each entry of the stacked pytree is. Every HF module maps onto one entry (ModernBERT's fused
Wqkv onto query, key and value), so `unstack(stack(state)) == state` exactly.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from typing import Any

import numpy as np

from jaxtransfer.runtime import files
from jaxtransfer.models import config as model_config
from jaxtransfer.errors import UserError


@dataclasses.dataclass(frozen=True)
class Layout:
  """Where one family's HF checkpoint keeps the parameters of our pytree."""
  prefix: str                     # base_model_prefix of HF's task models ('bert.', 'model.', ...)
  layers: str                     # the module list of the blocks
  block: dict[str, Any]           # HF module inside a layer -> block entry (a tuple: split in parts)
  embeddings: dict[str, str]      # HF module outside the layers -> `embeddings` entry
  pooler: dict[str, str]          # HF module -> `pooler` entry ('' = the pooler is one Linear)
  pooler_in_base: bool            # the pooler belongs to the base model (BERT), not the task head
  model_class: str                # HF class name stem, for `architectures`
  ignored: tuple[str, ...] = ()   # key prefixes that are no encoder parameters (buffers, heads)

  def entry_kind(self, name: str) -> str:
    if name.endswith('embeddings') or name == 'relative_attention_bias':
      return 'table'
    if name.endswith(('_ln', 'LayerNorm', 'norm')):
      return 'norm'
    return 'linear'


_BERT_BLOCK = {
    'attention.self.query': 'query',
    'attention.self.key': 'key',
    'attention.self.value': 'value',
    'attention.output.dense': 'attention_output',
    'attention.output.LayerNorm': 'attention_ln',
    'intermediate.dense': 'intermediate',
    'output.dense': 'output',
    'output.LayerNorm': 'output_ln',
}
_BERT_EMBEDDINGS = {f'embeddings.{t}': t for t in
                    ('word_embeddings', 'position_embeddings', 'token_type_embeddings', 'LayerNorm')}
_BUFFERS = ('embeddings.position_ids', 'embeddings.token_type_ids')
# Pretraining and task heads of BERT/RoBERTa checkpoints.
_BERT_HEADS = _BUFFERS + ('cls.', 'lm_head.', 'classifier.', 'qa_outputs.', 'score.')
BLOCK_MODULES = _BERT_BLOCK  # BERT's names, kept for callers that read them

LAYOUTS = {
    'bert': Layout('bert.', 'encoder.layer', _BERT_BLOCK, _BERT_EMBEDDINGS, {'pooler.dense': ''},
                   True, 'Bert', _BERT_HEADS),
    'roberta': Layout('roberta.', 'encoder.layer', _BERT_BLOCK, _BERT_EMBEDDINGS,
                      {'pooler.dense': ''}, True, 'Roberta', _BERT_HEADS),
    'electra': Layout('electra.', 'encoder.layer', _BERT_BLOCK,
                      {**_BERT_EMBEDDINGS, 'embeddings_project': 'embeddings_project'},
                      {'classifier.dense': ''}, False, 'Electra',
                      _BUFFERS + ('classifier.out_proj.', 'discriminator_predictions.',
                                  'generator_predictions.', 'generator_lm_head.', 'qa_outputs.')),
    'distilbert': Layout(
        'distilbert.', 'transformer.layer',
        {'attention.q_lin': 'query', 'attention.k_lin': 'key', 'attention.v_lin': 'value',
         'attention.out_lin': 'attention_output', 'sa_layer_norm': 'attention_ln',
         'ffn.lin1': 'intermediate', 'ffn.lin2': 'output', 'output_layer_norm': 'output_ln'},
        {f'embeddings.{t}': t for t in ('word_embeddings', 'position_embeddings', 'LayerNorm')},
        {'pre_classifier': ''}, False, 'DistilBert',
        _BUFFERS + ('vocab_transform.', 'vocab_layer_norm.', 'vocab_projector.', 'classifier.',
                    'qa_outputs.')),
    'deberta-v2': Layout(
        'deberta.', 'encoder.layer',
        {'attention.self.query_proj': 'query', 'attention.self.key_proj': 'key',
         'attention.self.value_proj': 'value', 'attention.self.pos_key_proj': 'pos_key',
         'attention.self.pos_query_proj': 'pos_query', **{k: v for k, v in _BERT_BLOCK.items()
                                                           if not k.startswith('attention.self')}},
        {**_BERT_EMBEDDINGS, 'embeddings.embed_proj': 'embed_proj',
         'encoder.rel_embeddings': 'rel_embeddings', 'encoder.LayerNorm': 'rel_embeddings_norm'},
        {'pooler.dense': ''}, False, 'DebertaV2',
        _BUFFERS + ('lm_predictions.', 'mask_predictions.', 'cls.', 'classifier.', 'qa_outputs.')),
    'modernbert': Layout(
        'model.', 'layers',
        {'attn_norm': 'attention_ln', 'attn.Wqkv': ('query', 'key', 'value'),
         'attn.Wo': 'attention_output', 'mlp_norm': 'output_ln', 'mlp.Wi': 'intermediate',
         'mlp.Wo': 'output'},
        {'embeddings.tok_embeddings': 'word_embeddings', 'embeddings.norm': 'LayerNorm',
         'final_norm': 'final_norm'},
        {'head.dense': 'dense', 'head.norm': 'norm'}, False, 'ModernBert',
        ('decoder.', 'classifier.')),
    'mpnet': Layout(
        'mpnet.', 'encoder.layer',
        {'attention.attn.q': 'query', 'attention.attn.k': 'key', 'attention.attn.v': 'value',
         'attention.attn.o': 'attention_output', 'attention.LayerNorm': 'attention_ln',
         **{k: v for k, v in _BERT_BLOCK.items() if not k.startswith('attention.')}},
        {**{k: v for k, v in _BERT_EMBEDDINGS.items() if v != 'token_type_embeddings'},
         'encoder.relative_attention_bias': 'relative_attention_bias'},
        {'pooler.dense': ''}, True, 'MPNet', _BERT_HEADS),
}
_PREFIXES = tuple(sorted({lay.prefix for lay in LAYOUTS.values()}))


def layout(config: model_config.EncoderConfig | None) -> Layout:
  return LAYOUTS[config.model_type if config is not None else 'bert']


def _strip_prefix(state: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
  """Task models (`BertForSequenceClassification`, `RobertaForMaskedLM`) prefix the encoder keys."""
  out = {}
  for k, v in state.items():
    for p in _PREFIXES:
      if k.startswith(p):
        k = k[len(p):]
        break
    out[k] = v
  return out


# Old TF-converted checkpoints say gamma/beta for LayerNorm weight/bias.
_NORM_LEAF = {'weight': 'scale', 'gamma': 'scale', 'beta': 'bias', 'bias': 'bias'}
_LINEAR_LEAF = {'weight': 'kernel', 'bias': 'bias'}


def _leaf(kind: str, param: str, value: np.ndarray) -> tuple[str, np.ndarray]:
  if kind == 'table':
    return 'embedding', value
  if kind == 'norm':
    return _NORM_LEAF[param], value
  leaf = _LINEAR_LEAF[param]
  return leaf, (value.T if leaf == 'kernel' else value)


def _hf_leaves(kind: str, tree: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
  """An entry's leaves in HF naming and torch layout."""
  if kind == 'table':
    return {'weight': np.asarray(tree['embedding'])}
  out = {}
  for leaf, value in tree.items():
    value = np.asarray(value)
    if leaf == 'kernel':
      out['weight'] = np.ascontiguousarray(value.T)
    else:
      out['weight' if leaf == 'scale' else 'bias'] = value
  return out


def stack(state: dict[str, np.ndarray], config: model_config.EncoderConfig | None = None) -> dict[str, Any]:
  """HF state dict (torch layout, numpy arrays) -> params with blocks on axis 0.

  `config` names the family (default BERT); it also drops tables the architecture does not use
  (DeBERTa-v3 checkpoints carry position_embeddings that HF ignores too).
  """
  lay = layout(config)
  family = config.model_type if config is not None else 'bert'
  state = _strip_prefix(state)
  layer_re = re.compile(rf'^{re.escape(lay.layers)}\.(\d+)\.(.+)\.(weight|bias|gamma|beta)$')
  emb: dict[str, Any] = {}
  pooler: dict[str, Any] = {}
  layers: dict[int, dict[str, dict[str, np.ndarray]]] = {}
  unknown = []
  for key, value in state.items():
    value = np.asarray(value)
    if m := layer_re.match(key):
      i, module, param = int(m[1]), m[2], m[3]
      name = lay.block.get(module)
      if name is None:
        unknown.append(key)
        continue
      if isinstance(name, tuple):  # a fused matrix: equal parts along HF's output axis
        for part, chunk in zip(name, np.split(value, len(name), axis=0)):
          leaf, v = _leaf('linear', param, chunk)
          layers.setdefault(i, {}).setdefault(part, {})[leaf] = v
        continue
      leaf, v = _leaf(lay.entry_kind(name), param, value)
      layers.setdefault(i, {}).setdefault(name, {})[leaf] = v
      continue
    module, _, param = key.rpartition('.')
    if module in lay.embeddings:
      name = lay.embeddings[module]
      if name == 'position_embeddings' and config is not None and not config.absolute_positions:
        continue
      leaf, v = _leaf(lay.entry_kind(name), param, value)
      emb.setdefault(name, {})[leaf] = v
    elif module in lay.pooler:
      name = lay.pooler[module]
      leaf, v = _leaf(lay.entry_kind(name) if name else 'linear', param, value)
      (pooler.setdefault(name, {}) if name else pooler)[leaf] = v
    elif not key.startswith(lay.ignored):
      unknown.append(key)
  if unknown:
    raise ValueError(f'Unrecognised {family} parameters: {sorted(unknown)[:8]}')
  params = {'embeddings': emb, 'blocks': _stack_layers(layers, family)}
  if pooler:
    params['pooler'] = pooler
  return params


def _stack_layers(layers: dict[int, dict[str, dict[str, np.ndarray]]], family: str):
  """{layer index: {entry: {leaf: array}}} -> {entry: {leaf: array stacked on axis 0}}."""
  if not layers or sorted(layers) != list(range(len(layers))):
    raise ValueError(f'Encoder layers must be numbered 0..L-1, found {sorted(layers)}')
  if family == 'modernbert' and 'attention_ln' not in layers[0]:
    # HF's layer 0 has no attn_norm (the identity): a neutral 1/0 entry keeps the blocks stacked.
    layers[0]['attention_ln'] = {k: (np.ones_like(v) if k == 'scale' else np.zeros_like(v))
                                 for k, v in layers[0]['output_ln'].items()}
  names = layers[0]
  bad = [i for i in layers if set(layers[i]) != set(names)]
  if bad:
    raise ValueError(f'Layers {bad} have other parameters than layer 0')
  return {name: {leaf: np.stack([layers[i][name][leaf] for i in range(len(layers))])
                 for leaf in names[name]}
          for name in names}


def unstack(params: dict[str, Any], config: model_config.EncoderConfig | None = None, *,
            with_prefix: bool = False) -> dict[str, np.ndarray]:
  """Inverse of `stack`: params -> HF state dict (torch layout).

  Base-model names (AutoModel's) by default; `with_prefix` adds the task model's prefix
  (`bert.`, `model.`, ...) to the encoder keys, as a `*ForSequenceClassification` checkpoint has.
  """
  lay = layout(config)
  family = config.model_type if config is not None else 'bert'
  base = lay.prefix if with_prefix else ''
  state = {}
  emb = params['embeddings']
  for module, name in lay.embeddings.items():
    if name in emb:
      for param, v in _hf_leaves(lay.entry_kind(name), emb[name]).items():
        state[f'{base}{module}.{param}'] = v
  blocks = params['blocks']
  n = np.asarray(blocks['query']['kernel']).shape[0]
  for i in range(n):
    for module, name in lay.block.items():
      pre = f'{base}{lay.layers}.{i}.{module}'
      if isinstance(name, tuple):
        parts = [_hf_leaves('linear', {k: np.asarray(v[i]) for k, v in blocks[p].items()})
                 for p in name]
        for param in parts[0]:
          state[f'{pre}.{param}'] = np.concatenate([p[param] for p in parts], axis=0)
        continue
      if name not in blocks or (family == 'modernbert' and name == 'attention_ln' and i == 0):
        continue
      leaves = {k: np.asarray(v[i]) for k, v in blocks[name].items()}
      for param, v in _hf_leaves(lay.entry_kind(name), leaves).items():
        state[f'{pre}.{param}'] = v
  if 'pooler' in params:
    pre = base if lay.pooler_in_base else ''
    for module, name in lay.pooler.items():
      tree = params['pooler'][name] if name else params['pooler']
      kind = lay.entry_kind(name) if name else 'linear'
      for param, v in _hf_leaves(kind, tree).items():
        state[f'{pre}{module}.{param}'] = v
  return state


def read_state_dict(model_dir: str) -> dict[str, np.ndarray]:
  """Reads `model.safetensors` (or sharded safetensors), else `pytorch_model.bin` through torch."""
  files = sorted(f for f in os.listdir(model_dir) if f.endswith('.safetensors'))
  if files:
    from safetensors.numpy import load_file
    state = {}
    for f in files:
      try:
        state.update(load_file(os.path.join(model_dir, f)))
      except Exception as e:  # safetensors raises its own error types for truncated/corrupt files
        raise UserError(
            f'Could not read the checkpoint {os.path.join(model_dir, f)}: {e}. The file is corrupt or '
            'incomplete; re-download the model, or give a valid HF model directory as the model '
            '(load_pretrained\'s argument, or --config.model).') from None
    return state
  bin_path = os.path.join(model_dir, 'pytorch_model.bin')
  if os.path.exists(bin_path):
    try:
      import torch
    except ImportError:
      raise UserError(
          f'{model_dir} has only pytorch_model.bin, which needs PyTorch to read, and torch is not '
          'installed. Install the CPU build (`pip install torch`) or convert the checkpoint to '
          'model.safetensors.') from None
    try:
      state = torch.load(bin_path, map_location='cpu', weights_only=True)
    except Exception as e:
      raise UserError(f'Could not read the checkpoint {bin_path}: {e}. Re-download the model or '
                      'convert it to model.safetensors.') from None
    return {k: v.float().numpy() if v.is_floating_point() else v.numpy() for k, v in state.items()}
  raise UserError(
      f'No weights in model directory {model_dir}: expected model.safetensors or pytorch_model.bin '
      'next to config.json. Give as the model (load_pretrained\'s argument, or --config.model) a '
      'directory saved with save_pretrained, a hub id, or minilm-l6.')


def export_config(hf_config: dict[str, Any], config: model_config.EncoderConfig, num_blocks: int,
                  with_head: bool) -> dict[str, Any]:
  """The source config.json made consistent with `num_blocks` stacked blocks."""
  cfg = dict(hf_config)
  if config.model_type == 'distilbert':
    cfg.pop('num_hidden_layers', None)  # DistilBertConfig's own key is n_layers
    cfg['n_layers'] = num_blocks
  else:
    cfg['num_hidden_layers'] = num_blocks
  if config.model_type == 'modernbert' and cfg.get('layer_types'):
    cfg['layer_types'] = list(cfg['layer_types'])[:num_blocks]
  cfg['architectures'] = [architecture(config, with_head)]
  return cfg


# HF model_types that share a family's layout (roberta) but have transformers classes of their own.
_OWN_CLASS_STEMS = {'xlm-roberta': 'XLMRoberta', 'camembert': 'Camembert'}


def architecture(config: model_config.EncoderConfig, with_head: bool) -> str:
  """The transformers class of an export (`architectures`), from the source's HF model_type:
  its *ForSequenceClassification with a classifier, else its bare *Model."""
  stem = _OWN_CLASS_STEMS.get(config.hf_model_type, LAYOUTS[config.model_type].model_class)
  return stem + ('ForSequenceClassification' if with_head else 'Model')


def export(model_dir: str, params: dict[str, Any], hf_config: dict[str, Any],
           head: dict[str, np.ndarray] | None = None) -> None:
  """Writes `config.json` + `model.safetensors` loadable by `transformers.AutoModel`.

  Encoder keys carry the family's prefix (`bert.`, `roberta.`, `model.`, ...), as a
  `*ForSequenceClassification` checkpoint does; `head` holds extra HF-named tensors (e.g.
  `classifier.weight`). AutoModel strips the prefix, and the matching sequence-classification
  class also picks up the pooler and head.
  """
  from safetensors.numpy import save_file
  config = model_config.EncoderConfig.from_hf(hf_config)
  num_blocks = int(np.shape(params['blocks']['query']['kernel'])[0])
  os.makedirs(model_dir, exist_ok=True)
  state = {k: np.ascontiguousarray(v, dtype=np.float32)
           for k, v in unstack(params, config, with_prefix=True).items()}
  for k, v in (head or {}).items():
    state[k] = np.ascontiguousarray(v, dtype=np.float32)
  with files.atomic_path(os.path.join(model_dir, 'model.safetensors')) as tmp:
    save_file(state, tmp, metadata={'format': 'pt'})
  with files.atomic_write(os.path.join(model_dir, 'config.json')) as f:
    json.dump(export_config(hf_config, config, num_blocks, head is not None), f, indent=2,
              sort_keys=True)
