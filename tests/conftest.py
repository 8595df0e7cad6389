"""Test-session setup shared by every test module.

* Four simulated CPU devices, so the data-parallel tests can compare one device with four in the
  same process (set before JAX is imported anywhere).
* JAX's persistent compilation cache under `.jax_cache/`: the suite is dominated by XLA compile
  time on CPU, and the cache is shared by the pytest-xdist workers and by the subprocesses that
  some tests start (resume, multi-process, exported-artifact checks).
"""

import os
import pathlib

_REPO = pathlib.Path(__file__).resolve().parents[1]
os.environ.setdefault('XLA_FLAGS', '--xla_force_host_platform_device_count=4')
os.environ.setdefault('JAX_PLATFORMS', 'cpu')
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
os.environ.setdefault('JAX_COMPILATION_CACHE_DIR', str(_REPO / '.jax_cache'))
os.environ.setdefault('JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS', '0.5')

import jax  # noqa: E402

jax.config.update('jax_compilation_cache_dir', os.environ['JAX_COMPILATION_CACHE_DIR'])
jax.config.update(
  'jax_persistent_cache_min_compile_time_secs',
  float(os.environ['JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS']),
)
