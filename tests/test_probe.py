"""Linear probing: frozen features vs HF PyTorch, vmapped probes vs torch and sklearn, a run."""


import jax
import numpy as np
import pytest
import torch

import jaxtransfer as jt
from configs import probe as probe_cfg
from jaxtransfer.data import glue as data_lib
from jaxtransfer.engine import engine as engine_lib
from jaxtransfer.engine import trials as trials_lib
from jaxtransfer.runtime import records as records_lib
from jaxtransfer import train
from jaxtransfer.studies.tamkin2020 import mdl, probe

import helpers
from helpers import random_batch


# ----------------------------------------------------------------------------- frozen features


@pytest.mark.parametrize('pooling, use_pooler', [('cls', True), ('mean', True), ('cls', False)])
def test_frozen_features_match_hf_torch(tiny_model_dir, pooling, use_pooler):
  import transformers
  pre = jt.load_pretrained(str(tiny_model_dir))
  ids, mask, types = random_batch(np.random.default_rng(0), 1000, 20, 40, pad_id=0)
  data = {'input_ids': ids, 'attention_mask': mask, 'token_type_ids': types}
  rows = np.arange(1, 20, 2)  # a subset: the other rows stay zero
  got = probe.frozen_features(pre, data, rows, pooling=pooling, use_pooler=use_pooler,
                              batch_size=4)  # several length-sorted batches of different widths
  model = transformers.BertModel.from_pretrained(str(tiny_model_dir)).eval()
  with torch.no_grad():
    out = model(input_ids=torch.tensor(ids, dtype=torch.long), attention_mask=torch.tensor(mask),
                token_type_ids=torch.tensor(types, dtype=torch.long), output_hidden_states=True)
    hs = torch.stack(out.hidden_states, 1)  # (N, L+1, S, H)
    m = torch.tensor(mask, dtype=torch.float32)[:, None, :, None]
    v = (hs * m).sum(2) / m.sum(2) if pooling == 'mean' else hs[:, :, 0]
    if use_pooler:
      v = torch.tanh(model.pooler.dense(v))
  want = v.numpy()
  assert got.shape == want.shape == (20, pre.num_layers + 1, 32)
  np.testing.assert_allclose(got[rows], want[rows], atol=1e-4)
  assert not got[np.setdiff1d(np.arange(20), rows)].any()


# ----------------------------------------------------------------------------- probe training


def _synthetic(n=96, layers=3, hidden=8, seed=0):
  """Two classes whose separation grows with the layer: layer 0 pure noise, the last easy."""
  rng = np.random.default_rng(seed)
  labels = rng.integers(0, 2, n).astype(np.int32)
  direction = rng.normal(size=hidden)
  direction /= np.linalg.norm(direction)
  feats = rng.normal(size=(n, layers, hidden))
  for k in range(layers):
    feats[:, k] += (1.5 * k) * np.outer(2 * labels - 1, direction)
  return {'features': feats.astype(np.float32), 'labels': labels}


def _engine(tmp_path, train_data, dev_data, steps, lr, captured=None):
  spec = trials_lib.RunSpec(experiment='probe', model='synthetic', task=data_lib.get_task('sst2'),
                            workdir=str(tmp_path), batch_size=8, learning_rate=lr,
                            num_train_steps=steps, log_every=steps, checkpoint_every=0,
                            eval_batch_size=16, trials_per_program=64)
  hooks = None
  if captured is not None:
    hooks = helpers.CaptureHooks()
    hooks.write_outputs = lambda t, p: captured.__setitem__(t.trial_id, p.train)
  return engine_lib.Engine(spec, {}, train_data, {'': dev_data}, hooks=hooks)


def test_vmapped_probes_equal_a_torch_probe_per_layer(tmp_path):
  """Each (layer, seed) probe of one vmapped group == that probe trained alone in PyTorch on
  that layer's features with the same init and batches (dropout off to compare exactly)."""
  data = _synthetic()
  prog = probe.ProbeProgram(hidden=8, num_labels=2, dropout=0.0)
  steps, lr, size = 15, 1e-2, 64
  trials = [trials_lib.Trial(seed, size, {'k': k}, prog, arrays={'layer': np.int32(k)})
            for k in range(3) for seed in (1, 2)]
  captured = {}
  recs = _engine(tmp_path, data, data, steps, lr, captured).run(trials)
  assert len({r['group'] for r in recs}) == 1
  for t in trials:
    head = prog.init({}, {}, jax.random.fold_in(jax.random.key(t.seed), 1))[0]['head']['classifier']
    layer = torch.nn.Linear(8, 2)
    with torch.no_grad():
      layer.weight.copy_(torch.tensor(np.asarray(head['kernel']).T))
      layer.bias.copy_(torch.tensor(np.asarray(head['bias'])))
    opt = torch.optim.AdamW(layer.parameters(), lr=lr, eps=1e-8, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: max(0.0, (steps - s) / steps))
    idx, w = trials_lib.trial_batches(t.seed, len(data['labels']), size, 8, steps)
    x = torch.tensor(data['features'][:, t.arrays['layer']])
    y = torch.tensor(data['labels'], dtype=torch.long)
    for b, wb in zip(idx, w):
      wb = torch.tensor(wb)
      ce = torch.nn.functional.cross_entropy(layer(x[b]), y[b], reduction='none')
      loss = (ce * wb).sum() / wb.sum()
      opt.zero_grad()
      loss.backward()
      torch.nn.utils.clip_grad_norm_(layer.parameters(), 1.0)
      opt.step()
      sched.step()
    got = captured[t.trial_id]['head']['classifier']
    np.testing.assert_allclose(got['kernel'], layer.weight.detach().numpy().T, atol=1e-5)
    np.testing.assert_allclose(got['bias'], layer.bias.detach().numpy(), atol=1e-5)


def test_probe_accuracy_is_in_sklearns_ballpark(tmp_path):
  """Trained long enough, each layer's probe scores about what logistic regression does."""
  from sklearn.linear_model import LogisticRegression
  data = _synthetic(n=700)
  train_data = {k: v[:400] for k, v in data.items()}
  dev = {k: v[400:] for k, v in data.items()}
  prog = probe.ProbeProgram(hidden=8, num_labels=2)
  trials = [trials_lib.Trial(1, 0, {'k': k}, prog, arrays={'layer': np.int32(k)}) for k in range(3)]
  recs = _engine(tmp_path, train_data, dev, 400, 3e-2).run(trials)
  got = {r['setting']['k']: r['metrics']['accuracy'] for r in recs}
  for k in range(3):
    ref = LogisticRegression().fit(train_data['features'][:, k], train_data['labels'])
    want = ref.score(dev['features'][:, k], dev['labels'])
    assert abs(got[k] - want) < 0.05, (k, got[k], want)
  assert got[0] < 0.65 < 0.9 < got[2]  # the layers really differ


# ----------------------------------------------------------------------------- end to end


def test_probe_config_runs_every_k_in_one_group(tiny_model_dir, tmp_path):
  c = probe_cfg.get_config('demo')
  c.model, c.cache_dir = str(tiny_model_dir), str(tmp_path / 'cache')
  c.max_seq_length, c.num_train_steps, c.train_sizes = 32, 30, (100,)
  work = tmp_path / 'probe'
  train.train_and_evaluate(c, str(work))
  recs = records_lib.read_records(work / 'trials.jsonl')
  assert sorted({r['setting']['k'] for r in recs}) == [0, 1, 2, 3]  # L = 3
  assert len(recs) == 8 and len({r['group'] for r in recs}) == 1
  assert all(r['status'] == 'ok' and 0 <= r['metrics']['accuracy'] <= 1 for r in recs)
  assert (work / 'plots' / 'probe_vs_k.png').exists()
  assert (work / 'summary.csv').read_text().count('accuracy') == 4


def test_probe_checkpoints_go_where_a_remote_workdir_keeps_them(tiny_model_dir, tmp_path,
                                                                monkeypatch):
  """A gs:// workdir runs on a local mirror but checkpoints remotely (so a preempted VM loses
  nothing): the probe study runs through the common path and checkpoints under the workdir's
  checkpoint root, not in the mirror. The remote root is stood in for by another folder."""
  from jaxtransfer.engine import checkpoints as ckpt_lib
  from jaxtransfer.runtime import workdir as workdir_lib
  remote_ckpt = tmp_path / 'bucket' / 'run' / 'checkpoints'
  mirror = tmp_path / 'mirror'

  def open_workdir(path):
    wd = workdir_lib.Workdir(str(mirror))
    wd.checkpoints = str(remote_ckpt)
    return wd

  monkeypatch.setattr(workdir_lib, 'open_workdir', open_workdir)
  saved = []
  original = ckpt_lib.GroupCheckpoints.save
  monkeypatch.setattr(ckpt_lib.GroupCheckpoints, 'save', lambda self, step, state, meta: (
      saved.append(self.root), original(self, step, state, meta)))
  c = probe_cfg.get_config('demo')
  c.model, c.cache_dir = str(tiny_model_dir), str(tmp_path / 'cache')
  c.max_seq_length, c.num_train_steps, c.train_sizes, c.seeds = 32, 6, (50,), (1,)
  c.checkpoint_every, c.log_every = 2, 2
  train.train_and_evaluate(c, 'gs://bucket/run')
  assert saved and set(saved) == {str(remote_ckpt)}
  assert not (mirror / 'checkpoints').exists()
  assert len(records_lib.read_records(mirror / 'trials.jsonl')) == 4  # k = 0..3, one seed


def test_probe_demo_reads_the_token_mean():
  """The packaged MiniLM is a mean-pooled sentence model: its [CLS] probes sit at chance."""
  demo = helpers.load_config(f"{probe_cfg.__file__}:demo")
  assert demo.pooling == 'mean'


def test_probe_dropout_reads_the_encoder_in_train_mode(tiny_model_dir, tmp_path):
  """probe_dropout (the authors' probe): the same head gives the same logits as the precomputed-
  features probe in eval mode; in train mode the frozen encoder's dropout changes the features
  (and nothing reaches the encoder's params); a run trains every k."""
  pre = jt.load_pretrained(str(tiny_model_dir))
  ids, mask, types = random_batch(np.random.default_rng(0), 1000, 8, 24, pad_id=0)
  batch = {'input_ids': ids, 'attention_mask': mask, 'token_type_ids': types}
  c = pre.config
  plain = probe.ProbeProgram(c.hidden_size, 2, c.hidden_dropout, c.initializer_range)
  drop = probe.DropoutProbeProgram(c.hidden_size, 2, c.hidden_dropout, c.initializer_range,
                                   encoder=c, pooling='mean', use_pooler=True)
  arrays = {'layer': np.int32(2)}
  train_p, frozen = drop.init(pre.params, arrays, jax.random.key(0))
  assert set(frozen) == {'embeddings', 'blocks', 'pooler'}
  feats = {'features': probe.frozen_features(pre, batch, np.arange(8), pooling='mean',
                                             use_pooler=True, batch_size=8)}
  np.testing.assert_allclose(drop.apply(train_p, frozen, batch, arrays),
                             plain.apply(train_p, {}, feats, arrays), atol=1e-5)
  a, b = (drop.apply(train_p, frozen, batch, arrays, deterministic=False, rng=jax.random.key(s))
          for s in (1, 2))
  assert not np.allclose(a, b, atol=1e-4)
  grads = jax.grad(lambda f: drop.loss(train_p, f, {**batch, 'labels': np.zeros(8, np.int32)},
                                       np.ones(8, np.float32), arrays, jax.random.key(1)))(frozen)
  assert all(not np.asarray(g).any() for g in jax.tree.leaves(grads))

  cfg = probe_cfg.get_config('demo')
  cfg.model, cfg.cache_dir = str(tiny_model_dir), str(tmp_path / 'cache')
  cfg.max_seq_length, cfg.num_train_steps, cfg.train_sizes, cfg.seeds = 32, 20, (100,), (1,)
  cfg.probe_dropout = True
  work = tmp_path / 'probe'
  train.train_and_evaluate(cfg, str(work))
  recs = records_lib.read_records(work / 'trials.jsonl')
  assert sorted(r['setting']['k'] for r in recs) == [0, 1, 2, 3]
  assert all(r['status'] == 'ok' and 0 <= r['metrics']['accuracy'] <= 1 for r in recs)


def test_scalar_mix_probe_equals_a_torch_scalar_mix(tmp_path):
  """The scalar-mix probe (Tenney et al.: gamma x sum_j softmax(w)_j h_j, then the linear probe),
  vmapped over seeds, == the same mix trained alone in PyTorch with the same init and batches."""
  data = _synthetic()
  prog = probe.ProbeProgram(hidden=8, num_labels=2, dropout=0.0, mix_layers=3)
  steps, lr, size = 15, 1e-2, 64
  trials = [trials_lib.Trial(seed, size, {'k': 'mix'}, prog) for seed in (1, 2)]
  captured = {}
  recs = _engine(tmp_path, data, data, steps, lr, captured).run(trials)
  for t, rec in zip(trials, recs):
    head = prog.init({}, {}, jax.random.fold_in(jax.random.key(t.seed), 1))[0]['head']['classifier']
    layer = torch.nn.Linear(8, 2)
    w, gamma = torch.nn.Parameter(torch.zeros(3)), torch.nn.Parameter(torch.ones(()))
    with torch.no_grad():
      layer.weight.copy_(torch.tensor(np.asarray(head['kernel']).T))
      layer.bias.copy_(torch.tensor(np.asarray(head['bias'])))
    params = [*layer.parameters(), w, gamma]
    opt = torch.optim.AdamW(params, lr=lr, eps=1e-8, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: max(0.0, (steps - s) / steps))
    idx, bw = trials_lib.trial_batches(t.seed, len(data['labels']), size, 8, steps)
    x, y = torch.tensor(data['features']), torch.tensor(data['labels'], dtype=torch.long)
    for b, wb in zip(idx, bw):
      wb = torch.tensor(wb)
      mixed = gamma * (torch.softmax(w, 0)[None, :, None] * x[b]).sum(1)
      loss = (torch.nn.functional.cross_entropy(layer(mixed), y[b], reduction='none') * wb).sum()
      opt.zero_grad()
      (loss / wb.sum()).backward()
      torch.nn.utils.clip_grad_norm_(params, 1.0)
      opt.step()
      sched.step()
    got = captured[t.trial_id]
    np.testing.assert_allclose(got['mix']['weights'], w.detach().numpy(), atol=1e-5)
    np.testing.assert_allclose(got['mix']['gamma'], gamma.item(), atol=1e-5)
    np.testing.assert_allclose(got['head']['classifier']['kernel'], layer.weight.detach().numpy().T,
                               atol=1e-5)
    weights = [rec['metrics'][f'mix_weights/{j}'] for j in range(3)]
    np.testing.assert_allclose(weights, torch.softmax(w, 0).detach().numpy(), atol=1e-6)
    assert sum(weights) == pytest.approx(1.0, abs=1e-6)
    assert weights[2] > weights[0]  # the separable layer draws the weight


def test_scalar_mix_run_adds_one_probe_per_seed_and_its_bars(tiny_model_dir, tmp_path):
  c = probe_cfg.get_config('demo')
  c.model, c.cache_dir = str(tiny_model_dir), str(tmp_path / 'cache')
  c.max_seq_length, c.num_train_steps, c.train_sizes, c.seeds = 32, 10, (60,), (1, 2)
  c.scalar_mix = True
  work = tmp_path / 'probe'
  train.train_and_evaluate(c, str(work))
  recs = records_lib.read_records(work / 'trials.jsonl')
  mix = [r for r in recs if r['setting']['k'] == 'mix']
  assert len(recs) == 10 and len(mix) == 2 and all(r['status'] == 'ok' for r in recs)
  for r in mix:
    assert sum(r['metrics'][f'mix_weights/{j}'] for j in range(4)) == pytest.approx(1.0, abs=1e-5)
  assert (work / 'plots' / 'probe_vs_k.png').stat().st_size > 0


# ----------------------------------------------------------------------------- MDL probes


def _portion_trials(prog, n, seeds, layers):
  return [trials_lib.Trial(seed, size, {'k': k, mdl.PORTION_KEY: p, mdl.OF_KEY: n}, prog,
                           arrays={'layer': np.int32(k)})
          for k in layers for seed in seeds
          for p, size in zip(mdl.PORTIONS[:-1], mdl.sizes(n))]


def _online_code(trials, captured, data, prog):
  """Per (k, seed): n_1 log2 C + each portion probe's bits on its next block (numpy logits)."""
  n_total = len(data['labels'])
  out = {}
  for t in trials:
    s = t.setting
    rows = mdl.block_rows(t.seed, n_total, s[mdl.OF_KEY], s[mdl.PORTION_KEY])
    head = captured[t.trial_id]['head']['classifier']
    logits = data['features'][rows][:, s['k']].astype(np.float64) @ head['kernel'] + head['bias']
    logp = logits - np.log(np.exp(logits).sum(1, keepdims=True))
    bits = -logp[np.arange(len(rows)), data['labels'][rows]].sum() / np.log(2)
    key = mdl.layer_key(s[mdl.OF_KEY], s, t.seed)
    out[key] = out.get(key, mdl.sizes(s[mdl.OF_KEY])[0] * np.log2(2)) + bits
    # The portion probe trained on exactly the first n_t examples of its seed's draw.
    subset = trials_lib.trial_subset(t.seed, n_total, t.train_size)
    assert set(subset) == set(mdl.order(t.seed, n_total, s[mdl.OF_KEY])[:t.train_size])
  return out


def _with_bits(recs, trials, captured, data, prog):
  """The records with each portion probe's next-block cost, as the probe study adds it."""
  out = []
  for r, t in zip(recs, trials):
    s = t.setting
    rows = mdl.block_rows(t.seed, len(data['labels']), s[mdl.OF_KEY], s[mdl.PORTION_KEY])
    params = trials_lib.TrialParams(captured[t.trial_id], {}, t.arrays)
    bits = mdl.block_bits(prog, params, data['features'][rows], data['labels'][rows])
    out.append({**r, 'metrics': {mdl.BITS: bits}})
  return out


def test_mdl_of_a_probe_that_cannot_learn_is_the_uniform_code(tmp_path):
  """Constant (zero) features and a zero learning rate: every portion probe predicts 1/C, so the
  online code is exactly N log2 C and the compression 1."""
  data = _synthetic(n=300)
  data['features'][:] = 0.0
  prog = probe.ProbeProgram(hidden=8, num_labels=2, dropout=0.0)
  n = 250
  trials = _portion_trials(prog, n, (1, 2), (0, 2))
  captured = {}
  recs = _engine(tmp_path, data, data, 5, 0.0, captured).run(trials)
  assert len({r['group'] for r in recs}) == 1  # every portion x layer x seed in one group
  recs = _with_bits(recs, trials, captured, data, prog)
  lengths = mdl.codelengths(recs, 2)
  assert len(lengths) == 4
  for v in lengths.values():
    assert v['codelength_bits'] == pytest.approx(n * np.log2(2), rel=1e-9)
    assert v['compression'] == pytest.approx(1.0, rel=1e-9)


def test_mdl_block_costs_equal_numpy_and_rank_the_layers(tmp_path):
  """Trained portion probes: the summed code length equals a numpy recomputation from their
  params, and the separable layer compresses best (layer 0 is noise)."""
  data = _synthetic(n=400)
  prog = probe.ProbeProgram(hidden=8, num_labels=2, dropout=0.0)
  n = 400
  trials = _portion_trials(prog, n, (1,), (0, 2))
  captured = {}
  recs = _engine(tmp_path, data, data, 60, 3e-2, captured).run(trials)
  want = _online_code(trials, captured, data, prog)
  recs = _with_bits(recs, trials, captured, data, prog)
  got = mdl.codelengths(recs, 2)
  for key, v in got.items():
    assert v['codelength_bits'] == pytest.approx(want[key], rel=1e-5)
  layer = lambda k: got[mdl.layer_key(n, {'k': k}, 1)]['compression']
  assert layer(2) > 2.0 > layer(0)


def test_mdl_run_gives_codelengths_per_layer(tiny_model_dir, tmp_path):
  c = probe_cfg.get_config('demo')
  c.model, c.cache_dir = str(tiny_model_dir), str(tmp_path / 'cache')
  c.max_seq_length, c.num_train_steps, c.train_sizes, c.seeds = 32, 10, (200,), (1,)
  c.ks, c.probe_metric = (0, 3), 'mdl'
  c.learning_rates = (1e-3, 3e-3)  # a swept rate: each layer probe sums its own rate's portions
  work = tmp_path / 'probe'
  train.train_and_evaluate(c, str(work))
  recs = records_lib.read_records(work / 'trials.jsonl')
  portions = [r for r in recs if mdl.PORTION_KEY in r['setting']]
  layers = [r for r in recs if mdl.PORTION_KEY not in r['setting']]
  assert len(portions) == 40 and len(layers) == 4 and len({r['group'] for r in portions}) == 1
  same = lambda a, b: all(a[k] == b[k] for k in ('k', 'learning_rate'))
  for r in layers:
    bits = [p['metrics'][mdl.BITS] for p in portions if same(p['setting'], r['setting'])]
    assert len(bits) == 10
    total = mdl.sizes(200)[0] + sum(bits)  # log2 C = 1
    assert r['metrics']['codelength_bits'] == pytest.approx(total, rel=1e-9)
    assert r['metrics']['compression'] == pytest.approx(200 / total, rel=1e-9)
  assert (work / 'mdl.csv').read_text().count('\n') == 3  # the chosen rate's 2 layers
  assert (work / 'plots' / 'mdl_by_layer.png').stat().st_size > 0
