"""Public inference API: jit-compiled, deterministic teacher and student forwards.

    variables = glitr_jax.convert.load_official('glitr_ssv2_student.pth', model_config)
    out = glitr_jax.inference.student_forward(variables, model_config, frames)
    out['logits']     # (B, T, C): y_t from glimpses 1..t
    out['locations']  # (B, T, 2): where glimpse t was taken; [:, 0] is the initial location
    out['features']   # (B, T, D): glimpse features

`frames` is (B, T, H, W, 3) float32, ImageNet-normalised. Compiled functions are cached per model
config, so repeated calls with the same config and shapes do not recompile.
"""

import functools
import json
from collections.abc import Callable
from typing import Any

import jax
import ml_collections

from glitr_jax.models import glitr

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
