"""--host_malloc=retain: memory XLA frees is reused, not faulted in again (glibc only)."""

import json
import os
import platform
import statistics
import subprocess
import sys

import pytest

from glitr_jax import host_memory

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Subprocesses run on the C library's malloc, whatever the test run itself preloads.
_ENV = {k: v for k, v in os.environ.items() if k != 'LD_PRELOAD'}

# Runs a jitted function whose 64 MiB result is freed before the next call, as a training step's
# temporaries are, and prints the minor page faults of each of 40 calls. A retained heap grows
# during the first calls, and now and then later (a freed block split by a small allocation no
# longer fits the next result, which is then placed at the heap's top, on fresh pages), so the
# test looks at the typical call of the last 20: the median.
_PROBE = """
import json, resource, sys
from absl import flags
from glitr_jax import host_memory
flags.FLAGS(['probe', '--host_malloc=' + sys.argv[1]])
applied = host_memory.configure(host_memory.HOST_MALLOC.value)
import jax, jax.numpy as jnp
f = jax.jit(lambda x: x * 2.0 + 1.0)
x = jnp.ones((16 * 2**20,), jnp.float32)
faults = []
for _ in range(40):
  before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
  f(x).block_until_ready()
  faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(json.dumps({'applied': applied, 'faults': faults}))
"""


def _probe(mode: str) -> dict:
  result = subprocess.run(
    [sys.executable, '-c', _PROBE, mode],
    cwd=_REPO,
    env=_ENV,
    capture_output=True,
    text=True,
    check=True,
    timeout=120,
  )
  return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(platform.libc_ver()[0] != 'glibc', reason='mallopt is glibc')
def test_retain_stops_refaulting_freed_buffers():
  system, retain = _probe('system'), _probe('retain')
  assert not system['applied'] and retain['applied']
  pages = 64 * 2**20 // os.sysconf('SC_PAGE_SIZE')
  # With glibc's defaults every call maps its 64 MiB result anew (16,384 faults of 4 KiB pages
  # here); retained, the same pages serve, whatever the kernel's page size or THP setting.
  assert statistics.median(retain['faults'][-20:]) < pages / 20, (system, retain)


def test_configure_after_the_backend_started_is_an_error():
  import jax  # noqa: PLC0415

  jax.devices()  # the backend is running in this process
  with pytest.raises(RuntimeError, match='before JAX starts its backend'):
    host_memory.configure('retain')
  assert host_memory.configure('system') is False


def test_configure_rejects_an_unknown_mode():
  with pytest.raises(ValueError, match='--host_malloc'):
    host_memory.configure('tcmalloc')


_MAPS = """\
7f00a0000000-7f00a0028000 r-xp 00000000 fd:01 1234 /usr/lib/x86_64-linux-gnu/libc.so.6
7f00a1000000-7f00a1021000 rw-p 00000000 00:00 0 [heap]
7f00a2000000-7f00a2004000 r-xp 00000000 fd:01 5678 /opt/wheel.libs/libjemalloc-3f2a.so.2
7f00a3000000-7f00a3010000 r-xp 00000000 fd:01 91 /usr/lib/libtcmalloc_minimal.so.4.5.10
"""


def test_malloc_library_names_the_library_malloc_resolves_to(tmp_path):
  maps = tmp_path / 'maps'
  maps.write_text(_MAPS)
  assert host_memory.malloc_library(str(maps), 0x7F00A3000100) == 'tcmalloc'
  # A library that bundles jemalloc for itself is mapped, but malloc is libc's.
  libc = platform.libc_ver()[0] or 'libc'
  assert host_memory.malloc_library(str(maps), 0x7F00A0001000) == libc
  assert host_memory.malloc_library(str(maps), 0x7F00A4000000) == 'unknown'  # in no mapping


def test_malloc_library_of_a_process_without_preload():
  code = 'from glitr_jax import host_memory; print(host_memory.malloc_library())'
  result = subprocess.run(
    [sys.executable, '-c', code], cwd=_REPO, env=_ENV, capture_output=True, text=True, check=True
  )
  assert result.stdout.strip() == (platform.libc_ver()[0] or 'libc')


def test_retain_sets_nothing_under_another_allocator(monkeypatch):
  monkeypatch.setattr(host_memory, '_backend_started', lambda: False)
  monkeypatch.setattr(host_memory, 'malloc_library', lambda: 'tcmalloc')
  assert host_memory.configure('retain') is False
