r"""The analytic FLOPs of a training step, shared by the benchmarks (no flags, no JAX).

`model_flops`: 2 * m * k * n per matmul of an (m, k) by a (k, n) operand,
over every matmul the method needs:
  * Tf (ViT-S/16): per image with L tokens (197 for a full frame, n * n + 1 for a glimpse), per
    block: qkv, proj, fc1, fc2 (2 L D (3D + D + 4D + 4D)), attention logits and weighted sum
    (2 * 2 L^2 D); plus the patch embedding (2 P (p * p * 3) D for P patches).
  * Tc, Tl: input projection D -> E, per block the same four projections and causal attention
    over the whole T x T logits (as computed), and the head (E -> C or E -> 2), per position.
  * Backward: 2x the forward for a trained module (gradients with respect to weights and inputs);
    1x for a frozen module that passes gradients to its inputs (T'f, T'c in the teacher's
    consistency branch: the gradient reaches Tl only through the glimpse locations); 0x for the
    frozen teacher in the student step (forward only). Tf on full frames needs no gradient for
    the pixels, so its patch embedding's backward is 1x.
  * Not counted: the bilinear crop (two small matmuls per glimpse with mostly-zero weight
    matrices; reported as `crop_flops_per_step`), normalisation, softmax, GELU, the optimiser,
    and any recomputation an implementation chooses (e.g. rematerialisation): model FLOPs are
    what the method needs, so MFU shows what an implementation makes of the machine.
With the paper's sizes (ViT-S/16 at 224 px, 96-px glimpses, temporal width 768, depth 4, 174
classes, B = 2) a student step at T = 16 is 462 GFLOP (the frozen teacher's forward: 296) and a
teacher step at T = 8 is 499 GFLOP.
"""


def vit_flops(images: int, tokens: int, d: int, depth: int, mlp: float, patch_in: int) -> int:
  """Forward matmul FLOPs of Tf on `images` images of `tokens` tokens (class token included)."""
  proj = 2 * images * tokens * d * (3 * d + d + 2 * int(mlp * d))
  attn = 2 * 2 * images * tokens * tokens * d
  patch = 2 * images * (tokens - 1) * patch_in * d
  return depth * (proj + attn) + patch


def vit_patch_flops(images: int, tokens: int, d: int, patch_in: int) -> int:
  return 2 * images * (tokens - 1) * patch_in * d


def temporal_flops(b: int, t: int, d_in: int, e: int, depth: int, mlp: float, out: int) -> int:
  """Forward matmul FLOPs of a causal temporal head over T steps (the full T x T logits)."""
  embed = 2 * b * t * d_in * e if d_in != e else 0
  proj = 2 * b * t * e * (3 * e + e + 2 * int(mlp * e))
  attn = 2 * 2 * b * t * t * e
  return embed + depth * (proj + attn) + 2 * b * t * e * out


def model_flops(stage: str, b: int, t: int, mc) -> dict[str, int]:
  """The analytic FLOPs of one training step (module docstring), broken down by part."""
  d, e, p = mc.hidden_size, mc.temporal_hidden_size, mc.patch_size
  patch_in = p * p * 3
  frame_tokens = (mc.image_size // p) ** 2 + 1
  glimpse_tokens = mc.glimpse_patches**2 + 1
  n = b * t
  tf_frames = vit_flops(n, frame_tokens, d, mc.depth, mc.mlp_ratio, patch_in)
  tf_glimpses = vit_flops(n, glimpse_tokens, d, mc.depth, mc.mlp_ratio, patch_in)
  tc = temporal_flops(b, t, d, e, mc.temporal_depth, mc.mlp_ratio, mc.num_classes)
  tl = temporal_flops(b, t, d, e, mc.temporal_depth, mc.mlp_ratio, 2)
  if stage == 'student':
    parts = {
      'frozen_teacher_forward': tf_frames + tc,  # Tf + Tc on full frames (no Tl), forward only
      'tf_glimpses_fwd_bwd': 3 * tf_glimpses,
      'tc_fwd_bwd': 3 * tc,
      'tl_fwd_bwd': 3 * tl,
    }
  else:
    no_pixel_grad = vit_patch_flops(n, frame_tokens, d, patch_in)
    parts = {
      'tf_frames_fwd_bwd': 3 * tf_frames - no_pixel_grad,
      'tc_fwd_bwd': 3 * tc,
      'tl_fwd_bwd': 3 * tl,
      'frozen_copies_fwd_input_bwd': 2 * (tf_glimpses + tc),  # T'f, T'c: forward + input grads
    }
  parts['total'] = sum(parts.values())
  return parts


def executed_flops(stage: str, b: int, t: int, mc) -> tuple[int, int]:
  """What this implementation runs, and the part of it XLA's cost analysis sees.

  The student's glimpse loop runs forward (Tf on each glimpse, Tl's cached step) and its
  backward pass replays it without the loop (`GliTr.policy_rollout`): one more forward of Tf on
  the glimpses and of Tl than the model count. Rematerialisation (model.remat) adds another
  forward of the differentiated Tf blocks. XLA's cost analysis counts a while loop's body once,
  so it sees 1 / T of the loop.

  Returns:
    (executed FLOPs, the analytic count of what XLA's cost analysis should report).
  """
  flops = model_flops(stage, b, t, mc)['total']
  d, e, p = mc.hidden_size, mc.temporal_hidden_size, mc.patch_size
  n = b * t
  glimpse_tokens = mc.glimpse_patches**2 + 1
  tf_glimpses = vit_flops(n, glimpse_tokens, d, mc.depth, mc.mlp_ratio, p * p * 3)
  remat = 0
  if mc.remat:
    frame_tokens = (mc.image_size // p) ** 2 + 1
    images = (
      tf_glimpses
      if stage == 'student'
      else vit_flops(n, frame_tokens, d, mc.depth, mc.mlp_ratio, p * p * 3)
    )
    remat = images - vit_patch_flops(
      n, glimpse_tokens if stage == 'student' else frame_tokens, d, p * p * 3
    )
  if stage == 'teacher':
    return flops + remat, flops + remat
  loop = tf_glimpses + temporal_flops(b, t, d, e, mc.temporal_depth, mc.mlp_ratio, 2)
  executed = flops + loop + remat
  return executed, executed - loop + loop // t


def crop_flops(b: int, t: int, mc, glimpse: int) -> int:
  """The crop as implemented: A_y (g x H) @ frame (H x W) @ A_x^T (W x g) per channel."""
  h = mc.image_size
  per = 3 * (2 * glimpse * h * h + 2 * glimpse * h * glimpse)
  return b * t * per
