"""Sequence packing: a training step's examples laid end to end in a few rows of one width.

A batch of 16 SST-2 sentences holds ~210 real tokens; padded to its longest row it computes ~670
(~530 with HF's per-batch padding). Packed first-fit decreasing into a few rows of a width chosen
from the data (`choose_width`: at least its longest example), it computes little more than its
real tokens. Nothing about an example changes: it attends only within its own
segment (a block-diagonal attention bias), its positions restart at 0 (absolute position tables;
relative and rotary attention depend only on offsets within the segment), and it is pooled from
its own tokens. Outputs equal the unpacked ones up to float rounding (tests/test_packing.py); only
the dropout masks differ, as each is drawn per (row, position).

The host plans each step from the example lengths (`plan`: a row and a start column per example);
the device gathers the step's rows as usual and scatters them into the packed rows (`pack`).
The row width is chosen from the data alone (`choose_width`), so a trial's packing never depends
on the trials beside it; the rows per step are rounded up to a few shapes (`row_shapes`), one
compiled step each: padding rows change nothing.
"""

from __future__ import annotations

import dataclasses

from absl import logging
import jax
import jax.numpy as jnp
import numpy as np

TOKEN_KEYS = ('input_ids', 'token_type_ids')
# What one more compiled shape costs, in training steps of the largest shape (a compile on CPU is
# ~7 s, a MiniLM step ~0.25 s; on an accelerator compiles are longer and steps far shorter).
COMPILE_STEPS = {'cpu': 30, 'accelerator': 300}


@dataclasses.dataclass(frozen=True)
class Layout:
  """The static shape of a packed step (a jit cache key): `rows` rows of `width` tokens."""
  width: int
  rows: int


def plan_step(lengths: np.ndarray, weights: np.ndarray, width: int) -> tuple[np.ndarray, np.ndarray]:
  """First-fit decreasing of one step's examples into rows of `width`: (row, start column) per
  example. Weight-0 examples (an epoch's padding) get row -1: they are left out."""
  row = np.full(len(lengths), -1, np.int32)
  col = np.zeros(len(lengths), np.int32)
  loads: list[int] = []
  for b in sorted(np.flatnonzero(weights > 0), key=lambda b: -lengths[b]):
    n = int(lengths[b])
    r = next((i for i, used in enumerate(loads) if used + n <= width), len(loads))
    if r == len(loads):
      loads.append(0)
    row[b], col[b] = r, loads[r]
    loads[r] += n
  return row, col


def plan(lengths: np.ndarray, batch_idx: np.ndarray, batch_w: np.ndarray, width: int,
         block: int = 1 << 15):
  """Packing of every step of a group's trials: (row, col) of shape (T, steps, B) and the rows
  the widest step needs. Each trial's layout depends on its own batches alone.

  `plan_step` for every (trial, step) at once: the examples of all steps are placed one rank at
  a time (longest first, ties by batch position, as `plan_step`'s stable sort), each into the
  first row of its step with room; `block` steps at a time bound the memory.
  """
  lengths = np.minimum(lengths, width)
  shape = batch_idx.shape
  idx, w = batch_idx.reshape(-1, shape[-1]), batch_w.reshape(-1, shape[-1])
  row = np.full(idx.shape, -1, np.int32)
  col = np.zeros(idx.shape, np.int32)
  for lo in range(0, len(idx), block):
    row[lo:lo + block], col[lo:lo + block] = _plan_steps(lengths[idx[lo:lo + block]],
                                                         w[lo:lo + block] > 0, width)
  return row.reshape(shape), col.reshape(shape), max(1, int(row.max(initial=-1)) + 1)


def _plan_steps(n: np.ndarray, real: np.ndarray, width: int) -> tuple[np.ndarray, np.ndarray]:
  """First-fit decreasing of P steps' examples ((P, B) lengths, which are real) at once."""
  p, b = n.shape
  order = np.argsort(np.where(real, -n.astype(np.int64), 1), axis=1, kind='stable')
  loads = np.zeros((p, b), np.int64)  # at most one row per example
  row = np.full((p, b), -1, np.int32)
  col = np.zeros((p, b), np.int32)
  steps = np.arange(p)
  for rank in range(b):
    ex = order[:, rank]
    go = real[steps, ex]
    size = n[steps, ex].astype(np.int64)
    r = np.argmax(loads + size[:, None] <= width, axis=1)  # a fresh row (load 0) always fits
    row[steps[go], ex[go]] = r[go]
    col[steps[go], ex[go]] = loads[steps[go], r[go]]
    loads[steps[go], r[go]] += size[go]
  return row, col


def token_cost(width: int, hidden: int) -> float:
  """Relative cost of a token in a row of `width`: the projections and FFN (~12·H² per token)
  plus attention over the row (~2·width·H)."""
  return 1.0 + width / (6.0 * hidden)


def choose_width(lengths: np.ndarray, batch_size: int, multiple: int, hidden: int, steps: int,
                 compile_steps: float, sample: int = 256, max_width: int = 512) -> int:
  """The row width for `steps` steps on this data: the multiple of `multiple` from its longest
  example up to 4x that which computes the least on sample batches of the whole data: the mean
  rows they need when the run is long enough to compile a few row counts, their maximum when one
  count is all it affords (`row_shapes`). Short rows leave gaps (long examples fill rows alone);
  long rows attend more. A function of the data, batch size and step count only."""
  longest = int(lengths.max())
  first = -(-longest // multiple) * multiple
  rng = np.random.default_rng(0)
  n = min(batch_size, len(lengths))
  batches = np.stack([rng.choice(len(lengths), n, replace=False)
                      for _ in range(min(steps, sample))])
  # A compile costs the same share of the sampled steps as of the real ones.
  per_sample = compile_steps * len(batches) / steps

  def cost(width):
    rows = plan(lengths, batches[None], np.ones((1, *batches.shape)), width)[0][0].max(1) + 1
    # The sample's maximum is noisy (rare long examples decide it): rows are costed by their mean
    # unless the run affords a single compiled count.
    several = len(set(row_shapes(rows, per_sample).tolist())) > 1
    return (rows.mean() if several else rows.max()) * width * token_cost(width, hidden)

  candidates = range(first, max(first, min(4 * longest, max_width)) + 1, multiple)
  return min(candidates, key=cost)


def row_shapes(needed: np.ndarray, compile_steps: float, max_shapes: int = 3,
               known=frozenset()) -> np.ndarray:
  """The rows of every step: `needed` (the most any trial needs at that step) rounded up to one of
  at most `max_shapes` counts. Starting from the largest, a smaller count is added while it saves
  more row-steps than a compile costs (`compile_steps` steps of the largest shape). Counts in
  `known` are compiled already (by an earlier group of the same program) and cost no compile: the
  largest known count that holds every step is taken instead of a new one when the rows it adds
  cost less than a compile."""
  top = int(needed.max())
  holds = sorted(k for k in known if k >= top)
  if holds and (holds[0] - top) * len(needed) <= compile_steps * top:
    top = holds[0]
  shapes = [top]
  while len(shapes) < max_shapes:
    current = _round_up(needed, shapes)
    candidates = {int(r) for r in np.unique(needed)} | {k for k in known if k < top}
    gains = {r: int(np.sum(np.where(needed <= r, current - r, 0)))
             - (0 if r in known else compile_steps * shapes[0])
             for r in candidates if r not in shapes}
    best = max(gains, key=gains.get, default=None)
    if best is None or gains[best] <= 0:
      break
    shapes.append(int(best))
  return _round_up(needed, shapes).astype(np.int32)


def _round_up(needed: np.ndarray, shapes: list[int]) -> np.ndarray:
  """Each of `needed` rounded up to the smallest of `shapes` that holds it."""
  ordered = np.sort(np.asarray(shapes))
  return ordered[np.searchsorted(ordered, needed, side='left')]


class Planner:
  """Packs one run's groups: the row width per (hidden size, step count) is chosen once from the
  data (`choose_width`), so a trial packs the same way whoever runs beside it; each trial's rows
  follow from its own batches (`plan`), and a group's rows per step, the most any of its trials
  needs, are rounded to a few counts (`row_shapes`)."""

  def __init__(self, lengths: np.ndarray, batch_size: int, multiple: int, on_cpu: bool):
    self.lengths, self.batch_size, self.multiple = lengths, batch_size, multiple
    self.compile_steps = COMPILE_STEPS['cpu' if on_cpu else 'accelerator']
    self._widths: dict[tuple[int, int], int] = {}
    # Row counts compiled per (hidden, steps, trials): a later group of the program reuses them.
    self._compiled_rows: dict[tuple[int, int, int], set[int]] = {}
    # Row counts decided over all groups of a program before the first runs (`prepare`).
    self._prepared: dict[tuple[int, int, int], list[int]] = {}

  def width(self, hidden: int, steps: int) -> int:
    if (hidden, steps) not in self._widths:
      self._widths[hidden, steps] = choose_width(self.lengths, self.batch_size, self.multiple,
                                                 hidden, steps, self.compile_steps)
    return self._widths[hidden, steps]

  def prepare(self, hidden: int, steps: int, plans: list[tuple[np.ndarray, np.ndarray]],
              max_slots: int = 1 << 22) -> None:
    """Decides the row counts of every group of one program before the first runs: `plans` holds
    each group's (T, steps, B) batches (T the same for all). Counts are chosen over all their steps
    at once, so a compile pays for itself over the whole sweep and no later group needs a count
    the first did not compile. Skipped when planning every group twice would cost more than
    `max_slots` example slots (long sweeps amortize their compiles anyway)."""
    if len(plans) < 2 or sum(idx.size for idx, _ in plans) > max_slots:
      return
    width = self.width(hidden, steps)
    needed = np.concatenate([plan(self.lengths, idx, w, width)[0].max(axis=(0, 2)) + 1
                             for idx, w in plans])
    key = (hidden, steps, len(plans[0][0]))
    known = frozenset(self._compiled_rows.get(key, ()))
    self._prepared[key] = sorted({int(r) for r in row_shapes(needed, self.compile_steps, known=known)})

  def rows_ahead(self, hidden: int, steps: int, batch_idx, batch_w):
    """(width, row counts, row, col) that `group` will give these batches, when `prepare` has
    decided their program's counts; None otherwise (the counts then depend on what the groups
    before compiled). Records and logs nothing, so another thread may ask (engine/ahead.py)."""
    width = self._widths.get((hidden, steps))
    if width is None or (hidden, steps, len(batch_idx)) not in self._prepared:
      return None  # no plan is worth making
    row, col, _ = plan(self.lengths, batch_idx, batch_w, width)
    rows = self._prepared_rows((hidden, steps, len(batch_idx)), row.max(axis=(0, 2)) + 1)
    return None if rows is None else (width, sorted({int(r) for r in np.unique(rows)}), row, col)

  def _prepared_rows(self, key: tuple, needed: np.ndarray) -> np.ndarray | None:
    """Each step's rows rounded up to the counts `prepare` decided for `key`; None when it
    decided none, or none holds the fullest step."""
    prepared = self._prepared.get(key)
    if prepared is None or needed.max() > prepared[-1]:
      return None
    return _round_up(needed, prepared)

  def group(self, hidden: int, steps: int, batch_idx, batch_w, n_real: int):
    """(width, rows per step, row, col) of a group's (T, steps, B) batches; logs the packing."""
    width = self.width(hidden, steps)
    row, col, _ = plan(self.lengths, batch_idx, batch_w, width)
    key = (hidden, steps, len(batch_idx))
    known = self._compiled_rows.setdefault(key, set())
    needed = row.max(axis=(0, 2)) + 1
    rows = self._prepared_rows(key, needed)
    if rows is None:
      rows = row_shapes(needed, self.compile_steps, known=frozenset(known))
    known.update(int(r) for r in np.unique(rows))
    real = np.where(batch_w[:n_real] > 0, self.lengths[batch_idx[:n_real]], 0).sum()
    logging.info('Packing: rows of %d tokens, %s rows per step (%.1f examples per row on '
                 'average); %.0f%% of the computed tokens are real.', width,
                 '/'.join(map(str, sorted(set(rows.tolist())))), self.batch_size / rows.mean(),
                 100 * real / (n_real * width * rows.sum()))
    return width, rows, row, col


def pack_for_inference(data: dict[str, np.ndarray], width: int, batch_rows: int):
  """A whole split packed once for inference passes: (calls, index). `calls` holds the token arrays
  of every call, (C, R, width) with R <= batch_rows rows each, plus `segment_ids`, `position_ids`
  and per-example placeholder `labels` (C, n); `index` (C, n) is the split row of each call's
  example slot (-1: unused). First-fit decreasing over the whole split, so rows are nearly full;
  one shape for every call, so one compile."""
  lengths = np.minimum(data['attention_mask'].sum(1), width).astype(np.int64)
  n = len(lengths)
  row, col = (a[0] for a in _plan_steps(lengths[None], np.ones((1, n), bool), width))
  n_rows = int(row.max()) + 1
  per_call = -(-n_rows // -(-n_rows // batch_rows))  # calls of equal size
  call, local = row // per_call, row % per_call
  counts = np.bincount(call)
  slot = np.empty(n, np.int64)
  by_call = np.argsort(call, kind='stable')
  slot[by_call] = np.arange(n) - np.repeat(np.cumsum(counts) - counts, counts)
  index = np.full((len(counts), int(counts.max())), -1, np.int64)
  index[call, slot] = np.arange(n)
  ex = np.repeat(np.arange(n), lengths)  # every real token: its example and position
  t = np.arange(len(ex)) - np.repeat(np.cumsum(lengths) - lengths, lengths)
  at = (call[ex], local[ex], col[ex] + t)
  calls = {}
  for k in TOKEN_KEYS:
    if k in data:
      calls[k] = np.zeros((len(counts), per_call, width), data[k].dtype)
      calls[k][at] = data[k][ex, t]
  calls['segment_ids'] = np.zeros((len(counts), per_call, width), np.int32)
  calls['segment_ids'][at] = slot[ex] + 1
  calls['position_ids'] = np.zeros_like(calls['segment_ids'])
  calls['position_ids'][at] = t
  calls['attention_mask'] = (calls['segment_ids'] > 0).astype(data['attention_mask'].dtype)
  calls['labels'] = np.zeros(index.shape, data['labels'].dtype)
  return calls, index


def pack(batch: dict, row, col, rows: int, width: int | None = None) -> dict:
  """The step's gathered batch (token arrays (B, S)) packed into (rows, width) by the plan (width
  default S; rows may be wider than the data's rows).

  Adds `segment_ids` (example index + 1, 0 on padding) and `position_ids` (position within the
  example); per-example entries (labels) stay (B,). A row of -1 (a padding example) is dropped.
  """
  mask = batch['attention_mask']
  n, s = mask.shape
  width = width or s
  t = jnp.arange(s)
  real = t[None, :] < mask.sum(1)[:, None]
  r = jnp.where(real & (row[:, None] >= 0), row[:, None], rows)  # out of range: dropped
  c = jnp.where(real, col[:, None] + t[None, :], 0)

  def scatter(values):
    values = jnp.broadcast_to(values, (n, s))
    return jnp.zeros((rows, width), values.dtype).at[r, c].set(values, mode='drop')

  segments = scatter(jnp.arange(1, n + 1, dtype=jnp.int32)[:, None])
  out = {k: v for k, v in batch.items() if k not in TOKEN_KEYS + ('attention_mask',)}
  out.update({k: scatter(batch[k]) for k in TOKEN_KEYS if k in batch})
  out.update(segment_ids=segments, position_ids=scatter(t[None, :].astype(jnp.int32)),
             attention_mask=(segments > 0).astype(mask.dtype))
  return out


def is_packed(batch: dict) -> bool:
  return 'segment_ids' in batch


def pool(x: jax.Array, batch: dict, pooling: str, n: int) -> jax.Array:
  """Each of the n examples' vector from packed hidden states x (rows, width, H): its first token
  (`cls`) or the mean over its tokens (`mean`)."""
  member = batch['segment_ids'][None] == jnp.arange(1, n + 1)[:, None, None]  # (n, rows, width)
  if pooling == 'cls':
    member = member & (batch['position_ids'][None] == 0)
  weights = member.astype(x.dtype)
  weights = weights / jnp.maximum(weights.sum((1, 2), keepdims=True), 1)
  return jnp.einsum('nrw,rwh->nh', weights, x)
