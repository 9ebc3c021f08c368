"""The host allocator jaxtransfer sets up before the backend starts (main.py, benchmarks).

XLA-CPU allocates each step's temporary buffers (hundreds of MB for a BERT training step) and frees
them at its end. glibc serves allocations that large with fresh mmap()s, so every step page-faults
its whole working set back in and the kernel zeroes it: ~100,000 minor faults and ~200 ms of system
time per MiniLM step (batch 16 x 48 tokens, 2 cores), 15% of the step's wall time
(benchmarks/RESULTS.md). Keeping freed memory in the heap instead (no mmap, no trimming) removes the
faults; the resident size then stays at its high-water mark rather than shrinking between steps.
glibc's per-thread arenas stay: limiting them to one (tried) serializes XLA's multi-threaded
compiler on that arena's lock, 6.3 s instead of 3.9 s per MiniLM training-step compile, for no
faster steps.

Set JAXTRANSFER_MALLOC=default to keep glibc's own behaviour.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import platform

# mallopt(3) parameters (malloc.h).
_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4


def keep_freed_memory(environ=os.environ) -> bool:
  """Tells glibc malloc to reuse freed memory rather than return it to the kernel. Call it before
  JAX starts its threads, so that every allocation follows it. Returns whether it applied:
  not on other C libraries or when JAXTRANSFER_MALLOC=default."""
  if environ.get('JAXTRANSFER_MALLOC', '') == 'default' or platform.libc_ver()[0] != 'glibc':
    return False
  try:
    libc = ctypes.CDLL(ctypes.util.find_library('c') or 'libc.so.6')
  except OSError:
    return False
  settings = ((_M_MMAP_MAX, 0), (_M_TRIM_THRESHOLD, 2**31 - 1))
  return all(libc.mallopt(param, value) == 1 for param, value in settings)
