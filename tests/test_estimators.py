"""The estimator family: each against a hand computation, reductions to known forms, group resets,
and the exact gradient of a tabular MDP (unbiased ones pass, biased ones show their bias)."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import pgjax
from pgjax import exact
from pgjax.estimators import (
    GAE,
    GROUP_KINDS,
    EstimatorInputs,
    GroupRelative,
    OptimalBaseline,
    ReturnToGo,
    TotalReturn,
    episode_total_returns,
    group_advantages,
)
from pgjax.returns import generalized_advantages

pytestmark = pytest.mark.usefixtures("highest_precision")  # gradients compared


def np_gae(r, v, v_next, done, gamma, lam):
    a, out = np.zeros(r.shape[1]), np.zeros_like(r)
    for t in reversed(range(r.shape[0])):
        delta = r[t] + gamma * v_next[t] - v[t]
        a = delta + gamma * lam * (1.0 - done[t]) * a
        out[t] = a
    return out


@settings(max_examples=25, deadline=None)
@given(st.integers(1, 12), st.sampled_from([0.0, 0.5, 0.99, 1.0]),
       st.sampled_from([0.0, 0.7, 1.0]), st.integers(0, 2**31 - 1))
def test_gae_matches_numpy(T, gamma, lam, seed):
    rng = np.random.default_rng(seed)
    r, v, v_next = (rng.normal(size=(T, 3)).astype(np.float32) for _ in range(3))
    done = rng.random((T, 3)) < 0.3
    done[0, 0], done[-1, 1] = True, True  # episode ends at t = 0 and t = T − 1
    got = generalized_advantages(r, v, v_next, done, gamma, lam)
    np.testing.assert_allclose(got, np_gae(r, v, v_next, done, gamma, lam), rtol=1e-5, atol=1e-5)


def batch_of(reward, done, truncated=None, episode_t=None, obs=None):
    T, B = reward.shape
    truncated = np.zeros((T, B), bool) if truncated is None else truncated
    if episode_t is None:
        episode_t = np.zeros((T, B), np.int32)
        for b in range(B):
            k = 0
            for t in range(T):
                episode_t[t, b] = k
                k = 0 if done[t, b] else k + 1
    obs = np.zeros((T, B, 1), np.float32) if obs is None else obs
    return pgjax.Transition(
        obs=jnp.asarray(obs), action=jnp.zeros((T, B), jnp.int32), log_prob=jnp.zeros((T, B)),
        reward=jnp.asarray(reward, jnp.float32), terminated=jnp.asarray(done & ~truncated),
        truncated=jnp.asarray(truncated), episode_t=jnp.asarray(episode_t),
        final_obs=jnp.asarray(obs), episode_return=jnp.zeros((T, B)),
    )


def inputs(batch, gamma, values=None, value_fn=None, last_obs=None, horizon=100):
    B = batch.reward.shape[1]
    last_obs = jnp.zeros((B, 1)) if last_obs is None else last_obs
    return EstimatorInputs(batch, last_obs, gamma, values, value_fn, horizon)


def test_gae_with_lambda_one_and_zero_value_is_the_discounted_return():
    rng = np.random.default_rng(0)
    reward = rng.normal(size=(9, 4)).astype(np.float32)
    done = rng.random((9, 4)) < 0.3
    batch = batch_of(reward, done)
    zero = lambda obs: jnp.zeros(obs.shape[:-1])
    targets = GAE(1.0, normalize=False)(inputs(batch, 0.9, jnp.zeros((9, 4)), zero))
    expected = pgjax.discounted_returns(reward, done, 0.9)
    np.testing.assert_allclose(targets.advantages, expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(targets.returns, expected, rtol=1e-5, atol=1e-6)


def test_gae_bootstraps_truncation_and_window_end_but_not_termination():
    # one env, T = 3: step 0 truncated (cut, V(final_obs) = 10), step 1 terminated, step 2 runs on
    reward = np.ones((3, 1), np.float32)
    done = np.array([[True], [True], [False]])
    truncated = np.array([[True], [False], [False]])
    obs = np.array([[[1.0]], [[2.0]], [[3.0]]], np.float32)
    batch = batch_of(reward, done, truncated, obs=obs)._replace(
        final_obs=jnp.asarray([[[10.0]], [[20.0]], [[30.0]]]))
    value_fn = lambda o: o[..., 0]  # V(obs) = obs
    values = jnp.asarray(obs[..., 0])
    targets = GAE(0.0, normalize=False)(inputs(batch, 0.5, values, value_fn,
                                               last_obs=jnp.array([[7.0]])))
    # δ_0 = 1 + 0.5·V(final_obs_0) − 1; δ_1 = 1 + 0 − 2; δ_2 = 1 + 0.5·V(last_obs) − 3
    np.testing.assert_allclose(targets.advantages[:, 0], [5.0, -1.0, 1.5], rtol=1e-6)
    np.testing.assert_allclose(targets.returns[:, 0], [6.0, 1.0, 4.5], rtol=1e-6)


def test_total_return_puts_the_episode_return_on_every_step():
    # env 0: episodes [0..1] (r 1, 2) and [2..3] (r 3, 4, cut by the window); env 1: one
    # episode running in from before the window ([0..1] ends at 1), then [2..3] (r 5, 6)
    reward = np.array([[1, 10], [2, 20], [3, 5], [4, 6]], np.float32)
    done = np.array([[0, 0], [1, 1], [0, 0], [0, 1]], bool)
    episode_t = np.array([[0, 3], [1, 4], [0, 0], [1, 1]], np.int32)
    batch = batch_of(reward, done, episode_t=episode_t)
    targets = TotalReturn("none", "complete", normalize=False)(inputs(batch, 0.5))
    # R(τ) = r_0 + 0.5 r_1 from each episode's first step
    np.testing.assert_allclose(targets.advantages[:2, 0], [2.0, 2.0])
    np.testing.assert_allclose(targets.advantages[2:, 1], [8.0, 8.0])
    np.testing.assert_array_equal(targets.mask, [[1, 0], [1, 0], [0, 1], [0, 1]])
    mean = TotalReturn("mean", "complete", normalize=False)(inputs(batch, 0.5))
    np.testing.assert_allclose(mean.advantages, targets.advantages - 5.0)
    total, known = episode_total_returns(jnp.asarray([[3.0], [2.0]]), jnp.asarray([[4], [5]]))
    assert not known.any()


@pytest.mark.parametrize("kind", ["rloo", "grpo", "dr-grpo"])
def test_group_advantages_by_hand(kind):
    r = np.array([1.0, 2.0, 6.0, 5.0, 5.0, 5.0], np.float32)  # two groups of 3
    got = np.asarray(group_advantages(jnp.asarray(r), 3, kind))
    g = r.reshape(2, 3)
    if kind == "rloo":
        expected = [[g[k, i] - (g[k].sum() - g[k, i]) / 2 for i in range(3)] for k in range(2)]
    elif kind == "dr-grpo":
        expected = g - g.mean(1, keepdims=True)
    else:
        expected = [(g[0] - 3.0) / np.std(g[0]), [0.0, 0.0, 0.0]]  # a flat group gives 0
    np.testing.assert_allclose(got, np.ravel(expected), rtol=1e-5, atol=1e-6)


def test_group_estimator_uses_each_envs_first_episode():
    reward = np.array([[1, 1], [1, 1], [1, 1]], np.float32)
    done = np.array([[0, 1], [1, 0], [0, 0]], bool)
    batch = batch_of(reward, done)
    targets = GroupRelative("rloo", 2, normalize=False, restart="window")(inputs(batch, 1.0))
    np.testing.assert_array_equal(targets.mask, [[1, 1], [1, 0], [0, 0]])
    np.testing.assert_allclose(targets.advantages[0], [1.0, -1.0])  # R = (2, 1)


def round_advantages_numpy(reward, done, episode_t, k, kind, gamma):
    """Each step's round by a plain loop: the round of (t, i) started at s = t − episode_t; it
    counts when every member's episode that starts at s ends inside the window."""
    T, B = reward.shape
    returns = np.zeros((T + 1, B))
    for t in reversed(range(T)):
        returns[t] = reward[t] + gamma * (1 - done[t]) * returns[t + 1]
    adv, mask = np.zeros((T, B)), np.zeros((T, B))
    for t in range(T):
        for i in range(B):
            s = t - episode_t[t, i]
            if episode_t[t, i] < 0 or s < 0:
                continue
            group = range(i - i % k, i - i % k + k)
            if not all(done[s:, j].any() for j in group):
                continue
            r = np.array([returns[s, j] for j in group])
            if kind == "rloo":
                a = r - (r.sum() - r) / (k - 1)
            elif kind == "dr-grpo":
                a = r - r.mean()
            else:
                a = (r - r.mean()) / r.std() if r.std() > 1e-6 * (1 + abs(r.mean())) else 0 * r
            adv[t, i], mask[t, i] = a[i % k], 1.0
    return adv, mask


@pytest.mark.parametrize("kind", GROUP_KINDS)
def test_round_advantages_match_a_loop_over_a_grouped_rollout(kind):
    env, k = pgjax.Env("CartPole-v1"), 4
    runner = pgjax.init_runner(jax.random.key(0), env, 8, group_size=k)
    uniform = lambda obs: pgjax.Categorical(jnp.zeros((obs.shape[0], 2)))
    roll = jax.jit(functools.partial(pgjax.rollout, env=env, policy=uniform, num_steps=120,
                                     group_size=k))
    runner, _ = roll(jax.random.key(1), runner=runner)  # carry a round into the next window
    _, batch = roll(jax.random.key(2), runner=runner)
    targets = GroupRelative(kind, k, normalize=False)(inputs(batch, 0.99))
    adv, mask = round_advantages_numpy(np.asarray(batch.reward), np.asarray(batch.done),
                                       np.asarray(batch.episode_t), k, kind, 0.99)
    np.testing.assert_array_equal(targets.mask, mask)
    assert 0.2 < mask.mean() < 1 and (np.asarray(batch.episode_t)[0] != 0).any()
    np.testing.assert_allclose(np.asarray(targets.advantages) * mask, adv, rtol=1e-4, atol=1e-4)


def test_a_grouped_rollout_waits_for_the_group_and_restarts_it_from_one_state():
    env, k, T = pgjax.Env("CartPole-v1"), 4, 150
    runner = pgjax.init_runner(jax.random.key(0), env, 8, group_size=k)
    uniform = lambda obs: pgjax.Categorical(jnp.zeros((obs.shape[0], 2)))
    _, batch = jax.jit(functools.partial(pgjax.rollout, env=env, policy=uniform, num_steps=T,
                                         group_size=k))(jax.random.key(1), runner=runner)
    t_, done, obs = (np.asarray(x) for x in (batch.episode_t, batch.done, batch.obs))
    waiting = t_ < 0
    assert waiting.any()
    np.testing.assert_array_equal(np.asarray(batch.reward)[waiting], 0.0)
    assert not done[waiting].any()
    for g in range(2):
        members = slice(g * k, g * k + k)
        starts = np.flatnonzero((t_[:, members] == 0).all(1))
        assert len(starts) >= 2  # several rounds in one window
        np.testing.assert_array_equal((t_[:, members] == 0).any(1), (t_[:, members] == 0).all(1))
        for s in starts:  # one shared start state per round
            assert (obs[s, members] == obs[s, g * k]).all()
        for s, nxt in zip(starts[:-1], starts[1:], strict=True):  # the round's last end
            ends = [np.flatnonzero(done[s:nxt, j])[0] + s for j in range(g * k, g * k + k)]
            assert max(ends) == nxt - 1
            for j, e in zip(range(g * k, g * k + k), ends, strict=True):
                assert (t_[e + 1:nxt, j] == -1).all()  # waits until the group restarts


def test_optimal_baseline_terms_by_hand():
    scores = {"w": jnp.array([[1.0, 0.0], [2.0, 0.0], [1.0, 0.0]])}  # s_i for 3 episodes, 2 params
    targets = pgjax.Targets(None, jnp.array([[3.0, 6.0, 9.0]]), None, None)
    terms = OptimalBaseline().episode_terms(scores, targets)["w"]
    b = (1 * 3 + 4 * 6 + 1 * 9) / 6.0  # Σ s² R / Σ s² for the first parameter
    np.testing.assert_allclose(terms[:, 0], [(3 - b) * 1, (6 - b) * 2, (9 - b) * 1], rtol=1e-6)
    np.testing.assert_array_equal(terms[:, 1], 0.0)  # no score, no term (and no 0/0)


def test_groups_start_from_one_state_each():
    env = pgjax.Env("CartPole-v1")
    runner = pgjax.init_runner(jax.random.key(0), env, 8, group_size=4)
    obs = np.asarray(runner.obs)
    assert (obs[:4] == obs[0]).all() and (obs[4:] == obs[4]).all()
    assert not (obs[0] == obs[4]).all()
    np.testing.assert_array_equal(  # group_size 1 is the plain reset
        pgjax.init_runner(jax.random.key(0), env, 8, group_size=1).obs,
        pgjax.init_runner(jax.random.key(0), env, 8).obs)


@pytest.mark.parametrize("config, message", [
    (pgjax.Config(estimator="rloo", num_steps=100, group_restart="window"),
     "needs num_steps ≥ the episode limit"),
    (pgjax.Config(estimator="grpo", group_size=6), "group_size ≥ 2 dividing num_envs=64"),
    (pgjax.Config(estimator="total-return", window="truncate"), "window complete or episodes"),
    (pgjax.Config(estimator="total-return", baseline="value"), "takes baseline none or mean"),
    (pgjax.Config(estimator="gae", gae_lambda=1.5), "gae_lambda must be in [0, 1]"),
])
def test_estimator_settings_are_checked(config, message):
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        pgjax.make_train(config)


@pytest.mark.parametrize("estimator, message", [
    (pgjax.ReturnToGo(baseline="valu"),
     "ReturnToGo's baseline must be one of ('none', 'mean', 'value'), got 'valu'"),
    (pgjax.ReturnToGo(window="complet"), "ReturnToGo's window must be one of ("),
    (pgjax.estimators.GAE(lam=2.0), "GAE's lam must be in [0, 1], got 2.0"),
    (pgjax.estimators.GAE(lam="0.9"), "GAE's lam must be a number, got '0.9'"),
])
def test_a_built_in_estimator_made_by_hand_checks_its_settings(estimator, message):
    with pytest.raises(ValueError) as error:
        pgjax.make_train(pgjax.Config(), estimator=estimator)
    assert str(error.value).startswith(message)


@pytest.mark.parametrize("name", ["rloo", "gae", "optimal-baseline"])
def test_group_and_gae_estimators_train_cartpole_a_little(name):
    steps = 500 if name == "optimal-baseline" else 100  # rloo's rounds need no T ≥ H
    config = pgjax.Config(estimator=name, num_envs=16, num_steps=steps,
                          total_timesteps=16 * steps * 30)
    _, metrics = jax.jit(jax.vmap(pgjax.make_train(config)))(
        jax.random.split(jax.random.key(0), 2))
    ret = np.asarray(metrics.episode_return)
    assert ret[:, -1].min() > 2 * ret[:, 0].max(), ret[:, [0, -1]]  # random play: ~22


# --- against the exact gradient (tabular MDP, γ = 1) ------------------------------------------

S, A, H, N = 6, 3, 20, 2**15


@pytest.fixture(scope="module")
def harness():
    _, theta, env, v_table, truth = exact.estimator_problem(S, A, H)

    @functools.cache
    def estimate(estimator):
        k = getattr(estimator, "group_size", 1)
        run = jax.jit(lambda key: exact.grad_stats(
            exact.estimator_grads(key, env, theta, estimator, N // k, 1.0, v_table=v_table)))
        return exact.summarize(run(jax.random.key(7)), truth), k

    return estimate


@pytest.mark.parametrize("estimator", [
    ReturnToGo("none", "complete", False, False),
    TotalReturn("none", "complete", normalize=False),
    GroupRelative("rloo", 4, normalize=False),
    GAE(0.5, normalize=False),
    OptimalBaseline(),
], ids=["reward-to-go", "total-return", "rloo", "gae-0.5-exact-V", "optimal-baseline"])
def test_unbiased_estimators_match_the_exact_gradient(harness, estimator):
    est, _ = harness(estimator)
    assert est.within_ci and est.p_value > 1e-3, est
    assert est.cosine > 0.99


def test_total_return_has_more_variance_than_reward_to_go(harness):
    total, _ = harness(TotalReturn("none", "complete", normalize=False))
    to_go, _ = harness(ReturnToGo("none", "complete", False, False))
    assert total.variance > 1.5 * to_go.variance, (total.variance, to_go.variance)


def test_optimal_baseline_beats_the_mean_baseline_on_whole_episodes(harness):
    optimal, _ = harness(OptimalBaseline())
    mean, _ = harness(TotalReturn("mean", "complete", normalize=False))
    assert optimal.variance < mean.variance, (optimal.variance, mean.variance)


def test_dr_grpo_shrinks_the_gradient_by_one_over_k(harness):
    est, k = harness(GroupRelative("dr-grpo", 4, normalize=False))
    assert not est.within_ci
    assert abs(est.rel_error - 1 / k) < est.noise + 0.02, est  # (K − 1)/K × RLOO's
    assert est.cosine > 0.99
