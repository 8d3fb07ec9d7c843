"""The one frozen training config: numeric hyperparameters are pytree leaves, shapes are static."""

from typing import Literal

from flax import struct

Baseline = Literal["none", "mean", "value"]
Window = Literal["episodes", "complete", "truncate", "bootstrap"]
Schedule = Literal["constant", "linear"]


class Config(struct.PyTreeNode):
    """REINFORCE hyperparameters.

    Leaves (lr, gamma, ent_coef, max_grad_norm, value_coef) may be traced, so a grid of configs
    vmaps into one program; the static fields fix shapes and loop lengths and split programs.

    Window choices for episodes cut by the fixed rollout window of T = num_steps steps:
      episodes: only episodes that start at window step s ≤ T − H (H the env's time limit), all
        of which end inside the window; unbiased Monte Carlo. Needs T ≥ H; uses the fraction
        (T − H) / T of the steps roughly, so pick T several times H.
      complete: only steps whose episode ends inside the window; exact returns, but short
        episodes are over-represented (long ones are cut more often): biased, less so as T
        grows (6.5% at T = 2H, 2.5% at T = 5H on the tabular MDP of experiments/derivation).
      truncate: every step counts, the return is summed to the window's end; biased low for
        steps near the cut (their future rewards are missing).
      bootstrap: every step counts, the cut is filled with the learned value V(s) at the window's
        end and at time-limit truncation (from info["final_observation"]); biased by V's error,
        lower variance. Needs baseline="value".
    """

    env: str = struct.field(pytree_node=False, default="CartPole-v1")  # registered gymnax env id
    num_envs: int = struct.field(pytree_node=False, default=64)  # parallel envs per seed
    num_steps: int = struct.field(pytree_node=False, default=500)  # rollout window T per update
    total_timesteps: int = struct.field(pytree_node=False, default=2_048_000)  # env steps per seed
    hidden: tuple[int, ...] = struct.field(pytree_node=False, default=(32, 32))  # MLP widths
    baseline: Baseline = struct.field(pytree_node=False, default="mean")  # subtracted from G_t
    window: Window = struct.field(pytree_node=False, default="complete")  # episodes cut by window
    gamma_weighting: bool = struct.field(pytree_node=False, default=False)  # γ^t score weights
    normalize_advantages: bool = struct.field(pytree_node=False, default=True)  # per batch
    lr_schedule: Schedule = struct.field(pytree_node=False, default="linear")  # Adam lr decay
    unroll: int = struct.field(pytree_node=False, default=1)  # rollout scan unroll (GPU speed)
    loss_chunks: int = struct.field(pytree_node=False, default=1)  # time chunks of the gradient

    lr: float = 1e-2  # Adam learning rate
    gamma: float = 0.99  # discount γ in [0, 1]
    ent_coef: float = 0.0  # entropy bonus coefficient
    max_grad_norm: float = 1.0  # clip gradients to this global norm
    value_coef: float = 0.5  # weight of the value loss (baseline="value")
    init_log_std: float = 0.0  # initial log std of Gaussian policies (continuous actions only)

    @property
    def steps_per_update(self) -> int:
        return self.num_envs * self.num_steps

    @property
    def num_updates(self) -> int:
        return self.total_timesteps // self.steps_per_update

    def validate(self) -> "Config":
        """Raise ValueError with a one-line message on the first inconsistent field."""
        for name in ("num_envs", "num_steps", "total_timesteps", "unroll", "loss_chunks"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if self.num_updates < 1:
            raise ValueError(
                f"total_timesteps={self.total_timesteps} is smaller than one rollout "
                f"(num_envs × num_steps = {self.steps_per_update})"
            )
        if self.num_steps % self.loss_chunks:
            raise ValueError(
                f"loss_chunks={self.loss_chunks} must divide num_steps={self.num_steps}"
            )
        if not 0.0 <= float(self.gamma) <= 1.0:
            raise ValueError(f"gamma must be in [0, 1], got {self.gamma}")
        if not float(self.lr) > 0.0:
            raise ValueError(f"lr must be positive, got {self.lr}")
        if not float(self.max_grad_norm) > 0.0:
            raise ValueError(f"max_grad_norm must be positive, got {self.max_grad_norm}")
        for name in ("ent_coef", "value_coef"):
            if float(getattr(self, name)) < 0.0:
                raise ValueError(f"{name} must be non-negative, got {getattr(self, name)}")
        if not self.hidden or min(self.hidden) <= 0:
            raise ValueError(f"hidden sizes must be positive, got {self.hidden}")
        if self.window == "bootstrap" and self.baseline != "value":
            raise ValueError("window='bootstrap' needs baseline='value' (a learned V to bootstrap)")
        checks = {
            "baseline": ("none", "mean", "value"),
            "window": ("episodes", "complete", "truncate", "bootstrap"),
            "lr_schedule": ("constant", "linear"),
        }
        for name, allowed in checks.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {getattr(self, name)!r}")
        return self
