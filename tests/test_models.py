"""The encoder against HF transformers' PyTorch models on the same weights."""

import json

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers

import jaxtransfer as jt
from jaxtransfer.errors import UserError
from jaxtransfer.models import bert, convert, pretrained
from helpers import random_batch

ATOL = 1e-4


def _torch_hidden(path, ids, mask, types=None):
  model = transformers.AutoModel.from_pretrained(str(path)).eval()
  inputs = {'input_ids': torch.tensor(ids, dtype=torch.long),
            'attention_mask': torch.tensor(mask, dtype=torch.long)}
  if types is not None:
    inputs['token_type_ids'] = torch.tensor(types, dtype=torch.long)
  with torch.no_grad():
    out = model(**inputs, output_hidden_states=True)
  pooled = None if out.pooler_output is None else out.pooler_output.numpy()
  return np.stack([h.numpy() for h in out.hidden_states]), pooled


def _assert_hidden_close(ours, ref, mask, atol=ATOL):
  """Every layer's hidden states, padding positions ignored."""
  assert ours.shape == ref.shape
  m = mask[None, :, :, None].astype(bool)
  err = np.abs(np.where(m, np.asarray(ours) - ref, 0.0))
  per_layer = err.reshape(err.shape[0], -1).max(axis=1)
  assert per_layer.max() < atol, f'max abs error per layer: {per_layer}'


def _glue_rows(path, columns):
  rows = [line.rstrip('\n').split('\t') for line in open(path, encoding='utf-8-sig')]
  header, rows = rows[0], rows[1:]
  idx = [header.index(c) for c in columns]
  return [[r[i] for i in idx] for r in rows]


def test_minilm_parity_real_sentences(minilm, glue_dir):
  sentences = [r[0] for r in _glue_rows(glue_dir / 'SST-2' / 'dev.tsv', ['sentence'])[:16]]
  enc = minilm.tokenizer(sentences, padding=True, truncation=True, max_length=64, return_tensors='np')
  ours = jt.hidden_states(minilm.config, minilm.params, enc['input_ids'], enc['attention_mask'],
                          enc['token_type_ids'])
  ref, pooled = _torch_hidden(minilm.path, enc['input_ids'], enc['attention_mask'],
                              enc['token_type_ids'])
  assert ours.shape == (minilm.config.num_layers + 1, 16, enc['input_ids'].shape[1], 384)
  _assert_hidden_close(ours, ref, enc['attention_mask'])
  np.testing.assert_allclose(bert.pool(minilm.config, minilm.params['pooler'], ours[-1]), pooled,
                             atol=ATOL)


def test_minilm_parity_real_pairs(minilm, glue_dir):
  pairs = _glue_rows(glue_dir / 'RTE' / 'dev.tsv', ['sentence1', 'sentence2'])[:8]
  enc = minilm.tokenizer([p[0] for p in pairs], [p[1] for p in pairs], padding=True,
                         truncation=True, max_length=128, return_tensors='np')
  assert enc['token_type_ids'].max() == 1  # the second segment really uses token type 1
  ours = jt.hidden_states(minilm.config, minilm.params, enc['input_ids'], enc['attention_mask'],
                          enc['token_type_ids'])
  ref, _ = _torch_hidden(minilm.path, enc['input_ids'], enc['attention_mask'], enc['token_type_ids'])
  _assert_hidden_close(ours, ref, enc['attention_mask'])


def test_random_hf_models_parity(tiny_hf_dir):
  """save_pretrained output without tokenizer files: weights load, every layer matches."""
  pre = jt.load_pretrained(str(tiny_hf_dir))
  assert pre.tokenizer is None
  cfg = pre.config
  ids, mask, types = random_batch(np.random.default_rng(0), cfg.vocab_size, 5, 12,
                                  cfg.pad_token_id, first_id=cfg.pad_token_id + 1)
  if cfg.model_type == 'roberta':
    types = np.zeros_like(types)
  ours = jt.hidden_states(cfg, pre.params, ids, mask, types)
  ref, pooled = _torch_hidden(tiny_hf_dir, ids, mask, types)
  _assert_hidden_close(ours, ref, mask)
  if pooled is not None:
    np.testing.assert_allclose(bert.pool(cfg, pre.params['pooler'], ours[-1]), pooled, atol=ATOL)


def test_stack_unstack_round_trip(minilm):
  state = convert.read_state_dict(minilm.path)
  state.pop('embeddings.position_ids', None)
  back = convert.unstack(convert.stack(state))
  assert sorted(back) == sorted(state)
  for k in state:
    np.testing.assert_array_equal(back[k], state[k], err_msg=k)
  # And the other way: stack(unstack(params)) is the identity on the pytree.
  chex.assert_trees_all_equal(convert.stack(convert.unstack(minilm.params)), minilm.params)


def test_stack_accepts_prefixed_task_checkpoints(minilm):
  state = {'bert.' + k: v for k, v in convert.unstack(minilm.params).items()}
  state['classifier.weight'] = np.zeros((2, 384), np.float32)
  chex.assert_trees_all_equal(convert.stack(state), minilm.params)


def test_export_loads_in_transformers(tiny_hf_dir, tmp_path):
  pre = jt.load_pretrained(str(tiny_hf_dir))
  # Change the weights so that the test cannot pass by reading the original files.
  params = jax.tree.map(lambda p: np.asarray(p) * 1.01, pre.params)
  convert.export(str(tmp_path), params, pre.hf_config)
  cfg = pre.config
  ids, mask, types = random_batch(np.random.default_rng(1), cfg.vocab_size, 3, 10,
                                  cfg.pad_token_id, first_id=cfg.pad_token_id + 1)
  if cfg.model_type == 'roberta':
    types = np.zeros_like(types)
  ref, _ = _torch_hidden(tmp_path, ids, mask, types)
  _assert_hidden_close(jt.hidden_states(cfg, params, ids, mask, types), ref, mask)


def test_truncated_encoder_never_computes_upper_blocks(minilm):
  enc = minilm.tokenizer(['the blocks above must not run'], return_tensors='np')
  full = jt.hidden_states(minilm.config, minilm.params, enc['input_ids'], enc['attention_mask'])
  # Poison blocks 3..5: NaN anywhere in their computation would reach the output if they ran.
  poisoned = jax.tree.map(lambda p: p, minilm.params)
  poisoned['blocks'] = jax.tree.map(lambda p: p.copy(), minilm.params['blocks'])
  for leaf in jax.tree.leaves(poisoned['blocks']):
    leaf[3:] = np.nan
  part = jt.hidden_states(minilm.config, poisoned, enc['input_ids'], enc['attention_mask'],
                          num_blocks=3)
  assert part.shape[0] == 4
  np.testing.assert_array_equal(part, full[:4])


def test_bf16_compute_close_to_fp32(minilm):
  enc = minilm.tokenizer(['a short sentence', 'and another one that is longer'], padding=True,
                         return_tensors='np')
  f32 = jt.hidden_states(minilm.config, minilm.params, enc['input_ids'], enc['attention_mask'])
  b16 = jt.hidden_states(minilm.config, minilm.params, enc['input_ids'], enc['attention_mask'],
                         dtype=jnp.bfloat16)
  assert b16.dtype == jnp.bfloat16
  m = enc['attention_mask'][None, :, :, None].astype(bool)
  rel = np.abs(np.where(m, np.asarray(b16, np.float32) - np.asarray(f32), 0)).max() / np.abs(f32).max()
  assert rel < 0.05


def test_dropout_uses_rng_and_is_off_when_deterministic(minilm):
  enc = minilm.tokenizer(['dropout check'], return_tensors='np')
  args = (minilm.config, minilm.params, enc['input_ids'], enc['attention_mask'])
  a = jt.hidden_states(*args, deterministic=False, rng=jax.random.key(0))
  b = jt.hidden_states(*args, deterministic=False, rng=jax.random.key(1))
  c = jt.hidden_states(*args, deterministic=False, rng=jax.random.key(0))
  assert not np.allclose(a[-1], b[-1])
  np.testing.assert_array_equal(a, c)


def test_pytorch_bin_checkpoint(tiny_hf_dir, tmp_path):
  """pytorch_model.bin is read through torch with weights_only=True."""
  model = transformers.AutoModel.from_pretrained(str(tiny_hf_dir))
  torch.save(model.state_dict(), tmp_path / 'pytorch_model.bin')
  (tmp_path / 'config.json').write_text((tiny_hf_dir / 'config.json').read_text())
  a = jt.load_pretrained(str(tmp_path)).params
  b = jt.load_pretrained(str(tiny_hf_dir)).params
  chex.assert_trees_all_close(a, b)


def test_corrupt_checkpoint_is_a_user_error(tiny_hf_dir, tmp_path):
  (tmp_path / 'config.json').write_text((tiny_hf_dir / 'config.json').read_text())
  data = (tiny_hf_dir / 'model.safetensors').read_bytes()
  (tmp_path / 'model.safetensors').write_bytes(data[: len(data) // 2])
  with pytest.raises(UserError, match='corrupt'):
    jt.load_pretrained(str(tmp_path))


def test_mismatched_config_is_a_user_error(tiny_hf_dir, tmp_path):
  cfg = json.loads((tiny_hf_dir / 'config.json').read_text())
  cfg['hidden_size'] = 64
  (tmp_path / 'config.json').write_text(json.dumps(cfg))
  (tmp_path / 'model.safetensors').write_bytes((tiny_hf_dir / 'model.safetensors').read_bytes())
  with pytest.raises(UserError, match='do not match'):
    jt.load_pretrained(str(tmp_path))


def test_missing_weights_and_missing_dir(tmp_path):
  (tmp_path / 'config.json').write_text('{"model_type": "bert"}')
  with pytest.raises(UserError, match='model.safetensors'):
    jt.load_pretrained(str(tmp_path))
  with pytest.raises(UserError, match='no such directory'):
    jt.load_pretrained(str(tmp_path / 'nope'))


def test_hub_unreachable_is_a_user_error(monkeypatch, tmp_path):
  monkeypatch.setenv('HF_HUB_OFFLINE', '1')
  monkeypatch.setenv('HF_HUB_CACHE', str(tmp_path))
  import huggingface_hub

  def offline(*args, **kwargs):
    raise huggingface_hub.errors.LocalEntryNotFoundError('offline')

  monkeypatch.setattr(huggingface_hub, 'snapshot_download', offline)
  with pytest.raises(UserError, match='minilm-l6'):
    pretrained.load_pretrained('bert-base-uncased')


def test_sentence_transformers_pooling_is_read_from_the_checkpoint(minilm, tiny_hf_dir, caplog):
  """The packaged all-MiniLM-L6-v2 says (1_Pooling/config.json) it is read through the token mean;
  a plain HF checkpoint says nothing. Studies that train heads over frozen blocks warn on cls."""
  import logging
  from ml_collections import ConfigDict
  from jaxtransfer.studies import base
  assert pretrained.sentence_pooling(minilm.path) == 'mean'
  assert pretrained.sentence_pooling(str(tiny_hf_dir)) is None
  with caplog.at_level(logging.WARNING):
    base.warn_pooling(ConfigDict({'model': 'minilm-l6', 'pooling': 'mean'}), minilm)
    assert not caplog.records
    base.warn_pooling(ConfigDict({'model': 'minilm-l6', 'pooling': 'cls'}), minilm)
  assert '--config.pooling=mean' in caplog.text
