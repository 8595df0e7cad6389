"""The data config: the `data` section of every experiment config (configs/common.py).

Field names are a public contract: configs, `python -m glitr_jax.data.prepare` and the trainers use
them. Modules never read the ConfigDict deep inside: `glitr_jax.data.pipeline` converts it once.
"""

import ml_collections

DATASETS = ('something_something_v2', 'jester', 'video_folder', 'glitr_synthetic')


def get_synthetic_config() -> ml_collections.ConfigDict:
  """The `glitr_synthetic` benchmark's generator (glitr_jax/data/synthetic.py documents each knob).

  This is the one home of the generator's defaults: `synthetic.SyntheticParams` takes its
  defaults from here. They make the original benchmark: 64x64 frames, 8 frames, 8 classes
  (2 target identities x 4 motions), 4000 training and 1000 validation videos; it builds in
  seconds. configs/demo.py sets the demo's own values.
  """
  return ml_collections.ConfigDict(
    dict(
      frame_size=64,  # frames are frame_size x frame_size pixels
      num_frames=8,  # frames per video
      num_classes=8,  # = places x identities ** num_phases x num_motions
      num_motions=4,  # 'right', 'left', 'down', 'up', 'clockwise', 'counterclockwise' (first N)
      train_examples=4000,
      validation_examples=1000,
      seed=0,
      # Difficulty knobs.
      num_distractors=6,  # moving objects with the targets' colours but no marker
      target_size=7,  # side of the target's (and distractors') square in pixels
      speed=2.0,  # pixels per frame (each video draws 0.8-1.2x this)
      noise=0.03,  # per-pixel Gaussian noise (std, intensities in [0, 1])
      cue=0.3,  # brightness of the halo that leads to the target (0 switches the cue off)
      cue_radius=40.0,  # the halo falls linearly to 0 at this distance (pixels)
      texture=0.12,  # contrast of the static background texture
      cue_tint=0.0,  # > 0: the halo's hue encodes the target's position (red ~ x, blue ~ y)
      num_phases=1,  # > 1: the target's colour pair changes this many times over the clip; the
      # class holds the whole sequence (identities ** num_phases codes)
      ring_radius=0.0,  # > 0: the path's centre is at a uniformly random angle at this distance
      # (x (frame_size - 1)) from the frame's centre, a continuous place outside the class
      ring_width=0.0,  # the distance is drawn uniformly within +-ring_width / 2 of ring_radius
      ring_arc=0.0,  # > 0: the first phase's identity picks one of the ring's equal sectors (the
      # first to the right, then clockwise) and the angle is uniform on this central fraction of it
      num_places=0,  # > 0: the target's path is centred at one of P places (part of the class)
      place_layout='circle',  # 'circle' round the centre | 'row' above the centre
      place_radius=0.33,  # the circle's radius, or the row's height above the centre (x frame_size)
      place_jitter=2.0,  # the path's centre is within +-place_jitter pixels of its place
      place_tint=0.0,  # > 0: the background's hue says the place (in every glimpse, unless faded)
      place_tint_radius=0.0,  # > 0: the hue fades linearly to 0 at this distance from the target
      place_tint_floor=0.0,  # with a radius: the hue fades to this instead of 0 (everywhere beyond)
    )
  )


def get_data_config(**overrides) -> ml_collections.ConfigDict:
  """The data section's defaults (those of the SSv2 student).

  Args:
    **overrides: field values that replace the defaults (e.g. `name='jester'`).

  Returns:
    A ConfigDict; see the comments below for each field.
  """
  c = ml_collections.ConfigDict()
  c.name = 'something_something_v2'  # | 'jester' | 'video_folder' | 'glitr_synthetic'
  c.data_dir = ''  # TFDS data_dir ('' = TFDS's default, ~/tensorflow_datasets)
  c.manual_dir = ''  # where the raw release lies (only needed to prepare the dataset)
  c.train_split = 'train'
  c.eval_split = 'validation'
  c.worker_count = 8  # grain worker processes per host (0 = in the main process)
  c.prefetch = 2  # batches buffered per worker
  c.skip_bad_videos = False  # True: skip corrupt videos while preparing, and report them
  c.offline_logits = ''  # .npz of precomputed offline-model logits joined by video id
  c.eval_short_side = 256  # eval: resize the short side to this, then centre-crop image_size
  # something_something_v2 only: stored frame height (TSM extracts at 256; 0 = as decoded).
  c.frame_height = 256
  # video_folder only: where the TSM frame-folder layout lies, relative to manual_dir.
  c.video_folder = ml_collections.ConfigDict(
    dict(
      config_name='default',  # names the prepared dataset: data_dir/video_folder/<config_name>
      frames_dir='',  # '' = 20bn-something-something-v2-frames/ or 20bn-jester-v1/
      category_file='category.txt',
      train_list='train_videofolder.txt',
      val_list='val_videofolder.txt',
      frame_template='',  # '' = detect {:06d}.jpg or {:05d}.jpg; else e.g. 'img_{:05d}.jpg'
    )
  )
  c.synthetic = get_synthetic_config()
  c.augment = ml_collections.ConfigDict()
  c.augment.rand_augment = 'rand-m7-n4-mstd0.5-inc1'  # '' switches RandAugment off
  c.augment.random_resized_crop = True  # False: training frames get the evaluation geometry
  c.augment.scale = (0.08, 1.0)
  c.augment.ratio = (3.0 / 4.0, 4.0 / 3.0)
  c.augment.random_erasing = 0.0  # probability (cube mode); teachers use 0.25
  # Where the training augmentation above runs. False: on the host, with PIL and NumPy (the
  # reference), the batches hold finished clips `video`. True: the host decodes the sampled frames
  # into a uint8 canvas and draws every random choice of the recipe exactly as the PIL path does;
  # the train step applies them on the accelerator (glitr_jax/data/device_augment.py; each op
  # matches PIL to within float rounding, tests/data_device_augment_test.py), several times
  # fewer host cores per video. Needs random_resized_crop; evaluation clips stay on the host.
  c.augment.device = False
  # device=True: (height, width) of the frame canvas (every clip of a batch has this shape on the
  # device; a clip's frames fill its top-left corner). The default holds SSv2's 256-px-tall frames
  # up to 16:9 and Jester's 100-px ones; larger frames are shrunk to fit, keeping their aspect.
  c.augment.device_canvas = (256, 456)
  # Mixup / CutMix (batch mode, on device in the train step); 0 switches each off.
  c.augment.mixup = 0.0
  c.augment.cutmix = 0.0
  c.augment.mixup_prob = 1.0
  c.augment.mixup_switch_prob = 0.5

  c.lock()  # Overriding a field that does not exist raises a KeyError naming it.
  c.update(overrides)
  c.unlock()
  return c


def validate(config: ml_collections.ConfigDict) -> None:
  """Raises ValueError naming the `data.<field>` whose value is invalid."""

  def check(ok: bool, field: str, value, why: str) -> None:
    if not ok:
      raise ValueError(f'data.{field}={value!r}: {why}')

  check(config.name in DATASETS, 'name', config.name, f'must be one of {DATASETS}')
  check(config.worker_count >= 0, 'worker_count', config.worker_count, 'must be >= 0')
  check(config.prefetch >= 1, 'prefetch', config.prefetch, 'must be >= 1')
  check(config.eval_short_side > 0, 'eval_short_side', config.eval_short_side, 'must be > 0')
  check(config.frame_height >= 0, 'frame_height', config.frame_height, 'must be >= 0')
  aug = config.augment
  check(
    0.0 < aug.scale[0] <= aug.scale[1] <= 1.0,
    'augment.scale',
    aug.scale,
    'must be (min, max) with 0 < min <= max <= 1',
  )
  check(
    0.0 < aug.ratio[0] <= aug.ratio[1],
    'augment.ratio',
    aug.ratio,
    'must be (min, max) with 0 < min <= max',
  )
  check(
    0.0 <= aug.random_erasing <= 1.0,
    'augment.random_erasing',
    aug.random_erasing,
    'is a probability',
  )
  check(
    not aug.device or aug.random_resized_crop,
    'augment.device',
    aug.device,
    'the device path needs data.augment.random_resized_crop=True (the crop-free geometry runs '
    'on the host only)',
  )
  check(
    len(aug.device_canvas) == 2 and min(aug.device_canvas) > 0,
    'augment.device_canvas',
    aug.device_canvas,
    'must be (height, width) > 0',
  )
  for field in ('mixup', 'cutmix'):
    check(aug[field] >= 0.0, f'augment.{field}', aug[field], 'must be >= 0 (0 = off)')
  for field in ('mixup_prob', 'mixup_switch_prob'):
    check(0.0 <= aug[field] <= 1.0, f'augment.{field}', aug[field], 'is a probability')
