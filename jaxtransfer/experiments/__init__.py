"""The studies: each maps a config to trials for the engine, and to its tables and figures."""

from __future__ import annotations

import importlib

from jaxtransfer.errors import UserError

# config.experiment -> 'module:class' of its study (an experiments.base.Experiment), imported on use.
REGISTRY = {
    'finetune': 'jaxtransfer.experiments.finetune:Finetune',
    'reinit': 'jaxtransfer.experiments.reinit:ProgressiveReinit',
    'block_reinit': 'jaxtransfer.experiments.reinit:BlockReinit',
    'permute': 'jaxtransfer.experiments.reinit:Permutation',
    'probe': 'jaxtransfer.experiments.probe:Probe',
    'freeze': 'jaxtransfer.experiments.freeze:Freeze',
    'variability': 'jaxtransfer.experiments.variability:Variability',
    'select': 'jaxtransfer.experiments.select:Select',
    'closeness': 'jaxtransfer.experiments.closeness:Closeness',
    'sparsity': 'jaxtransfer.experiments.sparsity:Sparsity',
}


def get(name: str):
  """A fresh study object for one run of `config.experiment`."""
  if name not in REGISTRY:
    raise UserError(f'experiment={name!r} is not one of {", ".join(sorted(REGISTRY))}. Use one of '
                    'the config files in configs/ (e.g. --config=configs/reinit.py).')
  module, cls = REGISTRY[name].split(':')
  return getattr(importlib.import_module(module), cls)()
