"""Discounted returns-to-go and the masks that go with a fixed rollout window."""

import chex
import jax
import jax.numpy as jnp


def check_unit_interval(name: str, x: float | jax.Array) -> None:
    """ValueError unless a concrete scalar `x` is in [0, 1]; a traced one (a vmapped config
    leaf) is checked where it was made."""
    if isinstance(x, jax.core.Tracer) or jnp.ndim(x) != 0:
        return
    if not 0.0 <= float(x) <= 1.0:
        raise ValueError(f"{name} must be in [0, 1], got {x}")


def discounted_returns(
    rewards: jax.Array,
    dones: jax.Array,
    gamma: float | jax.Array,
    bootstrap: jax.Array | None = None,
    *,
    truncated: jax.Array | None = None,
    truncation_values: jax.Array | None = None,
) -> jax.Array:
    """Return-to-go of each step, restarting at episode ends.

    G_t = r_t + γ · G_{t+1}             if not done_t
    G_t = r_t + γ · truncated_t · v_t   if done_t,        G_T = bootstrap

    where v_t are `truncation_values` (the value of the observation the episode was cut at, e.g.
    V(info["final_observation"]) at a time limit). Without them, an episode end contributes no
    future value, which is exact at termination and a (documented) bias at truncation.

    Args:
      rewards: [T, *batch] float, r_t, the reward that followed action a_t.
      dones: [T, *batch] bool, the episode ended at step t (terminated or truncated).
      gamma: scalar discount in [0, 1].
      bootstrap: [*batch] float, the value after the last step of the window (default 0).
      truncated: [T, *batch] bool, the episode was cut by a time limit at step t (keyword-only).
      truncation_values: [T, *batch] float, v_t used where `truncated` (keyword-only).

    Returns:
      [T, *batch] float32 returns-to-go G_t.

    Reference: Sutton & Barto (2018), §3.3 and §13.3.
    """
    chex.assert_equal_shape([rewards, dones])
    check_unit_interval("gamma", gamma)
    rewards = jnp.asarray(rewards, jnp.float32)
    dones = jnp.asarray(dones, bool)
    if bootstrap is None:
        bootstrap = jnp.zeros(rewards.shape[1:], jnp.float32)
    chex.assert_shape(bootstrap, rewards.shape[1:])
    if (truncated is None) != (truncation_values is None):
        raise ValueError("truncated and truncation_values must be given together")
    if truncated is None:
        cut_value = jnp.zeros_like(rewards)
    else:
        chex.assert_equal_shape([rewards, truncated, truncation_values])
        cut_value = jnp.where(truncated, truncation_values, 0.0)

    def step(g_next, x):
        r_t, done_t, v_t = x
        g_t = r_t + gamma * jnp.where(done_t, v_t, g_next)
        return g_t, g_t

    _, g = jax.lax.scan(
        step, jnp.asarray(bootstrap, jnp.float32), (rewards, dones, cut_value), reverse=True
    )
    return g


def generalized_advantages(
    rewards: jax.Array,
    values: jax.Array,
    next_values: jax.Array,
    dones: jax.Array,
    gamma: float | jax.Array,
    lam: float | jax.Array,
) -> jax.Array:
    """GAE(λ): exponentially weighted TD errors, restarting at episode ends.

    δ_t = r_t + γ v'_t − v_t,   A_t = δ_t + γ λ (1 − done_t) A_{t+1},   A_T = 0,

    where v'_t is the value of what followed step t: V(s_{t+1}) inside an episode, V of the
    observation it was cut at for a time-limit truncation, 0 at termination. λ = 1 gives the
    return-to-go minus V(s_t) (with bootstraps), λ = 0 the one-step TD error
    (Schulman et al., 2016).

    Args:
      rewards: [T, *batch] float r_t.
      values: [T, *batch] float V(s_t).
      next_values: [T, *batch] float v'_t as above.
      dones: [T, *batch] bool, the episode ended at step t (cuts the λ-sum).
      gamma: discount in [0, 1].
      lam: λ in [0, 1].

    Returns:
      [T, *batch] float32 advantages A_t.
    """
    chex.assert_equal_shape([rewards, values, next_values, dones])
    check_unit_interval("gamma", gamma)
    check_unit_interval("lam", lam)
    delta = jnp.asarray(rewards, jnp.float32) + gamma * next_values - values
    decay = gamma * lam * (1.0 - jnp.asarray(dones, jnp.float32))

    def step(a_next, x):
        delta_t, decay_t = x
        a_t = delta_t + decay_t * a_next
        return a_t, a_t

    _, a = jax.lax.scan(step, jnp.zeros(rewards.shape[1:], jnp.float32), (delta, decay),
                        reverse=True)
    return a


def complete_episode_mask(dones: jax.Array) -> jax.Array:
    """1 where the step's episode ends inside the window, 0 on the unfinished tail.

    Returns-to-go of masked-in steps are exact Monte Carlo sums, but which episodes count
    depends on their own length (a long one is more likely cut), so short episodes are
    over-represented: the gradient is biased, on the tabular MDP of experiments/derivation by
    6.5% at T = 2H and 2.5% at T = 5H with a fresh runner each window (10.0% / 4.0% with the
    runner carried across windows, as in training: experiments/derivation/carried_window.py).
    `episode_start_mask` is the unbiased choice.

    Args:
      dones: [T, *batch] bool, the episode ended at step t.

    Returns:
      [T, *batch] float32 mask m_t = max(done_t, m_{t+1}), m_T = 0, i.e. t ≤ last end.
    """
    t = jnp.arange(dones.shape[0]).reshape((-1,) + (1,) * (dones.ndim - 1))
    last_end = jnp.max(jnp.where(dones, t, -1), axis=0)
    return (t <= last_end).astype(jnp.float32)


def episode_start_mask(episode_t: jax.Array, last_start: int) -> jax.Array:
    """1 on the steps of episodes that start at window step s ∈ [0, last_start], else 0.

    Whether an episode counts depends only on when it starts (fixed by the episodes before it),
    not on its own actions, so the estimate is unbiased (Wald's identity). With
    last_start = T − H, for episodes of at most H steps, every counted episode ends inside
    the window; episodes running at the window's start are left out.

    Args:
      episode_t: [T, *batch] int, each step's index within its episode.
      last_start: latest window step at which a counted episode may start (static).

    Returns:
      [T, *batch] float32 mask.
    """
    t = jnp.arange(episode_t.shape[0]).reshape((-1,) + (1,) * (episode_t.ndim - 1))
    start = t - episode_t
    return ((start >= 0) & (start <= last_start)).astype(jnp.float32)
