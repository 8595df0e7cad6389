"""The training loop: resumable, data parallel, observable.

    python main.py --config=configs/ssv2_teacher.py --workdir=DIR

trains the stage the config names. Running the same command again resumes from the newest
checkpoint in DIR (parameters, optimiser, step, RNG and the data iterator), so a resumed run
continues exactly as an uninterrupted one would (bit for bit on CPU). SIGTERM (preemptible
machines) saves a checkpoint and exits cleanly. Metrics go to TensorBoard (clu), to
DIR/metrics.jsonl (one object per logged step) and to the console; a non-finite loss stops the
run naming the step and the term, and the last good checkpoint stays intact.
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
from glitr_jax import optim, sharding
from glitr_jax.eval import online
from glitr_jax.models import glitr
from glitr_jax.train import checkpoints, init, steps

METRICS_FILE = 'metrics.jsonl'


class NonFiniteLossError(FloatingPointError):
  """A loss term became NaN or infinite."""


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


def make_writer(workdir: str) -> metric_writers.MetricWriter:
  if jax.process_index() > 0:
    return metric_writers.create_default_writer(just_logging=True)
  # TensorBoard and metrics.jsonl; the console gets one concise line per log step (_log_console).
  tensorboard = metric_writers.SummaryWriter(workdir)
  return metric_writers.MultiWriter([tensorboard, JsonlWriter(os.path.join(workdir, METRICS_FILE))])


def run_length(config: ml_collections.ConfigDict, num_train_examples: int) -> tuple[int, int]:
  """(total steps, steps per epoch): `num_train_steps` wins over `num_epochs`."""
  steps_per_epoch = max(1, num_train_examples // config.batch_size)
  if config.num_train_steps > 0:
    return int(config.num_train_steps), steps_per_epoch
  if config.num_epochs <= 0:
    raise ValueError('set num_epochs > 0 or num_train_steps > 0')
  return int(math.ceil(config.num_epochs * steps_per_epoch)), steps_per_epoch


def summarize(pending: list[tuple[int, dict]]) -> dict[str, float]:
  """Host-side means over the logging window; raises on the first non-finite loss term.

  Args:
    pending: (step, device metrics) for each step since the last fetch.
  """
  if not pending:
    return {}
  fetched = jax.device_get([m for _, m in pending])
  for (step, _), metrics in zip(pending, fetched, strict=True):
    for name, value in metrics.items():
      if not np.all(np.isfinite(value)):
        raise NonFiniteLossError(
          f'non-finite {name} ({value}) at step {step + 1}; stopping. The last checkpoint before '
          'it is intact: lower the learning rate (optim.lr_*) or enable optim.grad_clip_norm.'
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
  """Turns SIGTERM into a flag the loop checks between steps."""

  def __init__(self):
    self.requested = False
    self._previous = signal.signal(signal.SIGTERM, self._handle)

  def _handle(self, signum, frame):
    del signum, frame
    logging.warning('SIGTERM: saving a checkpoint and exiting after this step')
    self.requested = True

  def any_host(self) -> bool:
    if jax.process_count() == 1:
      return self.requested
    flags = multihost_utils.process_allgather(np.int32(self.requested))
    return bool(np.max(flags))

  def restore(self):
    signal.signal(signal.SIGTERM, self._previous)


def _frozen_and_offline(config, model):
  """The frozen weights of the stage and the on-the-fly offline model (or None)."""
  params, frozen = init.initial_params(config, model)
  offline_fn = None
  if config.stage == 'teacher' and config.loss.dist > 0:
    if config.offline.mode == 'on_the_fly':
      from glitr_jax import offline as offline_lib  # noqa: PLC0415 (optional heavy model)

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
  """Trains `config.stage` in `workdir`, resuming from its newest checkpoint.

  Returns:
    The final TrainState.
  """
  workdir = os.path.abspath(workdir)
  os.makedirs(workdir, exist_ok=True)
  info = data_lib.dataset_info(config.data)
  if info.num_classes != config.model.num_classes:
    raise ValueError(
      f'model.num_classes={config.model.num_classes} but data.name={config.data.name!r} has '
      f'{info.num_classes} classes'
    )
  if jax.process_index() == 0:
    checkpoints.write_run_info(workdir, config, info.class_names)
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
  manager = checkpoints.make_manager(workdir, config)
  start = manager.latest_step()
  metrics_path = os.path.join(workdir, METRICS_FILE)
  if start is not None:
    state = checkpoints.restore(manager, start, state, train_iter, replicated)
    if jax.process_index() == 0:
      truncate_metrics(metrics_path, start)
    logging.info('Resumed from step %d in %s', start, checkpoints.checkpoint_dir(workdir))
  else:
    start = 0
    parameter_overview.log_parameter_overview(jax.device_get(state.params))
  writer = make_writer(workdir)
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
      is_last = done == total_steps
      row = {}
      if done % config.log_every_steps == 0 or is_last:
        row.update(summarize(pending))
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
      stop = preemption.any_host() if (row or is_last) else False
      if done % config.checkpoint_every_steps == 0 or is_last or eval_metrics or stop:
        summarize(pending)  # Never checkpoint a state whose losses were not checked.
        best = None
        if eval_metrics:
          best = {
            checkpoints.BEST_METRIC: eval_metrics[f'eval_accuracy_t{config.model.num_frames}']
          }
        checkpoints.save(manager, done, state, train_iter, best)
      if stop:
        logging.warning('Preempted at step %d: checkpoint saved, exiting', done)
        break
  finally:
    manager.wait_until_finished()
    manager.close()
    writer.close()
    preemption.restore()
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
