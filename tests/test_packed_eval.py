"""Evaluation on a dev set packed once (packing.pack_for_inference) gives the predictions of the
length-bucketed unpacked evaluation, in one compiled shape."""

import jax
import numpy as np
import pytest

import jaxtransfer as jt
from jaxtransfer.core import packing
from jaxtransfer.core import program as program_lib
from jaxtransfer.core import step as step_lib
from jaxtransfer.data import glue
from jaxtransfer.engine import compiled
from jaxtransfer.engine import evaluation
from jaxtransfer.runtime import distributed as dist


def test_pack_for_inference_keeps_every_token_once():
  rng = np.random.default_rng(0)
  lengths = rng.integers(1, 30, 200)
  mask = (np.arange(32)[None] < lengths[:, None]).astype(np.int32)
  ids = np.where(mask > 0, rng.integers(5, 1000, (200, 32)), 0).astype(np.int32)
  data = {'input_ids': ids, 'attention_mask': mask, 'labels': np.zeros(200, np.int32)}
  calls, index = packing.pack_for_inference(data, 32, batch_rows=16)
  c, r, w = calls['input_ids'].shape
  assert r <= 16 and w == 32 and calls['labels'].shape == index.shape and index.shape[0] == c
  assert sorted(index[index >= 0].tolist()) == list(range(200))
  for c, slots in enumerate(index):  # each example's tokens, in order, under its segment id
    for s, i in enumerate(slots):
      if i >= 0:
        where = calls['segment_ids'][c] == s + 1
        np.testing.assert_array_equal(calls['input_ids'][c][where], ids[i, :lengths[i]])
        np.testing.assert_array_equal(calls['position_ids'][c][where], np.arange(lengths[i]))
  real = calls['attention_mask'].sum()
  assert real == lengths.sum() and real / calls['attention_mask'].size > 0.9


@pytest.mark.parametrize('pooling', ['mean', 'cls'])
def test_packed_evaluation_equals_the_unpacked_one(tiny_model_dir, tmp_path, pooling):
  pre = jt.load_pretrained(str(tiny_model_dir))
  data = glue.load_task_data('sst2', 'demo', pre.tokenizer, pre.path, 64,
                             cache_dir=str(tmp_path / 'cache'))
  dev = {k: v.as_dict() for k, v in data.dev.items()}
  program = program_lib.Program(encoder=pre.config, num_labels=2,
                                num_blocks=pre.config.num_layers, pooling=pooling)
  mesh = dist.trial_mesh()
  fns = compiled.GroupFunctions(step_lib.Step(program, step_lib.optim.OptimConfig(), 10), mesh, 16)
  arrays = {k: np.stack([v, v]) for k, v in program.defaults().items()}
  arrays.update(seed=np.array([1, 2], np.int32), lr=np.full(2, 1e-4, np.float32))
  arrays = dist.put(arrays, dist.trial_sharding(mesh))
  state = fns.init(dist.put(pre.params, dist.replicated(mesh)), arrays)
  task = glue.get_task('sst2')
  got = {}
  for pack in (False, True):
    sets = evaluation.DevSets(dev, task, 16, 16, mesh, pack=pack)
    got[pack] = sets.outputs(fns, state, {}, arrays, '')
    assert (pack and '' in sets.packed) or not pack
  assert got[True].shape == got[False].shape == (2, len(dev['']['labels']), 2)
  assert not np.allclose(got[False][0], got[False][1])  # two trials, two heads
  np.testing.assert_allclose(got[True], got[False], atol=2e-5, rtol=1e-4)
  assert fns.predict_packed._cache_size() == 1  # one compiled shape for every call
