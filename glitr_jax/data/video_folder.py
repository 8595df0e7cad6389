"""TFDS builder `video_folder`: the TSM frame-folder layout that the official GliTr release reads.

The manual dir holds (docs/design.md section 4.1):
  category.txt                   class names, one a line, in index order
  train_videofolder.txt          lines `<folder> <num_frames> <label index>`
  val_videofolder.txt            (the 'validation' split)
  <frames dir>/<folder>/000001.jpg ...   1-based frames
where the frames dir is `20bn-something-something-v2-frames/` (frames `{:06d}.jpg`) or
`20bn-jester-v1/` (`{:05d}.jpg`), or any folder you name, for your own data.

Which files: the builder config `VideoFolderConfig` (fields `frames_dir`, `category_file`,
`train_list`, `val_list`, `frame_template`; empty = detect the official names), built from
`config.data.video_folder` by `glitr_jax.data.pipeline.make_builder`, or from the flags
`--frames_dir --category_file --train_list --val_list --frame_template --config_name` of
`python -m glitr_jax.data.prepare --dataset=video_folder`. Its name (`config_name`, default
'default') names the prepared dataset, so several frame-folder datasets can share a data_dir.
Frames are stored as they are (JPEG bytes, not re-encoded).
"""

import dataclasses
import os

import tensorflow_datasets as tfds

from glitr_jax.data import builder_base, label_files, video_io

# The official frames folders and their frame file names.
OFFICIAL_LAYOUTS = {
  '20bn-something-something-v2-frames': '{:06d}.jpg',
  '20bn-jester-v1': '{:05d}.jpg',
}

_INSTRUCTIONS = """\
Put the TSM frame-folder layout in the manual dir:
  category.txt                  class names, one a line, in index order
  train_videofolder.txt         lines "<folder> <num_frames> <label index>"
  val_videofolder.txt
  20bn-something-something-v2-frames/<folder>/000001.jpg ...  (or 20bn-jester-v1/<folder>/00001.jpg)
TSM's scripts (github.com/mit-han-lab/temporal-shift-module, tools/vid2img_sthv2.py and
tools/gen_label_sthv2.py; tools/gen_label_jester.py) make it from the official releases. Other
names: set config.data.video_folder.{frames_dir, category_file, train_list, val_list,
frame_template} or the prepare flags of the same names. Then run
  python -m glitr_jax.data.prepare --dataset=video_folder --manual_dir=<that dir> \\
    --data_dir=<tfds data dir> [--config_name=NAME] [--num_workers=16] [--skip_bad_videos]
"""


@dataclasses.dataclass(eq=False)
class VideoFolderConfig(tfds.core.BuilderConfig):
  """Which files of the manual dir make the dataset (paths relative to the manual dir).

  Attributes:
    frames_dir: the folder of per-video frame folders ('' = an official one that exists).
    category_file: the class names file.
    train_list: the 'train' split's list file.
    val_list: the 'validation' split's list file.
    frame_template: file name of frame i, 1-based ('' = the official one of the frames dir, or
      detected from the first video's folder: '{:06d}.jpg' or '{:05d}.jpg').
  """

  frames_dir: str = ''
  category_file: str = 'category.txt'
  train_list: str = 'train_videofolder.txt'
  val_list: str = 'val_videofolder.txt'
  frame_template: str = ''


def load_frames(payload: tuple[str, str, int]) -> dict:
  """Reads frames 1..n of one video folder (runs in worker processes).

  Args:
    payload: (folder, frame template, n from the list file).

  Returns:
    {'video': list of JPEG bytes}.
  """
  folder, template, num_frames = payload
  return {'video': video_io.read_jpeg_frames(folder, template, num_frames)}


class VideoFolder(builder_base.VideoBuilder):
  """Any dataset in the TSM frame-folder layout (SSv2 or Jester frames, or your own)."""

  MANUAL_DOWNLOAD_INSTRUCTIONS = _INSTRUCTIONS
  BUILDER_CONFIGS = [VideoFolderConfig(name='default', description='official names, detected')]
  DESCRIPTION = 'Videos in the TSM frame-folder layout (category.txt + list files + JPEG frames).'

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    root = self._manual_root(dl_manager)
    config = self.builder_config
    frames_dir = config.frames_dir or self._detect_frames_dir(root)
    self._require(root, [frames_dir, config.category_file, config.train_list, config.val_list])
    names = label_files.category_names(os.path.join(root, config.category_file))
    self._set_class_names(names)
    lists = {'train': config.train_list, 'validation': config.val_list}
    entries = {
      split: label_files.tsm_list(os.path.join(root, file), len(names))
      for split, file in lists.items()
    }
    frames_root = os.path.join(root, frames_dir)
    template = config.frame_template or self._detect_template(frames_dir, frames_root, entries)
    video_io.frame_template_pattern(template)  # Fails early on a malformed template.
    jobs = {
      split: builder_base.split_jobs(
        split_entries,
        lambda e: (os.path.join(frames_root, e.video_id), template, e.num_frames),
        os.path.join(root, lists[split]),
      )
      for split, split_entries in entries.items()
    }
    return self._splits(jobs, load_frames)

  def _detect_frames_dir(self, root: str) -> str:
    found = [d for d in OFFICIAL_LAYOUTS if os.path.isdir(os.path.join(root, d))]
    if len(found) == 1:
      return found[0]
    if not found:
      raise builder_base.DatasetFilesMissingError(
        f'{self.name}: {root} has no frames folder ({" or ".join(OFFICIAL_LAYOUTS)}); name '
        'yours with data.video_folder.frames_dir (--frames_dir).\n'
        f'{self.MANUAL_DOWNLOAD_INSTRUCTIONS}'
      )
    raise ValueError(
      f'{self.name}: {root} holds both {found}; choose one with data.video_folder.frames_dir '
      '(--frames_dir)'
    )

  def _detect_template(self, frames_dir: str, frames_root: str, entries: dict) -> str:
    name = os.path.basename(os.path.normpath(frames_dir))
    if name in OFFICIAL_LAYOUTS:
      return OFFICIAL_LAYOUTS[name]
    first = next((e for split in entries.values() for e in split), None)
    if first is not None:
      for template in ('{:06d}.jpg', '{:05d}.jpg'):
        if os.path.exists(os.path.join(frames_root, first.video_id, template.format(1))):
          return template
    raise ValueError(
      f'{self.name}: cannot tell how the frames in {frames_root} are named; set '
      "data.video_folder.frame_template (--frame_template), e.g. 'img_{:05d}.jpg'"
    )
