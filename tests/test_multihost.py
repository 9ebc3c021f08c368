"""Two local processes joined by jax.distributed split a sweep and match one process."""

import json
import os
import pathlib
import subprocess
import sys

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
