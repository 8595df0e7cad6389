"""Public inference API: jit-compiled, deterministic teacher and student forwards.

    variables = glitr_jax.convert.load_official('glitr_ssv2_student.pth', model_config)
    out = glitr_jax.inference.student_forward(variables, model_config, frames)
    out['logits']     # (B, T, C): y_t from glimpses 1..t
    out['locations']  # (B, T, 2): where glimpse t was taken; [:, 0] is the initial location
    out['features']   # (B, T, D): glimpse features

`frames` is (B, T, H, W, 3) float32, ImageNet-normalised. Compiled functions are cached per model
config, so repeated calls with the same config and shapes do not recompile.

For low-precision inference, store the weights once in the compute dtype:

    params = glitr_jax.inference.cast_params(variables['params'], model_config.compute_dtype)

The model then reads them as they are, instead of casting every weight matrix at every call (the
streaming agent does this itself).
"""

import functools
import json
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections

from glitr_jax.models import glitr, layers

Variables = Any


def config_key(model_config: ml_collections.ConfigDict) -> str:
  """A hashable key of a model config: its fields as sorted JSON."""
  return json.dumps(model_config.to_dict(), sort_keys=True)


@functools.lru_cache(maxsize=32)
def _model(key: str) -> glitr.GliTr:
  return glitr.GliTr.from_config(ml_collections.ConfigDict(json.loads(key)))


def model_for(model_config: ml_collections.ConfigDict) -> glitr.GliTr:
  """The (cached) GliTr built from a model config."""
  return _model(config_key(model_config))


@functools.lru_cache(maxsize=64)
def _compiled(key: str, build: Callable[[glitr.GliTr], Any]) -> Any:
  return build(_model(key))


def compiled(model_config: ml_collections.ConfigDict, build: Callable[[glitr.GliTr], Any]) -> Any:
  """What `build(model)` returns (jitted functions), built once per model config and builder.

  The one cache of compiled functions keyed by config (this module's forwards, the streaming
  agent's init and step): `build` must be a module-level function, so that its identity is
  stable, and it should jit what it returns; parameters stay arguments of those functions, so
  new weights reuse the compiled code.
  """
  return _compiled(config_key(model_config), build)


def is_product_weight(path: tuple[Any, ...], leaf: Any) -> bool:
  """Whether a parameter is the weight matrix of a product: a 'kernel' leaf of two or more axes.

  Those are Tf's, Tc's and Tl's linear and patch-embedding weights, all but a few hundred
  kilobytes of the parameters. Biases, LayerNorm scales and biases, position and class-token
  embeddings and init_loc are the others.
  """
  name = getattr(path[-1], 'key', path[-1]) if path else None
  return name == 'kernel' and getattr(leaf, 'ndim', 0) >= 2


def cast_params(params: Any, compute_dtype: Any) -> Any:
  """Parameters stored for inference in `compute_dtype` (a model config's `compute_dtype`).

  The product weights (`is_product_weight`) are cast to `compute_dtype` once; every other leaf
  stays as it is. The model casts each weight to its compute dtype where it is used, so that
  cast becomes the identity: the forwards' outputs are the same as with the original parameters,
  and a jitted step takes low-precision weights as its inputs instead of converting all of them
  at every call. For float32 the tree is returned unchanged (the same arrays).

  Args:
    params: a GliTr parameter tree (the 'params' of the variables).
    compute_dtype: 'float32' or 'bfloat16' (or a dtype).

  Raises:
    ValueError: compute_dtype is not a floating dtype.
  """
  dtype = jnp.dtype(compute_dtype)
  if not jnp.issubdtype(dtype, jnp.floating):
    raise ValueError(f'model.compute_dtype={compute_dtype!r}: a floating dtype is needed')
  if dtype == jnp.float32:
    return params
  return jax.tree_util.tree_map_with_path(
    lambda path, x: x.astype(dtype) if is_product_weight(path, x) else x, params
  )


HEADS = ('temporal_head', 'temploc_head')


def quantize_head_weights(params: Any) -> Any:
  """Tc's and Tl's block weights stored in int8, for inference on CPUs.

  Every (I, O) kernel inside the heads' blocks (qkv, proj, fc1, fc2: all but a few hundred
  kilobytes of Tc and Tl) becomes int8 values with one float32 scale per output channel
  (`layers.quantize_kernel`), stored as 'kernel' and 'kernel_scale'; the model then multiplies
  int8 rows of its activations by them (`layers.linear`). Tf, the heads' input projection and
  output head, and every other leaf are returned as they are. Apply it after `cast_params`.
  """

  def quantize(tree: Any, in_block: bool) -> Any:
    if not isinstance(tree, dict):
      return tree
    kernel = tree.get('kernel')
    if in_block and kernel is not None and getattr(kernel, 'ndim', 0) == 2:
      q = layers.quantize_kernel(kernel)
      return {**tree, 'kernel': q.values_io, 'kernel_scale': q.scale_o}
    return {k: quantize(v, in_block or k.startswith('blocks_')) for k, v in tree.items()}

  missing = [name for name in HEADS if name not in params]
  if missing:
    raise ValueError(f'params have no {missing}: not GliTr parameters')
  return {k: quantize(v, False) if k in HEADS else v for k, v in params.items()}


def _student(model: glitr.GliTr):
  return jax.jit(lambda params, frames: model.student_forward(params, frames))


def _student_at(model: glitr.GliTr):
  return jax.jit(lambda params, frames, locs: model.student_forward(params, frames, locations=locs))


def _teacher(model: glitr.GliTr):
  return jax.jit(lambda params, frames: model.teacher_forward(params, frames))


def _params(variables: Variables) -> Any:
  if 'params' not in variables:
    raise ValueError("variables must be {'params': ...} (as glitr_jax.convert.load_official gives)")
  return variables['params']


def student_forward(
  variables: Variables,
  model_config: ml_collections.ConfigDict,
  frames: jax.Array,
  locations: jax.Array | None = None,
) -> dict[str, jax.Array]:
  """GliTr (the student) on frames: Algorithm 1, deterministic.

  Args:
    variables: {'params': GliTr parameters}.
    model_config: the model config the parameters belong to.
    frames: (B, T, H, W, 3) normalised frames, T <= model_config.num_frames.
    locations: optional (B, T, 2) locations replacing Tl's (glimpse-strategy baselines).

  Returns:
    dict with logits (B, T, C), locations (B, T, 2), features (B, T, D).
  """
  if locations is None:
    return compiled(model_config, _student)(_params(variables), frames)
  return compiled(model_config, _student_at)(_params(variables), frames, locations)


def teacher_forward(
  variables: Variables, model_config: ml_collections.ConfigDict, frames: jax.Array
) -> dict[str, jax.Array]:
  """The teacher on full frames, deterministic.

  Returns:
    dict with logits (B, T, C), locations (B, T, 2) (init_loc, then Tl's predictions 2..T),
    features (B, T, D) (full-frame features).
  """
  return compiled(model_config, _teacher)(_params(variables), frames)
