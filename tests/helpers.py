"""Helpers the tests share (plain functions; the fixtures are in conftest.py)."""

import math
import os
import pathlib
import subprocess
import sys

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]
GLUE = ROOT.parent / 'shared' / 'glue'


def run_main(*args, env=None, timeout=300):
  env = {**os.environ, 'HF_HUB_OFFLINE': '1', **(env or {})}
  return subprocess.run([sys.executable, '-m', 'jaxtransfer.main', *args], cwd=ROOT, env=env,
                        capture_output=True, text=True, timeout=timeout)


def assert_bad_input(proc, *needles):
  assert proc.returncode == 2, (proc.returncode, proc.stderr[-2000:])
  err = proc.stderr
  assert 'Traceback' not in err, err
  flat = ' '.join(err.split())  # the paragraph is wrapped at 100 columns wherever a path ends
  for n in needles:
    assert n in flat, (n, err[-2000:])


def matmul_flops(jaxpr) -> float:
  """FLOPs of every dot_general in a jaxpr; scan bodies count `length` times."""
  from jax.extend import core as jcore  # after the tests set XLA_FLAGS
  total = 0.0
  for eqn in jaxpr.eqns:
    if eqn.primitive.name == 'dot_general':
      (contract, _), _ = eqn.params['dimension_numbers']
      lhs = eqn.invars[0].aval.shape
      total += 2.0 * math.prod(eqn.outvars[0].aval.shape) * math.prod(lhs[d] for d in contract)
      continue
    subs = [x.jaxpr if isinstance(x, jcore.ClosedJaxpr) else x
            for v in eqn.params.values() for x in (v if isinstance(v, (tuple, list)) else (v,))
            if isinstance(x, (jcore.ClosedJaxpr, jcore.Jaxpr))]
    assert eqn.primitive.name != 'while' or not subs, 'unknown trip count'
    if eqn.primitive.name == 'cond':
      total += max(map(matmul_flops, subs))
    else:
      total += eqn.params.get('length', 1) * sum(map(matmul_flops, subs))
  return total


def load_config(path, *overrides):
  """A config file with overrides, parsed as the command line parses it (locked)."""
  from absl import flags
  from ml_collections import config_flags
  argv = ['prog', f'--config={path}', *overrides]
  fv = flags.FlagValues()
  # config_flags finds the overrides in sys.argv unless given its own argv.
  config_flags.DEFINE_config_file('config', None, flag_values=fv, lock_config=True, sys_argv=argv)
  fv(argv)
  return fv.config


def _tiny_hf_config(model_type: str):
  import transformers
  common = dict(hidden_size=32, num_hidden_layers=3, num_attention_heads=4, intermediate_size=64,
                max_position_embeddings=64, vocab_size=100)
  if model_type == 'roberta':
    return transformers.RobertaConfig(**common, type_vocab_size=1, pad_token_id=1)
  return transformers.BertConfig(**common, type_vocab_size=2)


def random_hf_dir(path: pathlib.Path, model_type: str) -> pathlib.Path:
  """A randomly initialised HF model saved with save_pretrained (weights + config, no tokenizer)."""
  import torch
  import transformers
  torch.manual_seed(0)
  model = transformers.AutoModel.from_config(_tiny_hf_config(model_type)).eval()
  # Random LayerNorm and bias values, so that a wrongly mapped parameter cannot hide behind 1/0 init.
  with torch.no_grad():
    for name, p in model.named_parameters():
      if 'LayerNorm' in name or name.endswith('bias'):
        p.add_(0.1 * torch.randn_like(p))
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
                        seed: int = 0, dropout: float = 0.1,
                        initializer_range: float = 0.02) -> pathlib.Path:
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
        'hidden_act': 'gelu', 'initializer_range': initializer_range,
        'hidden_dropout_prob': dropout,
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


def run_compare(*args, timeout=120):
  """`python -m jaxtransfer.compare ARGS` from the project root."""
  return subprocess.run([sys.executable, '-m', 'jaxtransfer.compare', *map(str, args)], cwd=ROOT,
                        env={**os.environ, 'HF_HUB_OFFLINE': '1'}, capture_output=True, text=True,
                        timeout=timeout)


def predictions_by_trial(workdir) -> dict:
  """{trial_id: runtime.predictions.TrialPredictions} of a workdir's ok records, each read from the
  file its record's group names."""
  from jaxtransfer.runtime import predictions, records
  recs = records.read_records(pathlib.Path(workdir) / 'trials.jsonl')
  return predictions.for_records(str(workdir), recs)


def study_context(pre, config_module, **overrides):
  """A study Context on SST-2 for `pre`, from a config file's get_config() with overrides."""
  from jaxtransfer.data import glue
  from jaxtransfer.studies import base
  config = config_module.get_config()
  for k, v in overrides.items():
    config[k] = v
  return base.Context(config, '', pre, glue.get_task('sst2'), None)


def init_program(program, pre, seed: int = 1):
  """A program's trainable and frozen trees, jit-initialized from `pre` with its default arrays."""
  import jax
  import jax.numpy as jnp
  arrays = {k: jnp.asarray(v) for k, v in program.defaults().items()}
  train, frozen = jax.jit(program.init)(pre.params, arrays, jax.random.key(seed))
  return train, frozen, arrays
