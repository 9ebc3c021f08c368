"""Your own data (`task=custom`): csv/tsv/json/jsonl/parquet files or a hub dataset as a TaskSpec.

`from_config(config)` reads both splits through `datasets`, checks the columns and labels and
returns a `CustomTask`: its TaskSpec (classes = the training split's sorted label set, or
regression; the metrics it reports) and its examples. The run carries it: `glue.load_task_data`
takes it in place of a GLUE task name, so the engine, the metrics, the tokenization cache and every
study work on it unchanged, and two runs in one process never share it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from pathlib import Path
from typing import Any

from absl import logging as absl_logging
import numpy as np

from jaxtransfer.data.readers import (FORMATS, check_columns, check_present, class_key, empty, feature,
                                      file_format, load_file, load_hub, regression_labels,
                                      resolve_kind, texts)
from jaxtransfer.data.tokenize import default_cache_dir
from jaxtransfer.data.types import Examples, Source, TaskSpec
from jaxtransfer.errors import UserError
from jaxtransfer.errors import check_choices

NAME = 'custom'
# Extension -> reader. `.tsv` is read like GLUE's files: tab-separated with no quoting, because a
# quote-aware reader silently merges rows of real TSV files (98 of MRPC's 3,668 training rows).
LABEL_TYPES = ('auto', 'classification', 'regression')
CLASSIFICATION_METRICS = ('accuracy', 'f1', 'mcc')
REGRESSION_METRICS = ('spearman', 'pearson')
METRICS = ('auto', *CLASSIFICATION_METRICS, *REGRESSION_METRICS)
# Keys that only mean something with task=custom; set with another task they would be ignored.
DATA_KEYS = ('train_file', 'dev_file', 'dataset', 'dataset_config')
SPLITS = ('train', 'dev')


def is_custom(task) -> bool:
  return str(task).strip().lower() == NAME


# --------------------------------------------------------------------------------------------
# The config keys (checked without reading any data).


def _str_key(config, key: str) -> str:
  return str(config.get(key, '') or '').strip()


def parse_text_fields(value) -> tuple[str, ...]:
  """'premise,hypothesis' -> ('premise', 'hypothesis'); a list or tuple is taken as it is."""
  if isinstance(value, (list, tuple)):
    return tuple(str(v).strip() for v in value)
  return tuple(v.strip() for v in str(value or '').split(','))


def check_config(config) -> Source:
  """The custom-data keys of `config` as a Source; a UserError naming the key for a bad value.

  Reads no data: file existence and extensions, one source (files or a hub dataset), one or two
  text fields, a label field, known label_type and metric, and a metric that fits the label type.
  """
  text_fields = parse_text_fields(config.get('text_fields', ''))
  if len(text_fields) not in (1, 2) or not all(text_fields):
    raise UserError(
        f'text_fields={config.get("text_fields", "")!r} names {len([f for f in text_fields if f])} '
        'column(s). Give one text column, or two comma-separated for sentence pairs, e.g. '
        '--config.text_fields=review or --config.text_fields=premise,hypothesis.')
  label_field = _str_key(config, 'label_field')
  if not label_field:
    raise UserError('label_field is empty: name the column that holds the labels, e.g. '
                    '--config.label_field=label.')
  label_type = _str_key(config, 'label_type').lower() or 'auto'
  check_choices('label_type', label_type, LABEL_TYPES)
  metric = _str_key(config, 'metric').lower() or 'auto'
  check_choices('metric', metric, METRICS)
  _check_metric(metric, label_type)
  src = Source(
      train_file=_str_key(config, 'train_file'), dev_file=_str_key(config, 'dev_file'),
      dataset=_str_key(config, 'dataset'), dataset_config=_str_key(config, 'dataset_config'),
      train_split=_str_key(config, 'train_split') or 'train',
      dev_split=_str_key(config, 'dev_split') or 'validation',
      text_fields=text_fields, label_field=label_field, label_type=label_type, metric=metric)
  files = [k for k in ('train_file', 'dev_file') if src.file(k[:-5])]
  if src.dataset and files:
    raise UserError(
        f'Both dataset={src.dataset!r} and {" and ".join(files)} are set: task=custom reads either '
        'local files (--config.train_file and --config.dev_file) or a hub dataset '
        '(--config.dataset); clear the other.')
  if not src.dataset and not files:
    raise UserError(
        'task=custom needs your data: set --config.train_file=<file> and --config.dev_file=<file> '
        f'(the format follows the extension: {", ".join(FORMATS)}), or a hub dataset with '
        '--config.dataset=<id> [--config.dataset_config=...].')
  if not src.dataset:
    for split in SPLITS:
      key = f'{split}_file'
      if not src.file(split):
        other = 'dev_file' if split == 'train' else 'train_file'
        raise UserError(
            f'{key} is empty but {other} is set: task=custom needs both a training and a dev '
            f'file (--config.{key}=<file>). The class set comes from the training file; every '
            'study evaluates on the dev file.')
    for split in SPLITS:
      key, path = f'{split}_file', src.file(split)
      file_format(key, path)
      if not os.path.isfile(os.path.expanduser(path)):
        raise UserError(f'{key}={path!r} does not exist or is not a file. Pass the path of your '
                        f'{split} data (--config.{key}).')
  return src


def check_unused(config) -> None:
  """The custom-data keys are set but task is a GLUE task: they would be silently ignored."""
  given = [k for k in DATA_KEYS if _str_key(config, k)]
  if given:
    raise UserError(
        f'{", ".join(f"{k}={_str_key(config, k)!r}" for k in given)} set, but task='
        f'{config.task!r}: your own data is read only with --config.task=custom. Set it, or '
        f'clear {", ".join(given)} to run the GLUE task.')


def _check_metric(metric: str, kind: str, label_names: tuple[str, ...] = ()) -> None:
  if kind == 'regression' and metric in CLASSIFICATION_METRICS:
    raise UserError(f'metric={metric} is a classification metric but the labels are regression '
                    f'scores: use {" or ".join(REGRESSION_METRICS)} (--config.metric, or auto).')
  if kind == 'classification' and metric in REGRESSION_METRICS:
    raise UserError(f'metric={metric} is a regression metric but the labels are classes: use '
                    f'{", ".join(CLASSIFICATION_METRICS)} (--config.metric, or auto).')
  if metric == 'f1' and label_names and len(label_names) != 2:
    raise UserError(
        f'metric=f1 is the F1 of the second class and needs exactly two classes; the training '
        f'split has {len(label_names)} ({", ".join(label_names)}). Use accuracy or mcc '
        '(--config.metric).')


# --------------------------------------------------------------------------------------------
# The task.


@dataclasses.dataclass
class CustomTask:
  """A resolved custom task: its spec, where it came from, and both splits' examples."""
  spec: TaskSpec
  source: Source
  metrics: tuple[str, ...]
  examples: dict[str, Examples]

  def cache_source(self, split: str) -> dict[str, Any]:
    """What identifies a split's encoded arrays: origin, columns, classes and a content hash.

    Dev label ids depend on the training split's classes, so the class list is part of the key.
    """
    src = self.source
    if src.is_hub:
      origin = {'dataset': src.dataset, 'config': src.dataset_config, 'split': src.hub_split(split)}
    else:
      path = Path(os.path.expanduser(src.file(split))).resolve()
      st = path.stat()
      origin = {'file': [str(path), st.st_size, st.st_mtime_ns]}
    return {**origin, 'text_fields': list(src.text_fields), 'label_field': src.label_field,
            'label_names': list(self.spec.label_names), 'regression': self.spec.is_regression,
            'sha256': _digest(self.examples[split])}

  def info(self) -> dict[str, Any]:
    """task.json: what the run's class ids and metrics mean."""
    src, spec = self.source, self.spec
    origin = ({'dataset': src.dataset, 'dataset_config': src.dataset_config,
               'train_split': src.train_split, 'dev_split': src.dev_split} if src.is_hub else
              {'train_file': str(Path(os.path.expanduser(src.train_file)).resolve()),
               'dev_file': str(Path(os.path.expanduser(src.dev_file)).resolve())})
    return {'task': NAME, 'name': spec.dirname, **origin, 'text_fields': list(src.text_fields),
            'label_field': src.label_field,
            'label_type': 'regression' if spec.is_regression else 'classification',
            'label_names': list(spec.label_names), 'num_labels': spec.num_labels,
            'metrics': list(self.metrics), 'primary_metric': spec.primary_metric,
            'rows': {s: len(e) for s, e in self.examples.items()}}

  def describe(self) -> str:
    spec = self.spec
    if spec.is_regression:
      labels = 'regression scores'
    else:
      shown = ', '.join(f'{n}={i}' for i, n in enumerate(spec.label_names[:20]))
      more = f', ... ({spec.num_labels} in all)' if spec.num_labels > 20 else ''
      labels = f'{spec.num_labels} classes ({shown}{more})'
    rows = ' / '.join(f'{len(e)} {s}' for s, e in self.examples.items())
    return (f'Custom task {spec.dirname!r}: {labels}; {rows} rows; text '
            f'{" + ".join(map(repr, self.source.text_fields))}, label {self.source.label_field!r}; '
            f'metrics {", ".join(self.metrics)}.')


def _digest(ex: Examples) -> str:
  h = hashlib.sha256()
  h.update(json.dumps([ex.text_a, ex.text_b]).encode())
  h.update(np.ascontiguousarray(ex.labels).tobytes())
  h.update(str(ex.labels.dtype).encode())
  return h.hexdigest()


def _class_labels(raw, train_labels, src: Source, class_label):
  """(class names: the training split's sorted set, {split: class ids}); a dev label that training
  never saw is an error."""
  labels: dict[str, np.ndarray] = {}
  keys = [class_key(v, class_label) for v in train_labels]
  label_names = tuple(name for _, name in sorted(set(keys)))
  if len(label_names) < 2:
    raise UserError(
        f'The training split ({src.where("train")}) has a single class, '
        f'{label_names[0]!r}, in column {src.label_field!r}: classification needs at least two. '
        'Check --config.label_field, or set --config.label_type=regression for scores.')
  ids = {n: i for i, n in enumerate(label_names)}
  labels['train'] = np.asarray([ids[n] for _, n in keys], np.int32)
  dev_values = list(raw['dev'][src.label_field])
  check_present(dev_values, src, 'dev')
  dev_class_label = feature(raw['dev'], src.label_field) or class_label
  dev_names = [class_key(v, dev_class_label)[1] for v in dev_values]
  unseen = [i for i, n in enumerate(dev_names) if n not in ids]
  if unseen:
    names = list(dict.fromkeys(dev_names[i] for i in unseen))
    shown = ', '.join(map(repr, names[:5])) + (f' and {len(names) - 5} more' if len(names) > 5
                                                else '')
    listed = ', '.join(label_names[:20]) + (', ...' if len(label_names) > 20 else '')
    raise UserError(
        f'Dev label {shown} ({len(unseen)} row(s), first: row {unseen[0] + 1} of '
        f'{src.where("dev")}) never occurs in the training split, whose classes in column '
        f'{src.label_field!r} are: {listed}. A model cannot predict a class it never saw: fix '
        'those labels, or add training examples of that class.')
  labels['dev'] = np.asarray([ids[n] for n in dev_names], np.int32)
  return label_names, labels


def build(src: Source, cache_dir: str | None = None) -> CustomTask:
  """Reads both splits of `src` and resolves the label type, classes and metrics."""
  cache_dir = os.path.expanduser(cache_dir or default_cache_dir())
  load = (lambda s: load_hub(src, s)) if src.is_hub else (lambda s: load_file(src, s, cache_dir))
  raw = {}
  for split in SPLITS:
    ds = load(split)
    check_columns(src, ds.column_names, src.where(split))
    if len(ds) == 0:
      raise empty(src, split)
    raw[split] = ds
  train_labels = list(raw['train'][src.label_field])
  check_present(train_labels, src, 'train')
  class_label = feature(raw['train'], src.label_field)
  kind = resolve_kind(train_labels, src, class_label)

  label_names: tuple[str, ...] = ()
  labels: dict[str, np.ndarray] = {}
  if kind == 'regression':
    for split in SPLITS:
      values = train_labels if split == 'train' else list(raw[split][src.label_field])
      check_present(values, src, split)
      labels[split] = regression_labels(values, src, split)
  else:
    label_names, labels = _class_labels(raw, train_labels, src, class_label)

  metric = src.metric if src.metric != 'auto' else (
      'spearman' if kind == 'regression' else 'accuracy')
  _check_metric(metric, kind, label_names)
  if kind == 'regression':
    metrics = (metric, *[m for m in REGRESSION_METRICS if m != metric])
  else:
    metrics = (metric,) if metric == 'accuracy' else (metric, 'accuracy')

  examples = {}
  pair = len(src.text_fields) == 2
  for split in SPLITS:
    cols = [texts(raw[split][c], c, src.where(split)) for c in src.text_fields]
    examples[split] = Examples(cols[0], cols[1] if pair else None, labels[split])
  regression = kind == 'regression'
  spec = TaskSpec(
      name=NAME, dirname=src.display_name, num_labels=1 if regression else len(label_names),
      is_regression=regression, label_names=label_names, is_pair=pair, primary_metric=metric,
      dev_splits={'': 'dev'}, metrics=metrics)
  return CustomTask(spec=spec, source=src, metrics=metrics, examples=examples)


def from_config(config) -> CustomTask:
  """The custom task of `config`: its files or hub dataset read and checked, its spec built."""
  task = build(check_config(config), config.get('cache_dir') or None)
  absl_logging.info(task.describe())
  return task


TASK_JSON = 'task.json'  # in the workdir: label names (class id order), columns, metrics, sources


def read_info(workdir: str) -> dict[str, Any] | None:
  """The workdir's task.json (`CustomTask.info`), None when absent or unreadable."""
  try:
    with open(os.path.join(workdir, TASK_JSON), encoding='utf-8') as f:
      return json.load(f)
  except (OSError, json.JSONDecodeError):
    return None


def spec_from_info(info: dict[str, Any]) -> TaskSpec:
  """The spec that a workdir's task.json (`CustomTask.info`) describes, for reading results
  back in another process."""
  regression = info['label_type'] == 'regression'
  return TaskSpec(name=NAME, dirname=info['name'], num_labels=int(info['num_labels']),
                  is_regression=regression, label_names=tuple(info['label_names']),
                  is_pair=len(info['text_fields']) == 2, primary_metric=info['primary_metric'],
                  dev_splits={'': 'dev'}, metrics=tuple(info['metrics']))
