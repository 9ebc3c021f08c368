"""Tests for jaxtransfer.engine.tensorboard: event files read back with TensorBoard's own readers."""

from __future__ import annotations

import glob
import os
import threading
import time

import numpy as np
import pytest
from tensorboard.backend.event_processing import event_accumulator as ea_mod
from tensorboard.backend.event_processing import event_file_loader, event_multiplexer
from tensorboard.compat.proto import event_pb2

from jaxtransfer.engine import tensorboard as jt_tb
from jaxtransfer.engine import trials as trials_lib


class _Trial:
  def __init__(self, setting, train_size, seed):
    self.setting, self.train_size, self.seed = setting, train_size, seed


def _events(path):
  """Every event of one file, parsed by TensorBoard's record reader (which checks the CRCs)."""
  return [event_pb2.Event.FromString(r)
          for r in event_file_loader.RawEventFileLoader(str(path)).Load()]


def _files(logdir):
  return sorted(glob.glob(os.path.join(str(logdir), 'events.out.tfevents.*')))


def test_roundtrip_with_tensorboard_reader(tmp_path):
  trial = _Trial({}, 10, 0)
  logdir = tmp_path / jt_tb.run_name({}, 10, 0)
  expected = {'train/loss': [], 'eval/accuracy': [], 'lr': []}
  tw = jt_tb.TrialWriters(tmp_path, [trial])
  for step in range(0, 50, 5):
    loss = 1.0 / (step + 1) + 0.123456789
    tw.scalars(0, {'train/loss': loss}, step)
    expected['train/loss'].append((step, loss))
    if step % 10 == 0:
      values = {'eval/accuracy': 0.5 + step / 100, 'lr': np.float32(2e-5 * (1 - step / 50))}
      tw.scalars(0, values, step)
      for tag, v in values.items():
        expected[tag].append((step, float(v)))
  tw.scalars(0, {'big': 1e300}, 7)  # saturates to inf like a float32 cast
  tw.scalars(0, {'neg_step': 1.0}, -3)
  tw.scalars(0, {}, 8)  # nothing to write
  tw.close()
  files = _files(logdir)
  assert len(files) == 1
  name = os.path.basename(files[0]).split('.')
  assert name[:3] == ['events', 'out', 'tfevents'] and name[3].isdigit()
  assert name[-1].isdigit() and name[-2] == str(os.getpid())

  acc = ea_mod.EventAccumulator(str(logdir), size_guidance={ea_mod.SCALARS: 0})
  acc.Reload()
  assert set(acc.Tags()['scalars']) == set(expected) | {'big', 'neg_step'}
  for tag, pairs in expected.items():
    events = acc.Scalars(tag)
    assert [e.step for e in events] == [s for s, _ in pairs]
    np.testing.assert_array_equal([e.value for e in events],
                                  np.asarray([v for _, v in pairs], dtype=np.float32))
    assert all(abs(e.wall_time - time.time()) < 60 for e in events)
  assert acc.Scalars('big')[0].value == float('inf')
  assert acc.Scalars('neg_step')[0].step == -3

  # The first event carries the file version; then the session start, one event per scalars()
  # call (values of one call share it), and the session end.
  events = _events(files[0])
  assert events[0].file_version == 'brain.Event:2'
  assert len(events) == 1 + 1 + 10 + 5 + 2 + 1
  assert [len(e.summary.value) for e in events[2:-1]].count(2) == 5


def test_flush_on_open_periodically_and_on_close(tmp_path):
  trial = _Trial({'k': 1}, 10, 0)
  # Version and session start are on disk at once; later scalars wait for flush_secs or close().
  slow = jt_tb.TrialWriters(tmp_path / 'slow', [trial], flush_secs=3600)
  (path,) = _files(tmp_path / 'slow' / 'n10' / 'k1' / 's0')
  assert [e.summary.value[0].tag for e in _events(path)[1:]] == [jt_tb.SESSION_START_TAG]
  slow.scalars(0, {'a': 1.0}, 1)
  assert len(_events(path)) == 2
  slow.close()
  assert len(_events(path)) == 4
  fast = jt_tb.TrialWriters(tmp_path / 'fast', [trial], flush_secs=0)
  (path,) = _files(tmp_path / 'fast' / 'n10' / 'k1' / 's0')
  fast.scalars(0, {'a': 1.0}, 1)
  assert [(e.step, e.summary.value[0].simple_value) for e in _events(path)[2:]] == [(1, 1.0)]
  fast.close()


def test_no_thread_per_trial(tmp_path):
  before = threading.active_count()
  tw = jt_tb.TrialWriters(tmp_path, [_Trial({'k': k}, 10, 0) for k in range(20)])
  for i in range(20):
    tw.scalars(i, {'train/loss': 1.0}, 1)
  assert threading.active_count() == before
  tw.close()


def test_two_writers_same_run_get_distinct_files(tmp_path):
  # E.g. a group re-run in the same second: neither file clobbers the other.
  trial = _Trial({'k': 1}, 10, 0)
  a, b = jt_tb.TrialWriters(tmp_path, [trial]), jt_tb.TrialWriters(tmp_path, [trial])
  a.scalars(0, {'x': 1.0}, 1)
  b.scalars(0, {'x': 2.0}, 2)
  a.close()
  b.close()
  files = _files(tmp_path / 'n10' / 'k1' / 's0')
  assert len(files) == 2
  assert [[(e.step, v.simple_value) for e in _events(f)[2:-1] for v in e.summary.value]
          for f in files] in ([[(1, 1.0)], [(2, 2.0)]], [[(2, 2.0)], [(1, 1.0)]])


def _multiplexer(root):
  mux = event_multiplexer.EventMultiplexer(size_guidance={'scalars': 0, 'tensors': 0})
  mux.AddRunsFromDirectory(str(root))
  mux.Reload()
  return mux


def _sessions(mux):
  """{run: (hparams as Python values, end status)} through TensorBoard's own hparams parsers."""
  from google.protobuf import json_format
  from tensorboard.plugins.hparams import metadata
  content = mux.PluginRunToTagToContent(metadata.PLUGIN_NAME)
  out = {}
  for run, tags in content.items():
    start = metadata.parse_session_start_info_plugin_data(tags[metadata.SESSION_START_INFO_TAG])
    end = metadata.parse_session_end_info_plugin_data(tags[metadata.SESSION_END_INFO_TAG])
    out[run] = ({k: json_format.MessageToDict(v) for k, v in start.hparams.items()}, end.status)
  return out


def test_trial_writers_one_run_per_trial_with_hparams(tmp_path):
  trials = [_Trial({'k': k, 'reinit_scheme': 'bert', 'order': [2, 0, 1]}, 500, s)
            for k in (0, 3) for s in (1, 2)]
  tw = jt_tb.TrialWriters(tmp_path, trials)
  for step in (2, 4):
    for i in range(len(trials)):
      tw.scalars(i, {'train/loss': 1.0 / (i + step), 'train/grad_norm': 0.5}, step)
  tw.close([{'accuracy': 0.5 + 0.1 * i} for i in range(3)] + [{}], step=4)
  mux = _multiplexer(tmp_path)
  runs = {f'n500/k{k}/order2_0_1/reinit_schemebert/s{s}' for k in (0, 3) for s in (1, 2)}
  assert set(mux.Runs()) == runs
  for i, t in enumerate(trials):
    run = jt_tb.run_name(t.setting, t.train_size, t.seed)
    assert [e.value for e in mux.Scalars(run, 'train/loss')] == pytest.approx(
        [1.0 / (i + 2), 1.0 / (i + 4)])
    assert set(mux.GetAccumulator(run).Tags()['scalars']) >= {'train/loss', 'train/grad_norm'}
  sessions = _sessions(mux)
  first = jt_tb.run_name(trials[0].setting, 500, 1)
  assert sessions[first][0] == {'k': 0.0, 'reinit_scheme': 'bert', 'order': '2,0,1',
                                'seed': 1.0, 'train_size': 500.0}
  statuses = [sessions[jt_tb.run_name(t.setting, 500, t.seed)][1] for t in trials]
  assert statuses == [jt_tb.STATUS_SUCCESS] * 3 + [jt_tb.STATUS_FAILURE]
  assert mux.Scalars(first, 'final/accuracy')[0].value == pytest.approx(0.5)


def test_engine_writes_one_overlaying_run_per_trial(tiny_model_dir, tmp_path):
  """A real group: tags without trial ids, runs named by setting, final metrics = the records'."""
  import jaxtransfer as jt
  from jaxtransfer.core import program as program_lib
  from jaxtransfer.data import glue as data_lib
  from jaxtransfer.engine import engine as engine_lib
  pre = jt.load_pretrained(str(tiny_model_dir))
  td = data_lib.load_task_data('sst2', 'demo', pre.tokenizer, pre.path, 32,
                               cache_dir=str(tmp_path / 'cache'))
  spec = trials_lib.RunSpec(experiment='t', model='tiny', task=td.task, workdir=str(tmp_path),
                            batch_size=8, learning_rate=1e-3, num_train_steps=4, log_every=2,
                            eval_every=2, checkpoint_every=0, eval_batch_size=32)
  prog = program_lib.Program(encoder=pre.config, num_labels=2, num_blocks=pre.config.num_layers)
  eng = engine_lib.Engine(spec, pre.params, td.train.as_dict(),
                          {k: v.as_dict() for k, v in td.dev.items()})
  records = eng.run([trials_lib.Trial(s, 50, {'lr': lr}, prog, learning_rate=lr)
                     for lr in (1e-3, 1e-4) for s in (1, 2)])
  mux = _multiplexer(tmp_path / 'tensorboard')
  by_run = {jt_tb.run_name(r['setting'], r['train_size'], r['seed']): r for r in records}
  assert set(mux.Runs()) == set(by_run) == {f'n50/lr{lr}/s{s}' for lr in ('0.001', '0.0001')
                                            for s in (1, 2)}
  for run, record in by_run.items():
    tags = set(mux.GetAccumulator(run).Tags()['scalars'])
    assert {'train/loss', 'train/grad_norm', 'eval/accuracy', 'final/accuracy'} <= tags
    assert [e.step for e in mux.Scalars(run, 'train/loss')] == [2, 4]
    assert [e.step for e in mux.Scalars(run, 'eval/accuracy')] == [2, 4]
    assert mux.Scalars(run, 'final/accuracy')[0].value == pytest.approx(
        record['metrics']['accuracy'])
    assert mux.Scalars(run, 'train/loss')[-1].value == pytest.approx(record['train_loss'])
  sessions = _sessions(mux)
  assert sessions['n50/lr0.0001/s2'] == ({'lr': 1e-4, 'seed': 2.0, 'train_size': 50.0},
                                         jt_tb.STATUS_SUCCESS)


def test_hparam_value_types(tmp_path):
  trial = _Trial({'frozen': True, 'wd': np.float32(0.5), 'opt': None, 'k': np.int64(3)}, 10, 0)
  tw = jt_tb.TrialWriters(tmp_path, [trial])
  tw.close([{'accuracy': 1.0, 'note': 'text', 'ok': True}])
  mux = _multiplexer(tmp_path)
  (run,) = mux.Runs()
  assert _sessions(mux)[run] == ({'frozen': True, 'wd': 0.5, 'opt': 'None', 'k': 3.0,
                                  'seed': 0.0, 'train_size': 10.0}, jt_tb.STATUS_SUCCESS)
  assert set(mux.GetAccumulator(run).Tags()['scalars']) == {'final/accuracy'}
