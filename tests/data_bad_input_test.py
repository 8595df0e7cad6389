"""Bad raw input stops preparation with an error naming the file and the problem, or is skipped
and reported with skip_bad_videos; a missing release or dataset says what to do."""

import json
import os

import data_fixtures as fx
import numpy as np
import pytest
import tensorflow_datasets as tfds

from glitr_jax import data
from glitr_jax.data import builder_base, label_files, video_io

tfds.disable_progress_bar()


def _ssv2(tmp_path, n_train: int = 2):
  manual = str(tmp_path / 'raw')
  fx.write_ssv2_release(
    manual,
    {
      'train': [(f'{i}', i % 3, fx.smooth_frames(i, 6, 16, 16)) for i in range(n_train)],
      'validation': [('50', 1, fx.smooth_frames(50, 6, 16, 16))],
    },
  )
  config = fx.data_config('something_something_v2', tmp_path / 'tfds', manual, frame_height=0)
  return manual, config


def _jester(tmp_path):
  manual = str(tmp_path / 'raw')
  fx.write_jester_release(
    manual,
    {
      'train': [('1', 'Zooming In', fx.smooth_frames(1, 5, 12, 16))],
      'validation': [('2', 'Swiping Left', fx.smooth_frames(2, 5, 12, 16))],
    },
  )
  return manual, fx.data_config('jester', tmp_path / 'tfds', manual)


def _webm(manual: str, video_id: str) -> str:
  return os.path.join(manual, '20bn-something-something-v2', f'{video_id}.webm')


def test_corrupt_webm_names_the_file(tmp_path):
  manual, config = _ssv2(tmp_path)
  path = _webm(manual, '1')
  with open(path, 'wb') as f:
    f.write(b'not a video' * 50)
  with pytest.raises(video_io.BadVideoError, match='cannot decode') as error:
    data.prepare_dataset(config)
  assert error.value.path == path and path in str(error.value)
  assert 'skip_bad_videos' in str(error.value)


def test_truncated_webm_is_an_error_not_a_shorter_video(tmp_path):
  manual = str(tmp_path / 'raw')
  fx.write_ssv2_release(
    manual, {'train': [('1', 0, fx.smooth_frames(1, 30, 32, 32))], 'validation': []}
  )
  path = _webm(manual, '1')
  with open(path, 'rb') as f:
    content = f.read()
  with open(path, 'wb') as f:
    f.write(content[: len(content) * 6 // 10])
  config = fx.data_config('something_something_v2', tmp_path / 'tfds', manual, frame_height=0)
  with pytest.raises(video_io.BadVideoError, match='truncated') as error:
    data.prepare_dataset(config)
  assert path in str(error.value)


def test_missing_webm_names_the_file(tmp_path):
  manual, config = _ssv2(tmp_path)
  os.remove(_webm(manual, '0'))
  with pytest.raises(video_io.BadVideoError, match='file not found') as error:
    data.prepare_dataset(config)
  assert _webm(manual, '0') in str(error.value)


def test_missing_jester_frame_names_the_file(tmp_path):
  manual, config = _jester(tmp_path)
  missing = os.path.join(manual, '20bn-jester-v1', '1', '00003.jpg')
  os.remove(missing)
  with pytest.raises(video_io.BadVideoError, match='missing frame') as error:
    data.prepare_dataset(config)
  assert missing in str(error.value)


def test_truncated_jpeg_frame_names_the_file(tmp_path):
  manual, config = _jester(tmp_path)
  path = os.path.join(manual, '20bn-jester-v1', '2', '00004.jpg')
  with open(path, 'rb') as f:
    content = f.read()
  with open(path, 'wb') as f:
    f.write(content[: len(content) // 2])
  with pytest.raises(video_io.BadVideoError, match='corrupt') as error:
    data.prepare_dataset(config)
  assert path in str(error.value)


def test_frame_folder_missing_a_listed_frame_names_it(tmp_path):
  manual = str(tmp_path / 'raw')
  fx.write_tsm_layout(
    manual,
    ('a', 'b'),
    {'train': [('v', 0, fx.smooth_frames(3, 4, 8, 8))], 'validation': []},
    list_frames={'v': 6},
  )
  config = fx.data_config('video_folder', tmp_path / 'tfds', manual)
  with pytest.raises(video_io.BadVideoError, match='missing frame') as error:
    data.prepare_dataset(config)
  assert os.path.join(manual, '20bn-jester-v1', 'v', '00005.jpg') in str(error.value)


def test_ssv2_template_not_in_labels_names_the_split_file(tmp_path):
  manual, config = _ssv2(tmp_path)
  split_file = os.path.join(manual, 'something-something-v2-train.json')
  with open(split_file) as f:
    items = json.load(f)
  items[1]['template'] = 'Juggling [something]'
  with open(split_file, 'w') as f:
    json.dump(items, f)
  with pytest.raises(label_files.LabelFileError, match='Juggling') as error:
    data.prepare_dataset(config)
  assert error.value.path == split_file and 'entry 1' in str(error.value)


def test_jester_label_not_in_labels_names_the_csv(tmp_path):
  manual, config = _jester(tmp_path)
  csv = os.path.join(manual, 'jester-v1-validation.csv')
  with open(csv, 'w') as f:
    f.write('2;Waving Hello\n')
  with pytest.raises(label_files.LabelFileError, match="line 1: label 'Waving Hello'") as error:
    data.prepare_dataset(config)
  assert csv in str(error.value)


def test_list_label_out_of_range_names_the_list_file(tmp_path):
  manual = str(tmp_path / 'raw')
  fx.write_tsm_layout(
    manual, ('a', 'b'), {'train': [('v', 5, fx.smooth_frames(3, 4, 8, 8))], 'validation': []}
  )
  config = fx.data_config('video_folder', tmp_path / 'tfds', manual)
  with pytest.raises(label_files.LabelFileError, match=r'label 5 is not in 0\.\.1') as error:
    data.prepare_dataset(config)
  assert os.path.join(manual, 'train_videofolder.txt') in str(error.value)


@pytest.mark.parametrize(
  'file_name,content,problem',
  [
    ('something-something-v2-labels.json', '{"Holding something": "0",', 'invalid JSON at line 1'),
    ('something-something-v2-labels.json', '{"a": "0", "b": "2"}', 'without gaps'),
    ('something-something-v2-train.json', '[{"id": "1"}]', 'entry 0 is not an object with'),
  ],
)
def test_ssv2_label_files_that_do_not_parse(tmp_path, file_name, content, problem):
  manual, config = _ssv2(tmp_path)
  with open(os.path.join(manual, file_name), 'w') as f:
    f.write(content)
  with pytest.raises(label_files.LabelFileError, match=problem) as error:
    data.prepare_dataset(config)
  assert error.value.path == os.path.join(manual, file_name)


def test_jester_csv_that_does_not_parse(tmp_path):
  manual, config = _jester(tmp_path)
  csv = os.path.join(manual, 'jester-v1-train.csv')
  with open(csv, 'w') as f:
    f.write('1;Zooming In\n1 Zooming In\n')
  with pytest.raises(label_files.LabelFileError, match='line 2 is not "id;label"') as error:
    data.prepare_dataset(config)
  assert error.value.path == csv


@pytest.mark.parametrize(
  'file_name,content,problem',
  [
    ('train_videofolder.txt', 'v 4\n', 'line 1 is not "<folder> <num_frames> <label>"'),
    ('val_videofolder.txt', 'v four 0\n', 'line 1 is not'),
    ('category.txt', 'a\nb\na\n', 'listed more than once'),
  ],
)
def test_tsm_files_that_do_not_parse(tmp_path, file_name, content, problem):
  manual = str(tmp_path / 'raw')
  fx.write_tsm_layout(
    manual, ('a', 'b'), {'train': [('v', 1, fx.smooth_frames(3, 4, 8, 8))], 'validation': []}
  )
  with open(os.path.join(manual, file_name), 'w') as f:
    f.write(content)
  config = fx.data_config('video_folder', tmp_path / 'tfds', manual)
  with pytest.raises(label_files.LabelFileError, match=problem) as error:
    data.prepare_dataset(config)
  assert error.value.path == os.path.join(manual, file_name)


def test_skip_bad_videos_skips_and_reports_them(tmp_path):
  manual, config = _ssv2(tmp_path, n_train=4)
  with open(_webm(manual, '1'), 'wb') as f:
    f.write(b'\x00' * 300)
  split_file = os.path.join(manual, 'something-something-v2-train.json')
  with open(split_file) as f:
    items = json.load(f)
  items[3]['template'] = 'Juggling [something]'
  with open(split_file, 'w') as f:
    json.dump(items, f)
  config.skip_bad_videos = True

  info = data.prepare_dataset(config)

  assert info.num_examples == {'train': 2, 'validation': 1}
  skipped = info.skipped_videos['train']
  assert sorted(skipped) == ['1', '3']
  assert _webm(manual, '1') in skipped['1'] and 'cannot decode' in skipped['1']
  assert split_file in skipped['3'] and 'Juggling' in skipped['3']
  assert info.skipped_videos['validation'] == {}
  # The report survives reading the prepared dataset back.
  assert data.dataset_info(config).skipped_videos['train'] == skipped


def test_release_missing_files_says_what_where_and_how(tmp_path):
  manual, config = _ssv2(tmp_path)
  os.remove(os.path.join(manual, 'something-something-v2-labels.json'))
  with pytest.raises(builder_base.DatasetFilesMissingError) as error:
    data.prepare_dataset(config)
  message = str(error.value)
  assert os.path.join(manual, 'something-something-v2-labels.json') in message
  assert 'How to get the files' in message and 'qualcomm.com' in message


def test_missing_manual_dir_says_where_and_how(tmp_path):
  config = fx.data_config('jester', tmp_path / 'tfds', tmp_path / 'nowhere')
  with pytest.raises(builder_base.DatasetFilesMissingError) as error:
    data.prepare_dataset(config)
  assert str(tmp_path / 'nowhere') in str(error.value)
  assert '20bn-jester-v1' in str(error.value)  # The instructions are part of the message.


def test_unprepared_dataset_says_how_to_prepare_it(tmp_path):
  config = fx.data_config('jester', tmp_path / 'tfds')
  with pytest.raises(data.DatasetNotPreparedError, match='python -m glitr_jax.data.prepare'):
    data.dataset_info(config)


def test_offline_logits_missing_a_video_names_the_file(tmp_path):
  manual, config = _jester(tmp_path)
  data.prepare_dataset(config)
  path = str(tmp_path / 'offline.npz')
  np.savez(path, video_ids=np.array(['some_other_video']), logits=np.zeros((1, 5), np.float32))
  config.offline_logits = path
  iterator = data.create_train_iterator(
    config, batch_size=1, num_frames=2, image_size=8, seed=0, process_index=0, process_count=1
  )
  with pytest.raises(ValueError, match="video id '1' is not in") as error:
    next(iterator)
  assert path in str(error.value)
