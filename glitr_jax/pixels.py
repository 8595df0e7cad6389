"""Frame pixels as the model sees them: ImageNet normalisation and its inverse (docs/design.md 1.1).

One home for the constants, shared by the input pipeline, the streaming cameras and the pictures.
It imports NumPy only, so a camera process does not load TensorFlow Datasets.
"""

import numpy as np

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32)


def normalize(frames: np.ndarray, max_value: float = 1.0) -> np.ndarray:
  """ImageNet normalisation: (x / max_value - mean) / std per channel.

  Args:
    frames: (..., 3) values in [0, max_value] (1 for ToTensor floats, 255 for uint8 pixels).
    max_value: the value of white.

  Returns:
    float32 frames of the same shape (a new array).
  """
  scale = (1.0 / (max_value * IMAGENET_STD)).astype(np.float32)
  out = np.multiply(frames, scale, dtype=np.float32)
  out -= IMAGENET_MEAN / IMAGENET_STD
  return out


def denormalize(frames: np.ndarray) -> np.ndarray:
  """ImageNet-normalised float frames (..., 3) -> uint8 RGB for display."""
  rgb = np.asarray(frames, np.float32) * IMAGENET_STD + IMAGENET_MEAN
  return np.clip(np.round(rgb * 255.0), 0, 255).astype(np.uint8)
