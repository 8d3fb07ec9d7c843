"""pgjax: REINFORCE policy gradients in pure, jitted, vmapped JAX."""

from pgjax.components import Components, build
from pgjax.config import Config
from pgjax.envs import Env
from pgjax.estimators import Estimator, EstimatorInputs, ReturnToGo, returns_and_mask
from pgjax.evaluate import evaluate, play
from pgjax.losses import (
    Targets,
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
    seed_keys,
    train,
    train_chunk,
    train_step,
)

__version__ = "0.1.0"

HOST = {"train_run": "pgjax.experiment", "evaluate_run": "pgjax.experiment",
        "reproduce_run": "pgjax.experiment"}


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
    "GaussianPolicy",
    "GRUPolicy",
    "Metrics",
    "RecurrentRunnerState",
    "RunnerState",
    "ReturnToGo",
    "Targets",
    "TrainState",
    "Transition",
    "ValueNet",
    "build",
    "complete_episode_mask",
    "discounted_returns",
    "episode_start_mask",
    "evaluate",
    "evaluate_run",
    "init_policy",
    "initial_carry",
    "init_runner",
    "init_state",
    "loss_and_grad",
    "loss_fn",
    "make_optimizer",
    "make_train",
    "masked_mean",
    "normalize",
    "play",
    "policy_gradient_loss",
    "policy_over_time",
    "reinforce_loss",
    "reproduce_run",
    "returns_and_mask",
    "rollout",
    "seed_keys",
    "step_policy",
    "sweep",
    "train",
    "train_chunk",
    "train_run",
    "train_step",
    "value_loss",
]
