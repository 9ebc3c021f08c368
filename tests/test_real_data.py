"""What benchmarks/real_data.py's MFU figures rest on: the training seconds it reads from the
engine's log, and the real tokens and model FLOPs of the trials' examples."""

import argparse
import json
import os
import pathlib
import sys

import numpy as np
import pytest

from helpers import GLUE

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / 'benchmarks'))
import real_data  # noqa: E402

_LOG = '''I1207 07:33:02.068794 1 engine.py:179] Group 1/2 (g1): 1 trials x 60 steps
I1207 07:33:02.068794 1 engine.py:480] step 20/60  loss 0.6792  grad-norm 0.775  4.00 steps/s  71 examples/s (1 trials)
I1207 07:33:02.068794 1 engine.py:480] step 40/60  loss 0.5546  grad-norm 1.771  5.00 steps/s  79 examples/s (1 trials)
I1207 07:33:02.068794 1 engine.py:480] step 60/60  loss 0.4848  grad-norm 4.619  5.00 steps/s  78 examples/s (1 trials)
I1207 07:33:02.068794 1 engine.py:509] eval @ step 60: accuracy mean 0.7878 (min 0.7878, max 0.7878) over 1 trials
I1207 07:33:02.068794 1 engine.py:480] step 50/60  loss 0.4607  grad-norm 3.565  2.50 steps/s  81 examples/s (1 trials)
I1207 07:33:02.068794 1 engine.py:480] step 60/60  loss 0.4607  grad-norm 3.565  10.00 steps/s  81 examples/s (1 trials)
'''


def test_training_seconds_from_the_log():
  # Group 1: 20/4 + 20/5 + 20/5; group 2 (its steps restart): 50/2.5 + 10/10.
  assert real_data.log_train_seconds(_LOG) == pytest.approx(5 + 4 + 4 + 20 + 1)


def test_packed_tokens_per_step():
  line = ('packing.py:211] Packing: rows of 80 tokens, 3/5 rows per step (4.5 examples per row on '
          'average); 76% of the computed tokens are real.')
  assert real_data.packed_tokens_per_step([line], 16) == round(80 * 16 / 4.5)
  assert real_data.packed_tokens_per_step([], 16) == 256


@pytest.mark.skipif(not (GLUE / 'SST-2' / 'train.tsv').exists(), reason='needs ../shared/glue')
def test_real_tokens_are_the_trials_examples_as_hf_tokenizes_them():
  import transformers
  from jaxtransfer.data import glue as data_lib
  from jaxtransfer.engine import trials as trials_lib
  from jaxtransfer.models import flops, pretrained
  from jaxtransfer.models.config import EncoderConfig
  args = argparse.Namespace(data_dir=str(GLUE), length=128, trials=2, train_size=100, batch=4,
                            steps=3)
  flop, tokens = real_data.real_token_flops(args)
  path = pretrained.resolve('minilm-l6')
  tok = transformers.AutoTokenizer.from_pretrained(path)
  ex = data_lib.read_split(data_lib.get_task('sst2'), str(GLUE), 'train')
  with open(os.path.join(path, 'config.json')) as f:
    c = EncoderConfig.from_hf(json.load(f))
  want_flop, want_tokens = 0.0, 0
  for seed in (1, 2):
    idx, w = trials_lib.trial_batches(seed, len(ex.labels), 100, 4, 3)
    for i in np.asarray(idx)[np.asarray(w) > 0]:
      n = len(tok(ex.text_a[int(i)], truncation=True, max_length=128)['input_ids'])
      want_tokens += n
      want_flop += 3.0 * flops.forward(c, 1, n, num_labels=2)
  assert tokens == want_tokens and flop == pytest.approx(want_flop)
