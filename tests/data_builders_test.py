"""The TFDS builders read the three real raw formats back: examples, class order, frames, pixels."""

import os
import subprocess
import sys

import data_fixtures as fx
import numpy as np
import pytest
import tensorflow_datasets as tfds

from glitr_jax import data
from glitr_jax.data import pipeline, video_io

tfds.disable_progress_bar()
_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _examples(data_config, split: str) -> dict[str, dict]:
  """video_id -> example, read with the default (decoding) TFDS data source."""
  builder = pipeline.prepared_builder(data_config)
  source = builder.as_data_source(split=split)
  out = {}
  for i in range(len(source)):
    ex = source[i]
    out[ex['video_id'].decode()] = ex
  return out


def test_registered_names():
  names = set(tfds.list_builders(with_community_datasets=False))
  assert {'something_something_v2', 'jester', 'video_folder', 'glitr_synthetic'} <= names


def test_something_something_v2_from_webm(tmp_path):
  manual = tmp_path / 'raw'
  videos = {
    'train': [
      ('101', 1, fx.smooth_frames(1, 9, 32, 48)),
      ('102', 0, fx.smooth_frames(2, 6, 32, 48)),
      ('103', 2, fx.smooth_frames(3, 7, 32, 48)),
    ],
    'validation': [('201', 2, fx.smooth_frames(4, 8, 32, 48))],
  }
  originals = fx.write_ssv2_release(str(manual), videos)
  config = fx.data_config('something_something_v2', tmp_path / 'tfds', manual, frame_height=0)
  info = data.prepare_dataset(config)

  assert info.class_names == fx.SSV2_CLASSES  # labels.json index order, not file order
  assert info.config_name == 'original'
  assert info.num_examples == {'train': 3, 'validation': 1}
  for split, split_videos in videos.items():
    examples = _examples(config, split)
    assert set(examples) == {v[0] for v in split_videos}
    for video_id, label, frames in split_videos:
      ex = examples[video_id]
      assert ex['label'] == label
      assert ex['num_frames'] == len(frames)
      assert ex['video'].shape == frames.shape and ex['video'].dtype == np.uint8
      error = np.abs(ex['video'].astype(np.float32) - originals[video_id])
      assert error.mean() < 4.0, f'{video_id}: VP9 + JPEG error {error.mean():.2f}'


def test_something_something_v2_resizes_to_frame_height(tmp_path):
  manual = tmp_path / 'raw'
  frames = fx.smooth_frames(5, 4, 32, 48)
  fx.write_ssv2_release(str(manual), {'train': [('7', 0, frames)], 'validation': []})
  config = fx.data_config('something_something_v2', tmp_path / 'tfds', manual, frame_height=16)
  info = data.prepare_dataset(config)
  assert info.config_name == 'h16'
  ex = _examples(config, 'train')['7']
  assert ex['video'].shape == (4, 16, 24, 3)  # Height 16, width keeps the 3:2 aspect.
  small = np.stack([video_io.resize_to_height(f, 16) for f in frames]).astype(np.float32)
  assert np.abs(ex['video'] - small).mean() < 5.0


def test_jester_from_frame_folders(tmp_path):
  manual = tmp_path / 'raw'
  videos = {
    'train': [
      ('11', 'Zooming In', fx.smooth_frames(11, 5, 20, 36)),
      ('12', 'Doing other things', fx.smooth_frames(12, 3, 20, 36)),
    ],
    'validation': [('21', 'Swiping Left', fx.smooth_frames(21, 4, 20, 36))],
  }
  paths = fx.write_jester_release(str(manual), videos)
  config = fx.data_config('jester', tmp_path / 'tfds', manual)
  info = data.prepare_dataset(config)

  assert info.class_names == fx.JESTER_CLASSES  # sorted, as TSM's category.txt for Jester
  assert info.num_examples == {'train': 2, 'validation': 1}
  for split, split_videos in videos.items():
    examples = _examples(config, split)
    for video_id, name, frames in split_videos:
      ex = examples[video_id]
      assert info.class_names[ex['label']] == name
      assert ex['num_frames'] == len(frames)
      # Frames are stored as released: the pixels are exactly those of the JPEG files.
      np.testing.assert_array_equal(
        ex['video'], np.stack([fx.decode_file(p) for p in paths[video_id]])
      )
      assert np.abs(ex['video'].astype(np.float32) - frames).mean() < 3.0


@pytest.mark.parametrize(
  'frames_dir,template,config_template',
  [
    ('20bn-something-something-v2-frames', '{:06d}.jpg', ''),  # official, detected
    ('my_frames', 'img_{:05d}.jpg', 'img_{:05d}.jpg'),  # a user's own layout
  ],
)
def test_video_folder_tsm_layout(tmp_path, frames_dir, template, config_template):
  manual = tmp_path / 'raw'
  categories = ('c0 waving', 'c1 nodding', 'c2 clapping', 'c3 jumping')
  videos = {
    'train': [
      ('a/1', 3, fx.smooth_frames(31, 4, 24, 32)),
      ('b 2', 0, fx.smooth_frames(32, 6, 24, 32)),
    ],
    'validation': [('v3', 1, fx.smooth_frames(33, 5, 24, 32))],
  }
  paths = fx.write_tsm_layout(str(manual), categories, videos, frames_dir, template)
  config = fx.data_config('video_folder', tmp_path / 'tfds', manual)
  config.video_folder.config_name = 'mine'
  config.video_folder.frames_dir = '' if frames_dir.startswith('20bn') else frames_dir
  config.video_folder.frame_template = config_template
  info = data.prepare_dataset(config)

  assert info.class_names == categories
  assert info.config_name == 'mine'
  assert info.num_examples == {'train': 2, 'validation': 1}
  for split, split_videos in videos.items():
    examples = _examples(config, split)
    for folder, label, frames in split_videos:
      ex = examples[folder]
      assert ex['label'] == label and ex['num_frames'] == len(frames)
      np.testing.assert_array_equal(
        ex['video'], np.stack([fx.decode_file(p) for p in paths[folder]])
      )


def test_video_folder_reads_the_number_of_frames_the_list_gives(tmp_path):
  manual = tmp_path / 'raw'
  frames = fx.smooth_frames(40, 6, 16, 16)
  fx.write_tsm_layout(
    str(manual), ('x', 'y'), {'train': [('v', 1, frames)], 'validation': []}, list_frames={'v': 4}
  )
  config = fx.data_config('video_folder', tmp_path / 'tfds', manual)
  data.prepare_dataset(config)
  assert _examples(config, 'train')['v']['num_frames'] == 4


def test_prepare_command_line_with_worker_processes(tmp_path):
  manual = tmp_path / 'raw'
  videos = {
    'train': [(f'{i}', fx.JESTER_CLASSES[i % 3], fx.smooth_frames(i, 3, 12, 16)) for i in range(5)],
    'validation': [('99', 'Zooming In', fx.smooth_frames(99, 3, 12, 16))],
  }
  fx.write_jester_release(str(manual), videos)
  data_dir = tmp_path / 'tfds'
  result = subprocess.run(
    [
      sys.executable,
      '-m',
      'glitr_jax.data.prepare',
      '--dataset=jester',
      f'--manual_dir={manual}',
      f'--data_dir={data_dir}',
      '--num_workers=2',
    ],
    cwd=_REPO,
    capture_output=True,
    text=True,
    timeout=240,
  )
  assert result.returncode == 0, result.stderr[-3000:]
  assert "3 classes; examples: {'train': 5, 'validation': 1}" in result.stdout
  # The examples came through the worker pool in order, with their own frames.
  examples = _examples(fx.data_config('jester', data_dir), 'train')
  for video_id, name, frames in videos['train']:
    assert fx.JESTER_CLASSES[examples[video_id]['label']] == name
    assert np.abs(examples[video_id]['video'].astype(np.float32) - frames).mean() < 3.0
