"""Remote workdirs: mirrored locally, pulled at start (resume), pushed after each group."""

import pathlib

from jaxtransfer.runtime import workdir as workdir_lib


def _fake_store(monkeypatch, root: pathlib.Path):
  """mem://bucket/... -> a directory, through etils.epath as for gs:// (which, like an object
  store, refuses recursive globs)."""
  from etils import epath
  monkeypatch.setattr(workdir_lib, '_epath',
                      lambda path: epath.Path(root / str(path).split('://', 1)[1]))


def test_remote_workdir_round_trip(monkeypatch, tmp_path):
  store = tmp_path / 'store'
  _fake_store(monkeypatch, store)
  remote = store / 'bucket' / 'run'
  (remote / 'plots').mkdir(parents=True)
  (remote / 'trials.jsonl').write_text('{"trial_id": "a"}\n')
  (remote / 'plots' / 'fig.png').write_bytes(b'png')
  (remote / 'checkpoints' / 'g1').mkdir(parents=True)
  (remote / 'checkpoints' / 'g1' / 'big').write_bytes(b'x' * 100)

  wd = workdir_lib.Workdir('mem://bucket/run', mirror_root=str(tmp_path / 'mirrors'))
  assert wd.checkpoints == 'mem://bucket/run/checkpoints'  # orbax writes there directly
  wd.pull()
  local = pathlib.Path(wd.local)
  assert (local / 'trials.jsonl').read_text() == '{"trial_id": "a"}\n'
  assert (local / 'plots' / 'fig.png').read_bytes() == b'png'
  assert not (local / 'checkpoints').exists()  # checkpoints are never mirrored

  with open(local / 'trials.jsonl', 'a') as f:
    f.write('{"trial_id": "b"}\n')
  (local / 'summary.csv').write_text('x\n')
  (local / 'partial.tmp').write_text('half-written')
  wd.push()
  assert (remote / 'trials.jsonl').read_text().splitlines() == ['{"trial_id": "a"}', '{"trial_id": "b"}']
  assert (remote / 'summary.csv').read_text() == 'x\n'
  assert not (remote / 'partial.tmp').exists()


def test_local_workdir_is_used_in_place(tmp_path):
  wd = workdir_lib.Workdir(str(tmp_path / 'w'))
  assert wd.remote is None and wd.local == str(tmp_path / 'w')
  assert wd.checkpoints == str(tmp_path / 'w' / 'checkpoints')
  wd.pull()
  assert (tmp_path / 'w').is_dir()


def test_bad_input_removes_the_remote_workdir_it_created(monkeypatch, tmp_path, tiny_model_dir):
  """A run that fails on bad input after opening a gs:// workdir (here: after reading the data)
  leaves nothing behind, neither mirror nor remote folder; a remote workdir that held results
  before is kept as it was."""
  import pytest
  from configs import finetune
  from jaxtransfer import train
  from jaxtransfer.errors import UserError
  store = tmp_path / 'store'
  _fake_store(monkeypatch, store)
  monkeypatch.setenv('HOME', str(tmp_path / 'home'))  # the mirrors live under ~/.cache
  c = finetune.get_config('demo')
  c.model, c.cache_dir, c.max_seq_length = str(tiny_model_dir), str(tmp_path / 'cache'), 32
  c.train_sizes = (100_000,)  # more than the demo set holds: found once the data is read
  with pytest.raises(UserError, match='train_size=100000'):
    train.train_and_evaluate(c, 'gs://bucket/new')
  assert not (store / 'bucket' / 'new').exists()
  assert not list((tmp_path / 'home').rglob('config.json'))
  (store / 'bucket' / 'old').mkdir(parents=True)
  (store / 'bucket' / 'old' / 'trials.jsonl').write_text('')
  with pytest.raises(UserError, match='train_size=100000'):
    train.train_and_evaluate(c, 'gs://bucket/old')
  assert (store / 'bucket' / 'old' / 'trials.jsonl').exists()
