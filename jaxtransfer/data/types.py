"""The types the data layer hands up: what a task is, a split's raw examples, where custom data is."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np


@dataclasses.dataclass(frozen=True)
class TaskSpec:
  """Static description of a task: a GLUE task, or your own data (data/custom.py)."""
  name: str
  dirname: str
  num_labels: int
  is_regression: bool
  label_names: tuple[str, ...]
  is_pair: bool
  primary_metric: str
  # Metric-name suffix -> split name. hash=False keeps the frozen spec hashable (usable as a
  # static argument) even though a dict is not.
  dev_splits: dict[str, str] = dataclasses.field(hash=False)
  # The metrics a run reports, primary first (GLUE's conventions, or a custom task's choice).
  metrics: tuple[str, ...] = ()

  @property
  def splits(self) -> tuple[str, ...]:
    """Split names that carry labels: 'train' and the dev split(s)."""
    return ('train', *self.dev_splits.values())


@dataclasses.dataclass
class Examples:
  """Raw texts and labels of one split."""
  text_a: list[str]
  text_b: list[str] | None
  labels: np.ndarray  # int32 class ids in label_names order, or float32 scores (stsb).

  def __len__(self) -> int:
    return len(self.text_a)


@dataclasses.dataclass(frozen=True)
class Source:
  """Where the custom data is and which of its columns to use."""
  train_file: str = ''
  dev_file: str = ''
  dataset: str = ''
  dataset_config: str = ''
  train_split: str = 'train'
  dev_split: str = 'validation'
  text_fields: tuple[str, ...] = ('text',)
  label_field: str = 'label'
  label_type: str = 'auto'
  metric: str = 'auto'

  @property
  def is_hub(self) -> bool:
    return bool(self.dataset)

  def file(self, split: str) -> str:
    return self.train_file if split == 'train' else self.dev_file

  def hub_split(self, split: str) -> str:
    return self.train_split if split == 'train' else self.dev_split

  def where(self, split: str) -> str:
    """How messages name a split's origin: 'train_file /x/train.csv', "hub dataset 'imdb' ..."."""
    if self.is_hub:
      config = f' (config {self.dataset_config!r})' if self.dataset_config else ''
      return f'hub dataset {self.dataset!r}{config} split {self.hub_split(split)!r}'
    return f'{split}_file {self.file(split)}'

  @property
  def display_name(self) -> str:
    """A short name for tables and plot labels: the training file's stem or the dataset id."""
    if self.is_hub:
      return self.dataset + (f'/{self.dataset_config}' if self.dataset_config else '')
    path = Path(self.train_file)
    # reviews/train.csv is 'reviews'; reviews_train.csv stays 'reviews_train'.
    if path.stem.lower() in ('train', 'training') and path.parent.name:
      return path.parent.name
    return path.stem
