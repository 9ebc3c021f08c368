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


def set_defaults(environ=os.environ) -> str:
  """Adds each default flag whose name XLA_FLAGS does not mention yet; returns the new value."""
  current = environ.get('XLA_FLAGS', '')
  extra = [f for f in CPU_DEFAULTS if f.split('=')[0] not in current]
  if extra:
    environ['XLA_FLAGS'] = ' '.join([current, *extra]).strip()
  return environ.get('XLA_FLAGS', '')
