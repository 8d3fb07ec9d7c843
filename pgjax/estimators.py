"""Estimators: how a rollout becomes the loss's per-step returns, advantages, mask and weights.

An estimator is any object with

    uses_value: bool                                   # the trainer builds and trains a V(s)
    __call__(inputs: EstimatorInputs) -> losses.Targets

and optionally `check(env, config)`, which raises ValueError (one line) when the estimator
cannot work with that env or config; it runs before anything compiles. The trainer then
minimizes `losses.policy_gradient_loss` of the targets, whichever estimator made them. It must be
hashable (a frozen dataclass is), since it is closed over by jitted functions.

`ReturnToGo` is the built-in family: reward-to-go G_t with a window rule for episodes cut by the
rollout, an optional baseline, γ^t weights and per-batch normalization. The CLI's `--baseline`,
`--window`, `--gamma-weighting` and `--normalize-advantages` pick one.
"""

import dataclasses
from collections.abc import Callable
from typing import Any, NamedTuple, Protocol

import jax

from pgjax.losses import Targets, masked_mean, normalize
from pgjax.returns import complete_episode_mask, discounted_returns, episode_start_mask
from pgjax.rollout import Transition


class EstimatorInputs(NamedTuple):
    """What an estimator sees of one update; nothing here carries a gradient."""

    batch: Transition  # the rollout, [T, B, ...]
    last_obs: jax.Array  # [B, *obs_shape] the observation after the window
    gamma: jax.Array  # () discount (a config leaf: may be traced)
    values: jax.Array | None  # [T, B] V(s_t), or None without a value net
    value_fn: Callable[[jax.Array], jax.Array] | None  # obs [..., *obs_shape] -> V [...]
    max_episode_steps: int  # the env's time limit H


class Estimator(Protocol):
    uses_value: bool

    def __call__(self, inputs: EstimatorInputs) -> Targets: ...


def returns_and_mask(
    batch: Transition,
    gamma: jax.Array | float,
    *,
    window: str,
    max_episode_steps: int,
    value_fn: Callable[[jax.Array], jax.Array] | None = None,
    last_obs: jax.Array | None = None,
) -> tuple[jax.Array, jax.Array | None]:
    """Returns-to-go G_t [T, B] and the step mask of a window rule (see `pgjax.Config`).

    With window="bootstrap" the cut episodes are completed with `value_fn`: V(last_obs) after
    the window and V(final_obs) at time-limit truncation; termination adds nothing.
    """
    if window == "bootstrap":
        returns = discounted_returns(
            batch.reward, batch.done, gamma, value_fn(last_obs),
            truncated=batch.truncated, truncation_values=value_fn(batch.final_obs),
        )
    else:
        returns = discounted_returns(batch.reward, batch.done, gamma)
    mask = None
    if window == "complete":
        mask = complete_episode_mask(batch.done)
    elif window == "episodes":
        last_start = batch.reward.shape[0] - max_episode_steps
        if last_start < 0:
            raise ValueError(f"window='episodes' needs num_steps ≥ {max_episode_steps}")
        mask = episode_start_mask(batch.episode_t, last_start)
    return returns, mask


@dataclasses.dataclass(frozen=True)
class ReturnToGo:
    """REINFORCE on returns-to-go: advantages A_t = G_t − b_t, optionally normalized.

    Args:
      baseline: "none" (b = 0), "mean" (the batch mean of G_t over masked-in steps; it
        includes each step's own return, a bias of order 1/N) or "value" (a learned V(s_t)).
      window: which steps count, and how cut episodes are completed (see `pgjax.Config`).
      gamma_weighting: weight step t's score term by γ^t (t its index within its episode), the
        exact gradient of the discounted objective; off, states are weighted by undiscounted
        visits (biased for γ < 1, the common choice).
      normalize: rescale the advantages to zero mean and unit std over masked-in steps.
    """

    baseline: str = "mean"
    window: str = "complete"
    gamma_weighting: bool = False
    normalize: bool = True

    @property
    def uses_value(self) -> bool:
        return self.baseline == "value"

    def check(self, env: Any, config: Any) -> None:
        if self.window == "bootstrap" and not self.uses_value:
            raise ValueError("window='bootstrap' needs baseline='value' (a learned V to bootstrap)")
        if self.window == "episodes" and config.num_steps < env.max_episode_steps:
            raise ValueError(
                f"window='episodes' needs num_steps ≥ the episode limit of {env.name} "
                f"({env.max_episode_steps}), got {config.num_steps}"
            )

    def __call__(self, inputs: EstimatorInputs) -> Targets:
        batch = inputs.batch
        returns, mask = returns_and_mask(
            batch, inputs.gamma, window=self.window, max_episode_steps=inputs.max_episode_steps,
            value_fn=inputs.value_fn, last_obs=inputs.last_obs,
        )
        if self.baseline == "value":
            advantages = returns - inputs.values
        elif self.baseline == "mean":
            advantages = returns - masked_mean(returns, mask)
        else:
            advantages = returns
        if self.normalize:
            advantages = normalize(advantages, mask)
        weights = inputs.gamma ** batch.episode_t if self.gamma_weighting else None
        return Targets(returns, advantages, mask, weights)
