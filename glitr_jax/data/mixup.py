"""Mixup / CutMix on device, with timm's batch-mode semantics (as the official GliTr teachers use).

One draw per batch: with probability `prob` the batch is mixed with itself flipped along the batch
axis, by CutMix (probability `switch_prob` when both are on; lambda ~ Beta(cutmix, cutmix), one box
shared by all frames, lambda corrected to the box's exact area) or Mixup (lambda ~
Beta(mixup, mixup)). Targets are label-smoothed one-hots mixed the same way:
`off = smoothing / C`, `on = 1 - smoothing + off`, `targets = lam * y + (1 - lam) * y_flipped`.
"""

from typing import Any

import jax
import jax.numpy as jnp

_NOT_GIVEN: Any = object()


def smooth_one_hot(labels_b: jax.Array, num_classes: int, label_smoothing: float) -> jax.Array:
  """timm's smoothed one-hot, float32 (b, C): `1 - s + s / C` on the label, `s / C` elsewhere."""
  off = label_smoothing / num_classes
  on = 1.0 - label_smoothing + off
  return jax.nn.one_hot(labels_b, num_classes, dtype=jnp.float32) * (on - off) + off


def cutmix_box(
  rng: jax.Array, lam: jax.Array, height: int, width: int
) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
  """timm's `rand_bbox`: a box of sides int(H sqrt(1 - lam)), int(W sqrt(1 - lam)) around a
  uniformly drawn centre, clipped to the frame.

  Returns:
    (top, bottom, left, right) int32 scalars; rows top..bottom-1 and columns left..right-1.
  """
  ratio = jnp.sqrt(1.0 - lam)
  cut_h = jnp.floor(height * ratio).astype(jnp.int32)
  cut_w = jnp.floor(width * ratio).astype(jnp.int32)
  key_y, key_x = jax.random.split(rng)
  cy = jax.random.randint(key_y, (), 0, height)
  cx = jax.random.randint(key_x, (), 0, width)
  top = jnp.clip(cy - cut_h // 2, 0, height)
  bottom = jnp.clip(cy + cut_h // 2, 0, height)
  left = jnp.clip(cx - cut_w // 2, 0, width)
  right = jnp.clip(cx + cut_w // 2, 0, width)
  return top, bottom, left, right


def mixup_cutmix(
  rng: jax.Array,
  video_bthwc: jax.Array,
  labels_b: jax.Array,
  *,
  num_classes: int,
  mixup_alpha: float,
  cutmix_alpha: float,
  prob: float,
  switch_prob: float,
  label_smoothing: float,
  soft: jax.Array | None = _NOT_GIVEN,
) -> tuple[jax.Array, jax.Array] | tuple[jax.Array, jax.Array, jax.Array | None]:
  """Mixes a batch with its flip (timm's Mixup, mode 'batch'); jit-able, pure.

  Args:
    rng: a PRNG key (one draw for the whole batch).
    video_bthwc: float (b, T, H, W, C).
    labels_b: int (b,) class indices.
    num_classes: C.
    mixup_alpha: Beta parameter of Mixup (0 = off).
    cutmix_alpha: Beta parameter of CutMix (0 = off).
    prob: probability that the batch is mixed at all.
    switch_prob: probability of CutMix rather than Mixup when both are on.
    label_smoothing: folded into the targets.
    soft: optional per-example soft targets (b, K) (e.g. an offline model's outputs) to mix
      with the same lambda and flip: `lam * soft + (1 - lam) * soft[::-1]`. When this argument
      is passed (None included), a third output is returned.

  Returns:
    (mixed video (b, T, H, W, C) of the input's dtype, targets float32 (b, C) whose rows sum
    to one), plus the mixed `soft` (or None) when `soft` was passed.
  """
  targets = smooth_one_hot(labels_b, num_classes, label_smoothing)
  if mixup_alpha <= 0 and cutmix_alpha <= 0:
    return (video_bthwc, targets) if soft is _NOT_GIVEN else (video_bthwc, targets, soft)
  key_apply, key_switch, key_mix, key_cut, key_box = jax.random.split(rng, 5)
  apply = jax.random.uniform(key_apply) < prob
  if mixup_alpha > 0 and cutmix_alpha > 0:
    use_cutmix = jax.random.uniform(key_switch) < switch_prob
  else:
    use_cutmix = jnp.asarray(cutmix_alpha > 0)
  lam_mix = (
    jax.random.beta(key_mix, mixup_alpha, mixup_alpha) if mixup_alpha > 0 else jnp.float32(1.0)
  )
  lam_cut = (
    jax.random.beta(key_cut, cutmix_alpha, cutmix_alpha) if cutmix_alpha > 0 else jnp.float32(1.0)
  )
  lam = jnp.where(use_cutmix, lam_cut, lam_mix).astype(jnp.float32)
  lam = jnp.where(apply, lam, 1.0)
  use_cutmix = apply & use_cutmix

  height, width = video_bthwc.shape[2], video_bthwc.shape[3]
  top, bottom, left, right = cutmix_box(key_box, lam, height, width)
  flipped = video_bthwc[::-1]

  def cut(_):
    rows = (jnp.arange(height) >= top) & (jnp.arange(height) < bottom)
    cols = (jnp.arange(width) >= left) & (jnp.arange(width) < right)
    inside = (rows[:, None] & cols[None, :])[None, None, :, :, None]
    area = (bottom - top) * (right - left)
    box_lam = 1.0 - area.astype(jnp.float32) / (height * width)
    return jnp.where(inside, flipped, video_bthwc), box_lam

  def mix(_):
    mixed = lam * video_bthwc + (1.0 - lam) * flipped
    return mixed.astype(video_bthwc.dtype), lam

  video, lam = jax.lax.cond(use_cutmix, cut, mix, None)
  targets = lam * targets + (1.0 - lam) * targets[::-1]
  if soft is _NOT_GIVEN:
    return video, targets
  if soft is not None:
    soft = (lam * soft + (1.0 - lam) * soft[::-1]).astype(soft.dtype)
  return video, targets, soft
