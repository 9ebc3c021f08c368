"""Freezing study (Lee, Tang, Lin 2019, "What Would Elsa Do?"): train only the top k blocks + head.

  python -m jaxtransfer.main --config=configs/freeze.py --workdir=results/freeze-rte \
      --config.model=bert-base-uncased --config.task=rte --config.data_dir=/path/to/glue
  python -m jaxtransfer.main --config=configs/freeze.py:demo --workdir=/tmp/freeze-demo

`trainable_blocks` lists k: only blocks L-k..L-1 train (embeddings frozen), plus the pooler and the
classifier; k = L is full fine-tuning (embeddings included), k = 0 is the paper's "None" (pooler +
classifier). The default `()` (empty) means the paper's sweep for the model's L:
[L, L/2, ..., 1, 0].

Paper defaults that follow `task` and `model` unless given on the command line: the per-task
bert-base learning rate of PROTOCOLS §2 (CoLA 4e-5, SST-2 2e-5, MRPC 3e-5, STS-B 5e-5, QQP 2e-5,
MNLI 3e-5, QNLI 2e-5, RTE 3e-5; the authors tuned each model separately, we only know bert-base's
choice), batch 32 for QQP/MNLI/QNLI else 16, 10 epochs for models whose name contains "roberta"
else 3. Length 128, no warmup, weight decay 0, clip 1.0, seeds 1..10, whole training sets.

Paper (bert-base-uncased, dev ×100, Lee aggregation): Full / top 6 / top 3 / top 1 / None =
SST-2 92.69 / 92.06 / 90.84 / 91.33 / 85.03, RTE 67.55 / 68.71 / 62.32 / 57.87 / 57.82,
CoLA 58.26 / 53.27 / 47.49 / 42.10 / 29.59. Training the top quarter of the blocks keeps >= 90% of
full fine-tuning's score on every task but CoLA. Our MiniLM reproduction: results/lee2019/README.md.
The demo (~1-2 min) trains MiniLM on the built-in sentiment set for every k in [6, 3, 2, 1, 0].
"""

from ml_collections.config_dict import config_dict

from configs import base

# PROTOCOLS §2: the learning rate Lee et al. picked per task for bert-base (best of {1..5}e-5).
BERT_BASE_LR = {'cola': 4e-5, 'sst2': 2e-5, 'mrpc': 3e-5, 'stsb': 5e-5, 'qqp': 2e-5, 'mnli': 3e-5,
                'qnli': 2e-5, 'rte': 3e-5}
LARGE_BATCH_TASKS = ('qqp', 'mnli', 'qnli')


def follows(ref, fn, field_type):
  """A lazily computed field: `fn(value of ref)` until the key is set explicitly.

  ml_collections evaluates the op on every read, so `--config.task=cola` moves the paper's default
  learning rate along, while `--config.learning_rate=1e-4` replaces the op with a plain value.
  """
  op = config_dict._Op(lambda _, v: fn(v), [ref])  # pylint: disable=protected-access
  return config_dict.FieldReference(field_type(), field_type=field_type, op=op)


def _paper(c):
  task, model = c.get_ref('task'), c.get_ref('model')
  c.learning_rate = follows(task, lambda t: BERT_BASE_LR.get(str(t).lower(), 2e-5), float)
  c.batch_size = follows(task, lambda t: 32 if str(t).lower() in LARGE_BATCH_TASKS else 16, int)
  c.num_epochs = follows(model, lambda m: 10.0 if 'roberta' in str(m).lower() else 3.0, float)


def demo(c):
  base.demo(c)
  c.trainable_blocks = ()   # MiniLM: [6, 3, 2, 1, 0]
  c.num_train_steps = 40
  c.eval_max_examples = 256


def get_config(arg=None):
  c = base.get_config()
  c.experiment = 'freeze'
  c.trainable_blocks = ()  # k values; () = the paper's sweep [L, L/2, ..., 1, 0]
  c.seeds = tuple(range(1, 11))
  c.max_seq_length = 128
  c.warmup_ratio = 0.0
  c.weight_decay = 0.0
  c.max_grad_norm = 1.0
  _paper(c)
  base.apply_preset(c, arg, {'demo': demo})
  return c
