r"""Precomputes the offline model's logits once per video, for `offline.mode='precomputed'`.

  python -m glitr_jax.tools.precompute_offline_logits --config=configs/ssv2_teacher.py \
      --config.offline.checkpoint=videomae_vitb_ssv2_ft.pth --out=videomae_ssv2_train.npz \
      [--split=train] [--batch_size=64]
  python main.py --config=configs/ssv2_teacher.py --workdir=$WORKDIR \
      --config.offline.mode=precomputed --config.data.offline_logits=videomae_ssv2_train.npz ...

VideoMAE (`config.offline`) runs once over every video of the split on the evaluation clip
(`config.offline.videomae.num_frames` frames sampled at the centres of equal segments, short side
resized to `data.eval_short_side`, centre crop to `offline.videomae.image_size`, ImageNet
normalisation), on this host's devices. The output `.npz` holds `video_ids` (N,) str and `logits`
(N, C) float32, one row per video (padding dropped); the data pipeline joins it by video id
(`data.offline_logits`).

Trade-off against `offline.mode='on_the_fly'` (glitr_jax/offline.py): VideoMAE's cost is paid once
instead of a ViT-B forward over 1568 tokens in every teacher step, but the target is VideoMAE's
prediction on a deterministic centred clip, not on the augmented (and mixed) clip the teacher
sees, which the official recipe uses; it also differs from VideoMAE's own multi-view test protocol
(2 temporal x 3 spatial views).
"""

import os
from collections.abc import Callable, Iterable, Mapping

import jax
import ml_collections
import numpy as np
import tqdm
from absl import app, flags, logging
from ml_collections import config_flags

from glitr_jax import data as data_lib
from glitr_jax import offline, sharding

FLAGS = flags.FLAGS


def compute_offline_logits(
  logits_fn: Callable[[np.ndarray], np.ndarray],
  batches: Iterable[Mapping[str, np.ndarray]],
  *,
  total: int | None = None,
  progress: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
  """Runs `logits_fn` over the batches and keeps one row per video.

  Args:
    logits_fn: host (b, T, H, W, 3) float32 clips -> (b, C) logits.
    batches: dicts with `video` (b, T, H, W, 3), `mask` bool (b,) (False = padding) and
      `video_id` str (b,), as glitr_jax.data.create_eval_iterator yields them.
    total: number of batches, for the progress bar (default: len(batches) when it has one).
    progress: show a progress bar.

  Returns:
    video_ids (N,) str and logits (N, C) float32, in the order first seen. Padding rows are
    dropped, and a video id seen again keeps its first row (the join needs one row per id).
  """
  if total is None and hasattr(batches, '__len__'):
    total = len(batches)
  video_ids: list[str] = []
  rows: list[np.ndarray] = []
  seen: set[str] = set()
  repeated = 0
  for batch in tqdm.tqdm(
    batches, total=total, desc='offline logits', unit='batch', disable=not progress
  ):
    mask_b = np.asarray(batch['mask'], bool)
    if not mask_b.any():
      continue
    logits_bc = np.asarray(logits_fn(np.asarray(batch['video'], np.float32)), np.float32)
    if logits_bc.ndim != 2 or logits_bc.shape[0] != mask_b.shape[0]:
      raise ValueError(f'logits of shape {logits_bc.shape} for a batch of {mask_b.shape[0]} clips')
    for video_id, row_c, keep in zip(np.asarray(batch['video_id']), logits_bc, mask_b):
      video_id = video_id.decode() if isinstance(video_id, bytes) else str(video_id)
      if not keep:
        continue
      if video_id in seen:
        repeated += 1
        continue
      seen.add(video_id)
      video_ids.append(video_id)
      rows.append(row_c)
  if repeated:
    logging.warning('%d repeated video id(s) kept their first logits', repeated)
  if not rows:
    raise ValueError('no video to compute logits for (every batch was padding)')
  return np.asarray(video_ids, dtype=str), np.stack(rows).astype(np.float32)


def save_offline_logits(path: str, video_ids: np.ndarray, logits: np.ndarray) -> None:
  """Writes `video_ids` (N,) str and `logits` (N, C) float32 to `path` (.npz), atomically."""
  video_ids = np.asarray(video_ids, dtype=str)
  logits = np.asarray(logits, np.float32)
  if video_ids.ndim != 1 or logits.ndim != 2 or len(video_ids) != len(logits):
    raise ValueError(f'video_ids {video_ids.shape} and logits {logits.shape} do not pair up')
  directory = os.path.dirname(os.path.abspath(path))
  os.makedirs(directory, exist_ok=True)
  tmp = f'{path}.tmp'
  with open(tmp, 'wb') as f:  # A file object: np.savez would append '.npz' to a name.
    np.savez(f, video_ids=video_ids, logits=logits)
  os.replace(tmp, path)


def sharded_logits_fn(
  model: offline.OfflineModel, devices: list[jax.Device] | None = None
) -> Callable[[np.ndarray], np.ndarray]:
  """Host clips -> host logits, the batch split over `devices` (default: this host's)."""
  mesh = sharding.make_mesh(None, jax.local_devices() if devices is None else devices)
  params = sharding.replicate(model.params, mesh)
  step = jax.jit(
    model.logits_fn,
    in_shardings=(sharding.replicated(mesh), sharding.batch_sharding(mesh)),
    out_shardings=sharding.replicated(mesh),
  )

  def fn(video_bthwc: np.ndarray) -> np.ndarray:
    sharding.check_batch_size(video_bthwc.shape[0], mesh, field='--batch_size')
    return np.asarray(jax.device_get(step(params, video_bthwc)))

  return fn


def precompute(
  config: ml_collections.ConfigDict,
  out: str,
  *,
  split: str | None = None,
  batch_size: int | None = None,
  max_examples: int = -1,
  progress: bool = True,
) -> int:
  """Writes the offline logits of every video of `split` to `out`.

  Args:
    config: an experiment config (`offline.*` and `data.*` are read).
    out: the .npz to write.
    split: default `data.train_split` (the split the teacher trains on).
    batch_size: clips per forward (a multiple of this host's device count); default
      `eval.batch_size`.
    max_examples: > 0: only the split's first examples (quick checks).
    progress: show a progress bar.

  Returns:
    The number of videos written.
  """
  model = offline.build_offline_model(config, teacher_clip=False)
  split = split or config.data.train_split
  batch_size = batch_size or config.eval.batch_size
  batches = data_lib.create_eval_iterator(
    config.data,
    batch_size=batch_size,
    num_frames=model.module.num_frames,
    image_size=model.module.image_size,
    split=split,
    process_index=0,
    process_count=1,
    max_examples=max_examples,
  )
  video_ids, logits = compute_offline_logits(sharded_logits_fn(model), batches, progress=progress)
  save_offline_logits(out, video_ids, logits)
  logging.info(
    'Wrote the logits of %d videos of %r (%d classes) to %s',
    len(video_ids),
    split,
    logits.shape[1],
    out,
  )
  return len(video_ids)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  precompute(
    FLAGS.config,
    FLAGS.out,
    split=FLAGS.split,
    batch_size=FLAGS.batch_size,
    max_examples=FLAGS.max_examples,
  )


if __name__ == '__main__':
  config_flags.DEFINE_config_file('config', None, 'Teacher config (configs/*.py[:arg]).')
  flags.DEFINE_string('out', None, 'The .npz to write (video_ids, logits).')
  flags.DEFINE_string('split', None, 'Dataset split (default: data.train_split).')
  flags.DEFINE_integer(
    'batch_size',
    None,
    'Clips per forward (default: eval.batch_size); lower it if memory runs out (ViT-B attention '
    'over 1568 tokens holds B x 12 x 1568^2 float32 logits per block).',
  )
  flags.DEFINE_integer('max_examples', -1, '> 0: only the first examples of the split.')
  flags.mark_flags_as_required(['config', 'out'])
  app.run(main)
