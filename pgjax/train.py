"""The REINFORCE train step and the training loop: pure functions of (config, key)."""

import functools
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from pgjax.config import Config
from pgjax.envs import Env
from pgjax.losses import masked_mean, normalize, reinforce_loss, value_loss
from pgjax.policies import CategoricalPolicy, GaussianPolicy, ValueNet
from pgjax.returns import complete_episode_mask, discounted_returns, episode_start_mask
from pgjax.rollout import RunnerState, Transition, init_runner, rollout


class TrainState(NamedTuple):
    """Everything a run carries between updates (add a leading axis per vmapped seed)."""

    params: dict  # {"policy": ..., "value": ...}; "value" only with baseline="value"
    opt_state: Any  # optax state of clip-by-global-norm + Adam
    runner: RunnerState  # env states, observations and running episode statistics
    key: jax.Array  # PRNG key for the next update
    update: jax.Array  # () int32, updates done so far
    last_return: jax.Array  # () float32, mean return of the latest finished episodes; NaN before


class Metrics(NamedTuple):
    """Scalars of one update (stacked to [num_updates] by the scan)."""

    episode_return: jax.Array  # mean return of episodes finished in this rollout, else last; NaN
    episodes: jax.Array  # number of episodes finished in this rollout
    loss: jax.Array  # total loss
    policy_loss: jax.Array
    value_loss: jax.Array
    entropy: jax.Array
    grad_norm: jax.Array  # global norm before clipping


class Networks(NamedTuple):
    env: Env
    policy: nn.Module
    value: nn.Module | None


def make_networks(config: Config) -> Networks:
    env = Env(config.env)
    if env.continuous:
        policy = GaussianPolicy(config.hidden, env.num_actions, config.init_log_std)
    else:
        policy = CategoricalPolicy(config.hidden, env.num_actions)
    value = ValueNet(config.hidden) if config.baseline == "value" else None
    return Networks(env, policy, value)


def make_optimizer(config: Config) -> optax.GradientTransformation:
    """Clip by global norm, then Adam with a constant or linearly decaying learning rate."""
    lr = config.lr
    if config.lr_schedule == "linear":
        lr = optax.linear_schedule(config.lr, 0.0, config.num_updates)
    return optax.chain(optax.clip_by_global_norm(config.max_grad_norm), optax.adam(lr))


def returns_and_mask(
    params: dict, config: Config, nets: Networks, batch: Transition, last_obs: jax.Array
) -> tuple[jax.Array, jax.Array | None]:
    """Returns-to-go G_t [T, B] (held constant) and the step mask for `config.window`.

    With window="bootstrap" the cut episodes are completed with the learned value: V(last_obs)
    after the window and V(final_obs) at time-limit truncation; termination adds nothing.
    """
    if config.window == "bootstrap":
        v = lambda obs: jax.lax.stop_gradient(nets.value.apply(params["value"], obs))
        returns = discounted_returns(
            batch.reward, batch.done, config.gamma, v(last_obs),
            truncated=batch.truncated, truncation_values=v(batch.final_obs),
        )
    else:
        returns = discounted_returns(batch.reward, batch.done, config.gamma)
    mask = None
    if config.window == "complete":
        mask = complete_episode_mask(batch.done)
    elif config.window == "episodes":
        last_start = config.num_steps - nets.env.max_episode_steps
        if last_start < 0:
            raise ValueError(f"window='episodes' needs num_steps ≥ {nets.env.max_episode_steps}")
        mask = episode_start_mask(batch.episode_t, last_start)
    return returns, mask


class Targets(NamedTuple):
    """Per-step constants of the loss (no gradient flows into them), leaves [T, B]."""

    returns: jax.Array  # G_t, regression target of the value net
    advantages: jax.Array  # G_t − b_t, normalized if configured
    mask: jax.Array | None  # 1 where step t counts (window), None for all
    weights: jax.Array | None  # γ^t with gamma_weighting, else None


def loss_targets(
    params: dict,
    config: Config,
    nets: Networks,
    batch: Transition,
    last_obs: jax.Array,
    values: jax.Array | None,
) -> Targets:
    """Returns, advantages, mask and weights for the loss; `values` [T, B] with baseline="value"."""
    returns, mask = returns_and_mask(params, config, nets, batch, last_obs)
    if config.baseline == "value":
        advantages = returns - jax.lax.stop_gradient(values)
    elif config.baseline == "mean":
        advantages = returns - masked_mean(returns, mask)
    else:
        advantages = returns
    if config.normalize_advantages:
        advantages = normalize(advantages, mask)
    weights = config.gamma ** batch.episode_t if config.gamma_weighting else None
    return Targets(returns, advantages, mask, weights)


def loss_fn(
    params: dict, config: Config, nets: Networks, batch: Transition, last_obs: jax.Array
) -> tuple[jax.Array, dict]:
    """REINFORCE loss with the configured window, baseline, weights and bonuses.

    Args:
      params: {"policy": ..., "value": ...}.
      config: hyperparameters.
      nets: the env and the networks.
      batch: time-major rollout [T, B, ...].
      last_obs: [B, D] observation after the window, bootstrapped from with window="bootstrap".

    Returns:
      (loss, metrics): loss = policy_loss + value_coef · value_loss − ent_coef · entropy.
    """
    dist = nets.policy.apply(params["policy"], batch.obs)
    log_prob = dist.log_prob(batch.action)
    entropy = jnp.mean(dist.entropy())
    values = None
    if config.baseline == "value":
        values = nets.value.apply(params["value"], batch.obs)
    targets = loss_targets(params, config, nets, batch, last_obs, values)
    v_loss = jnp.zeros(())
    if config.baseline == "value":
        v_loss = value_loss(values, targets.returns, targets.mask)

    pg_loss = reinforce_loss(
        log_prob, targets.advantages, mask=targets.mask, weights=targets.weights
    )
    loss = pg_loss + config.value_coef * v_loss - config.ent_coef * entropy
    return loss, {"policy_loss": pg_loss, "value_loss": v_loss, "entropy": entropy}


def chunk_loss(
    params: dict,
    config: Config,
    nets: Networks,
    obs: jax.Array,
    action: jax.Array,
    coef: dict,
    entropy_scale: float,
) -> tuple[jax.Array, dict]:
    """One time chunk's share of `loss_fn`, which is a sum of per-step terms.

    With constants c_t = A_t w_t m_t / Σm: policy_loss = −Σ_t c_t log π(a_t|s_t),
    value_loss = Σ_t ½ m_t / Σm (V(s_t) − G_t)², entropy = entropy_scale · Σ_t H(π(·|s_t))
    with entropy_scale = 1 / (T·B) of the whole batch.
    """
    dist = nets.policy.apply(params["policy"], obs)
    pg_loss = -jnp.sum(coef["policy"] * dist.log_prob(action))
    entropy = jnp.sum(dist.entropy()) * entropy_scale
    v_loss = jnp.zeros(())
    if config.baseline == "value":
        values = nets.value.apply(params["value"], obs)
        v_loss = jnp.sum(coef["value"] * (values - coef["returns"]) ** 2)
    loss = pg_loss + config.value_coef * v_loss - config.ent_coef * entropy
    return loss, {"policy_loss": pg_loss, "value_loss": v_loss, "entropy": entropy}


def loss_and_grad(
    params: dict, config: Config, nets: Networks, batch: Transition, last_obs: jax.Array
) -> tuple[tuple[jax.Array, dict], dict]:
    """`jax.value_and_grad(loss_fn, has_aux=True)`, accumulated over `config.loss_chunks`.

    With loss_chunks = K > 1 the targets are computed on the whole batch, then the gradient of
    each of K time chunks [T/K, B] is taken in a `lax.scan` and summed: the activations saved
    for the backward pass are those of one chunk, not of the whole batch. Same gradient up to
    float rounding (summation order). With baseline="value" the value net also runs once over
    the whole batch (no gradient) for the advantages, which are normalized over all of it.
    """
    if config.loss_chunks == 1:
        return jax.value_and_grad(loss_fn, has_aux=True)(params, config, nets, batch, last_obs)
    values = None
    if config.baseline == "value":
        values = jax.lax.stop_gradient(nets.value.apply(params["value"], batch.obs))
    targets = loss_targets(params, config, nets, batch, last_obs, values)
    mask = 1.0 if targets.mask is None else targets.mask
    weights = 1.0 if targets.weights is None else targets.weights
    shape = batch.reward.shape
    count = jnp.maximum(jnp.sum(jnp.broadcast_to(mask, shape)), 1.0)
    coef = {"policy": jax.lax.stop_gradient(targets.advantages * weights * mask / count)}
    if config.baseline == "value":
        coef["value"] = jnp.broadcast_to(0.5 * mask / count, shape)
        coef["returns"] = jax.lax.stop_gradient(targets.returns)
    k = config.loss_chunks
    split = lambda x: x.reshape(k, x.shape[0] // k, *x.shape[1:])
    grad_fn = jax.value_and_grad(chunk_loss, has_aux=True)

    def accumulate(total, chunk):
        out = grad_fn(params, config, nets, *chunk, 1.0 / (shape[0] * shape[1]))
        return jax.tree.map(jnp.add, total, out), None

    scalar = jnp.zeros(())
    aux = {"policy_loss": scalar, "value_loss": scalar, "entropy": scalar}
    zeros = ((scalar, aux), jax.tree.map(jnp.zeros_like, params))
    chunks = jax.tree.map(split, (batch.obs, batch.action, coef))
    return jax.lax.scan(accumulate, zeros, chunks)[0]


def init_state(config: Config, key: jax.Array) -> TrainState:
    """Fresh parameters, optimizer state and environments for one seed.

    Raises ValueError for rbg / unsafe_rbg keys: under vmap they draw every seed's bits from
    the first key (jax#19085), so seeds would not be independent or reproducible alone.
    """
    if str(jax.random.key_impl(key)) in ("rbg", "unsafe_rbg"):
        raise ValueError("pgjax needs threefry2x32 keys; rbg keys are not independent under vmap")
    nets = make_networks(config)
    key, k_env, k_policy, k_value = jax.random.split(key, 4)
    dummy = jnp.zeros((1, nets.env.obs_dim), jnp.float32)
    params = {"policy": nets.policy.init(k_policy, dummy)}
    if nets.value is not None:
        params["value"] = nets.value.init(k_value, dummy)
    return TrainState(
        params=params,
        opt_state=make_optimizer(config).init(params),
        runner=init_runner(k_env, nets.env, config.num_envs),
        key=key,
        update=jnp.zeros((), jnp.int32),
        last_return=jnp.full((), jnp.nan, jnp.float32),
    )


def train_step(config: Config, state: TrainState, key: jax.Array) -> tuple[TrainState, Metrics]:
    """One update: rollout, returns and loss, gradient, optimizer step."""
    nets = make_networks(config)
    policy = functools.partial(nets.policy.apply, state.params["policy"])
    runner, batch = rollout(
        key, nets.env, policy, state.runner, config.num_steps, unroll=config.unroll
    )

    (loss, aux), grads = loss_and_grad(state.params, config, nets, batch, runner.obs)
    updates, opt_state = make_optimizer(config).update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)

    episodes, finished_mean = batch.finished_episodes()
    last_return = jnp.where(episodes > 0, finished_mean, state.last_return)

    state = TrainState(params, opt_state, runner, state.key, state.update + 1, last_return)
    metrics = Metrics(last_return, episodes, loss, grad_norm=optax.tree.norm(grads), **aux)
    return state, metrics


def train_chunk(
    config: Config, state: TrainState, num_updates: int
) -> tuple[TrainState, Metrics]:
    """`num_updates` train steps in one `lax.scan`; metrics [num_updates]. Chunks compose."""

    def body(state: TrainState, _):
        key, step_key = jax.random.split(state.key)
        return train_step(config, state._replace(key=key), step_key)

    return jax.lax.scan(body, state, None, length=num_updates)


def train(config: Config, key: jax.Array) -> tuple[TrainState, Metrics]:
    """A whole run for one seed: init, then `config.num_updates` updates. Pure and jittable."""
    return train_chunk(config, init_state(config, key), config.num_updates)


def make_train(config: Config):
    """Returns `train(key) -> (TrainState, Metrics)`, so `jax.jit(jax.vmap(train))(keys)` works."""
    config.validate()
    return functools.partial(train, config)
