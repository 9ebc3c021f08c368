"""Shared fixtures: the real GLUE files in ../shared, the packaged MiniLM, tiny random HF models."""

import pathlib

import numpy as np
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
GLUE = ROOT.parent / 'shared' / 'glue'


@pytest.fixture(scope='session')
def glue_dir() -> pathlib.Path:
  if not GLUE.is_dir():
    pytest.skip('../shared/glue is not beside the project')
  return GLUE


@pytest.fixture(scope='session')
def minilm():
  import jaxtransfer as jt
  return jt.load_pretrained('minilm-l6')


def _tiny_hf_config(model_type: str):
  import transformers
  common = dict(hidden_size=32, num_hidden_layers=3, num_attention_heads=4, intermediate_size=64,
                max_position_embeddings=64, vocab_size=100)
  if model_type == 'roberta':
    return transformers.RobertaConfig(**common, type_vocab_size=1, pad_token_id=1)
  return transformers.BertConfig(**common, type_vocab_size=2)


@pytest.fixture(scope='session', params=['bert', 'roberta'])
def tiny_hf_dir(request, tmp_path_factory) -> pathlib.Path:
  """A randomly initialised HF model saved with save_pretrained (weights + config, no tokenizer)."""
  import torch
  import transformers
  torch.manual_seed(0)
  model = transformers.AutoModel.from_config(_tiny_hf_config(request.param)).eval()
  # Random LayerNorm and bias values, so that a wrongly mapped parameter cannot hide behind 1/0 init.
  with torch.no_grad():
    for name, p in model.named_parameters():
      if 'LayerNorm' in name or name.endswith('bias'):
        p.add_(0.1 * torch.randn_like(p))
  path = tmp_path_factory.mktemp(f'tiny-{request.param}')
  model.save_pretrained(path)
  return path


def random_batch(rng: np.random.Generator, vocab: int, batch: int, seq: int, pad_id: int,
                 first_id: int = 2):
  """Token ids in [first_id, vocab) with a random amount of right padding per row."""
  ids = rng.integers(first_id, vocab, size=(batch, seq))
  lengths = rng.integers(2, seq + 1, size=batch)
  mask = (np.arange(seq)[None] < lengths[:, None]).astype(np.int32)
  ids = np.where(mask > 0, ids, pad_id).astype(np.int32)
  types = ((np.arange(seq)[None] >= lengths[:, None] // 2) * mask).astype(np.int32)
  return ids, mask, types


def labelled_batch(pre, n: int, seed: int, seq: int = 12) -> dict:
  """A random batch for `pre` (a Pretrained) with labels a model can learn (token 1's parity)."""
  ids, mask, types = random_batch(np.random.default_rng(seed), pre.config.vocab_size, n, seq,
                                  pre.config.pad_token_id)
  if pre.config.type_vocab_size == 1:
    types = np.zeros_like(types)
  if pre.config.model_type == 'roberta':  # no token may equal the padding index inside a sentence
    ids = np.where(mask > 0, np.maximum(ids, pre.config.pad_token_id + 2), pre.config.pad_token_id)
  return {'input_ids': ids, 'attention_mask': mask, 'token_type_ids': types,
          'labels': (ids[:, 1] % 2).astype(np.int32)}


def flat_params(tree) -> dict:
  """A pytree's leaves as numpy arrays keyed by their dict-key path, to compare leaf by leaf."""
  import jax  # pylint: disable=g-import-not-at-top  (conftest loads before tests set XLA_FLAGS)
  return {tuple(k.key for k in p): np.asarray(v)
          for p, v in jax.tree_util.tree_flatten_with_path(tree)[0]}


def same_bits(a, b) -> bool:
  """Equal float32 bit patterns (stricter than ==: tells -0.0 from 0.0, matches NaNs)."""
  a, b = np.asarray(a, np.float32), np.asarray(b, np.float32)
  return a.shape == b.shape and np.array_equal(a.view(np.uint32), b.view(np.uint32))


def make_tiny_model_dir(path: pathlib.Path, model_type: str = 'bert', num_layers: int = 3,
                        seed: int = 0, dropout: float = 0.1) -> pathlib.Path:
  """A small random BERT/RoBERTa in HF format with the packaged MiniLM's tokenizer files beside it,
  so that real text can be tokenized while a training step costs milliseconds."""
  import shutil

  import jax

  import jaxtransfer as jt
  from jaxtransfer.models import bert, convert, pretrained
  hf = {'model_type': model_type, 'architectures': ['BertModel' if model_type == 'bert' else 'RobertaModel'],
        'vocab_size': 30522, 'hidden_size': 32, 'num_hidden_layers': num_layers,
        'num_attention_heads': 4, 'intermediate_size': 64, 'max_position_embeddings': 130,
        'type_vocab_size': 2 if model_type == 'bert' else 1, 'layer_norm_eps': 1e-12,
        'hidden_act': 'gelu', 'initializer_range': 0.02, 'hidden_dropout_prob': dropout,
        'attention_probs_dropout_prob': dropout, 'pad_token_id': 0}
  cfg = jt.EncoderConfig.from_hf(hf, has_pooler=model_type == 'bert')
  params = jax.tree.map(np.asarray, bert.init_params(cfg, jax.random.key(seed)))
  path.mkdir(parents=True, exist_ok=True)
  convert.export(str(path), params, hf)
  src = pathlib.Path(pretrained.resolve('minilm-l6'))
  for name in ('vocab.txt', 'tokenizer.json', 'tokenizer_config.json', 'special_tokens_map.json'):
    if (src / name).exists():
      shutil.copy(src / name, path / name)
  return path


class CaptureHooks:
  """engine.TrialHooks keeping every ok trial's final params: {trial_id: (trial, TrialParams)}."""

  def __init__(self):
    self.got = {}

  def uses_params(self, program):
    return True

  def metrics(self, trial, params):
    return {}

  def write_outputs(self, trial, params):
    self.got[trial.trial_id] = (trial, params)


@pytest.fixture(scope='session')
def tiny_model_dir(tmp_path_factory) -> pathlib.Path:
  return make_tiny_model_dir(tmp_path_factory.mktemp('tiny-bert-tok'))
