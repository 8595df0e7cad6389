"""Official GliTr checkpoints (facebookresearch/GliTr) <-> glitr-jax parameters.

The official file is `torch.save({'model': state_dict, 'optimizerB': ..., ...})` with keys
(docs/design.md 1.7) `backbone.*` (Tf), `temporal_head.*` (Tc) and `temploc_head.*` (Tl).
Every key maps to one parameter of `glitr_jax.models.glitr.GliTr` by a fixed rule:

  backbone.blocks.3.attn.qkv.weight        (3D, D)      -> backbone/blocks_3/attn/qkv/kernel (D,3D)
  backbone.patch_embed.proj.weight          (D, 3, p, p) -> backbone/patch_embed/kernel (p, p, 3, D)
  backbone.norm.weight                      (D,)         -> backbone/norm/scale
  temporal_head.patch_embed.embed_layer.0.* (Linear)     -> temporal_head/embed_proj/*
  temporal_head.patch_embed.embed_layer.1.* (LayerNorm)  -> temporal_head/embed_norm/*
  temploc_head.init_loc                     (1, 1, 2)    -> temploc_head/init_loc (2,)

PyTorch Linear weights are (out, in) and become (in, out) kernels; the fused qkv keeps its q, k, v
order along the output axis. The rule is applied to the parameter tree the model config defines, so
the expected key set and shapes come from the config, and any difference is listed in the error.
"""

import os
from collections.abc import Mapping
from typing import Any

import jax
import ml_collections
import numpy as np

from glitr_jax.convert import common
from glitr_jax.models import glitr

Params = Any
_CONV = 'patch_embed'  # the ViT's patch embedding: a PyTorch Conv2d
# Module names of the official code where glitr-jax's differ: timm's, and Tc's and Tl's embedding.
_NAMES = {
  **common.TIMM_NAMES,
  'embed_proj': 'patch_embed.embed_layer.0',
  'embed_norm': 'patch_embed.embed_layer.1',
}


def official_key(path: tuple[str, ...]) -> str:
  """The official state-dict key of a parameter path, e.g. ('backbone', 'blocks_0', ...)."""
  return common.torch_key(path, _NAMES)


def _is_conv(path: tuple[str, ...]) -> bool:
  return path[0] == 'backbone' and _CONV in path and path[-1] == 'kernel'


def to_torch_layout(path: tuple[str, ...], value: np.ndarray) -> np.ndarray:
  """A glitr-jax parameter in the official (PyTorch) layout."""
  value = np.asarray(value)
  if _is_conv(path):
    return value.transpose(3, 2, 0, 1)  # (p, p, C, D) -> (D, C, p, p)
  if path[-1] == 'kernel':
    return value.T  # (in, out) -> (out, in)
  if path[-1] == 'init_loc':
    return value.reshape(1, 1, 2)
  return value


def to_flax_layout(path: tuple[str, ...], value: np.ndarray) -> np.ndarray:
  """An official (PyTorch) tensor in glitr-jax's layout; the inverse of `to_torch_layout`."""
  value = np.asarray(value)
  if _is_conv(path):
    return value.transpose(2, 3, 1, 0)
  if path[-1] == 'kernel':
    return value.T
  if path[-1] == 'init_loc':
    return value.reshape(2)
  return value


LAYOUT = common.StateDictLayout(official_key, to_flax_layout, to_torch_layout)


def param_shapes(model_config: ml_collections.ConfigDict) -> dict[tuple[str, ...], tuple]:
  """Parameter path -> shape of the GliTr the config defines (traced, nothing computed)."""
  model = glitr.GliTr.from_config(model_config)
  shapes = common.flatten(jax.eval_shape(model.init, jax.random.key(0)))
  return {path: tuple(leaf.shape) for path, leaf in shapes.items()}


def expected_state_dict_shapes(model_config: ml_collections.ConfigDict) -> dict[str, tuple]:
  """Official key -> PyTorch shape, for the model the config defines."""
  return LAYOUT.torch_shapes(param_shapes(model_config))


def from_state_dict(
  state: Mapping[str, np.ndarray],
  model_config: ml_collections.ConfigDict,
  source: str = '<mapping>',
) -> Params:
  """Official state dict -> GliTr parameters (strict: every key, no extra, right shapes).

  Args:
    state: the official state dict (the `model` entry of the release's file).
    model_config: the model config the checkpoint was trained with.
    source: what to name in the error.

  Returns:
    GliTr parameters (float32 jax arrays).

  Raises:
    ValueError: listing every missing, unexpected and mis-shaped key.
  """
  return LAYOUT.params_from_state_dict(state, param_shapes(model_config), source)


# GliTr parameters -> official state dict (numpy arrays, PyTorch layouts).
to_state_dict = LAYOUT.state_dict_from_params


def load_official(
  source: str | os.PathLike | Mapping[str, Any], model_config: ml_collections.ConfigDict
) -> dict[str, Params]:
  """Loads an official GliTr checkpoint.

  Args:
    source: a `.pth` file (`torch.save({'model': state_dict, ...})`, read weights-only; torch
      needed), a `.safetensors` or `.npz` file of the state-dict keys (as
      `python -m glitr_jax.convert.export` writes them), a Hugging Face hub directory holding
      one, or a mapping of those keys to arrays.
    model_config: the model config the checkpoint was trained with (glitr_jax.models.config).

  Returns:
    {'params': GliTr parameters}, ready for glitr_jax.inference.

  Raises:
    FileNotFoundError: the file does not exist.
    ValueError: a file that is not what its name says, non-finite weights (named), or a state
      dict not matching the config (every missing, unexpected and mis-shaped key listed).
  """
  name = '<mapping>' if isinstance(source, Mapping) else os.fspath(source)
  state = common.read_state_dict(source)
  return {'params': from_state_dict(state, model_config, name)}
