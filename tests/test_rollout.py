"""rollout over vmapped gymnax envs: shapes, auto-reset, episode bookkeeping, clipping."""

import subprocess
import sys

import chex
import gymnax
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from gymnax.environments.classic_control.cartpole import EnvState as CartPoleState
from gymnax.environments.classic_control.pendulum import EnvState as PendulumState
from gymnax.environments.classic_control.pendulum import Pendulum
from gymnax.environments.minatar.breakout import MinBreakout

from pgjax import Categorical, DiagGaussian, Env, RunnerState, Transition, init_runner, rollout

T, B = 40, 4
MAX_STEPS = 10

run = jax.jit(rollout, static_argnames=("env", "policy", "num_steps"))


def uniform_policy(obs):
    return Categorical(jnp.zeros((obs.shape[0], 2)))


def wide_gaussian_policy(obs):
    # std 3 on a [-2, 2] action space: most samples need clipping.
    return DiagGaussian(jnp.zeros((obs.shape[0], 1)), jnp.full((1,), np.log(3.0), jnp.float32))


def short_cartpole(name="CartPole-v1-short", **overrides):
    env, params = gymnax.make("CartPole-v1")
    overrides = {"max_steps_in_episode": MAX_STEPS, **overrides}
    return Env(name, env=env, params=params.replace(**overrides))


class UnclippedPendulum(Pendulum):
    """Pendulum that applies whatever torque it is given: any clipping must come from Env."""

    def step_env(self, key, state, action, params):
        return super().step_env(key, state, action, params.replace(max_torque=1e6))


@pytest.fixture(scope="module")
def cartpole():
    env = short_cartpole()
    k0, k1, k2 = jax.random.split(jax.random.PRNGKey(0), 3)
    runner0 = init_runner(k0, env, B)
    runner1, batch1 = run(k1, env, uniform_policy, runner0, T)
    runner2, batch2 = run(k2, env, uniform_policy, runner1, T)
    return env, runner0, (runner1, batch1), (runner2, batch2), k1


def np_batch(batch):
    return jax.tree.map(np.asarray, batch)


def expected_episode_t(done, start):
    out = np.zeros(done.shape, np.int64)
    t_b = np.asarray(start, np.int64).copy()
    for t in range(done.shape[0]):
        out[t] = t_b
        t_b = np.where(done[t], 0, t_b + 1)
    return out, t_b


def expected_episode_return(reward, done, start):
    out = np.zeros(reward.shape, np.float64)
    acc = np.asarray(start, np.float64).copy()
    for t in range(reward.shape[0]):
        acc = acc + reward[t]
        out[t] = acc
        acc = np.where(done[t], 0.0, acc)
    return out, acc


def test_transition_shapes_and_dtypes(cartpole):
    env, _, (runner1, batch1), _, _ = cartpole
    D = env.obs_dim
    assert D == 4
    spec = {
        "obs": ((T, B, D), jnp.float32),
        "action": ((T, B), jnp.int32),
        "log_prob": ((T, B), jnp.float32),
        "reward": ((T, B), jnp.float32),
        "terminated": ((T, B), jnp.bool_),
        "truncated": ((T, B), jnp.bool_),
        "episode_t": ((T, B), jnp.int32),
        "final_obs": ((T, B, D), jnp.float32),
        "episode_return": ((T, B), jnp.float32),
    }
    assert set(spec) | {"policy_carry"} == set(Transition._fields)
    assert batch1.policy_carry is None  # a feedforward policy has no carry
    for name, (shape, dtype) in spec.items():
        chex.assert_shape(getattr(batch1, name), shape)
        chex.assert_type(getattr(batch1, name), dtype)
    chex.assert_tree_all_finite((batch1.obs, batch1.final_obs, batch1.log_prob))
    np.testing.assert_allclose(np.asarray(batch1.log_prob), np.log(0.5), rtol=1e-6)
    assert set(np.unique(np.asarray(batch1.action))) == {0, 1}

    assert isinstance(runner1, RunnerState)
    chex.assert_shape(runner1.obs, (B, D))
    chex.assert_shape([runner1.episode_t, runner1.episode_return], (B,))
    chex.assert_type([runner1.episode_t, runner1.episode_return], [jnp.int32, jnp.float32])


def test_truncation_occurs_and_never_with_termination(cartpole):
    _, _, (_, batch1), (_, batch2), _ = cartpole
    for batch in (batch1, batch2):
        b = np_batch(batch)
        assert b.truncated.any()
        assert not (b.terminated & b.truncated).any()
        # The time limit cuts exactly the steps with index MAX_STEPS − 1, and all of them.
        np.testing.assert_array_equal(b.episode_t[b.truncated], MAX_STEPS - 1)
        assert b.done[b.episode_t == MAX_STEPS - 1].all()
        assert (b.episode_t < MAX_STEPS).all()


def test_truncated_flag_cleared_when_both_happen():
    # One-step episodes: gymnax reports truncated on every step; a tight angle threshold makes
    # about half of them terminate on that same step. Env must report truncated only otherwise.
    env = short_cartpole(
        "CartPole-v1-one-step", max_steps_in_episode=1, theta_threshold_radians=0.02
    )
    k0, k1 = jax.random.split(jax.random.PRNGKey(3))
    _, batch = run(k1, env, uniform_policy, init_runner(k0, env, B), 10)
    b = np_batch(batch)
    assert b.terminated.any() and (~b.terminated).any()
    np.testing.assert_array_equal(b.truncated, ~b.terminated)
    np.testing.assert_array_equal(b.episode_t, 0)
    np.testing.assert_array_equal(b.episode_return, b.reward)


def test_auto_reset_and_final_obs(cartpole):
    env, _, (runner1, batch1), _, _ = cartpole
    b = np_batch(batch1)
    next_obs = np.concatenate([b.obs[1:], np.asarray(runner1.obs)[None]], 0)
    done = b.done
    # Inside an episode the next observation is the final one; after an end it is a reset.
    np.testing.assert_array_equal(next_obs[~done], b.final_obs[~done])
    assert b.truncated.sum() >= 2
    assert (np.abs(next_obs[done] - b.final_obs[done]).max(-1) > 1e-6).all()
    assert (np.abs(next_obs[done]) <= 0.05).all()  # CartPole resets uniformly in ±0.05

    # final_obs is what stepping the env without reset gives (CartPole's step is deterministic).
    flat = lambda x: x.reshape(T * B, *x.shape[2:])
    obs, action, episode_t = flat(b.obs), flat(b.action), flat(b.episode_t)
    state = CartPoleState(
        x=obs[:, 0], x_dot=obs[:, 1], theta=obs[:, 2], theta_dot=obs[:, 3], time=episode_t
    )
    key = jax.random.PRNGKey(0)
    step = lambda s, a: env.env.step_env(key, s, a, env.params)
    obs_st, state_st, reward, terminated, _ = jax.vmap(step)(state, action)
    np.testing.assert_allclose(np.asarray(obs_st), flat(b.final_obs), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(np.asarray(terminated), flat(b.terminated))
    np.testing.assert_array_equal(np.asarray(reward), flat(b.reward))
    truncated = np.asarray(env.env.is_truncated(state_st, env.params)) & ~flat(b.terminated)
    np.testing.assert_array_equal(truncated, flat(b.truncated))


def test_episode_t_counts_and_restarts(cartpole):
    _, runner0, (runner1, batch1), _, _ = cartpole
    b = np_batch(batch1)
    expected, carry = expected_episode_t(b.done, runner0.episode_t)
    np.testing.assert_array_equal(b.episode_t, expected)
    np.testing.assert_array_equal(np.asarray(runner1.episode_t), carry)
    np.testing.assert_array_equal(b.episode_t[0], 0)
    assert b.episode_t.max() == MAX_STEPS - 1  # it does count up, not stay at 0


def test_episode_return_at_done_is_sum_of_rewards(cartpole):
    _, runner0, (runner1, batch1), _, _ = cartpole
    b = np_batch(batch1)
    expected, carry = expected_episode_return(b.reward, b.done, runner0.episode_return)
    assert b.done.sum() >= 4
    np.testing.assert_allclose(b.episode_return[b.done], expected[b.done], rtol=1e-6)
    # CartPole pays 1 per step, so a finished return is the episode's length.
    np.testing.assert_allclose(b.episode_return[b.done], b.episode_t[b.done] + 1.0)
    np.testing.assert_allclose(np.asarray(runner1.episode_return), carry, rtol=1e-6)


def test_runner_carry_continues_across_rollouts(cartpole):
    _, runner0, (runner1, batch1), (runner2, batch2), _ = cartpole
    b1, b2 = np_batch(batch1), np_batch(batch2)
    np.testing.assert_array_equal(b2.episode_t[0], np.asarray(runner1.episode_t))
    np.testing.assert_array_equal(b2.obs[0], np.asarray(runner1.obs))
    assert (b2.episode_t[0] > 0).any()  # some episode really spans the boundary

    done = np.concatenate([b1.done, b2.done])
    reward = np.concatenate([b1.reward, b2.reward])
    expected_t, carry_t = expected_episode_t(done, runner0.episode_t)
    np.testing.assert_array_equal(np.concatenate([b1.episode_t, b2.episode_t]), expected_t)
    np.testing.assert_array_equal(np.asarray(runner2.episode_t), carry_t)
    expected_r, _ = expected_episode_return(reward, done, runner0.episode_return)
    ep_return = np.concatenate([b1.episode_return, b2.episode_return])
    np.testing.assert_allclose(ep_return[done], expected_r[done], rtol=1e-6)


def test_rollout_is_reproducible(cartpole):
    env, runner0, (runner1, batch1), (_, batch2), k1 = cartpole
    runner_again, batch_again = run(k1, env, uniform_policy, runner0, T)
    chex.assert_trees_all_equal((runner1, batch1), (runner_again, batch_again))
    _, batch_other = run(jax.random.PRNGKey(99), env, uniform_policy, runner0, T)
    assert not np.array_equal(np.asarray(batch1.action), np.asarray(batch_other.action))


@pytest.mark.parametrize("unclipped_env", [False, True])
def test_continuous_actions_clipped_for_env_but_stored_raw(unclipped_env):
    if unclipped_env:
        _, params = gymnax.make("Pendulum-v1")
        env = Env("Pendulum-v1-unclipped", env=UnclippedPendulum(), params=params)
    else:
        env = Env("Pendulum-v1")
    assert env.continuous and env.action_shape == (1,)
    n_steps = 8
    k0, k1 = jax.random.split(jax.random.PRNGKey(4))
    runner, batch = run(k1, env, wide_gaussian_policy, init_runner(k0, env, B), n_steps)
    b = np_batch(batch)

    chex.assert_shape(batch.action, (n_steps, B, 1))
    chex.assert_type(batch.action, jnp.float32)
    chex.assert_shape([batch.obs, batch.final_obs], (n_steps, B, 3))
    chex.assert_shape([batch.log_prob, batch.reward], (n_steps, B))
    assert (np.abs(b.action) > 2.5).any()  # stored sample is not clipped
    dist = wide_gaussian_policy(batch.obs.reshape(n_steps * B, 3))
    expected_lp = dist.log_prob(batch.action.reshape(n_steps * B, 1)).reshape(n_steps, B)
    np.testing.assert_allclose(b.log_prob, np.asarray(expected_lp), rtol=1e-6)

    # The env received the clipped torque: replay each step from the observed state.
    flat = lambda x: x.reshape(n_steps * B, *x.shape[2:])
    obs, action = flat(b.obs), flat(b.action)
    state = PendulumState(
        theta=np.arctan2(obs[:, 1], obs[:, 0]),
        theta_dot=obs[:, 2],
        last_u=np.zeros(len(obs), np.float32),
        time=flat(b.episode_t),
    )
    key = jax.random.PRNGKey(0)
    step = lambda s, a: env.env.step_env(key, s, a, env.params)[0]
    clipped_next = np.asarray(jax.vmap(step)(state, np.clip(action, -2.0, 2.0)))
    np.testing.assert_allclose(clipped_next, flat(b.final_obs), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(
        np.asarray(runner.env_state.last_u), np.clip(b.action[-1, :, 0], -2.0, 2.0), rtol=1e-6
    )
    if unclipped_env:
        raw_next = np.asarray(jax.vmap(step)(state, action))
        big = np.abs(action[:, 0]) > 2.5
        assert (np.abs(raw_next[big] - flat(b.final_obs)[big]).max(-1) > 1e-3).all()


def test_env_equality_covers_class_and_params():
    env, params = gymnax.make("CartPole-v1")
    named = Env("CartPole-v1")
    assert named == Env("CartPole-v1", env, params)
    assert hash(named) == hash(Env("CartPole-v1", env, params))
    heavier = Env("CartPole-v1", env, params.replace(gravity=20.0))
    assert heavier != named  # same name, other params: must not share a jit cache entry
    assert Env("CartPole-v1", Pendulum(), Pendulum().default_params) != named
    assert {named: 1}.get(Env("CartPole-v1")) == 1
    breakout = MinBreakout().default_params
    minimal, full = (Env("Breakout", MinBreakout(use_minimal_action_set=m), breakout)
                     for m in (True, False))
    assert minimal != full  # same class and params, other instance attributes


def test_jitted_rollout_retraces_for_other_params():
    env, params = gymnax.make("CartPole-v1")
    policy = lambda obs: Categorical(jnp.zeros((obs.shape[0], 2)))

    def run(e):
        runner = init_runner(jax.random.key(0), e, 4)
        fn = jax.jit(rollout, static_argnums=(1, 2, 4))
        return fn(jax.random.key(1), e, policy, runner, 50)[1].terminated.sum()

    light = run(Env("CartPole-v1", env, params))
    heavy = run(Env("CartPole-v1", env, params.replace(gravity=100.0)))
    assert int(heavy) > int(light)  # stronger gravity ends episodes sooner


def test_import_pgjax_leaves_jax_and_gymnax_alone():
    code = (
        "import sys, pgjax; from jax._src import xla_bridge as xb; "
        "assert not xb.backends_are_initialized(), 'backend started'; "
        "assert 'gymnax' not in sys.modules, 'gymnax imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


class KeyOnlyCategorical:
    """A distribution with only `sample(key)`, not a pytree: sampled inside the loop."""

    def __init__(self, logits):
        self.logits = logits

    def sample(self, key):
        return jax.random.categorical(key, self.logits)

    def log_prob(self, action):
        return Categorical(self.logits).log_prob(action)


def test_action_noise_drawn_outside_the_loop_gives_the_same_rollout():
    env = Env("CartPole-v1")
    w = jax.random.normal(jax.random.key(5), (4, 3))

    def policy(obs):
        return Categorical(obs @ w)

    def key_only(obs):
        return KeyOnlyCategorical(obs @ w)

    runner = init_runner(jax.random.key(0), env, B)
    hoisted = run(jax.random.key(1), env, policy, runner, 60)
    in_loop = run(jax.random.key(1), env, key_only, runner, 60)
    for a, b in zip(jax.tree.leaves(hoisted), jax.tree.leaves(in_loop), strict=True):
        if jnp.issubdtype(a.dtype, jax.dtypes.prng_key):
            a, b = jax.random.key_data(a), jax.random.key_data(b)
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert len(set(np.asarray(hoisted[1].action).ravel().tolist())) == 3


@pytest.mark.parametrize("make_key", [jax.random.key, jax.random.PRNGKey])
@pytest.mark.parametrize("num_envs", [2, 8])
def test_env_step_with_split_keys_equals_one_key(make_key, num_envs):
    env = Env("CartPole-v1")
    obs, state = env.reset(make_key(0), num_envs)
    action = jnp.arange(num_envs) % 2
    key = make_key(2)
    one = env.step(key, state, action)
    split = env.step(jax.random.split(key, num_envs), state, action)
    for a, b in zip(jax.tree.leaves(one), jax.tree.leaves(split), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_a_gymnax_environment_must_be_wrapped_in_env():
    """gymnax's own reset takes (key, params): given 4 as params it would run one env, not 4."""
    with pytest.raises(TypeError, match="init_runner takes a pgjax.Env, got CartPole; wrap"):
        init_runner(jax.random.key(0), gymnax.make("CartPole-v1")[0], 4)
