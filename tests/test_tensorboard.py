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
