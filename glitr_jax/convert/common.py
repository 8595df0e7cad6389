"""Reading checkpoint files safely as state dicts, and matching them against a parameter tree.

A state dict comes from
  a `.safetensors` file (read through `safetensors.numpy`: no torch needed, no code can run),
  an `.npz` file (no torch needed; `np.load(allow_pickle=False)`),
  a `.pth` / `.pt` / `.bin` / `.ckpt` file (read with `torch.load(..., weights_only=True)`: a
    checkpoint must never be able to run code; torch is an optional dependency),
  a sharded checkpoint's index (`model.safetensors.index.json`, `pytorch_model.bin.index.json`),
  a directory as the Hugging Face hub leaves it (`config.json` beside `model.safetensors`, its
    sharded form, or `pytorch_model.bin`; `read_hub_config` reads the `config.json`),
  or any mapping of key -> array.
Every floating-point entry must be finite: a NaN or Inf is refused at import, naming the key.

A converter (official.py, videomae.py, timm_vit.py) is a `StateDictLayout`: three functions of a
parameter path, e.g. ('blocks_0', 'attn', 'qkv', 'kernel'), giving its state-dict key and its
tensor in the PyTorch and in the Flax layout, which the layout applies to a whole tree.
"""

import dataclasses
import json
import os
import zipfile
from collections.abc import Callable, Mapping
from typing import Any

# ml_dtypes (a JAX dependency) registers bfloat16 with numpy, so that safetensors.numpy can read
# bfloat16 checkpoints, as hub uploads often are.
import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import safetensors
import safetensors.numpy

StateDict = dict[str, np.ndarray]
ParamPath = tuple[str, ...]  # a path in the Flax tree, e.g. ('backbone', 'norm', 'scale')
KeyFn = Callable[[ParamPath], str]  # path -> state-dict key
LayoutFn = Callable[[ParamPath, np.ndarray], np.ndarray]  # path, tensor -> tensor in another layout
# Wrappers under which training scripts store the model's state dict.
WRAPPER_KEYS = ('model', 'module', 'state_dict', 'model_state')
TORCH_SUFFIXES = ('.pth', '.pt', '.bin', '.ckpt')
# The weight files of a Hugging Face hub directory, in the order they are preferred.
HUB_WEIGHT_FILES = (
  'model.safetensors',
  'model.safetensors.index.json',
  'pytorch_model.bin',
  'pytorch_model.bin.index.json',
)
HUB_CONFIG_FILE = 'config.json'


def _to_numpy(value: Any, key: str) -> np.ndarray:
  if hasattr(value, 'detach'):  # a torch.Tensor
    value = value.detach().cpu()
    if str(value.dtype) == 'torch.bfloat16':
      value = value.float()
    value = value.numpy()
  array = np.asarray(value)
  if array.dtype == object:
    raise ValueError(
      f'state-dict entry {key!r} is not a numeric array (got {type(value).__name__})'
    )
  if array.dtype == ml_dtypes.bfloat16:
    array = array.astype(np.float32)
  return array


def _load_pth(path: str) -> Any:
  try:
    import torch  # noqa: PLC0415 (optional dependency, only for PyTorch pickles)
  except ImportError as e:
    raise ImportError(
      f'Reading {path} needs PyTorch (pip install torch); or convert it once to .safetensors '
      '(safetensors.torch.save_file(state_dict, out)) or .npz and load that.'
    ) from e
  try:
    return torch.load(path, map_location='cpu', weights_only=True)
  except Exception as e:  # torch raises UnpicklingError for anything but tensors and containers
    raise ValueError(
      f'{path}: not a weights-only PyTorch checkpoint ({type(e).__name__}: {e}). Checkpoints are '
      'read with torch.load(weights_only=True), which refuses pickled code.'
    ) from e


def _load_npz(path: str) -> dict[str, np.ndarray]:
  # np.load on a file that is not a zip archive falls back to unpickling, and with
  # allow_pickle=False says only "Cannot load file containing pickled data": name the file.
  if not zipfile.is_zipfile(path):
    raise ValueError(f'{path}: not an .npz archive (the file is not a zip archive)')
  try:
    with np.load(path, allow_pickle=False) as data:
      return {k: data[k] for k in data.files}
  except (ValueError, OSError, zipfile.BadZipFile, EOFError) as e:
    raise ValueError(f'{path}: not a readable .npz archive of arrays ({e})') from e


def _load_safetensors(path: str) -> dict[str, np.ndarray]:
  try:
    return safetensors.numpy.load_file(path)
  except (safetensors.SafetensorError, OSError, TypeError) as e:
    raise ValueError(f'{path}: not a readable .safetensors file ({e})') from e


def _load_sharded(index_path: str) -> dict[str, Any]:
  """The state dict of a sharded checkpoint: its index's `weight_map` names each key's shard."""
  try:
    with open(index_path) as f:
      weight_map = json.load(f)['weight_map']
  except (ValueError, KeyError, TypeError) as e:  # invalid JSON, or no {"weight_map": {...}}
    kind = type(e).__name__
    raise ValueError(f'{index_path}: not a sharded-checkpoint index ({kind}: {e})') from e
  folder = os.path.dirname(index_path)
  state: dict[str, Any] = {}
  for shard in sorted(set(weight_map.values())):
    shard_path = os.path.join(folder, shard)
    if not os.path.exists(shard_path):
      raise FileNotFoundError(f'{index_path} names shard {shard}, which is not in {folder}')
    shard_state = unwrap(_load_file(shard_path), shard_path)
    state.update({str(k): v for k, v in shard_state.items()})
  missing = sorted(set(weight_map) - set(state))
  if missing:
    raise ValueError(f'{index_path}: keys its weight_map names are not in the shards: {missing}')
  return state


def _load_file(path: str) -> Any:
  if path.endswith('.index.json'):
    return _load_sharded(path)
  if path.endswith('.safetensors'):
    return _load_safetensors(path)
  if path.endswith('.npz'):
    return _load_npz(path)
  if path.endswith(TORCH_SUFFIXES):
    return _load_pth(path)
  raise ValueError(
    f'{path}: unknown checkpoint type (expected .safetensors, .npz, .pth, .pt, .bin, .ckpt, a '
    'sharded .index.json, or a Hugging Face hub directory)'
  )


def hub_weights_file(directory: str) -> str:
  """The weight file of a Hugging Face hub directory (safetensors preferred).

  Raises:
    FileNotFoundError: the directory holds none of `HUB_WEIGHT_FILES`.
  """
  for name in HUB_WEIGHT_FILES:
    path = os.path.join(directory, name)
    if os.path.isfile(path):
      return path
  raise FileNotFoundError(
    f'{directory}: no weights in this directory (expected one of {", ".join(HUB_WEIGHT_FILES)})'
  )


def read_hub_config(source: str | os.PathLike | Mapping[str, Any]) -> dict[str, Any] | None:
  """The `config.json` of a hub directory (or beside a weight file in one), or None if none."""
  if isinstance(source, Mapping):
    return None
  name = os.fspath(source)
  folder = name if os.path.isdir(name) else os.path.dirname(name)
  path = os.path.join(folder, HUB_CONFIG_FILE)
  if not os.path.isfile(path):
    return None
  try:
    with open(path) as f:
      config = json.load(f)
  except ValueError as e:
    raise ValueError(f'{path}: not valid JSON ({e})') from e
  if not isinstance(config, dict):
    raise ValueError(f'{path}: expected a JSON object, got {type(config).__name__}')
  return config


def unwrap(obj: Any, source: str = '<mapping>') -> Mapping[str, Any]:
  """Returns the state dict inside a checkpoint object (bare, or under `model`/`module`/...)."""
  if not isinstance(obj, Mapping):
    raise ValueError(f'{source}: expected a state dict (a mapping), got {type(obj).__name__}')
  for key in WRAPPER_KEYS:
    inner = obj.get(key)
    if isinstance(inner, Mapping) and inner:
      return unwrap(inner, f'{source}[{key!r}]')
  return obj


def check_finite(state: Mapping[str, np.ndarray], source: str) -> None:
  """Raises ValueError naming every floating-point entry that holds a NaN or an Inf."""
  bad = []
  for key, value in state.items():
    if np.issubdtype(value.dtype, np.inexact) and not np.isfinite(value).all():
      nan, inf = int(np.isnan(value).sum()), int(np.isinf(value).sum())
      bad.append(f'{key} ({nan} NaN, {inf} Inf of {value.size})')
  if bad:
    raise ValueError(f'{source}: non-finite weights in {len(bad)} entries: {", ".join(bad)}')


def read_state_dict(source: str | os.PathLike | Mapping[str, Any]) -> StateDict:
  """Reads a state dict from a file, a hub directory or a mapping, as key -> numpy array.

  Args:
    source: a `.safetensors`, `.npz` or PyTorch (`.pth`, `.pt`, `.bin`, `.ckpt`) file, a sharded
      checkpoint's `.index.json`, a Hugging Face hub directory (see `HUB_WEIGHT_FILES`), or a
      mapping of key -> array. The state dict may be bare or under `model`/`module`/... .

  Returns:
    key -> numpy array; a leading `module.` (DistributedDataParallel) on every key is removed.

  Raises:
    FileNotFoundError: the path does not exist, or a directory holds no weight file.
    ValueError: unknown file type, a file that is not what its name says, an entry that is not a
      numeric array, or a floating-point entry that is not finite (each named).
  """
  if isinstance(source, Mapping):
    obj, name = source, '<mapping>'
  else:
    name = os.fspath(source)
    if not os.path.exists(name):
      raise FileNotFoundError(f'checkpoint not found: {name}')
    if os.path.isdir(name):
      name = hub_weights_file(name)
    obj = _load_file(name)
  state = {str(k): v for k, v in unwrap(obj, name).items()}
  if state and all(k.startswith('module.') for k in state):
    state = {k[len('module.') :]: v for k, v in state.items()}
  state = {k: _to_numpy(v, k) for k, v in state.items()}
  check_finite(state, name)
  return state


def check_keys(
  state: Mapping[str, np.ndarray],
  expected_shapes: Mapping[str, tuple[int, ...]],
  source: str,
  ignore: Callable[[str], bool] = lambda key: False,
) -> None:
  """Raises one ValueError listing every missing, unexpected and mis-shaped key.

  Args:
    state: the state dict read.
    expected_shapes: key -> shape the model needs.
    source: what to name in the error (file or model).
    ignore: keys of `state` that may be present without being expected (e.g. optimiser extras).
  """
  missing = sorted(k for k in expected_shapes if k not in state)
  unexpected = sorted(k for k in state if k not in expected_shapes and not ignore(k))
  misshaped = sorted(
    f'{k}: expected {tuple(shape)}, got {tuple(state[k].shape)}'
    for k, shape in expected_shapes.items()
    if k in state and tuple(state[k].shape) != tuple(shape)
  )
  if missing or unexpected or misshaped:
    parts = []
    if missing:
      parts.append(f'missing keys ({len(missing)}): {missing}')
    if unexpected:
      parts.append(f'unexpected keys ({len(unexpected)}): {unexpected}')
    if misshaped:
      parts.append(f'mis-shaped keys ({len(misshaped)}): {misshaped}')
    raise ValueError(f'{source} does not match the model config:\n  ' + '\n  '.join(parts))


# timm's module names where the Flax models' differ (Tf and VideoMAE are both timm ViTs).
TIMM_NAMES = {'patch_embed': 'patch_embed.proj'}


def torch_key(path: ParamPath, names: Mapping[str, str] = TIMM_NAMES) -> str:
  """The PyTorch state-dict key of a parameter path, in timm's naming.

  `blocks_3` becomes `blocks.3`, a last `kernel` or `scale` becomes `weight`, a module named in
  `names` takes its PyTorch name, and every other name stays.

  Args:
    path: the parameter's path, e.g. ('blocks_0', 'norm1', 'scale').
    names: Flax module name -> PyTorch name (dotted where PyTorch nests deeper).

  Returns:
    The key, e.g. 'blocks.0.norm1.weight'.
  """
  parts = []
  for i, name in enumerate(path):
    if name.startswith('blocks_'):
      parts += ['blocks', name[len('blocks_') :]]
    elif i == len(path) - 1 and name in ('kernel', 'scale'):
      parts.append('weight')
    else:
      parts.append(names.get(name, name))
  return '.'.join(parts)


def flatten(tree: Any) -> dict[ParamPath, Any]:
  """A parameter tree (nested dicts) as path -> leaf."""
  flat = jax.tree_util.tree_flatten_with_path(tree)[0]
  return {tuple(k.key for k in path): leaf for path, leaf in flat}


def unflatten(flat: Mapping[ParamPath, Any]) -> dict:
  """path -> leaf as a parameter tree (nested dicts); the inverse of `flatten`."""
  tree: dict = {}
  for path, value in flat.items():
    node = tree
    for name in path[:-1]:
      node = node.setdefault(name, {})
    node[path[-1]] = value
  return tree


@dataclasses.dataclass(frozen=True)
class StateDictLayout:
  """How a model's parameters sit in a PyTorch state dict: three functions of a parameter path.

  Attributes:
    key: path -> state-dict key.
    to_flax: (path, PyTorch tensor) -> the Flax parameter.
    to_torch: (path, Flax parameter) -> the PyTorch tensor; the inverse of `to_flax`.
  """

  key: KeyFn
  to_flax: LayoutFn
  to_torch: LayoutFn

  def torch_shapes(self, shapes: Mapping[ParamPath, tuple[int, ...]]) -> dict[str, tuple[int, ...]]:
    """State-dict key -> PyTorch shape, for parameters of the given (Flax) shapes.

    Args:
      shapes: parameter path -> shape (from the model config, e.g. through jax.eval_shape).

    Returns:
      The state dict's keys and shapes that the parameters correspond to.
    """
    return {
      self.key(path): tuple(self.to_torch(path, np.empty(shape, np.float32)).shape)
      for path, shape in shapes.items()
    }

  def params_from_state_dict(
    self,
    state: Mapping[str, np.ndarray],
    shapes: Mapping[ParamPath, tuple[int, ...]],
    source: str,
    ignore: Callable[[str], bool] = lambda key: False,
  ) -> dict:
    """A state dict as the parameter tree of the given shapes (strict: every key, right shapes).

    Args:
      state: the state dict (key -> array in PyTorch layout).
      shapes: parameter path -> shape of the tree to build (from the model config).
      source: what to name in the error (file or model).
      ignore: keys of `state` that may be present without being converted (see `check_keys`).

    Returns:
      The parameter tree (nested dicts of float32 jax arrays).

    Raises:
      ValueError: listing every missing, unexpected and mis-shaped key.
    """
    check_keys(state, self.torch_shapes(shapes), source, ignore)
    flat = {
      path: jnp.asarray(self.to_flax(path, state[self.key(path)]), jnp.float32) for path in shapes
    }
    return unflatten(flat)

  def state_dict_from_params(self, params: Any) -> StateDict:
    """A parameter tree as a state dict; the inverse of `params_from_state_dict`.

    Args:
      params: the parameter tree.

    Returns:
      State-dict key -> numpy array in PyTorch layout (dtypes as in `params`).
    """
    return {
      self.key(path): self.to_torch(path, np.asarray(leaf))
      for path, leaf in flatten(params).items()
    }
