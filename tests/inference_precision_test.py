"""Low-precision inference: weights stored once in the compute dtype (inference.cast_params).

The tiny model with random weights: float32 is untouched, a bfloat16 agent holds bfloat16 product
weights that its compiled step takes as they are (no conversion of any weight inside the step),
and its outputs equal the per-step-cast bfloat16 model's and stay near float32's.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.extend import core as jex_core
from tiny import tiny_model_config

from glitr_jax import inference, streaming
from glitr_jax.streaming import agent as agent_lib

F32 = tiny_model_config(drop_path_rate=0.0)
BF16 = tiny_model_config(drop_path_rate=0.0, compute_dtype='bfloat16')
MODEL = inference.model_for(F32)
B, T = 2, F32.num_frames
G = MODEL.glimpse_pixels


def random_params(seed: int = 0):
  """Random tiny-model parameters at a trained model's scales (kernels ~ 1/sqrt(fan_in))."""
  rng = np.random.default_rng(seed)
  shapes = jax.eval_shape(MODEL.init, jax.random.key(0))

  def draw(path, leaf):
    n = rng.standard_normal(leaf.shape).astype(np.float32)
    name = path[-1].key
    if name == 'scale':
      return 1.0 + 0.1 * n
    if name == 'kernel':
      return n / np.float32(np.sqrt(np.prod(leaf.shape[:-1])))
    return 0.1 * n

  return jax.tree_util.tree_map_with_path(draw, shapes)


PARAMS = random_params()
GLIMPSES = np.random.default_rng(1).standard_normal((T, B, G, G, 3)).astype(np.float32)


def leaves_by_name(params):
  return {
    jax.tree_util.keystr(path): leaf for path, leaf in jax.tree_util.tree_leaves_with_path(params)
  }


def run_agent(params, config):
  """(B, T, C) probs and (B, T, 2) next locations of a GlimpseAgent over GLIMPSES."""
  agent = streaming.GlimpseAgent({'params': params}, config, batch_size=B)
  preds = [agent.step(g) for g in GLIMPSES]
  probs = np.stack([np.asarray(p.probs) for p in preds], axis=1)
  locs = np.stack([np.asarray(p.next_location) for p in preds], axis=1)
  return probs, locs, agent


def converted_inputs(params, config) -> set[str]:
  """Names of the parameters that the agent's step converts to another dtype.

  Traces `agent_step` and follows each parameter through the sub-jaxprs (jit, custom_jvp/vjp
  calls) it is passed to, collecting those that reach a convert_element_type.
  """
  model = inference.model_for(config)
  state, _ = agent_lib.init_state(model, params, B)
  flat, treedef = jax.tree_util.tree_flatten_with_path(params)
  names = [jax.tree_util.keystr(path) for path, _ in flat]

  def step(leaves, state, glimpses):
    params = jax.tree.unflatten(treedef, leaves)
    return agent_lib.agent_step(model, params, state, glimpses, jnp.float32(jnp.inf))

  closed = jax.make_jaxpr(step)([leaf for _, leaf in flat], state, GLIMPSES[0])
  found = set()

  def walk(jaxpr, origin):  # origin: jaxpr variable -> parameter name
    for eqn in jaxpr.eqns:
      ins = [None if isinstance(v, jex_core.Literal) else origin.get(v) for v in eqn.invars]
      if eqn.primitive.name == 'convert_element_type' and ins[0] is not None:
        found.add(ins[0])
      for sub in jex_core.jaxprs_in_params(eqn.params):
        if len(sub.invars) == len(ins):
          walk(sub, {v: n for v, n in zip(sub.invars, ins, strict=True) if n is not None})

  walk(closed.jaxpr, dict(zip(closed.jaxpr.invars, names, strict=False)))
  return found


def test_float32_parameters_are_returned_unchanged():
  assert inference.cast_params(PARAMS, 'float32') is PARAMS
  assert inference.cast_params(PARAMS, jnp.float32) is PARAMS


def test_bfloat16_casts_exactly_the_product_weights():
  cast = leaves_by_name(inference.cast_params(PARAMS, 'bfloat16'))
  orig = leaves_by_name(PARAMS)
  kernels = [k for k in orig if k.endswith("['kernel']")]
  # Tf's patch embedding and 2 blocks x 4 products; Tc's and Tl's projection, blocks and head.
  assert len(kernels) == 1 + 2 * 4 + 2 * (1 + 2 * 4 + 1)
  for name, leaf in cast.items():
    if name in kernels:
      assert leaf.dtype == jnp.bfloat16, name
      np.testing.assert_array_equal(leaf, orig[name].astype(jnp.bfloat16))
    else:
      assert leaf.dtype == jnp.float32, name
      assert leaf is orig[name], name


def test_cast_params_names_the_field_on_a_non_float_dtype():
  with pytest.raises(ValueError, match='compute_dtype'):
    inference.cast_params(PARAMS, 'int32')


def test_bfloat16_agent_holds_bfloat16_weights_and_its_step_converts_none_of_them():
  agent = streaming.GlimpseAgent({'params': PARAMS}, BF16, batch_size=B)
  held = leaves_by_name(agent._params)
  kernels = {k for k in held if k.endswith("['kernel']")}
  assert {held[k].dtype for k in kernels} == {jnp.dtype(jnp.bfloat16)}
  assert not kernels & converted_inputs(agent._params, BF16)
  # Without the cast, the same step converts every weight matrix at every call.
  assert kernels <= converted_inputs(PARAMS, BF16)
  # A float32 agent holds the float32 weights as they were.
  f32_agent = streaming.GlimpseAgent({'params': PARAMS}, F32, batch_size=B)
  for a, b in zip(jax.tree.leaves(f32_agent._params), jax.tree.leaves(PARAMS), strict=True):
    assert a.dtype == jnp.float32
    np.testing.assert_array_equal(a, b)


def test_bfloat16_storage_gives_the_bfloat16_model_outputs_near_float32():
  probs32, locs32, _ = run_agent(PARAMS, F32)
  probs16, locs16, _ = run_agent(PARAMS, BF16)
  # Stored once or cast per step, the bfloat16 model computes the same numbers.
  model = inference.model_for(BF16)
  step = jax.jit(lambda p, s, g: agent_lib.agent_step(model, p, s, g, jnp.float32(jnp.inf)))
  state, _ = agent_lib.init_state(model, PARAMS, B)
  per_step_cast = []
  for g in GLIMPSES:
    state, pred = step(PARAMS, state, g)
    per_step_cast.append(np.asarray(pred.probs))
  np.testing.assert_array_equal(probs16, np.stack(per_step_cast, axis=1))
  # bfloat16 rounding, carried around the closed glimpse loop: probabilities within 2e-2 and
  # locations (up to 2.4 here, where bfloat16's spacing is 2^-6) within 5e-2; not zero (the
  # products really ran in bfloat16).
  diff = np.abs(probs16 - probs32).max()
  assert 0 < diff < 2e-2, diff
  np.testing.assert_allclose(locs16, locs32, atol=5e-2)
  np.testing.assert_array_equal(probs16.argmax(-1), probs32.argmax(-1))


def test_int8_heads_quantise_only_the_heads_block_weights_per_output_channel():
  cast = inference.cast_params(PARAMS, 'bfloat16')
  quant = leaves_by_name(inference.quantize_head_weights(cast))
  orig = leaves_by_name(cast)
  scales = [k for k in quant if k.endswith("['kernel_scale']")]
  # qkv, proj, fc1 and fc2 of each of the 2 blocks of Tc and of Tl.
  assert len(scales) == 2 * 2 * 4
  for name in scales:
    kernel = name.replace("['kernel_scale']", "['kernel']")
    values, scale = np.asarray(quant[kernel]), np.asarray(quant[name])
    assert values.dtype == np.int8 and scale.shape == (values.shape[1],)
    assert np.abs(values).max(axis=0).min() == 127  # every column uses the full range
    want = np.asarray(orig[kernel], np.float32)
    assert (np.abs(values * scale - want) <= scale / 2 * (1 + 1e-5)).all(), name
  for name, leaf in orig.items():
    if name not in {s.replace("['kernel_scale']", "['kernel']") for s in scales}:
      assert quant[name] is leaf, name  # Tf, the heads' input projections and output heads


def test_int8_heads_outputs_near_float32_and_not_the_bfloat16_ones():
  probs32, locs32, _ = run_agent(PARAMS, F32)
  probs16, _, _ = run_agent(PARAMS, BF16)
  agent = streaming.GlimpseAgent({'params': PARAMS}, BF16, batch_size=B, int8_heads=True)
  preds = [agent.step(g) for g in GLIMPSES]
  probs8 = np.stack([np.asarray(p.probs) for p in preds], axis=1)
  locs8 = np.stack([np.asarray(p.next_location) for p in preds], axis=1)
  assert np.abs(probs8 - probs16).max() > 0  # the int8 products ran
  assert np.abs(probs8 - probs32).max() < 3e-2
  np.testing.assert_allclose(locs8, locs32, atol=8e-2)
  np.testing.assert_array_equal(probs8.argmax(-1), probs32.argmax(-1))
