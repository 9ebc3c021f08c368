"""Remote workdirs: mirrored locally, pulled at start (resume), pushed after each group."""

import pathlib

from jaxtransfer.runtime import workdir as workdir_lib


def _fake_store(monkeypatch, root: pathlib.Path):
  """mem://bucket/... -> a directory, with pathlib's API standing in for etils.epath's."""
  def epath(path):
    return root / str(path).split('://', 1)[1]
  monkeypatch.setattr(workdir_lib, '_epath', epath)


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
