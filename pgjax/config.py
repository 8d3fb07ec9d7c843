"""The one frozen training config: numeric hyperparameters are pytree leaves, shapes are static.

`Config` is the serializable record of a run (config.json, sweep specs, TOML experiment files);
`to_dict` / `from_dict` are its one encoding. Components (env, networks, estimator) are objects,
built from a config's strings in `pgjax.components.build` unless the caller passes their own.
"""

import dataclasses
import difflib
import math
import numbers
import os
from typing import Any, Literal, get_args

import jax
import numpy as np
from flax import struct

Baseline = Literal["none", "mean", "value"]
Window = Literal["episodes", "complete", "truncate", "bootstrap"]
Schedule = Literal["constant", "linear"]
Network = Literal["mlp", "cnn", "gru"]
Clip = Literal["global", "per-network"]
ConvImpl = Literal["patches", "lax"]
GroupRestart = Literal["group", "window"]
EstimatorName = Literal[
    "reward-to-go", "total-return", "rloo", "grpo", "dr-grpo", "gae", "optimal-baseline"
]

CHOICES = {
    "baseline": get_args(Baseline),
    "window": get_args(Window),
    "lr_schedule": get_args(Schedule),
    "network": get_args(Network),
    "clip": get_args(Clip),
    "conv_impl": get_args(ConvImpl),
    "group_restart": get_args(GroupRestart),
    "estimator": get_args(EstimatorName),
}


class Config(struct.PyTreeNode):
    """REINFORCE hyperparameters.

    Leaves (lr, gamma, ent_coef, max_grad_norm, value_coef, init_log_std) may be traced, so a
    grid of configs vmaps into one program; the static fields fix shapes and loop lengths and
    split programs.

    `estimator` picks how a batch becomes advantages (`pgjax.estimators`): "reward-to-go"
    (G_t with `baseline`, `window`, `gamma_weighting`), "total-return" (R(τ) on every step;
    baseline none or mean, window complete or episodes), "rloo" / "grpo" / "dr-grpo" (groups of
    `group_size` envs reset together each window), "gae" (GAE(`gae_lambda`) with a learned V)
    or "optimal-baseline" (whole episodes, the variance-minimizing baseline of each parameter).
    `group_restart` says when a group of the group estimators starts again from one shared
    state: "group", as soon as all K of its episodes have ended (members that ended first
    wait, their steps masked out; a window holds many rounds); "window", at the start of every
    window, using each env's first episode only (needs num_steps ≥ the episode limit).

    `clip` decides what `max_grad_norm` clips. "per-network": the policy's and the value net's
    gradients each on their own, so a large value-loss gradient does not shrink the policy's
    step; the nets share no parameters and Adam undoes a gradient's scale, so `value_coef` acts
    as the value net's step size relative to the policy's (its Adam update is multiplied by
    value_coef). "global": one global norm over both nets (what a config.json without the field
    reads as); value_coef then only shifts the value net's share of that norm.

    Passes over a batch (Schulman et al., 2017): the batch of one rollout window is used for
    `update_epochs` E passes, each split over the environments into `minibatches` M slices of
    whole time series (reshuffled every pass), one optimizer step per slice. The estimator's
    targets are made once per batch, before the passes. With E·M > 1 the policy loss is the
    ratio surrogate −mean(w_t · min(r_t A_t, clip(r_t, 1 − ε, 1 + ε) A_t)), r_t =
    π_θ(a_t|s_t) / π_old(a_t|s_t) with π_old the policy that collected the batch (`clip_eps`
    ε; ε = 0: no clipping), plus `kl_coef` · KL(π_old ‖ π_θ) averaged over the batch's states.
    With E = M = 1 the ratio is 1 and both terms have no gradient, so the plain score-function
    loss is used and clip_eps and kl_coef change nothing. Group estimators, PPO with `gae`, and
    GRPO as it is used (group advantages, clipped ratio, several epochs) are all this setting.

    Window choices for episodes cut by the fixed rollout window of T = num_steps steps:
      episodes: only episodes that start at window step s ≤ T − H (H the env's time limit), all
        of which end inside the window; unbiased Monte Carlo. Needs T ≥ H; uses the fraction
        (T − H) / T of the steps roughly, so pick T several times H.
      complete: only steps whose episode ends inside the window; exact returns, but short
        episodes are over-represented (long ones are cut more often): biased, less so as T
        grows (on the tabular MDP of experiments/derivation: 6.5% at T = 2H, 2.5% at T = 5H
        with a fresh runner each window; 10.0% / 4.0% with the runner carried, as training
        does: experiments/derivation/carried_window.py).
      truncate: every step counts, the return is summed to the window's end; biased low for
        steps near the cut (their future rewards are missing).
      bootstrap: every step counts, the cut is filled with the learned value V(s) at the window's
        end and at time-limit truncation (from info["final_observation"]); biased by V's error,
        lower variance. Needs baseline="value".
    """

    env: str = struct.field(pytree_node=False, default="CartPole-v1")  # registered gymnax env id
    num_envs: int = struct.field(pytree_node=False, default=64)  # parallel envs per seed
    num_steps: int = struct.field(pytree_node=False, default=500)  # rollout window T per update
    # env steps per seed (the default: 64 updates of 64 × 500); rounded down to whole updates,
    # which `train` and `sweep` say on stderr
    total_timesteps: int = struct.field(pytree_node=False, default=2_048_000)
    # MLP widths (policy and value net)
    hidden: tuple[int, ...] = struct.field(pytree_node=False, default=(32, 32))
    # mlp; cnn for image observations (a conv torso before the MLP); gru for a recurrent policy
    network: Network = struct.field(pytree_node=False, default="mlp")
    # how network cnn convolves: patches (one matmul over the 3×3 patches) or lax (nn.Conv, what
    # runs recorded before this field existed use); the same function up to rounding
    conv_impl: ConvImpl = struct.field(pytree_node=False, default="patches")
    # how a batch becomes advantages (pgjax.estimators; docs: Concepts, Estimators)
    estimator: EstimatorName = struct.field(pytree_node=False, default="reward-to-go")
    # K of rloo / grpo / dr-grpo (must divide num_envs)
    group_size: int = struct.field(pytree_node=False, default=8)
    # when a group of rloo / grpo / dr-grpo restarts from one shared state: group, once all K of
    # its episodes ended; window, every window, using each env's first episode (needs num_steps
    # ≥ the episode limit; what runs recorded before this field existed did)
    group_restart: GroupRestart = struct.field(pytree_node=False, default="group")
    baseline: Baseline = struct.field(pytree_node=False, default="mean")  # subtracted from G_t
    # which steps of episodes cut by the window train, and how (docs: Concepts, Windows)
    window: Window = struct.field(pytree_node=False, default="complete")
    gamma_weighting: bool = struct.field(pytree_node=False, default=False)  # γ^t score weights
    # per-batch advantage normalization
    normalize_advantages: bool = struct.field(pytree_node=False, default=True)
    # Adam learning rate: constant, or linear decay to 0
    lr_schedule: Schedule = struct.field(pytree_node=False, default="linear")
    # rollout scan steps per loop trip (a GPU speed setting; docs: Speed)
    unroll: int = struct.field(pytree_node=False, default=1)
    # time chunks of the gradient (must divide num_steps): less activation memory (docs: Speed)
    loss_chunks: int = struct.field(pytree_node=False, default=1)
    # per-network: the policy's and the value net's gradients are clipped to max_grad_norm on
    # their own; global: one norm over both (what runs recorded before this field existed did)
    clip: Clip = struct.field(pytree_node=False, default="per-network")
    update_epochs: int = struct.field(pytree_node=False, default=1)  # passes E over each batch
    # M minibatches per pass, split over the envs (must divide num_envs); one optimizer step each
    minibatches: int = struct.field(pytree_node=False, default=1)

    lr: float = 1e-2  # Adam learning rate
    gamma: float = 0.99  # discount γ in [0, 1]
    ent_coef: float = 0.0  # entropy bonus coefficient
    max_grad_norm: float = 1.0  # clip each network's gradient (clip="global": both) to this norm
    # weight of the value loss; with clip per-network, the value net's step size relative to
    # the policy's (its Adam update is multiplied by it)
    value_coef: float = 0.5
    init_log_std: float = 0.0  # initial log std of Gaussian policies (continuous actions only)
    gae_lambda: float = 0.95  # λ of estimator="gae"
    # ε of the ratio clip min(r·A, clip(r, 1 ± ε)·A) with update_epochs × minibatches > 1;
    # 0: no clip
    clip_eps: float = 0.0
    # β of the penalty β · KL(π_old ‖ π_θ) with update_epochs × minibatches > 1 (exact for
    # Categorical and DiagGaussian)
    kl_coef: float = 0.0

    @property
    def steps_per_update(self) -> int:
        return self.num_envs * self.num_steps

    @property
    def num_updates(self) -> int:
        return self.total_timesteps // self.steps_per_update

    @property
    def passes(self) -> int:
        """Optimizer steps per batch: update_epochs × minibatches."""
        return self.update_epochs * self.minibatches

    def validate(self) -> "Config":
        """Raise ValueError with a one-line message on the first inconsistent field.

        Only the config's own rules; those that need the env or the components (the episode
        limit, action space, observation shape, the estimator's own rules) are checked by
        `pgjax.components.build`.
        """
        for name in ("num_envs", "num_steps", "total_timesteps", "unroll", "loss_chunks",
                     "group_size", "update_epochs", "minibatches"):
            if not is_int(value := getattr(self, name)):
                raise ValueError(f"{name} must be an integer, got {value!r}")
            if value <= 0:
                raise ValueError(f"{name} must be positive, got {value}")
        if self.num_updates < 1:
            raise ValueError(
                f"total_timesteps={self.total_timesteps} is smaller than one rollout "
                f"(num_envs × num_steps = {self.steps_per_update})"
            )
        if self.num_updates > MAX_UPDATES:  # the update counter is an int32
            raise ValueError(
                f"total_timesteps={self.total_timesteps} is {self.num_updates} updates of "
                f"num_envs × num_steps = {self.steps_per_update}; at most {MAX_UPDATES}"
            )
        if self.num_envs % self.minibatches:
            raise ValueError(
                f"minibatches={self.minibatches} must divide num_envs={self.num_envs}"
            )
        if self.num_steps % self.loss_chunks:
            raise ValueError(
                f"loss_chunks={self.loss_chunks} must divide num_steps={self.num_steps}"
            )
        leaves = {}  # the concrete numeric leaves; traced ones (a vmapped grid) are skipped
        for name in LEAVES:
            value = getattr(self, name)
            if isinstance(value, jax.core.Tracer):
                continue
            if not is_number(value):
                raise ValueError(f"{name} must be a number, got {value!r}")
            leaves[name] = float(value)
            if not abs(leaves[name]) <= FLOAT32_MAX:  # trained as float32
                raise ValueError(f"{name} must be finite in float32 (at most {FLOAT32_MAX:.4g} "
                                 f"in size), got {value}")
        for name in ("gamma", "gae_lambda"):
            if name in leaves and not 0.0 <= leaves[name] <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        if "clip_eps" in leaves and not leaves["clip_eps"] < 1.0:
            raise ValueError(f"clip_eps must be in [0, 1), got {self.clip_eps}")
        for name in ("lr", "max_grad_norm"):
            if name in leaves and not leaves[name] > 0.0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        for name in ("ent_coef", "value_coef", "clip_eps", "kl_coef"):
            if name in leaves and leaves[name] < 0.0:
                raise ValueError(f"{name} must be non-negative, got {getattr(self, name)}")
        if not isinstance(self.hidden, tuple | list):
            raise ValueError(f"hidden must be a tuple of integers, got {self.hidden!r}")
        if bad := [h for h in self.hidden if not is_int(h)]:
            raise ValueError(f"hidden sizes must be integers, got {bad[0]!r}")
        if not self.hidden or min(self.hidden) <= 0:
            raise ValueError(f"hidden sizes must be positive, got {self.hidden}")
        for name, allowed in CHOICES.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {getattr(self, name)!r}")
        return self


def is_int(value: Any) -> bool:
    """An integer, Python's or NumPy's (not a bool)."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
    """A real number (not a bool): Python's, or a NumPy or JAX scalar of a numeric dtype."""
    if isinstance(value, bool | np.bool_):
        return False
    if isinstance(value, numbers.Real):
        return True
    dtype = getattr(value, "dtype", None)
    return (getattr(value, "shape", None) == () and dtype is not None
            and (np.issubdtype(dtype, np.integer) or np.issubdtype(dtype, np.floating)))


FIELDS = tuple(f.name for f in dataclasses.fields(Config))
LEAVES = tuple(f.name for f in dataclasses.fields(Config) if f.metadata.get("pytree_node", True))
STATIC = tuple(name for name in FIELDS if name not in LEAVES)


def closest(name: str, options, n: int = 1, cutoff: float = 0.6) -> str:
    """'; did you mean X?' (up to `n` names, comma-separated) for the closest of `options`, or
    ''."""
    close = difflib.get_close_matches(str(name), list(options), n=n, cutoff=cutoff)
    return f"; did you mean {', '.join(close)}?" if close else ""


def check_value(name: str, value: Any, where: str = "") -> Any:
    """Type-check one field's JSON/YAML/TOML value; returns it normalized (hidden as a tuple).

    Raises ValueError naming the field (prefixed by `where`) and the expected type.
    """
    if name not in FIELDS:
        raise ValueError(f"{where}unknown config field {name!r}{closest(name, FIELDS)}")
    default = getattr(Config(), name)
    if isinstance(default, bool):
        ok, kind = isinstance(value, bool), "true or false"
    elif isinstance(default, int):
        ok, kind = is_int(value), "an integer"
    elif isinstance(default, float):
        ok, kind = is_number(value), "a number"
        value = float(value) if ok else value
    elif isinstance(default, tuple):
        ok = isinstance(value, list | tuple) and all(is_int(v) for v in value)
        kind = "a list of integers"
        value = tuple(value) if ok else value
    else:
        ok, kind = isinstance(value, str), "a string"
    if not ok:
        raise ValueError(f"{where}{name} must be {kind}, got {value!r}")
    return value


def to_dict(config: Config) -> dict:
    """Every field as plain JSON values (hidden as a list; a numpy or jax scalar as a number)."""
    return {name: plain(getattr(config, name)) for name in FIELDS}


def plain(value, *, nulls: bool = False):
    """`value` with numpy and jax scalars as Python numbers and tuples as lists, recursively;
    with `nulls`, every float that is not finite (NaN: no episode finished) as None, so that
    its JSON reads in any parser (Python's own writes NaN, which jq, JavaScript and Go refuse)."""
    if isinstance(value, dict):
        return {k: plain(v, nulls=nulls) for k, v in value.items()}
    if isinstance(value, (tuple, list)):
        return [plain(v, nulls=nulls) for v in value]
    if hasattr(value, "item") and getattr(value, "shape", None) == ():
        value = value.item()
    if nulls and isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def first_line(error: BaseException, width: int = 200) -> str:
    """The first line of an exception's message (its type's name when it has none), cut to
    `width` characters (a cut one ends in "…"): an error of a library as one line of pgjax's."""
    text = str(error).strip()
    if not text:
        return type(error).__name__
    line = text.splitlines()[0]
    return line if len(line) <= width else line[:width - 1].rstrip() + "…"


MAX_UPDATES = 2**31 - 1
FLOAT32_MAX = 3.4028234663852886e38


# What a run record written before a field existed had instead of today's default.
RECORD_DEFAULTS = {"clip": "global", "conv_impl": "lax", "group_restart": "window"}


def from_dict(fields: dict, where: str = "", *, record: bool = False) -> Config:
    """The Config of `to_dict` output (or a TOML/YAML mapping of some fields), type-checked.

    Missing fields take their defaults. With `record` (a run's config.json, which holds every
    field of its time) a field that did not exist yet takes the behaviour of that time instead:
    `RECORD_DEFAULTS` where the default has changed since (no `clip` field: "global"; no
    `conv_impl`: "lax"; no `group_restart`: "window"). A recorded total-return run with
    baseline "value" reads as baseline "none", which is what it trained with (total-return
    takes baseline none or mean).

    Raises:
      ValueError: one line naming the first unknown or mistyped field.
    """
    if record:
        fields = {**RECORD_DEFAULTS, **fields}
        if (fields.get("estimator"), fields.get("baseline")) == ("total-return", "value"):
            fields["baseline"] = "none"
    return Config(**{k: check_value(k, v, where) for k, v in fields.items()})


# Keys of an experiments/configs TOML file that are not config fields: what the results table
# compares against, the file's variants (each a `name` and the fields it changes), and whether
# scripts/reproduce.py adds its default variants.
EXPERIMENT_KEYS = ("reference", "variant", "default_variants")


def from_experiment(spec: dict, where: str = "") -> tuple[Config, dict]:
    """(base Config, {key: value} of the EXPERIMENT_KEYS present) of a TOML experiment file."""
    rest = {k: v for k, v in spec.items() if k in EXPERIMENT_KEYS}
    fields = {k: v for k, v in spec.items() if k not in EXPERIMENT_KEYS}
    return from_dict(fields, where), rest


def load_file(path: "str | os.PathLike", what: str = "", name: str | None = None) -> dict:
    """The mapping in a config file or sweep spec: TOML (`.toml`), JSON (`.json`) or YAML (any
    other name).

    The one reader of such files: `pgjax train --config FILE`, scripts/reproduce.py and
    `pgjax sweep` read through it, then decode the fields (`from_dict`, `from_experiment`,
    `sweep.spec.parse_spec`). YAML reads `1e-3` as a number (YAML 1.1 wants `1.0e-3`); a key
    given twice in YAML or JSON is an error (TOML refuses it itself).

    Raises:
      ValueError: one line, naming `what` ("spec ") and the file (`name`, default its path),
        that says what is wrong with it (unreadable, not valid TOML/JSON/YAML, a key given
        twice, not a mapping).
    """
    import json
    import tomllib
    from pathlib import Path

    import yaml

    path = Path(path)
    where = f"{what}{path if name is None else name}"
    try:
        text = path.read_text()
        if path.suffix == ".toml":
            data = tomllib.loads(text)
        elif path.suffix == ".json":
            data = json.loads(text, object_pairs_hook=_unique_keys)
        else:
            data = yaml.load(text, Loader=_yaml_loader())
    except OSError as e:
        raise ValueError(f"{where}: cannot read it ({e.strerror or e})") from None
    except UnicodeDecodeError:
        raise ValueError(f"{where} is not text (UTF-8)") from None
    except _Repeated as e:
        raise ValueError(f"{where}: {e}") from None
    except (tomllib.TOMLDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{where} is not valid {path.suffix[1:].upper()} ({e})") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        at = f" (line {mark.line + 1})" if mark is not None else ""
        raise ValueError(f"{where} is not valid YAML{at}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{where}: a {what.strip() or 'config file'} must be a mapping of "
                         f"fields, got {type(data).__name__}")
    return data


class _Repeated(ValueError):
    """A key given twice in a config file."""


def _unique_keys(pairs: list) -> dict:
    keys = [k for k, _ in pairs]
    if (key := repeated(keys)) is not None:
        raise _Repeated(f"{key} is given twice")
    return dict(pairs)


def repeated(items: list) -> Any:
    """The first item that an earlier one equals, or None."""
    return next((x for i, x in enumerate(items) if x in items[:i]), None)


def _yaml_loader():
    """yaml.SafeLoader that reads 1e-3 as a float and refuses a key given twice."""
    import re

    import yaml

    class Loader(yaml.SafeLoader):
        def construct_mapping(self, node, deep=False):
            keys = [self.construct_object(key_node, deep=deep) for key_node, _ in node.value]
            if (key := repeated(keys)) is not None:
                line = node.value[keys.index(key, keys.index(key) + 1)][0].start_mark.line
                raise _Repeated(f"{key} is given twice (line {line + 1})")
            return super().construct_mapping(node, deep=deep)

    Loader.add_implicit_resolver(
        "tag:yaml.org,2002:float",
        re.compile(r"^[-+]?(?:\d+\.?\d*|\.\d+)[eE][-+]?\d+$"),
        list("-+0123456789."),
    )
    return Loader


def from_file(path: "str | os.PathLike", name: str | None = None) -> tuple[Config, dict]:
    """(Config, experiment keys) of a config file read by `load_file`: its config fields
    decoded by `from_experiment` (an experiments/configs file's `[reference]`, `[[variant]]`
    and `default_variants` are returned apart, not read as fields).

    Raises:
      ValueError: one line naming the file (`name`, default its path) and what does not read
        (`load_file`) or the first unknown or mistyped field.
    """
    name = str(path) if name is None else name
    return from_experiment(load_file(path, name=name), f"{name}: ")
