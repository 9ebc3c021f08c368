"""Trials and how they are planned: the run's spec, ids, each trial's data order, the compiled groups
they share, and the hooks through which a study adds to a finished trial.

A trial is a `Program` (static, hashable: the model structure and its interventions) plus per-trial
arrays. Trials with equal programs and step counts form a group that runs as one jit(vmap(...)).
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import json
import math
import os
import re
from typing import Any, Callable, Protocol, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxtransfer.core import optim
from jaxtransfer.core import packing
from jaxtransfer.data.types import TaskSpec
from jaxtransfer.core.program import ProgramLike

Arrays = dict[str, Any]


@dataclasses.dataclass(frozen=True)
class RunSpec:
  """What the engine needs from the run's config (the same for every trial)."""
  experiment: str
  model: str
  task: TaskSpec
  workdir: str
  batch_size: int
  learning_rate: float
  num_epochs: float = 3.0
  num_train_steps: int = 0
  optim: optim.OptimConfig = optim.OptimConfig()
  eval_batch_size: int = 128
  eval_every: int = 0           # steps; 0 = only after the last step
  select_best: bool = False     # report the best periodic evaluation instead of the last
  log_every: int = 20
  checkpoint_every: int = 500   # steps; also on SIGTERM
  trials_per_program: int = 0   # 0 = 1 on CPU, else as many as fit in device memory
  checkpoint_dir: str = ''      # '' = <workdir>/checkpoints (a remote workdir checkpoints remotely)
  pad_to_multiple_of: int = 16  # each step's batch padded to a multiple of this; 0 = the data's width
  group_by_length: bool = False  # HF's length-grouped sampling (batches of similar lengths)
  pack_sequences: bool = True   # a step's examples packed end to end in rows (packing.py)
  sparse_embeddings: bool = True  # the word table trains as the rows a trial reaches (vocab_rows)
  compile_ahead: bool = True    # the next program's step compiled in the background (ahead.py)
  config_hash: str = ''         # of the run's resolved config (config_history.jsonl), per record
  layer_lr_decay: float = 1.0   # recorded per trial; the programs apply it (Program.layer_decay)
  pooling: str = ''             # recorded per trial (cls / mean, as pooling=auto resolved)
  workdir_root: str = ''        # the shared workdir behind a remote one's mirror ('' = workdir)

  @classmethod
  def from_config(cls, config, task: TaskSpec, workdir: str, **overrides) -> RunSpec:
    keys = ('experiment', 'model', 'batch_size', 'learning_rate', 'num_epochs', 'num_train_steps',
            'eval_batch_size', 'eval_every', 'select_best', 'log_every', 'checkpoint_every',
            'trials_per_program', 'pad_to_multiple_of', 'group_by_length', 'pack_sequences',
            'sparse_embeddings', 'compile_ahead', 'layer_lr_decay', 'pooling')
    kw = {k: config[k] for k in keys if k in config}
    kw.update(task=task, workdir=workdir, optim=optim.OptimConfig.from_config(config))
    kw.update(overrides)
    return cls(**kw)

  def num_steps(self, n_examples: int) -> int:
    if self.num_train_steps > 0:
      return self.num_train_steps
    return max(1, int(math.ceil(self.num_epochs * math.ceil(n_examples / self.batch_size))))


class Preempted(Exception):
  """SIGINT or SIGTERM arrived; the group in flight was checkpointed and every finished trial is in
  trials.jsonl. Re-running the same command resumes."""
  workdir: str | None = None  # set by train.py: the run's workdir, for the resume command


@dataclasses.dataclass
class TrialParams:
  """One finished trial's params on the host (numpy), and its arrays."""
  train: Any
  frozen: Any
  arrays: Arrays


class TrialHooks(Protocol):
  """How a study adds to a finished trial, without touching its record."""

  def uses_params(self, program) -> bool:
    """Whether this program's trials' params are gathered to the host for the two calls below."""

  def metrics(self, trial: Trial, params: TrialParams | None) -> dict[str, float]:
    """Extra metrics of an ok trial, merged into its record before it is written. Pure; `params`
    is None unless `uses_params`."""

  def write_outputs(self, trial: Trial, params: TrialParams) -> None:
    """Side files of an ok trial (masks, distances, exports), written before its record so that a
    record never exists without them (process 0 only)."""


@dataclasses.dataclass
class Trial:
  """One fine-tuning run: a seed, a training-set size, a study setting and how to build it."""
  seed: int
  train_size: int                 # 0 = the whole training set
  setting: dict[str, Any]         # the swept keys and values, as reported
  program: ProgramLike
  arrays: Arrays = dataclasses.field(default_factory=dict)  # overrides of program.defaults()
  learning_rate: float | None = None  # None: the run's learning_rate
  trial_id: str = ''

  def __post_init__(self):
    if not self.trial_id:
      self.trial_id = make_trial_id(self.setting, self.train_size, self.seed)


def setting_parts(setting: dict[str, Any], train_size: int, seed: int) -> list[str]:
  """['n500', 'k3', 'schemebert', 's1']: a trial's size, swept values (sorted by key) and seed."""
  parts = [f'n{train_size or "full"}']
  for k, v in sorted(setting.items()):
    v = '_'.join(map(str, v)) if isinstance(v, (list, tuple)) else v
    parts.append(f'{k}{v}')
  return parts + [f's{seed}']


def make_trial_id(setting: dict[str, Any], train_size: int, seed: int) -> str:
  """Readable, filesystem-safe and unique within a run: `n500-k3-schemebert-s1`."""
  parts = setting_parts(setting, train_size, seed)
  tid = re.sub(r'[^A-Za-z0-9_.=-]+', '', '-'.join(parts))
  if len(tid) > 120:
    tid = tid[:100] + '-' + hashlib.sha1(tid.encode()).hexdigest()[:10]
  return tid


def trial_batches(seed: int, n_total: int, train_size: int, batch_size: int, steps: int,
                  lengths: np.ndarray | None = None):
  """(steps, B) example indices and weights for one trial, a function of its seed alone.

  The seed draws the trial's own random subset of `train_size` examples (Tamkin et al.) and a fresh
  order each epoch. An epoch's last partial batch is padded with weight-0 examples, so the loss is
  the mean over the real ones, as PyTorch's DataLoader gives. With `lengths`, each epoch's order
  is length-grouped as HF's `group_by_length` does (see `length_grouped`).
  """
  subset = trial_subset(seed, n_total, train_size)
  per_epoch = int(math.ceil(len(subset) / batch_size))
  idx = np.zeros((steps, batch_size), np.int32)
  w = np.zeros((steps, batch_size), np.float32)
  epoch, step = 0, 0
  while step < steps:
    order = np.random.default_rng([seed, epoch]).permutation(subset)
    if lengths is not None:
      order = length_grouped(order, lengths, batch_size)
    for b in range(per_epoch):
      if step == steps:
        break
      chunk = order[b * batch_size:(b + 1) * batch_size]
      idx[step, :len(chunk)] = chunk
      w[step, :len(chunk)] = 1.0
      step += 1
    epoch += 1
  return idx, w


def length_grouped(order: np.ndarray, lengths: np.ndarray, batch_size: int,
                   megabatch: int = 50) -> np.ndarray:
  """HF's LengthGroupedSampler: the shuffled order cut into megabatches of 50 batches, each sorted
  by length (longest first), so a batch holds similar lengths and pads little; the batch with the
  longest example goes first, so running out of memory shows at once."""
  size = megabatch * batch_size
  chunks = [order[i:i + size] for i in range(0, len(order), size)]
  chunks = [c[np.argsort(-lengths[c], kind='stable')] for c in chunks]
  out = np.concatenate(chunks)
  longest = max(range(0, len(out), size), key=lambda i: lengths[out[i]])
  out[[0, longest]] = out[[longest, 0]]
  return out


def trial_subset(seed: int, n_total: int, train_size: int) -> np.ndarray:
  """The training examples a trial may see: its own random `train_size` of them, or all."""
  if 0 < train_size < n_total:
    return np.random.RandomState(seed).choice(n_total, train_size, replace=False)
  return np.arange(n_total)


@dataclasses.dataclass
class Group:
  """Trials that share one compiled program and step count."""
  program: ProgramLike
  steps: int
  trials: list[Trial]

  @property
  def group_id(self) -> str:
    key = json.dumps([repr(self.program), self.steps, [t.trial_id for t in self.trials]])
    return 'g' + hashlib.sha1(key.encode()).hexdigest()[:12]


def group_trials(trials: Sequence[Trial], steps_of: Callable[[Trial], int],
                 max_per_group: Callable[[Any], int]) -> list[Group]:
  """Trials with the same program and step count, in first-seen order, chunked to fit."""
  buckets: dict[tuple, list[Trial]] = collections.OrderedDict()
  for t in trials:
    buckets.setdefault((t.program, steps_of(t)), []).append(t)
  groups = []
  for (program, steps), ts in buckets.items():
    size = max(1, max_per_group(program))
    for i in range(0, len(ts), size):
      groups.append(Group(program, steps, ts[i:i + size]))
  return groups


def stack_arrays(group: Group, n_train: int, batch_size: int, learning_rate: float,
                 multiple: int = 1, lengths: np.ndarray | None = None) -> Arrays:
  """Per-trial arrays of a group stacked on a leading trial axis, padded to a multiple of
  `multiple` (the device count) by repeating the first trial (whose extra results are dropped):
  the program's defaults overridden by the trial's arrays, `seed`, `lr`, and the trial's batches
  (`batch_idx`, `batch_w`)."""
  trials = list(group.trials)
  trials += [trials[0]] * (-len(trials) % multiple)
  defaults = group.program.defaults()
  per = []
  for t in trials:
    unknown = set(t.arrays) - set(defaults)
    assert not unknown, f'arrays {unknown} are not used by the program'
    a = {k: np.asarray(t.arrays.get(k, v), dtype=np.asarray(v).dtype) for k, v in defaults.items()}
    a['seed'] = np.int32(t.seed)
    a['lr'] = np.float32(learning_rate if t.learning_rate is None else t.learning_rate)
    a['batch_idx'], a['batch_w'] = trial_batches(t.seed, n_train, t.train_size, batch_size,
                                                 group.steps, lengths)
    per.append(a)
  return {k: np.stack([a[k] for a in per]) for k in per[0]}


def estimate_trial_bytes(program, pretrained, batch_size: int, seq_len: int) -> int:
  """Rough device memory of one trial: trainable params x4 (param, grad, 2 Adam moments), per-trial
  frozen params, and activations of the differentiated blocks."""
  train, frozen = jax.eval_shape(
      lambda p: program.init(p, {k: jnp.asarray(v) for k, v in program.defaults().items()},
                             jax.random.key(0)), pretrained)
  nbytes = lambda t: sum(int(np.prod(x.shape)) * 4 for x in jax.tree.leaves(t))
  per_trial = 4 * nbytes(train) + (0 if program.shares_frozen else nbytes(frozen))
  return per_trial + program.activation_bytes(batch_size, seq_len)


def solo_arrays(program, train: dict[str, np.ndarray], *, seed: int, learning_rate: float,
                train_size: int, batch_size: int, steps: int, pack: bool = True,
                multiple: int = 16, on_cpu: bool = True):
  """One trial's arrays as the engine builds them, for a plain loop over `step.train_step`:
  the program's defaults, `seed`, `lr`, its batches (`trial_batches`) and, packed, its rows
  (`packing.plan` at the run's width). Returns (arrays, layout) for `step.step_batch`: a
  `packing.Layout`, or None (each step at the data's own width)."""
  idx, w = trial_batches(seed, len(train['labels']), train_size, batch_size, steps)
  arrays = {**program.defaults(), 'seed': np.int32(seed), 'lr': np.float32(learning_rate),
            'batch_idx': idx, 'batch_w': w}
  layout = None
  if pack and program.supports_packing:
    lengths = np.asarray(train['attention_mask']).sum(1)
    compile_steps = packing.COMPILE_STEPS['cpu' if on_cpu else 'accelerator']
    width = packing.choose_width(lengths, batch_size, multiple, program.hidden_size, steps,
                                 compile_steps)
    row, col, rows = packing.plan(lengths, idx[None], w[None], width)
    arrays.update(pack_row=row[0], pack_col=col[0])
    layout = packing.Layout(width, rows)
  return {k: jnp.asarray(v) for k, v in arrays.items()}, layout


def device_memory_bytes() -> int:
  stats = jax.local_devices()[0].memory_stats() or {}
  if 'bytes_limit' in stats:
    return int(stats['bytes_limit'])
  # CPU: a share of host memory (the devices of a forced multi-device CPU share it).
  phys = os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES')
  return int(0.5 * phys / max(1, jax.local_device_count()))
