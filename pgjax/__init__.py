"""pgjax: REINFORCE policy gradients in pure, jitted, vmapped JAX."""

from pgjax.components import Components, build
from pgjax.config import Config
from pgjax.envs import Env
from pgjax.estimators import (
    GAE,
    Estimator,
    EstimatorInputs,
    GroupRelative,
    OptimalBaseline,
    ReturnToGo,
    TotalReturn,
    returns_and_mask,
)
from pgjax.evaluate import evaluate, play
from pgjax.losses import (
    Targets,
    clipped_surrogate_loss,
    masked_mean,
    normalize,
    policy_gradient_loss,
    reinforce_loss,
    value_loss,
)
from pgjax.policies import (
    Categorical,
    CategoricalPolicy,
    ConvTorso,
    DiagGaussian,
    Flatten,
    GaussianPolicy,
    GRUPolicy,
    ValueNet,
    init_policy,
    initial_carry,
    policy_over_time,
    step_policy,
)
from pgjax.returns import complete_episode_mask, discounted_returns, episode_start_mask
from pgjax.rollout import RecurrentRunnerState, RunnerState, Transition, init_runner, rollout
from pgjax.sweep import sweep
from pgjax.train import (
    Metrics,
    TrainState,
    init_state,
    loss_and_grad,
    loss_fn,
    make_optimizer,
    make_train,
    minibatch_indices,
    seed_keys,
    train,
    train_chunk,
    train_step,
    update_passes,
)

__version__ = "0.1.0"

HOST = {"train_run": "pgjax.experiment", "resume_run": "pgjax.experiment",
        "evaluate_run": "pgjax.experiment", "reproduce_run": "pgjax.experiment"}


def __getattr__(name: str):
    """Host runners are imported on first use (orbax, tqdm: `import pgjax` stays light)."""
    if name in HOST:
        import importlib

        return getattr(importlib.import_module(HOST[name]), name)
    raise AttributeError(f"module 'pgjax' has no attribute {name!r}")

__all__ = [
    "Categorical",
    "CategoricalPolicy",
    "Components",
    "Config",
    "ConvTorso",
    "DiagGaussian",
    "Env",
    "Estimator",
    "EstimatorInputs",
    "Flatten",
    "GAE",
    "GRUPolicy",
    "GaussianPolicy",
    "GroupRelative",
    "Metrics",
    "OptimalBaseline",
    "RecurrentRunnerState",
    "ReturnToGo",
    "RunnerState",
    "Targets",
    "TotalReturn",
    "TrainState",
    "Transition",
    "ValueNet",
    "build",
    "clipped_surrogate_loss",
    "complete_episode_mask",
    "discounted_returns",
    "episode_start_mask",
    "evaluate",
    "evaluate_run",
    "init_policy",
    "init_runner",
    "init_state",
    "initial_carry",
    "loss_and_grad",
    "loss_fn",
    "make_optimizer",
    "make_train",
    "masked_mean",
    "minibatch_indices",
    "normalize",
    "play",
    "policy_gradient_loss",
    "policy_over_time",
    "reinforce_loss",
    "reproduce_run",
    "resume_run",
    "returns_and_mask",
    "rollout",
    "seed_keys",
    "step_policy",
    "sweep",
    "train",
    "train_chunk",
    "train_run",
    "train_step",
    "update_passes",
    "value_loss",
]
