"""HF state dict <-> stacked Flax pytree, as a pure pair (`stack`, `unstack`), and HF export."""

from __future__ import annotations

import json
import os
import re
from typing import Any

import numpy as np

from jaxtransfer import files
from jaxtransfer.errors import UserError

# HF name inside `encoder.layer.<i>.` -> our block submodule. Every entry is a Linear or LayerNorm.
BLOCK_MODULES = {
    'attention.self.query': 'query',
    'attention.self.key': 'key',
    'attention.self.value': 'value',
    'attention.output.dense': 'attention_output',
    'attention.output.LayerNorm': 'attention_ln',
    'intermediate.dense': 'intermediate',
    'output.dense': 'output',
    'output.LayerNorm': 'output_ln',
}
EMBEDDING_TABLES = ('word_embeddings', 'position_embeddings', 'token_type_embeddings')
_LAYER = re.compile(r'^encoder\.layer\.(\d+)\.(.+)\.(weight|bias|gamma|beta)$')
# Checkpoint keys that are not encoder parameters (buffers, pretraining heads, task heads).
_IGNORED = re.compile(r'^(embeddings\.position_ids|embeddings\.token_type_ids|cls\.|lm_head\.|'
                      r'classifier\.|qa_outputs\.|score\.)')
_PREFIXES = ('bert.', 'roberta.', 'model.')


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


def _ln_name(kind: str) -> str:
  # Old TF-converted checkpoints say gamma/beta for LayerNorm weight/bias.
  return {'weight': 'scale', 'gamma': 'scale', 'beta': 'bias', 'bias': 'bias'}[kind]


def stack(state: dict[str, np.ndarray]) -> dict[str, Any]:
  """HF BERT/RoBERTa state dict (torch layout, numpy arrays) -> params with blocks on axis 0."""
  state = _strip_prefix(state)
  emb: dict[str, Any] = {}
  pooler: dict[str, Any] = {}
  layers: dict[int, dict[str, dict[str, np.ndarray]]] = {}
  unknown = []
  for key, value in state.items():
    value = np.asarray(value)
    if m := _LAYER.match(key):
      i, module, kind = int(m[1]), m[2], m[3]
      if module not in BLOCK_MODULES:
        unknown.append(key)
        continue
      name = BLOCK_MODULES[module]
      if name.endswith('_ln'):
        leaf = _ln_name(kind)
      else:
        leaf = 'kernel' if kind == 'weight' else 'bias'
        value = value.T if kind == 'weight' else value
      layers.setdefault(i, {}).setdefault(name, {})[leaf] = value
    elif key.startswith('embeddings.LayerNorm.'):
      emb.setdefault('LayerNorm', {})[_ln_name(key.rsplit('.', 1)[1])] = value
    elif key.startswith('embeddings.') and key.split('.')[1] in EMBEDDING_TABLES:
      emb[key.split('.')[1]] = {'embedding': value}
    elif key == 'pooler.dense.weight':
      pooler['kernel'] = value.T
    elif key == 'pooler.dense.bias':
      pooler['bias'] = value
    elif not _IGNORED.match(key):
      unknown.append(key)
  if unknown:
    raise ValueError(f'Unrecognised BERT/RoBERTa parameters: {sorted(unknown)[:8]}')
  if not layers or sorted(layers) != list(range(len(layers))):
    raise ValueError(f'Encoder layers must be numbered 0..L-1, found {sorted(layers)}')
  blocks = {
      name: {leaf: np.stack([layers[i][name][leaf] for i in range(len(layers))])
             for leaf in layers[0][name]}
      for name in layers[0]
  }
  params = {'embeddings': emb, 'blocks': blocks}
  if pooler:
    params['pooler'] = pooler
  return params


def unstack(params: dict[str, Any]) -> dict[str, np.ndarray]:
  """Inverse of `stack`: params -> HF state dict (base-model names, no prefix, torch layout)."""
  state = {}
  emb = params['embeddings']
  for table in EMBEDDING_TABLES:
    state[f'embeddings.{table}.weight'] = np.asarray(emb[table]['embedding'])
  state['embeddings.LayerNorm.weight'] = np.asarray(emb['LayerNorm']['scale'])
  state['embeddings.LayerNorm.bias'] = np.asarray(emb['LayerNorm']['bias'])
  blocks = params['blocks']
  n = np.asarray(blocks['query']['kernel']).shape[0]
  for i in range(n):
    for module, name in BLOCK_MODULES.items():
      p = {k: np.asarray(v[i]) for k, v in blocks[name].items()}
      pre = f'encoder.layer.{i}.{module}'
      if name.endswith('_ln'):
        state[f'{pre}.weight'], state[f'{pre}.bias'] = p['scale'], p['bias']
      else:
        state[f'{pre}.weight'], state[f'{pre}.bias'] = np.ascontiguousarray(p['kernel'].T), p['bias']
  if 'pooler' in params:
    state['pooler.dense.weight'] = np.ascontiguousarray(np.asarray(params['pooler']['kernel']).T)
    state['pooler.dense.bias'] = np.asarray(params['pooler']['bias'])
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
            'incomplete; re-download the model or point --config.model at a valid HF model '
            'directory.') from None
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
      'next to config.json. Point --config.model at a directory saved with save_pretrained, a hub '
      'id, or minilm-l6.')


def export(model_dir: str, params: dict[str, Any], hf_config: dict[str, Any],
           head: dict[str, np.ndarray] | None = None) -> None:
  """Writes `config.json` + `model.safetensors` loadable by `transformers.AutoModel`.

  Encoder keys carry the model-type prefix (`bert.`/`roberta.`), as a `*ForSequenceClassification`
  checkpoint does; `head` holds extra HF-named tensors (e.g. `classifier.weight`). AutoModel strips
  the prefix, and the matching sequence-classification class also picks up the head.
  """
  from safetensors.numpy import save_file
  os.makedirs(model_dir, exist_ok=True)
  prefix = 'roberta.' if hf_config.get('model_type') == 'roberta' else 'bert.'
  state = {prefix + k: np.ascontiguousarray(v, dtype=np.float32) for k, v in unstack(params).items()}
  for k, v in (head or {}).items():
    state[k] = np.ascontiguousarray(v, dtype=np.float32)
  with files.atomic_path(os.path.join(model_dir, 'model.safetensors')) as tmp:
    save_file(state, tmp, metadata={'format': 'pt'})
  with files.atomic_write(os.path.join(model_dir, 'config.json')) as f:
    json.dump(hf_config, f, indent=2, sort_keys=True)
