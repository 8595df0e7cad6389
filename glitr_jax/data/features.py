"""TFDS feature for videos stored as one JPEG per frame, readable without TensorFlow.

`tfds.features.Video` imports TensorFlow when it is constructed (and decodes into a list of
frames with the NumPy backend); the input pipeline's grain workers must stay light, so the video
feature here is a string tensor of JPEG frames that decodes to uint8 (n, H, W, 3) with PIL.
"""

import numpy as np
import tensorflow_datasets as tfds
from tensorflow_datasets.core.utils.lazy_imports_utils import tensorflow as tf  # Imports on use.

from glitr_jax.data import video_io


class JpegVideo(tfds.features.FeatureConnector):
  """A video as a sequence of JPEG frames; decodes to uint8 (n, H, W, 3).

  Encodes either a list of JPEG byte strings (stored as they are, e.g. frames as released) or a
  uint8 array (n, H, W, 3) (encoded here at `quality`).
  """

  def __init__(self, *, quality: int = 90, doc: tfds.features.Documentation | str | None = None):
    super().__init__(doc=doc)
    self._quality = quality

  def get_tensor_info(self) -> tfds.features.TensorInfo:
    return tfds.features.TensorInfo(shape=(None, None, None, 3), dtype=np.uint8)

  def get_serialized_info(self) -> tfds.features.TensorInfo:
    return tfds.features.TensorInfo(shape=(None,), dtype=np.object_)

  def encode_example(self, example_data) -> np.ndarray:
    if isinstance(example_data, np.ndarray) and example_data.dtype == np.uint8:
      if example_data.ndim != 4 or example_data.shape[-1] != 3:
        raise ValueError(f'expected uint8 frames (n, H, W, 3), got {example_data.shape}')
      frames = video_io.encode_frames(example_data, quality=self._quality)
    else:
      frames = list(example_data)
      if not all(isinstance(f, bytes) for f in frames):
        raise ValueError('expected uint8 frames (n, H, W, 3) or a list of JPEG bytes')
    if not frames:
      raise ValueError('a video needs at least one frame')
    return np.array(frames, dtype=np.object_)

  def decode_example(self, tfexample_data):
    """TensorFlow decoding (for `tfds.load`): uint8 (n, H, W, 3)."""
    return tf.map_fn(
      lambda data: tf.io.decode_jpeg(data, channels=3),
      tfexample_data,
      fn_output_signature=tf.TensorSpec(shape=(None, None, 3), dtype=tf.uint8),
    )

  def decode_example_np(self, example_data) -> np.ndarray:
    return np.stack([video_io.decode_jpeg(bytes(data)) for data in example_data])

  def decode_batch_example_np(self, example_data):
    return [self.decode_example_np(e) for e in example_data]

  def to_json_content(self) -> dict:
    return {'quality': self._quality}


class KeepEncoded(tfds.decode.Decoder):
  """A decoder that returns a feature's serialized value (JPEG bytes of every frame, uint8 (n,)).

  The input pipeline decodes only the frames it samples.
  """

  def decode_example(self, serialized_example):
    return serialized_example

  def decode_example_np(self, serialized_example):
    return serialized_example

  def decode_batch_example_np(self, serialized_example):
    return serialized_example


def video_features(
  class_names: tuple[str, ...] | None = None, **extra
) -> tfds.features.FeaturesDict:
  """The features every video dataset here has, plus `extra` ones.

  Args:
    class_names: the label names in index order; None when they are only known once the raw
      files are read (the builder then sets them in `_split_generators`).
    **extra: additional features (name -> feature).

  Returns:
    FeaturesDict with `video` (JpegVideo), `label` (ClassLabel), `video_id` (Text) and
    `num_frames` (int32).
  """
  label = tfds.features.ClassLabel(names=list(class_names)) if class_names else None
  return tfds.features.FeaturesDict(
    {
      'video': JpegVideo(doc='uint8 frames (n, H, W, 3), one JPEG per frame'),
      'label': label or tfds.features.ClassLabel(),
      'video_id': tfds.features.Text(),
      'num_frames': tfds.features.Scalar(dtype=np.int32, doc='n, frames stored'),
      **extra,
    }
  )
