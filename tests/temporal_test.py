"""The causal temporal transformer: cache == full pass, causality, initialisation."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from glitr_jax.models import temporal

T, B, D = 6, 3, 20
MODEL = temporal.TemporalTransformer(
  hidden_size=24, depth=2, num_heads=3, num_frames=T, num_outputs=5, drop_path_rate=0.3
)
FEATS = jax.random.normal(jax.random.key(0), (B, T, D))
PARAMS = MODEL.init(jax.random.key(1), FEATS)['params']


@functools.partial(jax.jit, static_argnames='deterministic')
def full(params, feats, rng=None, deterministic=True):
  rngs = {} if rng is None else {'dropout': rng}
  return MODEL.apply({'params': params}, feats, None, deterministic, rngs=rngs)[0]


@functools.partial(jax.jit, static_argnames='deterministic')
def chunk(params, feats, cache, rng=None, deterministic=True):
  rngs = {} if rng is None else {'dropout': rng}
  return MODEL.apply({'params': params}, feats, cache, deterministic, rngs=rngs)


def stepwise(feats, sizes, rng=None, deterministic=True):
  cache = MODEL.init_cache(B)
  outs, start = [], 0
  for size in sizes:
    out, cache = chunk(PARAMS, feats[:, start : start + size], cache, rng, deterministic)
    outs.append(out)
    start += size
  assert int(cache.length) == start
  return jnp.concatenate(outs, axis=1)


@pytest.mark.parametrize('sizes', [(1,) * T, (2, 1, 3), (T,)])
def test_cached_steps_equal_the_full_causal_pass(sizes):
  np.testing.assert_allclose(stepwise(FEATS, sizes), full(PARAMS, FEATS), atol=1e-5)


def test_cached_steps_with_one_rng_equal_the_full_pass_in_training():
  # With drop-path on, one RNG for every cached step draws the same per-example, per-block
  # masks as the full pass: the training scan matches one causal pass (docs/design.md 6.1).
  rng = jax.random.key(7)
  train_full = full(PARAMS, FEATS, rng, deterministic=False)
  assert not np.allclose(train_full, full(PARAMS, FEATS), atol=1e-3)  # drop-path is active
  np.testing.assert_allclose(
    stepwise(FEATS, (1,) * T, rng, deterministic=False), train_full, atol=1e-5
  )


def test_causal_outputs_ignore_the_future():
  base = full(PARAMS, FEATS)
  for t_changed in range(1, T):
    changed = FEATS.at[:, t_changed].add(10.0)
    out = full(PARAMS, changed)
    np.testing.assert_array_equal(out[:, :t_changed], base[:, :t_changed])
    assert not np.allclose(out[:, t_changed], base[:, t_changed])


def test_one_step_attends_over_the_cached_prefix_without_recomputing_it():
  # Poison the cached keys of step 0 after the fact: step 1 must read them from the cache.
  _, cache = chunk(PARAMS, FEATS[:, :1], MODEL.init_cache(B))
  good, _ = chunk(PARAMS, FEATS[:, 1:2], cache)
  bad_layers = tuple(
    temporal.layers.LayerCache(k_bthd=lc.k_bthd.at[:, 0].add(3.0), v_bthd=lc.v_bthd)
    for lc in cache.layers
  )
  bad, _ = chunk(PARAMS, FEATS[:, 1:2], cache.replace(layers=bad_layers))
  assert not np.allclose(good, bad, atol=1e-4)
  np.testing.assert_allclose(good, full(PARAMS, FEATS)[:, 1:2], atol=1e-5)


def test_location_head_has_no_bias_pytorch_init_times_point_one_and_init_loc():
  tl = temporal.TemporalTransformer(
    hidden_size=64, depth=1, num_heads=4, num_frames=T, num_outputs=2, location_head=True
  )
  params = tl.init(jax.random.key(3), FEATS)['params']
  assert set(params['head']) == {'kernel'}
  kernel = np.asarray(params['head']['kernel'])
  bound = 0.1 / np.sqrt(64)
  assert kernel.shape == (64, 2) and np.abs(kernel).max() <= bound
  assert np.abs(kernel).max() > 0.5 * bound  # uniform over the range, not truncated-normal(0.02)
  np.testing.assert_array_equal(params['init_loc'], np.zeros(2))


def test_identity_embedding_when_widths_match():
  same = temporal.TemporalTransformer(hidden_size=D, depth=1, num_heads=2, num_frames=T)
  params = same.init(jax.random.key(4), FEATS)['params']
  assert 'embed_proj' not in params and 'embed_norm' not in params
  assert {'embed_proj', 'embed_norm'} <= set(PARAMS)
