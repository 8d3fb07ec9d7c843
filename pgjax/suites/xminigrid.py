"""XLand-MiniGrid (`xminigrid:NAME`, NAME in `xminigrid.registered_environments()`).

Made with `xminigrid.make(NAME)`'s default params (MiniGrid-Empty-8x8: max_steps 256, a 7×7
first-person view). Observations keep their shape [V, V, 2] (tile, colour), an image for
`--network cnn`. A step is the env's own `step` (it does not reset; the wrappers do). The
episode ends at a LAST `step_type`: `terminated` when its discount is 0 (the goal reached),
`truncated` otherwise (step_num reached max_steps). Actions Discrete(6). The XLand-MiniGrid-R*
envs run with their default ruleset, not a benchmark's (loading one downloads it).
"""

import jax.numpy as jnp
from gymnax.environments import spaces

from pgjax.suites.base import SuiteEnv, SuiteParams


def load() -> None:
    import xminigrid  # noqa: F401


def registered() -> list[str]:
    import xminigrid

    return sorted(xminigrid.registered_environments())


class XMiniGridEnv(SuiteEnv):
    suite = "xminigrid"

    def suite_env(self):
        import xminigrid

        return xminigrid.make(self.env_id)  # (env, its default params)

    @property
    def default_params(self) -> SuiteParams:
        inner = self.inner[1]
        return SuiteParams(max_steps_in_episode=int(inner.max_steps), inner=inner)

    def start(self, key, params):
        timestep = self.inner[0].reset(params.inner, key)
        return timestep.observation, timestep

    def advance(self, key, inner, action, time, params):
        del key, time
        timestep = self.inner[0].step(params.inner, inner, action)
        last = timestep.last()
        terminated = last & (timestep.discount == 0)
        truncated = last & (timestep.discount != 0)
        return timestep.observation, timestep, timestep.reward, terminated, truncated

    def action_space(self, params=None):
        return spaces.Discrete(int(self.inner[0].num_actions(self.inner[1])))

    def observation_space(self, params=None):
        shape = self.inner[0].observation_shape(self.inner[1])
        return spaces.Box(0.0, jnp.inf, tuple(shape), jnp.float32)


ADAPTER = XMiniGridEnv  # what `pgjax.suites.make` instantiates
