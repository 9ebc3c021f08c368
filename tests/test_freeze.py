"""Freezing (Lee et al.): frozen params never change and get no optimizer state or backward pass."""

import functools
import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from absl import flags
from ml_collections import config_flags

import helpers
import jaxtransfer as jt
from jaxtransfer.engine import trials as trials_lib
from jaxtransfer.models import config as model_config
from configs import freeze as freeze_cfg
from jaxtransfer.data import glue as data_lib
from jaxtransfer.engine import engine as engine_lib
from jaxtransfer.core import optim
from jaxtransfer.core import step as step_lib
from jaxtransfer.runtime import records as records_lib
from jaxtransfer import train as train_lib
from jaxtransfer.studies.lee2019 import analysis as lee
from jaxtransfer.errors import UserError
from jaxtransfer.studies import base
from jaxtransfer.studies.lee2019 import freeze
from helpers import matmul_flops
from jaxtransfer.models import bert
from jaxtransfer.models import pretrained as pretrained_lib


# ----------------------------------------------------------------------------- helpers


def _ctx(pre, task='sst2'):
  return base.Context(freeze_cfg.get_config(), '', pre, data_lib.get_task(task), None)


_flat = helpers.flat_params


_same_bits = helpers.same_bits


def _data(pre, n, seed, seq=16):
  return helpers.labelled_batch(pre, n, seed, seq)


def _tx(program, train, arrays, cfg, lr, steps):
  """The optimizer exactly as the engine builds it for a trial (step.optimizer)."""
  return step_lib.optimizer(step_lib.Step(program, cfg, steps), train,
                            {**arrays, 'lr': jnp.float32(lr)})


def _adam_moments(opt_state):
  """{param path: (mu, nu)} of the AdamW state."""
  out = {}
  for s in jax.tree.leaves(opt_state, is_leaf=lambda x: isinstance(x, optax.ScaleByAdamState)):
    if isinstance(s, optax.ScaleByAdamState):
      mu, nu = _flat(s.mu), _flat(s.nu)
      for path in mu:
        assert path not in out
        out[path] = (mu[path], nu[path])
  return out


@pytest.fixture(scope='module')
def tiny(tiny_hf_dir):
  return jt.load_pretrained(str(tiny_hf_dir), with_tokenizer=False)


# ----------------------------------------------------------------------------- the engine


def _check_frozen(pre, program, train, frozen, arrays, k):
  """Blocks below L-k (and the embeddings unless k = L) are bit-identical to the pretrained ones,
  the rest moved, and the optimizer holds moments for the trainable part only."""
  L = program.encoder.num_layers
  is_roberta = program.encoder.model_type == 'roberta'
  # RoBERTa classifies <s> with its own dense-tanh head, never through a (saved) pooler.
  assert program.head == ('mlp' if is_roberta else 'pooler')
  final = program.export_params(train, frozen, arrays)
  after = _flat(final['blocks'])
  for path, before in _flat(pre['blocks']).items():
    for i in range(L):
      if i < L - k:
        assert _same_bits(after[path][i], before[i]), (k, path, i)
      elif path[-1] == 'kernel':  # (a key bias gets no gradient at all: softmax ignores it)
        assert not _same_bits(after[path][i], before[i]), (k, path, i)
  emb_same = [_same_bits(_flat(final['embeddings'])[p], v)
              for p, v in _flat(pre['embeddings']).items()]
  assert all(emb_same) if k < L else not all(emb_same), k
  if not is_roberta:
    assert not _same_bits(final['pooler']['kernel'], pre['pooler']['kernel'])  # always trained

  # Nothing frozen is trainable, so the optimizer allocates moments for the trainable part only.
  size = lambda tree: sum(v.size for v in _flat(tree).values())
  expected = (k * size(pre['blocks']) // L + size(train['head'])
              + (size(pre['pooler']) if not is_roberta else 0)
              + (size(pre['embeddings']) if k == L else 0))
  assert size(train) == expected, (k, size(train), expected)
  assert ('embeddings' in train) == (k == L) and 'blocks_frozen' not in train
  tx, _ = _tx(program, train, arrays, optim.OptimConfig(), 1e-3, 10)
  moments = _adam_moments(tx.init(train))
  assert set(moments) == set(_flat(train))
  assert sum(mu.size + nu.size for mu, nu in moments.values()) == 2 * expected


@pytest.mark.parametrize('tiny_hf_dir', ['roberta'], indirect=True)
def test_engine_roberta_frozen_params_bit_identical(tiny, tmp_path):
  """(BERT: the end-to-end test below runs the same checks for every k.)"""
  ctx = _ctx(tiny)
  spec = trials_lib.RunSpec(experiment='freeze', model='tiny', task=ctx.task,
                            workdir=str(tmp_path), batch_size=8, learning_rate=1e-2,
                            num_train_steps=3, optim=optim.OptimConfig(weight_decay=0.1),
                            eval_batch_size=16, log_every=3)
  hooks = helpers.CaptureHooks()
  ks = (1, 0)
  trials = [trials_lib.Trial(1, 0, {'trainable_blocks': k}, freeze.freeze_program(ctx, k))
            for k in ks]
  eng = engine_lib.Engine(spec, tiny.params, _data(tiny, 32, 0), {'': _data(tiny, 16, 1)},
                          hooks=hooks)
  records = eng.run(trials)
  assert [r['status'] for r in records] == ['ok', 'ok'], records
  assert len(hooks.got) == 2
  for t, p in hooks.got.values():
    _check_frozen(tiny.params, t.program, p.train, p.frozen, p.arrays, t.setting['trainable_blocks'])


# ----------------------------------------------------------------------------- per-block mask


@pytest.mark.parametrize('tiny_hf_dir', ['bert'], indirect=True)
def test_block_lr_zero_freezes_block_and_leaves_the_clipping_norm(tiny):
  """block_lr = 0 on one block inside a trained stack: no update, no moments, not in the norm."""
  ctx = _ctx(tiny)
  program = base.make_program(ctx)
  L = tiny.config.num_layers
  arrays = {k: jnp.asarray(v) for k, v in program.defaults().items()}
  arrays['block_lr'] = jnp.asarray([1.0] + [0.0] + [1.0] * (L - 2), jnp.float32)
  cfg = optim.OptimConfig(weight_decay=0.1, adam_eps=1e-3, max_grad_norm=0.05)
  lr, steps = 1e-2, 10
  train, frozen = jax.jit(program.init)(tiny.params, arrays, jax.random.key(0))
  tx, mult = _tx(program, train, arrays, cfg, lr, steps)
  opt = jax.jit(tx.init)(train)

  # The engine's update on gradients where the frozen block's are by far the largest (a real
  # random model's block gradients are too small beside the head's for the norm to show it).
  rs = np.random.RandomState(4)
  grads = jax.tree.map(lambda x: rs.normal(size=x.shape).astype(np.float32), train)

  def boost(x):
    x = x.copy()
    x[1] *= 100
    return x

  grads['blocks'] = jax.tree.map(boost, grads['blocks'])
  def update_fn(g, o, t):  # as step.train_step: mask, clip by what is left, then the optax chain
    g = optim.mask_grads(g, mult)
    return tx.update(optim.clip(g, optax.tree.norm(g), cfg.max_grad_norm), o, t)

  update = jax.jit(update_fn)
  updates, _ = update(grads, opt, train)

  # Reference in numpy: zero the frozen block, clip by the norm of what is left, one AdamW step.
  g, p = _flat(grads), _flat(train)
  g = {k: v.astype(np.float64) for k, v in g.items()}
  for path in g:
    if path[0] == 'blocks':
      g[path][1] = 0.0
  norm = math.sqrt(sum(float((v ** 2).sum()) for v in g.values()))
  norm_all = math.sqrt(sum(float((v.astype(np.float64) ** 2).sum()) for v in _flat(grads).values()))
  assert norm > cfg.max_grad_norm and norm_all > 10 * norm  # clipping is on and the test can fail
  for path, gv in g.items():
    gc = gv / norm * cfg.max_grad_norm
    u = gc / (np.abs(gc) + cfg.adam_eps)
    if program.decays(path):
      u = u + cfg.weight_decay * p[path]
    m = np.asarray(arrays['block_lr']).reshape((-1,) + (1,) * (gv.ndim - 1)) \
        if path[0] == 'blocks' else 1.0
    np.testing.assert_allclose(_flat(updates)[path], -lr * m * u, rtol=2e-5, atol=1e-9,
                               err_msg=str(path))

  # Real training steps: the frozen block is bit-identical and its moments are exactly zero.
  batch = {k: jnp.asarray(v) for k, v in _data(tiny, 8, 2).items()}
  w, rng = jnp.ones(8, jnp.float32), jax.random.key(3)
  train_before = _flat(train)

  @jax.jit
  def step(train, opt, rng):
    updates, opt = update(jax.grad(program.loss)(train, frozen, batch, w, arrays, rng), opt, train)
    return optax.apply_updates(train, updates), opt

  for i in range(3):
    train, opt = step(train, opt, jax.random.fold_in(rng, i))
  after, moments = _flat(train), _adam_moments(opt)
  for path, before in train_before.items():
    if path[0] != 'blocks':
      continue
    assert _same_bits(after[path][1], before[1]), path
    mu, nu = moments[path]
    assert not mu[1].any() and not nu[1].any(), path
    assert nu[0].any(), path
    if path[-1] == 'kernel':  # (a key bias has no gradient at all: softmax ignores it)
      assert not _same_bits(after[path][0], before[0]), path


# ----------------------------------------------------------------------------- FLOPs


def _random_pre(num_layers=4, abstract=False):
  config = model_config.EncoderConfig(vocab_size=100, hidden_size=64, num_layers=num_layers, num_heads=4,
                              intermediate_size=256, max_position_embeddings=64)
  init = functools.partial(bert.init_params, config)
  params = jax.eval_shape(init, jax.random.key(0)) if abstract else init(jax.random.key(0))
  return pretrained_lib.Pretrained('random', '', config, params, None, {})


def test_train_flops_fraction_matches_the_differentiated_graph():
  """Counted from what JAX actually differentiates: no backward pass through the frozen prefix."""
  pre = _random_pre(abstract=True)  # shapes only: nothing is computed
  ctx = _ctx(pre)
  ctx.config.max_seq_length = 32  # the attention terms are counted at the rows' length
  batch = {k: jnp.asarray(v) for k, v in _data(pre, 4, 0, seq=32).items()}
  measured = {}
  for k in (4, 2, 1, 0):
    program = freeze.freeze_program(ctx, k)
    arrays = {n: jnp.asarray(v) for n, v in program.defaults().items()}
    train, frozen = jax.eval_shape(program.init, pre.params, arrays, jax.random.key(1))
    step = jax.value_and_grad(program.loss)
    jaxpr = jax.make_jaxpr(step)(train, frozen, batch, jnp.ones(4), arrays, jax.random.key(2))
    measured[k] = (matmul_flops(jaxpr.jaxpr), program.train_flops_fraction())
  for k, (flops, fraction) in measured.items():
    assert flops / measured[4][0] == pytest.approx(fraction, rel=0.01), (k, flops, fraction)
  assert measured[0][1] == pytest.approx(1 / 3, rel=0.01)


# ----------------------------------------------------------------------------- config, validation


def _resolved(c):
  c = c.copy_and_resolve_references()
  freeze.paper_defaults(c)
  return c


def test_config_paper_defaults_follow_task_and_model():
  c = freeze_cfg.get_config()
  r = _resolved(c)
  assert (r.learning_rate, r.batch_size, r.num_epochs) == (2e-5, 16, 3.0)
  assert list(c.seeds) == list(range(1, 11))
  c.task = 'cola'
  assert _resolved(c).learning_rate == 4e-5
  c.task, c.model = 'qnli', 'roberta-base'
  r = _resolved(c)
  assert (r.learning_rate, r.batch_size, r.num_epochs) == (2e-5, 32, 10.0)
  c.learning_rate = 1e-4  # an explicit value wins over the table from then on
  c.task = 'rte'
  r = _resolved(c)
  assert r.learning_rate == 1e-4 and r.batch_size == 16
  assert json.loads(r.to_json_best_effort())['learning_rate'] == 1e-4
  d = freeze_cfg.get_config('demo')
  assert (d.model, d.learning_rate, list(d.trainable_blocks)) == ('minilm-l6', 1e-4, [])


def _parse(*args):
  """The config as main.py's flags produce it from a command line."""
  argv = ['main', *args]
  fv = flags.FlagValues()
  config_flags.DEFINE_config_file('config', None, '', flag_values=fv, lock_config=True,
                                  sys_argv=argv)
  fv(argv)
  return fv.config


def test_config_command_line_overrides():
  c = _parse(f'--config={freeze_cfg.__file__}', '--config.trainable_blocks=[6,2]',
             '--config.task=mrpc', '--config.seeds=[1,2,3]')
  assert (list(c.trainable_blocks), _resolved(c).learning_rate, list(c.seeds)) == \
      ([6, 2], 3e-5, [1, 2, 3])
  c = _parse(f'--config={freeze_cfg.__file__}:demo', '--config.learning_rate=5e-5')
  assert (c.learning_rate, list(c.trainable_blocks)) == (5e-5, [])


@pytest.mark.parametrize('ks', [[5], [-1], [2, 2], ['top']])
def test_bad_trainable_blocks_is_a_user_error(ks):
  ctx = _ctx(_random_pre(4))
  ctx.config.trainable_blocks = ks
  with pytest.raises(UserError, match='trainable_blocks'):
    freeze.Freeze().validate(ctx)


def test_paper_sweep():
  assert freeze.paper_sweep(12) == [12, 6, 5, 4, 3, 2, 1, 0]
  assert freeze.paper_sweep(6) == [6, 3, 2, 1, 0]


# ----------------------------------------------------------------------------- the table


def _record(task, k, seed, value):
  return {'trial_id': f'{task}-{k}-{seed}', 'experiment': 'freeze', 'task': task, 'model': 'm',
          'seed': seed, 'train_size': 0, 'setting': {'trainable_blocks': k},
          'metrics': {data_lib.get_task(task).primary_metric: value,
                      'train_flops_fraction': (6 + 2 * k) / 18}, 'status': 'ok'}


def test_lee_table_aggregation_and_relative_scores(tmp_path):
  runs = {('cola', 6): [0.50, 0.48, 0.0, 0.30], ('cola', 2): [0.40, 0.20, 0.38],
          ('sst2', 6): [0.90, 0.92, 0.91], ('sst2', 2): [0.89, 0.88, 0.60]}
  records = [_record(t, k, s, v) for (t, k), vals in runs.items() for s, v in enumerate(vals)]
  records.append({**_record('sst2', 2, 9, 0.99), 'status': 'failed', 'metrics': {}})
  table = {(r['task'], r['trainable_blocks']): r for r in lee.rows(records, {'cola': 6, 'sst2': 6})}
  # By hand: drop zeros, keep runs > 0.9 x best.
  assert table['cola', 6]['lee'] == pytest.approx(100 * (0.50 + 0.48) / 2)
  assert table['cola', 2]['lee'] == pytest.approx(100 * (0.40 + 0.38) / 2)
  assert table['sst2', 2]['lee'] == pytest.approx(100 * (0.89 + 0.88) / 2)
  assert table['sst2', 2]['n'] == 3
  assert table['cola', 2]['relative_lee'] == pytest.approx(100 * 0.39 / 0.49)
  assert table['cola', 6]['mean'] == pytest.approx(100 * np.mean(runs['cola', 6]))
  half = (table['sst2', 6]['ci95_high'] - table['sst2', 6]['ci95_low']) / 2
  assert half == pytest.approx(100 * 4.302653 * np.std(runs['sst2', 6], ddof=1) / math.sqrt(3),
                               rel=1e-5)
  assert table['sst2', 2]['setting'] == '4–5' and table['sst2', 6]['setting'] == 'Full'
  md = lee.markdown(list(table.values()))
  assert '| Task | Full | 4–5 |' in md
  rel = (100 * 0.39 / 0.49 + 100 * 0.885 / 0.91) / 2
  assert f'| Rel. % | 100.00 | {rel:.2f} |' in md
  assert '(CoLA MCC, SST-2 acc)' in md
  # A task missing a column leaves every Rel. % column: each averages the same task set.
  partial = [r for r in table.values() if (r['task'], r['trainable_blocks']) != ('cola', 2)]
  md = lee.markdown(partial)
  assert f'| Rel. % | 100.00 | {100 * 0.885 / 0.91:.2f} |' in md and '(SST-2 acc)' in md
  md = lee.markdown([r for r in partial if (r['task'], r['trainable_blocks']) != ('sst2', 6)])
  assert '| Rel. % | – | – |' in md and 'no task has every column' in md
  paths = lee.plot_relative(str(tmp_path), records, list(table.values()), {'cola': 6, 'sst2': 6})
  assert len(paths) == 2


def test_lee_figure_draws_the_tables_plain_mean_relative_scores():
  # CoLA's full runs include a 0 that Lee's aggregate drops: relative to that aggregate, Full
  # would sit at 100 * 0.32 / 0.49 = 65%; relative to the plain mean it is 100 by definition.
  runs = {('cola', 6): [0.50, 0.48, 0.0, 0.30], ('cola', 2): [0.40, 0.20, 0.38],
          ('sst2', 6): [0.90, 0.92, 0.91], ('sst2', 2): [0.89, 0.88, 0.60]}
  records = [_record(t, k, s, v) for (t, k), vals in runs.items() for s, v in enumerate(vals)]
  layers = {'cola': 6, 'sst2': 6}
  table = lee.rows(records, layers)
  curves = {c[0]: c for c in lee.relative_curves(records, table, layers)}
  for (task, k), vals in runs.items():
    _, _, _, _, ks, samples, _, _ = curves[task]
    got = samples[ks.index(k)]
    assert got == pytest.approx(100 * np.asarray(vals) / np.mean(runs[task, 6]))
    row = next(r for r in table if r['task'] == task and r['trainable_blocks'] == k)
    assert np.mean(got) == pytest.approx(row['relative_mean'])
  assert np.mean(curves['cola'][5][-1]) == pytest.approx(100)
  # Our Rel. % line is the table's plain-mean Rel. % row, by fraction of blocks trained.
  md = lee.markdown(table)
  row = md.split('Plain mean')[1].split('| Rel. % | ')[1].split(' |\n')[0].split(' | ')
  assert lee.mean_relative(table, layers) == pytest.approx(
      {1.0: float(row[0]), 2 / 6: float(row[1])}, abs=5e-3)
  assert lee.mean_relative([r for r in table if r['task'] == 'cola'], layers) == {}


# ----------------------------------------------------------------------------- end to end


@pytest.fixture(scope='module')
def tiny_with_tokenizer(tmp_path_factory):
  """A 2-block random BERT with MiniLM's tokenizer files, so real text encodes."""
  return helpers.make_tiny_model_dir(tmp_path_factory.mktemp('tiny-tok'), num_layers=2)


def test_demo_config_end_to_end(tiny_with_tokenizer, tmp_path, monkeypatch):
  config = freeze_cfg.get_config('demo')
  config.model = str(tiny_with_tokenizer)
  config.cache_dir = str(tmp_path / 'cache')
  config.num_train_steps = 2
  config.eval_max_examples = 16
  config.eval_batch_size = 16
  got = []
  monkeypatch.setattr(freeze.Freeze, 'uses_params', lambda self, ctx, program: True)
  monkeypatch.setattr(freeze.Freeze, 'write_outputs',
                      lambda self, ctx, trial, params: got.append((ctx, trial, params)))
  work = tmp_path / 'work'
  records = train_lib.train_and_evaluate(config, str(work))

  # The default sweep for L = 2 blocks is [2, 1, 0]; each k is one compiled group of both seeds.
  assert sorted((r['setting']['trainable_blocks'], r['seed']) for r in records) == \
      sorted((k, s) for k in (2, 1, 0) for s in (1, 2))
  assert all(r['status'] == 'ok' and 0 < r['metrics']['train_flops_fraction'] <= 1
             for r in records)
  assert len(got) == 6  # 3 groups of 2 trials
  for ctx, trial, p in got:
    _check_frozen(ctx.pretrained.params, trial.program, p.train, p.frozen, p.arrays,
                  trial.setting['trainable_blocks'])

  assert records_lib.read_records(work / 'trials.jsonl') == records
  md = (work / 'table.md').read_text()
  assert md.startswith('Data: demo sentiment set (342 train / first 16 of 85 dev).\n\n')
  assert '| Task | Full | 1 | None |' in md and '| SST-2 acc |' in md
  assert len((work / 'table.csv').read_text().strip().splitlines()) == 1 + 3
  assert {p.name for p in (work / 'plots').iterdir()} == {
      'relative_vs_trainable_blocks.png', 'relative_vs_fraction_vs_paper.png'}
  assert (work / 'summary.csv').exists()
  # Merging workdirs (how results/lee2019 is assembled) gives the same table.
  merged = lee.combine([str(work)], str(tmp_path / 'merged'))
  table = md.split('\n\n', 1)[1]  # a merge of several workdirs has no single data line
  assert len(merged) == 3 and (tmp_path / 'merged' / 'table.md').read_text() == table


def test_clip_frozen_grads_clips_by_the_norm_over_every_parameter(tiny):
  """clip_frozen_grads (Lee et al.'s clip_grad_norm_(model.parameters())): the norm is the whole
  model's gradient norm, taken from a fully trainable program on the same params, and the trained
  params' first AdamW step uses gradients clipped by it."""
  ctx = _ctx(tiny)
  ctx.config.clip_frozen_grads = True
  L = tiny.config.num_layers
  program = freeze.freeze_program(ctx, 1)
  full_program = freeze.freeze_program(ctx, L)  # the same head, everything trained
  assert program.grads_of_frozen and program.frozen_blocks == L - 1
  cfg = optim.OptimConfig(adam_eps=1e-3, max_grad_norm=0.05, clip_frozen_grads=True)
  arrays = {**{k: jnp.asarray(v) for k, v in program.defaults().items()},
            'seed': jnp.int32(5), 'lr': jnp.float32(1e-2)}
  step = step_lib.Step(program, cfg, 10)
  state, frozen = step_lib.init_state(step, tiny.params, arrays)
  batch = {k: jnp.asarray(v) for k, v in _data(tiny, 8, 2).items()}
  w = jnp.ones(8, jnp.float32)
  new, metrics = jax.jit(lambda s: step_lib.train_step(step, s, frozen, batch, w, arrays, 0))(state)

  # Reference: the gradient of every parameter, from the program that trains them all.
  full_train, full_frozen = full_program.init(tiny.params, arrays, step_lib.init_rng(arrays))
  assert not jax.tree.leaves(full_frozen)
  full_grads = jax.grad(full_program.loss)(full_train, full_frozen, batch, w, arrays,
                                           step_lib.dropout_rng(arrays, 0))
  g = {k: v.astype(np.float64) for k, v in _flat(full_grads).items()}
  norm = math.sqrt(sum(float((v ** 2).sum()) for v in g.values()))
  trained_norm = math.sqrt(sum(float((g[('blocks',) + p[1:]][L - 1:] ** 2).sum()) if p[0] == 'blocks'
                               else float((g[p] ** 2).sum()) for p in _flat(state.train)))
  assert norm > 1.1 * trained_norm > cfg.max_grad_norm  # the test can fail
  np.testing.assert_allclose(float(metrics['grad_norm']), norm, rtol=1e-4)
  before, after = _flat(state.train), _flat(new.train)
  for path, p in before.items():
    gv = g[('blocks',) + path[1:]][L - 1:] if path[0] == 'blocks' else g[path]
    gc = gv * min(1.0, cfg.max_grad_norm / (norm + 1e-6))
    np.testing.assert_allclose(after[path] - p, -1e-2 * gc / (np.abs(gc) + cfg.adam_eps),
                               rtol=1e-3, atol=2e-7, err_msg=str(path))  # float32 ulp at 1


def test_lee_vs_paper_figure_uses_each_tasks_own_row_and_majority_lines(tmp_path, monkeypatch):
  kept = []
  save = lee.plots.save
  monkeypatch.setattr(lee.plots, 'save', lambda fig, *a: kept.append(fig) or save(fig, *a))
  runs = {('cola', 6): [0.50, 0.48], ('cola', 3): [0.40, 0.38], ('sst2', 6): [0.90, 0.92],
          ('sst2', 3): [0.89, 0.88]}
  records = [_record(t, k, s, v) for (t, k), vals in runs.items() for s, v in enumerate(vals)]
  layers = {'cola': 6, 'sst2': 6}
  cola = [r for r in records if r['task'] == 'cola']
  lee.plot_relative(str(tmp_path), cola, lee.rows(cola, layers), layers)
  paper = next(l for l in kept[1].axes[0].get_lines() if l.get_label().startswith('Lee'))
  # docs/PROTOCOLS.md's CoLA row, blocks 6-11 of 12 trained: 53.27 / 58.26.
  y = dict(zip(paper.get_xdata(), paper.get_ydata()))
  assert y[0.5] == pytest.approx(100 * 53.27 / 58.26) and 'CoLA row' in paper.get_label()
  infos = {'cola': lee.plots.RunInfo('CoLA', 'mcc', 0.0),
           'sst2': lee.plots.RunInfo('SST-2', 'accuracy', 0.509)}
  lee.plot_relative(str(tmp_path), records, lee.rows(records, layers), layers, infos=infos)
  ax = kept[2].axes[0]
  chance = {l.get_label(): l.get_ydata()[0] for l in ax.get_lines() if 'majority' in l.get_label()}
  assert chance['always the majority class, SST-2 (0.509)'] == pytest.approx(
      100 * 0.509 / 0.91)
  assert chance['always the majority class, CoLA (MCC 0)'] == 0
  paper = next(l for l in kept[3].axes[0].get_lines() if l.get_label().startswith('Lee'))
  y = dict(zip(paper.get_xdata(), paper.get_ydata()))
  assert y[0.5] == pytest.approx(50 * (53.27 / 58.26 + 92.06 / 92.69))


def test_full_finetuning_is_the_same_trial_in_the_freeze_and_reinit_studies(
    tiny_with_tokenizer, tmp_path):
  """k = L in freeze.py (every block trained) and in reinit.py (no block reinitialized) are one
  trial: the same config must give the same record (results/tamkin2020/cola and
  results/lee2019/cola hold it twice; their seed-3 scores differ, see their READMEs)."""
  from configs import reinit as reinit_cfg
  records = {}
  for name, cfg in (('freeze', freeze_cfg.get_config('demo')),
                    ('reinit', reinit_cfg.get_config('demo'))):
    cfg.model, cfg.cache_dir = str(tiny_with_tokenizer), str(tmp_path / 'cache')
    cfg.seeds, cfg.train_sizes, cfg.num_train_steps = (3,), (64,), 3
    cfg.learning_rate, cfg.batch_size, cfg.max_seq_length = 1e-4, 16, 64
    cfg.eval_max_examples = cfg.eval_batch_size = 16
    cfg.pooling = 'mean'
    if name == 'freeze':
      cfg.trainable_blocks = (2,)
    else:
      cfg.ks, cfg.small_size_seeds = (2,), 0
    records[name], = train_lib.train_and_evaluate(cfg, str(tmp_path / name))
  got, want = records['freeze'], records['reinit']
  assert (got['steps'], got['seed'], got['train_size']) == (want['steps'], 3, 64)
  assert got['train_loss'] == want['train_loss']
  assert got['metrics']['accuracy'] == want['metrics']['accuracy']
