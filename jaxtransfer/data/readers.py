"""Reading the user's files (or a hub dataset) for `task=custom` through `datasets`, with the
checks that turn a reader's failure or a bad row into one clear UserError naming the file and line.
"""

from __future__ import annotations

import contextlib
import csv
import json
import logging
import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from jaxtransfer.data.types import Source
from jaxtransfer.errors import UserError


FORMATS = {'.csv': 'csv', '.tsv': 'tsv', '.tab': 'tsv', '.json': 'json', '.jsonl': 'json',
           '.ndjson': 'json', '.parquet': 'parquet', '.pq': 'parquet'}


def file_format(key: str, path: str) -> str:
  ext = Path(path).suffix.lower()
  if ext not in FORMATS:
    raise UserError(
        f'{key}={path!r}: unknown file format {ext or "(no extension)"!r}. The format follows the '
        f'extension: {", ".join(FORMATS)} (json also reads JSON Lines). Rename the file or convert '
        'it.')
  return FORMATS[ext]




# --------------------------------------------------------------------------------------------
# Reading through `datasets`.


@contextlib.contextmanager
def _quiet_datasets(progress: bool):
  """`datasets` logs a reader's error before raising it; the UserError says it once instead."""
  import datasets  # pylint: disable=g-import-not-at-top  # Heavy; only custom data needs it.
  logger = logging.getLogger('datasets')
  level, bars = logger.level, datasets.is_progress_bar_enabled()
  logger.setLevel(logging.CRITICAL)
  if not progress:
    datasets.disable_progress_bars()
  try:
    yield datasets
  finally:
    logger.setLevel(level)
    if bars and not progress:
      datasets.enable_progress_bars()


def _causes(e: BaseException) -> list[BaseException]:
  out = []
  while e is not None and e not in out:
    out.append(e)
    e = e.__cause__ or e.__context__
  return out


def _utf8_problem(path: Path) -> str | None:
  raw = path.read_bytes()
  try:
    raw.decode('utf-8')
  except UnicodeDecodeError as e:
    line = raw[:e.start].count(b'\n') + 1
    return f'line {line} is not valid UTF-8 ({e.reason} at byte {e.start}); save the file as UTF-8'
  return None


def _json_problem(path: Path) -> str | None:
  """The first line that is not valid JSON (JSON Lines), or where a JSON document breaks."""
  text = path.read_text(encoding='utf-8-sig')
  try:
    json.loads(text)
    return None  # One valid JSON document.
  except json.JSONDecodeError as whole:
    for i, line in enumerate(text.split('\n')):
      if not line.strip():
        continue
      try:
        json.loads(line)
      except json.JSONDecodeError as e:
        if i == 0 and line.lstrip().startswith('['):  # A JSON array document, not JSON Lines.
          break
        return f'line {i + 1} is not valid JSON ({e.msg} at column {e.colno})'
    else:
      return None  # Valid JSON Lines.
    return f'line {whole.lineno} is not valid JSON ({whole.msg} at column {whole.colno})'


def _reader_problem(e: BaseException, path: Path, fmt: str) -> str:
  chain = _causes(e)
  if any(isinstance(c, UnicodeDecodeError) for c in chain):
    problem = _utf8_problem(path)
    if problem:
      return problem
  if fmt == 'json':
    problem = _json_problem(path)
    if problem:
      return problem
  root = chain[-1]
  reason = ' '.join(str(root).split())[:300]
  # pandas: 'Error tokenizing data. C error: Expected 2 fields in line 3, saw 3'.
  reason = reason.replace('Error tokenizing data. C error: ', '')
  return f'{type(root).__name__}: {reason}'


def _csv_rows_check(path: Path, fmt: str, where: str) -> list[str] | None:
  """The header of a csv/tsv file (None when it is empty), after checking every row's width.

  pandas would take one extra field in the first row as an index column (shifting every column
  by one) and pad short rows with empty fields; a row whose width differs from the header's is
  almost always an unquoted comma (or a stray tab), so it is an error naming its line.
  """
  sep = 'tab-separated fields (a tab inside a text?)' if fmt == 'tsv' else (
      'comma-separated fields (an unquoted comma inside a text? quote that field)')
  header, line = None, 1
  try:
    with open(path, newline='', encoding='utf-8-sig') as f:
      if fmt == 'tsv':
        records = ((i + 1, l.rstrip('\r\n').split('\t')) for i, l in enumerate(f))
      else:
        reader = csv.reader(f)
        records = _with_line_numbers(reader)
      for line, rec in records:
        if rec == [] or rec == ['']:  # A blank line (pandas skips them too).
          continue
        if header is None:
          header = rec
        elif len(rec) != len(header):
          raise UserError(
              f'Could not read {where}: line {line} has {len(rec)} {sep}, but the header has '
              f'{len(header)}. Fix that line.')
  except UnicodeDecodeError:
    raise UserError(f'Could not read {where}: {_utf8_problem(path)}.') from None
  except csv.Error as e:
    raise UserError(f'Could not read {where}: line {line} is not valid CSV ({e}).') from None
  return header


def _with_line_numbers(reader):
  """(first line of the record, record) for a csv.reader: quoted newlines span lines."""
  line = 1
  for rec in reader:
    yield line, rec
    line = reader.line_num + 1


def _missing_column(name: str, key: str, columns, where: str) -> UserError:
  return UserError(
      f'Column {name!r} ({key}) is not in {where}; its columns are: '
      f'{", ".join(map(repr, columns)) or "(none)"}. Set --config.{key} to the right column '
      '(names are case-sensitive).')


def check_columns(src: Source, columns, where: str) -> None:
  for name in src.text_fields:
    if name not in columns:
      raise _missing_column(name, 'text_fields', columns, where)
  if src.label_field not in columns:
    raise _missing_column(src.label_field, 'label_field', columns, where)


def empty(src: Source, split: str) -> UserError:
  return UserError(f'{src.where(split)} has no data rows: the {split} split is empty. Give it at '
                   'least one labelled example.')


def load_file(src: Source, split: str, cache_dir: str):
  key, where = f'{split}_file', src.where(split)
  path = Path(os.path.expanduser(src.file(split))).resolve()
  fmt = file_format(key, str(path))
  needed = list(dict.fromkeys([*src.text_fields, src.label_field]))
  kwargs: dict[str, Any] = {}
  builder = 'csv' if fmt == 'tsv' else fmt
  if fmt in ('csv', 'tsv'):
    header = _csv_rows_check(path, fmt, where)
    if header is None:
      raise empty(src, split)
    dup = sorted({h for h in header if header.count(h) > 1})
    if dup:
      raise UserError(f'{where} has several columns named {", ".join(map(repr, dup))}: rename them '
                      'so that every column name is used once.')
    check_columns(src, header, where)
    # Every column as a string: types are decided below, the same way for every chunk of the file
    # (pandas would guess per 10,000-row chunk), and 'NA', 'null' or '' stay what they are. The
    # header's names are passed as they are (pandas would rename an empty one 'Unnamed: 2').
    from datasets import Features, Value  # pylint: disable=g-import-not-at-top
    kwargs = dict(column_names=header, header=0, usecols=needed,
                  features=Features({c: Value('string') for c in needed}), na_filter=False)
    if fmt == 'tsv':
      kwargs.update(delimiter='\t', quoting=csv.QUOTE_NONE)
  with _quiet_datasets(progress=False) as datasets:
    try:
      ds = datasets.load_dataset(builder, data_files={'train': str(path)}, split='train',
                                 cache_dir=os.path.join(cache_dir, 'datasets'), **kwargs)
    except Exception as e:  # pylint: disable=broad-except
      if any('corresponds to no data' in str(c) for c in _causes(e)):
        raise empty(src, split) from None
      raise UserError(
          f'Could not read {key}={str(path)!r} as {fmt}: {_reader_problem(e, path, fmt)}. Fix the '
          f'file there (the format follows the extension: {", ".join(FORMATS)}).') from None
  return ds


def load_hub(src: Source, split: str):
  hub_split = src.hub_split(split)
  with _quiet_datasets(progress=True) as datasets:
    try:
      return datasets.load_dataset(src.dataset, src.dataset_config or None, split=hub_split)
    except Exception as e:  # pylint: disable=broad-except
      # Offline machines fail in many ways (ConnectionError, LocalEntryNotFoundError,
      # OfflineModeIsEnabled, DatasetNotFoundError ...), a wrong id, config or split in others.
      reason = ' '.join(f'{type(e).__name__}: {e}'.split())[:300]
      raise UserError(
          f'Could not load {src.where(split)} from the Hugging Face hub ({reason}). Check the '
          f'id, --config.dataset_config and --config.{split}_split, connect to the network '
          '(or fill the local datasets cache), or use local files with --config.train_file and '
          '--config.dev_file.') from None


# --------------------------------------------------------------------------------------------
# Texts and labels.


def texts(values, column: str, where: str) -> list[str]:
  out = []
  for i, v in enumerate(values):
    if v is None:
      v = ''
    elif isinstance(v, (list, dict)):
      raise UserError(f'Column {column!r} of {where} holds {type(v).__name__}s (row {i + 1}), not '
                      'text. Name a text column in --config.text_fields.')
    out.append(v if isinstance(v, str) else str(v))
  return out


def _number(v) -> float | None:
  """A label as a finite number, or None (bools, non-numeric strings, nan, inf)."""
  if isinstance(v, bool):
    return None
  if isinstance(v, (int, float, np.integer, np.floating)):
    x = float(v)
  elif isinstance(v, str):
    try:
      x = float(v.strip())
    except ValueError:
      return None
  else:
    return None
  return x if math.isfinite(x) else None


def _is_integer(v) -> bool:
  if isinstance(v, bool):
    return False
  if isinstance(v, (int, np.integer)):
    return True
  if isinstance(v, str):
    s = v.strip()
    return s.lstrip('+-').isdigit() and s.isascii()
  return False


def _has_value(v) -> bool:
  return v is not None and not (isinstance(v, str) and not v.strip())


def check_present(values, src: Source, split: str) -> None:
  for i, v in enumerate(values):
    if not _has_value(v):
      raise UserError(
          f'Row {i + 1} of {src.where(split)} has no label in column {src.label_field!r} '
          f'({"empty" if v is not None else "missing"}). Every training and dev row needs one: '
          'fill it in or drop the row.')


def resolve_kind(values, src: Source, class_label) -> str:
  """'classification' or 'regression' for the training labels under label_type."""
  if src.label_type != 'auto':
    return src.label_type
  if class_label is not None:
    return 'classification'
  if all(_is_integer(v) or isinstance(v, bool) for v in values):
    return 'classification'
  numbers = [_number(v) for v in values]
  if all(x is not None for x in numbers):
    return 'regression'  # Numbers, not all integers: scores.
  non_numeric = [i for i, x in enumerate(numbers) if x is None]
  fractional = any(x is not None and x != int(x) for x in numbers)
  if fractional and len(non_numeric) <= 0.1 * len(values):
    i = non_numeric[0]
    raise UserError(
        f'Label column {src.label_field!r} of {src.where("train")} holds numbers except '
        f'{len(non_numeric)} value(s) such as {values[i]!r} (row {i + 1}), which are not numbers. '
        'Fix them, or set --config.label_type=classification to make every distinct value a '
        'class (or regression to be told each bad row).')
  return 'classification'


def class_key(v, class_label) -> tuple[tuple, str]:
  """(sort key, class name) of a label: integers sort as numbers, then strings as strings."""
  named = class_label is not None and isinstance(v, (int, np.integer))
  if named and 0 <= v < class_label.num_classes:
    return (0, int(v), ''), class_label.int2str(int(v))
  if isinstance(v, bool):
    return (0, int(v), str(v)), str(v)
  if _is_integer(v):
    return (0, int(str(v).strip()), ''), str(int(str(v).strip()))
  x = _number(v)
  if x is not None and not isinstance(v, str):
    name = str(int(x)) if x == int(x) else repr(x)
    return (0, x, ''), name
  s = str(v).strip()
  return (1, 0, s), s


def regression_labels(values, src: Source, split: str) -> np.ndarray:
  out = np.empty(len(values), np.float32)
  for i, v in enumerate(values):
    x = _number(v)
    if x is None:
      raise UserError(
          f'Non-numeric value {v!r} in the regression label column {src.label_field!r} (row '
          f'{i + 1} of {src.where(split)}). Regression labels must be finite numbers: fix that '
          'row, or set --config.label_type=classification if the labels are classes.')
    out[i] = x
  return out


def feature(ds, column: str):
  """The column's ClassLabel (hub datasets name their classes), else None."""
  import datasets  # pylint: disable=g-import-not-at-top
  f = ds.features.get(column)
  return f if isinstance(f, datasets.ClassLabel) else None
