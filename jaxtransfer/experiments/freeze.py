"""Freezing (Lee et al. 2019): only the top k blocks, the pooler and the classifier are trained.

Each k is its own compiled group: the frozen prefix (embeddings + blocks 0..L-k-1) is a static
part of the Program, passed to the step as a non-differentiated input, so XLA builds no backward
pass for it and the optimizer allocates no state for it.
"""

from __future__ import annotations

from absl import logging

from jaxtransfer.analysis import lee
from jaxtransfer.errors import UserError
from jaxtransfer.experiments import base


def paper_sweep(num_layers: int) -> list[int]:
  """Lee et al.'s settings for L blocks: full (k = L), top L/2 .. 1, none (k = 0)."""
  return [num_layers, *range(num_layers // 2, 0, -1), 0]


def freeze_program(ctx: base.Context, k: int):
  """Top k of L blocks trained; k = L also trains the embeddings (full fine-tuning). The pooler
  (BERT) or the dense-tanh head (RoBERTa) and the classifier always train."""
  enc = ctx.pretrained.config
  kw = {}
  if ctx.config.head == 'auto' and enc.model_type == 'roberta':
    # RobertaForSequenceClassification's head reads <s> and never uses the pooler, even when the
    # checkpoint carries one (a RobertaModel saved with save_pretrained does).
    kw['head'] = 'mlp'
  return base.make_program(ctx, frozen_blocks=enc.num_layers - k,
                           train_embeddings=k == enc.num_layers, report_flops=True, **kw)


class Freeze(base.Experiment):
  name = 'freeze'

  def sweep(self, ctx: base.Context) -> list[int]:
    ks = list(ctx.config.trainable_blocks)
    return paper_sweep(ctx.pretrained.config.num_layers) if not ks else ks

  def validate(self, ctx):
    L = ctx.pretrained.config.num_layers
    ks = self.sweep(ctx)
    bad = [k for k in ks if isinstance(k, bool) or not isinstance(k, int) or not 0 <= k <= L]
    if bad:
      raise UserError(
          f'trainable_blocks={list(ctx.config.trainable_blocks)} has {bad}, not a whole number of '
          f'blocks in 0..{L} ({ctx.config.model} has {L} blocks; k = {L} is full fine-tuning, '
          f'0 trains only the pooler and classifier). Fix --config.trainable_blocks, e.g. '
          f'"{paper_sweep(L)}", or leave it empty ("()") for that paper sweep.')
    if len(set(ks)) != len(ks):
      raise UserError(f'trainable_blocks={ks} repeats a value; list each k once '
                      '(--config.trainable_blocks).')

  def trials(self, ctx):
    ks = self.sweep(ctx)
    logging.info('Freezing sweep over trainable_blocks=%s of %d blocks.', ks,
                 ctx.pretrained.config.num_layers)
    programs = {k: freeze_program(ctx, k) for k in ks}
    return [base.engine_lib.Trial(seed, size, setting, programs[setting['trainable_blocks']])
            for size, seed, setting in base.grid(ctx.config, trainable_blocks=ks)]

  def finalize(self, ctx, records):
    lee.write_all(ctx.workdir, records, {ctx.task.name: ctx.pretrained.config.num_layers})


EXPERIMENT = Freeze()
