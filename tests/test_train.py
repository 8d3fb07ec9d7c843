"""Train step structure, determinism, chunking, config vmapping, and learning on small budgets."""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import pgjax
from pgjax.estimators import returns_and_mask
from pgjax.rollout import rollout
from pgjax.train import diverged, init_state, loss_and_grad, train_chunk, train_step

pytestmark = pytest.mark.usefixtures("highest_precision")  # gradients compared

SMALL = pgjax.Config(num_envs=8, num_steps=50, total_timesteps=8 * 50 * 4)


@functools.cache
def compiled(config):
    return jax.jit(jax.vmap(pgjax.make_train(config)))


def run(config, seeds=2, seed=0):
    return compiled(config)(jax.random.split(jax.random.key(seed), seeds))


def assert_bitwise(a, b):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        if jnp.issubdtype(x.dtype, jax.dtypes.prng_key):
            x, y = jax.random.key_data(x), jax.random.key_data(y)
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


@pytest.mark.parametrize(
    "overrides",
    [
        {},
        {"baseline": "none", "normalize_advantages": False},
        {"baseline": "value", "window": "bootstrap"},
        {"baseline": "value", "window": "truncate", "gamma_weighting": True},
        {"env": "Pendulum-v1", "baseline": "value", "ent_coef": 0.01},
        {"env": "Breakout-MinAtar", "num_steps": 20},
    ],
)
def test_step_is_finite_and_changes_params(overrides):
    config = SMALL.replace(**overrides)
    state = init_state(config, jax.random.key(0))
    new, metrics = jax.jit(functools.partial(train_step, config))(state, jax.random.key(1))
    chex.assert_tree_all_finite(new.params)
    chex.assert_trees_all_equal_shapes_and_dtypes(new.params, state.params)
    assert int(new.update) == 1
    for name in ("loss", "policy_loss", "entropy", "grad_norm"):
        assert np.isfinite(getattr(metrics, name)), name
    assert float(metrics.grad_norm) > 0
    moved = jax.tree.map(lambda a, b: float(jnp.max(jnp.abs(a - b))), new.params, state.params)
    assert max(jax.tree.leaves(moved)) > 0


def rollout_batch(config, seed=0):
    state = init_state(config, jax.random.key(seed))
    parts = pgjax.build(config)
    policy = functools.partial(parts.policy.apply, state.params["policy"])
    runner, batch = rollout(jax.random.key(seed + 1), parts.env, policy, state.runner,
                            config.num_steps)
    return state.params, parts, batch, runner.obs


@pytest.mark.parametrize(
    "overrides",
    [
        {},
        {"baseline": "none", "normalize_advantages": False, "window": "truncate"},
        {"env": "DeepSea-bsuite", "window": "episodes", "gamma_weighting": True, "ent_coef": 0.1},
        {"baseline": "value", "window": "bootstrap", "ent_coef": 0.01},
        {"baseline": "value", "window": "complete", "gamma_weighting": True},
        {"env": "Pendulum-v1", "baseline": "value", "window": "truncate", "ent_coef": 0.01},
    ],
)
def test_loss_chunks_give_the_whole_batch_gradient(overrides):
    base = SMALL.replace(num_envs=4, num_steps=60, **overrides)
    params, parts, batch, last_obs = rollout_batch(base)
    (loss, aux), grads = jax.jit(loss_and_grad, static_argnums=(1, 2))(
        params, base, parts, batch, last_obs
    )
    assert float(optax.tree.norm(grads)) > 0
    for chunks in (2, 5):
        config = base.replace(loss_chunks=chunks)
        (c_loss, c_aux), c_grads = jax.jit(loss_and_grad, static_argnums=(1, 2))(
            params, config, parts, batch, last_obs
        )
        np.testing.assert_allclose(c_loss, loss, rtol=1e-5, atol=1e-7)
        for name in aux:
            np.testing.assert_allclose(c_aux[name], aux[name], rtol=1e-5, atol=1e-7)
        for g, c in zip(jax.tree.leaves(grads), jax.tree.leaves(c_grads), strict=True):
            np.testing.assert_allclose(c, g, rtol=1e-4, atol=1e-6)


@pytest.mark.slow
def test_loss_chunks_shrink_the_saved_activations():
    def temp_bytes(config):
        state = jax.vmap(functools.partial(init_state, config))(
            jax.random.split(jax.random.key(0), 4)
        )
        step = jax.vmap(functools.partial(train_step, config))
        keys = jax.random.split(jax.random.key(1), 4)
        return jax.jit(step).lower(state, keys).compile().memory_analysis().temp_size_in_bytes

    config = pgjax.Config(num_envs=64, num_steps=500)
    whole, chunked = temp_bytes(config), temp_bytes(config.replace(loss_chunks=10))
    assert chunked < whole / 3, (chunked, whole)


def test_metrics_shapes_and_no_placeholder_before_first_episode():
    config = pgjax.Config(num_envs=4, num_steps=3, total_timesteps=4 * 3 * 12)
    _, metrics = run(config)
    chex.assert_shape(jax.tree.leaves(metrics), (2, 12))
    ret, episodes = np.asarray(metrics.episode_return), np.asarray(metrics.episodes)
    # No CartPole episode ends within 6 steps: NaN there, never a 0 placeholder.
    assert np.all(np.isnan(ret[:, :2]))
    np.testing.assert_array_equal(episodes[:, :2], 0)
    assert np.isfinite(ret[:, -1]).all() and (ret[np.isfinite(ret)] >= 6).all()
    # Updates with no finished episode repeat the latest mean.
    for s in range(2):
        for j in range(1, 12):
            if episodes[s, j] == 0 and np.isfinite(ret[s, j - 1]):
                assert ret[s, j] == ret[s, j - 1]


def test_diverged_flags_a_non_finite_value_of_each_kind_in_its_own_run_only():
    loss, norm = np.zeros((5, 3), np.float32), np.ones((5, 3), np.float32)
    params = {"w": np.zeros((5, 2, 2), np.float32), "b": np.zeros((5, 2), np.float32)}
    loss[1, 2] = np.nan
    norm[2, 0] = np.inf
    params["w"][3, 1, 0] = -np.inf
    params["b"][4, 1] = np.nan
    expected = np.array([False, True, True, True, True])
    np.testing.assert_array_equal(diverged(loss, norm, params), expected)
    np.testing.assert_array_equal(jax.jit(diverged)(loss, norm, params), expected)
    np.testing.assert_array_equal(diverged(loss[:, :0], norm[:, :0], {}), np.zeros(5, bool))


def test_same_seed_bitwise_and_other_seed_differs():
    a, b, c = run(SMALL), run(SMALL), run(SMALL, seed=1)
    assert_bitwise(a, b)
    assert not np.array_equal(a[1].loss, c[1].loss)


def test_chunked_equals_single_scan():
    init = jax.jit(jax.vmap(functools.partial(init_state, SMALL)))
    chunk = lambda n: jax.jit(jax.vmap(functools.partial(train_chunk, SMALL, num_updates=n)))
    keys = jax.random.split(jax.random.key(0), 2)
    whole_state, whole = chunk(4)(init(keys))
    state, first = chunk(2)(init(keys))
    state, second = chunk(2)(state)
    assert_bitwise(whole_state, state)
    assert_bitwise(whole, jax.tree.map(lambda x, y: jnp.concatenate([x, y], 1), first, second))


def test_train_traces_once():
    @jax.jit
    @chex.assert_max_traces(n=1)
    def step(state, key):
        return train_step(SMALL, state, key)

    state = init_state(SMALL, jax.random.key(0))
    for i in range(3):
        state, _ = step(state, jax.random.key(i))


def test_vmap_over_config_leaves_matches_single_runs():
    lrs = jnp.array([1e-3, 3e-2])
    configs = jax.vmap(lambda lr: SMALL.replace(lr=lr))(lrs)
    key = jax.random.key(0)
    _, grid = jax.jit(jax.vmap(pgjax.train, in_axes=(0, None)))(configs, key)
    for i, lr in enumerate([1e-3, 3e-2]):
        _, single = jax.jit(pgjax.make_train(SMALL.replace(lr=lr)))(key)
        np.testing.assert_allclose(grid.loss[i], single.loss, rtol=1e-5, atol=1e-6)
    assert not np.allclose(grid.loss[0], grid.loss[1])


def test_vmap_over_leaves_reaches_components_given_by_keyword():
    """A grid over GAE's λ with an env object: `train(config, key, env=...)` builds inside the
    trace, so each λ trains its own GAE; prebuilt `parts` keep the λ they were built with."""
    env = pgjax.Env("CartPole-v1")
    base = SMALL.replace(estimator="gae")
    configs = jax.vmap(lambda lam: base.replace(gae_lambda=lam))(jnp.array([0.0, 1.0]))
    key = jax.random.key(0)
    _, grid = jax.jit(jax.vmap(functools.partial(pgjax.train, env=env), in_axes=(0, None)))(
        configs, key)
    for i, lam in enumerate([0.0, 1.0]):
        _, single = jax.jit(pgjax.make_train(base.replace(gae_lambda=lam), env=env))(key)
        np.testing.assert_allclose(grid.loss[i], single.loss, rtol=1e-5, atol=1e-6)
    assert not np.allclose(grid.loss[0], grid.loss[1])
    parts = pgjax.build(base, env=env)
    _, frozen = jax.jit(jax.vmap(functools.partial(pgjax.train, parts=parts), in_axes=(0, None)))(
        configs, key)
    np.testing.assert_array_equal(frozen.loss[0], frozen.loss[1])
    with pytest.raises(TypeError, match="train takes parts or components, not both"):
        pgjax.train(base, key, parts, env=env)


@pytest.mark.parametrize("overrides, message", [
    ({"gamma": 1.5}, "gamma must be in [0, 1], got 1.5"),
    ({"lr": "0.01"}, "lr must be a number, got '0.01'"),
    ({"ent_coef": True}, "ent_coef must be a number, got True"),
    ({"hidden": 16}, "hidden must be a tuple of integers, got 16"),
])
def test_train_checks_a_concrete_config(overrides, message):
    with pytest.raises(ValueError) as error:
        pgjax.train(SMALL.replace(**overrides), jax.random.key(0))
    assert str(error.value) == message


def test_bootstrap_reads_final_observation_at_truncation():
    config = SMALL.replace(baseline="value", window="bootstrap", gamma=0.9)
    parts = pgjax.build(config)
    params = init_state(config, jax.random.key(0)).params
    T, B, D = 4, 2, parts.env.obs_dim
    obs = jax.random.normal(jax.random.key(1), (T, B, D))
    final_obs = jax.random.normal(jax.random.key(2), (T, B, D))
    truncated = jnp.zeros((T, B), bool).at[1, 0].set(True)
    terminated = jnp.zeros((T, B), bool).at[2, 1].set(True)
    batch = pgjax.Transition(
        obs=obs, action=jnp.zeros((T, B), jnp.int32), log_prob=jnp.zeros((T, B)),
        reward=jnp.ones((T, B)), terminated=terminated, truncated=truncated,
        episode_t=jnp.zeros((T, B), jnp.int32), final_obs=final_obs,
        episode_return=jnp.zeros((T, B)),
    )
    last_obs = jax.random.normal(jax.random.key(3), (B, D))
    value_fn = functools.partial(parts.value.apply, params["value"])
    returns = lambda batch: returns_and_mask(
        batch, 0.9, window="bootstrap", max_episode_steps=500, value_fn=value_fn,
        last_obs=last_obs,
    )
    g, mask = returns(batch)
    v = lambda o: float(value_fn(o))
    assert mask is None
    np.testing.assert_allclose(g[1, 0], 1 + 0.9 * v(final_obs[1, 0]), rtol=1e-5)
    np.testing.assert_allclose(g[2, 1], 1.0, rtol=1e-6)  # termination: no future value
    np.testing.assert_allclose(g[3, 0], 1 + 0.9 * v(last_obs[0]), rtol=1e-5)
    # final_obs where the episode did not end is never read
    moved = batch._replace(final_obs=final_obs.at[0, 0].set(100.0))
    np.testing.assert_array_equal(g, returns(moved)[0])


def test_complete_window_masks_unfinished_tail():
    config = SMALL
    parts = pgjax.build(config)
    state = init_state(config, jax.random.key(0))
    policy = functools.partial(parts.policy.apply, state.params["policy"])
    _, batch = pgjax.rollout(jax.random.key(1), parts.env, policy, state.runner, 50)
    _, mask = returns_and_mask(batch, 0.99, window="complete", max_episode_steps=500)
    done = np.asarray(batch.done)
    for b in range(done.shape[1]):
        ends = np.flatnonzero(done[:, b])
        last = ends[-1] if ends.size else -1
        np.testing.assert_array_equal(mask[:, b], np.arange(50) <= last)


# Learning on small budgets: thresholds that fail when learning breaks.


@pytest.mark.slow
def test_cartpole_solves_on_8_seeds():
    _, metrics = run(pgjax.Config(), seeds=8)
    final = np.asarray(metrics.episode_return[:, -1])
    assert final.min() >= 475, final


@pytest.mark.slow
def test_catch_learns():
    config = pgjax.Config(
        env="Catch-bsuite", num_envs=64, num_steps=18, total_timesteps=64 * 18 * 100, lr=2e-2
    )
    _, metrics = run(config, seeds=4)
    final = np.asarray(metrics.episode_return[:, -1])
    assert final.mean() >= 0.8, final


@pytest.mark.slow
def test_pendulum_improves():
    config = pgjax.Config(
        env="Pendulum-v1", num_envs=32, num_steps=200, total_timesteps=32 * 200 * 200,
        baseline="value", window="truncate", gamma=0.9,
    )
    _, metrics = run(config, seeds=4)
    ret = np.asarray(metrics.episode_return)
    first, last = ret[:, :5].mean(), ret[:, -5:].mean()
    assert last > first + 150, (first, last)


def test_rbg_keys_are_refused():
    with pytest.raises(ValueError, match="threefry2x32"):
        init_state(SMALL, jax.random.key(0, impl="unsafe_rbg"))


def optimizer_steps(config, value_norms):
    """Policy and value updates of three optimizer steps: the same policy gradients each time,
    value gradients of the given norms."""
    params = init_state(config, jax.random.key(0)).params
    rng = np.random.default_rng(0)

    def like(tree, norm):
        g = jax.tree.map(lambda x: jnp.asarray(rng.normal(size=x.shape), x.dtype), tree)
        return jax.tree.map(lambda x: x * norm / optax.tree.norm(g), g)

    policy_grads = [like(params["policy"], n) for n in (0.3, 0.05, 0.5)]
    value_grads = [like(params["value"], n) for n in value_norms]
    optimizer = pgjax.make_optimizer(config)
    opt_state, updates = optimizer.init(params), []
    for p, v in zip(policy_grads, value_grads, strict=True):
        update, opt_state = optimizer.update({"policy": p, "value": v}, opt_state, params)
        updates.append(update)
    return updates


def test_per_network_clip_keeps_the_policy_step_from_the_value_gradient():
    config = SMALL.replace(baseline="value", lr_schedule="constant", max_grad_norm=1.0)
    big_then_small, small_then_big = (1e3, 1e-3, 1e2), (1e-3, 1e3, 1e-3)
    a = optimizer_steps(config, big_then_small)
    b = optimizer_steps(config, small_then_big)
    for ua, ub in zip(a, b, strict=True):
        assert_bitwise(ua["policy"], ub["policy"])
    # The value net's Adam step is scaled by value_coef.
    half = optimizer_steps(config.replace(value_coef=0.5), big_then_small)
    whole = optimizer_steps(config.replace(value_coef=1.0), big_then_small)
    for h, w in zip(half, whole, strict=True):
        chex.assert_trees_all_close(h["value"], jax.tree.map(lambda x: 0.5 * x, w["value"]))
    # One global norm: a large value gradient shrinks the policy's share of the clip, and
    # Adam does not undo a scale that changes from step to step.
    config = config.replace(clip="global")
    a = optimizer_steps(config, big_then_small)
    b = optimizer_steps(config, small_then_big)
    for ua, ub in zip(a[1:], b[1:], strict=True):
        diff = optax.tree.norm(jax.tree.map(jnp.subtract, ua["policy"], ub["policy"]))
        assert float(diff / optax.tree.norm(ub["policy"])) > 0.2


def test_a_run_record_without_new_fields_reads_as_before_them():
    fields = pgjax.config.to_dict(pgjax.Config(baseline="value"))
    del fields["clip"], fields["conv_impl"], fields["group_restart"]
    old = pgjax.config.from_dict(fields, record=True)
    assert (old.clip, old.conv_impl, old.group_restart) == ("global", "lax", "window")
    new = pgjax.config.from_dict(fields)  # a spec or TOML file: today's defaults
    assert (new.clip, new.conv_impl, new.group_restart) == ("per-network", "patches", "group")
    assert pgjax.config.from_dict({**fields, "clip": "per-network"}, record=True).clip \
        == "per-network"
    # total-return trained a recorded baseline "value" as none; a new config refuses the pair.
    total = {**fields, "estimator": "total-return"}
    assert pgjax.config.from_dict(total, record=True).baseline == "none"
    assert pgjax.config.from_dict(total).baseline == "value"


# Several passes over a batch: update_epochs × minibatches optimizer steps per rollout.

PASSES = SMALL.replace(update_epochs=2, minibatches=4, clip_eps=0.2)


def test_minibatch_indices_partition_every_env_once_per_pass():
    seen = []
    for seed in range(5):
        idx = np.asarray(pgjax.minibatch_indices(jax.random.key(seed), 12, 3))
        assert idx.shape == (3, 4)
        np.testing.assert_array_equal(np.sort(idx.ravel()), np.arange(12))
        seen.append(idx.ravel().tolist())
    assert len({tuple(s) for s in seen}) == 5  # reshuffled by the pass's key


def test_with_one_pass_clip_and_kl_change_nothing():
    # The ratio is 1 on the only pass, so the plain loss runs: the program of a config
    # without the fields, bitwise.
    assert_bitwise(run(SMALL), run(SMALL.replace(clip_eps=0.2, kl_coef=0.5)))


def test_passes_equal_a_hand_written_loop():
    config = PASSES.replace(estimator="gae", baseline="value", kl_coef=0.3, lr_schedule="constant")
    parts = pgjax.build(config)
    state = init_state(config, jax.random.key(0))
    step_key = jax.random.key(1)
    new, metrics = jax.jit(train_step, static_argnums=(0, 3))(config, state, step_key, parts)

    from pgjax.train import estimate, slice_loss

    key, passes_key = jax.random.split(step_key)
    policy = functools.partial(parts.policy.apply, state.params["policy"])
    runner, batch = rollout(key, parts.env, policy, state.runner, config.num_steps)
    values = parts.value.apply(state.params["value"], batch.obs)
    targets = estimate(state.params, config, parts, batch, runner.obs, values)
    optimizer = pgjax.make_optimizer(config)
    params, opt_state, losses = state.params, state.opt_state, []
    for epoch_key in jax.random.split(passes_key, config.update_epochs):
        for env_ids in pgjax.minibatch_indices(epoch_key, config.num_envs, config.minibatches):
            piece = jax.tree.map(lambda x, ids=env_ids: x[:, ids], (batch, targets))
            (loss, _), grads = jax.value_and_grad(slice_loss, has_aux=True)(
                params, config, parts, *piece, None, state.params)
            updates, opt_state = optimizer.update(grads, opt_state, params)
            params = optax.apply_updates(params, updates)
            losses.append(loss)
    assert len(losses) == 8
    chex.assert_trees_all_close(new.params, params, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(metrics.loss, np.mean(losses), rtol=1e-5)
    assert float(metrics.approx_kl) > 0 and 0 <= float(metrics.clip_fraction) < 1


def test_passes_take_the_loss_chunks_gradient():
    config = PASSES.replace(num_envs=4, minibatches=2, num_steps=60, baseline="value",
                            estimator="gae", kl_coef=0.1)
    state = init_state(config, jax.random.key(0))
    step = jax.jit(train_step, static_argnums=(0,))
    whole, _ = step(config, state, jax.random.key(1))
    sliced, _ = step(config.replace(loss_chunks=3), state, jax.random.key(1))
    chex.assert_trees_all_close(whole.params, sliced.params, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("overrides", [
    {"estimator": "grpo", "group_size": 4, "num_steps": 500, "kl_coef": 0.04},
    {"network": "gru", "hidden": (16, 16), "kl_coef": 0.1},
    {"env": "Pendulum-v1", "estimator": "gae", "baseline": "value", "kl_coef": 0.1},
])
def test_passes_compose_with_groups_recurrent_and_gaussian_policies(overrides):
    config = PASSES.replace(**overrides)
    config = config.replace(total_timesteps=config.steps_per_update * 2)
    state, metrics = run(config)
    chex.assert_tree_all_finite((state.params, metrics.loss, metrics.approx_kl))
    assert np.all(np.asarray(metrics.approx_kl) > 0)


def test_passes_are_refused_for_an_estimator_with_its_own_gradient():
    with pytest.raises(ValueError, match="one pass over each batch"):
        pgjax.make_train(PASSES.replace(estimator="optimal-baseline", num_steps=500,
                                        total_timesteps=8 * 500))
    with pytest.raises(ValueError, match="minibatches=3 must divide num_envs=8"):
        pgjax.make_train(SMALL.replace(minibatches=3))
    with pytest.raises(ValueError, match=r"clip_eps must be in \[0, 1\)"):
        pgjax.make_train(PASSES.replace(clip_eps=1.5))


@pytest.mark.slow
def test_ppo_with_gae_solves_cartpole():
    # gymnax's PPO-MLP CartPole setting (4 envs × 128 steps, 4 epochs × 4 minibatches) at a
    # fifth of its budget.
    config = pgjax.Config(estimator="gae", baseline="value", num_envs=4, num_steps=128,
                          total_timesteps=100_352, update_epochs=4, minibatches=4,
                          clip_eps=0.2, ent_coef=0.01, lr=2.5e-4, hidden=(64, 64),
                          max_grad_norm=0.5)
    _, metrics = run(config, seeds=4)
    final = np.asarray(metrics.episode_return[:, -5:]).mean(1)
    assert np.median(final) >= 150, final


@pytest.mark.parametrize("key", [0, np.int64(3), np.array([1, 2], np.int32)])
def test_a_seed_where_a_key_belongs_is_one_line(key):
    train = pgjax.make_train(pgjax.Config(num_envs=4, num_steps=10, total_timesteps=80))
    with pytest.raises(TypeError, match=r"^key must be a JAX PRNG key, e.g. jax.random.key\(seed"
                       r"\) or pgjax.seed_keys\(seed, seeds\)\[i\]; got int(32|64)?$"):
        train(key)
