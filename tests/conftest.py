"""Shared fixtures: the real GLUE files in ../shared, the packaged MiniLM, tiny random HF models.
Plain helper functions live in helpers.py."""

import pathlib

import pytest

import helpers
from helpers import GLUE


@pytest.fixture(scope='session')
def glue_dir() -> pathlib.Path:
  if not GLUE.is_dir():
    pytest.skip('../shared/glue is not beside the project')
  return GLUE


@pytest.fixture(scope='session')
def minilm():
  import jaxtransfer as jt
  return jt.load_pretrained('minilm-l6')


@pytest.fixture(scope='session', params=['bert', 'roberta'])
def tiny_hf_dir(request, tmp_path_factory) -> pathlib.Path:
  """A randomly initialised HF model saved with save_pretrained (weights + config, no tokenizer)."""
  return helpers.random_hf_dir(tmp_path_factory.mktemp(f'tiny-{request.param}'), request.param)


@pytest.fixture(scope='session')
def tiny_model_dir(tmp_path_factory) -> pathlib.Path:
  return helpers.make_tiny_model_dir(tmp_path_factory.mktemp('tiny-bert-tok'))


@pytest.fixture(scope='session')
def tiny_demo(tiny_model_dir, tmp_path_factory):
  """(the tiny BERT as load_pretrained gives it, the demo sentiment set tokenized to 32)."""
  import jaxtransfer as jt
  from jaxtransfer.data import glue as data_lib
  pre = jt.load_pretrained(str(tiny_model_dir))
  task_data = data_lib.load_task_data('sst2', 'demo', pre.tokenizer, pre.path, 32,
                                      cache_dir=str(tmp_path_factory.mktemp('cache')))
  return pre, task_data
