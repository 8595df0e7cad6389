"""What keeps a workdir consistent: one writer at a time, and a record of what ran in it.

A workdir holds a week of accelerator time, so every command that writes to one takes its lock
first, and every command that reads weights from one compares the model it is about to build with
the model the workdir recorded:

  DIR/lock         the holder (host, pid, process start time, command) of the writer's lock; the
                   lock itself is an advisory `flock` on this file, which the kernel releases
                   when the holder dies, so a lock left by a killed run is taken over (and said
                   so) and a live holder makes a second command stop at once, naming it.
  DIR/config.json  the resolved config of the run that trained here, written only once the run
                   has its lock and has restored or initialised its state (a command that fails
                   before that leaves the record as it was).

Checkpoint checksums live with the checkpoints (glitr_jax.train.checkpoints).
"""

import contextlib
import errno
import fcntl
import json
import os
import socket
import sys
import time
from collections.abc import Iterator, Mapping
from typing import Any

import jax
import ml_collections
import numpy as np
from absl import logging
from jax.experimental import multihost_utils

from glitr_jax.models import config as model_config_lib

LOCK_FILE = 'lock'
RECORD_FILE = 'config.json'

# The model fields that decide which weights a checkpoint holds and how they are used. Leaving out
# drop_path_rate (training only), compute_dtype and remat (how, not what, is computed), and
# posemb_init (where from-scratch weights start).
ARCHITECTURE = tuple(f for f in model_config_lib.FIELDS if f != 'drop_path_rate')

# Fields a resumed run may change: how long it runs, how it reports, where it reads data from,
# which devices it uses. Any other difference from the record refuses the resume.
RESUMABLE_CHANGES = (
  'num_train_steps',
  'num_epochs',
  'log_every_steps',
  'checkpoint_every_steps',
  'eval_every_steps',
  'donate',
  'eval',
  'eval_checkpoint',
  'mesh',
  'checkpoint.async_save',
  'checkpoint.keep',
  'data.data_dir',
  'data.manual_dir',
  'data.worker_count',
  'data.prefetch',
  'model.remat',
  'wandb',
)


class WorkdirError(RuntimeError):
  """A workdir cannot be used as asked; the message says why and what to do."""


class WorkdirLockedError(WorkdirError):
  """Another live process holds the workdir's lock."""


class RecordMismatchError(WorkdirError, ValueError):
  """The config a command would use differs from what the workdir recorded."""


# --- The lock. ---

_HELD: dict[str, list] = {}  # realpath of a lock file -> [fd, depth]: re-entrant per process


def _process_start_time(pid: int) -> str:
  """The kernel's start time of `pid` (clock ticks since boot; '' where /proc is absent).

  With the pid it tells a live holder from a new process that reuses a dead one's pid.
  """
  try:
    with open(f'/proc/{pid}/stat') as f:
      return f.read().rsplit(')', 1)[1].split()[19]
  except (OSError, IndexError):
    return ''


def holder_record() -> dict[str, Any]:
  """Who this process is, as the lock file records it."""
  return {
    'host': socket.gethostname(),
    'pid': os.getpid(),
    'process_start': _process_start_time(os.getpid()),
    'since': time.strftime('%Y-%m-%d %H:%M:%S %Z'),
    'command': ' '.join(sys.argv),
  }


def describe_holder(holder: Mapping[str, Any]) -> str:
  return (
    f'pid {holder.get("pid")} on {holder.get("host")} since {holder.get("since")} '
    f'({holder.get("command", "")!r})'
  )


def _read_holder(fd: int) -> dict[str, Any]:
  os.lseek(fd, 0, os.SEEK_SET)
  raw = b''
  while chunk := os.read(fd, 1 << 16):
    raw += chunk
  try:
    out = json.loads(raw.decode() or '{}')
  except (UnicodeDecodeError, json.JSONDecodeError):
    return {}
  return out if isinstance(out, dict) else {}


def acquire(workdir: str) -> None:
  """Takes `workdir`'s lock for this process (re-entrant), or raises WorkdirLockedError.

  Raises:
    WorkdirLockedError: a live process holds the lock; the message names it.
  """
  os.makedirs(workdir, exist_ok=True)
  path = os.path.realpath(os.path.join(workdir, LOCK_FILE))
  if path in _HELD:
    _HELD[path][1] += 1
    return
  fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
  try:
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
  except OSError as e:
    holder = _read_holder(fd)
    os.close(fd)
    if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
      raise
    raise WorkdirLockedError(
      f'{workdir} is in use by {describe_holder(holder)}: one command at a time writes to a '
      'workdir. Wait for it, stop it, or use another --workdir.'
    ) from None
  previous = _read_holder(fd)
  if previous:
    logging.warning(
      'Took over the lock of %s in %s: that process is no longer running',
      describe_holder(previous),
      workdir,
    )
  os.ftruncate(fd, 0)
  os.lseek(fd, 0, os.SEEK_SET)
  os.write(fd, json.dumps(holder_record(), indent=1).encode())
  os.fsync(fd)
  _HELD[path] = [fd, 1]


def release(workdir: str) -> None:
  """Releases one level of this process's lock on `workdir` (the file stays, emptied)."""
  path = os.path.realpath(os.path.join(workdir, LOCK_FILE))
  if path not in _HELD:
    return
  _HELD[path][1] -= 1
  if _HELD[path][1] > 0:
    return
  fd, _ = _HELD.pop(path)
  os.ftruncate(fd, 0)  # an empty file: released cleanly, nothing to take over
  fcntl.flock(fd, fcntl.LOCK_UN)
  os.close(fd)


@contextlib.contextmanager
def locked(workdir: str) -> Iterator[None]:
  """Holds `workdir`'s lock for the block: process 0 takes it for every host of the run.

  In a multi-host run every process calls this; the others learn from process 0 whether it got
  the lock, so all of them stop when it did not.

  Raises:
    WorkdirLockedError: another live process holds the lock.
  """
  is_writer = jax.process_index() == 0
  error = None
  if is_writer:
    try:
      acquire(workdir)
    except WorkdirLockedError as e:
      error = e
  if jax.process_count() > 1:
    failed = bool(multihost_utils.broadcast_one_to_all(np.int32(error is not None)))
    if failed and error is None:
      error = WorkdirLockedError(f'process 0 could not lock {workdir}: see its log')
  if error is not None:
    raise error
  try:
    yield
  finally:
    if is_writer:
      release(workdir)


# --- The record. ---


def record_path(workdir: str) -> str:
  return os.path.join(workdir, RECORD_FILE)


def read_record(workdir: str) -> ml_collections.ConfigDict | None:
  """The config the run in `workdir` recorded, or None when it has none."""
  path = record_path(workdir)
  if not os.path.exists(path):
    return None
  try:
    with open(path) as f:
      return ml_collections.ConfigDict(json.load(f))
  except (OSError, json.JSONDecodeError) as e:
    raise WorkdirError(f'{path} is not a readable glitr-jax config record: {e}') from None


def write_record(workdir: str, config: ml_collections.ConfigDict) -> None:
  """Writes the resolved config atomically (a reader never sees half a file)."""
  path = record_path(workdir)
  tmp = f'{path}.tmp{os.getpid()}'
  with open(tmp, 'w') as f:
    f.write(config.to_json_best_effort(indent=2, sort_keys=True))
  os.replace(tmp, path)


def _flat(tree: Any, prefix: str = '') -> dict[str, Any]:
  if isinstance(tree, ml_collections.ConfigDict):
    tree = tree.to_dict()
  if not isinstance(tree, Mapping):
    return {prefix[:-1]: tree}
  out = {}
  for key, value in tree.items():
    if isinstance(value, Mapping | ml_collections.ConfigDict) and value:
      out.update(_flat(value, f'{prefix}{key}.'))
    else:
      out[f'{prefix}{key}'] = value
  return out


def _normalise(value: Any) -> Any:
  """JSON's view of a value: tuples are lists (config.json stores them so)."""
  return json.loads(json.dumps(value, default=str))


def differences(
  recorded: Any, given: Any, *, ignore: tuple[str, ...] = (), only: tuple[str, ...] | None = None
) -> list[str]:
  """Fields whose values differ between two configs, one 'field: recorded X, given Y' each.

  Args:
    recorded: the workdir's record (a ConfigDict or dict).
    given: the config a command is about to use.
    ignore: field paths (or section prefixes) left out.
    only: if given, compare only these field paths.
  """
  a, b = _flat(recorded), _flat(given)
  keys = sorted(set(a) | set(b)) if only is None else list(only)

  def ignored(key: str) -> bool:
    return any(key == p or key.startswith(p + '.') for p in ignore)

  missing = object()
  out = []
  for key in keys:
    if ignored(key):
      continue
    x, y = a.get(key, missing), b.get(key, missing)
    if x is missing and y is missing:
      continue
    if x is missing or y is missing or _normalise(x) != _normalise(y):
      show = lambda v: 'absent' if v is missing else repr(v)  # noqa: E731
      out.append(f'{key}: recorded {show(x)}, given {show(y)}')
  return out


def check_model(recorded_model: Any, model_config: ml_collections.ConfigDict, where: str) -> None:
  """Raises RecordMismatchError when the architecture fields differ from the recorded ones."""
  diffs = [f'model.{d}' for d in differences(recorded_model, model_config, only=ARCHITECTURE)]
  if diffs:
    raise RecordMismatchError(
      f'{where} was trained with another model; differing model fields:\n  '
      + '\n  '.join(diffs)
      + '\nUse the model it recorded (or another checkpoint).'
    )


def check_resume(workdir: str, config: ml_collections.ConfigDict) -> list[str]:
  """Refuses to resume `workdir` with a config other than the one it recorded.

  Returns:
    The allowed differences (RESUMABLE_CHANGES), for the log.

  Raises:
    RecordMismatchError: naming every other differing field.
  """
  recorded = read_record(workdir)
  if recorded is None:
    logging.warning('%s has checkpoints but no %s: resuming unchecked', workdir, RECORD_FILE)
    return []
  diffs = differences(recorded, config, ignore=RESUMABLE_CHANGES)
  if diffs:
    raise RecordMismatchError(
      f'{workdir} holds a run with another config; resuming it would mix the two. Differing '
      'fields:\n  ' + '\n  '.join(diffs) + '\nRerun with the recorded values '
      f'({record_path(workdir)}) or use another --workdir.'
    )
  return differences(recorded, config)  # all within RESUMABLE_CHANGES now
