r"""Several stages in one command: train the teacher, the student from it, evaluate (the demo).

    python main.py --config=configs/demo.py --workdir=DIR            # teacher, student, evaluate
    python main.py --config=configs/demo.py:student --workdir=DIR    # one stage
    python main.py --config=configs/demo.py:baseline --workdir=DIR   # the CE-only student + eval

A pipeline config (`stage='pipeline'`; configs/demo.py) is an experiment config whose top level
holds what every stage shares (model, data, eval, seed, batch size, ...) and whose `pipeline`
section holds what differs per stage:
  pipeline.stages    the stages to run, in order (names from STAGES)
  pipeline.teacher   the teacher's own fields: PER_STAGE (run length, optim, loss)
  pipeline.student   the same for the student (and its evaluation)
  pipeline.baseline  replaces some of the student's fields for the CE-only baseline
A field lives in one place only: the shared part has none of PER_STAGE, and a stage section may
only add fields the shared part lacks (`stage_config` refuses an overlap). So every
`--config.x=y` reaches the stages that use x: `--config.seed=1` all of them,
`--config.pipeline.teacher.num_train_steps=10` the teacher; a field the config lacks is refused
by the command line itself. The students' `teacher_checkpoint` and the evaluations'
`eval_checkpoint` are the pipeline's own folders.

Each stage has its own folder in the workdir:
  DIR/teacher/         teacher training (`stage='teacher'`)
  DIR/student/         student training from DIR/teacher
  DIR/eval/            evaluation of DIR/student with DIR/teacher (report.json, report.md, pictures)
  DIR/baseline/        the baseline student: the student's budget, CE only
  DIR/baseline/eval/   its evaluation
A finished stage is skipped: training whose newest checkpoint is its last step, an evaluation whose
report.json is of the checkpoint it would evaluate. An interrupted training stage resumes (the
trainer restores its newest checkpoint); a preempted one stops the pipeline (`loop.Preempted`),
and the same command resumes it. A stage whose inputs are not finished (the student without a
trained teacher, say) stops with an error naming the stage to run first. The pipeline holds DIR's
lock while it runs, and each training stage its own folder's.
"""

import dataclasses
import json
import os
import time
from collections.abc import Mapping
from typing import Any

import ml_collections
from absl import logging

from glitr_jax import data as data_lib
from glitr_jax import weights
from glitr_jax import workdir as workdir_lib
from glitr_jax.eval import run as eval_run
from glitr_jax.train import loop

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
# Fields a pipeline sets per stage (in pipeline.<stage>), never in its shared part.
PER_STAGE = (
  'num_train_steps',
  'num_epochs',
  'optim',
  'loss',
  'teacher_checkpoint',
  'eval_checkpoint',
)
EVAL_DIR = eval_run.EVAL_DIR
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


def _add(config: ml_collections.ConfigDict, fields: Mapping[str, Any], where: str) -> None:
  """Adds `fields` to `config`; a value `config` already has is an error (one home per field)."""
  for key, value in fields.items():
    if key not in config:
      config[key] = value
    elif isinstance(value, Mapping) and isinstance(config[key], ml_collections.ConfigDict):
      _add(config[key], value, f'{where}.{key}')
    else:
      raise ValueError(
        f'{where}.{key} is also set in the shared part of the pipeline config ({key!r}): a field '
        f'lives in one place, so move it to every stage section or drop it from {where}'
      )


def _merge(base: dict[str, Any], over: Mapping[str, Any], where: str) -> dict[str, Any]:
  """`base` with `over`'s values replacing its own (the baseline over the student's section)."""
  out = dict(base)
  for key, value in over.items():
    if key not in out:
      raise ValueError(f'{where}.{key}: the student section has no field {key!r} to replace')
    out[key] = _merge(out[key], value, f'{where}.{key}') if isinstance(value, Mapping) else value
  return out


def _paths(tree: Mapping[str, Any], prefix: str = '') -> set[str]:
  out = set()
  for key, value in tree.items():
    if isinstance(value, Mapping):
      out |= _paths(value, f'{prefix}{key}.')
    else:
      out.add(prefix + key)
  return out


def _check_sections_match(section: ml_collections.ConfigDict) -> None:
  """The teacher's and the student's sections set the same fields (a misspelt one stands out)."""
  teacher, student = _paths(section.teacher.to_dict()), _paths(section.student.to_dict())
  odd = [f'pipeline.teacher.{p}' for p in sorted(teacher - student)]
  odd += [f'pipeline.student.{p}' for p in sorted(student - teacher)]
  if odd:
    raise ValueError(f'{odd}: the teacher and student sections must set the same fields')


def stage_config(
  config: ml_collections.ConfigDict, name: str, root: str
) -> ml_collections.ConfigDict:
  """The complete experiment config of one stage, derived from the pipeline config.

  The shared fields plus `pipeline.teacher` (teacher) or `pipeline.student` (every other stage),
  whose fields `pipeline.baseline` replaces for the baseline stages; students read their teacher
  from root/teacher, and evaluations name the checkpoint they evaluate. The `pipeline` section
  itself is dropped.

  Args:
    config: the pipeline config (`stage='pipeline'`).
    name: a stage from STAGES.
    root: the pipeline's workdir.

  Returns:
    A new (locked) ConfigDict with `stage` 'teacher' or 'student'.
  """
  _check_name(name)
  out = config.copy_and_resolve_references()
  _check_sections_match(config.pipeline)
  with out.unlocked():
    section = out.pipeline
    del out['pipeline']
    shared = [f for f in PER_STAGE if f in out]
    if shared:
      raise ValueError(
        f'a pipeline config sets {shared} per stage (pipeline.<stage>.<field>), not in its shared '
        'part'
      )
    if name == TEACHER:
      _add(out, section.teacher.to_dict(), 'pipeline.teacher')
      out.stage = TEACHER
      out.teacher_checkpoint = ''
      out.eval_checkpoint = ''
      return out
    fields = section.student.to_dict()
    if name in (BASELINE, BASELINE_EVALUATE):
      fields = _merge(fields, section.baseline.to_dict(), 'pipeline.baseline')
    _add(out, fields, 'pipeline.student')
    out.stage = STUDENT
    out.teacher_checkpoint = stage_workdir(root, TEACHER)
    out.eval_checkpoint = {
      EVALUATE: stage_workdir(root, STUDENT),
      BASELINE_EVALUATE: stage_workdir(root, BASELINE),
    }.get(name, '')
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
  try:
    _, step = weights.resolve(workdir)
  except FileNotFoundError:
    return None
  return step


def total_steps(config: ml_collections.ConfigDict) -> int:
  """The number of steps a training config runs (`num_train_steps`, or epochs of its data)."""
  if config.num_train_steps > 0:
    return int(config.num_train_steps)
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

  Raises:
    RecordMismatchError: a finished training stage ran with another config than this one (so
      skipping it would not give what was asked).
  """
  if stage.is_training:
    finished = latest_step(stage.workdir) == total_steps(stage.config)
    if finished:
      workdir_lib.check_resume(stage.workdir, stage.config)
    return finished
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
    loop.train_and_evaluate(stage.config, stage.workdir)
  else:
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
  stages = plan(config, root, mode)  # a config error stops here, before anything is written
  with workdir_lib.locked(root):
    return _run(config, root, stages)


def _run(config: ml_collections.ConfigDict, root: str, stages: list[Stage]) -> list[str]:
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
