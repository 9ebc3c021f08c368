"""A workdir states how each result was made: config drift is refused, or recorded with allow_mixed."""

import json
import random
import shutil

import pytest

from jaxtransfer.runtime import config_history
from jaxtransfer.runtime import records as records_lib
from jaxtransfer.errors import UserError
from helpers import assert_bad_input, run_main


def _tiny_run(model_dir, workdir, *extra):
  return run_main('--config=configs/finetune.py:demo', f'--config.model={model_dir}',
                  '--config.num_train_steps=2', '--config.eval_max_examples=16',
                  f'--workdir={workdir}', *extra)


def test_changed_config_is_refused_through_the_cli(tiny_model_dir, tmp_path):
  wd = tmp_path / 'w'
  first = _tiny_run(tiny_model_dir, wd, '--config.task=SST2')
  assert first.returncode == 0, first.stderr[-3000:]
  config_before = (wd / 'config.json').read_text()
  records_before = (wd / 'trials.jsonl').read_text()
  assert json.loads(config_before)['task'] == 'sst2'  # canonical, as in the records
  assert (wd / 'plots' / 'finetune_trials.png').stat().st_size > 0  # finetune draws, too
  records = records_lib.read_records(wd / 'trials.jsonl')
  history = config_history.read_history(str(wd))
  assert [r['task'] for r in records] == ['sst2', 'sst2']
  assert len(history) == 1 and {r['config_hash'] for r in records} == {history[0]['config_hash']}
  assert history[0]['config'] == json.loads(config_before)

  proc = _tiny_run(tiny_model_dir, wd, '--config.learning_rate=5e-5', '--config.max_seq_length=32')
  assert_bad_input(proc, 'learning_rate: 0.0001 -> 5e-05', 'max_seq_length: 64 -> 32',
                   '2 finished trial(s)', '--workdir', '--config.allow_mixed=True')
  assert (wd / 'config.json').read_text() == config_before
  assert (wd / 'trials.jsonl').read_text() == records_before
  assert len(config_history.read_history(str(wd))) == 1


def _config(**overrides):
  from configs import finetune
  c = finetune.get_config('demo')
  c.update(overrides)
  return c


def _finish(workdir, config, seeds):
  """Records as the engine writes them, stamped with the config's hash."""
  h = config_history.record(config, str(workdir))
  records_lib.append_records(workdir / 'trials.jsonl', [
      {'trial_id': f'nfull-s{s}', 'seed': s, 'train_size': 0, 'setting': {}, 'status': 'ok',
       'metrics': {'accuracy': 0.5}, 'config_hash': h} for s in seeds])
  return h


def test_run_only_and_sweep_keys_are_not_drift(tmp_path):
  h1 = _finish(tmp_path, _config(), (1, 2))
  config_history.check(_config(log_every=3, checkpoint_every=7, eval_batch_size=8,
                               trials_per_program=1, seeds=(1, 2, 3)), str(tmp_path))
  assert config_history.config_hash(config_history.resolved(_config(log_every=3))) == h1
  h2 = _finish(tmp_path, _config(seeds=(1, 2, 3)), (3,))
  assert h2 != h1  # a new line, so seed 3's record leads back to its exact config
  assert [e['config_hash'] for e in config_history.read_history(str(tmp_path))] == [h1, h2]
  with pytest.raises(UserError, match='num_train_steps: 60 -> 61'):
    config_history.check(_config(num_train_steps=61), str(tmp_path))


def test_allow_mixed_records_both_configs(tmp_path):
  h1 = _finish(tmp_path, _config(), (1, 2))
  mixed = _config(learning_rate=5e-5, allow_mixed=True)
  config_history.check(mixed, str(tmp_path))
  h2 = _finish(tmp_path, mixed, (3,))
  history = {e['config_hash']: e['config'] for e in config_history.read_history(str(tmp_path))}
  assert history[h1]['learning_rate'] == 1e-4 and history[h2]['learning_rate'] == 5e-5
  by_seed = {r['seed']: history[r['config_hash']]['learning_rate']
             for r in records_lib.read_records(tmp_path / 'trials.jsonl')}
  assert by_seed == {1: 1e-4, 2: 1e-4, 3: 5e-5}
  # Without allow_mixed, neither config may run there any more... but each one's own keys name it.
  with pytest.raises(UserError, match='learning_rate'):
    config_history.check(_config(), str(tmp_path))


def test_a_workdir_from_before_hashes_keeps_its_config(tmp_path):
  old = config_history.resolved(_config())
  (tmp_path / 'config.json').write_text(json.dumps(old))
  records_lib.append_records(tmp_path / 'trials.jsonl', [
      {'trial_id': 'nfull-s1', 'seed': 1, 'setting': {}, 'status': 'ok', 'metrics': {}}])
  with pytest.raises(UserError, match='learning_rate: 0.0001 -> 0.001'):
    config_history.check(_config(learning_rate=1e-3), str(tmp_path))
  config_history.record(_config(learning_rate=1e-3, allow_mixed=True), str(tmp_path))
  history = config_history.read_history(str(tmp_path))
  assert history[0]['config'] == old and history[0]['before_hashes']
  assert json.loads((tmp_path / 'config.json').read_text())['learning_rate'] == 1e-3
  # The old records still belong to the old config, not to the new config.json.
  with pytest.raises(UserError, match='learning_rate: 0.0001 -> 0.001'):
    config_history.check(_config(learning_rate=1e-3), str(tmp_path))


def test_checkpointed_group_in_flight_binds_the_config(tmp_path):
  config_history.record(_config(), str(tmp_path))
  config_history.check(_config(learning_rate=1e-3), str(tmp_path))  # nothing made yet
  (tmp_path / 'checkpoints' / 'g123').mkdir(parents=True)
  with pytest.raises(UserError, match='checkpointed group in flight'):
    config_history.check(_config(learning_rate=1e-3), str(tmp_path))


def test_a_workdir_from_before_packing_resumes_only_unpacked(tmp_path):
  """Its trials trained padded: packing would change their dropout masks, so a packed re-run is
  drift, and `pack_sequences=False` resumes it as it was made."""
  old = config_history.resolved(_config())
  del old['pack_sequences']
  h = config_history.config_hash(old)
  (tmp_path / config_history.HISTORY).write_text(json.dumps({'config_hash': h, 'config': old}) + '\n')
  records_lib.append_records(tmp_path / 'trials.jsonl', [
      {'trial_id': 'nfull-s1', 'seed': 1, 'setting': {}, 'status': 'ok', 'metrics': {},
       'config_hash': h}])
  with pytest.raises(UserError, match='pack_sequences: false -> true'):
    config_history.check(_config(), str(tmp_path))
  config_history.check(_config(pack_sequences=False), str(tmp_path))


def test_rerun_config_reproduces_a_finished_trial(tiny_model_dir, tmp_path):
  """configs/rerun.py:<workdir> re-runs a trial from its config.json to the same record."""
  first = _tiny_run(tiny_model_dir, tmp_path / 'a', '--config.seeds=(3,)')
  assert first.returncode == 0, first.stderr[-3000:]
  again = run_main(f'--config=configs/rerun.py:{tmp_path / "a"}', f'--workdir={tmp_path / "b"}')
  assert again.returncode == 0, again.stderr[-3000:]
  a, = records_lib.read_records(tmp_path / 'a' / 'trials.jsonl')
  b, = records_lib.read_records(tmp_path / 'b' / 'trials.jsonl')
  assert a['trial_id'] == b['trial_id'] and a['config_hash'] == b['config_hash']
  assert a['metrics'] == b['metrics']
  missing = run_main(f'--config=configs/rerun.py:{tmp_path / "nothing"}', f'--workdir={tmp_path / "c"}')
  assert_bad_input(missing, 'config.json does not exist', 'configs/rerun.py:results/')


def test_rerun_config_of_a_workdir_from_before_packing():
  from configs import rerun
  import tempfile
  old = config_history.resolved(_config(seeds=(4, 5)))
  del old['pack_sequences']
  with tempfile.TemporaryDirectory() as d:
    with open(f'{d}/config.json', 'w') as f:
      json.dump(old, f)
    c = rerun.get_config(d)
  assert c.pack_sequences is False and c.seeds == (4, 5) and c.experiment == 'finetune'


def _tiny_sst2(folder):
  """A GLUE-format SST-2 folder of 60 + 20 sentences from the demo set's vocabulary."""
  rng = random.Random(0)
  words = ['good', 'bad', 'fine', 'awful', 'great', 'dull', 'film', 'plot', 'very', 'not']
  (folder / 'SST-2').mkdir(parents=True)
  for split, n in (('train', 60), ('dev', 20)):
    rows = [f'{" ".join(rng.choices(words, k=6))}\t{rng.randint(0, 1)}' for _ in range(n)]
    (folder / 'SST-2' / f'{split}.tsv').write_text('sentence\tlabel\n' + '\n'.join(rows) + '\n')


def test_a_workdir_moved_with_its_data_reruns_and_checks_the_data(tiny_model_dir, tmp_path):
  """config.json stores data paths relative to the workdir with a fingerprint of the data: a
  workdir copied with its data to another place re-runs to the same record; data that changed
  is exit 2 naming data_dir."""
  here, there = tmp_path / 'here', tmp_path / 'there'
  _tiny_sst2(here / 'glue')
  first = _tiny_run(tiny_model_dir, here / 'results' / 'run', '--config.seeds=(3,)',
                    '--config.task=sst2', f'--config.data_dir={here / "glue"}')
  assert first.returncode == 0, first.stderr[-3000:]
  stored = json.loads((here / 'results' / 'run' / 'config.json').read_text())
  assert stored['data_dir'] == '../../glue' and len(stored['data_fingerprint']) == 16
  shutil.copytree(here, there)
  shutil.rmtree(here)  # the machine that wrote it is gone
  again = run_main(f'--config=configs/rerun.py:{there / "results" / "run"}',
                   f'--workdir={tmp_path / "check"}')
  assert again.returncode == 0, again.stderr[-3000:]
  a, = records_lib.read_records(there / 'results' / 'run' / 'trials.jsonl')
  b, = records_lib.read_records(tmp_path / 'check' / 'trials.jsonl')
  assert a['config_hash'] == b['config_hash'] and a['metrics'] == b['metrics']
  dev = there / 'glue' / 'SST-2' / 'dev.tsv'
  dev.write_text(dev.read_text().replace('\t0\n', '\t1\n', 1))
  changed = run_main(f'--config=configs/rerun.py:{there / "results" / "run"}',
                     f'--workdir={tmp_path / "check2"}')
  assert_bad_input(changed, 'differs from the data the run was made with', '--config.data_dir')
  assert not (tmp_path / 'check2').exists()


def test_data_locations_compare_by_kind_and_fingerprint():
  base = config_history.resolved(_config())
  local = {**base, 'data_dir': '/a/glue', 'data_fingerprint': 'f' * 16}
  moved = {**local, 'data_dir': '../../glue'}
  assert config_history.changed_keys(local, moved) == []
  assert config_history.config_hash(local) == config_history.config_hash(moved)
  assert config_history.changed_keys(local, {**moved, 'data_fingerprint': 'e' * 16}) == [
      'data_fingerprint']
  assert config_history.changed_keys(local, {**base, 'data_dir': ''}) == ['data_dir']  # the hub
  # A config from before fingerprints hashes as it always did.
  before = {k: v for k, v in local.items() if k != 'data_fingerprint'}
  assert config_history.config_hash(before) != config_history.config_hash(local)
  assert config_history.config_hash({**base, 'data_fingerprint': ''}) == config_history.config_hash(
      {k: v for k, v in base.items() if k != 'data_fingerprint'})


def test_rerun_of_a_paper_protocol_reinit_run_keeps_its_small_size_seeds():
  """reinit.py's protocol (seeds unset: 1..small_size_seeds at small sizes) survives config.json:
  the committed SST-2 sweep re-runs seeds 1..5 at 500 examples, not only the stored (1, 2, 3)."""
  from configs import rerun
  from jaxtransfer.studies.tamkin2020 import reinit
  c = rerun.get_config('results/tamkin2020/sst2/reinit')
  reinit.resolve_seeds(c)
  assert c.small_size_seeds == 5 and reinit.seeds_for(c, 500) == [1, 2, 3, 4, 5]
  assert reinit.seeds_for(c, 5000) == [1, 2, 3]
