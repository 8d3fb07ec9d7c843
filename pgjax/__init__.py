"""pgjax: REINFORCE policy gradients in pure, jitted, vmapped JAX."""

from pgjax.config import Config
from pgjax.envs import Env
from pgjax.losses import masked_mean, normalize, reinforce_loss, value_loss
from pgjax.policies import Categorical, CategoricalPolicy, DiagGaussian, GaussianPolicy, ValueNet
from pgjax.returns import complete_episode_mask, discounted_returns, episode_start_mask
from pgjax.rollout import RunnerState, Transition, init_runner, rollout
from pgjax.sweep import sweep
from pgjax.train import (
    Metrics,
    TrainState,
    init_state,
    loss_and_grad,
    loss_fn,
    make_networks,
    make_optimizer,
    make_train,
    returns_and_mask,
    train,
    train_chunk,
    train_step,
)

__version__ = "0.1.0"

__all__ = [
    "Categorical",
    "CategoricalPolicy",
    "Config",
    "DiagGaussian",
    "Env",
    "GaussianPolicy",
    "Metrics",
    "RunnerState",
    "TrainState",
    "Transition",
    "ValueNet",
    "complete_episode_mask",
    "discounted_returns",
    "episode_start_mask",
    "init_runner",
    "init_state",
    "loss_and_grad",
    "loss_fn",
    "make_networks",
    "make_optimizer",
    "make_train",
    "masked_mean",
    "normalize",
    "reinforce_loss",
    "returns_and_mask",
    "rollout",
    "sweep",
    "train",
    "train_chunk",
    "train_step",
    "value_loss",
]
