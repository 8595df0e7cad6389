"""The host side of a streaming GliTr agent, shared by the in-process and the exported agent.

`StreamingAgent` holds the device state between glimpses, checks the pixels it is handed, counts
the steps and applies the early-exit threshold; its two device functions come from a subclass:
`glitr_jax.streaming.GlimpseAgent` jit-compiles the model's step in process,
`glitr_jax.export_runtime.ExportedAgent` runs a deserialized `jax.export` artifact. Both then
behave identically. This module imports nothing beyond JAX, NumPy and the standard library, so
that the exported runtime stays free of Flax and of the model code.
"""

import math
from collections.abc import Callable
from typing import Any, NamedTuple

import jax.numpy as jnp
import numpy as np


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
