"""Every config file loads through absl's config_flags (as main.py loads it), with and without its
:demo preset, names a registered experiment, and takes tuple overrides of its sweep keys."""

import pathlib

import ml_collections
import pytest

import helpers

from jaxtransfer import studies as experiments

CONFIGS = sorted(p for p in (pathlib.Path(__file__).resolve().parents[1] / 'configs').glob('*.py')
                 if p.stem not in ('__init__', 'base', 'rerun', 'summarize'))  # a workdir's config


def _lists(c: ml_collections.ConfigDict, prefix=''):
  for k, v in c.items():
    if isinstance(v, ml_collections.ConfigDict):
      yield from _lists(v, f'{prefix}{k}.')
    elif isinstance(v, list):
      yield prefix + k


def test_every_experiment_has_a_config():
  assert {helpers.load_config(p).experiment for p in CONFIGS} == set(experiments.REGISTRY)


@pytest.mark.parametrize('path', CONFIGS, ids=[p.stem for p in CONFIGS])
def test_loads_with_and_without_demo(path):
  paper, demo = helpers.load_config(path), helpers.load_config(f'{path}:demo')
  assert paper.experiment == demo.experiment
  assert type(experiments.get(paper.experiment)) is type(experiments.get(demo.experiment))
  # The demo runs offline on the packaged model; the paper's defaults do not.
  assert (demo.model, demo.data_dir) == ('minilm-l6', 'demo')
  assert (paper.model, paper.data_dir) != ('minilm-l6', 'demo')
  # Sweep keys are tuples: config_flags cannot override a list field from the command line.
  assert not list(_lists(paper)) and not list(_lists(demo))


@pytest.mark.parametrize('path', CONFIGS, ids=[p.stem for p in CONFIGS])
def test_sweep_keys_take_tuple_overrides(path):
  c = helpers.load_config(path, "--config.seeds=(4,5)", "--config.train_sizes=(100,)")
  assert tuple(c.seeds) == (4, 5) and tuple(c.train_sizes) == (100,)


def test_unknown_preset_names_the_known_ones():
  with pytest.raises(Exception, match='demo'):
    helpers.load_config(f'{CONFIGS[0]}:nosuchpreset')
