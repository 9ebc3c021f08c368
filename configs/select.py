"""Variability-guided classifier placement + partial fine-tuning, adapters, LoRA or BitFit (Xie et al.
2022; Hu et al. 2021; Ben Zaken et al. 2022).

  python -m jaxtransfer.main --config=configs/select.py --workdir=results/select-sst2 \
      --config.model=roberta-large --config.task=sst2 --config.data_dir=/path/to/glue
  python -m jaxtransfer.main --config=configs/select.py:demo --workdir=/tmp/select-demo

The head (dropout → Linear(H,H) → tanh → dropout → Linear(H,C) on the first token) reads block
`head_block` (`auto`: the block of lowest ν, computed first with one frozen forward pass, or read
from the workdir's variability.csv); blocks above it are never computed. The `num_tuned_blocks` m
blocks ending there (or the range `tuned_blocks`, e.g. '3-4', as the authors' scripts tune blocks
16-17 under a head at 23; the blocks between are computed and back-propagated through, never
updated; not with adapters) are tuned by `method`: `finetune` (all their weights), `adapter` (Houlsby
adapters of size `adapter_size` + their LayerNorms), `lora` (W + (lora_alpha / lora_rank)·A·B on
the `lora_targets` matrices, A normal and B zero at init, `lora_dropout` on A's input; the blocks'
own weights frozen) or `bitfit` (only the blocks' biases, LayerNorm biases included); embeddings
and lower blocks are frozen and not differentiated. The pooler (its bias only, with BitFit) and
the classifier train with every method. `baselines` adds, in the same sweep, the top m blocks with
the head on top and every method on all blocks (full BitFit also trains the embeddings'
LayerNorm bias). Each trial reports `train_flops_fraction`, `step_time_s`,
`trainable_params_fraction` (trainable parameters / all of a full fine-tune, head included),
`task_state_bytes` (its trainable parameters in float32) and `full_copy_bytes` (a fully
fine-tuned copy). `export_model=True` writes LoRA trials with W + scale·A·B merged in.

Defaults follow the authors' scripts (roberta-large: batch 8, 20 epochs, length 128, 6% warmup,
adapters at lr 3e-4, bottleneck 256, first-token head). Their scripts also fine-tune at 3e-4; we
default fine-tuning to the usual 2e-5 range instead, which is stable for full fine-tuning of a large
model (see results/xie2022/README.md for the MiniLM choices). The authors keep the best dev epoch;
set eval_every to the steps of one epoch and select_best=True for that.

LoRA and BitFit defaults:
- lora_rank 8, lora_alpha 16, lora_targets query,value, lora_learning_rate 4e-4: the LoRA authors'
  GLUE script for roberta-large on SST-2 (microsoft/LoRA examples/NLU/roberta_large_sst2.sh:
  --lora_r 8 --lora_alpha 16 --learning_rate 4e-4, warmup 0.06, weight decay 0.1). Their
  roberta-base scripts, at the same r and alpha, use 5e-4 (MNLI) and 4e-4 (MRPC). A is drawn with
  loralib's variance (kaiming-uniform, std 1/sqrt(3·in)), the init these rates were tuned with.
  lora_dropout 0 (the GLUE scripts set none).
- bitfit_learning_rate 1e-3: the top of Ben Zaken et al.'s grid {1e-4, 4e-4, 7e-4, 1e-3} for
  BERT-base/large, and their code's default (benzakenelad/BitFit run_glue.py: --learning-rate
  1e-3, batch 8, 16 epochs). What trains follows that code (bias terms 'all'): every bias of the
  encoder, LayerNorm biases included, the pooler's bias (not its weight) and the classifier.

`adapter_style`: `houlsby` (default) puts each adapter after its sublayer's output dropout, with
no dropout of its own; `xie` follows the authors' modeling_roberta.py: the attention adapter sits
before the attention output's dropout, and each adapter drops its own output (p = the model's
hidden dropout, 0.1) before its residual (where inside the adapter their dropout sits is our
reading). `configs/select.py:authors` switches to the authors' optimizer, head init and adapters
(eps 1e-6, no clipping, fine-tuning at 3e-4, `head_init=torch`, `adapter_style=xie`; see
`authors` below). On a mean-pooling sentence
encoder (the packaged MiniLM) the default `pooling=auto` reads the token mean, as it was trained;
with `--config.pooling=cls` a fresh head on its first token learns slowly (the run warns).

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
  c.measure_step_time = False  # one extra compile per setting; train_flops_fraction still reported
  return c


def authors(c):
  """The optimizer and head of the authors' code (shuox20/variability-efficient-tuning):
  transformers.AdamW defaults (eps 1e-6), no gradient clipping, 3e-4 for fine-tuning as for
  adapters, their head's PyTorch default init (kaiming-uniform kernels, nonzero biases) and their
  adapters' placement (`adapter_style=xie`)."""
  c.head_init = 'torch'
  c.adapter_style = 'xie'
  c.adam_eps = 1e-6
  c.max_grad_norm = 0.0
  c.learning_rate = 3e-4
  return c


def get_config(arg=None):
  c = base.get_config()
  c.experiment = 'select'
  variability.add_keys(c)
  c.head = 'mlp'                    # Xie et al.'s head (RoBERTa's classification head)
  c.head_block = 'auto'             # 'auto' (lowest-ν block) or a block index 0..L-1; several
                                    # ('0,2,5') or 'all': the head-position sweep
  c.head_init = 'normal'            # normal (BERT's std 0.02, zero bias) or torch (nn.Linear's)
  c.auto_tolerance = 0.0            # auto: lowest block with ν ≤ (1 + tol) × min ν (0 = argmin)
  c.num_tuned_blocks = (2,)         # m: blocks ending at the head block that are tuned
  c.tuned_blocks = ''               # or a range 'a-b' tuned under a head at head_block >= b
  c.method = ('finetune', 'adapter')  # any of finetune adapter lora bitfit
  c.adapter_size = 256
  c.adapter_style = 'houlsby'       # or xie: the authors' placement (see the docstring)
  c.baselines = True                # + top-m blocks, full fine-tuning, full adapter-tuning
  c.measure_step_time = True        # step_time_s per setting (one extra compile per setting)
  c.max_seq_length = 128
  c.batch_size = 8
  c.num_epochs = 20.0
  c.warmup_ratio = 0.06
  c.learning_rate = 2e-5            # method=finetune
  c.adapter_learning_rate = 3e-4    # method=adapter (the authors' value)
  base.lora_bitfit(c)               # method=lora, method=bitfit (sources above)
  base.apply_preset(c, arg, {'demo': demo, 'authors': authors})
  return c
