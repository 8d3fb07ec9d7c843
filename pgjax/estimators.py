"""Estimators: how a rollout becomes the loss's per-step returns, advantages, mask and weights.

An estimator is any object with

    uses_value: bool                                   # the trainer builds and trains a V(s)
    __call__(inputs: EstimatorInputs) -> losses.Targets

and optionally
    check(env, config)   # raise ValueError (one line) if it cannot work with them; runs
                         # before anything compiles
    group_size: int      # the K consecutive envs of a group start from one key (one start
                         # state); K = 1: independent resets. With restart = "window" (or
                         # no `restart`) the trainer resets every env at the start of each
                         # rollout window; with restart = "group" a group restarts as soon as
                         # all K of its episodes have ended (`rollout(group_size=K)`)
    episode_terms(scores, targets) -> pytree [B, ...]
                         # replaces the policy-loss gradient: given each env's episode score
                         # ∇θ Σ_t m_t log π(a_t|s_t) (a pytree of [B, ...] leaves), its term of
                         # the ascent direction; the trainer averages them over B. For
                         # estimators whose baseline is not one number per step.

The trainer minimizes `losses.policy_gradient_loss` of the targets, whichever estimator made
them. Jitted functions close over an estimator, so it need not be hashable; a hashable one (a
frozen dataclass) compares by value, so that `pgjax.sweep` shares a compiled program between
equal ones.

The built-in family (`--estimator`), from the derivation's first form to actor-critic:
  TotalReturn     R(τ) for every step of an episode: ∇J = E[R(τ) Σ_t ∇log π(a_t|s_t)].
  ReturnToGo      G_t (causality drops the rewards before t), with a baseline none / batch mean /
                  learned V, a window rule, γ^t weights (`--baseline`, `--window`, ...).
  GroupRelative   rounds of K episodes from a shared start per group: RLOO (leave-one-out
                  mean of the other K − 1 returns; unbiased), GRPO ((R − mean) / std over the
                  group) and Dr. GRPO (R − mean; no std).
  GAE             GAE(λ) with the learned V: λ = 1 is REINFORCE with V and bootstrapped cuts,
                  λ = 0 one-step actor-critic.
  OptimalBaseline whole episodes with the variance-minimizing constant baseline of each
                  parameter, b_k = E[s_k² R] / E[s_k²] (`episode_terms`).
"""

import dataclasses
from collections.abc import Callable
from typing import Any, NamedTuple, Protocol

import jax
import jax.numpy as jnp

from pgjax.config import CHOICES, is_number
from pgjax.losses import Targets, masked_mean, normalize
from pgjax.returns import (
    check_unit_interval,
    complete_episode_mask,
    discounted_returns,
    episode_start_mask,
    generalized_advantages,
)
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
    """The estimator interface: `uses_value`, and `__call__(EstimatorInputs) -> Targets` with
    every leaf [T, B]; optionally `check`, `group_size` and `episode_terms` (module docstring)."""

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
        for name in ("baseline", "window"):
            if getattr(self, name) not in CHOICES[name]:
                raise ValueError(f"ReturnToGo's {name} must be one of {CHOICES[name]}, got "
                                 f"{getattr(self, name)!r}")
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


def episode_total_returns(returns: jax.Array, episode_t: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Each step's episode return R(τ) = G at the episode's first step, and where it is known.

    Args:
      returns: [T, B] returns-to-go G_t (restarting at episode ends).
      episode_t: [T, B] int, each step's index in its episode.

    Returns:
      (R [T, B], known [T, B] bool: the episode started inside the window).
    """
    t = jnp.arange(returns.shape[0])[:, None]
    start = t - episode_t
    total = jnp.take_along_axis(returns, jnp.maximum(start, 0), axis=0)
    return total, start >= 0


@dataclasses.dataclass(frozen=True)
class TotalReturn:
    """The derivation's first form: every step of an episode weighted by its return R(τ).

    R(τ) = Σ_t γ^t r_t from the episode's first step (so no γ^t weights are needed for the
    discounted objective). Unbiased with window="episodes" (episodes starting at s ≤ T − H);
    "complete" keeps every episode that starts and ends inside the window (biased toward short
    episodes, as for `ReturnToGo`). Higher variance than reward-to-go: each score term also
    carries the rewards that came before its action, which it cannot have caused.

    Args:
      baseline: "none" or "mean" (the batch mean of R over masked-in steps).
      window: "complete" or "episodes".
      normalize: rescale the advantages per batch.
    """

    baseline: str = "none"
    window: str = "complete"
    normalize: bool = True
    uses_value = False

    def check(self, env: Any, config: Any) -> None:
        if self.baseline not in ("none", "mean") or self.window not in ("complete", "episodes"):
            raise ValueError("the total-return estimator takes baseline none or mean and window "
                             f"complete or episodes, got {self.baseline!r}, {self.window!r}")
        ReturnToGo(window=self.window).check(env, config)

    def __call__(self, inputs: EstimatorInputs) -> Targets:
        batch = inputs.batch
        returns = discounted_returns(batch.reward, batch.done, inputs.gamma)
        total, known = episode_total_returns(returns, batch.episode_t)
        if self.window == "episodes":
            last_start = batch.reward.shape[0] - inputs.max_episode_steps
            mask = episode_start_mask(batch.episode_t, last_start)
        else:
            mask = complete_episode_mask(batch.done) * known
        advantages = total - masked_mean(total, mask) if self.baseline == "mean" else total
        if self.normalize:
            advantages = normalize(advantages, mask)
        return Targets(returns, advantages, mask, None)


GROUP_KINDS = ("rloo", "grpo", "dr-grpo")


def check_whole_first_episodes(name: str, env: Any, config: Any) -> None:
    """Estimators that train on each env's first episode of a fresh window need T ≥ H."""
    if config.num_steps < env.max_episode_steps:
        raise ValueError(
            f"{name} needs num_steps ≥ the episode limit of {env.name} "
            f"({env.max_episode_steps}) so every env's first episode ends in the window, "
            f"got {config.num_steps}"
        )


@dataclasses.dataclass(frozen=True)
class GroupRelative:
    """Group baselines: K episodes from one start state, each judged against the others.

    The K consecutive envs of a group start from one shared state (`group_size`), and each
    episode of a group's round is judged against the other K − 1. With R_i the discounted
    return of episode i and the round's mean m and population std σ:
      rloo     A_i = R_i − (Σ_j R_j − R_i) / (K − 1): the mean of the other K − 1, independent
               of episode i, so unbiased (Kool et al., 2019; Ahmadian et al., 2024);
      grpo     A_i = (R_i − m) / σ (0 where σ = 0): the baseline includes R_i (a bias of order
               1/K) and dividing by σ reweights groups (Shao et al., 2024);
      dr-grpo  A_i = R_i − m: GRPO without σ (Liu et al., 2025); = (K − 1)/K × RLOO's.
    A_i multiplies every step of episode i (the total-return form: the group comparison is
    between whole episodes).

    restart="group": a group starts its next round as soon as all K episodes have ended (the
    trainer's rollout makes the members that end first wait, `rollout(group_size=K)`), so a
    window holds many rounds. The steps of the rounds that start and end inside the window
    count; a round cut by the window's end carries on into the next window, where its steps
    (started before the window) do not count either: like window="complete", this favours
    short rounds, less so as T grows. restart="window": every window restarts every group and
    uses each env's first episode (needs T ≥ H; the steps after it are not used).

    Args:
      kind: "rloo", "grpo" or "dr-grpo".
      group_size: K ≥ 2; num_envs must be a multiple of it.
      normalize: also rescale the advantages per batch.
      restart: "group" or "window".
    """

    kind: str = "rloo"
    group_size: int = 8
    normalize: bool = False
    restart: str = "group"
    uses_value = False

    def check(self, env: Any, config: Any) -> None:
        if self.kind not in GROUP_KINDS:
            raise ValueError(f"group estimator must be one of {GROUP_KINDS}, got {self.kind!r}")
        if self.group_size < 2 or config.num_envs % self.group_size:
            raise ValueError(f"{self.kind} needs group_size ≥ 2 dividing num_envs="
                             f"{config.num_envs}, got {self.group_size}")
        if self.restart not in CHOICES["group_restart"]:
            raise ValueError(f"GroupRelative's restart must be one of "
                             f"{CHOICES['group_restart']}, got {self.restart!r}")
        if self.restart == "window":
            check_whole_first_episodes(self.kind, env, config)

    def __call__(self, inputs: EstimatorInputs) -> Targets:
        batch = inputs.batch
        returns = discounted_returns(batch.reward, batch.done, inputs.gamma)
        if self.restart == "window":
            mask = episode_start_mask(batch.episode_t, 0)  # each env's first episode
            advantages = group_advantages(returns[0], self.group_size, self.kind)
            advantages = jnp.broadcast_to(advantages, returns.shape)
        else:
            advantages, mask = round_advantages(returns, batch.done, batch.episode_t,
                                                self.group_size, self.kind)
        if self.normalize:
            advantages = normalize(advantages, mask)
        return Targets(returns, advantages, mask, None)


def round_advantages(
    returns: jax.Array, done: jax.Array, episode_t: jax.Array, group_size: int, kind: str
) -> tuple[jax.Array, jax.Array]:
    """Group advantages of rounds that restart together (`rollout(group_size=K)`).

    A round's K episodes all start at one window step s (episode_t 0 there); step t of env i
    belongs to the round that started at s = t − episode_t, and its advantage is
    `group_advantages` of the K returns G_s of that round. Steps with episode_t < 0 wait.

    Args:
      returns: [T, B] returns-to-go G_t (restarting at episode ends).
      done: [T, B] bool episode ends.
      episode_t: [T, B] int, each step's index in its episode; −1 where the env waits.
      group_size, kind: as `GroupRelative`.

    Returns:
      (advantages [T, B], mask [T, B] float: 1 on the steps of rounds that start and end
      inside the window, and do not wait).
    """
    t = jnp.arange(returns.shape[0])[:, None]
    start = t - episode_t
    known = (episode_t >= 0) & (start >= 0)
    start = jnp.where(known, start, 0)
    at_start = jax.vmap(lambda r: group_advantages(r, group_size, kind))(returns)  # [T, B]
    ends = complete_episode_mask(done) > 0  # the episode running at t ends inside the window
    round_ends = jnp.repeat(ends.reshape(ends.shape[0], -1, group_size).all(2), group_size, 1)
    advantages = jnp.take_along_axis(at_start, start, axis=0)
    mask = known & jnp.take_along_axis(round_ends, start, axis=0)
    return advantages, mask.astype(jnp.float32)


def group_advantages(episode_returns: jax.Array, group_size: int, kind: str) -> jax.Array:
    """A_i of `GroupRelative` from R [B] (consecutive groups of `group_size`); returns [B]."""
    r = episode_returns.reshape(-1, group_size)
    if kind == "rloo":
        a = r - (r.sum(1, keepdims=True) - r) / (group_size - 1)
    elif kind == "dr-grpo":
        a = r - r.mean(1, keepdims=True)
    else:
        a = jax.vmap(lambda group: normalize(group, rtol=1e-6))(r)
    return a.reshape(-1)


@dataclasses.dataclass(frozen=True)
class GAE:
    """GAE(λ) advantages with the learned V; value targets A_t + V(s_t) (Schulman et al., 2016).

    Cut episodes are bootstrapped: V(final_observation) at a time-limit truncation, V(last_obs)
    at the window's end; termination adds nothing. Every step counts (no window mask). Biased
    by V's error unless λ = 1 (and by the missing γ^t weights for γ < 1, like `ReturnToGo`);
    lower variance as λ falls.

    Args:
      lam: λ in [0, 1] (a config leaf: may be traced).
      normalize: rescale the advantages per batch.
    """

    lam: Any = 0.95
    normalize: bool = True
    uses_value = True

    def check(self, env: Any, config: Any) -> None:
        if not isinstance(self.lam, jax.core.Tracer) and not is_number(self.lam):
            raise ValueError(f"GAE's lam must be a number, got {self.lam!r}")
        check_unit_interval("GAE's lam", self.lam)

    def __call__(self, inputs: EstimatorInputs) -> Targets:
        batch, values = inputs.batch, inputs.values
        next_values = jnp.concatenate([values[1:], inputs.value_fn(inputs.last_obs)[None]], 0)
        next_values = jnp.where(batch.truncated, inputs.value_fn(batch.final_obs), next_values)
        next_values = jnp.where(batch.terminated, 0.0, next_values)
        advantages = generalized_advantages(
            batch.reward, values, next_values, batch.done, inputs.gamma, self.lam
        )
        returns = advantages + values
        if self.normalize:
            advantages = normalize(advantages)
        return Targets(returns, advantages, None, None)


@dataclasses.dataclass(frozen=True)
class OptimalBaseline:
    """REINFORCE on whole episodes with the optimal constant baseline of each parameter.

    With s_i = Σ_t ∇θ log π(a_t|s_t) the score of episode i and R_i its return, the estimate
    (1/B) Σ_i (R_i − b_k) s_ik has the least variance over constant b_k at
    b_k = E[s_k² R] / E[s_k²] (Greensmith, Bartlett & Baxter, 2004; Peters & Schaal, 2008),
    estimated here from the batch itself: a bias of order 1/B. Every window resets every env
    (`group_size` = 1) and uses its first episode, so needs T ≥ H, as `GroupRelative`.
    """

    group_size: int = 1
    uses_value = False

    def check(self, env: Any, config: Any) -> None:
        check_whole_first_episodes("optimal-baseline", env, config)

    def __call__(self, inputs: EstimatorInputs) -> Targets:
        batch = inputs.batch
        returns = discounted_returns(batch.reward, batch.done, inputs.gamma)
        mask = episode_start_mask(batch.episode_t, 0)
        return Targets(returns, jnp.broadcast_to(returns[0], returns.shape), mask, None)

    def episode_terms(self, scores: Any, targets: Targets) -> Any:
        """(R_i − b) ⊙ s_i for each env i; `scores` leaves [B, ...], R_i = advantages[0, i]."""
        episode_return = targets.advantages[0]

        def leaf(s):
            r = episode_return.reshape(-1, *([1] * (s.ndim - 1)))
            s2 = s**2
            total = jnp.sum(s2, 0)
            b = jnp.where(total > 0, jnp.sum(s2 * r, 0) / jnp.where(total > 0, total, 1.0), 0.0)
            return (r - b) * s

        return jax.tree.map(leaf, scores)
