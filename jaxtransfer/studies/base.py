"""What every study shares: loading model and data, building programs, running, summarizing."""

from __future__ import annotations

import dataclasses
import itertools
import os
from typing import Any, Mapping, Sequence

import numpy as np
from absl import logging
from flax import traverse_util

from jaxtransfer.runtime import config_history
from jaxtransfer.engine import trials as trials_lib
from jaxtransfer.data import custom as custom_data
from jaxtransfer.data import locations
from jaxtransfer.data import glue as data_lib
from jaxtransfer.data.types import TaskSpec
from jaxtransfer.runtime import distributed as dist
from jaxtransfer.engine import engine as engine_lib
from jaxtransfer.data import metrics as metrics_lib
from jaxtransfer.core import program as program_lib
from jaxtransfer.report import best as best_lib
from jaxtransfer.report import bootstrap
from jaxtransfer.report import summary
from jaxtransfer.runtime import records as records_lib
from jaxtransfer.runtime import workdir as workdir_lib
from jaxtransfer.runtime.workers import Workers
from jaxtransfer.report import plots
from jaxtransfer.errors import UserError, check_choices
from jaxtransfer.models import convert
from jaxtransfer.models import heads
from jaxtransfer.models import lora as lora_lib
from jaxtransfer.models.pretrained import Pretrained, load_pretrained, sentence_pooling
from jaxtransfer.studies import representations


@dataclasses.dataclass
class Context:
  """What a study's `trials` and `finalize` get: the run's config, model, task and data."""
  config: Any
  workdir: str
  pretrained: Pretrained
  task: TaskSpec
  data: data_lib.TaskData | None
  info: plots.RunInfo = plots.RunInfo()  # what the figures say: the data used, the chance line
  # The run's workdir (a remote one's mirror is `workdir`); per-program figures from `prepare`.
  wd: workdir_lib.Workdir | None = None
  prepared: dict = dataclasses.field(default_factory=dict)

  @property
  def run_dir(self) -> workdir_lib.Workdir:
    return self.wd or workdir_lib.Workdir(self.workdir)


def majority_score(task: TaskSpec, labels: np.ndarray) -> float | None:
  """The task's metric for always predicting the most frequent dev label (None for regression)."""
  labels = np.asarray(labels)
  if task.is_regression or not len(labels):
    return None
  major = int(np.bincount(labels.astype(np.int64), minlength=task.num_labels).argmax())
  preds = np.full(len(labels), major, np.int32)
  return float(metrics_lib.compute_metrics(task, preds, labels)[task.primary_metric])


def run_info(config, task_data: data_lib.TaskData, n_dev_total: int) -> plots.RunInfo:
  """Which data the run used, in words ('demo sentiment set (342 train / 85 dev)', 'SST-2'), and
  the majority-class score of the dev set it evaluated on."""
  task, dev = task_data.task, task_data.dev['']
  n_dev = len(dev)
  dev_text = f'{n_dev} dev' if n_dev == n_dev_total else f'first {n_dev} of {n_dev_total} dev'
  if str(config.data_dir).strip() == 'demo':
    n_train = len(task_data.train) if task_data.train is not None else 0
    data = f'demo sentiment set ({n_train} train / {dev_text})'
  else:
    data = task.dirname + ('' if n_dev == n_dev_total else f' ({dev_text} examples)')
  return plots.RunInfo(data, task.primary_metric, majority_score(task, dev.labels))


def merged_run_info(configs: Mapping[str, Mapping[str, Any]], task: str) -> plots.RunInfo | None:
  """The RunInfo of a figure merging finished workdirs (their config.json by workdir): the GLUE
  dev set of `task` read from the first such workdir's data_dir, for the majority-class line.
  None when no workdir of `task` has a readable local GLUE dev set (a hub or custom run)."""
  for cfg in configs.values():
    if cfg.get('task') != task or str(cfg.get('data_dir', '')).strip() in ('', 'demo'):
      continue
    try:
      spec = data_lib.get_task(task)
      labels = data_lib.read_split(spec, cfg['data_dir'], 'dev').labels
    except (OSError, UserError):
      continue
    if cfg.get('eval_max_examples'):
      labels = labels[:int(cfg['eval_max_examples'])]
    return plots.RunInfo(spec.dirname, spec.primary_metric, majority_score(spec, labels))
  return None


SELECTION = 'selection_'  # the held-out split's key among the dev sets, and its metrics' prefix


def hold_out_selection(config, task_data: data_lib.TaskData) -> None:
  """With `selection_split`, a label-stratified part of the training set, the same for every
  trial, is evaluated as the dev set `selection_` (metrics `selection_<name>`) and never trained
  on: every trial's subset is drawn from the rest."""
  size = float(config.get('selection_split', 0) or 0)
  if not size or task_data.train is None:
    return
  rest, held = data_lib.hold_out(task_data.train, task_data.task, size,
                                 int(config.get('selection_seed', 0)))
  logging.info('Selection split: %d of %d training examples held out (selection_seed %d); the '
               'trials train on the other %d and choose by selection_%s, never by dev.', len(held),
               len(task_data.train), int(config.get('selection_seed', 0)), len(rest),
               task_data.task.primary_metric)
  task_data.train = rest
  task_data.dev[SELECTION] = held


def expand_learning_rates(config, trials: Sequence[trials_lib.Trial]) -> list[trials_lib.Trial]:
  """`learning_rates` as a sweep axis: each trial once per rate, its setting holding the rate.
  A method with its own rate (adapters, LoRA, BitFit) is scaled by the same factor: rate x
  (swept rate / learning_rate). Trials that differ only in their rate share one program, so
  they run in one compiled group."""
  rates = [float(r) for r in config.get('learning_rates', ()) or ()]
  if not rates:
    return list(trials)
  out = []
  for t in trials:
    for lr in rates:
      own = lr if t.learning_rate is None else t.learning_rate * (lr / config.learning_rate)
      out.append(trials_lib.Trial(t.seed, t.train_size, {**t.setting, 'learning_rate': lr},
                                  t.program, dict(t.arrays), learning_rate=own))
  return out


def require_classification(task: TaskSpec, study: str) -> None:
  """The studies built on class labels (ν, probes) refuse regression tasks, before loading data."""
  if task.is_regression:
    raise UserError(f'The {study} study needs class labels, but task {task.name} is a regression '
                    'task. Use a classification task (cola, sst2, mrpc, qqp, mnli, qnli, rte, wnli) '
                    'with --config.task.')


def default_head(config, pre: Pretrained) -> str:
  if config.head != 'auto':
    return config.head
  # BERT classifies through its pretrained pooler; RoBERTa (no pooler) through a fresh dense-tanh,
  # and MPNet through its own (MPNetForSequenceClassification never reads the pooler).
  if pre.config.model_type == 'mpnet':
    return 'mlp'
  return 'pooler' if pre.config.has_pooler else 'mlp'


POOLINGS = ('auto', 'cls', 'mean')


def model_pooling(model_path: str) -> tuple[str, str]:
  """What `pooling=auto` reads a checkpoint by, and why: mean for a sentence-transformers folder
  whose Pooling config (its 1_Pooling/config.json) says mean, else cls (each family's own head on
  the first token)."""
  trained = sentence_pooling(model_path)
  if trained == 'mean':
    return 'mean', (f'{model_path} is a sentence-transformers folder whose Pooling config says '
                    'pooling_mode_mean_tokens')
  return 'cls', ("the family's own head on the first token" +
                 (f'; its sentence-transformers pooling is {trained}' if trained else ''))


def resolve_pooling(config, model_path: str, workdir: str | None = None) -> str:
  """`pooling=auto` made concrete in config.pooling, so that config.json, its hash and every
  record name what ran: the pooling a workdir's finished trials (or group in flight) were made
  with, so that it resumes as it was made; else `model_pooling`. Process 0 decides (it reads the
  workdir) for every process."""
  if config.pooling != 'auto':
    return config.pooling
  made = set()
  if workdir is not None and dist.is_main():
    made = {c.get('pooling', 'cls') for c in config_history.bound_configs(workdir).values()}
  if len(made) == 1 and made <= {'cls', 'mean'}:
    choice, why = next(iter(made)), f'as the finished trials in {workdir} were made'
  else:
    choice, why = model_pooling(model_path)
  if workdir is not None:
    choice = 'mean' if dist.agree(choice == 'mean') else 'cls'
  logging.info('pooling=auto: %s (%s).', choice, why)
  config.pooling = choice
  return choice


def warn_pooling(config, pre: Pretrained) -> None:
  """A sentence-transformers encoder whose frozen blocks are read through the first token learns
  slowly: say so before training."""
  trained = sentence_pooling(pre.path)
  if trained == 'mean' and config.get('pooling', 'cls') == 'cls':
    logging.warning(
        'model %s is a sentence-transformers encoder trained to be read through the mean of its '
        'token vectors, and this run reads its first token (pooling=cls): heads over its frozen '
        'blocks learn slowly there (select.py with a fresh first-token head on all-MiniLM-L6-v2 stayed at '
        '0.51-0.53 dev accuracy on SST-2 after 150 steps). Pass --config.pooling=mean (or auto, '
        'in a new workdir) to read it as it was trained.', config.model)


def make_program(ctx: Context, **overrides) -> program_lib.Program:
  """The standard encoder program for this run; a study overrides what it intervenes on."""
  c = ctx.config
  kw = dict(encoder=ctx.pretrained.config, num_labels=ctx.task.num_labels,
            num_blocks=ctx.pretrained.config.num_layers, head=default_head(c, ctx.pretrained),
            pooling=(model_pooling(ctx.pretrained.path)[0] if c.pooling == 'auto' else c.pooling),
            dtype=c.dtype, remat=c.get('remat', 'none') == 'block',
            head_init=c.get('head_init', 'normal'),
            layer_lr_decay=float(c.get('layer_lr_decay', 1.0)), flops_seq_len=c.max_seq_length)
  kw.update(overrides)
  return program_lib.Program(**kw)


def lora_targets(config) -> tuple[str, ...]:
  """`lora_targets` as matrix names: a tuple, or comma-separated names (`query,value`)."""
  raw = [config.lora_targets] if isinstance(config.lora_targets, str) else config.lora_targets
  return tuple(t.strip() for v in raw for t in str(v).split(',') if t.strip())


def check_method_keys(config, methods, pretrained: Pretrained | None = None) -> None:
  """UserError for LoRA/adapter keys that cannot build the `methods` being run, and for BitFit on
  a model whose blocks have no biases (ModernBERT by default)."""
  if 'bitfit' in methods and pretrained is not None and not any(
      path[-1] == 'bias' for path in traverse_util.flatten_dict(pretrained.params['blocks'])):
    raise UserError(f'method=bitfit trains only bias terms, and the blocks of {config.model} have '
                    'none (e.g. ModernBERT without attention_bias/mlp_bias), so only the head '
                    'would train. Use another method (--config.method).')
  if 'adapter' in methods and config.adapter_size <= 0:
    raise UserError(f'adapter_size={config.adapter_size} must be positive for method=adapter '
                    '(--config.adapter_size).')
  if 'lora' in methods:
    if config.lora_rank <= 0 or config.lora_alpha <= 0:
      raise UserError(f'lora_rank={config.lora_rank} and lora_alpha={config.lora_alpha} must be '
                      'positive for method=lora (--config.lora_rank, --config.lora_alpha).')
    if not 0 <= config.lora_dropout < 1:
      raise UserError(f'lora_dropout={config.lora_dropout} must be in [0, 1) '
                      '(--config.lora_dropout).')
    check_choices('lora_targets', lora_targets(config), program_lib.MASKABLE, many=True)
    if len(set(lora_targets(config))) != len(lora_targets(config)):
      raise UserError(f'lora_targets={list(lora_targets(config))} repeats a matrix; list each once '
                      '(--config.lora_targets).')


def method_options(config, method: str) -> dict[str, Any]:
  """Program options that make the tuned blocks train by `method`: all their weights
  (`finetune`), Houlsby adapters + LayerNorms (`adapter`), LoRA factors of `lora_targets`
  (`lora`), or their biases (`bitfit`)."""
  if method == 'adapter':
    return dict(block_params='layernorm', adapter_size=config.adapter_size,
                adapter_style=config.get('adapter_style', 'houlsby'))
  if method == 'lora':
    return dict(block_params='none', lora=lora_lib.Lora(
        int(config.lora_rank), float(config.lora_alpha), lora_targets(config),
        float(config.lora_dropout)))
  if method == 'bitfit':
    return dict(block_params='bias')
  return {}


def method_learning_rate(config, method: str) -> float:
  """The peak learning rate of a tuning method: `<method>_learning_rate`, else `learning_rate`."""
  return float(config.get(f'{method}_learning_rate') or config.learning_rate)


def grid(config, **sweeps: Sequence[Any]):
  """(train_size, seed, {key: value}) over train_sizes x seeds x the study's sweep keys."""
  keys = list(sweeps)
  for size in config.train_sizes:
    for values in itertools.product(*(sweeps[k] for k in keys)):
      for seed in config.seeds:
        yield int(size), int(seed), dict(zip(keys, values))


def export_trial(program, train, frozen, arrays, outdir: str, hf_config: dict,
                 label_names: Sequence[str] = ()) -> None:
  """A trial's fine-tuned (or masked) encoder + classifier in HF format, its outputs named by
  `label_names` (the task's, in class-id order; none for regression)."""
  if program.pooling == 'mean' and not heads.export_config(program.encoder, 'mean'):
    # Only ModernBERT's HF classifier can mean-pool (classifier_pooling); the others read <s>.
    logging.warning('Exporting a trial that pooled by the token mean (pooling=mean): transformers\' '
                    '%s reads the first token, so its logits differ from the trial\'s; the encoder '
                    'and head weights are the trial\'s.', convert.architecture(program.encoder, True))
  tree = program.export_params(train, frozen, arrays)
  # The source checkpoint's labels and problem type belong to its own head, not to this trial's.
  cfg = {k: v for k, v in hf_config.items()
         if k not in ('id2label', 'label2id', 'num_labels', 'problem_type')}
  cfg.update(program.encoder.to_hf())
  cfg.update(heads.export_config(program.encoder, program.pooling))
  cfg.update(heads.label_config(program.num_labels, label_names))
  cfg['num_hidden_layers'] = program.num_blocks
  head = program.export_head(train, frozen)
  if program.encoder.model_type in heads.MLP_HEAD and program.uses_pooler:
    # HF's RoBERTa and MPNet classifiers read no pooler (they would re-initialize a pooler +
    # linear head).
    head = heads.pooler_head_as_roberta(tree['pooler'], head)
  # convert.export writes the family's own *ForSequenceClassification class as `architectures`.
  convert.export(outdir, tree, cfg, head=head)


class Experiment:
  """A study. Subclasses set `name` and implement `trials`; the hooks below are optional.

  A study keeps no state: what a run computes travels in its `Context` (`prepare`'s figures as
  `ctx.prepared`), so the hooks are pure functions of the context, the trial and its params.
  """
  name = 'finetune'
  needs_train = True
  # Config keys whose values each trial's setting records (besides seeds and train_sizes): a
  # re-run that changes only these adds or drops trials, it does not change finished ones.
  sweep_keys: tuple[str, ...] = ()
  # Some trials train a head over frozen blocks (select, freeze, probe): the pooling matters most.
  trains_heads_on_frozen_blocks = False
  # Whether its trials change the encoder (representation_similarity measures what they did).
  fine_tunes = True

  def resolve(self, config) -> None:
    """Fills config values a study derives from others (before validation and config.json)."""

  def validate(self, ctx: Context) -> None:
    """UserError for sweep values that do not fit the model (e.g. a block index out of range)."""

  def trials(self, ctx: Context) -> list[trials_lib.Trial]:
    raise NotImplementedError

  def prepare(self, ctx: Context, trials) -> dict:
    """Per-program figures the hooks read (as `ctx.prepared`), computed once before training."""
    del ctx, trials
    return {}

  def finalize(self, ctx: Context, records: list[dict]) -> None:
    """Tables and figures from this run's records (process 0 only)."""

  def reference_setting(self, ctx: Context, records: list[dict]) -> dict | None:
    """The setting every other one is compared with in differences.csv (the paired bootstrap
    over dev examples and seeds, report/bootstrap.py), as the key=values that make a setting the
    reference (e.g. {'k': L}; its other keys follow the compared setting's); None: no table."""
    del ctx, records
    return None

  # ------------------------------------------------------------------------- per-trial hooks

  def uses_params(self, ctx: Context, program) -> bool:
    """Whether this program's finished trials need their params (for metrics or side files)."""
    return bool(ctx.config.export_model)

  def trial_metrics(self, ctx: Context, trial, params: trials_lib.TrialParams) -> dict[str, float]:
    """Extra metrics of an ok trial from its final params, merged into its record. Pure."""
    return {}

  def write_outputs(self, ctx: Context, trial, params: trials_lib.TrialParams) -> None:
    """Side files of an ok trial, written before its record (process 0): the HF export."""
    if ctx.config.export_model:
      export_trial(trial.program, params.train, params.frozen, params.arrays,
                   os.path.join(ctx.workdir, 'models', trial.trial_id),
                   hf_config=ctx.pretrained.hf_config, label_names=ctx.task.label_names)

  # ------------------------------------------------------------------------- the common flow

  def load(self, config, workdir: str | workdir_lib.Workdir,
           task: TaskSpec | custom_data.CustomTask | None = None) -> Context:
    """Model and data of the run; `task` is the GLUE task or your own data (custom.from_config),
    by default the GLUE task `config.task` names."""
    wd = workdir if isinstance(workdir, workdir_lib.Workdir) else workdir_lib.Workdir(workdir)
    task = config.task if task is None else task
    pre = load_pretrained(config.model)
    resolve_pooling(config, pre.path)  # the CLI resolved it already, with the workdir's history
    if self.trains_heads_on_frozen_blocks:
      warn_pooling(config, pre)
    if pre.tokenizer is None:
      raise UserError(f'The model at {pre.path} has no tokenizer files (vocab.txt / tokenizer.json), '
                      'so the task cannot be tokenized. Save the tokenizer beside the weights '
                      '(tokenizer.save_pretrained) or use a hub id / minilm-l6.')
    splits = ('train', 'dev') if self.needs_train else ('dev',)
    task_data = data_lib.load_task_data(task, config.data_dir, pre.tokenizer, pre.path,
                                        config.max_seq_length, splits=splits,
                                        cache_dir=config.cache_dir or None)
    n_dev = len(task_data.dev[''])
    if config.eval_max_examples:
      task_data.dev = {k: v.take(np.arange(min(len(v), config.eval_max_examples)))
                       for k, v in task_data.dev.items()}
    hold_out_selection(config, task_data)
    return Context(config, wd.local, pre, task_data.task, task_data,
                   run_info(config, task_data, n_dev), wd=wd)

  def engine_inputs(self, ctx: Context, trials) -> tuple[dict, dict, dict]:
    """(pretrained params, training data, {dev suffix: dev data}) the engine trains on."""
    del trials
    return (ctx.pretrained.params, ctx.data.train.as_dict(),
            {k: v.as_dict() for k, v in ctx.data.dev.items()})

  def run_spec(self, ctx: Context, trials) -> trials_lib.RunSpec:
    del trials
    return trials_lib.RunSpec.from_config(
        ctx.config, ctx.task, ctx.workdir, checkpoint_dir=ctx.run_dir.checkpoints,
        workdir_root=ctx.run_dir.path,
        config_hash=config_history.config_hash(locations.stored(ctx.config,
                                                                ctx.run_dir.data_base)))

  def execute(self, ctx: Context, engine: engine_lib.Engine, trials) -> list[dict]:
    """Trains the trials; a study with phases (closeness) runs the same engine again."""
    return engine.run(trials)

  def run(self, config, workdir: str | workdir_lib.Workdir,
          task: TaskSpec | custom_data.CustomTask | None = None) -> list[dict]:
    ctx = self.load(config, workdir, task)
    self.validate(ctx)
    check_similarity_keys(self, config)
    trials = expand_learning_rates(config, self.trials(ctx))
    ctx.prepared = self.prepare(ctx, trials)
    workers = Workers.from_config(config)
    eng = engine_lib.Engine(self.run_spec(ctx, trials), *self.engine_inputs(ctx, trials),
                            hooks=_Hooks(self, ctx), after_group=ctx.run_dir.push,
                            workers=workers, lease_timeout=config.get('lease_timeout', 600),
                            before_group=lambda: ctx.run_dir.pull(records_lib.GROUPS_DIR))
    if config.get('summarize_only', False):
      eng.records_of(trials)  # logs how many of this config's trials are finished
      # Every record of the workdir, also those of trials this config does not list (seeds that a
      # preset added for some sizes, a worker's other settings).
      records = records_lib.read_records(eng.records_path)
    else:
      records = self.execute(ctx, eng, trials)
    if dist.is_main():
      self.summarize(ctx, records)
    return records

  def summarize(self, ctx: Context, records: list[dict]) -> None:
    exclude = bool(ctx.config.get('exclude_degenerate', False))
    rows = summary.write_summary_csv(os.path.join(ctx.workdir, 'summary.csv'), records, exclude)
    primary = ctx.task.primary_metric
    for r in rows:
      if r['metric'] == primary:
        logging.info('%s', summary.describe_row(r))
    reference = self.reference_setting(ctx, records)
    if reference is not None:
      for r in bootstrap.write_differences_csv(ctx.workdir, records, reference, primary):
        logging.info('%s - %s at train size %s: %s %+.4f (95%% CI %+.4f..%+.4f, p %.3f)',
                     r['setting'], r['reference'], r['train_size'], primary, r['diff'],
                     r['ci95_low'], r['ci95_high'], r['p'])
    os.makedirs(os.path.join(ctx.workdir, 'plots'), exist_ok=True)
    # Every trial's rows, a swept learning rate's too (each rate its own line in the figure).
    representations.write(ctx.workdir, records, ctx.info)
    swept = bool(ctx.config.get('learning_rates', ()))
    if swept or ctx.config.get('selection_split', 0):
      chosen = best_lib.write(ctx.workdir, records, primary, ctx.info, exclude)
      if swept:
        # The study's own tables and figures show each setting at its chosen rate, and say so.
        on = chosen[0]['selected_on'] if chosen else 'selection'
        note = f'lr chosen per setting on the {on} {"split" if on == "selection" else "set"}'
        ctx = dataclasses.replace(ctx, info=dataclasses.replace(
            ctx.info, data=f'{ctx.info.data}; {note}' if ctx.info.data else note))
        records = best_lib.chosen_records(records, chosen)
    self.finalize(ctx, records)


def check_similarity_keys(study: Experiment, config) -> None:
  """UserError for representation_similarity on a study that leaves the encoder as it is."""
  if not config.get('representation_similarity', False):
    return
  if not study.fine_tunes:
    raise UserError(f'representation_similarity=True compares each fine-tuned trial with the '
                    f'pretrained model, and the {study.name} study does not change the encoder. '
                    'Drop --config.representation_similarity.')
  if int(config.get('similarity_examples', 256)) <= 0:
    raise UserError(f'similarity_examples={config.similarity_examples} must be positive '
                    '(--config.similarity_examples).')


@dataclasses.dataclass
class _Hooks:
  """A study's per-trial hooks bound to its run (engine.TrialHooks)."""
  study: Experiment
  ctx: Context

  def uses_params(self, program) -> bool:
    return (self.study.uses_params(self.ctx, program)
            or representations.wanted(self.ctx.config, program))

  def metrics(self, trial, params):
    # Every study that fine-tunes measures its representations the same way, whatever its own
    # per-trial metrics are.
    return {**self.study.trial_metrics(self.ctx, trial, params),
            **representations.trial_metrics(self.ctx, trial, params)}

  def write_outputs(self, trial, params):
    self.study.write_outputs(self.ctx, trial, params)
