"""The trial engine: every group of trials sharing a compiled structure runs as one jit(vmap(...)).

It knows nothing about any study. Trials (trials.py) are grouped by program and step count; each
group's pure step (step.py) is vmapped over a trial axis sharded across all devices (compiled.py),
trained with device-side batch indexing (no host round trip per step), checkpointed with orbax and
evaluated on the dev sets. Finished trials are appended to `trials.jsonl` as one atomic write per
group, so a re-run of the same command skips them and resumes the group in flight from its last
checkpoint; each group's ok trials' dev predictions are written to `predictions/<group_id>.npz`
just before its records (runtime/predictions.py). A study adds per-trial metrics and side files
through `TrialHooks`.

A group runs in four phases: restore-or-init, the training loop (progress, TensorBoard, periodic
evals, checkpoints), the final evaluation, and the records. Each step's examples are packed into a
few rows (packing.py), or else padded to the length bucket of its longest row (batching.py); one
compiled step per row count or width; the next program's steps compile in a background thread
while the current group trains (ahead.py). The loop runs in chunks of at most
~half a second (or one step, when a step takes longer), so SIGINT or SIGTERM checkpoints the
group within one step and the run ends with `Preempted`.
"""

from __future__ import annotations

import collections
import dataclasses
import os
import signal
import time
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging
from jax.experimental import multihost_utils

from jaxtransfer.engine import ahead
from jaxtransfer.engine import batching
from jaxtransfer.runtime import distributed as dist
from jaxtransfer.engine import outcomes
from jaxtransfer.core import packing
from jaxtransfer.runtime import predictions as predictions_lib
from jaxtransfer.runtime import records as records_lib
from jaxtransfer.runtime.workers import Leases, Workers
from jaxtransfer.core import step as step_lib
from jaxtransfer.engine import trials as trials_lib
from jaxtransfer.engine import vocab_rows
from jaxtransfer.engine.checkpoints import GroupCheckpoints
from jaxtransfer.engine.compiled import GroupFunctions
from jaxtransfer.engine.evaluation import DevSets
from jaxtransfer.errors import UserError
from jaxtransfer.engine.progress import Progress
from jaxtransfer.engine.tensorboard import TrialWriters
from jaxtransfer.engine.trials import Group, Preempted, RunSpec, Trial, TrialHooks

Arrays = dict[str, Any]


CHUNK_SECONDS = 2.0  # the longest the host lets the device run ahead before it looks again
SIGNALS = (signal.SIGINT, signal.SIGTERM)


@dataclasses.dataclass
class _GroupRun:
  """What the phases of one group share."""
  group: Group
  fns: GroupFunctions
  arrays_np: Arrays
  arrays: Any
  frozen_shared: Any
  ckpt: GroupCheckpoints
  writer: TrialWriters | None
  state: Any = None
  start: int = 0
  meta: dict = dataclasses.field(default_factory=lambda: {'step': 0, 'evals': []})
  compile_s: float = 0.0
  last_loss: np.ndarray | None = None
  widths: np.ndarray | None = None  # padded width (packed: rows) of every step; None: no tokens
  pack_width: int | None = None     # packed: the rows' width

  def layout(self, step: int):
    """Step `step`'s static shape: a width, None (no token data) or a packing.Layout."""
    if self.widths is None or not self.pack_width:
      return None if self.widths is None else int(self.widths[step])
    return packing.Layout(self.pack_width, int(self.widths[step]))
  t0: float = 0.0

  @property
  def n_real(self) -> int:
    return len(self.group.trials)

  @property
  def ids(self) -> list[str]:
    return [t.trial_id for t in self.group.trials]


class Engine:
  """Runs trials for one (model, task) pair and writes their records to the workdir."""

  def __init__(self, spec: RunSpec, pretrained: dict, train_data: dict[str, np.ndarray],
               dev_data: dict[str, dict[str, np.ndarray]], hooks: TrialHooks | None = None,
               after_group: Callable[[], None] | None = None,
               workers: Workers | None = None, lease_timeout: float = 600.0,
               before_group: Callable[[], None] | None = None):
    self.spec = spec
    self.pretrained = pretrained
    self.train_data = batching.trim_padding(train_data)
    self.dev_data = {k: batching.trim_padding(v) for k, v in dev_data.items()}
    self.hooks = hooks
    self.after_group = after_group  # e.g. upload a remote workdir's mirror
    self.before_group = before_group  # workers on a remote workdir: fetch the others' records
    self.workers = workers
    self.leases = Leases(spec.workdir_root or spec.workdir, lease_timeout) if workers else None
    self._lease: str | None = None
    self.mesh = dist.trial_mesh()
    self.dev_sets = DevSets(self.dev_data, spec.task, spec.eval_batch_size, spec.pad_to_multiple_of,
                            self.mesh, pack=spec.pack_sequences)
    self.n_dev = len(jax.devices())
    self.records_path = os.path.join(spec.workdir, 'trials.jsonl')
    self.chunk_times: list[tuple[int, int, float]] = []  # (trials, steps, seconds) per chunk
    self._lengths = (self.train_data['attention_mask'].sum(1)
                     if 'attention_mask' in self.train_data else None)
    self._stop = False
    self._functions: dict[Any, GroupFunctions] = {}
    self._device_cache: dict[str, Any] = {}
    self._rows_cache: dict[tuple, np.ndarray] = {}  # vocab_rows.rows_of, per (seed, size)
    self._planner = None if self._lengths is None else packing.Planner(  # 0: the longest example
        self._lengths, spec.batch_size, spec.pad_to_multiple_of or int(self._lengths.max()),
        jax.devices()[0].platform == 'cpu')
    self._ahead = ahead.AheadCompiler() if spec.compile_ahead else None
    self._groups: list[Group] = []  # the run's groups in order, and the one in flight
    self._group_index = 0

  # --------------------------------------------------------------------- public

  def run(self, trials: Sequence[Trial]) -> list[dict]:
    """Runs every trial not yet in trials.jsonl; returns all records of these trials."""
    ids = [t.trial_id for t in trials]
    dup = [i for i, c in collections.Counter(ids).items() if c > 1]
    assert not dup, f'duplicate trial ids {dup[:5]}'
    self._check_sizes(trials)
    pending = self._pending(trials)
    # Independent workers share the groups of the whole sweep, so every worker forms the same ones.
    groups = trials_lib.group_trials(trials if self.workers else pending, self.steps_of,
                                     self.max_per_group)
    groups = self._with_table_rows(groups, trials)
    if self.workers:
      groups = self.workers.order(groups)
    self._prepare_packing(groups)
    self._groups = groups
    total = sum(g.steps * len(g.trials) for g in groups)
    logging.info('%d trials to run in %d compiled group(s), %d trial-steps.', len(pending),
                 len(groups), total)
    progress = Progress(total, len(trials), len(trials) - len(pending))
    previous = {s: signal.getsignal(s) for s in SIGNALS}
    for s in SIGNALS:
      signal.signal(s, self._on_signal)
    try:
      for i, group in enumerate(groups):
        if self._stopping():
          raise Preempted(f'Stopped before group {i + 1} of {len(groups)}; '
                          f'{progress.done} of {len(trials)} trials are finished in '
                          f'{self.records_path}.')
        self._group_index = i
        self._one_group(group, f'{i + 1}/{len(groups)}', progress)
    finally:
      for s, handler in previous.items():
        signal.signal(s, handler)
      progress.close()
      if self._ahead is not None:
        self._ahead.close()
    wanted = set(ids)
    return [r for r in records_lib.read_records(self.records_path) if r['trial_id'] in wanted]

  def _one_group(self, group: Group, which: str, progress: Progress) -> None:
    """Runs one group and appends its records; a worker first checks that no other worker has
    finished or holds it, and runs what is left of it under its lease."""
    lease = None
    if self.workers:
      if self.before_group is not None:
        self.before_group()  # a remote workdir: fetch the records other workers wrote
      done = records_lib.finished_ids(self.records_path)
      left = [t for t in group.trials if t.trial_id not in done]
      if not left or not self.leases.acquire(group.group_id):
        logging.info('Group %s (%s): %s.', which, group.group_id,
                     'finished' if not left else 'held by another worker')
        return
      lease, group = group.group_id, Group(group.program, group.steps, left)
    logging.info('Group %s (%s): %d trials x %d steps, program %s', which, group.group_id,
                 len(group.trials), group.steps, group.program.describe())
    self._lease = lease
    records = self._run_group(group, progress)
    if self.workers:
      records_lib.write_group(self.records_path, group.group_id, records)
    elif dist.is_main():
      records_lib.append_records(self.records_path, records)
    dist.barrier(f'records-{group.group_id}')
    self._checkpoints(group).remove()
    if self.after_group is not None:
      self.after_group()
    if lease is not None:
      self.leases.release(lease)
    progress.trials_done(len(records))

  def records_of(self, trials: Sequence[Trial]) -> list[dict]:
    """The records the workdir already holds of these trials (nothing is run)."""
    wanted = {t.trial_id for t in trials}
    got = [r for r in records_lib.read_records(self.records_path) if r['trial_id'] in wanted]
    logging.info('%d of %d trials are finished in %s.', len(got), len(wanted), self.records_path)
    return got

  def steps_of(self, trial: Trial) -> int:
    return self.spec.num_steps(trial.train_size or len(self.train_data['labels']))

  def max_per_group(self, program) -> int:
    """Trials per compiled group: `trials_per_program`; else 1 per device on CPU (vmapping trials
    buys no throughput on a compute-bound CPU and multiplies memory); else as many as fit in device
    memory by the estimate (checked against the compiled program when the group starts)."""
    if self.spec.trials_per_program > 0:
      return self.spec.trials_per_program
    if jax.devices()[0].platform == 'cpu':
      return self.n_dev
    seq = self.train_data['input_ids'].shape[1] if 'input_ids' in self.train_data else 1
    per_trial = trials_lib.estimate_trial_bytes(program, self.pretrained, self.spec.batch_size, seq)
    fit = int(0.6 * trials_lib.device_memory_bytes() // max(per_trial, 1)) * self.n_dev
    return max(self.n_dev, min(fit, 64 * self.n_dev))

  def functions(self, group: Group) -> GroupFunctions:
    """The group's jitted programs, built once per (program, step count)."""
    key = (group.program, group.steps)
    if key not in self._functions:
      step = step_lib.Step(group.program, self.spec.optim, group.steps)
      self._functions[key] = GroupFunctions(step, self.mesh, self.spec.eval_batch_size)
    return self._functions[key]

  def group_arrays(self, group: Group) -> Arrays:
    """The group's per-trial arrays (host numpy), padded to a multiple of the device count."""
    lengths = self._lengths if self.spec.group_by_length else None
    arrays = trials_lib.stack_arrays(group, len(self.train_data['labels']), self.spec.batch_size,
                                     self.spec.learning_rate, self.n_dev, lengths)
    k = getattr(group.program, 'embedding_rows', 0)
    if k:
      trials = list(group.trials)
      trials += [trials[0]] * (len(arrays['seed']) - len(trials))  # as stack_arrays pads
      vocab = group.program.encoder.vocab_size
      arrays['vocab_rows'] = np.stack([vocab_rows.padded(self._rows_of(t, vocab), k, vocab)
                                       for t in trials])
    return arrays

  def _rows_of(self, trial: Trial, vocab_size: int) -> np.ndarray:
    return vocab_rows.rows_of(trial, self.train_data['input_ids'], vocab_size, self._rows_cache)

  def _with_table_rows(self, groups: Sequence[Group], trials: Sequence[Trial]) -> list[Group]:
    """The groups, each eligible program's with `embedding_rows` set (vocab_rows.py). K is taken
    over all the run's trials of the program, finished ones too, so that a resumed run compiles
    the same program and finds its checkpoints."""
    if not self.spec.sparse_embeddings or 'input_ids' not in self.train_data:
      return list(groups)
    wd = self.spec.optim.weight_decay
    need: dict[Any, int] = {}
    for t in trials:
      if vocab_rows.eligible(t.program, wd):
        rows = self._rows_of(t, t.program.encoder.vocab_size)
        need[t.program] = max(need.get(t.program, 0), len(rows))
    sizes = {p: vocab_rows.table_size(n, p.encoder.vocab_size) for p, n in need.items()}
    return [dataclasses.replace(g, program=dataclasses.replace(g.program, embedding_rows=k))
            if (k := sizes.get(g.program)) else g for g in groups]

  def on_device(self, name: str, make: Callable[[], Any]):
    """Replicated device copy of shared data ('train', 'pretrained', ...), made once per engine."""
    if name not in self._device_cache:
      self._device_cache[name] = dist.put(make(), dist.replicated(self.mesh))
    return self._device_cache[name]

  # --------------------------------------------------------------------- planning

  def _check_sizes(self, trials: Sequence[Trial]) -> None:
    n_train = len(self.train_data['labels'])
    for t in trials:
      if not 0 <= t.train_size <= n_train:
        raise UserError(
            f'train_size={t.train_size} is impossible: the {self.spec.task.name} training set has '
            f'{n_train} examples. Use sizes between 1 and {n_train}, or 0 for the whole set '
            '(--config.train_sizes).')

  def _pending(self, trials: Sequence[Trial]) -> list[Trial]:
    done = records_lib.finished_ids(self.records_path)
    finished = np.array([t.trial_id in done for t in trials])
    if jax.process_count() > 1:
      # Process 0's trials.jsonl decides; every process must build the same groups.
      finished = np.asarray(multihost_utils.broadcast_one_to_all(finished))
    pending = [t for t, f in zip(trials, finished) if not f]
    if len(pending) < len(trials):
      logging.info('Resuming: %d of %d trials already finished in %s.', len(trials) - len(pending),
                   len(trials), self.records_path)
    return pending

  def _on_signal(self, signum, frame):
    del frame
    if self._stop and signum == signal.SIGINT:
      raise KeyboardInterrupt  # a second Ctrl-C: abort now, without the checkpoint
    self._stop = True
    logging.warning('%s: checkpointing the group in flight after the current step (Ctrl-C again '
                    'aborts at once).', signal.Signals(signum).name)

  def _stopping(self) -> bool:
    """Whether any process got a stop signal; all processes ask at the same chunk boundary, so a
    preempted host and the others checkpoint the same step and exit together."""
    self._stop = dist.any_process(self._stop)
    return self._stop

  def _checkpoints(self, group: Group) -> GroupCheckpoints:
    root = self.spec.checkpoint_dir or os.path.abspath(os.path.join(self.spec.workdir,
                                                                    'checkpoints'))
    return GroupCheckpoints(root, group.group_id)

  # --------------------------------------------------------------------- one group

  def _run_group(self, group: Group, progress: Progress) -> list[dict]:
    run = self._start_group(group, progress)
    self._train(run, progress)
    final_preds: dict[str, np.ndarray] = {}
    final = self._evaluate(run, final_preds)
    run.meta['evals'].append({'step': group.steps, 'metrics': final})
    self._log_eval(run, final, group.steps)
    records = self._records(run, final, self._wall(run))
    self._trial_outputs(run, records)
    self._write_predictions(run, records, final_preds)
    if run.writer:
      run.writer.close([r['metrics'] for r in records], group.steps)
    return records

  def _start_group(self, group: Group, progress: Progress) -> _GroupRun:
    """Restore the group's last checkpoint, or build every trial's state from the pretrained."""
    fns = self.functions(group)
    arrays_np = self.group_arrays(group)
    packed = self._pack(group, arrays_np)  # adds the packing plan to arrays_np
    pretrained = self.on_device('pretrained', lambda: self.pretrained)
    run = _GroupRun(
        group, fns, arrays_np, dist.put(arrays_np, dist.trial_sharding(self.mesh)),
        fns.shared_frozen(pretrained) if group.program.shares_frozen else {},
        self._checkpoints(group),
        TrialWriters(os.path.join(self.spec.workdir, 'tensorboard'), group.trials)
        if dist.is_main() else None, t0=time.time())
    run.meta['wall_s'] = 0.0
    if packed is not None:
      run.pack_width, run.widths = packed
    elif self._lengths is not None:
      n, width = len(group.trials), self.train_data['input_ids'].shape[1]
      run.widths, efficiency = batching.step_widths(
          self._lengths, arrays_np['batch_idx'][:n], arrays_np['batch_w'][:n],
          self.spec.pad_to_multiple_of or width, width)
      logging.info('Length buckets: step widths %s; %.0f%% of the computed tokens are real.',
                   sorted(set(run.widths.tolist())), 100 * efficiency)
    restored = None
    if run.ckpt.latest_step() is not None:
      abstract = jax.eval_shape(fns.init, pretrained, run.arrays)
      restored = run.ckpt.restore(abstract, dist.trial_sharding(self.mesh))
    if restored is not None:
      run.state, run.meta = restored
      run.start = int(run.meta['step'])
      logging.info('Restored group %s at step %d of %d.', group.group_id, run.start, group.steps)
      progress.advance(run.start * run.n_real)
    else:
      run.state = fns.init(pretrained, run.arrays)
    return run

  def _pack(self, group: Group, arrays_np: Arrays):
    """(row width, rows of every step) of the group's packed steps (packing.Planner), each trial's
    plan added to `arrays_np`; None without tokens, packing off, or a program without packing."""
    if (self._planner is None or not self.spec.pack_sequences
        or not group.program.supports_packing):
      return None
    width, rows, row, col = self._planner.group(group.program.hidden_size, group.steps,
                                                arrays_np['batch_idx'],
                                                arrays_np['batch_w'], len(group.trials))
    arrays_np.update(pack_row=row, pack_col=col)
    return width, rows

  def _prepare_packing(self, groups: Sequence[Group]) -> None:
    """The packed row counts of each program's groups, decided over all of them at once
    (`Planner.prepare`): one compiled step serves every group of a program."""
    if self._planner is None or not self.spec.pack_sequences:
      return
    by_program = collections.defaultdict(list)
    for g in groups:
      if g.program.supports_packing:
        arrays = self.group_arrays(g)
        by_program[g.program.hidden_size, g.steps, len(arrays['batch_idx'])].append(
            (arrays['batch_idx'], arrays['batch_w']))
    for (hidden, steps, _), plans in by_program.items():
      self._planner.prepare(hidden, steps, plans)

  def _wall(self, run: _GroupRun) -> float:
    """Seconds this group has run, over every attempt (a resumed group adds its earlier ones)."""
    return run.meta.get('wall_s', 0.0) + time.time() - run.t0

  def _train(self, run: _GroupRun, progress: Progress) -> None:
    """Device-side chunks of steps of one width, cut at log / eval / checkpoint boundaries. Chunks
    are dispatched without waiting (packed row counts that change every step make one-step
    chunks); the host waits once per window of ~CHUNK_SECONDS of steps, at the same steps on every
    process, and then logs, evaluates, checkpoints or stops."""
    data = self.on_device('train', lambda: self.train_data)
    step, step_s, since_log, next_sent = run.start, None, [], False
    synced, ts, compiling = step, time.time(), 0.0
    while step < run.group.steps:
      stop = self._next_stop(run, step, step_s, synced)
      tc = time.time()
      exe = self._train_executable(run, data, run.layout(step))
      compiling += time.time() - tc
      # The running sums restart after each log line. A resumed group's sums come from its
      # checkpoint, so they restart only at a log boundary: train_loss stays the uninterrupted one.
      reset = step % max(1, self.spec.log_every) == 0
      run.state = exe(run.state, run.frozen_shared, run.arrays, data, jnp.int32(step),
                      jnp.int32(stop), jnp.bool_(reset))
      step = stop
      if not self._sync_due(run, synced, step, step_s):
        continue
      jax.block_until_ready(run.state.stats.count)
      dt = time.time() - ts - compiling
      if self._lease is not None:
        self.leases.heartbeat(self._lease)
      step_s, stop_all = dist.agree_chunk(dt / (step - synced), self._stop)
      self._stop |= stop_all  # a signal landing after the agreement counts at the next window
      if not next_sent:  # this group's first steps ran (its first compile is done): start the next's
        self._compile_next(run.fns)
        next_sent = True
      self.chunk_times.append((run.n_real, step - synced, dt))
      progress.advance((step - synced) * run.n_real)
      since_log.append((step - synced, dt))
      synced, ts, compiling = step, time.time(), 0.0
      if step == run.group.steps or step % max(1, self.spec.log_every) == 0:
        self._log_train(run, progress, since_log, step)
        since_log = []
      self._after_chunk(run, step, stop_all)
    run.ckpt.close()

  def _sync_due(self, run: _GroupRun, synced: int, step: int, step_s: float | None) -> bool:
    """Whether the host waits for the device after the chunk ending at `step`: at the last step,
    a log / eval / checkpoint boundary, before any step has been timed, or once the window since
    `synced` holds CHUNK_SECONDS of steps. A function of agreed values only (the same on every
    process)."""
    if step == run.group.steps or step_s is None:
      return True
    if (step - synced) * step_s >= CHUNK_SECONDS:
      return True
    everies = (max(1, self.spec.log_every), self.spec.eval_every, self.spec.checkpoint_every)
    return any(every and step % every == 0 for every in everies)

  def _train_executable(self, run: _GroupRun, data, layout):
    if self._ahead is not None:
      run.compile_s += self._ahead.collect(run.fns)
    tc = time.time()
    exe, fresh = run.fns.compiled_train(run.state, run.frozen_shared, run.arrays, data, layout)
    if fresh:
      first = not run.compile_s
      run.compile_s += time.time() - tc
      if first:
        logging.info('Compiled the training step for %d trials in %.1f s.',
                     run.arrays_np['seed'].shape[0], time.time() - tc)
      else:
        logging.info('Compiled width %s in %.1f s.', layout, time.time() - tc)
    return exe

  def _compile_next(self, current: GroupFunctions) -> None:
    """Hands the training steps of the next group with other functions than the current one's
    (the next program, in a sweep's order) to the background compiler (ahead.py)."""
    if self._ahead is None:
      return
    later = (g for g in self._groups[self._group_index + 1:] if self.functions(g) is not current)
    group = next(later, None)
    if group is None:
      return
    fns, arrays_np = self.functions(group), self.group_arrays(group)
    pretrained = self.on_device('pretrained', lambda: self.pretrained)
    data = self.on_device('train', lambda: self.train_data)
    planner = self._planner if self.spec.pack_sequences else None
    self._ahead.submit(fns, lambda: ahead.compile_group(fns, group, arrays_np, pretrained, data,
                                                        planner, self._lengths is None))

  def _after_chunk(self, run: _GroupRun, step: int, stop_all: bool) -> None:
    """Periodic evaluation and checkpoint at their boundaries; on a signal, checkpoint and stop."""
    spec, steps = self.spec, run.group.steps
    if spec.eval_every and step % spec.eval_every == 0 and step < steps:
      preds: dict[str, np.ndarray] = {}
      ev = self._evaluate(run, preds if spec.select_best else None)
      run.meta['evals'].append({'step': step, 'metrics': ev})
      if spec.select_best:  # a record may report this eval: its predictions survive a resume
        run.meta.setdefault('predictions', {})[str(step)] = {k: v.tolist()
                                                              for k, v in preds.items()}
      self._log_eval(run, ev, step)
      # A signal that lands during the eval stops here, not a chunk later: every process has
      # reached this eval, so agreeing once more is safe.
      stop_all = dist.any_process(self._stop)
    stop_now = stop_all and step < steps
    if stop_now or (spec.checkpoint_every and step % spec.checkpoint_every == 0 and step < steps):
      run.ckpt.save(step, run.state, {**run.meta, 'step': step, 'wall_s': self._wall(run)})
      if stop_now:
        run.ckpt.close()
        raise Preempted(f'Checkpointed group {run.group.group_id} ({run.n_real} trials) at step '
                        f'{step} of {steps} in {run.ckpt.root}.')

  def _log_train(self, run: _GroupRun, progress: Progress, since_log, step: int) -> None:
    stats = dist.gather(run.state.stats)
    n = np.maximum(stats.count[:run.n_real], 1)
    loss = stats.loss_sum[:run.n_real] / n
    gnorm = stats.gnorm_sum[:run.n_real] / n
    run.last_loss = loss
    progress.advance(0, loss=float(np.nanmean(loss)))
    k, dt = sum(c for c, _ in since_log), sum(t for _, t in since_log)
    logging.info('step %d/%d  loss %.4f  grad-norm %.3f  %.2f steps/s  %.0f examples/s (%d trials)',
                 step, run.group.steps, np.nanmean(loss), np.nanmean(gnorm), k / dt,
                 k * self.spec.batch_size * run.n_real / dt, run.n_real)
    if run.writer:
      for i, (l, g) in enumerate(zip(loss, gnorm)):
        run.writer.scalars(i, {'train/loss': float(l), 'train/grad_norm': float(g)}, step)

  def _next_stop(self, run: _GroupRun, step: int, step_s: float | None, synced: int) -> int:
    """The end of the next chunk: a log, eval or checkpoint boundary, the end of this width's run
    of steps, the time budget of the window since `synced` (one step until a step has been
    timed), or the last step."""
    steps, spec = run.group.steps, self.spec
    budget = 1 if step_s is None else max(1, int(CHUNK_SECONDS / step_s))
    bounds = [steps, max(step + 1, synced + budget)]
    for every in (max(1, spec.log_every), spec.eval_every, spec.checkpoint_every):
      if every:
        bounds.append((step // every + 1) * every)
    if run.widths is not None:
      other = np.flatnonzero(run.widths[step:] != run.widths[step])
      bounds.append(step + int(other[0]) if len(other) else steps)
    return min(bounds)

  def _evaluate(self, run: _GroupRun, keep=None) -> list[dict[str, float]]:
    return self.dev_sets.evaluate(run.fns, run.state, run.frozen_shared, run.arrays, run.n_real,
                                  keep)

  def _log_eval(self, run: _GroupRun, ev, step: int) -> None:
    primary = self.spec.task.primary_metric
    vals = [m.get(primary, np.nan) for m in ev]
    logging.info('eval @ step %d: %s mean %.4f (min %.4f, max %.4f) over %d trials', step, primary,
                 np.nanmean(vals), np.nanmin(vals), np.nanmax(vals), len(vals))
    if run.writer:
      for i, m in enumerate(ev):
        run.writer.scalars(i, {f'eval/{k}': v for k, v in m.items()}, step)

  # --------------------------------------------------------------------- records

  def _records(self, run: _GroupRun, final, wall: float) -> list[dict]:
    extra = dist.gather(run.fns.report(run.state, run.frozen_shared, run.arrays))
    bad = dist.gather(run.state.stats.bad_step)[:run.n_real]
    return outcomes.build_records(self.spec, run.group, final, run.meta['evals'], extra, bad,
                                  run.last_loss, wall, run.compile_s)

  def _write_predictions(self, run: _GroupRun, records: list[dict], final_preds) -> None:
    """predictions/<group_id>.npz: every ok trial's dev predictions behind its record's metrics
    (with select_best, its chosen eval's), written (process 0) before the records are appended."""
    saved = run.meta.get('predictions', {})
    steps = {i: r.get('best_step', run.group.steps) for i, r in enumerate(records)
             if r['status'] == 'ok'}
    lost = [records[i]['trial_id'] for i, s in steps.items()
            if s != run.group.steps and str(s) not in saved]
    if lost:  # only a checkpoint written before predictions were kept lacks them
      logging.warning('No dev predictions kept of the chosen evals of %s: left out of %s.', lost,
                      predictions_lib.DIRNAME)
    ok = [i for i in steps if records[i]['trial_id'] not in lost]
    if not dist.is_main() or not ok:
      return
    preds = {}
    for suffix, final in final_preds.items():
      preds[suffix] = np.stack([final[i] if steps[i] == run.group.steps else
                                np.asarray(saved[str(steps[i])][suffix][i], final.dtype)
                                for i in ok])
    predictions_lib.write(self.spec.workdir, run.group.group_id,
                          [records[i]['trial_id'] for i in ok], preds,
                          {s: self.dev_data[s]['labels'] for s in preds})

  def _trial_outputs(self, run: _GroupRun, records: list[dict]) -> None:
    """The study's per-trial metrics (merged into the records) and side files."""
    if self.hooks is None:
      return
    params = None
    if self.hooks.uses_params(run.group.program):
      host = dist.gather({'train': run.state.step.train, 'frozen': run.state.frozen})
      shared = dist.gather(run.frozen_shared) if run.state.frozen is None else None
      params = outcomes.TrialParamsOf(host, shared, run.arrays_np, run.group.program)
    outcomes.apply_hooks(self.hooks, run.group.trials, records, params)
