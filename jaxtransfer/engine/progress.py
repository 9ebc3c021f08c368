"""One progress bar over all trial-steps of a sweep (process 0 only), with log lines above it."""

from __future__ import annotations

import logging as std_logging
import sys

from absl import logging

from jaxtransfer.runtime import distributed as dist


class _AboveTheBar:
  """A stream for absl's log handler that prints through tqdm.write: the bar is cleared, the line
  printed on its own, the bar redrawn below it (instead of a log line glued onto the bar)."""

  def __init__(self, stream, write):
    self.stream, self._write = stream, write

  def write(self, text: str) -> None:
    self._write(text, file=self.stream, end='')

  def flush(self) -> None:
    self.stream.flush()

  def __getattr__(self, name):  # isatty, fileno, encoding, ...
    return getattr(self.stream, name)


class Progress:

  def __init__(self, total_steps: int, total_trials: int, done_trials: int):
    self.total_trials, self.done = total_trials, done_trials
    self.bar = None
    self._saved: list[tuple[std_logging.StreamHandler, object]] = []
    if dist.is_main() and total_steps:
      from tqdm.auto import tqdm
      self.bar = tqdm(total=total_steps, unit='trial-step', dynamic_ncols=True, smoothing=0.1)
      self._redirect_logs(tqdm.write)
      self._postfix()

  def _redirect_logs(self, write) -> None:
    """absl's handler, and any console handler of Python's root logger, print above the bar."""
    handlers = [logging.get_absl_handler().python_handler]
    handlers += [h for h in std_logging.getLogger().handlers
                 if isinstance(h, std_logging.StreamHandler)
                 and getattr(h, 'stream', None) in (sys.stderr, sys.stdout)]
    for h in handlers:
      if isinstance(h, std_logging.StreamHandler) and not isinstance(h.stream, _AboveTheBar):
        self._saved.append((h, h.stream))
        h.setStream(_AboveTheBar(h.stream, write))

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
      self.bar = None
    for handler, stream in self._saved:
      handler.setStream(stream)
    self._saved = []
