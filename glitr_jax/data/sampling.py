"""Which frames of a video a clip of T frames uses (the official sampling, docs/design.md 4.2)."""

import numpy as np

# Videos with fewer frames are dropped from the training list (the official `_parse_list`);
# evaluation keeps every video.
MIN_TRAIN_FRAMES = 3


def train_frame_indices(num_frames: int, clip_frames: int, rng: np.random.Generator) -> np.ndarray:
  """Training: one random frame in each of T segments of integer length n // T.

  Frames past T * (n // T) are never used. A video with n < T contributes all its frames and then
  repeats its last one.

  Args:
    num_frames: n, the video's frame count (>= 1).
    clip_frames: T.
    rng: the clip's random generator.

  Returns:
    int64 (T,) 0-based frame indices, non-decreasing.
  """
  segment = num_frames // clip_frames
  if segment > 0:
    return np.arange(clip_frames) * segment + rng.integers(0, segment, size=clip_frames)
  return np.minimum(np.arange(clip_frames), num_frames - 1)


def eval_frame_indices(num_frames: int, clip_frames: int) -> np.ndarray:
  """Evaluation: the centre of each of T equal segments, `int(tick / 2 + tick * i)`, tick = n / T.

  Short videos (n < T) get interleaved duplicates (the official test-mode indices).

  Args:
    num_frames: n (>= 1).
    clip_frames: T.

  Returns:
    int64 (T,) 0-based frame indices.
  """
  tick = num_frames / clip_frames
  return np.array([int(tick / 2.0 + tick * i) for i in range(clip_frames)], dtype=np.int64)
