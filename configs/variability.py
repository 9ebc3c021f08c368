"""Hidden-state variability ν per block (Xie et al. 2022): one frozen forward pass, no training.

  python -m jaxtransfer.main --config=configs/variability.py --workdir=results/nu-sst2 \
      --config.model=minilm-l6 --config.task=sst2 --config.data_dir=/path/to/glue
  python -m jaxtransfer.main --config=configs/variability.py:demo --workdir=/tmp/nu-demo

Writes variability.csv (task,model,block,nu; block -1 = the embedding output; with the bootstrap,
the default, nu_lo,nu_hi,argmin_fraction) and plots/variability.png (band: the 95% CI). ν = trace(Σ_w Σ_b⁺)/|Y| over per-example means of the real tokens, from the
whole training split (docs/PROTOCOLS.md §3). Classification tasks only.

MiniLM-L6 (max_seq_length 128, whole training split; results/xie2022/): where ν is lowest depends
on the task: the top block on SST-2 (block 3 a close second) and RTE, block 2 on CoLA, block 0 on
MRPC (where ν rises towards the top). Per-block values: results/xie2022/README.md.
"""

from configs import base


def add_keys(c):
  """The ν keys (shared with select.py)."""
  c.variability_max_examples = 0   # 0 = the whole training split (the paper); N = a random N
  c.variability_rtol = 1e-8        # Σ_b eigenvalues below rtol × the largest are round-off
  return c


def demo(c):
  base.demo(c)
  c.variability_max_examples = 0   # the demo set is small: all of it
  return c


def get_config(arg=None):
  c = base.get_config()
  c.experiment = 'variability'
  add_keys(c)
  # ν's 95% CI per layer (variability.csv's nu_lo, nu_hi) and how often each block is the lowest
  # (argmin_fraction), over this many resamples of the examples within each class; 0 = off.
  c.variability_bootstrap = 1000
  c.variability_bootstrap_seed = 0
  base.apply_preset(c, arg, {'demo': demo})
  return c
