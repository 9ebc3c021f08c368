"""Layer-wise learning-rate decay (`layer_lr_decay`, Zhang et al. 2021's definition): the head and
pooler at the peak lr, block i of the L computed at lr x d^(L - i), the embeddings at
lr x d^(L + 1); a per-leaf multiplier that composes with freezing and the other multipliers."""

import importlib
import json
import pathlib

from flax import traverse_util
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import helpers
import jaxtransfer as jt
from jaxtransfer import train as train_lib
from jaxtransfer import studies
from jaxtransfer.core import optim
from jaxtransfer.core import program as program_lib
from jaxtransfer.core import step as step_lib
from jaxtransfer.data import glue as data_lib
from jaxtransfer.engine import trials as trials_lib
from jaxtransfer.errors import UserError
from jaxtransfer.models import lora as lora_lib
from jaxtransfer.runtime import records as records_lib

L = 4  # blocks of the tiny model: block 0 / top block = d^3 (0.125 at d = 0.5)


@pytest.fixture(scope='module')
def tiny4(tmp_path_factory) -> pathlib.Path:
  return helpers.make_tiny_model_dir(tmp_path_factory.mktemp('tiny4'), num_layers=L)


@pytest.fixture(scope='module')
def pre(tiny4):
  return jt.load_pretrained(str(tiny4))


@pytest.fixture(scope='module')
def cache(tmp_path_factory) -> pathlib.Path:
  return tmp_path_factory.mktemp('cache')


def _arrays(program, **over):
  return {k: jnp.asarray(over.get(k, v)) for k, v in program.defaults().items()}


def _expected(path, d, f, n, block_lr, mask_lr):
  """The multiplier the formula gives the leaf at `path`: a scalar, or one value per block row."""
  if path[0] in ('blocks', 'adapters', 'lora', 'mask_scores'):
    rows = np.asarray(block_lr[f:n]) * d ** (n - np.arange(f, n))
    return rows * (mask_lr if path[0] == 'mask_scores' else 1.0)
  if path[0] == 'embeddings':
    return np.float32(d ** (n + 1))
  assert path[0] in ('pooler', 'head'), path
  return np.float32(1.0)


CASES = {
    'full': dict(),
    'frozen_prefix': dict(frozen_blocks=2),
    'head_on_block_2': dict(num_blocks=3),
    'adapters_lora_masks': dict(frozen_blocks=1, block_params='none', adapter_size=4,
                                lora=lora_lib.Lora(rank=2, targets=('query', 'value')),
                                masked=('key',)),
}


@pytest.mark.parametrize('composed', [False, True], ids=['alone', 'composed'])
@pytest.mark.parametrize('case', list(CASES))
def test_multipliers_follow_the_formula_leaf_by_leaf(pre, case, composed):
  d = 0.7
  program = program_lib.Program(**{'encoder': pre.config, 'num_labels': 2, 'num_blocks': L,
                                   'layer_lr_decay': d, **CASES[case]})
  # Composed: a frozen block (0, as closeness.py's masks), a reinitialized one at 5x (reinit.py),
  # and mask scores at their own lr.
  block_lr = np.array([0.0, 5.0, 1.0, 0.0] if composed else [1.0] * L, np.float32)
  mask_lr = np.float32(3.0 if composed else 1.0)
  arrays = _arrays(program, block_lr=block_lr, mask_lr=mask_lr)
  train, _ = program.init(pre.params, arrays, jax.random.key(0))
  mult = traverse_util.flatten_dict(program.lr_multipliers(train, arrays))
  leaves = traverse_util.flatten_dict(train)
  assert set(mult) == set(leaves)
  groups = {p[0] for p in leaves}
  want = {'head', 'pooler', 'blocks'} if case != 'adapters_lora_masks' else {
      'head', 'pooler', 'adapters', 'lora', 'mask_scores'}
  assert groups >= want, groups
  f, n = program.frozen_blocks, program.num_blocks
  for path, m in mult.items():
    expected = _expected(path, d, f, n, block_lr, mask_lr)
    got = np.broadcast_to(np.asarray(m), leaves[path].shape)
    if np.ndim(expected):  # one value per block row, the same over the row
      assert got.shape[0] == n - f, path
      expected = np.broadcast_to(expected.reshape((-1,) + (1,) * (got.ndim - 1)), got.shape)
    np.testing.assert_allclose(got, np.broadcast_to(expected, got.shape), rtol=1e-6,
                               err_msg='/'.join(path))
  if composed and 'blocks' in groups:
    rows = np.asarray(mult[('blocks', 'query', 'kernel')]).reshape(-1)
    np.testing.assert_array_equal(rows == 0, block_lr[f:n] == 0)  # frozen stays frozen


def test_off_is_the_plain_multipliers_and_final_norm_goes_with_the_head(pre):
  plain = program_lib.Program(encoder=pre.config, num_labels=2, num_blocks=L)
  arrays = _arrays(plain)
  train, _ = plain.init(pre.params, arrays, jax.random.key(0))
  for m in jax.tree.leaves(plain.lr_multipliers(train, arrays)):
    np.testing.assert_array_equal(np.asarray(m), 1.0)
  decayed = program_lib.Program(encoder=pre.config, num_labels=2, num_blocks=L, layer_lr_decay=0.5)
  # ModernBERT's final norm sits after the last block: with the head, at the peak lr.
  assert float(decayed.layer_decay('embeddings', 'final_norm')) == 1.0
  assert float(decayed.layer_decay('embeddings', 'rel_embeddings')) == 0.5 ** (L + 1)


def _moved(pre, cache, d: float, steps: int = 3, lr: float = 1e-4):
  """Mean |change| per entry of each block's kernels and of the pooler after `steps` AdamW steps
  of one trial on real batches (train_step, as the engine runs it)."""
  task_data = data_lib.load_task_data('sst2', 'demo', pre.tokenizer, pre.path, 32,
                                      cache_dir=str(cache))
  program = program_lib.Program(encoder=pre.config, num_labels=2, num_blocks=L, layer_lr_decay=d)
  train = task_data.train.as_dict()
  arrays, layout = trials_lib.solo_arrays(program, train, seed=1, learning_rate=lr, train_size=100,
                                          batch_size=8, steps=steps)
  data = {k: jnp.asarray(v) for k, v in train.items()}
  step = step_lib.Step(program, optim.OptimConfig(), steps)
  state, frozen = step_lib.init_state(step, pre.params, arrays)
  start = state.train
  one = jax.jit(lambda st, b, w, i: step_lib.train_step(step, st, frozen, b, w, arrays, i))
  for i in range(steps):
    state, _ = one(state, step_lib.step_batch(data, arrays, i, layout), arrays['batch_w'][i], i)
  delta = jax.tree.map(lambda a, b: np.abs(np.asarray(a) - np.asarray(b)), state.train, start)
  per_block = np.mean([delta['blocks'][m]['kernel'].mean(axis=(1, 2))
                       for m in program_lib.MASKABLE], axis=0)
  return per_block, float(delta['pooler']['kernel'].mean())


def test_adam_steps_scale_with_the_block_factors(pre, cache):
  """Adam's step is ~lr per entry whatever the gradient's size, so over a few steps each block
  moves in proportion to its multiplier: block 0 d^(L-1) times as far as the top block."""
  d = 0.5
  blocks, pooler = _moved(pre, cache, d)
  ratio = blocks[0] / blocks[-1]
  print(f'\nAdam steps, d={d}: block 0 / top block = {ratio:.4f} (d^(L-1) = {d ** (L - 1)}), '
        f'per block {np.round(blocks / blocks[-1], 4).tolist()}, pooler / top = '
        f'{pooler / blocks[-1]:.3f}')
  assert abs(ratio / d ** (L - 1) - 1) < 0.2, blocks
  np.testing.assert_allclose(blocks[:-1] / blocks[1:], d, rtol=0.2)
  assert abs(pooler / blocks[-1] * d - 1) < 0.2  # the pooler at the peak lr, the top block at d


def _run(tiny4, cache, work, *extra):
  return helpers.run_main(
      '--config=configs/finetune.py:demo', f'--workdir={work}', f'--config.model={tiny4}',
      f'--config.cache_dir={cache}', '--config.seeds=(1,)', '--config.num_train_steps=25',
      '--config.learning_rate=1e-3', '--config.batch_size=8', '--config.max_seq_length=32',
      '--config.eval_max_examples=16', '--config.log_every=25', '--config.export_model=True',
      *extra)


def _block_distances(pretrained, exported) -> np.ndarray:
  """L2 distance of each block's kernels (all six matrices) from the pretrained ones."""
  sq = sum(((np.asarray(exported['blocks'][m]['kernel']) -
             np.asarray(pretrained['blocks'][m]['kernel'])) ** 2).sum(axis=(1, 2))
           for m in program_lib.MASKABLE)
  return np.sqrt(sq)


def test_cli_decay_keeps_block_0_near_the_pretrained_weights(tiny4, pre, cache, tmp_path):
  ratios, ids = {}, {}
  for d in (0.5, 1.0):
    work = tmp_path / f'd{d}'
    proc = _run(tiny4, cache, work, f'--config.layer_lr_decay={d}')
    assert proc.returncode == 0, proc.stderr[-3000:]
    (rec,) = records_lib.read_records(work / 'trials.jsonl')
    assert rec['status'] == 'ok' and rec['layer_lr_decay'] == d, rec
    assert json.loads((work / 'config.json').read_text())['layer_lr_decay'] == d
    ids[d] = rec['trial_id']
    exported = jt.load_pretrained(str(work / 'models' / rec['trial_id'])).params
    dist = _block_distances(pre.params, exported)
    assert dist[-1] > 1e-3, dist  # well above float noise
    ratios[d] = dist[0] / dist[-1]
    print(f'\nCLI d={d}: block distances {np.round(dist, 5).tolist()}, '
          f'block 0 / top = {ratios[d]:.4f}')
  assert ids[0.5] == ids[1.0]  # the decay is in the record and config, not the trial id
  assert ratios[0.5] < 0.15, ratios
  assert 0.5 < ratios[1.0] < 2, ratios


@pytest.mark.parametrize('value', [0.0, -0.5, 1.5])
def test_out_of_range_is_a_user_error(value):
  config = helpers.load_config('configs/finetune.py', f'--config.layer_lr_decay={value}')
  with pytest.raises(UserError, match='--config.layer_lr_decay'):
    train_lib.validate(config)


def test_cli_out_of_range_exits_2(tmp_path):
  helpers.assert_bad_input(
      helpers.run_main('--config=configs/finetune.py:demo', f'--workdir={tmp_path / "w"}',
                       '--config.layer_lr_decay=1.5'),
      'layer_lr_decay=1.5', '--config.layer_lr_decay')


STUDY_OVERRIDES = {
    'finetune': {}, 'reinit': {'ks': (0, 2)}, 'block_reinit': {'starts': (0, 2)},
    'permute': {}, 'freeze': {}, 'select': {'head_block': '2'}, 'closeness': {},
    'sparsity': {},
}


@pytest.mark.parametrize('name', list(STUDY_OVERRIDES))
def test_every_study_builds_its_programs_with_the_decay(name, tiny4, cache, tmp_path):
  """Every study's programs come from studies.base.make_program, which reads the key (the probe
  study trains only a head, which the decay leaves at the peak lr)."""
  config = importlib.import_module(f'configs.{name}').get_config('demo')
  config.model, config.cache_dir, config.layer_lr_decay = str(tiny4), str(cache), 0.5
  for k, v in STUDY_OVERRIDES[name].items():
    config[k] = v
  study = studies.get(name)
  study.resolve(config)
  ctx = study.load(config, str(tmp_path))
  study.validate(ctx)
  trials = study.trials(ctx)
  assert trials and {t.program.layer_lr_decay for t in trials} == {0.5}, name
