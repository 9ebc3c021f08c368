"""The public step (step.py) is what the engine runs: a plain Python loop over `train_step` for one
trial equals that trial trained by the engine inside a vmapped group of three."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import helpers
from jaxtransfer.engine import engine as engine_lib
from jaxtransfer.core import optim
from jaxtransfer.core import program as program_lib
from jaxtransfer.core import step as step_lib
from jaxtransfer.engine import trials as trials_lib
from jaxtransfer.engine.batching import trim_padding


@pytest.mark.parametrize('pack', [True, False])
def test_engine_trial_equals_a_python_loop_over_train_step(tiny_demo, tmp_path, pack):
  pre, task_data = tiny_demo
  program = program_lib.Program(encoder=pre.config, num_labels=2, num_blocks=pre.config.num_layers,
                                frozen_blocks=1, train_embeddings=False)
  cfg = optim.OptimConfig(weight_decay=0.01, warmup_steps=2)
  steps, batch_size, lr = 7, 8, 2e-3
  spec = trials_lib.RunSpec(experiment='test', model='tiny', task=task_data.task,
                            workdir=str(tmp_path), batch_size=batch_size, learning_rate=lr,
                            num_train_steps=steps, optim=cfg, log_every=3, checkpoint_every=0,
                            pack_sequences=pack)
  hooks = helpers.CaptureHooks()
  train = task_data.train.as_dict()
  eng = engine_lib.Engine(spec, pre.params, train, {k: v.as_dict() for k, v in task_data.dev.items()}, hooks=hooks)
  eng.run([trials_lib.Trial(s, 100, {}, program) for s in (1, 2, 3)])
  engine_train = hooks.got['n100-s2'][1].train

  # Trial 2 alone: its arrays, its batches, the public step functions and nothing else.
  data = {k: jnp.asarray(v) for k, v in trim_padding(train).items()}
  arrays, layout = trials_lib.solo_arrays(program, train, seed=2, learning_rate=lr, train_size=100,
                                          batch_size=batch_size, steps=steps, pack=pack)
  step = step_lib.Step(program, cfg, steps)
  state, frozen = jax.jit(lambda p: step_lib.init_state(step, p, arrays))(pre.params)
  one = jax.jit(lambda st, b, w, i: step_lib.train_step(step, st, frozen, b, w, arrays, i))
  for i in range(steps):
    batch = step_lib.step_batch(data, arrays, i, layout)
    state, metrics = one(state, batch, arrays['batch_w'][i], i)
    assert np.isfinite(float(metrics['loss']))
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=2e-5, atol=2e-6),
               jax.device_get(state.train), engine_train)
  # And it trained: the tuned blocks moved from the pretrained ones.
  moved = jax.tree.map(lambda a, b: float(np.abs(a - b[1:]).max()), engine_train['blocks'],
                       pre.params['blocks'])
  assert max(jax.tree.leaves(moved)) > 1e-4


def test_an_undeclared_parameter_group_is_an_error_not_silently_trained(tiny_demo):
  pre, _ = tiny_demo
  program = program_lib.Program(encoder=pre.config, num_labels=2, num_blocks=pre.config.num_layers)
  assert program.is_trainable(('head', 'classifier', 'kernel'))
  with pytest.raises(ValueError, match="parameter group 'prefix'"):
    program.is_trainable(('prefix', 'keys'))
  assert set(program_lib.GROUPS) >= {'embeddings', 'blocks_frozen', 'blocks', 'adapters', 'lora',
                                     'mask_scores', 'pooler', 'head'}


def test_readme_plain_loop_snippet_runs(tmp_path, monkeypatch):
  """The README's "One trial in a plain loop" snippet, run as written (the packaged MiniLM on the
  demo set, a few steps): it trains, and its loss goes down."""
  import re
  readme = (helpers.ROOT / 'README.md').read_text()
  block = re.search(r'<!-- plain-loop -->\n```python\n(.*?)```', readme, re.S)
  assert block, 'README lost its plain-loop snippet'
  monkeypatch.setenv('JAXTRANSFER_CACHE', str(tmp_path))
  scope = {}
  exec(compile(block.group(1), 'README.md', 'exec'), scope)  # pylint: disable=exec-used
  losses = scope['losses']
  assert len(losses) == scope['steps'] and np.mean(losses[-3:]) < np.mean(losses[:3])
