"""TFDS builder `jester`: 20BN-Jester v1 from the official release (folders of JPEG frames + CSV).

Frames are stored as released (the JPEG bytes, height 100), after checking that each decodes.
Classes are indexed in sorted order, as TSM's `category.txt` for Jester (docs/design.md 4.1), not
in the order of `jester-v1-labels.csv`.
"""

import os

import tensorflow_datasets as tfds

from glitr_jax.data import builder_base, label_files, video_io

FRAMES_DIR = '20bn-jester-v1'
FRAME_TEMPLATE = '{:05d}.jpg'
LABELS_FILE = 'jester-v1-labels.csv'
SPLIT_FILES = {'train': 'jester-v1-train.csv', 'validation': 'jester-v1-validation.csv'}

_INSTRUCTIONS = f"""\
Download 20BN-Jester v1 from Qualcomm (https://www.qualcomm.com/developer/software/jester-dataset;
free registration): the 23 archive parts and the CSV label files. Extract them into the manual dir
so that it holds
  {FRAMES_DIR}/<id>/00001.jpg ...   (148,092 folders of JPEG frames)
  {LABELS_FILE}              (27 class names, one a line)
  {SPLIT_FILES['train']}               (lines "id;label")
  {SPLIT_FILES['validation']}
e.g. `cat 20bn-jester-v1-?? | tar zx`. Then run
  python -m glitr_jax.data.prepare --dataset=jester --manual_dir=<that dir> \\
    --data_dir=<tfds data dir> [--num_workers=16] [--skip_bad_videos]
"""


def load_frames(folder: str) -> dict:
  """Reads a Jester video's frame folder (runs in worker processes).

  Args:
    folder: path of `20bn-jester-v1/<id>`.

  Returns:
    {'video': list of JPEG bytes, frames 1..n}.
  """
  num_frames = video_io.count_frames(folder, FRAME_TEMPLATE)
  return {'video': video_io.read_jpeg_frames(folder, FRAME_TEMPLATE, num_frames)}


class Jester(builder_base.VideoBuilder):
  """20BN-Jester v1: 27 hand-gesture classes, ~119K train / ~15K validation videos."""

  MANUAL_DOWNLOAD_INSTRUCTIONS = _INSTRUCTIONS
  DESCRIPTION = '20BN-Jester v1 (frames as released, JPEG).'

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    root = self._manual_root(dl_manager)
    self._require(root, [FRAMES_DIR, LABELS_FILE, *SPLIT_FILES.values()])
    names = label_files.jester_class_names(os.path.join(root, LABELS_FILE))
    self._set_class_names(names)
    jobs = {}
    for split, file in SPLIT_FILES.items():
      split_file = os.path.join(root, file)
      jobs[split] = builder_base.split_jobs(
        label_files.jester_split(split_file, names),
        lambda e: os.path.join(root, FRAMES_DIR, e.video_id),
        split_file,
      )
    return self._splits(jobs, load_frames)
