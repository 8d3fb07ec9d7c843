"""Evaluation of a policy over whole episodes: pure and jittable."""

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from pgjax.components import Components
from pgjax.envs import Env
from pgjax.policies import initial_carry, step_policy

# act(key, carry, obs, first, env_state) -> (carry, action, extra): one step of the acting policy.
Act = Callable[..., tuple[Any, jax.Array, Any]]


def play(env: Env, act: Act, key: jax.Array, num_episodes: int, carry: Any = None):
    """Play the first episode of `num_episodes` parallel envs with `act`.

    Args:
      env: the batched environment.
      act: one step of the policy, act(key, carry, obs, first, env_state) -> (carry, action,
        extra); `first` marks each env's first step, `extra` is any pytree (or None) stacked
        over steps for the caller.
      key: PRNG key.
      num_episodes: parallel envs, one episode each (static).
      carry: the policy's recurrent state (None for feedforward policies).

    Returns:
      (returns [num_episodes] float32, alive [T, num_episodes] bool: step t belongs to the first
      episode, extras stacked to [T, ...]), with T = env.max_episode_steps; episodes are cut at
      the env's own time limit.
    """
    key, k_reset = jax.random.split(key)
    obs, state = env.reset(k_reset, num_episodes)

    def step(loop, key):
        obs, state, carry, first, ret, alive = loop
        k_act, k_env = jax.random.split(key)
        carry, action, extra = act(k_act, carry, obs, first, state)
        out = env.step(k_env, state, action)
        ret = ret + jnp.where(alive, out.reward, 0.0)
        loop = (out.obs, out.state, carry, jnp.zeros_like(first), ret,
                alive & ~(out.terminated | out.truncated))
        return loop, (alive, extra)

    ones = jnp.ones(num_episodes, bool)
    init = (obs, state, carry, ones, jnp.zeros(num_episodes), ones)
    (*_, ret, _), (alive, extras) = jax.lax.scan(
        step, init, jax.random.split(key, env.max_episode_steps)
    )
    return ret, alive, extras


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
    policy = parts.policy

    def act(key, carry, obs, first, _):
        carry, dist = step_policy(policy, policy_params, carry, obs, first)
        return carry, dist.mode() if greedy else dist.sample(key), None

    ret, _, _ = play(parts.env, act, key, num_episodes, initial_carry(policy, (num_episodes,)))
    return ret
