"""Independent workers on one workdir: each takes its share of the groups, skips what another has
finished or holds (a lease with a heartbeat, taken over when stale), and together they give every
trial once, as one process would."""

import json
import os
import pathlib
import subprocess
import sys
import time

import pytest

from jaxtransfer.errors import UserError
from jaxtransfer.runtime import records as records_lib
from jaxtransfer.runtime.workers import Leases, Workers

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_worker_index_from_config_and_schedulers():
  assert Workers.from_config({}) is None
  assert Workers.from_config({'num_workers': 3, 'worker_index': 2}) == Workers(2, 3)
  slurm = {'SLURM_ARRAY_TASK_ID': '5', 'SLURM_ARRAY_TASK_MIN': '4', 'SLURM_ARRAY_TASK_COUNT': '3'}
  assert Workers.from_config({}, env=slurm) == Workers(1, 3)
  assert Workers.from_config({'num_workers': 4}, env={'JOB_COMPLETION_INDEX': '3'}) == Workers(3, 4)
  with pytest.raises(UserError, match='worker_index=4 is outside 0..3'):
    Workers.from_config({'num_workers': 4, 'worker_index': 4})
  with pytest.raises(UserError, match='no worker index'):
    Workers.from_config({'num_workers': 2}, env={})


def test_each_worker_starts_with_its_own_groups_then_helps():
  groups = list(range(7))
  orders = [Workers(i, 3).order(groups) for i in range(3)]
  assert orders[0][:3] == [0, 3, 6] and orders[1][:2] == [1, 4] and orders[2][:2] == [2, 5]
  assert all(sorted(o) == groups for o in orders)


def test_lease_is_exclusive_until_its_heartbeat_is_stale(tmp_path):
  a, b = Leases(tmp_path, timeout_s=0.5, owner='a'), Leases(tmp_path, timeout_s=0.5, owner='b')
  assert a.acquire('g1') and not b.acquire('g1')
  time.sleep(0.3)
  a.heartbeat('g1')  # a is alive
  time.sleep(0.3)
  assert not b.acquire('g1')
  time.sleep(0.6)  # a died: no heartbeat for longer than the timeout
  assert b.acquire('g1') and not a.acquire('g1')
  b.release('g1')
  assert not (tmp_path / 'leases' / 'g1.json').exists()
  assert a.acquire('g1')


def test_read_records_merges_the_per_group_files(tmp_path):
  path = tmp_path / 'trials.jsonl'
  records_lib.append_records(path, [{'trial_id': 'a', 'x': 1}])
  records_lib.write_group(path, 'g2', [{'trial_id': 'b', 'x': 2}, {'trial_id': 'a', 'x': 9}])
  got = records_lib.read_records(path)
  assert [(r['trial_id'], r['x']) for r in got] == [('a', 1), ('b', 2)]
  assert records_lib.finished_ids(path) == {'a', 'b'}


def _args(model_dir, cache, workdir, extra=()):
  return ['--config=configs/finetune.py:demo', f'--config.model={model_dir}',
          f'--config.cache_dir={cache}', '--config.max_seq_length=32', '--config.batch_size=8',
          '--config.seeds=(1,2,3,4)', '--config.train_sizes=(100,)', '--config.num_train_steps=30',
          '--config.trials_per_program=1', f'--workdir={workdir}', *extra]


def test_two_workers_share_a_workdir_and_match_one_process(tiny_model_dir, tmp_path):
  cache, work = tmp_path / 'cache', tmp_path / 'shared'
  env = {**os.environ, 'JAX_PLATFORMS': 'cpu'}
  procs = [subprocess.Popen([sys.executable, '-m', 'jaxtransfer.main',
                             *_args(tiny_model_dir, cache, work, ['--config.num_workers=2',
                                                                  f'--config.worker_index={i}'])],
                            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True) for i in (0, 1)]
  errs = [p.communicate(timeout=900)[1] for p in procs]
  assert [p.returncode for p in procs] == [0, 0], errs[0][-2000:] + errs[1][-2000:]
  assert all('Group 1/4' in e for e in errs)
  lines = [json.loads(l) for f in sorted((work / 'records').glob('*.jsonl'))
           for l in f.read_text().splitlines()]
  assert sorted(r['seed'] for r in lines) == [1, 2, 3, 4]  # every trial exactly once
  assert not (work / 'trials.jsonl').exists() and not list((work / 'leases').glob('*.json'))
  single = subprocess.run([sys.executable, '-m', 'jaxtransfer.main',
                           *_args(tiny_model_dir, cache, tmp_path / 'single')], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=900)
  assert single.returncode == 0, single.stderr[-3000:]
  want = {r['trial_id']: r for r in records_lib.read_records(tmp_path / 'single' / 'trials.jsonl')}
  for r in lines:
    assert abs(r['metrics']['accuracy'] - want[r['trial_id']]['metrics']['accuracy']) <= 0.006
  config_before = (work / 'config.json').read_text()
  summary = subprocess.run([sys.executable, '-m', 'jaxtransfer.main',
                            f'--config=configs/summarize.py:{work}', f'--workdir={work}'],
                           cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
  assert summary.returncode == 0, summary.stderr[-3000:]
  assert '4 of 4 trials are finished' in summary.stderr
  assert (work / 'config.json').read_text() == config_before  # a summary changes no config
  assert 'n=4' in summary.stderr or ',4,' in (work / 'summary.csv').read_text()
