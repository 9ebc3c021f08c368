"""The host allocator setting: freed XLA-sized buffers are reused instead of faulted back in."""

import os
import subprocess
import sys
import textwrap

import pytest

from jaxtransfer.runtime import host_memory

# Allocates (malloc), writes and frees a 256 MiB buffer 5 times, touching every page; prints the minor page faults of
# the last 4 rounds (the first one faults the pages in either way).
_PROBE = textwrap.dedent("""
  import ctypes, resource
  from jaxtransfer.runtime import host_memory
  print(host_memory.keep_freed_memory())
  libc = ctypes.CDLL('libc.so.6')
  libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
  libc.free.argtypes = [ctypes.c_void_p]
  def round_trip():  # as XLA-CPU's temporaries: malloc, write every page, free
    p = libc.malloc(1 << 28)
    ctypes.memset(p, 1, 1 << 28)
    libc.free(p)
  round_trip()
  start = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
  for _ in range(4):
    round_trip()
  print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - start)
""")


def _probe(**env):
  out = subprocess.run([sys.executable, '-c', _PROBE], capture_output=True, text=True, check=True,
                       env={**os.environ, **env}).stdout.split()
  return out[0] == 'True', int(out[1])


@pytest.mark.skipif(not sys.platform.startswith('linux'), reason='glibc malloc')
def test_freed_buffers_are_reused_not_faulted_in_again():
  applied, faults = _probe()
  if not applied:
    pytest.skip('not glibc')
  assert faults < 1000  # 4 x 65,536 pages of 4 KiB would fault without it
  applied, faults = _probe(JAXTRANSFER_MALLOC='default')
  assert not applied and faults > 4 * 60000


def test_opt_out():
  assert not host_memory.keep_freed_memory({'JAXTRANSFER_MALLOC': 'default'})


# A jitted computation with a 128 MiB temporary (sin(...) before the matmul), called 60 times; prints how many
# of the last 30 calls faulted their temporary in (over half its 32,768 pages of 4 KiB). The heap still grows
# now and then, mostly over the first few dozen calls: a small allocation between calls can split the freed
# temporary, so the next one no longer fits there and extends the heap. Measured over the last 30 calls: none
# to 3 faulted (34 runs, 24 of them beside two busy processes), against all 30 without the setting.
_JAX_PROBE = textwrap.dedent("""
  import resource
  from jaxtransfer.runtime import host_memory
  print(host_memory.keep_freed_memory())
  import jax, jax.numpy as jnp
  f = jax.jit(lambda x, v: jnp.sin(x * 2.0) @ v)
  x, v = jnp.ones((4096, 8192)), jnp.ones((8192, 1))
  faults = []
  for _ in range(60):
    start = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    f(x, v).block_until_ready()
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - start)
  print(sum(n > 16384 for n in faults[-30:]))
""")


@pytest.mark.skipif(not sys.platform.startswith('linux'), reason='glibc malloc')
def test_a_compiled_steps_temporaries_are_reused():
  """JAX's worker threads would get each call's 128 MiB temporary as a fresh mmap (a thread arena
  serves nothing that large from its heap); run on the calling thread, the main arena keeps it."""
  run = lambda **env: subprocess.run(
      [sys.executable, '-c', _JAX_PROBE], capture_output=True, text=True, check=True,
      env={**os.environ, 'XLA_FLAGS': '', **env}).stdout.split()
  applied, faulting = run()
  if applied != 'True':
    pytest.skip('not glibc')
  assert int(faulting) <= 10  # a few late heap extensions at most
  applied, faulting = run(JAXTRANSFER_MALLOC='default')
  assert applied == 'False' and int(faulting) == 30
