"""Every config file loads through absl's config_flags (as main.py loads it), with and without its
:demo preset, names a registered experiment, and takes tuple overrides of its sweep keys."""

import pathlib

import ml_collections
import pytest
from absl import flags
from ml_collections import config_flags

from jaxtransfer import experiments

CONFIGS = sorted(p for p in (pathlib.Path(__file__).resolve().parents[1] / 'configs').glob('*.py')
                 if p.stem not in ('__init__', 'base', 'rerun'))  # rerun: a workdir's config


def _load(path, *overrides):
  argv = ['prog', f'--config={path}', *overrides]
  fv = flags.FlagValues()
  # config_flags finds the overrides in sys.argv unless given its own argv.
  config_flags.DEFINE_config_file('config', None, flag_values=fv, lock_config=True, sys_argv=argv)
  fv(argv)
  return fv.config


def _lists(c: ml_collections.ConfigDict, prefix=''):
  for k, v in c.items():
    if isinstance(v, ml_collections.ConfigDict):
      yield from _lists(v, f'{prefix}{k}.')
    elif isinstance(v, list):
      yield prefix + k


def test_every_experiment_has_a_config():
  assert {_load(p).experiment for p in CONFIGS} == set(experiments.REGISTRY)


@pytest.mark.parametrize('path', CONFIGS, ids=[p.stem for p in CONFIGS])
def test_loads_with_and_without_demo(path):
  paper, demo = _load(path), _load(f'{path}:demo')
  assert paper.experiment == demo.experiment
  assert type(experiments.get(paper.experiment)) is type(experiments.get(demo.experiment))
  # The demo runs offline on the packaged model; the paper's defaults do not.
  assert (demo.model, demo.data_dir) == ('minilm-l6', 'demo')
  assert (paper.model, paper.data_dir) != ('minilm-l6', 'demo')
  # Sweep keys are tuples: config_flags cannot override a list field from the command line.
  assert not list(_lists(paper)) and not list(_lists(demo))


@pytest.mark.parametrize('path', CONFIGS, ids=[p.stem for p in CONFIGS])
def test_sweep_keys_take_tuple_overrides(path):
  c = _load(path, "--config.seeds=(4,5)", "--config.train_sizes=(100,)")
  assert tuple(c.seeds) == (4, 5) and tuple(c.train_sizes) == (100,)


def test_unknown_preset_names_the_known_ones():
  with pytest.raises(Exception, match='demo'):
    _load(f'{CONFIGS[0]}:nosuchpreset')
