"""Layer permutation (Tamkin et al. 2020, Fig. 4): pretrained blocks stacked in a shuffled order.

  python -m jaxtransfer.main --config=configs/permute.py --workdir=results/permute-sst2 \
      --config.task=sst2 --config.data_dir=/path/to/glue
  python -m jaxtransfer.main --config=configs/permute.py:demo --workdir=/tmp/permute-demo

Permutation seed p stacks the blocks in the order `np.random.RandomState(p).permutation(L)` (the
authors' code); nothing is reinitialized. A seed fixes the training subset, order and head init,
so every permutation sees the same data under the same seed. The same run adds the references
the paper plots as mean +- 2 sigma bands: the model in its own order (`mode=full`) and every block
reinitialized (`mode=all_reinit`, in `reinit_scheme`). One compiled group for all of them.

Paper defaults: bert-base-uncased, 5,000 examples, p = 1..10, lr 2e-5, batch 8, 3 epochs,
length 128.
"""

from configs import base
from configs import reinit


def demo(c):
  reinit.demo_sizes(c)
  c.permutation_seeds = (1, 2, 3)
  return c


def get_config(arg=None):
  c = reinit.tamkin_defaults(base.get_config())
  c.experiment = 'permute'
  c.train_sizes = (5000,)
  c.permutation_seeds = tuple(range(1, 11))
  base.apply_preset(c, arg, {'demo': demo})
  return c
