"""Variability-guided placement (Xie et al. 2022): truncation above the head block, adapter placement
against HF PyTorch with hooks, what trains in each method, FLOP fractions, and the demo end to end."""


import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch
import transformers
from jax.extend import core as jcore

import helpers
from configs import select as select_cfg
from jaxtransfer.engine import trials as trials_lib
from jaxtransfer.models import config as model_config
from jaxtransfer.engine import engine as engine_lib
from jaxtransfer.core import optim
from jaxtransfer.core import program as program_lib
from jaxtransfer.runtime import records as records_lib
from jaxtransfer import train as train_lib
from jaxtransfer.errors import UserError
from jaxtransfer.engine import timing
from jaxtransfer.studies.xie2022 import select
from jaxtransfer.models import bert
from jaxtransfer.models import pretrained as pretrained_lib
from helpers import matmul_flops


_flat = helpers.flat_params


def _random_pre(num_layers=4, hidden=32):
  config = model_config.EncoderConfig(vocab_size=100, hidden_size=hidden, num_layers=num_layers,
                              num_heads=4, intermediate_size=4 * hidden, max_position_embeddings=64)
  params = bert.init_params(config, jax.random.key(0))
  return pretrained_lib.Pretrained('random', '', config, params, None, {})


def _ctx(pre, **overrides):
  return helpers.study_context(pre, select_cfg, **{'adapter_size': 8, **overrides})


def _data(pre, n, seed, seq=12):
  return helpers.labelled_batch(pre, n, seed, seq)


_init = helpers.init_program


def _scan_lengths(jaxpr) -> list[int]:
  out = []
  for eqn in jaxpr.eqns:
    if eqn.primitive.name == 'scan':
      out.append(eqn.params['length'])
    for v in eqn.params.values():
      for x in (v if isinstance(v, (tuple, list)) else (v,)):
        if isinstance(x, (jcore.ClosedJaxpr, jcore.Jaxpr)):
          out += _scan_lengths(x.jaxpr if isinstance(x, jcore.ClosedJaxpr) else x)
  return out


# ----------------------------------------------------------------------------- structure


@pytest.mark.parametrize('method', ['finetune', 'adapter'])
def test_blocks_above_head_never_computed(method):
  """NaN in every block above the head block: nothing of them reaches params, outputs or grads;
  the forward scans cover exactly head_block + 1 blocks; logits match hidden_states + head."""
  pre = _random_pre(num_layers=5)
  head, m = 2, 2
  poisoned = dict(pre.params)
  poisoned['blocks'] = jax.tree.map(lambda p: p.at[head + 1:].set(jnp.nan), pre.params['blocks'])
  pre = pretrained_lib.Pretrained('poisoned', '', pre.config, poisoned, None, {})
  program = select.make_program(_ctx(pre), head, m, method)
  assert (program.num_blocks, program.frozen_blocks, program.train_embeddings) == (3, 1, False)
  train, frozen, arrays = _init(program, pre)
  assert all(np.isfinite(v).all() for v in {**_flat(train), **_flat(frozen)}.values())
  assert all(v.shape[0] == m for k, v in _flat(train).items() if k[0] in ('blocks', 'adapters'))
  assert all(v.shape[0] == head + 1 - m for k, v in _flat(frozen).items() if k[0] == 'blocks_frozen')

  batch = {k: jnp.asarray(v) for k, v in _data(pre, 4, 0).items()}
  fwd = lambda tr: program.apply(tr, frozen, batch, arrays, deterministic=True)
  assert sorted(_scan_lengths(jax.make_jaxpr(fwd)(train).jaxpr)) == [head + 1 - m, m]
  logits, grads = jax.jit(lambda tr: (fwd(tr), jax.grad(program.loss)(
      tr, frozen, batch, jnp.ones(4), arrays, jax.random.key(3))))(train)
  assert np.isfinite(logits).all()
  assert all(np.isfinite(v).all() for v in _flat(grads).values())
  if method == 'finetune':
    params = program_lib.merge(train, frozen)
    below = {'embeddings': params['embeddings'],
             'blocks': jax.tree.map(lambda p: p[:head + 1], poisoned['blocks'])}
    hs = jax.jit(bert.hidden_states, static_argnums=0, static_argnames='num_blocks')(
        pre.config, below, batch['input_ids'], batch['attention_mask'], batch['token_type_ids'],
                            num_blocks=head + 1)
    head_mod = program_lib.MlpHead(pre.config.hidden_size, 2, 0.1, 0.02)
    want = head_mod.apply({'params': params['head']}, hs[-1][:, 0])
    np.testing.assert_allclose(logits, want, atol=1e-5)


def test_adapter_placement_matches_hf_with_hooks(tiny_hf_dir):
  """Our adapter blocks vs HF PyTorch with x + up(relu(down(x))) hooked onto the outputs of the
  attention-output projection and the FFN output projection of the tuned blocks (before
  residual + LayerNorm), on the same weights."""
  pre = pretrained_lib.load_pretrained(str(tiny_hf_dir))     # 3 blocks, BERT or RoBERTa
  head, m = 1, 2
  program = select.make_program(_ctx(pre), head, m, 'adapter')
  train, frozen, arrays = _init(program, pre)
  # Non-trivial adapters (fresh ones are near-identity), so a misplaced one cannot hide.
  train['adapters'] = jax.tree.map(lambda p: p + 0.3 * jax.random.normal(jax.random.key(7), p.shape),
                                   train['adapters'])
  data = _data(pre, 3, 1)
  if pre.config.model_type == 'roberta':
    data['input_ids'] = np.where(data['attention_mask'] > 0, np.maximum(data['input_ids'], 3),
                                 pre.config.pad_token_id)
  features = jax.jit(lambda tr, batch: program.features(program_lib.merge(tr, frozen), batch,
                                                        arrays, deterministic=True))
  batch = {k: jnp.asarray(v) for k, v in data.items()}
  ours = features(train, batch)

  model = transformers.AutoModel.from_pretrained(str(tiny_hf_dir)).eval()
  ad = jax.tree.map(lambda a: torch.tensor(np.asarray(a)), train['adapters'])

  def hook(name, i):
    def fn(module, inputs, out):
      p = ad[name]
      down = torch.relu(out @ p['down']['kernel'][i] + p['down']['bias'][i])
      return out + down @ p['up']['kernel'][i] + p['up']['bias'][i]
    return fn

  f = head + 1 - m
  for i in range(m):
    layer = model.encoder.layer[f + i]
    layer.attention.output.dense.register_forward_hook(hook('attention_adapter', i))
    layer.output.dense.register_forward_hook(hook('output_adapter', i))
  inputs = {'input_ids': torch.tensor(data['input_ids'], dtype=torch.long),
            'attention_mask': torch.tensor(data['attention_mask'], dtype=torch.long)}
  if pre.config.model_type == 'bert':
    inputs['token_type_ids'] = torch.tensor(data['token_type_ids'], dtype=torch.long)
  with torch.no_grad():
    ref = model(**inputs, output_hidden_states=True).hidden_states[head + 1].numpy()
  mask = data['attention_mask'][..., None] > 0
  np.testing.assert_allclose(np.where(mask, ours, 0), np.where(mask, ref, 0), atol=1e-4)
  # The adapters matter: without them the output differs.
  plain = dict(train, adapters=jax.tree.map(jnp.zeros_like, train['adapters']))
  bare = features(plain, batch)
  assert np.abs(np.where(mask, bare - ref, 0)).max() > 1e-2


def _block_outputs(style, adapters, deterministic):
  """One post-norm block with adapters of `style` on a random (2, 5, 32) input, dropout 0.5."""
  from jaxtransfer.models import blocks
  config = model_config.EncoderConfig.from_hf(dict(_tiny_bert_hf(), hidden_dropout_prob=0.5))
  module = blocks.Block(config, adapter_size=4, adapter_style=style)
  x = jax.random.normal(jax.random.key(0), (2, 5, config.hidden_size))
  params = module.init(jax.random.key(1), x, jnp.zeros((2, 1, 1, 5)))['params']
  params = {**params, **adapters(params)}
  return module.apply({'params': params}, x, jnp.zeros((2, 1, 1, 5)), deterministic,
                      rngs={'dropout': jax.random.key(2)})


def _tiny_bert_hf():
  return dict(model_type='bert', vocab_size=50, hidden_size=32, num_hidden_layers=2,
              num_attention_heads=4, intermediate_size=64, max_position_embeddings=16)


def test_xie_adapter_style_moves_the_attention_adapter_before_the_dropout():
  """adapter_style=xie (the authors' modeling_roberta.py): the same function as Houlsby's placement
  with dropout off; in training the attention output's dropout mask is the same one, drawn after
  the adapter instead of before, and each adapter drops its own output."""
  zero = lambda p: {n: jax.tree.map(jnp.zeros_like, p[n])
                    for n in ('attention_adapter', 'output_adapter')}

  def biased(p):  # adapters that add a constant: the placement decides what the dropout sees
    out = zero(p)
    for n in out:
      out[n]['up']['bias'] = jnp.full_like(out[n]['up']['bias'], 0.7)
    return out

  random = lambda p: {n: jax.tree.map(lambda a: a + 0.3 * jax.random.normal(jax.random.key(3),
                                                                             a.shape), p[n])
                      for n in ('attention_adapter', 'output_adapter')}
  np.testing.assert_allclose(_block_outputs('xie', random, True),
                             _block_outputs('houlsby', random, True), atol=1e-6)
  # Identity adapters: the two styles draw and apply the very same sublayer dropout masks.
  np.testing.assert_allclose(_block_outputs('xie', zero, False),
                             _block_outputs('houlsby', zero, False), atol=1e-6)
  assert np.abs(_block_outputs('xie', biased, False)
                - _block_outputs('houlsby', biased, False)).max() > 1e-2


def test_adapter_own_dropout_drops_its_output_only():
  from jaxtransfer.models import blocks
  config = model_config.EncoderConfig.from_hf(_tiny_bert_hf())
  adapter = blocks.Adapter(config, 4, dropout=0.5)
  x = jax.random.normal(jax.random.key(0), (3, 7, config.hidden_size))
  params = adapter.init(jax.random.key(1), x)['params']
  h = adapter.apply({'params': params}, x, True) - x
  dropped = adapter.apply({'params': params}, x, False, rngs={'dropout': jax.random.key(2)}) - x
  kept = np.isclose(dropped, 2 * h, atol=1e-6)
  assert np.all(kept | np.isclose(dropped, 0, atol=1e-7))
  assert 0.35 < kept.mean() < 0.65


def test_select_config_adapter_style_choices():
  assert select_cfg.get_config().adapter_style == 'houlsby'
  assert select_cfg.get_config('authors').adapter_style == 'xie'
  pre = type('Pre', (), {'num_layers': 6, 'params': {'blocks': {'q': {'bias': 0}}}})()
  with pytest.raises(UserError, match="adapter_style='before'.*--config.adapter_style"):
    select.Select().validate(_ctx(pre, adapter_style='before'))


def _engine(pre, ctx, tmp_path):
  """A 3-step engine on random data that captures every finished trial's params."""
  spec = trials_lib.RunSpec(experiment='select', model='random', task=ctx.task,
                            workdir=str(tmp_path), batch_size=8, learning_rate=1e-2,
                            num_train_steps=3, eval_batch_size=16, log_every=3)
  hooks = helpers.CaptureHooks()
  eng = engine_lib.Engine(spec, pre.params, _data(pre, 32, 0), {'': _data(pre, 16, 1)},
                          hooks=hooks)
  return eng, hooks


def test_engine_trains_only_adapters_layernorms_and_head(tmp_path):
  """Real engine steps in adapter mode, against a twin trial with learning rate 0 (same seed, so
  the same fresh adapters and head): embeddings, lower blocks and the tuned blocks' weights are
  bit-identical to the pretrained ones; adapters, the tuned blocks' LayerNorms and the head moved.
  (Fine-tuning mode freezes the same prefix: tests/test_freeze.py.)"""
  pre = _random_pre(num_layers=4)
  ctx = _ctx(pre)
  head, m = 2, 2
  program = select.make_program(ctx, head, m, 'adapter')
  eng, hooks = _engine(pre, ctx, tmp_path)
  trials = [trials_lib.Trial(1, 0, {'lr': lr}, program, learning_rate=lr) for lr in (1e-2, 0.0)]
  assert [r['status'] for r in eng.run(trials)] == ['ok', 'ok']
  got = {t.setting['lr']: p for t, p in hooks.got.values()}
  (train, frozen), (train0, _) = (got[1e-2].train, got[1e-2].frozen), (got[0.0].train, None)
  f = head + 1 - m
  pre_blocks = _flat(pre.params['blocks'])
  want_frozen = {('embeddings',) + k: v for k, v in _flat(pre.params['embeddings']).items()}
  want_frozen.update({('blocks_frozen',) + k: v[:f] for k, v in pre_blocks.items()})
  want_frozen.update({('blocks',) + k: v[f:head + 1] for k, v in pre_blocks.items()
                      if not k[0].endswith('_ln')})
  flat_frozen = _flat(frozen)
  assert set(flat_frozen) == set(want_frozen)
  for k, v in want_frozen.items():
    assert np.array_equal(flat_frozen[k], v), k
  flat_train, flat_train0 = _flat(train), _flat(train0)
  assert {k[0] for k in flat_train} == {'adapters', 'blocks', 'head'}
  assert all(k[1].endswith('_ln') for k in flat_train if k[0] == 'blocks')
  for k, v in flat_train.items():
    assert not np.allclose(v, flat_train0[k]), k                   # every trained leaf moved
  for k, v in flat_train0.items():
    if k[0] == 'blocks':
      assert np.array_equal(v, pre_blocks[k[1:]][f:head + 1]), k   # lr 0: still pretrained


def test_tuned_block_range_under_a_higher_head(tmp_path):
  """tuned_blocks=0-1 under a head at block 2 (the authors' scripts: head 23, tuned 16-17): blocks
  0-1 train through the frozen block 2 (the gradient passes it), which stays bit-identical, as do
  the embeddings; a top-2 baseline and full fine-tuning come with it."""
  pre = _random_pre(num_layers=4)
  ctx = _ctx(pre, tuned_blocks='0-1', method=['finetune'])
  settings = select.Select().settings(ctx, 2, 'fixed')
  assert [(s['placement'], s['num_tuned_blocks'], s.get('tuned_blocks')) for s, *_ in settings] == [
      ('fixed', 2, '0-1'), ('top', 2, None), ('full', 4, None)]
  setting, program, lr, arrays = settings[0]
  assert (program.frozen_blocks, program.num_blocks) == (0, 3)
  assert arrays['block_lr'].tolist() == [1, 1, 0, 0]
  eng, hooks = _engine(pre, ctx, tmp_path)
  trial = trials_lib.Trial(1, 0, setting, program, learning_rate=lr, arrays=arrays)
  assert [r['status'] for r in eng.run([trial])] == ['ok']
  (_, got), = hooks.got.values()
  trained, pre_blocks = _flat(got.train['blocks']), _flat(pre.params['blocks'])
  for k, v in trained.items():
    assert np.array_equal(v[2], pre_blocks[k][2]), k            # computed, never updated
    if k != ('key', 'bias'):  # softmax ignores a key bias: its gradient is 0 (round-off only)
      assert not np.allclose(v[:2], pre_blocks[k][:2]), k       # trained through block 2
  for k, v in _flat(got.frozen['embeddings']).items():
    assert np.array_equal(v, _flat(pre.params['embeddings'])[k]), k


@pytest.mark.parametrize('value,err', [('3-1', 'block range'), ('x', 'block range'),
                                       ('0-9', 'block range')])
def test_bad_tuned_blocks(value, err):
  with pytest.raises(UserError, match=err):
    select.parse_tuned_blocks(value, 4)


def test_tuned_blocks_above_the_head_or_with_adapters_is_a_user_error():
  pre = _random_pre(num_layers=4)
  with pytest.raises(UserError, match='above the head'):
    select.Select().settings(_ctx(pre, tuned_blocks='1-3', method=['finetune']), 2, 'fixed')
  ctx = _ctx(pre, tuned_blocks='0-1', method=['adapter'])
  ctx.config.head_block = '2'
  with pytest.raises(UserError, match='adapter'):
    select.Select().validate(ctx)


def test_train_flops_fraction_matches_the_differentiated_graph():
  """train_flops_fraction (adapters included) against the matmul FLOPs JAX actually runs."""
  pre = _random_pre(num_layers=4, hidden=64)
  ctx = _ctx(pre, adapter_size=16, max_seq_length=32)  # attention is counted at the rows' length
  batch = {k: jnp.asarray(v) for k, v in _data(pre, 4, 0, seq=32).items()}
  cases = {'full_ft': (3, 4, 'finetune', True), 'full_adapter': (3, 4, 'adapter', True),
           'h2m2_ft': (2, 2, 'finetune', False), 'h2m2_adapter': (2, 2, 'adapter', False)}
  measured = {}
  for name, (head, m, method, full) in cases.items():
    program = select.make_program(ctx, head, m, method, full=full)
    train, frozen, arrays = _init(program, pre)
    jaxpr = jax.make_jaxpr(jax.value_and_grad(program.loss))(train, frozen, batch, jnp.ones(4),
                                                             arrays, jax.random.key(2))
    measured[name] = (matmul_flops(jaxpr.jaxpr), program.train_flops_fraction())
  assert measured['full_ft'][1] == 1.0
  for name, (flops, fraction) in measured.items():
    # The fraction leaves out the head: a few percent at S=32, H=64.
    assert flops / measured['full_ft'][0] == pytest.approx(fraction, rel=0.05), (name, flops)
  assert measured['h2m2_adapter'][1] < measured['h2m2_ft'][1] < 1


# ----------------------------------------------------------------------------- selection, config


def test_choose_head_block():
  nu = np.array([9.0, 3.0, 1.05, 2.0, 1.0])        # embeddings, blocks 0..3
  assert select.choose_head_block(nu) == 3
  assert select.choose_head_block(nu, tolerance=0.1) == 1
  assert select.choose_head_block(np.array([0.1, 5.0, 4.0])) == 1   # never the embeddings


@pytest.mark.parametrize('value,err', [('7', 'between 0 and 5'), ('-1', 'between 0 and 5'),
                                       ('top', "'auto' or a block index")])
def test_bad_head_block(value, err):
  with pytest.raises(UserError, match=err):
    select.parse_head_block(value, 6)


def test_too_many_tuned_blocks_is_a_user_error():
  pre = _random_pre(num_layers=4)
  ctx = _ctx(pre, num_tuned_blocks=[3])
  with pytest.raises(UserError, match='more than the 2 blocks'):
    select.Select().settings(ctx, 1, 'fixed')


def test_regression_task_is_a_user_error(tmp_path):
  config = select_cfg.get_config('demo')
  config.task = 'stsb'
  with pytest.raises(UserError, match='regression'):
    train_lib.train_and_evaluate(config, str(tmp_path))


def test_settings_and_baselines():
  pre = _random_pre(num_layers=4)
  ctx = _ctx(pre, num_tuned_blocks=[1, 2])
  got = [(s['placement'], s['head_block'], s['num_tuned_blocks'], s['method'], lr)
         for s, _, lr in select.Select().settings(ctx, 2, 'auto')]
  ft, ad = ctx.config.learning_rate, ctx.config.adapter_learning_rate
  assert got == [('auto', 2, 1, 'finetune', ft), ('auto', 2, 1, 'adapter', ad),
                 ('auto', 2, 2, 'finetune', ft), ('auto', 2, 2, 'adapter', ad),
                 ('top', 3, 1, 'finetune', ft), ('top', 3, 1, 'adapter', ad),
                 ('top', 3, 2, 'finetune', ft), ('top', 3, 2, 'adapter', ad),
                 ('full', 3, 4, 'finetune', ft), ('full', 3, 4, 'adapter', ad)]
  # A top head block makes the top-m baselines the same trials: they are not repeated.
  assert [s['placement'] for s, _, _ in select.Select().settings(ctx, 3, 'auto')].count('top') == 0
  full_ft = select.make_program(ctx, 3, 4, 'finetune', full=True)
  assert (full_ft.frozen_blocks, full_ft.train_embeddings, full_ft.block_params) == (0, True, 'all')
  full_ad = select.make_program(ctx, 3, 4, 'adapter', full=True)
  assert (full_ad.frozen_blocks, full_ad.train_embeddings, full_ad.block_params,
          full_ad.adapter_size) == (0, False, 'layernorm', 8)


def test_step_times_measured_side_by_side_follow_compute():
  """Every setting timed in the same rounds: the cheapest (head on block 0, 1 block tuned) and
  the dearest (all 4 blocks and the embeddings) come out in the order of their FLOPs."""
  pre = _random_pre(num_layers=4, hidden=128)
  ctx = _ctx(pre)
  cheap = select.make_program(ctx, 0, 1, 'finetune')
  full = select.make_program(ctx, 3, 4, 'finetune', full=True)
  batch = _data(pre, 16, 0, seq=48)
  cfg = optim.OptimConfig.from_config(ctx.config)
  t_cheap, t_full, t_again = timing.step_times([cheap, full, cheap], pre.params, batch, cfg,
                                               rounds=2, repeats=3)
  assert min(t_cheap, t_full, t_again) > 0
  assert t_full > 1.5 * max(t_cheap, t_again)


# ----------------------------------------------------------------------------- end to end


@pytest.fixture(scope='module')
def tiny_with_tokenizer(tmp_path_factory):
  """A 3-block random BERT with MiniLM's tokenizer files, so real text encodes."""
  return helpers.make_tiny_model_dir(tmp_path_factory.mktemp('tiny-tok'), num_layers=3)


def test_demo_config_end_to_end(tiny_with_tokenizer, tmp_path):
  config = select_cfg.get_config('demo')
  config.model = str(tiny_with_tokenizer)
  config.cache_dir = str(tmp_path / 'cache')
  config.num_train_steps = 2
  config.num_tuned_blocks = [1]
  config.eval_max_examples = 16
  config.eval_batch_size = 16
  config.seeds = [1]
  config.adapter_size = 8          # the demo's 256 is larger than this model (H = 32)
  config.baselines = False         # their settings: test_settings_and_baselines
  config.method = ['adapter']       # one compiled program keeps the test short
  config.measure_step_time = True  # off in the demo (a compile per setting); checked here
  work = tmp_path / 'work'
  records = train_lib.train_and_evaluate(config, str(work))

  rows = (work / 'variability.csv').read_text().strip().splitlines()
  assert rows[0] == 'task,model,block,nu' and len(rows) == 1 + 4
  nu = np.array([float(r.split(',')[-1]) for r in rows[1:]])
  head = int(np.argmin(nu[1:]))
  assert [(r['setting']['placement'], r['setting']['method'], r['seed']) for r in records] == [
      ('auto', 'adapter', 1)]
  for r in records:
    assert r['status'] == 'ok', r
    m = r['metrics']
    assert m['step_time_s'] > 0 and 0 < m['train_flops_fraction'] <= 1
    if r['setting']['placement'] == 'auto':
      assert r['setting']['head_block'] == head and m['train_flops_fraction'] < 1
  assert records_lib.read_records(work / 'trials.jsonl') == records
  assert {p.name for p in (work / 'plots').iterdir()} == {'variability.png', 'select.png'}
  assert 'step_time_s' in (work / 'summary.csv').read_text()
  # A re-run reuses variability.csv and finishes no new trial.
  before = (work / 'variability.csv').stat().st_mtime_ns
  assert train_lib.train_and_evaluate(config, str(work)) == records
  assert (work / 'variability.csv').stat().st_mtime_ns == before


def test_authors_preset_is_their_optimizer():
  """configs/select.py:authors: transformers.AdamW's eps 1e-6, no clipping, 3e-4 (their scripts)."""
  cfg = optim.OptimConfig.from_config(select_cfg.get_config('authors'))
  assert (cfg.adam_eps, cfg.max_grad_norm) == (1e-6, 0.0)
  assert select_cfg.get_config('authors').learning_rate == 3e-4
  assert select_cfg.get_config('authors').head_init == 'torch'
  grads = {'w': jnp.full((3,), 1e3)}
  tx = optim.make_tx(cfg, 1.0, 10, {'w': True}, {'w': jnp.ones(())})
  default = optim.OptimConfig()
  # Without clipping the first moment holds the raw gradient; with the default clip it is scaled.
  state = tx.update(optim.clip(grads, optax.tree.norm(grads), cfg.max_grad_norm), tx.init(grads),
                    grads)[1]
  clipped = optim.clip(grads, optax.tree.norm(grads), default.max_grad_norm)
  state_clipped = tx.update(clipped, tx.init(grads), grads)[1]
  def moments(st):  # the largest entry of Adam's moment vectors (the (3,) leaves)
    return max(float(jnp.max(x)) for x in jax.tree.leaves(st) if getattr(x, 'shape', ()) == (3,))

  assert moments(state) > 10 * moments(state_clipped)


def test_torch_head_init_is_nn_linears_default():
  """head_init=torch: kernels and biases U(-1/sqrt(fan_in), 1/sqrt(fan_in)), as torch.nn.Linear
  (Kolmogorov-Smirnov against that uniform and against torch's own draws); normal: std 0.02, 0."""
  import scipy.stats
  from jaxtransfer.models import heads
  H = 384
  params = heads.MlpHead(H, 2, 0.1, 0.02, torch_init=True).init(
      jax.random.key(0), jnp.zeros((1, H)))['params']
  kernel, bias = np.asarray(params['dense']['kernel']).ravel(), np.asarray(params['dense']['bias'])
  b = 1 / np.sqrt(H)
  assert scipy.stats.kstest(kernel, scipy.stats.uniform(-b, 2 * b).cdf).pvalue > 1e-3
  torch_w = torch.nn.Linear(H, H).weight.detach().numpy().ravel()
  assert scipy.stats.ks_2samp(kernel, torch_w).pvalue > 1e-3
  assert np.abs(bias).max() <= b and np.abs(bias).min() > 0 and bias.std() > 0.5 * b / np.sqrt(3)
  out = np.asarray(params['out_proj']['kernel'])
  assert np.abs(out).max() <= b and out.std() > 0.9 * b / np.sqrt(3)   # fan_in = H
  normal = heads.MlpHead(H, 2, 0.1, 0.02).init(jax.random.key(0), jnp.zeros((1, H)))['params']
  assert not np.asarray(normal['dense']['bias']).any()
  np.testing.assert_allclose(np.asarray(normal['dense']['kernel']).std(), 0.02, rtol=0.02)


def test_head_position_sweep_one_setting_per_block():
  """head_block='all' with m = 2: one fixed-head setting per block, m capped at the blocks up to
  the head (block 0 alone under a head at 0), each head its own program; the baselines once."""
  pre = _random_pre(num_layers=4)
  ctx = _ctx(pre, head_block='all', method=['finetune'], baselines=False, seeds=(1, 2),
             train_sizes=(0,))
  trials = select.Select().trials(ctx)
  got = [(t.setting['placement'], t.setting['head_block'], t.setting['num_tuned_blocks'], t.seed)
         for t in trials]
  assert got == [('fixed', h, min(2, h + 1), s) for h in range(4) for s in (1, 2)]
  assert len({t.program for t in trials}) == 4 and len({t.trial_id for t in trials}) == 8
  assert [p.num_blocks for p in dict.fromkeys(t.program for t in trials)] == [1, 2, 3, 4]
  ctx = _ctx(pre, head_block='1,3', method=['finetune'], baselines=True, seeds=(1,),
             train_sizes=(0,))
  got = [(t.setting['placement'], t.setting['head_block']) for t in select.Select().trials(ctx)]
  assert got == [('fixed', 1), ('top', 3), ('full', 3), ('fixed', 3)]
  assert select.parse_head_blocks('auto', 4) is None
  assert select.parse_head_blocks('2', 4) == [2]
  for bad in ('auto,1', '1,9', ''):
    with pytest.raises(UserError, match='head_block'):
      select.parse_head_blocks(bad, 4)
