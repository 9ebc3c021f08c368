"""The trial engine: every group of trials sharing a compiled structure runs as one jit(vmap(...)).

It knows nothing about any study. Trials (trials.py) are grouped by program and step count; each
group's pure step (step.py) is vmapped over a trial axis sharded across all devices (compiled.py),
trained with device-side batch indexing (no host round trip per step), checkpointed with orbax and
evaluated on the dev sets. Finished trials are appended to `trials.jsonl` as one atomic write per
group, so a re-run of the same command skips them and resumes the group in flight from its last
checkpoint. A study adds per-trial metrics and side files through `TrialHooks`.

A group runs in four phases: restore-or-init, the training loop (progress, TensorBoard, periodic
evals, checkpoints), the final evaluation, and the records.
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

from jaxtransfer import distributed as dist
from jaxtransfer import metrics as metrics_lib
from jaxtransfer import results
from jaxtransfer import step as step_lib
from jaxtransfer import trials as trials_lib
from jaxtransfer.batching import trim_padding
from jaxtransfer.checkpoints import GroupCheckpoints
from jaxtransfer.compiled import GroupFunctions
from jaxtransfer.errors import UserError
from jaxtransfer.progress import Progress
from jaxtransfer.tensorboard import SummaryWriter
from jaxtransfer.trials import Group, Preempted, RunSpec, Trial, TrialHooks, TrialParams  # noqa: F401

Arrays = dict[str, Any]


@dataclasses.dataclass
class _GroupRun:
  """What the phases of one group share."""
  group: Group
  fns: GroupFunctions
  arrays_np: Arrays
  arrays: Any
  frozen_shared: Any
  ckpt: GroupCheckpoints
  writer: SummaryWriter | None
  state: Any = None
  start: int = 0
  meta: dict = dataclasses.field(default_factory=lambda: {'step': 0, 'evals': []})
  compile_s: float = 0.0
  last_loss: np.ndarray | None = None

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
               after_group: Callable[[], None] | None = None):
    self.spec = spec
    self.pretrained = pretrained
    self.train_data = trim_padding(train_data)
    self.dev_data = {k: trim_padding(v) for k, v in dev_data.items()}
    self.hooks = hooks
    self.after_group = after_group  # e.g. upload a remote workdir's mirror
    self.mesh = dist.trial_mesh()
    self.n_dev = len(jax.devices())
    self.records_path = os.path.join(spec.workdir, 'trials.jsonl')
    self.chunk_times: list[tuple[int, int, float]] = []  # (trials, steps, seconds) per chunk
    self._stop = False
    self._functions: dict[Any, GroupFunctions] = {}
    self._device_cache: dict[str, Any] = {}

  # --------------------------------------------------------------------- public

  def run(self, trials: Sequence[Trial]) -> list[dict]:
    """Runs every trial not yet in trials.jsonl; returns all records of these trials."""
    ids = [t.trial_id for t in trials]
    dup = [i for i, c in collections.Counter(ids).items() if c > 1]
    assert not dup, f'duplicate trial ids {dup[:5]}'
    self._check_sizes(trials)
    pending = self._pending(trials)
    groups = trials_lib.group_trials(pending, self.steps_of, self.max_per_group)
    total = sum(g.steps * len(g.trials) for g in groups)
    logging.info('%d trials to run in %d compiled group(s), %d trial-steps.', len(pending),
                 len(groups), total)
    progress = Progress(total, len(trials), len(trials) - len(pending))
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
        self._checkpoints(group).remove()
        if self.after_group is not None:
          self.after_group()
        progress.trials_done(len(records))
    finally:
      signal.signal(signal.SIGTERM, previous)
      progress.close()
    wanted = set(ids)
    return [r for r in results.read_records(self.records_path) if r['trial_id'] in wanted]

  def steps_of(self, trial: Trial) -> int:
    return self.spec.num_steps(trial.train_size or len(self.train_data['labels']))

  def max_per_group(self, program) -> int:
    """Trials per compiled group: `trials_per_program`, else as many as fit in device memory."""
    if self.spec.trials_per_program > 0:
      return self.spec.trials_per_program
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
    return trials_lib.stack_arrays(group, len(self.train_data['labels']), self.spec.batch_size,
                                   self.spec.learning_rate, self.n_dev)

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
    done = results.finished_ids(self.records_path)
    finished = np.array([t.trial_id in done for t in trials])
    if jax.process_count() > 1:
      # Process 0's trials.jsonl decides; every process must build the same groups.
      finished = np.asarray(multihost_utils.broadcast_one_to_all(finished))
    pending = [t for t, f in zip(trials, finished) if not f]
    if len(pending) < len(trials):
      logging.info('Resuming: %d of %d trials already finished in %s.', len(trials) - len(pending),
                   len(trials), self.records_path)
    return pending

  def _on_sigterm(self, signum, frame):
    del signum, frame
    logging.warning('SIGTERM: checkpointing the group in flight at the next step boundary.')
    self._stop = True

  def _checkpoints(self, group: Group) -> GroupCheckpoints:
    root = self.spec.checkpoint_dir or os.path.abspath(os.path.join(self.spec.workdir,
                                                                    'checkpoints'))
    return GroupCheckpoints(root, group.group_id)

  # --------------------------------------------------------------------- one group

  def _run_group(self, group: Group, progress: Progress) -> list[dict]:
    t0 = time.time()
    run = self._start_group(group, progress)
    self._train(run, progress)
    final = self._evaluate(run)
    run.meta['evals'].append({'step': group.steps, 'metrics': final})
    self._log_eval(run, final, group.steps)
    records = self._records(run, final, time.time() - t0)
    self._trial_outputs(run, records)
    if run.writer:
      run.writer.close()
    return records

  def _start_group(self, group: Group, progress: Progress) -> _GroupRun:
    """Restore the group's last checkpoint, or build every trial's state from the pretrained."""
    fns = self.functions(group)
    arrays_np = self.group_arrays(group)
    pretrained = self.on_device('pretrained', lambda: self.pretrained)
    run = _GroupRun(
        group, fns, arrays_np, dist.put(arrays_np, dist.trial_sharding(self.mesh)),
        fns.shared_frozen(pretrained) if group.program.shares_frozen else {},
        self._checkpoints(group),
        SummaryWriter(os.path.join(self.spec.workdir, 'tensorboard', group.group_id))
        if dist.is_main() else None)
    if run.ckpt.latest_step() is not None:
      abstract = jax.eval_shape(fns.init, pretrained, run.arrays)
      run.state, run.meta = run.ckpt.restore(abstract, dist.trial_sharding(self.mesh))
      run.start = int(run.meta['step'])
      logging.info('Restored group %s at step %d of %d.', group.group_id, run.start, group.steps)
      progress.advance(run.start * run.n_real)
    else:
      run.state = fns.init(pretrained, run.arrays)
    return run

  def _train(self, run: _GroupRun, progress: Progress) -> None:
    """Chunks of steps between log / eval / checkpoint boundaries, each one device-side loop."""
    spec, steps = self.spec, run.group.steps
    data = self.on_device('train', lambda: self.train_data)
    step = run.start
    while step < steps:
      stop = self._next_stop(step, steps)
      tc = time.time()
      exe, fresh = run.fns.compiled_train(run.state, run.frozen_shared, run.arrays, data)
      if fresh:
        run.compile_s = time.time() - tc
        logging.info('Compiled the training step for %d trials in %.1f s.',
                     run.arrays_np['seed'].shape[0], run.compile_s)
      ts = time.time()
      run.state = exe(run.state, run.frozen_shared, run.arrays, data, jnp.int32(step),
                      jnp.int32(stop))
      stats = dist.gather({k: run.state[k] for k in ('loss_sum', 'gnorm_sum', 'count')})
      dt = time.time() - ts
      self.chunk_times.append((run.n_real, stop - step, dt))
      self._log_chunk(run, progress, stats, step, stop, dt)
      step = stop
      if spec.eval_every and step % spec.eval_every == 0 and step < steps:
        ev = self._evaluate(run)
        run.meta['evals'].append({'step': step, 'metrics': ev})
        self._log_eval(run, ev, step)
      if self._stop or (spec.checkpoint_every and step % spec.checkpoint_every == 0
                        and step < steps):
        run.meta['step'] = step
        run.ckpt.save(step, run.state, run.meta)
        if self._stop:
          run.ckpt.close()
          raise Preempted(f'Checkpointed group {run.group.group_id} at step {step}.')
    run.ckpt.close()

  def _log_chunk(self, run: _GroupRun, progress: Progress, stats, step: int, stop: int,
                 dt: float) -> None:
    n = np.maximum(stats['count'][:run.n_real], 1)
    loss = stats['loss_sum'][:run.n_real] / n
    gnorm = stats['gnorm_sum'][:run.n_real] / n
    run.last_loss = loss
    progress.advance((stop - step) * run.n_real, loss=float(np.nanmean(loss)))
    logging.info('step %d/%d  loss %.4f  grad-norm %.3f  %.2f steps/s  %.0f examples/s (%d trials)',
                 stop, run.group.steps, np.nanmean(loss), np.nanmean(gnorm), (stop - step) / dt,
                 (stop - step) * self.spec.batch_size * run.n_real / dt, run.n_real)
    if run.writer:
      for tid, l, g in zip(run.ids, loss, gnorm):
        run.writer.scalars({f'train/loss/{tid}': float(l), f'train/grad_norm/{tid}': float(g)},
                           stop)

  def _next_stop(self, step: int, steps: int) -> int:
    """The next chunk boundary: log, eval or checkpoint step, or the end."""
    bounds = [steps, step + max(1, self.spec.log_every)]
    for every in (self.spec.eval_every, self.spec.checkpoint_every):
      if every:
        bounds.append((step // every + 1) * every)
    return min(bounds)

  def _evaluate(self, run: _GroupRun) -> list[dict[str, float]]:
    """Metrics per trial over every dev split (MNLI: matched and mismatched)."""
    per_trial: list[dict[str, float]] = [{} for _ in range(run.n_real)]
    e = self.spec.eval_batch_size
    for suffix, dev in self.dev_data.items():
      n = len(dev['labels'])
      # Padded to a whole number of eval batches (the padding rows' outputs are dropped).
      dev_dev = self.on_device(f'dev{suffix}', lambda: {
          k: np.concatenate([v, np.repeat(v[:1], -n % e, axis=0)]) for k, v in dev.items()})
      outs = [dist.gather(run.fns.predict(run.state, run.frozen_shared, run.arrays, dev_dev,
                                          jnp.int32(s))) for s in range(0, n, e)]
      outs = np.concatenate(outs, axis=1)[:run.n_real, :n]
      for i in range(run.n_real):
        per_trial[i].update(metrics_lib.compute_metrics(self.spec.task, outs[i], dev['labels'],
                                                        suffix=suffix))
    return per_trial

  def _log_eval(self, run: _GroupRun, ev, step: int) -> None:
    primary = self.spec.task.primary_metric
    vals = [m.get(primary, np.nan) for m in ev]
    logging.info('eval @ step %d: %s mean %.4f (min %.4f, max %.4f) over %d trials', step, primary,
                 np.nanmean(vals), np.nanmin(vals), np.nanmax(vals), len(vals))
    if run.writer:
      for tid, m in zip(run.ids, ev):
        run.writer.scalars({f'eval/{k}/{tid}': v for k, v in m.items()}, step)

  # --------------------------------------------------------------------- records

  def _chosen_eval(self, run: _GroupRun, final, i: int) -> tuple[dict, int]:
    """Trial i's reported metrics and their step: the last eval, or the best with select_best."""
    steps = run.group.steps
    if not (self.spec.select_best and len(run.meta['evals']) > 1):
      return final[i], steps
    primary = self.spec.task.primary_metric
    scored = [(e['metrics'][i].get(primary, -np.inf), e['step']) for e in run.meta['evals']]
    _, best = max(scored, key=lambda x: (np.nan_to_num(x[0], nan=-np.inf), -x[1]))
    return next(e['metrics'][i] for e in run.meta['evals'] if e['step'] == best), best

  def _records(self, run: _GroupRun, final, wall: float) -> list[dict]:
    extra = dist.gather(run.fns.report(run.state, run.frozen_shared, run.arrays))
    bad = dist.gather(run.state['bad_step'])[:run.n_real]
    records = []
    for i, t in enumerate(run.group.trials):
      chosen, best_step = self._chosen_eval(run, final, i)
      m = {**chosen, **{k: float(v[i]) for k, v in extra.items()}}
      failed = bad[i] >= 0
      records.append({
          'trial_id': t.trial_id, 'experiment': self.spec.experiment, 'task': self.spec.task.name,
          'model': self.spec.model, 'seed': t.seed, 'train_size': t.train_size,
          'setting': t.setting, 'metrics': {} if failed else m,
          'status': 'failed' if failed else 'ok',
          'error': f'loss became non-finite (nan/inf) at step {int(bad[i])}' if failed else None,
          'steps': run.group.steps,
          'train_loss': float(run.last_loss[i]) if run.last_loss is not None else None,
          'wall_s': round(wall, 2), 'compile_s': round(run.compile_s, 2),
          'group': run.group.group_id, 'group_trials': run.n_real,
          **({'best_step': best_step} if self.spec.select_best else {}),
      })
      if failed:
        logging.warning('Trial %s failed: %s', t.trial_id, records[-1]['error'])
    return records

  def _trial_outputs(self, run: _GroupRun, records: list[dict]) -> None:
    """The study's per-trial metrics (merged into the records) and side files."""
    if self.hooks is None:
      return
    with_params = self.hooks.uses_params(run.group.program)
    if with_params:
      host = dist.gather({k: run.state[k] for k in ('train', 'frozen') if k in run.state})
      frozen_host = dist.gather(run.frozen_shared) if 'frozen' not in host else None
    for i, (t, record) in enumerate(zip(run.group.trials, records)):
      if record['status'] != 'ok':
        continue
      params = None
      if with_params:
        take = lambda tree: jax.tree.map(lambda a: a[i], tree)
        params = TrialParams(take(host['train']),
                             frozen_host if frozen_host is not None else take(host['frozen']),
                             {k: v[i] for k, v in run.arrays_np.items()})
      record['metrics'].update(self.hooks.metrics(t, params))
      if params is not None and dist.is_main():
        self.hooks.write_outputs(t, params)


def _describe(program) -> str:
  fields = getattr(program, '__dataclass_fields__', {})
  skip = {'encoder'}
  return ', '.join(f'{k}={getattr(program, k)!r}' for k in fields if k not in skip) or repr(program)
