"""Compiling the next program's training step in the background (engine/ahead.py): the group that
adopts it trains to the records a run without it gives, and compiles none of its steps itself."""

import threading

import pytest

import helpers
from jaxtransfer.core import optim
from jaxtransfer.core import program as program_lib
from jaxtransfer.engine import compiled
from jaxtransfer.engine import engine as engine_lib
from jaxtransfer.engine import trials as trials_lib
from jaxtransfer.runtime import records as records_lib


def _run(tiny_demo, workdir, ahead, monkeypatch):
  """Two programs (all blocks tuned; block 0 frozen), one group each; returns the records and
  (program, layout, thread name) of every training-step compile."""
  pre, task_data = tiny_demo
  enc = pre.config
  programs = [program_lib.Program(encoder=enc, num_labels=2, num_blocks=enc.num_layers),
              program_lib.Program(encoder=enc, num_labels=2, num_blocks=enc.num_layers,
                                  frozen_blocks=1)]
  compiles = []
  original = compiled.GroupFunctions.compile_train

  def spy(self, state, frozen, arrays, data, layout):
    compiles.append((self.step.program.frozen_blocks, layout, threading.current_thread().name))
    return original(self, state, frozen, arrays, data, layout)

  monkeypatch.setattr(compiled.GroupFunctions, 'compile_train', spy)
  spec = trials_lib.RunSpec(experiment='test', model='tiny', task=task_data.task,
                            workdir=str(workdir), batch_size=8, learning_rate=2e-3,
                            num_train_steps=9, optim=optim.OptimConfig(warmup_steps=2),
                            log_every=3, checkpoint_every=0, compile_ahead=ahead)
  eng = engine_lib.Engine(spec, pre.params, task_data.train.as_dict(),
                          {k: v.as_dict() for k, v in task_data.dev.items()},
                          hooks=helpers.CaptureHooks())
  eng.run([trials_lib.Trial(1, 60, {'k': p.frozen_blocks}, p) for p in programs])
  monkeypatch.undo()
  return records_lib.read_records(str(workdir / 'trials.jsonl')), compiles


def test_the_next_groups_step_compiled_ahead_trains_the_same(tiny_demo, tmp_path, monkeypatch):
  base, base_compiles = _run(tiny_demo, tmp_path / 'off', False, monkeypatch)
  got, compiles = _run(tiny_demo, tmp_path / 'on', True, monkeypatch)
  assert all(thread == 'MainThread' for *_, thread in base_compiles)
  # The first group compiles its own steps; the second's were all compiled ahead, the same
  # layouts as the run without (the planner's rows_ahead agrees with its group()).
  first = [c for c in compiles if c[0] == 0]
  second = [c for c in compiles if c[0] == 1]
  assert first and all(thread == 'MainThread' for *_, thread in first)
  assert second and all(thread.startswith('compile-ahead') for *_, thread in second)
  assert sorted(str(c[1]) for c in second) == sorted(str(c[1]) for c in base_compiles if c[0] == 1)
  by_id = {r['trial_id']: r for r in base}
  assert len(got) == 2
  for r in got:
    assert r['status'] == 'ok'
    assert r['metrics'] == by_id[r['trial_id']]['metrics']
    assert r['train_loss'] == pytest.approx(by_id[r['trial_id']]['train_loss'], rel=1e-6)

