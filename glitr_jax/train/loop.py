"""The training loop: resumable, data parallel, observable.

    python main.py --config=configs/ssv2_teacher.py --workdir=DIR

trains the stage the config names. Running the same command again resumes from the newest good
checkpoint in DIR (parameters, optimiser, step, RNG and the data iterator), so a resumed run
continues exactly as an uninterrupted one would (bit for bit on CPU). The run holds DIR's lock,
refuses to resume with a config other than the one DIR recorded, and writes DIR/config.json only
once it has restored or initialised its state (glitr_jax.workdir). SIGTERM (preemptible machines)
is checked after every step: the run saves, waits for the save, and raises `Preempted` (main.py
exits with EXIT_PREEMPTED). Metrics go to TensorBoard (clu), to DIR/metrics.jsonl (one object per
logged step) and to the console; a non-finite loss stops the run naming the step and the term, and
the last good checkpoint stays intact.
"""

import json
import math
import os
import signal
import time
from typing import Any

import jax
import ml_collections
import numpy as np
from absl import logging
from clu import metric_writers, parameter_overview, periodic_actions
from jax.experimental import multihost_utils

from glitr_jax import data as data_lib
from glitr_jax import offline as offline_lib
from glitr_jax import optim, sharding
from glitr_jax import workdir as workdir_lib
from glitr_jax.data import config as data_config_lib
from glitr_jax.eval import online
from glitr_jax.models import config as model_config_lib
from glitr_jax.models import glitr
from glitr_jax.train import checkpoints, init, steps, wandb_writer

METRICS_FILE = 'metrics.jsonl'
# main.py's exit status after a preemption: EX_TEMPFAIL, "try again later" (sysexits.h).
EXIT_PREEMPTED = 75


class NonFiniteLossError(FloatingPointError):
  """A loss term became NaN or infinite."""


class Preempted(Exception):  # noqa: N818 (an event, not an error)
  """Training stopped on SIGTERM after saving its state; the same command resumes it."""

  def __init__(self, workdir: str, step: int):
    super().__init__(
      f'preempted at step {step}: checkpoint saved in {workdir}; rerun the same command to resume'
    )
    self.workdir, self.step = workdir, step


class JsonlWriter(metric_writers.MetricWriter):
  """Appends one JSON object per `write_scalars` call: {"step": s, name: value, ...}.

  Only scalars are recorded (this file is for scripts and plots); images, texts and the rest go
  to the TensorBoard writer beside it.
  """

  def __init__(self, path: str):
    self._path = path
    self._file = open(path, 'a')  # noqa: SIM115 (kept open for the run)

  def write_scalars(self, step: int, scalars):
    row = {'step': int(step), **{k: float(v) for k, v in scalars.items()}}
    self._file.write(json.dumps(row) + '\n')

  def write_summaries(self, step, values, metadata=None):
    del step, values, metadata

  def write_images(self, step, images):
    del step, images

  def write_videos(self, step, videos):
    del step, videos

  def write_audios(self, step, audios, *, sample_rate):
    del step, audios, sample_rate

  def write_texts(self, step, texts):
    del step, texts

  def write_histograms(self, step, arrays, num_buckets=None):
    del step, arrays, num_buckets

  def write_hparams(self, hparams):
    del hparams

  def flush(self):
    self._file.flush()

  def close(self):
    self._file.close()


def truncate_metrics(path: str, last_step: int) -> None:
  """Drops rows logged after `last_step` (a run killed after its last checkpoint logs steps that
  the resumed run logs again)."""
  if not os.path.exists(path):
    return
  with open(path) as f:
    rows = [line for line in f if line.strip() and json.loads(line)['step'] <= last_step]
  with open(path, 'w') as f:
    f.writelines(rows)


def make_writer(config: ml_collections.ConfigDict, workdir: str) -> metric_writers.MetricWriter:
  """TensorBoard and metrics.jsonl on process 0 (plus wandb when `wandb.project` is set)."""
  if jax.process_index() > 0:
    return metric_writers.create_default_writer(just_logging=True)
  # The console gets one concise line per log step (_log_console).
  jsonl = JsonlWriter(os.path.join(workdir, METRICS_FILE))
  writers = [metric_writers.SummaryWriter(workdir), jsonl]
  wandb = wandb_writer.maybe_wandb_writer(config, workdir)
  if wandb is not None:
    writers.append(wandb)
  return metric_writers.MultiWriter(writers)


def run_length(config: ml_collections.ConfigDict, num_train_examples: int) -> tuple[int, int]:
  """(total steps, steps per epoch): `num_train_steps` wins over `num_epochs`."""
  steps_per_epoch = max(1, num_train_examples // config.batch_size)
  if config.num_train_steps > 0:
    return int(config.num_train_steps), steps_per_epoch
  if config.num_epochs <= 0:
    raise ValueError('set num_epochs > 0 or num_train_steps > 0')
  return int(math.ceil(config.num_epochs * steps_per_epoch)), steps_per_epoch


def summarize(pending: list[tuple[int, dict]], resumed_from: int | None = None) -> dict[str, float]:
  """Host-side means over the logging window; raises on the first non-finite loss term.

  Args:
    pending: (step, device metrics) for each step since the last fetch.
    resumed_from: the step this run restored, named in the error when the first update after it
      is non-finite (the restored state, not the learning rate, is then the suspect).
  """
  if not pending:
    return {}
  fetched = jax.device_get([m for _, m in pending])
  for (step, _), metrics in zip(pending, fetched, strict=True):
    for name, value in metrics.items():
      if not np.all(np.isfinite(value)):
        if resumed_from is not None and step == resumed_from:
          hint = (
            f'it is the first update after resuming from step {resumed_from}: suspect that '
            'checkpoint (move it out of checkpoints/ to resume from the one before)'
          )
        else:
          hint = (
            'the last checkpoint before it is intact: lower the learning rate (optim.lr_*) or '
            'enable optim.grad_clip_norm'
          )
        raise NonFiniteLossError(
          f'non-finite {name} ({value}) at step {step + 1}; stopping. {hint}.'
        )
  out = {}
  for name in fetched[0]:
    if name == 'accuracy_per_t':
      per_t = np.mean([m[name] for m in fetched], axis=0)
      out.update({f'accuracy_t{t + 1}': float(v) for t, v in enumerate(per_t)})
    elif name.startswith('lr_'):
      out[name] = float(fetched[-1][name])
    else:
      out[name] = float(np.mean([m[name] for m in fetched]))
  return out


class _Preemption:
  """Whether a preemption notice (SIGTERM) arrived, checked after every step.

  One process: a Python SIGTERM handler sets a flag. Several: JAX's preemption service (started
  by jax.distributed.initialize) receives the notice and `reached_preemption_sync_point` makes
  every host agree on the same step, without a collective at each step.
  """

  def __init__(self):
    self.requested = False
    self._multi = jax.process_count() > 1
    self._previous = None if self._multi else signal.signal(signal.SIGTERM, self._handle)

  def _handle(self, signum, frame):
    del signum, frame
    logging.warning('SIGTERM: saving a checkpoint and exiting after this step')
    self.requested = True

  def reached(self, step: int) -> bool:
    if self._multi:
      return multihost_utils.reached_preemption_sync_point(step)
    return self.requested

  def restore(self):
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)


def _frozen_and_offline(config, model):
  """The frozen weights of the stage and the on-the-fly offline model (or None)."""
  params, frozen = init.initial_params(config, model)
  offline_fn = None
  if config.stage == 'teacher' and config.loss.dist > 0:
    if config.offline.mode == 'on_the_fly':
      offline_model = offline_lib.build_offline_model(config)
      frozen['offline'] = offline_model.params
      offline_fn = offline_model.logits_fn
    elif config.offline.mode == 'precomputed':
      if not config.data.offline_logits:
        raise ValueError("offline.mode='precomputed' needs data.offline_logits (an .npz file)")
    else:
      raise ValueError(f"offline.mode={config.offline.mode!r}: 'on_the_fly' or 'precomputed'")
  return params, frozen, offline_fn


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> Any:
  """Trains `config.stage` in `workdir`, resuming from its newest good checkpoint.

  Returns:
    The final TrainState.

  Raises:
    WorkdirLockedError: another command is using `workdir`.
    RecordMismatchError: `workdir` holds a run with another config (nothing is written).
    Preempted: SIGTERM arrived; the state was saved first.
  """
  workdir = os.path.abspath(workdir)
  model_config_lib.validate(config.model)
  data_config_lib.validate(config.data)
  with workdir_lib.locked(workdir):
    return _train(config, workdir)


def _train(config: ml_collections.ConfigDict, workdir: str) -> Any:
  info = data_lib.dataset_info(config.data)
  if info.num_classes != config.model.num_classes:
    raise ValueError(
      f'model.num_classes={config.model.num_classes} but data.name={config.data.name!r} has '
      f'{info.num_classes} classes'
    )
  manager = checkpoints.make_manager(workdir, config)
  if manager.all_steps():
    for change in workdir_lib.check_resume(workdir, config):
      logging.warning('Resuming %s with a changed setting: %s', workdir, change)
  mesh = sharding.make_mesh(config.mesh)
  sharding.check_batch_size(config.batch_size, mesh)
  logging.info(
    'Process %d/%d, %d local / %d global devices (%s); mesh %s',
    jax.process_index(),
    jax.process_count(),
    jax.local_device_count(),
    jax.device_count(),
    jax.devices()[0].platform,
    dict(mesh.shape),
  )
  model = glitr.GliTr.from_config(config.model)
  total_steps, steps_per_epoch = run_length(config, info.num_examples[config.data.train_split])
  tx = optim.make_optimizer(config, total_steps, steps_per_epoch)
  lrs = optim.schedules(config, total_steps, steps_per_epoch)

  params, frozen, offline_fn = _frozen_and_offline(config, model)
  replicated = sharding.replicated(mesh)
  state = sharding.replicate(steps.create_state(params, tx, config.seed), mesh)
  frozen = sharding.replicate(frozen, mesh)
  del params

  train_iter = data_lib.create_train_iterator(
    config.data,
    batch_size=config.batch_size,
    num_frames=config.model.num_frames,
    image_size=config.model.image_size,
    seed=config.seed,
  )
  metrics_path = os.path.join(workdir, METRICS_FILE)
  state, resumed = checkpoints.restore_newest_good(manager, state, train_iter, replicated)
  if resumed is not None:
    if jax.process_index() == 0:
      truncate_metrics(metrics_path, resumed)
    logging.info('Resumed from step %d in %s', resumed, checkpoints.checkpoint_dir(workdir))
  else:
    parameter_overview.log_parameter_overview(jax.device_get(state.params))
  start = resumed or 0
  # The run has its lock and its state: only now does the workdir's record become this config.
  if jax.process_index() == 0:
    checkpoints.write_run_info(workdir, config, info.class_names)
  writer = make_writer(config, workdir)
  if start == 0:
    writer.write_hparams({k: v for k, v in _flat(config.to_dict()).items()})

  train_step = jax.jit(
    steps.make_train_step(model, config, tx, lrs, offline_fn),
    in_shardings=(replicated, sharding.batch_sharding(mesh), replicated),
    out_shardings=(replicated, replicated),
    donate_argnums=(0,) if config.donate else (),
  )
  evaluator = online.OnlineEvaluator(config, model, mesh)
  report_progress = periodic_actions.ReportProgress(num_train_steps=total_steps, writer=None)
  preemption = _Preemption()

  pending: list[tuple[int, dict]] = []
  unsealed: list[int] = []  # saved steps whose checksums wait for orbax to finish them
  preempted_at = None
  window_start, window_steps = time.time(), 0
  logging.info(
    'Training %s for %d steps (%d per epoch)', config.stage, total_steps, steps_per_epoch
  )
  try:
    for step in range(start, total_steps):
      with jax.profiler.StepTraceAnnotation('train', step_num=step):
        batch = sharding.to_global(next(train_iter), mesh)
        state, metrics = train_step(state, batch, frozen)
      pending.append((step, metrics))
      window_steps += 1
      done = step + 1
      report_progress(done)
      unsealed = checkpoints.seal(manager, unsealed)
      is_last = done == total_steps
      row = {}
      if done % config.log_every_steps == 0 or is_last:
        row.update(summarize(pending, resumed))
        pending.clear()
        row['steps_per_sec'] = window_steps / max(time.time() - window_start, 1e-9)
        window_start, window_steps = time.time(), 0
      eval_metrics = None
      if (config.eval_every_steps > 0 and done % config.eval_every_steps == 0) or is_last:
        (per_t,) = evaluator(state.params).values()  # glitr (student) / full frames (teacher)
        eval_metrics = {f'eval_accuracy_t{t + 1}': float(a) for t, a in enumerate(per_t)}
        eval_metrics['eval_examples'] = float(evaluator.last_num_examples)
        row.update(eval_metrics)
      if row:
        writer.write_scalars(done, row)
        writer.flush()
        _log_console(done, total_steps, row)
      stop = preemption.reached(done)
      if done % config.checkpoint_every_steps == 0 or is_last or eval_metrics or stop:
        summarize(pending, resumed)  # Never checkpoint a state whose losses were not checked.
        best = None
        if eval_metrics:
          best = {
            checkpoints.BEST_METRIC: eval_metrics[f'eval_accuracy_t{config.model.num_frames}']
          }
        checkpoints.save(manager, done, state, train_iter, best)
        unsealed.append(done)
      if stop:
        preempted_at = done
        break
  finally:
    manager.wait_until_finished()
    checkpoints.seal(manager, unsealed)
    manager.close()
    writer.close()
    preemption.restore()
  if preempted_at is not None:
    raise Preempted(workdir, preempted_at)
  return state


def _flat(tree: dict, prefix: str = '') -> dict[str, Any]:
  out = {}
  for k, v in tree.items():
    if isinstance(v, dict):
      out.update(_flat(v, f'{prefix}{k}.'))
    else:
      out[f'{prefix}{k}'] = v if isinstance(v, int | float | str | bool) else str(v)
  return out


def _log_console(step: int, total: int, row: dict[str, float]) -> None:
  keys = ['loss', 'ce', 'spatial', 'temporal', 'dist', 'steps_per_sec']
  parts = [f'{k}={row[k]:.4g}' for k in keys if k in row]
  acc = sorted(k for k in row if k.startswith('accuracy_t'))
  if acc:
    parts.append(f'train acc@T={row[acc[-1]]:.3f}')
  evals = [k for k in row if k.startswith('eval_accuracy_t')]
  if evals:
    last = max(evals, key=lambda k: int(k[len('eval_accuracy_t') :]))
    parts.append(f'eval acc@T={row[last]:.3f}')
  logging.info('[%d/%d] %s', step, total, ', '.join(parts))
