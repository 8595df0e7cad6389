"""ImageNet ViT state dicts (timm / DeiT / iBOT naming) -> Tf's parameters.

The paper's SSv2 teacher starts Tf from iBOT's ImageNet ViT-S/16. Those checkpoints, DeiT's
`.pth` and timm's hub uploads (`model.safetensors` of e.g. timm/vit_small_patch16_224.augreg_in21k_
ft_in1k or timm/deit_small_patch16_224.fb_in1k, alone or in the hub's directory) share timm's key
names: `cls_token`, `pos_embed`, `patch_embed.proj.*`, `blocks.N.{norm1, attn.qkv, attn.proj,
norm2, mlp.fc1, mlp.fc2}.*`, `norm.*`. They store one position embedding `pos_embed`
(1, 1 + G*G, D) whose first row belongs to the class token; GliTr keeps that row as `cls_embed` and
the G x G patch grid as `pos_embed` (docs/design.md 1.2), as the official code does. A
classification head (`head.*`), iBOT's `masked_embed` and DINO/iBOT projection heads are not part
of Tf and are ignored; anything else unknown is an error.
"""

import os
from collections.abc import Mapping
from typing import Any

import ml_collections
import numpy as np

from glitr_jax.convert import common, official

# Prefixes under which training frameworks nest the ViT (iBOT/DINO: 'backbone.', DDP: 'module.').
_PREFIXES = ('module.', 'backbone.', 'encoder.')
_IGNORED = ('head.', 'head_dist.', 'fc_norm.')


def _strip_prefixes(state: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
  state = dict(state)
  changed = True
  while changed and state:
    changed = False
    for prefix in _PREFIXES:
      if 'cls_token' not in state and any(k == prefix + 'cls_token' for k in state):
        state = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
        changed = True
  return state


def _ignored(key: str) -> bool:
  return key.startswith(_IGNORED) or key == 'masked_embed'


# Tf's parameters without the leading 'backbone', under official.py's rules for the full path.
def _key(path: tuple[str, ...]) -> str:
  return official.official_key(('backbone',) + path)[len('backbone.') :]


def _to_flax(path: tuple[str, ...], value: np.ndarray) -> np.ndarray:
  return official.to_flax_layout(('backbone',) + path, value)


def _to_torch(path: tuple[str, ...], value: np.ndarray) -> np.ndarray:
  return official.to_torch_layout(('backbone',) + path, value)


_LAYOUT = common.StateDictLayout(_key, _to_flax, _to_torch)


def backbone_from_state_dict(
  state: Mapping[str, np.ndarray], backbone_shapes: Mapping[tuple[str, ...], tuple], source: str
) -> dict:
  """timm-named ViT state dict -> the 'backbone' parameter subtree.

  Args:
    state: the state dict (keys `cls_token`, `pos_embed`, `patch_embed.proj.*`, `blocks.N.*`,
      `norm.*`).
    backbone_shapes: path (without the leading 'backbone') -> shape, from the model config.
    source: name for errors.

  Returns:
    The 'backbone' parameter subtree (float32 jax arrays).

  Raises:
    ValueError: a pos_embed without its class-token row, or every missing, unexpected and
      mis-shaped key.
  """
  state = _strip_prefixes(state)
  if 'pos_embed' in state:
    pos = np.asarray(state['pos_embed'])
    if pos.ndim != 3 or pos.shape[1] < 2:
      raise ValueError(f'{source}: pos_embed has shape {pos.shape}, expected (1, 1 + G*G, D)')
    grid = backbone_shapes.get(('pos_embed',), (0, 0))[1]
    if pos.shape[1] == grid:
      raise ValueError(
        f'{source}: pos_embed {pos.shape} has no class-token position (a timm ViT with '
        f'no_embed_class=True); Tf needs (1, 1 + {grid}, D): the class row becomes cls_embed'
      )
    state = dict(state)
    state['cls_embed'] = pos[:, :1]
    state['pos_embed'] = pos[:, 1:]
  return _LAYOUT.params_from_state_dict(state, backbone_shapes, source, ignore=_ignored)


def load_vit_backbone(
  source: str | os.PathLike | Mapping[str, Any], model_config: ml_collections.ConfigDict
) -> dict:
  """Reads an ImageNet ViT checkpoint into Tf's parameters.

  Args:
    source: the checkpoint: a timm `model.safetensors`, a timm hub directory (`config.json` +
      `model.safetensors` or `pytorch_model.bin`), a DeiT/iBOT `.pth`, an `.npz`, or a mapping;
      the state dict may be bare or under `model`/`state_dict`/..., and nested under
      `backbone.`/`module.`.
    model_config: the GliTr model config whose Tf the weights are for.

  Returns:
    The 'backbone' parameter subtree (float32 jax arrays).

  Raises:
    FileNotFoundError: the file does not exist, or a directory holds no weights.
    ValueError: non-finite weights (named), or every missing, unexpected and mis-shaped key.
  """
  name = '<mapping>' if isinstance(source, Mapping) else os.fspath(source)
  shapes = {
    path[1:]: shape
    for path, shape in official.param_shapes(model_config).items()
    if path[0] == 'backbone'
  }
  return backbone_from_state_dict(common.read_state_dict(source), shapes, name)
