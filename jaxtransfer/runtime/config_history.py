"""How a workdir's results were made: config.json, config_history.jsonl and each record's hash.

Every trial record carries `config_hash`, a short hash of the resolved config it was trained
with; `config_history.jsonl` holds one line per distinct config that ran in the workdir, so a
hash always leads back to every value. A re-run whose config differs from the one the finished
trials (or the checkpointed group in flight) were made with is refused, naming the keys, unless
`allow_mixed=True`. Two kinds of keys never count as a difference:
  - run-only keys (RUN_ONLY), which cannot change a trial's result;
  - the study's sweep keys (seeds, train sizes, its swept lists): a trial's own seed, train size
    and setting are in its record, so adding seeds or settings adds trials without changing how
    the finished ones were made.
Keys a workdir's earlier config lacks (added to jaxtransfer since) are not compared either.
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any, Iterable

from jaxtransfer.runtime import files
from jaxtransfer.runtime import records as records_lib
from jaxtransfer.errors import UserError

CONFIG = 'config.json'
HISTORY = 'config_history.jsonl'
RUN_ONLY = frozenset({'log_every', 'checkpoint_every', 'trials_per_program', 'sparse_embeddings',
                      'compile_ahead',
                      'export_model', 'eval_batch_size', 'feature_batch_size', 'cache_dir',
                      'probe_dir',
                      'allow_mixed', 'num_workers', 'worker_index', 'lease_timeout',
                      'summarize_only'})
SWEEP = frozenset({'seeds', 'train_sizes'})
# Where the data is: stored relative to the workdir (data/locations.py) and compared through the
# data's fingerprint, so that the same data at another path is the same config.
LOCATIONS = ('data_dir', 'train_file', 'dev_file')
FINGERPRINT = 'data_fingerprint'
# Keys added since that change a trial's result, with the behaviour a config without them had:
# an earlier config is compared as if it held these values.
ADDED = {'pack_sequences': False}
# Keys added since whose off value is what every earlier config did: at that value they hash as
# absent, so a config that leaves them off keeps the hash its finished trials carry.
NEUTRAL = {'scratch': False}

Config = dict[str, Any]


def resolved(config) -> Config:
  """The config as plain JSON values (what config.json holds)."""
  return json.loads(config.to_json_best_effort())


def config_hash(values: Config) -> str:
  """12 hex digits of sha256 over the config without its run-only keys. Where the data has a
  fingerprint, that stands for it instead of its paths (the same data elsewhere is the same
  config); configs without one hash as they always did."""
  fingerprinted = bool(values.get(FINGERPRINT))
  kept = {k: v for k, v in values.items() if k not in RUN_ONLY
          and (k != FINGERPRINT or fingerprinted) and (k not in LOCATIONS or not fingerprinted)
          and not (k in NEUTRAL and v == NEUTRAL[k])}
  text = json.dumps(kept, sort_keys=True, separators=(',', ':'))
  return hashlib.sha256(text.encode()).hexdigest()[:12]


def read_history(workdir: str) -> list[dict]:
  return records_lib.read_records(os.path.join(workdir, HISTORY))


def _read_config(workdir: str) -> Config | None:
  try:
    with open(os.path.join(workdir, CONFIG)) as f:
      return json.load(f)
  except (OSError, json.JSONDecodeError):
    return None


def _in_flight(workdir: str) -> bool:
  """A checkpointed group waits to resume (it continues under the config it started with)."""
  root = os.path.join(workdir, 'checkpoints')
  return os.path.isdir(root) and any(os.scandir(root))


def bound_configs(workdir: str) -> dict[str, Config]:
  """{hash: config} of the configs the workdir's finished trials and group in flight were made
  with. Records without a hash (written before hashes) belong to the workdir's config.json."""
  lines = read_history(workdir)
  history = {e['config_hash']: e['config'] for e in lines}
  latest = _read_config(workdir)
  legacy = next((e['config'] for e in lines if e.get('before_hashes')), latest)
  out = {}
  for r in records_lib.read_records(os.path.join(workdir, 'trials.jsonl')):
    h = r.get('config_hash')
    if h in history:
      out[h] = history[h]
    elif legacy is not None:
      out[config_hash(legacy)] = legacy
  if _in_flight(workdir) and latest is not None:
    out[config_hash(latest)] = latest
  return out


def _show(value) -> str:
  text = json.dumps(value)
  return text if len(text) <= 40 else text[:37] + '...'


def with_added(before: Config, after: Config) -> Config:
  """`before` with the ADDED keys it lacks (and `after` has) at the value its run had."""
  return {**{k: v for k, v in ADDED.items() if k in after}, **before}


def changed_keys(before: Config, after: Config, ignore: Iterable[str] = ()) -> list[str]:
  """Keys whose values differ. A key `before` lacks is a knob added to jaxtransfer since, so the
  earlier run had its default: not a difference (unless ADDED says the earlier behaviour was
  another value)."""
  skip = RUN_ONLY | SWEEP | set(ignore)
  before = with_added(before, after)
  return sorted(k for k in set(before) - skip if _differs(k, before[k], after.get(k)))


def _where(value):
  """A data location's kind: the hub (''), the demo set, a URL, or some local path (which path
  does not matter: the fingerprint compares the data itself)."""
  return value if not value or value == 'demo' or '://' in str(value) else 'a local path'


def _differs(key: str, before, after) -> bool:
  if key in LOCATIONS:
    return _where(before) != _where(after)
  if key == FINGERPRINT:  # '' = no files to fingerprint here (missing data is reported on load)
    return bool(before and after) and before != after
  return before != after


def check(config, workdir: str, sweep_keys: Iterable[str] = (), now: Config | None = None) -> None:
  """UserError when the workdir's results were made with a config that differs from `config` in
  a key that changes results (and allow_mixed is off). `now`: the config as config.json would
  store it, when the caller has it."""
  now = now or resolved(config)
  if now.get('allow_mixed'):
    return
  diffs = {}
  for values in bound_configs(workdir).values():
    values = with_added(values, now)
    for k in changed_keys(values, now, sweep_keys):
      diffs.setdefault(k, (values.get(k), now.get(k)))
  if not diffs:
    return
  n = len(records_lib.finished_ids(os.path.join(workdir, 'trials.jsonl')))
  shown = '; '.join(f'{k}: {_show(a)} -> {_show(b)}' for k, (a, b) in sorted(diffs.items()))
  made = f'{n} finished trial(s)' if n else 'a checkpointed group in flight'
  raise UserError(
      f'The workdir {workdir} holds {made} made with a different config ({shown}). Re-running '
      'there would mix results of two configs. Use a new --workdir for this config, or pass '
      '--config.allow_mixed=True to keep the finished trials and run only the missing ones with '
      f'this config (each trial record names its config_hash; {HISTORY} keeps both configs).')


def record(config, workdir: str, now: Config | None = None) -> str:
  """Writes config.json (this run's config, or `now`: the config as it is to be stored) and adds
  it to config_history.jsonl if new there; returns its hash. A config.json from before hashes
  enters the history first."""
  now = now or resolved(config)
  h = config_hash(now)
  os.makedirs(workdir, exist_ok=True)
  path = os.path.join(workdir, HISTORY)
  have = {e['config_hash'] for e in read_history(workdir)}
  new = []
  before = _read_config(workdir)
  records = records_lib.read_records(os.path.join(workdir, 'trials.jsonl'))
  if before is not None and any('config_hash' not in r for r in records):
    if config_hash(before) not in have | {h}:
      new.append({'config_hash': config_hash(before), 'config': before, 'before_hashes': True})
  if h not in have:
    new.append({'config_hash': h, 'config': now})
  records_lib.append_records(path, new)
  with files.atomic_write(os.path.join(workdir, CONFIG)) as f:
    json.dump(now, f, indent=2, sort_keys=True)
  return h
