"""Every hidden state of a real checkpoint against HF transformers' PyTorch model, on padded
SST-2 dev sentences (../shared/glue), and the mean-pooled sentence vector.

  python benchmarks/hf_parity.py [--model=all-mpnet-base-v2] [--n=16]

Prints, per hidden state (0 = embeddings), the max |ours - HF| over real tokens, and the same for
the token mean of the last one (a sentence-transformers checkpoint's sentence embedding).
"""

from __future__ import annotations

import argparse
import csv
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402

import jaxtransfer as jt  # noqa: E402

GLUE = ROOT.parent / 'shared' / 'glue'


def sentences(n: int) -> list[str]:
  with open(GLUE / 'SST-2' / 'dev.tsv', encoding='utf-8') as f:
    rows = list(csv.DictReader(f, delimiter='\t', quoting=csv.QUOTE_NONE))
  return [r['sentence'] for r in rows[:n]]


def main() -> None:
  parser = argparse.ArgumentParser()
  parser.add_argument('--model', default='all-mpnet-base-v2')
  parser.add_argument('--n', type=int, default=16)
  args = parser.parse_args()
  pre = jt.load_pretrained(args.model)
  enc = pre.tokenizer(sentences(args.n), padding=True, return_tensors='np')
  ids, mask = enc['input_ids'].astype(np.int32), enc['attention_mask'].astype(np.int32)
  types = enc.get('token_type_ids')
  ours = np.asarray(jt.hidden_states(pre.config, pre.params, ids, mask, types), np.float64)
  model = transformers.AutoModel.from_pretrained(pre.path).eval()
  with torch.no_grad():
    out = model(input_ids=torch.tensor(ids, dtype=torch.long),
                attention_mask=torch.tensor(mask, dtype=torch.long), output_hidden_states=True)
  ref = np.stack([h.numpy() for h in out.hidden_states]).astype(np.float64)
  m = mask[None, :, :, None].astype(bool)
  err = np.abs(np.where(m, ours - ref, 0.0)).reshape(len(ref), -1).max(axis=1)
  print(f'{args.model}: {args.n} sentences padded to {ids.shape[1]} tokens '
        f'({int(mask.sum())} real, {int((1 - mask).sum())} padding)')
  for i, e in enumerate(err):
    print(f'  hidden state {i:2d}: max |diff| {e:.2e}')
  print(f'  max over all: {err.max():.2e}')
  w = mask[..., None]
  pool = lambda h: (h * w).sum(1) / w.sum(1)
  print(f'  mean-pooled last state: max |diff| {np.abs(pool(ours[-1]) - pool(ref[-1])).max():.2e}')


if __name__ == '__main__':
  main()
