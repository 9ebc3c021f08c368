"""What a trial trains and what it costs to store, next to a full fine-tuned copy of the model."""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp

from jaxtransfer.core import program as program_lib
from jaxtransfer.models import bert

Params = dict[str, Any]


def _size(tree) -> int:
  return int(sum(math.prod(x.shape) for x in jax.tree.leaves(tree)))


def param_metrics(program, pretrained: Params) -> dict[str, float]:
  """From the shapes of one trial's params (nothing is computed):

  `trainable_params_fraction`: trainable parameters over all parameters of a full fine-tune of the
  same model with the same head (embeddings, all L blocks, the pooler when the head reads it, the
  classifier). `task_state_bytes`: the trainable parameters in float32, what one trial must store
  beside the shared pretrained model (LoRA factors, biases, tuned blocks, head). `full_copy_bytes`:
  a fully fine-tuned copy of the same model in float32, as the sparsity study reports it.
  """
  arrays = {k: jnp.asarray(v) for k, v in program.defaults().items()}
  train, frozen = jax.eval_shape(
      lambda p, a, k: program_lib.dense_params(program, *program.init(p, a, k), a),
      pretrained, arrays, jax.random.key(0))
  params = program_lib.merge(train, frozen)
  block = jax.eval_shape(lambda k: bert.init_blocks(program.encoder, k, 1), jax.random.key(0))
  full = (_size(params['embeddings']) + program.encoder.num_layers * _size(block)
          + _size(program_lib.params_of(params, program_lib.HEAD_GROUPS)))
  trainable = _size(train)
  return {'trainable_params_fraction': trainable / full, 'task_state_bytes': 4.0 * trainable,
          'full_copy_bytes': 4.0 * full}
