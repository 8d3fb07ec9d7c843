"""Distributions against numpy/scipy; sampling frequencies; policy network output shapes."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from pgjax import Categorical, CategoricalPolicy, DiagGaussian, GaussianPolicy, ValueNet


def np_log_softmax(x):
    x = np.asarray(x, np.float64)
    m = x.max(-1, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(-1, keepdims=True))


@pytest.mark.parametrize("shape", [(5,), (3, 4)])
def test_categorical_log_prob_and_entropy(shape):
    rng = np.random.default_rng(0)
    A = 4
    logits = (rng.normal(size=(*shape, A)) * 2).astype(np.float32)
    actions = rng.integers(0, A, size=shape)
    dist = Categorical(jnp.asarray(logits))
    logp = np_log_softmax(logits)
    expected = np.take_along_axis(logp, actions[..., None], -1)[..., 0]
    lp = dist.log_prob(jnp.asarray(actions))
    chex.assert_shape(lp, shape)
    np.testing.assert_allclose(np.asarray(lp), expected, rtol=1e-5, atol=1e-6)
    ent = dist.entropy()
    chex.assert_shape(ent, shape)
    np.testing.assert_allclose(
        np.asarray(ent), -(np.exp(logp) * logp).sum(-1), rtol=1e-5, atol=1e-6
    )
    np.testing.assert_array_equal(np.asarray(dist.mode()), logits.argmax(-1))


def test_categorical_uniform_entropy_is_log_a():
    ent = Categorical(jnp.zeros((2, 6))).entropy()
    np.testing.assert_allclose(np.asarray(ent), np.log(6.0), rtol=1e-6)


@pytest.mark.parametrize("per_step_std", [False, True])
def test_diag_gaussian_log_prob_matches_scipy(per_step_std):
    rng = np.random.default_rng(1)
    N, A = 6, 3
    mean = rng.normal(size=(N, A)).astype(np.float32)
    log_std_shape = (N, A) if per_step_std else (A,)
    log_std = (rng.normal(size=log_std_shape) * 0.5).astype(np.float32)
    action = rng.normal(size=(N, A)).astype(np.float32) * 2
    dist = DiagGaussian(jnp.asarray(mean), jnp.asarray(log_std))
    lp = dist.log_prob(jnp.asarray(action))
    chex.assert_shape(lp, (N,))
    std = np.broadcast_to(np.exp(log_std.astype(np.float64)), (N, A))
    expected = stats.norm.logpdf(action, loc=mean, scale=std).sum(-1)
    np.testing.assert_allclose(np.asarray(lp), expected, rtol=1e-5, atol=1e-5)

    ent = dist.entropy()
    chex.assert_shape(ent, (N,))
    closed = np.broadcast_to(log_std + 0.5 * np.log(2 * np.pi * np.e), (N, A)).sum(-1)
    np.testing.assert_allclose(np.asarray(ent), closed, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(
        np.asarray(ent), stats.norm.entropy(scale=std).sum(-1), rtol=1e-5, atol=1e-5
    )
    np.testing.assert_array_equal(np.asarray(dist.mode()), mean)


@pytest.mark.parametrize("shape", [(7, 2), (3, 5, 4)])
def test_categorical_sample_is_jax_random_categorical_bit_for_bit(shape):
    logits = jax.random.normal(jax.random.key(0), shape)
    key = jax.random.key(1)
    ours = Categorical(logits).sample(key)
    np.testing.assert_array_equal(ours, jax.random.categorical(key, logits))
    np.testing.assert_array_equal(Categorical(logits).sample_from(Categorical(logits).noise(key)),
                                  ours)


def test_categorical_sampling_frequencies_match_softmax():
    logits = np.array([1.0, 0.0, -1.0, 2.0], np.float32)
    probs = np.exp(np_log_softmax(logits))
    n = 40_000
    dist = Categorical(jnp.broadcast_to(jnp.asarray(logits), (n, 4)))
    samples = np.asarray(dist.sample(jax.random.PRNGKey(0)))
    assert samples.shape == (n,)
    freq = np.bincount(samples, minlength=4) / n
    # Standard error ≤ 0.0025 per entry; probs differ from each other by ≥ 0.06.
    np.testing.assert_allclose(freq, probs, atol=0.01)


def test_gaussian_sampling_moments():
    mean = jnp.array([1.0, -2.0])
    log_std = jnp.log(jnp.array([0.5, 2.0]))
    n = 40_000
    dist = DiagGaussian(jnp.broadcast_to(mean, (n, 2)), log_std)
    samples = np.asarray(dist.sample(jax.random.PRNGKey(1)))
    assert samples.shape == (n, 2)
    np.testing.assert_allclose(samples.mean(0), [1.0, -2.0], atol=0.05)
    np.testing.assert_allclose(samples.std(0), [0.5, 2.0], rtol=0.03)


@pytest.mark.parametrize("lead", [(5,), (3, 2)])
def test_categorical_policy_shapes(lead):
    net = CategoricalPolicy(hidden=(8,), num_actions=3)
    obs = jnp.ones((*lead, 4))
    params = net.init(jax.random.PRNGKey(0), obs)
    dist = net.apply(params, obs)
    assert isinstance(dist, Categorical)
    chex.assert_shape(dist.logits, (*lead, 3))
    action = dist.sample(jax.random.PRNGKey(1))
    chex.assert_shape(action, lead)
    chex.assert_shape(dist.log_prob(action), lead)
    chex.assert_shape(dist.entropy(), lead)
    chex.assert_tree_all_finite(dist)


@pytest.mark.parametrize("lead", [(5,), (3, 2)])
def test_gaussian_policy_shapes(lead):
    net = GaussianPolicy(hidden=(8,), action_dim=2, init_log_std=-0.5)
    obs = jnp.ones((*lead, 4))
    params = net.init(jax.random.PRNGKey(0), obs)
    dist = net.apply(params, obs)
    assert isinstance(dist, DiagGaussian)
    chex.assert_shape(dist.mean, (*lead, 2))
    chex.assert_shape(dist.log_std, (2,))
    np.testing.assert_allclose(np.asarray(dist.log_std), -0.5)
    action = dist.sample(jax.random.PRNGKey(1))
    chex.assert_shape(action, (*lead, 2))
    chex.assert_shape(dist.log_prob(action), lead)
    chex.assert_shape(dist.entropy(), lead)


def test_value_net_shape():
    net = ValueNet(hidden=(8,))
    obs = jnp.ones((3, 2, 4))
    params = net.init(jax.random.PRNGKey(0), obs)
    chex.assert_shape(net.apply(params, obs), (3, 2))


def test_orthogonal_init_is_orthogonal_and_needs_no_lapack():
    from pgjax.policies import orthogonal

    for shape in [(4, 32), (32, 32), (32, 2), (400, 64)]:
        w = np.asarray(orthogonal(2.0)(jax.random.key(0), shape), np.float64) / 2.0
        gram = w.T @ w if shape[0] >= shape[1] else w @ w.T
        np.testing.assert_allclose(gram, np.eye(len(gram)), atol=1e-5)
    # Vmapped over seeds it must not lower to a batched LAPACK QR (a custom call that
    # deadlocked XLA's CPU thread pool), and seeds must differ.
    init = jax.vmap(lambda k: orthogonal()(k, (4, 32)))
    keys = jax.random.split(jax.random.key(0), 8)
    assert "custom_call" not in jax.jit(init).lower(keys).as_text()
    w = np.asarray(init(keys))
    assert not np.allclose(w[0], w[1])


@pytest.mark.parametrize("kernel", [2, 3])
def test_patch_convolution_is_nn_conv(highest_precision, kernel):
    """ConvTorso's default patch matmul: nn.Conv's parameters, initialization and function."""
    from pgjax.policies import ConvTorso

    obs = jax.random.normal(jax.random.key(0), (2, 5, 10, 10, 4))  # [..., H, W, C]
    fast, lax = ConvTorso((16, 8), kernel), ConvTorso((16, 8), kernel, impl="lax")
    params = fast.init(jax.random.key(1), obs)
    lax_params = lax.init(jax.random.key(1), obs)
    chex.assert_trees_all_equal(params, lax_params)  # same tree, same bits
    out = fast.apply(params, obs)
    chex.assert_shape(out, (2, 5, 10 * 10 * 8))
    np.testing.assert_allclose(out, lax.apply(params, obs), rtol=1e-5, atol=1e-5)
