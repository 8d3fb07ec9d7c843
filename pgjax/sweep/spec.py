"""Sweep specs and plans: parse and validate a spec, draw its random section, plan runs and chunks.
Host-only and deterministic: every process of a sweep makes the same plan from the same spec."""

import contextlib
import dataclasses
import itertools
import json
import math
import os
from typing import Any, NamedTuple

import numpy as np

from pgjax.components import build
from pgjax.config import (
    FIELDS,
    STATIC,
    Config,
    check_value,
    closest,
    load_file,
    plain,
    repeated,
)
from pgjax.envs import check_env_name
from pgjax.train import check_seed

SPEC_KEYS = ("grid", "random", "seeds", "seed", "chunk_runs")
MAX_RUNS = 2**20  # runs (configs × seeds) in one sweep: its plan and table fit a host's memory
DISTRIBUTIONS = ("log_uniform", "uniform", "choice")


class SpecError(ValueError):
    """A bad sweep spec, component or output directory: reported as one line."""


@contextlib.contextmanager
def spec_errors(prefix: str = ""):
    """A ValueError raised inside (by `pgjax.config`, `components`, ...) as a SpecError."""
    try:
        yield
    except ValueError as e:
        raise SpecError(f"{prefix}{e}") from None


@dataclasses.dataclass(frozen=True)
class Spec:
    """A validated sweep spec. Values are plain Python (hidden as a tuple)."""

    base: dict  # config fields shared by every run
    grid: dict  # field -> list of values (cartesian product)
    random: dict  # field -> {distribution: args}
    num_samples: int  # random draws (1 when there is no random section)
    seeds: int
    seed: int
    chunk_runs: int | None  # most runs per compiled batch; None: a whole group

    def to_json(self) -> dict:
        return json.loads(json.dumps(dataclasses.asdict(self)))

    @property
    def varying(self) -> tuple[str, ...]:
        """Fields that differ between configs, in spec order."""
        return tuple(self.grid) + tuple(f for f in self.random if f not in self.grid)


class Chunk(NamedTuple):
    index: int  # global chunk number
    group: int  # index of its static group
    runs: tuple[int, ...]  # global run ids, consecutive


class Plan(NamedTuple):
    """Everything the spec determines: configs, runs and chunks (identical in every process)."""

    spec: Spec
    configs: list[Config]  # config id -> Config with Python values
    runs: list[tuple[int, int]]  # run id -> (config id, seed index)
    groups: list[Config]  # static group -> its first config (the static fields)
    group_batch: list[int]  # static group -> runs per chunk before device padding
    chunks: list[Chunk]


# ----------------------------------------------------------------------------- parsing


def _is_number(x) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool)


def _is_count(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _field(name: str, value: Any, where: str) -> Any:
    with spec_errors():
        return check_value(name, value, where)


def _parse_random(section: Any) -> tuple[dict, int]:
    """The random section as {field: {distribution: [floats]}} and its num_samples."""
    if not isinstance(section, dict):
        raise SpecError(f"random must map fields to distributions, got {section!r}")
    section = dict(section)
    num_samples = section.pop("num_samples", None)
    if not section:
        raise SpecError("random is empty: give at least one field to sample")
    if not _is_count(num_samples) or num_samples < 1:
        raise SpecError(f"random: num_samples must be a positive integer, got {num_samples!r}")
    return {name: _distribution(name, dist) for name, dist in section.items()}, num_samples


def _distribution(name: str, dist: Any) -> dict:
    """One random field's {kind: [floats]}, checked."""
    if name not in FIELDS:
        raise SpecError(f"random: unknown config field {name!r}{closest(name, FIELDS)}")
    if name in STATIC:
        raise SpecError(
            f"random: {name} is a static (shape) field and cannot be sampled in the traced "
            f"random section; list its values under grid: (each value compiles a program)"
        )
    if not (isinstance(dist, dict) and len(dist) == 1):
        raise SpecError(
            f"random: {name} must be one of {{log_uniform: [low, high]}}, "
            f"{{uniform: [low, high]}}, {{choice: [values]}}; got {dist!r}"
        )
    (kind, args), = dist.items()
    if kind not in DISTRIBUTIONS:
        raise SpecError(
            f"random: {name}: unknown distribution {kind!r}{closest(kind, DISTRIBUTIONS)} "
            f"(one of {', '.join(DISTRIBUTIONS)})"
        )
    if not isinstance(args, list) or not args or not all(_is_number(a) for a in args):
        raise SpecError(f"random: {name}: {kind} needs a list of numbers, got {args!r}")
    if not all(math.isfinite(a) for a in args):
        raise SpecError(f"random: {name}: {kind} needs finite numbers, got {args!r}")
    if kind != "choice":
        if len(args) != 2 or not args[0] <= args[1]:
            raise SpecError(f"random: {name}: {kind} needs [low, high] with low ≤ high, "
                            f"got {args!r}")
        if kind == "log_uniform" and args[0] <= 0:
            raise SpecError(f"random: {name}: log_uniform needs low > 0, got {args!r}")
        if kind == "uniform" and not math.isfinite(args[1] - args[0]):
            raise SpecError(f"random: {name}: uniform's range {args!r} is too wide to draw from")
    return {kind: [float(a) for a in args]}


def _parse_grid(section: Any) -> dict:
    """The grid section as {field: [normalized values]}."""
    if not isinstance(section, dict) or not section:
        raise SpecError(f"grid is empty: give field: [values], got {section!r}")
    grid = {}
    for name, values in section.items():
        if name not in FIELDS:
            raise SpecError(f"grid: unknown config field {name!r}{closest(name, FIELDS)}")
        if not isinstance(values, list):
            raise SpecError(f"grid: {name} must be a list of values, got {values!r}")
        if not values:
            raise SpecError(f"grid: {name} is an empty list")
        grid[name] = [_field(name, v, "grid: ") for v in values]
        if (twice := repeated(grid[name])) is not None:
            raise SpecError(f"grid: {name} lists {describe({name: twice}).split('=', 1)[1]} "
                            f"twice (each value is a config)")
    return grid


def _positive_int(spec: dict, key: str, default):
    value = spec.get(key, default)
    if value is None and default is None:
        return None
    if not _is_count(value) or value <= 0:
        raise SpecError(f"{key} must be a positive integer, got {value!r}")
    return value


def parse_spec(spec: "Spec | str | os.PathLike | dict") -> Spec:
    """Read (a YAML, JSON or TOML path) and validate a spec's structure and types; no JAX work.
    A dict's numpy scalars count as numbers (`config.plain`). A `Spec` is returned as it is.

    Raises:
      SpecError: one line naming the first problem.
    """
    if isinstance(spec, Spec):
        return spec
    with spec_errors():
        spec = plain(spec) if isinstance(spec, dict) else load_file(spec, "spec ")
    if not isinstance(spec, dict):
        raise SpecError(f"a spec must be a mapping of fields, got {type(spec).__name__}")
    for key in spec:
        if key not in FIELDS and key not in SPEC_KEYS:
            raise SpecError(f"unknown field {key!r} in spec{closest(str(key), FIELDS + SPEC_KEYS)}")
    base = {k: _field(k, v, "") for k, v in spec.items() if k in FIELDS}
    grid = _parse_grid(spec["grid"]) if "grid" in spec else {}
    random, num_samples = _parse_random(spec["random"]) if "random" in spec else ({}, 1)
    for name in list(grid) + list(random):
        if name in base:
            raise SpecError(f"{name} is set both as a base field and in grid/random; keep one")
    for name in set(grid) & set(random):
        raise SpecError(f"{name} is in both grid and random; keep one")

    seed = spec.get("seed", 0)
    with spec_errors():
        check_seed(seed)
    seeds = _positive_int(spec, "seeds", 1)
    if (size := math.prod(map(len, grid.values())) * num_samples * seeds) > MAX_RUNS:
        raise SpecError(f"the spec asks for {size:,} runs (grid points × num_samples × seeds); "
                        f"a sweep holds at most {MAX_RUNS:,}: split it into several")
    return Spec(base=base, grid=grid, random=random, num_samples=num_samples, seeds=seeds,
                seed=seed, chunk_runs=_positive_int(spec, "chunk_runs", None))


# ----------------------------------------------------------------------------- planning


def sample(spec: Spec) -> list[dict]:
    """num_samples draws of the random fields (numpy, seeded by spec.seed; 6 significant digits)."""
    if not spec.random:
        return [{}]
    rng = np.random.default_rng(spec.seed)
    draws = []
    for _ in range(spec.num_samples):
        draw = {}
        for name, dist in spec.random.items():
            (kind, args), = dist.items()
            if kind == "log_uniform":
                x = math.exp(rng.uniform(math.log(args[0]), math.log(args[1])))
            elif kind == "uniform":
                x = rng.uniform(args[0], args[1])
            else:
                x = args[int(rng.integers(len(args)))]
            draw[name] = float(f"{float(x):.6g}")
        draws.append(draw)
    return draws


def describe(fields: dict) -> str:
    """'lr=0.01, hidden=[32, 32]': config fields as one label."""
    return ", ".join(f"{k}={list(v) if isinstance(v, tuple) else v}" for k, v in fields.items())


def static_key(config: Config) -> tuple:
    """The static fields of a config: runs that share them share a compiled program."""
    return tuple(getattr(config, name) for name in STATIC)


def make_plan(spec: Spec, *, env: str | None = None) -> Plan:
    """Configs (grid × random samples), runs (config × seed) and chunks of a `parse_spec` spec,
    all validated (SpecError naming a bad config's fields). `env`: the name of an env component
    given to the sweep, every config's `env` (it need not be a registered gymnax id)."""
    configs = _configs(spec, env)
    members: dict[tuple, list[int]] = {}  # static fields -> config ids, in order of appearance
    for c, config in enumerate(configs):
        members.setdefault(static_key(config), []).append(c)
    runs, chunks, group_batch = [], [], []
    for g, ids in enumerate(members.values()):
        group_runs = range(len(runs), len(runs) + len(ids) * spec.seeds)
        runs += [(c, s) for c in ids for s in range(spec.seeds)]
        size = min(spec.chunk_runs or len(group_runs), len(group_runs))
        group_batch.append(size)
        for start in range(0, len(group_runs), size):
            chunks.append(Chunk(len(chunks), g, tuple(group_runs[start:start + size])))
    groups = [configs[ids[0]] for ids in members.values()]
    return Plan(spec, configs, runs, groups, group_batch, chunks)


def _configs(spec: Spec, env: str | None) -> list[Config]:
    """Every grid point × random draw as a validated Config (and the random bounds checked)."""
    if env is not None and "env" in spec.grid:
        raise SpecError(f"grid: env cannot vary when an env component ({env!r}) is given")
    if env is not None and spec.base.get("env", env) != env:
        raise SpecError(
            f"the spec names env {spec.base['env']!r} but the env component is {env!r}; "
            f"remove env from the spec"
        )
    base = spec.base if env is None else {**spec.base, "env": env}
    points = [dict(zip(spec.grid, values, strict=True))
              for values in itertools.product(*spec.grid.values())]
    for name, dist in spec.random.items():  # the bounds, not only the values drawn
        (kind, args), = dist.items()
        for point, value in itertools.product(points, args):
            with spec_errors(f"random: {name}: {kind} {args!r}: "):
                Config(**{**base, **point, name: value}).validate()
    configs = []
    for point, draw in itertools.product(points, sample(spec)):
        try:
            config = Config(**{**base, **point, **draw}).validate()
            if env is None:
                check_env_name(config.env)
        except ValueError as e:
            at = f" (config {describe({**point, **draw})})" if point or draw else ""
            raise SpecError(f"{e}{at}") from None
        configs.append(config)
    return configs


def check_plan(plan: Plan, components: dict) -> None:
    """`pgjax.components.build` of every distinct case (static fields, init_log_std), before any
    work: the checks that need the env and the networks (touches JAX, no compile).

    Raises:
      SpecError: the first config or component that does not fit.
    """
    seen = set()
    for config in plan.configs:
        key = (static_key(config), config.init_log_std)
        if key not in seen:
            seen.add(key)
            with spec_errors():
                build(config, **components)


def planned(spec: "Plan | Spec | str | os.PathLike | dict", given: dict | None = None) -> Plan:
    """The plan of a spec, parsed (`parse_spec`), planned (`make_plan`, every config's env that
    of an env in `given`) and checked (`check_plan`) once; a `Plan` is returned as it is, so a
    caller that planned the sweep passes it down instead of the spec.

    Raises:
      SpecError: as `parse_spec`, `make_plan` and `check_plan`.
    """
    if isinstance(spec, Plan):
        return spec
    given = given or {}
    plan = make_plan(parse_spec(spec), env=given["env"].name if "env" in given else None)
    check_plan(plan, given)
    return plan
