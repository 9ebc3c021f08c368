"""What the throughput benchmark relies on: its FLOP count, and remat changing nothing but memory."""

import pathlib
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers

from jaxtransfer.models import bert
from jaxtransfer.models import config as model_config

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / 'benchmarks'))
import throughput  # noqa: E402


@pytest.mark.parametrize('seq', [8, 24])
def test_train_flops_match_torch_flop_counter(seq):
  """MFU's numerator: our formula vs PyTorch's count of every matmul in one training step."""
  cfg = transformers.BertConfig(vocab_size=50, hidden_size=32, num_hidden_layers=2,
                                num_attention_heads=4, intermediate_size=48, num_labels=3,
                                max_position_embeddings=32, attn_implementation='eager')
  model = transformers.BertForSequenceClassification(cfg).train()
  batch = 5
  ids = torch.randint(1, 50, (batch, seq))
  from torch.utils.flop_counter import FlopCounterMode
  with FlopCounterMode(display=False) as counter:
    model(input_ids=ids, labels=torch.zeros(batch, dtype=torch.long)).loss.backward()
  expected = throughput.train_flops_per_example(cfg.to_dict(), seq, num_labels=3) * batch
  assert counter.get_total_flops() == pytest.approx(expected, rel=1e-9)


def test_remat_changes_no_output_or_gradient():
  config = model_config.EncoderConfig(vocab_size=40, hidden_size=16, num_layers=3, num_heads=2,
                              intermediate_size=24)
  blocks = bert.init_blocks(config, jax.random.key(0), 3)
  x = jax.random.normal(jax.random.key(1), (2, 7, 16))
  mask = jnp.array([[1] * 7, [1] * 4 + [0] * 3])

  def loss(blocks, remat):
    out = bert.apply_blocks(config, blocks, x, mask, deterministic=False, rng=jax.random.key(2),
                            remat=remat)
    return jnp.sum(out * jnp.cos(out))  # dropout on: the recomputed masks must be the same

  plain, remat = (jax.jit(jax.value_and_grad(loss), static_argnums=1)(blocks, r) for r in (False, True))
  np.testing.assert_allclose(plain[0], remat[0], rtol=1e-6)
  # Float reassociation only (~1e-6): different dropout masks would differ by O(0.1).
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5), plain[1], remat[1])
  # And the recomputation really happens: the backward pass keeps far fewer residual values.
  saved = lambda r: sum(a.size for a in jax.tree.leaves(jax.vjp(lambda b: loss(b, r), blocks)[1]))
  assert saved(True) < 0.5 * saved(False)
