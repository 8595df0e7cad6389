r"""Several stages in one command: train the teacher, the student from it, evaluate (the demo).

    python main.py --config=configs/demo.py --workdir=DIR            # teacher, student, evaluate
    python main.py --config=configs/demo.py:student --workdir=DIR    # one stage
    python main.py --config=configs/demo.py:baseline --workdir=DIR   # the CE-only student + eval

A pipeline config (`stage='pipeline'`; configs/demo.py) is an ordinary experiment config (model,
data, eval, seed, batch size, ...) plus a `pipeline` section:
  pipeline.stages    the stages to run, in order (names from STAGES)
  pipeline.teacher   nested overrides that turn the shared fields into the teacher's config
  pipeline.student   the same for the student (and its evaluation)
  pipeline.baseline  overrides applied on top of the student's for the CE-only baseline

Each stage has its own folder in the workdir:
  DIR/teacher/         teacher training (`stage='teacher'`)
  DIR/student/         student training from DIR/teacher
  DIR/eval/            evaluation of DIR/student with DIR/teacher (report.json, report.md, pictures)
  DIR/baseline/        the baseline student: the student's budget, CE only
  DIR/baseline/eval/   its evaluation
A finished stage is skipped: training whose newest checkpoint is its last step, an evaluation whose
report.json is of the checkpoint it would evaluate. An interrupted training stage resumes (the
trainer restores its newest checkpoint). A stage whose inputs are not finished (the student
without a trained teacher, say) stops with an error naming the stage to run first.
"""

import dataclasses
import json
import os
import time
from collections.abc import Mapping
from typing import Any

import ml_collections
from absl import logging

PIPELINE = 'pipeline'
TEACHER, STUDENT, EVALUATE = 'teacher', 'student', 'evaluate'
BASELINE, BASELINE_EVALUATE = 'baseline', 'baseline_evaluate'
STAGES = (TEACHER, STUDENT, EVALUATE, BASELINE, BASELINE_EVALUATE)
# Stage -> the training stages it reads (they must be finished before it runs).
NEEDS = {
  TEACHER: (),
  STUDENT: (TEACHER,),
  EVALUATE: (TEACHER, STUDENT),
  BASELINE: (TEACHER,),
  BASELINE_EVALUATE: (TEACHER, BASELINE),
}
TRAINING = (TEACHER, STUDENT, BASELINE)
EVAL_DIR = 'eval'  # = glitr_jax.eval.run.EVAL_DIR (not imported: it pulls in the whole evaluator)
REPORT = 'report.json'


@dataclasses.dataclass(frozen=True)
class Stage:
  """One stage of a pipeline.

  Attributes:
    name: one of STAGES.
    workdir: training: the run's workdir; evaluation: the folder whose `eval/` it writes.
    config: the complete experiment config the trainer or the evaluation gets.
  """

  name: str
  workdir: str
  config: ml_collections.ConfigDict

  @property
  def is_training(self) -> bool:
    return self.name in TRAINING


def stage_workdir(root: str, name: str) -> str:
  """Where stage `name` of the pipeline in `root` trains, or under which it writes `eval/`.

  Args:
    root: the pipeline's workdir.
    name: a stage from STAGES.

  Returns:
    An absolute path: root/teacher, root/student, root (evaluate), root/baseline (baseline and
    its evaluation).
  """
  root = os.path.abspath(root)
  return {
    TEACHER: os.path.join(root, TEACHER),
    STUDENT: os.path.join(root, STUDENT),
    EVALUATE: root,
    BASELINE: os.path.join(root, BASELINE),
    BASELINE_EVALUATE: os.path.join(root, BASELINE),
  }[_check_name(name)]


def _check_name(name: str) -> str:
  if name not in STAGES:
    raise ValueError(f'unknown pipeline stage {name!r}; known: {list(STAGES)}')
  return name


def _override(config: ml_collections.ConfigDict, overrides: Mapping[str, Any], where: str) -> None:
  """Sets nested fields of `config` from `overrides`; a field `config` lacks is an error."""
  for key, value in overrides.items():
    if key not in config:
      raise ValueError(f'{where}.{key}: the config has no field {key!r}')
    if isinstance(value, Mapping):
      if not isinstance(config[key], ml_collections.ConfigDict):
        raise ValueError(f'{where}.{key}: {key!r} is a value, not a section')
      _override(config[key], value, f'{where}.{key}')
    else:
      config[key] = value


def stage_config(
  config: ml_collections.ConfigDict, name: str, root: str
) -> ml_collections.ConfigDict:
  """The experiment config of one stage, derived from the pipeline config.

  The shared fields, then `pipeline.teacher` (teacher) or `pipeline.student` (every other stage),
  then `pipeline.baseline` (baseline stages); students read their teacher from root/teacher, and
  evaluations name the checkpoint they evaluate. The `pipeline` section itself is dropped.

  Args:
    config: the pipeline config (`stage='pipeline'`).
    name: a stage from STAGES.
    root: the pipeline's workdir.

  Returns:
    A new (locked) ConfigDict with `stage` 'teacher' or 'student'.
  """
  _check_name(name)
  out = config.copy_and_resolve_references()
  with out.unlocked():
    section = out.pipeline
    del out['pipeline']
  if name == TEACHER:
    _override(out, section.teacher.to_dict(), 'pipeline.teacher')
    out.stage = TEACHER
    return out
  _override(out, section.student.to_dict(), 'pipeline.student')
  if name in (BASELINE, BASELINE_EVALUATE):
    _override(out, section.baseline.to_dict(), 'pipeline.baseline')
  out.stage = STUDENT
  out.teacher_checkpoint = stage_workdir(root, TEACHER)
  if name == EVALUATE:
    out.eval_checkpoint = stage_workdir(root, STUDENT)
  elif name == BASELINE_EVALUATE:
    out.eval_checkpoint = stage_workdir(root, BASELINE)
  return out


def plan(config: ml_collections.ConfigDict, root: str, mode: str = 'train') -> list[Stage]:
  """The stages `pipeline.stages` names, with their configs and folders.

  Args:
    config: the pipeline config.
    root: the pipeline's workdir.
    mode: 'train' runs every stage named; 'evaluate' (main.py --mode=evaluate) only the
      evaluations among them.

  Returns:
    Stages in the order they run.
  """
  if mode not in ('train', 'evaluate'):
    raise ValueError(f"mode={mode!r}: 'train' or 'evaluate'")
  names = [_check_name(n) for n in config.pipeline.stages]
  if not names:
    raise ValueError(f'pipeline.stages is empty; name some of {list(STAGES)}')
  if mode == 'evaluate':
    names = [n for n in names if n not in TRAINING]
  return [Stage(n, stage_workdir(root, n), stage_config(config, n, root)) for n in names]


def latest_step(workdir: str) -> int | None:
  """The newest finished checkpoint step of a training workdir (None: no checkpoint yet)."""
  from glitr_jax.train import checkpoints  # noqa: PLC0415 (orbax only when needed)

  try:
    _, step = checkpoints.resolve(workdir)
  except FileNotFoundError:
    return None
  return step


def total_steps(config: ml_collections.ConfigDict) -> int:
  """The number of steps a training config runs (`num_train_steps`, or epochs of its data)."""
  from glitr_jax.train import loop  # noqa: PLC0415

  if config.num_train_steps > 0:
    return int(config.num_train_steps)
  from glitr_jax import data as data_lib  # noqa: PLC0415 (TFDS only when epochs need it)

  info = data_lib.dataset_info(config.data)
  return loop.run_length(config, info.num_examples[config.data.train_split])[0]


def read_report(stage: Stage) -> dict[str, Any] | None:
  """An evaluation stage's report.json, or None when it has not been written."""
  path = os.path.join(stage.workdir, EVAL_DIR, REPORT)
  if not os.path.exists(path):
    return None
  with open(path) as f:
    return json.load(f)


def is_finished(stage: Stage) -> bool:
  """Whether running `stage` again would change nothing.

  Training: its newest checkpoint is at its last step. Evaluation: its report.json names the
  checkpoint it evaluates, at that checkpoint's newest step, and the same teacher.
  """
  if stage.is_training:
    return latest_step(stage.workdir) == total_steps(stage.config)
  report = read_report(stage)
  if report is None:
    return False
  source = os.path.abspath(stage.config.eval_checkpoint)
  return (
    report.get('checkpoint') == source
    and report.get('checkpoint_step') == latest_step(source)
    and report.get('teacher_checkpoint') == stage.config.teacher_checkpoint
  )


def check_inputs(stage: Stage, root: str, config: ml_collections.ConfigDict) -> None:
  """Raises RuntimeError when a training stage that `stage` reads is not finished."""
  for need in NEEDS[stage.name]:
    step, total = (
      latest_step(stage_workdir(root, need)),
      total_steps(stage_config(config, need, root)),
    )
    if step != total:
      have = 'no checkpoint' if step is None else f'step {step} of {total}'
      raise RuntimeError(
        f'stage {stage.name!r} needs the finished {need!r} stage, but '
        f'{stage_workdir(root, need)} has {have}: run it first (configs/demo.py:{need}, or the '
        'config without an argument for every stage)'
      )


def run_stage(stage: Stage) -> None:
  """Trains or evaluates one stage (the trainer resumes from the stage's newest checkpoint)."""
  if stage.is_training:
    from glitr_jax.train import loop  # noqa: PLC0415

    loop.train_and_evaluate(stage.config, stage.workdir)
  else:
    from glitr_jax.eval import run as eval_run  # noqa: PLC0415

    eval_run.evaluate(stage.config, stage.workdir)


def summary(report: Mapping[str, Any]) -> str:
  """One line per strategy: accuracy at the first and the last glimpse."""
  per_t = report['accuracy_per_t']
  width = max(len(k) for k in per_t)
  lines = [f'{"strategy":<{width}}  acc@t=1  acc@t=T']
  lines += [f'{k:<{width}}  {v[0]:7.3f}  {v[-1]:7.3f}' for k, v in per_t.items()]
  return '\n'.join(lines)


def run(config: ml_collections.ConfigDict, workdir: str, mode: str = 'train') -> list[str]:
  """Runs the pipeline's stages in order, skipping the finished ones.

  Args:
    config: the pipeline config (`stage='pipeline'`).
    workdir: the pipeline's workdir (one folder per stage, see the module docstring).
    mode: 'train' (every stage named) or 'evaluate' (only the evaluations).

  Returns:
    The names of the stages that ran (not those skipped).
  """
  root = os.path.abspath(workdir)
  os.makedirs(root, exist_ok=True)
  stages = plan(config, root, mode)
  ran = []
  start = time.time()
  for i, stage in enumerate(stages, 1):
    tag = f'[stage {i}/{len(stages)}: {stage.name}]'
    if is_finished(stage):
      logging.info('%s finished already in %s: skipped', tag, stage.workdir)
      continue
    check_inputs(stage, root, config)
    logging.info('%s starting in %s (%.0f s into the pipeline)', tag, stage.workdir, _since(start))
    began = time.time()
    run_stage(stage)
    ran.append(stage.name)
    logging.info('%s done in %.0f s', tag, _since(began))
    report = None if stage.is_training else read_report(stage)
    if report is not None:
      logging.info(
        '%s online accuracy (%s):\n%s', tag, stage.config.eval_checkpoint, summary(report)
      )
  logging.info('Pipeline done in %.0f s: ran %s in %s', _since(start), ran or 'nothing', root)
  return ran


def _since(start: float) -> float:
  return time.time() - start
