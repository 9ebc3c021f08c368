"""XLA flags jaxtransfer sets by default before the backend starts (main.py, benchmarks).

XLA reads XLA_FLAGS once, when the first device is created, so these must be in the environment
before any JAX computation; a flag the user already put in XLA_FLAGS is left as the user set it.
"""

from __future__ import annotations

import os

# CPU only (other backends ignore xla_cpu_* flags). Fast math lets XLA-CPU reassociate and fuse
# float arithmetic as oneDNN does for PyTorch: measured +20% training examples/s on MiniLM with
# 2 cores (benchmarks/RESULTS.md). NaN and Inf semantics stay honoured (the xla_cpu_fast_math_honor_*
# flags keep their defaults), so a diverging trial is still caught as non-finite.
CPU_DEFAULTS = ('--xla_cpu_enable_fast_math=true',)
# XLA-CPU's generated loops use 256-bit vectors unless told otherwise; on a CPU with AVX-512,
# 512-bit ones made MiniLM training steps 3-5% faster (153 vs 160 ms at 3 packed rows of 80
# tokens, 209 vs 216 ms at 5; 2 Xeon cores, same compile time).
AVX512_DEFAULTS = ('--xla_cpu_prefer_vector_width=512',)


def cpu_flags() -> set[str]:
  """This machine's CPU feature flags (/proc/cpuinfo); empty where that cannot be read."""
  try:
    with open('/proc/cpuinfo') as f:
      for line in f:
        if line.startswith('flags'):
          return set(line.split(':', 1)[1].split())
  except OSError:
    pass
  return set()


def set_defaults(environ=os.environ, features: set[str] | None = None) -> str:
  """Adds each default flag whose name XLA_FLAGS does not mention yet; returns the new value.
  `features`: the CPU's feature flags (default: this machine's)."""
  features = cpu_flags() if features is None else features
  defaults = CPU_DEFAULTS + (AVX512_DEFAULTS if 'avx512f' in features else ())
  current = environ.get('XLA_FLAGS', '')
  extra = [f for f in defaults if f.split('=')[0] not in current]
  if extra:
    environ['XLA_FLAGS'] = ' '.join([current, *extra]).strip()
  return environ.get('XLA_FLAGS', '')
