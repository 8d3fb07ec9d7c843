"""discounted_returns and complete_episode_mask against plain numpy loops."""

import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pgjax import complete_episode_mask, discounted_returns, episode_start_mask

GAMMAS = [0.0, 0.5, 0.99, 1.0]
BATCH_SHAPES = [(), (3,), (2, 3)]


def returns_reference(rewards, dones, gamma, bootstrap=None, truncated=None, values=None):
    """G_t = r_t + γ G_{t+1} inside an episode; at an end G_t = r_t (+ γ v_t if truncated)."""
    rewards = np.asarray(rewards, np.float64)
    T = rewards.shape[0]
    flat_r = rewards.reshape(T, -1)
    flat_d = np.asarray(dones, bool).reshape(T, -1)
    n = flat_r.shape[1]
    flat_tr = np.zeros((T, n), bool) if truncated is None else np.asarray(truncated).reshape(T, -1)
    flat_v = np.zeros((T, n)) if values is None else np.asarray(values, np.float64).reshape(T, -1)
    flat_b = np.zeros(n) if bootstrap is None else np.asarray(bootstrap, np.float64).reshape(-1)
    out = np.zeros((T, n))
    for b in range(n):
        g = flat_b[b]
        for t in reversed(range(T)):
            if flat_d[t, b]:
                g = flat_r[t, b] + (gamma * flat_v[t, b] if flat_tr[t, b] else 0.0)
            else:
                g = flat_r[t, b] + gamma * g
            out[t, b] = g
    return out.reshape(rewards.shape)


def mask_reference(dones):
    dones = np.asarray(dones, bool)
    T = dones.shape[0]
    flat = dones.reshape(T, -1)
    out = np.zeros(flat.shape, np.float32)
    for b in range(flat.shape[1]):
        seen = False
        for t in reversed(range(T)):
            seen = seen or flat[t, b]
            out[t, b] = float(seen)
    return out.reshape(dones.shape)


def random_inputs(rng, T, batch, p_done, p_trunc=0.0):
    shape = (T, *batch)
    rewards = rng.normal(size=shape).astype(np.float32)
    dones = rng.random(shape) < p_done
    truncated = dones & (rng.random(shape) < p_trunc)
    values = rng.normal(size=shape).astype(np.float32)
    bootstrap = rng.normal(size=batch).astype(np.float32)
    return rewards, dones, truncated, values, bootstrap


def check(actual, expected):
    np.testing.assert_allclose(np.asarray(actual), expected, rtol=1e-5, atol=1e-5)


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    T=st.integers(1, 12),
    batch=st.sampled_from(BATCH_SHAPES),
    gamma=st.sampled_from(GAMMAS),
    p_done=st.sampled_from([0.0, 0.2, 0.5]),
    use_bootstrap=st.booleans(),
)
def test_returns_match_numpy_loop(seed, T, batch, gamma, p_done, use_bootstrap):
    rng = np.random.default_rng(seed)
    rewards, dones, _, _, bootstrap = random_inputs(rng, T, batch, p_done)
    if use_bootstrap:
        g = discounted_returns(rewards, dones, gamma, bootstrap)
        expected = returns_reference(rewards, dones, gamma, bootstrap)
    else:
        g = discounted_returns(rewards, dones, gamma)
        expected = returns_reference(rewards, dones, gamma)
    assert g.shape == rewards.shape
    assert g.dtype == jnp.float32
    check(g, expected)


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    T=st.integers(1, 12),
    batch=st.sampled_from(BATCH_SHAPES),
    gamma=st.sampled_from(GAMMAS),
)
def test_returns_with_truncation_values_match_numpy_loop(seed, T, batch, gamma):
    rng = np.random.default_rng(seed)
    rewards, dones, truncated, values, bootstrap = random_inputs(rng, T, batch, 0.3, 0.5)
    g = discounted_returns(
        rewards, dones, gamma, bootstrap, truncated=truncated, truncation_values=values
    )
    check(g, returns_reference(rewards, dones, gamma, bootstrap, truncated, values))


@pytest.mark.parametrize("gamma", GAMMAS)
@pytest.mark.parametrize("batch", BATCH_SHAPES)
def test_truncated_step_adds_discounted_value(gamma, batch):
    # Every step is truncated: G_t = r_t + γ v_t exactly, bootstrap ignored.
    rng = np.random.default_rng(1)
    shape = (5, *batch)
    rewards = rng.normal(size=shape).astype(np.float32)
    values = rng.normal(size=shape).astype(np.float32)
    ones = np.ones(shape, bool)
    bootstrap = np.full(batch, 100.0, np.float32)
    g = discounted_returns(
        rewards, ones, gamma, bootstrap, truncated=ones, truncation_values=values
    )
    check(g, rewards.astype(np.float64) + gamma * values)


def test_truncation_value_only_used_at_truncated_steps():
    # Step 1 terminated (value ignored), step 3 truncated (value used).
    rewards = np.array([1.0, 2.0, 3.0, 4.0, 5.0], np.float32)
    dones = np.array([0, 1, 0, 1, 0], bool)
    truncated = np.array([0, 0, 0, 1, 0], bool)
    values = np.full(5, 10.0, np.float32)
    g = discounted_returns(
        rewards, dones, 0.5, jnp.float32(8.0), truncated=truncated, truncation_values=values
    )
    check(g, [1 + 0.5 * 2, 2.0, 3 + 0.5 * (4 + 0.5 * 10), 4 + 0.5 * 10, 5 + 0.5 * 8])


@pytest.mark.parametrize("gamma", GAMMAS)
def test_episode_end_at_first_step(gamma):
    rng = np.random.default_rng(2)
    rewards = rng.normal(size=(6, 2)).astype(np.float32)
    dones = np.zeros((6, 2), bool)
    dones[0] = True
    bootstrap = np.array([3.0, -2.0], np.float32)
    g = np.asarray(discounted_returns(rewards, dones, gamma, bootstrap))
    check(g[0], rewards[0])  # nothing after the end leaks into G_0
    check(g, returns_reference(rewards, dones, gamma, bootstrap))


@pytest.mark.parametrize("gamma", GAMMAS)
def test_episode_end_at_last_step_ignores_bootstrap(gamma):
    rng = np.random.default_rng(3)
    rewards = rng.normal(size=(6, 2)).astype(np.float32)
    dones = np.zeros((6, 2), bool)
    dones[-1] = True
    g0 = discounted_returns(rewards, dones, gamma)
    g1 = discounted_returns(rewards, dones, gamma, np.array([50.0, -50.0], np.float32))
    check(g1, np.asarray(g0))
    check(np.asarray(g1)[-1], rewards[-1])
    discounts = gamma ** np.arange(6.0)
    check(np.asarray(g1)[0], (discounts[:, None] * rewards).sum(0))


@pytest.mark.parametrize("gamma", GAMMAS)
@pytest.mark.parametrize("batch", BATCH_SHAPES)
def test_all_dones_reduces_to_rewards(gamma, batch):
    rng = np.random.default_rng(4)
    shape = (7, *batch)
    rewards = rng.normal(size=shape).astype(np.float32)
    bootstrap = rng.normal(size=batch).astype(np.float32)
    g = discounted_returns(rewards, np.ones(shape, bool), gamma, bootstrap)
    check(g, rewards)


@pytest.mark.parametrize("batch", BATCH_SHAPES)
def test_gamma_zero_reduces_to_rewards(batch):
    rng = np.random.default_rng(5)
    shape = (7, *batch)
    rewards = rng.normal(size=shape).astype(np.float32)
    dones = rng.random(shape) < 0.3
    bootstrap = rng.normal(size=batch).astype(np.float32) + 10.0
    check(discounted_returns(rewards, dones, 0.0, bootstrap), rewards)


def test_gamma_one_no_dones_is_reward_to_go_plus_bootstrap():
    rewards = np.arange(1.0, 6.0, dtype=np.float32)
    g = discounted_returns(rewards, np.zeros(5, bool), 1.0, jnp.float32(10.0))
    check(g, [25.0, 24.0, 22.0, 19.0, 15.0])


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    T=st.integers(1, 12),
    batch=st.sampled_from(BATCH_SHAPES),
    p_done=st.sampled_from([0.0, 0.1, 0.5, 1.0]),
)
def test_complete_episode_mask_matches_numpy(seed, T, batch, p_done):
    rng = np.random.default_rng(seed)
    dones = rng.random((T, *batch)) < p_done
    m = complete_episode_mask(dones)
    assert m.dtype == jnp.float32
    np.testing.assert_array_equal(np.asarray(m), mask_reference(dones))


def test_complete_episode_mask_example():
    dones = np.array([0, 1, 0, 0, 1, 0, 0], bool)
    np.testing.assert_array_equal(np.asarray(complete_episode_mask(dones)), [1, 1, 1, 1, 1, 0, 0])


@pytest.mark.parametrize("which", ["truncated", "truncation_values"])
def test_truncation_args_must_come_together(which):
    rewards = np.zeros((4, 2), np.float32)
    dones = np.zeros((4, 2), bool)
    kwargs = {"truncated": dones} if which == "truncated" else {"truncation_values": rewards}
    with pytest.raises(ValueError, match="together"):
        discounted_returns(rewards, dones, 0.9, **kwargs)


def test_episode_start_mask_vs_numpy():
    rng = np.random.default_rng(3)
    T, B, last_start = 30, 5, 12
    dones = rng.random((T, B)) < 0.2
    start_t = rng.integers(0, 7, size=B)  # episodes already running when the window opens
    episode_t = np.zeros((T, B), np.int32)
    for b in range(B):
        k = start_t[b]
        for t in range(T):
            episode_t[t, b] = k
            k = 0 if dones[t, b] else k + 1
    expected = np.zeros((T, B), np.float32)
    for b in range(B):
        for t in range(T):
            s = t - episode_t[t, b]  # window step at which this step's episode started
            expected[t, b] = 0 <= s <= last_start
    got = np.asarray(episode_start_mask(jnp.asarray(episode_t), last_start))
    np.testing.assert_array_equal(got, expected)
    assert (got[:, start_t > 0][0] == 0).all()  # running episodes are left out


@pytest.mark.parametrize("gamma", [1.5, -0.1])
def test_a_discount_outside_the_unit_interval_is_refused(gamma):
    with pytest.raises(ValueError, match=r"gamma must be in \[0, 1\]"):
        discounted_returns(jnp.ones((4, 2)), jnp.zeros((4, 2), bool), gamma)
