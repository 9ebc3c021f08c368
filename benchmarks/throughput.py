"""Trials per hour: jaxtransfer (T trials per vmapped program) vs HF PyTorch (trials in a row).

  # CPU (default): packaged MiniLM, 4 trials x 40 steps, batch 32, length 128, fp32, 2 threads.
  flock /tmp/jaxtransfer-heavy.lock python benchmarks/throughput.py
  # GPU, Tamkin et al.'s setting: random-init BERT-base, batch 8, length 128, 500 examples x 3
  # epochs (189 steps), bf16 compute with fp32 master weights; as many trials per group as fit
  # (--per_group=0), 4 groups; HF runs 4 of the trials in a row and is scaled to all of them.
  python benchmarks/throughput.py --device=gpu --model=bert-base --batch=8 --length=128 \
      --train_size=500 --epochs=3 --dtype=bfloat16 --eval_examples=872 --per_group=0 \
      --groups=4 --hf_trials=4

Each side runs in its own child process, so its whole-process wall time (imports, model load,
compile, training, evaluation) and peak memory are its own. The jaxtransfer side drives the real
engine (`Engine.run`: one compiled group, device-side batches, donated state); the HF side is what a
user writes: `AutoModelForSequenceClassification` + `torch.optim.AdamW` + linear schedule + grad
clipping, eager, one trial after another, model reloaded per trial. Both sides train on the same
examples in the same order (`engine.trials.trial_batches`), same config, batch, length, steps, precision.
The data are synthetic full-length rows (random token ids, no padding) so that neither side can
skip work: jaxtransfer's padding trim would otherwise shorten real SST-2 batches (`--data=sst2`
runs on real SST-2, padded to `--length` for HF and trimmed by the engine, as users would run it).

A sweep is many groups: `--trials` trials in all, `--per_group` of them vmapped per compiled group
(default: all in one; 0: the most that fit, found by max_trials.py; `--groups=g` sets
--trials = g x per_group). `--hf_trials=k` runs only k of the HF trials and scales the HF time to
all of them (every trial is the same work; per-trial figures are in --json), for GPU sweeps.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import pathlib
import resource
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
GLUE = ROOT.parent / 'shared' / 'glue'
_START = time.time()

# Dense peak FLOP/s per device by name fragment (NVIDIA datasheets, dense, no sparsity); fp32 is
# the CUDA-core rate (XLA and torch use TF32 tensor cores for fp32 only when asked to).
GPU_PEAK_TFLOPS = {  # name fragment: (bf16, fp32)
    'H200': (989.4, 66.9), 'H100 PCIe': (756.0, 51.2), 'H100': (989.4, 66.9),
    'A100': (312.0, 19.5), 'L4': (121.0, 30.3), 'A10': (125.0, 31.2),
}


# ----------------------------------------------------------------------------- shared helpers


def make_parser(doc: str = __doc__) -> argparse.ArgumentParser:
  p = argparse.ArgumentParser(description=doc.split('\n')[0],
                              formatter_class=argparse.RawDescriptionHelpFormatter, epilog=doc)
  p.add_argument('--device', default='cpu', choices=('cpu', 'gpu'))
  p.add_argument('--model', default=None,
                 help='minilm-l6 (packaged, pretrained), bert-base / bert-large (random init from '
                      'a config: weights do not change speed) or a local HF directory. Default: '
                      'minilm-l6 on CPU, bert-base on GPU.')
  p.add_argument('--trials', type=int, default=4, help='trials in the sweep')
  p.add_argument('--per_group', type=int, default=-1,
                 help='T: trials vmapped per compiled group (-1: all; 0: the most that fit)')
  p.add_argument('--groups', type=int, default=0, help='> 0: --trials = groups x per_group')
  p.add_argument('--hf_trials', type=int, default=0,
                 help='HF trials actually run (0 = all); the HF time is scaled to --trials')
  p.add_argument('--steps', type=int, default=0, help='steps per trial (0: from --epochs)')
  p.add_argument('--epochs', type=float, default=0, help='epochs over --train_size examples')
  p.add_argument('--train_size', type=int, default=0,
                 help='examples per trial (each trial draws its own subset; 0 = steps x batch)')
  p.add_argument('--batch', type=int, default=None, help='default 32 on CPU, 8 on GPU')
  p.add_argument('--length', type=int, default=128)
  p.add_argument('--dtype', default=None, choices=('float32', 'bfloat16'),
                 help='compute dtype (params fp32 on both sides); default fp32 CPU, bf16 GPU')
  p.add_argument('--lr', type=float, default=2e-5)
  p.add_argument('--eval_examples', type=int, default=128, help='dev examples evaluated per trial')
  p.add_argument('--eval_batch', type=int, default=128)
  p.add_argument('--data', default='synthetic', choices=('synthetic', 'sst2'))
  p.add_argument('--remat', action='store_true',
                 help='jaxtransfer: recompute each block in the backward pass (bert.apply_blocks '
                      'remat=True; what a Program.remat flag would do)')
  p.add_argument('--threads', type=int, default=0, help='CPU threads for torch (0 = all cores)')
  p.add_argument('--sides', default='hf,jax', help='which sides to run, in this order')
  p.add_argument('--peak_tflops', type=float, default=0,
                 help='device peak for MFU (default: a table for GPUs, an estimate for CPUs)')
  p.add_argument('--json', default='', help='also write all figures to this file')
  p.add_argument('--side', default='', help=argparse.SUPPRESS)       # internal: child mode
  p.add_argument('--out', default='', help=argparse.SUPPRESS)        # internal: child result file
  return p


def parse_args(argv=None, parser=None):
  args = (parser or make_parser()).parse_args(argv)
  gpu = args.device == 'gpu'
  args.model = args.model or ('bert-base' if gpu else 'minilm-l6')
  args.batch = args.batch or (8 if gpu else 32)
  args.dtype = args.dtype or ('bfloat16' if gpu else 'float32')
  args.threads = args.threads or len(os.sched_getaffinity(0))
  if not args.steps:
    if args.epochs and args.train_size:
      args.steps = int(math.ceil(args.epochs * math.ceil(args.train_size / args.batch)))
    else:
      args.steps = 40
  if args.per_group < 0:
    args.per_group = args.trials
  if args.groups and args.per_group:
    args.trials = args.groups * args.per_group
  args.hf_trials = min(args.hf_trials or args.trials, args.trials)
  return args


def train_flops_per_example(enc: dict, seq: int, num_labels: int = 2) -> float:
  """Model FLOPs of one training example (forward + backward = 3x forward), from the HF config,
  for its family (jaxtransfer/models/flops.py): for BERT 6 * (matmul params of the encoder
  blocks) * tokens + attention scores and the weighted sum (12 * L * S^2 * H, bidirectional) +
  pooler and classifier on one token. Embedding lookups, LayerNorm, softmax and the optimizer are
  not model FLOPs (the PaLM appendix-B convention).
  """
  sys.path.insert(0, str(ROOT))
  from jaxtransfer.models import flops
  from jaxtransfer.models.config import EncoderConfig
  return flops.train_per_example(EncoderConfig.from_hf(enc), seq, num_labels, batch=1)


def cpu_peak_flops(threads: int, dtype: str) -> tuple[float, str]:
  """Nominal peak of `threads` cores: cores x clock x FLOPs/cycle.

  x86 cores with two 256-bit FMA pipes (Zen 2-4, most Intel client cores; Zen 4 runs AVX-512 on
  the same two 256-bit pipes) do 2 pipes x 8 fp32 lanes x 2 = 32 fp32 FLOPs per cycle; bf16 dot
  instructions (AVX512_BF16) double that. Intel server cores with AVX-512 are taken to have two
  512-bit FMA units, 64 (torch's fp32 matmuls reach 327 GFLOP/s on 2 such cores at 2.6 GHz, 98%
  of it; some low-end Xeons have one, where this is twice their peak).
  """
  mhz = 0.0
  flags = vendor = ''
  try:
    with open('/proc/cpuinfo') as f:
      for line in f:
        if line.startswith('cpu MHz') and not mhz:
          mhz = float(line.split(':')[1])
        elif line.startswith('flags') and not flags:
          flags = line
        elif line.startswith('vendor_id') and not vendor:
          vendor = line.split(':')[1].strip()
  except OSError:
    pass
  mhz = mhz or 2500.0
  wide = vendor == 'GenuineIntel' and ' avx512f' in flags
  per_cycle = (64.0 if wide else 32.0) * (2 if dtype == 'bfloat16' and 'avx512_bf16' in flags else 1)
  peak = threads * mhz * 1e6 * per_cycle
  return peak, f'{threads} cores x {mhz / 1e3:.2f} GHz x {per_cycle:.0f} FLOP/cycle'


def gpu_peak_flops(name: str, dtype: str) -> tuple[float, str]:
  for frag, (bf16, fp32) in GPU_PEAK_TFLOPS.items():
    if frag in name:
      t = bf16 if dtype == 'bfloat16' else fp32
      return t * 1e12, f'{name}: {t} TFLOP/s dense {dtype} (datasheet)'
  return float('nan'), f'{name}: unknown peak (pass --peak_tflops)'


def hf_config(args) -> tuple[dict, str | None]:
  """(HF config dict, local weights directory or None for random init)."""
  if args.model in ('bert-base', 'bert-large'):
    # bert-base/large-uncased's config.json (transformers.BertConfig defaults for base).
    large = args.model == 'bert-large'
    return {'model_type': 'bert', 'vocab_size': 30522, 'hidden_size': 1024 if large else 768,
            'num_hidden_layers': 24 if large else 12, 'num_attention_heads': 16 if large else 12,
            'intermediate_size': 4096 if large else 3072, 'hidden_act': 'gelu',
            'hidden_dropout_prob': 0.1, 'attention_probs_dropout_prob': 0.1,
            'max_position_embeddings': 512, 'type_vocab_size': 2, 'initializer_range': 0.02,
            'layer_norm_eps': 1e-12, 'pad_token_id': 0}, None
  sys.path.insert(0, str(ROOT))
  from jaxtransfer.models import pretrained
  path = pretrained.resolve(args.model)
  with open(os.path.join(path, 'config.json')) as f:
    return json.load(f), path


def make_data(args, enc: dict, path: str | None):
  """(train, dev) dicts of numpy arrays: synthetic full-length rows or real SST-2."""
  import numpy as np
  # Each trial draws its own subset of train_size examples from a 4x larger pool (Tamkin et al.
  # subsample SST-2); without --train_size every trial sees each example once.
  n_train = 4 * args.train_size if args.train_size else args.steps * args.batch
  n_dev = args.eval_examples
  if args.data == 'sst2':
    sys.path.insert(0, str(ROOT))
    from jaxtransfer.data import glue as data_lib
    from jaxtransfer.models import pretrained
    tok = pretrained.load_tokenizer(path)
    d = data_lib.load_task_data('sst2', str(GLUE) if GLUE.is_dir() else 'demo', tok, path,
                                args.length)
    train = d.train.as_dict()
    dev = {k: v[:n_dev] for k, v in d.dev[''].as_dict().items()}
    return train, dev
  rs = np.random.RandomState(0)

  def rows(n):
    ids = rs.randint(1000, enc['vocab_size'], size=(n, args.length)).astype(np.int32)
    return {'input_ids': ids, 'attention_mask': np.ones_like(ids),
            'token_type_ids': np.zeros_like(ids), 'labels': rs.randint(0, 2, n).astype(np.int32)}

  return rows(n_train), rows(n_dev)


def trial_train_size(args, n_train: int) -> int:
  return args.train_size if 0 < args.train_size < n_train else 0


def peak_rss_mb() -> float:
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


# ----------------------------------------------------------------------------- jaxtransfer side


def run_jax(args) -> dict:
  os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
  if args.device == 'cpu':
    os.environ['JAX_PLATFORMS'] = 'cpu'
  else:
    os.environ.setdefault('JAX_PLATFORMS', 'cuda')
    # Let the trials use (almost) all of the GPU: the default preallocates 75%.
    os.environ.setdefault('XLA_PYTHON_CLIENT_MEM_FRACTION', '0.92')
  sys.path.insert(0, str(ROOT))
  from jaxtransfer.runtime import host_memory
  from jaxtransfer.runtime import xla_flags
  xla_flags.set_defaults()  # what `python -m jaxtransfer.main` runs with
  host_memory.keep_freed_memory()
  import jax
  import numpy as np
  from absl import logging
  from jaxtransfer.data import glue as data_lib
  from jaxtransfer.engine import engine as engine_lib
  from jaxtransfer.engine import trials as trials_lib
  from jaxtransfer.models import config as model_config
  from jaxtransfer.models import bert
  from jaxtransfer.models import pretrained as pretrained_lib

  logging.set_verbosity(logging.WARNING)
  t0 = time.time()
  enc, path = hf_config(args)
  if path is None:
    config = model_config.EncoderConfig.from_hf(enc)
    params = jax.device_get(jax.jit(bert.init_params, static_argnums=0)(config, jax.random.key(0)))
  else:
    pre = pretrained_lib.load_pretrained(path, with_tokenizer=False)
    config, params = pre.config, pre.params
  load_s = time.time() - t0
  train, dev = make_data(args, enc, path)
  size = trial_train_size(args, len(train['labels']))
  program = make_program(args, config)
  trials = [trials_lib.Trial(seed=s, train_size=size, setting={}, program=program)
            for s in range(1, args.trials + 1)]

  with tempfile.TemporaryDirectory() as workdir:
    spec = trials_lib.RunSpec(
        experiment='benchmark', model=args.model, task=data_lib.get_task('sst2'), workdir=workdir,
        batch_size=args.batch, learning_rate=args.lr, num_train_steps=args.steps,
        eval_batch_size=args.eval_batch, checkpoint_every=0, trials_per_program=args.per_group)
    eng = engine_lib.Engine(spec, params, train, {'': dev})
    t1 = time.time()
    records = eng.run(trials)
    run_s = time.time() - t1
  compile_s = sum({r['group']: r['compile_s'] for r in records}.values())
  # Every training chunk timed to completion by the engine (compile and eval excluded).
  train_s = sum(s for _, _, s in eng.chunk_times)
  out = {
      'side': 'jax', 'trials': len(records), 'per_group': args.per_group,
      'groups': len({r['group'] for r in records}),
      'load_s': load_s, 'compile_s': compile_s, 'train_s': train_s, 'engine_run_s': run_s,
      'other_s': run_s - compile_s - train_s,  # init, device transfers, evaluation, records
      'train_examples': sum(n * k for n, k, _ in eng.chunk_times) * args.batch,
      'accuracy': float(np.mean([r['metrics'].get('accuracy', np.nan) for r in records])),
      'failed': sum(r['status'] != 'ok' for r in records),
      'device': str(jax.devices()[0].device_kind), 'peak_rss_mb': peak_rss_mb(),
      'width': int(eng.train_data['input_ids'].shape[1]),
  }
  stats = jax.devices()[0].memory_stats() or {}
  if 'peak_bytes_in_use' in stats:
    out['device_peak_mb'] = stats['peak_bytes_in_use'] / 2**20
  if 'XLA_FLAGS' in os.environ:
    out['xla_flags'] = os.environ['XLA_FLAGS']
  return out


def make_program(args, config):
  """The benchmarked program: full fine-tuning with the model's own head (`--remat`: each block
  recomputed in the backward pass)."""
  from jaxtransfer.core import program as program_lib
  return program_lib.Program(encoder=config, num_labels=2, num_blocks=config.num_layers,
                             head='pooler' if config.has_pooler else 'mlp', dtype=args.dtype,
                             remat=args.remat)


# ----------------------------------------------------------------------------- HF PyTorch side


def run_hf(args) -> dict:
  import numpy as np
  import torch
  import transformers
  sys.path.insert(0, str(ROOT))
  from jaxtransfer.engine import trials as trials_lib  # the shared data order only (no jax compute)

  torch.set_num_threads(args.threads)
  gpu = args.device == 'gpu'
  dev_name = 'cuda' if gpu else 'cpu'
  sync = torch.cuda.synchronize if gpu else (lambda: None)
  enc, path = hf_config(args)
  cfg = transformers.AutoConfig.for_model(**{**enc, 'num_labels': 2})
  train, dev = make_data(args, enc, path)
  n_train = len(train['labels'])
  size = trial_train_size(args, n_train)
  to = lambda a: torch.from_numpy(np.asarray(a, np.int64)).to(dev_name, non_blocking=True)
  amp = torch.autocast(dev_name, dtype=torch.bfloat16, enabled=args.dtype == 'bfloat16')
  load_s = train_s = eval_s = 0.0
  per_trial, accs = [], []
  for seed in range(1, args.hf_trials + 1):
    torch.manual_seed(seed)
    t0 = time.time()
    if path is None:
      model = transformers.AutoModelForSequenceClassification.from_config(cfg)
    else:
      model = transformers.AutoModelForSequenceClassification.from_pretrained(path, num_labels=2)
    model.to(dev_name)
    no_decay = ('bias', 'LayerNorm.weight')
    groups = [{'params': [p for n, p in model.named_parameters() if not any(k in n for k in no_decay)],
               'weight_decay': 0.0},
              {'params': [p for n, p in model.named_parameters() if any(k in n for k in no_decay)],
               'weight_decay': 0.0}]
    opt = torch.optim.AdamW(groups, lr=args.lr, eps=1e-8)
    sched = transformers.get_linear_schedule_with_warmup(opt, 0, args.steps)
    sync()
    t1 = time.time()
    idx, w = trials_lib.trial_batches(seed, n_train, size, args.batch, args.steps)
    model.train()
    for step in range(args.steps):
      rows = idx[step][w[step] > 0]
      batch = {k: to(v[rows]) for k, v in train.items()}
      with amp:
        loss = model(**batch).loss
      loss.backward()
      torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
      opt.step()
      sched.step()
      model.zero_grad()
    loss_value = float(loss.detach())  # syncs
    sync()
    t2 = time.time()
    model.eval()
    correct = 0
    with torch.no_grad(), amp:
      for s in range(0, len(dev['labels']), args.eval_batch):
        b = {k: to(v[s:s + args.eval_batch]) for k, v in dev.items() if k != 'labels'}
        pred = model(**b).logits.argmax(-1).cpu().numpy()
        correct += int((pred == dev['labels'][s:s + args.eval_batch]).sum())
    sync()
    t3 = time.time()
    accs.append(correct / len(dev['labels']))
    load_s += t1 - t0
    train_s += t2 - t1
    eval_s += t3 - t2
    per_trial.append({'load_s': t1 - t0, 'train_s': t2 - t1, 'eval_s': t3 - t2, 'loss': loss_value})
    del model, opt
  out = {
      'side': 'hf', 'trials': args.hf_trials, 'load_s': load_s, 'train_s': train_s,
      'eval_s': eval_s, 'train_examples': args.hf_trials * args.steps * args.batch,
      'accuracy': float(np.mean(accs)), 'per_trial': per_trial, 'peak_rss_mb': peak_rss_mb(),
      'device': torch.cuda.get_device_name() if gpu else 'cpu', 'threads': torch.get_num_threads(),
      'torch': torch.__version__, 'transformers': transformers.__version__,
      'attn_implementation': getattr(cfg, '_attn_implementation', None),
  }
  if gpu:
    out['device_peak_mb'] = torch.cuda.max_memory_allocated() / 2**20
  return out


# ----------------------------------------------------------------------------- driver


def child(args) -> None:
  result = run_jax(args) if args.side == 'jax' else run_hf(args)
  result['process_s_inside'] = time.time() - _START
  with open(args.out, 'w') as f:
    json.dump(result, f)


def run_side(side: str, argv: list[str]) -> dict:
  with tempfile.NamedTemporaryFile(suffix='.json', delete=False) as f:
    out = f.name
  cmd = [sys.executable, os.path.abspath(__file__), *argv, f'--side={side}', f'--out={out}']
  t0 = time.time()
  proc = subprocess.run(cmd)
  wall = time.time() - t0
  if proc.returncode != 0:
    raise SystemExit(f'the {side} side failed (exit {proc.returncode}): {" ".join(cmd)}')
  with open(out) as f:
    result = json.load(f)
  os.unlink(out)
  result['process_s'] = wall
  return result


def report(args, res: dict) -> dict:
  """Prints the two sides next to each other with jax/HF ratios; returns (and --json writes) all."""
  enc, _ = hf_config(args)
  jx, hf = res.get('jax'), res.get('hf')
  width = jx['width'] if jx else args.length
  if args.peak_tflops:
    peak, peak_note = args.peak_tflops * 1e12, f'{args.peak_tflops} TFLOP/s (--peak_tflops)'
  elif args.device == 'cpu':
    peak, peak_note = cpu_peak_flops(args.threads, args.dtype)
  else:
    peak, peak_note = gpu_peak_flops((hf or jx)['device'], args.dtype)
  n = args.trials
  rows = {}
  for name, r, seq in (('jaxtransfer', jx, width), ('HF PyTorch', hf, args.length)):
    if r is None:
      continue
    # HF may run fewer trials than the sweep (--hf_trials): its per-trial time is scaled to n.
    scale = n / r['trials']
    per_trial = r['load_s'] + r['train_s'] + r.get('eval_s', 0.0)
    wall = r['process_s'] + (scale - 1) * per_trial
    ex_s = r['train_examples'] / r['train_s']
    rows[name] = {
        'wall_s': wall, 'trials_per_hour': 3600 * n / wall,
        'sweep_ex_s': scale * r['train_examples'] / wall, 'train_ex_s': ex_s,
        'mfu': ex_s * train_flops_per_example(enc, seq) / peak,
        'compile_s': r.get('compile_s', 0.0), 'load_s': r['load_s'] * scale,
        'peak_rss_mb': r['peak_rss_mb'], 'device_peak_mb': r.get('device_peak_mb'),
        'accuracy': r['accuracy'],
    }
  groups = f'{jx["groups"]} group(s) of {args.per_group} vmapped' if jx else ''
  print()
  print(f'{args.model} on {(hf or jx)["device"]}: {n} trials ({groups}) x {args.steps} steps, '
        f'batch {args.batch}, length {args.length}'
        f'{f" (jaxtransfer trims to {width})" if width != args.length else ""}, {args.dtype}, '
        f'{args.data} data, {args.threads if args.device == "cpu" else 1} '
        f'{"threads" if args.device == "cpu" else "GPU"}')
  if jx and jx.get('xla_flags'):
    print(f'jaxtransfer XLA_FLAGS: {jx["xla_flags"]}')
  if hf and hf['trials'] != n:
    print(f'HF ran {hf["trials"]} of the {n} trials in a row; its time is scaled to {n}.')
  print(f'model FLOPs per training example {train_flops_per_example(enc, args.length) / 1e9:.2f} '
        f'GFLOP (length {args.length}); MFU against {peak / 1e12:.3f} TFLOP/s ({peak_note})')
  cols = list(rows)
  ratio = {'trials_per_hour', 'sweep_ex_s', 'train_ex_s', 'mfu'}

  def line(label, key, fmt):
    cells = ''.join(f'{fmt.format(rows[c][key]) if rows[c][key] is not None else "-":>16}'
                    for c in cols)
    if len(cols) == 2 and key in ratio:
      cells += f'{rows[cols[0]][key] / rows[cols[1]][key]:>11.2f}x'
    print(f'  {label:<30}{cells}')

  print(f'  {"":<30}' + ''.join(f'{c:>16}' for c in cols) + (f'{"jax/HF":>12}' if len(cols) == 2 else ''))
  line('whole-process wall (s)', 'wall_s', '{:.1f}')
  line('trials/hour (whole process)', 'trials_per_hour', '{:.1f}')
  line('examples/s (whole process)', 'sweep_ex_s', '{:.2f}')
  line('examples/s (training steps)', 'train_ex_s', '{:.2f}')
  line('MFU (training steps)', 'mfu', '{:.1%}')
  line('compile (s)', 'compile_s', '{:.1f}')
  line('model load (s)', 'load_s', '{:.1f}')
  line('peak host RSS (MB)', 'peak_rss_mb', '{:.0f}')
  if any(r['device_peak_mb'] for r in rows.values()):
    line('peak device memory (MB)', 'device_peak_mb', '{:.0f}')
  line('dev accuracy (mean)', 'accuracy', '{:.3f}')
  summary = {'args': {k: v for k, v in vars(args).items() if k not in ('side', 'out')},
             'flops_per_example': train_flops_per_example(enc, args.length), 'peak_flops': peak,
             'peak_note': peak_note, 'rows': rows, 'raw': res}
  if args.json:
    with open(args.json, 'w') as f:
      json.dump(summary, f, indent=2)
  return summary


def resolve_max_trials(args, argv):
  """--per_group=0: the largest T that fits (max_trials.py in its own process, so that its
  compiles leave no memory behind)."""
  script = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'max_trials.py')
  proc = subprocess.run([sys.executable, script, *argv], capture_output=True, text=True)
  sys.stdout.write(proc.stdout)
  found = [l for l in proc.stdout.splitlines() if l.startswith('MAX_TRIALS=')]
  if proc.returncode != 0 or not found:
    sys.stderr.write(proc.stderr[-3000:])
    raise SystemExit('max_trials.py failed')
  per_group = int(found[-1].split()[0].split('=')[1])
  return parse_args(argv + [f'--per_group={per_group}'])


def main(argv=None):
  argv = sys.argv[1:] if argv is None else argv
  args = parse_args(argv)
  if args.side:
    return child(args)
  if args.per_group == 0:
    args = resolve_max_trials(args, argv)
    argv = argv + [f'--per_group={args.per_group}']
  res = {}
  for side in args.sides.split(','):
    res[side] = run_side(side, argv)
    r = res[side]
    print(f'[{side}] process {r["process_s"]:.1f} s: load {r["load_s"]:.1f}, compile '
          f'{r.get("compile_s", 0):.1f}, train {r["train_s"]:.1f} s for {r["train_examples"]} '
          f'examples ({r["train_examples"] / r["train_s"]:.2f}/s), peak RSS {r["peak_rss_mb"]:.0f} MB',
          flush=True)
  report(args, res)


if __name__ == '__main__':
  main()
