"""Fine-tuning by learning binary masks over the pretrained weights (Radiya-Dixit & Wang 2020).

Every mask trial shares ONE compiled program: the target sparsity, the masked blocks, the mask
learning rate and which blocks are reinitialized are per-trial arrays. The optional full
fine-tuning baseline is a second program. Masks are saved bit-packed (`masks/<trial_id>.npz`).
"""

from __future__ import annotations


import numpy as np
from absl import logging

from jaxtransfer.core import interventions as iv
from jaxtransfer.core import program as program_lib
from jaxtransfer.studies.radiya2020 import distances as closeness
from jaxtransfer.studies.radiya2020 import masks as masks_lib
from jaxtransfer.errors import UserError, check_choices
from jaxtransfer.engine import trials as trials_lib
from jaxtransfer.studies import base


# Reference trials beside the masks: full fine-tuning, and the pooler + classifier on the frozen
# encoder (what the masks add to it).
BASELINES = ('finetune', 'head_only')


def block_sets(config, num_layers: int) -> list[tuple[int, ...]]:
  """`mask_blocks`: [] = all blocks; [i, j, ...] = one set; [[...], [...]] = a sweep of sets."""
  raw = list(config.mask_blocks)
  if not raw:
    return [tuple(range(num_layers))]
  if all(isinstance(b, (list, tuple)) for b in raw):
    return [tuple(int(i) for i in s) for s in raw]
  return [tuple(int(i) for i in raw)]


def check(ctx: base.Context) -> None:
  c, L = ctx.config, ctx.pretrained.config.num_layers
  for s in c.target_sparsity:
    if not 0 <= float(s) <= 1:
      raise UserError(f'target_sparsity={list(c.target_sparsity)} has {s}: a sparsity is the fraction '
                      'of masked-matrix entries set to zero, between 0 and 1 '
                      '(--config.target_sparsity, e.g. "[0.05,0.2,0.5]").')
  for blocks in block_sets(c, L):
    if not blocks:
      raise UserError('mask_blocks holds an empty set; list at least one block per set.')
    for b in blocks:
      iv.check_block_index('mask_blocks', b, c.frozen_blocks, L - 1, L)
  for b in c.reinit_blocks:
    iv.check_block_index('reinit_blocks', b, 0, L - 1, L)
  iv.check_block_index('frozen_blocks', c.frozen_blocks, 0, L - 1, L)
  check_choices('masked_matrices', c.masked_matrices, program_lib.MASKABLE, many=True)
  for lr in c.mask_learning_rate:
    if float(lr) <= 0:
      raise UserError(f'mask_learning_rate={list(c.mask_learning_rate)} must hold positive values.')
  if c.baselines:
    check_choices('baselines', c.baselines, BASELINES, many=True)
  check_choices('reinit_scheme', c.reinit_scheme, iv.REINIT_SCHEMES)


def mask_program(ctx: base.Context) -> program_lib.Program:
  """Blocks [f, L) fixed under learned masks; embeddings and blocks [0, f) frozen; head trained."""
  c = ctx.config
  interventions = (iv.Reinit(c.reinit_scheme),) if c.reinit_blocks else ()
  return base.make_program(ctx, frozen_blocks=c.frozen_blocks, train_embeddings=False,
                           block_params='none', masked=tuple(c.masked_matrices),
                           interventions=interventions)


class Sparsity(base.Experiment):
  name = 'sparsity'
  sweep_keys = ('target_sparsity', 'mask_blocks', 'mask_learning_rate', 'baselines')

  def validate(self, ctx):
    check(ctx)

  def trials(self, ctx):
    c, L = ctx.config, ctx.pretrained.config.num_layers
    program = mask_program(ctx)
    sets = block_sets(c, L)
    lrs = [float(x) for x in c.mask_learning_rate]
    reinit = np.isin(np.arange(L), list(c.reinit_blocks))
    out = []
    for size, seed, setting in base.grid(c, target_sparsity=[float(s) for s in c.target_sparsity],
                                         mask_blocks=sets, mask_lr=lrs):
      arrays = {'sparsity': np.float32(setting['target_sparsity']),
                'mask_blocks': np.isin(np.arange(L), setting['mask_blocks']),
                'mask_lr': np.float32(setting['mask_lr'] / c.learning_rate)}
      if c.reinit_blocks:
        arrays['reinit'] = reinit
      setting = {'method': 'mask', **setting}
      if len(sets) == 1 and sets[0] == tuple(range(L)):
        setting.pop('mask_blocks')  # the default (all blocks) stays out of ids and tables
      else:
        setting['mask_blocks'] = list(setting['mask_blocks'])
      out.append(trials_lib.Trial(seed, size, setting, program, arrays))
    baselines = {'finetune': lambda: base.make_program(ctx),
                 'head_only': lambda: base.make_program(ctx, frozen_blocks=L, train_embeddings=False)}
    for name in c.baselines:
      program = baselines[name]()
      out += [trials_lib.Trial(seed, size, {'method': name}, program)
              for size, seed, _ in base.grid(c)]
    logging.info('Sparsity study: %d trials (target sparsities %s, block sets %s, mask lr %s).',
                 len(out), list(c.target_sparsity), sets, lrs)
    return out

  def uses_params(self, ctx, program):
    return True  # masks and closeness rows of every trial

  def trial_metrics(self, ctx, trial, params):
    if not trial.program.masked:
      return {}
    return masks_lib.mask_metrics(trial.program, params.train, params.frozen, params.arrays)

  def write_outputs(self, ctx, trial, params):
    super().write_outputs(ctx, trial, params)
    if trial.program.masked:
      masks_lib.save_trial_masks(ctx.workdir, trial.trial_id, trial.program, params.train,
                                 params.frozen, params.arrays)
    closeness.write_trial_rows(ctx, trial, params)

  def finalize(self, ctx, records):
    closeness.write_random_init(ctx)
    masks_lib.plot_accuracy_vs_sparsity(ctx.workdir, records, ctx.task, ctx.config.model,
                                        ctx.info)
    groups = {}
    for r in records:
      s = r['setting']
      if r['status'] == 'ok' and s['method'] != 'head_only':
        label = ('full fine-tuning' if s['method'] == 'finetune' else 'masks, ' + ', '.join(
            f'{k}={v}' for k, v in sorted(s.items()) if k != 'method'))
        groups.setdefault(label, []).append(r['trial_id'])
    if groups:
      rows = closeness.read_rows(closeness.csv_path(ctx.workdir))
      closeness.plot_per_block(ctx.workdir, rows, groups, ctx.task.name, ctx.config.model,
                               info=ctx.info)


