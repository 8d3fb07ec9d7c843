"""Hyperparameter sweeps: configs × seeds, vmapped into one program per static group and sharded.

A spec (a YAML file or a dict) holds base config fields, a `grid:` and/or a `random:` section,
`seeds`, `seed` and `chunk_runs`:

    env: CartPole-v1
    total_timesteps: 256000
    grid:                       # cartesian product; static fields here split programs
      lr: [0.003, 0.01, 0.03]
      hidden: [[32, 32], [64, 64]]
    random:                     # num_samples draws, crossed with every grid point
      num_samples: 4
      ent_coef: {uniform: [0.0, 0.02]}
      gamma: {choice: [0.95, 0.99]}
      max_grad_norm: {log_uniform: [0.1, 10.0]}
    seeds: 16                   # seed i uses jax.random.split(jax.random.key(seed), seeds)[i]
    seed: 0
    chunk_runs: 256             # most runs in one compiled batch (device memory); default: all

A run is one config × one seed. Runs whose static fields (shapes, loop lengths) agree form a
group and are trained by one compiled program: `jax.vmap(train)` over their numeric leaves and
keys, the runs axis sharded over the local devices (`NamedSharding`, padded to a multiple of the
device count). Every chunk of a group is padded to the same batch size, so a run's numbers do not
depend on which runs share its batch (bitwise; checked on CPU and on an H200); a different batch
size or device count can move the last bits (XLA picks loop splits and summation orders by shape:
about 1e-8 on CPU, up to 1e-6 on GPU).

Files under `out_dir`: `sweep.json` (the normalized spec and provenance), `chunks/chunk-NNNNNN.npz`
(per-run metrics [runs, updates]) and `.json` (the chunk's table rows; its presence marks the chunk
done, so a rerun skips it), `results.csv` (one row per run), `summary.csv` / `summary.json`
(configs ranked by the IQM of the final return, 95% stratified-bootstrap CIs over seeds) and
`summary.png`. With `jax.distributed`, process p runs chunks p, p + P, ... and all processes share
`out_dir` (a shared filesystem); process 0 merges the table once every chunk is recorded.

Per run: final return (mean return of the episodes that finished in the last update), AUC (the
mean of that return over updates, skipping the NaN updates before the first episode ends), and
`diverged` (a non-finite loss or gradient norm at any update, or non-finite final parameters).
"""

import csv
import dataclasses
import difflib
import io
import itertools
import json
import math
import os
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import numpy as np

from pgjax import runs
from pgjax.config import Config
from pgjax.envs import check_env_name

FIELDS = tuple(f.name for f in dataclasses.fields(Config))
LEAVES = tuple(f.name for f in dataclasses.fields(Config) if f.metadata.get("pytree_node", True))
STATIC = tuple(name for name in FIELDS if name not in LEAVES)
SPEC_KEYS = ("grid", "random", "seeds", "seed", "chunk_runs")
DISTRIBUTIONS = ("log_uniform", "uniform", "choice")
MARKER = "pgjax_sweep"


class SpecError(ValueError):
    """A bad sweep spec or output directory: reported as one line."""


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


# ----------------------------------------------------------------------------- spec parsing


def _closest(name: str, options) -> str:
    close = difflib.get_close_matches(name, list(options), n=1, cutoff=0.6)
    return f"; did you mean {close[0]}?" if close else ""


def _is_number(x) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool)


def _check_value(name: str, value, where: str):
    """Type-check one config field value; returns it normalized (tuples for hidden)."""
    default = getattr(Config(), name)
    if isinstance(default, bool):
        ok = isinstance(value, bool)
        kind = "true or false"
    elif isinstance(default, int):
        ok = isinstance(value, int) and not isinstance(value, bool)
        kind = "an integer"
    elif isinstance(default, float):
        ok = _is_number(value)
        kind = "a number"
        value = float(value) if ok else value
    elif isinstance(default, tuple):
        ok = isinstance(value, list | tuple) and all(
            isinstance(v, int) and not isinstance(v, bool) for v in value
        )
        kind = "a list of integers"
        value = tuple(value) if ok else value
    else:
        ok = isinstance(value, str)
        kind = "a string"
    if not ok:
        raise SpecError(f"{where}{name} must be {kind}, got {value!r}")
    return value


def _check_field(name: str, where: str) -> None:
    if name not in FIELDS:
        raise SpecError(f"{where}unknown config field {name!r}{_closest(name, FIELDS)}")


def _parse_random(section, where="random: ") -> tuple[dict, int]:
    if not isinstance(section, dict):
        raise SpecError(f"random must map fields to distributions, got {section!r}")
    section = dict(section)
    num_samples = section.pop("num_samples", None)
    if not section:
        raise SpecError("random is empty: give at least one field to sample")
    if not (isinstance(num_samples, int) and not isinstance(num_samples, bool)) or num_samples < 1:
        raise SpecError(f"random: num_samples must be a positive integer, got {num_samples!r}")
    out = {}
    for name, dist in section.items():
        _check_field(name, where)
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
                f"random: {name}: unknown distribution {kind!r}{_closest(kind, DISTRIBUTIONS)} "
                f"(one of {', '.join(DISTRIBUTIONS)})"
            )
        if not isinstance(args, list) or not args or not all(_is_number(a) for a in args):
            raise SpecError(f"random: {name}: {kind} needs a list of numbers, got {args!r}")
        if kind != "choice":
            if len(args) != 2 or not args[0] <= args[1]:
                raise SpecError(f"random: {name}: {kind} needs [low, high] with low ≤ high, "
                                f"got {args!r}")
            if kind == "log_uniform" and args[0] <= 0:
                raise SpecError(f"random: {name}: log_uniform needs low > 0, got {args!r}")
        out[name] = {kind: [float(a) for a in args]}
    return out, num_samples


def _positive_int(spec: dict, key: str, default):
    value = spec.get(key, default)
    if value is None and default is None:
        return None
    if not (isinstance(value, int) and not isinstance(value, bool)) or value <= 0:
        raise SpecError(f"{key} must be a positive integer, got {value!r}")
    return value


def _loader():
    """yaml.SafeLoader that also reads 1e-3 as a float (YAML 1.1 wants 1.0e-3)."""
    import re

    import yaml

    class Loader(yaml.SafeLoader):
        pass

    Loader.add_implicit_resolver(
        "tag:yaml.org,2002:float",
        re.compile(r"^[-+]?(?:\d+\.?\d*|\.\d+)[eE][-+]?\d+$"),
        list("-+0123456789."),
    )
    return Loader


def parse_spec(spec: "str | os.PathLike | dict") -> Spec:
    """Read (YAML path) and validate a spec's structure and types; no JAX work.

    Raises:
      SpecError: one line naming the first problem.
    """
    if not isinstance(spec, dict):
        import yaml

        path = Path(spec)
        try:
            spec = yaml.load(path.read_text(), Loader=_loader())
        except OSError as e:
            raise SpecError(f"cannot read spec {path}: {e.strerror}") from None
        except yaml.YAMLError as e:
            where = getattr(e, "problem_mark", None)
            at = f" (line {where.line + 1})" if where is not None else ""
            raise SpecError(f"spec {path} is not valid YAML{at}") from None
    if not isinstance(spec, dict):
        raise SpecError(f"a spec must be a mapping of fields, got {type(spec).__name__}")
    for key in spec:
        if key not in FIELDS and key not in SPEC_KEYS:
            raise SpecError(
                f"unknown field {key!r} in spec{_closest(str(key), FIELDS + SPEC_KEYS)}"
            )
    base = {k: _check_value(k, v, "") for k, v in spec.items() if k in FIELDS}

    grid = {}
    if "grid" in spec:
        if not isinstance(spec["grid"], dict) or not spec["grid"]:
            raise SpecError(f"grid is empty: give field: [values], got {spec['grid']!r}")
        for name, values in spec["grid"].items():
            _check_field(name, "grid: ")
            if not isinstance(values, list):
                raise SpecError(f"grid: {name} must be a list of values, got {values!r}")
            if not values:
                raise SpecError(f"grid: {name} is an empty list")
            grid[name] = [_check_value(name, v, "grid: ") for v in values]
    random, num_samples = {}, 1
    if "random" in spec:
        random, num_samples = _parse_random(spec["random"])
    for name in list(grid) + list(random):
        if name in base:
            raise SpecError(f"{name} is set both as a base field and in grid/random; keep one")
    for name in set(grid) & set(random):
        raise SpecError(f"{name} is in both grid and random; keep one")

    seed = spec.get("seed", 0)
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise SpecError(f"seed must be a non-negative integer, got {seed!r}")
    return Spec(
        base=base,
        grid=grid,
        random=random,
        num_samples=num_samples,
        seeds=_positive_int(spec, "seeds", 1),
        seed=seed,
        chunk_runs=_positive_int(spec, "chunk_runs", None),
    )


def _sample(spec: Spec) -> list[dict]:
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


def _describe(fields: dict) -> str:
    return ", ".join(f"{k}={list(v) if isinstance(v, tuple) else v}" for k, v in fields.items())


def make_plan(spec: Spec) -> Plan:
    """Configs (grid × random samples), runs (config × seed) and chunks, all validated.

    Raises:
      SpecError: an invalid config (gamma outside [0, 1], unknown env, ...), naming its fields.
    """
    grid_values = itertools.product(*spec.grid.values())
    points = [dict(zip(spec.grid, values, strict=True)) for values in grid_values]
    configs = []
    for point in points:
        for draw in _sample(spec):
            fields = {**spec.base, **point, **draw}
            try:
                config = Config(**fields).validate()
                check_env_name(config.env)
            except ValueError as e:
                at = f" (config {_describe({**point, **draw})})" if point or draw else ""
                raise SpecError(f"{e}{at}") from None
            configs.append(config)

    groups, group_of = [], {}
    for config in configs:
        key = static_key(config)
        if key not in group_of:
            group_of[key] = len(groups)
            groups.append(config)
    runs_, chunks, group_batch = [], [], []
    for g, first in enumerate(groups):
        ids = [c for c, config in enumerate(configs) if static_key(config) == static_key(first)]
        group_runs = [len(runs_) + i for i in range(len(ids) * spec.seeds)]
        runs_ += [(c, s) for c in ids for s in range(spec.seeds)]
        size = min(spec.chunk_runs or len(group_runs), len(group_runs))
        group_batch.append(size)
        for start in range(0, len(group_runs), size):
            chunks.append(Chunk(len(chunks), g, tuple(group_runs[start:start + size])))
    return Plan(spec, configs, runs_, groups, group_batch, chunks)


def static_key(config: Config) -> tuple:
    return tuple(getattr(config, name) for name in STATIC)


def check_envs(plan: Plan) -> None:
    """`pgjax train`'s checks that need the env built (touches JAX), once per distinct case."""
    from pgjax.cli import check  # the same rules as `pgjax train`; lazy: cli imports this module

    seen = set()
    for config in plan.configs:
        key = (static_key(config), config.init_log_std)
        if key not in seen:
            seen.add(key)
            try:
                check(config, plan.spec.seeds)
            except ValueError as e:
                raise SpecError(str(e)) from None


# ----------------------------------------------------------------------------- the program


def seed_key_data(seed: int, seeds: int) -> np.ndarray:
    """[seeds, 2] uint32 key data of jax.random.split(jax.random.key(seed), seeds), as in train."""
    import jax

    return np.asarray(jax.random.key_data(jax.random.split(jax.random.key(seed), seeds)))


def _batch_program(static: Config):
    """(leaves [R] per LEAVES field, key data [R, 2]) -> (Metrics [R, U], params finite [R])."""
    import jax
    import jax.numpy as jnp

    from pgjax.train import train

    def program(leaves: dict, key_data):
        config = static.replace(**leaves)
        keys = jax.random.wrap_key_data(key_data)
        state, metrics = jax.vmap(train)(config, keys)
        finite = [jnp.isfinite(x).reshape(x.shape[0], -1).all(1) for x in
                  jax.tree.leaves(state.params)]
        return metrics, jnp.stack(finite, 1).all(1)

    return program


_COMPILED: dict = {}


def compiled_program(static: Config, batch: int, devices: tuple):
    """The jitted, sharded program for one static group and batch size (cached per process)."""
    import jax
    from jax.sharding import Mesh, NamedSharding, PartitionSpec

    key = (static_key(static), batch, devices)
    if key not in _COMPILED:
        mesh = Mesh(np.array(devices), ("runs",))
        runs_axis = NamedSharding(mesh, PartitionSpec("runs"))
        fn = jax.jit(_batch_program(static), in_shardings=runs_axis, out_shardings=runs_axis)
        leaves = {n: jax.ShapeDtypeStruct((batch,), np.float32) for n in LEAVES}
        key_data = jax.ShapeDtypeStruct((batch, 2), np.uint32)
        t = time.perf_counter()
        _COMPILED[key] = (fn.lower(leaves, key_data).compile(), time.perf_counter() - t)
    return _COMPILED[key]


def padded(n: int, devices: int) -> int:
    return -(-n // devices) * devices


def run_chunk(plan: Plan, chunk: Chunk, key_data: np.ndarray, devices: tuple) -> dict:
    """Train one chunk's runs in one program call; returns its record (rows) and metrics."""
    import jax

    static = plan.groups[chunk.group]
    batch = padded(plan.group_batch[chunk.group], len(devices))
    program, compile_seconds = compiled_program(static, batch, devices)
    idx = np.array(list(chunk.runs) + [chunk.runs[-1]] * (batch - len(chunk.runs)))
    cfg_ids = np.array([plan.runs[r][0] for r in idx])
    seed_ids = np.array([plan.runs[r][1] for r in idx])
    leaves = {
        n: np.array([getattr(plan.configs[c], n) for c in cfg_ids], np.float32) for n in LEAVES
    }
    t = time.perf_counter()
    metrics, finite = jax.block_until_ready(program(leaves, key_data[seed_ids]))
    output_devices = len(finite.sharding.device_set)
    metrics, finite = jax.device_get((metrics, finite))
    wall = time.perf_counter() - t
    n = len(chunk.runs)
    arrays = {k: np.asarray(v)[:n] for k, v in metrics._asdict().items()}
    arrays["params_finite"] = np.asarray(finite)[:n]
    arrays["run"] = np.asarray(chunk.runs)
    rows = [
        _row(plan, run, chunk, {k: arrays[k][i] for k in arrays if k != "run"}, wall)
        for i, run in enumerate(chunk.runs)
    ]
    record = {
        "chunk": chunk.index,
        "runs": list(chunk.runs),
        "rows": rows,
        "batch": batch,
        "devices": len(devices),
        "output_devices": output_devices,  # devices the outputs' sharding spans
        "wall_seconds": wall,
        "compile_seconds": compile_seconds,
        "process": _process_index(),
        "host": socket.gethostname(),
    }
    return {"record": record, "arrays": arrays}


def _row(plan: Plan, run: int, chunk: Chunk, m: dict, wall: float) -> dict:
    """One results-table row: ids, every config field, and the run's statistics."""
    config_id, seed_index = plan.runs[run]
    config = plan.configs[config_id]
    ret = np.asarray(m["episode_return"], np.float64)
    finite = np.isfinite(ret)
    diverged = not (np.isfinite(m["loss"]).all() and np.isfinite(m["grad_norm"]).all()
                    and bool(m["params_finite"]))
    fields = {}
    for name in FIELDS:
        value = getattr(config, name)
        fields[name] = json.dumps(list(value)) if isinstance(value, tuple) else value
    return {
        "run": run,
        "config": config_id,
        "seed_index": seed_index,
        "chunk": chunk.index,
        "process": _process_index(),
        **fields,
        "env_steps": config.num_updates * config.steps_per_update,
        "final_return": float(ret[-1]),
        "auc": float(ret[finite].mean()) if finite.any() else float("nan"),
        "diverged": bool(diverged),
        "wall_seconds": wall,
    }


def _process_index() -> int:
    import jax

    return jax.process_index()


# ----------------------------------------------------------------------------- files


def write_csv(path: Path, rows: list[dict]) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    runs.atomic_write(path, lambda f: f.write(buf.getvalue()))


def chunk_path(out_dir: Path, index: int, suffix: str) -> Path:
    return out_dir / "chunks" / f"chunk-{index:06d}{suffix}"


def load_record(out_dir: Path, chunk: Chunk) -> dict | None:
    """The chunk's record if it is done (its .json holds the same runs), else None."""
    try:
        record = json.loads(chunk_path(out_dir, chunk.index, ".json").read_text())
    except (OSError, ValueError):
        return None
    return record if record.get("runs") == list(chunk.runs) else None


def save_chunk(out_dir: Path, result: dict) -> None:
    """Metrics first, then the record: a chunk counts as done only once both are on disk."""
    index = result["record"]["chunk"]
    runs.atomic_write(
        chunk_path(out_dir, index, ".npz"), lambda f: np.savez(f, **result["arrays"]), mode="wb"
    )
    runs.write_json(chunk_path(out_dir, index, ".json"), result["record"])


def prepare_out_dir(out_dir: Path, spec: Spec) -> None:
    """Create out_dir, or accept one that holds this same sweep; refuse anything else."""
    record_path = out_dir / "sweep.json"
    if out_dir.exists():
        if not out_dir.is_dir():
            raise SpecError(f"--out {out_dir} exists and is not a directory")
        if record_path.exists():
            try:
                held = json.loads(record_path.read_text())
            except ValueError:
                held = {}
            if held.get(MARKER) != 1:
                raise SpecError(f"--out {out_dir} holds a sweep.json that is not a pgjax sweep")
            if held.get("spec") != spec.to_json():
                diff = [k for k in spec.to_json() if held.get("spec", {}).get(k) !=
                        spec.to_json()[k]]
                raise SpecError(
                    f"--out {out_dir} holds a different sweep (spec differs in "
                    f"{', '.join(diff) or 'its fields'}); use another --out to start a new one"
                )
            (out_dir / "chunks").mkdir(exist_ok=True)
            return
        ours = {"chunks", "sweep.json"}
        if any(p.name not in ours and not p.name.startswith(".sweep.json.")
               for p in out_dir.iterdir()):
            raise SpecError(f"--out {out_dir} exists and is not a pgjax sweep directory")
    (out_dir / "chunks").mkdir(parents=True, exist_ok=True)
    runs.write_json(record_path, {MARKER: 1, "spec": spec.to_json(), **runs.provenance()})


# ----------------------------------------------------------------------------- summary


def iqm_intervals(scores: np.ndarray, *, reps: int = 2000) -> tuple[np.ndarray, np.ndarray]:
    """IQM over seeds and its 95% CI for each config, from one rliable stratified bootstrap.

    Args:
      scores: [seeds, configs] float; each config is a stratum, so its seeds are resampled
        among themselves (the same as one bootstrap per config), all in one call.

    Returns:
      (iqm [configs], ci95 [2, configs]). Configs with a NaN seed score (no finished episode)
      are estimated from their finite seeds alone (`runs.score_summary`).
    """
    import warnings

    from rliable import library as rly
    from scipy import stats

    scores = np.asarray(scores, np.float64)
    iqm, ci = np.full(scores.shape[1], np.nan), np.full((2, scores.shape[1]), np.nan)
    whole = np.isfinite(scores).all(0)
    if whole.any():
        with warnings.catch_warnings():  # arch deprecates RandomState; rliable still passes it
            warnings.simplefilter("ignore", FutureWarning)
            point, interval = rly.get_interval_estimates(
                {"sweep": scores[:, whole]}, lambda x: stats.trim_mean(x, 0.25, axis=0),
                reps=reps, random_state=np.random.RandomState(0),
            )
        iqm[whole], ci[:, whole] = point["sweep"], interval["sweep"]
    for j in np.flatnonzero(~whole):
        one = runs.score_summary(scores[:, j], reps=reps)
        iqm[j], ci[:, j] = one["iqm"], one["ci95"]
    return iqm, ci


def summarize(rows: list[dict], spec: Spec, *, reps: int = 2000) -> list[dict]:
    """One row per config, ranked by the IQM of the final return (best first).

    IQM (rliable's interquartile mean, a 25% trimmed mean) and 95% percentile CIs over seeds
    from a stratified bootstrap (`iqm_intervals`, `reps` resamples, fixed random state). Runs
    that diverged keep their measured returns (NaN where no episode finished) and are counted.
    """
    by_config: dict[int, list[dict]] = {}
    for row in sorted(rows, key=lambda r: (r["config"], r["seed_index"])):
        by_config.setdefault(row["config"], []).append(row)
    ids = sorted(by_config)
    stats = {}
    for name in ("final_return", "auc"):
        scores = np.array([[r[name] for r in by_config[c]] for c in ids]).T  # [seeds, configs]
        stats[name] = (scores, *iqm_intervals(scores, reps=reps))
    out = []
    for j, config_id in enumerate(ids):
        group = by_config[config_id]
        (final, f_iqm, f_ci), (_, a_iqm, a_ci) = stats["final_return"], stats["auc"]
        out.append({
            "config": config_id,
            **{name: group[0][name] for name in spec.varying},
            "seeds": len(group),
            "diverged": sum(bool(r["diverged"]) for r in group),
            "final_iqm": float(f_iqm[j]),
            "final_ci95_low": float(f_ci[0, j]),
            "final_ci95_high": float(f_ci[1, j]),
            "final_mean": runs._nanmean(final[:, j]),
            "auc_iqm": float(a_iqm[j]),
            "auc_ci95_low": float(a_ci[0, j]),
            "auc_ci95_high": float(a_ci[1, j]),
        })
    out.sort(key=lambda r: (math.isnan(r["final_iqm"]), -np.nan_to_num(r["final_iqm"]),
                            r["config"]))
    return [{"rank": i + 1, **r} for i, r in enumerate(out)]


def config_label(row: dict, spec: Spec) -> str:
    label = _describe({name: row[name] for name in spec.varying})
    return label or f"config {row['config']}"


def plot_summary(path: Path, summary: list[dict], spec: Spec, curves: dict, *, top: int = 20):
    """Left: final-return IQM with 95% CI per config (best first). Right: IQM curves, best 5."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from rliable import metrics as rly_metrics

    shown = summary[:top]
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(12, max(3.5, 0.35 * len(shown) + 1.5)))
    y = np.arange(len(shown))[::-1]
    iqm = np.array([r["final_iqm"] for r in shown])
    lo = iqm - np.array([r["final_ci95_low"] for r in shown])
    hi = np.array([r["final_ci95_high"] for r in shown]) - iqm
    ax.errorbar(iqm, y, xerr=[lo, hi], fmt="o", capsize=3)
    ax.set_yticks(y, [config_label(r, spec) for r in shown], fontsize=8)
    ax.set_xlabel("final return, IQM over seeds (95% CI)")
    ax.set_title(f"{len(summary)} configs × {spec.seeds} seeds" +
                 (f" (best {top})" if len(summary) > top else ""))
    for r in summary[:5]:
        steps, returns = curves[r["config"]]
        with np.errstate(all="ignore"):
            q = [rly_metrics.aggregate_iqm(col[np.isfinite(col)]) if np.isfinite(col).any()
                 else np.nan for col in returns.T]
        ax2.plot(steps, q, label=config_label(r, spec))
    ax2.set_xlabel("env steps per run")
    ax2.set_ylabel("episode return, IQM over seeds")
    ax2.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _curves(out_dir: Path, plan: Plan) -> dict:
    """config id -> (env steps [U], returns [seeds, U]) from the chunks' metrics."""
    per_run = {}
    for chunk in plan.chunks:
        with np.load(chunk_path(out_dir, chunk.index, ".npz")) as data:
            for i, run in enumerate(data["run"]):
                per_run[int(run)] = data["episode_return"][i]
    curves = {}
    for c, config in enumerate(plan.configs):
        ret = np.stack([per_run[r] for r, (cid, _) in enumerate(plan.runs) if cid == c])
        steps = np.arange(1, ret.shape[1] + 1) * config.steps_per_update
        curves[c] = (steps, ret)
    return curves


def merge(out_dir: Path, plan: Plan, records: dict, *, write: bool = True) -> list[dict]:
    """results.csv, summary.csv/.json and summary.png from every chunk's record."""
    rows = [row for c in sorted(records) for row in records[c]["rows"]]
    rows.sort(key=lambda r: r["run"])
    if not write:
        return rows
    write_csv(out_dir / "results.csv", rows)
    summary = summarize(rows, plan.spec)
    write_csv(out_dir / "summary.csv", summary)
    runs.write_json(out_dir / "summary.json", {
        "configs": len(plan.configs),
        "runs": len(plan.runs),
        "chunks": len(plan.chunks),
        "wall_seconds": sum(r["wall_seconds"] for r in records.values()),
        "compile_seconds_per_process": _compile_seconds(records),
        "ranking": summary,
    })
    plot_summary(out_dir / "summary.png", summary, plan.spec, _curves(out_dir, plan))
    return rows


def _compile_seconds(records: dict) -> dict:
    out: dict[str, float] = {}
    seen = set()
    for r in records.values():
        key = (r["process"], r["batch"], r["devices"], r["compile_seconds"])
        if key not in seen:
            seen.add(key)
            out[str(r["process"])] = out.get(str(r["process"]), 0.0) + r["compile_seconds"]
    return out


# ----------------------------------------------------------------------------- entry point


def init_distributed(coordinator_address=None, num_processes=None, process_id=None) -> None:
    """jax.distributed.initialize with the given values, or auto-detected (SLURM, MPI, ...)."""
    import jax
    import jax.extend.backend
    from jax._src import xla_bridge

    if jax.distributed.is_initialized():
        return
    if xla_bridge.backends_are_initialized():
        # Importing gymnax builds one array, FrozenLake's move table, which starts the
        # single-process backend (pgjax imports gymnax only on first use, but the caller may
        # have); drop it and rebuild that table on the distributed one.
        from gymnax.environments.misc import frozen_lake

        directions = np.asarray(frozen_lake._DIRECTIONS)
        jax.extend.backend.clear_backends()
    else:
        frozen_lake, directions = None, None
    jax.distributed.initialize(
        coordinator_address=coordinator_address, num_processes=num_processes,
        process_id=process_id,
    )
    if frozen_lake is not None:
        frozen_lake._DIRECTIONS = jax.numpy.asarray(directions)


def sweep(
    spec: "str | os.PathLike | dict",
    out_dir: "str | os.PathLike",
    *,
    progress: bool = False,
    distributed: bool = False,
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    on_chunk: Callable[[dict], None] | None = None,
    poll_seconds: float = 1.0,
):
    """Run (or resume) a sweep and return its results table (a pandas DataFrame, one row per run).

    Args:
      spec: a YAML path or a dict (see the module docstring).
      out_dir: where chunks, results.csv and the summary go; rerunning with the same spec and
        out_dir skips the chunks already recorded there.
      progress: show a progress bar over this process's runs.
      distributed: call `jax.distributed.initialize` first (before any other JAX work in this
        process); coordinator_address / num_processes / process_id are passed through, None values
        are auto-detected by JAX (SLURM, Open MPI, ...). Implied by any of them being given.
      on_chunk: called with each finished chunk's record after it is saved.
      poll_seconds: how often a process that finished its share looks for the others' chunks.

    Returns:
      The merged results table, identical in every process, sorted by run id.

    Raises:
      SpecError: a bad spec or out_dir, before any training.
    """
    import jax
    import pandas as pd
    from tqdm.auto import tqdm

    spec = parse_spec(spec)
    plan = make_plan(spec)
    if distributed or coordinator_address or num_processes is not None or process_id is not None:
        init_distributed(coordinator_address, num_processes, process_id)
    check_envs(plan)
    out_dir = Path(out_dir)
    prepare_out_dir(out_dir, spec)

    process, processes = jax.process_index(), jax.process_count()
    devices = tuple(jax.local_devices())
    key_data = seed_key_data(spec.seed, spec.seeds)
    mine = [c for c in plan.chunks if c.index % processes == process]
    todo = [c for c in mine if load_record(out_dir, c) is None]
    with tqdm(total=sum(len(c.runs) for c in todo), unit="run", disable=not progress,
              desc=f"sweep p{process}" if processes > 1 else "sweep", dynamic_ncols=True) as bar:
        for chunk in todo:
            result = run_chunk(plan, chunk, key_data, devices)
            save_chunk(out_dir, result)
            bar.update(len(chunk.runs))
            if on_chunk is not None:
                on_chunk(result["record"])

    records = {}
    while True:
        for chunk in plan.chunks:
            if chunk.index not in records and (record := load_record(out_dir, chunk)):
                records[chunk.index] = record
        if len(records) == len(plan.chunks):
            break
        time.sleep(poll_seconds)
    rows = merge(out_dir, plan, records, write=process == 0)
    return pd.DataFrame(rows)


def format_sweep(out_dir: Path, *, top: int = 10) -> str:
    """The best configs from summary.csv as an aligned text table."""
    with (Path(out_dir) / "summary.csv").open() as f:
        rows = list(csv.DictReader(f))
    meta = json.loads((Path(out_dir) / "sweep.json").read_text())["spec"]
    varying = list(meta["grid"]) + [k for k in meta["random"] if k not in meta["grid"]]
    head = ["rank", *varying, "final IQM [95% CI]", "AUC IQM", "diverged"]
    table = [head]
    for r in rows[:top]:
        ci = f"{float(r['final_iqm']):.1f} [{float(r['final_ci95_low']):.1f}, " \
             f"{float(r['final_ci95_high']):.1f}]"
        table.append([r["rank"], *(r[k] for k in varying), ci, f"{float(r['auc_iqm']):.1f}",
                      f"{r['diverged']}/{r['seeds']}"])
    widths = [max(len(str(row[i])) for row in table) for i in range(len(head))]
    lines = ["  ".join(f"{str(v):<{w}}" for v, w in zip(row, widths, strict=True)) for row in table]
    lines.append(f"{len(rows)} configs; results in {out_dir}")
    return "\n".join(lines)
