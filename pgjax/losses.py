"""Score-function (REINFORCE) loss, value loss and advantage helpers. Losses are minimized."""

import chex
import jax
import jax.numpy as jnp


def masked_mean(x: jax.Array, mask: jax.Array | None = None) -> jax.Array:
    """Mean of `x` over entries where `mask` is 1 (all entries if mask is None); 0 if none."""
    if mask is None:
        return jnp.mean(x)
    return jnp.sum(x * mask) / jnp.maximum(jnp.sum(mask), 1.0)


def reinforce_loss(
    log_probs: jax.Array,
    returns: jax.Array,
    *,
    baseline: jax.Array | float | None = None,
    mask: jax.Array | None = None,
    weights: jax.Array | None = None,
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

    Returns:
      Scalar loss.
    """
    chex.assert_equal_shape([log_probs, returns])
    advantages = returns if baseline is None else returns - baseline
    advantages = jax.lax.stop_gradient(advantages)
    score = log_probs * advantages
    if weights is not None:
        score = score * jax.lax.stop_gradient(weights)
    return -masked_mean(score, mask)


def value_loss(values: jax.Array, targets: jax.Array, mask: jax.Array | None = None) -> jax.Array:
    """Squared error ½ · mean((V(s_t) − sg(G_t))²), [T, *batch] inputs, scalar output."""
    chex.assert_equal_shape([values, targets])
    return 0.5 * masked_mean((values - jax.lax.stop_gradient(targets)) ** 2, mask)


def normalize(x: jax.Array, mask: jax.Array | None = None, rtol: float = 1e-5) -> jax.Array:
    """(x − mean) / std over masked-in entries; rescales the step size per batch.

    Where std ≤ rtol · (1 + |mean|) the spread is float rounding, not signal, and the result is 0.
    """
    mean = masked_mean(x, mask)
    std = jnp.sqrt(masked_mean((x - mean) ** 2, mask))
    flat = std <= rtol * (1.0 + jnp.abs(mean))
    return jnp.where(flat, 0.0, (x - mean) / jnp.where(flat, 1.0, std))
