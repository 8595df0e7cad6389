"""The offline model behind the SSv2 teacher's L_dist (docs/design.md 2.2), and L_dist itself.

L_dist = kl(y~_T, y_offline): the teacher's prediction after its last frame against the logits of
an offline full-video model, VideoMAE ViT-B/16 fine-tuned on SSv2 (glitr_jax.models.videomae),
with the official KL direction and no temperature. `config.offline` chooses where y_offline comes
from (`offline.mode`):

  on_the_fly    (the official recipe) VideoMAE runs inside the teacher's train step, under
                stop_gradient, on the very clip the teacher sees (augmented, mixed). Exact, but
                every step pays a ViT-B forward over 1568 tokens per clip (about 180 G
                multiply-adds, against about 75 G for the ViT-S teacher's forward over the same 16
                frames) and holds VideoMAE's weights (86M parameters) on every device.
  precomputed   `python -m glitr_jax.tools.precompute_offline_logits` runs VideoMAE once per video
                on deterministic centred clips (the evaluation transform) and writes an .npz that
                the data pipeline joins by video id (`data.offline_logits`). VideoMAE's cost is
                paid once, but its target no longer follows the teacher's augmentation (crop,
                RandAugment, erasing; mixup mixes the stored distributions like the labels): a
                departure from the official recipe.

`build_offline_model(config)` loads the checkpoint (`offline.checkpoint`) and returns its parameters
and a pure, jit-able `logits_fn(params, video_bthwc) -> (B, C)`; `dist_loss` is the L_dist both
modes share.
"""

import dataclasses
import os
from collections.abc import Callable
from typing import Any

import jax
import ml_collections

from glitr_jax import losses
from glitr_jax.convert import videomae as videomae_convert
from glitr_jax.models import videomae

Params = Any
MODELS = ('videomae',)


@dataclasses.dataclass(frozen=True)
class OfflineModel:
  """A loaded offline model.

  Attributes:
    module: the Flax module (its sizes: num_frames, image_size, num_classes, ...).
    params: its parameters (float32), the first argument of `logits_fn`.
    logits_fn: pure `(params, video_bthwc) -> logits_bc`: (B, T, H, W, 3) ImageNet-normalised
      float32 clips of `module.num_frames` frames of `module.image_size` px -> (B, C) float32
      logits, under stop_gradient. Jit it, or call it inside a jitted step.
  """

  module: videomae.VideoMAE
  params: Params
  logits_fn: Callable[[Params, jax.Array], jax.Array]

  @property
  def num_classes(self) -> int:
    return self.module.num_classes


def _check_sizes(config: ml_collections.ConfigDict, module: videomae.VideoMAE, teacher_clip: bool):
  if module.num_classes != config.model.num_classes:
    raise ValueError(
      f'offline.videomae.num_classes={module.num_classes} but model.num_classes='
      f'{config.model.num_classes}: L_dist compares the two distributions class by class'
    )
  if not teacher_clip:
    return
  for field in ('num_frames', 'image_size'):
    ours, theirs = getattr(module, field), config.model[field]
    if ours != theirs:
      raise ValueError(
        f'offline.videomae.{field}={ours} but model.{field}={theirs}: on the fly, VideoMAE sees '
        f"the teacher's clip (the official checkpoint takes 16 frames at 224 px); use "
        "offline.mode='precomputed' (python -m glitr_jax.tools.precompute_offline_logits) for "
        'other clips'
      )


def build_offline_model(
  config: ml_collections.ConfigDict, *, teacher_clip: bool = True
) -> OfflineModel:
  """Loads the offline model `config.offline` names.

  Args:
    config: an experiment config; reads `offline.model`, `offline.checkpoint`,
      `offline.videomae` (sizes, compute dtype) and `model.num_frames` / `image_size` /
      `num_classes`.
    teacher_clip: check that the teacher's clip is VideoMAE's input (on-the-fly mode). The
      precompute tool feeds VideoMAE clips of its own size and passes False.

  Returns:
    The module, its parameters and `logits_fn`.

  Raises:
    ValueError: an unknown `offline.model`, an empty `offline.checkpoint`, sizes that do not fit
      the teacher's, or a checkpoint whose keys do not match `offline.videomae` (listed).
    FileNotFoundError: `offline.checkpoint` does not exist.
  """
  kind = config.offline.model
  if kind not in MODELS:
    raise ValueError(f'offline.model={kind!r}: expected one of {MODELS} for L_dist')
  module = videomae.VideoMAE.from_config(config.offline.videomae)
  _check_sizes(config, module, teacher_clip)
  path = config.offline.checkpoint
  if not path:
    raise ValueError(
      'offline.checkpoint is empty: set it to the VideoMAE fine-tuned checkpoint (a transformers '
      'directory, .safetensors, .pth or .npz), e.g. --config.offline.checkpoint=videomae_ssv2'
    )
  if not os.path.exists(path):
    raise FileNotFoundError(f'offline.checkpoint={path}: not found')
  try:
    params = videomae_convert.load_videomae(path, module)['params']
  except ValueError as e:
    raise ValueError(f'offline.checkpoint={path}: {e}') from e

  def logits_fn(params: Params, video_bthwc: jax.Array) -> jax.Array:
    """(B, T, H, W, 3) normalised clips -> (B, C) float32 logits, a stop-gradient target."""
    return jax.lax.stop_gradient(module.apply({'params': params}, video_bthwc))

  return OfflineModel(module=module, params=params, logits_fn=logits_fn)


def dist_loss(teacher_logits_btc: jax.Array, offline_logits_bc: jax.Array) -> jax.Array:
  """L_dist = kl(y~_T, y_offline) (docs/design.md 2.2), averaged over the batch.

  kl(s, t) = sum_c softmax(s) * (log_softmax(s) - log_softmax(t)): KL(teacher || offline), the
  official direction, on the teacher's last step only, no temperature.

  Args:
    teacher_logits_btc: (B, T, C) the teacher's logits at every step.
    offline_logits_bc: (B, C) the offline model's logits (a stop-gradient target).

  Returns:
    Scalar float32 loss; zero when the teacher's last logits equal the offline ones (up to a
    per-example constant).
  """
  return losses.kl(teacher_logits_btc[:, -1], offline_logits_bc)
