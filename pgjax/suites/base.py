"""The gymnax 1.0 interface every suite adapter implements, with gymnax's own auto-reset.

An adapter says how to start an episode and advance it one step in its suite's terms
(`start`, `advance`); gymnax's `Environment.step` does the rest as for any gymnax env: a fresh
reset from its own key when the step ends the episode, `info["final_observation"]` the
observation before that reset, `terminated` and `truncated` apart.
"""

import functools
from typing import Any

import jax
import jax.numpy as jnp
from flax import struct
from gymnax.environments import environment


@struct.dataclass
class SuiteState:
    inner: Any  # the suite's own state of one env (a pytree)
    time: jax.Array  # shape=(), int32: steps since the reset
    truncated: jax.Array  # shape=(), bool: the step that made this state hit the time limit


@struct.dataclass
class SuiteParams:
    max_steps_in_episode: int  # the suite's own episode limit (what `pgjax.Env` reads)
    inner: Any = None  # the suite's own params, for suites that have them


class SuiteEnv(environment.Environment):
    """A suite env named `suite:env_id` as a gymnax environment.

    Only `env_id` is an instance attribute (the suite's env object comes from a cache keyed by
    it), so two adapters of one name compare equal in `pgjax.Env`. Subclasses implement
    `suite_env`, `start`, `advance`, `action_space`, `observation_space`, `default_params`.
    """

    suite = ""

    def __init__(self, env_id: str):
        super().__init__()
        self.env_id = env_id

    @property
    def name(self) -> str:
        return f"{self.suite}:{self.env_id}"

    @property
    def inner(self) -> Any:
        """The suite's own environment object, made once per name."""
        return cached(type(self), self.env_id)

    def suite_env(self) -> Any:
        """Make the suite's own environment object for `self.env_id`."""
        raise NotImplementedError

    def start(self, key: jax.Array, params: SuiteParams) -> tuple[jax.Array, Any]:
        """(observation, suite state) of a new episode."""
        raise NotImplementedError

    def advance(self, key: jax.Array, inner: Any, action: jax.Array, time: jax.Array,
                params: SuiteParams) -> tuple[jax.Array, Any, jax.Array, jax.Array, jax.Array]:
        """(observation, suite state, reward, terminated, truncated) of one step, no reset;
        `time` [] int32 counts the steps of the episode with this one."""
        raise NotImplementedError

    def reset_env(self, key, params):
        obs, inner = self.start(key, params)
        return obs, SuiteState(inner, jnp.zeros((), jnp.int32), jnp.zeros((), bool))

    def step_env(self, key, state, action, params):
        time = state.time + 1
        obs, inner, reward, terminated, truncated = self.advance(key, state.inner, action, time,
                                                                 params)
        state = SuiteState(inner, time, jnp.asarray(truncated, bool))
        return obs, state, jnp.asarray(reward, jnp.float32), jnp.asarray(terminated, bool), {}

    def is_truncated(self, state, params):
        del params
        return state.truncated


@functools.cache
def cached(cls: type, env_id: str) -> Any:
    return cls(env_id).suite_env()
