"""The closed glimpse loop: first_location -> camera -> agent -> next_location, until done."""

import dataclasses
from collections.abc import Callable

import numpy as np

from glitr_jax.agent_host import Prediction, StreamingAgent
from glitr_jax.streaming.camera import Camera

# (step index, prediction as numpy, locations (B, 2) of this step's glimpses, glimpses
#  (B, g, g, 3), active (B,)) -> None; called after every step (e.g. to print it).
StepCallback = Callable[[int, Prediction, np.ndarray, np.ndarray, np.ndarray], None]


@dataclasses.dataclass(frozen=True)
class StreamResult:
  """What one run of the loop saw and predicted, S steps for B streams.

  Attributes:
    predictions: S Predictions of numpy arrays (B, ...), one per step.
    locations: (S, B, 2) where each glimpse was taken.
    glimpses: (S, B, g, g, 3) the normalised pixels the camera handed over (zeros for streams
      that were already done), or None when not kept.
    active: (S, B) bool, whether stream b was live (read its camera) at step s.
    pixels_read: (S, B) int64 pixels handed over per step and stream (g * g when active).
    end: 'done' (every stream finished), 'video_ended' (the camera ran out of frames first).
  """

  predictions: list[Prediction]
  locations: np.ndarray
  glimpses: np.ndarray | None
  active: np.ndarray
  pixels_read: np.ndarray
  end: str

  @property
  def num_steps(self) -> int:
    return len(self.predictions)

  @property
  def final(self) -> Prediction:
    """The last prediction (each stream's exit-step prediction once done)."""
    if not self.predictions:
      raise ValueError('the stream produced no prediction (the camera had no frame)')
    return self.predictions[-1]

  @property
  def glimpses_taken(self) -> np.ndarray:
    """(B,) number of glimpses each stream read."""
    return self.active.sum(axis=0)


def _numpy(prediction: Prediction) -> Prediction:
  return Prediction(*(np.asarray(x) for x in prediction))


def run_stream(
  agent: StreamingAgent,
  camera: Camera,
  *,
  keep_glimpses: bool = True,
  on_step: StepCallback | None = None,
) -> StreamResult:
  """Runs the agent on the camera from a fresh start until every stream is done.

  The agent is reset first. At each step the camera is asked for the glimpse at each live
  stream's location (done streams are masked off: they read and count nothing, and their
  prediction stays frozen, see glitr_jax.streaming.agent). The loop ends when every stream is done
  (at the latest after num_frames steps) or when the camera has no frame left.

  Args:
    agent: a GlimpseAgent or an exported runtime agent (same interface).
    camera: a Camera with agent.batch_size streams and frames of the model's size.
    keep_glimpses: keep the pixels read (for pictures); False keeps only their counts.
    on_step: called after every step with numpy values (see StepCallback).

  Returns:
    A StreamResult.
  """
  if camera.batch_size != agent.batch_size:
    raise ValueError(
      f'the camera serves {camera.batch_size} stream(s) but the agent was built for '
      f'batch_size={agent.batch_size}'
    )
  size = agent.image_size
  if tuple(camera.frame_hw) != (size, size):
    raise ValueError(
      f'the camera frames are {camera.frame_hw[0]}x{camera.frame_hw[1]} but the model expects '
      f'{size}x{size} (model.image_size): glimpse locations and sizes are relative to the frame'
    )
  agent.reset()
  g = agent.glimpse_pixels
  location_b2 = np.asarray(agent.first_location(), np.float32)
  active_b = np.ones(agent.batch_size, bool)
  predictions, locations, glimpses, actives, pixels = [], [], [], [], []
  end = 'done'
  for t in range(agent.num_frames):
    before = camera.pixels_read_per_stream.copy()
    pixels_bggc = camera.read_glimpse(location_b2, g, active_b)
    if pixels_bggc is None:
      end = 'video_ended'
      break
    prediction = _numpy(agent.step(pixels_bggc))
    predictions.append(prediction)
    locations.append(location_b2)
    actives.append(active_b)
    pixels.append(camera.pixels_read_per_stream - before)
    if keep_glimpses:
      glimpses.append(pixels_bggc)
    if on_step is not None:
      on_step(t, prediction, location_b2, pixels_bggc, active_b)
    if prediction.done.all():
      break
    active_b = ~prediction.done
    location_b2 = prediction.next_location.astype(np.float32)
  b = agent.batch_size
  return StreamResult(
    predictions=predictions,
    locations=np.asarray(locations, np.float32).reshape(-1, b, 2),
    glimpses=np.asarray(glimpses).reshape(-1, b, g, g, 3) if keep_glimpses else None,
    active=np.asarray(actives, bool).reshape(-1, b),
    pixels_read=np.asarray(pixels, np.int64).reshape(-1, b),
    end=end,
  )
