"""benchmarks/torch_compat.py against the real timm: the release's way of building its models.

The official release (benchmarks/official_step.py runs it) builds its temporal heads as timm 0.4
took them: timm's VisionTransformer over features, through an embed layer of its own whose
constructor takes (img_size, patch_size, in_chans, embed_dim), with `distilled=False`, and calls
`pre_logits`. On timm 1.x that fails; `adapt_official_model` must make it build, and must not
change what timm computes.
"""

import pathlib
import sys
import types

import pytest
import torch
from torch import nn

sys.path.append(str(pathlib.Path(__file__).resolve().parents[1] / 'benchmarks'))
import torch_compat  # noqa: E402  (benchmarks/torch_compat.py)

torch_compat.install_torchvision_stand_in()
from timm.models import vision_transformer as timm_vit  # noqa: E402

torch_compat.mark_torchvision_absent()  # the stand-in served timm's import only

T, D, E = 4, 8, 16  # frames, feature width, temporal width


def release_like_module() -> types.ModuleType:
  """A module with the two names the adaptation patches, written as the release writes them."""

  class TemporalPatchEmbed(nn.Module):
    def __init__(self, img_size, patch_size, in_chans, embed_dim):
      super().__init__()
      self.num_patches = img_size
      self.embed_layer = nn.Linear(in_chans, embed_dim)

    def forward(self, x):
      return self.embed_layer(x)

  def causalforward(self, x):
    return ('causal', x)

  return types.SimpleNamespace(TemporalPatchEmbed=TemporalPatchEmbed, causalforward=causalforward)


def temporal_head(module, **extra):
  return timm_vit.VisionTransformer(
    img_size=T,
    in_chans=D,
    embed_layer=module.TemporalPatchEmbed,
    num_classes=3,
    embed_dim=E,
    depth=1,
    num_heads=2,
    **extra,
  )


@pytest.fixture
def restore_timm(monkeypatch):
  """The adaptation patches timm's class module-wide: undone after each test."""
  cls = timm_vit.VisionTransformer
  monkeypatch.setattr(cls, '__init__', cls.__init__)
  monkeypatch.setattr(cls, '_adapted_for_official_release', False, raising=False)


def test_the_release_builds_on_timm_1x_only_once_adapted(restore_timm):
  module = release_like_module()
  with pytest.raises(TypeError, match='bias'):  # timm 1.x passes the embed layer more keywords
    temporal_head(module)
  with pytest.raises(TypeError, match='distilled'):
    timm_vit.VisionTransformer(img_size=32, patch_size=8, embed_dim=16, depth=1, distilled=False)
  torch_compat.adapt_official_model(module)
  head = temporal_head(module, distilled=False, drop_block_rate=None)
  assert isinstance(head.pre_logits, nn.Identity)
  features = torch.randn(2, T, D)
  assert head.patch_embed(features).shape == (2, T, E)


def test_the_adaptation_leaves_timm_computing_as_before(restore_timm):
  torch.manual_seed(0)
  plain = timm_vit.VisionTransformer(img_size=32, patch_size=8, embed_dim=16, depth=2, num_heads=2)
  torch_compat.adapt_official_model(release_like_module())
  torch.manual_seed(0)
  adapted = timm_vit.VisionTransformer(
    img_size=32, patch_size=8, embed_dim=16, depth=2, num_heads=2, distilled=False
  )
  assert plain.state_dict().keys() == adapted.state_dict().keys()
  for name, value in plain.state_dict().items():
    torch.testing.assert_close(adapted.state_dict()[name], value, rtol=0, atol=0)
  images = torch.randn(2, 3, 32, 32)
  torch.testing.assert_close(adapted.eval()(images), plain.eval()(images), rtol=0, atol=0)


def test_the_causal_forward_takes_timms_mask_keywords_only_when_unset(restore_timm):
  module = release_like_module()
  torch_compat.adapt_official_model(module)
  x = torch.zeros(1)
  assert module.causalforward(None, x, attn_mask=None, is_causal=False) == ('causal', x)
  with pytest.raises(ValueError, match='its own mask'):
    module.causalforward(None, x, attn_mask=torch.ones(1, 1))
  with pytest.raises(ValueError, match='its own mask'):
    module.causalforward(None, x, is_causal=True)  # the mask flag too


def test_torchvision_reads_as_not_installed_outside_timms_import():
  with pytest.raises(ImportError):
    import torchvision  # noqa: F401, PLC0415
