"""A finished run's config again, read from its workdir's config.json: re-runs its trials.

  python -m jaxtransfer.main --config=configs/rerun.py:results/lee2019/cola --workdir=/tmp/check \
      --config.seeds='(1,)' --config.trainable_blocks='(6,)'

The engine is deterministic on one machine, so a re-run trial's record equals the committed one
(`--config.key=value` narrows it to some seeds or settings, as above). Keys the config.json
predates take the study's current defaults, except those that changed results when they were
added (`config_history.ADDED`, e.g. `pack_sequences=False`): those take the value the run had.
Data paths are stored relative to the workdir, so a committed workdir re-runs on any machine that
has the data at the same place beside it; elsewhere pass `--config.data_dir=...`. The run's
`data_fingerprint` comes along: data that differs from the run's is exit 2.
"""

import importlib
import json
import os

from jaxtransfer.data import locations
from jaxtransfer.runtime import config_history


def _as_default_type(value, default):
  """JSON lists back to the tuples the study's config holds (ConfigDict keeps field types)."""
  if isinstance(value, list) and isinstance(default, tuple):
    return tuple(tuple(v) if isinstance(v, list) else v for v in value)
  return value


def get_config(workdir=None):
  if not workdir:
    raise ValueError('configs/rerun.py needs the workdir to re-run: '
                     '--config=configs/rerun.py:results/<study>/<task>')
  path = os.path.join(workdir, config_history.CONFIG)
  if not os.path.isfile(path):
    raise ValueError(f'configs/rerun.py: {path} does not exist: give the workdir of a finished '
                     'run, e.g. --config=configs/rerun.py:results/lee2019/cola')
  with open(path) as f:
    values = json.load(f)
  values = locations.resolve(values, workdir)  # data paths are stored relative to the workdir
  for key in ('summarize_only', 'num_workers', 'worker_index'):  # how that run was invoked
    values.pop(key, None)
  c = importlib.import_module(f'configs.{values["experiment"]}').get_config()
  values = config_history.with_added(values, c.to_dict())
  if values.get('small_size_seeds') and c.get('seeds') is None:
    # The paper's protocol ran (explicit seeds would have turned small_size_seeds off): leave seeds
    # unset again, so the small sizes get their 1..small_size_seeds once more.
    values.pop('seeds', None)
  with c.unlocked():
    for key, value in values.items():
      c[key] = _as_default_type(value, c.get(key))
  return c
