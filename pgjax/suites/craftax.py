"""Craftax (`craftax:NAME`, NAME one of the four `make_craftax_env_from_name` knows).

Craftax's envs are gymnax-style already; the adapter uses the one without auto-reset and only
splits its `done`: `terminated` is Craftax's own game-over test without the time limit (death,
lava), `truncated` is `state.timestep >= params.max_timesteps` (10,000 steps) without it.
Observations keep Craftax's shape: symbolic ones are one flat vector (the map and the
inventory), pixel ones an image [H, W, 3]. Actions Discrete(17) (Classic) or Discrete(43).
Craftax's `info` (achievements, score) is not passed on.
"""

import jax.numpy as jnp
from gymnax.environments import spaces

from pgjax.suites.base import SuiteEnv, SuiteParams

NAMES = ("Craftax-Classic-Symbolic-v1", "Craftax-Classic-Pixels-v1", "Craftax-Symbolic-v1",
         "Craftax-Pixels-v1")
NEVER = 2**30  # max_timesteps that lets Craftax's game-over test see only deaths


def load() -> None:
    import craftax.craftax_env  # noqa: F401


def registered() -> list[str]:
    return list(NAMES)


class CraftaxEnv(SuiteEnv):
    suite = "craftax"

    def suite_env(self):
        from craftax.craftax_env import make_craftax_env_from_name

        return make_craftax_env_from_name(self.env_id, auto_reset=False)

    @property
    def default_params(self) -> SuiteParams:
        inner = self.inner.default_params
        return SuiteParams(max_steps_in_episode=int(inner.max_timesteps), inner=inner)

    def start(self, key, params):
        return self.inner.reset_env(key, params.inner)

    def advance(self, key, inner, action, time, params):
        del time
        obs, state, reward, done, _ = self.inner.step_env(key, inner, action, params.inner)
        terminated = self.inner.is_terminal(state, params.inner.replace(max_timesteps=NEVER))
        truncated = jnp.logical_and(done, state.timestep >= params.inner.max_timesteps)
        return obs, state, reward, terminated, truncated

    def action_space(self, params=None):
        return spaces.Discrete(int(self.inner.num_actions))

    def observation_space(self, params=None):
        space = self.inner.observation_space(self.inner.default_params)
        return spaces.Box(0.0, 1.0, tuple(space.shape), jnp.float32)


ADAPTER = CraftaxEnv  # what `pgjax.suites.make` instantiates
