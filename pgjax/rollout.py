"""Collect a time-major batch of experience with `lax.scan` over vmapped environments."""

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from pgjax.envs import Env
from pgjax.policies import initial_carry

PolicyFn = Callable[[jax.Array], Any]  # obs [B, *obs_shape] -> distribution with sample / log_prob


class RunnerState(NamedTuple):
    """Environment-side carry between rollouts, leaves [B, ...]."""

    env_state: Any  # gymnax state
    obs: jax.Array  # [B, *obs_shape] float32, the observation the next action sees
    episode_t: jax.Array  # [B] int32, index of the next step within its episode
    episode_return: jax.Array  # [B] float32, undiscounted return of the running episode


class RecurrentRunnerState(NamedTuple):
    """`RunnerState` plus a recurrent policy's carry [B, ...]. A type of its own, so that a
    feedforward run's state (and its checkpoints) hold no carry."""

    env_state: Any
    obs: jax.Array
    episode_t: jax.Array
    episode_return: jax.Array
    policy_carry: Any  # the carry the next action sees (before any reset at an episode start)


class Transition(NamedTuple):
    """A rollout, time-major: every leaf is [T, B, ...]."""

    obs: jax.Array  # [T, B, *obs_shape] float32, s_t
    action: jax.Array  # [T, B, *action_shape], a_t (unclipped sample for continuous actions)
    log_prob: jax.Array  # [T, B] float32, log π(a_t|s_t) at collection time
    reward: jax.Array  # [T, B] float32, r_t
    terminated: jax.Array  # [T, B] bool, natural episode end after a_t
    truncated: jax.Array  # [T, B] bool, time-limit cut after a_t (never with terminated)
    episode_t: jax.Array  # [T, B] int32, t's index within its episode (for γ^t weights)
    final_obs: jax.Array  # [T, B, *obs_shape] float32, s_{t+1} before any auto-reset
    episode_return: jax.Array  # [T, B] float32, the finished episode's return where done
    policy_carry: Any = None  # [T, B, ...] a recurrent policy's carry before step t, else None

    @property
    def done(self) -> jax.Array:
        return jnp.logical_or(self.terminated, self.truncated)

    def finished_episodes(self) -> tuple[jax.Array, jax.Array]:
        """(count, mean return) of the episodes that ended in this rollout; mean is 0 if none."""
        count = jnp.sum(self.done)
        total = jnp.sum(jnp.where(self.done, self.episode_return, 0.0))
        return count, total / jnp.maximum(count, 1)


def require_env(env: Any, where: str) -> None:
    """TypeError unless `env` is a `pgjax.Env` (a gymnax environment's reset and step take other
    arguments, which would run unbatched)."""
    if not isinstance(env, Env):
        raise TypeError(f"{where} takes a pgjax.Env, got {type(env).__name__}; wrap a gymnax "
                        f"environment as pgjax.Env(name, env=..., params=...)")


def init_runner(
    key: jax.Array, env: Env, num_envs: int, *, group_size: int = 1, policy: Any = None
) -> RunnerState | RecurrentRunnerState:
    """Reset `num_envs` envs. With group_size K > 1, each run of K consecutive envs (a group)
    is reset from one key, so its K envs start from the same state. With a recurrent `policy`
    (one with `initialize_carry`) the runner also holds its initial carry."""
    require_env(env, "init_runner")
    if group_size == 1:
        obs, env_state = env.reset(key, num_envs)
    else:
        keys = jnp.repeat(jax.random.split(key, num_envs // group_size), group_size, axis=0)
        obs, env_state = env.reset_each(keys)
    zeros = jnp.zeros((num_envs,), jnp.float32)
    runner = RunnerState(env_state, obs, jnp.zeros((num_envs,), jnp.int32), zeros)
    carry = None if policy is None else initial_carry(policy, (num_envs,))
    return runner if carry is None else RecurrentRunnerState(*runner, carry)


def noisy_or_none(dist: Any) -> Any:
    """`dist` if its noise can be drawn ahead (it has `noise` and `sample_from`), else None."""
    return dist if hasattr(dist, "noise") and hasattr(dist, "sample_from") else None


def rollout(
    key: jax.Array,
    env: Env,
    policy: PolicyFn,
    runner: RunnerState,
    num_steps: int,
    *,
    unroll: int = 1,
    group_size: int | None = None,
) -> tuple[RunnerState, Transition]:
    """Act for `num_steps` steps in every environment of `runner`.

    Args:
      key: PRNG key.
      env: batched environment.
      policy: obs [B, *obs_shape] -> action distribution with `sample(key)` and `log_prob(action)`
        (e.g. `functools.partial(net.apply, params)`). If it also has `noise(key)` and
        `sample_from(noise)` (Categorical does; it must then be a pytree, e.g. a NamedTuple),
        all the action noise is drawn before the loop. With a `RecurrentRunnerState` runner:
        (carry, obs, first) -> (carry, distribution), first = the step starts an episode.
      runner: carry from the previous rollout (or `init_runner`).
      num_steps: T, static.
      unroll: steps per loop iteration of the scan (static; fewer loop trips on GPU).
      group_size: K: the K consecutive envs of a group restart together, from one shared
        start state, as soon as all K episodes of the group's round have ended (static). A
        member whose episode ended waits: its env is not stepped, its steps have episode_t
        −1, reward 0 and no episode end. None: every env auto-resets on its own.

    Returns:
      The new carry and a time-major Transition [T, B, ...].

    The random draws are those of splitting `key` into T step keys, each into an action key
    and an env key, the env key into B; they are made before the loop (fewer per-step kernels),
    giving the same bits as drawing them step by step. A group restart draws its start
    states from `jax.random.fold_in(key, 1)`, split into T step keys, each into B / K.
    """
    require_env(env, "rollout")
    num_envs = runner.obs.shape[0]
    recurrent = isinstance(runner, RecurrentRunnerState)

    def act(runner):  # (policy carry or None, distribution)
        if recurrent:
            return policy(runner.policy_carry, runner.obs, runner.episode_t == 0)
        return None, policy(runner.obs)

    step_keys = jax.vmap(jax.random.split)(jax.random.split(key, num_steps))  # [T, 2]
    act_keys, env_keys = step_keys[:, 0], step_keys[:, 1]
    env_keys = jax.vmap(lambda k: jax.random.split(k, num_envs))(env_keys)  # [T, B]
    dist_shape = jax.eval_shape(lambda runner: noisy_or_none(act(runner)[1]), runner)
    hoisted = dist_shape is not None
    act_draws = jax.vmap(dist_shape.noise)(act_keys) if hoisted else act_keys  # [T, ...]
    draws = (act_draws, env_keys)
    if group_size is not None:
        restart_keys = jax.random.split(jax.random.fold_in(key, 1), num_steps)
        draws = (*draws, restart_keys)

    def step(runner: RunnerState, draws: tuple[jax.Array, ...]):
        act_draw, env_keys, *restart_key = draws
        policy_carry, dist = act(runner)
        action = dist.sample_from(act_draw) if hoisted else dist.sample(act_draw)
        out = env.step(env_keys, runner.env_state, action)
        if group_size is not None:
            out = wait_for_group(out, runner)
        done = jnp.logical_or(out.terminated, out.truncated)
        ep_return = runner.episode_return + out.reward
        transition = Transition(
            obs=runner.obs,
            action=action,
            log_prob=dist.log_prob(action),
            reward=out.reward,
            terminated=out.terminated,
            truncated=out.truncated,
            episode_t=runner.episode_t,
            final_obs=out.final_obs,
            episode_return=ep_return,
            policy_carry=runner.policy_carry if recurrent else None,
        )
        runner = runner._replace(
            env_state=out.state,
            obs=out.obs,
            episode_t=jnp.where(done, 0, runner.episode_t + 1),
            episode_return=jnp.where(done, 0.0, ep_return),
            **({"policy_carry": policy_carry} if recurrent else {}),
        )
        if group_size is not None:
            waiting = done | (transition.episode_t < 0)  # ended now, or waited already
            runner = restart_groups(env, runner, waiting, group_size, restart_key[0])
        return runner, transition

    return jax.lax.scan(step, runner, draws, unroll=unroll)


def where_envs(pick: jax.Array, a: Any, b: Any) -> Any:
    """Per env (leading axis [B]), the leaves of `a` where `pick` [B], else those of `b`."""
    return jax.tree.map(
        lambda x, y: jnp.where(pick.reshape(-1, *([1] * (x.ndim - 1))), x, y), a, b)


def wait_for_group(out: Any, runner: RunnerState) -> Any:
    """An env step in which the envs waiting for their group (episode_t < 0) stand still:
    their state and observation are kept, with reward 0 and no episode end."""
    waiting = runner.episode_t < 0
    return out._replace(
        state=where_envs(waiting, runner.env_state, out.state),
        obs=where_envs(waiting, runner.obs, out.obs),
        reward=jnp.where(waiting, 0.0, out.reward),
        terminated=out.terminated & ~waiting,
        truncated=out.truncated & ~waiting,
    )


def restart_groups(
    env: Env, runner: RunnerState, waiting: jax.Array, group_size: int, key: jax.Array
) -> RunnerState:
    """Restart every group whose K members all wait from one start state per group (drawn
    from `key`); the members of the other groups that wait get episode_t −1."""
    num_envs = waiting.shape[0]
    ready = jnp.repeat(waiting.reshape(-1, group_size).all(1), group_size)
    starts = env.reset_each(jax.random.split(key, num_envs // group_size))  # one per group
    obs, state = jax.tree.map(lambda x: jnp.repeat(x, group_size, axis=0), starts)
    return runner._replace(
        env_state=where_envs(ready, state, runner.env_state),
        obs=where_envs(ready, obs, runner.obs),
        episode_t=jnp.where(ready, 0, jnp.where(waiting, -1, runner.episode_t)),
    )
