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
