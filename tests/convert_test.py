"""Checkpoint import: official GliTr state dicts and ImageNet ViTs.

The parity tests run the official semantics in PyTorch (F.affine_grid / F.grid_sample with
align_corners=True, F.conv2d, the timm block) on a state dict written with the official key names,
and compare them with `load_official` + glitr_jax.inference on the same inputs, in the micro
configuration of the outside parity check (width 48, depth 2, 3 heads; temporal 96 wide, depth 4,
6 heads; 5 classes; 4 frames of 224 x 224; 96-px glimpses).

The file formats (safetensors, hub directories, sharded checkpoints, files that are not what their
names say, non-finite weights) and `python -m glitr_jax.convert.export` are tested at the end.
"""

import json
import os
import pathlib
import pickle
import subprocess
import sys

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
import pytest
import safetensors.numpy
import safetensors.torch
import tiny
import torch
import torch.nn.functional as F

from glitr_jax import convert, glimpse, inference
from glitr_jax.convert import export, timm_vit
from glitr_jax.train import checkpoints

REPO = pathlib.Path(__file__).resolve().parents[1]

MICRO = tiny.micro_model_config()


def official_shapes(d=48, depth=2, e=96, tdepth=4, classes=5, frames=4, patch=16, grid=14):
  """The official state dict's keys and shapes, from docs/design.md, not from the converter."""
  shapes = {
    'backbone.cls_token': (1, 1, d),
    'backbone.pos_embed': (1, grid * grid, d),
    'backbone.cls_embed': (1, 1, d),
    'backbone.patch_embed.proj.weight': (d, 3, patch, patch),
    'backbone.patch_embed.proj.bias': (d,),
    'backbone.norm.weight': (d,),
    'backbone.norm.bias': (d,),
  }
  for i in range(depth):
    shapes.update(tiny.vit_block_shapes(f'backbone.blocks.{i}', d, 4 * d))
  for head in ('temporal_head', 'temploc_head'):
    shapes[f'{head}.tmp_embed'] = (1, frames, e)
    shapes[f'{head}.patch_embed.embed_layer.0.weight'] = (e, d)
    shapes[f'{head}.patch_embed.embed_layer.0.bias'] = (e,)
    shapes[f'{head}.patch_embed.embed_layer.1.weight'] = (e,)
    shapes[f'{head}.patch_embed.embed_layer.1.bias'] = (e,)
    shapes[f'{head}.norm.weight'] = (e,)
    shapes[f'{head}.norm.bias'] = (e,)
    for i in range(tdepth):
      shapes.update(tiny.vit_block_shapes(f'{head}.blocks.{i}', e, 4 * e))
  shapes['temporal_head.head.weight'] = (classes, e)
  shapes['temporal_head.head.bias'] = (classes,)
  shapes['temploc_head.head.weight'] = (2, e)
  shapes['temploc_head.init_loc'] = (1, 1, 2)
  return shapes


def random_state_dict(shapes, seed=0):
  rng = np.random.default_rng(seed)
  sd = {}
  for k, shape in shapes.items():
    if k.endswith(('norm1.weight', 'norm2.weight', 'norm.weight', 'embed_layer.1.weight')):
      sd[k] = (1.0 + 0.1 * rng.normal(size=shape)).astype(np.float32)
    else:
      sd[k] = (0.05 * rng.normal(size=shape)).astype(np.float32)
  sd['temploc_head.head.weight'] *= 10.0  # locations that move
  sd['temploc_head.init_loc'] = np.array([[[0.1, -0.2]]], np.float32)
  return sd


# ------------------------------ PyTorch reference of the official forward ----------------------
def t_block(x, sd, p, heads, causal):
  b, n, d = x.shape
  y = F.layer_norm(x, (d,), sd[p + '.norm1.weight'], sd[p + '.norm1.bias'], eps=1e-6)
  qkv = F.linear(y, sd[p + '.attn.qkv.weight'], sd[p + '.attn.qkv.bias'])
  q, k, v = qkv.reshape(b, n, 3, heads, d // heads).permute(2, 0, 3, 1, 4)
  attn = (q @ k.transpose(-2, -1)) * (d // heads) ** -0.5
  if causal:
    attn = attn.masked_fill(torch.triu(torch.ones(n, n, dtype=torch.bool), 1), float('-inf'))
  out = (attn.softmax(-1) @ v).transpose(1, 2).reshape(b, n, d)
  x = x + F.linear(out, sd[p + '.attn.proj.weight'], sd[p + '.attn.proj.bias'])
  y = F.layer_norm(x, (d,), sd[p + '.norm2.weight'], sd[p + '.norm2.bias'], eps=1e-6)
  y = F.linear(F.gelu(F.linear(y, sd[p + '.mlp.fc1.weight'], sd[p + '.mlp.fc1.bias'])),
               sd[p + '.mlp.fc2.weight'], sd[p + '.mlp.fc2.bias'])  # fmt: skip
  return x + y


def t_vit(sd, images_nchw, pos=None, depth=2, heads=3):
  w = sd['backbone.patch_embed.proj.weight']
  x = F.conv2d(images_nchw, w, sd['backbone.patch_embed.proj.bias'], stride=w.shape[-1])
  x = x.flatten(2).transpose(1, 2)
  x = x + (sd['backbone.pos_embed'] if pos is None else pos)
  cls = (sd['backbone.cls_token'] + sd['backbone.cls_embed']).expand(x.shape[0], -1, -1)
  x = torch.cat([cls, x], 1)
  for i in range(depth):
    x = t_block(x, sd, f'backbone.blocks.{i}', heads, False)
  x = F.layer_norm(x, (x.shape[-1],), sd['backbone.norm.weight'], sd['backbone.norm.bias'], 1e-6)
  return x[:, 0]


def t_temporal(sd, head, feats, depth=4, heads=6):
  p = head + '.patch_embed.embed_layer'
  x = F.linear(feats, sd[p + '.0.weight'], sd[p + '.0.bias'])
  x = F.layer_norm(x, (x.shape[-1],), sd[p + '.1.weight'], sd[p + '.1.bias'], eps=1e-6)
  x = x + sd[head + '.tmp_embed'][:, : x.shape[1]]
  for i in range(depth):
    x = t_block(x, sd, f'{head}.blocks.{i}', heads, True)
  x = F.layer_norm(x, (x.shape[-1],), sd[head + '.norm.weight'], sd[head + '.norm.bias'], 1e-6)
  return F.linear(x, sd[head + '.head.weight'], sd.get(head + '.head.bias'))


def t_theta(loc, n, grid=14):
  s = n / grid
  theta = torch.zeros(loc.shape[0], 2, 3)
  theta[:, 0, 0] = s
  theta[:, 1, 1] = s
  theta[:, :, 2] = loc
  return theta


def t_glimpse(frames_nchw, loc, n, patch=16):
  theta = t_theta(loc, n)
  size = (frames_nchw.shape[0], 3, n * patch, n * patch)
  grid = F.affine_grid(theta, size, align_corners=True)
  return F.grid_sample(frames_nchw, grid, mode='bilinear', padding_mode='zeros', align_corners=True)


def t_pos(sd, loc, n, grid=14):
  d = sd['backbone.pos_embed'].shape[-1]
  pos = sd['backbone.pos_embed'].reshape(1, grid, grid, d).permute(0, 3, 1, 2)
  pos = pos.expand(loc.shape[0], -1, -1, -1)
  sgrid = F.affine_grid(t_theta(loc, n), (loc.shape[0], d, n, n), align_corners=True)
  out = F.grid_sample(pos, sgrid, mode='bilinear', padding_mode='zeros', align_corners=True)
  return out.flatten(2).transpose(1, 2)


def t_teacher(sd, frames_btchw):
  b, t = frames_btchw.shape[:2]
  feats = t_vit(sd, frames_btchw.flatten(0, 1)).reshape(b, t, -1)
  logits = t_temporal(sd, 'temporal_head', feats)
  preds = t_temporal(sd, 'temploc_head', feats)
  init = sd['temploc_head.init_loc'].expand(b, 1, 2)
  return logits, torch.cat([init, preds[:, :-1]], 1), feats


def t_student(sd, frames_btchw, n=6):
  """Official Algorithm 1: Tc and Tl recomputed over the prefix at every step."""
  b, t = frames_btchw.shape[:2]
  loc = sd['temploc_head.init_loc'].reshape(1, 2).expand(b, 2)
  feats, logits, locs, glimpses = [], [], [], []
  for i in range(t):
    g = t_glimpse(frames_btchw[:, i], loc, n)
    glimpses.append(g)
    feats.append(t_vit(sd, g, t_pos(sd, loc, n)))
    locs.append(loc)
    prefix = torch.stack(feats, 1)
    logits.append(t_temporal(sd, 'temporal_head', prefix)[:, -1])
    loc = t_temporal(sd, 'temploc_head', prefix)[:, -1]
  return torch.stack(logits, 1), torch.stack(locs, 1), torch.stack(feats, 1), glimpses


# ----------------------------------------------------------------------------------------------
SD = random_state_dict(official_shapes())
TSD = {k: torch.from_numpy(v) for k, v in SD.items()}


def smooth_video(seed, b=2, t=4, size=224):
  rng = np.random.default_rng(seed)
  y, x = np.mgrid[0:size, 0:size] / size
  coef = rng.normal(size=(b, t, 3, 3))
  video = (
    coef[..., 0, None, None] * np.sin(4 * x + 1)
    + coef[..., 1, None, None] * np.cos(3 * y)
    + coef[..., 2, None, None] * x * y
  )
  return video.astype(np.float32)  # (B, T, 3, H, W)


def test_teacher_matches_the_official_semantics():
  video = np.random.default_rng(1).normal(size=(2, 4, 3, 224, 224)).astype(np.float32)
  variables = convert.load_official(SD, MICRO)
  ours = inference.teacher_forward(variables, MICRO, jnp.asarray(video.transpose(0, 1, 3, 4, 2)))
  with torch.no_grad():
    logits, locs, feats = t_teacher(TSD, torch.from_numpy(video))
  np.testing.assert_allclose(ours['logits'], logits.numpy(), atol=1e-4)
  np.testing.assert_allclose(ours['locations'], locs.numpy(), atol=1e-4)
  np.testing.assert_allclose(ours['features'], feats.numpy(), atol=1e-4)


def test_student_and_glimpses_match_the_official_semantics():
  video = smooth_video(2)
  variables = convert.load_official(SD, MICRO)
  ours = inference.student_forward(variables, MICRO, jnp.asarray(video.transpose(0, 1, 3, 4, 2)))
  with torch.no_grad():
    logits, locs, feats, glimpses = t_student(TSD, torch.from_numpy(video))
  assert float(np.abs(locs[:, 1:].numpy() - locs[:, :1].numpy()).max()) > 0.05  # it moves
  np.testing.assert_allclose(ours['locations'], locs.numpy(), atol=1e-4)
  np.testing.assert_allclose(ours['logits'], logits.numpy(), atol=1e-4)
  np.testing.assert_allclose(ours['features'], feats.numpy(), atol=1e-4)
  # The glimpse pixels at the official locations, on white noise (the crop alone: no loop).
  noise = np.random.default_rng(3).normal(size=(2, 3, 224, 224)).astype(np.float32)
  loc = torch.tensor([[0.37, -0.81], [-1.1, 0.25]])
  ref = t_glimpse(torch.from_numpy(noise), loc, 6).numpy().transpose(0, 2, 3, 1)
  got = glimpse.extract(jnp.asarray(noise.transpose(0, 2, 3, 1)), jnp.asarray(loc.numpy()), 96)
  np.testing.assert_allclose(got, ref, atol=1e-4)


def test_round_trip_keeps_every_key_and_value():
  params = convert.load_official(SD, MICRO)['params']
  back = convert.to_state_dict(params)
  assert set(back) == set(SD)
  for k in SD:
    np.testing.assert_array_equal(back[k], SD[k], err_msg=k)
  # Layouts: Linear (out, in) -> kernel (in, out); conv (D, 3, p, p) -> (p, p, 3, D).
  np.testing.assert_array_equal(
    params['backbone']['blocks_1']['attn']['qkv']['kernel'],
    SD['backbone.blocks.1.attn.qkv.weight'].T,
  )
  np.testing.assert_array_equal(
    params['backbone']['patch_embed']['kernel'][2, 5, 1],
    SD['backbone.patch_embed.proj.weight'][:, 1, 2, 5],
  )
  np.testing.assert_array_equal(
    params['temploc_head']['init_loc'], SD['temploc_head.init_loc'][0, 0]
  )


def test_pth_file_with_optimizer_state_loads(tmp_path):
  path = tmp_path / 'glitr.pth'
  torch.save({'model': TSD, 'optimizerB': {'state': {}}, 'epoch': 3}, path)
  params = convert.load_official(str(path), MICRO)['params']
  np.testing.assert_array_equal(
    params['temporal_head']['head']['bias'], SD['temporal_head.head.bias']
  )
  npz = tmp_path / 'glitr.npz'
  np.savez(npz, **SD)
  params_npz = convert.load_official(str(npz), MICRO)['params']
  jax.tree.map(np.testing.assert_array_equal, params, params_npz)


class _Exploit:
  def __reduce__(self):
    return (print, ('this checkpoint ran code',))


def test_pth_that_would_run_code_is_refused(tmp_path):
  path = tmp_path / 'evil.pth'
  with open(path, 'wb') as f:
    torch.save({'model': TSD, 'payload': _Exploit()}, f, pickle_module=pickle)
  with pytest.raises(ValueError, match='weights-only'):
    convert.load_official(str(path), MICRO)


def test_wrong_state_dict_lists_missing_unexpected_and_misshaped_keys():
  bad = dict(SD)
  del bad['backbone.blocks.1.mlp.fc2.bias']
  bad['backbone.blocks.2.norm1.weight'] = np.ones(48, np.float32)
  bad['temporal_head.head.weight'] = np.zeros((7, 96), np.float32)
  with pytest.raises(ValueError) as err:
    convert.load_official(bad, MICRO)
  msg = str(err.value)
  assert 'missing keys (1)' in msg and 'backbone.blocks.1.mlp.fc2.bias' in msg
  assert 'unexpected keys (1)' in msg and 'backbone.blocks.2.norm1.weight' in msg
  assert 'temporal_head.head.weight: expected (5, 96), got (7, 96)' in msg


def test_missing_file_and_unknown_type_are_clear_errors(tmp_path):
  with pytest.raises(FileNotFoundError, match='nope.pth'):
    convert.load_official(str(tmp_path / 'nope.pth'), MICRO)
  other = tmp_path / 'weights.h5'
  other.write_bytes(b'')
  with pytest.raises(ValueError, match='unknown checkpoint type'):
    convert.load_official(str(other), MICRO)


def timm_state_dict(d=48, depth=2, seed=4):
  shapes = {
    'cls_token': (1, 1, d),
    'pos_embed': (1, 197, d),
    'patch_embed.proj.weight': (d, 3, 16, 16),
    'patch_embed.proj.bias': (d,),
    'norm.weight': (d,),
    'norm.bias': (d,),
    'head.weight': (1000, d),
    'head.bias': (1000,),
  }
  for i in range(depth):
    shapes.update(tiny.vit_block_shapes(f'blocks.{i}', d, 4 * d))
  rng = np.random.default_rng(seed)
  return {k: rng.normal(size=s).astype(np.float32) for k, s in shapes.items()}


@pytest.mark.parametrize('wrap', ['bare', 'model', 'ibot'])
def test_imagenet_vit_initialises_tf_and_splits_the_position_embedding(wrap):
  sd = timm_state_dict()
  if wrap == 'model':
    source = {'model': sd}
  elif wrap == 'ibot':
    source = {'state_dict': {'module.backbone.' + k: v for k, v in sd.items()}}
  else:
    source = sd
  backbone = convert.load_vit_backbone(source, MICRO)
  np.testing.assert_array_equal(backbone['cls_embed'], sd['pos_embed'][:, :1])
  np.testing.assert_array_equal(backbone['pos_embed'], sd['pos_embed'][:, 1:])
  np.testing.assert_array_equal(backbone['cls_token'], sd['cls_token'])
  np.testing.assert_array_equal(
    backbone['blocks_0']['mlp']['fc1']['kernel'], sd['blocks.0.mlp.fc1.weight'].T
  )
  # The full-frame features equal timm's forward (class token, pos_embed over 197 tokens).
  images = np.random.default_rng(5).normal(size=(2, 3, 224, 224)).astype(np.float32)
  tsd = {'backbone.' + k: torch.from_numpy(v) for k, v in sd.items()}
  tsd['backbone.cls_embed'] = tsd['backbone.pos_embed'][:, :1]
  tsd['backbone.pos_embed'] = tsd['backbone.pos_embed'][:, 1:]
  with torch.no_grad():
    ref = t_vit(tsd, torch.from_numpy(images)).numpy()
  model = inference.model_for(MICRO)
  ours = model.encode_frames({'backbone': backbone}, jnp.asarray(images.transpose(0, 2, 3, 1)))
  np.testing.assert_allclose(ours, ref, atol=1e-4)


def test_imagenet_vit_with_wrong_grid_is_an_error():
  sd = timm_state_dict()
  sd['pos_embed'] = sd['pos_embed'][:, :145]
  del sd['blocks.1.attn.proj.bias']
  with pytest.raises(
    ValueError, match=r'pos_embed: expected \(1, 196, 48\), got \(1, 144, 48\)'
  ) as e:
    timm_vit.load_vit_backbone(sd, MICRO)
  assert 'blocks.1.attn.proj.bias' in str(e.value)


# ------------------------------ File formats: safetensors, hub directories, bad files ----------
def assert_same_params(a, b):
  jax.tree.map(np.testing.assert_array_equal, a, b)


def test_safetensors_file_and_hub_directory_load_without_torch(tmp_path, monkeypatch):
  reference = convert.load_official(SD, MICRO)['params']
  path = tmp_path / 'glitr.safetensors'
  safetensors.numpy.save_file(SD, str(path))
  hub = tmp_path / 'hub'
  hub.mkdir()
  safetensors.numpy.save_file(SD, str(hub / 'model.safetensors'))
  (hub / 'config.json').write_text('{"architecture": "glitr"}')
  torch_pth = tmp_path / 'glitr.pth'
  torch.save({'model': TSD}, torch_pth)
  monkeypatch.setitem(sys.modules, 'torch', None)  # `import torch` now fails
  assert_same_params(convert.load_official(str(path), MICRO)['params'], reference)
  assert_same_params(convert.load_official(str(hub), MICRO)['params'], reference)
  with pytest.raises(ImportError, match='glitr.pth needs PyTorch'):
    convert.load_official(str(torch_pth), MICRO)


def write_shards(folder, state, suffix, save):
  """A sharded checkpoint as the hub has them: two weight files and their index."""
  keys = sorted(state)
  halves = {f'model-00001-of-00002{suffix}': keys[::2], f'model-00002-of-00002{suffix}': keys[1::2]}
  weight_map = {}
  for shard, shard_keys in halves.items():
    save({k: state[k] for k in shard_keys}, str(folder / shard))
    weight_map.update(dict.fromkeys(shard_keys, shard))
  index = (
    'model.safetensors.index.json' if suffix == '.safetensors' else 'pytorch_model.bin.index.json'
  )
  (folder / index).write_text(json.dumps({'metadata': {}, 'weight_map': weight_map}))
  return folder / index


@pytest.mark.parametrize('kind', ['safetensors', 'bin'])
def test_sharded_and_pytorch_model_bin_hub_directories_load(tmp_path, kind):
  reference = convert.load_official(SD, MICRO)['params']
  if kind == 'safetensors':
    index = write_shards(tmp_path, SD, '.safetensors', safetensors.numpy.save_file)
  else:
    index = write_shards(tmp_path, TSD, '.bin', torch.save)
  assert_same_params(convert.load_official(str(tmp_path), MICRO)['params'], reference)
  assert_same_params(convert.load_official(str(index), MICRO)['params'], reference)
  os.remove(tmp_path / f'model-00002-of-00002.{kind}')
  with pytest.raises(FileNotFoundError, match=f'names shard model-00002-of-00002.{kind}'):
    convert.load_official(str(tmp_path), MICRO)


def test_a_bin_beside_config_json_is_the_hub_directory_weights(tmp_path):
  torch.save(TSD, tmp_path / 'pytorch_model.bin')
  (tmp_path / 'config.json').write_text('{}')
  reference = convert.load_official(SD, MICRO)['params']
  assert_same_params(convert.load_official(str(tmp_path), MICRO)['params'], reference)
  empty = tmp_path / 'empty'
  empty.mkdir()
  with pytest.raises(FileNotFoundError, match='empty: no weights in this directory'):
    convert.load_official(str(empty), MICRO)


def test_bfloat16_safetensors_load_as_float32(tmp_path):
  path = tmp_path / 'bf16.safetensors'
  safetensors.torch.save_file({k: v.to(torch.bfloat16) for k, v in TSD.items()}, str(path))
  params = convert.load_official(str(path), MICRO)['params']
  kernel = params['backbone']['blocks_0']['mlp']['fc1']['kernel']
  assert kernel.dtype == jnp.float32
  expected = TSD['backbone.blocks.0.mlp.fc1.weight'].to(torch.bfloat16).float().numpy().T
  np.testing.assert_array_equal(kernel, expected)


@pytest.mark.parametrize('name', ['weights.npz', 'weights.safetensors'])
def test_a_file_that_is_not_what_its_name_says_is_named(tmp_path, name):
  path = tmp_path / name
  path.write_bytes(np.random.default_rng(0).bytes(4096))
  with pytest.raises(
    ValueError, match=f'{name}: not an? (.npz archive|readable .safetensors)'
  ) as e:
    convert.load_official(str(path), MICRO)
  assert 'allow_pickle' not in str(e.value)


def test_an_npz_of_pickled_objects_is_named(tmp_path):
  path = tmp_path / 'objects.npz'
  np.savez(path, a=np.array([{'x': 1}], dtype=object))
  with pytest.raises(ValueError, match='objects.npz: not a readable .npz archive of arrays'):
    convert.load_official(str(path), MICRO)


def test_non_finite_weights_are_refused_naming_the_key(tmp_path):
  bad = dict(SD)
  bad['backbone.blocks.1.attn.proj.weight'] = SD['backbone.blocks.1.attn.proj.weight'].copy()
  bad['backbone.blocks.1.attn.proj.weight'][3, 4] = np.nan
  bad['temporal_head.head.bias'] = np.full(5, np.inf, np.float32)
  with pytest.raises(ValueError) as e:
    convert.load_official(bad, MICRO)
  message = str(e.value)
  assert 'non-finite weights in 2 entries' in message
  assert 'backbone.blocks.1.attn.proj.weight (1 NaN, 0 Inf of 2304)' in message
  assert 'temporal_head.head.bias (0 NaN, 5 Inf of 5)' in message
  path = tmp_path / 'nan.safetensors'
  safetensors.numpy.save_file(bad, str(path))
  with pytest.raises(ValueError, match=r'nan.safetensors: non-finite weights .*proj.weight'):
    convert.load_official(str(path), MICRO)
  vit = timm_state_dict()
  vit['norm.weight'][0] = -np.inf
  with pytest.raises(ValueError, match=r'non-finite weights in 1 entries: norm.weight'):
    convert.load_vit_backbone(vit, MICRO)


# ------------------------------ Export: a workdir -> an official checkpoint --------------------
EXPORT_STEP = 7


@pytest.fixture(scope='module')
def trained_workdir(tmp_path_factory):
  """A workdir as training leaves it (checkpoints/<step>/params, config.json), other weights at
  an earlier step."""
  workdir = str(tmp_path_factory.mktemp('export') / 'run')
  params = convert.load_official(SD, MICRO)['params']
  earlier = jax.tree.map(lambda x: x * 0.5, params)
  manager = ocp.CheckpointManager(
    checkpoints.checkpoint_dir(workdir),
    item_names=('params',),
    options=ocp.CheckpointManagerOptions(create=True),
  )
  for step, tree in ((2, earlier), (EXPORT_STEP, params)):
    manager.save(step, args=ocp.args.Composite(params=ocp.args.StandardSave(tree)))
  manager.wait_until_finished()
  manager.close()
  config = ml_collections.ConfigDict({'model': MICRO.to_dict(), 'stage': 'student'})
  checkpoints.write_run_info(workdir, config, [f'class {i}' for i in range(5)])
  return workdir, params, earlier


@pytest.mark.parametrize('ext', ['.safetensors', '.pth', '.npz'])
def test_export_round_trip_gives_identical_outputs(trained_workdir, tmp_path, ext):
  workdir, params, _ = trained_workdir
  out = str(tmp_path / f'glitr{ext}')
  assert export.export_workdir(workdir, out) == (out, EXPORT_STEP)
  assert sorted(os.listdir(tmp_path)) == [f'glitr{ext}']  # no partial file left beside it
  back = convert.load_official(out, MICRO)
  assert_same_params(back['params'], params)
  # The official key names and layouts, as the official PyTorch code loads them.
  state = convert.common.read_state_dict(out)
  assert set(state) == set(SD)
  np.testing.assert_array_equal(
    state['backbone.patch_embed.proj.weight'], SD['backbone.patch_embed.proj.weight']
  )
  video = jnp.asarray(smooth_video(6, b=1).transpose(0, 1, 3, 4, 2))
  ours = inference.student_forward({'params': params}, MICRO, video)
  again = inference.student_forward(back, MICRO, video)
  for key in ('logits', 'locations', 'features'):
    np.testing.assert_array_equal(again[key], ours[key], err_msg=key)


def test_export_records_the_step_and_model_config(trained_workdir, tmp_path):
  workdir, _, earlier = trained_workdir
  out = str(tmp_path / 'step2.safetensors')
  export.export_workdir(workdir, out, step=2)
  assert_same_params(convert.load_official(out, MICRO)['params'], earlier)
  with safetensors.safe_open(out, framework='np') as f:
    metadata = f.metadata()
  assert json.loads(metadata['step']) == 2
  assert json.loads(metadata['model_config'])['hidden_size'] == 48
  pth = str(tmp_path / 'step2.pth')
  export.export_workdir(workdir, pth, step=2)
  checkpoint = torch.load(pth, weights_only=True)
  assert checkpoint['step'] == 2 and checkpoint['model_config']['temporal_depth'] == 4
  with pytest.raises(FileNotFoundError, match=r'no checkpoint of step 5 \(it has: \[2, 7\]\)'):
    export.export_workdir(workdir, str(tmp_path / 'x.safetensors'), step=5)
  with pytest.raises(ValueError, match='x.h5: unknown output type'):
    export.export_workdir(workdir, str(tmp_path / 'x.h5'))


def test_export_command_line(trained_workdir, tmp_path):
  workdir, params, _ = trained_workdir
  out = tmp_path / 'cli.safetensors'
  env = dict(os.environ, PYTHONPATH=str(REPO), JAX_PLATFORMS='cpu')
  env.pop('XLA_FLAGS', None)
  command = [
    sys.executable,
    '-m',
    'glitr_jax.convert.export',
    f'--workdir={workdir}',
    f'--out={out}',
  ]
  result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  assert f'step {EXPORT_STEP}' in result.stdout
  assert_same_params(convert.load_official(str(out), MICRO)['params'], params)
  missing = subprocess.run(
    command[:-1] + ['--step=5', f'--out={out}'],
    env=env,
    capture_output=True,
    text=True,
    timeout=600,
  )
  assert missing.returncode == 1
  assert missing.stderr.strip().endswith('has no checkpoint of step 5 (it has: [2, 7])')
