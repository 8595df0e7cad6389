"""The input pipeline: official frame sampling, augmentation drawn once per clip, resumable
training iteration, disjoint host shards, and evaluation that counts every example once."""

import json

import data_fixtures as fx
import numpy as np
import pytest
import tensorflow_datasets as tfds
import torch
from PIL import Image

from glitr_jax import data
from glitr_jax.data import device_augment, pipeline, sampling, transforms

tfds.disable_progress_bar()

NUM_LONG = 12  # videos with >= 3 frames; video i has label i
NUM_SHORT = 2  # videos with 2 frames (labels 12, 13): dropped from training only
FRAME_H, FRAME_W = 12, 16
MEAN = np.array([0.485, 0.456, 0.406], np.float32)
STD = np.array([0.229, 0.224, 0.225], np.float32)


@pytest.fixture(scope='module')
def folder_config(tmp_path_factory):
  """A frame-folder dataset whose labels identify its videos (label i = video 'v{i:02d}')."""
  root = tmp_path_factory.mktemp('pipeline')
  num = NUM_LONG + NUM_SHORT
  videos = [
    (f'v{i:02d}', i, fx.smooth_frames(i, 2 if i >= NUM_LONG else 3 + i % 5, FRAME_H, FRAME_W))
    for i in range(num)
  ]
  fx.write_tsm_layout(
    str(root / 'raw'), [f'class {i}' for i in range(num)], {'train': videos, 'validation': videos}
  )
  config = fx.data_config('video_folder', root / 'tfds', root / 'raw', eval_short_side=10)
  data.prepare_dataset(config)
  return config


def _train(config, batch_size, seed=0, process_index=0, process_count=1, num_frames=4, size=8):
  return data.create_train_iterator(
    config,
    batch_size=batch_size,
    num_frames=num_frames,
    image_size=size,
    seed=seed,
    process_index=process_index,
    process_count=process_count,
  )


def _assert_batches_equal(a: list[dict], b: list[dict]) -> None:
  assert len(a) == len(b)
  for x, y in zip(a, b):
    assert x.keys() == y.keys()
    for key in x:
      np.testing.assert_array_equal(x[key], y[key], err_msg=key)


# --- Frame sampling (docs/design.md section 4.2). ---


def test_train_indices_pick_one_frame_in_each_integer_segment():
  rng = np.random.default_rng(0)
  for n in (3, 8, 17, 45, 64):
    for t in (1, 4, 8, 16):
      if n < t:
        continue
      segment = n // t
      seen = np.zeros(n, bool)
      for _ in range(2000):
        idx = sampling.train_frame_indices(n, t, rng)
        assert idx.shape == (t,)
        assert np.all(idx // segment == np.arange(t)), (n, t, idx)
        seen[idx] = True
      assert seen[: t * segment].all()  # Every frame of every segment can be drawn ...
      assert not seen[t * segment :].any()  # ... and the tail past T * (n // T) never is.


def test_train_indices_repeat_the_last_frame_of_short_videos():
  idx = sampling.train_frame_indices(5, 8, np.random.default_rng(0))
  np.testing.assert_array_equal(idx, [0, 1, 2, 3, 4, 4, 4, 4])


def test_eval_indices_are_the_official_centred_ones():
  # int(tick / 2 + tick * i), tick = n / T, worked out by hand.
  np.testing.assert_array_equal(
    sampling.eval_frame_indices(45, 16),
    [1, 4, 7, 9, 12, 15, 18, 21, 23, 26, 29, 32, 35, 37, 40, 43],
  )
  np.testing.assert_array_equal(sampling.eval_frame_indices(5, 8), [0, 0, 1, 2, 2, 3, 4, 4])
  np.testing.assert_array_equal(sampling.eval_frame_indices(16, 4), [2, 6, 10, 14])


# --- Spatial transforms. ---


def test_bilinear_resize_matches_torch_interpolate():
  frames = np.random.default_rng(0).uniform(size=(2, 13, 21, 3)).astype(np.float32)
  for out_h, out_w in ((8, 8), (30, 17), (13, 5)):
    ours = transforms.resize_bilinear(frames, out_h, out_w)
    ref = torch.nn.functional.interpolate(
      torch.from_numpy(frames).permute(0, 3, 1, 2),
      size=(out_h, out_w),
      mode='bilinear',
      align_corners=False,
    )
    np.testing.assert_allclose(ours, ref.permute(0, 2, 3, 1).numpy(), atol=1e-5)


def test_random_resized_crop_boxes_follow_scale_and_ratio():
  rng = np.random.default_rng(0)
  areas, ratios = [], []
  for _ in range(2000):
    top, left, h, w = transforms.random_resized_crop_params(
      200, 300, (0.08, 1.0), (0.75, 4 / 3), rng
    )
    assert 0 <= top and top + h <= 200 and 0 <= left and left + w <= 300
    areas.append(h * w / (200 * 300))
    ratios.append(w / h)
  assert min(areas) > 0.07 and max(areas) <= 1.0
  assert min(ratios) > 0.73 and max(ratios) < 1.37
  assert np.mean(np.array(areas) < 0.3) > 0.15  # Small crops do happen.


def test_random_erasing_probability_and_box():
  frames = np.zeros((3, 40, 40, 3), np.float32)
  rng = np.random.default_rng(1)
  assert transforms.random_erase_cube(frames, 0.0, rng) is frames
  erased = [transforms.random_erase_cube(frames, 0.25, rng) for _ in range(400)]
  hit = [e for e in erased if e is not frames]
  assert 0.18 < len(hit) / 400 < 0.32
  for e in hit[:20]:
    changed = np.any(e != 0, axis=-1)
    rows, cols = np.nonzero(changed[0])
    box = np.zeros_like(changed[0])
    box[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1] = True
    assert np.array_equal(changed[0], box)  # One rectangle ...
    assert all(np.array_equal(changed[t], box) for t in range(3))  # ... in every frame ...
    assert 0.02 * 1600 * 0.8 <= box.sum() <= 1600 / 3 * 1.1  # ... of area 0.02-1/3.
    assert not np.array_equal(e[0][box], e[1][box])  # with fresh noise per frame.


# --- Training iteration. ---


def test_train_batches_have_the_contract_shapes(folder_config):
  batch = next(_train(folder_config, batch_size=4))
  assert batch['video'].shape == (4, 4, 8, 8, 3) and batch['video'].dtype == np.float32
  assert batch['label'].shape == (4,) and batch['label'].dtype == np.int32
  assert set(batch) == {'video', 'label'}


def test_resumed_iteration_equals_uninterrupted(folder_config):
  config = folder_config.copy_and_resolve_references()
  config.augment.random_erasing = 0.5  # Every random step of the recipe is on.
  iterator = _train(config, batch_size=3, seed=7)
  for _ in range(3):
    next(iterator)
  state = iterator.get_state()
  assert json.loads(state)  # bytes of JSON text: storable anywhere
  expected = [next(iterator) for _ in range(5)]  # Crosses an epoch boundary (12 videos).

  resumed = _train(config, batch_size=3, seed=7)
  resumed.set_state(state)
  _assert_batches_equal([next(resumed) for _ in range(5)], expected)


def test_device_path_batches_hold_canvases_and_draws_and_resume(folder_config):
  config = folder_config.copy_and_resolve_references()
  config.augment.device, config.augment.device_canvas = True, (16, 20)
  config.augment.random_erasing = 0.5
  iterator = _train(config, batch_size=4, seed=3)
  batch = next(iterator)
  assert set(batch) == {*device_augment.PARAM_KEYS, 'label'}
  assert batch['frames'].shape == (4, 4, 16, 20, 3) and batch['frames'].dtype == np.uint8
  np.testing.assert_array_equal(batch['extent'], [[FRAME_H, FRAME_W]] * 4)
  assert batch['ra_kind'].shape == (4, 4) and batch['ra_lut'].shape == (4, 4, 256)  # n4
  assert batch['crop_box'].shape == (4, 4) and batch['erase_box'].shape == (4, 5)
  state = iterator.get_state()
  expected = [next(iterator) for _ in range(4)]
  resumed = _train(config, batch_size=4, seed=3)
  resumed.set_state(state)
  _assert_batches_equal([next(resumed) for _ in range(4)], expected)


def test_seed_changes_order_and_augmentation(folder_config):
  a = next(_train(folder_config, batch_size=4, seed=0))
  b = next(_train(folder_config, batch_size=4, seed=1))
  assert not np.array_equal(a['video'], b['video'])


def test_host_shards_are_disjoint_cover_the_split_and_reshuffle(folder_config):
  hosts, local = 3, 2
  shards, sequences = [], []
  for host in range(hosts):
    iterator = _train(
      folder_config, batch_size=local * hosts, process_index=host, process_count=hosts
    )
    labels = np.concatenate([next(iterator)['label'] for _ in range(12)]).tolist()
    shards.append(set(labels))
    sequences.append(labels)
  assert sum(len(s) for s in shards) == NUM_LONG  # Disjoint ...
  assert set.union(*shards) == set(range(NUM_LONG))  # ... and covering the training videos.
  orders = []
  for shard, labels in zip(shards, sequences):
    k = len(shard)
    epochs = [labels[i * k : (i + 1) * k] for i in range(3)]
    assert all(sorted(e) == sorted(shard) for e in epochs)  # Each epoch: every video once ...
    orders.append(epochs)
  assert any(epochs[0] != epochs[1] for epochs in orders)  # ... in a new order.


def test_short_videos_are_dropped_from_training(folder_config):
  iterator = _train(folder_config, batch_size=4)
  labels = np.concatenate([next(iterator)['label'] for _ in range(9)])  # three epochs
  assert set(labels.tolist()) == set(range(NUM_LONG))
  assert np.all(np.bincount(labels) == 3)


def test_global_batch_must_divide_among_hosts(folder_config):
  with pytest.raises(ValueError, match='batch_size=10'):
    _train(folder_config, batch_size=10, process_index=0, process_count=4)


def test_offline_logits_are_joined_by_video_id(folder_config, tmp_path):
  ids = [f'v{i:02d}' for i in range(NUM_LONG + NUM_SHORT)]
  logits = np.arange(len(ids) * 5, dtype=np.float32).reshape(len(ids), 5)
  order = np.random.default_rng(0).permutation(len(ids))  # The file's order is its own.
  path = str(tmp_path / 'offline.npz')
  np.savez(path, video_ids=np.array(ids)[order], logits=logits[order])
  config = folder_config.copy_and_resolve_references()
  config.offline_logits = path
  batch = next(_train(config, batch_size=4))
  assert batch['offline_logits'].shape == (4, 5) and batch['offline_logits'].dtype == np.float32
  np.testing.assert_array_equal(batch['offline_logits'], logits[batch['label']])


def test_augmentation_draws_once_per_clip(tmp_path):
  # A video whose frames are all the same picture: a per-frame draw would make them differ.
  picture = np.random.default_rng(0).integers(0, 256, size=(24, 32, 3), dtype=np.uint8)
  frames = np.repeat(picture[None], 6, axis=0)
  fx.write_tsm_layout(
    str(tmp_path / 'raw'), ['only'], {'train': [('same', 0, frames)], 'validation': []}
  )
  config = fx.data_config('video_folder', tmp_path / 'tfds', tmp_path / 'raw', eval_short_side=16)
  data.prepare_dataset(config)
  clips = np.concatenate(
    [next(_train(config, batch_size=8, seed=s, size=16))['video'] for s in (0, 1)]
  )
  for clip in clips:  # RandAugment and the random-resized crop: one draw for all frames.
    assert all(np.array_equal(clip[0], clip[t]) for t in range(1, 4))
  assert len({clip[0].tobytes() for clip in clips}) == len(clips)  # but a new draw per clip.

  config.augment.random_erasing = 1.0
  for clip in next(_train(config, batch_size=8, size=16))['video']:
    differs = np.any(clip[1:] != clip[:1], axis=-1)  # (T - 1, H, W): where erasing noise lies
    assert differs.any()
    assert all(np.array_equal(differs[0], d) for d in differs)  # The same box in every frame.


# --- Evaluation. ---


def _eval_all(config, batch_size, hosts, **kwargs):
  return [
    list(
      data.create_eval_iterator(
        config,
        batch_size=batch_size,
        num_frames=4,
        image_size=8,
        process_index=host,
        process_count=hosts,
        **kwargs,
      )
    )
    for host in range(hosts)
  ]


@pytest.mark.parametrize('hosts,batch_size', [(1, 4), (4, 8)])
def test_eval_counts_every_example_once_and_hosts_agree(folder_config, hosts, batch_size):
  num = NUM_LONG + NUM_SHORT  # 14: neither 4 nor 8 divides it
  per_host = _eval_all(folder_config, batch_size, hosts)
  assert len({len(batches) for batches in per_host}) == 1  # Same number of batches everywhere.
  real = []
  for batches in per_host:
    for batch in batches:
      assert batch['video'].shape == (batch_size // hosts, 4, 8, 8, 3)
      mask, index = batch['mask'], batch['index']
      assert mask.dtype == bool and index.dtype == np.int64
      assert np.all(index[~mask] == -1) and np.all(batch['video_id'][~mask] == '')
      assert np.all(batch['video'][~mask] == 0)
      # Labels identify the videos of this dataset: video 'v07' has label 7.
      assert [f'v{label:02d}' for label in batch['label'][mask]] == batch['video_id'][mask].tolist()
      real.extend(index[mask].tolist())
  assert sorted(real) == list(range(num))  # Every example exactly once, short ones included.


def test_eval_max_examples(folder_config):
  (batches,) = _eval_all(folder_config, 4, 1, max_examples=5)
  assert len(batches) == 2
  assert sorted(np.concatenate([b['index'][b['mask']] for b in batches]).tolist()) == list(range(5))


def test_eval_frames_are_centred_resized_and_normalised(folder_config):
  source = pipeline.prepared_builder(folder_config).as_data_source(split='validation')
  (batches,) = _eval_all(folder_config, 4, 1)
  batch = batches[0]
  for video, index in zip(batch['video'], batch['index']):
    stored = source[int(index)]['video']
    n = len(stored)
    expected = []
    for i in range(4):
      frame = Image.fromarray(stored[int(n / 4 / 2 + n / 4 * i)])
      frame = frame.resize((13, 10), Image.BICUBIC)  # Short side 12 -> 10; 16 -> int(13.33).
      expected.append(np.asarray(frame)[1:9, 2:10])  # Centre 8x8: round(1.0), round(2.5) = 2.
    expected = (np.stack(expected) / np.float32(255) - MEAN) / STD
    np.testing.assert_allclose(video, expected, atol=1e-5)


def test_eval_iterable_can_be_iterated_again(folder_config):
  iterable = data.create_eval_iterator(
    folder_config, batch_size=4, num_frames=4, image_size=8, process_index=0, process_count=1
  )
  _assert_batches_equal(list(iterable), list(iterable))
  assert len(iterable) == 4


def test_eval_short_side_smaller_than_image_size_is_an_error(folder_config):
  with pytest.raises(ValueError, match='eval_short_side=10'):
    data.create_eval_iterator(
      folder_config, batch_size=4, num_frames=4, image_size=12, process_index=0, process_count=1
    )


def test_worker_processes_resume_exactly_and_evaluate_like_in_process(folder_config):
  config = folder_config.copy_and_resolve_references()
  config.worker_count = 2  # grain worker processes (the flags they read get their defaults)
  iterator = _train(config, batch_size=2)
  for _ in range(3):
    next(iterator)
  state = iterator.get_state()
  expected = [next(iterator) for _ in range(4)]
  resumed = _train(config, batch_size=2)
  resumed.set_state(state)
  _assert_batches_equal([next(resumed) for _ in range(4)], expected)

  (in_process,) = _eval_all(folder_config, 4, 1)
  (with_workers,) = _eval_all(config, 4, 1)
  _assert_batches_equal(with_workers, in_process)
