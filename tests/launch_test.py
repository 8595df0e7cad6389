"""launch/host_malloc.sh: what launch/local.sh preloads, given an `ldconfig -p` listing."""

import os
import subprocess

import pytest

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _preloaded(tmp_path, listing: str, **env) -> str:
  """LD_PRELOAD after preload_tcmalloc, with `ldconfig -p` printing `listing`."""
  bin_dir = tmp_path / 'bin'
  bin_dir.mkdir(exist_ok=True)
  fake = bin_dir / 'ldconfig'
  fake.write_text(f"#!/bin/sh\ncat <<'LISTING'\n{listing}LISTING\n")
  fake.chmod(0o755)
  env = {'PATH': f'{bin_dir}:/usr/bin:/bin', **env}
  script = 'source launch/host_malloc.sh && preload_tcmalloc && printf %s "${LD_PRELOAD:-}"'
  result = subprocess.run(
    ['bash', '-c', script], cwd=_REPO, env=env, capture_output=True, text=True, check=True
  )
  return result.stdout


@pytest.fixture
def tcmalloc(tmp_path):
  lib = tmp_path / 'libtcmalloc_minimal.so.4'
  lib.write_bytes(b'')
  return str(lib)


def _listing(*libs: str) -> str:
  return "3 libs found in cache `/etc/ld.so.cache'\n" + ''.join(
    f'\t{os.path.basename(lib)} (libc6,x86-64) => {lib}\n' for lib in libs
  )


def test_preloads_tcmalloc_when_listed(tmp_path, tcmalloc):
  debug = str(tmp_path / 'libtcmalloc_minimal_debug.so.4')  # listed first, never chosen
  listing = _listing('/lib/x86_64-linux-gnu/libc.so.6', debug, tcmalloc)
  assert _preloaded(tmp_path, listing) == tcmalloc


def test_leaves_glibc_when_absent_or_turned_off(tmp_path, tcmalloc):
  assert _preloaded(tmp_path, _listing('/lib/x86_64-linux-gnu/libc.so.6')) == ''
  assert _preloaded(tmp_path, _listing(tcmalloc), GLITR_TCMALLOC='0') == ''
  missing = str(tmp_path / 'gone' / 'libtcmalloc.so.4')  # stale cache entry
  assert _preloaded(tmp_path, _listing(missing)) == ''


def test_keeps_a_preload_the_user_set(tmp_path, tcmalloc):
  assert _preloaded(tmp_path, _listing(tcmalloc), LD_PRELOAD='/opt/jemalloc.so') == (
    '/opt/jemalloc.so'
  )


def _parsed(*args: str) -> subprocess.CompletedProcess:
  script = (
    'set -euo pipefail; source launch/args.sh; parse_run_args "x CONFIG WORKDIR" "$@"; '
    'printf "%s|%s|%s\\n" "$config" "$workdir" "${#run_args[@]}"; printf "[%s]" "${run_args[@]}"'
  )
  return subprocess.run(
    ['bash', '-c', script, 'launch', *args], cwd=_REPO, capture_output=True, text=True
  )


def test_launch_scripts_parse_config_workdir_and_the_flags_after_them():
  out = _parsed('configs/demo.py', '/tmp/w', '--config.seed=1', '--mode=evaluate').stdout
  assert out == 'configs/demo.py|/tmp/w|2\n[--config.seed=1][--mode=evaluate]'
  assert _parsed('configs/demo.py', '/tmp/w').stdout.startswith('configs/demo.py|/tmp/w|0\n')
  missing = _parsed('configs/demo.py')
  assert missing.returncode == 2 and missing.stderr == 'usage: x CONFIG WORKDIR\n'
