"""What a finished group leaves: one record per trial, and the study's per-trial metrics and files."""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import numpy as np
from absl import logging

from jaxtransfer.core import program as program_lib
from jaxtransfer.runtime import distributed as dist
from jaxtransfer.engine.trials import Group, RunSpec, TrialParams


def chosen_eval(spec: RunSpec, steps: int, final, evals, i: int) -> tuple[dict, int]:
  """Trial i's reported metrics and their step: the last eval, or the best with select_best, by
  the held-out selection split's metric when there is one (never by dev, which is reported)."""
  if not (spec.select_best and len(evals) > 1):
    return final[i], steps
  primary = spec.task.primary_metric
  if f'selection_{primary}' in final[i]:
    primary = f'selection_{primary}'
  scored = [(e['metrics'][i].get(primary, -np.inf), e['step']) for e in evals]
  _, best = max(scored, key=lambda x: (np.nan_to_num(x[0], nan=-np.inf), -x[1]))
  return next(e['metrics'][i] for e in evals if e['step'] == best), best


def build_records(spec: RunSpec, group: Group, final, evals, extra, bad, last_loss, wall: float,
                  compile_s: float) -> list[dict]:
  """The trials.jsonl records of a group (docs/CONTRACT.md, "Workdir")."""
  records = []
  for i, t in enumerate(group.trials):
    chosen, best_step = chosen_eval(spec, group.steps, final, evals, i)
    m = {**chosen, **{k: float(v[i]) for k, v in extra.items()}}
    degenerate = bool(m.pop('degenerate', 0.0))
    failed = bad[i] >= 0
    records.append({
        'trial_id': t.trial_id, 'experiment': spec.experiment, 'task': spec.task.name,
        'model': spec.model, 'seed': t.seed, 'train_size': t.train_size,
        'config_hash': spec.config_hash or None, 'layer_lr_decay': spec.layer_lr_decay,
        'pooling': spec.pooling or None,
        'setting': t.setting, 'metrics': {} if failed else m,
        'learning_rate': spec.learning_rate if t.learning_rate is None else t.learning_rate,
        'degenerate': False if failed else degenerate,
        'status': 'failed' if failed else 'ok',
        'error': f'loss became non-finite (nan/inf) at step {int(bad[i])}' if failed else None,
        'steps': group.steps,
        'train_loss': float(last_loss[i]) if last_loss is not None else None,
        'wall_s': round(wall, 2), 'compile_s': round(compile_s, 2),
        'group': group.group_id, 'group_trials': len(group.trials),
        **({'best_step': best_step} if spec.select_best else {}),
    })
    if failed:
      logging.warning('Trial %s failed: %s', t.trial_id, records[-1]['error'])
  return records


@dataclasses.dataclass
class TrialParamsOf:
  """A group's params gathered to the host: the stacked trainable (and per-trial frozen) params,
  or the frozen params all trials share, and the stacked arrays. A trial's params come out as its
  study's program has them: a word table trained as some of its rows is whole again."""
  host: dict[str, Any]
  shared_frozen: Any
  arrays: dict[str, np.ndarray]
  program: Any = None  # the group's compiled program

  def __getitem__(self, i: int) -> TrialParams:
    take = lambda tree: jax.tree.map(lambda a: a[i], tree)
    frozen = self.shared_frozen if self.shared_frozen is not None else take(self.host['frozen'])
    arrays = {k: v[i] for k, v in self.arrays.items()}
    train, frozen = program_lib.dense_params(self.program, take(self.host['train']), frozen, arrays)
    return TrialParams(jax.tree.map(np.asarray, train), frozen, arrays)


def apply_hooks(hooks, trials, records, params: TrialParamsOf | None) -> None:
  """Merges the study's metrics into each ok record and writes its side files (process 0), before
  the records are appended, so a record never exists without its files."""
  for i, (t, record) in enumerate(zip(trials, records)):
    if record['status'] != 'ok':
      continue
    p = params[i] if params is not None else None
    record['metrics'].update(hooks.metrics(t, p))
    if p is not None and dist.is_main():
      hooks.write_outputs(t, p)
