"""Exact policy gradients on a small tabular MDP, to check the Monte Carlo estimator against.

A random MDP (P[s, a, s'], R[s, a], ρ0, one absorbing terminal state) is exposed as a gymnax
environment with one-hot observations, so pgjax's own `rollout`, `discounted_returns` and
`reinforce_loss` run on it unchanged. For a tabular softmax policy π(a|s) = softmax(θ[s])[a] the
objective is computed exactly, by a linear solve (infinite horizon) or by backward dynamic
programming (horizon H, the episode time limit), and differentiated with `jax.grad`. That
gradient is cross-checked against the policy-gradient-theorem form and finite differences, and
the Monte Carlo REINFORCE estimate is compared against it.

The Monte Carlo target is the finite-horizon objective J_H with H = max_steps_in_episode:
episodes cut by the time limit return Σ_{t<H} γ^t r_t with no bootstrap (what
`discounted_returns` computes without truncation values), which is exactly what J_H measures,
so the comparison carries no approximation whatever the truncation rate. J_H → J_∞ as H grows
(geometrically when termination is certain).

References: Williams (1992); Sutton, McAllester, Singh & Mansour (2000); Sutton & Barto (2018)
§13.2-13.4; Nota & Thomas (2020) on the estimator without γ^t.
"""

from collections.abc import Callable
from typing import NamedTuple

import chex
import jax
import jax.numpy as jnp
import numpy as np
from flax import struct
from gymnax.environments import environment, spaces

from pgjax.envs import Env
from pgjax.estimators import EstimatorInputs
from pgjax.losses import clipped_surrogate_loss, masked_mean, reinforce_loss
from pgjax.policies import Categorical
from pgjax.returns import discounted_returns
from pgjax.rollout import Transition, init_runner, rollout

# ---------------------------------------------------------------------------------------------
# The MDP as a gymnax environment
# ---------------------------------------------------------------------------------------------


@struct.dataclass
class MDPState:
    s: jax.Array  # () int32, current state index
    time: jax.Array  # () int32, steps taken in this episode


@struct.dataclass
class MDPParams:
    """A finite MDP; the absorbing terminal states have P[s, a, s] = 1 and R[s, a] = 0."""

    P: jax.Array  # [S, A, S] float, P(s'|s, a)
    R: jax.Array  # [S, A] float, expected reward of (s, a)
    rho0: jax.Array  # [S] float, initial distribution (0 on terminal states)
    terminal: jax.Array  # [S] bool, absorbing terminal states
    max_steps_in_episode: int = struct.field(pytree_node=False, default=20)  # H, time limit

    def astype(self, dtype) -> "MDPParams":
        """Float leaves cast to `dtype` (float64 needs `jax.enable_x64`)."""
        cast = lambda x: x.astype(dtype)
        return self.replace(P=cast(self.P), R=cast(self.R), rho0=cast(self.rho0))


class TabularMDP(environment.Environment):
    """gymnax environment over an `MDPParams`: one-hot observations [S], Discrete(A) actions.

    Entering a terminal state ends the episode (terminated); after H = max_steps_in_episode
    steps the gymnax base class truncates it. Rewards are deterministic R[s_t, a_t].
    """

    def __init__(self, num_states: int, num_actions: int):
        super().__init__()
        self.num_states, self._num_actions = num_states, num_actions

    @property
    def default_params(self) -> MDPParams:
        return random_mdp(jax.random.key(0), self.num_states, self._num_actions)

    @property
    def num_actions(self) -> int:
        return self._num_actions

    def step_env(self, key, state, action, params):
        s_next = jax.random.categorical(key, jnp.log(params.P[state.s, action]))
        reward = params.R[state.s, action]
        state = MDPState(s=s_next.astype(jnp.int32), time=state.time + 1)
        return self._obs(state), state, reward, params.terminal[s_next], {}

    def reset_env(self, key, params):
        s0 = jax.random.categorical(key, jnp.log(params.rho0))
        state = MDPState(s=s0.astype(jnp.int32), time=jnp.zeros((), jnp.int32))
        return self._obs(state), state

    def _obs(self, state: MDPState) -> jax.Array:
        return jax.nn.one_hot(state.s, self.num_states, dtype=jnp.float32)

    def action_space(self, params=None) -> spaces.Discrete:
        return spaces.Discrete(self._num_actions)

    def observation_space(self, params=None) -> spaces.Box:
        return spaces.Box(0.0, 1.0, (self.num_states,), jnp.float32)


def random_mdp(
    key: jax.Array,
    num_states: int = 6,
    num_actions: int = 3,
    *,
    horizon: int = 20,
    p_terminate: tuple[float, float] = (0.05, 0.3),
    concentration: float = 0.5,
    reward_mean: float = 1.0,
) -> MDPParams:
    """A random MDP whose last state is absorbing and terminal.

    From every (s, a) the episode terminates with probability p(s, a) ~ U(p_terminate), so it
    ends with certainty (and γ = 1 is well posed); otherwise s' ~ Dirichlet(concentration) over
    the non-terminal states. R[s, a] ~ N(reward_mean, 1) (positive on average, as in most control
    tasks, so a baseline has something to remove), ρ0 ~ Dirichlet(1) over the non-terminal states.

    Args:
      key: PRNG key.
      num_states: S, including the terminal state S − 1.
      num_actions: A.
      horizon: H, the time limit max_steps_in_episode (keyword-only).
      p_terminate: (low, high) range of the per-step termination probability (keyword-only).
      concentration: Dirichlet concentration of the non-terminal transitions (keyword-only).
      reward_mean: mean of the non-terminal rewards (keyword-only).

    Returns:
      MDPParams with P [S, A, S], R [S, A], rho0 [S], terminal [S] (float32 / bool).
    """
    k_p, k_term, k_r, k_rho = jax.random.split(key, 4)
    live = num_states - 1
    move = jax.random.dirichlet(k_p, jnp.full((live,), concentration), (live, num_actions))
    p_end = jax.random.uniform(
        k_term, (live, num_actions, 1), minval=p_terminate[0], maxval=p_terminate[1]
    )
    P_live = jnp.concatenate([(1.0 - p_end) * move, p_end], axis=-1)  # [S−1, A, S]
    P_term = jnp.zeros((1, num_actions, num_states)).at[..., -1].set(1.0)
    R_live = reward_mean + jax.random.normal(k_r, (live, num_actions))
    R = jnp.concatenate([R_live, jnp.zeros((1, num_actions))])
    rho0 = jnp.concatenate([jax.random.dirichlet(k_rho, jnp.ones((live,))), jnp.zeros((1,))])
    terminal = jnp.arange(num_states) == num_states - 1
    return MDPParams(
        P=jnp.concatenate([P_live, P_term]).astype(jnp.float32),
        R=R.astype(jnp.float32),
        rho0=rho0.astype(jnp.float32),
        terminal=terminal,
        max_steps_in_episode=horizon,
    )


def make_env(mdp: MDPParams, name: str = "TabularMDP") -> Env:
    """pgjax `Env` over the MDP. `Env` hashes and compares by name: give distinct MDPs
    distinct names before passing them as static jit arguments."""
    num_states, num_actions = mdp.R.shape
    return Env(name, env=TabularMDP(num_states, num_actions), params=mdp)


# ---------------------------------------------------------------------------------------------
# Tabular softmax policy
# ---------------------------------------------------------------------------------------------


def tabular_policy(theta: jax.Array) -> Callable[[jax.Array], Categorical]:
    """obs [..., S] one-hot -> Categorical(obs @ θ), θ [S, A]: π(a|s) = softmax(θ[s])[a]."""
    return lambda obs: Categorical(obs @ theta)


def policy_probs(theta: jax.Array) -> jax.Array:
    """π [S, A] = softmax(θ [S, A]) over actions."""
    return jax.nn.softmax(theta, axis=-1)


def log_policy(theta: jax.Array) -> jax.Array:
    """log π(a|s) [S, A] for every (s, a), through pgjax's `Categorical.log_prob`."""
    S, A = theta.shape
    dist = Categorical(jnp.broadcast_to(theta[:, None, :], (S, A, A)))
    return dist.log_prob(jnp.broadcast_to(jnp.arange(A), (S, A)))


# ---------------------------------------------------------------------------------------------
# Exact evaluation: infinite horizon (linear solve) and horizon H (backward DP)
# ---------------------------------------------------------------------------------------------


class Values(NamedTuple):
    v: jax.Array  # [S] or [H+1, S], V(s) (or V_t(s), V_H = 0); 0 at terminal states
    q: jax.Array  # [S, A] or [H, S, A], Q(s, a) (or Q_t(s, a))


def policy_dynamics(theta: jax.Array, mdp: MDPParams) -> tuple[jax.Array, jax.Array]:
    """State-to-state transitions and rewards under π, terminal rows cut.

    P_π[s, s'] = (1 − term_s) Σ_a π(a|s) P(s'|s, a),  r_π[s] = (1 − term_s) Σ_a π(a|s) R(s, a).
    Cutting the terminal rows makes absorption end the return (V = 0 there) and makes
    (I − γ P_π) invertible for γ = 1 when termination is certain.

    Returns:
      P_π [S, S], r_π [S].
    """
    pi = policy_probs(theta)
    live = 1.0 - mdp.terminal.astype(pi.dtype)
    P_pi = live[:, None] * jnp.einsum("sa,sat->st", pi, mdp.P)
    r_pi = live * jnp.sum(pi * mdp.R, -1)
    return P_pi, r_pi


def _q_from_v(mdp: MDPParams, v_next: jax.Array, gamma) -> jax.Array:
    """Q(s, a) = (1 − term_s) (R(s, a) + γ Σ_s' P(s'|s, a) V(s'))."""
    live = 1.0 - mdp.terminal.astype(v_next.dtype)
    return live[:, None] * (mdp.R + gamma * jnp.einsum("sat,t->sa", mdp.P, v_next))


def values(theta: jax.Array, mdp: MDPParams, gamma) -> Values:
    """Policy evaluation by a linear solve: V = (I − γ P_π)^{-1} r_π, Q from V (S&B 2018 §4.1).

    Returns:
      Values(v [S], q [S, A]).
    """
    P_pi, r_pi = policy_dynamics(theta, mdp)
    v = jnp.linalg.solve(jnp.eye(r_pi.shape[0], dtype=r_pi.dtype) - gamma * P_pi, r_pi)
    return Values(v, _q_from_v(mdp, v, gamma))


def visitation(theta: jax.Array, mdp: MDPParams, discount) -> jax.Array:
    """Discounted state visitation d^π = ρ0 (I − κ P_π)^{-1} = Σ_t κ^t Pr(s_t = s), [S].

    κ = γ gives the weighting of the policy-gradient theorem; κ = 1 the undiscounted visit
    counts that the estimator without γ^t weights follows.
    """
    P_pi, _ = policy_dynamics(theta, mdp)
    eye = jnp.eye(P_pi.shape[0], dtype=P_pi.dtype)
    return jnp.linalg.solve((eye - discount * P_pi).T, mdp.rho0)


def objective(theta: jax.Array, mdp: MDPParams, gamma) -> jax.Array:
    """J(θ) = ρ0 · V^π = E[Σ_{t≥0} γ^t r_t] over untruncated episodes; scalar."""
    return jnp.dot(mdp.rho0, values(theta, mdp, gamma).v)


def finite_horizon_values(theta: jax.Array, mdp: MDPParams, gamma, horizon: int) -> Values:
    """Backward DP for the horizon-H objective: V_H = 0, Q_t = R + γ P V_{t+1}, V_t = Σ_a π Q_t.

    Returns:
      Values(v [H+1, S], q [H, S, A]); V_t(s) = E[Σ_{k=t}^{H−1} γ^{k−t} r_k | s_t = s].
    """
    pi = policy_probs(theta)

    def step(v_next, _):
        q_t = _q_from_v(mdp, v_next, gamma)
        v_t = jnp.sum(pi * q_t, -1)
        return v_t, (v_t, q_t)

    v_end = jnp.zeros(mdp.rho0.shape, pi.dtype)
    _, (v, q) = jax.lax.scan(step, v_end, None, length=horizon, reverse=True)
    return Values(jnp.concatenate([v, v_end[None]]), q)


def state_occupancy(theta: jax.Array, mdp: MDPParams, horizon: int) -> jax.Array:
    """p_t(s) = Pr(s_t = s, episode running), t < H: p_0 = ρ0, p_{t+1} = p_t P_π; [H, S]."""
    P_pi, _ = policy_dynamics(theta, mdp)

    def step(p_t, _):
        return p_t @ P_pi, p_t

    _, p = jax.lax.scan(step, mdp.rho0.astype(P_pi.dtype), None, length=horizon)
    return p


def finite_horizon_objective(theta: jax.Array, mdp: MDPParams, gamma, horizon: int) -> jax.Array:
    """J_H(θ) = ρ0 · V_0 = E[Σ_{t<min(H, end)} γ^t r_t], what time-limited episodes measure."""
    return jnp.dot(mdp.rho0, finite_horizon_values(theta, mdp, gamma, horizon).v[0])


def exact_grad(theta: jax.Array, mdp: MDPParams, gamma, *, horizon: int | None = None):
    """∇θ J (horizon None) or ∇θ J_H by `jax.grad` through the solve / DP; [S, A]."""
    if horizon is None:
        return jax.grad(objective)(theta, mdp, gamma)
    return jax.grad(finite_horizon_objective)(theta, mdp, gamma, horizon)


def pg_theorem_grad(
    theta: jax.Array,
    mdp: MDPParams,
    gamma,
    *,
    horizon: int | None = None,
    visitation_discount=None,
) -> jax.Array:
    """Policy-gradient-theorem form Σ_s d(s) Σ_a ∇π(a|s) Q(s, a) (Sutton et al. 2000; S&B §13.2).

    Infinite horizon: d = ρ0 (I − κ P_π)^{-1}. Horizon H: Σ_{t<H} κ^t Σ_s p_t(s) Σ_a ∇π(a|s)
    Q_t(s, a). With κ = γ (default) this is ∇J; with κ = 1 it is the expectation of REINFORCE
    without γ^t weights, which is not ∇J for γ < 1 (and not the gradient of any function in
    general, Nota & Thomas 2020). d and Q are held fixed; only ∇π is differentiated, as the VJP
    of θ ↦ π with cotangent W[s, a] = d(s) Q(s, a). For the softmax this reduces to
    ∇_{θ[s,a]} = d(s) π(a|s) (Q(s, a) − V(s)).

    Returns:
      [S, A], same dtype as θ.
    """
    kappa = gamma if visitation_discount is None else visitation_discount
    if horizon is None:
        W = visitation(theta, mdp, kappa)[:, None] * values(theta, mdp, gamma).q
    else:
        p = state_occupancy(theta, mdp, horizon)
        q = finite_horizon_values(theta, mdp, gamma, horizon).q
        w_t = kappa ** jnp.arange(horizon, dtype=theta.dtype)
        W = jnp.einsum("t,ts,tsa->sa", w_t, p, q)
    _, vjp = jax.vjp(policy_probs, theta)
    return vjp(jax.lax.stop_gradient(W).astype(theta.dtype))[0]


def finite_difference_grad(f: Callable[[jax.Array], jax.Array], theta: jax.Array, eps=1e-5):
    """Central differences (f(θ + ε e_i) − f(θ − ε e_i)) / 2ε per coordinate; same shape as θ.

    Truncation error O(ε²); use float64 (`jax.enable_x64`) for small ε.
    """
    basis = jnp.eye(theta.size, dtype=theta.dtype).reshape(theta.size, *theta.shape)
    diff = jax.vmap(lambda e: f(theta + eps * e) - f(theta - eps * e))(basis)
    return (diff / (2 * eps)).reshape(theta.shape)


class Identities(NamedTuple):
    product_rule: jax.Array  # () max |∇π(a|s) − π(a|s) ∇log π(a|s)|
    zero_mean_score: jax.Array  # () max |Σ_a π(a|s) ∇log π(a|s)|


def score_identities(theta: jax.Array) -> Identities:
    """Residuals of ∇π = π ∇log π and E_{a∼π}[∇log π(a|s)] = 0 (S&B 2018 §13.3, §13.4).

    ∇π from `jax.jacobian` of the softmax, ∇log π from pgjax's `Categorical.log_prob`.
    """
    pi = policy_probs(theta)
    jac_pi = jax.jacobian(policy_probs)(theta)  # [S, A, S, A]
    jac_logpi = jax.jacobian(log_policy)(theta)  # [S, A, S, A]
    product = jnp.max(jnp.abs(jac_pi - pi[..., None, None] * jac_logpi))
    mean_score = jnp.max(jnp.abs(jnp.einsum("sa,sa...->s...", pi, jac_logpi)))
    return Identities(product, mean_score)


def sampled_scores(key: jax.Array, theta: jax.Array, num_samples: int) -> jax.Array:
    """∇_{θ[s]} log π(a|s) for a ∼ π(·|s) in every state at once; [N, S, A] (row s from state s).

    Their mean → 0 at rate 1/√N: the zero-mean-score identity by sampling.
    """
    S, _ = theta.shape
    actions = jax.random.categorical(key, theta, shape=(num_samples, S))  # [N, S]

    def score(a):
        return jax.grad(lambda t: jnp.sum(Categorical(t).log_prob(a)))(theta)

    return jax.vmap(score)(actions)


# ---------------------------------------------------------------------------------------------
# Monte Carlo REINFORCE with pgjax's rollout, returns and loss
# ---------------------------------------------------------------------------------------------


def first_episode_mask(dones: jax.Array) -> jax.Array:
    """1 on each stream's first episode (up to and including its first done), 0 after.

    Args:
      dones: [T, *batch] bool, the episode ended at step t.

    Returns:
      [T, *batch] float32 m_t = 1[Σ_{k<t} done_k = 0].
    """
    ended_before = jnp.cumsum(dones, axis=0) - dones
    return (ended_before == 0).astype(jnp.float32)


def sample_episodes(key: jax.Array, env: Env, theta: jax.Array, num_episodes: int):
    """One episode per stream: B fresh resets, then a window of T = H steps.

    The time limit H guarantees every first episode ends inside the window; later (auto-reset)
    episodes are masked out, so the sample is B i.i.d. complete episodes.

    Returns:
      (batch, mask): Transition [H, B, ...] and first_episode_mask [H, B] float32.
    """
    horizon = env.params.max_steps_in_episode
    k_reset, k_roll = jax.random.split(key)
    runner = init_runner(k_reset, env, num_episodes)
    _, batch = rollout(k_roll, env, tabular_policy(theta), runner, horizon)
    return batch, first_episode_mask(batch.done)


def episode_grads(
    theta: jax.Array,
    batch: Transition,
    returns: jax.Array,
    mask: jax.Array,
    *,
    baseline: jax.Array | None = None,
    weights: jax.Array | None = None,
) -> jax.Array:
    """Per-episode REINFORCE estimates ĝ_i = Σ_t m_t w_t (G_t − b_t) ∇θ log π(a_t|s_t).

    Each is −∇θ of pgjax's `reinforce_loss` on one stream, times the stream's number of
    masked-in steps L_i: the loss averages over steps, ∇J is a per-episode sum (Williams 1992).

    Args:
      theta: [S, A] policy parameters.
      batch: Transition [T, B, ...] (obs one-hot [T, B, S]).
      returns: [T, B] float G_t.
      mask: [T, B] float, 1 on the episode's steps, at least one per stream.
      baseline: [T, B] or scalar float b_t, or None (keyword-only).
      weights: [T, B] float w_t (γ^t for ∇J), or None (keyword-only).

    Returns:
      [B, S, A] float32.
    """
    chex.assert_equal_shape([returns, mask, batch.reward])
    if baseline is not None:
        baseline = jnp.broadcast_to(baseline, returns.shape)

    def one(obs, action, g, m, b, w):
        def surrogate(th):
            log_prob = tabular_policy(th)(obs).log_prob(action)
            return -reinforce_loss(log_prob, g, baseline=b, mask=m, weights=w) * jnp.sum(m)

        return jax.grad(surrogate)(theta)

    return jax.vmap(one, in_axes=1)(batch.obs, batch.action, returns, mask, baseline, weights)


def reinforce_grads(
    theta: jax.Array,
    batch: Transition,
    mask: jax.Array,
    gamma,
    *,
    gamma_weights: bool = True,
    baseline: str = "none",
    v_table: jax.Array | None = None,
) -> jax.Array:
    """Per-episode estimates for one variant, with returns from pgjax's `discounted_returns`.

    Args:
      theta: [S, A].
      batch, mask: from `sample_episodes`.
      gamma: discount of the returns (and of the weights).
      gamma_weights: weight step t by γ^{episode_t} (unbiased for ∇J) or not (common practice,
        biased for γ < 1) (keyword-only).
      baseline: "none"; "mean", the batch mean return over masked-in steps (includes the
        episode's own return: an O(1/#steps) bias); or "value", b_t = V_t(s_t) from `v_table`
        (keyword-only).
      v_table: [H+1, S] exact finite-horizon values (`finite_horizon_values(...).v`).

    Returns:
      [B, S, A] per-episode estimates.
    """
    returns = discounted_returns(batch.reward, batch.done, gamma)
    weights = gamma**batch.episode_t if gamma_weights else None
    if baseline == "none":
        b = None
    elif baseline == "mean":
        b = masked_mean(returns, mask)
    elif baseline == "value":
        b = v_table[batch.episode_t, jnp.argmax(batch.obs, -1)]
    else:
        raise ValueError(f"baseline must be none, mean or value, got {baseline!r}")
    return episode_grads(theta, batch, returns, mask, baseline=b, weights=weights)


class EstimatorProblem(NamedTuple):
    """The tabular problem on which estimators are checked against the exact gradient."""

    mdp: MDPParams
    theta: jax.Array  # [S, A] softmax policy logits
    env: Env  # the MDP as a batched env
    v_table: jax.Array  # exact V_t(s) of theta, for estimators that use a value
    truth: jax.Array  # exact ∇J(theta), float64


def estimator_problem(num_states: int = 6, num_actions: int = 3, horizon: int = 20,
                      gamma: float = 1.0) -> EstimatorProblem:
    """The random MDP (key 1) and policy (key 2) of tests/test_estimators.py and
    experiments/estimators, with its exact values and gradient."""
    mdp = random_mdp(jax.random.key(1), num_states, num_actions, horizon=horizon)
    theta = jax.random.normal(jax.random.key(2), (num_states, num_actions))
    env = make_env(mdp, "TabularMDP-estimators")
    v_table = finite_horizon_values(theta, mdp, gamma, horizon).v
    with jax.enable_x64(True):
        truth = exact_grad(theta.astype(jnp.float64), mdp.astype(jnp.float64), gamma,
                           horizon=horizon)
    return EstimatorProblem(mdp, theta, env, v_table, truth)


def estimator_grads(
    key: jax.Array,
    env: Env,
    theta: jax.Array,
    estimator,
    num_groups: int,
    gamma,
    *,
    v_table: jax.Array | None = None,
) -> jax.Array:
    """Per-group estimates of ∇J from any pgjax estimator, on i.i.d. groups of episodes.

    K = `estimator.group_size` (1 if it has none) envs per group are reset from one key (one
    start state), num_groups × K in all, for a window of T = H steps; the estimator's targets
    are restricted to each env's first episode, and each env's estimate is
    Σ_t m_t w_t A_t ∇θ log π(a_t|s_t) (`episode_grads`), or the estimator's `episode_terms`.
    The K estimates of a group depend on each other (through a group baseline) but groups are
    independent, so their means are i.i.d. samples whose expectation is what the estimator
    estimates per episode (up to a batch-wide baseline's O(1/B) coupling).

    Args:
      key: PRNG key.
      env: `make_env` of the MDP.
      theta: [S, A] policy parameters.
      estimator: a pgjax estimator (use normalize=False: per-batch normalization rescales).
      num_groups: number of groups (static).
      gamma: discount.
      v_table: [H+1, S] exact finite-horizon values for estimators that use a value: V(s_t) is
        V_{episode_t}(s_t), and a cut episode is worth 0 (J_H stops at H) (keyword-only).

    Returns:
      [num_groups, S, A] per-group mean estimates.
    """
    horizon = env.params.max_steps_in_episode
    group = getattr(estimator, "group_size", 1)
    k_reset, k_roll = jax.random.split(key)
    runner = init_runner(k_reset, env, num_groups * group, group_size=group)
    after, batch = rollout(k_roll, env, tabular_policy(theta), runner, horizon)
    first = first_episode_mask(batch.done)
    values = value_fn = None
    if estimator.uses_value:
        values = v_table[batch.episode_t, jnp.argmax(batch.obs, -1)]
        value_fn = lambda obs: jnp.zeros(obs.shape[:-1], jnp.float32)
    inputs = EstimatorInputs(batch, after.obs, gamma, values, value_fn, horizon)
    targets = estimator(inputs)
    mask = first if targets.mask is None else targets.mask * first
    if hasattr(estimator, "episode_terms"):  # its own baseline per parameter
        score = lambda th, obs, action, m: jnp.sum(m * tabular_policy(th)(obs).log_prob(action))
        scores = jax.vmap(jax.grad(score), in_axes=(None, 1, 1, 1))(
            theta, batch.obs, batch.action, mask)
        g = estimator.episode_terms(scores, targets._replace(mask=mask))
    else:
        g = episode_grads(theta, batch, jnp.broadcast_to(targets.advantages, mask.shape), mask,
                          weights=targets.weights)
    return g.reshape(num_groups, group, *g.shape[1:]).mean(1)


def mutant_grads(theta: jax.Array, batch: Transition, mask: jax.Array, gamma) -> dict:
    """Per-episode estimates with one deliberate bug each, which the checks must catch:
    undiscounted returns, weights γ^(t+1) instead of γ^t, and the mean over steps instead of the
    per-episode sum. Same arguments as `reinforce_grads`; returns {bug: [B, S, A]}.
    """
    returns = discounted_returns(batch.reward, batch.done, gamma)
    w = gamma**batch.episode_t
    steps = mask.sum(0)[:, None, None]
    return {
        "undiscounted returns": episode_grads(
            theta, batch, discounted_returns(batch.reward, batch.done, 1.0), mask, weights=w
        ),
        "weights gamma^(t+1)": episode_grads(theta, batch, returns, mask, weights=w * gamma),
        "mean over steps": episode_grads(theta, batch, returns, mask, weights=w) / steps,
    }


# ---------------------------------------------------------------------------------------------
# Statistics of the estimates (host side, float64)
# ---------------------------------------------------------------------------------------------


class GradStats(NamedTuple):
    """Sufficient statistics of N per-episode estimates, flattened to D = S·A."""

    count: jax.Array  # () float, N
    total: jax.Array  # [D] float, Σ_i ĝ_i
    outer: jax.Array  # [D, D] float, Σ_i ĝ_i ĝ_iᵀ


def grad_stats(g: jax.Array) -> GradStats:
    """Statistics of per-episode estimates g [N, ...]."""
    flat = g.reshape(g.shape[0], -1)
    return GradStats(jnp.asarray(flat.shape[0], flat.dtype), flat.sum(0), flat.T @ flat)


def add_stats(a: GradStats, b: GradStats) -> GradStats:
    """Merge two sets of statistics (in float64 on the host)."""
    f64 = lambda x: np.asarray(x, np.float64)
    return GradStats(*(f64(x) + f64(y) for x, y in zip(a, b, strict=True)))


class Estimate(NamedTuple):
    """How a Monte Carlo mean of N per-episode estimates compares with an exact gradient."""

    n: int
    mean: np.ndarray  # [D], ḡ
    variance: float  # tr Cov(ĝ) per episode
    rel_error: float  # ‖ḡ − ∇J‖ / ‖∇J‖
    noise: float  # 99% quantile of ‖ḡ − E ĝ‖ / ‖∇J‖ from the per-episode spread
    cosine: float  # cos(ḡ, ∇J)
    chi2: float  # (ḡ − ∇J)ᵀ (Cov/N)⁺ (ḡ − ∇J), Hotelling's statistic at large N
    dof: int  # rank of Cov (S_live · (A − 1) for a softmax: rows of ∇log π sum to 0)
    p_value: float  # Pr(χ²_dof ≥ chi2): the χ² test of E ĝ = ∇J

    @property
    def ci(self) -> tuple[float, float]:
        """99% CI for the relative bias ‖E ĝ − ∇J‖ / ‖∇J‖: rel_error ∓ noise (triangle ineq.)."""
        return max(0.0, self.rel_error - self.noise), self.rel_error + self.noise

    @property
    def within_ci(self) -> bool:
        """Zero bias is inside the CI."""
        return self.rel_error <= self.noise


def noise_quantile(cov: np.ndarray, n: int, level: float = 0.99, draws: int = 200_000) -> float:
    """Quantile of ‖Z‖, Z ∼ N(0, Σ/n): ‖Z‖² = Σ_i λ_i χ²_1 over the eigenvalues λ of Σ/n.

    The CLT approximation of ‖ḡ − E ĝ‖ (sampled with a fixed seed; deterministic).
    """
    lam = np.clip(np.linalg.eigvalsh(np.asarray(cov, np.float64) / n), 0.0, None)
    chi2 = np.random.default_rng(0).chisquare(1, size=(draws, lam.size))
    return float(np.quantile(np.sqrt(chi2 @ lam), level))


def chi2_test(diff: np.ndarray, cov: np.ndarray, n: int, rtol: float = 1e-5):
    """χ² = diffᵀ (Cov/n)⁺ diff on the range of Cov (eigenvalues > rtol · max), its dof and
    p-value Pr(χ²_dof ≥ χ²). Under E ĝ = ∇J and the CLT, χ² ∼ χ²_dof."""
    lam, U = np.linalg.eigh(np.asarray(cov, np.float64) / n)
    keep = lam > rtol * lam.max()
    chi2 = float(np.sum((U[:, keep].T @ diff) ** 2 / lam[keep]))
    dof = int(keep.sum())
    return chi2, dof, float(jax.scipy.special.gammaincc(dof / 2.0, chi2 / 2.0))


def summarize(stats: GradStats, true_grad, level: float = 0.99) -> Estimate:
    """Relative error, its CI from the per-episode spread, χ² test, cosine and variance."""
    n = float(stats.count)
    mean = np.asarray(stats.total, np.float64) / n
    cov = (np.asarray(stats.outer, np.float64) - n * np.outer(mean, mean)) / (n - 1)
    g = np.asarray(true_grad, np.float64).reshape(-1)
    norm = np.linalg.norm(g)
    chi2, dof, p_value = chi2_test(mean - g, cov, int(n))
    return Estimate(
        n=int(n),
        mean=mean,
        variance=float(np.trace(cov)),
        rel_error=float(np.linalg.norm(mean - g) / norm),
        noise=noise_quantile(cov, int(n), level) / norm,
        cosine=float(mean @ g / (np.linalg.norm(mean) * norm)),
        chi2=chi2,
        dof=dof,
        p_value=p_value,
    )


def ratio_estimate(g_stream: np.ndarray, k_stream: np.ndarray, truth) -> Estimate:
    """R = Σ_b ĝ_b / Σ_b K_b, the per-episode mean, with its delta-method spread.

    Linearized per-stream terms z_b = (ĝ_b − R K_b) / K̄ + R have mean R and Cov(z)/n ≈ Var(R)
    over n streams (the noise radius); the reported variance is K̄ tr Cov(z), per episode.
    """
    g, k = np.asarray(g_stream, np.float64), np.asarray(k_stream, np.float64)
    ratio = g.sum(0) / k.sum()
    z = (g - k[:, None] * ratio) / k.mean() + ratio
    est = summarize(GradStats(len(z), z.sum(0), z.T @ z), truth)
    # per-episode equivalent variance: Var(R) ≈ tr Cov / (number of episodes)
    return est._replace(n=int(k.sum()), variance=est.variance * float(k.mean()))


# ---------------------------------------------------------------------------------------------
# Several passes over one batch: the clipped ratio surrogate
# ---------------------------------------------------------------------------------------------


def surrogate_episode_grads(
    theta: jax.Array,
    batch: Transition,
    behaviour_log_probs: jax.Array,
    advantages: jax.Array,
    mask: jax.Array,
    *,
    clip_eps,
    weights: jax.Array | None = None,
) -> jax.Array:
    """Per-episode gradients of pgjax's `clipped_surrogate_loss`, ascent direction:
    ĝ_i(θ) = Σ_t m_t w_t ∇θ min(r_t A_t, clip(r_t, 1 − ε, 1 + ε) A_t), r_t = π_θ(a_t|s_t) /
    π_old(a_t|s_t).

    At θ = θ_old (r_t = 1) it is the REINFORCE estimate of `episode_grads` for every ε. Like
    `episode_grads`, it is −∇θ of the loss on one stream times the stream's L_i masked-in steps.

    Args:
      theta: [S, A] policy parameters.
      batch: Transition [T, B, ...] (obs one-hot [T, B, S]).
      behaviour_log_probs: [T, B] log π_old(a_t|s_t) of the policy that collected the batch.
      advantages: [T, B] float A_t.
      mask: [T, B] float, 1 on the episode's steps, at least one per stream.
      clip_eps: ε (0: no clip) (keyword-only).
      weights: [T, B] float w_t, or None (keyword-only).

    Returns:
      [B, S, A] float32.
    """
    chex.assert_equal_shape([behaviour_log_probs, advantages, mask, batch.reward])

    def one(obs, action, old, adv, m, w):
        def surrogate(th):
            log_prob = tabular_policy(th)(obs).log_prob(action)
            loss, _ = clipped_surrogate_loss(log_prob, old, adv, clip_eps=clip_eps, mask=m,
                                             weights=w)
            return -loss * jnp.sum(m)

        return jax.grad(surrogate)(theta)

    return jax.vmap(one, in_axes=1)(batch.obs, batch.action, behaviour_log_probs, advantages,
                                    mask, weights)


def batch_kl(theta_old: jax.Array, theta: jax.Array, obs: jax.Array, mask: jax.Array) -> jax.Array:
    """Mean exact KL(π_old(·|s_t) ‖ π_θ(·|s_t)) over the masked-in steps of a batch; scalar.

    Zero with zero gradient at θ = θ_old (its minimum); for the tabular softmax
    ∇_{θ[s]} KL(π_old(·|s) ‖ π_θ(·|s)) = π_θ(·|s) − π_old(·|s).

    Args:
      theta_old, theta: [S, A] policy parameters; differentiable in θ.
      obs: [T, B, S] one-hot states.
      mask: [T, B] float, the steps that count.
    """
    kl = tabular_policy(theta_old)(obs).kl(tabular_policy(theta)(obs))
    return masked_mean(kl, mask)


def surrogate_sgd(
    theta0: jax.Array,
    batch: Transition,
    advantages: jax.Array,
    mask: jax.Array,
    *,
    clip_eps,
    step_size,
    num_steps: int,
    weights: jax.Array | None = None,
) -> jax.Array:
    """E plain gradient-ascent steps on the clipped surrogate of one batch, collected by θ0.

    θ_{k+1} = θ_k − α ∇θ ℓ(θ_k), ℓ = `clipped_surrogate_loss` over the whole batch with
    `count` = B episodes: ℓ(θ) = −(1/B) Σ_i Σ_t m_t w_t min(r_t A_t, clip(r_t) A_t), so the
    first step is α times the mean of the per-episode REINFORCE estimates, an unbiased estimate
    of α ∇J(θ0); later steps reuse the batch (importance ratio r_t = π_θk / π_θ0, states still
    from θ0), which biases (θ_E − θ0) / (E α) as an estimate of ∇J(θ0).

    Args:
      theta0: [S, A] parameters that collected the batch.
      batch: Transition [T, B, ...].
      advantages: [T, B] float A_t.
      mask: [T, B] float, 1 on the steps that count.
      clip_eps: ε (0: no clip) (keyword-only; may be traced).
      step_size: α (keyword-only; may be traced).
      num_steps: E (keyword-only; static).
      weights: [T, B] float w_t, or None (keyword-only).

    Returns:
      [E, S, A] θ_1 … θ_E.
    """
    behaviour = tabular_policy(theta0)(batch.obs).log_prob(batch.action)
    count = batch.reward.shape[1]

    def loss(theta):
        log_prob = tabular_policy(theta)(batch.obs).log_prob(batch.action)
        value, _ = clipped_surrogate_loss(log_prob, behaviour, advantages, clip_eps=clip_eps,
                                          mask=mask, weights=weights, count=count)
        return value

    def step(theta, _):
        theta = theta - step_size * jax.grad(loss)(theta)
        return theta, theta

    _, thetas = jax.lax.scan(step, theta0, None, length=num_steps)
    return thetas


def expected_surrogate(
    theta: jax.Array, theta_old: jax.Array, mdp: MDPParams, gamma, horizon: int
) -> jax.Array:
    """E over episodes of π_old of the unclipped surrogate Σ_t γ^t r_t G_t; scalar.

    L(θ) = Σ_{t<H} γ^t Σ_s p_t(s) Σ_a π_θ(a|s) Q_t(s, a), with the occupancy p_t and Q_t of
    θ_old held fixed (Kakade & Langford 2002; Schulman et al. 2015): the expected objective of
    `surrogate_sgd` with ε = 0 and weights γ^t. ∇L(θ_old) = ∇J_H(θ_old) (the policy-gradient
    theorem); L itself is Σ_t γ^t E[G_t], not J_H, and away from θ_old its gradient differs
    from ∇J_H by the change of the state distribution it ignores.
    """
    p = state_occupancy(theta_old, mdp, horizon)
    q = finite_horizon_values(theta_old, mdp, gamma, horizon).q
    w_t = gamma ** jnp.arange(horizon, dtype=theta.dtype)
    W = jax.lax.stop_gradient(jnp.einsum("t,ts,tsa->sa", w_t, p, q))
    return jnp.sum(W * policy_probs(theta))
