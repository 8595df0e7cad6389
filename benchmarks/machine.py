"""What benchmarks share, flag-free: the machine they ran on (for their JSON), weights, timing."""

import os
import platform
import statistics
import time

import jax
import numpy as np

# Allocators a process may have preloaded (LD_PRELOAD) in place of glibc's malloc.
_MALLOC_LIBRARIES = ('tcmalloc', 'jemalloc', 'mimalloc')


def malloc_library() -> str:
  """The malloc this process runs on: an allocator LD_PRELOAD named and mapped, else 'glibc'."""
  with open('/proc/self/maps') as f:
    mapped = {os.path.basename(line.split()[-1]) for line in f if '/' in line}
  for path in os.environ.get('LD_PRELOAD', '').replace(':', ' ').split():
    name = os.path.basename(path)
    library = next((lib for lib in _MALLOC_LIBRARIES if lib in name), None)
    if library and name in mapped:
      return library
  return 'glibc'


def machine_info() -> dict:
  """CPUs, JAX's backend and devices, XLA flags, the allocator, the 1-minute load average."""
  return {
    'cpus': len(os.sched_getaffinity(0)),
    'cpu_model': _cpu_model(),
    'backend': jax.default_backend(),
    'devices': [d.device_kind for d in jax.devices()],
    'xla_flags': os.environ.get('XLA_FLAGS', ''),
    'malloc_library': malloc_library(),  # e.g. tcmalloc when LD_PRELOADed
    'load_avg_1min_at_end': os.getloadavg()[0],
  }


def _cpu_model() -> str:
  try:
    with open('/proc/cpuinfo') as f:
      for line in f:
        if line.startswith('model name'):
          return line.split(':', 1)[1].strip()
  except OSError:
    pass
  return platform.processor()


def random_params(model) -> dict:
  """Random float32 weights of `model.init`'s shapes (speed does not depend on their values).

  Drawn with NumPy from the shapes: compiling the Flax initialiser of a full-size model would take
  longer than most benchmarks.
  """
  rng = np.random.default_rng(0)
  shapes = jax.eval_shape(model.init, jax.random.key(0))
  return jax.tree.map(
    lambda s: (0.02 * rng.standard_normal(s.shape)).astype(s.dtype) + (s.ndim == 1), shapes
  )


def time_call(fn, *args, calls: int = 20) -> float:
  """Median seconds of `fn(*args)` to its outputs, over `calls` calls after one warm-up."""
  jax.block_until_ready(fn(*args))
  times = []
  for _ in range(calls):
    start = time.perf_counter()
    jax.block_until_ready(fn(*args))
    times.append(time.perf_counter() - start)
  return statistics.median(times)
