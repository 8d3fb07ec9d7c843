"""gymnax environments behind a batched interface that keeps the observation's shape.

A name `SUITE:NAME` (`brax:hopper`, `craftax:Craftax-Classic-Symbolic-v1`, ...) is an env of
another JAX suite, adapted to the same interface in `pgjax.suites`; a name without a colon is
a gymnax id. The only gymnax import of the training path besides those adapters (exact.py
builds its tabular MDP on gymnax's Environment class). gymnax is imported on first use, not
with pgjax: its import takes ~1.5 s (seaborn, scipy) and starts the JAX backend, which must
stay free until the user has set up JAX (e.g. `jax.distributed.initialize`).
"""

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from pgjax import suites
from pgjax.config import closest


class Step(NamedTuple):
    """One batched env step (gymnax ≥ 1.0 semantics), leaves [B, ...]."""

    obs: jax.Array  # [B, *obs_shape] float32, after auto-reset
    state: Any  # gymnax env state, leaves [B, ...]
    reward: jax.Array  # [B] float32
    terminated: jax.Array  # [B] bool, natural end: zero future value
    truncated: jax.Array  # [B] bool, time limit (and not terminated)
    final_obs: jax.Array  # [B, *obs_shape] float32, info["final_observation"]: obs before reset


class Env:
    """A gymnax environment with float32 observations of shape `obs_shape`, vmapped over B copies.

    Pass a registered name (a gymnax id, or `SUITE:NAME` of a suite in `pgjax.suites`), or
    `env` and `params` of any gymnax-compatible environment (then `name` labels it; `params`
    defaults to `env.default_params`). Observations keep their shape (MinAtar: [10, 10, C]);
    flattening is the network's job. The action space must be
    `Discrete` or `Box`. Hashable, so it can be closed over by jitted functions: two Envs are equal
    when they have the same name, environment class, instance attributes and params.
    """

    def __init__(self, name: str, env: Any = None, params: Any = None):
        import gymnax
        from gymnax.environments import spaces

        if env is None and suites.split(name) is not None:
            env, params = suites.make(name)
        elif env is None:
            check_env_name(name)
            try:
                env, params = gymnax.make(name)
            except OSError as e:  # MNISTBandit-bsuite downloads MNIST when first made
                reason = getattr(e, "reason", None) or e.strerror or e
                raise OSError(f"gymnax could not make {name}, which downloads its data when "
                              f"first made ({reason})") from None
        elif params is None:
            params = env.default_params
        self.name = name
        self.env, self.params = env, params
        space = self.env.action_space(self.params)
        obs_space = self.env.observation_space(self.params)
        if not isinstance(getattr(obs_space, "shape", None), tuple | list):
            raise ValueError(f"{name}: observation space {type(obs_space).__name__} has no shape; "
                             f"pgjax takes array observations (Box or Discrete)")
        self.obs_shape = tuple(int(n) for n in obs_space.shape)
        self.obs_dim = int(np.prod(self.obs_shape))  # size of a flattened observation
        if not hasattr(self.params, "max_steps_in_episode"):
            raise ValueError(f"{name}: its params have no max_steps_in_episode, the episode "
                             f"limit of gymnax's EnvParams, which pgjax reads")
        self.max_episode_steps = int(self.params.max_steps_in_episode)
        self.continuous = isinstance(space, spaces.Box)
        if self.continuous:
            self.action_shape = tuple(space.shape)
            self.num_actions = int(np.prod(space.shape))
            self.action_low = jnp.broadcast_to(jnp.asarray(space.low, jnp.float32), space.shape)
            self.action_high = jnp.broadcast_to(jnp.asarray(space.high, jnp.float32), space.shape)
        elif isinstance(space, spaces.Discrete):
            self.action_shape = ()
            self.num_actions = int(space.n)
        else:
            raise ValueError(
                f"{name}: action space {type(space).__name__} is not supported (Discrete or Box)"
            )

    def _key(self) -> tuple:
        leaves, treedef = jax.tree.flatten(self.params)
        return (self.name, type(self.env), fingerprint(vars(self.env)), treedef,
                tuple(fingerprint(x) for x in leaves))

    def __hash__(self):
        return hash(self._key())

    def __eq__(self, other):
        return isinstance(other, Env) and other._key() == self._key()

    def _obs(self, obs: jax.Array) -> jax.Array:
        return jnp.asarray(obs, jnp.float32).reshape(self.obs_shape)

    def reset(self, key: jax.Array, num_envs: int) -> tuple[jax.Array, Any]:
        """Reset `num_envs` copies: returns obs [B, *obs_shape] float32 and the batched state."""

        return self.reset_each(jax.random.split(key, num_envs))

    def reset_each(self, keys: jax.Array) -> tuple[jax.Array, Any]:
        """Reset one copy per key of `keys` [B]: obs [B, *obs_shape] and the batched state."""

        def one(k):
            obs, state = self.env.reset(k, self.params)
            return self._obs(obs), state

        return jax.vmap(one)(keys)

    def step(self, key: jax.Array, state: Any, action: jax.Array) -> Step:
        """Step every copy with `action` [B, *action_shape]; continuous actions are clipped.

        `key` is one PRNG key, split into B, or [B] keys already split (the same draws as
        passing the key they were split from).
        """
        if self.continuous:
            action = jnp.clip(action, self.action_low, self.action_high)

        def one(k, s, a):
            obs, s, r, term, trunc, info = self.env.step(k, s, a, self.params)
            trunc = jnp.logical_and(trunc, jnp.logical_not(term))
            return Step(
                self._obs(obs), s, jnp.asarray(r, jnp.float32), term, trunc,
                self._obs(info["final_observation"]),
            )

        one_key = key.ndim == (0 if jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key) else 1)
        keys = jax.random.split(key, action.shape[0]) if one_key else key
        return jax.vmap(one)(keys, state, action)


def fingerprint(x: Any) -> Any:
    """A hashable stand-in for x that compares by value (arrays by shape, dtype and bytes)."""
    if isinstance(x, (np.ndarray, jax.Array, np.generic)):
        x = np.asarray(x)
        return ("array", x.shape, str(x.dtype), x.tobytes())
    if isinstance(x, dict):
        return ("dict", tuple(sorted((str(k), fingerprint(v)) for k, v in x.items())))
    if isinstance(x, (list, tuple)):
        return (type(x).__name__, tuple(fingerprint(v) for v in x))
    if isinstance(x, (int, float, bool, str, type(None))):
        return x
    return repr(x)


def check_env_name(name: str) -> None:
    """Raise ValueError naming the closest registered envs when `name` is unknown (for
    `SUITE:NAME`, also when the suite is not installed: `suites.SuiteNotInstalled`)."""
    import gymnax

    if suites.split(name) is not None:
        return suites.check(name)
    if name in gymnax.registered_envs:
        return
    hint = closest(name, gymnax.registered_envs, n=3, cutoff=0.4)
    raise ValueError(f"unknown env {name!r}{hint} (see gymnax.registered_envs)")
