"""`main.py --mode=evaluate`: the full evaluation of a trained GliTr, written to DIR/eval/.

    python main.py --config=configs/ssv2_student.py --workdir=DIR --mode=evaluate \
        [--config.eval_checkpoint=DIR2|DIR/checkpoints/STEP|glitr_ssv2_student.pth]

evaluates the newest student checkpoint in DIR (or `eval_checkpoint`; `eval.checkpoint='best'`
picks the best-validated one) on `data.eval_split`, with its teacher from `teacher_checkpoint`,
for every strategy of `eval.strategies` (+ the teacher on full frames), early exit over
`eval.gammas`, the sensing cost, and pictures of `eval.num_pictures` videos. Every process runs it
(data parallel over all devices and hosts); process 0 writes report.json, report.md and the
pictures. A teacher-stage config evaluates the teacher itself: its own locations and full frames.
"""

import dataclasses
import os
from typing import Any

import jax
import ml_collections
from absl import logging

from glitr_jax import data as data_lib
from glitr_jax import sharding, weights
from glitr_jax import workdir as workdir_lib
from glitr_jax.eval import online, report
from glitr_jax.eval import strategies as strategies_lib
from glitr_jax.models import glitr
from glitr_jax.train import init

EVAL_DIR = 'eval'


def _class_names(config: ml_collections.ConfigDict, workdir: str) -> tuple[str, ...] | None:
  """The evaluated dataset's class names (its metadata), else the workdir's class_names.json."""
  trained = weights.read_class_names(workdir)
  try:
    names = tuple(data_lib.dataset_info(config.data).class_names)
  except data_lib.DatasetNotPreparedError:
    if trained is None:
      raise
    logging.warning('%s is not prepared here: class names from %s', config.data.name, workdir)
    return tuple(trained)
  if len(names) != config.model.num_classes:
    raise ValueError(
      f'model.num_classes={config.model.num_classes} but data.name={config.data.name!r} has '
      f'{len(names)} classes'
    )
  if trained is not None and tuple(trained) != names:
    logging.warning(
      '%s/class_names.json differs from the class names of %s: using the dataset metadata',
      workdir,
      config.data.name,
    )
  return names


def _load(config: ml_collections.ConfigDict, workdir: str, plan: online.EvalPlan):
  """(params, step, source, teacher params or None, plan without what has no teacher)."""
  source = config.eval_checkpoint or workdir
  which = config.eval.checkpoint
  if which not in ('latest', 'best'):
    raise ValueError(f"eval.checkpoint={which!r}: 'latest' or 'best'")
  params, step = weights.load_params(source, config.model, which=which)
  logging.info('Evaluating %s (step %s)', source, step)
  if config.stage == 'teacher':
    return params, step, source, params, plan
  if config.teacher_checkpoint:
    return params, step, source, init.load_teacher(config), plan
  if plan.needs_teacher:
    dropped = [s for s in plan.strategies if s in strategies_lib.NEEDS_TEACHER]
    logging.warning('No teacher_checkpoint: skipping %s and the Fig. 8b pass', dropped)
    kept = tuple(s for s in plan.strategies if s not in strategies_lib.NEEDS_TEACHER)
    plan = dataclasses.replace(plan, strategies=kept, teacher_at_glitr=False)
  return params, step, source, None, plan


def evaluate(config: ml_collections.ConfigDict, workdir: str, *, batches=None) -> dict[str, Any]:
  """Evaluates a checkpoint and writes `workdir/eval/` (report.json, report.md, pictures).

  Args:
    config: the experiment config (its `eval`, `data`, `model`, `mesh`, `eval_checkpoint`,
      `teacher_checkpoint` and `stage`).
    workdir: the run's directory; its newest checkpoint is evaluated unless `eval_checkpoint`
      names another.
    batches: host batches in the eval-iterator format instead of `data.eval_split`.

  Returns:
    The report (as written to report.json on process 0).

  Raises:
    WorkdirLockedError: another command is using `workdir`.
    CorruptCheckpointError / RecordMismatchError: the checkpoint is damaged, or was trained with
      other model fields than `config.model` (nothing is written).
  """
  workdir = os.path.abspath(workdir)
  with workdir_lib.locked(workdir):
    return _evaluate(config, workdir, batches)


def _evaluate(config: ml_collections.ConfigDict, workdir: str, batches) -> dict[str, Any]:
  mesh = sharding.make_mesh(config.mesh)
  model = glitr.GliTr.from_config(config.model)
  names = list(config.eval.strategies)
  if config.stage == 'teacher' or config.teacher_checkpoint:
    names.append(strategies_lib.TEACHER_FULL_FRAMES)
  plan = online.plan_from_config(config, strategies_lib.validate(tuple(dict.fromkeys(names))))
  params, step, source, teacher_params, plan = _load(config, workdir, plan)
  class_names = _class_names(config, workdir)
  logging.info(
    'Evaluation on %s/%s: strategies %s, %d seeds, %d devices (%d processes)',
    config.data.name,
    config.data.eval_split,
    list(plan.strategies),
    plan.num_seeds,
    mesh.devices.size,
    jax.process_count(),
  )
  evaluator = online.OnlineEvaluator(config, model, mesh)
  results = evaluator.run(
    params,
    teacher_params,
    plan=plan,
    batches=batches,
    num_examples_kept=int(config.eval.num_pictures),
    progress=True,
  )
  out = report.build(
    results,
    num_frames=model.num_frames,
    glimpse_pixels=model.glimpse_pixels,
    frame_hw=(config.model.image_size, config.model.image_size),
    checkpoint_step=step,
    num_seeds=plan.num_seeds,
    extra={
      'checkpoint': os.path.abspath(source) if os.path.exists(source) else source,
      'teacher_checkpoint': config.teacher_checkpoint,
      'stage': config.stage,
      'dataset': config.data.name,
      'split': config.data.eval_split,
      'max_examples': int(config.eval.max_examples),
      'model': {
        'image_size': int(config.model.image_size),
        'glimpse_pixels': int(model.glimpse_pixels),
        'num_frames': int(model.num_frames),
        'num_classes': int(config.model.num_classes),
      },
      'class_names': list(class_names) if class_names else None,
    },
  )
  if jax.process_index() == 0:
    out_dir = os.path.join(workdir, EVAL_DIR)
    paths = report.write(
      out, results, out_dir, glimpse_pixels=model.glimpse_pixels, class_names=class_names
    )
    logging.info('Wrote %s and %s', paths['json'], paths['markdown'])
  return out
