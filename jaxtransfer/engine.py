"""The trial engine: every group of trials sharing a compiled structure runs as one jit(vmap(...)).

It knows nothing about any study. A trial is a `Program` (static, hashable: the model structure and
its interventions) plus per-trial arrays; trials with equal programs and step counts are grouped,
vmapped over a leading trial axis sharded across all devices, trained with device-side batch
indexing (no host round trip per step), checkpointed with orbax and evaluated on the dev sets.
Finished trials are appended to `trials.jsonl` as one atomic write per group, so a re-run of the
same command skips them and resumes the group in flight from its last checkpoint.
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import json
import math
import os
import re
import shutil
import signal
import time
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
from absl import logging
from jax.experimental import multihost_utils

from jaxtransfer import distributed as dist
from jaxtransfer import metrics as metrics_lib
from jaxtransfer import optim
from jaxtransfer import results
from jaxtransfer.data import TaskSpec
from jaxtransfer.errors import UserError
from jaxtransfer.tensorboard import SummaryWriter

Arrays = dict[str, Any]


@dataclasses.dataclass
class Trial:
  """One fine-tuning run: a seed, a training-set size, a study setting and how to build it."""
  seed: int
  train_size: int                 # 0 = the whole training set
  setting: dict[str, Any]         # the swept keys and values, as reported
  program: Any                    # static and hashable; see program.Program for the interface
  arrays: Arrays = dataclasses.field(default_factory=dict)  # overrides of program.defaults()
  learning_rate: float | None = None  # None: the run's learning_rate
  trial_id: str = ''

  def __post_init__(self):
    if not self.trial_id:
      self.trial_id = make_trial_id(self.setting, self.train_size, self.seed)


def make_trial_id(setting: dict[str, Any], train_size: int, seed: int) -> str:
  """Readable, filesystem-safe and unique within a run: `n500-k3-schemebert-s1`."""
  parts = [f'n{train_size or "full"}']
  for k, v in sorted(setting.items()):
    v = '_'.join(map(str, v)) if isinstance(v, (list, tuple)) else v
    parts.append(f'{k}{v}')
  parts.append(f's{seed}')
  tid = re.sub(r'[^A-Za-z0-9_.=-]+', '', '-'.join(parts))
  if len(tid) > 120:
    tid = tid[:100] + '-' + hashlib.sha1(tid.encode()).hexdigest()[:10]
  return tid


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
  trials_per_program: int = 0   # 0 = as many as fit (estimated)
  export_model: bool = False
  checkpoint_dir: str = ''      # '' = <workdir>/checkpoints (a remote workdir checkpoints remotely)
  hf_config: dict | None = dataclasses.field(default=None, compare=False, hash=False)

  @classmethod
  def from_config(cls, config, task: TaskSpec, workdir: str, hf_config=None) -> RunSpec:
    return cls(experiment=config.experiment, model=config.model, task=task, workdir=workdir,
               batch_size=config.batch_size, learning_rate=config.learning_rate,
               num_epochs=config.num_epochs, num_train_steps=config.num_train_steps,
               optim=optim.OptimConfig.from_config(config), eval_batch_size=config.eval_batch_size,
               eval_every=config.eval_every, select_best=config.select_best,
               log_every=config.log_every, checkpoint_every=config.checkpoint_every,
               trials_per_program=config.trials_per_program, export_model=config.export_model,
               hf_config=hf_config)

  def num_steps(self, n_examples: int) -> int:
    if self.num_train_steps > 0:
      return self.num_train_steps
    return max(1, int(math.ceil(self.num_epochs * math.ceil(n_examples / self.batch_size))))


class Preempted(Exception):
  """SIGTERM arrived; the group in flight was checkpointed. Re-run the same command to resume."""


# ----------------------------------------------------------------------------- data order


def trial_batches(seed: int, n_total: int, train_size: int, batch_size: int, steps: int):
  """(steps, B) example indices and weights for one trial, a function of its seed alone.

  The seed draws the trial's own random subset of `train_size` examples (Tamkin et al.) and a fresh
  order each epoch. An epoch's last partial batch is padded with weight-0 examples, so the loss is
  the mean over the real ones, as PyTorch's DataLoader gives.
  """
  rs = np.random.RandomState(seed)
  subset = rs.choice(n_total, train_size, replace=False) if 0 < train_size < n_total else np.arange(n_total)
  per_epoch = int(math.ceil(len(subset) / batch_size))
  idx = np.zeros((steps, batch_size), np.int32)
  w = np.zeros((steps, batch_size), np.float32)
  epoch, step = 0, 0
  while step < steps:
    order = np.random.default_rng([seed, epoch]).permutation(subset)
    for b in range(per_epoch):
      if step == steps:
        break
      chunk = order[b * batch_size:(b + 1) * batch_size]
      idx[step, :len(chunk)] = chunk
      w[step, :len(chunk)] = 1.0
      step += 1
    epoch += 1
  return idx, w


def trim_padding(data: dict[str, np.ndarray], multiple: int = 8) -> dict[str, np.ndarray]:
  """Drops all-padding columns beyond the longest example (rounded up): same outputs, less work."""
  if 'attention_mask' not in data:
    return data
  longest = int(data['attention_mask'].sum(1).max())
  width = min(data['attention_mask'].shape[1], int(math.ceil(longest / multiple) * multiple))
  return {k: (v[:, :width] if v.ndim == 2 and k != 'labels' else v) for k, v in data.items()}


# ----------------------------------------------------------------------------- grouping


@dataclasses.dataclass
class Group:
  program: Any
  steps: int
  trials: list[Trial]

  @property
  def group_id(self) -> str:
    key = json.dumps([repr(self.program), self.steps, [t.trial_id for t in self.trials]])
    return 'g' + hashlib.sha1(key.encode()).hexdigest()[:12]


def estimate_trial_bytes(program, pretrained, batch_size: int, seq_len: int) -> int:
  """Rough device memory of one trial: trainable params x4 (param, grad, 2 Adam moments), per-trial
  frozen params, and activations of the differentiated blocks."""
  train, frozen = jax.eval_shape(
      lambda p: program.init(p, {k: jnp.asarray(v) for k, v in program.defaults().items()},
                             jax.random.key(0)), pretrained)
  nbytes = lambda t: sum(int(np.prod(x.shape)) * 4 for x in jax.tree.leaves(t))
  per_trial = 4 * nbytes(train) + (0 if program.shares_frozen else nbytes(frozen))
  enc = getattr(program, 'encoder', None)
  if enc is not None:
    # ~ 16 saved (B,S,H)-sized tensors per block plus the attention maps.
    act = batch_size * seq_len * (16 * enc.hidden_size + 2 * enc.num_heads * seq_len) * 4
    per_trial += act * enc.num_layers
  return per_trial


def device_memory_bytes() -> int:
  stats = jax.local_devices()[0].memory_stats() or {}
  if 'bytes_limit' in stats:
    return int(stats['bytes_limit'])
  # CPU: a share of host memory (the devices of a forced multi-device CPU share it).
  phys = os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES')
  return int(0.5 * phys / max(1, jax.local_device_count()))


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


# ----------------------------------------------------------------------------- the engine


class Engine:
  """Runs trials for one (model, task) pair and writes their records to the workdir."""

  def __init__(self, spec: RunSpec, pretrained: dict, train_data: dict[str, np.ndarray],
               dev_data: dict[str, dict[str, np.ndarray]],
               on_group_end: Callable[..., None] | None = None,
               export_fn: Callable[..., None] | None = None,
               after_group: Callable[[], None] | None = None):
    self.spec = spec
    self.pretrained = pretrained
    self.train_data = trim_padding(train_data)
    self.dev_data = {k: trim_padding(v) for k, v in dev_data.items()}
    self.on_group_end = on_group_end
    self.export_fn = export_fn
    self.after_group = after_group  # e.g. upload a remote workdir's mirror
    self.mesh = dist.trial_mesh()
    self.n_dev = len(jax.devices())
    self.records_path = os.path.join(spec.workdir, 'trials.jsonl')
    self._stop = False
    self._compiled: dict[Any, Any] = {}
    self._device_cache: dict[str, Any] = {}

  # --------------------------------------------------------------------- public

  def run(self, trials: Sequence[Trial]) -> list[dict]:
    """Runs every trial not yet in trials.jsonl; returns all records of these trials."""
    ids = [t.trial_id for t in trials]
    dup = [i for i, c in collections.Counter(ids).items() if c > 1]
    assert not dup, f'duplicate trial ids {dup[:5]}'
    n_train = len(self.train_data['labels'])
    for t in trials:
      if not 0 <= t.train_size <= n_train:
        raise UserError(
            f'train_size={t.train_size} is impossible: the {self.spec.task.name} training set has '
            f'{n_train} examples. Use sizes between 1 and {n_train}, or 0 for the whole set '
            '(--config.train_sizes).')
    done = results.finished_ids(self.records_path)
    finished = np.array([t.trial_id in done for t in trials])
    if jax.process_count() > 1:
      # Process 0's trials.jsonl decides; every process must build the same groups.
      finished = np.asarray(multihost_utils.broadcast_one_to_all(finished))
    pending = [t for t, f in zip(trials, finished) if not f]
    if len(pending) < len(trials):
      logging.info('Resuming: %d of %d trials already finished in %s.', len(trials) - len(pending),
                   len(trials), self.records_path)
    steps_of = lambda t: self.spec.num_steps(t.train_size or n_train)
    groups = group_trials(pending, steps_of, self._max_per_group)
    total = sum(g.steps * len(g.trials) for g in groups)
    logging.info('%d trials to run in %d compiled group(s), %d trial-steps.', len(pending),
                 len(groups), total)
    progress = _Progress(total, len(trials), len(trials) - len(pending))
    previous = signal.getsignal(signal.SIGTERM)
    signal.signal(signal.SIGTERM, self._on_sigterm)
    try:
      for i, group in enumerate(groups):
        logging.info('Group %d/%d (%s): %d trials x %d steps, program %s', i + 1, len(groups),
                     group.group_id, len(group.trials), group.steps, _describe(group.program))
        records = self._run_group(group, progress)
        if dist.is_main():
          results.append_records(self.records_path, records)
        dist.barrier(f'records-{group.group_id}')
        self._cleanup(group)
        if self.after_group is not None:
          self.after_group()
        progress.trials_done(len(records))
    finally:
      signal.signal(signal.SIGTERM, previous)
      progress.close()
    wanted = set(ids)
    return [r for r in results.read_records(self.records_path) if r['trial_id'] in wanted]

  # --------------------------------------------------------------------- internals

  def _on_sigterm(self, signum, frame):
    del signum, frame
    logging.warning('SIGTERM: checkpointing the group in flight at the next step boundary.')
    self._stop = True

  def _max_per_group(self, program) -> int:
    if self.spec.trials_per_program > 0:
      return self.spec.trials_per_program
    seq = self.train_data['input_ids'].shape[1] if 'input_ids' in self.train_data else 1
    per_trial = estimate_trial_bytes(program, self.pretrained, self.spec.batch_size, seq)
    fit = int(0.6 * device_memory_bytes() // max(per_trial, 1)) * self.n_dev
    return max(self.n_dev, min(fit, 64 * self.n_dev))

  def _trial_arrays(self, group: Group) -> tuple[Arrays, int]:
    """Per-trial arrays stacked on a leading axis padded to a multiple of the device count."""
    trials = list(group.trials)
    n_pad = -len(trials) % self.n_dev
    trials += [trials[0]] * n_pad  # padding trials repeat the first one; their results are dropped
    defaults = group.program.defaults()
    n_train = len(self.train_data['labels'])
    per = []
    for t in trials:
      unknown = set(t.arrays) - set(defaults)
      assert not unknown, f'arrays {unknown} are not used by the program'
      a = {k: np.asarray(t.arrays.get(k, v), dtype=np.asarray(v).dtype) for k, v in defaults.items()}
      a['seed'] = np.int32(t.seed)
      a['lr'] = np.float32(self.spec.learning_rate if t.learning_rate is None else t.learning_rate)
      a['batch_idx'], a['batch_w'] = trial_batches(t.seed, n_train, t.train_size,
                                                   self.spec.batch_size, group.steps)
      per.append(a)
    stacked = {k: np.stack([a[k] for a in per]) for k in per[0]}
    return stacked, len(group.trials)

  def _functions(self, group: Group):
    """init / train-chunk / predict programs for this group's structure (compiled once each)."""
    key = (group.program, group.steps)
    if key in self._compiled:
      return self._compiled[key]
    program, spec, steps = group.program, self.spec, group.steps
    trial_sh, rep = dist.trial_sharding(self.mesh), dist.replicated(self.mesh)

    def make_tx(train, arrays):
      labels = jax.tree_util.tree_map_with_path(
          lambda p, _: 'decay' if program.decays(tuple(k.key for k in p)) else 'no_decay', train)
      mult = program.lr_multipliers(train, arrays)
      return optim.make_tx(spec.optim, arrays['lr'], steps, labels, mult), mult

    def init_one(pretrained, arrays):
      rng = jax.random.fold_in(jax.random.key(arrays['seed']), 1)
      train, frozen = program.init(pretrained, arrays, rng)
      tx, _ = make_tx(train, arrays)
      state = {'train': train, 'opt': tx.init(train), 'bad_step': jnp.int32(-1),
               'loss_sum': jnp.float32(0), 'gnorm_sum': jnp.float32(0), 'count': jnp.int32(0)}
      if not program.shares_frozen:
        state['frozen'] = frozen
      return state

    def init(pretrained, arrays):
      return jax.vmap(init_one, in_axes=(None, 0))(pretrained, arrays)

    def shared_frozen(pretrained):
      defaults = {k: jnp.asarray(v) for k, v in program.defaults().items()}
      return program.init(pretrained, defaults, jax.random.key(0))[1]

    def train_chunk(state, frozen_shared, arrays, data, start, stop):
      def one(st, ar):
        frozen = st['frozen'] if 'frozen' in st else frozen_shared
        tx, mult = make_tx(st['train'], ar)
        dropout_key = jax.random.fold_in(jax.random.key(ar['seed']), 0)

        def body(step, st):
          idx, w = ar['batch_idx'][step], ar['batch_w'][step]
          batch = jax.tree.map(lambda a: a[idx], data)
          rng = jax.random.fold_in(dropout_key, step)
          loss, grads = jax.value_and_grad(program.loss)(st['train'], frozen, batch, w, ar, rng)
          grads = optim.mask_grads(grads, mult)
          updates, opt = tx.update(grads, st['opt'], st['train'])
          finite = jnp.isfinite(loss)
          return {**st, 'train': optax.apply_updates(st['train'], updates), 'opt': opt,
                  'bad_step': jnp.where((st['bad_step'] < 0) & ~finite, step, st['bad_step']),
                  'loss_sum': st['loss_sum'] + jnp.where(finite, loss, 0.0),
                  'gnorm_sum': st['gnorm_sum'] + jnp.where(finite, optax.global_norm(grads), 0.0),
                  'count': st['count'] + 1}

        st = {**st, 'loss_sum': jnp.float32(0), 'gnorm_sum': jnp.float32(0), 'count': jnp.int32(0)}
        return jax.lax.fori_loop(start, stop, body, st)

      return jax.vmap(one)(state, arrays)

    def predict(state, frozen_shared, arrays, dev, start):
      chunk = jax.tree.map(
          lambda a: jax.lax.dynamic_slice_in_dim(a, start, spec.eval_batch_size), dev)

      def one(st, ar):
        frozen = st['frozen'] if 'frozen' in st else frozen_shared
        return program.apply(st['train'], frozen, chunk, ar, deterministic=True)

      return jax.vmap(one)(state, arrays)

    def report(state, frozen_shared, arrays):
      def one(st, ar):
        return program.report(st['train'], st['frozen'] if 'frozen' in st else frozen_shared, ar)
      return jax.vmap(one)(state, arrays)

    fns = {
        'init': jax.jit(init, out_shardings=trial_sh),
        'shared_frozen': jax.jit(shared_frozen, out_shardings=rep),
        'train': jax.jit(train_chunk, donate_argnums=(0,),
                         in_shardings=(trial_sh, rep, trial_sh, rep, None, None),
                         out_shardings=trial_sh),
        'predict': jax.jit(predict, in_shardings=(trial_sh, rep, trial_sh, rep, None),
                           out_shardings=trial_sh),
        'report': jax.jit(report, in_shardings=(trial_sh, rep, trial_sh), out_shardings=trial_sh),
        'train_compiled': {},
    }
    self._compiled[key] = fns
    return fns

  def _checkpointer(self, group: Group) -> ocp.CheckpointManager:
    path = f'{self._checkpoint_root()}/{group.group_id}'
    return ocp.CheckpointManager(path, options=ocp.CheckpointManagerOptions(max_to_keep=1,
                                                                            create=True))

  def _checkpoint_root(self) -> str:
    return self.spec.checkpoint_dir or os.path.abspath(os.path.join(self.spec.workdir, 'checkpoints'))

  def _run_group(self, group: Group, progress: _Progress) -> list[dict]:
    t0 = time.time()
    program, steps = group.program, group.steps
    arrays_np, n_real = self._trial_arrays(group)
    trial_sh, rep = dist.trial_sharding(self.mesh), dist.replicated(self.mesh)
    arrays = dist.put(arrays_np, trial_sh)
    data = self._on_device('train', lambda: self.train_data)
    fns = self._functions(group)
    pretrained = self._on_device('pretrained', lambda: self.pretrained)
    frozen_shared = fns['shared_frozen'](pretrained) if program.shares_frozen else {}

    mngr = self._checkpointer(group)
    meta = {'step': 0, 'evals': []}
    start = 0
    state = None
    if mngr.latest_step() is not None:
      abstract = jax.eval_shape(fns['init'], pretrained, arrays)
      abstract = jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=trial_sh),
                              abstract)
      step = mngr.latest_step()
      restored = mngr.restore(step, args=ocp.args.Composite(
          state=ocp.args.StandardRestore(abstract), meta=ocp.args.JsonRestore()))
      state, meta = restored['state'], restored['meta']
      start = int(meta['step'])
      logging.info('Restored group %s at step %d of %d.', group.group_id, start, steps)
      progress.advance(start * n_real)
    else:
      state = fns['init'](pretrained, arrays)

    writer = SummaryWriter(os.path.join(self.spec.workdir, 'tensorboard', group.group_id)) \
        if dist.is_main() else None
    compile_s = 0.0
    last_loss = None  # mean training loss over the last logged chunk, per trial
    step = start
    ids = [t.trial_id for t in group.trials]
    while step < steps:
      stop = self._next_stop(step, steps)
      n_trials = arrays_np['seed'].shape[0]
      if n_trials not in fns['train_compiled']:
        # Compiled explicitly once per (structure, trial count), so compile time is reported apart.
        tc = time.time()
        fns['train_compiled'][n_trials] = fns['train'].lower(
            state, frozen_shared, arrays, data, jnp.int32(step), jnp.int32(stop)).compile()
        compile_s = time.time() - tc
        logging.info('Compiled the training step for %d trials in %.1f s.', n_trials, compile_s)
      ts = time.time()
      state = fns['train_compiled'][n_trials](state, frozen_shared, arrays, data, jnp.int32(step),
                                              jnp.int32(stop))
      stats = dist.gather({k: state[k] for k in ('loss_sum', 'gnorm_sum', 'count', 'bad_step')})
      dt = time.time() - ts
      n = np.maximum(stats['count'][:n_real], 1)
      loss, gnorm = stats['loss_sum'][:n_real] / n, stats['gnorm_sum'][:n_real] / n
      last_loss = loss
      progress.advance((stop - step) * n_real, loss=float(np.nanmean(loss)))
      logging.info('step %d/%d  loss %.4f  grad-norm %.3f  %.2f steps/s  %.0f examples/s (%d trials)',
                   stop, steps, np.nanmean(loss), np.nanmean(gnorm), (stop - step) / dt,
                   (stop - step) * self.spec.batch_size * n_real / dt, n_real)
      if writer:
        for tid, l, g in zip(ids, loss, gnorm):
          writer.scalars({f'train/loss/{tid}': float(l), f'train/grad_norm/{tid}': float(g)}, stop)
      step = stop
      if self.spec.eval_every and step % self.spec.eval_every == 0 and step < steps:
        ev = self._evaluate(fns, state, frozen_shared, arrays, n_real)
        meta['evals'].append({'step': step, 'metrics': ev})
        self._log_eval(writer, ids, ev, step)
      if self._stop or (self.spec.checkpoint_every and step % self.spec.checkpoint_every == 0
                        and step < steps):
        meta['step'] = step
        mngr.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                                meta=ocp.args.JsonSave(meta)))
        mngr.wait_until_finished()
        if self._stop:
          mngr.close()
          raise Preempted(f'Checkpointed group {group.group_id} at step {step}.')
    mngr.close()

    final = self._evaluate(fns, state, frozen_shared, arrays, n_real)
    meta['evals'].append({'step': steps, 'metrics': final})
    self._log_eval(writer, ids, final, steps)
    extra = dist.gather(fns['report'](state, frozen_shared, arrays))
    bad = dist.gather(state['bad_step'])[:n_real]
    wall = time.time() - t0
    records = []
    for i, t in enumerate(group.trials):
      chosen = final[i]
      best_step = steps
      if self.spec.select_best and len(meta['evals']) > 1:
        primary = self.spec.task.primary_metric
        scored = [(e['metrics'][i].get(primary, -np.inf), e['step']) for e in meta['evals']]
        _, best_step = max(scored, key=lambda x: (np.nan_to_num(x[0], nan=-np.inf), -x[1]))
        chosen = next(e['metrics'][i] for e in meta['evals'] if e['step'] == best_step)
      m = dict(chosen)
      m.update({k: float(v[i]) for k, v in extra.items()})
      failed = bad[i] >= 0
      records.append({
          'trial_id': t.trial_id, 'experiment': self.spec.experiment, 'task': self.spec.task.name,
          'model': self.spec.model, 'seed': t.seed, 'train_size': t.train_size,
          'setting': t.setting, 'metrics': {} if failed else m,
          'status': 'failed' if failed else 'ok',
          'error': f'loss became non-finite (nan/inf) at step {int(bad[i])}' if failed else None,
          'steps': steps, 'train_loss': float(last_loss[i]) if last_loss is not None else None,
          'wall_s': round(wall, 2), 'compile_s': round(compile_s, 2),
          'group': group.group_id, 'group_trials': n_real,
          **({'best_step': best_step} if self.spec.select_best else {}),
      })
      if failed:
        logging.warning('Trial %s failed: %s', t.trial_id, records[-1]['error'])
    if self.on_group_end is not None or (self.spec.export_model and self.export_fn):
      host = dist.gather({'train': state['train'],
                          **({'frozen': state['frozen']} if 'frozen' in state else {})})
      frozen_host = dist.gather(frozen_shared) if program.shares_frozen else None
      per_trial = []
      for i in range(n_real):
        tr = jax.tree.map(lambda a: a[i], host['train'])
        fr = frozen_host if frozen_host is not None else jax.tree.map(lambda a: a[i], host['frozen'])
        per_trial.append((tr, fr, {k: v[i] for k, v in arrays_np.items()}))
      if self.spec.export_model and self.export_fn and dist.is_main():
        for t, (tr, fr, ar) in zip(group.trials, per_trial):
          self.export_fn(program, tr, fr, ar, os.path.join(self.spec.workdir, 'models', t.trial_id))
      if self.on_group_end is not None:
        self.on_group_end(group, per_trial, records)
    if writer:
      writer.close()
    return records

  def _on_device(self, name: str, make: Callable[[], Any]):
    """Replicated device copy of shared data, made once per engine."""
    if name not in self._device_cache:
      self._device_cache[name] = dist.put(make(), dist.replicated(self.mesh))
    return self._device_cache[name]

  def _next_stop(self, step: int, steps: int) -> int:
    """The next chunk boundary: log, eval or checkpoint step, or the end."""
    bounds = [steps, step + max(1, self.spec.log_every)]
    for every in (self.spec.eval_every, self.spec.checkpoint_every):
      if every:
        bounds.append((step // every + 1) * every)
    return min(bounds)

  def _evaluate(self, fns, state, frozen_shared, arrays, n_real) -> list[dict[str, float]]:
    """Metrics per trial over every dev split (MNLI: matched and mismatched)."""
    per_trial: list[dict[str, float]] = [{} for _ in range(n_real)]
    e = self.spec.eval_batch_size
    for suffix, dev in self.dev_data.items():
      n = len(dev['labels'])
      # Padded to a whole number of eval batches (the padding rows' outputs are dropped).
      dev_dev = self._on_device(f'dev{suffix}', lambda: {
          k: np.concatenate([v, np.repeat(v[:1], -n % e, axis=0)]) for k, v in dev.items()})
      outs = [dist.gather(fns['predict'](state, frozen_shared, arrays, dev_dev, jnp.int32(s)))
              for s in range(0, n, e)]
      outs = np.concatenate(outs, axis=1)[:n_real, :n]
      for i in range(n_real):
        per_trial[i].update(metrics_lib.compute_metrics(self.spec.task, outs[i], dev['labels'],
                                                        suffix=suffix))
    return per_trial

  def _log_eval(self, writer, ids, ev, step):
    primary = self.spec.task.primary_metric
    vals = [m.get(primary, np.nan) for m in ev]
    logging.info('eval @ step %d: %s mean %.4f (min %.4f, max %.4f) over %d trials', step, primary,
                 np.nanmean(vals), np.nanmin(vals), np.nanmax(vals), len(vals))
    if writer:
      for tid, m in zip(ids, ev):
        writer.scalars({f'eval/{k}/{tid}': v for k, v in m.items()}, step)

  def _cleanup(self, group: Group) -> None:
    if not dist.is_main():
      return
    root = self._checkpoint_root()
    if '://' in root:
      from etils import epath
      path = epath.Path(f'{root}/{group.group_id}')
      if path.exists():
        path.rmtree()
      return
    shutil.rmtree(os.path.join(root, group.group_id), ignore_errors=True)
    if os.path.isdir(root) and not os.listdir(root):
      os.rmdir(root)


def _describe(program) -> str:
  fields = getattr(program, '__dataclass_fields__', {})
  skip = {'encoder'}
  return ', '.join(f'{k}={getattr(program, k)!r}' for k in fields if k not in skip) or repr(program)


class _Progress:
  """One progress bar over all trial-steps of the sweep (process 0 only)."""

  def __init__(self, total_steps: int, total_trials: int, done_trials: int):
    self.total_trials, self.done = total_trials, done_trials
    self.bar = None
    if dist.is_main() and total_steps:
      from tqdm.auto import tqdm
      self.bar = tqdm(total=total_steps, unit='trial-step', dynamic_ncols=True, smoothing=0.1)
      self._postfix()

  def _postfix(self, loss=None):
    if self.bar:
      post = {'trials': f'{self.done}/{self.total_trials}'}
      if loss is not None:
        post['loss'] = f'{loss:.4f}'
      self.bar.set_postfix(post)

  def advance(self, n: int, loss=None):
    if self.bar:
      self.bar.update(n)
      self._postfix(loss)

  def trials_done(self, n: int):
    self.done += n
    self._postfix()

  def close(self):
    if self.bar:
      self.bar.close()
