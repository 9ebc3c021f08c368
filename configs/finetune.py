"""Plain fine-tuning of the whole model (the reference every study compares against).

  python -m jaxtransfer.main --config=configs/finetune.py --workdir=results/ft \
      --config.model=bert-base-uncased --config.task=rte --config.data_dir=/path/to/glue
  python -m jaxtransfer.main --config=configs/finetune.py:demo --workdir=/tmp/ft-demo

Your own data (any study; README "Your own data"): a CSV with columns review,sentiment, e.g. the
demo-sized /tmp/reviews/{train,dev}.csv written by the README's example,
  python -m jaxtransfer.main --config=configs/finetune.py:demo --workdir=/tmp/ft-reviews \
      --config.task=custom --config.train_file=/tmp/reviews/train.csv \
      --config.dev_file=/tmp/reviews/dev.csv --config.text_fields=review \
      --config.label_field=sentiment

Defaults follow HF's Flax GLUE example (lr 2e-5, 3 epochs, batch 32, length 128); its bert-base-cased
dev means over 5 seeds: CoLA MCC 59.0, SST-2 92.2, MRPC F1 89.0, STS-B Spearman 88.6, RTE 64.8.
"""

from configs import base


def get_config(arg=None):
  c = base.get_config()
  c.experiment = 'finetune'
  base.apply_preset(c, arg, {'demo': base.demo})
  return c
