"""The objects a trainer is built from, and the one place a config's strings become them.

`build(config, env=..., policy=..., value=..., estimator=...)` returns `Components`; whatever is
not passed is made from the config's fields (env id, network, hidden sizes, baseline, window,
...), and the whole is validated before anything compiles. `make_train`, the CLI, sweeps,
`reproduce` and every host runner go through it.
"""

import dataclasses
import functools
import json
import re
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from pgjax.config import FIELDS, Config, first_line, is_int, plain
from pgjax.envs import Env
from pgjax.estimators import (
    GAE,
    Estimator,
    EstimatorInputs,
    GroupRelative,
    OptimalBaseline,
    ReturnToGo,
    TotalReturn,
)
from pgjax.losses import Targets
from pgjax.policies import (
    CategoricalPolicy,
    ConvTorso,
    Flatten,
    GaussianPolicy,
    GRUPolicy,
    ValueNet,
    init_policy,
    initial_carry,
    is_recurrent,
    policy_over_time,
    step_policy,
)
from pgjax.rollout import Transition


class Components(NamedTuple):
    """What a training run is made of (all static: closed over by the jitted program)."""

    env: Env  # batched gymnax environment
    policy: nn.Module  # obs [..., *obs_shape] -> distribution (sample, log_prob, entropy),
    # or a recurrent policy (carry, obs, first) -> (carry, distribution)
    value: nn.Module | None  # obs [..., *obs_shape] -> V [...]; None unless the estimator uses V
    estimator: Estimator  # batch -> losses.Targets


class ComponentError(ValueError):
    """A component that does not fit the others or the config (one-line message)."""


def as_env(env: Any) -> Env:
    """A `pgjax.Env` from an Env, a gymnax Environment (default params) or (Environment, params)."""
    if isinstance(env, Env):
        return env
    if isinstance(env, tuple) and len(env) == 2:
        return Env(type(env[0]).__name__, env=env[0], params=env[1])
    if hasattr(env, "step") and hasattr(env, "reset") and hasattr(env, "default_params"):
        return Env(type(env).__name__, env=env)
    raise ComponentError(
        f"env must be a pgjax.Env, a gymnax Environment or (Environment, params), "
        f"got {type(env).__name__}"
    )


def describe_given(components: dict[str, Any]) -> dict:
    """What a run's or sweep's record keeps of the components the caller gave (None: not given).

    {"given": sorted names, then per given name: the env's name (and "env_params", its params
    as JSON), the policy's, value net's and estimator's class and settings as one line
    (`_described`; and "estimator_uses_value")}; {"given": []} when the config made them all.
    """
    given = {name: x for name, x in components.items() if x is not None}
    out: dict[str, Any] = {"given": sorted(given)}
    for name, x in given.items():
        if name == "env":
            env = as_env(x)
            out[name], out["env_params"] = env.name, env_params(env)
        elif name == "estimator":
            out[name] = _described(x)
            out["estimator_uses_value"] = bool(getattr(x, "uses_value", False))
        else:
            out[name] = _described(x)
    return out


def env_params(env: Env) -> dict:
    """An env's params as they are recorded: {leaf path: JSON value (a nested list for an
    array, null for NaN or ±inf, text for anything else)}."""
    out = {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(env.params)[0]:
        if isinstance(leaf, jax.Array) and jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key):
            leaf = jax.random.key_data(leaf)
        value = np.asarray(leaf) if not isinstance(leaf, str) else None
        out[jax.tree_util.keystr(path).lstrip(".")] = (
            _described(leaf) if value is None or value.dtype == object else value.tolist())
    return json.loads(json.dumps(plain(out, nulls=True)))


_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")


def _described(x: Any) -> str:
    """x's class and settings in one line: a flax module as Class(field=value, ...), anything
    else as its repr; without the addresses of objects shown by identity ("<X object at
    0x7f...>"), which differ in every process, and with such an object's attributes after it."""
    if isinstance(x, nn.Module):
        names = [f.name for f in dataclasses.fields(x) if f.name not in ("parent", "name")]
        settings = ", ".join(f"{n}={_described(getattr(x, n))}" for n in names)
        text = f"{type(x).__name__}({settings})"
    else:
        text = repr(x)
        if " at 0x" in text and getattr(x, "__dict__", None):
            text += " with " + ", ".join(f"{k}={v!r}" for k, v in sorted(vars(x).items()))
    return _ADDRESS.sub("", " ".join(text.split()))


def given_differences(recorded: dict, now: dict) -> list[tuple[str, str, str]]:
    """(component, recorded, now) for each component that `recorded` (a `describe_given`
    record, also one written before addresses were dropped or env params kept) and `now` (of
    the components given) describe differently; env params by the first leaf that differs."""
    out = []
    for name in sorted(set(recorded.get("given", [])) | set(now.get("given", []))):
        then, given = (_ADDRESS.sub("", str(d.get(name, "not given"))) for d in (recorded, now))
        if name in ("policy", "value") and "(" not in then:
            given = given.split("(", 1)[0]  # a record that kept the class name alone
        if then != given:
            out.append((name, then, given))
        elif name == "env" and "env_params" in recorded:
            a, b = recorded["env_params"], now.get("env_params", {})
            leaf = next((k for k in {**a, **b} if a.get(k) != b.get(k)), None)
            if leaf is not None:
                out.append(("env params", *(_short(f"{leaf}={d.get(leaf)}") for d in (a, b))))
    return out


def _short(text: str, width: int = 80) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def make_estimator(config: Config) -> Estimator:
    """The built-in estimator that `config.estimator` names, with the config's settings."""
    normalize = config.normalize_advantages
    if config.estimator == "reward-to-go":
        return ReturnToGo(config.baseline, config.window, config.gamma_weighting, normalize)
    if config.estimator == "total-return":
        return TotalReturn(config.baseline, config.window, normalize)
    if config.estimator == "gae":
        return GAE(config.gae_lambda, normalize)
    if config.estimator == "optimal-baseline":
        return OptimalBaseline()
    return GroupRelative(config.estimator, config.group_size, normalize, config.group_restart)


# The config fields that only some built-in estimators read, and which of them each reads.
ESTIMATOR_FIELDS = ("baseline", "window", "gamma_weighting", "gae_lambda", "group_size",
                    "group_restart", "normalize_advantages")
READS = {
    "reward-to-go": ("baseline", "window", "gamma_weighting", "normalize_advantages"),
    "total-return": ("baseline", "window", "normalize_advantages"),
    "gae": ("gae_lambda", "normalize_advantages"),
    "optimal-baseline": (),
    **{name: ("group_size", "group_restart", "normalize_advantages")
       for name in ("rloo", "grpo", "dr-grpo")},
}


def unused_fields(config: Config) -> list[str]:
    """The estimator settings set off their defaults that `config.estimator` does not read
    (e.g. baseline with estimator="gae"): a run that sets them trains as if it did not."""
    default = Config()
    return [name for name in ESTIMATOR_FIELDS
            if name not in READS[config.estimator]
            and getattr(config, name) != getattr(default, name)]


def idle_fields(config: Config) -> dict[str, list[str]]:
    """The settings set off their defaults that change nothing in `config`, by why: "estimator
    E does not read" (`unused_fields`), "without a value net" (value_coef, clip), "without
    network cnn" (conv_impl) and with one pass over each batch (clip_eps, kl_coef: the ratio
    is 1 there)."""
    default = Config()
    off = [name for name in FIELDS if getattr(config, name) != getattr(default, name)]
    out = {f"estimator {config.estimator} does not read": unused_fields(config)}
    if not make_estimator(config).uses_value:
        out["without a value net"] = [n for n in ("value_coef", "clip") if n in off]
    if config.network != "cnn":
        out["without network cnn"] = [n for n in ("conv_impl",) if n in off]
    if config.passes == 1:
        out["with one pass over each batch (update_epochs = minibatches = 1)"] = [
            n for n in ("clip_eps", "kl_coef") if n in off]
    return {why: names for why, names in out.items() if names}


def torso(config: Config, env: Env) -> nn.Module | None:
    """The feature extractor of `config.network` for this env's observations."""
    if config.network == "cnn":
        if len(env.obs_shape) != 3:
            raise ComponentError(
                f"network='cnn' needs image observations [H, W, C]; {env.name} has "
                f"observations of shape {env.obs_shape}"
            )
        return ConvTorso(impl=config.conv_impl)
    return None if len(env.obs_shape) == 1 else Flatten(len(env.obs_shape))


def build(
    config: Config,
    *,
    env: Any = None,
    policy: nn.Module | None = None,
    value: nn.Module | None = None,
    estimator: Estimator | None = None,
    validate: bool = True,
) -> Components:
    """Components of a run: those given, the rest made from the config's fields.

    Args:
      config: the run's config; its strings decide every component not given.
      env: a `pgjax.Env`, a gymnax Environment, or (Environment, params); default
        `Env(config.env)`.
      policy: a flax module, obs -> distribution (or a recurrent one, see `pgjax.policies`);
        default an MLP (a CNN with network="cnn", a GRU with network="gru") with a categorical
        or diagonal Gaussian head for the env's action space.
      value: a flax module, obs -> V(s); default `ValueNet` when the estimator uses a value.
      estimator: default the built-in one that `config.estimator` names (`make_estimator`).
      validate: check the config and the components together (`check`); off inside a traced
        function, where the config's leaves are tracers.

    Raises:
      ValueError: one line naming the first problem (with validate).
    """
    if not isinstance(config, Config):
        raise ComponentError(f"config must be a pgjax.Config, got {type(config).__name__}")
    for name, given in (("env", env), ("policy", policy), ("value", value),
                        ("estimator", estimator)):
        if isinstance(given, type):
            raise ComponentError(f"{name}= takes an instance ({given.__name__}(...)), not the "
                                 f"class {given.__name__}")
        if name in ("policy", "value") and given is not None and not (
                callable(getattr(given, "init", None)) and callable(getattr(given, "apply", None))):
            raise ComponentError(f"{name}= takes a flax module (with init and apply), got "
                                 f"{type(given).__name__}")
    if validate:
        config.validate()
    own_policy = policy is not None
    env = Env(config.env) if env is None else as_env(env)
    if estimator is None:
        estimator = make_estimator(config)
    elif not callable(estimator) or not isinstance(getattr(estimator, "uses_value", None), bool):
        raise ComponentError(
            f"the estimator {type(estimator).__name__} needs uses_value: bool and "
            f"__call__(EstimatorInputs) -> Targets (see pgjax.estimators)"
        )
    if policy is None:
        features = torso(config, env)
        if config.network == "gru":
            policy = GRUPolicy(config.hidden, env.num_actions, env.continuous,
                               config.init_log_std, features)
        elif env.continuous:
            policy = GaussianPolicy(config.hidden, env.num_actions, config.init_log_std, features)
        else:
            policy = CategoricalPolicy(config.hidden, env.num_actions, features)
    if value is None and estimator.uses_value:
        value = ValueNet(config.hidden, torso(config, env))
    components = Components(env, policy, value, estimator)
    if validate:
        check(config, components, own_policy=own_policy)
    return components


def check(config: Config, components: Components, *, own_policy: bool = False) -> None:
    """Validate a config's env-dependent rules and the components before anything compiles.

    Abstract evaluation (`jax.eval_shape`, no compile) runs the policy and value nets on one
    observation of the env's shape: a network that cannot take it, a policy output without
    `sample`/`log_prob`/`entropy`, or a log_prob or value of the wrong shape fails here. The
    estimator runs the same way on a batch of the run's shape [T, B] and must return `Targets`
    of that shape.

    Args:
      config: the run's config (already `Config.validate`d).
      components: from `build`.
      own_policy: the policy is the caller's, so the config's policy settings (init_log_std)
        do not apply to it.

    Raises:
      ValueError: one line naming the first problem.
    """
    env, policy, value, estimator = components
    if not own_policy and not env.continuous and config.init_log_std != Config.init_log_std:
        raise ComponentError(
            f"init_log_std applies to continuous actions only; {env.name} is discrete"
        )
    if hasattr(estimator, "check"):
        estimator.check(env, config)
    group = getattr(estimator, "group_size", None)
    if group is not None and (not is_int(group) or group < 1 or config.num_envs % group):
        raise ComponentError(
            f"the estimator {type(estimator).__name__} has group_size {group!r}; it must be a "
            f"positive integer dividing num_envs={config.num_envs}"
        )
    if config.passes > 1 and hasattr(estimator, "episode_terms"):
        raise ComponentError(
            f"the estimator {type(estimator).__name__} makes its own gradient (episode_terms), "
            f"so it takes one pass over each batch: update_epochs = minibatches = 1"
        )
    if estimator.uses_value and value is None:
        raise ComponentError(f"{type(estimator).__name__} uses a value net; pass value=")
    if value is not None and not estimator.uses_value:
        raise ComponentError(
            f"a value net was given but {type(estimator).__name__} does not use one"
        )
    obs = jax.ShapeDtypeStruct((1, *env.obs_shape), jnp.float32)
    key = jax.random.key(0)
    policy_dist = functools.partial(_policy_dist, policy)
    dist = _abstract(policy_dist, obs, "policy", env)
    for method in ("sample", "log_prob", "entropy"):
        if not callable(getattr(dist, method, None)):
            order = (", and a recurrent one (carry, obs, first) to (carry, distribution), in "
                     "that order" if is_recurrent(policy) else "")
            raise ComponentError(
                f"the policy returned {_kind(dist)}, which has no {method}(); a policy maps "
                f"observations to a distribution{order} (see pgjax.policies)"
            )
    if config.passes > 1 and config.kl_coef != 0 and not callable(getattr(dist, "kl", None)):
        raise ComponentError(
            f"kl_coef needs the policy's distribution to have kl(other) (exact KL); "
            f"{_kind(dist)} has none"
        )
    sample = _abstract(lambda o: policy_dist(o).sample(key), obs, "policy", env)
    if getattr(sample, "shape", None) != (1, *env.action_shape):
        raise ComponentError(
            f"the policy samples a batch of 1 action of shape {getattr(sample, 'shape', None)}; "
            f"{env.name}'s is {(1, *env.action_shape)}"
        )
    _check_env(env, jax.ShapeDtypeStruct(env.action_shape, sample.dtype))
    logits = getattr(getattr(dist, "logits", None), "shape", None)
    if not env.continuous and logits is not None and logits[-1:] != (env.num_actions,):
        raise ComponentError(
            f"the policy's logits for a batch of 1 have shape {logits}; {env.name} has "
            f"{env.num_actions} actions"
        )
    action = jnp.zeros((1, *env.action_shape), jnp.float32 if env.continuous else jnp.int32)
    log_prob = _abstract(lambda o: policy_dist(o).log_prob(action), obs, "policy", env)
    if getattr(log_prob, "shape", None) != (1,):
        raise ComponentError(
            f"the policy's log_prob of a batch of 1 action has shape "
            f"{getattr(log_prob, 'shape', None)}, expected (1,)"
        )
    # The loss applies a feedforward policy to a whole [T, B, *obs] batch at once (a recurrent
    # one scans over T): a policy that reshapes by its batch size breaks only there. T ≠ B, so
    # that a mix-up of the two axes shows.
    over_time = jax.ShapeDtypeStruct((2, 3, *env.obs_shape), jnp.float32)

    def batch_log_prob(o):
        params = init_policy(policy, key, o[0])
        dist = policy_over_time(policy, params, o, jnp.ones((2, 3), bool),
                                initial_carry(policy, (3,)))
        return dist.log_prob(jnp.zeros((2, 3, *env.action_shape), action.dtype))

    hint = (", as the loss applies it to a [T, B] batch at once: it must act on the "
            "observation's axes only (see pgjax.Flatten)")
    log_prob = _abstract(batch_log_prob, over_time, "policy", env, hint)
    if getattr(log_prob, "shape", None) != (2, 3):
        raise ComponentError(f"the policy's log_prob of [T, B] = [2, 3] observations has shape "
                             f"{getattr(log_prob, 'shape', None)}, not (2, 3){hint}")
    if value is not None:
        v = _abstract(lambda o: value.apply(value.init(key, o), o), obs, "value net", env)
        if getattr(v, "shape", None) != (1,):
            raise ComponentError(
                f"the value net maps a batch of 1 observation to shape "
                f"{getattr(v, 'shape', None)}, expected (1,)"
            )
    _check_targets(config, components, sample.dtype)


def _check_env(env: Env, action: jax.ShapeDtypeStruct) -> None:
    """Reset and step one copy of the env abstractly, as `Env` calls gymnax's functions, with
    an action of the policy's shape and dtype: a step that is not gymnax 1.0's six values, an
    info without `final_observation`, or observations of another size than the observation
    space's fail here, as one line."""
    key = jax.random.key(0)
    name = f"the env {env.name}"

    def observations(what: str, obs: Any) -> None:
        size = int(np.prod(getattr(obs, "shape", (-1,))))
        if size != env.obs_dim:
            raise ComponentError(f"{name} {what} of shape {getattr(obs, 'shape', None)}; its "
                                 f"observation space says {env.obs_shape}")

    try:
        obs, state = jax.eval_shape(lambda k: env.env.reset(k, env.params), key)
    except Exception as e:  # JAX and gymnax raise many types
        raise ComponentError(f"{name} fails to reset: {first_line(e)}") from None
    observations("resets to observations", obs)
    try:
        out = jax.eval_shape(lambda k, s, a: env.env.step(k, s, a, env.params), key, state,
                             action)
    except Exception as e:
        raise ComponentError(f"{name} fails to step with an action of shape {action.shape} and "
                             f"dtype {action.dtype} (the policy's): {first_line(e)}") from None
    if not (isinstance(out, tuple) and len(out) == 6):
        count = f"{len(out)} values" if isinstance(out, tuple) else _kind(out)
        raise ComponentError(f"{name}'s step returns {count}; a gymnax 1.0 env returns six: "
                             f"obs, state, reward, terminated, truncated, info")
    observations("steps to observations", out[0])
    info = out[5]
    if not isinstance(info, dict) or "final_observation" not in info:
        raise ComponentError(
            f"{name}'s step info has no 'final_observation' (the observation before gymnax's "
            f"automatic reset, from which a cut episode is bootstrapped)")
    observations("has final observations", info["final_observation"])


def _check_targets(config: Config, components: Components, action_dtype) -> None:
    """Run the estimator abstractly on a batch of the run's shape [T, B] (as `rollout` makes
    it, actions of the policy's dtype): it must return `Targets` whose returns and advantages
    are [T, B] and whose mask and weights are [T, B] or None."""
    env, estimator = components.env, components.estimator
    shape = (config.num_steps, config.num_envs)
    array = lambda *tail, dtype=jnp.float32: jax.ShapeDtypeStruct((*shape, *tail), dtype)
    batch = Transition(
        obs=array(*env.obs_shape), action=array(*env.action_shape, dtype=action_dtype),
        log_prob=array(), reward=array(), terminated=array(dtype=bool),
        truncated=array(dtype=bool), episode_t=array(dtype=jnp.int32),
        final_obs=array(*env.obs_shape), episode_return=array(),
        policy_carry=jax.eval_shape(lambda: initial_carry(components.policy, shape)),
    )
    last_obs = jax.ShapeDtypeStruct((config.num_envs, *env.obs_shape), jnp.float32)
    values = array() if estimator.uses_value else None
    value_fn = None
    if estimator.uses_value:
        value_fn = lambda obs: jnp.zeros(obs.shape[: obs.ndim - len(env.obs_shape)])
    name = type(estimator).__name__

    def targets(batch, last_obs, values):
        inputs = EstimatorInputs(batch, last_obs, config.gamma, values, value_fn,
                                 env.max_episode_steps)
        return estimator(inputs)

    try:
        out = jax.eval_shape(targets, batch, last_obs, values)
    except Exception as e:  # JAX raises many types for an estimator that does not trace
        raise ComponentError(f"the estimator {name} fails on a batch of shape {shape}: "
                             f"{first_line(e)}") from None
    if not isinstance(out, Targets):
        raise ComponentError(f"the estimator {name} returned {type(out).__name__}; it must "
                             f"return pgjax.losses.Targets(returns, advantages, mask, weights)")
    for field, leaf in out._asdict().items():
        if (leaf is not None or field in ("returns", "advantages")) and (
                getattr(leaf, "shape", None) != shape):
            raise ComponentError(
                f"the estimator {name} returned {field} of shape "
                f"{getattr(leaf, 'shape', None)} for a batch of shape {shape}; expected {shape}"
                + ("" if field in ("returns", "advantages") else " or None")
            )


def check_greedy(components: Components) -> None:
    """Raise a one-line ComponentError unless the policy's distribution has `mode()`, the
    action greedy evaluation plays."""
    obs = jax.ShapeDtypeStruct((1, *components.env.obs_shape), jnp.float32)
    dist = _abstract(functools.partial(_policy_dist, components.policy), obs, "policy",
                     components.env)
    if not callable(getattr(dist, "mode", None)):
        raise ComponentError(
            f"the policy returned {_kind(dist)}, which has no mode(); greedy evaluation plays "
            f"the mode"
        )


def _kind(dist) -> str:
    """What an abstractly evaluated policy returned, for a message: its class, or "an array"."""
    return "an array" if isinstance(dist, jax.ShapeDtypeStruct) else type(dist).__name__


def _policy_dist(policy: nn.Module, obs: jax.Array):
    """The distribution of a freshly initialised `policy` (either kind) on `obs` [1, ...]."""
    key = jax.random.key(0)
    carry = initial_carry(policy, (1,))
    return step_policy(policy, init_policy(policy, key, obs), carry, obs, jnp.ones(1, bool))[1]


def _abstract(fn, obs: jax.ShapeDtypeStruct, what: str, env: Env, hint: str = ""):
    """`jax.eval_shape(fn, obs)`, any failure reported as one line naming obs's batch axes."""
    try:
        return jax.eval_shape(fn, obs)
    except Exception as e:  # flax/JAX raise many types for a shape that does not fit
        reason = first_line(e)
        batch = ", ".join(map(str, obs.shape[:obs.ndim - len(env.obs_shape)]))
        if isinstance(e, TypeError) and "not a valid JAX type" in reason:
            raise ComponentError(
                f"the {what} returns a value that is not a pytree of arrays; make its "
                f"distribution a NamedTuple or flax.struct.dataclass (as pgjax.Categorical is)"
            ) from None
        raise ComponentError(
            f"the {what} cannot take {env.name} observations of shape {env.obs_shape} "
            f"(batched [{batch}, ...]){hint}: {reason}"
        ) from None
