"""reinforce_loss / value_loss gradients against closed forms; normalize and masked_mean."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pgjax import Categorical, DiagGaussian, masked_mean, normalize, reinforce_loss, value_loss
from pgjax.losses import Targets, clipped_surrogate_loss, policy_gradient_loss

pytestmark = pytest.mark.usefixtures("highest_precision")  # gradients compared

T, B, A = 5, 3, 4


def make_batch(seed=0):
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(T, B, A)).astype(np.float32)
    actions = rng.integers(0, A, size=(T, B))
    returns = rng.normal(size=(T, B)).astype(np.float32) * 3.0
    return logits, actions, returns


def softmax(x):
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def closed_form_grad(logits, actions, advantages, scale):
    """d/dlogits of −Σ_t scale_t · A_t · log softmax(logits_t)[a_t] = −(onehot − p) A scale."""
    onehot = np.eye(A)[actions]
    coef = (np.asarray(advantages, np.float64) * scale)[..., None]
    return -(onehot - softmax(logits.astype(np.float64))) * coef


def grad_logits(logits, actions, returns, **kwargs):
    def loss(lg):
        return reinforce_loss(Categorical(lg).log_prob(jnp.asarray(actions)), returns, **kwargs)

    return np.asarray(jax.grad(loss)(jnp.asarray(logits)))


def check(actual, expected, atol=1e-6):
    np.testing.assert_allclose(np.asarray(actual), expected, rtol=1e-5, atol=atol)


def test_loss_value_is_negative_mean_score():
    logits, actions, returns = make_batch()
    logp = np.log(softmax(logits.astype(np.float64)))
    logp_a = np.take_along_axis(logp, actions[..., None], -1)[..., 0]
    loss = reinforce_loss(Categorical(logits).log_prob(jnp.asarray(actions)), returns)
    check(loss, -np.mean(logp_a * returns))


def test_gradient_matches_closed_form():
    logits, actions, returns = make_batch()
    g = grad_logits(logits, actions, returns)
    check(g, closed_form_grad(logits, actions, returns, 1.0 / (T * B)))


def test_zero_returns_give_zero_gradient():
    logits, actions, _ = make_batch()
    g = grad_logits(logits, actions, np.zeros((T, B), np.float32))
    np.testing.assert_array_equal(g, 0.0)


@pytest.mark.parametrize("kind", ["scalar", "array"])
def test_baseline_only_shifts_the_advantage(kind):
    logits, actions, returns = make_batch()
    rng = np.random.default_rng(7)
    b = 1.7 if kind == "scalar" else rng.normal(size=(T, B)).astype(np.float32)
    g_base = grad_logits(logits, actions, returns, baseline=b)
    g_shifted = grad_logits(logits, actions, returns - np.float32(b))
    check(g_base, g_shifted)
    check(g_base, closed_form_grad(logits, actions, returns - b, 1.0 / (T * B)))
    assert not np.allclose(g_base, grad_logits(logits, actions, returns))


def test_returns_and_baseline_get_no_gradient():
    logits, actions, returns = make_batch()
    logp = Categorical(jnp.asarray(logits)).log_prob(jnp.asarray(actions))
    b = np.ones((T, B), np.float32)

    def loss(ret, base):
        return reinforce_loss(logp, ret, baseline=base)

    g_ret, g_base = jax.grad(loss, argnums=(0, 1))(jnp.asarray(returns), jnp.asarray(b))
    np.testing.assert_array_equal(np.asarray(g_ret), 0.0)
    np.testing.assert_array_equal(np.asarray(g_base), 0.0)
    # Without the stop_gradient the gradient would be −logp/N, which is nonzero.
    assert np.all(np.asarray(logp) < 0)


def test_mask_excludes_steps_and_averages_over_masked_in():
    logits, actions, returns = make_batch()
    mask = np.ones((T, B), np.float32)
    mask[3:, 0] = 0.0
    mask[1, 2] = 0.0
    n = mask.sum()
    g = grad_logits(logits, actions, returns, mask=mask)
    check(g, closed_form_grad(logits, actions, returns * mask, 1.0 / n))
    np.testing.assert_array_equal(g[mask == 0], 0.0)

    # Changing logits, actions and returns at masked-out steps changes nothing.
    rng = np.random.default_rng(9)
    out = mask == 0
    logits2, actions2, returns2 = logits.copy(), actions.copy(), returns.copy()
    logits2[out] = rng.normal(size=logits2[out].shape) * 5
    actions2[out] = (actions2[out] + 1) % A
    returns2[out] = 1e3
    g2 = grad_logits(logits2, actions2, returns2, mask=mask)
    check(g2, g)

    loss = reinforce_loss(Categorical(logits).log_prob(jnp.asarray(actions)), returns, mask=mask)
    logp = np.log(softmax(logits.astype(np.float64)))
    logp_a = np.take_along_axis(logp, actions[..., None], -1)[..., 0]
    check(loss, -(logp_a * returns * mask).sum() / n)


def test_weights_multiply_per_step():
    logits, actions, returns = make_batch()
    t_idx = np.broadcast_to(np.arange(T)[:, None], (T, B))
    weights = (0.9**t_idx).astype(np.float32)
    g = grad_logits(logits, actions, returns, weights=weights)
    check(g, closed_form_grad(logits, actions, returns * weights, 1.0 / (T * B)))

    mask = np.ones((T, B), np.float32)
    mask[-1] = 0.0
    g = grad_logits(logits, actions, returns, weights=weights, mask=mask, baseline=0.5)
    expected = closed_form_grad(logits, actions, (returns - 0.5) * weights * mask, 1 / mask.sum())
    check(g, expected)

    logp = Categorical(jnp.asarray(logits)).log_prob(jnp.asarray(actions))
    g_w = jax.grad(lambda w: reinforce_loss(logp, returns, weights=w))(jnp.asarray(weights))
    np.testing.assert_array_equal(np.asarray(g_w), 0.0)


def test_value_loss_value_and_gradient():
    rng = np.random.default_rng(3)
    values = rng.normal(size=(T, B)).astype(np.float32)
    targets = rng.normal(size=(T, B)).astype(np.float32)
    check(value_loss(values, targets), 0.5 * np.mean((values - targets) ** 2))
    g_v, g_t = jax.grad(value_loss, argnums=(0, 1))(jnp.asarray(values), jnp.asarray(targets))
    check(g_v, (values - targets) / (T * B))
    np.testing.assert_array_equal(np.asarray(g_t), 0.0)

    mask = (rng.random((T, B)) < 0.6).astype(np.float32)
    mask[0, 0] = 1.0
    n = mask.sum()
    check(value_loss(values, targets, mask), 0.5 * ((values - targets) ** 2 * mask).sum() / n)
    g_v = jax.grad(value_loss)(jnp.asarray(values), jnp.asarray(targets), mask)
    check(g_v, (values - targets) * mask / n)


def test_normalize_zero_mean_unit_std():
    rng = np.random.default_rng(4)
    x = (rng.normal(size=(T, B)) * 5 + 3).astype(np.float32)
    y = np.asarray(normalize(x), np.float64)
    check(y.mean(), 0.0, atol=1e-5)
    check(y.std(), 1.0, atol=1e-5)
    check(y, (x - x.mean()) / x.std(), atol=1e-5)


def test_normalize_over_masked_entries_only():
    rng = np.random.default_rng(5)
    x = (rng.normal(size=(T, B)) * 5 + 3).astype(np.float32)
    mask = np.zeros((T, B), np.float32)
    mask[:3] = 1.0
    x[3:] = 1e4  # masked-out outliers must not affect the statistics
    y = np.asarray(normalize(x, mask), np.float64)
    inside = y[mask == 1]
    check(inside.mean(), 0.0, atol=1e-5)
    check(inside.std(), 1.0, atol=1e-5)
    xi = x[mask == 1].astype(np.float64)
    check(inside, (xi - xi.mean()) / xi.std(), atol=1e-5)


def test_normalize_constant_input_is_zero():
    # Exact mean (4 × 2.0) and an inexact float32 mean (2.5 over T·B entries, which rounds to
    # 2.5000002 and leaves a ~1e-7 spread): both are no signal and must map to 0, not ±1.
    np.testing.assert_array_equal(np.asarray(normalize(jnp.full((4,), 2.0))), 0.0)
    np.testing.assert_array_equal(np.asarray(normalize(jnp.full((T, B), 2.5))), 0.0)
    mask = jnp.zeros((T, B)).at[0].set(1.0)
    np.testing.assert_array_equal(np.asarray(normalize(jnp.full((T, B), 2.5), mask)), 0.0)


def test_masked_mean():
    x = jnp.arange(6.0).reshape(2, 3)
    check(masked_mean(x), 2.5)
    mask = jnp.array([[1.0, 0.0, 1.0], [0.0, 0.0, 1.0]])
    check(masked_mean(x, mask), (0 + 2 + 5) / 3)
    empty = masked_mean(x + 7.0, jnp.zeros((2, 3)))
    assert np.isfinite(float(empty))
    assert float(empty) == 0.0


@pytest.mark.parametrize("keyword", ["mask", "weights", "baseline"])
def test_a_per_step_input_of_another_shape_is_refused(keyword):
    """A [B] mask would broadcast over [T, B] and scale the loss by T; it is refused."""
    log_probs = jnp.zeros((5, 3))
    with pytest.raises(AssertionError, match=r"different shapes: \[\(5, 3\), .*\(3,\)\]"):
        reinforce_loss(log_probs, log_probs, **{keyword: jnp.ones(3)})
    with pytest.raises(AssertionError, match="different shapes"):
        masked_mean(log_probs, jnp.ones(3))
    with pytest.raises(AssertionError, match="different shapes"):
        value_loss(log_probs, log_probs, jnp.ones(3))
    assert reinforce_loss(log_probs, log_probs + 1.0, baseline=1.0) == 0.0  # a scalar baseline


# --- the clipped ratio surrogate and the KL of several passes over a batch ---------------------


def surrogate_numpy(logp, old, adv, eps, mask, weights):
    r = np.exp(logp.astype(np.float64) - old)
    clipped = np.clip(r, 1 - eps, 1 + eps)
    s = np.minimum(r * adv, clipped * adv) if eps > 0 else r * adv
    return -np.sum(weights * mask * s) / mask.sum()


@pytest.mark.parametrize("eps", [0.0, 0.2])
def test_clipped_surrogate_value_and_gradient_match_numpy(eps):
    rng = np.random.default_rng(3)
    logp = rng.normal(size=(T, B)).astype(np.float32) * 0.3 - 1.0
    old = logp + rng.normal(size=(T, B)).astype(np.float32) * 0.4  # ratios on both sides of 1±ε
    adv = rng.normal(size=(T, B)).astype(np.float32)
    mask = (rng.random((T, B)) < 0.7).astype(np.float32)
    weights = rng.random((T, B)).astype(np.float32)

    def loss(lp):
        return clipped_surrogate_loss(lp, old, adv, clip_eps=eps, mask=mask, weights=weights)

    value, stats = loss(jnp.asarray(logp))
    np.testing.assert_allclose(value, surrogate_numpy(logp, old, adv, eps, mask, weights),
                               rtol=1e-6)
    # d/dlogp of −w·min(rA, clip(r)A)/N: −w r A / N where the unclipped term is the smaller
    # (or the ratio is inside the clip range), else 0
    r = np.exp(logp.astype(np.float64) - old)
    active = (r * adv <= np.clip(r, 1 - eps, 1 + eps) * adv) if eps > 0 else np.ones_like(r)
    expected = -weights * mask * r * adv * active / mask.sum()
    np.testing.assert_allclose(jax.grad(lambda lp: loss(lp)[0])(jnp.asarray(logp)), expected,
                               rtol=1e-5, atol=1e-8)
    outside = (np.abs(r - 1) > eps) if eps > 0 else np.zeros_like(r)
    assert 0 < float(stats["clip_fraction"]) < 1 if eps > 0 else float(stats["clip_fraction"]) == 0
    np.testing.assert_allclose(stats["clip_fraction"], (outside * mask).sum() / mask.sum(),
                               rtol=1e-6)
    np.testing.assert_allclose(stats["approx_kl"],
                               ((r - 1 - np.log(r)) * mask).sum() / mask.sum(), rtol=1e-5)


@pytest.mark.parametrize("eps", [0.0, 0.1, 0.2])
def test_at_ratio_one_the_surrogate_gradient_is_the_score_function_gradient(eps):
    logits, actions, returns = make_batch(4)
    old = Categorical(jnp.asarray(logits)).log_prob(jnp.asarray(actions))

    def surrogate(lg):
        logp = Categorical(lg).log_prob(jnp.asarray(actions))
        return clipped_surrogate_loss(logp, old, returns, clip_eps=eps)[0]

    g = jax.grad(surrogate)(jnp.asarray(logits))
    np.testing.assert_allclose(g, grad_logits(logits, actions, returns), rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(g, closed_form_grad(logits, actions, returns, 1.0 / (T * B)),
                               rtol=1e-5, atol=1e-8)


def test_categorical_kl_matches_numpy_and_has_no_gradient_at_equality():
    rng = np.random.default_rng(5)
    p, q = (rng.normal(size=(T, B, A)).astype(np.float32) for _ in range(2))
    pp, qq = softmax(p.astype(np.float64)), softmax(q.astype(np.float64))
    expected = np.sum(pp * (np.log(pp) - np.log(qq)), -1)
    np.testing.assert_allclose(Categorical(jnp.asarray(p)).kl(Categorical(jnp.asarray(q))),
                               expected, rtol=1e-5, atol=1e-7)
    kl_to = lambda lg: jnp.sum(Categorical(jnp.asarray(p)).kl(Categorical(lg)))
    np.testing.assert_allclose(kl_to(jnp.asarray(p)), 0.0, atol=1e-6)
    np.testing.assert_allclose(jax.grad(kl_to)(jnp.asarray(p)), 0.0, atol=1e-6)


def test_gaussian_kl_matches_the_closed_form_and_a_monte_carlo_estimate():
    rng = np.random.default_rng(6)
    mean_p, mean_q = rng.normal(size=(2, 3)), rng.normal(size=(2, 3))
    log_std_p, log_std_q = rng.normal(size=3) * 0.3, rng.normal(size=3) * 0.3
    p = DiagGaussian(jnp.asarray(mean_p, jnp.float32), jnp.asarray(log_std_p, jnp.float32))
    q = DiagGaussian(jnp.asarray(mean_q, jnp.float32), jnp.asarray(log_std_q, jnp.float32))
    sp, sq = np.exp(log_std_p), np.exp(log_std_q)
    closed = np.sum(np.log(sq / sp) + (sp**2 + (mean_p - mean_q) ** 2) / (2 * sq**2) - 0.5, -1)
    np.testing.assert_allclose(p.kl(q), closed, rtol=1e-5)
    draws = jax.vmap(p.sample)(jax.random.split(jax.random.key(0), 200_000))  # [N, 2, 3]
    monte_carlo = np.mean(p.log_prob(draws) - q.log_prob(draws), 0)
    np.testing.assert_allclose(monte_carlo, closed, rtol=0.05)
    kl_to = lambda mean: jnp.sum(p.kl(DiagGaussian(mean, p.log_std)))
    np.testing.assert_allclose(jax.grad(kl_to)(p.mean), 0.0, atol=1e-7)


def test_policy_gradient_loss_adds_the_weighted_kl_only_with_a_behaviour_policy():
    rng = np.random.default_rng(7)
    logp, old, adv, ent, kl = (jnp.asarray(rng.normal(size=(T, B)), jnp.float32) for _ in range(5))
    targets = Targets(adv, adv, None, None)
    plain, aux = policy_gradient_loss(logp, ent, None, targets, value_coef=0.5, ent_coef=0.1)
    assert float(aux["approx_kl"]) == float(aux["clip_fraction"]) == 0.0
    np.testing.assert_allclose(plain, reinforce_loss(logp, adv) - 0.1 * jnp.mean(ent),
                               rtol=1e-6)
    ratio, _ = policy_gradient_loss(logp, ent, None, targets, value_coef=0.5, ent_coef=0.1,
                                    behaviour_log_prob=old, clip_eps=0.2, kl=kl, kl_coef=0.3)
    surrogate, _ = clipped_surrogate_loss(logp, old, adv, clip_eps=0.2)
    np.testing.assert_allclose(ratio, surrogate - 0.1 * jnp.mean(ent) + 0.3 * jnp.mean(kl),
                               rtol=1e-6)
