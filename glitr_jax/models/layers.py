"""Transformer building blocks shared by Tf (the ViT), Tc and Tl (the causal temporal heads).

Pre-LN blocks as in timm's VisionTransformer (the official release's layers): LayerNorm eps 1e-6,
multi-head self-attention with a fused qkv projection (q, k, v stacked along the output axis, as
PyTorch checkpoints store it), exact-erf GELU, stochastic depth on both residual branches.

Attention optionally runs against an explicit key/value cache (`LayerCache`): the new keys and
values are written at `cache.length`, and the queries attend to every cached position at or before
their own. The full causal pass is the special case of an empty cache, so one mechanism serves
training (whole sequence at once) and online inference (one step at a time).
"""

import functools
import math
from typing import Any, NamedTuple

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


def keys_and_values(
  k_bshd: jax.Array, v_bshd: jax.Array, cache: LayerCache | None, start: jax.Array | int
) -> tuple[jax.Array, jax.Array, LayerCache | None]:
  """What attention attends over: the new keys and values alone (no cache), or written into the
  cache at positions start..start+S-1 and the whole cache returned (with the updated cache)."""
  if cache is None:
    return k_bshd, v_bshd, None
  k_bthd = jax.lax.dynamic_update_slice_in_dim(
    cache.k_bthd, k_bshd.astype(cache.k_bthd.dtype), start, axis=1
  )
  v_bthd = jax.lax.dynamic_update_slice_in_dim(
    cache.v_bthd, v_bshd.astype(cache.v_bthd.dtype), start, axis=1
  )
  return k_bthd, v_bthd, LayerCache(k_bthd=k_bthd, v_bthd=v_bthd)


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


# --- Formulations XLA's CPU backend runs faster than the plain ones (docs/performance.md). ---
# Each computes what the plain form computes: tests/perf_test.py checks values and gradients
# against nn.Dense, nn.LayerNorm and autodiff to 1e-5. The hand-written backward passes
# (LayerNorm, the attention core) have no weights to multiply: under vmap (the student's replay
# of its glimpse loop) a custom VJP's weight gradient would become one small product per mapped
# element instead of one large product.


def mm(spec: str, a: jax.Array, b: jax.Array) -> jax.Array:
  """einsum(spec, a, b) accumulated in float32, returned in a's dtype.

  The same as einsum for float32 operands. For bfloat16 operands it is one rounding of the float32
  sum instead of bfloat16 output; on CPUs with matrix units (AMX) it is also the form XLA runs on
  them (docs/performance.md).
  """
  return jnp.einsum(spec, a, b, preferred_element_type=jnp.float32).astype(a.dtype)


@jax.custom_jvp
def _linear_low_precision(x_mi: jax.Array, kernel_io: jax.Array, bias_o: jax.Array) -> jax.Array:
  y_mo = jnp.matmul(x_mi, kernel_io, preferred_element_type=jnp.float32)
  return (y_mo + bias_o).astype(x_mi.dtype)


@_linear_low_precision.defjvp
def _linear_low_precision_jvp(primals, tangents):
  # Float32 accumulation for the value; the derivative keeps the plain low-precision products, whose
  # transposes (the backward pass) are products of like dtypes. Accumulating the value in float32
  # would otherwise give float32 cotangents, and mixed float32 x bfloat16 products run slower.
  x_mi, kernel_io, bias_o = primals
  dx_mi, dkernel_io, dbias_o = tangents
  return _linear_low_precision(x_mi, kernel_io, bias_o), (
    dx_mi @ kernel_io + x_mi @ dkernel_io + dbias_o
  )


class Int8Kernel(NamedTuple):
  """A weight matrix stored in int8 with one float32 scale per output: kernel = values * scale.

  Attributes:
    values_io: (I, O) int8.
    scale_o: (O,) float32.
  """

  values_io: jax.Array
  scale_o: jax.Array


def quantize_kernel(kernel_io: jax.Array) -> Int8Kernel:
  """Symmetric int8 quantisation per output channel: scale = max |column| / 127."""
  k32 = kernel_io.astype(jnp.float32)
  amax_o = jnp.max(jnp.abs(k32), axis=0)
  scale_o = jnp.where(amax_o > 0, amax_o / 127.0, 1.0)
  values_io = jnp.clip(jnp.round(k32 / scale_o), -127, 127).astype(jnp.int8)
  return Int8Kernel(values_io=values_io, scale_o=scale_o)


def _linear_int8(x_mi: jax.Array, kernel: Int8Kernel, bias_o: jax.Array) -> jax.Array:
  # Each row of x quantised symmetrically to int8 (its own scale), one int8 x int8 product
  # accumulated in int32, then both scales applied in float32.
  x32 = x_mi.astype(jnp.float32)
  amax_m1 = jnp.max(jnp.abs(x32), axis=-1, keepdims=True)
  xscale_m1 = jnp.where(amax_m1 > 0, amax_m1 / 127.0, 1.0)
  xq_mi = jnp.clip(jnp.round(x32 / xscale_m1), -127, 127).astype(jnp.int8)
  acc_mo = jnp.matmul(xq_mi, kernel.values_io, preferred_element_type=jnp.int32)
  y_mo = acc_mo.astype(jnp.float32) * (xscale_m1 * kernel.scale_o) + bias_o.astype(jnp.float32)
  return y_mo.astype(x_mi.dtype)


def linear(x: jax.Array, kernel_io: jax.Array | Int8Kernel, bias_o: jax.Array) -> jax.Array:
  """x @ kernel + bias over the last axis, as nn.Dense computes it, on rows flattened to 2-D.

  Flattening first makes the weight gradient one 2-D product contracting the rows (x^T dy),
  which XLA's CPU backend runs in place; over (B, S, I) inputs it is a contraction over two
  batch axes, which it runs after copying a transposed operand. Low-precision operands accumulate
  in float32 (`mm`).

  An `Int8Kernel` (inference only) multiplies int8 rows of x, each quantised with its own scale,
  by the int8 weights: the product of few rows then reads a quarter of float32's bytes.

  Args:
    x: (..., I) inputs.
    kernel_io: (I, O) weights, or an Int8Kernel.
    bias_o: (O,) bias.

  Returns:
    (..., O) outputs in x's dtype.
  """
  lead = x.shape[:-1]
  x_mi = x.reshape(-1, x.shape[-1])
  if isinstance(kernel_io, Int8Kernel):
    y_mo = _linear_int8(x_mi, kernel_io, bias_o)
  elif x.dtype == jnp.float32:
    y_mo = x_mi @ kernel_io + bias_o
  else:
    y_mo = _linear_low_precision(x_mi, kernel_io, bias_o)
  return y_mo.reshape(lead + (-1,))


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def _layer_norm(x: jax.Array, scale_d: jax.Array, bias_d: jax.Array, eps: float) -> jax.Array:
  return _layer_norm_fwd(x, scale_d, bias_d, eps)[0]


def _layer_norm_stats(x32: jax.Array, eps: float) -> tuple[jax.Array, jax.Array]:
  # flax.linen.LayerNorm's statistics: E[x^2] - E[x]^2 (clipped at 0) in float32.
  mean = jnp.mean(x32, axis=-1, keepdims=True)
  var = jnp.maximum(jnp.mean(x32 * x32, axis=-1, keepdims=True) - mean * mean, 0.0)
  return mean, jax.lax.rsqrt(var + eps)


def _layer_norm_fwd(x, scale_d, bias_d, eps):
  x32 = x.astype(jnp.float32)
  mean, rstd = _layer_norm_stats(x32, eps)
  y = ((x32 - mean) * (rstd * scale_d) + bias_d).astype(x.dtype)
  # The input and two numbers per row are kept, not the normalised activations.
  return y, (x, mean, rstd, scale_d)


def _layer_norm_bwd(eps, residuals, dy):
  del eps
  x, mean, rstd, scale_d = residuals
  rows = tuple(range(x.ndim - 1))
  xhat = (x.astype(jnp.float32) - mean) * rstd
  dy32 = dy.astype(jnp.float32)
  g = dy32 * scale_d
  dx = rstd * (g - jnp.mean(g, -1, keepdims=True) - xhat * jnp.mean(g * xhat, -1, keepdims=True))
  dscale = jnp.sum(dy32 * xhat, axis=rows).astype(scale_d.dtype)
  return dx.astype(x.dtype), dscale, jnp.sum(dy32, axis=rows).astype(scale_d.dtype)


_layer_norm.defvjp(_layer_norm_fwd, _layer_norm_bwd)


@jax.custom_vjp
def attention_core(
  q_bhsd: jax.Array, k_bhtd: jax.Array, v_bhtd: jax.Array, allowed_st: jax.Array | None
) -> jax.Array:
  """softmax(q k^T) v per head, with a float32 softmax; `allowed_st` masks keys (True: attend).

  Args:
    q_bhsd: (B, heads, S, head_dim) queries, already scaled by head_dim^-1/2.
    k_bhtd: (B, heads, T, head_dim) keys.
    v_bhtd: (B, heads, T, head_dim) values.
    allowed_st: (S, T) bool, or None to attend everywhere.

  Returns:
    (B, heads, S, head_dim) outputs.
  """
  return _attention_fwd(q_bhsd, k_bhtd, v_bhtd, allowed_st)[0]


def _attention_fwd(q_bhsd, k_bhtd, v_bhtd, allowed_st):
  logits_bhst = mm('bhsd,bhtd->bhst', q_bhsd, k_bhtd)
  if allowed_st is not None:
    logits_bhst = jnp.where(allowed_st, logits_bhst, jnp.finfo(logits_bhst.dtype).min)
  probs_bhst = jax.nn.softmax(logits_bhst.astype(jnp.float32), axis=-1).astype(q_bhsd.dtype)
  out_bhsd = mm('bhst,bhtd->bhsd', probs_bhst, v_bhtd)
  return out_bhsd, (q_bhsd, k_bhtd, v_bhtd, probs_bhst, out_bhsd)


def _attention_bwd(residuals, dout_bhsd):
  q_bhsd, k_bhtd, v_bhtd, probs_bhst, out_bhsd = residuals
  dv_bhtd = mm('bhst,bhsd->bhtd', probs_bhst, dout_bhsd)
  dprobs_bhst = mm('bhsd,bhtd->bhst', dout_bhsd, v_bhtd)
  # The softmax's backward needs sum_t p_st dp_st per query; it equals sum_d dout_sd out_sd, a
  # reduction over head_dim instead of over the S x T probabilities (FlashAttention's identity).
  delta_bhs1 = jnp.sum(
    dout_bhsd.astype(jnp.float32) * out_bhsd.astype(jnp.float32), axis=-1, keepdims=True
  )
  dlogits_bhst = probs_bhst.astype(jnp.float32) * (dprobs_bhst.astype(jnp.float32) - delta_bhs1)
  dlogits_bhst = dlogits_bhst.astype(q_bhsd.dtype)
  dq_bhsd = mm('bhst,bhtd->bhsd', dlogits_bhst, k_bhtd)
  dk_bhtd = mm('bhst,bhsd->bhtd', dlogits_bhst, q_bhsd)
  return dq_bhsd, dk_bhtd, dv_bhtd, None


attention_core.defvjp(_attention_fwd, _attention_bwd)


# --- Modules. ---
class LinearParams(nn.Module):
  """The weights of a linear layer, named as nn.Dense names them ('kernel' (I, O), 'bias' (O,)).

  Returns them cast to `dtype`, for `linear` or a fused product (`Mlp`) to apply. Parameters
  that also hold a 'kernel_scale' (O,) beside an int8 'kernel' (inference weights quantised by
  `glitr_jax.inference.quantize_head_weights`) are returned as an `Int8Kernel`.
  """

  features: int
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, in_features: int) -> tuple[jax.Array | Int8Kernel, jax.Array]:
    if self.has_variable('params', 'kernel_scale'):
      values = self.get_variable('params', 'kernel')
      scale = self.get_variable('params', 'kernel_scale')
      bias = self.get_variable('params', 'bias')
      if values.shape != (in_features, self.features) or values.dtype != jnp.int8:
        raise ValueError(
          f'{self.name}: an int8 kernel of shape {(in_features, self.features)} is needed beside '
          f"'kernel_scale', got {values.dtype}{list(values.shape)}"
        )
      return Int8Kernel(values_io=values, scale_o=scale), bias
    kernel = self.param('kernel', dense_init, (in_features, self.features))
    bias = self.param('bias', nn.initializers.zeros, (self.features,))
    return kernel.astype(self.dtype), bias.astype(self.dtype)


class LayerNorm(nn.Module):
  """flax.linen.LayerNorm over the last axis (statistics in float32), parameters 'scale', 'bias'."""

  epsilon: float = LN_EPS
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    d = x.shape[-1]
    scale = self.param('scale', nn.initializers.ones, (d,))
    bias = self.param('bias', nn.initializers.zeros, (d,))
    return _layer_norm(x, scale, bias, self.epsilon).astype(self.dtype)


class Mlp(nn.Module):
  """fc1 -> GELU -> fc2."""

  hidden_dim: int
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    d = x.shape[-1]
    w1, b1 = LinearParams(self.hidden_dim, dtype=self.dtype, name='fc1')(d)
    w2, b2 = LinearParams(d, dtype=self.dtype, name='fc2')(self.hidden_dim)
    return linear(gelu(linear(x.astype(self.dtype), w1, b1)), w2, b2)


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
    qkv_kernel, qkv_bias = LinearParams(3 * d, dtype=self.dtype, name='qkv')(d)
    qkv_bs3hd = linear(x_bsd.astype(self.dtype), qkv_kernel, qkv_bias).reshape(b, s, 3, h, hd)
    # jnp.split, not three slices: its gradient is one concatenation, where the slices' would be
    # three zero-padded copies of the (B, S, 3, heads, head_dim) tensor added together.
    q_bshd, k_bshd, v_bshd = (part[:, :, 0] for part in jnp.split(qkv_bs3hd, 3, axis=2))

    k_bthd, v_bthd, new_cache = keys_and_values(k_bshd, v_bshd, cache, start)

    allowed_st = None
    if self.causal or cache is not None:
      q_pos = start + jnp.arange(s)
      k_pos = jnp.arange(k_bthd.shape[1])
      if self.causal:
        allowed_st = k_pos[None, :] <= q_pos[:, None]
      else:  # A cache holds unused slots past the filled length.
        allowed_st = jnp.broadcast_to(k_pos[None, :] < start + s, (s, k_pos.shape[0]))
    # Heads-major operands, (B, heads, tokens, head_dim): each head's products are then plain
    # batched matmuls over contiguous matrices, not products over the strided (B, tokens, heads,
    # head_dim) layout.
    out_bhsd = attention_core(
      jnp.swapaxes(q_bshd * (hd**-0.5), 1, 2),
      jnp.swapaxes(k_bthd.astype(self.dtype), 1, 2),
      jnp.swapaxes(v_bthd.astype(self.dtype), 1, 2),
      allowed_st,
    )
    proj_kernel, proj_bias = LinearParams(d, dtype=self.dtype, name='proj')(d)
    out = linear(jnp.swapaxes(out_bhsd, 1, 2).reshape(b, s, d), proj_kernel, proj_bias)
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
    y = LayerNorm(LN_EPS, dtype=self.dtype, name='norm1')(x_bsd)
    y, cache = Attention(self.num_heads, causal=self.causal, dtype=self.dtype, name='attn')(
      y, cache, start
    )
    x_bsd = x_bsd + DropPath(self.drop_path)(y, deterministic)
    y = LayerNorm(LN_EPS, dtype=self.dtype, name='norm2')(x_bsd)
    y = Mlp(int(d * self.mlp_ratio), dtype=self.dtype, name='mlp')(y)
    x_bsd = x_bsd + DropPath(self.drop_path)(y, deterministic)
    return x_bsd, cache


def drop_path_rates(rate: float, depth: int) -> list[float]:
  """timm's per-block stochastic-depth schedule: linspace(0, rate, depth)."""
  if depth == 1:
    return [0.0]
  return [rate * i / (depth - 1) for i in range(depth)]
