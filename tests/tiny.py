"""Tiny model sizes shared by the tests (so jit-compiled functions are shared too)."""

from glitr_jax.models import config as model_config_lib


def tiny_model_config(**overrides):
  """32-px frames of 8-px patches (a 4x4 grid), 16-px glimpses (2 patches), T = 4."""
  fields = dict(
    image_size=32,
    patch_size=8,
    hidden_size=32,
    depth=2,
    num_heads=2,
    mlp_ratio=2.0,
    temporal_hidden_size=48,
    temporal_depth=2,
    temporal_heads=2,
    num_classes=5,
    num_frames=4,
    glimpse_patches=2,
    drop_path_rate=0.1,
  )
  fields.update(overrides)
  return model_config_lib.get_model_config(**fields)


def tiny_train_config(stage: str = 'teacher', data_dir: str = ''):
  """A complete experiment config at tiny sizes on a tiny `glitr_synthetic` set (CPU seconds)."""
  from configs import common  # noqa: PLC0415
  from glitr_jax.data import config as data_config_lib  # noqa: PLC0415

  c = common.get_base_config()
  c.stage = stage
  c.model = tiny_model_config(num_classes=4, depth=1, temporal_depth=1, temporal_hidden_size=32)
  c.data = data_config_lib.get_data_config(
    name='glitr_synthetic', data_dir=data_dir, worker_count=0, eval_short_side=32
  )
  c.data.augment.rand_augment = ''
  c.data.augment.random_resized_crop = False
  s = c.data.synthetic
  s.frame_size, s.num_frames, s.num_classes, s.num_motions = 32, 4, 4, 2
  s.train_examples, s.validation_examples = 48, 12
  s.num_distractors, s.target_size, s.cue_radius = 2, 5, 20.0
  c.batch_size = 8
  c.eval.batch_size = 8
  c.num_train_steps = 6
  c.log_every_steps = 1
  c.checkpoint_every_steps = 2
  c.eval_every_steps = 0
  c.optim.lr_tf = c.optim.lr_tc = c.optim.lr_tl = 3e-3
  c.optim.min_lr_tf = c.optim.min_lr_tc = c.optim.min_lr_tl = 1e-5
  c.checkpoint.async_save = True
  return c
