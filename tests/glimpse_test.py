"""Glimpse extraction against analytic values and an independent grid_sample reference."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from glitr_jax import glimpse


def grid_sample_reference(image_hwc, loc, out_hw, scale_xy):
  """PyTorch affine_grid + grid_sample (bilinear, zeros, align_corners=True), pixel by pixel."""
  h, w, c = image_hwc.shape
  out = np.zeros(out_hw + (c,), np.float64)
  ys = np.linspace(-1, 1, out_hw[0])
  xs = np.linspace(-1, 1, out_hw[1])
  for i, v in enumerate(ys):
    for j, u in enumerate(xs):
      ix = (scale_xy[0] * u + loc[0] + 1) / 2 * (w - 1)
      iy = (scale_xy[1] * v + loc[1] + 1) / 2 * (h - 1)
      x0, y0 = int(np.floor(ix)), int(np.floor(iy))
      for yy, wy in ((y0, y0 + 1 - iy), (y0 + 1, iy - y0)):
        for xx, wx in ((x0, x0 + 1 - ix), (x0 + 1, ix - x0)):
          if 0 <= yy < h and 0 <= xx < w:
            out[i, j] += wy * wx * image_hwc[yy, xx]
  return out


def ramp(h, w):
  """A linear image: channel c is a_c * x + b_c * y + c_c in pixel coordinates."""
  y, x = np.mgrid[0:h, 0:w].astype(np.float64)
  return np.stack([0.5 * x + 0.25 * y, -0.3 * x + 1.0 * y + 2.0, 0.1 * x - 0.2 * y - 1.0], -1)


def test_bilinear_reproduces_linear_ramp_exactly():
  h = w = 40
  image = ramp(h, w)
  loc = np.array([[0.13, -0.27]])
  g = 12
  out = np.asarray(glimpse.extract(jnp.asarray(image[None], jnp.float32), jnp.asarray(loc), g))[0]
  s = g / w
  u = np.linspace(-1, 1, g)
  px = (s * u + loc[0, 0] + 1) / 2 * (w - 1)
  py = (s * u + loc[0, 1] + 1) / 2 * (h - 1)
  yy, xx = np.meshgrid(py, px, indexing='ij')
  expected = np.stack([0.5 * xx + 0.25 * yy, -0.3 * xx + yy + 2.0, 0.1 * xx - 0.2 * yy - 1.0], -1)
  np.testing.assert_allclose(out, expected, atol=2e-5)


@pytest.mark.parametrize('corner', [(-1, -1), (1, -1), (-1, 1), (1, 1)])
def test_corner_locations_centre_on_corner_pixels_with_zeros_outside(corner):
  h = w = 21
  image = ramp(h, w) + 50.0  # no pixel is zero
  g = 9  # odd: the middle sample sits exactly at the location
  out = np.asarray(
    glimpse.extract(jnp.asarray(image[None], jnp.float32), jnp.asarray([corner], jnp.float32), g)
  )[0]
  mid = g // 2
  cy = 0 if corner[1] < 0 else h - 1
  cx = 0 if corner[0] < 0 else w - 1
  np.testing.assert_allclose(out[mid, mid], image[cy, cx], atol=1e-5)
  # The half of the glimpse beyond the corner is off the frame: exactly zero.
  off_rows = slice(0, mid) if corner[1] < 0 else slice(mid + 1, g)
  off_cols = slice(0, mid) if corner[0] < 0 else slice(mid + 1, g)
  assert np.all(out[off_rows] == 0.0)
  assert np.all(out[:, off_cols] == 0.0)
  on_rows = slice(mid, g) if corner[1] < 0 else slice(0, mid + 1)
  on_cols = slice(mid, g) if corner[0] < 0 else slice(0, mid + 1)
  assert np.all(out[on_rows, on_cols] != 0.0)


def test_matches_grid_sample_reference_on_random_images_and_locations():
  rng = np.random.default_rng(0)
  image = rng.normal(size=(4, 24, 30, 3))
  locs = np.array([[0.0, 0.0], [0.9, -0.95], [-1.3, 0.4], [0.51, 1.2]])  # incl. off the frame
  out = np.asarray(glimpse.extract(jnp.asarray(image, jnp.float32), jnp.asarray(locs), 10))
  for i in range(4):
    ref = grid_sample_reference(image[i], locs[i], (10, 10), (10 / 30, 10 / 24))
    np.testing.assert_allclose(out[i], ref, atol=1e-5)


def test_far_off_frame_is_all_zero():
  image = jnp.ones((1, 16, 16, 3))
  out = glimpse.extract(image, jnp.array([[3.0, 0.0]]), 8)
  assert float(jnp.abs(out).max()) == 0.0


def test_pos_embed_sampling_on_a_known_grid():
  g, d = 14, 3
  i, j = np.mgrid[0:g, 0:g].astype(np.float64)
  grid = np.stack([i, j, 2 * i - j], -1)
  # s = n / G = 1 at location 0 resamples the grid onto itself.
  same = glimpse.sample_pos_embed(jnp.asarray(grid, jnp.float32), jnp.zeros((1, 2)), g)
  np.testing.assert_allclose(np.asarray(same)[0], grid.reshape(g * g, d), atol=1e-5)
  # An n x n glimpse at l samples the linear grid at rows/cols (s * u + l + 1) / 2 * (G - 1).
  n, loc = 6, np.array([0.2, -0.4])
  out = np.asarray(glimpse.sample_pos_embed(jnp.asarray(grid, jnp.float32), jnp.asarray([loc]), n))
  s = n / g
  u = np.linspace(-1, 1, n)
  cols = (s * u + loc[0] + 1) / 2 * (g - 1)
  rows = (s * u + loc[1] + 1) / 2 * (g - 1)
  rr, cc = np.meshgrid(rows, cols, indexing='ij')
  expected = np.stack([rr, cc, 2 * rr - cc], -1).reshape(n * n, d)
  np.testing.assert_allclose(out[0], expected, atol=1e-5)


def test_gradient_with_respect_to_location_is_finite_nonzero_and_matches_finite_differences():
  rng = np.random.default_rng(1)
  image = jnp.asarray(rng.normal(size=(1, 32, 32, 3)), jnp.float32)
  weights = jnp.asarray(rng.normal(size=(1, 8, 8, 3)), jnp.float32)
  loss = lambda loc: jnp.sum(glimpse.extract(image, loc, 8) * weights)
  loc = jnp.array([[0.123, -0.311]])
  grad = np.asarray(jax.grad(loss)(loc))
  assert np.all(np.isfinite(grad)) and np.all(grad != 0)
  eps = 1e-3
  for k in range(2):
    step = np.zeros((1, 2), np.float32)
    step[0, k] = eps
    fd = (loss(loc + step) - loss(loc - step)) / (2 * eps)
    np.testing.assert_allclose(grad[0, k], fd, rtol=2e-2)


def test_gradient_at_an_integer_pixel_position_is_the_forward_difference():
  # 17-px frame, odd glimpse at l = 0: the middle sample sits exactly on pixel 8. grid_sample's
  # derivative there is the forward difference times d(pixel)/d(l) = (W - 1) / 2, not zero.
  rng = np.random.default_rng(2)
  image = rng.normal(size=(1, 17, 17, 1)).astype(np.float32)
  g = 5
  f = lambda loc: glimpse.extract(jnp.asarray(image), loc, g)[0, g // 2, g // 2, 0]
  grad = np.asarray(jax.grad(f)(jnp.zeros((1, 2))))[0]
  np.testing.assert_allclose(grad[0], (image[0, 8, 9, 0] - image[0, 8, 8, 0]) * 8, rtol=1e-5)
  np.testing.assert_allclose(grad[1], (image[0, 9, 8, 0] - image[0, 8, 8, 0]) * 8, rtol=1e-5)


def test_footprint_is_exactly_the_pixels_the_crop_reads():
  rng = np.random.default_rng(3)
  image = rng.normal(size=(1, 24, 24, 3)).astype(np.float32)
  loc = jnp.array([[0.31, -0.62]])
  mask = np.asarray(glimpse.footprint(loc, 8, (24, 24)))[0]
  base = np.asarray(glimpse.extract(jnp.asarray(image), loc, 8))
  outside = image.copy()
  outside[0][~mask] += 100.0
  np.testing.assert_array_equal(np.asarray(glimpse.extract(jnp.asarray(outside), loc, 8)), base)
  ys, xs = np.nonzero(mask)
  for y, x in [(ys[0], xs[0]), (ys[-1], xs[-1])]:
    inside = image.copy()
    inside[0, y, x] += 100.0
    assert not np.allclose(np.asarray(glimpse.extract(jnp.asarray(inside), loc, 8)), base)
  # A rectangle: its rows and columns are the pixels between the first and last samples.
  assert mask.sum() == len(np.unique(ys)) * len(np.unique(xs))


def test_bottom_left_strategy_glimpse_touches_the_bottom_left_corner():
  n, grid, size = 6, 14, 224
  loc = jnp.asarray([glimpse.fixed_location('bottom_left', n, grid)])
  x0, y0, x1, y1 = np.asarray(glimpse.box(loc, n * 16, (size, size)))[0]
  np.testing.assert_allclose([x0, y1], [0.0, size - 1], atol=1e-4)
  assert x1 < size - 1 and y0 > 0
  assert glimpse.fixed_location('center', n, grid) == (0.0, 0.0)
  with pytest.raises(ValueError, match='unknown fixed glimpse strategy'):
    glimpse.fixed_location('top', n, grid)


def test_batched_and_jitted():
  rng = np.random.default_rng(4)
  images = jnp.asarray(rng.normal(size=(3, 16, 16, 3)), jnp.float32)
  locs = jnp.asarray(rng.uniform(-1, 1, size=(3, 2)), jnp.float32)
  batched = jax.jit(glimpse.extract, static_argnums=2)(images, locs, 6)
  for i in range(3):
    np.testing.assert_allclose(
      batched[i], glimpse.extract(images[i : i + 1], locs[i : i + 1], 6)[0], atol=1e-5
    )
