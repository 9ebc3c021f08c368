"""Freezing (Lee et al. 2019): only the top k blocks, the pooler and the classifier are trained.

Each k is its own compiled group: the frozen prefix (embeddings + blocks 0..L-k-1) is a static
part of the Program, passed to the step as a non-differentiated input, so XLA builds no backward
pass for it and the optimizer allocates no state for it. `method` sets how the top k blocks train:
all their weights (`finetune`, the paper), LoRA factors (`lora`) or their biases (`bitfit`).
"""

from __future__ import annotations

from absl import logging

from jaxtransfer.studies.lee2019 import analysis as lee
from jaxtransfer.core import storage
from jaxtransfer.errors import UserError, check_choices
from jaxtransfer.engine import trials as trials_lib
from jaxtransfer.studies import base
from jaxtransfer.models import heads


# docs/PROTOCOLS.md §2: the learning rate Lee et al. picked per task for bert-base (best of
# {1..5}e-5).
BERT_BASE_LR = {'cola': 4e-5, 'sst2': 2e-5, 'mrpc': 3e-5, 'stsb': 5e-5, 'qqp': 2e-5, 'mnli': 3e-5,
                'qnli': 2e-5, 'rte': 3e-5}
LARGE_BATCH_TASKS = ('qqp', 'mnli', 'qnli')
METHODS = ('finetune', 'lora', 'bitfit')


def paper_defaults(config) -> None:
  """Fills `learning_rate`, `batch_size` and `num_epochs` left unset (None) with the paper's choice
  for the task and model: the per-task bert-base lr, batch 32 for QQP/MNLI/QNLI else 16, 10 epochs
  for RoBERTa models else 3."""
  task, model = str(config.task).lower(), str(config.model).lower()
  if config.learning_rate is None:
    config.learning_rate = BERT_BASE_LR.get(task, 2e-5)
  if config.batch_size is None:
    config.batch_size = 32 if task in LARGE_BATCH_TASKS else 16
  if config.num_epochs is None:
    config.num_epochs = 10.0 if 'roberta' in model else 3.0


def paper_sweep(num_layers: int) -> list[int]:
  """Lee et al.'s settings for L blocks: full (k = L), top L/2 .. 1, none (k = 0)."""
  return [num_layers, *range(num_layers // 2, 0, -1), 0]


def method(config) -> str:
  return config.get('method', 'finetune')


def freeze_program(ctx: base.Context, k: int):
  """Top k of L blocks trained by `method`; k = L also trains the embeddings (full fine-tuning;
  their biases with BitFit). The pooler (BERT; its bias with BitFit) or the dense-tanh head
  (RoBERTa) and the classifier always train."""
  enc = ctx.pretrained.config
  m = method(ctx.config)
  kw = base.method_options(ctx.config, m)
  if ctx.config.head == 'auto' and enc.model_type in heads.MLP_HEAD:
    # RobertaForSequenceClassification's (and MPNet's) head reads <s> and never uses the pooler,
    # even when the checkpoint carries one (a RobertaModel saved with save_pretrained does).
    kw['head'] = 'mlp'
  return base.make_program(ctx, frozen_blocks=enc.num_layers - k,
                           train_embeddings=k == enc.num_layers and m in ('finetune', 'bitfit'),
                           report_flops=True,
                           grads_of_frozen=bool(ctx.config.get('clip_frozen_grads', False)), **kw)


class Freeze(base.Experiment):
  name = 'freeze'
  trains_heads_on_frozen_blocks = True
  sweep_keys = ('trainable_blocks',)

  def resolve(self, config) -> None:
    paper_defaults(config)

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
    check_choices('method', method(ctx.config), METHODS)
    base.check_method_keys(ctx.config, [method(ctx.config)], ctx.pretrained)

  def trials(self, ctx):
    ks = self.sweep(ctx)
    logging.info('Freezing sweep over trainable_blocks=%s of %d blocks.', ks,
                 ctx.pretrained.config.num_layers)
    programs = {k: freeze_program(ctx, k) for k in ks}
    m = method(ctx.config)
    # The paper's method keeps its settings (and trial ids) as they were; the others name theirs.
    extra = {} if m == 'finetune' else {'method': [m]}
    lr = None if m == 'finetune' else base.method_learning_rate(ctx.config, m)
    return [trials_lib.Trial(seed, size, setting, programs[setting['trainable_blocks']],
                                  learning_rate=lr)
            for size, seed, setting in base.grid(ctx.config, trainable_blocks=ks, **extra)]

  def prepare(self, ctx, trials):
    """What each program trains and stores (`storage.param_metrics`)."""
    return {p: storage.param_metrics(p, ctx.pretrained.params)
            for p in dict.fromkeys(t.program for t in trials)}

  def trial_metrics(self, ctx, trial, params):
    return dict(ctx.prepared[trial.program])

  def reference_setting(self, ctx, records):
    """Full fine-tuning, k = L (when the sweep ran it)."""
    L = ctx.pretrained.config.num_layers
    return {'trainable_blocks': L} if L in self.sweep(ctx) else None

  def finalize(self, ctx, records):
    lee.write_all(ctx.workdir, records, {ctx.task.name: ctx.pretrained.config.num_layers},
                  ctx.info)


