"""The command line: bad input is exit 2 with one clear paragraph and no traceback."""

import os
import subprocess
import sys

import pytest

from helpers import ROOT, assert_bad_input, load_config, run_main

from jaxtransfer import main


@pytest.fixture
def demo_args(tmp_path):
  return ['--config=configs/finetune.py:demo', f'--workdir={tmp_path / "w"}',
          f'--config.cache_dir={tmp_path / "cache"}']


def test_unknown_task(demo_args):
  assert_bad_input(run_main(*demo_args, '--config.task=sst3'), "'sst3'", '--config.task')


def test_misspelt_config_key(demo_args):
  assert_bad_input(run_main(*demo_args, '--config.lerning_rate=1e-4'), 'lerning_rate')


def test_unknown_preset(tmp_path):
  assert_bad_input(run_main('--config=configs/finetune.py:dmo', f'--workdir={tmp_path}'), "'dmo'", 'demo')


def test_negative_train_size(demo_args):
  assert_bad_input(run_main(*demo_args, '--config.train_sizes=(-5,)'), 'train_size=-5')


def test_train_size_larger_than_the_data(demo_args, tmp_path):
  assert_bad_input(run_main(*demo_args, '--config.train_sizes=(100000,)'), 'train_size=100000',
                   'training set has')
  assert not (tmp_path / 'w').exists()  # found after loading the data: the new workdir is gone


def test_missing_data_dir(demo_args, tmp_path):
  assert_bad_input(run_main(*demo_args, f'--config.data_dir={tmp_path / "nowhere"}'), 'nowhere')
  assert not (tmp_path / 'w').exists()


def test_failed_run_keeps_a_workdir_it_did_not_create(demo_args, tmp_path):
  (tmp_path / 'w').mkdir()
  (tmp_path / 'w' / 'notes.txt').write_text('mine')
  assert_bad_input(run_main(*demo_args, '--config.train_sizes=(100000,)'), 'train_size=100000')
  assert (tmp_path / 'w' / 'notes.txt').read_text() == 'mine'


def test_missing_split_file(demo_args, glue_dir):
  """QNLI has a dev file but no train.tsv in ../shared/glue."""
  assert_bad_input(run_main(*demo_args, '--config.task=qnli', f'--config.data_dir={glue_dir}'),
                   'train.tsv')


def _glue_copy(tmp_path, train_text):
  root = tmp_path / 'glue'
  (root / 'RTE').mkdir(parents=True)
  (root / 'RTE' / 'train.tsv').write_text(train_text)
  (root / 'RTE' / 'dev.tsv').write_text('index\tsentence1\tsentence2\tlabel\n0\ta\tb\tentailment\n')
  return root


def test_malformed_tsv_row(demo_args, tmp_path):
  root = _glue_copy(tmp_path, 'index\tsentence1\tsentence2\tlabel\n0\ta\tb\tentailment\n1\tonly two\n')
  assert_bad_input(run_main(*demo_args, '--config.task=rte', f'--config.data_dir={root}'),
                   'train.tsv', 'line 3')


def test_label_not_in_label_set(demo_args, tmp_path):
  root = _glue_copy(tmp_path, 'index\tsentence1\tsentence2\tlabel\n0\ta\tb\tmaybe\n')
  assert_bad_input(run_main(*demo_args, '--config.task=rte', f'--config.data_dir={root}'), 'maybe')


def test_unloadable_model_dir(demo_args, tmp_path):
  model = tmp_path / 'model'
  model.mkdir()
  (model / 'config.json').write_text('{"model_type": "bert", "vocab_size": 10}')
  (model / 'model.safetensors').write_bytes(b'not a safetensors file')
  assert_bad_input(run_main(*demo_args, f'--config.model={model}'), str(model))


def test_hub_unreachable(demo_args, tmp_path):
  proc = run_main(*demo_args, '--config.model=bert-base-uncased',
                  env={'HF_HUB_CACHE': str(tmp_path / 'hub'), 'HF_HOME': str(tmp_path / 'hf')})
  assert_bad_input(proc, 'bert-base-uncased', 'minilm-l6')


def test_missing_config_flag(tmp_path):
  assert_bad_input(run_main(f'--workdir={tmp_path}'), '--config')


@pytest.mark.parametrize('content, needles', [
    (None, ('nosuch.py', 'No such file')),
    ('def get_config(:\n', ('SyntaxError', 'line 1')),
    ('def get_config():\n  return undefined_name\n', ('NameError', 'undefined_name')),
    ('x = 1\n', ('get_config',)),
    ('def get_config():\n  return 3\n', ('returned int', 'ConfigDict')),
])
def test_bad_config_file(tmp_path, content, needles):
  """A missing or broken config file is one paragraph naming it, not chained tracebacks."""
  path = tmp_path / 'nosuch.py'
  if content is not None:
    path.write_text(content)
  proc = run_main(f'--config={path}', f'--workdir={tmp_path / "w"}')
  assert_bad_input(proc, *needles)
  assert not (tmp_path / 'w').exists()


def test_config_file_is_a_directory(tmp_path):
  assert_bad_input(run_main(f'--config={tmp_path}', f'--workdir={tmp_path / "w"}',
                            '--config.seeds=1'), 'Is a directory')


SELECT = 'configs/select.py:demo'  # method: a tuple of strings; seeds, train_sizes: of ints


def _override(*overrides, config=SELECT):
  """The overrides as main.py rewrites them, and the config they parse to (as main.py's flags)."""
  argv = main.string_tuple_overrides(['prog', f'--config={config}', *overrides])
  assert argv[:2] == ['prog', f'--config={config}']
  return argv[2:], load_config(config, *argv[2:])


@pytest.mark.parametrize('value, want', [
    ('adapter,lora', ('adapter', 'lora')),
    ('adapter,lora,bitfit', ('adapter', 'lora', 'bitfit')),
    ('adapter', ('adapter',)),  # a single value is a 1-tuple (ml_collections' own reading)
    ('(adapter,lora)', ('adapter', 'lora')),
    ('(adapter, lora)', ('adapter', 'lora')),
    ('(adapter,)', ('adapter',)),
    ('adapter,', ('adapter',)),
    ('[adapter,lora]', ('adapter', 'lora')),
    ("'adapter',lora", ('adapter', 'lora')),
    # Quoted forms and literals are as ml_collections reads them, unchanged.
    ("('adapter','lora')", ('adapter', 'lora')),
    ('("adapter", "lora")', ('adapter', 'lora')),
    ("('adapter',)", ('adapter',)),
    ("'adapter'", ('adapter',)),
    ("('a,b',)", ('a,b',)),
    ('()', ()),
])
def test_string_tuple_without_quotes(value, want):
  argv, c = _override(f'--config.method={value}')
  assert c.method == want, argv
  if value in ('adapter', "('adapter','lora')", '("adapter", "lora")', "('adapter',)", "'adapter'",
               "('a,b',)", '()'):
    assert argv == [f'--config.method={value}']  # a value absl already reads right is not touched


@pytest.mark.parametrize('key, value, want', [
    ('seeds', '1,2,3', (1, 2, 3)),
    ('seeds', '(1,2,3)', (1, 2, 3)),
    ('seeds', '7', (7,)),
    ('seeds', '()', ()),
    ('train_sizes', '(0,)', (0,)),
    ('train_sizes', '100,200', (100, 200)),
])
def test_numeric_tuples_unchanged(key, value, want):
  argv, c = _override(f'--config.{key}={value}')
  assert argv == [f'--config.{key}={value}']
  assert c[key] == want


def test_only_string_tuple_keys_are_split():
  """A str key keeps its comma; a separate value (--config.method a,b) is split too; repeated
  flags add up as before."""
  argv, c = _override('--config.tuned_blocks=3-4,5', '--config.method', 'lora,bitfit',
                      '--config.lora_targets=query,key,value', '--config.task=sst2')
  assert argv[0] == '--config.tuned_blocks=3-4,5' and argv[-1] == '--config.task=sst2'
  assert (c.tuned_blocks, c.method, c.lora_targets) == ('3-4,5', ('lora', 'bitfit'),
                                                         ('query', 'key', 'value'))
  assert _override('--config.method=adapter', '--config.method=lora,bitfit')[1].method == (
      'adapter', 'lora', 'bitfit')


@pytest.mark.parametrize('argv', [
    ['prog', '--config.method=a,b'],  # no --config
    ['prog', '--config=configs/nosuch.py', '--config.method=a,b'],
    ['prog', '--config=configs/select.py:nosuchpreset', '--config.method=a,b'],
    ['prog', f'--config={SELECT}', '--config.methd=a,b', '--config.method=a,,b'],
])
def test_rewrite_leaves_errors_to_absl(argv):
  """An unloadable config, an unknown key or an empty element: argv unchanged, absl reports it."""
  assert main.string_tuple_overrides(argv) == argv


def test_string_tuple_reaches_the_study(tmp_path):
  """End to end: select.py sees the two methods (the misspelt one stops it before any training)."""
  proc = run_main(f'--config={SELECT}', f'--workdir={tmp_path / "w"}',
                  f'--config.cache_dir={tmp_path / "cache"}', '--config.method=adapter,lorra')
  assert_bad_input(proc, "method=['adapter', 'lorra']", "['lorra'] not allowed")


def test_unknown_key_with_a_string_tuple_value(tmp_path):
  assert_bad_input(run_main(f'--config={SELECT}', f'--workdir={tmp_path}',
                            '--config.methd=adapter,lora'), 'methd', 'did you mean')


def test_no_pytorch_advice_when_torch_is_missing():
  """Without torch, transformers prints '[transformers] PyTorch was not found...' on import; we
  only use its tokenizers, so a user should not see it."""
  code = ('import importlib.util as u\n'
          'orig = u.find_spec\n'
          "u.find_spec = lambda n, *a, **k: None if n.split('.')[0] == 'torch' else orig(n, *a, **k)\n"
          'from jaxtransfer.models import pretrained\n'
          "tok = pretrained.load_tokenizer(pretrained.resolve('minilm-l6'))\n"
          # The call loads transformers (a MiniLM tokenizer.json alone needs none).
          "print(len(tok('a b')['input_ids']))\n"
          "import transformers.utils.import_utils as iu\n"
          "assert not iu.is_torch_available()\n")
  proc = subprocess.run([sys.executable, '-c', code], cwd=ROOT, capture_output=True, text=True,
                        timeout=120, env={k: v for k, v in os.environ.items()
                                          if k != 'TRANSFORMERS_NO_ADVISORY_WARNINGS'})
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert proc.stdout.strip() == '4'
  assert 'PyTorch was not found' not in proc.stderr, proc.stderr
