"""The training augmentation on the accelerator (`data.augment.device=True`), inside the train step.

The host (`glitr_jax.data.clips.device_train_clip`) samples and decodes a clip's frames into a
uint8 canvas of a fixed size (T, Hc, Wc, 3), the frames in its top-left corner (the clip's valid
`extent` (h, w)), and draws every random choice of the recipe with the clip's generator, exactly
as the PIL path draws them (docs/design.md section 4.3). This module applies those draws to a
batch: RandAugment's layers, the random-resized crop (bilinear, straight to S x S), ImageNet
normalisation and cube random erasing. Every function is pure jnp of (frames, per-clip
parameters) with the batch axis leading (per-clip functions vmapped over it), so under a sharded
batch each device augments its own clips.

Between RandAugment's ops the frames stay uint8; each op computes in float32 (or int32) and
rounds as PIL rounds its uint8 results, so each op agrees with PIL up to float rounding where a
result falls on an integer boundary (the test file states and checks the tolerances,
tests/data_device_augment_test.py). RandAugment's ops reduce to PIL primitives (`KIND_*` in
glitr_jax/data/rand_augment.py, whose `device_params` turns a draw into these arrays):

  affine      Rotate, ShearX/Y, TranslateX/YRel: `Image.transform(AFFINE, BICUBIC, fill=128)`.
  lut         Invert, Posterize, Solarize, SolarizeAdd: a fixed 256-entry table.
  autocontrast, equalize: per frame and channel tables from the frame's own histogram.
  color, contrast, brightness, sharpness: `Image.blend(degenerate, frame, factor)`.

A layer computes every kind for every clip and selects each clip's (a batched switch); kinds
that no clip of the batch draws in that layer are skipped.

Batch entries (B clips, L = RandAugment's num_layers, 0 without it; see `PARAM_KEYS`):
  frames      uint8 (B, T, Hc, Wc, 3)
  extent      int32 (B, 2): the valid (h, w) in the canvas
  crop_box    float32 (B, 4): (top, left, height, width) of the crop, canvas pixels
  erase_box   int32 (B, 5): (apply, top, left, height, width) in output pixels
  ra_kind     int32 (B, L); ra_affine float32 (B, L, 6); ra_factor float32 (B, L);
  ra_lut      uint8 (B, L, 256)
"""

import jax
import jax.numpy as jnp

from glitr_jax import pixels
from glitr_jax.data import rand_augment as ra

PARAM_KEYS = (
  'frames',
  'extent',
  'crop_box',
  'erase_box',
  'ra_kind',
  'ra_affine',
  'ra_factor',
  'ra_lut',
)
_FILL = float(ra.FILL[0])
_EDGE = 1e-3  # px: a source point this close to the frame's border is on it
_BLEND_KINDS = (ra.KIND_COLOR, ra.KIND_CONTRAST, ra.KIND_BRIGHTNESS, ra.KIND_SHARPNESS)
_TABLE_KINDS = (ra.KIND_LUT, ra.KIND_AUTOCONTRAST, ra.KIND_EQUALIZE)
# ImageFilter.SMOOTH: (1 1 1; 1 5 1; 1 1 1) / 13 in float32, as PIL's C filter holds it.
# Plain floats, not a jnp array: an array made at import would start JAX's backend before
# jax.distributed.initialize (multi-process runs must initialise first).
_SMOOTH = tuple(tuple(w / 13.0 for w in row) for row in ((1, 1, 1), (1, 5, 1), (1, 1, 1)))


def _valid_hw(extent_2: jax.Array, height: int, width: int) -> jax.Array:
  """bool (Hc, Wc): the clip's frames inside the canvas."""
  rows = jnp.arange(height)[:, None] < extent_2[0]
  cols = jnp.arange(width)[None, :] < extent_2[1]
  return rows & cols


def _to_uint8_trunc(v: jax.Array) -> jax.Array:
  """PIL's float -> UINT8 of blends and bicubic samples: 0 below 0, 255 above 255, else trunc."""
  return jnp.where(v <= 0.0, 0.0, jnp.where(v >= 255.0, 255.0, jnp.floor(v)))


def _cubic(v1, v2, v3, v4, d):
  """PIL's BICUBIC macro (Geometry.c): Keys' cubic convolution with a = -1, in its nested form."""
  p2 = -v1 + v3
  p3 = 2.0 * (v1 - v2) + v3 - v4
  p4 = -v1 + v2 - v3 + v4
  return v2 + d * (p2 + d * (p3 + d * p4))


def affine_bicubic(frames_thwc: jax.Array, extent_2: jax.Array, matrix_6: jax.Array) -> jax.Array:
  """`Image.transform(size, AFFINE, matrix, BICUBIC, fillcolor=128)` on every frame of a clip.

  Output pixel (x, y) samples the source at (a x' + b y' + c, d x' + e y' + f), x' = x + 0.5,
  y' = y + 0.5; a source point outside [0, w) x [0, h) gives the fill; inside, the 4 x 4 taps
  around it are clamped to the frame (Geometry.c's affine_transform and bicubic_filter32RGB).

  Args:
    frames_thwc: uint8 (T, Hc, Wc, C); the frame is [:h, :w].
    extent_2: int32 (2,) the frame's (h, w).
    matrix_6: float32 (6,) PIL's (a, b, c, d, e, f), output -> source.

  Returns:
    uint8 (T, Hc, Wc, C) (outside the frame: unspecified).
  """
  t, height, width, channels = frames_thwc.shape
  h, w = extent_2[0], extent_2[1]
  a, b, c, d, e, f = (matrix_6[i] for i in range(6))
  yy = jnp.arange(height, dtype=jnp.float32)[:, None] + 0.5
  xx = jnp.arange(width, dtype=jnp.float32)[None, :] + 0.5
  src_x = a * xx + b * yy + c
  src_y = d * xx + e * yy + f
  # PIL decides in float64; float32 (with fused multiply-adds) misses by ~1e-5 px, which flips
  # points exactly on the border (e.g. y' - 0.2 x' = 0 at x' = 2.5): decide with a margin.
  inside = (src_x >= -_EDGE) & (src_x < w.astype(jnp.float32) - _EDGE)
  inside &= (src_y >= -_EDGE) & (src_y < h.astype(jnp.float32) - _EDGE)
  src_x, src_y = src_x - 0.5, src_y - 0.5
  x0, y0 = jnp.floor(src_x), jnp.floor(src_y)
  dx, dy = (src_x - x0).reshape(1, -1, 1), (src_y - y0).reshape(1, -1, 1)
  x0, y0 = x0.astype(jnp.int32) - 1, y0.astype(jnp.int32) - 1
  flat_tnc = frames_thwc.reshape(t, height * width, channels)
  cols = [jnp.clip(x0 + i, 0, w - 1) for i in range(4)]
  rows = []
  for j in range(4):
    row = jnp.clip(y0 + j, 0, h - 1) * width
    taps = [jnp.take(flat_tnc, (row + col).reshape(-1), axis=1).astype(jnp.float32) for col in cols]
    rows.append(_cubic(*taps, dx))
  out_tnc = _to_uint8_trunc(_cubic(*rows, dy))
  out_tnc = jnp.where(inside.reshape(1, -1, 1), out_tnc, _FILL)
  return out_tnc.reshape(t, height, width, channels).astype(jnp.uint8)


def _grey(frames_thwc: jax.Array) -> jax.Array:
  """int32 (T, Hc, Wc): PIL's RGB -> L, (19595 R + 38470 G + 7471 B + 0x8000) >> 16."""
  rgb = frames_thwc.astype(jnp.int32)
  return (rgb[..., 0] * 19595 + rgb[..., 1] * 38470 + rgb[..., 2] * 7471 + 0x8000) >> 16


def _smooth(frames_thwc: jax.Array, extent_2: jax.Array) -> jax.Array:
  """`image.filter(ImageFilter.SMOOTH)` of float32 whole-number frames: the 3 x 3 kernel,
  rounded; the frame's border rows and columns copied (Filter.c)."""
  _, height, width, _ = frames_thwc.shape
  padded = jnp.pad(frames_thwc, ((0, 0), (1, 1), (1, 1), (0, 0)), mode='edge')
  total = jnp.zeros_like(frames_thwc)
  for dy in (2, 1, 0):  # Filter.c adds the row below, the row, the row above, each a 1 x 3 sum.
    taps = [padded[:, dy : dy + height, dx : dx + width] * _SMOOTH[dy][dx] for dx in range(3)]
    total = total + ((taps[0] + taps[1]) + taps[2])
  smoothed = jnp.where(total <= 0.0, 0.0, jnp.where(total >= 255.0, 255.0, jnp.floor(total + 0.5)))
  rows = jnp.arange(height)[:, None]
  cols = jnp.arange(width)[None, :]
  border = (rows == 0) | (rows == extent_2[0] - 1) | (cols == 0) | (cols == extent_2[1] - 1)
  return jnp.where(border[None, :, :, None], frames_thwc, smoothed)


def _blend(frames_thwc, extent_2, kind, factor):
  """`Image.blend(degenerate, frame, factor)` for the Color, Contrast, Brightness and Sharpness
  kinds (ImageEnhance): float32 `degenerate + factor * (frame - degenerate)`, truncated; uint8."""
  frames_thwc = frames_thwc.astype(jnp.float32)
  valid = _valid_hw(extent_2, *frames_thwc.shape[1:3])
  grey_thw = _grey(frames_thwc)
  count = jnp.maximum(extent_2[0] * extent_2[1], 1)
  total_t = jnp.sum(jnp.where(valid, grey_thw, 0), axis=(1, 2))
  mean_t = (2 * total_t + count) // (2 * count)  # int(mean + 0.5), exactly
  degenerate = jnp.where(
    kind == ra.KIND_COLOR,
    grey_thw[..., None].astype(jnp.float32),
    jnp.where(
      kind == ra.KIND_CONTRAST,
      mean_t[:, None, None, None].astype(jnp.float32),
      jnp.where(kind == ra.KIND_SHARPNESS, _smooth(frames_thwc, extent_2), 0.0),
    ),
  )
  return _to_uint8_trunc(degenerate + factor * (frames_thwc - degenerate)).astype(jnp.uint8)


def _tables(frames_thwc, extent_2, kind, lut_256):
  """Per frame and channel 256-entry tables (T, C, 256) int32 of the table kinds, and the flat
  index of each pixel's entry (T, Hc, Wc, C)."""
  t, height, width, channels = frames_thwc.shape
  values = frames_thwc.astype(jnp.int32)
  valid = _valid_hw(extent_2, height, width)[None, :, :, None]
  plane = jnp.arange(t)[:, None, None, None] * channels + jnp.arange(channels)
  index = plane * 256 + values
  levels = jnp.arange(256, dtype=jnp.int32)
  # ImageOps.autocontrast (cutoff 0): lo..hi stretched to 0..255, floor(255 (v - lo) / (hi - lo)).
  lo = jnp.min(jnp.where(valid, values, 255), axis=(1, 2))[..., None]
  hi = jnp.max(jnp.where(valid, values, 0), axis=(1, 2))[..., None]
  stretched = jnp.clip((levels - lo) * 255 // jnp.maximum(hi - lo, 1), 0, 255)
  autocontrast = jnp.where(hi > lo, stretched, levels)
  # ImageOps.equalize: histogram -> (step // 2 + pixels below v) // step, step from all pixels
  # but those of the highest level; identity for one level or step 0. point() clips at 255.
  counts = jnp.zeros(t * channels * 256, jnp.int32)
  counts = counts.at[index.reshape(-1)].add(jnp.broadcast_to(valid, index.shape).reshape(-1))
  hist = counts.reshape(t, channels, 256)
  present = hist > 0
  top_level = 255 - jnp.argmax(present[..., ::-1], axis=-1)
  top_count = jnp.take_along_axis(hist, top_level[..., None], axis=-1)[..., 0]
  step = (jnp.sum(hist, axis=-1) - top_count) // 255
  below = jnp.cumsum(hist, axis=-1) - hist
  equalized = jnp.minimum((step[..., None] // 2 + below) // jnp.maximum(step, 1)[..., None], 255)
  keep = (jnp.sum(present, axis=-1) <= 1) | (step == 0)
  equalize = jnp.where(keep[..., None], levels, equalized)
  table = jnp.where(
    kind == ra.KIND_LUT,
    jnp.broadcast_to(lut_256.astype(jnp.int32), (t, channels, 256)),
    jnp.where(kind == ra.KIND_AUTOCONTRAST, autocontrast, equalize),
  )
  return table, index


def _apply_table(frames_thwc, extent_2, kind, lut_256):
  table, index = _tables(frames_thwc, extent_2, kind, lut_256)
  return jnp.take(table.reshape(-1), index).astype(jnp.uint8)


def rand_augment_layer(
  frames_bthwc: jax.Array,
  extent_b2: jax.Array,
  kind_b: jax.Array,
  affine_b6: jax.Array,
  factor_b: jax.Array,
  lut_b256: jax.Array,
) -> jax.Array:
  """One RandAugment layer: each clip's op (`kind_b`, `ra.KIND_NONE` = skipped) on all its frames.

  Args:
    frames_bthwc: uint8 (B, T, Hc, Wc, 3).
    extent_b2: int32 (B, 2) valid (h, w).
    kind_b: int32 (B,) the op kind.
    affine_b6: float32 (B, 6) the affine kinds' matrix.
    factor_b: float32 (B,) the blend kinds' factor.
    lut_b256: uint8 (B, 256) the fixed table of `ra.KIND_LUT`.

  Returns:
    uint8 (B, T, Hc, Wc, 3).
  """

  def when_drawn(kinds, fn):
    # A kind no clip of the batch draws in this layer is not computed.
    drawn = jnp.any(jnp.isin(kind_b, jnp.asarray(kinds)))
    return jax.lax.cond(drawn, fn, lambda: frames_bthwc)

  affine = when_drawn(
    (ra.KIND_AFFINE,),
    lambda: jax.vmap(affine_bicubic)(frames_bthwc, extent_b2, affine_b6),
  )
  blended = when_drawn(
    _BLEND_KINDS,
    lambda: jax.vmap(_blend)(frames_bthwc, extent_b2, kind_b, factor_b),
  )
  looked_up = when_drawn(
    _TABLE_KINDS,
    lambda: jax.vmap(_apply_table)(frames_bthwc, extent_b2, kind_b, lut_b256),
  )
  kind = kind_b[:, None, None, None, None]
  out = jnp.where(kind == ra.KIND_AFFINE, affine, frames_bthwc)
  out = jnp.where(jnp.isin(kind, jnp.asarray(_BLEND_KINDS)), blended, out)
  return jnp.where(jnp.isin(kind, jnp.asarray(_TABLE_KINDS)), looked_up, out)


def _bilinear_taps(start, length, out_size: int, limit):
  """Rows (or columns) of `transforms.resize_bilinear` on the crop [start, start + length):
  source (i + 0.5) length / out - 0.5 clamped at 0 (align_corners=False), neighbours clamped to
  the crop's last pixel and the frame.

  Returns:
    (lo, hi) int32 (out_size,) and the weight of hi, float32 (out_size,).
  """
  rel = (jnp.arange(out_size, dtype=jnp.float32) + 0.5) * (length / out_size) - 0.5
  src = start + jnp.maximum(rel, 0.0)
  last = jnp.minimum(jnp.floor(start + length - 1.0), limit - 1.0)
  lo = jnp.minimum(jnp.floor(src), last)
  hi = jnp.minimum(lo + 1.0, last)
  return lo.astype(jnp.int32), hi.astype(jnp.int32), src - lo


def resized_crop(
  frames_thwc: jax.Array, extent_2: jax.Array, box_4: jax.Array, out_size: int
) -> jax.Array:
  """The crop `box_4` (top, left, height, width) of every frame resized (bilinear, no antialias)
  straight to out_size x out_size, as `transforms.random_resized_crop` does on the host.

  Args:
    frames_thwc: uint8 (T, Hc, Wc, C).
    extent_2: int32 (2,) the frame's (h, w).
    box_4: float32 (4,) in canvas pixels.
    out_size: S.

  Returns:
    float32 (T, S, S, C) in pixel units 0..255.
  """
  extent = extent_2.astype(jnp.float32)
  lo, hi, frac = _bilinear_taps(box_4[0], box_4[2], out_size, extent[0])
  rows = jnp.take(frames_thwc, lo, axis=1).astype(jnp.float32) * (1.0 - frac)[None, :, None, None]
  rows = rows + jnp.take(frames_thwc, hi, axis=1).astype(jnp.float32) * frac[None, :, None, None]
  lo, hi, frac = _bilinear_taps(box_4[1], box_4[3], out_size, extent[1])
  out = jnp.take(rows, lo, axis=2) * (1.0 - frac)[None, None, :, None]
  return out + jnp.take(rows, hi, axis=2) * frac[None, None, :, None]


def erase(video_bthwc: jax.Array, box_b5: jax.Array, rng: jax.Array) -> jax.Array:
  """Random erasing in cube mode: each clip whose box applies gets fresh N(0, 1) noise in it, in
  every frame (`transforms.random_erase_cube` draws the box on the host).

  Args:
    video_bthwc: normalised float32 (B, T, S, S, C).
    box_b5: int32 (B, 5) (apply, top, left, height, width).
    rng: a PRNG key for the noise.
  """
  _, _, height, width, _ = video_bthwc.shape
  apply, top, left, h, w = (box_b5[:, i, None, None] for i in range(5))
  rows = jnp.arange(height)[None, :, None]
  cols = jnp.arange(width)[None, None, :]
  inside = (apply > 0) & (rows >= top) & (rows < top + h) & (cols >= left) & (cols < left + w)
  noise = jax.random.normal(rng, video_bthwc.shape, video_bthwc.dtype)
  return jnp.where(inside[:, None, :, :, None], noise, video_bthwc)


def augment_batch(
  batch: dict[str, jax.Array], rng: jax.Array, *, image_size: int, random_erasing: bool
) -> jax.Array:
  """A batch's training clips from the host's canvases and draws (module docstring).

  Args:
    batch: the entries of `PARAM_KEYS` (others are ignored).
    rng: a PRNG key (erasing noise only; every other choice was drawn on the host).
    image_size: S, the side of the output frames.
    random_erasing: whether `data.augment.random_erasing` > 0 (False skips the erasing).

  Returns:
    float32 (B, T, S, S, 3), ImageNet-normalised.
  """
  frames = batch['frames']
  extent = batch['extent']
  layers = batch['ra_kind'].shape[1]
  for layer in range(layers):
    frames = rand_augment_layer(
      frames,
      extent,
      batch['ra_kind'][:, layer],
      batch['ra_affine'][:, layer],
      batch['ra_factor'][:, layer],
      batch['ra_lut'][:, layer],
    )
  crop = jax.vmap(resized_crop, in_axes=(0, 0, 0, None))
  video = crop(frames, extent, batch['crop_box'], image_size)
  scale = jnp.asarray(1.0 / (255.0 * pixels.IMAGENET_STD), jnp.float32)
  video = video * scale - jnp.asarray(pixels.IMAGENET_MEAN / pixels.IMAGENET_STD, jnp.float32)
  if random_erasing:
    video = erase(video, batch['erase_box'], rng)
  return video
