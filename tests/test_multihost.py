"""Two local processes joined by jax.distributed split a sweep and match one process."""

import json
import os
import pathlib
import re
import signal
import subprocess
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _records(workdir):
  return {r['trial_id']: r for r in map(json.loads, (workdir / 'trials.jsonl').read_text().splitlines())}


def test_two_processes_match_one(tiny_model_dir, tmp_path):
  args = ['--config=configs/finetune.py:demo', f'--config.model={tiny_model_dir}',
          f'--config.cache_dir={tmp_path / "cache"}', '--config.max_seq_length=32',
          '--config.batch_size=8', '--config.seeds=(1,2,3,4)', '--config.train_sizes=(100,)',
          '--config.num_train_steps=12', '--config.learning_rate=3e-3', '--config.log_every=6']
  env = {**os.environ, 'PYTHON': sys.executable, 'LOGDIR': str(tmp_path / 'logs')}
  multi = subprocess.run(['bash', 'launch/local_multiprocess.sh', '2', *args,
                          f'--workdir={tmp_path / "multi"}'], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=900)
  logs = ''.join(p.read_text() for p in (tmp_path / 'logs').glob('*.log'))
  assert multi.returncode == 0, logs[-4000:]
  assert 'Joining 2 processes as process 1' in logs
  single = subprocess.run([sys.executable, '-m', 'jaxtransfer.main', *args,
                           f'--workdir={tmp_path / "single"}'], cwd=ROOT, capture_output=True,
                          text=True, timeout=900)
  assert single.returncode == 0, single.stderr[-3000:]
  got, want = _records(tmp_path / 'multi'), _records(tmp_path / 'single')
  assert sorted(got) == sorted(want) and len(want) == 4
  # Only process 0 wrote: one line per trial.
  assert len((tmp_path / 'multi' / 'trials.jsonl').read_text().splitlines()) == 4
  for tid in want:
    assert got[tid]['metrics'] == want[tid]['metrics']
    assert abs(got[tid]['train_loss'] - want[tid]['train_loss']) < 1e-5
  assert len({round(r['train_loss'], 6) for r in want.values()}) == 4  # the trials really differ


def _pid_of_process(index: int, workdir) -> int | None:
  """The pid of jaxtransfer process `index` of the run writing `workdir` (Linux /proc)."""
  for d in pathlib.Path('/proc').iterdir():
    try:
      cmd = (d / 'cmdline').read_bytes().split(b'\0')
      env = (d / 'environ').read_bytes().split(b'\0')
    except (OSError, ValueError):
      continue
    if (b'jaxtransfer.main' in cmd and f'--workdir={workdir}'.encode() in cmd
        and f'JAXTRANSFER_PROCESS_ID={index}'.encode() in env):
      return int(d.name)
  return None


def test_sigterm_to_one_process_stops_both_at_one_step_and_the_rerun_resumes(tiny_model_dir,
                                                                             tmp_path):
  """A preempted host (SIGTERM to process 1 only) stops every process at the same step: one
  checkpoint, exit 75 from both, and the re-run resumes to the uninterrupted records."""
  steps = 1500
  args = ['--config=configs/finetune.py:demo', f'--config.model={tiny_model_dir}',
          f'--config.cache_dir={tmp_path / "cache"}', '--config.max_seq_length=32',
          '--config.batch_size=8', '--config.seeds=(1,2)', '--config.train_sizes=(100,)',
          f'--config.num_train_steps={steps}', f'--config.log_every={steps}',
          '--config.checkpoint_every=0']
  work, logs = tmp_path / 'multi', tmp_path / 'logs'
  env = {**os.environ, 'PYTHON': sys.executable, 'LOGDIR': str(logs)}
  cmd = ['bash', 'launch/local_multiprocess.sh', '2', *args, f'--workdir={work}']
  launcher = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True)
  log1 = logs / 'process_1.log'
  deadline = time.time() + 300
  while not (log1.exists() and 'Compiled the training step' in log1.read_text()):
    assert launcher.poll() is None and time.time() < deadline, launcher.stderr.read()[-3000:]
    time.sleep(0.1)
  time.sleep(1.0)
  pid = _pid_of_process(1, work)
  assert pid is not None
  t0 = time.time()
  os.kill(pid, signal.SIGTERM)
  rc = launcher.wait(timeout=120)
  took = time.time() - t0
  err = launcher.stderr.read()
  texts = [(logs / f'process_{i}.log').read_text() for i in (0, 1)]
  assert rc == 75, err[-3000:] + texts[0][-2000:]
  assert took < 30, took
  assert 'process 0 exited with code 75' in err and 'process 1 exited with code 75' in err, err
  at = [re.findall(r'Checkpointed group \w+ \(2 trials\) at step (\d+)', t) for t in texts]
  assert at[0] and at[0] == at[1], at  # the same step on both
  assert 'SIGTERM' in texts[1] and 'SIGTERM' not in texts[0]  # only process 1 was signalled

  env.pop('LOGDIR')
  resumed = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
  assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-2000:]
  assert f'at step {at[0][0]} of {steps}' in resumed.stdout
  single = subprocess.run([sys.executable, '-m', 'jaxtransfer.main', *args,
                           f'--workdir={tmp_path / "single"}'], cwd=ROOT, capture_output=True,
                          text=True, timeout=900)
  assert single.returncode == 0, single.stderr[-3000:]
  got, want = _records(work), _records(tmp_path / 'single')
  assert sorted(got) == sorted(want) and len(want) == 2
  for tid in want:
    assert got[tid]['metrics'] == want[tid]['metrics']
    assert abs(got[tid]['train_loss'] - want[tid]['train_loss']) < 1e-5
