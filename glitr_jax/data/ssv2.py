"""TFDS builder `something_something_v2`: Something-Something-v2 from the official release.

The webm videos are decoded with PyAV and stored as one JPEG per frame, resized to height 256 as
TSM extracts them (builder config 'h256', the default) or at the decoded size ('original').
Classes are indexed in the order of `something-something-v2-labels.json` (docs/design.md 4.1).
"""

import dataclasses
import os

import tensorflow_datasets as tfds

from glitr_jax.data import builder_base, label_files, video_io

VIDEO_DIR = '20bn-something-something-v2'
LABELS_FILE = 'something-something-v2-labels.json'
SPLIT_FILES = {
  'train': 'something-something-v2-train.json',
  'validation': 'something-something-v2-validation.json',
}
JPEG_QUALITY = 90

_INSTRUCTIONS = f"""\
Download Something-Something-v2 from Qualcomm (https://www.qualcomm.com/developer/software/
something-something-v-2-dataset; free registration): the 20 video archive parts and the labels
archive. Extract them into the manual dir so that it holds
  {VIDEO_DIR}/<id>.webm          (~220,847 VP9 videos)
  {LABELS_FILE}   (class name -> index)
  {SPLIT_FILES['train']}    ({{"id", "label", "template", "placeholders"}} per video)
  {SPLIT_FILES['validation']}
e.g. `cat 20bn-something-something-v2-?? | tar -xvzf -` and `unzip labels.zip`. Then run
  python -m glitr_jax.data.prepare --dataset=something_something_v2 --manual_dir=<that dir> \\
    --data_dir=<tfds data dir> [--num_workers=16] [--skip_bad_videos]
"""


@dataclasses.dataclass(eq=False)
class Ssv2Config(tfds.core.BuilderConfig):
  """Attributes: frame_height: stored frame height (0 = as decoded, 240 for most videos)."""

  frame_height: int = 256


def ssv2_config(frame_height: int) -> Ssv2Config:
  """The builder config storing frames at `frame_height` ('h256', 'original' for 0, 'h<H>')."""
  name = 'original' if frame_height == 0 else f'h{frame_height}'
  return Ssv2Config(
    name=name,
    frame_height=frame_height,
    description=f'frames stored at height {frame_height or "as decoded"}',
  )


def load_video(payload: tuple[str, int]) -> dict:
  """Decodes one webm and encodes its frames as JPEG (runs in worker processes).

  Args:
    payload: (path to the .webm, frame height or 0).

  Returns:
    {'video': list of JPEG bytes}.
  """
  path, frame_height = payload
  frames = video_io.decode_webm(path)
  frames = [video_io.resize_to_height(f, frame_height) for f in frames]
  return {'video': video_io.encode_frames(frames, quality=JPEG_QUALITY)}


class SomethingSomethingV2(builder_base.VideoBuilder):
  """Something-Something-v2: 174 classes, ~169K train / ~25K validation videos."""

  MANUAL_DOWNLOAD_INSTRUCTIONS = _INSTRUCTIONS
  BUILDER_CONFIGS = [ssv2_config(256), ssv2_config(0)]
  DEFAULT_CONFIG_NAME = 'h256'
  DESCRIPTION = 'Something-Something-v2 (webm decoded with PyAV, frames stored as JPEG).'

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    root = self._manual_root(dl_manager)
    self._require(root, [VIDEO_DIR, LABELS_FILE, *SPLIT_FILES.values()])
    names = label_files.ssv2_class_names(os.path.join(root, LABELS_FILE))
    self._set_class_names(names)
    height = self.builder_config.frame_height
    jobs = {}
    for split, file in SPLIT_FILES.items():
      split_file = os.path.join(root, file)
      jobs[split] = builder_base.split_jobs(
        label_files.ssv2_split(split_file, names),
        lambda e: (os.path.join(root, VIDEO_DIR, f'{e.video_id}.webm'), height),
        split_file,
      )
    return self._splits(jobs, load_video)
