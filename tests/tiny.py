"""Model sizes and reference state dicts shared by the tests (so jit-compiled functions are too)."""

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


def micro_model_config():
  """The outside parity check's micro GliTr: 224-px frames of 16-px patches, 96-px glimpses.

  Tf 48 wide, depth 2, 3 heads; Tc and Tl 96 wide, depth 4, 6 heads; 5 classes; 4 frames.
  """
  return model_config_lib.get_model_config(
    hidden_size=48,
    depth=2,
    num_heads=3,
    temporal_hidden_size=96,
    temporal_depth=4,
    temporal_heads=6,
    num_classes=5,
    num_frames=4,
    glimpse_patches=6,
  )


# A tiny VideoMAE (glitr_jax.models.videomae fields) as the tiny teacher's L_dist needs it: the
# teacher's clip (4 frames of 32 px of 8-px patches) and classes, its Tf's width, depth and heads;
# 2x8x8 tubelets, so 2 x 4 x 4 = 32 tokens of width 32.
_VIDEOMAE_FIELDS = (
  'hidden_size',
  'depth',
  'num_heads',
  'mlp_ratio',
  'patch_size',
  'num_frames',
  'image_size',
  'num_classes',
)
VIDEOMAE = dict({k: tiny_model_config()[k] for k in _VIDEOMAE_FIELDS}, tubelet_size=2)


def vit_block_shapes(prefix, width, mlp, qkv_bias='fused'):
  """One ViT block's state-dict keys and shapes, in timm's names (docs/design.md 1.7 and 1.8).

  Written from the design, not from the converters, so that tests can check them.

  Args:
    prefix: the block's key prefix, e.g. 'backbone.blocks.0'.
    width: the token width D.
    mlp: the MLP's hidden width.
    qkv_bias: 'fused' (timm and the official GliTr: `attn.qkv.bias` (3D,)) or 'q_v' (VideoMAE:
      `attn.q_bias` and `attn.v_bias`, (D,) each; k has none).

  Returns:
    key -> shape, in the order the official state dicts list them.
  """
  biases = {
    'fused': {'attn.qkv.bias': (3 * width,)},
    'q_v': {'attn.q_bias': (width,), 'attn.v_bias': (width,)},
  }[qkv_bias]
  shapes = {
    'norm1.weight': (width,),
    'norm1.bias': (width,),
    'attn.qkv.weight': (3 * width, width),
    **biases,
    'attn.proj.weight': (width, width),
    'attn.proj.bias': (width,),
    'norm2.weight': (width,),
    'norm2.bias': (width,),
    'mlp.fc1.weight': (mlp, width),
    'mlp.fc1.bias': (mlp,),
    'mlp.fc2.weight': (width, mlp),
    'mlp.fc2.bias': (width,),
  }
  return {f'{prefix}.{key}': shape for key, shape in shapes.items()}


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
