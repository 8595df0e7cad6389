"""Evaluation counters on hand-set logits, and the strategies' locations."""

import jax.numpy as jnp
import numpy as np
import pytest

from glitr_jax import glimpse
from glitr_jax.eval import metrics, strategies


def logits_from_probs(probs_btc):
  return jnp.log(jnp.asarray(probs_btc, jnp.float32))


# Three videos, T = 3, C = 3, with known confidences and predictions after each t.
PROBS = np.array(
  [
    [[0.5, 0.3, 0.2], [0.2, 0.7, 0.1], [0.05, 0.9, 0.05]],  # predicts 0, 1, 1
    [[0.2, 0.3, 0.5], [0.1, 0.1, 0.8], [0.1, 0.1, 0.8]],  # predicts 2, 2, 2
    [[0.4, 0.35, 0.25], [0.45, 0.35, 0.2], [0.3, 0.6, 0.1]],  # predicts 0, 0, 1
  ],
  np.float32,
)
LABELS = np.array([1, 2, 0])


def test_correct_per_t_counts_only_real_examples():
  logits = logits_from_probs(PROBS)
  all_real = metrics.correct_per_t(logits, LABELS, np.array([True, True, True]))
  np.testing.assert_array_equal(all_real, [2, 3, 2])  # t=1: videos 1, 2; t=2: all; t=3: 0, 1
  padded = metrics.correct_per_t(logits, LABELS, np.array([True, False, True]))
  np.testing.assert_array_equal(padded, [1, 2, 1])
  assert padded.dtype == jnp.int32


def test_early_exit_stops_at_first_confident_step():
  logits = logits_from_probs(PROBS)
  gammas = jnp.array([0.0, 0.42, 0.65, 0.75, 1.0, 1.01])
  steps = np.asarray(metrics.exit_steps(logits, gammas))
  # gamma 0: always the first glimpse; >= 1: never confident, all T glimpses.
  np.testing.assert_array_equal(steps[0], [0, 0, 0])
  np.testing.assert_array_equal(steps[1], [0, 0, 1])  # 0.5; 0.5; 0.4 then 0.45
  np.testing.assert_array_equal(steps[2], [1, 1, 2])  # 0.7; 0.8; never above 0.65 -> last
  np.testing.assert_array_equal(steps[3], [2, 1, 2])
  np.testing.assert_array_equal(steps[4], [2, 2, 2])
  np.testing.assert_array_equal(steps[5], [2, 2, 2])
  correct, glimpses = metrics.early_exit_counts(logits, LABELS, np.ones(3, bool), gammas)
  # Predictions at the exit steps: gamma 0 -> (0, 2, 0); 0.42 -> (0, 2, 0); 0.65 -> (1, 2, 1);
  # 0.75 -> (1, 2, 1); 1.0 and 1.01 -> the last step (1, 2, 1): two right each time.
  np.testing.assert_array_equal(correct, [2, 2, 2, 2, 2, 2])
  np.testing.assert_array_equal(glimpses, [3, 4, 7, 8, 9, 9])
  last = metrics.correct_per_t(logits, LABELS, np.ones(3, bool))[-1]
  assert int(correct[-1]) == int(last)  # gamma > 1 equals the accuracy at T


def test_early_exit_ignores_padding():
  logits = logits_from_probs(PROBS)
  correct, glimpses = metrics.early_exit_counts(
    logits, LABELS, np.array([False, True, False]), jnp.array([0.65])
  )
  np.testing.assert_array_equal(correct, [1])
  np.testing.assert_array_equal(glimpses, [2])


def test_location_histogram_bins_over_the_frame():
  locs = np.array(
    [
      [[-0.99, -0.99], [0.99, 0.99], [0.1, -0.6]],
      [[-1.7, 2.0], [0.99, 0.99], [0.0, 0.0]],  # off-frame centres land in the edge bins
      [[0.5, 0.5], [0.5, 0.5], [0.5, 0.5]],  # padding
    ],
    np.float32,
  )
  mask = np.array([True, True, False])
  hist = np.asarray(metrics.location_histogram(locs, mask, 4))
  assert hist.shape == (3, 4, 4)
  np.testing.assert_array_equal(hist.sum(axis=(1, 2)), [2, 2, 2])
  assert hist[0, 0, 0] == 1 and hist[0, 3, 0] == 1  # top-left; bottom-left (ly points down)
  assert hist[1, 3, 3] == 2
  assert hist[2, 0, 2] == 1 and hist[2, 2, 2] == 1  # (0.1, -0.6): row 0, col 2; (0, 0): row 2
  np.testing.assert_array_equal(metrics.outside_frame(locs, mask), [1, 0, 0])


@pytest.mark.parametrize('g,t,side', [(96, 16, 224), (64, 8, 224), (16, 4, 32)])
def test_sensing_cost_is_t_glimpses(g, t, side):
  cost = metrics.sensing_cost(t, g, (side, side))
  assert cost['glimpse_pixels_per_video'] == t * g * g
  assert cost['full_frame_pixels_per_video'] == t * side * side
  assert cost['glimpse_fraction'] == pytest.approx(g * g / side**2)


def test_sensing_cost_matches_table_1():
  # Table 1: 96x96 glimpses on 16 SSv2 frames sense 147K pixels; 128x128 on 8 Jester frames 131K.
  assert round(metrics.sensing_cost(16, 96, (224, 224))['glimpse_pixels_per_video'], -3) == 147000
  assert round(metrics.sensing_cost(8, 128, (224, 224))['glimpse_pixels_per_video'], -3) == 131000


def test_random_locations_depend_only_on_example_index():
  index = jnp.arange(10)
  a = strategies.random_locations('uniform', 0, 0, index, 4)
  # The same examples in another order / batch composition draw the same locations.
  b = strategies.random_locations('uniform', 0, 0, index[::-1], 4)[::-1]
  np.testing.assert_array_equal(a, b)
  np.testing.assert_array_equal(a[3:5], strategies.random_locations('uniform', 0, 0, index[3:5], 4))
  assert a.shape == (10, 4, 2)
  assert float(jnp.min(a)) >= -1 and float(jnp.max(a)) <= 1
  # Seeds, strategies and examples differ.
  assert not np.allclose(a, strategies.random_locations('uniform', 0, 1, index, 4))
  assert not np.allclose(a, strategies.random_locations('uniform', 1, 0, index, 4))
  g = strategies.random_locations('gaussian', 0, 0, index, 4)
  assert not np.allclose(a, g)
  assert float(jnp.max(jnp.abs(g))) < 1
  assert not np.allclose(a[0], a[1])


def test_random_location_distributions():
  index = jnp.arange(4000)
  u = np.asarray(strategies.random_locations('uniform', 0, 0, index, 2))
  g = np.asarray(strategies.random_locations('gaussian', 0, 0, index, 2))
  assert abs(u.mean()) < 0.03 and abs(u.std() - 1 / np.sqrt(3)) < 0.02
  ref = np.tanh(np.random.default_rng(0).normal(size=200000))
  assert abs(g.mean()) < 0.03 and abs(g.std() - ref.std()) < 0.02


def test_fixed_locations():
  center = strategies.fixed_locations('center', 6, 14, 2, 3)
  np.testing.assert_array_equal(center, np.zeros((2, 3, 2)))
  bl = np.asarray(strategies.fixed_locations('bottom_left', 6, 14, 2, 3))
  s = 6 / 14
  np.testing.assert_allclose(bl[1, 2], [-1 + s, 1 - s], rtol=1e-6)
  # The bottom-left glimpse lies inside the frame and touches its left and bottom edges.
  x0, y0, x1, y1 = np.asarray(glimpse.box(jnp.asarray(bl[0, :1]), 96, (224, 224)))[0]
  assert x0 == pytest.approx(0.0, abs=0.6) and y1 == pytest.approx(223.0, abs=0.6)
  assert x1 < 223 and y0 > 0


def test_unknown_strategy_is_named():
  with pytest.raises(ValueError, match='top_right'):
    strategies.validate(('glitr', 'top_right'))
  assert strategies.validate(('teacher', 'glitr')) == ('glitr', 'teacher')


def test_random_locations_reject_fixed_strategy():
  with pytest.raises(ValueError, match='center'):
    strategies.random_locations('center', 0, 0, jnp.arange(2), 4)
