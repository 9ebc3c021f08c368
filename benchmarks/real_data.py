"""Real-data speed, side by side: jaxtransfer's CLI vs a careful HF PyTorch loop on real SST-2.

  python benchmarks/real_data.py                       # CPU: MiniLM, 4 trials x 60 steps
  python benchmarks/real_data.py --device=gpu --trials=16 --steps=189 --batch=8

Each trial fine-tunes the packaged all-MiniLM-L6-v2 on its own random 1,000-example subset of
SST-2 (batch 16, max length 128, AdamW lr 1e-4 with linear decay, clip 1.0, dropout 0.1) and is
evaluated on the whole dev set (872 sentences). Three whole processes run one after another, each
timed from start to exit (imports, model load, tokenization, compile, training, evaluation):

- `jaxtransfer`: `python -m jaxtransfer.main --config=configs/finetune.py ...` with its defaults
  but `pooling=cls`, with a cold tokenization cache and a cold XLA compilation cache (nothing
  carried over between runs). The pooling makes the two sides train the same model: HF's
  `AutoModelForSequenceClassification` reads the first token into BERT's pooler, where
  jaxtransfer's `pooling=auto` means-pools this sentence-transformers checkpoint (+0.012 dev
  accuracy here: a different model, not a faster one);
- `hf-max`: HF PyTorch as the seed papers' run_glue does it: every batch padded to 128;
- `hf-dynamic`: HF PyTorch with per-batch padding to the longest row (DataCollatorWithPadding).

The HF loop is what a careful user writes: the data tokenized once up front, a manual loop
(no Trainer), `torch.optim.AdamW` with HF's no-decay groups, `get_linear_schedule_with_warmup`,
`clip_grad_norm_`, the model reloaded per trial, the same subsets and example order as
jaxtransfer's trials (`engine.trials.trial_batches`). Prints wall times, accuracies and the ratios.

MFU on real tokens: the model FLOPs of the training examples' own tokens (forward + backward,
models/flops.py: each example at its own length, attention within itself; padding and packing
gaps count for nothing) over each side's training-loop time (jaxtransfer's from its log lines,
compiles excluded; HF's timed around its loop), as a share of the peak of the step's own matmul
shapes measured on this device (the best of jax and torch: one packed step's tokens through
MiniLM's four block matmuls, forward and the backward's transposes) and of the nominal peak.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import re
import resource
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
GLUE = ROOT.parent / 'shared' / 'glue'
_START = time.time()


def parse_args(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split('\n')[0],
                              formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
  p.add_argument('--device', default='cpu', choices=('cpu', 'gpu'))
  p.add_argument('--trials', type=int, default=4)
  p.add_argument('--steps', type=int, default=60)
  p.add_argument('--train_size', type=int, default=1000)
  p.add_argument('--batch', type=int, default=16)
  p.add_argument('--length', type=int, default=128)
  p.add_argument('--lr', type=float, default=1e-4)
  p.add_argument('--eval_batch', type=int, default=128)
  p.add_argument('--data_dir', default=str(GLUE))
  p.add_argument('--sides', default='jaxtransfer,hf-dynamic,hf-max')
  p.add_argument('--jax_args', default='', help='extra --config.* flags for the jaxtransfer side')
  p.add_argument('--json', default='', help='also write the figures to this file')
  p.add_argument('--log', default='', help="also write the jaxtransfer side's whole log here")
  p.add_argument('--no_mfu', action='store_true', help='skip the MFU figures (and their peak run)')
  p.add_argument('--side', default='', help=argparse.SUPPRESS)  # internal: run one HF side
  p.add_argument('--out', default='', help=argparse.SUPPRESS)
  return p.parse_args(argv)


# ----------------------------------------------------------------------------- HF PyTorch side


def hf_side(args, dynamic: bool) -> dict:
  import numpy as np
  import torch
  import transformers
  sys.path.insert(0, str(ROOT))
  from jaxtransfer.data import glue as data_lib  # GLUE reading and the trials' data order: no jax
  from jaxtransfer.engine import trials as trials_lib
  from jaxtransfer.models import pretrained

  gpu = args.device == 'gpu'
  dev_name = 'cuda' if gpu else 'cpu'
  path = pretrained.resolve('minilm-l6')
  tok = transformers.AutoTokenizer.from_pretrained(path)
  task = data_lib.get_task('sst2')
  encode = lambda ex: tok(ex.text_a, truncation=True, max_length=args.length,
                          padding=False if dynamic else 'max_length')
  train_ex, dev_ex = (data_lib.read_split(task, args.data_dir, s) for s in ('train', 'dev'))
  train, dev = encode(train_ex), encode(dev_ex)
  train_y, dev_y = np.asarray(train_ex.labels), np.asarray(dev_ex.labels)

  def batch(enc, rows, labels=None):
    rows = [int(r) for r in rows]
    feats = [{k: enc[k][r] for k in enc} for r in rows]
    out = tok.pad(feats, return_tensors='pt')  # dynamic: to the longest row; else all 128 already
    if labels is not None:
      out['labels'] = torch.as_tensor(labels[rows], dtype=torch.long)
    return {k: v.to(dev_name) for k, v in out.items()}

  accs, train_s = [], 0.0
  for seed in range(1, args.trials + 1):
    torch.manual_seed(seed)
    model = transformers.AutoModelForSequenceClassification.from_pretrained(path, num_labels=2)
    model.to(dev_name).train()
    no_decay = ('bias', 'LayerNorm.weight')
    named = list(model.named_parameters())
    groups = [{'params': [p for n, p in named if not any(k in n for k in no_decay)], 'weight_decay': 0.0},
              {'params': [p for n, p in named if any(k in n for k in no_decay)], 'weight_decay': 0.0}]
    opt = torch.optim.AdamW(groups, lr=args.lr, eps=1e-8)
    sched = transformers.get_linear_schedule_with_warmup(opt, 0, args.steps)
    idx, w = trials_lib.trial_batches(seed, len(train_y), args.train_size, args.batch, args.steps)
    t0 = time.time()
    for step in range(args.steps):
      loss = model(**batch(train, idx[step][w[step] > 0], train_y)).loss
      loss.backward()
      torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
      opt.step()
      sched.step()
      opt.zero_grad()
    if gpu:
      torch.cuda.synchronize()
    train_s += time.time() - t0
    model.eval()
    preds = []
    with torch.no_grad():
      for s in range(0, len(dev_y), args.eval_batch):
        preds.append(model(**batch(dev, range(s, min(s + args.eval_batch, len(dev_y))))).logits
                     .argmax(-1).cpu().numpy())
    accs.append(float((np.concatenate(preds) == dev_y).mean()))
  return {'accuracy': accs, 'train_s': train_s, 'torch_threads': torch.get_num_threads()}


# ----------------------------------------------------------------------------- MFU


_STEP_LINE = re.compile(r'\] step (\d+)/(\d+) .* ([\d.]+) steps/s')


def log_train_seconds(log: str) -> float:
  """Training-loop seconds from the engine's log lines (`step 20/60 ... 5.3 steps/s`, one per
  window, compiles excluded): each window's steps over its rate."""
  total, last = 0.0, 0
  for line in log.splitlines():
    m = _STEP_LINE.search(line)
    if m:
      step, rate = int(m.group(1)), float(m.group(3))
      total += (step - (last if step > last else 0)) / rate
      last = step
  return total


def real_token_flops(args) -> tuple[float, int]:
  """(model FLOPs, real tokens) of every trial's training examples at their own lengths."""
  import numpy as np
  sys.path.insert(0, str(ROOT))
  from jaxtransfer.data import glue as data_lib
  from jaxtransfer.data import tokenize
  from jaxtransfer.engine import trials as trials_lib
  from jaxtransfer.models import flops, pretrained
  from jaxtransfer.models.config import EncoderConfig
  path = pretrained.resolve('minilm-l6')
  with open(os.path.join(path, 'config.json')) as f:
    c = EncoderConfig.from_hf(json.load(f))
  ex = data_lib.read_split(data_lib.get_task('sst2'), args.data_dir, 'train')
  lengths = tokenize.encode(ex, pretrained.load_tokenizer(path), args.length).attention_mask.sum(1)
  per_length = {n: 3.0 * flops.forward(c, 1, int(n), num_labels=2) for n in np.unique(lengths)}
  total, tokens = 0.0, 0
  for seed in range(1, args.trials + 1):
    idx, w = trials_lib.trial_batches(seed, len(lengths), args.train_size, args.batch, args.steps)
    for n in lengths[idx[w > 0]]:
      total, tokens = total + per_length[n], tokens + int(n)
  return total, tokens


def matmul_peak(tokens: int, reps: int = 30) -> dict:
  """FLOP/s of MiniLM's block matmuls on `tokens` rows (forward, and the backward's two
  transposed products), in jax and in torch on this device's CPU threads."""
  import numpy as np
  shapes = [(384, 1152), (384, 384), (384, 1536), (1536, 384)]
  flop = reps * sum(3 * 2 * tokens * k * n for k, n in shapes)
  rng = np.random.default_rng(0)
  mats = [(rng.standard_normal((tokens, k), np.float32), rng.standard_normal((k, n), np.float32),
           rng.standard_normal((tokens, n), np.float32)) for k, n in shapes]
  out = {}
  import jax
  import jax.numpy as jnp

  @jax.jit
  def jax_step(mats):
    acc = 0.0
    for x, w, g in mats:
      acc += (x @ w).sum() + (g @ w.T).sum() + (x.T @ g).sum()
    return acc

  jm = jax.device_put(mats)
  jax_step(jm).block_until_ready()
  t = time.time()
  for _ in range(reps):
    jax_step(jm).block_until_ready()
  out['jax'] = flop / (time.time() - t)
  import torch
  tm = [tuple(torch.from_numpy(a) for a in m) for m in mats]
  with torch.no_grad():
    for timed in (False, True):
      t = time.time()
      for _ in range(reps if timed else 2):
        for x, w, g in tm:
          (x @ w).sum(), (g @ w.T).sum(), (x.T @ g).sum()
      if timed:
        out['torch'] = flop / (time.time() - t)
  return out


def report_mfu(args, res: dict, tokens_per_step: int) -> None:
  """Prints each side's MFU on real tokens against the measured and the nominal peak."""
  flop, tokens = real_token_flops(args)
  with tempfile.NamedTemporaryFile(suffix='.json', delete=False) as f:
    out = f.name
  subprocess.run([sys.executable, os.path.abspath(__file__), '--side=peak', f'--out={out}',
                  f'--length={tokens_per_step}'], check=True)
  with open(out) as f:
    peak = json.load(f)
  os.unlink(out)
  sys.path.insert(0, str(ROOT / 'benchmarks'))
  from throughput import cpu_peak_flops
  nominal, note = cpu_peak_flops(os.cpu_count() or 1, 'float32')
  measured = max(peak.values())
  print(f'MFU on real tokens ({tokens:,} training tokens, {flop / 1e12:.2f} TFLOP forward + backward):')
  for side, r in res.items():
    if r.get('train_s'):
      achieved = flop / r['train_s']
      r['mfu_real'] = {'flop_s': achieved, 'of_measured': achieved / measured,
                       'of_nominal': achieved / nominal}
      print(f'  {side:>12}: {achieved / 1e9:6.1f} GFLOP/s over {r["train_s"]:.1f} s of training = '
            f'{achieved / measured:.0%} of the measured matmul peak, {achieved / nominal:.0%} of nominal')
  print(f'  measured matmul peak at these shapes ({tokens_per_step} tokens x MiniLM\'s block '
        f'matmuls): jax {peak["jax"] / 1e9:.1f}, torch {peak["torch"] / 1e9:.1f} GFLOP/s; '
        f'nominal {nominal / 1e9:.1f} GFLOP/s ({note})')
  res['mfu'] = {'real_tokens': tokens, 'flop': flop, 'peak': peak, 'nominal': nominal}


def packed_tokens_per_step(log: list[str], batch: int) -> int:
  """Computed tokens of the average packed step (`rows of 80 tokens, 3/5 rows per step (4.5
  examples per row ...)`: 80 x 16 / 4.5), or 256 when the log has no packing line."""
  for line in log:
    m = re.search(r'rows of (\d+) tokens, .*?\(([\d.]+) examples per row', line)
    if m:
      return round(int(m.group(1)) * batch / float(m.group(2)))
  return 256


# ----------------------------------------------------------------------------- driver


def peak_rss_mb(children: bool = False) -> float:
  who = resource.RUSAGE_CHILDREN if children else resource.RUSAGE_SELF
  return resource.getrusage(who).ru_maxrss / 1024


def run_jaxtransfer(args) -> dict:
  with tempfile.TemporaryDirectory() as tmp:
    cmd = [sys.executable, '-m', 'jaxtransfer.main', '--config=configs/finetune.py',
           f'--workdir={tmp}/work', '--config.model=minilm-l6', '--config.task=sst2',
           f'--config.data_dir={args.data_dir}', f'--config.cache_dir={tmp}/cache',
           f'--config.train_sizes=({args.train_size},)',
           f'--config.seeds=({",".join(str(s) for s in range(1, args.trials + 1))},)',
           f'--config.num_train_steps={args.steps}', f'--config.batch_size={args.batch}',
           f'--config.max_seq_length={args.length}', f'--config.learning_rate={args.lr}',
           f'--config.eval_batch_size={args.eval_batch}', '--config.pooling=cls',
           *args.jax_args.split()]
    env = {**os.environ, 'JAXTRANSFER_XLA_CACHE': f'{tmp}/xla'}
    t0 = time.time()
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    wall = time.time() - t0
    if args.log:
      pathlib.Path(args.log).write_text(proc.stderr)
    if proc.returncode:
      raise SystemExit(f'jaxtransfer failed:\n{proc.stderr[-3000:]}')
    recs = [json.loads(line) for line in open(f'{tmp}/work/trials.jsonl')]
  log = [l for l in proc.stderr.splitlines() if 'Length buckets' in l or 'Packing' in l or 'Compiled' in l]
  return {'process_s': wall, 'accuracy': [r['metrics']['accuracy'] for r in recs],
          'train_s': log_train_seconds(proc.stderr),
          'compile_s': sum({r['group']: r['compile_s'] for r in recs}.values()),
          'groups': len({r['group'] for r in recs}), 'log': log[:6]}


def run_hf(args, side: str) -> dict:
  with tempfile.NamedTemporaryFile(suffix='.json', delete=False) as f:
    out = f.name
  argv = [a for a in sys.argv[1:] if not a.startswith(('--side', '--out', '--json'))]
  t0 = time.time()
  proc = subprocess.run([sys.executable, os.path.abspath(__file__), *argv, f'--side={side}',
                         f'--out={out}'])
  wall = time.time() - t0
  if proc.returncode:
    raise SystemExit(f'{side} failed (exit {proc.returncode})')
  with open(out) as f:
    res = json.load(f)
  os.unlink(out)
  return {**res, 'process_s': wall}


def main():
  args = parse_args()
  if args.side == 'peak':
    with open(args.out, 'w') as f:
      json.dump(matmul_peak(args.length), f)
    return
  if args.side:
    res = hf_side(args, dynamic=args.side == 'hf-dynamic')
    res['peak_rss_mb'] = peak_rss_mb()
    with open(args.out, 'w') as f:
      json.dump(res, f)
    return
  import numpy as np
  res = {}
  for side in args.sides.split(','):
    res[side] = run_jaxtransfer(args) if side == 'jaxtransfer' else run_hf(args, side)
    r = res[side]
    print(f'{side:>12}: {r["process_s"]:7.1f} s whole process, dev accuracy '
          f'{np.mean(r["accuracy"]):.4f} ± {np.std(r["accuracy"]):.4f} '
          f'({", ".join(f"{a:.3f}" for a in r["accuracy"])})', flush=True)
  print(f'{args.trials} trials x {args.steps} steps, batch {args.batch}, max length {args.length}, '
        f'{args.train_size}-example subsets of SST-2, full dev set, {args.device}')
  if 'jaxtransfer' in res:
    for side in ('hf-max', 'hf-dynamic'):
      if side in res:
        print(f'jaxtransfer vs {side}: {res[side]["process_s"] / res["jaxtransfer"]["process_s"]:.2f}x '
              'faster (whole processes)')
    print('jaxtransfer log:', *res['jaxtransfer']['log'], sep='\n  ')
  if not args.no_mfu:
    log = res.get('jaxtransfer', {}).get('log', [])
    report_mfu(args, res, packed_tokens_per_step(log, args.batch))
  if args.json:
    with open(args.json, 'w') as f:
      json.dump({'args': vars(args), 'results': res}, f, indent=1)


if __name__ == '__main__':
  main()
