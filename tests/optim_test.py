"""The optimisation recipe: timm's schedules, torch's AdamW, per-module rates, paper configs."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch

from configs import jester_student, jester_teacher, ssv2_student, ssv2_teacher
from glitr_jax import optim


def timm_cosine(t, peak, floor, total, warmup=0, warmup_lr=1e-6):
  """timm's CosineLRScheduler (cycle_limit=1, warmup_prefix=False) at update t, from its source."""
  if t < warmup:
    return warmup_lr + t * (peak - warmup_lr) / warmup
  if t >= total:
    return floor
  return floor + 0.5 * (peak - floor) * (1 + math.cos(math.pi * t / total))


@pytest.mark.parametrize('warmup', [0, 30])
def test_schedule_is_timms_cosine_with_a_non_prefix_warmup(warmup):
  fn = optim.cosine_schedule(peak=3e-4, floor=1e-6, total_steps=100, warmup_steps=warmup)
  for t in [0, 1, 15, 29, 30, 31, 50, 99, 100, 150]:
    np.testing.assert_allclose(float(fn(t)), timm_cosine(t, 3e-4, 1e-6, 100, warmup), rtol=1e-5)
  if warmup:
    assert float(fn(0)) == pytest.approx(1e-6)  # from an absolute 1e-6
    # At the end of the warm-up the rate jumps to the cosine's value there (counted from 0).
    assert float(fn(30)) == pytest.approx(timm_cosine(30, 3e-4, 1e-6, 100), rel=1e-5)
    assert float(fn(30)) < 3e-4


def test_adamw_matches_torch_with_decay_on_every_parameter():
  rng = np.random.default_rng(0)
  w0 = rng.normal(size=(4, 3)).astype(np.float32)
  b0 = rng.normal(size=(3,)).astype(np.float32)
  grads = [(rng.normal(size=(4, 3)), rng.normal(size=(3,))) for _ in range(5)]
  lr, wd = 1e-2, 0.05
  tw, tb = torch.tensor(w0, requires_grad=True), torch.tensor(b0, requires_grad=True)
  topt = torch.optim.AdamW([tw, tb], lr=lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=wd)
  tx = optax.adamw(lr, b1=0.9, b2=0.999, eps=1e-8, weight_decay=wd)
  params = {'w': jnp.asarray(w0), 'b': jnp.asarray(b0)}
  state = tx.init(params)
  for gw, gb in grads:
    tw.grad, tb.grad = torch.tensor(gw, dtype=torch.float32), torch.tensor(gb, dtype=torch.float32)
    topt.step()
    g = {'w': jnp.asarray(gw, jnp.float32), 'b': jnp.asarray(gb, jnp.float32)}
    updates, state = tx.update(g, state, params)
    params = optax.apply_updates(params, updates)
  np.testing.assert_allclose(params['w'], tw.detach().numpy(), atol=1e-6)
  np.testing.assert_allclose(params['b'], tb.detach().numpy(), atol=1e-6)


def tiny_params():
  return {
    'backbone': {'pos_embed': jnp.ones((1, 4, 2)), 'blocks_0': {'k': {'kernel': jnp.ones((2, 2))}}},
    'temporal_head': {'head': {'kernel': jnp.ones((2, 3)), 'bias': jnp.ones((3,))}},
    'temploc_head': {'init_loc': jnp.ones((2,)), 'head': {'kernel': jnp.ones((2, 2))}},
  }


def test_each_module_follows_its_own_rate_and_every_parameter_decays():
  config = ssv2_teacher.get_config()
  config.optim.weight_decay = 0.5
  tx = optim.make_optimizer(config, total_steps=1000, steps_per_epoch=10)
  params = tiny_params()
  zeros = jax.tree.map(jnp.zeros_like, params)
  updates, _ = tx.update(zeros, tx.init(params), params)
  # Zero gradients: the update is pure decay, -lr * wd * p, with each module's step-0 rate.
  lr_tf = 1e-5 * 60 / 128
  lr_tc = 1e-4 * 60 / 128
  lr_tl = 1e-6  # Tl warms up from an absolute 1e-6 (15 epochs)
  np.testing.assert_allclose(updates['backbone']['pos_embed'], -lr_tf * 0.5, rtol=1e-5)
  np.testing.assert_allclose(updates['temporal_head']['head']['bias'], -lr_tc * 0.5, rtol=1e-5)
  np.testing.assert_allclose(updates['temploc_head']['init_loc'], -lr_tl * 0.5, rtol=1e-5)


def test_decay_mask_spares_embeddings_biases_norms_and_init_loc():
  config = ssv2_student.get_config()
  config.optim.decay_mask = True
  tx = optim.make_optimizer(config, total_steps=100, steps_per_epoch=10)
  params = tiny_params()
  updates, _ = tx.update(jax.tree.map(jnp.zeros_like, params), tx.init(params), params)
  assert float(jnp.abs(updates['backbone']['pos_embed']).max()) == 0.0
  assert float(jnp.abs(updates['temporal_head']['head']['bias']).max()) == 0.0
  assert float(jnp.abs(updates['temploc_head']['init_loc']).max()) == 0.0
  assert float(jnp.abs(updates['temporal_head']['head']['kernel']).max()) > 0.0


def first_moment_norm(opt_state) -> float:
  leaves = [
    leaf
    for path, leaf in jax.tree_util.tree_flatten_with_path(opt_state)[0]
    if '.mu' in jax.tree_util.keystr(path)
  ]
  assert leaves
  return float(optax.global_norm(leaves))


@pytest.mark.parametrize('clip', [0.0, 1.0])
def test_gradient_clipping_bounds_the_global_norm(clip):
  config = ssv2_student.get_config()
  config.optim.grad_clip_norm = clip
  tx = optim.make_optimizer(config, total_steps=100, steps_per_epoch=10)
  params = tiny_params()
  grads = jax.tree.map(lambda p: 100.0 * jnp.ones_like(p), params)
  _, state = tx.update(grads, tx.init(params), params)
  # After one step Adam's first moment is (1 - b1) * g: the clipped gradient has norm `clip`.
  expected = 0.1 * (clip if clip else float(optax.global_norm(grads)))
  np.testing.assert_allclose(first_moment_norm(state), expected, rtol=1e-5)


def test_unknown_top_level_parameters_are_an_error():
  with pytest.raises(ValueError, match='belong to no module'):
    optim.module_labels({'backbone': {}, 'extra': {}})


@pytest.mark.parametrize(
  'module, batch, lrs, floors, warmup_tl',
  [
    (ssv2_teacher, 60, (1e-5, 1e-4, 1e-4), (1e-7, 1e-6, 1e-6), 15.0),
    (jester_teacher, 100, (1e-5, 1e-5, 1e-5), (1e-7, 1e-7, 1e-7), 0.0),
    (ssv2_student, 360, (1e-5, 1e-5, 1e-5), (1e-7, 1e-6, 1e-6), 0.0),
    (jester_student, 800, (1e-5, 1e-5, 1e-5), (1e-7, 1e-7, 1e-7), 0.0),
  ],
)
def test_paper_configs_derive_the_official_learning_rates(module, batch, lrs, floors, warmup_tl):
  config = module.get_config()
  assert config.batch_size == batch
  steps_per_epoch = 100
  total = int(config.num_epochs * steps_per_epoch)
  fns = optim.schedules(config, total, steps_per_epoch)
  for m, base, floor in zip(('tf', 'tc', 'tl'), lrs, floors, strict=True):
    peak = base * batch / 128
    start = 1e-6 if (m == 'tl' and warmup_tl) else peak
    np.testing.assert_allclose(float(fns[m](0)), start, rtol=1e-6)
    np.testing.assert_allclose(float(fns[m](total + 5)), floor, rtol=1e-6)
    mid = int(warmup_tl * steps_per_epoch) + 10
    np.testing.assert_allclose(float(fns[m](mid)), timm_cosine(mid, peak, floor, total), rtol=1e-5)
  assert config.optim.weight_decay == 0.05 and not config.optim.decay_mask
  assert config.loss.label_smoothing == 0.1
  assert config.optim.warmup_epochs_tl == warmup_tl


def test_paper_configs_switch_augmentation_and_losses_as_the_official_scripts():
  t = ssv2_teacher.get_config()
  assert (t.data.augment.mixup, t.data.augment.cutmix, t.data.augment.random_erasing) == (
    0.8,
    1.0,
    0.25,
  )
  assert t.loss.dist == 1.0 and t.offline.model == 'videomae'
  assert t.data.augment.rand_augment == 'rand-m7-n4-mstd0.5-inc1'
  j = jester_teacher.get_config()
  assert j.loss.dist == 0.0 and j.init.drop_classifier and j.init.temporal_stride == 2
  for s in (ssv2_student.get_config(), jester_student.get_config()):
    assert (s.data.augment.mixup, s.data.augment.cutmix, s.data.augment.random_erasing) == (0, 0, 0)
    assert s.data.augment.random_resized_crop and s.data.augment.rand_augment
    assert (s.loss.ce, s.loss.spatial, s.loss.temporal) == (1.0, 1.0, 1.0)
  assert ssv2_student.get_config('glimpse=128').model.glimpse_patches == 8
  assert ssv2_student.get_config('glimpse=64').model.glimpse_patches == 4
  base = ssv2_student.get_config('variant=baseline')
  assert (base.loss.spatial, base.loss.temporal) == (0.0, 0.0)
  assert ssv2_student.get_config('variant=spatial').loss.temporal == 0.0
  assert (
    jester_student.get_config().model.num_frames,
    ssv2_student.get_config().model.num_frames,
  ) == (8, 16)
