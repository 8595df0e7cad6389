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
