"""Progressive reinitialization (Tamkin et al. 2020, Fig. 2): blocks >= k reinitialized, then tuned.

  python -m jaxtransfer.main --config=configs/reinit.py --workdir=results/reinit-sst2 \
      --config.task=sst2 --config.data_dir=/path/to/glue [--config.probe_dir=results/probe-sst2]
  python -m jaxtransfer.main --config=configs/reinit.py:demo --workdir=/tmp/reinit-demo

k is the number of pretrained blocks kept: k = L is plain fine-tuning, k = 0 reinitializes every
block (embeddings and the pretrained pooler are kept, the classifier is always new);
`scratch=True` adds the from-scratch floor (those reinitialized too: nothing pretrained is left).
`ks=(-1,)` (the default) means every k from 0 to L, whatever the model's L. Every k of one
(scheme, train size) runs in ONE compiled, vmapped group: k is a per-trial mask, not a program.

Paper defaults (docs/PROTOCOLS.md §1): bert-base-uncased; SST-2, QNLI, CoLA; 500 / 5,000 / full
training examples, each trial its own random subset; 50 trials at 500 examples, 3 otherwise;
AdamW lr 2e-5, batch 8, 3 epochs, length 128, no warmup, no weight decay. An explicit
`--config.seeds` runs exactly those seeds at every size (`--config.seeds='(0,1)'
--config.train_sizes='(100,)'` is 2 seeds x L+1 values of k); the log states the count first. The authors' early plots
(SST-2, one run each): every block kept .858 at 500 / .903 at 5k; all reinitialized .509 / .796.
`reinit_scheme=tamkin2020` reproduces their code's reinit (tiny kernels, pretrained biases kept);
`reinit_lr_multiplier=5.0` is their 5x learning-rate ablation for the reinitialized blocks.

Check on real data, the packaged MiniLM (6 blocks), SST-2, 1,000 examples:
  python -m jaxtransfer.main --config=configs/reinit.py --workdir=/tmp/reinit-check \
      --config.model=minilm-l6 --config.task=sst2 --config.data_dir=../shared/glue \
      --config.train_sizes='(1000,)' --config.num_train_steps=150 --config.batch_size=16 \
      --config.max_seq_length=64 --config.seeds='(1,2,3)' --config.ks='(0,6)'
gives SST-2 dev accuracy .749 (seeds .747 / .735 / .764) with all 6 blocks kept vs .514
(.522 / .509 / .510) with all reinitialized, one compiled group of 6 trials (a PyTorch reference:
about .76 vs .51); 19 CPU-minutes.
"""

from ml_collections.config_dict import config_dict

from configs import base

ALL = -1  # in ks / starts: every valid value for the model's number of blocks


def tamkin_defaults(c):
  """The optimisation and data protocol shared by all of Tamkin et al.'s studies."""
  c.model = 'bert-base-uncased'
  c.task = 'sst2'
  c.max_seq_length = 128
  c.batch_size = 8
  c.learning_rate = 2e-5
  c.num_epochs = 3.0
  c.warmup_ratio = 0.0
  c.weight_decay = 0.0
  c.adam_eps = 1e-8
  c.max_grad_norm = 1.0
  c.train_sizes = (500, 5000, 0)
  c.seeds = (1, 2, 3)
  # The paper's figures use 50 trials at 500 examples: sizes <= small_size (not 0 = full) run
  # seeds 1..small_size_seeds instead of `seeds`. 0 turns this off (reinit.py: also --config.seeds).
  c.small_size_seeds = 0
  c.small_size = 500
  c.reinit_scheme = 'bert'         # bert | tamkin2020 | family; 'bert,tamkin2020' runs both
  # True: reinitialized blocks keep their pretrained LayerNorms (the authors' run_keep-ln.sh
  # ablation, --keep_layer_norm); False: LayerNorms reset to 1/0 with the rest of the block.
  c.keep_layer_norm = False
  return c


def demo_sizes(c):
  """:demo on the built-in sentiment set: a few short trials, seconds each."""
  base.demo(c)
  c.small_size_seeds = 0
  c.num_train_steps = 30  # every :demo under 150 s on a 2-core laptop (benchmarks/RESULTS.md)
  c.max_seq_length = 32
  return c


def get_config(arg=None):
  c = tamkin_defaults(base.get_config())
  c.experiment = 'reinit'
  # Unset: the paper's protocol, seeds (1, 2, 3) and 1..small_size_seeds at train sizes <=
  # small_size. An explicit --config.seeds runs those seeds at every size (small_size_seeds off).
  c.seeds = config_dict.placeholder(tuple)
  c.small_size_seeds = 50
  c.ks = (ALL,)                   # blocks >= k are reinitialized; (-1,) = every k in 0..L
  c.reinit_lr_multiplier = 1.0     # lr multiplier of the reinitialized blocks (5.0: the ablation)
  c.probe_dir = ''                 # a probe.py workdir: its curve is drawn dashed in the k-plot
  # True adds the model trained from scratch (mode 'scratch': every block, the embeddings and the
  # pooler reinitialized in reinit_scheme), once per train size; with ks=() it runs alone.
  c.scratch = False
  base.apply_preset(c, arg, {'demo': demo_sizes})
  return c
