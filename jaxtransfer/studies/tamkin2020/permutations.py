"""Rank agreement of layer permutations across tasks and training sizes (Tamkin et al., Fig. 4).

The authors asked whether an order of the pretrained blocks that hurts one task hurts the others
too: for each pair of (task, train size) runs of permute.py they correlate the permutations'
scores (Spearman and Pearson over the permutations both ran). Each permutation's score here is its
mean dev score over the seeds it ran with.
"""

from __future__ import annotations

import itertools
import os
from typing import Any, Mapping, Sequence

import numpy as np
import scipy.stats

from jaxtransfer.runtime import files

Record = Mapping[str, Any]
FIELDS = ('a', 'b', 'metric_a', 'metric_b', 'permutations', 'spearman', 'spearman_p', 'pearson',
          'pearson_p')


def permutation_scores(records: Sequence[Record], metric_of) -> dict[tuple[str, int], dict]:
  """{(task, train size): {permutation seed: mean score}} over the ok permuted trials."""
  raw: dict[tuple[str, int], dict[int, list[float]]] = {}
  for r in records:
    s = r.get('setting', {})
    if r.get('experiment') != 'permute' or r.get('status') != 'ok' or s.get('mode') != 'permuted':
      continue
    value = r['metrics'].get(metric_of(r['task']))
    if value is not None:
      key = (r['task'], int(r['train_size']))
      raw.setdefault(key, {}).setdefault(int(s['permutation_seed']), []).append(float(value))
  return {k: {p: float(np.mean(v)) for p, v in per.items()} for k, per in raw.items()}


def correlations(records: Sequence[Record], metric_of, min_permutations: int = 3) -> list[dict]:
  """One row per pair of (task, size) runs sharing at least `min_permutations` permutations."""
  scores = permutation_scores(records, metric_of)
  rows = []
  for a, b in itertools.combinations(sorted(scores), 2):
    shared = sorted(set(scores[a]) & set(scores[b]))
    if len(shared) < min_permutations:
      continue
    x = [scores[a][p] for p in shared]
    y = [scores[b][p] for p in shared]
    rho, rho_p = scipy.stats.spearmanr(x, y)
    r, r_p = scipy.stats.pearsonr(x, y)
    rows.append({'a': f'{a[0]}/n{a[1] or "full"}', 'b': f'{b[0]}/n{b[1] or "full"}',
                 'metric_a': metric_of(a[0]), 'metric_b': metric_of(b[0]),
                 'permutations': len(shared), 'spearman': float(rho), 'spearman_p': float(rho_p),
                 'pearson': float(r), 'pearson_p': float(r_p)})
  return rows


def write_correlations(out: str, records: Sequence[Record], metric_of) -> list[str]:
  """permute_correlations.csv in `out` when two runs share enough permutations."""
  rows = correlations(records, metric_of)
  if not rows:
    return []
  path = os.path.join(out, 'permute_correlations.csv')
  files.write_csv(path, FIELDS, ({k: (f'{v:.4f}' if isinstance(v, float) else v)
                                  for k, v in row.items()} for row in rows))
  return [path]
