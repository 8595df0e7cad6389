"""Runs an exported streaming GliTr with JAX and NumPy alone (no Flax, no glitr_jax models).

An export directory (written by `glitr_jax.streaming.export_agent` or
`python -m glitr_jax.streaming --export=DIR`) holds:
  init.jaxexport   serialized `jax.export.Exported`: (params, stream_ids (B,)) ->
                   (state, l_1 (B, 2)); only the length of stream_ids matters
  step.jaxexport   serialized `jax.export.Exported`: (params, state, glimpses (B, g, g, 3),
                   gamma ()) -> (state, prediction dict)
  weights.npz      the parameters, one array per leaf, in the order `meta.json` lists them
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

This module also holds what the in-process agent (`glitr_jax.streaming.GlimpseAgent`) shares with
the exported one: `Prediction` and the host-side loop of `StreamingAgent` (input checks, the step
count, the early-exit threshold), so both behave identically. It must import nothing beyond JAX,
NumPy and the standard library: tests check that loading an export leaves `flax` and
`glitr_jax.models` unimported.
"""

import json
import math
import os
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

FORMAT = 'glitr_jax.streaming/1'
META_FILE = 'meta.json'
INIT_FILE = 'init.jaxexport'
STEP_FILE = 'step.jaxexport'
WEIGHTS_FILE = 'weights.npz'


class Prediction(NamedTuple):
  """The agent's output after one glimpse, for B streams.

  A stream that is done keeps the prediction of the step at which it finished (its exit step):
  later steps return the same probs, label, confidence and next_location for it.

  Attributes:
    probs: (B, C) float32 class probabilities (softmax of Tc's logits from glimpses 1..t).
    label: (B,) int32 argmax class.
    confidence: (B,) float32 max probability.
    next_location: (B, 2) float32 (lx, ly) where the stream's next glimpse is to be taken.
    done: (B,) bool: True from the first step whose confidence exceeds gamma, and at the
      num_frames-th step; once True it stays True until reset().
  """

  probs: Any
  label: Any
  confidence: Any
  next_location: Any
  done: Any


class NumFramesExceededError(RuntimeError):
  """A step beyond the temporal position embedding's length (num_frames) was requested."""


def check_glimpses(
  pixels: Any, batch_size: int, glimpse_pixels: int, image_size: int | None = None
) -> None:
  """Checks that `pixels` is a batch of glimpses, never a frame or a wrong-sized crop.

  Args:
    pixels: the array handed to `step`.
    batch_size: B.
    glimpse_pixels: the glimpse side g.
    image_size: the model's frame side, to name the mistake when a full frame is passed.

  Raises:
    ValueError: naming the received and expected shapes (and dtype).
  """
  shape = tuple(getattr(pixels, 'shape', ()))
  expected = (batch_size, glimpse_pixels, glimpse_pixels, 3)
  if shape != expected:
    hint = ''
    if image_size is not None and len(shape) == 4 and shape[1:3] == (image_size, image_size):
      hint = (
        f': that is a full {image_size}x{image_size} frame, but the agent only takes the '
        'g x g glimpse at its location (read it with a Camera, e.g. glitr_jax.glimpse.extract)'
      )
    raise ValueError(
      f'glimpse_pixels has shape {shape}; expected (B, g, g, 3) = {expected} '
      f'(batch_size={batch_size}, glimpse side {glimpse_pixels} px){hint}'
    )
  dtype = np.dtype(getattr(pixels, 'dtype', np.float32))
  if not np.issubdtype(dtype, np.floating):
    raise ValueError(
      f'glimpse_pixels has dtype {dtype}; expected float32 ImageNet-normalised pixels '
      '((x / 255 - mean) / std per channel)'
    )


def check_gamma(gamma: float | None) -> float:
  """The early-exit threshold as a float: None -> +inf (never exit before num_frames)."""
  if gamma is None:
    return math.inf
  gamma = float(gamma)
  if not 0.0 <= gamma <= 1.0:
    raise ValueError(f'gamma={gamma!r}: the early-exit threshold must be in [0, 1] or None')
  return gamma


class StreamingAgent:
  """Host side of a streaming GliTr: holds the state between glimpses and counts the steps.

  Subclasses supply two device functions (jit-compiled in-process, or deserialized exports):
    init_fn(params, stream_ids_b) -> (state, first_location_b2)
    step_fn(params, state, glimpses_bggc, gamma) -> (state, prediction); prediction is a
      `Prediction` or a dict with its fields. The state argument must be donated: the agent never
      reuses a state it has passed to step_fn.
  """

  def __init__(
    self,
    init_fn: Callable,
    step_fn: Callable,
    params: Any,
    *,
    batch_size: int,
    gamma: float | None,
    num_frames: int,
    glimpse_pixels: int,
    image_size: int,
    num_classes: int,
  ):
    if not isinstance(batch_size, int | np.integer) or batch_size < 1:
      raise ValueError(f'batch_size={batch_size!r}: must be a positive int')
    self._init_fn = init_fn
    self._step_fn = step_fn
    self._params = params
    self._batch_size = int(batch_size)
    self._gamma_value = check_gamma(gamma)
    self._gamma = jnp.asarray(self._gamma_value, jnp.float32)
    self._num_frames = int(num_frames)
    self._glimpse_pixels = int(glimpse_pixels)
    self._image_size = int(image_size)
    self._num_classes = int(num_classes)
    self._stream_ids = jnp.arange(self._batch_size, dtype=jnp.int32)
    self.reset()

  # --- Geometry and progress. ---
  @property
  def batch_size(self) -> int:
    return self._batch_size

  @property
  def num_frames(self) -> int:
    """The most glimpses a stream can take (the temporal embedding's length)."""
    return self._num_frames

  @property
  def glimpse_pixels(self) -> int:
    return self._glimpse_pixels

  @property
  def image_size(self) -> int:
    """The frame side the model was trained on (locations are normalised to it)."""
    return self._image_size

  @property
  def num_classes(self) -> int:
    return self._num_classes

  @property
  def gamma(self) -> float:
    """The early-exit threshold (+inf when early exit is off)."""
    return self._gamma_value

  @property
  def steps_taken(self) -> int:
    return self._steps

  @property
  def done(self) -> np.ndarray:
    """(B,) bool: which streams have finished (all False before the first step)."""
    if self._last is None:
      return np.zeros(self._batch_size, bool)
    return np.asarray(self._last.done)

  # --- The streaming API. ---
  def first_location(self) -> np.ndarray:
    """(B, 2) float32: l_1, where every stream's first glimpse is to be taken."""
    return self._first_location

  def reset(self) -> None:
    """Starts every stream afresh: empty caches, step 0, nothing done."""
    self._state, first = self._init_fn(self._params, self._stream_ids)
    self._first_location = np.asarray(first, np.float32)
    self._steps = 0
    self._last: Prediction | None = None

  def step(self, glimpse_pixels: Any) -> Prediction:
    """Feeds one glimpse per stream and returns the prediction so far.

    Args:
      glimpse_pixels: (B, g, g, 3) float32 ImageNet-normalised pixels, glimpse b taken at the
        location this agent asked stream b for (first_location(), then the last next_location).
        Pixels of streams that are already done are ignored (a camera may send zeros).

    Returns:
      A Prediction of device arrays (B, ...).

    Raises:
      ValueError: the pixels are not (B, g, g, 3) floats (e.g. a full frame).
      NumFramesExceededError: num_frames steps were already taken (call reset()).
    """
    check_glimpses(glimpse_pixels, self._batch_size, self._glimpse_pixels, self._image_size)
    if self._steps >= self._num_frames:
      raise NumFramesExceededError(
        f'step {self._steps + 1} requested but the model has num_frames={self._num_frames} '
        'temporal positions (every stream is done after num_frames glimpses); call reset() '
        'to start new streams'
      )
    pixels = jnp.asarray(glimpse_pixels, jnp.float32)
    self._state, out = self._step_fn(self._params, self._state, pixels, self._gamma)
    prediction = out if isinstance(out, Prediction) else Prediction(**out)
    self._steps += 1
    self._last = prediction
    return prediction


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
      value = weights[name]
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
