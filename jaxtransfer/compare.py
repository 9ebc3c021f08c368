"""Compares two settings of a workdir by the paired bootstrap over dev examples and seeds; only the
command line lives here (logic: jaxtransfer.report.bootstrap).

  python -m jaxtransfer.compare DIR --a trainable_blocks=6 --b trainable_blocks=3 \
      [--metric mcc] [--train_size N] [--replicates 1000] [--seed 0]

`--a` / `--b` pick one setting each by key=value pairs matched against the records' `setting`
(comma-separated for several keys; values read as JSON when they parse, else as strings).

Exit codes: 0 success, 2 bad input (one paragraph on stderr naming the bad value and the fix).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import textwrap

from jaxtransfer.errors import UserError

USAGE = ('Usage: python -m jaxtransfer.compare DIR --a key=value[,key=value...] '
         '--b key=value[,...] [--metric NAME] [--train_size N] [--replicates 1000] [--seed 0].')


def _bad_input(message: str) -> None:
  sys.stderr.write(textwrap.fill(' '.join(message.split()), width=100) + '\n')
  sys.exit(2)


class _Parser(argparse.ArgumentParser):
  """argparse, but a bad flag is exit 2 with one paragraph (as jaxtransfer.main)."""

  def error(self, message):
    _bad_input(f'Bad command line: {message}. {USAGE}')


def parse_setting(text: str, flag: str) -> dict:
  """{'k': 6, 'reinit_scheme': 'bert'} from 'k=6,reinit_scheme=bert'. A comma splits only where a
  key= follows, so JSON lists stay whole ('tuned_blocks=[2,3]')."""
  out = {}
  for part in re.split(r',(?=\s*[A-Za-z_][A-Za-z0-9_]*\s*=)', text):
    key, eq, value = part.partition('=')
    if not eq or not key.strip():
      raise UserError(f'--{flag} {text!r}: {part!r} is not key=value. Give the setting as '
                      f'key=value pairs, comma-separated (e.g. --{flag} trainable_blocks=3).')
    try:
      out[key.strip()] = json.loads(value)
    except ValueError:
      out[key.strip()] = value.strip()
  return out


def _parser() -> argparse.ArgumentParser:
  p = _Parser(prog='python -m jaxtransfer.compare', description=__doc__.split('\n\n')[0])
  p.add_argument('workdir', metavar='DIR', help='the workdir of a finished run')
  p.add_argument('--a', required=True, help='setting A: key=value[,key=value...]')
  p.add_argument('--b', required=True, help='setting B: key=value[,key=value...]')
  p.add_argument('--metric', default=None, help="default: the task's primary metric")
  p.add_argument('--train_size', type=int, default=None, help='default: every size both ran')
  p.add_argument('--replicates', type=int, default=1000)
  p.add_argument('--seed', type=int, default=0, help='of the bootstrap draws')
  return p


def main(argv=None) -> None:
  args = _parser().parse_args(argv)
  from jaxtransfer.report import bootstrap  # numpy and the data layer after the flags
  try:
    comparisons = bootstrap.compare_workdir(
        args.workdir, parse_setting(args.a, 'a'), parse_setting(args.b, 'b'), args.metric,
        args.train_size, args.replicates, args.seed)
  except UserError as e:
    _bad_input(str(e))
  print(bootstrap.format_comparisons(args.workdir, comparisons, args.replicates, args.seed))


if __name__ == '__main__':
  main()
