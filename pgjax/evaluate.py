"""Evaluation of a trained policy over whole episodes: pure and jittable."""

import jax
import jax.numpy as jnp

from pgjax.components import Components
from pgjax.policies import initial_carry, step_policy


def evaluate(
    parts: Components, policy_params, key: jax.Array, num_episodes: int, *, greedy: bool
) -> jax.Array:
    """Undiscounted return of the first episode of `num_episodes` parallel envs.

    Args:
      parts: the run's components (env and policy are used).
      policy_params: parameters of the policy network.
      key: PRNG key.
      num_episodes: parallel envs, one episode each (static).
      greedy: act with the distribution's mode instead of sampling (static).

    Returns:
      [num_episodes] float32 returns. Episodes are cut at the env's own time limit.
    """
    env, policy = parts.env, parts.policy
    key, k_reset = jax.random.split(key)
    obs, state = env.reset(k_reset, num_episodes)
    carry = initial_carry(policy, (num_episodes,))

    def step(loop, key):
        obs, state, carry, first, ret, running = loop
        k_act, k_env = jax.random.split(key)
        carry, dist = step_policy(policy, policy_params, carry, obs, first)
        action = dist.mode() if greedy else dist.sample(k_act)
        out = env.step(k_env, state, action)
        ret = ret + jnp.where(running, out.reward, 0.0)
        running = running & ~(out.terminated | out.truncated)
        return (out.obs, out.state, carry, jnp.zeros_like(first), ret, running), None

    ones = jnp.ones(num_episodes, bool)
    init = (obs, state, carry, ones, jnp.zeros(num_episodes), ones)
    (*_, ret, _), _ = jax.lax.scan(step, init, jax.random.split(key, env.max_episode_steps))
    return ret
