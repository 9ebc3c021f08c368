"""representations.csv of a run vs linear CKA recomputed from HF PyTorch (float64) hidden states of
its exported trials (export_model=True) and of the pretrained model, on the first
`similarity_examples` dev examples as HF's tokenizer encodes them.

  python benchmarks/cka_vs_hf.py WORKDIR [--glue ../shared/glue]

The run it was measured on (SST-2, MiniLM, 500 examples, 60 steps, 2 seeds; max |diff| 7.8e-8):

  python -m jaxtransfer.main --config=configs/finetune.py --workdir=/tmp/sst2-cka \
      --config.model=minilm-l6 --config.task=sst2 --config.data_dir=../shared/glue \
      --config.train_sizes=500 --config.num_train_steps=60 --config.seeds=1,2 \
      --config.learning_rate=1e-4 --config.export_model=True --config.representation_similarity=True
"""

import argparse
import csv
import json
import os

import numpy as np
import torch
import transformers

from jaxtransfer.data import glue
from jaxtransfer.models import pretrained


def cka(x, y):
  x, y = x - x.mean(0), y - y.mean(0)
  return np.linalg.norm(y.T @ x) ** 2 / (np.linalg.norm(x.T @ x) * np.linalg.norm(y.T @ y))


def hidden(model_dir, batch):
  model = transformers.AutoModel.from_pretrained(model_dir).eval().double()
  with torch.no_grad():
    return [h.numpy() for h in model(**batch, output_hidden_states=True).hidden_states]


def main():
  p = argparse.ArgumentParser()
  p.add_argument('workdir')
  p.add_argument('--glue', default='../shared/glue')
  args = p.parse_args()
  config = json.load(open(os.path.join(args.workdir, 'config.json')))
  task = glue.get_task(config['task'])
  path = pretrained.resolve(config['model'])
  with open(os.path.join(args.glue, task.dirname, 'dev.tsv'), newline='') as f:
    rows = list(csv.DictReader(f, delimiter='\t', quoting=csv.QUOTE_NONE))
  texts = [r['sentence'] for r in rows[:config['similarity_examples']]]
  tok = transformers.AutoTokenizer.from_pretrained(path)
  batch = tok(texts, padding='max_length', truncation=True, max_length=config['max_seq_length'],
              return_tensors='pt')
  real = batch['attention_mask'].numpy().astype(bool)
  ref = hidden(path, batch)
  with open(os.path.join(args.workdir, 'representations.csv'), newline='') as f:
    got = {(r['trial_id'], int(r['layer'])): float(r['cka']) for r in csv.DictReader(f)}
  worst = 0.0
  for trial in sorted({t for t, _ in got}):
    hs = hidden(os.path.join(args.workdir, 'models', trial), batch)
    for layer in range(len(hs)):
      want = cka(ref[layer][real], hs[layer][real])
      diff = abs(got[(trial, layer)] - want)
      worst = max(worst, diff)
      print(f'{trial} layer {layer}: representations.csv {got[(trial, layer)]:.6f}  HF float64 '
            f'{want:.6f}  |diff| {diff:.2e}')
  print(f'max |diff| {worst:.2e} over {len(got)} rows ({real.sum()} tokens of {len(texts)} '
        'dev examples)')


if __name__ == '__main__':
  main()
