"""What every benchmark reports about the machine it ran on (merged into its JSON output)."""

import os

import jax


def machine_info() -> dict:
  """CPUs this process may use, JAX's backend and devices, XLA flags, the 1-minute load average."""
  return {
    'cpus': len(os.sched_getaffinity(0)),
    'backend': jax.default_backend(),
    'devices': [d.device_kind for d in jax.devices()],
    'xla_flags': os.environ.get('XLA_FLAGS', ''),
    'load_avg_1min_at_end': os.getloadavg()[0],
  }
