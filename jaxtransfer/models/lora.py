"""LoRA (Hu et al. 2021): low-rank updates W + (alpha / rank)·A·B of chosen block matrices."""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

Params = dict[str, Any]
Shapes = tuple[tuple[str, tuple[int, int]], ...]  # ((matrix, (in, out)), ...), hashable


@dataclasses.dataclass(frozen=True)
class Lora:
  """What a LoRA-tuned block adds: A (in, rank) and B (rank, out) per matrix in `targets`, under
  the block's `lora` key.

  x·(W + scale·A·B) is computed as x·W + scale·(x·A)·B, so the frozen W is never differentiated
  and the low-rank path costs O(rank) per token. `dropout` applies to the input of A (loralib's
  lora_dropout), one mask per input shared by the targets that read it, drawn per token
  (`TokenDropout`) so that a batch's padding width does not change it.
  """
  rank: int = 8
  alpha: float = 16.0
  targets: tuple[str, ...] = ('query', 'value')
  dropout: float = 0.0

  def __post_init__(self):
    assert self.rank > 0 and self.targets and len(set(self.targets)) == len(self.targets), self

  @property
  def scale(self) -> float:
    return self.alpha / self.rank


class _Pair(nn.Module):
  """One matrix's factors. A is normal with std 1/sqrt(3·in), the second moment of loralib's
  kaiming_uniform(a=√5) that the LoRA paper's learning rates were tuned with; B is zero, so
  training starts exactly at W."""
  rank: int
  fan_in: int
  fan_out: int

  @nn.compact
  def __call__(self):
    self.param('a', nn.initializers.normal((3.0 * self.fan_in) ** -0.5),
               (self.fan_in, self.rank), jnp.float32)
    self.param('b', nn.initializers.zeros_init(), (self.rank, self.fan_out), jnp.float32)


class _Factors(nn.Module):
  lora: Lora
  shapes: Shapes

  @nn.compact
  def __call__(self):
    for name, (fan_in, fan_out) in self.shapes:
      _Pair(self.lora.rank, fan_in, fan_out, name=name)()


def init(lora: Lora, shapes: Shapes, rng, n: int) -> Params:
  """n stacked blocks' factors {target: {'a': (n, in, r), 'b': (n, r, out)}}; `shapes` gives each
  target's (in, out), read from the pretrained kernels (so every family's layout fits)."""
  one = lambda k: _Factors(lora, shapes).init(k)['params']
  return jax.vmap(one)(jax.random.split(rng, n))


def low_rank(lora: Lora | None, factors: Params, x, y, names: tuple[str, ...],
             drop: Callable | None = None, dtype=jnp.float32):
  """y + scale·(x·A)·B for the targets among `names`, the matrices whose outputs `y` concatenates
  (the fused QKV output holds three): one (in, r·t) and one (r·t, out) matmul however many of them
  are targets, beside the one fused matmul of the frozen kernels."""
  got = [n for n in names if n in factors]
  if not got:
    return y
  width = y.shape[-1] // len(names)
  a = jnp.concatenate([factors[n]['a'] for n in got], axis=1).astype(dtype)
  # Each target's B in its own slot of the concatenated output, zeros in the others.
  zeros = jnp.zeros((lora.rank, width), jnp.float32)
  b = jnp.concatenate([jnp.concatenate([factors[n]['b'] if m == n else zeros for m in names], axis=1)
                       for n in got]).astype(dtype)
  if drop is not None:
    x = drop(x)
  return y + jnp.asarray(lora.scale, dtype) * jnp.dot(jnp.dot(x.astype(dtype), a), b)


def matmul_params(lora: Lora, shapes: dict[str, tuple[int, int]]) -> int:
  """Entries of the LoRA matrices a block multiplies per token: (in, r·t) and (r·t, out) for the t
  QKV targets (their B spans all three outputs), (in, r) and (r, out) for any other target."""
  qkv = [t for t in lora.targets if t in ('query', 'key', 'value')]
  total = len(qkv) * lora.rank * (shapes['query'][0] + 3 * shapes['query'][1])
  return total + sum(lora.rank * sum(shapes[t]) for t in lora.targets if t not in qkv)


def merge(blocks: Params, factors: Params, lora: Lora) -> Params:
  """Stacked blocks with W + scale·A·B in every target: the dense weights the factors represent."""
  out = dict(blocks)
  for name, f in factors.items():
    delta = lora.scale * jnp.einsum('nir,nro->nio', f['a'], f['b'])
    out[name] = {**blocks[name], 'kernel': blocks[name]['kernel'] + delta}
  return out
