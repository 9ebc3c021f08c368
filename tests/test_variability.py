"""Hidden-state variability ν (Xie et al. 2022) against closed forms and an HF PyTorch recomputation."""

import numpy as np
import pytest
import torch
import transformers

from jaxtransfer.data import glue as data_lib
from jaxtransfer.studies.xie2022 import nu as var_lib
from jaxtransfer.errors import UserError


def _two_class(rng, h=16, n0=300, n1=200, offset=0.0, dtype=np.float64):
  common = offset * rng.normal(size=h)
  x0 = rng.normal(size=(n0, h)) @ rng.normal(size=(h, h)) * 0.3 + common
  x1 = rng.normal(size=(n1, h)) * 0.5 + common + rng.normal(size=h) * 0.4
  x = np.concatenate([x0, x1]).astype(dtype)
  y = np.r_[np.zeros(n0, int), np.ones(n1, int)]
  return x, y


def _closed_form(x, y):
  """Two classes: ν = 2·dᵀΣ_w d / ‖d‖⁴, d the difference of the class means (no pseudo-inverse)."""
  x = np.asarray(x, np.float64)
  a, b = x[y == 0], x[y == 1]
  d = b.mean(0) - a.mean(0)
  sw = (np.cov(a.T, bias=True) + np.cov(b.T, bias=True)) / 2
  return 2 * d @ sw @ d / (d @ d) ** 2


def _reference(x, y):
  """Any |Y|: Σ_b⁺ built on an orthonormal basis of the span of the centered class means."""
  x = np.asarray(x, np.float64)
  classes = np.unique(y)
  means = np.stack([x[y == c].mean(0) for c in classes])
  sw = np.mean([np.cov(x[y == c].T, bias=True) for c in classes], axis=0)
  centered = (means - means.mean(0)).T                      # (H, C), columns sum to zero
  sb = centered @ centered.T / len(classes)
  q, _ = np.linalg.qr(centered[:, :-1])                     # the first C-1 columns span it
  sb_pinv = q @ np.linalg.inv(q.T @ sb @ q) @ q.T
  return np.trace(sw @ sb_pinv) / len(classes)


def test_two_class_closed_form():
  x, y = _two_class(np.random.default_rng(0))
  np.testing.assert_allclose(var_lib.nu_from_features(x, y), [_closed_form(x, y)], rtol=1e-10)


def test_streaming_matches_one_shot_and_reference_three_classes():
  rng = np.random.default_rng(1)
  feats = rng.normal(size=(3, 600, 12)) + 5.0                # (layers, N, H), large common offset
  y = rng.integers(0, 3, size=600)
  feats[:, y == 2] += rng.normal(size=12) * 0.3
  feats[:, y == 1] *= 1.5
  moments = var_lib.Moments(3)
  for lo in range(0, 600, 77):                               # uneven batches, some rows skipped
    valid = np.arange(lo, min(600, lo + 77)) % 50 != 0
    moments.add(feats[:, lo:lo + 77], y[lo:lo + 77], valid)
  keep = np.arange(600) % 50 != 0
  want = [_reference(feats[l][keep], y[keep]) for l in range(3)]
  np.testing.assert_allclose(moments.nu(), want, rtol=1e-9)
  np.testing.assert_allclose(var_lib.nu_from_features(feats[:, keep], y[keep]), want, rtol=1e-9)


@pytest.mark.parametrize('num_classes', [2, 3])
def test_class_sizes_do_not_weigh(num_classes):
  """Duplicating every example of one class leaves class means and (biased) covariances, so ν."""
  rng = np.random.default_rng(2)
  x = rng.normal(size=(400, 10))
  y = rng.integers(0, num_classes, size=400)
  x[y == 1] += 1.0
  base = var_lib.nu_from_features(x, y)
  dup = var_lib.nu_from_features(np.concatenate([x, x[y == 1]]), np.r_[y, y[y == 1]])
  np.testing.assert_allclose(dup, base, rtol=1e-9)
  # A size-weighted global mean or pooled Σ_w would not be invariant: check the test could fail.
  x2, y2 = np.concatenate([x, x[y == 1]]), np.r_[y, y[y == 1]]
  pooled = np.cov(np.concatenate([x2[y2 == c] - x2[y2 == c].mean(0) for c in range(num_classes)]).T,
                  bias=True)
  means = np.stack([x2[y2 == c].mean(0) for c in range(num_classes)])
  sb = np.cov(means.T, bias=True)
  weighted = np.trace(pooled @ np.linalg.pinv(sb, rcond=1e-8, hermitian=True)) / num_classes
  assert abs(weighted - base[0]) > 1e-3 * base[0]


def test_pinv_trap():
  """Covariances in float32 (torch.cov of float32 hidden states, as in the authors' code) and
  numpy's default pinv cutoff (1e-15, a float64 value) invert round-off: ν explodes."""
  x, y = _two_class(np.random.default_rng(3), h=384, n0=500, n1=400, offset=3.0, dtype=np.float32)
  ref = _closed_form(x, y)
  a, b = x[y == 0], x[y == 1]
  cov = lambda m: np.cov(m, bias=True, dtype=np.float32)
  sw = (cov(a.T) + cov(b.T)) / 2
  sb = cov(np.stack([a.mean(0), b.mean(0)]).T)                                  # rank 1
  naive = np.trace(sw @ np.linalg.pinv(sb)) / 2
  assert abs(naive) > 1e6 * ref, naive
  np.testing.assert_allclose(var_lib.nu_from_features(x, y), [ref], rtol=1e-6)
  # The eigen-cut alone also rescues the float32 matrices: at most |Y|-1 eigenvalues are kept.
  np.testing.assert_allclose(var_lib.trace_pinv(sw, sb, rank=1) / 2, ref, rtol=1e-3)


def test_identical_class_means_give_inf():
  x = np.random.default_rng(4).normal(size=(10, 3))
  assert np.isinf(var_lib.nu_from_features(np.concatenate([x, x]), np.r_[np.zeros(10), np.ones(10)]
                                           .astype(int)))[0]


def test_regression_labels_rejected(minilm):
  data = {'input_ids': np.zeros((2, 4), np.int32), 'attention_mask': np.ones((2, 4), np.int32),
          'token_type_ids': np.zeros((2, 4), np.int32), 'labels': np.array([0.5, 1.0], np.float32)}
  with pytest.raises(UserError, match='classification'):
    var_lib.variability(minilm.config, minilm.params, data, 1, ())


def test_special_ids(minilm):
  tok = minilm.tokenizer
  assert set(var_lib.special_ids(tok)) == {tok.cls_token_id, tok.sep_token_id, tok.pad_token_id}
  assert tok.unk_token_id not in var_lib.special_ids(tok)


def test_real_sst2_matches_hf_torch(minilm, glue_dir, monkeypatch):
  """ν per layer of MiniLM on 300 real SST-2 training sentences, against HF PyTorch hidden states
  averaged in numpy and the two-class closed form; and each example goes through the model once."""
  examples = data_lib.read_split(data_lib.get_task('sst2'), str(glue_dir), 'train')
  rows = np.random.RandomState(0).choice(len(examples), 300, replace=False)
  texts, labels = [examples.text_a[i] for i in rows], examples.labels[rows]
  enc = minilm.tokenizer(texts, padding='max_length', truncation=True, max_length=64,
                         return_tensors='np')
  data = {k: enc[k].astype(np.int32) for k in ('input_ids', 'attention_mask', 'token_type_ids')}
  data['labels'] = labels

  seen = []
  real_token_means = var_lib.token_means

  def counting(config, params, ids, *args):
    seen.append(np.asarray(ids))
    return real_token_means(config, params, ids, *args)

  monkeypatch.setattr(var_lib, 'token_means', counting)
  ours, info = var_lib.variability(minilm.config, minilm.params, data, 2,
                                   var_lib.special_ids(minilm.tokenizer), batch_size=64)
  # One forward pass: every example exactly once (batches are padded with all-zero rows).
  first_tokens = np.concatenate([ids[:, 0] for ids in seen])
  assert len(seen) == 5 and info['examples'] == 300
  assert (first_tokens == minilm.tokenizer.cls_token_id).sum() == 300
  # Keeping the features (for the bootstrap) leaves ν as it was; they are the ones it was taken on.
  kept, info = var_lib.variability(minilm.config, minilm.params, data, 2,
                                   var_lib.special_ids(minilm.tokenizer), batch_size=64,
                                   keep_features=True)
  np.testing.assert_array_equal(kept, ours)
  assert info['features'].shape == (minilm.config.num_layers + 1, 300, minilm.config.hidden_size)
  np.testing.assert_array_equal(np.sort(info['labels']), np.sort(labels))
  np.testing.assert_allclose(var_lib.nu_from_features(info['features'], info['labels']), ours,
                             rtol=1e-9)

  model = transformers.AutoModel.from_pretrained(minilm.path).eval()
  with torch.no_grad():
    out = model(**{k: torch.tensor(v, dtype=torch.long) for k, v in data.items() if k != 'labels'},
                output_hidden_states=True)
  ids = data['input_ids']
  real = (data['attention_mask'] > 0) & (ids != 101) & (ids != 102)  # [CLS], [SEP] of MiniLM's vocab
  want = []
  for hs in out.hidden_states:
    h = hs.numpy().astype(np.float64)
    means = (h * real[..., None]).sum(1) / real.sum(1, keepdims=True)
    want.append(_closed_form(means, labels))
  assert len(want) == minilm.config.num_layers + 1
  np.testing.assert_allclose(ours, want, rtol=2e-3)


def test_variability_config_end_to_end(tmp_path):
  """configs/variability.py:demo on the packaged MiniLM: variability.csv + plot, no training."""
  from configs import variability as variability_cfg  # pylint: disable=g-import-not-at-top
  from jaxtransfer import train as train_lib  # pylint: disable=g-import-not-at-top
  config = variability_cfg.get_config('demo')
  config.cache_dir = str(tmp_path / 'cache')
  work = tmp_path / 'work'
  assert train_lib.train_and_evaluate(config, str(work)) == []
  lines = (work / 'variability.csv').read_text().strip().splitlines()
  assert lines[0] == 'task,model,block,nu,nu_lo,nu_hi,argmin_fraction'
  rows = [line.split(',') for line in lines[1:]]
  assert [(r[0], r[1], int(r[2])) for r in rows] == [('sst2', 'minilm-l6', b) for b in range(-1, 6)]
  assert all(0 < float(r[3]) < 1e3 for r in rows)
  assert all(float(r[4]) < float(r[5]) for r in rows)  # the point itself may sit outside (bias)
  assert rows[0][6] == '' and abs(sum(float(r[6]) for r in rows[1:]) - 1) < 1e-9
  assert (work / 'plots' / 'variability.png').exists() and (work / 'config.json').exists()
  assert not (work / 'trials.jsonl').exists()
  config.task = 'stsb'
  with pytest.raises(UserError, match='regression'):
    train_lib.train_and_evaluate(config, str(tmp_path / 'stsb'))


@pytest.mark.parametrize('num_classes', [2, 3])
def test_bootstrap_is_nu_of_the_resampled_examples(num_classes):
  """Each bootstrap row is ν recomputed in numpy (the Σ_b⁺ reference) on that resample's indices,
  every class keeping its count; the interval and argmin fractions read those rows."""
  rng = np.random.default_rng(4)
  y = rng.integers(0, num_classes, size=240)
  feats = rng.normal(size=(3, 240, 10)) + 2.0
  feats += y[None, :, None] * rng.normal(size=(3, 1, 10)) * np.array([0.2, 0.6, 1.0])[:, None, None]
  samples = var_lib.bootstrap_nu(feats, y, 40, seed=7, chunk=16)
  assert samples.shape == (40, 3)
  for b in (0, 17, 39):
    idx = var_lib.resample(y, 7, b)
    np.testing.assert_array_equal(np.bincount(y[idx]), np.bincount(y))
    want = [_reference(feats[l][idx], y[idx]) for l in range(3)]
    np.testing.assert_allclose(samples[b], want, rtol=1e-9)
  lo, hi = var_lib.interval(samples)
  np.testing.assert_allclose(lo, np.sort(samples, 0)[0] + 0.025 * 39 * (
      np.sort(samples, 0)[1] - np.sort(samples, 0)[0]))  # numpy's linear percentile, by hand
  frac = var_lib.argmin_fraction(samples)
  np.testing.assert_allclose(frac, [np.mean(samples[:, 1:].argmin(1) == j) for j in range(2)])
  assert not np.array_equal(samples[0], samples[1])
