"""The tokenizer saved beside the weights: a BERT WordPiece tokenizer.json read with the `tokenizers`
library alone (a run that only encodes text then never imports `transformers` and the torch it
pulls: ~1.8 s of a cold start), else transformers' AutoTokenizer.

tokenizer.json is read alone only where transformers would give the same tokenizer: transformers 5
rebuilds a BertTokenizer's normalizer, pre-tokenizer and post-processor from tokenizer_config.json
and keeps tokenizer.json's vocabulary, so both files must say the same.
"""

from __future__ import annotations

import functools
import json
import os

from jaxtransfer.errors import UserError

_BERT_CLASSES = ('BertTokenizer', 'BertTokenizerFast')
# BertTokenizer's own defaults (transformers/models/bert/tokenization_bert.py).
_BERT_TOKENS = {'unk_token': '[UNK]', 'sep_token': '[SEP]', 'pad_token': '[PAD]',
                'cls_token': '[CLS]', 'mask_token': '[MASK]'}
_BERT_INPUTS = ('input_ids', 'token_type_ids', 'attention_mask')
_SPECIAL = ('unk', 'sep', 'pad', 'cls', 'mask', 'bos', 'eos')
_VERY_LARGE_INTEGER = int(1e30)  # transformers' model_max_length when the config sets none.
# tokenizer_config.json keys whose effect on encoding is mirrored here (or that have none: decode
# and slow-tokenizer options); any other key sends the folder to transformers.
_KNOWN_KEYS = {
    'tokenizer_class', 'do_lower_case', 'tokenize_chinese_chars', 'strip_accents',
    'model_max_length', 'padding_side', 'truncation_side', 'model_input_names',
    'split_special_tokens', 'added_tokens_decoder', 'clean_up_tokenization_spaces',
    'do_basic_tokenize', 'never_split', 'name_or_path', 'special_tokens_map_file', 'backend',
    'is_local', *(f'{n}_token' for n in _SPECIAL)}


class TokenizerFile:
  """What jaxtransfer reads from a tokenizer; anything else (its call, decode, save_pretrained,
  ...) is the Hugging Face tokenizer's, loaded on first use."""

  def __init__(self, path: str, backend, config: dict, tokens: dict[str, str]):
    self.name_or_path = path
    self.backend_tokenizer = backend
    max_length = config.get('model_max_length')
    self.model_max_length = _VERY_LARGE_INTEGER if max_length is None else max_length
    # Like transformers, the sides and the pad type id fall back to tokenizer.json's settings.
    padding, truncation = backend.padding or {}, backend.truncation or {}
    self.padding_side = config.get('padding_side', padding.get('direction', 'right'))
    self.truncation_side = config.get('truncation_side', truncation.get('direction', 'right'))
    self.model_input_names = list(config.get('model_input_names', _BERT_INPUTS))
    self.split_special_tokens = bool(config.get('split_special_tokens', False))
    self.pad_token_type_id = padding.get('pad_type_id', 0)
    for name in _SPECIAL:
      token = tokens.get(f'{name}_token')
      setattr(self, f'{name}_token', token)
      setattr(self, f'{name}_token_id', None if token is None else backend.token_to_id(token))

  def num_special_tokens_to_add(self, pair: bool = False) -> int:
    return self.backend_tokenizer.num_special_tokens_to_add(pair)

  def __len__(self) -> int:
    return self.backend_tokenizer.get_vocab_size(with_added_tokens=True)

  def __call__(self, *args, **kwargs):
    return self.hf(*args, **kwargs)

  def __getattr__(self, name: str):
    if name.startswith('__') or name == 'hf':  # No recursion while `hf` itself fails to load.
      raise AttributeError(name)
    return getattr(self.hf, name)

  @functools.cached_property
  def hf(self):
    return hf_tokenizer(self.name_or_path)


def load(path: str) -> TokenizerFile | None:
  """The folder's tokenizer as a TokenizerFile, or None where transformers must load it."""
  import tokenizers
  try:
    config = _read_json(os.path.join(path, 'tokenizer_config.json'))
    tokens_map = _read_json(os.path.join(path, 'special_tokens_map.json'), missing={})
    backend = tokenizers.Tokenizer.from_file(os.path.join(path, 'tokenizer.json'))
  except Exception:  # pylint: disable=broad-except  # Whatever fails here, transformers explains.
    return None
  if config.get('tokenizer_class') not in _BERT_CLASSES or set(config) - _KNOWN_KEYS:
    return None
  tokens = {**_BERT_TOKENS, **{k: _content(config[k]) for k in config if k.endswith('_token')}}
  if any(_content(v) != tokens.get(k) for k, v in tokens_map.items()):
    return None  # The two files disagree: which one transformers takes is its business.
  if any(backend.token_to_id(t) is None for t in tokens.values() if t is not None):
    return None
  state = json.loads(backend.to_str())
  if not _as_hf_builds(state, config, tokens) or not _same_added(state, config, tokens):
    return None
  return TokenizerFile(path, backend, config, tokens)


def hf_tokenizer(path: str):
  """The tokenizer in `path` as transformers' AutoTokenizer loads it."""
  # Only tokenizers are used: transformers' import-time advice that PyTorch is missing (so its
  # models are unavailable) is noise here. A user's own setting of the variable wins.
  os.environ.setdefault('TRANSFORMERS_NO_ADVISORY_WARNINGS', '1')
  import transformers
  try:
    return transformers.AutoTokenizer.from_pretrained(path)
  except (ImportError, ValueError, OSError) as e:
    raise UserError(
        f'Could not load the tokenizer in {path}: {e}. Sentencepiece tokenizers (DeBERTa-v2/v3, '
        'XLM-RoBERTa without tokenizer.json) need `pip install sentencepiece`; or save a fast '
        'tokenizer (tokenizer.json) beside the weights.') from None


def _read_json(path: str, missing=None) -> dict:
  if missing is not None and not os.path.exists(path):
    return missing
  with open(path, encoding='utf-8') as f:
    out = json.load(f)
  if not isinstance(out, dict):
    raise ValueError(f'{path} holds no JSON object')
  return out


def _content(token):
  """A special token as a string: the configs write plain strings or AddedToken dicts."""
  return token.get('content') if isinstance(token, dict) else token


def _as_hf_builds(state: dict, config: dict, tokens: dict[str, str]) -> bool:
  """Whether tokenizer.json's pipeline is the one BertTokenizer builds from the config."""
  from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
  model = state.get('model') or {}
  want = {'type': 'WordPiece', 'unk_token': tokens['unk_token'], 'continuing_subword_prefix': '##',
          'max_input_chars_per_word': 100}
  if any(model.get(k) != v for k, v in want.items()):
    return False
  built = Tokenizer(models.WordPiece({tokens['unk_token']: 0}, unk_token=tokens['unk_token']))
  built.normalizer = normalizers.BertNormalizer(
      clean_text=True, handle_chinese_chars=config.get('tokenize_chinese_chars', True),
      strip_accents=config.get('strip_accents'), lowercase=config.get('do_lower_case', True))
  built.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
  cls, sep = tokens['cls_token'], tokens['sep_token']
  ids = {t: _id(state, t) for t in (cls, sep)}
  built.post_processor = processors.TemplateProcessing(
      single=f'{cls}:0 $A:0 {sep}:0', pair=f'{cls}:0 $A:0 {sep}:0 $B:1 {sep}:1',
      special_tokens=list(ids.items()))
  ref = json.loads(built.to_str())
  return all(state.get(k) == ref[k] for k in ('normalizer', 'pre_tokenizer', 'post_processor'))


def _id(state: dict, token: str) -> int | None:
  for added in state.get('added_tokens') or ():
    if added['content'] == token:
      return added['id']
  return (state.get('model') or {}).get('vocab', {}).get(token)


_PLAIN = {'single_word': False, 'lstrip': False, 'rstrip': False, 'normalized': False,
          'special': True}


def _same_added(state: dict, config: dict, tokens: dict[str, str]) -> bool:
  """Whether the added tokens transformers ends up with are tokenizer.json's: the special tokens
  only, each matched verbatim, as listed in the config when it lists them."""
  added = {a['id']: {k: v for k, v in a.items() if k != 'id'} for a in state.get('added_tokens') or ()}
  if any(a != {**_PLAIN, 'content': a.get('content')} for a in added.values()):
    return False
  if {a['content'] for a in added.values()} != {t for t in tokens.values() if t is not None}:
    return False
  listed = config.get('added_tokens_decoder')
  return listed is None or {int(i): v for i, v in listed.items()} == added
