"""The REINFORCE train step and the training loop: pure functions of (config, key, components)."""

import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from pgjax.components import Components, build
from pgjax.config import Config, is_int
from pgjax.estimators import EstimatorInputs
from pgjax.losses import Targets, policy_gradient_loss
from pgjax.policies import init_policy, policy_over_time
from pgjax.rollout import RecurrentRunnerState, RunnerState, Transition, init_runner, rollout

# Seed keys, sharded key generation and resume depend on how threefry splits keys: pinned to
# the partitionable scheme (JAX's default since 0.5) so that a JAX whose default differs draws
# the same bits. A config flag only: importing pgjax still starts no backend.
jax.config.update("jax_threefry_partitionable", True)


class TrainState(NamedTuple):
    """Everything a run carries between updates (add a leading axis per vmapped seed)."""

    params: dict  # {"policy": ..., "value": ...}; "value" only with a value net
    opt_state: Any  # optax state of `make_optimizer` (clip by norm + Adam)
    runner: RunnerState | RecurrentRunnerState  # env states, observations, episode statistics
    key: jax.Array  # PRNG key for the next update
    update: jax.Array  # () int32, updates done so far
    last_return: jax.Array  # () float32, mean return of the latest finished episodes; NaN before


class Metrics(NamedTuple):
    """Scalars of one update (stacked to [num_updates] by the scan). With several passes over
    the batch (`Config.passes`), the losses, entropy, gradient norm and ratio statistics are
    means over its optimizer steps."""

    episode_return: jax.Array  # mean return of episodes finished in this rollout, else last; NaN
    episodes: jax.Array  # number of episodes finished in this rollout
    loss: jax.Array  # total loss
    policy_loss: jax.Array
    value_loss: jax.Array
    entropy: jax.Array
    grad_norm: jax.Array  # global norm before clipping
    trained_fraction: jax.Array  # fraction of the batch's env steps the policy loss uses
    approx_kl: jax.Array  # estimated KL(π_old ‖ π_θ) on the batch's steps (0 with one pass)
    clip_fraction: jax.Array  # fraction of steps whose ratio the clip cut (0 with one pass)


def diverged(loss: jax.Array, grad_norm: jax.Array, params) -> jax.Array:
    """[runs] bool: the runs that diverged, a non-finite loss or gradient norm at any update or
    non-finite parameters.

    loss, grad_norm: [runs, updates]; params: a pytree of [runs, ...] arrays. Reduced where the
    arrays live, so a sharded sweep moves only the [runs] flags to the host.
    """
    finite = [jnp.isfinite(x).reshape(x.shape[0], -1).all(1)
              for x in (loss, grad_norm, *jax.tree.leaves(params))]
    return ~jnp.stack(finite, 1).all(1)


def check_seed(seed: int) -> int:
    """`seed` if it is an integer in [0, 2**32); a ValueError otherwise.

    jax.random.key keeps only a seed's low 32 bits (without jax_enable_x64, which pgjax does
    not set), so -1 would train as 4294967295 and 2**32 as 0: two names for one run.
    """
    if not is_int(seed) or not 0 <= seed < 2**32:
        hint = f": it would be seed {seed % 2**32}" if is_int(seed) else ""
        raise ValueError(f"seed must be an integer in [0, 2**32), got {seed!r}{hint}")
    return seed


def seed_keys(seed: int, seeds: int, *, stream: str = "train") -> jax.Array:
    """[seeds] PRNG keys of a run: seed i's key for `stream`.

    "train": jax.random.split(jax.random.key(seed), seeds)[i], what `pgjax train --seed S
    --seeds N` and sweeps give seed i. "eval": the same split of a key folded with a constant,
    a stream that shares no key with training.
    """
    key = jax.random.key(seed)
    if stream == "eval":
        key = jax.random.fold_in(key, 0x6576616C)  # "eval"
    elif stream != "train":
        raise ValueError(f"unknown key stream {stream!r}")
    return jax.random.split(key, seeds)


def make_optimizer(config: Config) -> optax.GradientTransformation:
    """Gradient clipping by norm, then Adam with a constant or linearly decaying learning rate.

    clip="global": one norm over all parameters. clip="per-network": the policy's and the value
    net's gradients are clipped on their own, and the value net's update is scaled by value_coef.
    """
    lr = config.lr
    if config.lr_schedule == "linear":  # to 0 at the last optimizer step of the run
        lr = optax.linear_schedule(config.lr, 0.0, config.num_updates * config.passes)
    clip_adam = optax.chain(optax.clip_by_global_norm(config.max_grad_norm), optax.adam(lr))
    if config.clip == "global":
        return clip_adam
    value = optax.chain(clip_adam, optax.scale(config.value_coef))
    return optax.multi_transform(
        {"policy": clip_adam, "value": value}, lambda params: {net: net for net in params}
    )


def estimate(
    params: dict,
    config: Config,
    parts: Components,
    batch: Transition,
    last_obs: jax.Array,
    values: jax.Array | None = None,
) -> Targets:
    """The estimator's targets for `batch`; `values` [T, B] V(s_t) with a value net (None: the
    value net of `params` runs on the batch here)."""
    value_fn = None
    if parts.value is not None:
        value_fn = lambda obs: jax.lax.stop_gradient(parts.value.apply(params["value"], obs))
        if values is None:
            values = parts.value.apply(params["value"], batch.obs)
        values = jax.lax.stop_gradient(values)
    inputs = EstimatorInputs(
        batch, last_obs, config.gamma, values, value_fn, parts.env.max_episode_steps
    )
    return parts.estimator(inputs)


def loss_fn(
    params: dict, config: Config, parts: Components, batch: Transition, last_obs: jax.Array
) -> tuple[jax.Array, dict]:
    """The training loss of one batch: the estimator's targets, then `policy_gradient_loss`.

    Args:
      params: {"policy": ..., "value": ...}.
      config: hyperparameters (gamma, value_coef, ent_coef are read here).
      parts: env, networks and estimator.
      batch: time-major rollout [T, B, ...].
      last_obs: [B, *obs_shape] observation after the window (bootstrapping estimators use it).

    Returns:
      (loss, metrics): loss = policy_loss + value_coef · value_loss − ent_coef · entropy.
    """
    values = None
    if parts.value is not None:
        values = parts.value.apply(params["value"], batch.obs)
    targets = estimate(params, config, parts, batch, last_obs, values)
    return targets_loss(params, config, parts, batch, targets, values)


def targets_loss(
    params: dict,
    config: Config,
    parts: Components,
    batch: Transition,
    targets: Targets,
    values: jax.Array | None,
    counts: tuple[jax.Array, int] | None = None,
    behaviour: dict | None = None,
) -> tuple[jax.Array, dict]:
    """`policy_gradient_loss` of the policy on `batch` against the estimator's `targets`;
    `values` [T, B] V(s_t) (None without a value net), `counts` as there. With `behaviour`, the
    params that collected the batch, the policy loss is the clipped ratio surrogate against
    the recorded log-probabilities, plus `kl_coef` · KL(π_old ‖ π_θ) where kl_coef is not 0."""
    dist = batch_dist(parts, params, batch)
    ratio = {}
    if behaviour is not None:
        kl = None
        if isinstance(config.kl_coef, jax.core.Tracer) or config.kl_coef != 0:
            kl = batch_dist(parts, behaviour, batch).kl(dist)
        ratio = dict(behaviour_log_prob=batch.log_prob, clip_eps=config.clip_eps, kl=kl,
                     kl_coef=config.kl_coef)
    return policy_gradient_loss(
        dist.log_prob(batch.action), dist.entropy(), values, targets,
        value_coef=config.value_coef, ent_coef=config.ent_coef, counts=counts, **ratio,
    )


def batch_dist(parts: Components, params: dict, batch: Transition):
    """The policy's distributions [T, B] on a batch (a recurrent one replays it from the carry
    the window started with, resetting at episode starts)."""
    carry = None if batch.policy_carry is None else batch.policy_carry[0]
    return policy_over_time(
        parts.policy, params["policy"], batch.obs, batch.episode_t == 0, carry
    )


def slice_loss(
    params: dict,
    config: Config,
    parts: Components,
    batch: Transition,
    targets: Targets,
    counts: tuple[jax.Array, int] | None = None,
    behaviour: dict | None = None,
) -> tuple[jax.Array, dict]:
    """`targets_loss` with the value net run here, on targets made beforehand (on the whole
    batch: `counts` then gives this time slice's share)."""
    values = None if parts.value is None else parts.value.apply(params["value"], batch.obs)
    return targets_loss(params, config, parts, batch, targets, values, counts, behaviour)


def loss_and_grad(
    params: dict, config: Config, parts: Components, batch: Transition, last_obs: jax.Array
) -> tuple[tuple[jax.Array, dict], dict]:
    """`jax.value_and_grad(loss_fn, has_aux=True)`, accumulated over `config.loss_chunks`.

    With loss_chunks = K > 1 the targets are made on the whole batch (the value net runs once
    over it without gradient), then the gradient is accumulated over K time slices
    (`chunked_grad`).
    """
    if hasattr(parts.estimator, "episode_terms"):
        return episode_loss_and_grad(params, config, parts, batch, last_obs)
    if config.loss_chunks == 1:
        return jax.value_and_grad(loss_fn, has_aux=True)(params, config, parts, batch, last_obs)
    targets = estimate(params, config, parts, batch, last_obs)
    return chunked_grad(params, config, parts, batch, targets)


def chunked_grad(
    params: dict,
    config: Config,
    parts: Components,
    batch: Transition,
    targets: Targets,
    behaviour: dict | None = None,
) -> tuple[tuple[jax.Array, dict], dict]:
    """`jax.value_and_grad(slice_loss, has_aux=True)` summed over `config.loss_chunks` time
    slices [T/K, B] in a `lax.scan`: the activations saved for the backward pass are those of
    one slice, not of the whole batch. Same loss and gradient as one slice of everything, up
    to float rounding (summation order). A recurrent policy starts each slice from the carry
    recorded there, so its gradient is truncated at the slice boundaries (it does not flow
    into the previous slice)."""
    k = config.loss_chunks
    if k == 1:
        return jax.value_and_grad(slice_loss, has_aux=True)(
            params, config, parts, batch, targets, None, behaviour)
    shape = batch.reward.shape
    mask = jnp.ones(shape) if targets.mask is None else targets.mask
    counts = (jnp.maximum(jnp.sum(mask), 1.0), shape[0] * shape[1])
    targets = jax.tree.map(lambda x: jnp.broadcast_to(x, shape), targets)
    split = lambda x: x.reshape(k, x.shape[0] // k, *x.shape[1:])
    grad_fn = jax.value_and_grad(slice_loss, has_aux=True)
    piece_grad = lambda piece: grad_fn(params, config, parts, *piece, counts, behaviour)

    def accumulate(total, piece):
        return jax.tree.map(jnp.add, total, piece_grad(piece)), None

    pieces = jax.tree.map(split, (batch, targets))
    shapes = jax.eval_shape(piece_grad, jax.tree.map(lambda x: x[0], pieces))
    zeros = jax.tree.map(lambda x: jnp.zeros(x.shape, x.dtype), shapes)
    return jax.lax.scan(accumulate, zeros, pieces)[0]


def minibatch_indices(key: jax.Array, num_envs: int, minibatches: int) -> jax.Array:
    """[M, B/M] env indices: a random partition of the B envs into M equal minibatches, so
    each pass over a batch uses every env once."""
    return jax.random.permutation(key, num_envs).reshape(minibatches, -1)


def update_passes(
    state: "TrainState",
    config: Config,
    parts: Components,
    batch: Transition,
    last_obs: jax.Array,
    key: jax.Array,
) -> tuple[dict, Any, tuple[jax.Array, dict], jax.Array]:
    """`config.update_epochs` passes over one batch, each `config.minibatches` optimizer steps.

    The estimator's targets are made once, with the params that collected the batch (their V);
    each pass splits the envs into minibatches of whole time series (`minibatch_indices`, from
    this pass's key) and takes one step per minibatch on the clipped ratio surrogate
    (`targets_loss` with `behaviour`), its gradient accumulated over `loss_chunks`.

    Returns:
      (params, opt_state, (loss, aux), grad_norm), the last three means over the steps.
    """
    behaviour = state.params
    data = (batch, estimate(behaviour, config, parts, batch, last_obs))
    optimizer = make_optimizer(config)

    def step(carry, env_ids):
        params, opt_state = carry
        piece = data if env_ids is None else jax.tree.map(lambda x: x[:, env_ids], data)
        (loss, aux), grads = chunked_grad(params, config, parts, *piece, behaviour)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), opt_state), (loss, aux,
                                                                   optax.tree.norm(grads))

    def epoch(carry, key):
        if config.minibatches == 1:
            return step(carry, None)
        return jax.lax.scan(step, carry, minibatch_indices(key, batch.reward.shape[1],
                                                           config.minibatches))

    keys = jax.random.split(key, config.update_epochs)
    (params, opt_state), out = jax.lax.scan(epoch, (state.params, state.opt_state), keys)
    loss, aux, grad_norm = jax.tree.map(jnp.mean, out)
    return params, opt_state, (loss, aux), grad_norm


def episode_loss_and_grad(
    params: dict, config: Config, parts: Components, batch: Transition, last_obs: jax.Array
) -> tuple[tuple[jax.Array, dict], dict]:
    """`loss_and_grad` for an estimator with `episode_terms` (its own baseline per parameter).

    Each env's episode score ∇θ Σ_t m_t log π(a_t|s_t) comes from a `vmap` of `grad` over envs;
    the policy gradient is minus the mean of the estimator's terms, plus the entropy bonus's
    gradient. The loss and its parts, for the metrics, are `policy_gradient_loss` of the
    estimator's targets (as `loss_fn` reports them), from the same forward pass as the bonus.
    """
    targets = estimate(params, config, parts, batch, last_obs)

    def bonus(policy_params):  # −ent_coef · entropy, with the loss of the targets for metrics
        loss, aux = targets_loss({"policy": policy_params}, config, parts, batch, targets, None)
        return -config.ent_coef * aux["entropy"], (loss, aux)

    def episode_score(policy_params, episode, mask):  # one env's [T] steps
        return jnp.sum(mask * batch_dist(parts, {"policy": policy_params}, episode)
                       .log_prob(episode.action))

    (_, (loss, aux)), bonus_grad = jax.value_and_grad(bonus, has_aux=True)(params["policy"])
    scores = jax.vmap(jax.grad(episode_score), in_axes=(None, 1, 1))(
        params["policy"], batch, targets.mask)
    terms = parts.estimator.episode_terms(scores, targets)
    policy = jax.tree.map(lambda t, e: -jnp.mean(t, 0) + e, terms, bonus_grad)
    return (loss, aux), {**params, "policy": policy}


def group_rule(estimator: Any) -> tuple[int | None, str | None]:
    """(group_size, restart) of an estimator: how the trainer restarts its envs. (None, None)
    without a `group_size`; restart is "window" (every window resets every env, the estimators
    written before rounds existed) unless the estimator says "group"."""
    group_size = getattr(estimator, "group_size", None)
    if group_size is None:
        return None, None
    return group_size, getattr(estimator, "restart", "window")


def init_state(config: Config, key: jax.Array, parts: Components | None = None) -> TrainState:
    """Fresh parameters, optimizer state and environments for one seed.

    The seed's key splits once, `key, k_env, k_policy, k_value = jax.random.split(key, 4)`:
    k_env resets the environments, k_policy and k_value initialise the networks, and `key` is
    the state's, which each update splits again into the next state's key and its step key
    (`train_chunk`).

    `parts` default to `build(config)`. Raises TypeError for a key that is not a PRNG key (an
    int seed: make one with `jax.random.key(seed)` or `seed_keys`), and ValueError for rbg /
    unsafe_rbg keys: under vmap they draw every seed's bits from the first key (jax#19085), so
    seeds would not be independent or reproducible alone.
    """
    dtype = getattr(key, "dtype", None)
    if not (dtype is not None and jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key)
            or (dtype == jnp.uint32 and jnp.shape(key)[-1:] == (2,))):
        raise TypeError(f"key must be a JAX PRNG key, e.g. jax.random.key(seed) or "
                        f"pgjax.seed_keys(seed, seeds)[i]; got {dtype or type(key).__name__}")
    if str(jax.random.key_impl(key)) in ("rbg", "unsafe_rbg"):
        raise ValueError("pgjax needs threefry2x32 keys; rbg keys are not independent under vmap")
    parts = build(config, validate=False) if parts is None else parts
    group_size, restart = group_rule(parts.estimator)
    key, k_env, k_policy, k_value = jax.random.split(key, 4)
    dummy = jnp.zeros((1, *parts.env.obs_shape), jnp.float32)
    params = {"policy": init_policy(parts.policy, k_policy, dummy)}
    if parts.value is not None:
        params["value"] = parts.value.init(k_value, dummy)
    return TrainState(
        params=params,
        opt_state=make_optimizer(config).init(params),
        runner=init_runner(k_env, parts.env, config.num_envs, policy=parts.policy,
                           group_size=group_size if restart == "group" else 1),
        key=key,
        update=jnp.zeros((), jnp.int32),
        last_return=jnp.full((), jnp.nan, jnp.float32),
    )


def train_step(
    config: Config, state: TrainState, key: jax.Array, parts: Components | None = None
) -> tuple[TrainState, Metrics]:
    """One update: rollout, returns and loss, gradient, optimizer step (or, with
    `config.passes` > 1, the steps of `update_passes`).

    Args:
      config: the run's config.
      state: the training state (`init_state`); its `key` is passed through unchanged.
      key: this update's randomness (actions, env steps, the window's resets when the
        estimator has a `group_size`, and the minibatch shuffles with several passes). A
        loop of steps must give each a fresh key, as `train_chunk` does:
        `key, step_key = jax.random.split(state.key)`, then
        `train_step(config, state._replace(key=key), step_key, parts)`.
      parts: from `build`; None builds them from `config`.

    Returns:
      (state after the update, its `Metrics`).
    """
    parts = build(config, validate=False) if parts is None else parts
    policy = functools.partial(parts.policy.apply, state.params["policy"])
    runner = state.runner
    group_size, restart = group_rule(parts.estimator)
    if restart == "window":  # every window starts afresh, K envs per start state
        key, reset_key = jax.random.split(key)
        runner = init_runner(
            reset_key, parts.env, config.num_envs, group_size=group_size, policy=parts.policy
        )
    if config.passes > 1:
        key, passes_key = jax.random.split(key)
    runner, batch = rollout(key, parts.env, policy, runner, config.num_steps, unroll=config.unroll,
                            group_size=group_size if restart == "group" else None)

    if config.passes == 1:
        (loss, aux), grads = loss_and_grad(state.params, config, parts, batch, runner.obs)
        updates, opt_state = make_optimizer(config).update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        grad_norm = optax.tree.norm(grads)
    else:
        params, opt_state, (loss, aux), grad_norm = update_passes(
            state, config, parts, batch, runner.obs, passes_key)

    episodes, finished_mean = batch.finished_episodes()
    last_return = jnp.where(episodes > 0, finished_mean, state.last_return)

    state = TrainState(params, opt_state, runner, state.key, state.update + 1, last_return)
    metrics = Metrics(last_return, episodes, loss, grad_norm=grad_norm, **aux)
    return state, metrics


def train_chunk(
    config: Config, state: TrainState, num_updates: int, parts: Components | None = None
) -> tuple[TrainState, Metrics]:
    """`num_updates` train steps in one `lax.scan`; metrics [num_updates]. Chunks compose."""
    parts = build(config, validate=False) if parts is None else parts

    def body(state: TrainState, _):
        key, step_key = jax.random.split(state.key)
        return train_step(config, state._replace(key=key), step_key, parts)

    return jax.lax.scan(body, state, None, length=num_updates)


def train(
    config: Config, key: jax.Array, parts: Components | None = None, **components
) -> tuple[TrainState, Metrics]:
    """A whole run for one seed: init, then `config.num_updates` updates. Pure and jittable.

    Args:
      config: hyperparameters, checked by `Config.validate` (its traced leaves, such as a
        vmapped grid's, are not: check those where the grid is made).
      key: the seed's PRNG key.
      parts: `build`'s components, used as built: a config leaf they were built with (GAE's λ,
        init_log_std) stays at that value even when `config` is vmapped.
      **components: env=, policy=, value=, estimator= instead of `parts`: `build` runs inside
        the trace, so that a vmapped config's leaves reach what it makes. Neither: the config's
        built-in components, likewise. `make_train` also checks the components before any
        compile; this does not.

    Example: a grid over GAE's λ with your own env, in one program:

        configs = jax.vmap(lambda lam: config.replace(gae_lambda=lam))(jnp.array([0.9, 0.99]))
        jax.vmap(functools.partial(pgjax.train, env=env), in_axes=(0, None))(configs, key)
    """
    config.validate()
    if parts is None:
        parts = build(config, validate=False, **components)
    elif components:
        raise TypeError(f"train takes parts or components, not both (got {', '.join(components)})")
    return train_chunk(config, init_state(config, key, parts), config.num_updates, parts)


def make_train(config: Config, **components):
    """`train(key) -> (TrainState, Metrics)` for `config` and the given components.

    Args:
      config: hyperparameters; validated here.
      **components: env=, policy=, value=, estimator= (see `pgjax.components.build`); those
        omitted are made from the config's fields.

    Returns:
      A pure function of one PRNG key, so `jax.jit(jax.vmap(train))(keys)` trains many seeds.

    Raises:
      ValueError: one line, for a config or component that does not fit, before any compile.
    """
    return functools.partial(train, config, parts=build(config, **components))
