"""GliTr's losses in their official forms (docs/design.md section 2), and the two objectives.

  ce     mean over batch and time of the cross-entropy with (soft) targets; every t is supervised.
  kl     kl(s, t) = sum_c softmax(s) * (log_softmax(s) - log_softmax(t)): KL(s || t), the official
         direction, averaged over the other axes; `t` is a stop-gradient target.
  mse    mean over all elements.

Student: L = ce(y^, y) + mse(f^, sg(f~)) + kl(y^, sg(y~)).
Teacher: L = ce(y~, y) + kl(y~_T, sg(y_offline)) + mse(T'f(g), sg(f~)) + kl(T'c(T'f(g)), sg(y~)),
         where the last two train only Tl and init_loc (glitr_jax.train.steps builds T'f, T'c).
Each term has a weight in `config.loss`; ablations set weights to zero.
"""

import jax
import jax.numpy as jnp


def smooth_labels(labels_b: jax.Array, num_classes: int, smoothing: float) -> jax.Array:
  """One-hot targets with label smoothing (timm): off = s / C, on = 1 - s + s / C."""
  off = smoothing / num_classes
  return jax.nn.one_hot(labels_b, num_classes) * (1.0 - smoothing) + off


def cross_entropy(logits_btc: jax.Array, targets_bc: jax.Array) -> jax.Array:
  """Mean over batch and time of -sum_c target_c * log_softmax(logits)_c.

  Args:
    logits_btc: (B, T, C) logits at every step.
    targets_bc: (B, C) target distribution (one per video, shared by all steps).
  """
  logp = jax.nn.log_softmax(logits_btc.astype(jnp.float32), axis=-1)
  return -jnp.mean(jnp.sum(targets_bc[:, None, :] * logp, axis=-1))


def kl(student_logits: jax.Array, target_logits: jax.Array) -> jax.Array:
  """The official kl(s, t) = sum_c p_s (log p_s - log p_t), averaged over the leading axes.

  This is KL(student || target) (not the usual distillation direction); the target gets a stop
  gradient.
  """
  logp_s = jax.nn.log_softmax(student_logits.astype(jnp.float32), axis=-1)
  logp_t = jax.nn.log_softmax(jax.lax.stop_gradient(target_logits).astype(jnp.float32), axis=-1)
  return jnp.mean(jnp.sum(jnp.exp(logp_s) * (logp_s - logp_t), axis=-1))


def mse(pred: jax.Array, target: jax.Array) -> jax.Array:
  """Mean over all elements of (pred - stop_gradient(target))^2."""
  return jnp.mean(jnp.square(pred.astype(jnp.float32) - jax.lax.stop_gradient(target)))


def accuracy_per_t(logits_btc: jax.Array, labels_b: jax.Array) -> jax.Array:
  """(T,) fraction of the batch whose prediction after t glimpses is right."""
  return jnp.mean(jnp.argmax(logits_btc, axis=-1) == labels_b[:, None], axis=0)


def student_objective(
  student: dict[str, jax.Array],
  teacher: dict[str, jax.Array],
  targets_bc: jax.Array,
  weights,
) -> tuple[jax.Array, dict[str, jax.Array]]:
  """GliTr's loss (paper eq. 4) with per-term weights.

  Args:
    student: student_forward's outputs (logits (B,T,C), features (B,T,D)).
    teacher: the frozen teacher's logits (B,T,C) and features (B,T,D) on full frames.
    targets_bc: (B, C) label-smoothed targets.
    weights: has `ce`, `spatial`, `temporal` (config.loss).

  Returns:
    The total loss, and every term by name (unweighted).
  """
  terms = {
    'ce': cross_entropy(student['logits'], targets_bc),
    'spatial': mse(student['features'], teacher['features']),
    'temporal': kl(student['logits'], teacher['logits']),
  }
  total = sum(getattr(weights, name) * value for name, value in terms.items())
  return total, terms


def teacher_objective(
  teacher: dict[str, jax.Array],
  glimpsed: dict[str, jax.Array] | None,
  targets_bc: jax.Array,
  offline_logits_bc: jax.Array | None,
  weights,
) -> tuple[jax.Array, dict[str, jax.Array]]:
  """The teacher's loss (paper eq. 9) with per-term weights.

  Args:
    teacher: teacher_forward's outputs on full frames (logits, features).
    glimpsed: the frozen copies' outputs on glimpses at the teacher's locations (logits,
      features), or None when both consistency weights are zero.
    targets_bc: (B, C) soft targets (mixup/cutmix with smoothing, or smoothed labels).
    offline_logits_bc: (B, C) the offline model's logits, or None without L_dist.
    weights: has `ce`, `dist`, `spatial`, `temporal` (config.loss).
  """
  terms = {'ce': cross_entropy(teacher['logits'], targets_bc)}
  if offline_logits_bc is not None:
    terms['dist'] = kl(teacher['logits'][:, -1], offline_logits_bc)
  if glimpsed is not None:
    terms['spatial'] = mse(glimpsed['features'], teacher['features'])
    terms['temporal'] = kl(glimpsed['logits'], teacher['logits'])
  total = sum(getattr(weights, name) * value for name, value in terms.items())
  return total, terms
