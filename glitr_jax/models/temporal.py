"""Tc and Tl: the causal temporal transformer, with an explicit key/value cache.

Architecture (docs/design.md 1.4): input projection Linear(D -> E) + LayerNorm (identity when
D == E), a learned temporal position embedding per frame, pre-LN causal blocks, a final LayerNorm
and a linear head applied at every position; no class token. The output at position t depends on
inputs 1..t only.

The same module serves both heads: Tc (head: C classes, with bias, truncated-normal(0.02) init)
and Tl (head: 2 coordinates, no bias, PyTorch's default init x 0.1, plus the learnable first
location `init_loc`).

Calling it with a `TemporalCache` processes S new steps at positions `cache.length ...` attending
to the cached prefix, and returns the cache with those steps appended: one step costs attention
over the cache, never a recomputation of the prefix. Calling it without a cache is the full causal
pass; both give the same outputs (tests/temporal_test.py).
"""

import math
from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp

from glitr_jax.models import layers

Dtype = Any


@flax.struct.dataclass
class TemporalCache:
  """Every layer's keys and values, and how many time steps they hold.

  Attributes:
    layers: one LayerCache per block, each (B, max_len, heads, head_dim).
    length: () int32, the number of steps already processed (the next step's position).
  """

  layers: tuple[layers.LayerCache, ...]
  length: jax.Array


def torch_linear_init(scale: float = 1.0):
  """PyTorch's default nn.Linear weight init, U(-1/sqrt(fan_in), 1/sqrt(fan_in)), times `scale`."""

  def init(key, shape, dtype=jnp.float32):
    bound = scale / math.sqrt(shape[0])
    return jax.random.uniform(key, shape, dtype, -bound, bound)

  return init


class TemporalTransformer(nn.Module):
  """Causal pre-LN transformer over a sequence of frame features.

  Attributes:
    hidden_size: width E.
    depth: number of blocks.
    num_heads: attention heads.
    num_frames: length of the temporal position embedding (the longest sequence).
    num_outputs: head outputs per position (classes for Tc, 2 for Tl).
    mlp_ratio: MLP hidden width / E.
    drop_path_rate: stochastic depth of the last block (timm's linear schedule).
    location_head: True for Tl: a bias-free head at PyTorch's default init x 0.1, and the
      learnable first location `init_loc` (2,) = (0, 0).
    posemb_init: 'normal' (timm) or 'sincos' (1-D sine-cosine start of the learned tmp_embed).
    dtype: computation dtype.
  """

  hidden_size: int = 768
  depth: int = 4
  num_heads: int = 6
  num_frames: int = 16
  num_outputs: int = 174
  mlp_ratio: float = 4.0
  drop_path_rate: float = 0.0
  location_head: bool = False
  posemb_init: str = 'normal'
  dtype: Dtype = jnp.float32

  def init_cache(self, batch_size: int, max_len: int | None = None) -> TemporalCache:
    """An empty cache for `max_len` (default: num_frames) steps."""
    max_len = max_len or self.num_frames
    head_dim = self.hidden_size // self.num_heads
    shape = (batch_size, max_len, self.num_heads, head_dim)
    # One buffer per layer (not one shared object): a state built outside jit can be donated.
    empty = tuple(
      layers.LayerCache(k_bthd=jnp.zeros(shape, self.dtype), v_bthd=jnp.zeros(shape, self.dtype))
      for _ in range(self.depth)
    )
    return TemporalCache(layers=empty, length=jnp.zeros((), jnp.int32))

  @nn.compact
  def __call__(
    self,
    feats_bsd: jax.Array,
    cache: TemporalCache | None = None,
    deterministic: bool = True,
  ) -> tuple[jax.Array, TemporalCache | None]:
    """Runs S steps.

    Args:
      feats_bsd: (B, S, D) frame or glimpse features of the new steps.
      cache: None for a full causal pass over positions 0..S-1; otherwise the steps are placed at
        positions cache.length .. cache.length + S - 1 and attend to the cached prefix.
      deterministic: disables stochastic depth. With a cache, the drop-path masks depend only on
        the 'dropout' RNG, so one RNG for every step gives one mask per example and block for the
        whole sequence (the same as the full causal pass).

    Returns:
      (B, S, num_outputs) float32 head outputs, and the updated cache (None without one).
    """
    e = self.hidden_size
    if self.location_head:
      self.param('init_loc', nn.initializers.zeros, (2,))
    x_bse = feats_bsd.astype(self.dtype)
    if feats_bsd.shape[-1] != e:
      x_bse = nn.Dense(e, dtype=self.dtype, kernel_init=layers.dense_init, name='embed_proj')(x_bse)
      x_bse = nn.LayerNorm(epsilon=layers.LN_EPS, dtype=self.dtype, name='embed_norm')(x_bse)
    tmp_embed = self.param(
      'tmp_embed', layers.posemb_init(self.posemb_init, 1), (1, self.num_frames, e)
    )

    s = x_bse.shape[1]
    start = jnp.zeros((), jnp.int32) if cache is None else cache.length
    x_bse = x_bse + jax.lax.dynamic_slice_in_dim(tmp_embed, start, s, axis=1).astype(self.dtype)

    new_layers = []
    for i, rate in enumerate(layers.drop_path_rates(self.drop_path_rate, self.depth)):
      layer_cache = None if cache is None else cache.layers[i]
      x_bse, layer_cache = layers.Block(
        self.num_heads, self.mlp_ratio, rate, causal=True, dtype=self.dtype, name=f'blocks_{i}'
      )(x_bse, layer_cache, start, deterministic)
      new_layers.append(layer_cache)
    x_bse = nn.LayerNorm(epsilon=layers.LN_EPS, dtype=self.dtype, name='norm')(x_bse)
    if self.location_head:
      head = nn.Dense(
        self.num_outputs,
        use_bias=False,
        dtype=self.dtype,
        kernel_init=torch_linear_init(0.1),
        name='head',
      )
    else:
      head = nn.Dense(
        self.num_outputs, dtype=self.dtype, kernel_init=layers.dense_init, name='head'
      )
    out = head(x_bse).astype(jnp.float32)
    if cache is None:
      return out, None
    return out, TemporalCache(layers=tuple(new_layers), length=cache.length + s)
