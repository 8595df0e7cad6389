"""What every benchmark reports about the machine it ran on (merged into its JSON output)."""

import os

import jax

from glitr_jax import host_memory


def configure_host() -> None:
  """--host_malloc as main.py applies it: first thing in a benchmark's main(), before JAX runs."""
  host_memory.configure(host_memory.HOST_MALLOC.value)


def machine_info() -> dict:
  """CPUs, JAX's backend and devices, XLA flags, the allocator, the 1-minute load average."""
  return {
    'cpus': len(os.sched_getaffinity(0)),
    'backend': jax.default_backend(),
    'devices': [d.device_kind for d in jax.devices()],
    'xla_flags': os.environ.get('XLA_FLAGS', ''),
    'host_malloc': host_memory.HOST_MALLOC.value,
    'malloc_library': host_memory.malloc_library(),  # e.g. tcmalloc when LD_PRELOADed
    'load_avg_1min_at_end': os.getloadavg()[0],
  }
