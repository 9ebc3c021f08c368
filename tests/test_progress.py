"""The progress bar: log lines print on their own lines above it, and the trials counter moves."""

import re
import subprocess
import sys

import pathlib

ROOT = pathlib.Path(__file__).resolve().parents[1]

SCRIPT = '''
from absl import app, logging
from jaxtransfer.engine.progress import Progress

def main(argv):
  logging.set_verbosity(logging.INFO)
  logging.info('before the bar')
  p = Progress(total_steps=10, total_trials=2, done_trials=0)
  p.advance(5, loss=0.5)
  logging.info('a log line while the bar runs')
  p.trials_done(1)
  p.advance(5, loss=0.25)
  p.trials_done(1)
  p.close()
  logging.info('after the bar')

app.run(main)  # as jaxtransfer.main runs: absl's own handler
'''


def _screen(text: str) -> list[str]:
  """What a terminal shows: a carriage return goes back to column 0 and overwrites."""
  lines, row = [], ''
  col = 0
  for piece in re.split(r'(\r|\n)', text):
    if piece == '\n':
      lines.append(row)
      row, col = '', 0
    elif piece == '\r':
      col = 0
    else:
      row = row[:col] + piece + row[col + len(piece):]
      col += len(piece)
  return lines + [row]


def test_log_lines_are_not_glued_to_the_bar():
  proc = subprocess.run([sys.executable, '-c', SCRIPT], cwd=ROOT, capture_output=True, text=True,
                        timeout=120)
  assert proc.returncode == 0, proc.stderr
  screen = [line.rstrip() for line in _screen(proc.stderr)]
  for message in ('before the bar', 'a log line while the bar runs', 'after the bar'):
    line = next(line for line in screen if message in line)
    assert re.match(r'I\d{4} ', line), line  # starts the line: absl's own prefix, not the bar
    assert 'trial-step' not in line, line
  bars = [line for line in screen if 'trial-step' in line]
  assert bars and 'trials=2/2' in bars[-1]
  assert 'trials=1/2' in proc.stderr  # the counter moved when the first trial finished
