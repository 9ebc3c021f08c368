"""Model FLOPs per encoder family, from its architecture: what the compiled step multiplies.

Two FLOPs per multiply-add of every matmul; embedding lookups, norms, softmax, activations and the
optimizer are not model FLOPs (the PaLM appendix-B convention), which is why these counts sit
within a few percent of XLA's `cost_analysis()` (which counts those too) on real sizes.

Per token and block: the block's matrices (`bert.matrix_shapes`: BERT's feed-forward, ModernBERT's
fused GeGLU input of width 2I), the attention scores and their weighted sum over the row's S keys
(ModernBERT's sliding-window layers too: they mask scores outside the window, so they compute
them all), and DeBERTa-v2's content-to-position and position-to-content scores over its 2k
relative positions. Per block and forward pass, independent of the batch: DeBERTa-v2's
projections of the relative position table. Per token: ELECTRA's and DeBERTa-v2's embedding
projection. Per example: the pooler and the classifier.
"""

from __future__ import annotations

from jaxtransfer.models import bert
from jaxtransfer.models import lora as lora_lib
from jaxtransfer.models.config import EncoderConfig


def _attention_width(c: EncoderConfig) -> int:
  return c.num_heads * c.attention_head_dim


def block_matmuls(c: EncoderConfig) -> float:
  """FLOPs per token of a block's weight matrices."""
  return 2.0 * sum(i * o for i, o in bert.matrix_shapes(c).values())


def block_forward(c: EncoderConfig, seq: int) -> float:
  """FLOPs per token of one block's forward pass over rows of `seq` tokens."""
  a = _attention_width(c)
  scores = 2.0 * 2 * seq * a  # q·k over the S keys, then the probabilities times v
  relative = 0.0
  if c.model_type == 'deberta-v2' and c.relative_attention:
    relative = 2.0 * len(c.pos_att_type) * 2 * c.relative_span * a  # q·pos_k, k·pos_q
  return block_matmuls(c) + scores + relative


def relative_table_forward(c: EncoderConfig) -> float:
  """FLOPs per block and forward pass of DeBERTa-v2's position projections (pos_key, pos_query,
  or the shared key/query matrices) of the 2k-row relative table."""
  if not (c.model_type == 'deberta-v2' and c.relative_attention):
    return 0.0
  return 2.0 * len(c.pos_att_type) * 2 * c.relative_span * c.hidden_size * _attention_width(c)


def embedding_forward(c: EncoderConfig) -> float:
  """FLOPs per token of the embeddings: the projection to hidden_size, where there is one."""
  return 2.0 * c.embedding_width * c.hidden_size if c.embedding_width != c.hidden_size else 0.0


def head_forward(c: EncoderConfig, num_labels: int) -> float:
  """FLOPs per example of the pooler (dense on one pooled vector) and the classifier."""
  return 2.0 * c.hidden_size * c.hidden_size + 2.0 * c.hidden_size * num_labels


def adapter_forward(c: EncoderConfig, size: int) -> float:
  """FLOPs per token of a block's two Houlsby adapters (down to `size`, back up)."""
  return 2.0 * 2 * 2 * c.hidden_size * size


def lora_forward(c: EncoderConfig, lora: lora_lib.Lora) -> float:
  """FLOPs per token of a block's LoRA paths."""
  return 2.0 * lora_lib.matmul_params(lora, bert.matrix_shapes(c))


def forward(c: EncoderConfig, batch: int, seq: int, num_blocks: int | None = None,
            num_labels: int = 0) -> float:
  """FLOPs of one forward pass over `batch` rows of `seq` tokens through the first `num_blocks`
  blocks (default all), plus the head when `num_labels` > 0."""
  n = c.num_layers if num_blocks is None else num_blocks
  tokens = batch * seq
  total = tokens * (embedding_forward(c) + n * block_forward(c, seq)) + n * relative_table_forward(c)
  return total + (batch * head_forward(c, num_labels) if num_labels else 0.0)


def train_per_example(c: EncoderConfig, seq: int, num_labels: int = 2, batch: int = 32) -> float:
  """FLOPs of one full fine-tuning example in a batch of `batch`: forward + backward = 3x forward
  (the backward pass computes the gradients of both activations and weights)."""
  return 3.0 * forward(c, batch, seq, num_labels=num_labels) / batch
