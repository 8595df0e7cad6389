"""Tf, the spatial encoder: a ViT whose patch position embeddings may come from the caller.

A full frame uses the ViT's own 14x14 (for 224 px) position-embedding grid; a glimpse uses that grid
resampled at the glimpse's location (glitr_jax.glimpse.sample_pos_embed). The output is the class
token's feature after the final LayerNorm (no classification head), as in the official release.
Parameter names follow timm's (`cls_token`, `pos_embed`, `patch_embed`, `blocks_i`, `norm`), plus
the official release's split-off class-token position embedding `cls_embed`.
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from glitr_jax.models import layers

Dtype = Any


class PatchEmbed(nn.Module):
  """Non-overlapping patches through a linear map: a stride-p convolution, written as a matmul.

  The kernel has the convolution's layout (p, p, C_in, D) so PyTorch's (D, C_in, p, p) weight maps
  onto it by a transpose; patches are flattened in row-major (y, x) order as timm's `flatten(2)`.
  """

  patch_size: int
  hidden_size: int
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, images_nhwc: jax.Array) -> jax.Array:
    """(N, H, W, C) -> (N, (H/p) * (W/p), D)."""
    p = self.patch_size
    n, h, w, c = images_nhwc.shape
    if h % p or w % p:
      raise ValueError(f'image of {h}x{w} px is not a whole number of {p}-px patches')
    kernel = self.param(
      'kernel',
      nn.initializers.lecun_normal(in_axis=(0, 1, 2), out_axis=3),
      (p, p, c, self.hidden_size),
    )
    bias = self.param('bias', nn.initializers.zeros, (self.hidden_size,))
    x = images_nhwc.astype(self.dtype).reshape(n, h // p, p, w // p, p, c)
    x = jnp.einsum('nypxqc,pqcd->nyxd', x, kernel.astype(self.dtype))
    return (x + bias.astype(self.dtype)).reshape(n, (h // p) * (w // p), self.hidden_size)


class VisionTransformer(nn.Module):
  """ViT feature extractor (ViT-S/16 by default).

  Attributes:
    patch_size: patch side in pixels.
    hidden_size: token width D.
    depth: number of blocks.
    num_heads: attention heads.
    mlp_ratio: MLP hidden width / D.
    grid_size: side of the position-embedding grid (image_size // patch_size; 14 for 224 px).
    drop_path_rate: stochastic depth of the last block (timm's linear schedule).
    remat: rematerialise each block in the backward pass (saves activation memory).
    posemb_init: 'normal' (timm) or 'sincos' (2-D sine-cosine start of the learned table).
    dtype: computation dtype (parameters stay float32).
  """

  patch_size: int = 16
  hidden_size: int = 384
  depth: int = 12
  num_heads: int = 6
  mlp_ratio: float = 4.0
  grid_size: int = 14
  drop_path_rate: float = 0.0
  remat: bool = False
  posemb_init: str = 'normal'
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(
    self,
    images_nhwc: jax.Array,
    pos_embed_nld: jax.Array | None = None,
    deterministic: bool = True,
  ) -> jax.Array:
    """Encodes images (full frames or glimpses) into class-token features.

    Args:
      images_nhwc: (N, H, W, 3) normalised pixels; H and W multiples of the patch size.
      pos_embed_nld: (N, L, D) position embeddings of the L patches (a glimpse's, sampled from the
        grid at its location); None uses the ViT's own grid, which needs full frames of
        grid_size patches per side.
      deterministic: disables stochastic depth.

    Returns:
      (N, D) features: the final LayerNorm's output at the class token.
    """
    d = self.hidden_size
    init = layers.dense_init
    cls_token = self.param('cls_token', init, (1, 1, d))
    cls_embed = self.param('cls_embed', init, (1, 1, d))
    pos_embed = self.param(
      'pos_embed', layers.posemb_init(self.posemb_init, 2), (1, self.grid_size**2, d)
    )

    x_nld = PatchEmbed(self.patch_size, d, dtype=self.dtype, name='patch_embed')(images_nhwc)
    n, num_patches, _ = x_nld.shape
    if pos_embed_nld is None:
      if num_patches != self.grid_size**2:
        raise ValueError(
          f'{num_patches} patches but a {self.grid_size}x{self.grid_size} position grid: pass '
          'position embeddings for glimpses (glitr_jax.glimpse.sample_pos_embed)'
        )
      pos_embed_nld = pos_embed
    x_nld = x_nld + pos_embed_nld.astype(self.dtype)
    cls = jnp.broadcast_to((cls_token + cls_embed).astype(self.dtype), (n, 1, d))
    x_nld = jnp.concatenate([cls, x_nld], axis=1)

    block_cls = nn.remat(layers.Block, static_argnums=(3, 4)) if self.remat else layers.Block
    for i, rate in enumerate(layers.drop_path_rates(self.drop_path_rate, self.depth)):
      x_nld, _ = block_cls(
        self.num_heads, self.mlp_ratio, rate, dtype=self.dtype, name=f'blocks_{i}'
      )(x_nld, None, 0, deterministic)
    x_nld = nn.LayerNorm(epsilon=layers.LN_EPS, dtype=self.dtype, name='norm')(x_nld)
    return x_nld[:, 0].astype(jnp.float32)
