"""Components a user writes and pgjax does not know: an unregistered gymnax environment, and a
policy that breaks the policy interface.

`ShortCorridor` is the short corridor with switched actions of Sutton & Barto (2018), Example
13.1: four states in a row, start in state 0, actions left (0) and right (1), reward −1 per step,
state 3 terminal. In state 0 left stays put; in state 1 the actions are reversed (right moves
left, left moves right). Every observation is the constant [1.0], so the agent cannot tell the
states apart and the best policy is stochastic (right with probability ≈ 0.59, return ≈ −11.6).
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax import struct
from gymnax.environments import environment, spaces

GOAL = 3  # the terminal state


@struct.dataclass
class EnvState(environment.EnvState):
    pos: jax.Array  # () int32, state 0..3
    time: jax.Array  # () int32, steps taken in this episode


@struct.dataclass
class EnvParams(environment.EnvParams):
    max_steps_in_episode: int = 100


class ShortCorridor(environment.Environment[EnvState, EnvParams]):
    """Sutton & Barto Example 13.1 as a gymnax 1.0 environment (auto-reset by `step`)."""

    @property
    def default_params(self) -> EnvParams:
        return EnvParams()

    def step_env(
        self, key: jax.Array, state: EnvState, action: int | jax.Array, params: EnvParams
    ) -> tuple[jax.Array, EnvState, jax.Array, jax.Array, dict[Any, Any]]:
        """(obs, state, reward, terminated, info); `step` adds truncation at the time limit."""
        del key, params
        move = jnp.where(action == 1, 1, -1)
        move = jnp.where(state.pos == 1, -move, move)  # the switched state
        pos = jnp.clip(state.pos + move, 0, GOAL).astype(jnp.int32)
        state = EnvState(pos=pos, time=state.time + 1)
        return self.obs(), state, jnp.float32(-1.0), pos == GOAL, {}

    def reset_env(self, key: jax.Array, params: EnvParams) -> tuple[jax.Array, EnvState]:
        del key, params
        return self.obs(), EnvState(pos=jnp.int32(0), time=jnp.int32(0))

    def obs(self) -> jax.Array:
        """The same [1.0] in every state."""
        return jnp.ones((1,), jnp.float32)

    def is_terminated(self, state: EnvState, params: EnvParams) -> jax.Array:
        return state.pos == GOAL

    @property
    def name(self) -> str:
        return "ShortCorridor"

    @property
    def num_actions(self) -> int:
        return 2

    def action_space(self, params: EnvParams | None = None) -> spaces.Discrete:
        return spaces.Discrete(2)

    def observation_space(self, params: EnvParams) -> spaces.Box:
        return spaces.Box(1.0, 1.0, (1,), jnp.float32)


class LogitsOnly(nn.Module):
    """A broken policy: returns logits [..., 2], not a distribution (no sample/log_prob)."""

    @nn.compact
    def __call__(self, obs: jax.Array) -> jax.Array:
        return nn.Dense(2)(obs)


class BiasedPolicy(nn.Module):
    """A tabular policy for constant observations: one logit per action, starting at
    P(right) = `p_right` (far from the corridor's optimum when small)."""

    p_right: float = 0.1

    @nn.compact
    def __call__(self, obs: jax.Array):
        from pgjax import Categorical

        start = jnp.log(jnp.array([1.0 - self.p_right, self.p_right]))
        logits = self.param("logits", lambda key: start)
        return Categorical(jnp.broadcast_to(logits, (*obs.shape[:-1], 2)))
