"""Model FLOPs per family (models/flops.py) against XLA's own count of the compiled computation.

XLA's `cost_analysis()` counts every operation, norms and softmax included, so the matmul-only
model count sits a little below it: within 5% at these widths (H = 256, I = 1024, S = 128), where
a wrongly counted matrix (ModernBERT's GeGLU, ELECTRA's projection, DeBERTa's relative terms, a
LoRA path) would be off by far more. Only shapes are used: nothing is initialised or run.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import transformers

from jaxtransfer.core import optim
from jaxtransfer.core import program as program_lib
from jaxtransfer.core import step as step_lib
from jaxtransfer.engine import trials as trials_lib
from jaxtransfer.models import bert, flops
from jaxtransfer.models import lora as lora_lib
from jaxtransfer.models.config import EncoderConfig

BATCH, SEQ = 4, 128
# One block: the blocks run in a lax.scan, whose body cost_analysis counts once, not per trip.
_WIDE = dict(vocab_size=1000, hidden_size=256, num_hidden_layers=1, num_attention_heads=4,
             intermediate_size=1024, max_position_embeddings=512)
_DEBERTA = dict(_WIDE, relative_attention=True, pos_att_type='p2c|c2p', position_buckets=64,
                max_relative_positions=512)
FAMILIES = {
    'bert': lambda: transformers.BertConfig(**_WIDE),
    'roberta': lambda: transformers.RobertaConfig(**_WIDE, pad_token_id=1),
    'distilbert': lambda: transformers.DistilBertConfig(
        vocab_size=1000, dim=256, n_layers=1, n_heads=4, hidden_dim=1024),
    'electra': lambda: transformers.ElectraConfig(**_WIDE, embedding_size=128),
    'deberta-v2': lambda: transformers.DebertaV2Config(
        **_DEBERTA, share_att_key=False, position_biased_input=True, embedding_size=128),
    'deberta-v3': lambda: transformers.DebertaV2Config(
        **_DEBERTA, share_att_key=True, norm_rel_ebd='layer_norm', position_biased_input=False,
        type_vocab_size=0),
    'modernbert': lambda: transformers.ModernBertConfig(
        **_WIDE, local_attention=64, global_attn_every_n_layers=1),
}


def _config(name: str) -> EncoderConfig:
  return EncoderConfig.from_hf(FAMILIES[name]().to_dict())


def _xla_flops(fn, *args) -> float:
  cost = jax.jit(fn).lower(*args).compile().cost_analysis()
  return float((cost[0] if isinstance(cost, (list, tuple)) else cost)['flops'])


def _inputs():
  ids = jax.ShapeDtypeStruct((BATCH, SEQ), jnp.int32)
  return ids, ids, ids


@pytest.mark.parametrize('name', sorted(FAMILIES))
def test_forward_flops_match_xla(name):
  c = _config(name)
  params = jax.eval_shape(lambda k: bert.init_params(c, k), jax.random.key(0))
  ids, mask, types = _inputs()
  xla = _xla_flops(lambda p, i, m, t: bert.hidden_states(c, p, i, m, t), params, ids, mask, types)
  ours = flops.forward(c, BATCH, SEQ)
  assert ours == pytest.approx(xla, rel=0.05), (name, ours, xla)
  assert ours <= xla  # the model count leaves out only what XLA adds (norms, softmax, ...)


def _train_step_flops(program) -> float:
  """XLA's FLOPs of one compiled training step of `program` (one trial, AdamW)."""
  c = program.encoder
  n = 64
  train = {'input_ids': np.ones((n, SEQ), np.int32), 'attention_mask': np.ones((n, SEQ), np.int32),
           'token_type_ids': np.zeros((n, SEQ), np.int32), 'labels': np.zeros(n, np.int32)}
  arrays, layout = trials_lib.solo_arrays(program, train, seed=1, learning_rate=1e-4, train_size=n,
                                          batch_size=BATCH, steps=4, pack=False)
  step = step_lib.Step(program, optim.OptimConfig(), 4)
  pretrained = jax.eval_shape(lambda k: bert.init_params(c, k), jax.random.key(0))
  state, frozen = jax.eval_shape(lambda p: step_lib.init_state(step, p, arrays), pretrained)
  data = {k: jnp.asarray(v) for k, v in train.items()}
  batch = jax.eval_shape(lambda: step_lib.step_batch(data, arrays, 0, layout))
  return _xla_flops(lambda st, fr, b: step_lib.train_step(step, st, fr, b, arrays['batch_w'][0],
                                                          arrays, 0), state, frozen, batch)


@pytest.mark.parametrize('name', ['bert', 'modernbert'])
def test_full_fine_tuning_step_is_three_forward_passes(name):
  c = _config(name)
  program = program_lib.Program(encoder=c, num_labels=2, num_blocks=c.num_layers)
  xla = _train_step_flops(program)
  ours = flops.train_per_example(c, SEQ, batch=BATCH) * BATCH
  assert ours == pytest.approx(xla, rel=0.05), (name, ours, xla)


def test_lora_step_flops_and_fraction():
  """A LoRA program: frozen weights, low-rank paths trained. Its step costs the forward pass,
  the activation gradients through every block and the LoRA paths' weight gradients, which is
  what train_flops_fraction reports relative to full fine-tuning. Two blocks, so that the scan
  over the tuned blocks is a loop (its body counted once in both programs), as in a real model."""
  c = EncoderConfig.from_hf(transformers.BertConfig(**{**_WIDE, 'num_hidden_layers': 2}).to_dict())
  lora = lora_lib.Lora(rank=64, alpha=16, targets=('query', 'value'))
  program = program_lib.Program(encoder=c, num_labels=2, num_blocks=c.num_layers, lora=lora,
                                block_params='none', train_embeddings=False, flops_seq_len=SEQ)
  full = program_lib.Program(encoder=c, num_labels=2, num_blocks=c.num_layers)
  measured = _train_step_flops(program) / _train_step_flops(full)
  assert program.train_flops_fraction() == pytest.approx(measured, abs=0.05)
