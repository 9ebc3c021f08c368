"""Closeness (Radiya-Dixit & Wang 2020): distance of fine-tuned from pretrained weights per block,
and fine-tuning only the "critical" (most changed) blocks.

  python -m jaxtransfer.main --config=configs/closeness.py --workdir=results/closeness-rte \
      --config.model=bert-base-uncased --config.task=rte --config.data_dir=/path/to/glue
  python -m jaxtransfer.main --config=configs/closeness.py:minilm --workdir=results/radiya2020/closeness-sst2 \
      --config.data_dir=/path/to/glue
  python -m jaxtransfer.main --config=configs/closeness.py:demo --workdir=/tmp/closeness-demo

Phase 1 fine-tunes every parameter (the standard program at `learning_rate`) and writes
`closeness.csv` (`trial_id,block,matrix,l1,l1_per_param,angle_rad`): per trial, block -1 =
embeddings (matrix `embeddings`), and per block i one row per weight matrix (`query key value
attention_output intermediate output`, the kernel) plus `all` (every parameter of the block).
L1 = sum |w_ft - w_pt|; l1_per_param = L1 / number of entries; angle = arccos of the cosine
between w_ft and w_pt (computed stably). Rows with trial_id `random-init` are the scale: the same
numbers between two independent random inits (HF's init) of the architecture.

Phase 2 (`critical_r`, list of r): blocks ranked by `rank_metric` of their `all` row (mean over
the phase-1 seeds of the same train size, or over the full fine-tuning trials of `rank_from`,
another run's closeness.csv, picked by the trials.jsonl beside it; then `full_finetuning=False`
skips phase 1); per r, only the r blocks of each `critical_orders` entry train: `most_changed`
(the paper's critical layers), `least_changed`, `top` (the last r blocks, Lee et al.'s choice).
Embeddings are frozen; the pooler and classifier train. critical_blocks.json holds the ranking.
Plots: closeness_per_block.png, closeness_per_matrix.png, critical_blocks.png.

The paper's code is not public and only its abstract could be read (docs/PROTOCOLS.md §4): it reports
that fine-tuned BERT stays close to the pretrained weights, more so in some layers than others,
and that tuning only the most critical layers suffices. Our MiniLM numbers:
results/radiya2020/README.md.
"""

from configs import base
from configs import sparsity


# The study's real run on 2 CPU cores, shared with sparsity.py.
minilm = sparsity.minilm


def demo(c):
  base.demo(c)
  c.num_train_steps = 30
  c.critical_r = (2,)
  c.critical_orders = ('most_changed', 'least_changed')
  c.eval_max_examples = 128


def get_config(arg=None):
  c = base.get_config()
  c.experiment = 'closeness'
  c.critical_r = ()                  # r values of the critical-block sweep; () = distances only
  c.critical_orders = ('most_changed', 'least_changed', 'top')
  c.rank_metric = 'l1_per_param'     # l1, l1_per_param or angle_rad
  c.rank_from = ''                   # another run's closeness.csv; '' = this run's phase 1
  c.full_finetuning = True           # run phase 1 (always, unless rank_from is given)
  base.apply_preset(c, arg, {'demo': demo, 'minilm': minilm})
  return c
