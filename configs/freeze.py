"""Freezing study (Lee, Tang, Lin 2019, "What Would Elsa Do?"): train only the top k blocks + head.

  python -m jaxtransfer.main --config=configs/freeze.py --workdir=results/freeze-rte \
      --config.model=bert-base-uncased --config.task=rte --config.data_dir=/path/to/glue
  python -m jaxtransfer.main --config=configs/freeze.py:demo --workdir=/tmp/freeze-demo

`trainable_blocks` lists k: only blocks L-k..L-1 train (embeddings frozen), plus the pooler and the
classifier; k = L is full fine-tuning (embeddings included), k = 0 is the paper's "None" (pooler +
classifier). The default `()` (empty) means the paper's sweep for the model's L:
[L, L/2, ..., 1, 0].

Paper defaults that follow `task` and `model` unless given on the command line: the per-task
bert-base learning rate of docs/PROTOCOLS.md §2 (CoLA 4e-5, SST-2 2e-5, MRPC 3e-5, STS-B 5e-5,
QQP 2e-5, MNLI 3e-5, QNLI 2e-5, RTE 3e-5; the authors tuned each model separately, we only know
bert-base's choice), batch 32 for QQP/MNLI/QNLI else 16, 10 epochs for models whose name contains
"roberta" else 3. Length 128, no warmup, weight decay 0, clip 1.0, seeds 1..10, whole training sets.
Clipping: by default over the trained parameters only; `clip_frozen_grads=True` is the authors'
code (the frozen parameters' gradients enlarge the norm and shrink the trained layers' updates;
it costs a full backward pass).

Paper (bert-base-uncased, dev ×100, Lee aggregation): Full / top 6 / top 3 / top 1 / None =
SST-2 92.69 / 92.06 / 90.84 / 91.33 / 85.03, RTE 67.55 / 68.71 / 62.32 / 57.87 / 57.82,
CoLA 58.26 / 53.27 / 47.49 / 42.10 / 29.59. Training the top quarter of the blocks keeps >= 90% of
full fine-tuning's score on every task but CoLA. Our MiniLM reproduction: results/lee2019/README.md.
The demo (~1-2 min) trains MiniLM on the built-in sentiment set for every k in [6, 3, 2, 1, 0].

`method` (default `finetune`, the paper's) trains the top k blocks by LoRA factors (`lora`) or only
their biases (`bitfit`) instead, at `lora_learning_rate` / `bitfit_learning_rate`; the lora_* and
bitfit keys and their defaults are select.py's (see configs/select.py for the sources). Each
trial reports `trainable_params_fraction`, `task_state_bytes` and `full_copy_bytes`.
"""

from ml_collections.config_dict import config_dict

from configs import base


def _paper(c):
  # Unset (None) until given on the command line: the study then fills in Lee et al.'s choice for
  # the task and model (jaxtransfer.studies.lee2019.freeze.paper_defaults), so --config.task=cola moves
  # the default learning rate along while --config.learning_rate=1e-4 wins.
  c.learning_rate = config_dict.placeholder(float)
  c.batch_size = config_dict.placeholder(int)
  c.num_epochs = config_dict.placeholder(float)


def demo(c):
  base.demo(c)
  c.trainable_blocks = ()   # MiniLM: [6, 3, 2, 1, 0]
  c.num_train_steps = 40
  c.eval_max_examples = 256


def get_config(arg=None):
  c = base.get_config()
  c.experiment = 'freeze'
  c.trainable_blocks = ()  # k values; () = the paper's sweep [L, L/2, ..., 1, 0]
  c.method = 'finetune'    # how the top k blocks train: finetune, lora or bitfit
  base.lora_bitfit(c)
  c.seeds = tuple(range(1, 11))
  c.max_seq_length = 128
  c.warmup_ratio = 0.0
  c.weight_decay = 0.0
  c.max_grad_norm = 1.0
  # True: clip the norm over every parameter, frozen ones included, as the authors' code
  # (clip_grad_norm_(model.parameters())); this differentiates the frozen blocks too (a full
  # backward pass). False: over the trained parameters only.
  c.clip_frozen_grads = False
  _paper(c)
  base.apply_preset(c, arg, {'demo': demo})
  return c
