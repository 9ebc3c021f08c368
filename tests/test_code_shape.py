"""The library stays readable: no module over 400 lines, no function over 60 (the demo sentences
are data, not code)."""

import ast
import pathlib

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / 'jaxtransfer'
DATA_MODULES = {'demo_data.py'}


def _modules():
  return sorted(p for p in PACKAGE.rglob('*.py') if p.name not in DATA_MODULES)


def test_no_module_over_400_lines():
  long = {str(p.relative_to(PACKAGE)): n for p in _modules()
          if (n := len(p.read_text().splitlines())) > 400}
  assert not long, long


def test_no_function_over_60_lines():
  long = {}
  for p in _modules():
    for node in ast.walk(ast.parse(p.read_text())):
      if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
        n = node.end_lineno - node.lineno + 1
        if n > 60:
          long[f'{p.relative_to(PACKAGE)}:{node.name}'] = n
  assert not long, long
