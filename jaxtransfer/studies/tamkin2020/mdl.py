"""Voita & Titov (2020)'s online code length of a probe's training labels, per layer.

The (seeded) training set of N examples is cut into nested portions, the first 0.1%, 0.2%, 0.4%,
0.8%, 1.6%, 3.2%, 6.25%, 12.5%, 25%, 50% and 100% of it, in the order the seed draws it (the
order in which `trials.trial_subset` takes a seed's examples, so a portion probe trains on
exactly the first n_t of them). The first portion is sent with the uniform code, n_1 log2 C bits;
each next block [n_t, n_t+1) costs its cross-entropy in bits under a probe trained on the first
n_t examples. The online code length is their sum; compression = N log2 C / that sum (1: the
layer's features tell nothing about the labels).
"""

from __future__ import annotations

import math
import os
from typing import Any, Mapping, Sequence

import numpy as np
import scipy.special

from jaxtransfer.report import plots
from jaxtransfer.report import summary
from jaxtransfer.runtime import files

PORTIONS = (0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 6.25, 12.5, 25.0, 50.0, 100.0)  # percent of the set
PORTION_KEY = 'mdl_portion'  # setting key of a portion probe: the percent it trains on
OF_KEY = 'mdl_of'            # ... and the N of the set it codes
BITS = 'portion_bits'        # its record's metric: the next block's cost


def sizes(n: int) -> list[int]:
  """n_t of every portion of a set of n examples (at least 1 each, the last n)."""
  return [max(1, int(n * p / 100)) if p < 100 else n for p in PORTIONS]


def order(seed: int, n_total: int, n: int) -> np.ndarray:
  """The first n of the seed's draw of the training set: portion t is its first n_t."""
  if n >= n_total:
    n = n_total
  return np.random.RandomState(seed).permutation(n_total)[:n]


def block_rows(seed: int, n_total: int, n: int, portion: float) -> np.ndarray:
  """The examples a probe trained on `portion` percent codes: the next block of the draw."""
  cuts = sizes(n)
  t = PORTIONS.index(portion)
  return order(seed, n_total, n)[cuts[t]:cuts[t + 1]]


def block_bits(program, params, features: np.ndarray, labels: np.ndarray) -> float:
  """Sum over the examples of -log2 p(label) under the probe (eval mode)."""
  if not len(labels):
    return 0.0
  logits = program.apply(params.train, params.frozen, {'features': features}, params.arrays)
  # In float64 on the host (JAX would compute a float64 input in float32).
  logits = np.asarray(logits, np.float64)
  logp = logits - scipy.special.logsumexp(logits, axis=1, keepdims=True)
  return float(-logp[np.arange(len(labels)), labels].sum() / math.log(2))


def uniform_bits(n: int, num_labels: int) -> float:
  return n * math.log2(num_labels)


def layer_key(n: int, setting: Mapping[str, Any], seed: int) -> tuple:
  """Which layer probe a portion probe belongs to: N, its setting without the portion (k, what it
  reads, a swept learning rate), the seed."""
  rest = {k: v for k, v in setting.items() if k not in (PORTION_KEY, OF_KEY)}
  return int(n), summary.setting_json(rest), int(seed)


def codelengths(records: Sequence[Mapping[str, Any]], num_labels: int) -> dict[tuple, dict]:
  """{layer_key: {'codelength_bits', 'compression'}} from the portion probes' records; nan where
  a portion probe failed or is missing."""
  cells: dict[tuple, dict[float, float]] = {}
  for r in records:
    s = r.get('setting') or {}
    if PORTION_KEY not in s:
      continue
    bits = (r.get('metrics') or {}).get(BITS) if r.get('status') == 'ok' else None
    key = layer_key(s[OF_KEY], s, r['seed'])
    cells.setdefault(key, {})[s[PORTION_KEY]] = math.nan if bits is None else float(bits)
  out = {}
  for key, per in cells.items():
    n = key[0]
    total = uniform_bits(sizes(n)[0], num_labels)
    total += sum(per.get(p, math.nan) for p in PORTIONS[:-1])
    out[key] = {'codelength_bits': total, 'compression': uniform_bits(n, num_labels) / total}
  return out


FIELDS = ('train_size', 'k', 'pooling', 'pooler', 'seed', 'codelength_bits', 'uniform_bits',
          'compression')


def write(workdir: str, records: Sequence[Mapping[str, Any]], num_labels: int,
          info=None) -> str | None:
  """mdl.csv (one row per layer probe with a code length) and plots/mdl_by_layer.png."""
  done = [r for r in records if r.get('status') == 'ok' and PORTION_KEY not in r['setting']
          and 'codelength_bits' in (r.get('metrics') or {})]
  if not done:
    return None
  path = os.path.join(workdir, 'mdl.csv')
  files.write_csv(path, FIELDS, (_row(r) for r in done))
  plot(workdir, done, info)
  return path


def _row(r: Mapping[str, Any]) -> dict:
  m, s = r['metrics'], r['setting']
  return {'train_size': r['train_size'], 'k': s['k'], 'pooling': s.get('pooling'),
          'pooler': s.get('pooler'), 'seed': r['seed'],
          'codelength_bits': repr(m['codelength_bits']),
          'uniform_bits': repr(round(m['codelength_bits'] * m['compression'], 6)),
          'compression': repr(m['compression'])}


def plot(workdir: str, records: Sequence[Mapping[str, Any]], info=None) -> str:
  """Online code length (kbits) and compression per probed layer, mean and 95% CI over seeds,
  one line per training size."""
  fig, axes = plots.subplots(1, 2, figsize=(10.5, 4.2), dpi=120)
  for metric, ax, label in (('codelength_bits', axes[0], 'online code length (kbits)'),
                            ('compression', axes[1], 'compression (uniform / online code)')):
    scale = 1e-3 if metric == 'codelength_bits' else 1.0
    for size in sorted({r['train_size'] for r in records}, key=plots.size_order):
      per_k = plots.by([(r, r['metrics'][metric] * scale) for r in records
                        if r['train_size'] == size], lambda r: r['setting']['k'])
      xs = sorted(per_k)
      plots.line_with_ci(ax, xs, [per_k[k] for k in xs], plots.size_label(size))
      ax.set_xticks(xs)
    ax.grid(True, alpha=0.3)
    ax.set_xlabel('probed layer k (0 = embeddings, k = output of block k-1)')
    ax.set_ylabel(label)
    if metric == 'compression':
      ax.axhline(1.0, label='1: the layer tells nothing about the labels', **plots.CHANCE_STYLE)
    plots.legend(ax, fontsize=8)
  first = records[0]
  fig.suptitle(plots.title('MDL probe (Voita & Titov 2020): online code of the training labels',
                           first.get('task', ''), first.get('model', ''), info), fontsize=10)
  return plots.save(fig, workdir, 'mdl_by_layer')
