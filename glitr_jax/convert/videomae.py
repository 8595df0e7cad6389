"""Official VideoMAE fine-tuned checkpoints (MCG-NJU/VideoMAE) <-> glitr_jax.models.videomae.

The official file holds the state dict under `model` (torch.amp runs) or `module` (DeepSpeed runs,
as VideoMAE's SSv2 fine-tuning is). Every key maps to one parameter by a fixed rule:

  patch_embed.proj.weight  (D, 3, u, p, p)  -> patch_embed/kernel (u, p, p, 3, D)   (Conv3d)
  patch_embed.proj.bias    (D,)             -> patch_embed/bias
  blocks.3.attn.qkv.weight (3D, D)          -> blocks_3/attn/qkv/kernel (D, 3D)    (no qkv bias)
  blocks.3.attn.q_bias     (D,)             -> blocks_3/attn/q_bias
  blocks.3.attn.v_bias     (D,)             -> blocks_3/attn/v_bias
  blocks.3.norm1.weight    (D,)             -> blocks_3/norm1/scale
  fc_norm.weight, head.weight (C, D), ...   -> fc_norm/scale, head/kernel (D, C), ...

PyTorch Linear weights are (out, in) and become (in, out) kernels. The sinusoidal position table is
not in the state dict (the model regenerates it). The expected keys and shapes come from the config,
and every missing, unexpected or mis-shaped key is listed in the error.

A `.pth` is read with torch.load(weights_only=True), which refuses any pickled object that is not a
tensor or a plain container. A training checkpoint that also pickled its argparse arguments is
refused too; if you trust the file, extract its weights once to `.npz` and load that:

  python -c "import sys, torch, numpy as np; sd = torch.load(sys.argv[1], map_location='cpu', \
      weights_only=False); sd = sd.get('module') or sd['model']; \
      np.savez(sys.argv[2], **{k: v.float().numpy() for k, v in sd.items()})" ckpt.pth ckpt.npz
"""

import os
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from glitr_jax.convert import common
from glitr_jax.models import videomae

Params = Any


def videomae_key(path: tuple[str, ...]) -> str:
  """The official state-dict key of a parameter path, e.g. ('blocks_0', 'attn', 'q_bias')."""
  parts = []
  for i, name in enumerate(path):
    last = i == len(path) - 1
    if name.startswith('blocks_'):
      parts += ['blocks', name[len('blocks_') :]]
    elif name == 'patch_embed':
      parts += ['patch_embed', 'proj']
    elif last and name in ('kernel', 'scale'):
      parts.append('weight')
    else:
      parts.append(name)
  return '.'.join(parts)


def _is_conv(path: tuple[str, ...]) -> bool:
  return path == ('patch_embed', 'kernel')


def to_torch_layout(path: tuple[str, ...], value: np.ndarray) -> np.ndarray:
  """A parameter in the official (PyTorch) layout."""
  value = np.asarray(value)
  if _is_conv(path):
    return value.transpose(4, 3, 0, 1, 2)  # (u, p, p, C, D) -> (D, C, u, p, p)
  if path[-1] == 'kernel':
    return value.T  # (in, out) -> (out, in)
  return value


def to_flax_layout(path: tuple[str, ...], value: np.ndarray) -> np.ndarray:
  """An official (PyTorch) tensor in the Flax layout; the inverse of `to_torch_layout`."""
  value = np.asarray(value)
  if _is_conv(path):
    return value.transpose(2, 3, 4, 1, 0)  # (D, C, u, p, p) -> (u, p, p, C, D)
  if path[-1] == 'kernel':
    return value.T
  return value


def _model(config_or_kwargs: Mapping[str, Any] | videomae.VideoMAE) -> videomae.VideoMAE:
  if isinstance(config_or_kwargs, videomae.VideoMAE):
    return config_or_kwargs
  return videomae.VideoMAE.from_config(config_or_kwargs)


def param_shapes(
  config_or_kwargs: Mapping[str, Any] | videomae.VideoMAE,
) -> dict[tuple[str, ...], tuple[int, ...]]:
  """Parameter path -> shape of the model the config defines (traced, nothing computed)."""
  model = _model(config_or_kwargs)
  clip = jax.ShapeDtypeStruct(
    (1, model.num_frames, model.image_size, model.image_size, 3), jnp.float32
  )
  shapes = jax.eval_shape(model.init, jax.random.key(0), clip)['params']
  flat = jax.tree_util.tree_flatten_with_path(shapes)[0]
  return {tuple(k.key for k in path): tuple(leaf.shape) for path, leaf in flat}


def expected_state_dict_shapes(
  config_or_kwargs: Mapping[str, Any] | videomae.VideoMAE,
) -> dict[str, tuple[int, ...]]:
  """Official key -> PyTorch shape, for the model the config defines."""
  return {
    videomae_key(path): to_torch_layout(path, np.empty(shape, np.float32)).shape
    for path, shape in param_shapes(config_or_kwargs).items()
  }


def _unflatten(flat: Mapping[tuple[str, ...], Any]) -> dict:
  tree: dict = {}
  for path, value in flat.items():
    node = tree
    for name in path[:-1]:
      node = node.setdefault(name, {})
    node[path[-1]] = value
  return tree


def from_state_dict(
  state: Mapping[str, np.ndarray],
  config_or_kwargs: Mapping[str, Any] | videomae.VideoMAE,
  source: str = '<mapping>',
) -> Params:
  """Official state dict -> VideoMAE parameters (strict: every key, no extra, right shapes).

  Raises:
    ValueError: listing every missing, unexpected and mis-shaped key.
  """
  shapes = param_shapes(config_or_kwargs)
  expected = {
    videomae_key(p): to_torch_layout(p, np.empty(s, np.float32)).shape for p, s in shapes.items()
  }
  common.check_keys(state, expected, source)
  flat = {
    path: jnp.asarray(to_flax_layout(path, state[videomae_key(path)]), jnp.float32)
    for path in shapes
  }
  return _unflatten(flat)


def to_state_dict(params: Params) -> dict[str, np.ndarray]:
  """VideoMAE parameters -> official state dict (numpy arrays, PyTorch layouts)."""
  flat = jax.tree_util.tree_flatten_with_path(params)[0]
  out = {}
  for key_path, leaf in flat:
    path = tuple(k.key for k in key_path)
    out[videomae_key(path)] = to_torch_layout(path, np.asarray(leaf))
  return out


def load_videomae(
  source: str | os.PathLike | Mapping[str, Any],
  config_or_kwargs: Mapping[str, Any] | videomae.VideoMAE,
) -> dict[str, Params]:
  """Loads an official VideoMAE fine-tuned checkpoint.

  Args:
    source: a `.pth` file (the state dict under `model` or `module`, read weights-only; torch
      needed), an `.npz` file of the state-dict keys, or a mapping of those keys to arrays.
    config_or_kwargs: the model's sizes: `config.offline.videomae`, a mapping of
      glitr_jax.models.videomae.CONFIG_FIELDS (missing ones take ViT-B/16 defaults), or a
      VideoMAE module.

  Returns:
    {'params': VideoMAE parameters}, float32, for `VideoMAE.apply`.

  Raises:
    FileNotFoundError: the file does not exist.
    ValueError: the file is not a weights-only checkpoint, or its keys do not match the config
      (every missing, unexpected and mis-shaped key is listed).
  """
  name = '<mapping>' if isinstance(source, Mapping) else os.fspath(source)
  state = common.read_state_dict(source)
  return {'params': from_state_dict(state, config_or_kwargs, name)}
