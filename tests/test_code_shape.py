"""The library's tree is its architecture: subpackages whose imports run one way (no cycle, lazy
imports included), few top-level modules, no hidden process-global state, no module over 600
lines, no function over 60, no hand-encoded TensorBoard bytes."""

import ast
import pathlib

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / 'jaxtransfer'
# Lowest first: a module may import its own layer and those before it, never one after it.
LAYERS = ('errors', 'runtime', 'data', 'models', 'core', 'engine', 'report', 'studies')
# The package's entry points sit above every layer.
TOP = {'__init__', 'main', 'train', 'errors', 'compare', 'fetch'}


def _modules() -> dict[str, pathlib.Path]:
  out = {}
  for p in sorted(PACKAGE.rglob('*.py')):
    parts = ('jaxtransfer', *p.relative_to(PACKAGE).with_suffix('').parts)
    name = '.'.join(parts[:-1] if parts[-1] == '__init__' else parts)
    out[name] = p
  return out


def _imports(name: str, path: pathlib.Path, known) -> set[str]:
  """Every jaxtransfer module `name` imports, wherever the import statement sits (function-level
  and TYPE_CHECKING imports included)."""
  package = name if path.name == '__init__.py' else name.rsplit('.', 1)[0]
  out = set()
  for node in ast.walk(ast.parse(path.read_text())):
    if isinstance(node, ast.Import):
      out |= {a.name for a in node.names}
    elif isinstance(node, ast.ImportFrom):
      base = node.module or ''
      if node.level:
        parts = package.split('.')
        base = '.'.join(parts[:len(parts) - node.level + 1] + ([base] if base else []))
      for a in node.names:
        out.add(f'{base}.{a.name}' if f'{base}.{a.name}' in known else base)
  return {m for m in out if m in known and m != name}


@pytest.fixture(scope='module')
def graph():
  mods = _modules()
  return {name: _imports(name, path, mods) for name, path in mods.items()}


def _layer(module: str) -> int:
  parts = module.split('.')
  if len(parts) == 1 or parts[1] not in LAYERS:
    return len(LAYERS)  # the package itself and its entry points
  return LAYERS.index(parts[1])


def test_no_import_cycle(graph):
  done, path = set(), []

  def visit(m):
    if m in path:
      raise AssertionError('import cycle: ' + ' -> '.join(path[path.index(m):] + [m]))
    if m in done:
      return
    path.append(m)
    for n in sorted(graph[m]):
      visit(n)
    path.pop()
    done.add(m)

  for m in sorted(graph):
    visit(m)


def test_lower_layers_never_import_higher_ones(graph):
  up = sorted(f'{m} -> {n}' for m, deps in graph.items() for n in deps if _layer(n) > _layer(m))
  assert not up, up


def test_at_most_eight_top_level_modules():
  top = sorted(p.stem for p in PACKAGE.glob('*.py'))
  assert len(top) <= 8 and set(top) <= TOP, top


def test_no_global_state_outside_the_distributed_runtime():
  """`global` only for jax.distributed's one init flag; no module-level registry is written."""
  found = []
  for name, path in _modules().items():
    for node in ast.walk(ast.parse(path.read_text())):
      if isinstance(node, ast.Global) and name != 'jaxtransfer.runtime.distributed':
        found.append(f'{name}: global {", ".join(node.names)}')
  assert not found, found


def test_no_module_over_600_lines():
  long = {str(p.relative_to(PACKAGE)): n for p in _modules().values()
          if (n := len(p.read_text().splitlines())) > 600}
  assert not long, long


def test_no_function_over_60_lines():
  long = {}
  for p in _modules().values():
    for node in ast.walk(ast.parse(p.read_text())):
      if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
        n = node.end_lineno - node.lineno + 1
        if n > 60:
          long[f'{p.relative_to(PACKAGE)}:{node.name}'] = n
  assert not long, long


def test_no_hand_encoded_tensorboard_events():
  """Event files come from a library (tensorboardX), not from CRC tables and protobuf bytes."""
  text = '\n'.join(p.read_text() for p in _modules().values())
  for marker in ('crc32c', 'masked_crc', '_varint', 'tfrecord('):
    assert marker not in text.lower(), marker


def test_no_noqa_reexport_shims():
  shims = [f'{p.relative_to(PACKAGE)}:{i}' for p in _modules().values()
           for i, line in enumerate(p.read_text().splitlines(), 1) if 'noqa: F401' in line]
  assert not shims, shims


def test_demo_sentences_are_data_files():
  assert sorted(p.name for p in (PACKAGE / 'data' / 'demo_set').glob('*.tsv'))
  assert len((PACKAGE / 'data' / 'demo.py').read_text().splitlines()) < 150
