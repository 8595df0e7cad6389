"""Orbax checkpoints of a workdir, and loading weights from any place a config may name.

A run's checkpoints live in `workdir/checkpoints/<step>/` with three items:
  params  the GliTr parameters (a teacher for the next stage loads only this item),
  train   the optimiser state, the step and the base RNG key,
  data    the input iterator's state (grain's handler: one small JSON file per host), so a
          resumed run sees exactly the batches it would have seen.
Saving is asynchronous and atomic (orbax writes to a temporary directory and renames it). The last
`checkpoint.keep` checkpoints are kept, plus the best by validation accuracy at t = T when
`checkpoint.keep_best` (orbax's preservation policies).

Weights can come from a workdir (its newest checkpoint, or the best with `which='best'`), a
checkpoint step directory, or an official `.pth` / `.npz` file (glitr_jax.convert).
"""

import json
import os
from typing import Any

import grain
import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
from absl import logging
from orbax.checkpoint.checkpoint_managers import preservation_policy as pp

from glitr_jax import convert
from glitr_jax.models import glitr

BEST_METRIC = 'accuracy_at_T'


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


def best_step(manager: ocp.CheckpointManager) -> int | None:
  """The kept step with the highest validation accuracy at t = T, if any has one."""
  scored = []
  for step in manager.all_steps():
    metrics = manager.metrics(step)
    if metrics and BEST_METRIC in metrics:
      scored.append((metrics[BEST_METRIC], step))
  return max(scored)[1] if scored else None


def _params_from_step_dir(step_dir: str, model_config) -> Any:
  # Restored onto this process's first device, whatever devices wrote it.
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


def resolve(source: str, which: str = 'latest') -> tuple[str, int | None]:
  """Where weights named by a config field live: (path, step or None for official files).

  Args:
    source: a workdir, a workdir's `checkpoints/` directory, one `checkpoints/<step>` directory,
      or an official `.pth` / `.npz` file.
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
  manager = ocp.CheckpointManager(
    ckpt_root, options=ocp.CheckpointManagerOptions(read_only=True), item_handlers=_handlers()
  )
  step = best_step(manager) if which == 'best' else None
  step = manager.latest_step() if step is None else step
  manager.close()
  if step is None:
    raise FileNotFoundError(f'{ckpt_root} holds no finished checkpoint')
  return os.path.join(ckpt_root, str(step)), step


def load_params(
  source: str, model_config: ml_collections.ConfigDict, which: str = 'latest'
) -> tuple[Any, int | None]:
  """GliTr parameters from a workdir, a checkpoint directory, or an official .pth/.npz file.

  Returns:
    (params, step); step is None for official files.
  """
  path, step = resolve(source, which)
  if os.path.isfile(path):
    return convert.load_official(path, model_config)['params'], None
  logging.info('Loading parameters from %s', path)
  return _params_from_step_dir(path, model_config), step


def read_workdir_config(workdir: str) -> ml_collections.ConfigDict:
  """The resolved config a run wrote to its workdir (config.json)."""
  path = os.path.join(workdir, 'config.json')
  if not os.path.exists(path):
    raise FileNotFoundError(f'{path} not found: is {workdir} a glitr-jax workdir?')
  with open(path) as f:
    return ml_collections.ConfigDict(json.load(f))


def load_student(workdir: str, which: str = 'latest'):
  """Everything an application needs to run a trained student from its workdir.

  Returns:
    (variables {'params': ...}, model_config, class_names (tuple or None), step).
  """
  config = read_workdir_config(workdir)
  params, step = load_params(workdir, config.model, which)
  return {'params': params}, config.model, read_class_names(workdir), step


def write_run_info(workdir: str, config: ml_collections.ConfigDict, class_names) -> None:
  """Writes the resolved config and the dataset's class names beside the checkpoints."""
  os.makedirs(workdir, exist_ok=True)
  with open(os.path.join(workdir, 'config.json'), 'w') as f:
    f.write(config.to_json_best_effort(indent=2, sort_keys=True))
  with open(os.path.join(workdir, 'class_names.json'), 'w') as f:
    json.dump(list(class_names), f, indent=1)


def read_class_names(workdir: str) -> tuple[str, ...] | None:
  path = os.path.join(workdir, 'class_names.json')
  if not os.path.exists(path):
    return None
  with open(path) as f:
    return tuple(json.load(f))
