"""Trained weights from wherever a config or a command line names them.

A source is a workdir (its newest checkpoint, or its best by validation accuracy with
`which='best'`), a workdir's `checkpoints/` directory, one `checkpoints/<step>` directory, or an
official `.pth` / `.npz` / safetensors file (glitr_jax.convert). A checkpoint is verified against
the checksums saved with it (glitr_jax.train.checkpoints), and the model fields its workdir's
config.json recorded must equal the model config it is loaded for.
"""

import json
import os
from typing import Any

import ml_collections
from absl import logging

from glitr_jax import convert
from glitr_jax import workdir as workdir_lib
from glitr_jax.train import checkpoints


def resolve(source: str, which: str = 'latest') -> tuple[str, int | None]:
  """Where the weights of `source` live: (path, step, or None for official files).

  Args:
    source: a workdir, a workdir's `checkpoints/` directory, one `checkpoints/<step>` directory,
      or an official weights file.
    which: for a workdir, 'latest' or 'best' (falls back to latest when no checkpoint has an
      evaluation).
  """
  if not source:
    raise ValueError('no checkpoint named (the config field is empty)')
  if os.path.isfile(source):
    return source, None
  if not os.path.isdir(source):
    raise FileNotFoundError(f'checkpoint not found: {source}')
  if os.path.isdir(os.path.join(source, 'params')):
    step = os.path.basename(os.path.normpath(source))
    return source, int(step) if step.isdigit() else None
  ckpt_root = source if os.path.basename(os.path.normpath(source)) == 'checkpoints' else (
    os.path.join(source, 'checkpoints')
  )  # fmt: skip
  if not os.path.isdir(ckpt_root):
    raise FileNotFoundError(f'{source} holds no checkpoints (expected {ckpt_root}/<step>/)')
  manager = checkpoints.read_only_manager(ckpt_root)
  step = checkpoints.best_step(manager) if which == 'best' else None
  step = manager.latest_step() if step is None else step
  manager.close()
  if step is None:
    raise FileNotFoundError(f'{ckpt_root} holds no finished checkpoint')
  return os.path.join(ckpt_root, str(step)), step


def record_beside(path: str) -> ml_collections.ConfigDict | None:
  """The config.json of the workdir that `path` (a workdir or a checkpoint in it) lies in."""
  for folder in (path, os.path.dirname(path), os.path.dirname(os.path.dirname(path))):
    record = workdir_lib.read_record(folder)
    if record is not None:
      return record
  return None


def load_params(
  source: str, model_config: ml_collections.ConfigDict, which: str = 'latest'
) -> tuple[Any, int | None]:
  """GliTr parameters from a workdir, a checkpoint directory, or an official weights file.

  Returns:
    (params, step); step is None for official files.

  Raises:
    CorruptCheckpointError: the checkpoint's files changed since they were saved.
    RecordMismatchError: the workdir recorded another model.
  """
  path, step = resolve(source, which)
  if os.path.isfile(path):
    return convert.load_official(path, model_config)['params'], None
  if not checkpoints.verify_step(path):
    logging.warning('%s has no %s: loading it unverified', path, checkpoints.CHECKSUMS_FILE)
  recorded = record_beside(path)
  if recorded is not None and 'model' in recorded:
    workdir_lib.check_model(recorded.model, model_config, where=source)
  logging.info('Loading parameters from %s', path)
  return checkpoints.restore_params(path, model_config), step


def read_workdir_config(workdir: str) -> ml_collections.ConfigDict:
  """The resolved config a run wrote to its workdir (config.json)."""
  record = workdir_lib.read_record(workdir)
  if record is None:
    raise FileNotFoundError(
      f'{workdir_lib.record_path(workdir)} not found: is {workdir} a glitr-jax workdir?'
    )
  return record


def read_class_names(workdir: str) -> tuple[str, ...] | None:
  """The class names a run trained on, in label order (None when it did not write them)."""
  path = os.path.join(workdir, checkpoints.CLASS_NAMES_FILE)
  if not os.path.exists(path):
    return None
  with open(path) as f:
    return tuple(json.load(f))


def load_student(workdir: str, which: str = 'latest'):
  """Everything an application needs to run a trained student from its workdir.

  Returns:
    (variables {'params': ...}, model_config, class_names (tuple or None), step).
  """
  config = read_workdir_config(workdir)
  params, step = load_params(workdir, config.model, which)
  return {'params': params}, config.model, read_class_names(workdir), step
