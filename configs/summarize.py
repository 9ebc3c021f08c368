"""Rebuilds a workdir's summary, tables and figures from all its records, training nothing.

  python -m jaxtransfer.main --config=configs/summarize.py:results/lee2019/cola \
      --workdir=results/lee2019/cola

For a sweep split over independent workers (README "Scaling out"): any worker's summary covers
the groups finished when it ended; this one covers every record in the workdir (trials.jsonl
and records/*.jsonl). The config is the workdir's own config.json, as configs/rerun.py reads it.
"""

from configs import rerun


def get_config(workdir=None):
  c = rerun.get_config(workdir)
  c.summarize_only = True
  c.num_workers = 0
  return c
