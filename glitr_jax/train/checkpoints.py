"""Orbax checkpoints of a training workdir: saving, verifying, resuming.

A run's checkpoints live in `workdir/checkpoints/<step>/` with three items:
  params  the GliTr parameters (a teacher for the next stage loads only this item),
  train   the optimiser state, the step and the base RNG key,
  data    the input iterator's state (grain's handler: one small JSON file per host), so a
          resumed run sees exactly the batches it would have seen.
Saving is asynchronous and atomic (orbax writes to a temporary directory and renames it). The last
`checkpoint.keep` checkpoints are kept, plus the best by validation accuracy at t = T when
`checkpoint.keep_best` (orbax's preservation policies).

Every finished step also gets `checksums.json` (size and SHA-256 of each of its files), written
by the process that saved it as soon as orbax has finalised the step. Whatever reads a step
verifies it first: a corrupt or truncated step is named; resuming moves it to
`workdir/corrupt_checkpoints/` (nothing is deleted) and falls back to the newest good step, while
loading weights (glitr_jax.weights: evaluation, a student's teacher, streaming, export) refuses it.
"""

import hashlib
import json
import os
import shutil
import time
from typing import Any

import grain
import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
from absl import logging
from jax.experimental import multihost_utils
from orbax.checkpoint.checkpoint_managers import preservation_policy as pp

from glitr_jax import workdir as workdir_lib
from glitr_jax.models import glitr

BEST_METRIC = 'accuracy_at_T'
CHECKSUMS_FILE = 'checksums.json'
QUARANTINE_DIR = 'corrupt_checkpoints'
CLASS_NAMES_FILE = 'class_names.json'  # beside config.json: the dataset's class names, in order


class CorruptCheckpointError(workdir_lib.WorkdirError):
  """A checkpoint's files differ from the checksums recorded when it was saved."""


def checkpoint_dir(workdir: str) -> str:
  return os.path.join(os.path.abspath(workdir), 'checkpoints')


def make_manager(workdir: str, config: ml_collections.ConfigDict) -> ocp.CheckpointManager:
  """The CheckpointManager of a training workdir (created if needed)."""
  c = config.checkpoint
  policies = [pp.LatestN(c.keep)]
  if c.keep_best:
    policies.append(
      pp.BestN(
        get_metric_fn=lambda m: m[BEST_METRIC], reverse=False, n=1,
        keep_checkpoints_without_metrics=False,
      )
    )  # fmt: skip
  options = ocp.CheckpointManagerOptions(
    preservation_policy=pp.AnyPreservationPolicy(policies),
    # best_fn makes orbax write each step's metrics to disk, so a resumed run still knows which
    # checkpoint was best (the preservation policy above decides what is kept).
    best_fn=lambda m: m[BEST_METRIC],
    best_mode='max',
    enable_async_checkpointing=bool(c.async_save),
    create=True,
  )
  return ocp.CheckpointManager(checkpoint_dir(workdir), options=options, item_handlers=_handlers())


def _handlers() -> dict[str, Any]:
  # Named up front so that a fresh manager (a resumed run) can read item metadata before it has
  # saved or restored anything.
  return {
    'params': ocp.StandardCheckpointHandler(),
    'train': ocp.StandardCheckpointHandler(),
    'data': grain.checkpoint.CheckpointHandler(),
  }


def _file_digest(path: str) -> str:
  h = hashlib.sha256()
  with open(path, 'rb') as f:
    while chunk := f.read(1 << 22):
      h.update(chunk)
  return h.hexdigest()


def _step_files(step_dir: str) -> list[str]:
  out = []
  for root, _, files in os.walk(step_dir):
    for name in files:
      rel = os.path.relpath(os.path.join(root, name), step_dir)
      if rel != CHECKSUMS_FILE:
        out.append(rel)
  return sorted(out)


def write_checksums(step_dir: str) -> None:
  """Records the size and SHA-256 of every file of a finished checkpoint step (atomically)."""
  record = {
    rel: {'size': os.path.getsize(os.path.join(step_dir, rel)), 'sha256': None}
    for rel in _step_files(step_dir)
  }
  for rel in record:
    record[rel]['sha256'] = _file_digest(os.path.join(step_dir, rel))
  path = os.path.join(step_dir, CHECKSUMS_FILE)
  with open(f'{path}.tmp', 'w') as f:
    json.dump({'files': record}, f, indent=0, sort_keys=True)
  os.replace(f'{path}.tmp', path)


def verify_step(step_dir: str) -> bool:
  """Checks a checkpoint step against its checksums.

  Returns:
    True when every recorded file is there with its size and digest; False when the step has no
    checksums (written before they were recorded, or the run stopped while it was finalising).

  Raises:
    CorruptCheckpointError: naming the files that are missing, truncated or changed.
  """
  path = os.path.join(step_dir, CHECKSUMS_FILE)
  if not os.path.exists(path):
    return False
  try:
    with open(path) as f:
      record = json.load(f)['files']
  except (OSError, json.JSONDecodeError, KeyError, TypeError) as e:
    raise CorruptCheckpointError(f'{path} is unreadable ({e}): cannot verify {step_dir}') from None
  bad = []
  for rel, want in sorted(record.items()):
    file = os.path.join(step_dir, rel)
    if not os.path.isfile(file):
      bad.append(f'{rel}: missing')
    elif (size := os.path.getsize(file)) != want['size']:
      bad.append(f'{rel}: {size} bytes, {want["size"]} when saved (truncated or rewritten)')
    elif _file_digest(file) != want['sha256']:
      bad.append(f'{rel}: contents changed since it was saved (SHA-256 differs)')
  if bad:
    raise CorruptCheckpointError(
      f'checkpoint {step_dir} is corrupt:\n  '
      + '\n  '.join(bad[:10])
      + (f'\n  ... and {len(bad) - 10} more' if len(bad) > 10 else '')
    )
  return True


def seal(manager: ocp.CheckpointManager, steps: list[int]) -> list[int]:
  """Writes the checksums of `steps` once orbax has finished saving them.

  Called after every training step with the steps saved but not yet sealed; it costs a flag
  check while a save is in flight.

  Returns:
    The steps still waiting (all of them while a save is in progress, else none).
  """
  if not steps or manager.is_saving_in_progress():
    return steps
  if jax.process_index() == 0:
    for step in steps:
      step_dir = os.path.join(str(manager.directory), str(step))
      if os.path.isdir(step_dir):  # a step the preservation policy removed needs nothing
        write_checksums(step_dir)
  return []


def save(
  manager: ocp.CheckpointManager,
  step: int,
  state,
  data_iterator: Any,
  metrics: dict[str, float] | None = None,
) -> None:
  """Saves the train state and the data iterator's position (asynchronously when configured).

  Args:
    manager: the workdir's manager.
    step: the number of updates done.
    state: the TrainState.
    data_iterator: the grain iterator the run reads (each host saves its own position).
    metrics: {'accuracy_at_T': ...} when this step was evaluated (ranks checkpoints for keep_best).
  """
  train = {'opt_state': state.opt_state, 'step': state.step, 'rng': state.rng}
  manager.save(
    step,
    args=ocp.args.Composite(
      params=ocp.args.StandardSave(state.params),
      train=ocp.args.StandardSave(train),
      data=grain.checkpoint.CheckpointSave(data_iterator),
    ),
    metrics=metrics,
    force=True,
  )


def _abstract(tree, sharding=None):
  def leaf(x):
    return jax.ShapeDtypeStruct(np.shape(x), x.dtype, sharding=sharding)

  return jax.tree.map(leaf, tree)


def _check_shapes(expected, metadata, where: str) -> None:
  """A checkpoint from another config is an error listing the differences, never a re-init."""
  flat_exp = {
    jax.tree_util.keystr(p): tuple(v.shape)
    for p, v in jax.tree_util.tree_flatten_with_path(expected)[0]
  }
  flat_got = {
    jax.tree_util.keystr(p): tuple(v.shape)
    for p, v in jax.tree_util.tree_flatten_with_path(metadata)[0]
  }
  missing = sorted(set(flat_exp) - set(flat_got))
  unexpected = sorted(set(flat_got) - set(flat_exp))
  shapes = sorted(
    f'{k}: config {flat_exp[k]}, checkpoint {flat_got[k]}'
    for k in set(flat_exp) & set(flat_got)
    if flat_exp[k] != flat_got[k]
  )
  if missing or unexpected or shapes:
    raise ValueError(
      f'{where} was written by a different model config:\n'
      f'  missing in the checkpoint: {missing}\n  not in the config: {unexpected}\n'
      f'  different shapes: {shapes}'
    )


def _tree_metadata(manager: ocp.CheckpointManager, step: int, item: str):
  meta = manager.item_metadata(step)[item]
  return getattr(meta, 'tree', meta)


def restore(
  manager: ocp.CheckpointManager, step: int, state_template, data_iterator, sharding=None
) -> Any:
  """Restores the state of `step` onto the template's structure, and the iterator's position.

  Raises:
    ValueError: the checkpoint's parameter shapes differ from the template's (another config).
  """
  where = os.path.join(str(manager.directory), str(step))
  _check_shapes(state_template.params, _tree_metadata(manager, step, 'params'), where)
  train_template = {
    'opt_state': state_template.opt_state,
    'step': state_template.step,
    'rng': state_template.rng,
  }
  restored = manager.restore(
    step,
    args=ocp.args.Composite(
      params=ocp.args.StandardRestore(_abstract(state_template.params, sharding)),
      train=ocp.args.StandardRestore(_abstract(train_template, sharding)),
      data=grain.checkpoint.CheckpointRestore(data_iterator),
    ),
  )
  train = restored['train']
  state = state_template.replace(
    params=restored['params'], opt_state=train['opt_state'], step=train['step'], rng=train['rng']
  )
  return state


def _all_finite(tree) -> bool:
  leaves = [x for x in jax.tree.leaves(tree) if jax.numpy.issubdtype(x.dtype, jax.numpy.floating)]
  return all(bool(jax.numpy.isfinite(x).all()) for x in leaves)


def quarantine(manager: ocp.CheckpointManager, step: int, why: str) -> str:
  """Moves a bad step out of the checkpoints (to workdir/corrupt_checkpoints/), never deletes it.

  Returns:
    Where the step now lies.
  """
  step_dir = os.path.join(str(manager.directory), str(step))
  dest_root = os.path.join(os.path.dirname(str(manager.directory)), QUARANTINE_DIR)
  dest = os.path.join(dest_root, f'{step}-{time.strftime("%Y%m%d-%H%M%S")}')
  if jax.process_index() == 0:
    os.makedirs(dest_root, exist_ok=True)
    shutil.move(step_dir, dest)
    logging.error('%s\nMoved checkpoint %d to %s; falling back to an older one.', why, step, dest)
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices(f'glitr_quarantine_{step}')
  manager.reload()
  return dest


def restore_newest_good(
  manager: ocp.CheckpointManager, state_template, data_iterator, sharding=None
) -> tuple[Any, int | None]:
  """The newest checkpoint that verifies and restores, falling back past bad ones.

  A step whose files differ from its checksums, whose unverified files cannot be read, or whose
  restored values are not finite is moved aside (`quarantine`), and the next newest is tried.

  Returns:
    (state, step), or (state_template, None) when the workdir holds no good checkpoint.

  Raises:
    ValueError: a step was written by another model config (that is not damage: nothing moves).
  """
  for step in sorted(manager.all_steps(), reverse=True):
    step_dir = os.path.join(str(manager.directory), str(step))
    try:
      verified = verify_step(step_dir)
    except CorruptCheckpointError as e:
      quarantine(manager, step, str(e))
      continue
    _check_shapes(state_template.params, _tree_metadata(manager, step, 'params'), step_dir)
    try:
      state = restore(manager, step, state_template, data_iterator, sharding)
    except Exception as e:  # an unverified step's unreadable files: damage, not a bug of ours
      if verified:
        raise
      quarantine(manager, step, f'checkpoint {step_dir} cannot be read: {e}')
      continue
    if not _all_finite((state.params, state.opt_state)):
      quarantine(manager, step, f'checkpoint {step_dir} holds non-finite values')
      continue
    if not verified:
      logging.warning(
        'Checkpoint %s has no %s (saved before checksums were recorded, or the run stopped as '
        'it finalised it): restored unverified',
        step_dir,
        CHECKSUMS_FILE,
      )
    return state, step
  return state_template, None


def best_step(manager: ocp.CheckpointManager) -> int | None:
  """The kept step with the highest validation accuracy at t = T, if any has one."""
  scored = []
  for step in manager.all_steps():
    metrics = manager.metrics(step)
    if metrics and BEST_METRIC in metrics:
      scored.append((metrics[BEST_METRIC], step))
  return max(scored)[1] if scored else None


def restore_params(step_dir: str, model_config: ml_collections.ConfigDict) -> Any:
  """The `params` item of one step directory, onto this process's first device (whatever devices
  wrote it); a checkpoint of another model is a ValueError listing the differences."""
  expected = _abstract(
    jax.eval_shape(glitr.GliTr.from_config(model_config).init, jax.random.key(0)),
    jax.sharding.SingleDeviceSharding(jax.local_devices()[0]),
  )
  path = os.path.join(step_dir, 'params')
  with ocp.StandardCheckpointer() as ckptr:
    meta = ckptr.metadata(path)
    meta = getattr(meta, 'item_metadata', meta)  # StepMetadata -> the tree's metadata
    _check_shapes(expected, getattr(meta, 'tree', meta), step_dir)
    return ckptr.restore(path, expected)


def read_only_manager(checkpoints_root: str) -> ocp.CheckpointManager:
  """A manager that reads the steps under `checkpoints_root` and never writes or deletes."""
  return ocp.CheckpointManager(
    checkpoints_root,
    options=ocp.CheckpointManagerOptions(read_only=True),
    item_handlers=_handlers(),
  )


def write_run_info(workdir: str, config: ml_collections.ConfigDict, class_names) -> None:
  """Writes the resolved config and the dataset's class names beside the checkpoints."""
  os.makedirs(workdir, exist_ok=True)
  workdir_lib.write_record(workdir, config)
  path = os.path.join(workdir, CLASS_NAMES_FILE)
  with open(f'{path}.tmp', 'w') as f:
    json.dump(list(class_names), f, indent=1)
  os.replace(f'{path}.tmp', path)
