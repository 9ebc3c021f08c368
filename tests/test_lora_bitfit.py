"""LoRA (Hu et al. 2021) and BitFit (Ben Zaken et al. 2022) as tuning methods: LoRA starts at the
pretrained model and is the dense update it represents, BitFit moves biases only, the merged LoRA
export is a transformers model with the trial's hidden states, and the reported parameter counts
match counts made here from the pretrained tree."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers

import helpers
from configs import freeze as freeze_cfg
from configs import select as select_cfg
from jaxtransfer.data import glue as data_lib
from jaxtransfer.engine import trials as trials_lib
from jaxtransfer.models import config as model_config
from jaxtransfer.engine import engine as engine_lib
from jaxtransfer.core import program as program_lib
from jaxtransfer.runtime import records as records_lib
from jaxtransfer import train as train_lib
from jaxtransfer.core import storage
from jaxtransfer.errors import UserError
from jaxtransfer.models import lora as lora_lib
from jaxtransfer.studies import base
from jaxtransfer.studies.lee2019 import freeze
from jaxtransfer.studies.xie2022 import select
from jaxtransfer.models import bert
from jaxtransfer.models import convert
from jaxtransfer.models import pretrained as pretrained_lib
from helpers import matmul_flops

ALL = ('query', 'key', 'value', 'attention_output', 'intermediate', 'output')


_flat = helpers.flat_params


_same_bits = helpers.same_bits


def _random_pre(num_layers=4, hidden=32, intermediate=64, seed=0):
  config = model_config.EncoderConfig(vocab_size=100, hidden_size=hidden, num_layers=num_layers,
                              num_heads=4, intermediate_size=intermediate, max_position_embeddings=64)
  params = bert.init_params(config, jax.random.key(seed))
  # Non-zero biases and LayerNorms, so a bias or LayerNorm mapped wrongly cannot hide behind 0/1.
  params = jax.tree.map(lambda p: p + 0.05 * jax.random.normal(jax.random.key(9), p.shape), params)
  return pretrained_lib.Pretrained('random', '', config, params, None, {})


def _ctx(pre, cfg=select_cfg, **overrides):
  return helpers.study_context(pre, cfg, **{'adapter_size': 4, **overrides})


def _data(pre, n, seed, seq=12):
  return helpers.labelled_batch(pre, n, seed, seq)


_init = helpers.init_program


def _random_factors(train, seed=7):
  """Non-zero LoRA factors (a fresh B is zero), so that a misplaced update cannot hide."""
  keys = iter(jax.random.split(jax.random.key(seed), 64))
  return dict(train, lora=jax.tree.map(lambda p: 0.2 * jax.random.normal(next(keys), p.shape),
                                       train['lora']))


def _features(program, train, frozen, arrays, batch):
  params = program_lib.merge(train, frozen)
  return jax.jit(lambda p: program.features(p, batch, arrays, deterministic=True))(params)


# ----------------------------------------------------------------------------- LoRA forward


@pytest.mark.parametrize('targets', [('query', 'value'), ('key',), ('intermediate', 'output'), ALL])
@pytest.mark.parametrize('head,m', [(3, 4), (2, 2)])
def test_lora_with_zero_b_is_the_pretrained_model(targets, head, m):
  """Before any step (B = 0) a LoRA trial's logits are those of method=finetune, bit for bit, on
  the same blocks with the same seed (so the same fresh head). With attention_output a target, the
  attention context gets a second reader and XLA fuses the matmul before it differently: 1 ulp."""
  pre = _random_pre()
  ctx = _ctx(pre, lora_targets=targets)
  batch = {k: jnp.asarray(v) for k, v in _data(pre, 4, 0).items()}
  logits = {}
  for method in ('finetune', 'lora'):
    program = select.make_program(ctx, head, m, method)
    train, frozen, arrays = _init(program, pre)
    if method == 'lora':
      assert {k[0] for k in _flat(train)} == {'lora', 'head'}   # select's head: dense-tanh-linear
      assert sorted(train['lora']) == sorted(targets)
      assert all(not v.any() for k, v in _flat(train).items() if k[-1] == 'b')
      assert all(v.std() > 0 for k, v in _flat(train).items() if k[-1] == 'a')
    logits[method] = np.asarray(jax.jit(program.apply)(train, frozen, batch, arrays))
  if 'attention_output' in targets:
    np.testing.assert_allclose(logits['lora'], logits['finetune'], rtol=1e-6, atol=1e-8)
  else:
    np.testing.assert_array_equal(logits['lora'], logits['finetune'])


@pytest.mark.parametrize('targets', [('query', 'value'), ALL])
def test_lora_equals_the_dense_update_it_represents(targets):
  """The forward with factors (A, B) equals the forward of the plain blocks with the kernels
  W + (alpha / r)·A·B, merged here in numpy block by block (not with lora.merge)."""
  pre = _random_pre()
  ctx = _ctx(pre, lora_targets=targets, lora_rank=4, lora_alpha=6.0)
  head, m = 3, 3
  program = select.make_program(ctx, head, m, 'lora')
  train, frozen, arrays = _init(program, pre)
  train = _random_factors(train)
  batch = {k: jnp.asarray(v) for k, v in _data(pre, 4, 1).items()}
  ours = _features(program, train, frozen, arrays, batch)

  f = head + 1 - m
  blocks = jax.tree.map(np.array, pre.params['blocks'])
  for name, fac in jax.tree.map(np.asarray, train['lora']).items():
    for i in range(m):
      blocks[name]['kernel'][f + i] += (6.0 / 4) * fac['a'][i] @ fac['b'][i]
  dense = {**pre.params, 'blocks': blocks}
  want = jax.jit(bert.hidden_states, static_argnums=0)(
      pre.config, dense, batch['input_ids'], batch['attention_mask'], batch['token_type_ids'])[-1]
  np.testing.assert_allclose(ours, want, atol=2e-5)
  # And the factors matter: with B = 0 the output is the pretrained one.
  assert np.abs(ours - _features(program, dict(train, lora=jax.tree.map(
      jnp.zeros_like, train['lora'])), frozen, arrays, batch)).max() > 1e-3


def test_lora_dropout_only_in_training():
  pre = _random_pre()
  batch = {k: jnp.asarray(v) for k, v in _data(pre, 4, 2).items()}
  out = {}
  for rate in (0.0, 0.5):
    program = select.make_program(_ctx(pre, lora_dropout=rate), 3, 4, 'lora')
    train, frozen, arrays = _init(program, pre)
    train = _random_factors(train)
    out[rate] = _features(program, train, frozen, arrays, batch)
    params = program_lib.merge(train, frozen)
    out[rate, 'train'] = program.features(params, batch, arrays, deterministic=False,
                                          rng=jax.random.key(3))
  np.testing.assert_array_equal(out[0.5], out[0.0])
  assert np.abs(out[0.5, 'train'] - out[0.0, 'train']).max() > 1e-3


def test_train_flops_fraction_counts_lora_and_bitfit():
  """train_flops_fraction against the matmul FLOPs JAX actually runs: LoRA adds only its low-rank
  matmuls (no weight gradient of a frozen kernel is ever formed), BitFit only activation gradients."""
  pre = _random_pre(hidden=64, intermediate=256)
  ctx = _ctx(pre, lora_targets=('query', 'value', 'intermediate'), max_seq_length=16)
  batch = {k: jnp.asarray(v) for k, v in _data(pre, 4, 0, seq=16).items()}
  measured = {}
  for name, (head, m, method, full) in {'full_ft': (3, 4, 'finetune', True),
                                        'full_lora': (3, 4, 'lora', True),
                                        'full_bitfit': (3, 4, 'bitfit', True),
                                        'h2m2_lora': (2, 2, 'lora', False)}.items():
    program = select.make_program(ctx, head, m, method, full=full)
    train, frozen, arrays = _init(program, pre)
    jaxpr = jax.make_jaxpr(jax.value_and_grad(program.loss))(train, frozen, batch, jnp.ones(4),
                                                             arrays, jax.random.key(2))
    measured[name] = (matmul_flops(jaxpr.jaxpr), program.train_flops_fraction())
  for name, (flops, fraction) in measured.items():
    # The fraction leaves out the head: a few percent at S=16, H=64.
    assert flops / measured['full_ft'][0] == pytest.approx(fraction, rel=0.05), (name, flops)
  # BitFit: forward + activation gradients, 2/3 of full fine-tuning but for the attention scores,
  # whose backward pass is twice their forward (both inputs are activations).
  assert measured['full_bitfit'][1] == pytest.approx(2 / 3, abs=0.02)
  assert 2 / 3 < measured['full_lora'][1] < 1


# ----------------------------------------------------------------------------- training


def _engine_run(pre, programs, tmp_path, lr=1e-2, steps=3):
  """Real engine steps for {name: program}; each trial's final (train, frozen) params."""
  spec = trials_lib.RunSpec(experiment='select', model='random', task=data_lib.get_task('sst2'),
                            workdir=str(tmp_path), batch_size=8, learning_rate=lr,
                            num_train_steps=steps, eval_batch_size=16, log_every=steps)
  hooks = helpers.CaptureHooks()
  eng = engine_lib.Engine(spec, pre.params, _data(pre, 32, 0), {'': _data(pre, 16, 1)},
                          hooks=hooks)
  trials = [trials_lib.Trial(1, 0, {'name': n}, p) for n, p in programs.items()]
  assert [r['status'] for r in eng.run(trials)] == ['ok'] * len(trials)
  return {t.setting['name']: (p.train, p.frozen) for t, p in hooks.got.values()}


def test_bitfit_changes_nothing_but_biases(tmp_path):
  """Full BitFit and BitFit on the top 2 blocks, after real steps: every non-bias parameter is
  bit-identical to the pretrained one (the pooler's kernel included); the tuned biases moved."""
  pre = _random_pre()
  ctx = _ctx(pre, head='pooler')
  programs = {'full': select.make_program(ctx, 3, 4, 'bitfit', full=True),
              'top2': select.make_program(ctx, 3, 2, 'bitfit')}
  got = _engine_run(pre, programs, tmp_path)
  want = _flat({k: v for k, v in pre.params.items()})
  for name, program in programs.items():
    train, frozen = got[name]
    flat_train = _flat(train)
    assert all(k[-1] == 'bias' for k in flat_train if k[0] != 'head'), sorted(flat_train)
    final = _flat(program.export_params(train, frozen, {}))
    assert set(final) == set(want)
    lowest = 0 if name == 'full' else 2
    for k, before in want.items():
      after = final[k]
      if k[-1] != 'bias':
        assert _same_bits(after, before), (name, k)
      elif k[0] == 'blocks':
        moved = [not _same_bits(after[i], before[i]) for i in range(4)]
        assert not any(moved[:lowest]), (name, k, moved)
        # (a key bias has no gradient but rounding: softmax ignores it, so it may not move)
        assert all(moved[lowest:]) or k[1] == 'key', (name, k, moved)
      else:  # the embeddings' LayerNorm bias trains with full BitFit only; the pooler's always
        assert _same_bits(after, before) == (k[0] == 'embeddings' and name != 'full'), (name, k)


def test_lora_trains_only_its_factors_and_the_head(tmp_path):
  pre = _random_pre()
  program = select.make_program(_ctx(pre, head='pooler'), 3, 4, 'lora', full=True)
  (train, frozen), = _engine_run(pre, {'lora': program}, tmp_path).values()
  assert {k[0] for k in _flat(train)} == {'lora', 'pooler', 'head'}
  for k, v in _flat({'embeddings': pre.params['embeddings'],
                     'blocks': pre.params['blocks']}).items():
    assert _same_bits(_flat(frozen)[k], v), k
  assert all(np.abs(v).max() > 0 for k, v in _flat(train['lora']).items() if k[-1] == 'b')


# ----------------------------------------------------------------------------- export


def test_lora_export_loads_in_transformers_with_the_trials_hidden_states(tiny_hf_dir, tmp_path):
  """The merged export of a LoRA trial on blocks 1..2, read by transformers.AutoModel, gives the
  trial's last hidden state; its state dict differs from the checkpoint's only in the LoRA
  targets' weights of the tuned blocks (and the pooler, which trains as part of the head)."""
  pre = pretrained_lib.load_pretrained(str(tiny_hf_dir), with_tokenizer=False)  # 3 blocks
  program = select.make_program(_ctx(pre, head='pooler'), 2, 2, 'lora')
  train, frozen, arrays = _init(program, pre)
  train = _random_factors(train)
  train['pooler'] = jax.tree.map(lambda p: p + 0.1, train['pooler'])
  data = _data(pre, 3, 4)
  ours = _features(program, train, frozen, arrays, {k: jnp.asarray(v) for k, v in data.items()})
  out = tmp_path / 'export'
  base.export_trial(program, jax.device_get(train), jax.device_get(frozen), arrays, str(out),
                    hf_config=pre.hf_config)

  model = transformers.AutoModel.from_pretrained(str(out)).eval()
  inputs = {'input_ids': torch.tensor(data['input_ids'], dtype=torch.long),
            'attention_mask': torch.tensor(data['attention_mask'], dtype=torch.long)}
  if pre.config.model_type == 'bert':
    inputs['token_type_ids'] = torch.tensor(data['token_type_ids'], dtype=torch.long)
  with torch.no_grad():
    ref = model(**inputs).last_hidden_state.numpy()
  mask = data['attention_mask'][..., None] > 0
  np.testing.assert_allclose(np.where(mask, ours, 0), np.where(mask, ref, 0), atol=1e-4)

  exported = {k: v.numpy() for k, v in model.state_dict().items()}
  original = transformers.AutoModel.from_pretrained(str(tiny_hf_dir)).state_dict()
  changed = {k for k, v in original.items() if not np.array_equal(v.numpy(), exported[k])}
  assert changed == {f'encoder.layer.{i}.attention.self.{t}.weight'
                     for i in (1, 2) for t in ('query', 'value')} | {'pooler.dense.weight',
                                                                     'pooler.dense.bias'}


@pytest.mark.parametrize('name', ['distilbert', 'electra', 'deberta-v2', 'deberta-v3', 'modernbert'])
def test_lora_export_of_every_family(name, tmp_path, tmp_path_factory):
  """LoRA on all six matrices of every block, merged and exported: transformers' own model of
  each family gives the trial's last hidden state (DeBERTa-v3's shared key and query projections
  of the relative positions, ModernBERT's fused Wqkv and GeGLU Wi included)."""
  import test_families
  model_dir = test_families.family_dir(name, tmp_path_factory)
  pre = pretrained_lib.load_pretrained(str(model_dir), with_tokenizer=False)
  cfg = pre.config
  program = program_lib.Program(encoder=cfg, num_labels=2, num_blocks=cfg.num_layers,
                                train_embeddings=False, block_params='none',
                                lora=lora_lib.Lora(4, 8.0, ALL))
  train, frozen, arrays = _init(program, pre)
  train = _random_factors(train)
  ids, mask, types = test_families._batch(cfg, 2)
  ours = _features(program, train, frozen, arrays,
                   {'input_ids': ids, 'attention_mask': mask, 'token_type_ids': types})
  base.export_trial(program, jax.device_get(train), jax.device_get(frozen), arrays, str(tmp_path),
                    hf_config=pre.hf_config)
  ref = test_families._torch_hidden(tmp_path, ids, mask, types)[-1]
  assert test_families._max_error(ours[None], ref[None], mask).max() < 1e-4
  assert test_families._max_error(ours[None], test_families._torch_hidden(
      model_dir, ids, mask, types)[-1][None], mask).max() > 1e-2  # the update matters


# ----------------------------------------------------------------------------- reported counts


def _count_bias(tree) -> int:
  return sum(v.size for k, v in _flat(tree).items() if k[-1] == 'bias')


@pytest.mark.parametrize('method,head,m,full', [
    ('finetune', 3, 2, False), ('finetune', 3, 4, True), ('adapter', 2, 2, False),
    ('lora', 3, 4, True), ('lora', 2, 1, False), ('bitfit', 3, 4, True), ('bitfit', 3, 2, False)])
def test_trainable_params_fraction_matches_an_independent_count(method, head, m, full):
  """Counted here from the pretrained tree and the method's definition; the denominator is a full
  fine-tune of all 4 blocks with the same head (the pretrained pooler + a 2-class classifier)."""
  pre = _random_pre()
  H, I, r, a, C, L = 32, 64, 8, 4, 2, 4
  ctx = _ctx(pre, head='pooler', lora_targets=('query,value',))  # as --config.lora_targets=query,value
  size = lambda tree: sum(v.size for v in _flat(tree).values())
  pooler, classifier = H * H + H, H * C + C
  per_block = size(pre.params['blocks']) // L
  total = size(pre.params['embeddings']) + L * per_block + pooler + classifier
  if method == 'finetune':
    trainable = m * per_block + pooler + classifier + (size(pre.params['embeddings']) if full else 0)
  elif method == 'adapter':
    trainable = m * (2 * (H * a + a + a * H + H) + 4 * H) + pooler + classifier
  elif method == 'lora':
    trainable = m * 2 * (H * r + r * H) + pooler + classifier
  else:
    trainable = (m * _count_bias(pre.params['blocks']) // L + H + classifier
                 + (_count_bias(pre.params['embeddings']) if full else 0))
  assert per_block == 4 * (H * H + H) + (H * I + I) + (I * H + H) + 2 * 2 * H
  got = storage.param_metrics(select.make_program(ctx, head, m, method, full=full), pre.params)
  assert got == {'trainable_params_fraction': pytest.approx(trainable / total),
                 'task_state_bytes': 4.0 * trainable, 'full_copy_bytes': 4.0 * total}


@pytest.mark.parametrize('method', ['finetune', 'lora', 'bitfit'])
def test_freeze_style_sweep_with_each_method(method):
  """configs/freeze.py's `method`: the top k blocks train by it, at its learning rate, and only a
  method other than the paper's names itself in the setting (old trial ids stay)."""
  pre = _random_pre()
  ctx = _ctx(pre, freeze_cfg, method=method, trainable_blocks=(4, 1), seeds=(1,),
             train_sizes=(0,), learning_rate=2e-5)
  study = freeze.Freeze()
  study.validate(ctx)
  trials = study.trials(ctx)
  assert [t.setting for t in trials] == [
      {'trainable_blocks': k, **({} if method == 'finetune' else {'method': method})}
      for k in (4, 1)]
  want_lr = {'finetune': None, 'lora': 4e-4, 'bitfit': 1e-3}[method]
  assert all(t.learning_rate == want_lr for t in trials)
  top1 = trials[1].program
  assert top1.frozen_blocks == 3 and not top1.train_embeddings
  assert trials[0].program.train_embeddings == (method != 'lora')
  assert (top1.block_params, top1.lora is not None) == {
      'finetune': ('all', False), 'lora': ('none', True), 'bitfit': ('bias', False)}[method]
  ctx.prepared = study.prepare(ctx, trials)
  fraction = study.trial_metrics(ctx, trials[1], None)['trainable_params_fraction']
  assert 0 < fraction < (0.3 if method == 'finetune' else 0.15)


def test_select_settings_use_each_methods_learning_rate():
  pre = _random_pre()
  ctx = _ctx(pre, method=('lora', 'bitfit'), num_tuned_blocks=(2,))
  got = [(s['placement'], s['method'], lr) for s, _, lr in select.Select().settings(ctx, 3, 'fixed')]
  assert got == [('fixed', 'lora', 4e-4), ('fixed', 'bitfit', 1e-3),
                 ('full', 'lora', 4e-4), ('full', 'bitfit', 1e-3)]


@pytest.mark.parametrize('overrides,match', [
    (dict(lora_targets=('query', 'pooler')), 'lora_targets'),
    (dict(lora_targets=('query', 'query')), 'repeats'),
    (dict(lora_rank=0), 'lora_rank'),
    (dict(lora_dropout=1.0), 'lora_dropout'),
    (dict(method=('lora', 'prefix')), 'method')])
def test_bad_lora_keys_are_user_errors(overrides, match):
  pre = _random_pre()
  ctx = _ctx(pre, **{'method': ('lora',), 'head_block': '3', **overrides})
  with pytest.raises(UserError, match=match):
    select.Select().validate(ctx)


def test_bitfit_on_blocks_without_biases_is_a_user_error(tmp_path_factory):
  import test_families
  path = test_families.family_dir('modernbert', tmp_path_factory)   # attention/mlp/norm bias off
  pre = pretrained_lib.load_pretrained(str(path), with_tokenizer=False)
  with pytest.raises(UserError, match='have none'):
    select.Select().validate(_ctx(pre, method=('bitfit',), head_block='1'))


# ----------------------------------------------------------------------------- end to end


def test_select_run_with_lora_and_bitfit_reports_and_exports(tmp_path):
  model_dir = helpers.make_tiny_model_dir(tmp_path / 'model', num_layers=3)
  c = select_cfg.get_config('demo')
  c.model, c.cache_dir = str(model_dir), str(tmp_path / 'cache')
  c.head_block, c.num_tuned_blocks, c.method = '2', (1,), ('lora', 'bitfit')
  c.num_train_steps, c.seeds, c.baselines, c.measure_step_time = 2, (1,), False, False
  c.eval_max_examples, c.eval_batch_size, c.export_model = 16, 16, True
  work = tmp_path / 'work'
  records = train_lib.train_and_evaluate(c, str(work))
  assert [(r['status'], r['setting']['method']) for r in records] == [('ok', 'lora'),
                                                                       ('ok', 'bitfit')]
  for r in records:
    m = r['metrics']
    assert 0 < m['trainable_params_fraction'] < 0.05
    assert m['task_state_bytes'] == pytest.approx(m['trainable_params_fraction']
                                                  * m['full_copy_bytes'])
    assert math.isfinite(m['accuracy'])
    exported = convert.read_state_dict(str(work / 'models' / r['trial_id']))
    assert any(k.endswith('attention.self.query.weight') for k in exported)
  assert records_lib.read_records(work / 'trials.jsonl') == records
  assert 'trainable_params_fraction' in (work / 'summary.csv').read_text()
