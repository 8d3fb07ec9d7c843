"""Recurrent policies: the GRU's reset at episode starts, its carry across rollout windows, the
loss replaying a window exactly, the other trainer paths, and a memory task it alone solves."""

import functools
import subprocess
import sys

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import pgjax
from pgjax.policies import GRUPolicy, init_policy, is_recurrent, policy_over_time
from pgjax.rollout import RecurrentRunnerState, rollout
from pgjax.train import batch_dist, init_state, loss_and_grad

pytestmark = pytest.mark.usefixtures("highest_precision")  # log-probs compared

GRU = pgjax.Config(network="gru", num_envs=8, num_steps=64, total_timesteps=8 * 64 * 4)


def test_gru_resets_its_carry_where_an_episode_starts():
    policy = GRUPolicy((16, 8), 3)
    obs = jax.random.normal(jax.random.key(0), (5, 4))
    params = init_policy(policy, jax.random.key(1), obs)
    zero = policy.initialize_carry((5,))
    carry = jax.random.normal(jax.random.key(2), (5, 8))
    first = jnp.array([True, False, True, False, False])
    new, dist = policy.apply(params, carry, obs, first)
    from_zero, dist_zero = policy.apply(params, zero, obs, jnp.zeros(5, bool))
    from_carry, dist_carry = policy.apply(params, carry, obs, jnp.zeros(5, bool))
    f = np.asarray(first)
    np.testing.assert_array_equal(np.asarray(new)[f], np.asarray(from_zero)[f])
    np.testing.assert_array_equal(np.asarray(new)[~f], np.asarray(from_carry)[~f])
    np.testing.assert_array_equal(np.asarray(dist.logits)[f], np.asarray(dist_zero.logits)[f])
    assert not np.allclose(np.asarray(from_zero)[~f], np.asarray(from_carry)[~f])
    chex.assert_shape(dist.logits, (5, 3))


def two_windows(config, seed=0):
    state = init_state(config, jax.random.key(seed))
    parts = pgjax.build(config)
    policy = functools.partial(parts.policy.apply, state.params["policy"])
    runner1, batch1 = rollout(jax.random.key(1), parts.env, policy, state.runner,
                              config.num_steps)
    runner2, batch2 = rollout(jax.random.key(2), parts.env, policy, runner1, config.num_steps)
    return state, parts, (runner1, batch1), (runner2, batch2)


def test_gru_carry_crosses_windows_and_the_loss_replays_it():
    state, parts, (runner1, batch1), (runner2, batch2) = two_windows(GRU)
    assert is_recurrent(parts.policy) and isinstance(runner1, RecurrentRunnerState)
    chex.assert_shape(batch1.policy_carry, (64, 8, 32))
    # The second window starts from the carry the first one ended with (not a fresh zero).
    np.testing.assert_array_equal(batch2.policy_carry[0], runner1.policy_carry)
    assert float(jnp.abs(runner1.policy_carry).max()) > 0.01
    # Random CartPole episodes last ~20 steps: both windows hold episode starts mid-window.
    assert int(jnp.sum(batch1.episode_t[1:] == 0)) > 8 and int(jnp.sum(batch2.episode_t == 0)) > 8
    for batch in (batch1, batch2):
        replay = batch_dist(parts, state.params, batch).log_prob(batch.action)
        np.testing.assert_allclose(replay, batch.log_prob, rtol=1e-5, atol=1e-6)
    # Without the resets the replay differs: the episode starts are where the carry matters.
    no_reset = policy_over_time(parts.policy, state.params["policy"], batch2.obs,
                                jnp.zeros_like(batch2.episode_t, bool), batch2.policy_carry[0])
    assert not np.allclose(no_reset.log_prob(batch2.action), batch2.log_prob, atol=1e-4)


@pytest.mark.parametrize("overrides", [
    {},
    {"baseline": "value", "window": "bootstrap"},
    {"estimator": "gae"},
    {"estimator": "rloo", "group_size": 4, "num_steps": 500},
    {"estimator": "optimal-baseline", "num_steps": 500},
    {"env": "Pendulum-v1", "num_steps": 200},
    {"env": "Breakout-MinAtar"},
])
def test_gru_trains_with_every_estimator_path(overrides):
    config = GRU.replace(**overrides)
    config = config.replace(total_timesteps=config.steps_per_update * 2)
    state, metrics = jax.jit(pgjax.make_train(config))(jax.random.key(0))
    chex.assert_tree_all_finite((state.params, metrics.loss, metrics.grad_norm))
    assert np.all(np.asarray(metrics.grad_norm) > 0)


def test_gru_loss_chunks_start_each_slice_from_its_recorded_carry():
    state, parts, _, (runner2, batch2) = two_windows(GRU)
    whole = loss_and_grad(state.params, GRU, parts, batch2, runner2.obs)
    sliced = loss_and_grad(state.params, GRU.replace(loss_chunks=4), parts, batch2, runner2.obs)
    # Same forward pass (each slice's carry is the one recorded), so the same loss. It is a sum
    # of normalized advantages near 0 (3.4e-4), so the tolerance is absolute: float rounding
    # moves it by 1.7e-8, slices started from a zero carry by 1.7e-6...
    np.testing.assert_allclose(sliced[0][0], whole[0][0], rtol=0, atol=2e-7)
    # ...but the gradient stops at slice boundaries (truncated backpropagation through time).
    leaves = zip(jax.tree.leaves(whole[1]), jax.tree.leaves(sliced[1]), strict=True)
    assert any(not np.allclose(a, b, rtol=1e-4, atol=1e-7) for a, b in leaves)


@pytest.mark.slow
def test_only_the_gru_solves_memory_chain():
    """MemoryChain-bsuite shows its 1-bit context at the first step only and pays ±1 for
    recalling it 5 steps later: a feedforward policy is at chance (return 0)."""
    base = pgjax.Config(env="MemoryChain-bsuite", num_envs=64, num_steps=60,
                        total_timesteps=64 * 60 * 100)
    keys = pgjax.seed_keys(0, 4)
    finals = {}
    for network in ("mlp", "gru"):
        config = base.replace(network=network)
        state, metrics = jax.jit(jax.vmap(pgjax.make_train(config)))(keys)
        finals[network] = np.asarray(metrics.episode_return)[:, -5:].mean()
        if network == "gru":
            evaluate = functools.partial(pgjax.evaluate, pgjax.build(config),
                                         num_episodes=64, greedy=True)
            greedy = jax.vmap(evaluate)(state.params["policy"],
                                        pgjax.seed_keys(0, 4, stream="eval"))
            assert float(greedy.mean()) > 0.95
    assert finals["gru"] > 0.9, finals
    assert abs(finals["mlp"]) < 0.25, finals


@pytest.mark.slow
def test_gru_run_from_the_cli_evaluates_and_reproduces(tmp_path):
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "pgjax.cli"]
    train = [*cmd, "train", "--env", "MemoryChain-bsuite", "--network", "gru", "--num-envs",
             "8", "--num-steps", "60", "--total-timesteps", "1920", "--seeds", "2",
             "--out", str(out), "--no-progress", "--checkpoint-every", "1", "--chunks", "2"]
    for args in (train, [*cmd, "eval", str(out), "--episodes", "8"],
                 [*cmd, "reproduce", str(out), "--no-progress"]):
        proc = subprocess.run(args, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr
    assert "match bitwise" in proc.stdout
