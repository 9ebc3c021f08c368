"""Plain fine-tuning of every parameter: the reference point of all four studies."""

from jaxtransfer.report import finetune as figures
from jaxtransfer.engine import trials as trials_lib
from jaxtransfer.studies import base


class Finetune(base.Experiment):
  name = 'finetune'

  def trials(self, ctx):
    program = base.make_program(ctx)
    return [trials_lib.Trial(seed, size, setting, program)
            for size, seed, setting in base.grid(ctx.config)]

  def finalize(self, ctx, records):
    figures.plot_trials(ctx.workdir, records, ctx.task.primary_metric, ctx.info)
