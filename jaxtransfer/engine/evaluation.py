"""Dev-set evaluation of a group: every trial's predictions on every dev split, then its metrics.

The dev rows are sorted by length once and each eval batch is cut to its own length bucket, so a
short-sentence dev set costs little; metrics do not depend on the order of the rows.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from jaxtransfer.core import packing
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
               multiple: int, mesh, pack: bool = False):
    self.task, self.batch_size = task, batch_size
    self.splits = {}
    # Each split packed once (packing.pack_for_inference): one compiled shape, nearly no padding;
    # used for programs that take packed batches.
    self.packed = {}
    self.orders = {}  # suffix -> each sorted row's index in the dev set, to give predictions back
    for suffix, dev in dev_data.items():
      width = dev['input_ids'].shape[1] if 'input_ids' in dev else 0
      ordered, self.orders[suffix], widths = batching.sorted_by_length(dev, batch_size,
                                                                       multiple or width)
      n = len(dev['labels'])
      padded = {k: np.concatenate([v, np.repeat(v[:1], -n % batch_size, axis=0)])
                for k, v in ordered.items()}
      self.splits[suffix] = (padded, ordered['labels'], widths)
      if pack and 'attention_mask' in dev:
        lengths = dev['attention_mask'].sum(1)
        width = batching.bucket_width(int(lengths.max()), multiple or width, width)
        self.packed[suffix] = packing.pack_for_inference(dev, width, batch_size)
    self._mesh = mesh
    self._device: dict[str, dict] = {}

  def _on_device(self, suffix: str, packed: bool = False):
    key = (suffix, packed)
    if key not in self._device:  # uploaded at the first evaluation, then kept
      data = self.packed[suffix][0] if packed else self.splits[suffix][0]
      self._device[key] = dist.put(data, dist.replicated(self._mesh))
    return self._device[key]

  def outputs(self, fns, state, frozen_shared, arrays, suffix: str) -> np.ndarray:
    """Every trial's outputs on a split, (T, N, ...) in its length-sorted row order."""
    if suffix in self.packed and fns.step.program.supports_packing:
      calls, index = self.packed[suffix]
      dev = self._on_device(suffix, packed=True)
      outs = np.concatenate([dist.gather(fns.predict_packed(state, frozen_shared, arrays, dev,
                                                            jnp.int32(i)))
                             for i in range(len(index))], axis=1)
      flat = index.reshape(-1)
      by_row = np.empty((outs.shape[0], len(flat[flat >= 0]), *outs.shape[2:]), outs.dtype)
      by_row[:, flat[flat >= 0]] = outs[:, flat >= 0]
      return by_row[:, self.orders[suffix]]
    dev = self._on_device(suffix)
    widths = self.splits[suffix][2]
    outs = [dist.gather(fns.predict(state, frozen_shared, arrays, dev,
                                    jnp.int32(i * self.batch_size), w))
            for i, w in enumerate(widths)]
    return np.concatenate(outs, axis=1)[:, :len(self.splits[suffix][1])]

  def evaluate(self, fns, state, frozen_shared, arrays, n_real: int,
               keep: dict[str, np.ndarray] | None = None) -> list[dict[str, float]]:
    """Metrics of the first `n_real` trials of a group (the rest pad the trial axis); with `keep`,
    also the predictions behind them (`predictions`), filled in per split suffix."""
    per_trial: list[dict[str, float]] = [{} for _ in range(n_real)]
    for suffix, (_, labels, _) in self.splits.items():
      outs = self.outputs(fns, state, frozen_shared, arrays, suffix)[:n_real]
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
