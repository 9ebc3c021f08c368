"""GLUE's tasks, their GLUE-format TSV and hub readers, and loading any task: read, tokenize, cache."""

from __future__ import annotations

import dataclasses
import math
import os
from pathlib import Path
from typing import Sequence

import numpy as np

from jaxtransfer.data import custom as custom_data
from jaxtransfer.data import demo as demo_data
from jaxtransfer.data import tokenize as tokenized
from jaxtransfer.data.tokenize import Encoded, default_cache_dir, encode
from jaxtransfer.data.types import Examples, TaskSpec
from jaxtransfer.errors import UserError

# Bump when the reading or encoding logic changes, so stale cache files are never reused.
_CACHE_VERSION = 1
_HUB_DATASET = 'nyu-mll/glue'


# Reported metrics per task, primary metric first (GLUE's conventions; STS-B lists pearson first).
_METRICS: dict[str, tuple[str, ...]] = {
    'cola': ('mcc', 'accuracy'),
    'sst2': ('accuracy',),
    'mrpc': ('f1', 'accuracy'),
    'stsb': ('pearson', 'spearman'),
    'qqp': ('f1', 'accuracy'),
    'mnli': ('accuracy',),
    'qnli': ('accuracy',),
    'rte': ('accuracy',),
    'wnli': ('accuracy',),
}


def _spec(name, dirname, label_names, is_pair, primary, dev_splits=None) -> TaskSpec:
  regression = not label_names
  return TaskSpec(
      name=name,
      dirname=dirname,
      num_labels=1 if regression else len(label_names),
      is_regression=regression,
      label_names=tuple(label_names),
      is_pair=is_pair,
      primary_metric=primary,
      dev_splits=dev_splits or {'': 'dev'},
      metrics=_METRICS[name],
  )


TASKS: dict[str, TaskSpec] = {
    t.name: t for t in (
        _spec('cola', 'CoLA', ('unacceptable', 'acceptable'), False, 'mcc'),
        _spec('sst2', 'SST-2', ('negative', 'positive'), False, 'accuracy'),
        _spec('mrpc', 'MRPC', ('not_equivalent', 'equivalent'), True, 'f1'),
        _spec('stsb', 'STS-B', (), True, 'spearman'),
        _spec('qqp', 'QQP', ('not_duplicate', 'duplicate'), True, 'f1'),
        _spec('mnli', 'MNLI', ('entailment', 'neutral', 'contradiction'), True, 'accuracy',
              {'': 'dev_matched', '_mm': 'dev_mismatched'}),
        _spec('qnli', 'QNLI', ('entailment', 'not_entailment'), True, 'accuracy'),
        _spec('rte', 'RTE', ('entailment', 'not_entailment'), True, 'accuracy'),
        _spec('wnli', 'WNLI', ('not_entailment', 'entailment'), True, 'accuracy'),
    )
}


def get_task(name: str) -> TaskSpec:
  """Returns the spec of a GLUE task by its lowercase name ('rte', 'sst2', ...)."""
  key = str(name).strip().lower()
  # Accept the common spellings 'sst-2', 'sts-b' and 'SST-2' for the canonical names.
  key = {'sst-2': 'sst2', 'sts-b': 'stsb'}.get(key, key)
  if key == custom_data.NAME:
    raise UserError(
        'task=custom is your own data, not a GLUE task: build it from the config with '
        'jaxtransfer.data.custom.from_config(config) and pass that task on (the command line '
        'does so with --config.train_file/--config.dev_file or --config.dataset).')
  if key not in TASKS:
    raise UserError(
        f'Unknown task {name!r}. Valid tasks are: {", ".join(TASKS)}; set '
        f'--config.task=<one of them>, or --config.task=custom for your own data '
        f'(--config.train_file/--config.dev_file or --config.dataset).')
  return TASKS[key]


# --------------------------------------------------------------------------------------------
# GLUE-format TSV files.


@dataclasses.dataclass(frozen=True)
class _Layout:
  """Where the columns of one task's train/dev TSV files are."""
  text_a: str | int
  text_b: str | int | None
  label: str | int
  # Headerless files (CoLA) give integer column indices and a fixed column count.
  num_columns: int | None = None


_LAYOUTS = {
    'cola': _Layout(text_a=3, text_b=None, label=1, num_columns=4),
    'sst2': _Layout('sentence', None, 'label'),
    'mrpc': _Layout('#1 String', '#2 String', 'Quality'),
    'stsb': _Layout('sentence1', 'sentence2', 'score'),
    'qqp': _Layout('question1', 'question2', 'is_duplicate'),
    'mnli': _Layout('sentence1', 'sentence2', 'gold_label'),
    'qnli': _Layout('question', 'sentence', 'label'),
    'rte': _Layout('sentence1', 'sentence2', 'label'),
    'wnli': _Layout('sentence1', 'sentence2', 'label'),
}

# Extra hint for a known defect: the pre-2019 GLUE QQP release has rows with missing fields.
_MALFORMED_HINTS = {
    'qqp': ' The original (pre-2019) GLUE QQP release has such rows; the current QQP download '
           '(QQP-clean, as used by the hub) does not.',
}


def _check_split(task: TaskSpec, split: str) -> None:
  if split not in task.splits:
    raise UserError(
        f'Unknown split {split!r} for task {task.name}: valid labelled splits are '
        f'{", ".join(task.splits)}.')


def split_path(task: TaskSpec, data_dir: str, split: str) -> Path:
  """Returns `<data_dir>/<dirname>/<split>.tsv`, raising a UserError when it is missing."""
  _check_split(task, split)
  root = Path(os.path.expanduser(str(data_dir)))
  if not root.is_dir():
    raise UserError(
        f'data_dir {str(data_dir)!r} does not exist or is not a directory. Pass the root of '
        f'your GLUE-format data (the folder holding {task.dirname}/, e.g. '
        f'--config.data_dir=/data/glue), or leave data_dir empty to download from the hub.')
  path = root / task.dirname / f'{split}.tsv'
  if path.is_file():
    return path
  head = (f'Missing GLUE file {path}: task {task.name} needs its {split!r} split as '
          f'{task.dirname}/{split}.tsv under data_dir.')
  if (root / f'{split}.tsv').is_file() and root.name.lower() == task.dirname.lower():
    raise UserError(
        f'{head} data_dir looks like the {task.dirname} folder itself; pass its parent, '
        f'--config.data_dir={root.parent}.')
  hint = ''
  if not (root / task.dirname).is_dir():
    found = sorted(p.name for p in root.iterdir() if p.is_dir())
    hint = (f' There is no {task.dirname}/ folder in {root} (found: '
            f'{", ".join(found) or "no folders"}); folder names are case-sensitive, as in GLUE.')
  files = ', '.join(f'{s}.tsv' for s in task.splits)
  raise UserError(
      f'{head}{hint} Put the GLUE {task.dirname} task ({files}) into {root / task.dirname}, '
      f'or leave data_dir empty to use the hub.')


def _read_lines(path: Path) -> list[str]:
  raw = path.read_bytes()
  try:
    text = raw.decode('utf-8')
  except UnicodeDecodeError as e:
    line = raw[:e.start].count(b'\n') + 1
    raise UserError(
        f'{path} line {line} is not valid UTF-8 ({e.reason} at byte {e.start}). GLUE files are '
        f'UTF-8 text; re-download the task or fix that line.') from None
  text = text.removeprefix('\ufeff')  # MRPC train/dev start with a UTF-8 BOM.
  # Split on '\n' only: str.splitlines would also break on \x1c, \x85, \u2028 ... which can occur
  # inside sentences. Strip a trailing '\r' so CRLF copies read the same.
  lines = text.split('\n')
  return [line[:-1] if line.endswith('\r') else line for line in lines]


def _parse_label(task: TaskSpec, value: str, path: Path, lineno: int) -> float | int:
  value = value.strip()
  if task.is_regression:
    try:
      score = float(value)
    except ValueError:
      score = math.nan
    if not 0.0 <= score <= 5.0:  # Also rejects nan.
      raise UserError(
          f'Bad label {value!r} in {path} line {lineno}: {task.name} scores must be numbers '
          f'between 0 and 5. Re-download the task or fix that line.')
    return score
  if value in task.label_names:
    return task.label_names.index(value)
  # Numeric labels (CoLA, SST-2, MRPC, QQP, WNLI files) are class ids in label_names order.
  if value.isascii() and value.isdigit() and int(value) < task.num_labels:
    return int(value)
  allowed = ', '.join([*map(str, range(task.num_labels)), *task.label_names])
  raise UserError(
      f'Bad label {value!r} in {path} line {lineno}: task {task.name} allows only {allowed} '
      f'(ids in the order {", ".join(task.label_names)}). Re-download the task or fix that '
      f'line.')


def _column_indices(task: TaskSpec, layout: _Layout, header: list[str] | None, path: Path):
  names = [layout.text_a, layout.text_b, layout.label]
  if header is None:
    return names, layout.num_columns
  header = [h.strip() for h in header]
  missing = [n for n in names if n is not None and n not in header]
  if missing:
    raise UserError(
        f'{path} line 1 is not a GLUE {task.dirname} header: it lacks the column(s) '
        f'{", ".join(map(repr, missing))} (found {", ".join(map(repr, header))}). Labelled '
        f'GLUE train/dev files start with a header naming their columns; re-download the task.')
  return [None if n is None else header.index(n) for n in names], len(header)


def read_split(task: TaskSpec, data_dir: str, split: str) -> Examples:
  """Reads `<data_dir>/<task.dirname>/<split>.tsv` (GLUE layout, tab-separated, no quoting)."""
  path = split_path(task, data_dir, split)
  layout = _LAYOUTS[task.name]
  lines = _read_lines(path)
  if not any(lines[1 if layout.num_columns is None else 0:]):
    raise UserError(
        f'{path} has no data rows: the {task.name} {split!r} split is empty. Re-download the '
        f'GLUE {task.dirname} task.')
  start = 0
  header = None
  if layout.num_columns is None:
    header = lines[0].split('\t')
    start = 1
  (ia, ib, il), ncols = _column_indices(task, layout, header, path)
  text_a, text_b, labels = [], [], []
  for i in range(start, len(lines)):
    line = lines[i]
    if not line:  # The final newline leaves an empty last element; skip empty lines.
      continue
    fields = line.split('\t')
    if len(fields) != ncols:
      raise UserError(
          f'Malformed row in {path} line {i + 1}: expected {ncols} tab-separated columns, '
          f'found {len(fields)}. GLUE files are tab-separated with no quoting; re-download the '
          f'task or fix that line.{_MALFORMED_HINTS.get(task.name, "")}')
    text_a.append(fields[ia])
    if ib is not None:
      text_b.append(fields[ib])
    labels.append(_parse_label(task, fields[il], path, i + 1))
  dtype = np.float32 if task.is_regression else np.int32
  return Examples(text_a, text_b if task.is_pair else None, np.asarray(labels, dtype))


# --------------------------------------------------------------------------------------------
# The Hugging Face hub.

_HUB_COLUMNS = {
    'cola': ('sentence', None),
    'sst2': ('sentence', None),
    'mrpc': ('sentence1', 'sentence2'),
    'stsb': ('sentence1', 'sentence2'),
    'qqp': ('question1', 'question2'),
    'mnli': ('premise', 'hypothesis'),
    'qnli': ('question', 'sentence'),
    'rte': ('sentence1', 'sentence2'),
    'wnli': ('sentence1', 'sentence2'),
}
_HUB_SPLITS = {
    'train': 'train',
    'dev': 'validation',
    'dev_matched': 'validation_matched',
    'dev_mismatched': 'validation_mismatched',
}


def load_hub_split(task: TaskSpec, split: str) -> Examples:
  """Loads one split of `nyu-mll/glue` with `datasets` (the hub's labels use label_names order)."""
  _check_split(task, split)
  hub_split = _HUB_SPLITS[split]
  try:
    import datasets  # pylint: disable=g-import-not-at-top  # Heavy; only the hub path needs it.
    ds = datasets.load_dataset(_HUB_DATASET, task.name, split=hub_split)
  except Exception as e:  # pylint: disable=broad-except
    # Offline machines fail in many ways (ConnectionError, LocalEntryNotFoundError,
    # OfflineModeIsEnabled, DatasetNotFoundError ...); all have the same fix.
    reason = ' '.join(f'{type(e).__name__}: {e}'.split())[:300]
    raise UserError(
        f'Could not load GLUE {task.name} split {hub_split!r} from the Hugging Face hub '
        f'({_HUB_DATASET}): the hub could not be reached or the dataset is not in the local '
        f'cache ({reason}). Pass --config.data_dir=<GLUE dir> pointing at GLUE-format folders '
        f'({task.dirname}/train.tsv, ...), or connect to the network.') from None
  col_a, col_b = _HUB_COLUMNS[task.name]
  dtype = np.float32 if task.is_regression else np.int32
  labels = np.asarray(list(ds['label']), dtype)
  if not task.is_regression and labels.size and (labels.min() < 0 or
                                                 labels.max() >= task.num_labels):
    raise UserError(
        f'The hub split {hub_split!r} of {task.name} has labels outside 0..{task.num_labels - 1} '
        f'(unlabelled test data?). Use the train or dev split.')
  if not len(labels):
    raise UserError(f'The hub split {hub_split!r} of {task.name} is empty.')
  text_b = list(ds[col_b]) if col_b else None
  return Examples(list(ds[col_a]), text_b, labels)


# --------------------------------------------------------------------------------------------
# Loading: read, tokenize, cache.


@dataclasses.dataclass
class TaskData:
  """Encoded train split (None when skipped) and dev splits keyed by metric suffix."""
  task: TaskSpec
  train: Encoded | None
  dev: dict[str, Encoded]


def _load_split(task, data_dir, split, tokenizer, tokenizer_id, max_seq_length,
                cache_dir) -> Encoded:
  if isinstance(task, custom_data.CustomTask):
    source = task.cache_source(split)
    read = lambda: task.examples[split]
  elif data_dir:
    path = split_path(task, data_dir, split)
    st = path.stat()
    source = [str(path.resolve()), st.st_size, st.st_mtime_ns]
    read = lambda: read_split(task, data_dir, split)
  else:
    source = 'hub'
    read = lambda: load_hub_split(task, split)
  key = {
      'version': _CACHE_VERSION,
      'tokenizer_id': str(tokenizer_id),
      # The class and vocabulary size guard against a tokenizer that changed under the same id.
      'tokenizer': [type(tokenizer).__name__, len(tokenizer)],
      'task': spec_of(task).name,
      'split': split,
      'max_seq_length': int(max_seq_length),
      'source': source,
  }
  path = tokenized.cache_path(cache_dir, spec_of(task), split, key)
  enc = tokenized.load_cached(path, max_seq_length)
  if enc is None:
    enc = encode(read(), tokenizer, max_seq_length)
    tokenized.save_cached(path, enc)
  return enc


def record_spec(name: str, records=(), workdirs=()) -> TaskSpec:
  """The spec of the task that trial records name, in any process: a GLUE task from its table;
  your own data (task=custom) from the task.json of the first of `workdirs` that has one, else
  from the records alone (their metrics in the order they report them: `compute_metrics` puts the
  primary one first; the name shown is 'custom')."""
  if name != custom_data.NAME:
    return get_task(name)
  for workdir in workdirs:
    info = custom_data.read_info(workdir)
    if info is not None:
      return custom_data.spec_from_info(info)
  metrics = next((tuple(r['metrics']) for r in records if r.get('task') == name
                  and r.get('status') == 'ok' and r.get('metrics')), ('accuracy',))
  return TaskSpec(name=name, dirname=name, num_labels=0, is_regression=False, label_names=(),
                  is_pair=False, primary_metric=metrics[0], dev_splits={'': 'dev'},
                  metrics=metrics[:1])


def spec_of(task: str | TaskSpec | custom_data.CustomTask) -> TaskSpec:
  """The spec of a GLUE task name, a spec, or your own data's task (custom.from_config)."""
  if isinstance(task, custom_data.CustomTask):
    return task.spec
  return task if isinstance(task, TaskSpec) else get_task(task)


def load_task_data(task: str | TaskSpec | custom_data.CustomTask,
                   data_dir: str,
                   tokenizer,
                   tokenizer_id: str,
                   max_seq_length: int,
                   *,
                   splits: Sequence[str] = ('train', 'dev'),
                   cache_dir: str | None = None) -> TaskData:
  """Reads, tokenizes and caches a task's splits.

  Args:
    task: a GLUE task (name or spec), or your own data: the task `custom.from_config` built.
    data_dir: root of GLUE-format folders; '' or None = the hub; 'demo' = the packaged demo
      sentiment set (task sst2 only).
    tokenizer: a Hugging Face tokenizer.
    tokenizer_id: what identifies the tokenizer in the cache key (hub id or local path).
    max_seq_length: padded sequence length.
    splits: 'train' and/or 'dev' ('dev' = every dev split of the task, e.g. both MNLI ones);
      a single dev split name such as 'dev_mismatched' selects just that one.
    cache_dir: cache root; default $JAXTRANSFER_CACHE or ~/.cache/jaxtransfer.

  Returns:
    TaskData with `train` None when not requested and `dev` keyed by metric suffix.
  """
  source, task = task, spec_of(task)
  cache_dir = os.path.expanduser(cache_dir or default_cache_dir())
  # Your own data is read from the files or hub dataset it was built from; data_dir is GLUE's.
  custom = isinstance(source, custom_data.CustomTask)
  data_dir = '' if custom else str(data_dir or '').strip()
  if data_dir == 'demo':
    data_dir = demo_data.prepare(task.name, cache_dir)

  valid = ('train', 'dev', *task.dev_splits.values())
  bad = [s for s in splits if s not in valid]
  if bad:
    raise ValueError(f'Unknown splits {bad} for {task.name}; valid: {valid}.')
  load = lambda s: _load_split(source if custom else task, data_dir, s, tokenizer, tokenizer_id,
                               max_seq_length, cache_dir)
  train = load('train') if 'train' in splits else None
  dev = {suffix: load(name) for suffix, name in task.dev_splits.items()
         if 'dev' in splits or name in splits}
  return TaskData(task=task, train=train, dev=dev)


def hold_out(train: Encoded, task: TaskSpec, size: float, seed: int) -> tuple[Encoded, Encoded]:
  """(rest, held out): a selection split of the training data, the same for every trial of a
  run. `size` < 1 is a fraction, else a count; classification holds out each class in
  proportion (label-stratified), regression a uniform sample. Every trial's training subset is
  drawn from `rest` (its rows keep their order), so the two are disjoint."""
  n = len(train)
  count = int(round(size * n)) if size < 1 else int(size)
  if not 0 < count < n:
    raise UserError(f'selection_split={size:g} holds out {count} of the {n} training examples; '
                    'it must leave at least one on each side. Give a fraction in (0, 1) or a '
                    'count below the training set size (--config.selection_split).')
  rng = np.random.default_rng(seed)
  if task.is_regression:
    held = rng.choice(n, count, replace=False)
  else:
    labels = np.asarray(train.labels)
    classes = np.unique(labels)
    members = [np.flatnonzero(labels == c) for c in classes]
    # Largest-remainder allocation: per-class counts that sum to `count` exactly.
    exact = np.array([len(m) for m in members]) * count / n
    take = np.floor(exact).astype(int)
    take[np.argsort(-(exact - take), kind='stable')[:count - take.sum()]] += 1
    held = np.concatenate([rng.choice(m, k, replace=False) for m, k in zip(members, take)])
  mask = np.zeros(n, bool)
  mask[held] = True
  return train.take(~mask), train.take(np.flatnonzero(mask))
