"""A minimal TensorBoard writer: hand-encoded Event protos in TFRecord files, no TF/protobuf.

Scalars, and the HParams plugin's session summaries, so that the trials of a sweep (one run per
trial, `TrialWriters`) can be compared in TensorBoard's HParams view.
"""

from __future__ import annotations

import itertools
import math
import os
import re
import socket
import struct
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any

_MASK32 = 0xFFFFFFFF
_MASK64 = 0xFFFFFFFFFFFFFFFF
_FLOAT32_MAX = 3.4028234663852886e38
FILE_VERSION = 'brain.Event:2'

# Distinguishes writers created in the same second by the same process.
_file_counter = itertools.count()


# ----------------------------------------------------------------------------
# CRC32C and TFRecord framing
# ----------------------------------------------------------------------------


def _make_crc32c_table() -> tuple[int, ...]:
  """Byte-at-a-time table for CRC-32C (Castagnoli), reflected polynomial 0x82F63B78."""
  table = []
  for byte in range(256):
    crc = byte
    for _ in range(8):
      crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
    table.append(crc)
  return tuple(table)


_CRC32C_TABLE = _make_crc32c_table()


def crc32c(data: bytes, crc: int = 0) -> int:
  """CRC-32C of `data`; pass a previous result as `crc` to continue a running checksum."""
  table = _CRC32C_TABLE
  crc ^= _MASK32
  for byte in data:
    crc = table[(crc ^ byte) & 0xFF] ^ (crc >> 8)
  return crc ^ _MASK32


def masked_crc32c(data: bytes) -> int:
  """TFRecord's masked CRC: rotate right by 15 bits and add a constant, mod 2^32.

  Masking keeps a CRC stored inside CRC-checked data from degenerating the outer checksum.
  """
  crc = crc32c(data)
  return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & _MASK32


def tfrecord(data: bytes) -> bytes:
  """Frames `data` as a TFRecord: u64 length, masked CRC of the length, data, masked CRC of data."""
  header = struct.pack('<Q', len(data))
  return (header + struct.pack('<I', masked_crc32c(header)) + data
          + struct.pack('<I', masked_crc32c(data)))


# ----------------------------------------------------------------------------
# Protobuf wire encoding of tensorflow.Event / Summary / Summary.Value
# ----------------------------------------------------------------------------

# Wire types.
_VARINT, _FIXED64, _LEN, _FIXED32 = 0, 1, 2, 5


def _varint(value: int) -> bytes:
  value &= _MASK64  # int64 in two's complement: a negative step takes 10 bytes, as in protobuf.
  out = bytearray()
  while True:
    low = value & 0x7F
    value >>= 7
    if value:
      out.append(low | 0x80)
    else:
      out.append(low)
      return bytes(out)


def _key(field: int, wire_type: int) -> bytes:
  return _varint((field << 3) | wire_type)


def _len_field(field: int, payload: bytes) -> bytes:
  return _key(field, _LEN) + _varint(len(payload)) + payload


def _to_float32(value: float) -> float:
  """Saturates out-of-range values to ±inf as a float32 cast would (struct.pack would raise)."""
  value = float(value)
  if math.isfinite(value) and abs(value) > _FLOAT32_MAX:
    return math.copysign(math.inf, value)
  return value


def encode_scalar_value(tag: str, value: float) -> bytes:
  """Summary.Value{tag: string = 1, simple_value: float = 2}."""
  return (_len_field(1, tag.encode('utf-8'))
          + _key(2, _FIXED32) + struct.pack('<f', _to_float32(value)))


def encode_summary(values: Mapping[str, float]) -> bytes:
  """Summary{value: repeated Value = 1}."""
  return b''.join(_len_field(1, encode_scalar_value(tag, v)) for tag, v in values.items())


# ----------------------------------------------------------------------------
# The HParams plugin (tensorboard/plugins/hparams/plugin_data.proto)
# ----------------------------------------------------------------------------

HPARAMS_PLUGIN = 'hparams'
SESSION_START_TAG = '_hparams_/session_start_info'
SESSION_END_TAG = '_hparams_/session_end_info'
STATUS_SUCCESS, STATUS_FAILURE = 1, 2
# TensorProto{dtype: DT_FLOAT, tensor_shape: {dim: [{size: 0}]}}: the plugin's empty tensor.
_NULL_TENSOR = b'\x08\x01\x12\x02\x12\x00'


def _double(field: int, value: float) -> bytes:
  return _key(field, _FIXED64) + struct.pack('<d', float(value))


def encode_hparam_value(value: Any) -> bytes:
  """google.protobuf.Value{number_value: double = 2, string_value = 3, bool_value = 4}; lists
  and anything else as their text."""
  if isinstance(value, bool):
    return _key(4, _VARINT) + _varint(int(value))
  if isinstance(value, (int, float)):
    return _double(2, value)
  text = ','.join(map(str, value)) if isinstance(value, (list, tuple)) else str(value)
  return _len_field(3, text.encode('utf-8'))


def encode_session_start(hparams: Mapping[str, Any], start_time: float) -> bytes:
  """HParamsPluginData{session_start_info = 3: SessionStartInfo{hparams: map = 1,
  start_time_secs: double = 5}} (version 0, the default, is not written)."""
  entries = b''.join(
      _len_field(1, _len_field(1, str(k).encode('utf-8')) + _len_field(2, encode_hparam_value(v)))
      for k, v in sorted(hparams.items()))
  return _len_field(3, entries + _double(5, start_time))


def encode_session_end(status: int, end_time: float) -> bytes:
  """HParamsPluginData{session_end_info = 4: SessionEndInfo{status: enum = 1,
  end_time_secs: double = 2}}."""
  return _len_field(4, _key(1, _VARINT) + _varint(status) + _double(2, end_time))


def encode_plugin_value(tag: str, plugin: str, content: bytes) -> bytes:
  """Summary.Value{tag = 1, metadata = 9: SummaryMetadata{plugin_data = 1: PluginData{
  plugin_name = 1, content = 2}}, tensor = 8}."""
  metadata = _len_field(1, _len_field(1, plugin.encode('utf-8')) + _len_field(2, content))
  return _len_field(1, tag.encode('utf-8')) + _len_field(9, metadata) + _len_field(8, _NULL_TENSOR)


def encode_event(wall_time: float, step: int = 0, *, file_version: str | None = None,
                 summary: bytes | None = None) -> bytes:
  """Event{wall_time: double = 1, step: int64 = 2, file_version: string = 3, summary = 5}."""
  out = _key(1, _FIXED64) + struct.pack('<d', wall_time) + _key(2, _VARINT) + _varint(int(step))
  if file_version is not None:
    out += _len_field(3, file_version.encode('utf-8'))
  if summary is not None:
    out += _len_field(5, summary)
  return out


# ----------------------------------------------------------------------------
# Writer
# ----------------------------------------------------------------------------


class SummaryWriter:
  """Writes scalar summaries to a new event file in `logdir`.

  Records are buffered in memory and written when `flush_secs` have passed since the oldest
  buffered one (a background timer does this even if no further scalar arrives), on
  `flush()` and on `close()`. Safe to call from several threads.
  """

  def __init__(self, logdir: str | os.PathLike[str], flush_secs: float = 2.0):
    self.logdir = os.fspath(logdir)
    os.makedirs(self.logdir, exist_ok=True)
    self.flush_secs = flush_secs
    name = (f'events.out.tfevents.{int(time.time())}.{socket.gethostname()}.'
            f'{os.getpid()}.{next(_file_counter)}')
    self.path = os.path.join(self.logdir, name)
    # 'xb': never append to, or clobber, another writer's file.
    self._file = open(self.path, 'xb')
    self._lock = threading.Lock()
    self._buffer: list[bytes] = []
    self._timer: threading.Timer | None = None
    self._closed = False
    # TensorBoard identifies the format from this first event; write it at once so the file
    # is recognisable even before any scalar arrives.
    self._file.write(tfrecord(encode_event(time.time(), 0, file_version=FILE_VERSION)))
    self._file.flush()

  def plugin_summary(self, tag: str, plugin: str, content: bytes, step: int = 0) -> None:
    """Records one plugin summary (e.g. an HParams session start) at `step`."""
    self._add(tfrecord(encode_event(time.time(), step, summary=_len_field(
        1, encode_plugin_value(tag, plugin, content)))))

  def scalar(self, tag: str, value: float, step: int) -> None:
    """Records one scalar `value` under `tag` at `step`."""
    self.scalars({tag: value}, step)

  def scalars(self, values: Mapping[str, Any], step: int) -> None:
    """Records several scalars at `step`, as one event sharing a wall time."""
    if not values:
      return
    self._add(tfrecord(encode_event(time.time(), step, summary=encode_summary(values))))

  def _add(self, record: bytes) -> None:
    with self._lock:
      if self._closed:
        raise ValueError(f'SummaryWriter for {self.logdir} is closed')
      self._buffer.append(record)
      if self._timer is None:
        # One pending timer per non-empty buffer: data never sits longer than flush_secs.
        self._timer = threading.Timer(self.flush_secs, self.flush)
        self._timer.daemon = True
        self._timer.start()

  def flush(self) -> None:
    """Writes buffered events to the file (and the OS); a no-op once closed."""
    with self._lock:
      self._flush_locked()

  def _flush_locked(self) -> None:
    if self._timer is not None:
      # Cancelling our own (running) timer is harmless; it has already fired.
      self._timer.cancel()
      self._timer = None
    if self._closed:
      return
    if self._buffer:
      self._file.write(b''.join(self._buffer))
      self._buffer.clear()
    self._file.flush()

  def close(self) -> None:
    """Flushes and closes the file; further writes raise, further close() calls do nothing."""
    with self._lock:
      if self._closed:
        return
      self._flush_locked()
      self._closed = True
      self._file.close()

  def __enter__(self) -> SummaryWriter:
    return self

  def __exit__(self, *exc_info: object) -> None:
    self.close()


# ----------------------------------------------------------------------------
# One run per trial
# ----------------------------------------------------------------------------


def run_name(setting: Mapping[str, Any], train_size: int, seed: int) -> str:
  """A trial's TensorBoard run: its setting as a path, e.g. `n1000/k3/schemebert/s1`."""
  parts = [f'n{train_size or "full"}']
  for k, v in sorted(setting.items()):
    v = '_'.join(map(str, v)) if isinstance(v, (list, tuple)) else v
    parts.append(f'{k}{v}')
  parts.append(f's{seed}')
  return '/'.join(re.sub(r'[^A-Za-z0-9_.=+-]+', '', p)[:80] or '_' for p in parts)


class TrialWriters:
  """One event file per trial of a group, under `root/<run_name>`: tags carry no trial id, so the
  trials of a sweep overlay chart by chart, and each run's HParams session (the setting, seed and
  train size; at the end its final metrics) lets TensorBoard's HParams view compare them.

  `trials` need `setting`, `train_size` and `seed` (engine Trials do).
  """

  def __init__(self, root: str | os.PathLike[str], trials: Sequence[Any]):
    self.writers = []
    for t in trials:
      w = SummaryWriter(os.path.join(os.fspath(root), run_name(t.setting, t.train_size, t.seed)))
      hparams = {'train_size': int(t.train_size), 'seed': int(t.seed), **t.setting}
      w.plugin_summary(SESSION_START_TAG, HPARAMS_PLUGIN,
                       encode_session_start(hparams, time.time()))
      self.writers.append(w)

  def scalars(self, i: int, values: Mapping[str, Any], step: int) -> None:
    """Trial i's scalars at `step` (e.g. {'train/loss': ..., 'eval/accuracy': ...})."""
    self.writers[i].scalars(values, step)

  def close(self, final: Sequence[Mapping[str, Any] | None] = (), step: int = 0) -> None:
    """Ends every trial's session: its reported metrics as `final/<metric>` at `step`, status
    success (or failure where `final[i]` is None / empty), then closes the files."""
    for i, w in enumerate(self.writers):
      metrics = final[i] if i < len(final) else None
      if metrics:
        w.scalars({f'final/{k}': v for k, v in metrics.items()
                   if isinstance(v, (int, float)) and not isinstance(v, bool)}, step)
      status = STATUS_SUCCESS if metrics or not final else STATUS_FAILURE
      w.plugin_summary(SESSION_END_TAG, HPARAMS_PLUGIN, encode_session_end(status, time.time()),
                       step)
      w.close()
