"""Exact policy gradients on a tabular MDP, and pgjax's REINFORCE estimator checked against them.

The Monte Carlo tests run pgjax's own rollout, discounted_returns and reinforce_loss; a wrong
loss, return or γ^t weighting moves the estimate's mean off the exact gradient by more than the
99% noise radius, which the mutant tests show for each kind of mistake.
"""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pgjax import discounted_returns, exact

pytestmark = pytest.mark.usefixtures("highest_precision")  # gradients compared

S, A, H = 6, 3, 20
N = 2**16  # episodes per Monte Carlo test batch
GAMMA = 0.5


def make_problem(dtype=jnp.float32):
    mdp = exact.random_mdp(jax.random.key(1), S, A, horizon=H).astype(dtype)
    theta = jax.random.normal(jax.random.key(2), (S, A), dtype)
    return mdp, theta


def rel(a, b):
    return float(np.linalg.norm(np.asarray(a) - np.asarray(b)) / np.linalg.norm(np.asarray(b)))


# --- the environment -------------------------------------------------------------------------


def test_env_rollout_shapes_and_first_episode_mask():
    mdp, theta = make_problem()
    env = exact.make_env(mdp)
    batch, mask = exact.sample_episodes(jax.random.key(0), env, theta, 64)
    chex.assert_shape(batch.obs, (H, 64, S))
    chex.assert_shape([batch.reward, batch.episode_t, mask], (H, 64))
    chex.assert_tree_all_finite(batch.reward)
    obs = np.asarray(batch.obs)
    np.testing.assert_array_equal(obs.sum(-1), 1.0)  # one-hot
    assert not obs[..., -1].any()  # the terminal state is never acted in
    m, done = np.asarray(mask), np.asarray(batch.done)
    np.testing.assert_array_equal((m * done).sum(0), 1.0)  # each stream: exactly one episode end
    np.testing.assert_array_equal(m.sum(0) - 1, np.argmax(done, 0))  # ... and the mask stops there
    t = np.broadcast_to(np.arange(H)[:, None], m.shape)
    np.testing.assert_array_equal(np.asarray(batch.episode_t)[m > 0], t[m > 0])


def test_first_episode_mask_reduces_to_ones_without_done():
    dones = jnp.zeros((4, 2), bool).at[0, 1].set(True)
    np.testing.assert_array_equal(exact.first_episode_mask(dones), [[1, 1], [1, 0], [1, 0], [1, 0]])


def test_monte_carlo_return_matches_exact_objective():
    mdp, theta = make_problem()
    batch, mask = exact.sample_episodes(jax.random.key(3), exact.make_env(mdp), theta, N)
    g0 = np.asarray(discounted_returns(batch.reward, batch.done, GAMMA)[0], np.float64)
    j = float(exact.finite_horizon_objective(theta, mdp, GAMMA, H))
    assert abs(g0.mean() - j) < 2.58 * g0.std() / np.sqrt(N)


# --- exact gradients -------------------------------------------------------------------------


@pytest.mark.parametrize("gamma", [0.0, 0.5, 0.9, 1.0])
@pytest.mark.parametrize("horizon", [None, H])
def test_exact_grad_matches_pg_theorem_and_finite_differences(gamma, horizon):
    with jax.enable_x64(True):
        mdp, theta = make_problem(jnp.float64)
        grad = exact.exact_grad(theta, mdp, gamma, horizon=horizon)
        pg = exact.pg_theorem_grad(theta, mdp, gamma, horizon=horizon)
        if horizon is None:
            f = lambda t: exact.objective(t, mdp, gamma)
        else:
            f = lambda t: exact.finite_horizon_objective(t, mdp, gamma, horizon)
        fd = exact.finite_difference_grad(f, theta, eps=1e-5)
        assert float(jnp.linalg.norm(grad)) > 1e-2
        np.testing.assert_allclose(grad, pg, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(grad, fd, rtol=1e-7, atol=1e-9)


def test_pg_theorem_reduces_to_softmax_advantage_form():
    """∇_{θ[s,a]} J = d(s) π(a|s) (Q(s, a) − V(s)) for a tabular softmax."""
    with jax.enable_x64(True):
        mdp, theta = make_problem(jnp.float64)
        v, q = exact.values(theta, mdp, GAMMA)
        d = exact.visitation(theta, mdp, GAMMA)
        closed = d[:, None] * exact.policy_probs(theta) * (q - v[:, None])
        np.testing.assert_allclose(exact.exact_grad(theta, mdp, GAMMA), closed, atol=1e-12)


def test_visitation_is_sum_of_discounted_occupancies():
    with jax.enable_x64(True):
        mdp, theta = make_problem(jnp.float64)
        p = exact.state_occupancy(theta, mdp, 600)
        np.testing.assert_allclose(
            exact.visitation(theta, mdp, GAMMA), (GAMMA ** np.arange(600)) @ p, atol=1e-12
        )
        np.testing.assert_allclose(exact.visitation(theta, mdp, 1.0), p.sum(0), atol=1e-10)


@pytest.mark.parametrize("gamma", [0.9, 1.0])
def test_finite_horizon_converges_to_infinite_horizon(gamma):
    with jax.enable_x64(True):
        mdp, theta = make_problem(jnp.float64)
        full = exact.exact_grad(theta, mdp, gamma)
        assert rel(exact.exact_grad(theta, mdp, gamma, horizon=H), full) > 1e-4  # H = 20 cuts
        assert rel(exact.exact_grad(theta, mdp, gamma, horizon=600), full) < 1e-10


def test_score_identities():
    with jax.enable_x64(True):
        _, theta = make_problem(jnp.float64)
        ids = exact.score_identities(theta)
        assert float(ids.product_rule) < 1e-14
        assert float(ids.zero_mean_score) < 1e-14
    _, theta = make_problem()
    scores = np.asarray(exact.sampled_scores(jax.random.key(0), theta, 20_000), np.float64)
    z = scores.mean(0) / (scores.std(0) / np.sqrt(len(scores)))
    assert np.max(np.abs(z)) < 4.0  # 18 coordinates, all within noise of 0
    assert np.abs(scores.mean(0)).max() < 0.02


# --- Monte Carlo REINFORCE against the exact gradient ----------------------------------------


@pytest.fixture(scope="module")
def mc():
    """Statistics of N per-episode estimates for each variant, one shared batch of episodes."""
    mdp, theta = make_problem()
    env = exact.make_env(mdp, "TabularMDP-test")
    v_table = exact.finite_horizon_values(theta, mdp, GAMMA, H).v

    @jax.jit
    def run(key):
        batch, mask = exact.sample_episodes(key, env, theta, N)
        grads = lambda gamma, **kw: exact.reinforce_grads(theta, batch, mask, gamma, **kw)
        g = {
            "i": grads(GAMMA),
            "ii": grads(GAMMA, gamma_weights=False),
            "i mean": grads(GAMMA, baseline="mean"),
            "i value": grads(GAMMA, baseline="value", v_table=v_table),
            "i gamma=1": grads(1.0),
            "ii gamma=1": grads(1.0, gamma_weights=False),
            **exact.mutant_grads(theta, batch, mask, GAMMA),
        }
        return jax.tree.map(exact.grad_stats, g), g["i gamma=1"], g["ii gamma=1"]

    stats, g1_i, g1_ii = run(jax.random.key(42))
    with jax.enable_x64(True):
        mdp64, theta64 = mdp.astype(jnp.float64), theta.astype(jnp.float64)
        truth = {
            GAMMA: exact.exact_grad(theta64, mdp64, GAMMA, horizon=H),
            1.0: exact.exact_grad(theta64, mdp64, 1.0, horizon=H),
            "ii": exact.pg_theorem_grad(theta64, mdp64, GAMMA, horizon=H, visitation_discount=1.0),
        }
    return stats, truth, (g1_i, g1_ii)


def test_gamma_weighted_estimator_is_unbiased(mc):
    stats, truth, _ = mc
    est = exact.summarize(stats["i"], truth[GAMMA])
    assert est.within_ci, est
    assert est.p_value > 0.01 and est.dof == (S - 1) * (A - 1), est
    assert est.rel_error < 0.05 and est.noise < 0.05
    assert est.cosine > 0.999


def test_estimator_without_gamma_weights_is_biased(mc):
    stats, truth, _ = mc
    est = exact.summarize(stats["ii"], truth[GAMMA])
    assert est.rel_error > 10 * est.noise and est.p_value < 1e-6, est
    # ... and its mean is what the theorem with undiscounted visitation predicts
    predicted = exact.summarize(stats["ii"], truth["ii"])
    assert predicted.within_ci and predicted.p_value > 0.01, predicted


def test_weightings_coincide_at_gamma_one(mc):
    stats, truth, (g_i, g_ii) = mc
    np.testing.assert_array_equal(g_i, g_ii)
    assert exact.summarize(stats["ii gamma=1"], truth[1.0]).within_ci


def test_baselines_keep_the_mean_and_reduce_variance(mc):
    stats, truth, _ = mc
    none = exact.summarize(stats["i"], truth[GAMMA])
    for name in ("i mean", "i value"):
        est = exact.summarize(stats[name], truth[GAMMA])
        assert est.within_ci and est.p_value > 0.01, (name, est)
        assert est.variance < 0.5 * none.variance, (name, est.variance, none.variance)


@pytest.mark.parametrize("bug", ["undiscounted returns", "weights gamma^(t+1)", "mean over steps"])
def test_deliberate_bugs_are_detected(mc, bug):
    stats, truth, _ = mc
    est = exact.summarize(stats[bug], truth[GAMMA])
    assert est.rel_error > 2 * est.noise, est  # zero bias far outside the 99% CI
    assert est.p_value < 1e-6, est


# --- windows holding several episodes ----------------------------------------------------------


def test_episode_start_mask_is_unbiased_where_complete_episode_mask_is_not():
    """Counting the episodes that end inside a window favours short ones; counting those that
    start inside it (and letting them finish) does not."""
    from pgjax import complete_episode_mask, episode_start_mask, init_runner, rollout

    mdp, theta = make_problem()
    env = exact.make_env(mdp, "TabularMDP-windows")
    window, streams, gamma = 2 * H, 2**15, 0.9

    @jax.jit
    def run(key):
        k_reset, k_roll = jax.random.split(key)
        runner = init_runner(k_reset, env, streams)
        _, batch = rollout(k_roll, env, exact.tabular_policy(theta), runner, window + H)
        returns = discounted_returns(batch.reward, batch.done, gamma)
        in_window = (jnp.arange(window + H) < window)[:, None]
        masks = {
            "complete": complete_episode_mask(batch.done & in_window) * in_window,
            "start": episode_start_mask(batch.episode_t, window - 1),
        }
        out = {}
        for name, m in masks.items():
            g = exact.episode_grads(theta, batch, returns, m, weights=gamma**batch.episode_t)
            out[name] = (g.reshape(streams, -1), jnp.sum(batch.done * m, 0))
        return out

    out = run(jax.random.key(7))
    with jax.enable_x64(True):
        mdp64, theta64 = mdp.astype(jnp.float64), theta.astype(jnp.float64)
        truth = np.asarray(exact.exact_grad(theta64, mdp64, gamma, horizon=H)).reshape(-1)
    start = exact.ratio_estimate(*map(np.asarray, out["start"]), truth)
    complete = exact.ratio_estimate(*map(np.asarray, out["complete"]), truth)
    assert start.within_ci and start.p_value > 0.01, start
    assert complete.p_value < 1e-6 and complete.rel_error > 2 * complete.noise, complete


# --- several passes over one batch: the clipped surrogate and the KL penalty --------------------


@functools.cache
def surrogate_batch(num_episodes=16):
    """A small batch from θ with baselined advantages (both signs) and γ^t weights."""
    mdp, theta = make_problem()
    env = exact.make_env(mdp, "TabularMDP-passes")
    batch, mask = exact.sample_episodes(jax.random.key(5), env, theta, num_episodes)
    returns = discounted_returns(batch.reward, batch.done, GAMMA)
    advantages = returns - jnp.sum(returns * mask) / jnp.sum(mask)
    return mdp, theta, batch, mask, advantages, GAMMA**batch.episode_t


def numpy_surrogate_grads(theta, theta_old, batch, advantages, mask, weights, clip_eps):
    """Σ_t m_t w_t A_t r_t (e_a − π(·|s_t)) in row s_t, per episode, except for the steps the
    clip holds constant: A > 0 with r > 1 + ε, A < 0 with r < 1 − ε."""
    softmax = lambda x: np.exp(x - x.max(-1, keepdims=True)) / np.exp(
        x - x.max(-1, keepdims=True)).sum(-1, keepdims=True)
    p, p_old = softmax(np.asarray(theta, np.float64)), softmax(np.asarray(theta_old, np.float64))
    states = np.argmax(np.asarray(batch.obs), -1)
    actions, adv = np.asarray(batch.action), np.asarray(advantages, np.float64)
    m, w = np.asarray(mask), np.asarray(weights, np.float64)
    T, B = m.shape
    out, held = np.zeros((B, *p.shape)), 0
    for b in range(B):
        for t in range(T):
            if m[t, b] == 0:
                continue
            s, a, A_t = states[t, b], actions[t, b], adv[t, b]
            r = p[s, a] / p_old[s, a]
            if clip_eps > 0 and ((A_t > 0 and r > 1 + clip_eps) or (A_t < 0 and r < 1 - clip_eps)):
                held += 1
                continue
            out[b, s] += w[t, b] * A_t * r * (np.eye(p.shape[1])[a] - p[s])
    return out, held


@pytest.mark.parametrize("clip_eps", [0.0, 0.2])
def test_clipped_surrogate_at_ratio_one_is_reinforce(clip_eps):
    _, theta, batch, mask, advantages, w = surrogate_batch()
    old = exact.tabular_policy(theta)(batch.obs).log_prob(batch.action)
    g = exact.surrogate_episode_grads(theta, batch, old, advantages, mask, clip_eps=clip_eps,
                                      weights=w)
    reinforce = exact.episode_grads(theta, batch, advantages, mask, weights=w)
    assert float(jnp.abs(reinforce).max()) > 0.1
    np.testing.assert_allclose(g, reinforce, rtol=1e-5, atol=1e-6)
    # one step on the whole batch's loss moves θ by α × the mean per-episode estimate
    theta1 = exact.surrogate_sgd(theta, batch, advantages, mask, clip_eps=clip_eps,
                                 step_size=0.1, num_steps=1, weights=w)[0]
    np.testing.assert_allclose((theta1 - theta) / 0.1, reinforce.mean(0), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("clip_eps", [0.0, 0.2])
def test_clipped_surrogate_grad_matches_numpy_loop_away_from_old_policy(clip_eps):
    _, theta_old, batch, mask, advantages, w = surrogate_batch()
    theta = theta_old + 0.5 * jax.random.normal(jax.random.key(9), theta_old.shape)
    old = exact.tabular_policy(theta_old)(batch.obs).log_prob(batch.action)
    g = exact.surrogate_episode_grads(theta, batch, old, advantages, mask, clip_eps=clip_eps,
                                      weights=w)
    expected, held = numpy_surrogate_grads(theta, theta_old, batch, advantages, mask, w, clip_eps)
    np.testing.assert_allclose(g, expected, rtol=1e-4, atol=1e-5)
    if clip_eps > 0:  # the clip held some steps, and that changed the gradient
        unclipped, _ = numpy_surrogate_grads(theta, theta_old, batch, advantages, mask, w, 0.0)
        assert 0 < held < mask.sum()
        assert rel(expected, unclipped) > 0.05


def test_surrogate_sgd_takes_each_step_at_the_current_parameters():
    _, theta0, batch, mask, advantages, w = surrogate_batch()
    old = exact.tabular_policy(theta0)(batch.obs).log_prob(batch.action)
    thetas = exact.surrogate_sgd(theta0, batch, advantages, mask, clip_eps=0.2, step_size=0.5,
                                 num_steps=2, weights=w)
    step = lambda th: 0.5 * exact.surrogate_episode_grads(
        th, batch, old, advantages, mask, clip_eps=0.2, weights=w).mean(0)
    np.testing.assert_allclose(thetas[0], theta0 + step(theta0), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(thetas[1], thetas[0] + step(thetas[0]), rtol=1e-5, atol=1e-5)
    assert rel(step(thetas[0]), step(theta0)) > 1e-3  # the second step's gradient moved


def test_kl_penalty_gradient_vanishes_at_old_policy():
    _, theta_old, batch, mask, _, _ = surrogate_batch()
    grad = jax.grad(exact.batch_kl, argnums=1)
    assert float(exact.batch_kl(theta_old, theta_old, batch.obs, mask)) == pytest.approx(0.0,
                                                                                        abs=1e-7)
    assert float(jnp.abs(grad(theta_old, theta_old, batch.obs, mask)).max()) < 1e-7
    # away from θ_old: ∇_{θ[s]} = (visits of s / steps) (π_θ(·|s) − π_old(·|s)), not 0
    theta = theta_old + 0.3 * jax.random.normal(jax.random.key(9), theta_old.shape)
    visits = np.einsum("tbs,tb->s", np.asarray(batch.obs), np.asarray(mask)) / float(mask.sum())
    closed = visits[:, None] * (exact.policy_probs(theta) - exact.policy_probs(theta_old))
    assert float(np.abs(closed).max()) > 1e-2
    np.testing.assert_allclose(grad(theta_old, theta, batch.obs, mask), closed, atol=1e-6)
    assert float(exact.batch_kl(theta_old, theta, batch.obs, mask)) > 1e-3


def test_expected_surrogate_has_the_objective_gradient_at_old_policy():
    with jax.enable_x64(True):
        mdp, theta_old = make_problem(jnp.float64)
        L = lambda th: exact.expected_surrogate(th, theta_old, mdp, GAMMA, H)
        grad_L = jax.jit(jax.grad(L))
        truth = jax.jit(lambda th: exact.exact_grad(th, mdp, GAMMA, horizon=H))
        np.testing.assert_allclose(grad_L(theta_old), truth(theta_old), rtol=1e-10, atol=1e-12)
        # its value is Σ_t γ^t E[G_t] = Σ_t γ^t p_t · V_t
        p = exact.state_occupancy(theta_old, mdp, H)
        v = exact.finite_horizon_values(theta_old, mdp, GAMMA, H).v[:H]
        np.testing.assert_allclose(L(theta_old), (GAMMA ** np.arange(H)) @ np.sum(p * v, -1),
                                   rtol=1e-12)
        theta = theta_old + 0.3 * jax.random.normal(jax.random.key(9), theta_old.shape)
        assert rel(grad_L(theta), truth(theta)) > 1e-2  # it ignores the change of states


def test_ratio_surrogate_is_unbiased_for_the_expected_surrogate():
    """Σ_t γ^t r_t G_t over episodes of θ_old, through pgjax's loss with ε = 0, has mean L(θ)."""
    mdp, theta_old = make_problem()
    env = exact.make_env(mdp, "TabularMDP-passes")
    with jax.enable_x64(True):
        up = np.asarray(exact.exact_grad(theta_old.astype(jnp.float64), mdp.astype(jnp.float64),
                                         GAMMA, horizon=H))
    theta = theta_old + jnp.asarray(up / np.linalg.norm(up), jnp.float32)  # L rises
    n = 2**14

    @jax.jit
    def per_episode(key):
        batch, mask = exact.sample_episodes(key, env, theta_old, n)
        returns = discounted_returns(batch.reward, batch.done, GAMMA)
        log_p = exact.tabular_policy(theta)(batch.obs).log_prob(batch.action)
        log_old = exact.tabular_policy(theta_old)(batch.obs).log_prob(batch.action)
        one = lambda lp, lo, g, m, w: -exact.clipped_surrogate_loss(
            lp, lo, g, clip_eps=0.0, mask=m, weights=w, count=1.0)[0]
        return jax.vmap(one, in_axes=1)(log_p, log_old, returns, mask, GAMMA**batch.episode_t)

    x = np.asarray(per_episode(jax.random.key(13)), np.float64)
    with jax.enable_x64(True):
        mdp64, old64 = mdp.astype(jnp.float64), theta_old.astype(jnp.float64)
        L = float(exact.expected_surrogate(theta.astype(jnp.float64), old64, mdp64, GAMMA, H))
        L_old = float(exact.expected_surrogate(old64, old64, mdp64, GAMMA, H))
    radius = 3.3 * x.std() / np.sqrt(n)
    assert abs(x.mean() - L) < radius
    assert abs(L - L_old) > 3 * radius  # so a ratio held at 1 (or inverted) would fail
