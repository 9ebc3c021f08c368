"""Every encoder family against HF transformers' PyTorch model, and the studies run on each.

Each checkpoint is a small random-init HF model written by `save_pretrained`, with its LayerNorm
scales and all biases randomized (a mis-mapped parameter cannot hide behind 1/0; MPNet's relative
position bias at unit scale, where a flipped direction or a wrong bucket shows), and a tiny
BertTokenizerFast over the demo set's words beside it, so the CLI can run real studies on it.
"""

import inspect
import json
import os
import pathlib
import re
import subprocess
import sys

import chex
import jax
import numpy as np
import pytest
import torch
import transformers

import jaxtransfer as jt
from jaxtransfer.models import config as model_config
from jaxtransfer.data import demo as demo_data
from jaxtransfer.core import program as program_lib
from jaxtransfer.errors import UserError
from jaxtransfer.models import bert, convert, heads

ROOT = pathlib.Path(__file__).resolve().parents[1]
ATOL = 1e-4
PAD = 1  # a non-zero padding id: RoBERTa's positions and every padding mask depend on it
SPECIALS = ['[UNK]', '[PAD]', '[CLS]', '[SEP]', '[MASK]']


def _vocab() -> list[str]:
  words = set()
  for s in demo_data.POSITIVE + demo_data.NEGATIVE:
    words.update(re.findall(r'\w+|[^\w\s]', s.lower()))
  return SPECIALS + sorted(words)


VOCAB = len(_vocab())
_SMALL = dict(vocab_size=VOCAB, pad_token_id=PAD, max_position_embeddings=72)
_BERTLIKE = dict(_SMALL, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                 intermediate_size=64)
_DEBERTA = dict(_BERTLIKE, relative_attention=True, pos_att_type='p2c|c2p', position_buckets=8,
                max_relative_positions=32)

# variant -> HF config. DeBERTa: v2 style (unshared position projections, embedding projection,
# absolute positions, token types) and v3 style (shared keys, norm_rel_ebd, no absolute
# positions, no token types); buckets of 8 make a 16-token batch reach the logarithmic ones.
CONFIGS = {
    'distilbert': lambda: transformers.DistilBertConfig(
        **_SMALL, dim=32, n_layers=2, n_heads=4, hidden_dim=64, sinusoidal_pos_embds=True),
    'electra': lambda: transformers.ElectraConfig(**_BERTLIKE, embedding_size=16),
    'xlm-roberta': lambda: transformers.XLMRobertaConfig(**_BERTLIKE, type_vocab_size=1),
    'deberta-v2': lambda: transformers.DebertaV2Config(
        **_DEBERTA, share_att_key=False, position_biased_input=True, type_vocab_size=2,
        embedding_size=16),
    'deberta-v3': lambda: transformers.DebertaV2Config(
        **_DEBERTA, share_att_key=True, norm_rel_ebd='layer_norm', position_biased_input=False,
        type_vocab_size=0),
    # Layers: global, local, global; a half window of 2 makes the local layer see few keys.
    'modernbert': lambda: transformers.ModernBertConfig(
        **_BERTLIKE, local_attention=4, global_attn_every_n_layers=2,
        bos_token_id=2, eos_token_id=3, cls_token_id=2, sep_token_id=3),
    # HF's MPNet always looks up 32 relative buckets (fewer rows are an IndexError there); 16
    # tokens reach the logarithmic ones (distance >= 8). An odd intermediate size.
    'mpnet': lambda: transformers.MPNetConfig(
        **dict(_BERTLIKE, intermediate_size=37), relative_attention_num_buckets=32),
    'modernbert-biases': lambda: transformers.ModernBertConfig(
        **_BERTLIKE, local_attention=4, global_attn_every_n_layers=2, attention_bias=True,
        mlp_bias=True, norm_bias=True, classifier_bias=True,
        bos_token_id=2, eos_token_id=3, cls_token_id=2, sep_token_id=3),
}
STUDY_VARIANTS = ['distilbert', 'electra', 'xlm-roberta', 'deberta-v3', 'modernbert', 'mpnet']


def _save_tokenizer(path: pathlib.Path) -> None:
  (path / 'vocab.txt').write_text('\n'.join(_vocab()) + '\n')
  tok = transformers.BertTokenizerFast(vocab_file=str(path / 'vocab.txt'), do_lower_case=True,
                                       model_max_length=512)
  tok.save_pretrained(str(path))


@pytest.fixture(scope='session', params=sorted(CONFIGS))
def variant(request):
  return request.param


_DIRS = {}


def family_dir(variant: str, tmp_path_factory) -> pathlib.Path:
  """The variant's checkpoint directory (built once per session)."""
  if variant not in _DIRS:
    torch.manual_seed(0)
    model = transformers.AutoModel.from_config(CONFIGS[variant]()).eval()
    with torch.no_grad():
      for name, p in model.named_parameters():
        if 'norm' in name.lower() or name.endswith('bias'):
          p.add_(0.1 * torch.randn_like(p))
        elif 'relative_attention_bias' in name:  # MPNet's shared bias: large enough to matter
          p.add_(torch.randn_like(p))
    path = tmp_path_factory.mktemp(f'family-{variant}')
    model.save_pretrained(path)
    _save_tokenizer(path)
    _DIRS[variant] = path
  return _DIRS[variant]


@pytest.fixture(scope='session')
def model_dir(variant, tmp_path_factory):
  return family_dir(variant, tmp_path_factory)


def _batch(cfg: model_config.EncoderConfig, seed: int, batch: int = 4, seq: int = 16):
  rng = np.random.default_rng(seed)
  ids = rng.integers(len(SPECIALS), cfg.vocab_size, size=(batch, seq))
  lengths = np.array([seq, seq - 3, 5, 2][:batch])
  mask = (np.arange(seq)[None] < lengths[:, None]).astype(np.int32)
  ids = np.where(mask > 0, ids, PAD).astype(np.int32)
  types = ((np.arange(seq)[None] >= lengths[:, None] // 2) * mask).astype(np.int32)
  if cfg.type_vocab_size < 2:
    types = np.zeros_like(types)
  return ids, mask, types


def _torch_inputs(ids, mask, types, model):
  inputs = {'input_ids': torch.tensor(ids, dtype=torch.long),
            'attention_mask': torch.tensor(mask, dtype=torch.long)}
  if 'token_type_ids' in inspect.signature(model.forward).parameters:
    inputs['token_type_ids'] = torch.tensor(types, dtype=torch.long)
  return inputs


def _torch_hidden(path, ids, mask, types):
  model = transformers.AutoModel.from_pretrained(str(path)).eval()
  with torch.no_grad():
    out = model(**_torch_inputs(ids, mask, types, model), output_hidden_states=True)
  return np.stack([h.numpy() for h in out.hidden_states])


def _max_error(ours, ref, mask) -> np.ndarray:
  """Per hidden state, the max |ours - ref| over real (non-padding) tokens."""
  assert ours.shape == ref.shape, (ours.shape, ref.shape)
  m = mask[None, :, :, None].astype(bool)
  err = np.abs(np.where(m, np.asarray(ours, np.float64) - ref, 0.0))
  return err.reshape(err.shape[0], -1).max(axis=1)


# ----------------------------------------------------------------------------- parity


def test_hidden_states_match_hf(variant, model_dir):
  pre = jt.load_pretrained(str(model_dir))
  cfg = pre.config
  assert cfg.hf_model_type == json.loads((model_dir / 'config.json').read_text())['model_type']
  ids, mask, types = _batch(cfg, 0)
  ours = jt.hidden_states(cfg, pre.params, ids, mask, types)
  err = _max_error(ours, _torch_hidden(model_dir, ids, mask, types), mask)
  print(f'{variant}: max |diff| per hidden state {err}')
  assert err.max() < ATOL, err


def test_stack_unstack_round_trip(variant, model_dir):
  pre = jt.load_pretrained(str(model_dir))
  state = convert.read_state_dict(str(model_dir))
  back = convert.unstack(convert.stack(state, pre.config), pre.config)
  assert sorted(back) == sorted(state)
  for k in state:
    np.testing.assert_array_equal(back[k], state[k], err_msg=k)
  chex.assert_trees_all_equal(convert.stack(convert.unstack(pre.params, pre.config), pre.config),
                              pre.params)
  # The random init builds the same tree as the checkpoint.
  init = jax.eval_shape(lambda k: bert.init_params(pre.config, k), jax.random.key(0))
  assert jax.tree.map(lambda s: s.shape, init) == jax.tree.map(np.shape, pre.params)


def test_export_loads_in_transformers(variant, model_dir, tmp_path):
  """The encoder and the family's classification head, fine-tuned, as HF's own classes see them."""
  pre = jt.load_pretrained(str(model_dir))
  cfg = pre.config
  # Change the weights so that the test cannot pass by reading the original files.
  params = jax.tree.map(lambda p: np.asarray(p) * 1.01, pre.params)
  # The experiments' default head (RoBERTa's and MPNet's classifiers never read the pooler).
  head = 'pooler' if cfg.has_pooler and cfg.model_type not in heads.MLP_HEAD else 'mlp'
  program = program_lib.Program(encoder=cfg, num_labels=3, num_blocks=cfg.num_layers, head=head)
  train, frozen = program.init(params, {k: np.asarray(v) for k, v in program.defaults().items()},
                               jax.random.key(1))
  hf = dict(pre.hf_config, **cfg.to_hf(), **heads.export_config(cfg, program.pooling), num_labels=3)
  hf.pop('id2label', None)
  hf.pop('label2id', None)
  convert.export(str(tmp_path), program.export_params(train, frozen, {}), hf,
                 head=program.export_head(train, frozen))
  ids, mask, types = _batch(cfg, 1)
  err = _max_error(jt.hidden_states(cfg, params, ids, mask, types),
                   _torch_hidden(tmp_path, ids, mask, types), mask)
  assert err.max() < ATOL, err
  model = transformers.AutoModelForSequenceClassification.from_pretrained(str(tmp_path)).eval()
  with torch.no_grad():
    logits = model(**_torch_inputs(ids, mask, types, model)).logits.numpy()
  ours = program.apply(train, frozen, {'input_ids': ids, 'attention_mask': mask,
                                       'token_type_ids': types}, {})
  np.testing.assert_allclose(ours, logits, atol=ATOL)
  # And back: the exported directory loads as the same encoder with the trained pooler.
  again = jt.load_pretrained(str(tmp_path), with_tokenizer=False)
  want = jax.tree.map(np.array, params['blocks'])
  if cfg.model_type == 'modernbert':  # HF has no norm before block 0's attention: 1/0 again
    want['attention_ln'] = {k: np.concatenate([np.full_like(v[:1], k == 'scale'), v[1:]])
                            for k, v in want['attention_ln'].items()}
  chex.assert_trees_all_close(again.params['blocks'], want)
  if heads.has_own_head(cfg):
    chex.assert_trees_all_close(again.params['pooler'], train['pooler'])


def test_distilbert_sinusoidal_init_matches_hf(tmp_path_factory):
  pre = jt.load_pretrained(str(family_dir('distilbert', tmp_path_factory)), with_tokenizer=False)
  fresh = bert.init_params(pre.config, jax.random.key(0))
  np.testing.assert_allclose(fresh['embeddings']['position_embeddings']['embedding'],
                             pre.params['embeddings']['position_embeddings']['embedding'], atol=1e-6)


def test_family_reinit_scheme():
  """ModernBERT's own init: out projections std / sqrt(2L), truncated at the cutoff."""
  from jaxtransfer.core import interventions as iv
  cfg = model_config.EncoderConfig.from_hf(CONFIGS['modernbert']().to_dict())
  blocks = bert.init_blocks(cfg, jax.random.key(0), cfg.num_layers)
  fresh = iv.fresh_blocks(cfg, jax.random.key(1), 'family', blocks)
  std_in = np.std(fresh['intermediate']['kernel'])
  std_out = np.std(fresh['output']['kernel'])
  assert abs(std_out / std_in - 1 / np.sqrt(2 * cfg.num_layers)) < 0.1
  assert np.abs(fresh['query']['kernel']).max() <= 2 * cfg.initializer_range + 1e-7
  assert np.all(fresh['output_ln']['scale'] == 1)


def test_mpnet_shared_position_bias_under_interventions(tmp_path_factory):
  """MPNet's one relative position bias is no block's: reinit past k keeps it and a permutation
  leaves it in place, so a permuted model adds the same (heads, S, S) bias as HF's to every block."""
  from jaxtransfer.core import interventions as iv
  pre = jt.load_pretrained(str(family_dir('mpnet', tmp_path_factory)), with_tokenizer=False)
  table = pre.params['embeddings']['relative_attention_bias']['embedding']
  reinit = iv.Reinit('family').apply(pre.config, pre.params, {'reinit': np.array([False, True])},
                                     jax.random.key(0))
  permuted = iv.Permute().apply(pre.config, pre.params, {'perm': np.array([1, 0])}, None)
  for out in (reinit, permuted):
    np.testing.assert_array_equal(out['embeddings']['relative_attention_bias']['embedding'], table)
  # HF's own bias for 16 tokens, against the table we read it from.
  model = transformers.AutoModel.from_pretrained(str(family_dir('mpnet', tmp_path_factory)))
  with torch.no_grad():
    ref = model.encoder.compute_position_bias(torch.zeros(1, 16, 32)).numpy()
  np.testing.assert_array_equal(bert.position_bias(pre.config, pre.params['embeddings'], 16), ref)


def test_mpnet_with_fewer_than_32_buckets_is_refused():
  hf = CONFIGS['mpnet']().to_dict()
  hf['relative_attention_num_buckets'] = 8  # HF: IndexError at the first distance past 3
  with pytest.raises(UserError, match='relative_attention_num_buckets=8'):
    model_config.EncoderConfig.from_hf(hf)


def test_refused_families_name_the_supported_ones(tmp_path):
  (tmp_path / 'config.json').write_text(json.dumps({'model_type': 'deberta', 'vocab_size': 10}))
  (tmp_path / 'model.safetensors').write_bytes(b'')
  with pytest.raises(UserError, match='modernbert'):
    jt.load_pretrained(str(tmp_path))


# ----------------------------------------------------------------------------- studies, CLI


def _run_main(*args, timeout=300):
  env = {**os.environ, 'HF_HUB_OFFLINE': '1', 'PYTHONPATH': str(ROOT)}
  return subprocess.run([sys.executable, '-m', 'jaxtransfer.main', *args], cwd=ROOT, env=env,
                        capture_output=True, text=True, timeout=timeout)


def _records(workdir: pathlib.Path) -> list[dict]:
  return [json.loads(line) for line in (workdir / 'trials.jsonl').read_text().splitlines()]


_QUICK = ['--config.max_seq_length=32', '--config.batch_size=8', '--config.num_train_steps=3',
          '--config.train_sizes=(64,)', '--config.seeds=(1,)', '--config.eval_max_examples=16',
          '--config.eval_batch_size=16', '--config.log_every=3']


# Two families end to end in the default run: XLM-RoBERTa, and MPNet (its shared position bias,
# own head and sentence-transformers pooling are the most family-specific paths); every other
# family's parity, packing and export are tested above, and their end-to-end runs are the slow
# set (`pytest -m slow`).
@pytest.mark.parametrize('name', [n if n in ('xlm-roberta', 'mpnet')
                                  else pytest.param(n, marks=pytest.mark.slow)
                                  for n in STUDY_VARIANTS])
def test_reinit_and_freeze_studies_through_the_cli(name, tmp_path, tmp_path_factory):
  path = family_dir(name, tmp_path_factory)
  common = [f'--config.model={path}', f'--config.cache_dir={tmp_path / "cache"}', *_QUICK]
  work = tmp_path / 'reinit'
  proc = _run_main('--config=configs/reinit.py:demo', f'--workdir={work}', *common,
                   '--config.ks=(0,2)', '--config.reinit_scheme=family')
  assert proc.returncode == 0, proc.stderr[-3000:]
  recs = _records(work)
  assert sorted(r['setting']['k'] for r in recs) == [0, 2]
  assert all(r['status'] == 'ok' and r['model'] == str(path) for r in recs), recs
  work = tmp_path / 'freeze'
  proc = _run_main('--config=configs/freeze.py:demo', f'--workdir={work}', *common,
                   '--config.trainable_blocks=(1,)', '--config.export_model=True')
  assert proc.returncode == 0, proc.stderr[-3000:]
  (rec,) = _records(work)
  assert rec['status'] == 'ok' and 0 < rec['metrics']['train_flops_fraction'] < 1, rec
  exported = work / 'models' / rec['trial_id']
  model = transformers.AutoModelForSequenceClassification.from_pretrained(str(exported))
  assert model.config.model_type == json.loads((path / 'config.json').read_text())['model_type']
