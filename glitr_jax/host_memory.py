r"""Host memory: keep the memory XLA frees on the CPU in the process instead of unmapping it.

XLA on the CPU allocates an execution's temporaries anew each time it runs and frees them at the
end: about 2 GiB per training step of ViT-S on 16 full frames. glibc's malloc serves blocks that
large with mmap, and XLA's worker threads take their memory from per-thread arenas, whose heaps
(64 MiB at most) cannot hold such blocks either, so they are mmapped too. Every free unmaps the
block and the next step's allocation faults the same memory in again, page by page, zeroed by the
kernel. On this project's 2-core machine that is 580,000 page faults and 1.8 s of system time per
teacher training step (ViT-S on 16 frames) and 300,000 and 0.9 s per student step;
`benchmarks/train_step.py` reports both (`page_faults_per_step`, `system_s_per_step`) and README's
Performance section has the step times with and without.

`--host_malloc=retain` (a flag of main.py and the benchmarks; the default is `system`) sets
three glibc options before JAX starts its backend:
  M_ARENA_MAX = 1          every thread allocates from the main arena, whose heap can grow
  M_MMAP_MAX = 0           no block is served by mmap, however large
  M_TRIM_THRESHOLD = -1    the heap is never trimmed: free memory at its top is kept
so freed temporaries stay mapped and the next step reuses them. It pays on large steps (the
real-size teacher and student steps: 5-6% faster) and costs on small ones: the demo
(`configs/demo.py`, tiny models, many small steps and a threaded input pipeline) took 566 s retained
against 458 s with glibc's defaults, the same results to the bit; hence not the default. It also
costs memory: the heap never shrinks, and while small allocations split freed blocks during the
first steps it grows (the teacher benchmark's peak resident memory: 8.5 GiB against 4.6 GiB); after
that it is stable. It must run before the backend starts: XLA's worker threads pick their arena when
they are created. `--host_malloc=system` leaves glibc as it is. With another allocator preloaded
(tcmalloc, jemalloc: `LD_PRELOAD`, as TPU VM images recommend) glibc's options do not matter:
`configure` finds which library `malloc` resolves to (`malloc_library`, which main.py logs and
the benchmarks report), warns and returns False, as it does on a non-glibc system.
"""

import ctypes
import ctypes.util
import os
import platform

from absl import flags, logging

HOST_MALLOC = flags.DEFINE_enum(
  'host_malloc',
  'system',
  ['retain', 'system'],
  "retain: keep memory XLA frees in the process (glibc; avoids re-faulting every step's "
  "temporaries on the CPU); system: glibc's defaults. See glitr_jax/host_memory.py.",
)

# glibc's malloc.h parameter numbers.
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_M_ARENA_MAX = -8

# Allocators that replace malloc when preloaded, by library name (lib<name>...so).
_ALLOCATORS = ('tcmalloc', 'jemalloc', 'mimalloc')


def _backend_started() -> bool:
  from jax._src import xla_bridge  # noqa: PLC0415 (private: what jax.distributed checks too)

  return xla_bridge.backends_are_initialized()


def _malloc_address() -> int:
  """The address `malloc` resolves to here: the first definition, a preload's or else libc's."""
  return ctypes.cast(ctypes.CDLL(None).malloc, ctypes.c_void_p).value


def malloc_library(maps_path: str = '/proc/self/maps', address: int | None = None) -> str:
  """The allocator serving this process's `malloc`: 'tcmalloc', 'jemalloc' or 'mimalloc' when one
  is preloaded, the C library's name ('glibc') when it is libc's, else the mapped file's name;
  'unknown' without /proc. A library that only bundles an allocator for itself does not count."""
  if not os.path.exists(maps_path):
    return 'unknown'
  address = _malloc_address() if address is None else address
  with open(maps_path) as f:
    for line in f:
      fields = line.split()
      start, end = (int(x, 16) for x in fields[0].split('-'))
      if start <= address < end and len(fields) >= 6:
        name = os.path.basename(fields[-1])
        break
    else:
      return 'unknown'
  for allocator in _ALLOCATORS:
    if name.startswith(f'lib{allocator}'):
      return allocator
  if name.startswith(('libc.so', 'libc-')):
    return platform.libc_ver()[0] or 'libc'
  return name


def configure(mode: str) -> bool:
  """Applies `mode` ('retain' or 'system') to this process; True if glibc's options were set."""
  if mode not in ('retain', 'system'):
    raise ValueError(f"--host_malloc must be 'retain' or 'system', got {mode!r}")
  if mode == 'system':
    return False
  if _backend_started():
    raise RuntimeError(
      "--host_malloc=retain must take effect before JAX starts its backend (XLA's threads pick "
      'their malloc arena when they are created); call host_memory.configure before the first '
      'JAX computation, or pass --host_malloc=system'
    )
  allocator = malloc_library()
  if allocator != 'glibc':
    logging.warning(
      "--host_malloc=retain sets glibc's options, but this process allocates with %s; nothing set",
      allocator,
    )
    return False
  libc = ctypes.CDLL(ctypes.util.find_library('c'))
  settings = (
    ('M_ARENA_MAX', _M_ARENA_MAX, 1),
    ('M_MMAP_MAX', _M_MMAP_MAX, 0),
    ('M_TRIM_THRESHOLD', _M_TRIM_THRESHOLD, -1),  # -1: never trim (man 3 mallopt)
  )
  for name, param, value in settings:
    if libc.mallopt(param, value) != 1:
      raise RuntimeError(f'glibc mallopt({name}, {value}) failed')
  logging.info('--host_malloc=retain: glibc keeps freed memory (one arena, no mmap blocks)')
  return True
