"""A training run on the host: run directory, jitted chunks, checkpoints, resume, evaluation.

Every function takes the run's components as keywords (env=, policy=, value=, estimator=, see
`pgjax.components.build`); those omitted come from the config's fields (`run_components`).
"""

import contextlib
import dataclasses
import functools
import json
import math
import signal
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec
from tqdm.auto import tqdm

from pgjax import plots, runs, stats
from pgjax.checkpoint import KEEP_CHECKPOINTS, CheckpointError, Checkpoints
from pgjax.components import (
    ComponentError,
    Components,
    build,
    check_greedy,
    describe_given,
    given_differences,
)
from pgjax.config import Config, from_dict, is_int
from pgjax.estimators import ReturnToGo
from pgjax.evaluate import evaluate
from pgjax.loggers import LOGGERS, LoggerUnavailable, check_available, make_loggers
from pgjax.policies import initial_carry, step_policy
from pgjax.records import DirLock, digest, set_aside
from pgjax.render import save_gif
from pgjax.signals import Stopped, stop_requests
from pgjax.signals import computed as _computed
from pgjax.train import check_seed, diverged, init_state, seed_keys, train_chunk

DEFAULT_CHUNKS = 20
MIN_CHUNK_UPDATES = 16  # the default's least updates per chunk


def chunk_length(num_updates: int, num_chunks: int | None = None) -> int:
    """Updates per chunk: the divisor of num_updates (one compiled program) whose number of
    chunks is closest to `num_chunks` (the fewer chunks on a tie).

    By default (None) about DEFAULT_CHUNKS chunks of at least MIN_CHUNK_UPDATES updates (or
    all of them): each call of the chunk program allocates and faults in its temporaries afresh
    (XLA:CPU; 258 MiB, ~0.1 s at the default shape × 16 seeds), so a chunk must be long enough
    to hide that.
    """
    small = [d for d in range(1, math.isqrt(num_updates) + 1) if num_updates % d == 0]
    divisors = sorted({*small, *(num_updates // d for d in small)})
    if num_chunks is None:
        num_chunks = DEFAULT_CHUNKS
        divisors = [d for d in divisors if d >= min(MIN_CHUNK_UPDATES, num_updates)]
    return min(divisors, key=lambda d: (abs(num_updates // d - num_chunks), -d))


def seed_sharding(seeds: int) -> NamedSharding | None:
    """Seeds axis split over the local devices, when there are several and they divide it."""
    devices = jax.local_devices()
    if len(devices) > 1 and seeds % len(devices) == 0:
        return NamedSharding(Mesh(np.array(devices), ("seeds",)), PartitionSpec("seeds"))
    return None


def sharded_seed_keys(seed: int, seeds: int, *, stream: str = "train") -> jax.Array:
    """`train.seed_keys`, placed on the seeds sharding (`seed_sharding`) when there is one."""
    keys = seed_keys(seed, seeds, stream=stream)
    sharding = seed_sharding(seeds)
    return keys if sharding is None else jax.device_put(keys, sharding)


class EditedRecord(ValueError):
    """A config.json whose config, seed or seeds are not those its run was trained with."""


def load_run(run_dir: "str | Path", *, checkpoint_every: int | None = None,
             checkpoint_minutes: float = 5.0) -> tuple[Config, dict]:
    """The Config and the record stored in RUN_DIR/config.json, in the current format
    (`migrate`, which takes the checkpoint schedule for records that predate recording it).

    Raises:
      ValueError: config.json is missing, not JSON, holds an unknown or mistyped field, or a
        config, seed or seeds not those it recorded (edited after training: `config_sha256`,
        `seeds_sha256`).
    """
    run_dir = Path(run_dir)
    try:
        record = migrate(json.loads((run_dir / "config.json").read_text()),
                         checkpoint_every=checkpoint_every, checkpoint_minutes=checkpoint_minutes)
        config = from_dict(record["config"], where="config.json: ", record=True)
        _check_record(record, config)
    except (OSError, KeyError, TypeError, json.JSONDecodeError) as e:
        raise ValueError(f"{run_dir}/config.json is not a readable pgjax run record ({e})") \
            from None
    for name, what, was, fields in (
            ("config_sha256", "config", "was", record["config"]),
            ("seeds_sha256", "seed or seeds", "were", {k: record[k] for k in ("seed", "seeds")})):
        if record[name] not in (None, digest(fields)):
            raise EditedRecord(
                f"{run_dir}/config.json: its {what} {was} edited after the run was recorded "
                f"({name} differs), so it is not what trained the run; train a new run with "
                f"the changed {what}, or delete {name} to use the run as edited"
            )
    return config, record


def migrate(record: dict, *, checkpoint_every: int | None = None,
            checkpoint_minutes: float = 5.0) -> dict:
    """A config.json record of any format in the shape of the current one (`runs.FORMAT`).

    A field that a record predates reads as the behaviour of its time: the checkpoint schedule
    as given (a resume's flags), other `Settings` fields as their defaults; no components
    given; cpu None (not recorded); config_sha256 and seeds_sha256 None (unchecked, as when
    deleted). Its config fields are read by `config.from_dict(record=True)`.
    """
    if (version := record.get("format", 1)) not in range(1, runs.FORMAT + 1):
        raise TypeError(f"format is {version!r}: this pgjax reads formats 1 to {runs.FORMAT}; a "
                        f"newer format needs a newer pgjax")
    older = {"checkpoint_every": checkpoint_every, "checkpoint_minutes": checkpoint_minutes}
    settings = {f.name: older.get(f.name, f.default) for f in dataclasses.fields(Settings)
                if f.default is not dataclasses.MISSING}
    return {**settings, "components": describe_given({}), "cpu": None, "config_sha256": None,
            "seeds_sha256": None, "format": runs.FORMAT, **record}


@dataclasses.dataclass(frozen=True)
class Settings:
    """How a run trains besides its config, one validated object: a new run writes it to its
    config.json, a resumed one reads it back from there, and `pgjax train --resume` compares
    its flags with it.

    seed i's key is `train.seed_keys(seed, seeds)[i]`; chunk_updates: updates per jitted call
    (`chunk_length`); checkpoint_every: chunks between checkpoints (None: by
    checkpoint_minutes, the least minutes between two); keep_checkpoints: the newest kept
    (None: every one); log: extra loggers (`pgjax.loggers`). A record written before a field
    existed reads as its default (`migrate`).
    """

    seeds: int
    seed: int
    chunk_updates: int
    checkpoint_every: int | None = None
    checkpoint_minutes: float = 5.0
    keep_checkpoints: int | None = KEEP_CHECKPOINTS
    log: tuple[str, ...] = ()

    @classmethod
    def of(cls, record: dict) -> "Settings":
        """The settings a record read by `load_run` holds (unchecked: `check`)."""
        fields = {f.name: record[f.name] for f in dataclasses.fields(cls)}
        return cls(**{**fields, "log": tuple(fields["log"]) if isinstance(fields["log"], list)
                      else fields["log"]})

    def check(self, num_updates: int) -> "Settings":
        """self, or `BadSetting` naming the first field a run cannot have (seed: any int64, as
        records of earlier versions hold; a new run's is checked by `train.check_seed`)."""
        for name, low in (("seeds", 1), ("seed", -2**63), ("chunk_updates", 1),
                          ("checkpoint_every", 1), ("keep_checkpoints", 1)):
            value, optional = getattr(self, name), name in ("checkpoint_every", "keep_checkpoints")
            if value is None and optional:
                continue
            if not is_int(value):
                raise BadSetting(name, value, f"must be an integer{' or None' * optional}, "
                                              f"got {value!r}")
            if not low <= value < 2**63:
                raise BadSetting(name, value, f"must be positive, got {value}" if low == 1
                                 else f"must be within int64, got {value}")
        if num_updates % self.chunk_updates:
            raise BadSetting("chunk_updates", self.chunk_updates,
                             f"must divide the {num_updates} updates",
                             f", which does not divide the {num_updates} updates")
        minutes = self.checkpoint_minutes
        if not (isinstance(minutes, int | float) and not isinstance(minutes, bool)
                and minutes > 0):
            raise BadSetting("checkpoint_minutes", minutes, f"must be positive, got {minutes!r}")
        if not (isinstance(self.log, tuple) and all(x in LOGGERS for x in self.log)):
            raise BadSetting("log", self.log,
                             f"must name loggers of {tuple(LOGGERS)}, got {self.log!r}")
        return self


class BadSetting(ValueError):
    """A `Settings` field a run cannot have: "NAME must ..." for a new run's arguments;
    `recorded` says it as config.json holds it ("NAME is VALUE")."""

    def __init__(self, name: str, value, rule: str, detail: str = ""):
        super().__init__(f"{name} {rule}")
        self.recorded = f"{name} is {value!r}{detail}"


def _check_record(record: dict, config: Config) -> None:
    """TypeError naming the first of config.json's run fields that `train_run` cannot have
    written (the config's own fields are checked by `from_dict`)."""
    try:
        Settings.of(record).check(config.num_updates)
    except BadSetting as e:
        raise TypeError(e.recorded) from None
    versions, cpu = record.get("versions"), record["cpu"]  # what `reproduce_run` compares
    if not (isinstance(versions, dict)
            and all(isinstance(v, str | None) for v in versions.values())):
        raise TypeError(f"versions is {versions!r}")
    if not (cpu is None or (isinstance(cpu, dict) and isinstance(cpu.get("name"), str)
                            and isinstance(cpu.get("isa"), list)
                            and all(isinstance(x, str) for x in cpu["isa"]))):
        raise TypeError(f"cpu is {cpu!r}")
    components = record["components"]
    given = components.get("given") if isinstance(components, dict) else None
    if not isinstance(given, list) or any(
            name not in ("env", "policy", "value", "estimator") or name not in components
            for name in given):
        raise TypeError(f"components is {components!r}")


def run_components(config: Config, record: dict, given: dict, *,
                   evaluating: bool = False) -> Components:
    """The components of a recorded run: the caller's, which must include those it was given.

    With `evaluating` (playing a policy calls no estimator) the run's own estimator may be left
    out where the record says whether it trained a value net (`estimator_uses_value`): a
    built-in one that does the same stands in for it. Given components other than the recorded
    ones (`components.given_differences`) are named on stderr, one line each, and used.
    """
    recorded = record["components"]
    given = {name: x for name, x in given.items() if x is not None}
    stand_in = {}
    if evaluating and "estimator" not in given and "estimator_uses_value" in recorded:
        # Only whether the estimator trained a value net shapes the state.
        stand_in["estimator"] = ReturnToGo("value" if recorded["estimator_uses_value"] else "none")
    missing = [name for name in recorded["given"] if name not in given and name not in stand_in]
    if missing:
        raise ComponentError(
            f"this run was trained with its own {', '.join(missing)} "
            f"({', '.join(f'{m}: {recorded[m]}' for m in missing)}); pass "
            f"{', '.join(m + '=' for m in missing)} to pgjax.train_run, evaluate_run or "
            f"reproduce_run in Python to use it"
        )
    parts = build(config, **given, **stand_in)
    if parts.env.name != (env := recorded.get("env", config.env)):
        raise ComponentError(f"this run was trained on env {env!r}, not {parts.env.name!r}")
    now = describe_given({name: given.get(name) for name in recorded["given"]})
    compared = {**recorded, "given": [name for name in recorded["given"] if name in given]}
    for name, then, used in given_differences(compared, now):
        print(f"pgjax: this run was trained with {name} {then}; using the {name} given: {used}",
              file=sys.stderr)
    return parts


def what_made_state(record: dict) -> str:
    """What makes a run's state shapes: config.json, and the networks the caller gives."""
    nets = [n for n in ("policy", "value") if n in record["components"]["given"]]
    return " or ".join(["config.json"] + [f"the {n} given" for n in nets])


def available_bytes(device) -> int | None:
    """Memory free for a program on `device`: GPU/TPU memory stats, else the host's MemAvailable."""
    stats = device.memory_stats() if hasattr(device, "memory_stats") else None
    if stats and "bytes_limit" in stats:
        return int(stats["bytes_limit"]) - int(stats.get("bytes_in_use", 0))
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def check_memory(compiled: list, devices: int) -> None:
    """Refuse programs whose buffers (XLA's own accounting) exceed the device's free memory.

    The programs run one after the other, each split over `devices` devices, so the largest
    one's arguments, outputs and temporaries (less what it aliases) must fit on each.
    """
    needed = max([m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes
                  - m.alias_size_in_bytes for program in compiled
                  if (m := program.memory_analysis()) is not None], default=0)
    device = jax.local_devices()[0]
    free = available_bytes(device)
    if free is not None and needed / devices > free:
        gib = 2.0 ** 30
        raise MemoryError(
            f"the training program needs {needed / devices / gib:.1f} GiB per device and "
            f"{device.platform} has {free / gib:.1f} GiB free; lower --num-envs, --num-steps or "
            f"--seeds (a sweep: its chunk_runs), or use --loss-chunks"
        )


def compile_programs(config: Config, parts: Components, seeds: int, seed: int, n: int):
    """(initial state [seeds, ...], the compiled `n`-update step, compile seconds).

    Both programs are compiled and their memory checked (`check_memory`) before any runs.
    """
    t0 = time.perf_counter()
    shard = seed_sharding(seeds)  # every leaf of state and metrics has a leading seeds axis
    keys = sharded_seed_keys(seed, seeds)
    init = jax.jit(jax.vmap(functools.partial(init_state, config, parts=parts)),
                   out_shardings=shard).lower(keys).compile()
    # Not donating its state: a checkpoint of it is written while the next chunk runs.
    step = jax.jit(
        jax.vmap(functools.partial(train_chunk, config, num_updates=n, parts=parts)),
        in_shardings=shard, out_shardings=shard,
    ).lower(init.out_info).compile()
    check_memory([init, step], 1 if shard is None else len(jax.local_devices()))
    return init(keys), step, time.perf_counter() - t0


def read_summary(run_dir: Path) -> dict:
    """RUN_DIR/summary.json as `train_run` returned it: the final returns' nulls back to NaN.

    Raises:
      OSError, ValueError: it does not read, or a field that `format_summary` shows is missing
        or of the wrong type.
    """
    path = Path(run_dir) / "summary.json"
    summary = json.loads(path.read_text())
    try:
        final = summary["final_return"]
        for name in ("per_seed", "mean", "iqm", "ci95"):
            final[name] = np.asarray(final[name], np.float64).tolist()  # None -> NaN
        numbers = [summary[k] for k in ("seeds", "env_steps_per_seed", "env_steps_per_second",
                                        "wall_seconds", "compile_seconds")]
        if not (all(isinstance(x, int | float) and not isinstance(x, bool) for x in numbers)
                and np.ndim(final["ci95"]) == 1 and len(final["ci95"]) == 2
                and isinstance(summary["diverged_seeds"], list)
                and all(is_int(x) for x in summary["diverged_seeds"])):
            raise TypeError
    except (KeyError, TypeError, ValueError):
        raise ValueError(f"{path} is not a pgjax run summary") from None
    return summary


def finished(run_dir: Path, config: Config, *, checkpoint: bool = True) -> dict | None:
    """The summary of a run that already ended, else None: summary.json, a metrics.csv of
    every update and (with `checkpoint`) its last checkpoint, all whole (a damaged one: resume
    trains it again)."""
    try:
        summary = read_summary(run_dir)
        ended = len(runs.read_metrics(run_dir)["update"]) == config.num_updates
        if ended and checkpoint:
            with contextlib.closing(Checkpoints(run_dir, create=False)) as ckpt:
                ended = config.num_updates in ckpt.steps()
    except (OSError, ValueError, CheckpointError):
        return None
    return summary if ended else None


def same_run(run_dir: Path, config: Config, seeds: int) -> bool:
    """`run_dir` records a run of `config` with `seeds` seeds (finished or not), up to the fields
    that cannot change it: `conv_impl` without a convolution, `clip` without a value net. A
    missing or unreadable config.json is not the same run; an edited one raises `EditedRecord`
    (it may hold a run worth keeping)."""
    try:
        recorded, record = load_run(run_dir)
    except EditedRecord:
        raise
    except ValueError:
        return False
    if config.network != "cnn":
        recorded = recorded.replace(conv_impl=config.conv_impl)
    if not build(config).estimator.uses_value:
        recorded = recorded.replace(clip=config.clip)
    return recorded == config and record["seeds"] == seeds


def ensure_run(config: Config, run_dir: Path, *, seeds: int) -> tuple[str, dict]:
    """The summary of `config` trained with `seeds` seeds in `run_dir`, training only what is
    missing; for scripts that build tables from many runs (scripts/reproduce.py,
    experiments/*/run.py), so that a call cut short can simply be repeated.

    A finished run of the same config is reused; an unfinished one (a process killed mid-run)
    continues from its newest readable checkpoint (from the start when it has none), with the
    numbers of an uninterrupted run; another run in `run_dir`, or one whose config.json does
    not read, is moved aside (to RUN_DIR.replaced-<time>) for a new one.

    Returns:
      ("reused" | "resumed" | "trained", summary).

    Raises:
      As `train_run`: ValueError (e.g. `run_dir` holds files that are not a run),
      MemoryError, CheckpointError (e.g. none of an unfinished run's checkpoints is readable).
    """
    run_dir = Path(run_dir)
    if same_run(run_dir, config, seeds):
        # Its checkpoints may have been deleted to save space: the table needs none.
        if (summary := finished(run_dir, config, checkpoint=False)) is not None:
            plot_run_curve(run_dir, config, missing=True)
            return "reused", summary
        # cut short, or a damaged summary or metrics: trained where needed and written again
        return "resumed", resume_run(run_dir, progress=False)[1]
    damaged = run_dir.is_dir() and runs.damaged_run(run_dir)
    if damaged or runs.is_run_dir(run_dir):  # of another config or seed count: kept aside
        stamp = time.strftime("%Y%m%d-%H%M%S")
        with DirLock(run_dir).exclusive() as lock:  # not a run another process writes
            aside = run_dir.with_name(set_aside(run_dir, f"{run_dir.name}.replaced-{stamp}"))
            lock.path = aside / lock.path.name
        which = f"a damaged run ({damaged})" if damaged else "a run of another config or seed count"
        print(f"pgjax: {run_dir} held {which}; moved to {aside}", file=sys.stderr)
    return "trained", train_run(config, run_dir, seeds=seeds, progress=False, overwrite=True)[1]


def train_run(config: Config | None, run_dir: "str | Path | None", *, seeds: int = 16,
              seed: int = 0, chunks: int | None = None, checkpoint_every: int | None = None,
              checkpoint_minutes: float = 5.0, keep_checkpoints: int | None = KEEP_CHECKPOINTS,
              progress: bool = True, resume: bool = False, overwrite: bool = False,
              log: tuple[str, ...] = (), **components) -> tuple[Path, dict]:
    """Train `seeds` seeds in jitted chunks into `run_dir`.

    Nothing is written to the run's directory until its programs compiled and fit in memory;
    the directory is locked (`records.DirLock`) while the run writes it.

    Args:
      config: hyperparameters (ignored on resume).
      run_dir: the run directory: new or empty (None: runs/<env>-<timestamp>), or holding a run
        to replace with `overwrite` (or to resume).
      seeds, seed: seed i's key is `train.seed_keys(seed, seeds)[i]`.
      chunks: progress updates, each one jitted call of several updates (None: about 20 of at
        least 16 updates each, `chunk_length`).
      checkpoint_every: checkpoint the whole vmapped TrainState every this many chunks and at
        the end (None: at the end of the first chunk that ends `checkpoint_minutes` after the
        previous checkpoint or the start, and at the end; a shorter run has only its final one).
      keep_checkpoints: the newest checkpoints kept (older ones are deleted as new ones are
        saved); None keeps every one, for evaluating a run along its training.
      progress: show a progress bar.
      resume: continue the run in `run_dir` instead (`resume_run`).
      overwrite: replace the run that `run_dir` holds (once the new one has compiled).
      log: extra loggers (pgjax.loggers: "tensorboard", "wandb"); on resume the stored ones.
      **components: env=, policy=, value=, estimator= (`pgjax.components.build`); a run
        trained with the caller's own components needs them again to resume.

    Returns:
      (run_dir, summary), the summary as written to summary.json.

    Raises:
      ValueError: a bad config, component or run directory, or a logger whose package is
        missing (LoggerUnavailable); MemoryError: the programs do not fit; CheckpointError:
        nothing to resume from.
    """
    if resume:
        return resume_run(run_dir, progress=progress, checkpoint_every=checkpoint_every,
                          checkpoint_minutes=checkpoint_minutes, **components)
    if not (chunks is None or chunks > 0):
        raise ValueError(f"chunks must be positive, got {chunks}")
    check_seed(seed)
    parts = build(config, **components)
    settings = Settings(seeds, seed, chunk_length(config.num_updates, chunks), checkpoint_every,
                        checkpoint_minutes, keep_checkpoints, tuple(log)).check(config.num_updates)
    run_dir = runs.check_run_dir(run_dir and Path(run_dir), parts.env.name, overwrite=overwrite)
    check_available(log)
    config = config.replace(env=parts.env.name)
    record = runs.config_record(config, **dataclasses.asdict(settings),
                                components=describe_given(components))

    def create(held: contextlib.ExitStack) -> None:  # once the programs compiled and fit
        held.enter_context(runs.create_run_dir(run_dir, parts.env.name, overwrite=overwrite))
        runs.write_json(run_dir / "config.json", record)

    return run_dir, _drive(run_dir, config, record, parts, settings, progress, create)


def resume_run(run_dir: "str | Path", *, progress: bool = True, checkpoint_every: int | None = None,
               checkpoint_minutes: float = 5.0, **components) -> tuple[Path, dict]:
    """Continue the run in `run_dir` from its newest readable checkpoint (from the start when it
    has none), with the config and `Settings` its config.json records, to the numbers of an
    uninterrupted run. Damaged checkpoints and those past metrics.csv's whole rows are moved
    aside. A finished run is not trained again (nor asks for its components); its curve.png
    is written again if missing.

    Args:
      run_dir: a run directory.
      progress: show a progress bar.
      checkpoint_every, checkpoint_minutes: the checkpoint schedule of a run whose record
        predates recording it (as `train_run`'s); a record's own schedule is kept.
      **components: env=, policy=, value=, estimator= a run trained with the caller's own
        components needs again (`components.given` in its config.json).

    Returns, raises: as `train_run`; also `records.Locked` when another process writes the run.
    """
    run_dir = Path(run_dir)
    config, record = load_run(run_dir, checkpoint_every=checkpoint_every,
                              checkpoint_minutes=checkpoint_minutes)
    with DirLock(run_dir).exclusive():  # a second writer is refused
        if (summary := finished(run_dir, config)) is not None:  # nothing to train
            plot_run_curve(run_dir, config, missing=True)
            return run_dir, summary
        parts, settings = run_components(config, record, components), Settings.of(record)
        try:
            check_available(settings.log)
        except LoggerUnavailable as e:
            raise LoggerUnavailable(f"{run_dir} logs as it was recorded: {e}") from None
        return run_dir, _drive(run_dir, config, record, parts, settings, progress)


def _drive(run_dir: Path, config: Config, record: dict, parts: Components, settings: Settings,
           progress: bool, create=None) -> dict:
    """Compile, then train a new run (`create(held)` makes and locks its directory once the
    programs fit) or resume one (no `create`) to its end: checkpoints, metrics, loggers,
    signals, summary.json. Returns the summary."""
    n, seeds, resume = settings.chunk_updates, settings.seeds, create is None
    if progress:  # one line before the compile, so a long silent start is explained
        print(f"pgjax: {'resuming' if resume else 'training into'} {run_dir}; compiling…",
              file=sys.stderr, flush=True)
    with contextlib.ExitStack() as held:
        requested = held.enter_context(stop_requests())  # from the compile on
        state, step, compile_seconds = compile_programs(config, parts, seeds, settings.seed, n)
        if requested:  # nothing written yet: Ctrl-C is an interrupt, as before pgjax took it
            raise KeyboardInterrupt if requested[0] == signal.SIGINT else Stopped(requested[0])
        if not resume:
            create(held)
        loggers = make_loggers(settings.log, run_dir, record)
        ckpt = Checkpoints(run_dir, settings.keep_checkpoints)
        start = 0
        if resume and ckpt.steps():  # from a checkpoint whose metrics rows are all on disk
            start, state = ckpt.restore(state, set_aside=True,
                                        at_most=runs.whole_rows(run_dir / "metrics.csv"),
                                        changed=what_made_state(record))
        csv = runs.MetricsCSV(run_dir / "metrics.csv", seeds,
                              keep_updates=start if resume else None, ratio=config.passes > 1)
        t1 = time.perf_counter()
        try:
            state, bad = train_loop(config, step, state, csv, ckpt, loggers, settings,
                                    start=start, progress=progress, requested=requested)
        except Stopped as e:  # the loggers end cleanly, as on success (a crash leaves them)
            _close(loggers)
            ckpt.close()
            raise Stopped(e.signal, e.update, run_dir) from None
        wall = time.perf_counter() - t1
        _close(loggers)
        summary = summarize(config, csv, bad, seeds=seeds, start=start if resume else None,
                            wall=wall, compile_seconds=compile_seconds)
        t2 = time.perf_counter()
        ckpt.close()  # the last checkpoint was written while the summary was computed
        summary["final_checkpoint_wait_seconds"] = time.perf_counter() - t2
        runs.write_json(run_dir / "summary.json", summary)
        plot_run_curve(run_dir, config, csv.returns())
        if requested:  # a signal in the last chunk: the run is whole, and the caller stops too
            raise Stopped(requested[0], config.num_updates, run_dir)
        return summary


def _close(loggers) -> None:
    for logger in loggers:
        logger.close()


def plot_run_curve(run_dir: Path, config: Config, returns: np.ndarray | None = None, *,
                   missing: bool = False) -> None:
    """RUN_DIR/curve.png from the per-seed returns [seeds, updates] (None: metrics.csv's); with
    `missing`, only where it is missing (a finished run whose curve.png went missing)."""
    if missing and (run_dir / "curve.png").exists():
        return
    if returns is None:
        returns = runs.seed_returns(runs.read_metrics(run_dir))
    env_steps = np.arange(1, returns.shape[1] + 1) * config.steps_per_update
    plots.plot_curve(run_dir / "curve.png", env_steps, returns, f"{config.env}, REINFORCE")


def train_loop(config, step, state, csv, ckpt, loggers, settings, *, start, progress,
               requested=()):
    """Chunks from update `start` to the end: metrics rows, loggers, progress, checkpoints
    (`train_run` says when). Chunk c + 1 runs while chunk c's rows and checkpoint are written.
    Once `requested` (`stop_requests`) holds a signal, the newest state whose rows are all
    written is checkpointed (the chunk in progress is dropped) and `Stopped` raised.

    Returns, once the last checkpoint is started (`ckpt.wait` waits for it), the final state
    and a [seeds] bool mask of the seeds that diverged (`pgjax.train.diverged`).
    """
    n, seeds = settings.chunk_updates, settings.seeds
    per_chunk = n * config.steps_per_update
    losses, norms = [np.zeros((seeds, 0), np.float32)], [np.zeros((seeds, 0), np.float32)]
    chunks = range(start // n, config.num_updates // n)
    with tqdm(
        total=config.num_updates * config.steps_per_update, unit="step", unit_scale=True,
        disable=not progress, desc=f"{config.env} × {seeds} seeds", dynamic_ncols=True,
        initial=start * config.steps_per_update,
    ) as bar:
        t1 = saved = time.perf_counter()
        written, saved_update = state, start  # the state of the last rows written, and its step
        running = step(state) if chunks else None
        for c in chunks:
            state, metrics = running
            last = c + 1 == config.num_updates // n
            if not last:
                running = step(state)  # the next chunk runs while this one's rows are written
            if not _computed(metrics, requested):  # a signal while chunk c trains
                if saved_update != c * n:
                    ckpt.save(c * n, written)
                ckpt.wait()
                raise Stopped(requested[0], c * n)
            metrics = jax.tree.map(np.asarray, metrics)
            losses.append(metrics.loss)
            norms.append(metrics.grad_norm)
            rows = csv.append(c * n, config.steps_per_update, metrics, time.perf_counter() - t1)
            for logger in loggers:
                logger.log(rows)
            bar.update(per_chunk)
            bar.set_postfix(ret=f"{stats.nanmean(metrics.episode_return[:, -1]):.1f}")
            due = ((c + 1) % settings.checkpoint_every == 0 if settings.checkpoint_every
                   else time.perf_counter() - saved >= 60 * settings.checkpoint_minutes)
            stop = requested[0] if requested else None  # read once: a signal may come between
            if last or due or stop:  # after the rows: never ahead of metrics.csv
                ckpt.save((c + 1) * n, state)
                saved, saved_update = time.perf_counter(), (c + 1) * n
            if stop and not last:
                ckpt.wait()
                raise Stopped(stop, (c + 1) * n)
            written = state
    bad = diverged(np.concatenate(losses, 1), np.concatenate(norms, 1), state.params)
    return state, np.asarray(bad)


def summarize(config, csv, diverged, *, seeds, start, wall, compile_seconds) -> dict:
    """summary.json: final return statistics over seeds, diverged seeds, throughput, timings.

    final_return's mean, IQM and CI leave the diverged seeds out (their returns come from
    non-finite parameters); its per_seed lists every seed's return as measured.
    """
    returns = csv.returns()  # [seeds, updates], also rows written before a resume
    trained = config.num_updates - (start or 0)
    final = stats.score_summary(np.where(diverged, np.nan, returns[:, -1]))
    final["per_seed"] = [float(x) for x in returns[:, -1]]
    return {
        "env": config.env,
        "seeds": seeds,
        "env_steps_per_seed": int(returns.shape[1] * config.steps_per_update),
        "final_return": final,
        "diverged_seeds": [int(i) for i in np.flatnonzero(diverged)],
        "env_steps_per_second": seeds * trained * config.steps_per_update / wall,
        "wall_seconds": wall,
        "compile_seconds": compile_seconds,
        "resumed_from_update": start,
    }


def restore_run(run_dir: Path, step: int | None = None, **components):
    """(config, record, components, update, state) of a run's checkpoint (newest readable), to
    play its policies: the run's own estimator may be left out, and then the components hold
    the built-in estimator that stands in for it (`run_components`), not the run's."""
    config, record = load_run(run_dir)
    parts = run_components(config, record, components, evaluating=True)
    run_dir = Path(run_dir)
    init = jax.jit(jax.vmap(functools.partial(init_state, config, parts=parts)))
    like = init(sharded_seed_keys(record["seed"], record["seeds"]))
    with contextlib.closing(Checkpoints(run_dir, record["keep_checkpoints"], create=False)) as c:
        update, state = c.restore(like, step, changed=what_made_state(record))
    return config, record, parts, update, state


def evaluate_run(
    run_dir: Path, *, episodes: int = 100, step: int | None = None, seed: int = 0, **components
) -> dict:
    """Greedy and sampled returns of every seed's policy over `episodes` episodes.

    Seed i is evaluated with `train.seed_keys(seed, seeds, stream="eval")[i]`, a key stream
    that shares no key with training. Writes nothing (`pgjax eval` writes the result to
    RUN_DIR/eval.json).

    Args:
      run_dir: a run directory.
      episodes: episodes per seed and mode, each played to its end.
      step: the checkpoint (updates done); None: the newest readable one.
      seed: the evaluation seed, in [0, 2**32).
      **components: env=, policy=, value=, estimator=, those the run was trained with given
        (`components.given` in its config.json; the estimator may be left out, as no estimator
        is called); the others are made from its config.

    Returns:
      {"checkpoint_update", "episodes", "eval_seed", "greedy", "sampled"}; per mode
      {"per_seed_mean": each seed's mean return, "mean", "iqm", "ci95"} (`stats.score_summary`).
    """
    if not is_int(episodes) or episodes < 1:
        raise ValueError(f"episodes must be a positive integer, got {episodes!r}")
    check_seed(seed)
    _, record, parts, update, state = restore_run(run_dir, step, **components)
    check_greedy(parts)
    keys = seed_keys(seed, record["seeds"], stream="eval")
    result = {"checkpoint_update": update, "episodes": episodes, "eval_seed": seed}
    for mode in ("greedy", "sampled"):
        fn = functools.partial(evaluate, parts, num_episodes=episodes, greedy=mode == "greedy")
        returns = np.asarray(jax.jit(jax.vmap(fn))(state.params["policy"], keys))
        summary = stats.score_summary(returns.mean(1))
        result[mode] = {"per_seed_mean": summary["per_seed"], "mean": float(returns.mean()),
                        "iqm": summary["iqm"], "ci95": summary["ci95"]}
    return result


def render_episode(
    run_dir: Path, path: Path, *, step: int | None = None, seed: int = 0, run: int = 0,
    greedy: bool = True, **components,
) -> float:
    """Play one episode of seed `run`'s policy and save it as a GIF; returns its return."""
    check_seed(seed)
    _, _, parts, _, state = restore_run(run_dir, step, **components)
    if greedy:
        check_greedy(parts)
    env = parts.env
    params = jax.tree.map(lambda x: x[run], state.params["policy"])

    @jax.jit
    def act_and_step(key, env_state, obs, carry, first):
        k_act, k_env = jax.random.split(key)
        carry, dist = step_policy(parts.policy, params, carry, obs, first)
        action = dist.mode() if greedy else dist.sample(k_act)
        return env.step(k_env, env_state, action), carry

    key, k_reset = jax.random.split(seed_keys(seed, 1, stream="eval")[0])
    obs, env_state = env.reset(k_reset, 1)
    carry = initial_carry(parts.policy, (1,))
    only = lambda tree: jax.tree.map(lambda x: x[0], tree)
    states, rewards = [only(env_state)], [0.0]
    for t in range(env.max_episode_steps):
        key, k = jax.random.split(key)
        out, carry = act_and_step(k, env_state, obs, carry, jnp.full(1, t == 0))
        rewards.append(rewards[-1] + float(out.reward[0]))
        if out.terminated[0] or out.truncated[0]:
            break
        obs, env_state = out.obs, out.state
        states.append(only(env_state))
    save_gif(env, states, rewards[: len(states)], path)
    return rewards[-1]


def reproduce_run(run_dir: Path, *, progress: bool = True, **components) -> dict:
    """Rerun a run from its config.json in a temporary directory and compare the metrics.

    An unfinished run (fewer rows than updates: killed, not resumed) is rerun whole and its
    rows compared.

    Returns:
      {"difference": None when metrics.csv matches bitwise (wall time aside), else the first
      difference; "updates": (rows compared, the run's updates); "versions": {package:
      (recorded, now)} for the versions that changed;
      "cpu": None when the run recorded this CPU's instruction-set extensions, else (recorded
      CPU or None for a run that did not record it, this CPU), as `runs.cpu` describes them}.
    """
    import tempfile

    run_dir = Path(run_dir)
    config, record = load_run(run_dir)
    parts = run_components(config, record, components)
    given = {name: getattr(parts, name) for name in record["components"]["given"]}
    with tempfile.TemporaryDirectory() as tmp:
        # A run recorded before seeds were checked may hold one outside [0, 2**32), e.g. -1;
        # jax.random.key keeps its low 32 bits (without x64), so seed % 2**32 has its keys.
        seed = record["seed"] if jax.config.jax_enable_x64 else record["seed"] % 2**32
        train_run(
            config, Path(tmp), seeds=record["seeds"], seed=seed,
            chunks=config.num_updates // record["chunk_updates"], progress=progress, **given,
        )
        rows = runs.whole_rows(run_dir / "metrics.csv")
        difference = compare_metrics(run_dir, Path(tmp), rows=rows)
    now = runs.provenance()
    changed = {k: (v, now["versions"].get(k)) for k, v in record["versions"].items()
               if now["versions"].get(k) != v}
    then = record["cpu"]
    cpu = None if then is not None and then["isa"] == now["cpu"]["isa"] else (then, now["cpu"])
    return {"difference": difference, "updates": (rows, config.num_updates), "versions": changed,
            "cpu": cpu}


def compare_metrics(a: Path, b: Path, rows: int | None = None) -> str | None:
    """None when the two metrics.csv (their first `rows` rows) agree bitwise (wall time aside),
    else the first difference."""
    ra, rb = runs.read_metrics(a), runs.read_metrics(b)
    if rows is not None:
        ra, rb = ({k: v[:rows] for k, v in r.items()} for r in (ra, rb))
    if ra.keys() != rb.keys() or len(ra["update"]) != len(rb["update"]):
        return "the metrics tables have different columns or lengths"
    for k in ra:
        if k == "wall_seconds":
            continue
        same = (ra[k] == rb[k]) | (np.isnan(ra[k]) & np.isnan(rb[k]))
        if not same.all():
            j = int(np.argmin(same))
            return f"update {int(ra['update'][j])}, {k}: {float(ra[k][j])!r} vs {float(rb[k][j])!r}"
    return None


def format_summary(summary: dict, run_dir: Path) -> str:
    final, bad = summary["final_return"], summary["diverged_seeds"]
    finite = [x for i, x in enumerate(final["per_seed"])  # NaN: no episode finished
              if np.isfinite(x) and i not in bad]
    but = " (diverged seeds left out)" if bad else ""
    rows = [
        ("env", summary["env"]),
        ("seeds", str(summary["seeds"])),
        ("env steps per seed", f"{summary['env_steps_per_seed']:,}"),
        ("final return, mean", f"{final['mean']:.2f}{but}"),
        ("final return, IQM [95% CI]", f"{stats.format_score(final)}{but}"),
        ("final return, min / max", f"{min(finite):.2f} / {max(finite):.2f}" if finite
         else "no seed finished an episode in the last update"),
        ("diverged seeds", f"DIVERGED {len(bad)} of {summary['seeds']} (seeds "
         f"{', '.join(map(str, bad))}: non-finite loss, gradient or parameters)" if bad
         else "none"),
        ("env steps / s", f"{summary['env_steps_per_second']:,.0f}"),
        ("wall s (compile s)", f"{summary['wall_seconds']:.1f} ({summary['compile_seconds']:.1f})"),
        ("run directory", str(run_dir)),
    ]
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)
