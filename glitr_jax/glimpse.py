"""Glimpses: the differentiable bilinear crop, its position embeddings, and its footprint.

Official semantics (docs/design.md 1.3): a location l = (lx, ly) is in normalised frame
coordinates, +-1 being the centres of the corner pixels (`align_corners=True`), lx horizontal, ly
vertical pointing down. A glimpse of g x g pixels is PyTorch's
`grid_sample(frame, affine_grid([[s, 0, lx], [0, s, ly]]), align_corners=True)` with zero padding,
s = g / W horizontally (g / H vertically): s = n / 14 for n-patch glimpses of 224-px frames.
Locations are not clamped; samples off the frame read zeros.

Because the sampling grid is axis-aligned, bilinear sampling is separable: with per-axis weight
matrices A_y (g x H) and A_x (g x W) whose rows hold the two tent weights of each sample (and zeros
where a neighbour falls off the frame), the glimpse is A_y @ frame @ A_x^T for every channel. This
is exactly grid_sample's bilinear rule (a corner's weight is the product of its axis weights, and it
is dropped when either coordinate is outside), it is differentiable in l through the weights, and
it runs as two small matmuls. They use `Precision.HIGHEST` so that accelerators do not round the
pixels to bfloat16.
"""

import jax
import jax.numpy as jnp

_HIGHEST = jax.lax.Precision.HIGHEST


def axis_weights(centers_n: jax.Array, scale: float, out_size: int, in_size: int) -> jax.Array:
  """Bilinear sampling weights along one axis.

  Args:
    centers_n: (N,) glimpse centres in normalised coordinates.
    scale: half-extent of the glimpse in normalised units (s of the affine grid).
    out_size: samples along the axis (the glimpse side).
    in_size: pixels along the axis (the frame side).

  Returns:
    (N, out_size, in_size) weights: row j has (1 - frac) at floor(p_j) and frac at floor(p_j) + 1,
    p_j = (scale * u_j + centre + 1) / 2 * (in_size - 1), u_j = linspace(-1, 1, out_size); pixels
    outside [0, in_size) get no weight.
  """
  base = jnp.linspace(-1.0, 1.0, out_size, dtype=jnp.float32)
  coords_ng = scale * base[None, :] + centers_n[:, None].astype(jnp.float32)
  pix_ng = (coords_ng + 1.0) * 0.5 * (in_size - 1)
  # floor + fraction as grid_sample computes them, so that the derivative at an integer pixel
  # position is the forward difference (a tent function max(0, 1 - |p - i|) would have none).
  lo_ng = jnp.floor(pix_ng)
  frac_ng = (pix_ng - lo_ng)[:, :, None]
  grid = jnp.arange(in_size, dtype=jnp.float32)[None, None, :]
  lo = lo_ng[:, :, None]
  return jnp.where(grid == lo, 1.0 - frac_ng, 0.0) + jnp.where(grid == lo + 1.0, frac_ng, 0.0)


def crop(
  images_nhwc: jax.Array,
  locations_n2: jax.Array,
  out_hw: tuple[int, int],
  scale_xy: tuple[float, float],
) -> jax.Array:
  """Bilinearly samples an out_h x out_w grid centred at each location (the general crop).

  Args:
    images_nhwc: (N, H, W, C) images, or (H, W, C) one image shared by every location.
    locations_n2: (N, 2) centres (lx, ly) in normalised coordinates.
    out_hw: output grid size.
    scale_xy: the affine grid's scale along x and y.

  Returns:
    (N, out_h, out_w, C) samples, in the images' dtype.
  """
  h, w = images_nhwc.shape[-3:-1]
  ay_ngh = axis_weights(locations_n2[:, 1], scale_xy[1], out_hw[0], h).astype(images_nhwc.dtype)
  ax_nkw = axis_weights(locations_n2[:, 0], scale_xy[0], out_hw[1], w).astype(images_nhwc.dtype)
  if images_nhwc.ndim == 3:
    rows = jnp.einsum('ngh,hwc->ngwc', ay_ngh, images_nhwc, precision=_HIGHEST)
  else:
    rows = jnp.einsum('ngh,nhwc->ngwc', ay_ngh, images_nhwc, precision=_HIGHEST)
  return jnp.einsum('ngwc,nkw->ngkc', rows, ax_nkw, precision=_HIGHEST)


def extract(images_nhwc: jax.Array, locations_n2: jax.Array, glimpse_pixels: int) -> jax.Array:
  """Crops a glimpse_pixels x glimpse_pixels glimpse at each location (the official crop).

  Args:
    images_nhwc: (N, H, W, C) frames.
    locations_n2: (N, 2) locations (lx, ly) in [-1, 1] (not clamped: off-frame samples are 0).
    glimpse_pixels: glimpse side g; the affine scale is g / W horizontally and g / H vertically.

  Returns:
    (N, g, g, C) glimpse pixels.
  """
  h, w = images_nhwc.shape[1:3]
  g = glimpse_pixels
  return crop(images_nhwc, locations_n2, (g, g), (g / w, g / h))


def sample_pos_embed(
  pos_embed_hwd: jax.Array, locations_n2: jax.Array, glimpse_patches: int
) -> jax.Array:
  """The glimpse's patch position embeddings: the grid sampled like the pixels (official).

  Args:
    pos_embed_hwd: (G, G, D) the ViT's patch position-embedding grid (14 x 14 for 224 px).
    locations_n2: (N, 2) glimpse locations.
    glimpse_patches: n, patches per glimpse side; the scale is n / G.

  Returns:
    (N, n * n, D) position embeddings in the patches' row-major order.
  """
  grid = pos_embed_hwd.shape[0]
  n = glimpse_patches
  out = crop(pos_embed_hwd, locations_n2, (n, n), (n / grid, n / grid))
  return out.reshape(out.shape[0], n * n, out.shape[-1])


def footprint(locations_n2: jax.Array, glimpse_pixels: int, frame_hw: tuple[int, int]) -> jax.Array:
  """Which frame pixels a glimpse reads: those with a non-zero bilinear weight.

  Args:
    locations_n2: (N, 2) glimpse locations.
    glimpse_pixels: glimpse side g.
    frame_hw: (H, W) of the frame.

  Returns:
    (N, H, W) boolean mask (for pictures and sensing counts).
  """
  h, w = frame_hw
  g = glimpse_pixels
  rows_nh = axis_weights(locations_n2[:, 1], g / h, g, h).max(axis=1) > 0
  cols_nw = axis_weights(locations_n2[:, 0], g / w, g, w).max(axis=1) > 0
  return rows_nh[:, :, None] & cols_nw[:, None, :]


def box(locations_n2: jax.Array, glimpse_pixels: int, frame_hw: tuple[int, int]) -> jax.Array:
  """The glimpse's sampling rectangle in pixel coordinates, for drawing.

  Returns:
    (N, 4) (x0, y0, x1, y1): the pixel coordinates of the first and last samples; a glimpse spans
    x0..x1 (inclusive sample centres), which may extend beyond the frame.
  """
  h, w = frame_hw
  g = glimpse_pixels
  lx, ly = locations_n2[:, 0], locations_n2[:, 1]
  to_px = lambda c, size: (c + 1.0) * 0.5 * (size - 1)
  sx, sy = g / w, g / h
  return jnp.stack(
    [to_px(lx - sx, w), to_px(ly - sy, h), to_px(lx + sx, w), to_px(ly + sy, h)], axis=-1
  )


def fixed_location(name: str, glimpse_patches: int, grid_size: int) -> tuple[float, float]:
  """Locations of the paper's fixed strategies (docs/design.md section 5).

  'center' is (0, 0); 'bottom_left' is (-1 + s, 1 - s), s = n / G: the glimpse inside the frame,
  touching its bottom-left corner (ly points down).
  """
  s = glimpse_patches / grid_size
  if name == 'center':
    return (0.0, 0.0)
  if name == 'bottom_left':
    return (-1.0 + s, 1.0 - s)
  raise ValueError(f"unknown fixed glimpse strategy {name!r}; known: 'center', 'bottom_left'")
