"""What every study shares: loading model and data, building programs, running, summarizing."""

from __future__ import annotations

import dataclasses
import itertools
import os
from typing import Any, Sequence

import numpy as np
from absl import logging

from jaxtransfer import data as data_lib
from jaxtransfer import distributed as dist
from jaxtransfer import engine as engine_lib
from jaxtransfer import program as program_lib
from jaxtransfer import results
from jaxtransfer import workdir as workdir_lib
from jaxtransfer.errors import UserError
from jaxtransfer.models import convert
from jaxtransfer.models.pretrained import Pretrained, load_pretrained


@dataclasses.dataclass
class Context:
  """What a study's `trials` and `finalize` get: the run's config, model, task and data."""
  config: Any
  workdir: str
  pretrained: Pretrained
  task: data_lib.TaskSpec
  data: data_lib.TaskData | None


def default_head(config, pre: Pretrained) -> str:
  if config.head != 'auto':
    return config.head
  # BERT classifies through its pretrained pooler; RoBERTa (no pooler) through a fresh dense-tanh.
  return 'pooler' if pre.config.has_pooler else 'mlp'


def make_program(ctx: Context, **overrides) -> program_lib.Program:
  """The standard encoder program for this run; a study overrides what it intervenes on."""
  c = ctx.config
  kw = dict(encoder=ctx.pretrained.config, num_labels=ctx.task.num_labels,
            num_blocks=ctx.pretrained.config.num_layers, head=default_head(c, ctx.pretrained),
            pooling=c.pooling, dtype=c.dtype)
  kw.update(overrides)
  return program_lib.Program(**kw)


def grid(config, **sweeps: Sequence[Any]):
  """(train_size, seed, {key: value}) over train_sizes x seeds x the study's sweep keys."""
  keys = list(sweeps)
  for size in config.train_sizes:
    for values in itertools.product(*(sweeps[k] for k in keys)):
      for seed in config.seeds:
        yield int(size), int(seed), dict(zip(keys, values))


def export_trial(program, train, frozen, arrays, outdir: str, hf_config: dict) -> None:
  """A trial's fine-tuned (or masked) encoder + classifier in HF format."""
  tree = program.export_params(train, frozen, arrays)
  cfg = dict(hf_config)
  cfg.update(program.encoder.to_hf())
  cfg['num_hidden_layers'] = program.num_blocks
  head = program.export_head(train, frozen)
  if program.is_regression:
    cfg['problem_type'] = 'regression'
  cfg['num_labels'] = program.num_labels
  cfg.pop('id2label', None)
  cfg.pop('label2id', None)
  model_type = cfg.get('model_type', 'bert')
  cfg['architectures'] = ['RobertaForSequenceClassification' if model_type == 'roberta'
                          else 'BertForSequenceClassification']
  convert.export(outdir, tree, cfg, head=head)


class Experiment:
  """A study. Subclasses set `name` and implement `trials`; most keep the default `run`."""
  name = 'finetune'
  needs_train = True

  def validate(self, ctx: Context) -> None:
    """UserError for sweep values that do not fit the model (e.g. a block index out of range)."""

  def trials(self, ctx: Context) -> list[engine_lib.Trial]:
    raise NotImplementedError

  def on_group_end(self, ctx: Context, group, per_trial, records) -> None:
    """Called with each finished group's final params (host numpy) before its records are written."""

  def finalize(self, ctx: Context, records: list[dict]) -> None:
    """Tables and figures from this run's records (process 0 only)."""

  # ------------------------------------------------------------------------- the default flow

  def load(self, config, workdir: str) -> Context:
    pre = load_pretrained(config.model)
    if pre.tokenizer is None:
      raise UserError(f'The model at {pre.path} has no tokenizer files (vocab.txt / tokenizer.json), '
                      'so the task cannot be tokenized. Save the tokenizer beside the weights '
                      '(tokenizer.save_pretrained) or use a hub id / minilm-l6.')
    splits = ('train', 'dev') if self.needs_train else ('dev',)
    task_data = data_lib.load_task_data(config.task, config.data_dir, pre.tokenizer, pre.path,
                                        config.max_seq_length, splits=splits,
                                        cache_dir=config.cache_dir or None)
    if config.eval_max_examples:
      task_data.dev = {k: v.take(np.arange(min(len(v), config.eval_max_examples)))
                       for k, v in task_data.dev.items()}
    return Context(config, workdir, pre, task_data.task, task_data)

  def run(self, config, workdir: str) -> list[dict]:
    ctx = self.load(config, workdir)
    self.validate(ctx)
    trials = self.trials(ctx)
    wd = workdir_lib.active(workdir)
    spec = engine_lib.RunSpec.from_config(config, ctx.task, workdir, ctx.pretrained.hf_config)
    spec = dataclasses.replace(spec, checkpoint_dir=wd.checkpoints)
    export_fn = lambda *a: export_trial(*a, hf_config=ctx.pretrained.hf_config)
    eng = engine_lib.Engine(
        spec, ctx.pretrained.params, ctx.data.train.as_dict(),
        {k: v.as_dict() for k, v in ctx.data.dev.items()},
        on_group_end=lambda *a: self.on_group_end(ctx, *a), export_fn=export_fn,
        after_group=wd.push)
    records = eng.run(trials)
    if dist.is_main():
      self.summarize(ctx, records)
    return records

  def summarize(self, ctx: Context, records: list[dict]) -> None:
    rows = results.write_summary_csv(os.path.join(ctx.workdir, 'summary.csv'), records)
    primary = ctx.task.primary_metric
    for r in rows:
      if r['metric'] == primary:
        logging.info('%s n=%s %s: %s = %.4f (95%% CI %.4f..%.4f, %d trials)', r['task'],
                     r['train_size'], r['setting'], primary, r['mean'], r['ci95_low'],
                     r['ci95_high'], r['n'])
    os.makedirs(os.path.join(ctx.workdir, 'plots'), exist_ok=True)
    self.finalize(ctx, records)
