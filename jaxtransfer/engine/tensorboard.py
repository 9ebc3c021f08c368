"""TensorBoard event files through tensorboardX: one run and HParams session per trial."""

from __future__ import annotations

import importlib
import importlib.util
import numbers
import os
import re
import sys
import time
from collections.abc import Mapping, Sequence
from typing import Any

from jaxtransfer.engine import trials as trials_lib

# tensorboardX's api.proto Status values (the HParams plugin's SessionEndInfo.status).
STATUS_SUCCESS, STATUS_FAILURE = 1, 2
HPARAMS_PLUGIN = 'hparams'
SESSION_START_TAG = '_hparams_/session_start_info'
SESSION_END_TAG = '_hparams_/session_end_info'
_MODULES = ('event_file_writer', 'proto.event_pb2', 'proto.summary_pb2', 'proto.plugin_hparams_pb2')


def _load_tensorboardx() -> None:
  """Loads the tensorboardX modules used here without running the package's __init__, which
  imports torch and matplotlib where they are installed (~1.2 s of a run's start, spent on
  nothing this writes). A bare package stands in while they load and is removed after, so a later
  `import tensorboardX` runs the real __init__ (reusing these modules)."""
  if 'tensorboardX' in sys.modules or all(f'tensorboardX.{m}' in sys.modules for m in _MODULES):
    return
  spec = importlib.util.find_spec('tensorboardX')
  if spec is None:
    raise ModuleNotFoundError("No module named 'tensorboardX'", name='tensorboardX')
  sys.modules['tensorboardX'] = importlib.util.module_from_spec(spec)  # not executed
  try:
    for m in _MODULES:
      importlib.import_module(f'tensorboardX.{m}')
  finally:
    del sys.modules['tensorboardX']


def run_name(setting: Mapping[str, Any], train_size: int, seed: int) -> str:
  """A trial's TensorBoard run: its setting as a path, e.g. `n1000/k3/schemebert/s1`."""
  parts = trials_lib.setting_parts(setting, train_size, seed)
  return '/'.join(re.sub(r'[^A-Za-z0-9_.=+-]+', '', p)[:80] or '_' for p in parts)


def _hparam(value: Any) -> Any:
  """A value the HParams plugin can show: bools and numbers as such, lists as `a,b`, the rest as
  text."""
  if isinstance(value, (bool, str)):
    return value
  if isinstance(value, numbers.Real):  # numpy scalars too
    return float(value)
  return ','.join(map(str, value)) if isinstance(value, (list, tuple)) else str(value)


class TrialWriters:
  """One event file per trial of a group, under `root/<run_name>`: tags carry no trial id, so the
  trials of a sweep overlay chart by chart, and each run's HParams session (the setting, seed and
  train size; at the end its final metrics) lets TensorBoard's HParams view compare them.

  `trials` need `setting`, `train_size` and `seed` (engine Trials do). The engine makes these on
  process 0 only. Files are flushed when opened, at most every `flush_secs` as scalars arrive, and
  on `close()` at the group's end.
  """

  def __init__(self, root: str | os.PathLike[str], trials: Sequence[Any], *,
               flush_secs: float = 60.0):
    # tensorboardX is loaded here, not at import, and without its package import, which pulls in
    # torch where that is installed (seconds): see _load_tensorboardx.
    # tensorboardX's synchronous EventsWriter rather than its SummaryWriter: the latter starts a
    # logger thread and a multiprocessing queue (a feeder thread, a pipe) per writer, i.e. per
    # trial, and a group can hold hundreds. Flushing here on the caller's thread replaces them.
    _load_tensorboardx()
    from tensorboardX.event_file_writer import EventsWriter
    from tensorboardX.proto.plugin_hparams_pb2 import HParamsPluginData, SessionStartInfo
    self.flush_secs = flush_secs
    self.writers = []
    now = time.time()
    for t in trials:
      logdir = os.path.join(os.fspath(root), run_name(t.setting, t.train_size, t.seed))
      os.makedirs(logdir, exist_ok=True)
      # The pid and the clock in ns keep a trial re-run in the same second (and process) from
      # sharing a file name: tensorboardX opens it with 'wb'.
      w = EventsWriter(os.path.join(logdir, 'events'), f'.{os.getpid()}.{time.time_ns()}')
      self.writers.append(w)
      hparams = {'train_size': int(t.train_size), 'seed': int(t.seed), **t.setting}
      start = SessionStartInfo(start_time_secs=now)
      for k, v in hparams.items():
        v = _hparam(v)
        field = ('bool_value' if isinstance(v, bool) else
                 'string_value' if isinstance(v, str) else 'number_value')
        setattr(start.hparams[str(k)], field, v)
      self._session(len(self.writers) - 1, HParamsPluginData(session_start_info=start),
                    SESSION_START_TAG, 0)
      # On disk at once, so TensorBoard lists the run and its session before the first log step.
      w.flush()
    self._flushed = [now] * len(self.writers)

  def _write(self, i: int, values: list, step: int) -> None:
    from tensorboardX.proto.event_pb2 import Event
    from tensorboardX.proto.summary_pb2 import Summary
    self.writers[i].write_event(
        Event(wall_time=time.time(), step=int(step), summary=Summary(value=values)))

  def _session(self, i: int, data, tag: str, step: int) -> None:
    # No tensor: TensorBoard adds the plugin's empty one itself, as tensorboardX relies on.
    from tensorboardX.proto.summary_pb2 import Summary, SummaryMetadata
    meta = SummaryMetadata(plugin_data=SummaryMetadata.PluginData(
        plugin_name=HPARAMS_PLUGIN, content=data.SerializeToString()))
    self._write(i, [Summary.Value(tag=tag, metadata=meta)], step)

  def _scalars(self, i: int, values: Mapping[str, Any], step: int) -> None:
    from tensorboardX.proto.summary_pb2 import Summary
    if values:
      self._write(i, [Summary.Value(tag=k, simple_value=float(v)) for k, v in values.items()],
                  step)

  def scalars(self, i: int, values: Mapping[str, Any], step: int) -> None:
    """Trial i's scalars at `step` (e.g. {'train/loss': ..., 'eval/accuracy': ...}), as one event
    sharing a wall time; values beyond float32's range become ±inf."""
    self._scalars(i, values, step)
    # Flushing on the caller's thread, not a timer's: no thread per trial, and a crash mid-group
    # loses a trial's scalars of at most flush_secs or one log interval, whichever is longer.
    if time.time() - self._flushed[i] >= self.flush_secs:
      self.writers[i].flush()
      self._flushed[i] = time.time()

  def close(self, final: Sequence[Mapping[str, Any] | None] = (), step: int = 0) -> None:
    """Ends every trial's session: its reported metrics as `final/<metric>` at `step`, status
    success (or failure where `final[i]` is None / empty), then flushes and closes the files."""
    from tensorboardX.proto.plugin_hparams_pb2 import HParamsPluginData, SessionEndInfo
    for i, w in enumerate(self.writers):
      metrics = final[i] if i < len(final) else None
      if metrics:  # written without scalars()' flush: close() flushes anyway
        self._scalars(i, {f'final/{k}': v for k, v in metrics.items()
                          if isinstance(v, (int, float)) and not isinstance(v, bool)}, step)
      status = STATUS_SUCCESS if metrics or not final else STATUS_FAILURE
      end = SessionEndInfo(status=status, end_time_secs=time.time())
      self._session(i, HParamsPluginData(session_end_info=end), SESSION_END_TAG, step)
      w.close()
