"""benchmarks/gpu_suite.sh --smoke: every measurement of the GPU suite runs through the same code
paths at tiny sizes on CPU, so the suite is known to work before a GPU is lent."""

import pathlib
import subprocess

from helpers import GLUE

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_gpu_suite_smoke(tmp_path):
  results = tmp_path / 'RESULTS.md'
  r = subprocess.run(['bash', 'benchmarks/gpu_suite.sh', '--smoke', f'--results={results}'],
                     cwd=ROOT, capture_output=True, text=True, timeout=900)
  assert r.returncode == 0, r.stderr[-3000:]
  rows = {line.split(' | ')[0].lstrip('| '): line.split(' | ')[1]
          for line in r.stdout.splitlines() if line.startswith('| ') and ' | result |' not in line}
  assert any(k.startswith('Tamkin setting, trials/hour: jaxtransfer') for k in rows), r.stdout
  for key in ('2 concurrent HF processes, trials/hour', 'largest trial group that fits',
              'MFU of the training steps (throughput.py count)'):
    assert key in rows, r.stdout
  real = rows['real SST-2, MiniLM: jaxtransfer packed vs HF dynamic padding']
  if GLUE.is_dir():
    assert 'faster whole processes' in real, real
  for key, value in rows.items():
    assert not value.startswith(('failed', 'not finished')), (key, value)
  assert not results.exists()  # a smoke run writes no table into RESULTS.md
