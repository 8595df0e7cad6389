"""VideoMAE, the offline model behind L_dist: model, importer, offline model, L_dist, precompute.

The reference semantics are written here from docs/design.md 1.8 in plain float64 NumPy,
independently of the Flax code: the Conv3d tubelet embedding as a loop over cubes in (t, h, w)
order, the sinusoid table element by element, the blocks with qkv bias = cat(q_bias, 0, v_bias),
mean pooling, fc_norm and head.
"""

import math
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from configs import common as configs_common
from glitr_jax import offline
from glitr_jax.convert import videomae as videomae_convert
from glitr_jax.models import videomae
from glitr_jax.tools import precompute_offline_logits as tool

sys.path.insert(0, os.path.dirname(__file__))
import tiny  # noqa: E402

TINY = tiny.VIDEOMAE  # 4 frames of 32 px, 2x8x8 tubelets: 2 x 4 x 4 = 32 tokens of width 32.
LN_EPS = 1e-6


def official_shapes(d, depth, classes, mlp, tubelet=2, patch=16):
  """The official fine-tuned state dict's keys and shapes, written from docs/design.md 1.8."""
  shapes = {
    'patch_embed.proj.weight': (d, 3, tubelet, patch, patch),
    'patch_embed.proj.bias': (d,),
    'fc_norm.weight': (d,),
    'fc_norm.bias': (d,),
    'head.weight': (classes, d),
    'head.bias': (classes,),
  }
  for i in range(depth):
    shapes.update(tiny.vit_block_shapes(f'blocks.{i}', d, mlp, qkv_bias='q_v'))
  return shapes


def tiny_shapes(**overrides):
  s = dict(TINY, **overrides)
  return official_shapes(
    s['hidden_size'],
    s['depth'],
    s['num_classes'],
    int(s['hidden_size'] * s['mlp_ratio']),
    s['tubelet_size'],
    s['patch_size'],
  )


def random_state_dict(shapes, seed=0):
  """Random float32 values at a scale that keeps every term of the forward visible."""
  rng = np.random.default_rng(seed)
  state = {}
  for key, shape in shapes.items():
    if key.endswith(('norm1.weight', 'norm2.weight', 'fc_norm.weight')):
      value = 1.0 + 0.2 * rng.standard_normal(shape)
    elif key.endswith(('q_bias', 'v_bias')):
      value = 0.5 * rng.standard_normal(shape)  # large, so a misplaced bias cannot hide
    elif len(shape) > 1:
      value = rng.standard_normal(shape) / math.sqrt(np.prod(shape[1:]))
    else:
      value = 0.1 * rng.standard_normal(shape)
    state[key] = value.astype(np.float32)
  return state


def random_clip(batch=2, seed=1, frames=4, size=32):
  return (
    np.random.default_rng(seed).standard_normal((batch, frames, size, size, 3)).astype(np.float32)
  )


# ------------------------------------------------------------------ NumPy reference (float64).


def ref_sinusoid(num_positions, width):
  table = np.empty((num_positions, width))
  for p in range(num_positions):
    for j in range(width):
      angle = p / math.pow(10000, 2 * (j // 2) / width)
      table[p, j] = math.sin(angle) if j % 2 == 0 else math.cos(angle)
  return table


def ref_layer_norm(x, weight, bias):
  mean = x.mean(-1, keepdims=True)
  var = ((x - mean) ** 2).mean(-1, keepdims=True)
  return (x - mean) / np.sqrt(var + LN_EPS) * weight + bias


_erf = np.vectorize(math.erf)


def ref_attention(sd, prefix, x_bnd, num_heads, qkv_bias=None):
  """One block's attention as VideoMAE computes it; `qkv_bias` replaces cat(q_bias, 0, v_bias)."""
  b, n, d = x_bnd.shape
  hd = d // num_heads
  if qkv_bias is None:
    qkv_bias = np.concatenate([sd[f'{prefix}.q_bias'], np.zeros(d), sd[f'{prefix}.v_bias']])
  qkv = x_bnd @ sd[f'{prefix}.qkv.weight'].astype(np.float64).T + qkv_bias
  qkv = qkv.reshape(b, n, 3, num_heads, hd).transpose(2, 0, 3, 1, 4)  # (3, B, h, N, hd)
  q, k, v = qkv[0] * hd**-0.5, qkv[1], qkv[2]
  logits = q @ k.transpose(0, 1, 3, 2)
  attn = np.exp(logits - logits.max(-1, keepdims=True))
  attn /= attn.sum(-1, keepdims=True)
  out = (attn @ v).transpose(0, 2, 1, 3).reshape(b, n, d)
  return out @ sd[f'{prefix}.proj.weight'].T + sd[f'{prefix}.proj.bias']


def ref_forward(sd, video_bthwc, cfg):
  sd = {k: v.astype(np.float64) for k, v in sd.items()}
  u, p, d = cfg['tubelet_size'], cfg['patch_size'], cfg['hidden_size']
  video_bcthw = video_bthwc.astype(np.float64).transpose(0, 4, 1, 2, 3)  # PyTorch's layout
  _, _, t, h, w = video_bcthw.shape
  weight, bias = sd['patch_embed.proj.weight'], sd['patch_embed.proj.bias']
  tokens = []
  for ti in range(t // u):  # Conv3d output flattened in (t, h, w) order
    for yi in range(h // p):
      for xi in range(w // p):
        cube = video_bcthw[
          :, :, ti * u : (ti + 1) * u, yi * p : (yi + 1) * p, xi * p : (xi + 1) * p
        ]
        tokens.append(np.einsum('bcuyx,dcuyx->bd', cube, weight) + bias)
  x = np.stack(tokens, axis=1)
  x = x + ref_sinusoid(x.shape[1], d).astype(np.float32)[None]  # float32 table, as official
  for i in range(cfg['depth']):
    pre = f'blocks.{i}'
    y = ref_layer_norm(x, sd[f'{pre}.norm1.weight'], sd[f'{pre}.norm1.bias'])
    x = x + ref_attention(sd, f'{pre}.attn', y, cfg['num_heads'])
    y = ref_layer_norm(x, sd[f'{pre}.norm2.weight'], sd[f'{pre}.norm2.bias'])
    y = y @ sd[f'{pre}.mlp.fc1.weight'].T + sd[f'{pre}.mlp.fc1.bias']
    y = 0.5 * y * (1.0 + _erf(y / math.sqrt(2.0)))
    x = x + y @ sd[f'{pre}.mlp.fc2.weight'].T + sd[f'{pre}.mlp.fc2.bias']
  pooled = ref_layer_norm(x.mean(1), sd['fc_norm.weight'], sd['fc_norm.bias'])
  return pooled @ sd['head.weight'].T + sd['head.bias']


# ------------------------------------------------------------------ Fixtures.


@pytest.fixture(scope='module')
def tiny_state():
  return random_state_dict(tiny_shapes())


@pytest.fixture(scope='module')
def tiny_variables(tiny_state):
  return videomae_convert.load_videomae(tiny_state, TINY)


@pytest.fixture(scope='module')
def tiny_logits_fn():
  module = videomae.VideoMAE.from_config(TINY)
  return jax.jit(lambda variables, video: module.apply(variables, video))


# ------------------------------------------------------------------ Model.


def test_sinusoid_table_matches_its_closed_form():
  for n, d in ((1568, 8), (12, 768), (7, 6)):
    got = videomae.sinusoid_table(n, d)
    assert got.dtype == np.float32 and got.shape == (n, d)
    np.testing.assert_allclose(got, ref_sinusoid(n, d).astype(np.float32), rtol=0, atol=1e-7)
  table = videomae.sinusoid_table(1568, 768)
  # Interleaved, not two halves: channel 1 of position 0 is cos(0) = 1, channel 2 is sin(0) = 0.
  np.testing.assert_array_equal(table[0, :4], [0.0, 1.0, 0.0, 1.0])
  np.testing.assert_allclose(table[1, :2], [math.sin(1.0), math.cos(1.0)], atol=1e-7)


def test_forward_matches_the_numpy_reference(tiny_state, tiny_variables, tiny_logits_fn):
  video = random_clip()
  got = np.asarray(tiny_logits_fn(tiny_variables, video))
  want = ref_forward(tiny_state, video, TINY)
  assert got.shape == (2, TINY['num_classes']) and got.dtype == np.float32
  np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
  # The test can tell a wrong token order from the right one: reversed frames give other logits.
  flipped = ref_forward(tiny_state, video[:, ::-1], TINY)
  assert np.abs(flipped - want).max() > 1e-2


def test_forward_is_deterministic_and_shaped(tiny_variables, tiny_logits_fn):
  module = videomae.VideoMAE.from_config(TINY)
  video = random_clip(batch=3, seed=5)
  first = np.asarray(tiny_logits_fn(tiny_variables, video))
  second = np.asarray(tiny_logits_fn(tiny_variables, video))
  eager = np.asarray(module.apply(tiny_variables, video))
  assert first.shape == (3, TINY['num_classes']) and first.dtype == np.float32
  np.testing.assert_array_equal(first, second)
  np.testing.assert_allclose(first, eager, rtol=1e-5, atol=1e-5)
  # Each clip is classified on its own: batching does not mix examples.
  np.testing.assert_allclose(
    np.asarray(tiny_logits_fn(tiny_variables, video[1:2])), first[1:2], rtol=1e-5, atol=1e-5
  )
  bf16 = videomae.VideoMAE.from_config(dict(TINY, compute_dtype='bfloat16'))
  low = np.asarray(jax.jit(bf16.apply)(tiny_variables, video))
  assert low.dtype == np.float32
  np.testing.assert_allclose(low, first, atol=0.1)


def test_qkv_has_q_and_v_biases_and_no_k_bias(tiny_state, tiny_variables):
  attn_params = tiny_variables['params']['blocks_0']['attn']
  assert set(attn_params) == {'qkv', 'q_bias', 'v_bias', 'proj'}
  assert set(attn_params['qkv']) == {'kernel'}  # the Linear itself has no bias
  d = TINY['hidden_size']
  x_bnd = np.random.default_rng(3).standard_normal((2, 7, d))
  attention = videomae.Attention(TINY['num_heads'])
  got = np.asarray(attention.apply({'params': attn_params}, jnp.asarray(x_bnd, jnp.float32)))
  want = ref_attention(tiny_state, 'blocks.0.attn', x_bnd, TINY['num_heads'])
  np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
  q_bias, v_bias = tiny_state['blocks.0.attn.q_bias'], tiny_state['blocks.0.attn.v_bias']
  # A key bias would cancel in the softmax (VideoMAE leaves it out): giving k any bias changes
  # nothing, while the q and v biases both matter, and in their own slots.
  k_bias = np.random.default_rng(4).standard_normal(d)
  variants = {
    'k bias added': (np.concatenate([q_bias, k_bias, v_bias]), True),
    'no q bias': (np.concatenate([np.zeros(d), np.zeros(d), v_bias]), False),
    'no v bias': (np.concatenate([q_bias, np.zeros(d), np.zeros(d)]), False),
    'v bias in the k slot': (np.concatenate([q_bias, v_bias, np.zeros(d)]), False),
  }
  for name, (bias, same) in variants.items():
    other = ref_attention(tiny_state, 'blocks.0.attn', x_bnd, TINY['num_heads'], qkv_bias=bias)
    assert np.allclose(other, got, rtol=1e-4, atol=1e-5) == same, name


def test_clip_of_another_size_is_refused(tiny_variables):
  module = videomae.VideoMAE.from_config(TINY)
  with pytest.raises(ValueError, match=r'\(B, 4, 32, 32, 3\)'):
    module.apply(tiny_variables, random_clip(frames=6))
  with pytest.raises(ValueError, match='num_frames=5 is not a multiple of tubelet_size=2'):
    videomae.VideoMAE.from_config(dict(TINY, num_frames=5))
  with pytest.raises(ValueError, match='unknown VideoMAE config field'):
    videomae.VideoMAE.from_config(dict(TINY, qkv_bias=True))


def test_config_defaults_are_videomae_vit_b16_on_ssv2():
  config = configs_common.get_base_config()
  assert videomae.VideoMAE.from_config(config.offline.videomae) == videomae.VideoMAE()
  model = videomae.VideoMAE()
  assert (model.hidden_size, model.depth, model.num_heads, model.num_tokens) == (768, 12, 12, 1568)
  # The SSv2 teacher's clip is VideoMAE's: only the missing checkpoint stops it.
  from configs import ssv2_teacher  # noqa: PLC0415

  teacher = ssv2_teacher.get_config()
  assert teacher.offline.model == 'videomae' and teacher.loss.dist == 1.0
  with pytest.raises(ValueError, match='offline.checkpoint is empty'):
    offline.build_offline_model(teacher)


# ------------------------------------------------------------------ Importer.


def test_vit_b_keys_and_shapes_are_the_official_ones():
  want = official_shapes(768, 12, 174, 3072)
  got = videomae_convert.expected_state_dict_shapes({})  # ViT-B/16 defaults, via jax.eval_shape
  assert got == want
  assert (
    sum(np.prod(s) for s in got.values()) == 86_361_006
  )  # 12 x 7,087,104 + tubelets, fc_norm, head


def test_importer_round_trips_the_state_dict(tiny_state, tiny_variables):
  params = tiny_variables['params']
  assert params['patch_embed']['kernel'].shape == (2, 8, 8, 3, 32)
  np.testing.assert_array_equal(
    params['patch_embed']['kernel'], tiny_state['patch_embed.proj.weight'].transpose(2, 3, 4, 1, 0)
  )
  np.testing.assert_array_equal(
    params['blocks_1']['attn']['qkv']['kernel'], tiny_state['blocks.1.attn.qkv.weight'].T
  )
  back = videomae_convert.to_state_dict(params)
  assert set(back) == set(tiny_state)
  for key, value in tiny_state.items():
    np.testing.assert_array_equal(back[key], value, err_msg=key)
  # Wrapped as the official files wrap it, with training extras beside it.
  wrapped = videomae_convert.load_videomae({'module': tiny_state, 'epoch': np.int64(29)}, TINY)
  jax.tree.map(np.testing.assert_array_equal, wrapped, tiny_variables)


def test_importer_lists_missing_unexpected_and_misshaped_keys(tiny_state):
  state = dict(tiny_state)
  del state['blocks.1.attn.v_bias']
  state['blocks.0.attn.qkv.bias'] = np.zeros(96, np.float32)  # a timm ViT, not a VideoMAE
  state['pos_embed'] = np.zeros((1, 32, 32), np.float32)
  state['head.weight'] = np.zeros((7, 32), np.float32)  # another dataset's classes
  with pytest.raises(ValueError) as info:
    videomae_convert.load_videomae(state, TINY)
  message = str(info.value)
  assert "missing keys (1): ['blocks.1.attn.v_bias']" in message
  assert "unexpected keys (2): ['blocks.0.attn.qkv.bias', 'pos_embed']" in message
  assert 'head.weight: expected (5, 32), got (7, 32)' in message


def test_importer_reads_npz(tiny_state, tiny_variables, tmp_path):
  path = str(tmp_path / 'videomae.npz')
  np.savez(path, **tiny_state)
  loaded = videomae_convert.load_videomae(path, TINY)
  jax.tree.map(np.testing.assert_array_equal, loaded, tiny_variables)


def test_importer_reads_a_torch_pth(tiny_state, tiny_variables, tmp_path):
  path = str(tmp_path / 'checkpoint.pth')
  torch.save({'model': {k: torch.from_numpy(v) for k, v in tiny_state.items()}}, path)
  loaded = videomae_convert.load_videomae(path, TINY)
  jax.tree.map(np.testing.assert_array_equal, loaded, tiny_variables)


class _Payload:
  """Stands for any pickled object: unpickling it could run code, so it must be refused."""

  def __reduce__(self):
    return (print, ('unpickled',))


def test_importer_refuses_a_pth_with_pickled_objects(tiny_state, tmp_path):
  path = str(tmp_path / 'checkpoint.pth')
  state = {k: torch.from_numpy(v) for k, v in tiny_state.items()}
  torch.save({'model': state, 'args': _Payload()}, path)
  with pytest.raises(ValueError, match='weights-only'):
    videomae_convert.load_videomae(path, TINY)


# ------------------------------------------------------------------ Offline model and L_dist.


def teacher_config(checkpoint=''):
  """A tiny teacher config whose clip is the tiny VideoMAE's (4 frames of 32 px, 5 classes)."""
  c = configs_common.get_base_config()
  c.stage = 'teacher'
  c.model = tiny.tiny_model_config(num_classes=TINY['num_classes'])
  c.loss.dist = 1.0
  c.offline.model = 'videomae'
  c.offline.checkpoint = checkpoint
  c.offline.videomae.update(TINY)
  return c


@pytest.fixture(scope='module')
def tiny_checkpoint(tiny_state, tmp_path_factory):
  path = str(tmp_path_factory.mktemp('videomae') / 'videomae_tiny.npz')
  np.savez(path, **tiny_state)
  return path


def test_build_offline_model(tiny_checkpoint, tiny_variables, tiny_logits_fn):
  model = offline.build_offline_model(teacher_config(tiny_checkpoint))
  assert model.num_classes == TINY['num_classes']
  jax.tree.map(np.testing.assert_array_equal, model.params, tiny_variables['params'])
  video = random_clip()
  logits = jax.jit(model.logits_fn)(model.params, video)
  np.testing.assert_allclose(logits, tiny_logits_fn(tiny_variables, video), rtol=1e-6, atol=1e-6)
  # A stop-gradient target: no gradient reaches the clip (or VideoMAE's weights).
  grad = jax.grad(lambda v: jnp.sum(model.logits_fn(model.params, v)))(jnp.asarray(video))
  assert not np.any(np.asarray(grad))


def test_build_offline_model_errors(tiny_checkpoint, tiny_state, tmp_path):
  with pytest.raises(ValueError, match='offline.checkpoint is empty'):
    offline.build_offline_model(teacher_config(''))
  missing = str(tmp_path / 'nowhere.pth')
  with pytest.raises(FileNotFoundError, match=f'offline.checkpoint={missing}'):
    offline.build_offline_model(teacher_config(missing))
  c = teacher_config(tiny_checkpoint)
  c.model.num_frames = 8
  with pytest.raises(ValueError, match='offline.videomae.num_frames=4 but model.num_frames=8'):
    offline.build_offline_model(c)
  assert offline.build_offline_model(c, teacher_clip=False).module.num_frames == 4
  c = teacher_config(tiny_checkpoint)
  c.model.image_size = 64
  with pytest.raises(ValueError, match='offline.videomae.image_size=32 but model.image_size=64'):
    offline.build_offline_model(c)
  c = teacher_config(tiny_checkpoint)
  c.model.num_classes = 7
  with pytest.raises(ValueError, match='offline.videomae.num_classes=5 but model.num_classes=7'):
    offline.build_offline_model(c, teacher_clip=False)
  c = teacher_config(tiny_checkpoint)
  c.offline.model = 'mvit'
  with pytest.raises(ValueError, match="offline.model='mvit'"):
    offline.build_offline_model(c)
  wrong = str(tmp_path / 'wider.npz')
  np.savez(wrong, **random_state_dict(tiny_shapes(hidden_size=48)))
  # load_videomae names the file, and build_offline_model the field it came from.
  with pytest.raises(ValueError, match=f'offline.checkpoint={wrong}: .*does not match the model'):
    offline.build_offline_model(teacher_config(wrong))


def ref_kl(s, t):
  def log_softmax(x):
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))

  ls, lt = log_softmax(s.astype(np.float64)), log_softmax(t.astype(np.float64))
  return np.mean(np.sum(np.exp(ls) * (ls - lt), axis=-1))


def test_dist_loss_is_zero_at_the_target_and_positive_elsewhere():
  rng = np.random.default_rng(7)
  teacher_btc = rng.standard_normal((3, 4, 5)).astype(np.float32)
  target_bc = teacher_btc[:, -1].copy()
  assert float(offline.dist_loss(teacher_btc, target_bc)) == pytest.approx(0.0, abs=1e-7)
  # A per-example shift of the logits is the same distribution.
  shifted = target_bc + np.array([[1.0], [-2.0], [5.0]], np.float32)
  assert float(offline.dist_loss(teacher_btc, shifted)) == pytest.approx(0.0, abs=1e-6)
  # Only the last step counts.
  earlier = teacher_btc.copy()
  earlier[:, :-1] = rng.standard_normal((3, 3, 5))
  assert float(offline.dist_loss(earlier, target_bc)) == pytest.approx(0.0, abs=1e-7)
  other_bc = rng.standard_normal((3, 5)).astype(np.float32)
  value = float(offline.dist_loss(teacher_btc, other_bc))
  assert value > 1e-3
  # The official direction, KL(teacher || offline), not the reverse.
  assert value == pytest.approx(ref_kl(teacher_btc[:, -1], other_bc), rel=1e-5)
  assert abs(value - ref_kl(other_bc, teacher_btc[:, -1])) > 1e-3


# ------------------------------------------------------------------ Precomputed logits.


def fake_batches(num_videos=5, batch=3, seed=11):
  """Eval-iterator-like batches: the last one padded (mask False, video id '')."""
  rng = np.random.default_rng(seed)
  ids = [f'video_{i:03d}' for i in range(num_videos)]
  videos = rng.standard_normal((num_videos, 4, 32, 32, 3)).astype(np.float32)
  batches = []
  for start in range(0, num_videos, batch):
    n = min(batch, num_videos - start)
    pad = batch - n
    batches.append(
      {
        'video': np.concatenate(
          [videos[start : start + n], np.zeros((pad, 4, 32, 32, 3), np.float32)]
        ),
        'label': np.zeros(batch, np.int32),
        'mask': np.array([True] * n + [False] * pad),
        'index': np.array(list(range(start, start + n)) + [-1] * pad),
        'video_id': np.array(ids[start : start + n] + [''] * pad),
      }
    )
  return ids, videos, batches


def test_precomputed_and_on_the_fly_dist_agree(tiny_checkpoint, tmp_path):
  model = offline.build_offline_model(teacher_config(tiny_checkpoint))
  logits_fn = jax.jit(model.logits_fn)
  ids, videos, batches = fake_batches()
  video_ids, logits = tool.compute_offline_logits(
    lambda video: logits_fn(model.params, video), batches, progress=False
  )
  path = str(tmp_path / 'offline_logits.npz')
  tool.save_offline_logits(path, video_ids, logits)
  with np.load(path, allow_pickle=False) as data:
    assert sorted(data.files) == ['logits', 'video_ids']
    stored_ids, stored = data['video_ids'], data['logits']
  assert stored_ids.dtype.kind == 'U' and stored.dtype == np.float32
  assert stored_ids.tolist() == ids  # padding dropped, every video once
  assert stored.shape == (5, TINY['num_classes'])
  rows = {video_id: row for video_id, row in zip(stored_ids.tolist(), stored)}

  # The teacher's logits on the same clips; the data pipeline joins precomputed rows by video id.
  pick = [3, 0, 4]
  teacher_btc = np.random.default_rng(2).standard_normal((3, 4, 5)).astype(np.float32)
  on_the_fly = offline.dist_loss(teacher_btc, logits_fn(model.params, videos[pick]))
  precomputed = offline.dist_loss(teacher_btc, np.stack([rows[ids[i]] for i in pick]))
  assert float(on_the_fly) > 1e-3
  np.testing.assert_allclose(float(precomputed), float(on_the_fly), rtol=1e-5, atol=1e-6)


def test_compute_offline_logits_keeps_each_video_once():
  ids, _, batches = fake_batches(num_videos=4, batch=2)
  batches.append(batches[0])  # the same videos again
  batches.append({**batches[1], 'mask': np.zeros(2, bool)})  # all padding: never computed
  calls = []

  def logits_fn(video):
    calls.append(len(video))
    return video.reshape(len(video), -1)[:, :3]

  video_ids, logits = tool.compute_offline_logits(logits_fn, batches, progress=False)
  assert video_ids.tolist() == ids and logits.shape == (4, 3) and len(calls) == 3
  np.testing.assert_array_equal(logits[0], batches[0]['video'][0].reshape(-1)[:3])
  with pytest.raises(ValueError, match='every batch was padding'):
    tool.compute_offline_logits(logits_fn, batches[-1:], progress=False)


def test_precompute_end_to_end_on_the_synthetic_set(tiny_checkpoint, tmp_path):
  from glitr_jax.data import clips  # noqa: PLC0415

  c = tiny.tiny_train_config('teacher', data_dir=str(tmp_path / 'tfds'))
  c.offline.model = 'videomae'
  c.offline.checkpoint = tiny_checkpoint
  c.offline.videomae.update(dict(TINY, num_classes=c.model.num_classes))
  # The checkpoint has 5 classes; the synthetic set 4: the importer names the head.
  with pytest.raises(ValueError, match='head.weight: expected'):
    tool.precompute(c, str(tmp_path / 'x.npz'), progress=False)
  c.offline.checkpoint = str(tmp_path / 'four_classes.npz')
  np.savez(c.offline.checkpoint, **random_state_dict(tiny_shapes(num_classes=4)))
  out = str(tmp_path / 'logits' / 'validation.npz')
  count = tool.precompute(c, out, split='validation', batch_size=8, progress=False)
  assert count == c.data.synthetic.validation_examples == 12  # 2 batches, the last padded

  # The data pipeline's reader finds each video's row, equal to VideoMAE on its eval clip.
  reader = clips.OfflineLogits(out)
  assert reader.num_outputs == 4
  from glitr_jax import data as data_lib  # noqa: PLC0415

  batch = next(
    iter(
      data_lib.create_eval_iterator(
        c.data,
        batch_size=4,
        num_frames=4,
        image_size=32,
        split='validation',
        process_index=0,
        process_count=1,
      )
    )
  )
  model = offline.build_offline_model(c)
  want = np.asarray(jax.jit(model.logits_fn)(model.params, batch['video']))
  got = np.stack([reader(str(i)) for i in batch['video_id']])
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
