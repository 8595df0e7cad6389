"""Transformer building blocks shared by Tf (the ViT), Tc and Tl (the causal temporal heads).

Pre-LN blocks as in timm's VisionTransformer (the official release's layers): LayerNorm eps 1e-6,
multi-head self-attention with a fused qkv projection (q, k, v stacked along the output axis, as
PyTorch checkpoints store it), exact-erf GELU, stochastic depth on both residual branches.

Attention optionally runs against an explicit key/value cache (`LayerCache`): the new keys and
values are written at `cache.length`, and the queries attend to every cached position at or before
their own. The full causal pass is the special case of an empty cache, so one mechanism serves
training (whole sequence at once) and online inference (one step at a time).
"""

import math
from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp

Dtype = Any

LN_EPS = 1e-6
# timm / the official release initialise every Linear at truncated-normal(0.02), zero bias.
dense_init = nn.initializers.truncated_normal(stddev=0.02)


@flax.struct.dataclass
class LayerCache:
  """Keys and values of one attention layer for `max_len` time steps.

  Attributes:
    k_bthd: (B, max_len, heads, head_dim) keys; positions >= the owner's length are unused.
    v_bthd: (B, max_len, heads, head_dim) values.
  """

  k_bthd: jax.Array
  v_bthd: jax.Array


def gelu(x: jax.Array) -> jax.Array:
  """Exact (erf) GELU, as timm/iBOT ViTs use; flax.linen.gelu defaults to the tanh approximation.

  Written as PyTorch writes it, x / 2 * (1 + erf(x / sqrt(2))): on CPU, XLA's erf is a short
  polynomial, about 2x faster (forward and backward) than the erfc form of
  `nn.gelu(approximate=False)`, and it agrees with float64 to 1e-6.
  """
  return x * 0.5 * (1.0 + jax.lax.erf(x * (1.0 / math.sqrt(2.0))))


class DropPath(nn.Module):
  """Stochastic depth: zeroes a residual branch per example with probability `rate` (timm's).

  The mask has one value per example (the leading axis) and is drawn from the 'dropout' RNG.
  """

  rate: float

  @nn.compact
  def __call__(self, x: jax.Array, deterministic: bool) -> jax.Array:
    if deterministic or self.rate == 0.0:
      return x
    keep = 1.0 - self.rate
    shape = (x.shape[0],) + (1,) * (x.ndim - 1)
    mask = jax.random.bernoulli(self.make_rng('dropout'), keep, shape)
    return jnp.where(mask, x / keep, jnp.zeros_like(x))


class Mlp(nn.Module):
  hidden_dim: int
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    out_dim = x.shape[-1]
    x = nn.Dense(self.hidden_dim, dtype=self.dtype, kernel_init=dense_init, name='fc1')(x)
    x = gelu(x)
    return nn.Dense(out_dim, dtype=self.dtype, kernel_init=dense_init, name='fc2')(x)


class Attention(nn.Module):
  """Multi-head self-attention with a fused qkv projection and an optional KV cache.

  Attributes:
    num_heads: number of heads; the width must be divisible by it.
    causal: a query attends only to keys at or before its own position.
    dtype: computation dtype.
  """

  num_heads: int
  causal: bool = False
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(
    self, x_bsd: jax.Array, cache: LayerCache | None = None, start: jax.Array | int = 0
  ) -> tuple[jax.Array, LayerCache | None]:
    """Attends the S new tokens to themselves and to the cache.

    Args:
      x_bsd: (B, S, D) the new tokens.
      cache: this layer's cache, or None for a self-contained pass over `x_bsd`.
      start: position of x_bsd[:, 0] in the sequence (the cache's filled length).

    Returns:
      (B, S, D) outputs and the updated cache (None when no cache came in).
    """
    b, s, d = x_bsd.shape
    h = self.num_heads
    hd = d // h
    qkv = nn.Dense(3 * d, dtype=self.dtype, kernel_init=dense_init, name='qkv')(x_bsd)
    qkv = qkv.reshape(b, s, 3, h, hd)
    q_bshd, k_bshd, v_bshd = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]

    if cache is None:
      k_bthd, v_bthd, new_cache = k_bshd, v_bshd, None
    else:
      k_bthd = jax.lax.dynamic_update_slice_in_dim(
        cache.k_bthd, k_bshd.astype(cache.k_bthd.dtype), start, axis=1
      )
      v_bthd = jax.lax.dynamic_update_slice_in_dim(
        cache.v_bthd, v_bshd.astype(cache.v_bthd.dtype), start, axis=1
      )
      new_cache = LayerCache(k_bthd=k_bthd, v_bthd=v_bthd)

    logits_bhst = jnp.einsum('bshd,bthd->bhst', q_bshd * (hd**-0.5), k_bthd.astype(self.dtype))
    if self.causal or cache is not None:
      q_pos = start + jnp.arange(s)
      k_pos = jnp.arange(k_bthd.shape[1])
      if self.causal:
        allowed_st = k_pos[None, :] <= q_pos[:, None]
      else:  # A cache holds unused slots past the filled length.
        allowed_st = jnp.broadcast_to(k_pos[None, :] < start + s, (s, k_pos.shape[0]))
      logits_bhst = jnp.where(allowed_st[None, None], logits_bhst, jnp.finfo(logits_bhst.dtype).min)
    probs_bhst = jax.nn.softmax(logits_bhst.astype(jnp.float32), axis=-1).astype(self.dtype)
    out_bshd = jnp.einsum('bhst,bthd->bshd', probs_bhst, v_bthd.astype(self.dtype))
    out = nn.Dense(d, dtype=self.dtype, kernel_init=dense_init, name='proj')(
      out_bshd.reshape(b, s, d)
    )
    return out, new_cache


class Block(nn.Module):
  """Pre-LN transformer block: x + DropPath(Attn(LN(x))), then x + DropPath(MLP(LN(x)))."""

  num_heads: int
  mlp_ratio: float = 4.0
  drop_path: float = 0.0
  causal: bool = False
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(
    self,
    x_bsd: jax.Array,
    cache: LayerCache | None = None,
    start: jax.Array | int = 0,
    deterministic: bool = True,
  ) -> tuple[jax.Array, LayerCache | None]:
    d = x_bsd.shape[-1]
    y = nn.LayerNorm(epsilon=LN_EPS, dtype=self.dtype, name='norm1')(x_bsd)
    y, cache = Attention(self.num_heads, causal=self.causal, dtype=self.dtype, name='attn')(
      y, cache, start
    )
    x_bsd = x_bsd + DropPath(self.drop_path)(y, deterministic)
    y = nn.LayerNorm(epsilon=LN_EPS, dtype=self.dtype, name='norm2')(x_bsd)
    y = Mlp(int(d * self.mlp_ratio), dtype=self.dtype, name='mlp')(y)
    x_bsd = x_bsd + DropPath(self.drop_path)(y, deterministic)
    return x_bsd, cache


def drop_path_rates(rate: float, depth: int) -> list[float]:
  """timm's per-block stochastic-depth schedule: linspace(0, rate, depth)."""
  if depth == 1:
    return [0.0]
  return [rate * i / (depth - 1) for i in range(depth)]
