"""Dev-set evaluation of a group: every trial's predictions on every dev split, then its metrics.

The dev rows are sorted by length once and each eval batch is cut to its own length bucket, so a
short-sentence dev set costs little; metrics do not depend on the order of the rows.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from jaxtransfer.engine import batching
from jaxtransfer.runtime import distributed as dist
from jaxtransfer.data import metrics as metrics_lib


def name_metrics(key: str, metrics: dict[str, float]) -> dict[str, float]:
  """A split's metrics named by its key: a suffix ('' and MNLI's '_mm': `accuracy_mm`), or, for a
  key ending in '_' (the held-out selection split, 'selection_'), a prefix: `selection_accuracy`."""
  if key.endswith('_'):
    return {key + k: v for k, v in metrics.items()}
  return {k + key: v for k, v in metrics.items()}


def degenerate(task, outputs: np.ndarray, labels: np.ndarray) -> bool:
  """A failed training (Mosbach et al. 2021): every prediction one class, or dev accuracy at or
  below always predicting the majority class; for regression a constant prediction (a NaN
  correlation)."""
  outputs = np.asarray(outputs)
  if task.is_regression:
    values = outputs.reshape(len(labels), -1)[:, 0]
    return bool(not np.all(np.isfinite(values)) or np.ptp(values) == 0)
  preds = np.argmax(outputs, axis=-1) if outputs.ndim == 2 else outputs
  majority = np.bincount(np.asarray(labels, np.int64)).max() / max(len(labels), 1)
  return bool(len(np.unique(preds)) <= 1 or np.mean(preds == labels) <= majority + 1e-12)


class DevSets:
  """The dev splits (keyed by metric suffix: '' and MNLI's '_mm'; or prefix: 'selection_') on
  device, sorted by length and padded to whole eval batches (the padding rows' outputs are
  dropped). Each trial's metrics carry `degenerate` (1.0 or 0.0) for the main dev split."""

  def __init__(self, dev_data: dict[str, dict[str, np.ndarray]], task, batch_size: int,
               multiple: int, mesh):
    self.task, self.batch_size = task, batch_size
    self.splits = {}
    self.orders = {}  # suffix -> each sorted row's index in the dev set, to give predictions back
    for suffix, dev in dev_data.items():
      width = dev['input_ids'].shape[1] if 'input_ids' in dev else 0
      ordered, self.orders[suffix], widths = batching.sorted_by_length(dev, batch_size,
                                                                       multiple or width)
      n = len(dev['labels'])
      padded = {k: np.concatenate([v, np.repeat(v[:1], -n % batch_size, axis=0)])
                for k, v in ordered.items()}
      self.splits[suffix] = (padded, ordered['labels'], widths)
    self._mesh = mesh
    self._device: dict[str, dict] = {}

  def _on_device(self, suffix: str):
    if suffix not in self._device:  # uploaded at the first evaluation, then kept
      self._device[suffix] = dist.put(self.splits[suffix][0], dist.replicated(self._mesh))
    return self._device[suffix]

  def evaluate(self, fns, state, frozen_shared, arrays, n_real: int,
               keep: dict[str, np.ndarray] | None = None) -> list[dict[str, float]]:
    """Metrics of the first `n_real` trials of a group (the rest pad the trial axis); with `keep`,
    also the predictions behind them (`predictions`), filled in per split suffix."""
    per_trial: list[dict[str, float]] = [{} for _ in range(n_real)]
    for suffix, (_, labels, widths) in self.splits.items():
      dev = self._on_device(suffix)
      outs = [dist.gather(fns.predict(state, frozen_shared, arrays, dev,
                                      jnp.int32(i * self.batch_size), w))
              for i, w in enumerate(widths)]
      outs = np.concatenate(outs, axis=1)[:n_real, :len(labels)]
      if keep is not None:
        keep[suffix] = self.predictions(suffix, outs)
      for i in range(n_real):
        per_trial[i].update(name_metrics(suffix, metrics_lib.compute_metrics(self.task, outs[i],
                                                                             labels)))
        if suffix == '':
          per_trial[i]['degenerate'] = float(degenerate(self.task, outs[i], labels))
    return per_trial

  def predictions(self, suffix: str, outs: np.ndarray) -> np.ndarray:
    """(trials, N) compact predictions (`metrics.predictions`) of a split's sorted outputs, put
    back in the dev set's own row order, so that files of other runs line up with them."""
    compact = np.stack([metrics_lib.predictions(self.task, o) for o in outs])
    out = np.empty_like(compact)
    out[:, self.orders[suffix]] = compact
    return out
