"""The studies: each maps a config to trials for the engine, and to its tables and figures."""

from __future__ import annotations

import importlib

from jaxtransfer.errors import UserError

# config.experiment -> 'module:class' of its study (an experiments.base.Experiment), imported on use.
REGISTRY = {
    'finetune': 'jaxtransfer.studies.finetune:Finetune',
    'reinit': 'jaxtransfer.studies.tamkin2020.reinit:ProgressiveReinit',
    'block_reinit': 'jaxtransfer.studies.tamkin2020.reinit:BlockReinit',
    'permute': 'jaxtransfer.studies.tamkin2020.reinit:Permutation',
    'probe': 'jaxtransfer.studies.tamkin2020.probe:Probe',
    'freeze': 'jaxtransfer.studies.lee2019.freeze:Freeze',
    'variability': 'jaxtransfer.studies.xie2022.variability:Variability',
    'select': 'jaxtransfer.studies.xie2022.select:Select',
    'closeness': 'jaxtransfer.studies.radiya2020.closeness:Closeness',
    'sparsity': 'jaxtransfer.studies.radiya2020.sparsity:Sparsity',
}


def get(name: str):
  """A fresh study object for one run of `config.experiment`."""
  if name not in REGISTRY:
    raise UserError(f'experiment={name!r} is not one of {", ".join(sorted(REGISTRY))}. Use one of '
                    'the config files in configs/ (e.g. --config=configs/reinit.py).')
  module, cls = REGISTRY[name].split(':')
  return getattr(importlib.import_module(module), cls)()
