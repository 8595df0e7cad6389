"""Runs an exported streaming GliTr with JAX and NumPy alone (no Flax, no glitr_jax models).

An export directory (written by `glitr_jax.streaming.export_agent` or
`python -m glitr_jax.streaming --export=DIR`) holds:
  init.jaxexport   serialized `jax.export.Exported`: (params, stream_ids (B,)) ->
                   (state, l_1 (B, 2)); only the length of stream_ids matters
  step.jaxexport   serialized `jax.export.Exported`: (params, state, glimpses (B, g, g, 3),
                   gamma ()) -> (state, prediction dict)
  weights.npz      the parameters, one array per leaf, in the order `meta.json` lists them
                   (bfloat16 ones as their uint16 bits)
  meta.json        shapes and geometry: image_size, glimpse_pixels, num_frames, num_classes,
                   class_names, the pixel normalisation, platforms, parameter names.
The parameters are an input of both functions rather than constants baked into the artifact: the
StableHLO stays small (ViT-S + two temporal heads are ~80M float32 parameters), the runtime puts the
weights on the device once, and retrained weights of the same shapes drop in without re-exporting.
The batch dimension B is symbolic, so one artifact serves any number of streams.

    agent = glitr_jax.export_runtime.load('export_dir', batch_size=2, gamma=0.9)
    location = agent.first_location()                 # (B, 2)
    prediction = agent.step(glimpses)                 # (B, g, g, 3) float32, ImageNet-normalised
    prediction.probs, prediction.done, prediction.next_location

The host-side loop (input checks, the step count, the early-exit threshold) is
`glitr_jax.agent_host.StreamingAgent`, which the in-process `glitr_jax.streaming.GlimpseAgent`
shares. This module and that one import nothing beyond JAX, NumPy and the standard library: tests
check that loading an export leaves `flax` and `glitr_jax.models` unimported.
"""

import json
import os
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from glitr_jax.agent_host import NumFramesExceededError, Prediction, StreamingAgent

# What a caller of `load` meets: the agent, its predictions and the error past num_frames.
__all__ = [
  'ExportedAgent',
  'NumFramesExceededError',
  'Prediction',
  'StreamingAgent',
  'load',
  'load_weights',
  'read_meta',
]

FORMAT = 'glitr_jax.streaming/1'
META_FILE = 'meta.json'
INIT_FILE = 'init.jaxexport'
STEP_FILE = 'step.jaxexport'
WEIGHTS_FILE = 'weights.npz'


def read_meta(directory: str | os.PathLike) -> dict:
  """The export's meta.json, after checking its format."""
  path = os.path.join(os.fspath(directory), META_FILE)
  if not os.path.isfile(path):
    raise FileNotFoundError(f'{path} not found: is {directory} a glitr_jax streaming export?')
  with open(path) as f:
    meta = json.load(f)
  if meta.get('format') != FORMAT:
    raise ValueError(f'{path}: format {meta.get("format")!r}, this runtime reads {FORMAT!r}')
  return meta


def _deserialize(directory: str, name: str) -> jax.export.Exported:
  path = os.path.join(directory, name)
  if not os.path.isfile(path):
    raise FileNotFoundError(f'{path} not found (incomplete export directory)')
  with open(path, 'rb') as f:
    return jax.export.deserialize(bytearray(f.read()))


def to_stored(value: np.ndarray) -> np.ndarray:
  """A weight as weights.npz holds it: NumPy's own dtypes as they are, bfloat16 as uint16 bits
  (`np.load` cannot rebuild bfloat16)."""
  return value.view(np.uint16) if value.dtype == jnp.bfloat16 else value


def from_stored(value: np.ndarray, dtype) -> np.ndarray:
  """The inverse of `to_stored` for a weight the exported functions take as `dtype`."""
  if dtype == jnp.bfloat16 and value.dtype == np.uint16:
    return value.view(jnp.bfloat16)
  return value


def load_weights(directory: str, names: Sequence[str], avals: Sequence[Any]) -> list[jax.Array]:
  """The parameter leaves in the order the exported functions take them, checked and on device.

  Args:
    directory: the export directory.
    names: the leaves' names in order (meta.json's `param_names`).
    avals: the exported functions' abstract inputs for those leaves.

  Raises:
    ValueError: naming every missing or mis-shaped weight.
  """
  path = os.path.join(directory, WEIGHTS_FILE)
  if not os.path.isfile(path):
    raise FileNotFoundError(f'{path} not found (incomplete export directory)')
  problems, leaves = [], []
  with np.load(path) as weights:
    for name, aval in zip(names, avals, strict=True):
      if name not in weights:
        problems.append(f'{name}: missing')
        continue
      value = from_stored(weights[name], aval.dtype)
      if value.shape != tuple(aval.shape) or value.dtype != aval.dtype:
        problems.append(f'{name}: {value.dtype}{list(value.shape)}, expected {aval.str_short()}')
      leaves.append(value)
  if problems:
    raise ValueError(f'{path} does not match the exported functions: ' + '; '.join(problems))
  return [jnp.asarray(v) for v in leaves]


class ExportedAgent(StreamingAgent):
  """A `StreamingAgent` running the serialized functions of an export directory.

  Attributes:
    meta: the export's meta.json (class_names, normalisation, platforms, ...).
  """

  def __init__(self, directory: str | os.PathLike, batch_size: int = 1, gamma: float | None = None):
    directory = os.fspath(directory)
    self.meta = read_meta(directory)
    init = _deserialize(directory, self.meta['files']['init'])
    step = _deserialize(directory, self.meta['files']['step'])
    names = self.meta['param_names']
    params = load_weights(directory, names, step.in_avals[: len(names)])
    super().__init__(
      jax.jit(init.call),
      # The state (argument 1) is donated: its caches are updated in place on the device.
      jax.jit(step.call, donate_argnums=1),
      params,
      batch_size=batch_size,
      gamma=gamma,
      num_frames=self.meta['num_frames'],
      glimpse_pixels=self.meta['glimpse_pixels'],
      image_size=self.meta['image_size'],
      num_classes=self.meta['num_classes'],
    )

  @property
  def class_names(self) -> tuple[str, ...] | None:
    names = self.meta.get('class_names')
    return None if names is None else tuple(names)


def load(
  directory: str | os.PathLike, batch_size: int = 1, gamma: float | None = None
) -> ExportedAgent:
  """Loads an export directory as an agent for `batch_size` streams with threshold `gamma`."""
  return ExportedAgent(directory, batch_size=batch_size, gamma=gamma)
