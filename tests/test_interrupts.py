"""Ctrl-C and preemption keep the work: SIGINT or SIGTERM checkpoints the group in flight within a
step, the run exits 75 with the command to resume, and the resumed run matches an uninterrupted
one. A second Ctrl-C aborts at once (exit 130)."""

import pathlib
import signal
import subprocess
import sys
import time

import pytest

from jaxtransfer.runtime import records as records_lib

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _args(model_dir, workdir, cache, config='configs/finetune.py:demo', extra=()):
  return [f'--config={config}', f'--workdir={workdir}', f'--config.model={model_dir}',
          f'--config.cache_dir={cache}', '--config.max_seq_length=32', '--config.batch_size=8',
          '--config.train_sizes=[120]', '--config.checkpoint_every=0', *extra]


def _start(args, log: pathlib.Path):
  return subprocess.Popen([sys.executable, '-m', 'jaxtransfer.main', *args], cwd=ROOT,
                          stdout=subprocess.DEVNULL, stderr=log.open('w'))


def _wait_for_training(proc, log: pathlib.Path, timeout=300):
  """Until the training step is compiled and has run a little: the signal lands mid-loop."""
  deadline = time.time() + timeout
  while 'Compiled the training step' not in log.read_text():
    assert proc.poll() is None, log.read_text()[-3000:]
    assert time.time() < deadline, 'training did not start'
    time.sleep(0.05)
  time.sleep(1.0)


def _saved_steps(workdir: pathlib.Path) -> list[int]:
  return [int(p.name) for p in (workdir / 'checkpoints').glob('g*/*') if p.name.isdigit()]


def _records(workdir):
  return {r['trial_id']: r for r in records_lib.read_records(pathlib.Path(workdir) / 'trials.jsonl')}


# SIGTERM (a spot VM's notice) in the default run; SIGINT takes the same path (slow set).
@pytest.mark.parametrize('sig', [pytest.param(signal.SIGINT, marks=pytest.mark.slow),
                                 signal.SIGTERM], ids=['sigint', 'sigterm'])
def test_signal_checkpoints_mid_chunk_and_the_rerun_resumes(tiny_model_dir, tmp_path, sig):
  # One log interval is the whole run: before, the stop flag was read only after it.
  steps = 1500
  extra = [f'--config.num_train_steps={steps}', f'--config.log_every={steps}', '--config.seeds=[1]']
  cache, work, log = tmp_path / 'cache', tmp_path / 'run', tmp_path / 'log.txt'
  proc = _start(_args(tiny_model_dir, work, cache, extra=extra), log)
  _wait_for_training(proc, log)
  t0 = time.time()
  proc.send_signal(sig)
  rc = proc.wait(timeout=120)
  text = log.read_text()
  assert rc == 75, text[-3000:]
  assert time.time() - t0 < 60
  assert 'Traceback' not in text
  assert 'Checkpointed group' in text and 'To resume, run the same command: python -m jaxtransfer.main' in text
  saved = _saved_steps(work)
  assert len(saved) == 1 and 0 < saved[0] < steps, saved
  assert not _records(work)

  resumed = subprocess.run([sys.executable, '-m', 'jaxtransfer.main',
                            *_args(tiny_model_dir, work, cache, extra=extra)], cwd=ROOT,
                           capture_output=True, text=True, timeout=600)
  assert resumed.returncode == 0, resumed.stderr[-3000:]
  assert 'Restored group' in resumed.stderr and f'at step {saved[0]} of {steps}' in resumed.stderr
  ref = subprocess.run([sys.executable, '-m', 'jaxtransfer.main',
                        *_args(tiny_model_dir, tmp_path / 'ref', cache, extra=extra)], cwd=ROOT,
                       capture_output=True, text=True, timeout=600)
  assert ref.returncode == 0, ref.stderr[-3000:]
  (got,), (want,) = _records(work).values(), _records(tmp_path / 'ref').values()
  assert got['metrics'] == pytest.approx(want['metrics'], abs=1e-6)
  assert got['wall_s'] >= want['wall_s'] * 0.5  # both attempts counted, not the last one alone


# The checkpoint that the first Ctrl-C starts is held open until the second arrives, so the test
# does not race a tiny checkpoint that could finish first on a loaded machine.
_HELD_CHECKPOINT = """
import sys, time
from jaxtransfer.engine import checkpoints
def held_save(self, step, state, meta):
  sys.stderr.write('Writing the checkpoint.\\n'); sys.stderr.flush()
  time.sleep(600)
checkpoints.GroupCheckpoints.save = held_save
from jaxtransfer import main
sys.argv[0] = 'jaxtransfer.main'
main.run()
"""


def test_second_ctrl_c_aborts_at_once(tiny_model_dir, tmp_path):
  extra = ['--config.num_train_steps=3000', '--config.log_every=3000', '--config.seeds=[1]']
  log = tmp_path / 'log.txt'
  proc = subprocess.Popen([sys.executable, '-c', _HELD_CHECKPOINT,
                           *_args(tiny_model_dir, tmp_path / 'run', tmp_path / 'cache', extra=extra)],
                          cwd=ROOT, stdout=subprocess.DEVNULL, stderr=log.open('w'))
  _wait_for_training(proc, log)
  proc.send_signal(signal.SIGINT)
  deadline = time.time() + 120
  while 'Writing the checkpoint.' not in log.read_text():
    assert proc.poll() is None and time.time() < deadline, log.read_text()[-3000:]
    time.sleep(0.01)
  proc.send_signal(signal.SIGINT)
  rc = proc.wait(timeout=120)
  text = log.read_text()
  assert rc == 130, text[-3000:]
  assert 'SIGINT: checkpointing' in text
  assert 'Aborted by a second Ctrl-C' in text and 'Traceback' not in text


def test_sigterm_stops_a_probe_run_inside_its_long_log_interval(tiny_model_dir, tmp_path):
  """Probe steps take microseconds and log every 2,000 steps: the loop still looks up between
  chunks of about half a second."""
  steps = 400_000
  extra = [f'--config.num_train_steps={steps}', '--config.seeds=[1]', '--config.ks=[1]']
  work, log = tmp_path / 'probe', tmp_path / 'log.txt'
  proc = _start(_args(tiny_model_dir, work, tmp_path / 'cache', 'configs/probe.py:demo', extra),
                log)
  _wait_for_training(proc, log)
  proc.send_signal(signal.SIGTERM)
  rc = proc.wait(timeout=120)
  text = log.read_text()
  assert rc == 75, text[-3000:]
  saved = _saved_steps(work)
  assert len(saved) == 1 and 0 < saved[0] < steps, (saved, text[-2000:])
