"""Brax (`brax:NAME`, NAME in `brax.envs`): continuous control on Brax's physics pipelines.

Observations [observation_size] float32; actions Box(-1, 1, [action_size]) (the range Brax's
own training samples in). `terminated` is Brax's `done` (a fall of hopper or the pendulums).
The time limit is `EPISODE_LENGTH` steps, counted as Brax's `EpisodeWrapper` counts it: an
episode that reaches it without Brax's `done` is `truncated` (its `info["truncation"]`). Unlike
Brax's `AutoResetWrapper`, which returns every env to its own first start state, an ended
episode starts again from a fresh `reset` with its own key (gymnax's auto-reset).
"""

import contextlib
import io
import warnings

import jax.numpy as jnp
from gymnax.environments import spaces

from pgjax.suites.base import SuiteEnv, SuiteParams

EPISODE_LENGTH = 1000  # `brax.envs.create`'s default episode_length, which its training uses


def load() -> None:
    with contextlib.redirect_stdout(io.StringIO()):  # mujoco.mjx prints that warp is missing
        import brax.envs  # noqa: F401


def registered() -> list[str]:
    import brax.envs

    return sorted(brax.envs._envs)


class BraxEnv(SuiteEnv):
    suite = "brax"

    def suite_env(self):
        import brax.envs

        with warnings.catch_warnings():  # that Brax is no longer maintained: in the docs
            warnings.filterwarnings("ignore", message="Brax System")
            return brax.envs.get_environment(self.env_id)

    @property
    def default_params(self) -> SuiteParams:
        return SuiteParams(max_steps_in_episode=EPISODE_LENGTH)

    def start(self, key, params):
        del params
        state = self.inner.reset(key)
        return state.obs, state

    def advance(self, key, inner, action, time, params):
        del key
        state = self.inner.step(inner, action)
        terminated = state.done > 0
        truncated = time >= params.max_steps_in_episode
        return state.obs, state, state.reward, terminated, truncated

    def action_space(self, params=None):
        return spaces.Box(-1.0, 1.0, (self.inner.action_size,), jnp.float32)

    def observation_space(self, params=None):
        return spaces.Box(-jnp.inf, jnp.inf, (self.inner.observation_size,), jnp.float32)


ADAPTER = BraxEnv  # what `pgjax.suites.make` instantiates
