"""One progress bar over all trial-steps of a sweep (process 0 only)."""

from __future__ import annotations

from jaxtransfer import distributed as dist


class Progress:

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
