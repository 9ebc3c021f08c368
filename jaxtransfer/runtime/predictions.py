"""Every ok trial's dev predictions, one file per finished group: `predictions/<group_id>.npz`.

A file holds `trial_ids` (T,) and, per dev split (metric suffix '' and MNLI's '_mm'),
`preds<suffix>` (T, N): class ids (int16; int32 past 32,767 classes) or regression scores
(float32), column j being dev example j of the split as evaluated (its first
`eval_max_examples` rows when capped), and `labels<suffix>` (N,), the gold labels once. The
predictions are the ones behind the record's metrics (with `select_best`, those of the chosen
evaluation), so a metric recomputed from the file equals the record's.

The engine writes a group's file before appending its records, so a record never exists without
its predictions. A record names its group (`group`), which names its file: a file whose records
were never appended (a crash between the two writes) is rewritten when its group runs again, or,
regrouped, left unread.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterable, Mapping, Sequence

import numpy as np

from jaxtransfer.runtime import files
from jaxtransfer.runtime import records as records_lib

DIRNAME = 'predictions'


@dataclasses.dataclass
class TrialPredictions:
  """One trial's predictions and the gold labels they are scored against, per dev split."""
  preds: dict[str, np.ndarray]   # suffix -> (N,)
  labels: dict[str, np.ndarray]  # suffix -> (N,), shared by the trials of a file


def path(workdir: str, group_id: str) -> str:
  return os.path.join(workdir, DIRNAME, f'{group_id}.npz')


def write(workdir: str, group_id: str, trial_ids: Sequence[str],
          preds: Mapping[str, np.ndarray], labels: Mapping[str, np.ndarray]) -> str:
  """Writes a group's file atomically (and durably: its records are fsynced right after)."""
  arrays = {'trial_ids': np.asarray(list(trial_ids), dtype=str)}
  for suffix, p in preds.items():
    p, y = np.asarray(p), np.asarray(labels[suffix])
    if p.shape != (len(trial_ids), len(y)):
      raise ValueError(f'predictions{suffix} of shape {p.shape} for {len(trial_ids)} trials and '
                       f'{len(y)} labels')
    arrays[f'preds{suffix}'], arrays[f'labels{suffix}'] = p, y
  out = path(workdir, group_id)
  with files.atomic_path(out) as tmp:
    with open(tmp, 'wb') as f:  # a file object: np.savez would append '.npz' to a bare name
      np.savez_compressed(f, **arrays)
      f.flush()
      os.fsync(f.fileno())
  records_lib.fsync_dir(os.path.dirname(out))
  return out


def read_group(workdir: str, group_id: str) -> dict[str, TrialPredictions]:
  """{trial_id: its predictions} of one group's file; {} when the file is missing."""
  try:
    with np.load(path(workdir, group_id), allow_pickle=False) as z:
      data = {k: z[k] for k in z.files}
  except FileNotFoundError:
    return {}
  suffixes = [k[len('preds'):] for k in data if k.startswith('preds')]
  labels = {s: data[f'labels{s}'] for s in suffixes}
  return {str(t): TrialPredictions({s: data[f'preds{s}'][i] for s in suffixes}, labels)
          for i, t in enumerate(data['trial_ids'])}


def for_records(workdir: str, records: Iterable[Mapping]) -> dict[str, TrialPredictions]:
  """The predictions of every ok record that has them, by trial id, each read from the file of
  the group its record names (one read per group)."""
  groups: dict[str, dict[str, TrialPredictions]] = {}
  out = {}
  for r in records:
    group = r.get('group')
    if r.get('status') != 'ok' or not group:
      continue
    if group not in groups:
      groups[group] = read_group(workdir, group)
    if r['trial_id'] in groups[group]:
      out[r['trial_id']] = groups[group][r['trial_id']]
  return out
