"""Reading PyTorch state dicts safely, and matching them against a parameter tree.

A state dict comes from a `.pth` file (read with `torch.load(..., weights_only=True)`: a checkpoint
must never be able to run code; torch is an optional dependency), from an `.npz` file (no torch
needed; `np.load(allow_pickle=False)`), or from any mapping of key -> array.
"""

import os
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

StateDict = dict[str, np.ndarray]
# Wrappers under which training scripts store the model's state dict.
WRAPPER_KEYS = ('model', 'module', 'state_dict', 'model_state')


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
  return array


def _load_pth(path: str) -> Any:
  try:
    import torch  # noqa: PLC0415 (optional dependency)
  except ImportError as e:
    raise ImportError(
      f'Reading {path} needs PyTorch (pip install torch); or convert it once to .npz with '
      'numpy.savez(out, **{k: v.numpy() for k, v in state_dict.items()}) and load that.'
    ) from e
  try:
    return torch.load(path, map_location='cpu', weights_only=True)
  except Exception as e:  # torch raises UnpicklingError for anything but tensors and containers
    raise ValueError(
      f'{path}: not a weights-only PyTorch checkpoint ({type(e).__name__}: {e}). Checkpoints are '
      'read with torch.load(weights_only=True), which refuses pickled code.'
    ) from e


def unwrap(obj: Any, source: str = '<mapping>') -> Mapping[str, Any]:
  """Returns the state dict inside a checkpoint object (bare, or under `model`/`module`/...)."""
  if not isinstance(obj, Mapping):
    raise ValueError(f'{source}: expected a state dict (a mapping), got {type(obj).__name__}')
  for key in WRAPPER_KEYS:
    inner = obj.get(key)
    if isinstance(inner, Mapping) and inner:
      return unwrap(inner, f'{source}[{key!r}]')
  return obj


def read_state_dict(source: str | os.PathLike | Mapping[str, Any]) -> StateDict:
  """Reads a state dict from a .pth / .npz path or a mapping, as key -> numpy array.

  A leading `module.` (DistributedDataParallel) on every key is removed.

  Raises:
    FileNotFoundError: the path does not exist.
    ValueError: unknown file type, or the file does not hold a state dict of arrays.
  """
  if isinstance(source, Mapping):
    obj, name = source, '<mapping>'
  else:
    name = os.fspath(source)
    if not os.path.exists(name):
      raise FileNotFoundError(f'checkpoint not found: {name}')
    if name.endswith('.npz'):
      with np.load(name, allow_pickle=False) as data:
        obj = {k: data[k] for k in data.files}
    elif name.endswith(('.pth', '.pt', '.bin', '.ckpt')):
      obj = _load_pth(name)
    else:
      raise ValueError(f'{name}: unknown checkpoint type (expected .pth, .pt or .npz)')
  state = {str(k): v for k, v in unwrap(obj, name).items()}
  if state and all(k.startswith('module.') for k in state):
    state = {k[len('module.') :]: v for k, v in state.items()}
  return {k: _to_numpy(v, k) for k, v in state.items()}


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
