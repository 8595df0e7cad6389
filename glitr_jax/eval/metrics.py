"""What the evaluation counts: per-t correctness, early exit, glimpse-location histograms, sensing.

The counting functions run inside the jitted evaluation step on one (padded) global batch and
return integer sums over its real examples (mask True), so a split that the batch size does not
divide is counted exactly (big_vision's evaluators/classification.py pattern). The host adds the
sums over batches and divides once at the end.
"""

import jax
import jax.numpy as jnp


def correct_per_t(logits_btc: jax.Array, labels_b: jax.Array, mask_b: jax.Array) -> jax.Array:
  """(T,) int32: how many real examples are classified correctly after each t.

  Args:
    logits_btc: (B, T, C) online logits, y_t from observations 1..t.
    labels_b: (B,) true classes.
    mask_b: (B,) bool, False for padding.
  """
  correct_bt = jnp.argmax(logits_btc, axis=-1) == labels_b[:, None]
  return jnp.sum(correct_bt & mask_b[:, None], axis=0, dtype=jnp.int32)


def exit_steps(logits_btc: jax.Array, gammas_g: jax.Array) -> jax.Array:
  """(G, B) int32: the 0-based t at which each video stops for each threshold (paper Fig. 9).

  A video stops at its first t whose max softmax probability exceeds gamma (strictly), and at the
  last t when it never does: gamma >= 1 uses all T glimpses, gamma = 0 stops after the first.
  """
  t = logits_btc.shape[1]
  confidence_bt = jnp.max(jax.nn.softmax(logits_btc.astype(jnp.float32), axis=-1), axis=-1)
  exceeds_gbt = confidence_bt[None] > gammas_g[:, None, None]
  first_gb = jnp.argmax(exceeds_gbt, axis=-1).astype(jnp.int32)
  return jnp.where(jnp.any(exceeds_gbt, axis=-1), first_gb, t - 1)


def early_exit_counts(
  logits_btc: jax.Array, labels_b: jax.Array, mask_b: jax.Array, gammas_g: jax.Array
) -> tuple[jax.Array, jax.Array]:
  """Early-exit sums over the real examples, for each threshold.

  Args:
    logits_btc: (B, T, C) online logits.
    labels_b: (B,) true classes.
    mask_b: (B,) bool, False for padding.
    gammas_g: (G,) confidence thresholds.

  Returns:
    correct (G,) int32: videos whose prediction at their exit step is right; glimpses (G,) int32:
    the number of glimpses they observed (exit step + 1), summed.
  """
  stop_gb = exit_steps(logits_btc, gammas_g)
  correct_bt = jnp.argmax(logits_btc, axis=-1) == labels_b[:, None]
  correct_gb = jnp.take_along_axis(correct_bt[None], stop_gb[..., None], axis=-1)[..., 0]
  correct_g = jnp.sum(correct_gb & mask_b[None], axis=-1, dtype=jnp.int32)
  glimpses_g = jnp.sum(jnp.where(mask_b[None], stop_gb + 1, 0), axis=-1, dtype=jnp.int32)
  return correct_g, glimpses_g


def location_histogram(locations_bt2: jax.Array, mask_b: jax.Array, bins: int) -> jax.Array:
  """(T, bins, bins) int32 counts of glimpse centres over the frame, for each t (paper Fig. 6).

  Rows follow ly (pointing down, row 0 at the top of the frame), columns lx, both binned evenly
  over [-1, 1]; centres off the frame (locations are not clamped) count in the nearest edge bin
  (`outside_frame` counts them separately).
  """
  cell_bt2 = jnp.clip(jnp.floor((locations_bt2 + 1.0) * 0.5 * bins), 0, bins - 1).astype(jnp.int32)
  flat_bt = cell_bt2[..., 1] * bins + cell_bt2[..., 0]
  onehot_btk = jax.nn.one_hot(flat_bt, bins * bins, dtype=jnp.int32) * mask_b[:, None, None]
  return jnp.sum(onehot_btk, axis=0).reshape(-1, bins, bins)


def outside_frame(locations_bt2: jax.Array, mask_b: jax.Array) -> jax.Array:
  """(T,) int32: real examples whose glimpse centre lies off the frame (|l| > 1) at each t."""
  off_bt = jnp.any(jnp.abs(locations_bt2) > 1.0, axis=-1)
  return jnp.sum(off_bt & mask_b[:, None], axis=0, dtype=jnp.int32)


def sensing_cost(num_frames: int, glimpse_pixels: int, frame_hw: tuple[int, int]) -> dict:
  """Pixels observed per video (paper Table 1's #pixels): one g x g glimpse per frame.

  Returns:
    {glimpse_pixels_per_video: T * g^2, full_frame_pixels_per_video: T * H * W,
     glimpse_fraction: g^2 / (H * W), glimpse_size: g, num_frames: T, frame_size: [H, W]}.
  """
  h, w = frame_hw
  g = int(glimpse_pixels)
  return {
    'glimpse_pixels_per_video': int(num_frames) * g * g,
    'full_frame_pixels_per_video': int(num_frames) * int(h) * int(w),
    'glimpse_fraction': g * g / float(h * w),
    'glimpse_size': g,
    'num_frames': int(num_frames),
    'frame_size': [int(h), int(w)],
  }
