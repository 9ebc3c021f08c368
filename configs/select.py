"""Variability-guided classifier placement + partial fine-tuning or adapters (Xie et al. 2022).

  python -m jaxtransfer.main --config=configs/select.py --workdir=results/select-sst2 \
      --config.model=roberta-large --config.task=sst2 --config.data_dir=/path/to/glue
  python -m jaxtransfer.main --config=configs/select.py:demo --workdir=/tmp/select-demo

The head (dropout → Linear(H,H) → tanh → dropout → Linear(H,C) on the first token) reads block
`head_block` (`auto`: the block of lowest ν, computed first with one frozen forward pass, or read
from the workdir's variability.csv); blocks above it are never computed. The `num_tuned_blocks` m
blocks ending there are tuned by `method`: `finetune` (all their weights) or `adapter` (Houlsby
adapters of size `adapter_size` + their LayerNorms); embeddings and lower blocks are frozen and not
differentiated. `baselines` adds, in the same sweep, the top m blocks with the head on top, full
fine-tuning and full adapter-tuning. Each trial reports `train_flops_fraction` and `step_time_s`.

Defaults follow the authors' scripts (roberta-large: batch 8, 20 epochs, length 128, 6% warmup,
adapters at lr 3e-4, bottleneck 256, first-token head). Their scripts also fine-tune at 3e-4; we
default fine-tuning to the usual 2e-5 range instead, which is stable for full fine-tuning of a large
model (see results/xie2022/README.md for the MiniLM choices). The authors keep the best dev epoch;
set eval_every to the steps of one epoch and select_best=True for that.

results/xie2022 (MiniLM-L6, SST-2, 1,000 examples, 3 seeds): see its README for the numbers.
"""

from configs import base
from configs import variability


def demo(c):
  """Offline, ~2 minutes: MiniLM on the built-in sentiment set, every setting and baseline."""
  base.demo(c)
  c.head = 'mlp'
  c.num_train_steps = 40
  c.learning_rate = 1e-4
  c.adapter_learning_rate = 1e-3
  c.num_tuned_blocks = (2,)
  return c


def get_config(arg=None):
  c = base.get_config()
  c.experiment = 'select'
  variability.add_keys(c)
  c.head = 'mlp'                    # Xie et al.'s head (RoBERTa's classification head)
  c.head_block = 'auto'             # 'auto' (lowest-ν block) or a block index 0..L-1
  c.auto_tolerance = 0.0            # auto: lowest block with ν ≤ (1 + tol) × min ν (0 = argmin)
  c.num_tuned_blocks = (2,)         # m: blocks ending at the head block that are tuned
  c.method = ('finetune', 'adapter')
  c.adapter_size = 256
  c.baselines = True                # + top-m blocks, full fine-tuning, full adapter-tuning
  c.measure_step_time = True        # step_time_s per setting (one extra compile per setting)
  c.max_seq_length = 128
  c.batch_size = 8
  c.num_epochs = 20.0
  c.warmup_ratio = 0.06
  c.learning_rate = 2e-5            # method=finetune
  c.adapter_learning_rate = 3e-4    # method=adapter (the authors' value)
  base.apply_preset(c, arg, {'demo': demo})
  return c
