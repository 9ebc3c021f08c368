"""Tests for jaxtransfer.tensorboard: CRC32C, TFRecord framing, and round trips through TensorBoard."""

from __future__ import annotations

import glob
import os
import struct
import subprocess
import sys
import time

import numpy as np
import pytest

from jaxtransfer import tensorboard as jt_tb

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _read_tfrecords(path):
  """Parses TFRecord framing independently of TensorBoard, checking both CRCs."""
  out = []
  with open(path, 'rb') as f:
    data = f.read()
  pos = 0
  while pos < len(data):
    header = data[pos:pos + 8]
    (length,) = struct.unpack('<Q', header)
    (hcrc,) = struct.unpack('<I', data[pos + 8:pos + 12])
    assert hcrc == jt_tb.masked_crc32c(header)
    payload = data[pos + 12:pos + 12 + length]
    (dcrc,) = struct.unpack('<I', data[pos + 12 + length:pos + 16 + length])
    assert dcrc == jt_tb.masked_crc32c(payload)
    out.append(payload)
    pos += 16 + length
  assert pos == len(data)
  return out


def test_crc32c_known_vectors():
  assert jt_tb.crc32c(b'123456789') == 0xE3069283
  assert jt_tb.crc32c(b'') == 0
  # RFC 3720 (iSCSI) appendix B.4 vectors.
  assert jt_tb.crc32c(bytes(32)) == 0x8A9136AA
  assert jt_tb.crc32c(b'\xff' * 32) == 0x62A8AB43
  assert jt_tb.crc32c(bytes(range(32))) == 0x46DD794E
  # Incremental use gives the same result.
  assert jt_tb.crc32c(b'6789', jt_tb.crc32c(b'12345')) == 0xE3069283


def test_crc32c_matches_tensorboard_stub():
  stub = pytest.importorskip('tensorboard.compat.tensorflow_stub.pywrap_tensorflow')
  for data in (b'', b'a', b'hello world', bytes(range(256))):
    assert jt_tb.masked_crc32c(data) == stub.masked_crc32c(data)


def test_varint_negative_step():
  # int64 -1 is ten bytes in protobuf's encoding.
  assert jt_tb._varint(-1) == b'\xff' * 9 + b'\x01'
  assert jt_tb._varint(300) == b'\xac\x02'


def test_roundtrip_with_tensorboard_reader(tmp_path):
  ea_mod = pytest.importorskip('tensorboard.backend.event_processing.event_accumulator')
  logdir = tmp_path / 'tb'
  expected = {'train/loss': [], 'eval/accuracy': [], 'lr': []}
  with jt_tb.SummaryWriter(str(logdir)) as w:
    for step in range(0, 50, 5):
      loss = 1.0 / (step + 1) + 0.123456789
      w.scalar('train/loss', loss, step)
      expected['train/loss'].append((step, loss))
      if step % 10 == 0:
        values = {'eval/accuracy': 0.5 + step / 100, 'lr': np.float32(2e-5 * (1 - step / 50))}
        w.scalars(values, step)
        for tag, v in values.items():
          expected[tag].append((step, float(v)))
    w.scalar('big', 1e300, 7)  # saturates to inf like a float32 cast
    w.scalar('neg_step', 1.0, -3)
  files = glob.glob(str(logdir / 'events.out.tfevents.*'))
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

  # Independent check of the framing; the first event carries the file version.
  records = _read_tfrecords(files[0])
  assert b'brain.Event:2' in records[0]
  assert len(records) == 1 + 10 + 5 + 2


def test_periodic_flush_without_close(tmp_path):
  w = jt_tb.SummaryWriter(str(tmp_path), flush_secs=0.1)
  size0 = os.path.getsize(w.path)  # the version event is on disk immediately
  assert size0 > 0
  w.scalar('a', 1.0, 1)
  assert os.path.getsize(w.path) == size0  # buffered
  deadline = time.time() + 5
  while os.path.getsize(w.path) == size0 and time.time() < deadline:
    time.sleep(0.02)
  assert len(_read_tfrecords(w.path)) == 2
  w.close()
  w.close()  # idempotent
  with pytest.raises(ValueError):
    w.scalar('a', 2.0, 2)


def test_two_writers_same_dir_get_distinct_files(tmp_path):
  with jt_tb.SummaryWriter(str(tmp_path)) as a, jt_tb.SummaryWriter(str(tmp_path)) as b:
    assert a.path != b.path


def test_no_tensorflow_or_protobuf_import():
  # Load the module file directly, so only its own imports count (not the package's).
  code = (
      'import importlib.util, sys\n'
      f'spec = importlib.util.spec_from_file_location("m", {os.path.join(_REPO, "jaxtransfer", "tensorboard.py")!r})\n'
      'm = importlib.util.module_from_spec(spec); spec.loader.exec_module(m)\n'
      'import tempfile\n'
      'with m.SummaryWriter(tempfile.mkdtemp()) as w: w.scalar("x", 1.0, 0)\n'
      'bad = [n for n in sys.modules if n.split(".")[0] in ("tensorflow", "tensorboard", "tensorboardX")'
      ' or n.startswith("google.protobuf")]\n'
      'assert not bad, bad\n'
  )
  subprocess.run([sys.executable, '-c', code], check=True, timeout=60)


class _Trial:
  def __init__(self, setting, train_size, seed):
    self.setting, self.train_size, self.seed = setting, train_size, seed


def _multiplexer(root):
  em = pytest.importorskip('tensorboard.backend.event_processing.event_multiplexer')
  mux = em.EventMultiplexer(size_guidance={'scalars': 0, 'tensors': 0})
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
  from jaxtransfer import data as data_lib
  from jaxtransfer import engine as engine_lib
  from jaxtransfer import program as program_lib
  pre = jt.load_pretrained(str(tiny_model_dir))
  td = data_lib.load_task_data('sst2', 'demo', pre.tokenizer, pre.path, 32,
                               cache_dir=str(tmp_path / 'cache'))
  spec = engine_lib.RunSpec(experiment='t', model='tiny', task=td.task, workdir=str(tmp_path),
                            batch_size=8, learning_rate=1e-3, num_train_steps=4, log_every=2,
                            eval_every=2, checkpoint_every=0, eval_batch_size=32)
  prog = program_lib.Program(encoder=pre.config, num_labels=2, num_blocks=pre.config.num_layers)
  eng = engine_lib.Engine(spec, pre.params, td.train.as_dict(),
                          {k: v.as_dict() for k, v in td.dev.items()})
  records = eng.run([engine_lib.Trial(s, 50, {'lr': lr}, prog, learning_rate=lr)
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
