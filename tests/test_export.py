"""A trial exported as the studies export it (`Experiment.write_outputs`, export_model=True) is a
transformers checkpoint of the family's own *ForSequenceClassification class, names its outputs
by the task's labels, and gives the trial's logits."""

import dataclasses
import inspect
import json

import jax
import numpy as np
import pytest
import torch
import transformers

import helpers
import jaxtransfer as jt
from configs import finetune as finetune_cfg
from jaxtransfer.data import glue
from jaxtransfer.engine import trials as trials_lib
from jaxtransfer.models import config as model_config
from jaxtransfer.models import convert, heads
from jaxtransfer.studies import base

PAD = 1  # non-zero, so that RoBERTa's positions and every padding mask depend on it
_BERTLIKE = dict(vocab_size=50, pad_token_id=PAD, max_position_embeddings=40, hidden_size=16,
                 num_hidden_layers=2, num_attention_heads=2, intermediate_size=32)

# HF model_type -> (tiny config, the class transformers should load the export as).
FAMILIES = {
    'bert': (lambda: transformers.BertConfig(**_BERTLIKE), 'BertForSequenceClassification'),
    'roberta': (lambda: transformers.RobertaConfig(**_BERTLIKE, type_vocab_size=1),
                'RobertaForSequenceClassification'),
    'xlm-roberta': (lambda: transformers.XLMRobertaConfig(**_BERTLIKE, type_vocab_size=1),
                    'XLMRobertaForSequenceClassification'),
    'camembert': (lambda: transformers.CamembertConfig(**_BERTLIKE, type_vocab_size=1),
                  'CamembertForSequenceClassification'),
    'distilbert': (lambda: transformers.DistilBertConfig(
        vocab_size=50, pad_token_id=PAD, max_position_embeddings=40, dim=16, n_layers=2,
        n_heads=2, hidden_dim=32), 'DistilBertForSequenceClassification'),
    'electra': (lambda: transformers.ElectraConfig(**_BERTLIKE, embedding_size=8),
                'ElectraForSequenceClassification'),
    'deberta-v2': (lambda: transformers.DebertaV2Config(
        **_BERTLIKE, relative_attention=True, pos_att_type='p2c|c2p', position_buckets=8,
        max_relative_positions=32, type_vocab_size=2), 'DebertaV2ForSequenceClassification'),
    'modernbert': (lambda: transformers.ModernBertConfig(
        **_BERTLIKE, local_attention=4, global_attn_every_n_layers=2, bos_token_id=2,
        eos_token_id=3, cls_token_id=2, sep_token_id=3), 'ModernBertForSequenceClassification'),
    'mpnet': (lambda: transformers.MPNetConfig(**_BERTLIKE), 'MPNetForSequenceClassification'),
}


def _checkpoint(model_type: str, path):
  """A random-init encoder saved by save_pretrained, its norms and biases moved off 1/0."""
  torch.manual_seed(0)
  model = transformers.AutoModel.from_config(FAMILIES[model_type][0]()).eval()
  with torch.no_grad():
    for name, p in model.named_parameters():
      if 'norm' in name.lower() or name.endswith('bias'):
        p.add_(0.1 * torch.randn_like(p))
  model.save_pretrained(path)
  return path


def _export(pre, task, workdir):
  """One trial of the standard program (`make_program`, the config's head='auto'), exported by
  the study hook; returns (program, train, frozen, arrays, export dir)."""
  config = finetune_cfg.get_config()
  config.export_model = True
  ctx = base.Context(config, str(workdir), pre, task, None)
  program = base.make_program(ctx)
  arrays = {k: np.asarray(v) for k, v in program.defaults().items()}
  train, frozen = program.init(pre.params, arrays, jax.random.key(1))
  # Move the encoder off the checkpoint, so that only the exported weights can match.
  train = jax.device_get(jax.tree.map(lambda p: p * 1.01, train))
  frozen = jax.device_get(frozen)
  trial = trials_lib.Trial(seed=1, train_size=0, setting={}, program=program)
  base.Experiment().write_outputs(ctx, trial, trials_lib.TrialParams(train, frozen, arrays))
  return program, train, frozen, arrays, workdir / 'models' / trial.trial_id


def _batch(pre, seed: int = 0):
  ids, mask, types = helpers.random_batch(np.random.default_rng(seed), pre.config.vocab_size, 3,
                                          12, PAD, first_id=4)
  if pre.config.type_vocab_size < 2:
    types = np.zeros_like(types)
  return {'input_ids': ids, 'attention_mask': mask, 'token_type_ids': types}


def _torch_logits(model, batch) -> np.ndarray:
  names = inspect.signature(model.forward).parameters
  inputs = {k: torch.tensor(v, dtype=torch.long) for k, v in batch.items() if k in names}
  with torch.no_grad():
    return model(**inputs).logits.numpy()


def test_every_supported_model_type_is_covered():
  assert sorted(FAMILIES) == sorted(model_config.FAMILIES)
  for model_type, (_, cls) in FAMILIES.items():
    assert hasattr(transformers, cls), cls
    cfg = model_config.EncoderConfig.from_hf(FAMILIES[model_type][0]().to_dict())
    assert cfg.hf_model_type == model_type
    assert convert.architecture(cfg, True) == cls


@pytest.mark.parametrize('model_type', sorted(FAMILIES))
def test_export_names_its_class_and_labels_and_gives_the_trials_logits(model_type, tmp_path):
  pre = jt.load_pretrained(str(_checkpoint(model_type, tmp_path / 'ckpt')), with_tokenizer=False)
  program, train, frozen, arrays, out = _export(pre, glue.get_task('sst2'), tmp_path / 'work')
  model = transformers.AutoModelForSequenceClassification.from_pretrained(str(out)).eval()
  cls = FAMILIES[model_type][1]
  assert type(model).__name__ == cls
  assert model.config.architectures == [cls]
  assert model.config.id2label == {0: 'negative', 1: 'positive'}
  assert model.config.label2id == {'negative': 0, 'positive': 1}
  batch = _batch(pre)
  ours = np.asarray(program.apply(train, frozen, batch, arrays))
  np.testing.assert_allclose(_torch_logits(model, batch), ours, atol=1e-4)


def test_regression_export_keeps_hfs_defaults(tmp_path):
  pre = jt.load_pretrained(str(_checkpoint('bert', tmp_path / 'ckpt')), with_tokenizer=False)
  *_, out = _export(pre, glue.get_task('stsb'), tmp_path / 'work')
  assert 'id2label' not in json.loads((out / 'config.json').read_text())
  model = transformers.AutoModelForSequenceClassification.from_pretrained(str(out))
  assert (model.config.problem_type, model.config.num_labels) == ('regression', 1)


def test_custom_label_names_in_class_id_order_and_a_stale_source_head_is_dropped(tmp_path):
  pre = jt.load_pretrained(str(_checkpoint('bert', tmp_path / 'ckpt')), with_tokenizer=False)
  # The source checkpoint was a 2-class multi-label model: none of that describes the trial.
  hf = dict(pre.hf_config, id2label={'0': 'x', '1': 'y'}, label2id={'x': 0, 'y': 1},
            problem_type='multi_label_classification')
  task = glue.get_task('mnli')  # three classes, named in class-id order
  *_, out = _export(dataclasses.replace(pre, hf_config=hf), task, tmp_path / 'work')
  config = transformers.AutoConfig.from_pretrained(str(out))
  assert config.id2label == dict(enumerate(task.label_names))
  assert config.problem_type is None and config.num_labels == 3


def test_label_config_refuses_names_that_do_not_fit_the_outputs():
  with pytest.raises(ValueError, match='3 classifier outputs but 2'):
    heads.label_config(3, ('a', 'b'))
  assert heads.label_config(2, (0, 1))['label2id'] == {'0': 0, '1': 1}
