"""compiled.over_trials: a group of one trial runs unvmapped, and gives what the vmap gives."""

import jax
import jax.numpy as jnp
import numpy as np

from jaxtransfer.engine import compiled


def _layer(params, x, scale):
  return {'y': jax.nn.gelu(x @ params['w']) @ params['w'].T * scale, 'n': jnp.sum(x)}


def test_one_trial_equals_the_vmap_and_computes_no_batched_dot():
  rng = np.random.default_rng(0)
  params = {'w': jnp.asarray(rng.standard_normal((1, 8, 16)), jnp.float32)}
  x = jnp.asarray(rng.standard_normal((1, 5, 8)), jnp.float32)
  f = compiled.over_trials(_layer, in_axes=(0, 0, None))
  got, want = f(params, x, 2.0), jax.vmap(_layer, in_axes=(0, 0, None))(params, x, 2.0)
  assert jax.tree.map(jnp.shape, got) == jax.tree.map(jnp.shape, want)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6), got, want)
  # The dots of one trial are plain matmuls: no batch dimension for XLA to lay out.
  hlo = jax.jit(f).lower(params, x, 2.0).as_text()
  assert 'batching_dims' not in hlo and 'lhs_batching' not in hlo, hlo


def test_several_trials_are_vmapped():
  rng = np.random.default_rng(1)
  params = {'w': jnp.asarray(rng.standard_normal((3, 8, 16)), jnp.float32)}
  x = jnp.asarray(rng.standard_normal((3, 5, 8)), jnp.float32)
  got = compiled.over_trials(_layer, in_axes=(0, 0, None))(params, x, 2.0)
  for i in range(3):
    one = _layer({'w': params['w'][i]}, x[i], 2.0)
    np.testing.assert_allclose(got['y'][i], one['y'], rtol=1e-5, atol=1e-5)
  hlo = jax.jit(compiled.over_trials(_layer, in_axes=(0, 0, None))).lower(params, x, 2.0).as_text()
  assert 'batching_dims' in hlo
