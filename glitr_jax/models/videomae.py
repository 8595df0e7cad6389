"""VideoMAE ViT-B/16 for video classification: the offline model behind the SSv2 teacher's L_dist.

The semantics are those of MCG-NJU/VideoMAE `modeling_finetune.py` (docs/design.md 1.8, "VideoMAE
ViT-B/16"), so its fine-tuned checkpoints load unchanged (glitr_jax.convert.videomae):

  tokens   a Conv3d with kernel = stride = (tubelet, patch, patch) over the clip, flattened in
           (t, h, w) order: 8 x 14 x 14 = 1568 tokens for 16 frames at 224 px;
  position a fixed sinusoidal table (not a parameter, not in the state dict), regenerated here in
           float64 and cast to float32 as the official numpy code does;
  blocks   pre-LN (eps 1e-6), exact GELU, no layer scale; the qkv Linear has no bias of its own,
           its bias is cat(q_bias, 0, v_bias) (separate q and v biases, none for k);
  head     the mean over all tokens, `fc_norm` (LayerNorm), `head` (Linear).

Parameter names follow the state dict's: `patch_embed`, `blocks_i/{norm1, attn/{qkv, q_bias,
v_bias, proj}, norm2, mlp/{fc1, fc2}}`, `fc_norm`, `head`. The model is only ever evaluated (a
frozen target for L_dist), so it has neither dropout nor stochastic depth.
"""

import functools
from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from glitr_jax.models import layers

Dtype = Any

# The fields of a VideoMAE config (configs/common.py: `offline.videomae`), all module attributes.
CONFIG_FIELDS = (
  'hidden_size',
  'depth',
  'num_heads',
  'mlp_ratio',
  'tubelet_size',
  'patch_size',
  'num_frames',
  'image_size',
  'num_classes',
)


def sinusoid_table(num_positions: int, width: int) -> np.ndarray:
  """VideoMAE's fixed position table (docs/design.md 1.8), float32 (num_positions, width).

  angle(p, j) = p / 10000 ** (2 * (j // 2) / width); sin on even channels j, cos on odd ones
  (interleaved, not two halves). Evaluated in float64 then cast to float32, as the official numpy
  code does, so the table is the one the checkpoint was trained with.
  """
  return _sinusoid_table(int(num_positions), int(width)).copy()


@functools.lru_cache(maxsize=8)
def _sinusoid_table(num_positions: int, width: int) -> np.ndarray:
  position_p1 = np.arange(num_positions, dtype=np.float64)[:, None]
  exponent_1d = 2.0 * (np.arange(width) // 2) / width
  angle_pd = position_p1 / np.power(10000.0, exponent_1d)[None, :]
  table_pd = np.where(np.arange(width) % 2 == 0, np.sin(angle_pd), np.cos(angle_pd))
  return table_pd.astype(np.float32)


class TubeletEmbed(nn.Module):
  """Non-overlapping (tubelet, patch, patch) cubes through a linear map: a strided Conv3d.

  The kernel has the convolution's layout (tubelet, p, p, C_in, D), so PyTorch's
  (D, C_in, tubelet, p, p) weight maps onto it by a transpose. Tokens come out flattened in
  (t, h, w) order, as the official `proj(x).flatten(2)` of a (B, D, T', H', W') output.
  """

  tubelet_size: int
  patch_size: int
  hidden_size: int
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, video_bthwc: jax.Array) -> jax.Array:
    """(B, T, H, W, C) -> (B, (T/u) * (H/p) * (W/p), D)."""
    u, p = self.tubelet_size, self.patch_size
    b, t, h, w, c = video_bthwc.shape
    kernel = self.param(
      'kernel',
      nn.initializers.lecun_normal(in_axis=(0, 1, 2, 3), out_axis=4),
      (u, p, p, c, self.hidden_size),
    )
    bias = self.param('bias', nn.initializers.zeros, (self.hidden_size,))
    x = video_bthwc.astype(self.dtype).reshape(b, t // u, u, h // p, p, w // p, p, c)
    x_btyxd = jnp.einsum('btuypxqc,upqcd->btyxd', x, kernel.astype(self.dtype))
    x_btyxd = x_btyxd + bias.astype(self.dtype)
    return x_btyxd.reshape(b, (t // u) * (h // p) * (w // p), self.hidden_size)


class Attention(nn.Module):
  """VideoMAE's self-attention: a bias-free qkv Linear plus cat(q_bias, 0, v_bias).

  Keys get no bias (docs/design.md 1.8): a key bias would add q . b_k to every logit of a query,
  which the softmax cancels, so VideoMAE (after BEiT) leaves it out. Queries are scaled by
  head_dim^-0.5 before the dot product; the softmax runs in float32.
  """

  num_heads: int
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x_bnd: jax.Array) -> jax.Array:
    """(B, N, D) -> (B, N, D)."""
    b, n, d = x_bnd.shape
    h = self.num_heads
    hd = d // h
    q_bias = self.param('q_bias', nn.initializers.zeros, (d,))
    v_bias = self.param('v_bias', nn.initializers.zeros, (d,))
    qkv_bias = jnp.concatenate([q_bias, jnp.zeros_like(q_bias), v_bias])
    qkv = nn.Dense(
      3 * d, use_bias=False, dtype=self.dtype, kernel_init=layers.dense_init, name='qkv'
    )(x_bnd)
    qkv_bn3hk = (qkv + qkv_bias.astype(self.dtype)).reshape(b, n, 3, h, hd)
    q_bnhk, k_bnhk, v_bnhk = qkv_bn3hk[:, :, 0], qkv_bn3hk[:, :, 1], qkv_bn3hk[:, :, 2]
    logits_bhnm = jnp.einsum('bnhk,bmhk->bhnm', q_bnhk * (hd**-0.5), k_bnhk)
    probs_bhnm = jax.nn.softmax(logits_bhnm.astype(jnp.float32), axis=-1).astype(self.dtype)
    out_bnhk = jnp.einsum('bhnm,bmhk->bnhk', probs_bhnm, v_bnhk)
    return nn.Dense(d, dtype=self.dtype, kernel_init=layers.dense_init, name='proj')(
      out_bnhk.reshape(b, n, d)
    )


class Block(nn.Module):
  """Pre-LN block without layer scale: x + Attn(LN(x)), then x + MLP(LN(x))."""

  num_heads: int
  mlp_ratio: float = 4.0
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x_bnd: jax.Array) -> jax.Array:
    d = x_bnd.shape[-1]
    y = nn.LayerNorm(epsilon=layers.LN_EPS, dtype=self.dtype, name='norm1')(x_bnd)
    x_bnd = x_bnd + Attention(self.num_heads, dtype=self.dtype, name='attn')(y)
    y = nn.LayerNorm(epsilon=layers.LN_EPS, dtype=self.dtype, name='norm2')(x_bnd)
    return x_bnd + layers.Mlp(int(d * self.mlp_ratio), dtype=self.dtype, name='mlp')(y)


class VideoMAE(nn.Module):
  """VideoMAE classifier (ViT-B/16, 16 frames at 224 px, SSv2's 174 classes by default).

  Attributes:
    hidden_size: token width D.
    depth: number of blocks.
    num_heads: attention heads.
    mlp_ratio: MLP hidden width / D.
    tubelet_size: frames per token.
    patch_size: token side in pixels.
    num_frames: frames per clip (the position table has one row per token of such a clip).
    image_size: frame side in pixels.
    num_classes: classifier outputs C.
    dtype: computation dtype (parameters stay float32; logits come out float32).
  """

  hidden_size: int = 768
  depth: int = 12
  num_heads: int = 12
  mlp_ratio: float = 4.0
  tubelet_size: int = 2
  patch_size: int = 16
  num_frames: int = 16
  image_size: int = 224
  num_classes: int = 174
  dtype: Dtype = jnp.float32

  @classmethod
  def from_config(cls, config: Mapping[str, Any]) -> 'VideoMAE':
    """Builds the model from `offline.videomae` (a ConfigDict or a mapping of its fields).

    Fields are those of `CONFIG_FIELDS` (any may be left out for its ViT-B/16 default) plus
    `compute_dtype` ('float32' or 'bfloat16').
    """
    fields = dict(config.items())
    known = set(CONFIG_FIELDS) | {'compute_dtype'}
    unknown = set(fields) - known
    if unknown:
      raise ValueError(
        f'unknown VideoMAE config field(s) {sorted(unknown)}; known: {sorted(known)}'
      )
    dtype = jnp.dtype(fields.pop('compute_dtype', 'float32'))
    kwargs = {k: (float(v) if k == 'mlp_ratio' else int(v)) for k, v in fields.items()}
    model = cls(**kwargs, dtype=dtype)
    model.check_sizes()
    return model

  @property
  def num_tokens(self) -> int:
    return (self.num_frames // self.tubelet_size) * (self.image_size // self.patch_size) ** 2

  def check_sizes(self) -> None:
    """Raises ValueError when the sizes do not describe a VideoMAE."""
    if self.hidden_size % self.num_heads:
      raise ValueError(
        f'hidden_size={self.hidden_size} is not divisible by num_heads={self.num_heads}'
      )
    if self.num_frames % self.tubelet_size:
      raise ValueError(
        f'num_frames={self.num_frames} is not a multiple of tubelet_size={self.tubelet_size}'
      )
    if self.image_size % self.patch_size:
      raise ValueError(
        f'image_size={self.image_size} is not a multiple of patch_size={self.patch_size}'
      )

  def check_clip(self, shape: tuple[int, ...]) -> None:
    """Raises ValueError unless `shape` is (B, num_frames, image_size, image_size, 3).

    The position table has exactly one row per token of such a clip, and the official model
    asserts the frame size, so any other clip is refused rather than silently misread.
    """
    expected = (self.num_frames, self.image_size, self.image_size, 3)
    if len(shape) != 5 or tuple(shape[1:]) != expected:
      raise ValueError(
        f'VideoMAE takes clips of shape (B, {", ".join(map(str, expected))}) '
        f'(num_frames, image_size, image_size, RGB); got {tuple(shape)}'
      )

  @nn.compact
  def __call__(self, video_bthwc: jax.Array) -> jax.Array:
    """Classifies clips.

    Args:
      video_bthwc: (B, T, H, W, 3) ImageNet-normalised frames (the normalisation of GliTr's
        frames and of VideoMAE's SSv2 fine-tuning), T = num_frames, H = W = image_size.

    Returns:
      (B, num_classes) float32 logits.
    """
    self.check_sizes()
    self.check_clip(video_bthwc.shape)
    x_bnd = TubeletEmbed(
      self.tubelet_size, self.patch_size, self.hidden_size, dtype=self.dtype, name='patch_embed'
    )(video_bthwc)
    # Fixed, not learned: the official code adds the table `.type_as(x)` (docs/design.md 1.8).
    pos_nd = sinusoid_table(self.num_tokens, self.hidden_size)
    x_bnd = x_bnd + jnp.asarray(pos_nd, self.dtype)[None]
    for i in range(self.depth):
      x_bnd = Block(self.num_heads, self.mlp_ratio, dtype=self.dtype, name=f'blocks_{i}')(x_bnd)
    # `norm` is the identity under mean pooling; the pooled token goes through `fc_norm`.
    pooled_bd = jnp.mean(x_bnd.astype(jnp.float32), axis=1)
    pooled_bd = nn.LayerNorm(epsilon=layers.LN_EPS, dtype=self.dtype, name='fc_norm')(pooled_bd)
    logits_bc = nn.Dense(
      self.num_classes, dtype=self.dtype, kernel_init=layers.dense_init, name='head'
    )(pooled_bd)
    return logits_bc.astype(jnp.float32)
