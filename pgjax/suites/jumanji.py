"""Jumanji (`jumanji:NAME`, NAME in `jumanji.registered_environments()`).

A step is `env.step(state, action) -> (state, TimeStep)`; the episode ends at a `TimeStep`
whose `step_type` is LAST. It is `truncated` when its `discount` is not 0 (Jumanji's
`truncation`) or when it comes at the env's `time_limit` (Snake ends there with `termination`,
discount 0, though nothing in the game ended: a snake that dies on that very step counts as
truncated too); any other LAST is `terminated`. The observation is the TimeStep's observation
when it is one array, else its `grid` field (Snake: [12, 12, 5]); the action mask and other
fields are not passed on. Actions: one `DiscreteArray`. Envs without a `time_limit`, with
other observations or actions raise ValueError.
"""

import jax.numpy as jnp
from gymnax.environments import spaces

from pgjax.suites.base import SuiteEnv, SuiteParams

OBS_FIELD = "grid"


def load() -> None:
    import jumanji  # noqa: F401


def registered() -> list[str]:
    import jumanji

    return sorted(jumanji.registered_environments())


class JumanjiEnv(SuiteEnv):
    suite = "jumanji"

    def suite_env(self):
        import jumanji
        from jumanji import specs

        env = jumanji.make(self.env_id)
        if not isinstance(getattr(env, "time_limit", None), int):
            raise ValueError(f"jumanji:{self.env_id} has no time_limit, the episode limit "
                             f"pgjax reads")
        if not isinstance(env.action_spec, specs.DiscreteArray):
            raise ValueError(f"jumanji:{self.env_id}: its actions are a "
                             f"{type(env.action_spec).__name__}; pgjax takes one DiscreteArray")
        spec = env.observation_spec
        if not isinstance(spec, specs.Array) and not hasattr(spec, OBS_FIELD):
            raise ValueError(f"jumanji:{self.env_id}: its observation has no {OBS_FIELD!r} "
                             f"field (pgjax takes one array)")
        return env

    @property
    def default_params(self) -> SuiteParams:
        return SuiteParams(max_steps_in_episode=self.inner.time_limit)

    def observe(self, timestep):
        obs = timestep.observation
        return obs if isinstance(obs, jnp.ndarray) else getattr(obs, OBS_FIELD)

    def start(self, key, params):
        del params
        state, timestep = self.inner.reset(key)
        return self.observe(timestep), state

    def advance(self, key, inner, action, time, params):
        del key
        state, timestep = self.inner.step(inner, action)
        last = timestep.last()
        truncated = (last & (timestep.discount != 0)) | (time >= params.max_steps_in_episode)
        terminated = last & ~truncated
        return self.observe(timestep), state, timestep.reward, terminated, truncated

    def action_space(self, params=None):
        return spaces.Discrete(int(self.inner.action_spec.num_values))

    def observation_space(self, params=None):
        spec = self.inner.observation_spec
        spec = spec if not hasattr(spec, OBS_FIELD) else getattr(spec, OBS_FIELD)
        return spaces.Box(getattr(spec, "minimum", -jnp.inf), getattr(spec, "maximum", jnp.inf),
                          tuple(spec.shape), jnp.float32)


ADAPTER = JumanjiEnv  # what `pgjax.suites.make` instantiates
