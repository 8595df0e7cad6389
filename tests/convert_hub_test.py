"""Hub weights into glitr-jax, against the real libraries that write them.

A tiny random `transformers.VideoMAEForVideoClassification` is saved as transformers saves it (and
as the hub's uploads hold it), imported with `convert.load_videomae`, and its logits compared with
transformers' own torch forward; a tiny random timm `VisionTransformer` is saved with
`safetensors.torch.save_file` (as timm's hub uploads are) and as a DeiT-style `.pth`, imported into
Tf with `convert.load_vit_backbone`, and its features compared with timm's `forward_features` at
the class token (after timm's final norm). Both to 1e-5.

torchvision cannot load beside the CPU torch these tests run on; benchmarks/torch_compat.py says
why and how transformers and timm are imported without it (timm's ViT code itself runs unchanged).
"""

import json
import os
import pathlib
import sys

import jax.numpy as jnp
import numpy as np
import pytest
import safetensors.numpy
import safetensors.torch
import tiny
import torch

from configs import common as configs_common
from glitr_jax import convert, inference
from glitr_jax.convert import videomae as videomae_convert
from glitr_jax.models import videomae

sys.path.append(str(pathlib.Path(__file__).resolve().parents[1] / 'benchmarks'))
import torch_compat  # noqa: E402  (benchmarks/torch_compat.py)

torch_compat.mark_torchvision_absent()
import transformers  # noqa: E402

torch_compat.install_torchvision_stand_in()
from timm.models import vision_transformer as timm_vit  # noqa: E402

torch_compat.mark_torchvision_absent()  # the stand-in served timm's import only

# ------------------------------------------------------------------------- VideoMAE (transformers)
TINY = tiny.VIDEOMAE  # 4 frames of 32 px, 2x8x8 tubelets: 32 tokens of width 32; 5 classes.
# transformers' VideoMAEConfig names of the fields whose names differ.
_HF_NAMES = {
  'depth': 'num_hidden_layers',
  'num_heads': 'num_attention_heads',
  'num_classes': 'num_labels',
}


def offline_videomae_config(**overrides):
  """The project's `offline.videomae` section (configs/common.py) at the tiny sizes."""
  section = configs_common.get_base_config().offline.videomae
  section.update(dict(TINY, **overrides))
  return section


def hf_config(**overrides):
  """transformers' config of a VideoMAE at the TINY sizes."""
  fields = {_HF_NAMES.get(k, k): v for k, v in TINY.items() if k != 'mlp_ratio'}
  fields['intermediate_size'] = int(TINY['hidden_size'] * TINY['mlp_ratio'])
  # The official model's epsilon: transformers' default 1e-12 is the port's, not VideoMAE's.
  fields['layer_norm_eps'] = 1e-6
  fields.update(overrides)
  return transformers.VideoMAEConfig(**fields)


def random_hf_model(seed=0, **overrides):
  """A VideoMAEForVideoClassification with every parameter random (biases and k's bias too)."""
  torch.manual_seed(seed)
  model = transformers.VideoMAEForVideoClassification(hf_config(**overrides)).eval()
  with torch.no_grad():
    for name, p in model.named_parameters():
      if ('layernorm' in name or 'fc_norm' in name) and name.endswith('weight'):
        p.copy_(1.0 + 0.1 * torch.randn_like(p))
      else:
        p.copy_(0.2 * torch.randn_like(p))
  return model


def hub_format_state_dict(model):
  """The keys of the hub's uploads (transformers 4.x): q_bias/v_bias, no bias on q, k, v."""
  out = {}
  for key, value in model.state_dict().items():
    value = value.detach().clone().contiguous()
    if key.endswith('attention.attention.query.bias'):
      out[key.replace('query.bias', 'q_bias')] = value
    elif key.endswith('attention.attention.value.bias'):
      out[key.replace('value.bias', 'v_bias')] = value
    elif not key.endswith('attention.attention.key.bias'):  # its effect cancels in the softmax
      out[key] = value
  return out


def save_videomae(model, folder, layout):
  """Writes `model` as one of the checkpoint layouts researchers download."""
  if layout == 'safetensors':  # transformers 5 save_pretrained: model.safetensors + config.json
    model.save_pretrained(folder)
  elif layout == 'sharded':  # ... in shards beside model.safetensors.index.json
    model.save_pretrained(folder, max_shard_size='40KB')
  elif layout == 'bin':
    # What save_pretrained(safe_serialization=False) wrote (transformers 4.x; transformers 5
    # writes only safetensors): torch.save of the state dict as pytorch_model.bin + config.json.
    model.config.save_pretrained(folder)
    torch.save(model.state_dict(), os.path.join(folder, 'pytorch_model.bin'))
  elif layout == 'hub':  # the hub's uploads: 4.x key names
    model.config.save_pretrained(folder)
    safetensors.torch.save_file(
      hub_format_state_dict(model), os.path.join(folder, 'model.safetensors'), {'format': 'pt'}
    )
  else:
    raise ValueError(layout)
  return folder


def clip(seed=1, b=2):
  return np.random.default_rng(seed).normal(size=(b, 4, 3, 32, 32)).astype(np.float32)


def transformers_logits(model, clip_btchw):
  with torch.no_grad():
    return model(pixel_values=torch.from_numpy(clip_btchw)).logits.numpy()


def our_logits(variables, config, clip_btchw):
  module = videomae.VideoMAE.from_config(config)
  return np.asarray(module.apply(variables, jnp.asarray(clip_btchw.transpose(0, 1, 3, 4, 2))))


@pytest.mark.parametrize('layout', ['safetensors', 'sharded', 'bin', 'hub'])
def test_transformers_videomae_matches_transformers_forward(tmp_path, layout):
  model = random_hf_model()
  key_bias = model.videomae.encoder.layer[0].attention.attention.key.bias.detach()
  assert float(key_bias.abs().min()) > 0  # transformers 5's key bias is there, and not zero
  folder = save_videomae(model, str(tmp_path / layout), layout)
  files = sorted(os.listdir(folder))
  if layout == 'sharded':
    assert 'model.safetensors.index.json' in files and len(files) > 3, files
  config = offline_videomae_config()
  variables = convert.load_videomae(folder, config)
  x = clip()
  ref = transformers_logits(model, x)
  # transformers' fc_norm has PyTorch's default eps 1e-5, the official model 1e-6: the logits
  # differ by ~4e-6 here, inside the tolerance.
  np.testing.assert_allclose(our_logits(variables, config, x), ref, atol=1e-5, rtol=0)
  # q, k, v merged in that order, k without a bias, as the official model has them.
  attn = model.videomae.encoder.layer[1].attention.attention
  qkv = np.asarray(variables['params']['blocks_1']['attn']['qkv']['kernel']).T
  d = 32
  np.testing.assert_array_equal(qkv[:d], attn.query.weight.detach().numpy())
  np.testing.assert_array_equal(qkv[d : 2 * d], attn.key.weight.detach().numpy())
  np.testing.assert_array_equal(qkv[2 * d :], attn.value.weight.detach().numpy())
  np.testing.assert_array_equal(
    variables['params']['blocks_1']['attn']['q_bias'], attn.query.bias.detach().numpy()
  )


def test_transformers_videomae_without_qkv_bias(tmp_path):
  model = random_hf_model(seed=2, qkv_bias=False)
  folder = save_videomae(model, str(tmp_path / 'nobias'), 'safetensors')
  config = offline_videomae_config()
  variables = convert.load_videomae(folder, config)
  np.testing.assert_array_equal(variables['params']['blocks_0']['attn']['v_bias'], np.zeros(32))
  x = clip(3)
  np.testing.assert_allclose(
    our_logits(variables, config, x), transformers_logits(model, x), atol=1e-5, rtol=0
  )


def test_transformers_weight_file_and_state_dict_load(tmp_path):
  model = random_hf_model(seed=4)
  folder = save_videomae(model, str(tmp_path / 'hub'), 'hub')
  config = offline_videomae_config()
  x = clip(5)
  ref = transformers_logits(model, x)
  # The weight file itself (its config.json is read from beside it) ...
  weights = os.path.join(folder, 'model.safetensors')
  np.testing.assert_allclose(
    our_logits(convert.load_videomae(weights, config), config, x), ref, atol=1e-5, rtol=0
  )
  # ... and its state dict, as glitr_jax.offline passes it (sizes from the model config only).
  state = convert.common.read_state_dict(weights)
  params = videomae_convert.from_state_dict(state, videomae.VideoMAE.from_config(config))
  np.testing.assert_allclose(our_logits({'params': params}, config, x), ref, atol=1e-5, rtol=0)


def test_config_json_differences_are_all_named(tmp_path):
  folder = save_videomae(random_hf_model(), str(tmp_path / 'hub'), 'hub')
  config = offline_videomae_config(hidden_size=64, depth=3, num_classes=174, num_frames=16)
  with pytest.raises(ValueError) as e:
    convert.load_videomae(folder, config)
  message = str(e.value)
  assert os.path.join(folder, 'config.json') in message
  for line in (
    'hidden_size=32 but offline.videomae.hidden_size = 64',
    'num_hidden_layers=2 but offline.videomae.depth = 3',
    'intermediate_size=64 but offline.videomae.hidden_size * mlp_ratio = 128',
    'num_frames=4 but offline.videomae.num_frames = 16',
    'num_labels (id2label)=5 but offline.videomae.num_classes = 174',
  ):
    assert line in message, message
  assert 'patch_size' not in message and 'num_attention_heads' not in message


def test_a_config_json_of_another_model_is_refused(tmp_path):
  folder = save_videomae(random_hf_model(), str(tmp_path / 'hub'), 'hub')
  path = os.path.join(folder, 'config.json')
  with open(path) as f:
    fields = json.load(f)
  with open(path, 'w') as f:
    json.dump(dict(fields, model_type='vit'), f)
  with pytest.raises(
    ValueError, match="config.json: model_type='vit', not a transformers VideoMAE"
  ):
    convert.load_videomae(folder, offline_videomae_config())


def test_a_class_token_readout_is_refused(tmp_path):
  folder = save_videomae(random_hf_model(use_mean_pooling=False), str(tmp_path / 'cls'), 'hub')
  with pytest.raises(ValueError, match=r'use_mean_pooling=False: the offline model has only mean'):
    convert.load_videomae(folder, offline_videomae_config())


def test_transformers_keys_missing_or_extra_are_listed(tmp_path):
  model = random_hf_model()
  state = {k: v.numpy() for k, v in hub_format_state_dict(model).items()}
  del state['videomae.encoder.layer.1.attention.attention.key.weight']
  state['videomae.layernorm.weight'] = np.ones(32, np.float32)
  with pytest.raises(ValueError) as e:
    convert.load_videomae(state, offline_videomae_config())
  message = str(e.value)
  assert "missing keys (1): ['videomae.encoder.layer.1.attention.attention.key.weight']" in message
  assert "unexpected keys (1): ['videomae.layernorm.weight']" in message


# ------------------------------------------------------------------------------------ timm ViTs
MICRO = tiny.micro_model_config()


def random_timm_vit(seed=0, **overrides):
  """timm's ViT at MICRO's Tf sizes (48 wide, depth 2, 3 heads, 224 px / 16), all params random."""
  torch.manual_seed(seed)
  kwargs = dict(img_size=224, patch_size=16, embed_dim=48, depth=2, num_heads=3, num_classes=10)
  model = timm_vit.VisionTransformer(**dict(kwargs, **overrides)).eval()
  with torch.no_grad():
    for name, p in model.named_parameters():
      if 'norm' in name and name.endswith('weight'):
        p.copy_(1.0 + 0.1 * torch.randn_like(p))
      else:
        p.copy_(0.05 * torch.randn_like(p))
  return model


@pytest.mark.parametrize('layout', ['safetensors', 'hub', 'deit_pth'])
def test_timm_vit_initialises_tf_as_timm_computes_the_class_token(tmp_path, layout):
  model = random_timm_vit()
  state = {k: v.contiguous() for k, v in model.state_dict().items()}
  assert state['pos_embed'].shape == (1, 197, 48)  # the class position first
  if layout == 'safetensors':
    source = tmp_path / 'model.safetensors'
    safetensors.torch.save_file(state, str(source))
  elif layout == 'hub':  # as `huggingface-cli download timm/...` leaves it
    source = tmp_path / 'hub'
    source.mkdir()
    safetensors.torch.save_file(state, str(source / 'model.safetensors'))
    (source / 'config.json').write_text(
      json.dumps({'architecture': 'vit_micro', 'num_classes': 10})
    )
  else:  # DeiT's release: torch.save({'model': state_dict})
    source = tmp_path / 'deit.pth'
    torch.save({'model': state}, source)
  backbone = convert.load_vit_backbone(str(source), MICRO)
  pos = state['pos_embed'].numpy()
  np.testing.assert_array_equal(backbone['cls_embed'], pos[:, :1])
  np.testing.assert_array_equal(backbone['pos_embed'], pos[:, 1:])
  images = np.random.default_rng(5).normal(size=(2, 3, 224, 224)).astype(np.float32)
  with torch.no_grad():
    ref = model.forward_features(torch.from_numpy(images))[:, 0].numpy()  # after timm's norm
  ours = inference.model_for(MICRO).encode_frames(
    {'backbone': backbone}, jnp.asarray(images.transpose(0, 2, 3, 1))
  )
  np.testing.assert_allclose(ours, ref, atol=1e-5, rtol=0)


def test_timm_vit_without_a_class_position_is_refused(tmp_path):
  model = random_timm_vit(no_embed_class=True)
  path = tmp_path / 'model.safetensors'
  safetensors.numpy.save_file({k: v.numpy() for k, v in model.state_dict().items()}, str(path))
  with pytest.raises(ValueError, match=r'model.safetensors: pos_embed \(1, 196, 48\) has no class'):
    convert.load_vit_backbone(str(path), MICRO)
