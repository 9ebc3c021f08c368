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

That alone misses the largest buffers: JAX runs a CPU computation on a worker thread, and glibc
serves a worker thread's allocation above 64 MB (its arena's heap size; a MiniLM step's temporaries
are ~190 MB) with a fresh mmap() whatever M_MMAP_MAX says, so every call of a compiled step paid
~30 ms of faults and zeroing (1.3 ms once computations run on the calling thread, whose main arena
keeps them; a 40-step chunk's steps went from 167 to 160 ms). Computations are therefore run inline,
on the thread that calls them (JAX's `jax_cpu_enable_async_dispatch`, for single-device programs):
the engine's training loop waits for each chunk anyway. The heap still grows now and then, mostly
over the first few dozen calls: a small allocation between two calls can split the freed temporary,
so the next one no longer fits there. A 128 MiB temporary faulted in on 1-4 of the first 50 calls
and on none of the next 250 on a quiet machine; beside two busy processes, on up to 3 of calls 30-59
(tests/test_host_memory.py).

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
  """Tells glibc malloc to reuse freed memory rather than return it to the kernel, and JAX to run
  CPU computations on the calling thread (whose allocations this reaches). Call it before JAX
  creates its CPU backend and starts its threads, so that every allocation follows it. Returns
  whether it applied: not on other C libraries or when JAXTRANSFER_MALLOC=default."""
  if environ.get('JAXTRANSFER_MALLOC', '') == 'default' or platform.libc_ver()[0] != 'glibc':
    return False
  try:
    libc = ctypes.CDLL(ctypes.util.find_library('c') or 'libc.so.6')
  except OSError:
    return False
  settings = ((_M_MMAP_MAX, 0), (_M_TRIM_THRESHOLD, 2**31 - 1))
  if not all(libc.mallopt(param, value) == 1 for param, value in settings):
    return False
  import jax
  jax.config.update('jax_cpu_enable_async_dispatch', False)
  return True
