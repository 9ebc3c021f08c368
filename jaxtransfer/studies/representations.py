"""What fine-tuning did to each layer's representations: linear CKA to the pretrained model.

With `representation_similarity=True`, every ok trial of a study that fine-tunes gets, per hidden
state it computes (0 = the embedding output, i = the output of block i-1), the linear CKA
(report/cka.py) between the pretrained model's and the trial's hidden states over every real
(non-padding) token of the first `similarity_examples` dev examples, both in eval mode and
float32. The values go into the trial's record as metrics `cka/<layer>` (so they survive resumes
and merge across workers like every other metric), and from the records into
`representations.csv` (trial_id, layer, cka) and `plots/cka_by_layer.png`. Blocks a trial does
not compute (truncated heads) have no row; permuted and reinitialized trials compare block i with
the pretrained block i.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import time
from typing import Any, Mapping, Sequence

import jax
import numpy as np
from absl import logging

from jaxtransfer.core import program as program_lib
from jaxtransfer.engine import batching
from jaxtransfer.models import bert
from jaxtransfer.report import cka
from jaxtransfer.report import plots
from jaxtransfer.report import summary
from jaxtransfer.runtime import files

PREFIX = 'cka/'
FIELDS = ('trial_id', 'layer', 'cka')


def wanted(config, program) -> bool:
  """Whether this program's trials are measured: the key is on and the program is an encoder."""
  return bool(config.get('representation_similarity', False)) and isinstance(
      program, program_lib.Program)


@functools.partial(jax.jit, static_argnums=0)
def _moments(program, pretrained, train, frozen, arrays, batch, weights):
  ids, mask, types = batch['input_ids'], batch['attention_mask'], batch['token_type_ids']
  ref = bert.hidden_states(program.encoder, pretrained, ids, mask, types,
                           num_blocks=program.num_blocks)
  return cka.batch_moments(ref, program.hidden_states(train, frozen, batch, arrays),
                           weights * mask)


def trial_cka(config, pretrained, dev: Mapping[str, np.ndarray], program,
              params) -> np.ndarray:
  """(n+1,) linear CKA per hidden state between the pretrained model and one trial."""
  program = dataclasses.replace(program, dtype='float32')
  size = int(config.get('eval_batch_size', 128))
  rows = np.arange(min(len(dev['labels']), int(config.get('similarity_examples', 256))))
  parts = []
  for idx, width in batching.by_length(dev['attention_mask'], size, rows):
    pad = np.concatenate([idx, np.repeat(idx[:1], size - len(idx))])  # one batch shape
    batch = {k: dev[k][pad, :width] for k in ('input_ids', 'attention_mask', 'token_type_ids')}
    weights = (np.arange(size) < len(idx)).astype(np.float32)[:, None]
    parts.append(_moments(program, pretrained, params.train, params.frozen, params.arrays,
                          batch, weights))
  return cka.linear_cka(cka.combine(parts))


def trial_metrics(ctx, trial, params) -> dict[str, float]:
  """`cka/<layer>` of an ok trial (nothing unless `wanted`)."""
  if params is None or not wanted(ctx.config, trial.program):
    return {}
  start = time.perf_counter()
  values = trial_cka(ctx.config, ctx.pretrained.params, ctx.data.dev[''].as_dict(),
                     trial.program, params)
  logging.info('Trial %s: CKA to the pretrained model per layer %s (%.1f s).', trial.trial_id,
               ' '.join(f'{v:.3f}' for v in values), time.perf_counter() - start)
  return {f'{PREFIX}{i}': float(v) for i, v in enumerate(values)}


def rows(records: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
  """(trial_id, layer, cka) of every ok record that carries CKA, layers in order."""
  out = []
  for r in records:
    if r.get('status') != 'ok':
      continue
    layers = sorted(int(k[len(PREFIX):]) for k in (r.get('metrics') or {}) if k.startswith(PREFIX))
    out += [{'trial_id': r['trial_id'], 'layer': i, 'cka': r['metrics'][f'{PREFIX}{i}']}
            for i in layers]
  return out


def write(workdir: str, records: Sequence[Mapping[str, Any]], info=None) -> str | None:
  """representations.csv and plots/cka_by_layer.png from the records (None: none has CKA)."""
  table = rows(records)
  if not table:
    return None
  path = os.path.join(workdir, 'representations.csv')
  files.write_csv(path, FIELDS, ({**r, 'cka': repr(float(r['cka']))} for r in table))
  plot(workdir, records, info)
  return path


def _label(train_size, setting_text: str) -> str:
  setting = json.loads(setting_text)
  words = ', '.join(f'{k}={v}' for k, v in setting.items()) or 'fine-tuned'
  return f'{words} ({plots.size_label(train_size)})'


def plot(workdir: str, records: Sequence[Mapping[str, Any]], info=None) -> str | None:
  """CKA to the pretrained model per layer: the mean over a setting's trials with its 95% CI,
  one line per (train size, setting)."""
  done = [r for r in records if r.get('status') == 'ok']
  layers = sorted({row['layer'] for row in rows(done)})
  if not layers:
    return None
  fig, ax = plots.figure(7.0, 4.4)
  per_layer = {i: summary.group_by_setting(done, f'{PREFIX}{i}') for i in layers}
  keys = list(dict.fromkeys(k for i in layers for k in per_layer[i]))
  for key in keys:
    xs = [i for i in layers if key in per_layer[i]]
    plots.line_with_ci(ax, xs, [per_layer[i][key] for i in xs], _label(*key),
                       bounds=plots.bounds('cka'))
  ax.set_xlabel('layer (0 = embedding output, i = output of block i-1)')
  ax.set_ylabel('linear CKA to the pretrained model')
  ax.set_xticks(layers)
  plots.limit_y(ax, 'cka')
  plots.legend(ax, fontsize=7)
  first = done[0]
  ax.set_title(plots.title('Representation similarity per layer', first.get('task', ''),
                           first.get('model', ''), info), fontsize=10)
  return plots.save(fig, workdir, 'cka_by_layer')
