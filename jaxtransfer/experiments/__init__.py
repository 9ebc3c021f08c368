"""The studies: each maps a config to trials for the engine, and to its tables and figures."""

from __future__ import annotations

import importlib

from jaxtransfer.errors import UserError

# config.experiment -> module defining EXPERIMENT (an experiments.base.Experiment).
REGISTRY = {
    'finetune': 'jaxtransfer.experiments.finetune',
}


def get(name: str):
  if name not in REGISTRY:
    raise UserError(f'experiment={name!r} is not one of {", ".join(sorted(REGISTRY))}. Use one of '
                    'the config files in configs/ (e.g. --config=configs/reinit.py).')
  return importlib.import_module(REGISTRY[name]).EXPERIMENT
