"""Action distributions, policy and value networks (flax.linen).

The policy contract the trainer relies on: a flax module whose `__call__(obs)` maps observations
[..., *obs_shape] to a distribution, a pytree with `sample(key) -> action [..., *action_shape]`,
`log_prob(action) -> [...]` and `entropy() -> [...]` (and `mode()` for greedy evaluation).
`Categorical` and `DiagGaussian` are the built-in distributions; a distribution that also has
`noise(key)` and `sample_from(noise)` and is a pytree gets its noise drawn before the rollout loop.
A value network maps observations [..., *obs_shape] to V(s) [...].

The built-in networks take a `torso` (obs [..., *obs_shape] -> features [..., F]): `Flatten`
(default) for vectors, `ConvTorso` for image-like observations such as MinAtar's [10, 10, C].

A recurrent policy has `initialize_carry(batch_shape) -> carry` (no parameters needed) and
`__call__(carry, obs, first) -> (carry, distribution)`, where `first` [...] marks the steps that
start an episode: the policy resets its carry there. The runner keeps the carry across rollout
windows (`pgjax.rollout.RecurrentRunnerState`), and the loss replays each window from the carry
it started with (`policy_over_time`). `GRUPolicy` is the built-in one; `init_policy`,
`step_policy` and `policy_over_time` call either kind.
"""

from collections.abc import Sequence
from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

LOG_2PI = float(np.log(2.0 * np.pi))


class Categorical(NamedTuple):
    """π(a|s) = softmax(logits)[a]; logits [..., A]."""

    logits: jax.Array

    def noise(self, key: jax.Array) -> jax.Array:
        """Gumbel noise for `sample_from`, shaped like logits (needs only their shape/dtype)."""
        return jax.random.gumbel(key, self.logits.shape, self.logits.dtype)

    def sample_from(self, noise: jax.Array) -> jax.Array:
        """argmax(logits + Gumbel noise) ~ softmax(logits): the Gumbel-max trick."""
        return jnp.argmax(self.logits + noise, -1)

    def sample(self, key: jax.Array) -> jax.Array:
        """Same draw as `jax.random.categorical(key, logits)`, bit for bit."""
        return self.sample_from(self.noise(key))

    def log_prob(self, action: jax.Array) -> jax.Array:
        logp = jax.nn.log_softmax(self.logits)
        return jnp.take_along_axis(logp, action[..., None].astype(jnp.int32), -1)[..., 0]

    def entropy(self) -> jax.Array:
        logp = jax.nn.log_softmax(self.logits)
        return -jnp.sum(jnp.exp(logp) * logp, -1)

    def mode(self) -> jax.Array:
        return jnp.argmax(self.logits, -1)

    def kl(self, other: "Categorical") -> jax.Array:
        """KL(self ‖ other) = Σ_a p(a) (log p(a) − log q(a)), exact; [...]."""
        logp, logq = jax.nn.log_softmax(self.logits), jax.nn.log_softmax(other.logits)
        return jnp.sum(jnp.exp(logp) * (logp - logq), -1)


class DiagGaussian(NamedTuple):
    """π(a|s) = N(a; mean, diag(exp(log_std)²)); mean [..., A], log_std [A] or [..., A]."""

    mean: jax.Array
    log_std: jax.Array

    def sample(self, key: jax.Array) -> jax.Array:
        # No noise/sample_from pair as Categorical has: drawn outside the rollout loop, the same
        # noise gives a sample that differs in the last bit (XLA contracts mean + std · noise
        # differently there), and recorded continuous-control runs must reproduce bitwise.
        return self.mean + jnp.exp(self.log_std) * jax.random.normal(key, self.mean.shape)

    def log_prob(self, action: jax.Array) -> jax.Array:
        z = (action - self.mean) * jnp.exp(-self.log_std)
        return jnp.sum(-0.5 * z**2 - self.log_std - 0.5 * LOG_2PI, -1)

    def entropy(self) -> jax.Array:
        ent = self.log_std + 0.5 * (1.0 + LOG_2PI)
        return jnp.sum(jnp.broadcast_to(ent, self.mean.shape), -1)

    def mode(self) -> jax.Array:
        return self.mean

    def kl(self, other: "DiagGaussian") -> jax.Array:
        """KL(self ‖ other) = Σ_i log(σ'_i/σ_i) + (σ_i² + (μ_i − μ'_i)²) / (2σ'_i²) − ½, exact."""
        ratio = jnp.exp(2.0 * (self.log_std - other.log_std))  # σ² / σ'²
        shift = ((self.mean - other.mean) * jnp.exp(-other.log_std)) ** 2
        return jnp.sum(0.5 * (ratio + shift - 1.0) - (self.log_std - other.log_std), -1)


def orthogonal(scale: float = 1.0):
    """Orthogonal initializer (Saxe et al., 2014) built from plain jnp ops.

    Same distribution as `nn.initializers.orthogonal` (Haar, via Gram–Schmidt, i.e. QR with a
    positive diagonal), but no LAPACK call: batched QR under `jax.vmap` over seeds runs as a
    custom call that schedules work on XLA's CPU thread pool from inside it, and on a 2-core CPU
    that deadlocked (jax 0.10.2: every worker waiting, a vmapped init never finishing).
    """

    def init(key, shape, dtype=jnp.float32):
        rows, cols = int(np.prod(shape[:-1])), shape[-1]
        big, small = max(rows, cols), min(rows, cols)
        q = gram_schmidt(jax.random.normal(key, (big, small), jnp.float32))
        q = q if rows >= cols else q.T
        return (scale * q).reshape(shape).astype(dtype)

    return init


def gram_schmidt(a: jax.Array) -> jax.Array:
    """Orthonormal columns spanning those of a [m, n], m ≥ n (Gram–Schmidt, done twice)."""

    def column(j, q):
        v = a[:, j]
        for _ in range(2):  # a second pass restores orthogonality lost to rounding
            v = v - q @ (q.T @ v)  # columns ≥ j of q are still 0
        return q.at[:, j].set(v / jnp.linalg.norm(v))

    return jax.lax.fori_loop(0, a.shape[1], column, jnp.zeros_like(a))


class Flatten(nn.Module):
    """obs [..., *obs_shape] -> [..., prod(obs_shape)], for `obs_ndim` = len(obs_shape)."""

    obs_ndim: int = 1

    def __call__(self, obs: jax.Array) -> jax.Array:
        if self.obs_ndim == 1:
            return obs
        return obs.reshape(*obs.shape[: obs.ndim - self.obs_ndim], -1)


class ConvTorso(nn.Module):
    """ReLU convolutions over obs [..., H, W, C], flattened to [..., F].

    The MinAtar network of Young & Tian (2019) is one 3×3 convolution of 16 channels, stride 1,
    followed by a dense layer: `ConvTorso((16,))` then the policy's `hidden` MLP.

    impl="patches" (default) computes each convolution as one matmul over the k×k patches;
    impl="lax" calls `nn.Conv`. Same parameters (`Conv_i/kernel` [k, k, C, width], `bias`), same
    initialization, same function up to float rounding. On XLA:CPU a convolution inside the
    training scan (a loop in a loop) ran about 12× slower than alone (9.3 s against 0.77 s per
    Breakout-MinAtar update at 1 seed, jax 0.10.2); the patch matmul does not.
    """

    channels: Sequence[int] = (16,)
    kernel: int = 3
    impl: str = "patches"

    @nn.compact
    def __call__(self, obs: jax.Array) -> jax.Array:
        batch = obs.shape[:-3]
        x = obs.reshape(-1, *obs.shape[-3:])
        for i, width in enumerate(self.channels):
            if self.impl == "lax":
                x = nn.Conv(width, (self.kernel, self.kernel), padding="SAME",
                            kernel_init=orthogonal(np.sqrt(2.0)))(x)
            else:
                x = PatchConv(width, self.kernel, name=f"Conv_{i}")(x)
            x = nn.relu(x)
        return x.reshape(*batch, -1)


class PatchConv(nn.Module):
    """A k×k convolution, stride 1, SAME padding, as a matmul of the k×k patches of x [N, H, W, C]
    with the kernel [k, k, C, width] (the parameters and initialization of `nn.Conv`)."""

    width: int
    kernel: int = 3

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        k = self.kernel
        kernel = self.param("kernel", orthogonal(np.sqrt(2.0)), (k, k, x.shape[-1], self.width))
        bias = self.param("bias", nn.initializers.zeros_init(), (self.width,))
        h, w, lo, hi = x.shape[1], x.shape[2], (k - 1) // 2, k // 2  # XLA's SAME padding
        x = jnp.pad(x, ((0, 0), (lo, hi), (lo, hi), (0, 0)))
        patches = jnp.concatenate(
            [x[:, i : i + h, j : j + w, :] for i in range(k) for j in range(k)], -1
        )  # [N, H, W, k·k·C], ordered as the kernel's (i, j, c)
        return patches @ kernel.reshape(-1, self.width) + bias


def torso_or_flatten(torso: nn.Module | None) -> nn.Module:
    return Flatten() if torso is None else torso


class MLP(nn.Module):
    """tanh MLP with orthogonal init and a linear head of `out` units; x [..., D]."""

    hidden: Sequence[int]
    out: int
    out_scale: float = 1.0

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        for width in self.hidden:
            x = nn.Dense(width, kernel_init=orthogonal(np.sqrt(2.0)))(x)
            x = nn.tanh(x)
        return nn.Dense(self.out, kernel_init=orthogonal(self.out_scale))(x)


class CategoricalPolicy(nn.Module):
    """obs [..., *obs_shape] -> Categorical over `num_actions` (torso, then a tanh MLP)."""

    hidden: Sequence[int]
    num_actions: int
    torso: nn.Module | None = None  # None: Flatten(1), observations are vectors [..., D]

    @nn.compact
    def __call__(self, obs: jax.Array) -> Categorical:
        x = torso_or_flatten(self.torso)(obs)
        return Categorical(MLP(self.hidden, self.num_actions, out_scale=0.01)(x))


class GaussianPolicy(nn.Module):
    """obs [..., *obs_shape] -> DiagGaussian with a state-independent learned log_std."""

    hidden: Sequence[int]
    action_dim: int
    init_log_std: float = 0.0
    torso: nn.Module | None = None  # None: Flatten(1)

    @nn.compact
    def __call__(self, obs: jax.Array) -> DiagGaussian:
        x = torso_or_flatten(self.torso)(obs)
        mean = MLP(self.hidden, self.action_dim, out_scale=0.01)(x)
        log_std = self.param(
            "log_std", nn.initializers.constant(self.init_log_std), (self.action_dim,)
        )
        return DiagGaussian(mean, log_std)


class ValueNet(nn.Module):
    """obs [..., *obs_shape] -> V(s) [...]."""

    hidden: Sequence[int]
    torso: nn.Module | None = None  # None: Flatten(1)

    @nn.compact
    def __call__(self, obs: jax.Array) -> jax.Array:
        x = torso_or_flatten(self.torso)(obs)
        return MLP(self.hidden, 1)(x)[..., 0]


class GRUPolicy(nn.Module):
    """Recurrent policy: torso, tanh layers of widths hidden[:-1], a GRU cell of hidden[-1]
    units, then a linear head: Categorical over `num_actions`, or with `continuous` a
    DiagGaussian over `num_actions` dimensions with a learned state-independent log_std.

    `__call__(carry, obs, first)`: carry [..., hidden[-1]], obs [..., *obs_shape], first [...]
    bool (the carry is reset to zeros where an episode starts) -> (carry, distribution).
    """

    hidden: Sequence[int]
    num_actions: int
    continuous: bool = False
    init_log_std: float = 0.0
    torso: nn.Module | None = None  # None: Flatten(1)

    @nn.nowrap
    def initialize_carry(self, batch_shape: tuple[int, ...]) -> jax.Array:
        return jnp.zeros((*batch_shape, self.hidden[-1]), jnp.float32)

    @nn.compact
    def __call__(self, carry: jax.Array, obs: jax.Array, first: jax.Array):
        carry = jnp.where(first[..., None], self.initialize_carry(first.shape), carry)
        x = torso_or_flatten(self.torso)(obs)
        for width in self.hidden[:-1]:
            x = nn.tanh(nn.Dense(width, kernel_init=orthogonal(np.sqrt(2.0)))(x))
        carry, x = nn.GRUCell(self.hidden[-1])(carry, x)
        out = nn.Dense(self.num_actions, kernel_init=orthogonal(0.01))(x)
        if not self.continuous:
            return carry, Categorical(out)
        log_std = self.param(
            "log_std", nn.initializers.constant(self.init_log_std), (self.num_actions,)
        )
        return carry, DiagGaussian(out, jnp.broadcast_to(log_std, out.shape))


def is_recurrent(policy: nn.Module) -> bool:
    return hasattr(policy, "initialize_carry")


def initial_carry(policy: nn.Module, batch_shape: tuple[int, ...]):
    """A recurrent policy's initial carry for `batch_shape`; None for a feedforward one."""
    return policy.initialize_carry(batch_shape) if is_recurrent(policy) else None


def init_policy(policy: nn.Module, key: jax.Array, obs: jax.Array):
    """Parameters of `policy` for a batch of observations obs [B, *obs_shape]."""
    if is_recurrent(policy):
        batch = obs.shape[:1]
        return policy.init(key, policy.initialize_carry(batch), obs, jnp.ones(batch, bool))
    return policy.init(key, obs)


def step_policy(policy: nn.Module, params, carry, obs: jax.Array, first: jax.Array):
    """One step of either kind: (carry, distribution); a feedforward policy's carry is None."""
    if carry is None:
        return None, policy.apply(params, obs)
    return policy.apply(params, carry, obs, first)


def policy_over_time(policy: nn.Module, params, obs: jax.Array, first: jax.Array, carry):
    """The distributions of a time-major sequence obs [T, ...] (first [T, ...]).

    Feedforward (carry None): one call on the whole batch. Recurrent: a `lax.scan` over T from
    `carry` (the carry before step 0), resetting where `first`; gradients flow through it.
    """
    if carry is None:
        return policy.apply(params, obs)

    def step(carry, inputs):
        return policy.apply(params, carry, *inputs)

    return jax.lax.scan(step, carry, (obs, first))[1]
