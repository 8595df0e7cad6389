"""Weights & Biases logging beside TensorBoard, as the official release logs (optional).

`--config.wandb.project=NAME` (with `wandb.entity`, `wandb.name`, `wandb.tags`) makes the training
loop add a `WandbWriter` to its clu MultiWriter; with the default `project=''` nothing happens and
wandb is not even imported. The run's id is kept in `workdir/wandb_run_id.txt`, so a resumed run
continues the same wandb run (`wandb.init(id=..., resume='allow')`). wandb's own files go to
`workdir/wandb/` unless WANDB_DIR names another place; `WANDB_MODE=offline` keeps everything
local for a later `wandb sync`.

What is logged: scalars (`run.log(..., step=step)`), images (`wandb.Image`, [0, 1] floats or
uint8), histograms (`wandb.Histogram`), texts (`wandb.Html`), and the hyperparameters as the run's
config. Videos, audio and raw tensor summaries stay in TensorBoard only. wandb keeps one history
row per step and drops rows for steps below the newest it has: after a resume from an earlier
checkpoint, the repeated steps appear in wandb once the run has passed the last step logged
before (metrics.jsonl and TensorBoard have every step).
"""

import html
import os
import re
import secrets
import string
from collections.abc import Mapping
from typing import Any

import jax
import ml_collections
import numpy as np
from clu import metric_writers

RUN_ID_FILE = 'wandb_run_id.txt'
_RUN_ID = re.compile(r'^[A-Za-z0-9_-]{1,128}$')


def run_id_path(workdir: str) -> str:
  return os.path.join(workdir, RUN_ID_FILE)


def read_or_create_run_id(workdir: str) -> str:
  """The wandb run id kept in `workdir/wandb_run_id.txt`, written there first if absent.

  Raises:
    ValueError: the file holds something that is not a wandb run id.
  """
  path = run_id_path(workdir)
  if os.path.exists(path):
    with open(path) as f:
      run_id = f.read().strip()
    if not _RUN_ID.match(run_id):
      raise ValueError(
        f'{path} holds {run_id!r}, not a wandb run id (letters, digits, _ and -): '
        'fix or remove it (removing it starts a new wandb run)'
      )
    return run_id
  run_id = ''.join(secrets.choice(string.ascii_lowercase + string.digits) for _ in range(8))
  os.makedirs(workdir, exist_ok=True)
  with open(f'{path}.tmp', 'w') as f:
    f.write(run_id + '\n')
  os.replace(f'{path}.tmp', path)
  return run_id


def _scalar(value: Any) -> float | int:
  array = np.asarray(value)
  if array.size != 1:
    raise ValueError(f'a scalar was expected, got an array of shape {array.shape}')
  item = array.reshape(()).item()
  return item if isinstance(item, int | float) else float(item)


def _uint8_image(image: np.ndarray) -> np.ndarray:
  """(H, W, C) floats in [0, 1] or uint8 -> (H, W[, 3]) uint8 (one channel: greyscale)."""
  image = np.asarray(image)
  if image.dtype != np.uint8:
    image = (np.clip(image.astype(np.float32), 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
  return image[..., 0] if image.ndim == 3 and image.shape[-1] == 1 else image


class WandbWriter(metric_writers.MetricWriter):
  """A clu MetricWriter that logs to one wandb run.

  Attributes:
    run: the wandb Run being written.
  """

  def __init__(self, run: Any, wandb_module: Any):
    """Wraps a started run.

    Args:
      run: the object `wandb.init` returned.
      wandb_module: the imported `wandb` (for its media types; imported by the caller only when
        wandb is configured).
    """
    self.run = run
    self._wandb = wandb_module

  def write_scalars(self, step: int, scalars: Mapping[str, Any]) -> None:
    self.run.log({k: _scalar(v) for k, v in scalars.items()}, step=int(step))

  def write_images(self, step: int, images: Mapping[str, Any]) -> None:
    logged = {}
    for key, value in images.items():
      batch = np.asarray(value)
      batch = batch[None] if batch.ndim == 3 else batch  # [H, W, C] or [N, H, W, C]
      logged[key] = [self._wandb.Image(_uint8_image(image)) for image in batch]
    self.run.log(logged, step=int(step))

  def write_texts(self, step: int, texts: Mapping[str, str]) -> None:
    logged = {k: self._wandb.Html(f'<pre>{html.escape(str(v))}</pre>') for k, v in texts.items()}
    self.run.log(logged, step=int(step))

  def write_histograms(
    self, step: int, arrays: Mapping[str, Any], num_buckets: Mapping[str, int] | None = None
  ) -> None:
    logged = {}
    for key, value in arrays.items():
      bins = min(int((num_buckets or {}).get(key, 64)), 512)  # wandb's limit is 512 bins
      logged[key] = self._wandb.Histogram(np.asarray(value, np.float64).ravel(), num_bins=bins)
    self.run.log(logged, step=int(step))

  def write_hparams(self, hparams: Mapping[str, Any]) -> None:
    self.run.config.update(dict(hparams), allow_val_change=True)

  def write_summaries(self, step, values, metadata=None) -> None:
    del step, values, metadata  # TensorBoard only

  def write_videos(self, step, videos) -> None:
    del step, videos  # TensorBoard only (wandb.Video needs moviepy to encode)

  def write_audios(self, step, audios, *, sample_rate) -> None:
    del step, audios, sample_rate  # TensorBoard only

  def flush(self) -> None:
    pass  # wandb streams each log call to its service process

  def close(self) -> None:
    self.run.finish()


def maybe_wandb_writer(config: ml_collections.ConfigDict, workdir: str) -> WandbWriter | None:
  """A WandbWriter when `config.wandb.project` is set (on process 0), else None.

  Args:
    config: the experiment config; its `wandb` section has `project` ('' = off), `entity`,
      `name` ('' = wandb's defaults) and `tags`.
    workdir: the run's workdir (keeps the wandb run id, and wandb's files unless WANDB_DIR is set).

  Returns:
    The writer, or None when wandb is off, or on processes other than 0 of a multi-host run.

  Raises:
    ImportError: wandb is configured but not installed.
  """
  section = config.wandb
  if not section.project:
    return None
  if jax.process_index() != 0:
    return None
  try:
    import wandb  # noqa: PLC0415 (optional dependency: imported only when a project is set)
  except ImportError as e:
    raise ImportError(
      f'config.wandb.project={section.project!r} needs wandb: pip install wandb==0.30.0 '
      "(or set --config.wandb.project='')"
    ) from e
  run_id = read_or_create_run_id(workdir)
  kwargs = {}
  if not os.environ.get('WANDB_DIR'):
    kwargs['dir'] = workdir
  run = wandb.init(
    project=section.project,
    entity=section.entity or None,
    name=section.name or None,
    tags=list(section.tags) or None,
    id=run_id,
    resume='allow',
    **kwargs,
  )
  return WandbWriter(run, wandb)
