"""The trial engine: data order, optimizer semantics, vmapped vs sequential, failures, resume."""

import collections.abc
import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import chex
import jax
import numpy as np
import optax
import pytest
import torch

import helpers

import jaxtransfer as jt
from jaxtransfer.data import glue as data_lib
from jaxtransfer.engine import engine as engine_lib
from jaxtransfer.engine import trials as trials_lib
from jaxtransfer.core import optim
from jaxtransfer.core import program as program_lib
from jaxtransfer.runtime import records as records_lib
from jaxtransfer.report import summary

ROOT = pathlib.Path(__file__).resolve().parents[1]


# ----------------------------------------------------------------------------- data order


def test_trial_batches_subset_and_epochs():
  idx, w = trials_lib.trial_batches(seed=3, n_total=100, train_size=10, batch_size=4, steps=9)
  assert idx.shape == w.shape == (9, 4)
  # 10 examples, batch 4: epochs of 3 steps, the last one holding 2 real examples.
  np.testing.assert_array_equal(w.sum(1), [4, 4, 2] * 3)
  subset = set(idx[:3][w[:3] > 0].tolist())
  assert len(subset) == 10  # every example of the subset once per epoch
  for e in range(3):
    assert set(idx[3 * e:3 * e + 3][w[3 * e:3 * e + 3] > 0].tolist()) == subset
  # The subset is the seed's own draw (Tamkin et al.), independent of batch size and steps.
  other, ow = trials_lib.trial_batches(seed=3, n_total=100, train_size=10, batch_size=5, steps=2)
  assert set(other[ow > 0].tolist()) == subset
  assert subset == set(np.random.RandomState(3).choice(100, 10, replace=False).tolist())
  different, dw = trials_lib.trial_batches(seed=4, n_total=100, train_size=10, batch_size=4, steps=3)
  assert set(different[dw > 0].tolist()) != subset


def test_trial_batches_full_set_reshuffles_each_epoch():
  idx, w = trials_lib.trial_batches(seed=0, n_total=8, train_size=0, batch_size=8, steps=2)
  assert w.all()
  assert sorted(idx[0]) == sorted(idx[1]) == list(range(8))
  assert list(idx[0]) != list(idx[1])


# ----------------------------------------------------------------------------- optimizer vs torch


def test_adamw_matches_torch_with_clipping_decay_and_schedule():
  """optim.clip then optim.make_tx (as step.train_step applies them) == torch AdamW +
  clip_grad_norm_ + get_linear_schedule_with_warmup."""
  import transformers
  rng = np.random.default_rng(0)
  params = {'dense': {'kernel': rng.normal(size=(4, 3)).astype(np.float32),
                      'bias': rng.normal(size=3).astype(np.float32)}}
  grads = [jax.tree.map(lambda p: rng.normal(size=p.shape).astype(np.float32) * 3, params)
           for _ in range(6)]
  cfg = optim.OptimConfig(weight_decay=0.1, adam_eps=1e-6, max_grad_norm=1.0, warmup_steps=2)
  labels = {'dense': {'kernel': True, 'bias': False}}
  ones = jax.tree.map(lambda p: np.float32(1), params)
  tx = optim.make_tx(cfg, 1e-2, 6, labels, ones)
  state, p = tx.init(params), params
  for g in grads:
    g = optim.clip(g, optax.tree.norm(g), cfg.max_grad_norm)
    updates, state = tx.update(g, state, p)
    p = jax.tree.map(lambda a, u: a + u, p, updates)

  tk = torch.nn.Parameter(torch.tensor(params['dense']['kernel']))
  tb = torch.nn.Parameter(torch.tensor(params['dense']['bias']))
  opt = torch.optim.AdamW([{'params': [tk], 'weight_decay': 0.1}, {'params': [tb], 'weight_decay': 0.0}],
                          lr=1e-2, eps=1e-6)
  sched = transformers.get_linear_schedule_with_warmup(opt, 2, 6)
  for g in grads:
    tk.grad = torch.tensor(g['dense']['kernel'])
    tb.grad = torch.tensor(g['dense']['bias'])
    torch.nn.utils.clip_grad_norm_([tk, tb], 1.0)
    opt.step()
    sched.step()
  np.testing.assert_allclose(p['dense']['kernel'], tk.detach().numpy(), atol=1e-6)
  np.testing.assert_allclose(p['dense']['bias'], tb.detach().numpy(), atol=1e-6)


def test_zero_multiplier_blocks_are_frozen_and_outside_the_norm():
  params = {'blocks': {'kernel': np.ones((3, 2, 2), np.float32)}}
  mult = {'blocks': {'kernel': np.array([1, 0, 1], np.float32).reshape(3, 1, 1)}}
  grads = {'blocks': {'kernel': np.stack([np.full((2, 2), v, np.float32) for v in (1., 100., 1.)])}}
  cfg = optim.OptimConfig(max_grad_norm=1.0, weight_decay=0.5)
  tx = optim.make_tx(cfg, 0.1, 10, {'blocks': {'kernel': True}}, mult)
  state = tx.init(params)
  masked = optim.mask_grads(grads, mult)
  masked = optim.clip(masked, optax.tree.norm(masked), cfg.max_grad_norm)
  updates, state = tx.update(masked, state, params)
  assert float(np.abs(updates['blocks']['kernel'][1]).max()) == 0.0
  # The frozen block's huge gradient did not shrink the others through the global clip:
  # norm of the rest is sqrt(8) > 1, so they were clipped by sqrt(8), not by ~200.
  adam_state = [s for s in jax.tree.leaves(state) if getattr(s, 'shape', ()) == (3, 2, 2)]
  assert all(float(np.abs(m[1]).max()) == 0.0 for m in adam_state)
  np.testing.assert_allclose(adam_state[0][0], 0.1 * (1 / np.sqrt(8)), rtol=1e-5)  # mu = (1-b1) g


# ----------------------------------------------------------------------------- end to end


@pytest.fixture(scope='module')
def tiny_setup(tiny_model_dir, tmp_path_factory):
  pre = jt.load_pretrained(str(tiny_model_dir))
  cache = tmp_path_factory.mktemp('cache')
  task_data = data_lib.load_task_data('sst2', 'demo', pre.tokenizer, pre.path, 32,
                                      cache_dir=str(cache))
  return pre, task_data


def _engine(tiny_setup, workdir, **kw):
  pre, task_data = tiny_setup
  spec = dict(experiment='test', model='tiny', task=task_data.task, workdir=str(workdir),
              batch_size=8, learning_rate=1e-3, num_train_steps=12, log_every=4,
              checkpoint_every=0, eval_batch_size=32)
  spec.update(kw)
  hooks = helpers.CaptureHooks()
  eng = engine_lib.Engine(trials_lib.RunSpec(**spec), pre.params, task_data.train.as_dict(),
                          {k: v.as_dict() for k, v in task_data.dev.items()}, hooks=hooks)
  return eng, _TrainOf(hooks.got)


class _TrainOf(collections.abc.Mapping):
  """{trial_id: final trainable params}: a view of CaptureHooks.got."""

  def __init__(self, got):
    self._got = got

  def __getitem__(self, tid):
    return self._got[tid][1].train

  def __iter__(self):
    return iter(self._got)

  def __len__(self):
    return len(self._got)


def _program(pre, **kw):
  return program_lib.Program(encoder=pre.config, num_labels=2, num_blocks=pre.config.num_layers, **kw)


def test_vmapped_trial_equals_the_same_trial_alone(tiny_setup, tmp_path):
  pre, _ = tiny_setup
  prog = _program(pre)
  alone, p_alone = _engine(tiny_setup, tmp_path / 'alone')
  r_alone = alone.run([trials_lib.Trial(2, 100, {}, prog)])
  many, p_many = _engine(tiny_setup, tmp_path / 'many', trials_per_program=3)
  r_many = many.run([trials_lib.Trial(s, 100, {}, prog) for s in (1, 2, 3)])
  assert len({r['group'] for r in r_many}) == 1  # one compiled group
  tid = r_alone[0]['trial_id']
  chex.assert_trees_all_close(p_alone[tid], p_many[tid], atol=2e-5)
  got = {r['trial_id']: r['metrics']['accuracy'] for r in r_many}
  assert abs(got[tid] - r_alone[0]['metrics']['accuracy']) <= 1 / 85 + 1e-9  # at most one dev example
  # Different seeds really are different trials.
  assert not np.allclose(p_many['n100-s1']['head']['classifier']['kernel'],
                         p_many['n100-s3']['head']['classifier']['kernel'])


def test_non_finite_trial_fails_alone_and_others_go_on(tiny_setup, tmp_path):
  pre, _ = tiny_setup
  prog = _program(pre)
  eng, params = _engine(tiny_setup, tmp_path / 'nan')
  trials = [trials_lib.Trial(1, 100, {'lr': 'ok'}, prog),
            trials_lib.Trial(1, 100, {'lr': 'inf'}, prog, learning_rate=float('inf'))]
  recs = {r['setting']['lr']: r for r in eng.run(trials)}
  assert recs['inf']['status'] == 'failed' and 'non-finite' in recs['inf']['error']
  assert recs['inf']['metrics'] == {}
  assert recs['ok']['status'] == 'ok'
  ref, ref_params = _engine(tiny_setup, tmp_path / 'ref')
  ref_rec = ref.run([trials_lib.Trial(1, 100, {'lr': 'ok'}, prog)])[0]
  assert ref_rec['metrics'] == recs['ok']['metrics']
  rows, left_out = summary.summarize(records_lib.read_records(tmp_path / 'nan' / 'trials.jsonl'))
  assert all(r['n'] == 1 for r in rows)
  assert sum(v.get('failed', 0) for v in left_out.values()) == 1


def test_finished_trials_are_not_rerun(tiny_setup, tmp_path):
  pre, _ = tiny_setup
  prog = _program(pre)
  eng, _ = _engine(tiny_setup, tmp_path)
  first = eng.run([trials_lib.Trial(1, 50, {}, prog)])
  eng2, captured = _engine(tiny_setup, tmp_path)
  both = eng2.run([trials_lib.Trial(s, 50, {}, prog) for s in (1, 2)])
  assert list(captured) == ['n50-s2']  # only the new trial ran
  lines = (tmp_path / 'trials.jsonl').read_text().splitlines()
  assert len(lines) == 2 and json.loads(lines[0]) == first[0]
  assert {r['trial_id'] for r in both} == {'n50-s1', 'n50-s2'}


def test_train_size_too_large_is_a_user_error(tiny_setup, tmp_path):
  pre, _ = tiny_setup
  eng, _ = _engine(tiny_setup, tmp_path)
  with pytest.raises(jt.errors.UserError if hasattr(jt, 'errors') else Exception, match='train_size'):
    eng.run([trials_lib.Trial(1, 10**6, {}, _program(pre))])


def _run_main(args, env=None, **kw):
  env = {**os.environ, **(env or {})}
  return subprocess.run([sys.executable, '-m', 'jaxtransfer.main', *args], cwd=ROOT, env=env,
                        capture_output=True, text=True, **kw)


def _cli_args(model_dir, workdir, cache, extra=()):
  return ['--config=configs/finetune.py:demo', f'--workdir={workdir}', f'--config.model={model_dir}',
          f'--config.cache_dir={cache}', '--config.max_seq_length=32', '--config.batch_size=8',
          '--config.seeds=[1,2]', '--config.train_sizes=[120]', '--config.log_every=2', *extra]


def _records(workdir):
  return {r['trial_id']: r for r in records_lib.read_records(pathlib.Path(workdir) / 'trials.jsonl')}


def test_kill_9_then_a_torn_checkpoint_resumes_to_the_uninterrupted_records(tiny_model_dir,
                                                                           tmp_path):
  """A sweep killed with SIGKILL mid-run, its newest checkpoint then torn (every file truncated):
  the re-run sets that one aside, resumes from the one before and ends with every trial once, the
  same metrics and the same train_loss (one log interval spans the whole run, so the loss sums
  before the checkpoint must come back from it)."""
  steps = ['--config.num_train_steps=40', '--config.checkpoint_every=4', '--config.log_every=40']
  cache = tmp_path / 'cache'
  ref = _run_main(_cli_args(tiny_model_dir, tmp_path / 'ref', cache, steps), timeout=600)
  assert ref.returncode == 0, ref.stderr[-3000:]

  work = tmp_path / 'killed'
  proc = subprocess.Popen([sys.executable, '-m', 'jaxtransfer.main',
                           *_cli_args(tiny_model_dir, work, cache, steps)], cwd=ROOT,
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  deadline = time.time() + 300
  ckpt_root = work / 'checkpoints'
  saved = []
  # Wait for two finalized checkpoints, then kill without warning.
  while time.time() < deadline:
    saved = sorted(int(p.name) for p in ckpt_root.glob('g*/*') if p.name.isdigit()) \
        if ckpt_root.exists() else []
    if len(saved) >= 2:
      break
    assert proc.poll() is None, 'finished before it could be killed; make the run longer'
    time.sleep(0.05)
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  assert not (work / 'trials.jsonl').exists() or not _records(work)
  kept = sorted((p for p in ckpt_root.glob('g*/*') if p.name.isdigit()), key=lambda p: int(p.name))
  assert len(kept) == 2, kept  # the last two are kept
  for f in kept[-1].rglob('*'):
    if f.is_file():
      f.write_bytes(f.read_bytes()[:len(f.read_bytes()) // 3])
  resumed = _run_main(_cli_args(tiny_model_dir, work, cache, steps), timeout=600)
  assert resumed.returncode == 0, resumed.stderr[-3000:]
  assert f'set aside as {kept[-1].name}.unreadable' in resumed.stderr
  assert f'Restored group {kept[0].parent.name} at step {kept[0].name} of 40' in resumed.stderr
  got, want = _records(work), _records(tmp_path / 'ref')
  lines = (work / 'trials.jsonl').read_text().splitlines()
  assert len(lines) == len(want) == 2
  for tid, rec in want.items():
    assert got[tid]['metrics'] == pytest.approx(rec['metrics'], abs=1e-6)
    assert got[tid]['train_loss'] == pytest.approx(rec['train_loss'], abs=1e-5)
  assert not (work / 'checkpoints').exists()  # cleaned up after the group finished


SHARDED = r'''
import json, sys
sys.path.insert(0, sys.argv[1])
import jax
import jaxtransfer as jt
from jaxtransfer.data import glue as data_lib
from jaxtransfer.engine import engine as engine_lib
from jaxtransfer.engine import trials as trials_lib
from jaxtransfer.core import program as program_lib
pre = jt.load_pretrained(sys.argv[2])
td = data_lib.load_task_data('sst2', 'demo', pre.tokenizer, pre.path, 32, cache_dir=sys.argv[4])
prog = program_lib.Program(encoder=pre.config, num_labels=2, num_blocks=pre.config.num_layers)
spec = trials_lib.RunSpec(experiment='t', model='tiny', task=td.task, workdir=sys.argv[3],
                          batch_size=8, learning_rate=1e-3, num_train_steps=10, log_every=5,
                          checkpoint_every=0, eval_batch_size=32)
eng = engine_lib.Engine(spec, pre.params, td.train.as_dict(), {k: v.as_dict() for k, v in td.dev.items()})
recs = eng.run([trials_lib.Trial(s, 100, {}, prog) for s in (1, 2, 3)])
print(json.dumps({'devices': len(jax.devices()), 'acc': {r['trial_id']: r['metrics']['accuracy'] for r in recs}}))
'''


def test_sharded_over_8_cpu_devices_matches_one_device(tiny_model_dir, tmp_path):
  """3 trials padded to 8 and sharded over 8 devices give the 1-device results."""
  out = {}
  for n in (1, 8):
    env = {**os.environ, 'XLA_FLAGS': f'--xla_force_host_platform_device_count={n}',
           'JAX_PLATFORMS': 'cpu'}
    proc = subprocess.run([sys.executable, '-c', SHARDED, str(ROOT), str(tiny_model_dir),
                           str(tmp_path / f'w{n}'), str(tmp_path / 'cache')], env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out[n] = json.loads(proc.stdout.strip().splitlines()[-1])
  assert out[8]['devices'] == 8
  for tid, acc in out[1]['acc'].items():
    assert abs(out[8]['acc'][tid] - acc) <= 1 / 85 + 1e-9


def test_a_program_training_no_block_checkpoints_and_resumes(tiny_setup, tmp_path):
  """Lee et al.'s "None" (head only): its stacked block state has length 0, which orbax refuses
  to save. The checkpoint leaves those leaves out and restores them empty, and a run that
  checkpoints every 4 steps ends where one that never checkpoints does."""
  from jaxtransfer.engine import checkpoints as ckpt_lib
  pre, _ = tiny_setup
  prog = _program(pre, frozen_blocks=pre.config.num_layers, train_embeddings=False)
  want = _engine(tiny_setup, tmp_path / 'straight')[0].run([trials_lib.Trial(1, 50, {}, prog)])[0]
  got = _engine(tiny_setup, tmp_path / 'periodic', checkpoint_every=4)[0].run(
      [trials_lib.Trial(1, 50, {}, prog)])[0]
  assert got['status'] == 'ok' and got['metrics'] == want['metrics']

  state = {'blocks': {'mu': np.zeros((0, 8), np.float32)}, 'head': np.arange(6.0).reshape(2, 3),
           'count': np.int32(7)}
  ckpt = ckpt_lib.GroupCheckpoints(str(tmp_path / 'ckpt'), 'g1')
  ckpt.save(4, jax.tree.map(jax.numpy.asarray, state), {'step': 4})
  sharding = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  restored, meta = ckpt.restore(jax.eval_shape(lambda s: s, state), sharding)
  ckpt.close()
  assert meta['step'] == 4 and jax.tree.structure(restored) == jax.tree.structure(state)
  for a, b in zip(jax.tree.leaves(restored), jax.tree.leaves(state)):
    assert a.shape == b.shape and np.array_equal(np.asarray(a), b)
