"""The model config: one ConfigDict whose field names configs and outside tools share.

Modules never read a ConfigDict; `glitr_jax.models.glitr.GliTr.from_config` converts it into
keyword arguments once, after `validate` has checked it.
"""

import ml_collections

# Field names are a public contract (configs, converters and outside parity checks use them).
FIELDS = (
  'image_size',
  'patch_size',
  'hidden_size',
  'depth',
  'num_heads',
  'mlp_ratio',
  'temporal_hidden_size',
  'temporal_depth',
  'temporal_heads',
  'num_classes',
  'num_frames',
  'glimpse_patches',
  'drop_path_rate',
)
_REAL_FIELDS = ('mlp_ratio', 'drop_path_rate')  # the rest of FIELDS are positive ints
# How the model computes, not what it is: every model config has them, but two configs that differ
# only here hold interchangeable parameters.
SWITCHES = ('compute_dtype', 'remat', 'posemb_init')


def get_model_config(**overrides) -> ml_collections.ConfigDict:
  """GliTr's defaults: ViT-S/16 at 224, temporal heads 768 wide, depth 4, 6 heads, 96-px glimpses.

  Args:
    **overrides: field values that replace the defaults (e.g. `num_classes=27`).

  Returns:
    A ConfigDict with the fields of `FIELDS` plus the performance switches `compute_dtype`
    ('float32' or 'bfloat16': activations and matmuls; parameters stay float32) and `remat`
    (rematerialise Tf's blocks in the backward pass), and `posemb_init` ('normal': timm's
    trunc-normal position tables; 'sincos': sine-cosine starts, for training from scratch).
  """
  config = ml_collections.ConfigDict(
    dict(
      image_size=224,
      patch_size=16,
      hidden_size=384,
      depth=12,
      num_heads=6,
      mlp_ratio=4.0,
      temporal_hidden_size=768,
      temporal_depth=4,
      temporal_heads=6,
      num_classes=174,
      num_frames=16,
      glimpse_patches=6,
      drop_path_rate=0.1,
      compute_dtype='float32',
      remat=False,
      posemb_init='normal',
    )
  )
  config.lock()  # Overriding a field that does not exist raises a KeyError naming it.
  config.update(overrides)
  config.unlock()
  return config


def validate(config: ml_collections.ConfigDict) -> None:
  """Raises ValueError naming the `model.<field>` whose value is invalid."""
  missing = [f for f in FIELDS + SWITCHES if f not in config]
  if missing:
    raise ValueError(f'model config is missing field(s): {missing}')

  def check(ok: bool, field: str, why: str) -> None:
    if not ok:
      raise ValueError(f'model.{field}={config[field]!r}: {why}')

  for field in FIELDS:
    if field not in _REAL_FIELDS:
      check(isinstance(config[field], int) and config[field] > 0, field, 'must be a positive int')
  check(config.mlp_ratio > 0, 'mlp_ratio', 'must be positive')
  check(0.0 <= config.drop_path_rate < 1.0, 'drop_path_rate', 'must be in [0, 1)')
  check(config.posemb_init in ('normal', 'sincos'), 'posemb_init', "must be 'normal' or 'sincos'")
  check(isinstance(config.remat, bool), 'remat', 'must be True or False')
  dtypes = ('float32', 'bfloat16')
  check(config.compute_dtype in dtypes, 'compute_dtype', f'must be one of {dtypes}')
  check(
    config.image_size % config.patch_size == 0,
    'image_size',
    f'must be a multiple of model.patch_size={config.patch_size}',
  )
  grid = config.image_size // config.patch_size
  check(
    config.glimpse_patches <= grid,
    'glimpse_patches',
    f'a glimpse of {config.glimpse_patches} patches is larger than the frame grid of {grid}x{grid} '
    f'patches (model.image_size={config.image_size} / model.patch_size={config.patch_size})',
  )
  check(
    config.hidden_size % config.num_heads == 0,
    'hidden_size',
    f'must be divisible by model.num_heads={config.num_heads}',
  )
  check(
    config.temporal_hidden_size % config.temporal_heads == 0,
    'temporal_hidden_size',
    f'must be divisible by model.temporal_heads={config.temporal_heads}',
  )
  check(
    int(config.hidden_size * config.mlp_ratio) == config.hidden_size * config.mlp_ratio,
    'mlp_ratio',
    f'model.hidden_size * model.mlp_ratio must be an integer (hidden_size={config.hidden_size})',
  )


def glimpse_pixels(config: ml_collections.ConfigDict) -> int:
  """Side of a glimpse in pixels: `glimpse_patches * patch_size` (96 for ViT-S/16 with 6)."""
  return config.glimpse_patches * config.patch_size
