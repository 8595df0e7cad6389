"""Importing timm where torchvision cannot load, and running the official release on timm 1.x.

torchvision: timm imports it when it loads (its data transforms and FrozenBatchNorm2d), and
transformers imports it whenever it finds it installed. The torchvision wheel pip installs beside
timm (0.28.0, built for torch 2.13's CUDA wheel) does not load beside the CPU torch 2.13.0
("operator torchvision::nms does not exist"), and no model used here needs torchvision. So
`mark_torchvision_absent` makes `import torchvision` fail as if it were not installed (what
transformers wants), and `install_torchvision_stand_in` puts inert modules in its place holding
only the names timm 1.0.29 reads at import (`_TORCHVISION_STAND_IN`); the classes raise if
anything instantiates them. timm's ViT code (timm.models.vision_transformer, timm.layers) runs
unchanged. tests/convert_hub_test.py and benchmarks/official_step.py use both.

`adapt_official_model` lets the official release's model.py (written for timm 0.4) build on timm
1.x without changing what it computes; its docstring lists each adaptation.
"""

import enum
import importlib.machinery
import sys
import types


def mark_torchvision_absent() -> None:
  for name in [n for n in sys.modules if n == 'torchvision' or n.startswith('torchvision.')]:
    del sys.modules[name]
  sys.modules['torchvision'] = None  # `import torchvision` raises, find_spec says: not installed


class _NotTorchvision:
  def __init__(self, *args, **kwargs):
    raise RuntimeError('torchvision stand-in (benchmarks/torch_compat.py): not the real class')


# What timm 1.0.29 reads from torchvision at import: timm/data/transforms.py subclasses
# transforms.ToTensor and maps InterpolationMode's members; timm/data/naflex_transforms.py imports
# InterpolationMode; timm/layers/norm_act.py, create_norm.py and timm/utils/model.py import
# ops.misc.FrozenBatchNorm2d; timm/data/dataset_factory.py imports six dataset classes.
# (timm/layers/_fx.py's torchvision.models.feature_extraction is optional: its ImportError is
# caught.)
_TORCHVISION_STAND_IN = {
  'torchvision': {},
  'torchvision.transforms': {'ToTensor': _NotTorchvision},
  'torchvision.transforms.functional': {
    'InterpolationMode': enum.Enum(
      'InterpolationMode',
      {
        n: n.lower()
        for n in ('NEAREST', 'NEAREST_EXACT', 'BILINEAR', 'BICUBIC', 'BOX', 'HAMMING', 'LANCZOS')
      },  # fmt: skip
    )
  },
  'torchvision.ops': {},
  'torchvision.ops.misc': {'FrozenBatchNorm2d': _NotTorchvision},
  'torchvision.datasets': dict.fromkeys(
    ('CIFAR100', 'CIFAR10', 'MNIST', 'KMNIST', 'FashionMNIST', 'ImageFolder'), _NotTorchvision
  ),
}


def install_torchvision_stand_in() -> None:
  mark_torchvision_absent()
  for name, attributes in _TORCHVISION_STAND_IN.items():
    module = types.ModuleType(name)
    module.__path__ = []  # a package with no files: any other submodule is not found
    module.__spec__ = importlib.machinery.ModuleSpec(name, None, is_package=True)
    module.__dict__.update(attributes)
    sys.modules[name] = module
    parent, _, child = name.rpartition('.')
    if parent:
      setattr(sys.modules[parent], child, module)


# Keyword arguments timm 1.x's model factory passes, or the release passes, that timm 1.x's
# VisionTransformer does not take; none changes the model (no pretrained weights are loaded, the
# release's drop_block_rate is None, distilled=False).
_DROPPED_VIT_KWARGS = (
  'pretrained_cfg',
  'pretrained_cfg_overlay',
  'cache_dir',
  'drop_block_rate',
  'distilled',
)


def adapt_official_model(official: types.ModuleType) -> None:
  """Makes the official release's model.py (imported as `official`) build on timm 1.x.

  Each adaptation keeps what the release computes:
  * VisionTransformer drops the keywords in `_DROPPED_VIT_KWARGS` and gets back `pre_logits`,
    the identity timm 0.4 had for a model without a representation layer (the release calls it).
  * TemporalPatchEmbed takes, and ignores, the extra keywords timm 1.x passes an embed layer
    (bias, dynamic_img_pad, ...): it embeds features, not image patches.
  * The causal attention forward takes the attn_mask and is_causal keywords timm 1.x's Block
    passes (None and False here: the release's causal mask is its own) and refuses others.

  Only timm's class (module-wide) and the release's own module are patched.
  """
  import torch  # noqa: PLC0415  (torch is a benchmark dependency only)
  from timm.models import vision_transformer  # noqa: PLC0415

  vit_class = vision_transformer.VisionTransformer
  if not getattr(vit_class, '_adapted_for_official_release', False):
    init = vit_class.__init__

    def vit_init(self, *args, **kwargs):
      init(self, *args, **{k: v for k, v in kwargs.items() if k not in _DROPPED_VIT_KWARGS})
      self.pre_logits = torch.nn.Identity()

    vit_class.__init__ = vit_init
    vit_class._adapted_for_official_release = True

  embed_init = official.TemporalPatchEmbed.__init__

  def temporal_embed_init(self, img_size, patch_size, in_chans, embed_dim, **unused):
    embed_init(self, img_size, patch_size, in_chans, embed_dim)

  official.TemporalPatchEmbed.__init__ = temporal_embed_init
  causal = official.causalforward

  def causal_forward(self, x, attn_mask=None, is_causal=False):
    if attn_mask is not None or is_causal:
      raise ValueError('the official causal attention applies its own mask, not attn_mask')
    return causal(self, x)

  official.causalforward = causal_forward
