"""`train_and_evaluate(config, workdir)`: one study, end to end (what main.py calls)."""

from __future__ import annotations

import datetime
import json
import os
import re

from absl import logging

from jaxtransfer.runtime import config_history
from jaxtransfer.data import custom as custom_data
from jaxtransfer.data import glue as data_lib
from jaxtransfer.runtime import distributed as dist
from jaxtransfer import studies as experiments
from jaxtransfer.models import pretrained
from jaxtransfer.studies import base
from jaxtransfer.runtime import files
from jaxtransfer.data import locations
from jaxtransfer.runtime import workdir as workdir_lib
from jaxtransfer.runtime import workers as workers_lib
from jaxtransfer.engine.trials import Preempted
from jaxtransfer.errors import UserError, check_choices


def default_workdir(config) -> str:
  """results/<experiment>-<task>-<model>-<date>."""
  model = re.sub(r'[^A-Za-z0-9_.-]+', '_', os.path.basename(str(config.model).rstrip('/')))
  date = datetime.date.today().strftime('%Y%m%d')
  return os.path.join('results', f'{config.experiment}-{config.task}-{model}-{date}')


def validate(config) -> None:
  """Checks that need no model or data: fail in a second, not after loading BERT."""
  if custom_data.is_custom(config.task):
    custom_data.check_config(config)
  else:
    data_lib.get_task(config.task)
    custom_data.check_unused(config)
  positive = ('batch_size', 'max_seq_length', 'eval_batch_size')
  for key in positive:
    if config[key] <= 0:
      raise UserError(f'{key}={config[key]} must be a positive integer (--config.{key}).')
  if config.get('pad_to_multiple_of', 0) < 0:
    raise UserError(f'pad_to_multiple_of={config.pad_to_multiple_of} must be >= 0 (0 pads every '
                    'step to the longest example of the data; --config.pad_to_multiple_of).')
  if config.learning_rate <= 0:
    raise UserError(f'learning_rate={config.learning_rate} must be positive (--config.learning_rate).')
  _validate_protocol(config)
  _validate_workers(config)
  locations.check(config)
  decay = config.get('layer_lr_decay', 1.0)
  if not 0 < decay <= 1:
    raise UserError(f'layer_lr_decay={decay} must be in (0, 1]: block i of L trains at lr x '
                    'layer_lr_decay^(L - i), and 1.0 turns the decay off '
                    '(--config.layer_lr_decay).')
  if config.num_train_steps <= 0 and config.num_epochs <= 0:
    raise UserError('Both num_epochs and num_train_steps are 0: set --config.num_epochs or '
                    '--config.num_train_steps to a positive number.')
  if not list(config.seeds):
    raise UserError('seeds is empty: give at least one seed, e.g. --config.seeds="[1,2,3]".')
  for size in config.train_sizes:
    if int(size) < 0:
      raise UserError(f'train_size={size} is negative. Use positive sizes, or 0 for the whole '
                      'training set (--config.train_sizes).')
  check_choices('dtype', config.dtype, ('float32', 'bfloat16'))
  check_choices('head', config.head, ('auto', 'pooler', 'mlp'))
  check_choices('head_init', config.get('head_init', 'normal'), ('normal', 'torch'))
  check_choices('pooling', config.pooling, base.POOLINGS)
  check_choices('remat', config.get('remat', 'none'), ('none', 'block'))


def _validate_protocol(config) -> None:
  """The learning-rate axis and the selection split."""
  rates = list(config.get('learning_rates', ()) or ())
  bad = [r for r in rates if isinstance(r, bool) or not isinstance(r, (int, float)) or r <= 0]
  if bad or len(set(rates)) != len(rates):
    raise UserError(f'learning_rates={tuple(rates)}: every rate must be a positive number, each '
                    'once, e.g. --config.learning_rates=1e-5,3e-5,1e-4 (empty: the single '
                    '--config.learning_rate).')
  size = config.get('selection_split', 0) or 0
  if isinstance(size, bool) or not isinstance(size, (int, float)) or size < 0 or (
      size >= 1 and float(size) != int(size)):
    raise UserError(f'selection_split={size!r} must be 0 (off), a fraction in (0, 1) or a whole '
                    'number of training examples (--config.selection_split).')


def _validate_workers(config) -> None:
  count = config.get('num_workers', 0)
  if count < 0:
    raise UserError(f'num_workers={count} must be >= 0 (0 or 1: a single worker; '
                    '--config.num_workers).')
  if workers_lib.Workers.from_config(config) and os.environ.get('JAXTRANSFER_NUM_PROCESSES'):
    raise UserError('num_workers > 1 and JAXTRANSFER_NUM_PROCESSES are both set: independent '
                    'workers each run on their own, so do not join them with jax.distributed. '
                    'Drop --config.num_workers for a multi-host run, or start the workers '
                    'without launch/local_multiprocess.sh.')


def enable_compilation_cache() -> None:
  """XLA's persistent cache: a resumed run (or the next sweep of the same shapes) skips compiles."""
  import jax
  if jax.config.jax_compilation_cache_dir is None:
    path = os.environ.get('JAXTRANSFER_XLA_CACHE',
                          os.path.join(os.path.expanduser('~'), '.cache', 'jaxtransfer', 'xla'))
    jax.config.update('jax_compilation_cache_dir', path)
  jax.config.update('jax_persistent_cache_min_compile_time_secs', 2.0)


def train_and_evaluate(config, workdir: str | None = None) -> list[dict]:
  dist.initialize()
  enable_compilation_cache()
  # Canonical everywhere (config.json, records, default workdir): SST2 -> sst2, Custom -> custom.
  config.task = (custom_data.NAME if custom_data.is_custom(config.task)
                 else data_lib.get_task(config.task).name)
  exp = experiments.get(config.experiment)
  exp.resolve(config)
  validate(config)
  # Your own data is read (and its columns and labels checked) before the model is loaded.
  custom = custom_data.from_config(config) if custom_data.is_custom(config.task) else None
  model_path = pretrained.resolve(config.model)  # a bad model fails before a workdir exists
  path = workdir or default_workdir(config)
  created = dist.is_main() and not workdir_lib.exists(path)
  wd = workdir_lib.open_workdir(path)
  base.resolve_pooling(config, model_path, wd.local)  # before config.json: it holds cls / mean
  stored = locations.stored(config, wd.data_base)
  _check_history(config, wd.local, (*exp.sweep_keys, 'learning_rates'), stored)
  if dist.is_main() and not config.get('summarize_only', False):  # a summary changes no config
    config_history.record(config, wd.local, stored)
    if custom is not None:
      _write_task(custom.info(), wd.local)
  logging.info('Experiment %s, model %s, task %s, workdir %s', config.experiment, config.model,
               config.task, wd.path)
  try:
    return exp.run(config, wd, custom or data_lib.get_task(config.task))
  except UserError:
    if created and _unused(wd.local):
      wd.discard()
    raise
  except Preempted as e:
    e.workdir = wd.path  # main names it in the command that resumes
    raise
  finally:
    wd.push()


def _write_task(info: dict, workdir: str) -> None:
  path = os.path.join(workdir, custom_data.TASK_JSON)
  if os.path.exists(path):
    before = custom_data.read_info(workdir)
    if before is not None and before != info:
      changed = sorted(k for k in set(before) | set(info) if before.get(k) != info.get(k))
      logging.warning('Your data differs from the data of the run already in %s (%s). Finished '
                      'trials are kept, not rerun; use a new workdir to start over.', workdir,
                      ', '.join(changed))
  with files.atomic_write(path) as f:
    json.dump(info, f, indent=2, sort_keys=True)


def _check_history(config, workdir: str, sweep_keys, stored: dict) -> None:
  """Refuses a config that would mix with the workdir's results (process 0 decides for all)."""
  error = None
  if dist.is_main():
    try:
      config_history.check(config, workdir, sweep_keys, stored)
    except UserError as e:
      error = e
  if dist.agree(error is not None):
    raise error or UserError(f'Process 0 refused the workdir {workdir}: see its message.')


def _unused(workdir: str) -> bool:
  """Whether a workdir this run created holds no result yet (the run failed on bad input): then
  it is removed, local or remote, so that nothing left behind looks like a run and a fixed re-run
  starts clean."""
  for entry in os.scandir(workdir):
    empty_dir = entry.is_dir() and not any(os.scandir(entry.path))
    ours = (config_history.CONFIG, config_history.HISTORY, custom_data.TASK_JSON)
    if entry.name not in ours and not empty_dir:
      return False
  return True
