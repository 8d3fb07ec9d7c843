"""Score-function (REINFORCE) loss, value loss and advantage helpers. Losses are minimized."""

from typing import NamedTuple

import chex
import jax
import jax.numpy as jnp


class Targets(NamedTuple):
    """Per-step constants of the loss, made by an estimator; no gradient flows into them.

    Leaves [T, *batch].
    """

    returns: jax.Array  # regression target of the value net (unused without one)
    advantages: jax.Array  # multiplies ∇ log π(a_t|s_t): G_t − b_t, normalized or not
    mask: jax.Array | None  # 1 where step t counts, 0 elsewhere; None: every step counts
    weights: jax.Array | None  # per-step weights w_t (e.g. γ^t); None: all 1


def masked_mean(x: jax.Array, mask: jax.Array | None = None) -> jax.Array:
    """Mean of `x` over entries where `mask` (of x's shape) is 1 (all entries if mask is None);
    0 if none."""
    if mask is None:
        return jnp.mean(x)
    chex.assert_equal_shape([x, mask])
    return jnp.sum(x * mask) / jnp.maximum(jnp.sum(mask), 1.0)


def reinforce_loss(
    log_probs: jax.Array,
    returns: jax.Array,
    *,
    baseline: jax.Array | float | None = None,
    mask: jax.Array | None = None,
    weights: jax.Array | None = None,
    count: jax.Array | float | None = None,
) -> jax.Array:
    """Negated score-function surrogate: −mean(w_t · log π(a_t|s_t) · sg(G_t − b_t)).

    Its gradient is the REINFORCE estimate ∇θ J ≈ (1/N) Σ_t w_t (G_t − b_t) ∇θ log π(a_t|s_t)
    with the sign flipped, so minimizing the loss ascends J (Williams, 1992). Returns and
    baseline are held constant (stop_gradient). Any baseline that does not depend on a_t
    leaves the expected gradient unchanged, since E_a[∇ log π(a|s)] = 0.

    Args:
      log_probs: [T, *batch] float, log π_θ(a_t|s_t), differentiable in θ.
      returns: [T, *batch] float, G_t (or any advantage estimate).
      baseline: scalar or [T, *batch] float b_t, subtracted from returns (keyword-only).
      mask: [T, *batch] float in {0, 1}; the mean is over masked-in steps (keyword-only).
      weights: [T, *batch] float w_t, e.g. γ^t for the exact discounted-objective gradient
        (keyword-only). Omitting γ^t, as most implementations do, biases the gradient for γ < 1.
      count: N of the whole batch when these inputs are one time slice of it (keyword-only):
        the result is then −Σ_t c_t log π(a_t|s_t) with constants c_t = w_t m_t A_t / N, this
        slice's share of the whole batch's loss.

    Returns:
      Scalar loss.
    """
    chex.assert_equal_shape([log_probs, returns, *(x for x in (mask, weights) if x is not None)])
    if baseline is not None and jnp.ndim(baseline) != 0:
        chex.assert_equal_shape([log_probs, baseline])
    advantages = returns if baseline is None else returns - baseline
    advantages = jax.lax.stop_gradient(advantages)
    if count is not None:
        coef = advantages if weights is None else advantages * weights
        coef = coef if mask is None else coef * mask
        return -jnp.sum(jax.lax.stop_gradient(coef / count) * log_probs)
    score = log_probs * advantages
    if weights is not None:
        score = score * jax.lax.stop_gradient(weights)
    return -masked_mean(score, mask)


def clipped_surrogate_loss(
    log_probs: jax.Array,
    behaviour_log_probs: jax.Array,
    advantages: jax.Array,
    *,
    clip_eps: jax.Array | float,
    mask: jax.Array | None = None,
    weights: jax.Array | None = None,
    count: jax.Array | float | None = None,
) -> tuple[jax.Array, dict]:
    """Negated clipped ratio surrogate: −mean(w_t · min(r_t A_t, clip(r_t, 1 − ε, 1 + ε) A_t)).

    r_t = π_θ(a_t|s_t) / π_old(a_t|s_t) reweights a step collected by the behaviour policy
    π_old (importance sampling), so a batch can serve several optimizer steps; the clip takes
    away the incentive to move r_t beyond [1 − ε, 1 + ε] (Schulman et al., 2017, eq. 7).
    ε = 0 turns the clip off: −mean(w_t r_t A_t). At θ = θ_old (r_t = 1) the gradient is the
    score-function loss's, −mean(w_t A_t ∇ log π(a_t|s_t)), for every ε.

    Args:
      log_probs: [T, *batch] log π_θ(a_t|s_t), differentiable.
      behaviour_log_probs: [T, *batch] log π_old(a_t|s_t), recorded by the rollout (constant).
      advantages: [T, *batch] A_t (constant).
      clip_eps: ε in [0, 1) (keyword-only; may be traced).
      mask, weights, count: as in `reinforce_loss` (keyword-only).

    Returns:
      (loss, {"approx_kl": mean over masked-in steps of (r − 1) − log r, an estimate of
      KL(π_old ‖ π_θ) that is never negative (Schulman, 2020), "clip_fraction": the fraction of
      masked-in steps whose ratio is outside [1 − ε, 1 + ε] (0 when ε = 0)}).
    """
    chex.assert_equal_shape([log_probs, behaviour_log_probs, advantages,
                             *(x for x in (mask, weights) if x is not None)])
    log_ratio = log_probs - jax.lax.stop_gradient(behaviour_log_probs)
    ratio = jnp.exp(log_ratio)
    advantages = jax.lax.stop_gradient(advantages)
    clipped = jnp.clip(ratio, 1.0 - clip_eps, 1.0 + clip_eps)
    surrogate = jnp.where(clip_eps > 0, jnp.minimum(ratio * advantages, clipped * advantages),
                          ratio * advantages)
    if weights is not None:
        surrogate = surrogate * jax.lax.stop_gradient(weights)
    outside = (clip_eps > 0) & (jnp.abs(ratio - 1.0) > clip_eps)
    ratio = jax.lax.stop_gradient(ratio)
    stats = {"approx_kl": (ratio - 1.0) - jax.lax.stop_gradient(log_ratio),
             "clip_fraction": outside.astype(jnp.float32)}
    if count is None:
        return -masked_mean(surrogate, mask), {k: masked_mean(v, mask) for k, v in stats.items()}
    mask = jnp.ones_like(surrogate) if mask is None else mask
    share = lambda x: jnp.sum(x * mask) / count
    return -share(surrogate), {k: share(v) for k, v in stats.items()}


def value_loss(
    values: jax.Array,
    targets: jax.Array,
    mask: jax.Array | None = None,
    *,
    count: jax.Array | float | None = None,
) -> jax.Array:
    """Squared error ½ · mean((V(s_t) − sg(G_t))²), [T, *batch] inputs, scalar output.

    With `count` (keyword-only), the inputs are one time slice of a batch whose mean is over
    `count` steps: Σ_t (½ m_t / count) (V(s_t) − G_t)², this slice's share.
    """
    chex.assert_equal_shape([values, targets, *(() if mask is None else (mask,))])
    error = (values - jax.lax.stop_gradient(targets)) ** 2
    if count is not None:
        coef = 0.5 * (jnp.ones_like(error) if mask is None else mask) / count
        return jnp.sum(coef * error)
    return 0.5 * masked_mean(error, mask)


def policy_gradient_loss(
    log_prob: jax.Array,
    entropy: jax.Array,
    values: jax.Array | None,
    targets: Targets,
    *,
    value_coef: jax.Array | float,
    ent_coef: jax.Array | float,
    counts: tuple[jax.Array, int] | None = None,
    behaviour_log_prob: jax.Array | None = None,
    clip_eps: jax.Array | float = 0.0,
    kl: jax.Array | None = None,
    kl_coef: jax.Array | float = 0.0,
) -> tuple[jax.Array, dict]:
    """The training loss: policy_loss + value_coef · value_loss − ent_coef · entropy
    (+ kl_coef · KL(π_old ‖ π_θ) when `kl` is given).

    policy_loss = `reinforce_loss` on the estimator's advantages, mask and weights, or with
    `behaviour_log_prob` the `clipped_surrogate_loss` of them; value_loss = `value_loss` of
    V(s_t) against the targets' returns over the same mask (0 without a value net); entropy
    and KL = means over every step (masked or not).

    Args:
      log_prob: [T, *batch] log π(a_t|s_t), differentiable.
      entropy: [T, *batch] entropy of π(·|s_t), differentiable.
      values: [T, *batch] V(s_t), differentiable, or None without a value net.
      targets: the estimator's per-step constants.
      value_coef, ent_coef: the weights above (keyword-only).
      counts: (masked-in steps, all steps) of the whole batch when `log_prob` is one time slice
        of it: the slice's terms are divided by the batch's counts, so the losses of the slices
        add up to the whole batch's (keyword-only).
      behaviour_log_prob: [T, *batch] log π_old(a_t|s_t) of the policy that collected the
        batch: the policy loss is then the clipped ratio surrogate with `clip_eps` (keyword-only).
      kl: [T, *batch] KL(π_old(·|s_t) ‖ π_θ(·|s_t)), differentiable, weighted by `kl_coef`
        (keyword-only).

    Returns:
      (loss, {"policy_loss", "value_loss", "entropy", "trained_fraction" (the fraction of
      steps the mask keeps), "approx_kl", "clip_fraction" (`clipped_surrogate_loss`'s; 0
      without `behaviour_log_prob`)}).
    """
    mask_count, size = (None, None) if counts is None else counts
    zero = jnp.zeros(())
    ratio_stats = {"approx_kl": zero, "clip_fraction": zero}
    if behaviour_log_prob is None:
        pg_loss = reinforce_loss(log_prob, targets.advantages, mask=targets.mask,
                                 weights=targets.weights, count=mask_count)
    else:
        pg_loss, ratio_stats = clipped_surrogate_loss(
            log_prob, behaviour_log_prob, targets.advantages, clip_eps=clip_eps,
            mask=targets.mask, weights=targets.weights, count=mask_count)
    step_mean = jnp.mean if size is None else lambda x: jnp.sum(x) * (1.0 / size)
    trained = step_mean(jnp.ones_like(entropy) if targets.mask is None else targets.mask)
    entropy = step_mean(entropy)
    v_loss = zero
    if values is not None:
        v_loss = value_loss(values, targets.returns, targets.mask, count=mask_count)
    loss = pg_loss + value_coef * v_loss - ent_coef * entropy
    if kl is not None:
        loss = loss + kl_coef * step_mean(kl)
    return loss, {"policy_loss": pg_loss, "value_loss": v_loss, "entropy": entropy,
                  "trained_fraction": trained, **ratio_stats}


def normalize(x: jax.Array, mask: jax.Array | None = None, rtol: float = 1e-5) -> jax.Array:
    """(x − mean) / std over masked-in entries; rescales the step size per batch.

    Where std ≤ rtol · (1 + |mean|) the spread is float rounding, not signal, and the result is 0.
    """
    mean = masked_mean(x, mask)
    std = jnp.sqrt(masked_mean((x - mean) ** 2, mask))
    flat = std <= rtol * (1.0 + jnp.abs(mean))
    return jnp.where(flat, 0.0, (x - mean) / jnp.where(flat, 1.0, std))
