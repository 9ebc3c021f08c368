"""Linear probing (Tamkin et al. 2020, Fig. 2, dashed): a linear classifier on the frozen model
after its first k blocks, for every k at once.

  python -m jaxtransfer.main --config=configs/probe.py --workdir=results/probe-sst2 \
      --config.task=sst2 --config.data_dir=/path/to/glue
  python -m jaxtransfer.main --config=configs/probe.py:demo --workdir=/tmp/probe-demo

k = 0 probes the embedding output, k = i the output of block i-1 ... k = L the last block;
`ks=(-1,)` means every k from 0 to L. The frozen model's hidden states are computed once, in eval
mode, for the training and dev sets; the probe reads the [CLS] vector (or the mean over real tokens
with `pooling=mean`) through the frozen pretrained pooler, as the authors did (`probe_pooler=False`,
or a checkpoint without a pooler, reads the vector itself), then dropout and a linear layer.
All (k x seeds) probes of a training size train together in one compiled, vmapped group. The
setting records what the probe read (`pooling`, `pooler`) beside k. Precomputed eval-mode features
are a (fast) deviation from the authors' code, whose probe trains with the truncated BERT in
train mode: `probe_dropout=True` does that (the frozen encoder runs with dropout on at every step;
evaluation in eval mode), at the cost of an encoder forward pass per step and trial.

Beware of sentence-embedding checkpoints: in the packaged all-MiniLM-L6-v2 (trained with mean
pooling) the [CLS] vector is nearly the same for every input below the last blocks, so [CLS]
probes sit at chance up to k = 5; `pooling=mean` reads what that model actually encodes, and the
demo uses it.

Paper defaults: bert-base-uncased, the full training set, 40 epochs, lr 2e-5, batch 8, length 128,
10 trials.
"""

from configs import base
from configs import reinit


def demo(c):
  reinit.demo_sizes(c)
  c.pooling = 'mean'   # the packaged MiniLM's [CLS] vector sits at chance below its last block
  c.num_train_steps = 300
  c.learning_rate = 1e-3
  c.log_every = 100
  return c


def get_config(arg=None):
  c = reinit.tamkin_defaults(base.get_config())
  c.experiment = 'probe'
  c.train_sizes = (0,)
  c.seeds = tuple(range(1, 11))
  c.num_epochs = 40.0
  c.ks = (reinit.ALL,)            # probe the output of the first k blocks; (-1,) = 0..L
  c.probe_pooler = True            # through the frozen pretrained pooler (when the model has one)
  c.feature_batch_size = 256       # examples per forward pass when computing the frozen features
  # False: features computed once with the frozen model in eval mode (fast). True: as the authors'
  # code, the frozen layers run in train mode at every step, so dropout is on under the probe
  # (a forward pass of the encoder per step).
  c.probe_dropout = False
  # One more probe per seed (setting k='mix') over Tenney et al.'s scalar mix of all L+1 layers,
  # gamma x sum_j softmax(w)_j h_j; its record's `mix_weights/<j>` are the learned softmax(w).
  c.scalar_mix = False
  # 'accuracy': the probes' dev scores; 'mdl': also Voita & Titov's online code length of the
  # training labels per layer (`codelength_bits`, `compression`; portion probes on nested parts).
  c.probe_metric = 'accuracy'
  # Probe steps are tiny and many (40 epochs of batch 8): log and checkpoint rarely.
  c.log_every = 2000
  c.checkpoint_every = 50000
  base.apply_preset(c, arg, {'demo': demo})
  return c
