"""Navix (`navix:NAME`, NAME in `navix.registry()`): MiniGrid tasks in JAX.

Made with `navix.make(NAME)`'s own defaults (max_steps = 100, the symbolic observation
[H, W, 3]: object, colour, state per cell, kept as an image). A step is Navix's `_step` (its
`step` without the reset Navix does at the step after an end); Navix's `step_type` carries
both flags (1: truncation at max_steps, 2: termination, 3: both at once): `terminated` is its
termination bit, `truncated` its truncation bit. Actions Discrete(7).
"""

import jax.numpy as jnp
from gymnax.environments import spaces

from pgjax.suites.base import SuiteEnv, SuiteParams


def load() -> None:
    import navix  # noqa: F401


def registered() -> list[str]:
    import navix

    return sorted(navix.registry())


class NavixEnv(SuiteEnv):
    suite = "navix"

    def suite_env(self):
        import navix

        return navix.make(self.env_id)

    @property
    def default_params(self) -> SuiteParams:
        return SuiteParams(max_steps_in_episode=int(self.inner.max_steps))

    def start(self, key, params):
        del params
        timestep = self.inner.reset(key)
        return timestep.observation, timestep

    def advance(self, key, inner, action, time, params):
        del key, time, params
        timestep = self.inner._step(inner, action)
        terminated = (timestep.step_type & 2) != 0
        truncated = (timestep.step_type & 1) != 0
        return timestep.observation, timestep, timestep.reward, terminated, truncated

    def action_space(self, params=None):
        return spaces.Discrete(int(self.inner.action_space.maximum) + 1)

    def observation_space(self, params=None):
        space = self.inner.observation_space
        return spaces.Box(jnp.asarray(space.minimum, jnp.float32),
                          jnp.asarray(space.maximum, jnp.float32), tuple(space.shape),
                          jnp.float32)


ADAPTER = NavixEnv  # what `pgjax.suites.make` instantiates
