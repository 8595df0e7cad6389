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


def posemb_init(kind: str, dims: int):
  """Initialiser of a learned (1, N, D) position table: 'normal' or 'sincos'.

  'normal' is timm's trunc-normal(0.02). 'sincos' starts the table at fixed sine-cosine features
  (MAE, big_vision's 'sincos2d'): `dims=1` for N positions in a row (temporal tables), `dims=2`
  for a square grid of N = g * g patches (half the channels encode the column, half the row).
  Positions are then distinct from the first step, which a model trained from scratch on a small
  dataset learns from far sooner than from 0.02 noise. Loaded checkpoints overwrite the table.
  """
  if kind == 'normal':
    return dense_init
  if kind != 'sincos':
    raise ValueError(f"model.posemb_init={kind!r}: 'normal' or 'sincos'")

  def init(key, shape, dtype=jnp.float32):
    del key
    _, n, d = shape
    if dims == 1:
      return _sincos_1d(jnp.arange(n), d)[None].astype(dtype)
    grid = math.isqrt(n)
    if grid * grid != n or d % 2:
      raise ValueError(f'2-D sin-cos table of {n} positions x {d} channels: needs a square grid')
    ys, xs = jnp.divmod(jnp.arange(n), grid)
    table = jnp.concatenate([_sincos_1d(xs, d // 2), _sincos_1d(ys, d - d // 2)], axis=-1)
    return table[None].astype(dtype)

  return init


def _sincos_1d(positions: jax.Array, d: int) -> jax.Array:
  """(N,) integer positions -> (N, d) [sin | cos] features at d / 2 geometric frequencies."""
  half = d // 2
  omega = 1.0 / 10000.0 ** (jnp.arange(half, dtype=jnp.float32) / max(half, 1))
  angles = positions.astype(jnp.float32)[:, None] * omega[None, :]
  out = jnp.concatenate([jnp.sin(angles), jnp.cos(angles)], axis=-1)
  return jnp.pad(out, ((0, 0), (0, d - out.shape[-1])))


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

    # Heads-major operands, (B, heads, tokens, head_dim): each head's products are then plain
    # batched matmuls over contiguous matrices, not products over the strided (B, tokens, heads,
    # head_dim) layout.
    q_bhsd = jnp.swapaxes(q_bshd * (hd**-0.5), 1, 2)
    k_bhtd = jnp.swapaxes(k_bthd.astype(self.dtype), 1, 2)
    v_bhtd = jnp.swapaxes(v_bthd.astype(self.dtype), 1, 2)
    logits_bhst = jnp.einsum('bhsd,bhtd->bhst', q_bhsd, k_bhtd)
    if self.causal or cache is not None:
      q_pos = start + jnp.arange(s)
      k_pos = jnp.arange(k_bthd.shape[1])
      if self.causal:
        allowed_st = k_pos[None, :] <= q_pos[:, None]
      else:  # A cache holds unused slots past the filled length.
        allowed_st = jnp.broadcast_to(k_pos[None, :] < start + s, (s, k_pos.shape[0]))
      logits_bhst = jnp.where(allowed_st[None, None], logits_bhst, jnp.finfo(logits_bhst.dtype).min)
    probs_bhst = jax.nn.softmax(logits_bhst.astype(jnp.float32), axis=-1).astype(self.dtype)
    out_bhsd = jnp.einsum('bhst,bhtd->bhsd', probs_bhst, v_bhtd)
    out = nn.Dense(d, dtype=self.dtype, kernel_init=dense_init, name='proj')(
      jnp.swapaxes(out_bhsd, 1, 2).reshape(b, s, d)
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
