"""`pooling=auto`: a sentence-transformers folder that says mean pooling is read by the token mean,
every other checkpoint by its family's own head; config.json, the log and each record say which."""

import json
import shutil

import jax
import numpy as np

import helpers
import jaxtransfer as jt
from configs import finetune
from jaxtransfer.core import program as program_lib
from jaxtransfer.models import pretrained
from jaxtransfer.runtime import config_history
from jaxtransfer.runtime import records as records_lib
from jaxtransfer.studies import base


def _sentence_transformers(path, mean: bool):
  """Marks an HF folder as sentence-transformers saves one: modules.json and 1_Pooling."""
  (path / 'modules.json').write_text(json.dumps([
      {'idx': 0, 'name': '0', 'path': '', 'type': 'sentence_transformers.models.Transformer'},
      {'idx': 1, 'name': '1', 'path': '1_Pooling', 'type': 'sentence_transformers.models.Pooling'}]))
  (path / '1_Pooling').mkdir()
  (path / '1_Pooling' / 'config.json').write_text(json.dumps(
      {'word_embedding_dimension': 32, 'pooling_mode_cls_token': not mean,
       'pooling_mode_mean_tokens': mean, 'pooling_mode_max_tokens': False}))
  return path


def _auto(path, workdir=None):
  config = finetune.get_config('demo')
  assert config.pooling == 'auto'
  return base.resolve_pooling(config, str(path), workdir), config


def test_auto_reads_the_pooling_config(tiny_model_dir, tmp_path):
  assert _auto(tiny_model_dir)[0] == 'cls'  # no sentence-transformers files: the family's head
  mean = _sentence_transformers(shutil.copytree(tiny_model_dir, tmp_path / 'mean'), True)
  choice, config = _auto(mean)
  assert choice == config.pooling == 'mean'
  assert _auto(_sentence_transformers(shutil.copytree(tiny_model_dir, tmp_path / 'cls'), False))[0] == 'cls'
  # The packaged MiniLM is a mean-pooling sentence-transformers folder.
  assert pretrained.sentence_pooling(pretrained.resolve('minilm-l6')) == 'mean'
  # An explicit value stays.
  explicit = finetune.get_config('demo')
  explicit.pooling = 'cls'
  assert base.resolve_pooling(explicit, str(mean)) == 'cls'


def test_auto_mean_is_the_token_mean(tiny_model_dir, tmp_path):
  """What the program computes under the resolved pooling: the mean over real tokens (numpy)."""
  pre = jt.load_pretrained(str(tiny_model_dir), with_tokenizer=False)
  batch = helpers.labelled_batch(pre, 4, 0)
  program = program_lib.Program(encoder=pre.config, num_labels=2, num_blocks=pre.config.num_layers,
                                pooling='mean', head='pooler')
  arrays = {k: np.asarray(v) for k, v in program.defaults().items()}
  train, frozen = program.init(pre.params, arrays, jax.random.key(0))
  x = np.asarray(program.features(program_lib.merge(train, frozen), batch, arrays,
                                  deterministic=True))
  m = batch['attention_mask'][..., None]
  pooled = (x * m).sum(1) / m.sum(1)
  pooler = train['pooler']
  h = np.tanh(pooled @ np.asarray(pooler['kernel']) + np.asarray(pooler['bias']))
  want = h @ np.asarray(train['head']['classifier']['kernel']) + np.asarray(
      train['head']['classifier']['bias'])
  np.testing.assert_allclose(program.apply(train, frozen, batch, arrays), want, atol=1e-5)


def test_a_workdir_made_with_cls_resumes_with_cls(tiny_model_dir, tmp_path):
  """A workdir from before pooling=auto (config.json says cls) on a mean-pooling folder: auto
  follows the workdir, so the config is unchanged and its trials resume."""
  model = _sentence_transformers(shutil.copytree(tiny_model_dir, tmp_path / 'st'), True)
  old = finetune.get_config('demo')
  old.pooling = 'cls'
  wd = tmp_path / 'work'
  h = config_history.record(old, str(wd))
  records_lib.append_records(wd / 'trials.jsonl', [
      {'trial_id': 'nfull-s1', 'seed': 1, 'setting': {}, 'status': 'ok', 'metrics': {},
       'config_hash': h}])
  choice, config = _auto(model, str(wd))
  assert choice == 'cls'
  config_history.check(config, str(wd))
  assert config_history.config_hash(config_history.resolved(config)) == h
  assert _auto(model, str(tmp_path / 'fresh'))[0] == 'mean'  # a new workdir reads it by mean


def test_cli_logs_and_records_the_choice(tiny_model_dir, tmp_path):
  model = _sentence_transformers(shutil.copytree(tiny_model_dir, tmp_path / 'st'), True)
  wd = tmp_path / 'w'
  proc = helpers.run_main('--config=configs/finetune.py:demo', f'--config.model={model}',
                          '--config.num_train_steps=2', '--config.eval_max_examples=16',
                          '--config.seeds=(1,)', '--config.max_seq_length=32', f'--workdir={wd}')
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert 'pooling=auto: mean' in proc.stderr
  assert json.loads((wd / 'config.json').read_text())['pooling'] == 'mean'
  (rec,) = records_lib.read_records(wd / 'trials.jsonl')
  assert rec['pooling'] == 'mean'
