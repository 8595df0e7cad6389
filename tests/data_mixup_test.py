"""Mixup / CutMix on device: timm's batch mode, soft targets that sum to one."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from glitr_jax.data import mixup

B, T, H, W, C = 6, 3, 10, 12, 5


def _batch(seed: int = 0):
  # Each example is a constant video of value (example index + 1): pixels tell their source.
  values = np.arange(1, B + 1, dtype=np.float32)
  video = np.broadcast_to(values[:, None, None, None, None], (B, T, H, W, 3)).copy()
  labels = np.random.default_rng(seed).integers(0, C, size=B).astype(np.int32)
  return jnp.asarray(video), jnp.asarray(labels)


@functools.cache
def _mixer(**kwargs):
  """The jitted mixup for one set of static settings (compiled once per set)."""
  return jax.jit(functools.partial(mixup.mixup_cutmix, **kwargs))


def _mix(rng, video, labels, **kwargs):
  settings = dict(
    num_classes=C, mixup_alpha=0.8, cutmix_alpha=1.0, prob=1.0, switch_prob=0.5, label_smoothing=0.1
  )
  settings.update(kwargs)
  return _mixer(**settings)(rng, video, labels)


def _smoothed(labels, smoothing=0.1):
  off = smoothing / C
  out = np.full((len(labels), C), off, np.float32)
  out[np.arange(len(labels)), labels] = 1 - smoothing + off
  return out


@pytest.mark.parametrize(
  'mixup_alpha,cutmix_alpha', [(0.8, 1.0), (0.8, 0.0), (0.0, 1.0), (0.0, 0.0)]
)
def test_targets_rows_sum_to_one(mixup_alpha, cutmix_alpha):
  video, labels = _batch()
  for seed in range(8):
    _, targets = _mix(
      jax.random.key(seed), video, labels, mixup_alpha=mixup_alpha, cutmix_alpha=cutmix_alpha
    )
    assert targets.shape == (B, C)
    np.testing.assert_allclose(targets.sum(axis=1), 1.0, atol=1e-6)
    assert np.all(np.asarray(targets) >= 0)


def test_probability_zero_leaves_the_batch_and_smooths_the_labels():
  video, labels = _batch()
  mixed, targets = _mix(jax.random.key(0), video, labels, prob=0.0)
  np.testing.assert_array_equal(mixed, video)
  np.testing.assert_allclose(targets, _smoothed(np.asarray(labels)), atol=1e-7)


def test_mixup_blends_with_the_flipped_batch_and_targets_follow():
  video, labels = _batch()
  flipped_labels = np.asarray(labels)[::-1]
  lams = []
  for seed in range(6):
    mixed, targets = _mix(jax.random.key(seed), video, labels, cutmix_alpha=0.0)
    values = np.asarray(mixed)[:, 0, 0, 0, 0]
    # Constant examples v_i = i + 1 mixed with v_{B-1-i}: lam * v_i + (1 - lam) * v_{B-1-i}.
    lam = (values[0] - B) / (1 - B)
    expected = lam * np.arange(1, B + 1) + (1 - lam) * np.arange(B, 0, -1)
    np.testing.assert_allclose(values, expected, rtol=1e-5)
    assert np.all(np.asarray(mixed) == values[:, None, None, None, None])  # Whole frames, all t.
    np.testing.assert_allclose(
      targets,
      lam * _smoothed(np.asarray(labels)) + (1 - lam) * _smoothed(flipped_labels),
      atol=1e-5,
    )
    lams.append(lam)
  assert len(set(np.round(lams, 6))) == len(lams)  # A new lambda per batch.


def test_cutmix_pastes_one_box_for_all_frames_and_targets_weigh_its_area():
  video, labels = _batch()
  flipped_labels = np.asarray(labels)[::-1]
  for seed in range(6):
    mixed, targets = _mix(jax.random.key(seed), video, labels, mixup_alpha=0.0)
    mixed = np.asarray(mixed)
    own = mixed == np.asarray(video)
    pasted = mixed == np.asarray(video)[::-1]
    assert np.all(own | pasted)  # Every pixel comes from the example or its flipped partner.
    box = pasted[0, 0, :, :, 0]
    assert all(np.array_equal(pasted[b, t, :, :, 0], box) for b in range(B) for t in range(T))
    rows, cols = np.nonzero(box)
    if rows.size:
      assert box[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1].all()  # A rectangle.
    lam = 1 - box.mean()  # lambda corrected to the box's exact area
    np.testing.assert_allclose(
      targets,
      lam * _smoothed(np.asarray(labels)) + (1 - lam) * _smoothed(flipped_labels),
      atol=1e-5,
    )


def test_switch_probability_picks_cutmix_or_mixup():
  video, labels = _batch()
  kinds = []
  for seed in range(40):
    mixed, _ = _mix(jax.random.key(seed), video, labels)
    is_cut = np.all(np.isin(np.asarray(mixed), np.arange(1, B + 1)))  # Only original values.
    kinds.append(is_cut)
  assert 0.2 < np.mean(kinds) < 0.8


def test_soft_targets_are_mixed_with_the_same_lambda():
  video, labels = _batch()
  soft = jnp.asarray(np.random.default_rng(0).normal(size=(B, 7)).astype(np.float32))
  fn = _mixer(
    num_classes=C, mixup_alpha=0.8, cutmix_alpha=0.0, prob=1.0, switch_prob=0.5, label_smoothing=0.0
  )
  mixed, targets, mixed_soft = fn(jax.random.key(3), video, labels, soft=soft)
  lam = float((np.asarray(mixed)[0, 0, 0, 0, 0] - B) / (1 - B))
  np.testing.assert_allclose(mixed_soft, lam * soft + (1 - lam) * soft[::-1], rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(targets.sum(axis=1), 1.0, atol=1e-6)
