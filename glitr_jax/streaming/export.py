"""Exports the streaming step with `jax.export`, for `glitr_jax.export_runtime` to run.

The exported functions take and return flat lists of arrays (parameters, state) and a dict of
prediction fields: only standard containers cross the serialization boundary, so the loader
needs no Flax pytree classes. The directory layout and why the weights are an input rather than
baked constants are described in glitr_jax/export_runtime.py.
"""

import json
import os
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging

from glitr_jax import export_runtime, inference, pixels
from glitr_jax.streaming import agent as agent_lib

# Lowered for the CPU and CUDA GPUs by default (cross-platform lowering works on any host); the
# artifact then runs on either. Add 'tpu' or 'rocm' with export_agent(platforms=...).
DEFAULT_PLATFORMS = ('cpu', 'cuda')


def _path_name(path: tuple[Any, ...]) -> str:
  return '/'.join(str(getattr(k, 'key', k)) for k in path)


def export_agent(
  variables: dict[str, Any],
  model_config: ml_collections.ConfigDict,
  directory: str | os.PathLike,
  *,
  class_names: Sequence[str] | None = None,
  platforms: Sequence[str] | None = DEFAULT_PLATFORMS,
  int8_heads: bool = False,
) -> dict:
  """Writes the streaming agent's init and step functions, weights and meta.json.

  The weights are stored as `GlimpseAgent` keeps them (`agent.stored_params`): in the model
  config's compute_dtype (bfloat16 as its 16 bits, uint16 in weights.npz), and with
  `int8_heads` the heads' block weights in int8 with their scales.

  Args:
    variables: {'params': GliTr parameters}.
    model_config: their model config.
    directory: the export directory (created; existing export files are overwritten).
    class_names: names of the C classes, stored in meta.json when given.
    platforms: platforms to lower for (see jax.export.export); None = the default backend.
    int8_heads: store Tc's and Tl's block weights in int8 (GlimpseAgent's `int8_heads`).

  Returns:
    The meta.json contents.
  """
  model = inference.model_for(model_config)
  params = agent_lib.stored_params(variables['params'], model_config, int8_heads)
  if class_names is not None and len(class_names) != model_config.num_classes:
    raise ValueError(
      f'{len(class_names)} class names for model.num_classes={model_config.num_classes}'
    )
  flat, params_def = jax.tree_util.tree_flatten_with_path(params)
  names = [_path_name(path) for path, _ in flat]
  leaves = [np.asarray(leaf) for _, leaf in flat]
  param_specs = [jax.ShapeDtypeStruct(x.shape, x.dtype) for x in leaves]
  # One symbolic batch dimension: the artifact runs any number of streams.
  (b,) = jax.export.symbolic_shape('b')
  ids_spec = jax.ShapeDtypeStruct((b,), jnp.int32)
  state_def = jax.tree.structure(
    jax.eval_shape(lambda p: agent_lib.init_state(model, p, 1)[0], params)
  )

  def init_fn(params_leaves, ids_b):
    state, first_b2 = agent_lib.init_state(
      model, jax.tree.unflatten(params_def, params_leaves), ids_b.shape[0]
    )
    return jax.tree.leaves(state), first_b2

  def step_fn(params_leaves, state_leaves, glimpses_bggc, gamma):
    state, prediction = agent_lib.agent_step(
      model,
      jax.tree.unflatten(params_def, params_leaves),
      jax.tree.unflatten(state_def, state_leaves),
      glimpses_bggc,
      gamma,
    )
    return jax.tree.leaves(state), prediction._asdict()

  platforms = None if platforms is None else tuple(platforms)
  exported_init = jax.export.export(jax.jit(init_fn), platforms=platforms)(param_specs, ids_spec)
  state_specs = [jax.ShapeDtypeStruct(a.shape, a.dtype) for a in exported_init.out_avals[:-1]]
  g = model.glimpse_pixels
  exported_step = jax.export.export(jax.jit(step_fn), platforms=platforms)(
    param_specs,
    state_specs,
    jax.ShapeDtypeStruct((b, g, g, 3), jnp.float32),
    jax.ShapeDtypeStruct((), jnp.float32),
  )

  directory = os.fspath(directory)
  os.makedirs(directory, exist_ok=True)
  files = {
    'init': export_runtime.INIT_FILE,
    'step': export_runtime.STEP_FILE,
    'weights': export_runtime.WEIGHTS_FILE,
  }
  for key, exported in (('init', exported_init), ('step', exported_step)):
    with open(os.path.join(directory, files[key]), 'wb') as f:
      f.write(exported.serialize())
  stored = [export_runtime.to_stored(x) for x in leaves]
  np.savez(os.path.join(directory, files['weights']), **dict(zip(names, stored, strict=True)))
  meta = {
    'format': export_runtime.FORMAT,
    'jax_version': jax.__version__,
    'platforms': list(exported_step.platforms),
    'files': files,
    'image_size': model.image_size,
    'glimpse_pixels': g,
    'num_frames': model.num_frames,
    'num_classes': model_config.num_classes,
    'class_names': None if class_names is None else list(class_names),
    'pixels': {
      'layout': '(B, g, g, 3) float32 RGB, ImageNet-normalised: (x / 255 - mean) / std',
      'mean': pixels.IMAGENET_MEAN.tolist(),
      'std': pixels.IMAGENET_STD.tolist(),
    },
    'locations': '(lx, ly) normalised frame coordinates; +-1 = centres of the corner pixels, '
    'ly points down; a glimpse of g px spans +-g/image_size around its centre',
    'prediction': {
      'probs': '(B, C) float32',
      'label': '(B,) int32',
      'confidence': '(B,) float32',
      'next_location': '(B, 2) float32',
      'done': '(B,) bool',
    },
    'param_names': names,
    'num_params': int(sum(x.size for x in leaves)),
    'model_config': model_config.to_dict(),
  }
  with open(os.path.join(directory, export_runtime.META_FILE), 'w') as f:
    json.dump(meta, f, indent=1)
  logging.info(
    'Exported the streaming step (%s, %d parameters) to %s',
    ', '.join(meta['platforms']),
    meta['num_params'],
    directory,
  )
  return meta
