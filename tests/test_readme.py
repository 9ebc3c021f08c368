"""The README's Python API snippet runs as written (on the packaged model, offline), and errors
raised from the API speak of its arguments."""

import os
import pathlib
import re
import subprocess
import sys

import numpy as np
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _snippet(path: pathlib.Path, heading: str) -> str:
  """The first indented code block after `heading`."""
  text = path.read_text().split(heading, 1)[1]
  block = re.search(r'\n((?:    .*\n)(?:    .*\n|\n)*)', text)[1]
  return '\n'.join(line[4:] for line in block.splitlines())


@pytest.mark.parametrize('doc, heading', [('README.md', '## Python API'),
                                          ('docs/CONTRACT.md', '## Python API')])
def test_python_api_snippet_runs(doc, heading):
  code = _snippet(ROOT / doc, heading)
  assert 'load_pretrained("bert-base-uncased")' in code and 'return_tensors="np"' in code
  scope = {}
  exec(compile(code.replace('bert-base-uncased', 'minilm-l6'), doc, 'exec'), scope)  # pylint: disable=exec-used
  pre, hs, batch = scope['pre'], np.asarray(scope['hs']), scope['batch']
  n, seq = batch['input_ids'].shape
  assert hs.shape == (pre.config.num_layers + 1, n, seq, pre.config.hidden_size)
  assert np.isfinite(hs).all()


def test_api_errors_name_the_argument(tmp_path):
  """Offline, an unknown hub id: the message tells a Python user what to pass to load_pretrained."""
  code = ('import jaxtransfer as jt\n'
          'from jaxtransfer.errors import UserError\n'
          'try:\n'
          '  jt.load_pretrained("nosuch-org/nosuch-model")\n'
          'except UserError as e:\n'
          '  print(e)\n')
  env = {**os.environ, 'HF_HUB_OFFLINE': '1', 'HF_HOME': str(tmp_path / 'hf'),
         'HF_HUB_CACHE': str(tmp_path / 'hub')}
  proc = subprocess.run([sys.executable, '-c', code], cwd=ROOT, env=env, capture_output=True,
                        text=True, timeout=120)
  assert proc.returncode == 0, proc.stderr[-2000:]
  message = proc.stdout
  assert "model='nosuch-org/nosuch-model'" in message
  assert 'load_pretrained("/path/to/dir")' in message
  # The flag is named only as the command line's spelling of the same thing.
  assert message.index('load_pretrained') < message.index('--config.model')
