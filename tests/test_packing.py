"""Sequence packing: the packed step computes what the padded one does, in every encoder family.

The reference is the padded forward pass (itself tested against HF PyTorch in test_models.py and
test_families.py): the same params, the same examples, dropout off, logits and gradients equal.
"""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import transformers

import helpers
from jaxtransfer.core import step as step_lib
from jaxtransfer.engine import trials as trials_lib
from jaxtransfer.models import config as model_config
from jaxtransfer.engine import engine as engine_lib
from jaxtransfer.core import packing
from jaxtransfer.core import program as program_lib
from jaxtransfer.models import bert

_BERTLIKE = dict(vocab_size=50, pad_token_id=1, max_position_embeddings=48, hidden_size=32,
                 num_hidden_layers=2, num_attention_heads=4, intermediate_size=64)
FAMILIES = {
    'bert': lambda: transformers.BertConfig(**_BERTLIKE),
    'roberta': lambda: transformers.RobertaConfig(**_BERTLIKE, type_vocab_size=1),
    'distilbert': lambda: transformers.DistilBertConfig(
        vocab_size=50, pad_token_id=1, max_position_embeddings=48, dim=32, n_layers=2, n_heads=4,
        hidden_dim=64),
    'electra': lambda: transformers.ElectraConfig(**_BERTLIKE, embedding_size=16),
    'deberta-v3': lambda: transformers.DebertaV2Config(
        **_BERTLIKE, relative_attention=True, pos_att_type='p2c|c2p', position_buckets=8,
        max_relative_positions=32, share_att_key=True, norm_rel_ebd='layer_norm',
        position_biased_input=False, type_vocab_size=0),
    'mpnet': lambda: transformers.MPNetConfig(**_BERTLIKE),
    'modernbert': lambda: transformers.ModernBertConfig(
        **_BERTLIKE, local_attention=4, global_attn_every_n_layers=2, bos_token_id=2,
        eos_token_id=3, cls_token_id=2, sep_token_id=3),
}


def test_plan_step_first_fit_decreasing():
  lengths = np.array([5, 9, 3, 7, 2, 4])
  weights = np.array([1, 1, 1, 1, 1, 0], np.float32)  # the last is an epoch's padding
  row, col = packing.plan_step(lengths, weights, width=10)
  assert row[5] == -1
  # Decreasing: 9 -> row 0; 7 -> row 1; 5 -> row 2; 3 -> row 1 (7+3); 2 -> row 2 (5+2).
  np.testing.assert_array_equal(row[:5], [2, 0, 1, 1, 2])
  np.testing.assert_array_equal(col[:5], [0, 0, 7, 0, 5])
  for r in range(3):  # every row holds its examples end to end, within the width
    spans = sorted((col[b], col[b] + lengths[b]) for b in range(5) if row[b] == r)
    assert all(a[1] <= b[0] for a, b in zip(spans, spans[1:])) and spans[-1][1] <= 10


def _batch(rng, n, seq, vocab, pad_id, types):
  ids, mask, tt = helpers.random_batch(rng, vocab, n, seq, pad_id, first_id=4)
  out = {'input_ids': ids, 'attention_mask': mask,
         'labels': rng.integers(0, 3, n).astype(np.int32)}
  if types:
    out['token_type_ids'] = tt
  return out


def _packed(batch, width):
  lengths = batch['attention_mask'].sum(1)
  row, col = packing.plan_step(lengths, np.ones(len(lengths)), width)
  rows = int(row.max()) + 1
  assert rows < len(lengths)  # really packed
  return packing.pack(jax.tree.map(jnp.asarray, batch), jnp.asarray(row), jnp.asarray(col), rows)


@pytest.mark.parametrize('family', sorted(FAMILIES))
@pytest.mark.parametrize('pooling', ['cls', 'mean'])
def test_packed_logits_and_gradients_equal_padded(family, pooling):
  config = model_config.EncoderConfig.from_hf(FAMILIES[family]().to_dict(), has_pooler=family == 'bert')
  pretrained = bert.init_params(config, jax.random.key(0))
  program = program_lib.Program(encoder=config, num_labels=3, num_blocks=config.num_layers,
                                frozen_blocks=1 if family == 'electra' else 0, pooling=pooling,
                                head='pooler' if family == 'bert' else 'mlp')
  arrays = {k: jnp.asarray(v) for k, v in program.defaults().items()}
  train, frozen = program.init(pretrained, arrays, jax.random.key(1))
  rng = np.random.default_rng(0)
  batch = _batch(rng, 8, 24, 50, 1, config.type_vocab_size > 0)
  packed = _packed(batch, 24)

  def loss(tr, b):
    logits = program.apply(tr, frozen, b, arrays, deterministic=True)
    return -jnp.take_along_axis(jax.nn.log_softmax(logits), b['labels'][:, None], 1).mean(), logits

  (l_pad, logits_pad), g_pad = jax.value_and_grad(loss, has_aux=True)(train, batch)
  (l_pack, logits_pack), g_pack = jax.value_and_grad(loss, has_aux=True)(train, packed)
  np.testing.assert_allclose(logits_pack, logits_pad, atol=2e-5, rtol=1e-4)
  np.testing.assert_allclose(l_pack, l_pad, atol=1e-6, rtol=1e-5)
  chex.assert_trees_all_close(g_pack, g_pad, atol=2e-5, rtol=1e-3)


def test_pack_layout_and_padding_examples():
  rng = np.random.default_rng(1)
  batch = _batch(rng, 6, 12, 50, 1, True)
  lengths = batch['attention_mask'].sum(1)
  row, col = packing.plan_step(lengths, np.array([1, 1, 1, 1, 1, 0]), 12)
  out = jax.tree.map(np.asarray, packing.pack(jax.tree.map(jnp.asarray, batch), jnp.asarray(row),
                                               jnp.asarray(col), int(row.max()) + 1))
  for b in range(5):
    span = slice(col[b], col[b] + lengths[b])
    np.testing.assert_array_equal(out['input_ids'][row[b], span], batch['input_ids'][b, :lengths[b]])
    np.testing.assert_array_equal(out['token_type_ids'][row[b], span],
                                  batch['token_type_ids'][b, :lengths[b]])
    np.testing.assert_array_equal(out['position_ids'][row[b], span], np.arange(lengths[b]))
    assert (out['segment_ids'][row[b], span] == b + 1).all()
  assert not (out['segment_ids'] == 6).any()  # the padding example is nowhere
  assert out['attention_mask'].sum() == lengths[:5].sum()
  np.testing.assert_array_equal(out['labels'], batch['labels'])


def test_engine_packs_by_default_and_trains_like_padding_without_dropout(tmp_path):
  """With every dropout at 0 a packed run and a padded run of the same trial end at the same
  params; packing computes fewer tokens (one compiled step per group)."""
  import jaxtransfer as jt
  from jaxtransfer.data import glue as data_lib
  model = helpers.make_tiny_model_dir(tmp_path / 'model', dropout=0.0)
  pre = jt.load_pretrained(str(model))
  task = data_lib.load_task_data('sst2', 'demo', pre.tokenizer, pre.path, 32,
                                 cache_dir=str(tmp_path / 'cache'))
  prog = program_lib.Program(encoder=pre.config, num_labels=2, num_blocks=pre.config.num_layers,
                             pooling='mean')
  got = {}
  for pack in (True, False):
    spec = trials_lib.RunSpec(experiment='t', model='tiny', task=task.task,
                              workdir=str(tmp_path / f'w{pack}'), batch_size=8, learning_rate=1e-3,
                              num_train_steps=10, checkpoint_every=0, pack_sequences=pack)
    hooks = helpers.CaptureHooks()
    eng = engine_lib.Engine(spec, pre.params, task.train.as_dict(),
                            {k: v.as_dict() for k, v in task.dev.items()}, hooks=hooks)
    rec, = eng.run([trials_lib.Trial(1, 64, {}, prog)])
    fns = next(iter(eng._functions.values()))
    got[pack] = rec, hooks.got[rec['trial_id']][1].train, list(fns._train_compiled)
  (r_pack, p_pack, k_pack), (r_pad, p_pad, k_pad) = got[True], got[False]
  chex.assert_trees_all_close(p_pack, p_pad, atol=2e-5, rtol=1e-4)
  assert r_pack['metrics']['accuracy'] == r_pad['metrics']['accuracy']
  assert len(k_pack) == 1 and isinstance(k_pack[0][1], packing.Layout)
  assert all(isinstance(k[1], int) for k in k_pad)
  layout = k_pack[0][1]
  assert layout.rows < 8  # 8 examples of the demo set in fewer rows


def test_step_batch_cuts_or_packs():
  data = {'input_ids': jnp.arange(24).reshape(4, 6), 'labels': jnp.arange(4),
          'attention_mask': jnp.array([[1] * 3 + [0] * 3, [1] * 2 + [0] * 4, [1] * 6, [1] + [0] * 5])}
  arrays = {'batch_idx': jnp.array([[0, 1, 3]]), 'pack_row': jnp.array([[0, 0, 0]]),
            'pack_col': jnp.array([[0, 3, 5]])}
  cut = step_lib.step_batch(data, arrays, 0, 4)
  assert cut['input_ids'].shape == (3, 4)
  packed = step_lib.step_batch(data, arrays, 0, packing.Layout(6, 1))
  np.testing.assert_array_equal(packed['input_ids'], [[0, 1, 2, 6, 7, 18]])
  np.testing.assert_array_equal(packed['segment_ids'], [[1, 1, 1, 2, 2, 3]])


def test_row_shapes_add_a_smaller_shape_only_when_it_pays_for_its_compile():
  needed = np.array([5] * 10 + [3] * 100)
  np.testing.assert_array_equal(packing.row_shapes(needed, compile_steps=30), [5] * 10 + [3] * 100)
  np.testing.assert_array_equal(packing.row_shapes(needed, compile_steps=100), [5] * 110)
  shapes = packing.row_shapes(np.array([2, 7, 3, 6, 4, 5] * 200), compile_steps=10, max_shapes=3)
  assert len(set(shapes.tolist())) == 3 and (shapes >= [2, 7, 3, 6, 4, 5] * 200).all()


def test_row_shapes_reuse_what_an_earlier_group_compiled():
  """A later group of the same program takes the row counts already compiled when padding up to
  them costs less than a compile: a group needing 4 rows runs in the compiled 5 instead of
  compiling 4 (the second compile of the issue's SST-2 run); one needing far fewer still gets its
  own shape."""
  needed = np.array([4] * 60)
  np.testing.assert_array_equal(packing.row_shapes(needed, compile_steps=30), [4] * 60)
  np.testing.assert_array_equal(packing.row_shapes(needed, 30, known=frozenset({5})), [5] * 60)
  np.testing.assert_array_equal(packing.row_shapes(np.array([1] * 600), 30, known=frozenset({5})),
                                [1] * 600)
  # A known smaller count is added for free where it saves rows.
  mixed = np.array([6] * 10 + [3] * 50)
  np.testing.assert_array_equal(packing.row_shapes(mixed, 1000, known=frozenset({3})),
                                [6] * 10 + [3] * 50)
  np.testing.assert_array_equal(packing.row_shapes(mixed, 1000), [6] * 60)


def test_the_planner_remembers_its_compiled_row_counts():
  """Two groups of one program: the second's batches need one row fewer (a few short sentences
  among long ones), and it runs in the first group's compiled row count instead of its own."""
  lengths = np.array([36] * 1000 + [6] * 1000)
  rng = np.random.default_rng(1)
  first = rng.integers(0, 1000, (2, 50, 16))
  second = first.copy()
  second[:, :, :3] = rng.integers(1000, 2000, (2, 50, 3))
  ones = np.ones((2, 50, 16))
  alone = packing.Planner(lengths, 16, 8, on_cpu=True).group(384, 50, second, ones, 2)[1]
  planner = packing.Planner(lengths, 16, 8, on_cpu=True)
  rows_first = planner.group(384, 50, first, ones, 2)[1]
  rows_second = planner.group(384, 50, second, ones, 2)[1]
  assert set(alone.tolist()) == {7} and set(rows_first.tolist()) == {8}
  assert set(rows_second.tolist()) == {8}  # no second compile


def test_prepare_decides_the_row_counts_of_every_group_before_the_first():
  """Planned one at a time, a first group of short sentences compiles its 2 rows, and a second
  needing 8 rows at 5 of its 20 steps compiles 8 as well; prepared over both groups at once, the 35
  steps that fit in 2 rows save less than a compile, so both groups run in the one compiled 8."""
  lengths = np.array([36] * 1000 + [6] * 1000)
  rng = np.random.default_rng(1)
  first = rng.integers(1000, 2000, (1, 20, 16))
  second = first.copy()
  second[:, :5] = rng.integers(0, 1000, (1, 5, 16))
  ones = np.ones((1, 20, 16))
  one_at_a_time = packing.Planner(lengths, 16, 8, on_cpu=True)
  counts = [set(one_at_a_time.group(384, 20, b, ones, 1)[1].tolist()) for b in (first, second)]
  assert counts == [{2}, {2, 8}]  # two compiles
  planner = packing.Planner(lengths, 16, 8, on_cpu=True)
  planner.prepare(384, 20, [(first, ones), (second, ones)])
  shared = [planner.group(384, 20, b, ones, 1)[1] for b in (first, second)]
  assert [set(r.tolist()) for r in shared] == [{8}, {8}]  # one compile
  # Each group alone prepares nothing (one group has nothing to share).
  alone = packing.Planner(lengths, 16, 8, on_cpu=True)
  alone.prepare(384, 20, [(first, ones)])
  assert set(alone.group(384, 20, first, ones, 1)[1].tolist()) == {2}


def test_choose_width_from_the_data_alone():
  """The chosen width computes within 10% of the best candidate's cost on fresh batches
  of the same data (a long tail of 100-token pairs among 12-token sentences); uniform short
  sentences get rows that hold several."""
  rng = np.random.default_rng(0)
  tail = np.where(rng.random(4000) < 0.02, 100, rng.integers(8, 16, 4000))
  choose = lambda lengths, steps: packing.choose_width(lengths, 16, 16, 384, steps, 30)
  width = choose(tail, 1000)
  assert width % 16 == 0 and width >= 112
  sample = [rng.choice(4000, 16, replace=False) for _ in range(1000)]

  def cost(w):  # rows rounded to row_shapes x width x token cost, on the fresh batches
    rows = np.array([packing.plan_step(tail[b], np.ones(16), w)[0].max() + 1 for b in sample])
    return packing.row_shapes(rows, 30).sum() * w * packing.token_cost(w, 384)
  assert cost(width) <= 1.1 * min(cost(w) for w in range(112, 401, 16))
  assert choose(tail, 1000) == width  # deterministic
  assert choose(np.full(100, 20), 60) > 32


def test_rows_wider_than_the_data():
  data = {'input_ids': jnp.arange(8).reshape(2, 4), 'labels': jnp.arange(2),
          'attention_mask': jnp.array([[1, 1, 1, 1], [1, 1, 1, 0]])}
  arrays = {'batch_idx': jnp.array([[0, 1]]), 'pack_row': jnp.array([[0, 0]]),
            'pack_col': jnp.array([[0, 4]])}
  packed = step_lib.step_batch(data, arrays, 0, packing.Layout(8, 1))
  np.testing.assert_array_equal(packed['input_ids'], [[0, 1, 2, 3, 4, 5, 6, 0]])
  np.testing.assert_array_equal(packed['position_ids'], [[0, 1, 2, 3, 0, 1, 2, 0]])


@pytest.mark.parametrize('task', ['CoLA', 'SST-2', 'MRPC', 'RTE'])
def test_vectorized_plan_equals_plan_step_on_glue(glue_dir, minilm, task):
  """`plan` (every step at once) gives `plan_step`'s rows and columns on the real GLUE lengths,
  for length-grouped and shuffled batches with an epoch's weight-0 padding."""
  import csv
  from jaxtransfer.engine import trials as trials_lib
  with open(glue_dir / task / 'train.tsv', newline='') as f:
    rows = list(csv.reader(f, delimiter='\t', quoting=csv.QUOTE_NONE))
  text = {'CoLA': lambda r: (r[3],), 'SST-2': lambda r: (r[0],), 'MRPC': lambda r: (r[3], r[4]),
          'RTE': lambda r: (r[1], r[2])}[task]
  body = rows if task == 'CoLA' else rows[1:]
  pairs = [text(r) for r in body[:4000]]
  enc = minilm.tokenizer(*zip(*pairs), truncation=True, max_length=128)
  lengths = np.array([len(x) for x in enc['input_ids']])
  for seed, grouped, width in [(1, True, 128), (2, False, 160)]:
    idx, w = trials_lib.trial_batches(seed, len(lengths), 300, 32, 40,
                                      lengths if grouped else None)
    assert (w == 0).any()  # the epoch's last batch is padded
    row, col, rows_needed = packing.plan(lengths, idx[None], w[None], width)
    for s in range(idx.shape[0]):
      want_row, want_col = packing.plan_step(np.minimum(lengths[idx[s]], width), w[s], width)
      np.testing.assert_array_equal(row[0, s], want_row)
      np.testing.assert_array_equal(col[0, s], want_col)
    assert rows_needed == row.max() + 1
