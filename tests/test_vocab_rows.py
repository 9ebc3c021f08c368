"""A word table trained as the rows a trial's data reaches (engine/vocab_rows.py) is the dense
AdamW's table: the same trials run with `sparse_embeddings` on and off give the same params,
losses and dev predictions, and the rows every batch reads are among the trained ones."""

import jax
import numpy as np
import pytest

import helpers
from jaxtransfer.core import optim
from jaxtransfer.core import program as program_lib
from jaxtransfer.engine import engine as engine_lib
from jaxtransfer.engine import trials as trials_lib
from jaxtransfer.engine import vocab_rows
from jaxtransfer.engine.batching import trim_padding
from jaxtransfer.runtime import records as records_lib


def _run(tiny_demo, workdir, sparse: bool, pack: bool):
  pre, task_data = tiny_demo
  program = program_lib.Program(encoder=pre.config, num_labels=2, num_blocks=pre.config.num_layers)
  spec = trials_lib.RunSpec(experiment='test', model='tiny', task=task_data.task,
                            workdir=str(workdir), batch_size=8, learning_rate=2e-3,
                            num_train_steps=9, optim=optim.OptimConfig(warmup_steps=2),
                            log_every=3, checkpoint_every=0, pack_sequences=pack,
                            sparse_embeddings=sparse)
  hooks = helpers.CaptureHooks()
  eng = engine_lib.Engine(spec, pre.params, task_data.train.as_dict(),
                          {k: v.as_dict() for k, v in task_data.dev.items()}, hooks=hooks)
  eng.run([trials_lib.Trial(s, size, {}, program) for s, size in ((1, 60), (2, 60), (3, 0))])
  ks = {p.embedding_rows for p, _ in eng._functions}
  return hooks.got, records_lib.read_records(str(workdir / 'trials.jsonl')), ks


@pytest.mark.parametrize('pack', [True, False])
def test_sparse_table_trains_as_the_dense_one(tiny_demo, tmp_path, pack):
  dense, dense_records, dense_ks = _run(tiny_demo, tmp_path / 'dense', False, pack)
  sparse, sparse_records, sparse_ks = _run(tiny_demo, tmp_path / 'sparse', True, pack)
  assert dense_ks == {0} and min(sparse_ks) > 0  # the sparse run trained K-row tables
  vocab = tiny_demo[0].config.vocab_size
  assert max(sparse_ks) <= vocab_rows.MAX_FRACTION * vocab
  for tid, (_, got) in sparse.items():
    want = dense[tid][1]
    assert jax.tree.structure(got.train) == jax.tree.structure(want.train)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=2e-6),
                 got.train, want.train)
  table = lambda got: got.train['embeddings']['word_embeddings']['embedding']
  pretrained = tiny_demo[0].params['embeddings']['word_embeddings']['embedding']
  moved = np.abs(table(sparse['n60-s1'][1]) - pretrained).max(1) > 0
  assert 10 < moved.sum() < 0.2 * vocab  # it trained the rows its sentences hold, no others
  by_id = {r['trial_id']: r for r in dense_records}
  for r in sparse_records:
    d = by_id[r['trial_id']]
    assert r['metrics'] == pytest.approx(d['metrics'], abs=1e-6)
    assert r['train_loss'] == pytest.approx(d['train_loss'], rel=1e-5)


def test_every_id_a_training_batch_reads_is_a_trained_row(tiny_demo):
  pre, task_data = tiny_demo
  data = trim_padding(task_data.train.as_dict())
  ids, n, vocab = data['input_ids'], len(data['labels']), pre.config.vocab_size
  for seed, size in ((1, 60), (4, 7), (2, 0)):
    rows = vocab_rows.rows_of(trials_lib.Trial(seed, size, {}, None), ids, vocab, {})
    idx, _ = trials_lib.trial_batches(seed, n, size, 8, 25)  # partial batches: weight-0 rows
    assert np.isin(ids[idx], rows).all() and 0 in rows
    assert np.all(np.diff(rows) > 0)
    padded = vocab_rows.padded(rows, vocab_rows.table_size(len(rows), vocab), vocab)
    assert len(padded) % vocab_rows.ROUND == 0 and (padded[len(rows):] == vocab).all()


def test_only_a_table_that_no_decay_moves_trains_as_rows(tiny_demo):
  enc = tiny_demo[0].config
  full = program_lib.Program(encoder=enc, num_labels=2, num_blocks=enc.num_layers)
  assert vocab_rows.eligible(full, weight_decay=0.0)
  assert not vocab_rows.eligible(full, weight_decay=0.01)  # decay moves every row
  for frozen in (program_lib.Program(encoder=enc, num_labels=2, num_blocks=2, frozen_blocks=1),
                 program_lib.Program(encoder=enc, num_labels=2, num_blocks=2,
                                     train_embeddings=False),
                 program_lib.Program(encoder=enc, num_labels=2, num_blocks=2, block_params='bias')):
    assert not vocab_rows.eligible(frozen, weight_decay=0.0)
  assert vocab_rows.table_size(25_000, enc.vocab_size) == 0  # most of the table: dense
