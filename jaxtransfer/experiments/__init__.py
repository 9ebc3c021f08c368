"""The studies: each maps a config to trials for the engine, and to its tables and figures."""

from __future__ import annotations

import importlib

from jaxtransfer.errors import UserError

# config.experiment -> module defining EXPERIMENT (an experiments.base.Experiment).
REGISTRY = {
    'sparsity': 'jaxtransfer.experiments.sparsity',
    'closeness': 'jaxtransfer.experiments.closeness',
    'finetune': 'jaxtransfer.experiments.finetune',
    'variability': 'jaxtransfer.experiments.variability',
    'select': 'jaxtransfer.experiments.select',
    'freeze': 'jaxtransfer.experiments.freeze',
    'reinit': 'jaxtransfer.experiments.reinit',
    'block_reinit': 'jaxtransfer.experiments.reinit',
    'permute': 'jaxtransfer.experiments.reinit',
    'probe': 'jaxtransfer.experiments.probe',
}


def get(name: str):
  if name not in REGISTRY:
    raise UserError(f'experiment={name!r} is not one of {", ".join(sorted(REGISTRY))}. Use one of '
                    'the config files in configs/ (e.g. --config=configs/reinit.py).')
  return importlib.import_module(REGISTRY[name]).EXPERIMENT
