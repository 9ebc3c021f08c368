"""Block reinitialization (Tamkin et al. 2020, Fig. 3): reinit blocks s..s+size-1 or keep only them.

  python -m jaxtransfer.main --config=configs/block_reinit.py --workdir=results/block-sst2 \
      --config.task=sst2 --config.data_dir=/path/to/glue
  python -m jaxtransfer.main --config=configs/block_reinit.py:demo --workdir=/tmp/block-demo

`mode=reinit` reinitializes blocks start..start+block_size-1 and keeps the rest; `mode=preserve`
keeps only those blocks (and the embeddings) and reinitializes every other block;
`mode=reinit,preserve` (the default) runs both. `starts=(-1,)` means every start from 0 to
L - block_size. The same run adds the paper's two reference lines: the full pretrained model
(`mode=full`) and embeddings only preserved, every block reinitialized (`mode=all_reinit`).
All of them differ only in a per-trial reinit mask, so they run in one compiled group.

Paper defaults: bert-base-uncased, 5,000 examples, 10 trials, block size 3, lr 2e-5, batch 8,
3 epochs, length 128. Windows that reinitialize the same blocks (on 6 blocks with block size 3,
`reinit` 0-2 and `preserve` 3-5) are one trial run twice; the log warns. The demo uses windows
of 2 blocks at starts 0, 2, 4 on MiniLM's 6, which never coincide.
"""

from configs import base
from configs import reinit


def demo(c):
  reinit.demo_sizes(c)
  # Windows of 2 of MiniLM's 6 blocks: with 3, "reinit 0-2" and "preserve 3-5" are one trial.
  c.block_size = 2
  c.starts = (0, 2, 4)
  return c


def get_config(arg=None):
  c = reinit.tamkin_defaults(base.get_config())
  c.experiment = 'block_reinit'
  c.train_sizes = (5000,)
  c.seeds = tuple(range(1, 11))
  c.starts = (reinit.ALL,)        # first block of the window; (-1,) = all of 0..L-block_size
  c.block_size = 3
  c.mode = 'reinit,preserve'       # reinit | preserve | both, comma-separated
  base.apply_preset(c, arg, {'demo': demo})
  return c
