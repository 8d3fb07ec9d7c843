"""`pgjax` command line: train, eval, plot and reproduce runs."""

import contextlib
import functools
import inspect
import io
import os
import re
import sys
from pathlib import Path
from typing import Literal

import tyro

from pgjax import plots, runs, stats
from pgjax.checkpoint import KEEP_CHECKPOINTS, CheckpointError
from pgjax.components import idle_fields
from pgjax.config import FIELDS, Config, first_line, from_file
from pgjax.experiment import (
    Settings,
    Stopped,
    chunk_length,
    evaluate_run,
    format_summary,
    load_run,
    render_episode,
    reproduce_run,
    train_run,
)
from pgjax.render import render_unavailable
from pgjax.sweep import (
    check_lease,
    format_sweep,
    merge_sweep,
    sweep,
    sweep_status,
)
from pgjax.sweep.launch import run_local, run_worker, submit
from pgjax.sweep.spec import planned


class UsageError(ValueError):
    """Bad user input: reported as one line, exit status 2."""


# What `main` reports as one line and exit status 2: bad input (a flag, a config, a spec, a run
# directory: ValueError, as pgjax's own errors for these are), a checkpoint that is missing or
# damaged, programs too large for the device's memory.
USER_ERRORS = (ValueError, CheckpointError, MemoryError)


def train_command(
    config: Config,
    seeds: int = 16,
    seed: int = 0,
    out: Path | None = None,
    overwrite: bool = False,
    resume: Path | None = None,
    chunks: int | None = None,
    checkpoint_every: int | None = None,
    checkpoint_minutes: float = 5.0,
    keep_checkpoints: int | None = KEEP_CHECKPOINTS,
    progress: bool = True,
    log: tuple[Literal["tensorboard", "wandb"], ...] = (),
) -> None:
    """Train `seeds` seeds of one config and write runs/<env>-<timestamp>/.

    `--config FILE` reads config fields from a TOML, YAML or JSON file; flags override them.

    Args:
      config: hyperparameters.
      seeds: number of seeds trained side by side in one program.
      seed: master seed; seed i uses jax.random.split(jax.random.key(seed), seeds)[i].
      out: run directory (default runs/<env>-<timestamp>/).
      overwrite: replace the run already in --out.
      resume: continue the run in this directory from its last checkpoint (other flags ignored).
      chunks: progress updates (each a jitted chunk of updates; results do not depend on it;
        None: about 20 of at least 16 updates each).
      checkpoint_every: checkpoint every this many chunks and at the end (None: by minutes).
      checkpoint_minutes: least minutes between checkpoints when --checkpoint-every is None.
      keep_checkpoints: the newest checkpoints kept (None: all, to evaluate along training).
      progress: show the progress bar.
      log: also log to TensorBoard (RUN_DIR/tensorboard) and/or W&B (offline unless WANDB_MODE).
    """
    if resume is not None:
        _require_run(resume)
        ignored = _ignored_on_resume(
            resume, config, seeds=seeds, seed=seed, out=out, overwrite=overwrite, chunks=chunks,
            checkpoint_every=checkpoint_every, checkpoint_minutes=checkpoint_minutes,
            keep_checkpoints=keep_checkpoints, log=log,
        )
        if ignored:
            print(f"pgjax: {resume} resumes as its config.json records it; ignoring "
                  f"{', '.join(ignored)}", file=sys.stderr)
    if resume is None:
        _notes([config.validate()])
    run_dir, summary = train_run(
        config, resume or out, seeds=seeds, seed=seed, chunks=chunks,
        checkpoint_every=checkpoint_every, checkpoint_minutes=checkpoint_minutes,
        keep_checkpoints=keep_checkpoints, progress=progress, resume=resume is not None,
        overwrite=overwrite, log=log,
    )
    print(format_summary(summary, run_dir))


def _notes(configs: list[Config], *, flags: bool = True) -> None:
    """One line on stderr for each reason settings have no effect (`components.idle_fields`:
    an estimator setting it does not read, a value-net setting without one, ...), and for each
    total_timesteps that is not a whole number of updates (it trains the updates that fit).
    Settings are named as flags (`--num-envs`), or as spec fields (`num_envs`) for a sweep."""
    idle, notes = {}, {}
    for config in configs:
        name = (lambda field, c=config: _flag(field, getattr(c, field))) if flags else str
        for why, fields in idle_fields(config).items():
            idle.setdefault(why, set()).update(map(name, fields))
        if config.total_timesteps % config.steps_per_update:
            steps = config.num_updates * config.steps_per_update
            notes[f"pgjax: {name('total_timesteps')} {config.total_timesteps} trains {steps} "
                  f"env steps per seed ({config.num_updates} updates of {name('num_envs')} "
                  f"{config.num_envs} × {name('num_steps')} {config.num_steps})"] = None
    for why, names in idle.items():
        listed, one = ", ".join(sorted(names)), len(names) == 1
        if why.startswith("estimator"):
            notes[f"pgjax: {why} {listed}, so {'it has' if one else 'they have'} no effect"] = None
        else:
            notes[f"pgjax: {listed} {'has' if one else 'have'} no effect {why}"] = None
    for note in notes:
        print(note, file=sys.stderr)


def _flag(field: str, value=None) -> str:
    """The flag of a field as typed with `value` (`--no-...` for a switch turned off)."""
    return ("--no-" if value is False else "--") + field.replace("_", "-")


def _ignored_on_resume(run_dir: Path, config: Config, **given) -> list[str]:
    """The flags given with --resume (those off their defaults) that the resumed run does not
    use: it takes its config and `Settings` from the record."""
    recorded, record = load_run(run_dir, checkpoint_every=given["checkpoint_every"],
                                checkpoint_minutes=given["checkpoint_minutes"])
    ignored = [name for name in FIELDS if getattr(config, name) != getattr(Config(), name)
               and getattr(config, name) != getattr(recorded, name)]
    used = Settings.of(record)
    same = {
        "out": given["out"] is not None and Path(given["out"]).resolve() == run_dir.resolve(),
        "overwrite": False,
        "chunks": given["chunks"] is not None and chunk_length(
            recorded.num_updates, given["chunks"]) == used.chunk_updates,
        "log": sorted(given["log"]) == sorted(used.log),
        **{name: given[name] == getattr(used, name) for name in (
            "seeds", "seed", "checkpoint_every", "checkpoint_minutes", "keep_checkpoints")},
    }
    defaults = inspect.signature(train_command).parameters
    ignored += [name for name, value in given.items()
                if value != defaults[name].default and not same[name]]
    values = {**{name: getattr(config, name) for name in FIELDS}, **given}
    return [_flag(name, values[name]) for name in ignored]


def eval_command(
    run_dir: tyro.conf.Positional[Path],
    episodes: int = 100,
    checkpoint: int | None = None,
    seed: int = 0,
    gif: Path | None = None,
) -> None:
    """Evaluate a run's policies (greedy and sampled); print a table, write RUN_DIR/eval.json.

    Args:
      run_dir: a pgjax run directory.
      episodes: episodes per seed and mode.
      checkpoint: the update count of the checkpoint to load (default: the newest readable).
      seed: evaluation seed.
      gif: also render one greedy episode of seed 0's policy to this GIF (gymnax visualizer).
    """
    _require_run(run_dir)
    if gif is not None and gif.suffix.lower() != ".gif":
        raise UsageError(f"--gif {gif}: the file name must end in .gif")
    if gif is not None and (reason := render_unavailable(load_run(run_dir)[0].env)):
        raise UsageError(reason)
    result = evaluate_run(run_dir, episodes=episodes, step=checkpoint, seed=seed)
    greedy, sampled = result["greedy"]["per_seed_mean"], result["sampled"]["per_seed_mean"]
    print(f"checkpoint at update {result['checkpoint_update']}, {episodes} episodes per seed")
    print(f"{'seed':>4}  {'greedy':>10}  {'sampled':>10}")
    for i, (g, s) in enumerate(zip(greedy, sampled, strict=True)):
        print(f"{i:>4}  {g:>10.2f}  {s:>10.2f}")
    print(f"{'mean':>4}  {result['greedy']['mean']:>10.2f}  {result['sampled']['mean']:>10.2f}")
    for mode in ("greedy", "sampled"):
        print(f"{mode} IQM [95% CI] over seeds: {stats.format_score(result[mode])}")
    runs.write_json(run_dir / "eval.json", result)  # after printing: a failed write loses nothing
    if gif is not None:
        try:
            ret = render_episode(run_dir, gif, step=checkpoint, seed=seed)
        except RuntimeError as e:
            raise UsageError(str(e)) from None
        print(f"{gif}: one greedy episode of seed 0, return {ret:.2f}")


def plot_command(
    run_dirs: tyro.conf.Positional[list[Path]],
    out: Path | None = None,
    x: Literal["env_steps", "wall_seconds"] = "env_steps",
) -> None:
    """Learning curves of several runs on one figure (IQM over seeds, 95% bootstrap CI).

    Args:
      run_dirs: pgjax run directories.
      out: output path without suffix; writes OUT.png and OUT.svg (an existing folder:
        OUT/curves.png and .svg; default: RUN_DIR/curves for one run, else curves in the runs'
        common parent folder).
      x: x-axis.
    """
    if not run_dirs:
        raise UsageError("plot needs at least one run directory")
    for run_dir in run_dirs:
        _require_metrics(run_dir)
    if out is None:
        out = run_dirs[0] / "curves" if len(run_dirs) == 1 else _common_parent(run_dirs) / "curves"
    elif out.is_dir():
        out = out / "curves"
    try:
        plots.figure_paths(out)
    except ValueError as e:
        raise UsageError(f"--out {e}") from None
    for path in plots.plot_runs(run_dirs, out, x=x):
        print(path)


def reproduce_command(run_dir: tyro.conf.Positional[Path], progress: bool = True) -> None:
    """Rerun a run from its config.json and report whether the numbers match (exit 1 if not).

    Args:
      run_dir: a pgjax run directory.
      progress: show the progress bar.
    """
    _require_metrics(run_dir)
    result = reproduce_run(run_dir, progress=progress)
    for name, (then, current) in result["versions"].items():
        print(f"version differs: {name} {then} -> {current}")
    rows, updates = result["updates"]
    unfinished = f" (the {rows} updates it recorded of {updates})" if rows < updates else ""
    if result["difference"] is None:
        print(f"reproduced: metrics of {run_dir} match bitwise{unfinished} (wall time aside)")
        return
    print(f"NOT reproduced: {result['difference']}")
    if result["cpu"] is not None:
        then, now = map(_cpu_text, result["cpu"])
        print(f"recorded on {then}, rerun on {now}: on CPU, float bits depend on the "
              "instruction-set extensions XLA compiles for")
    sys.exit(1)


def _cpu_text(cpu: dict | None) -> str:
    """'AMD EPYC (sse4_1 ... fma)' of a `runs.cpu` record; None: a run that did not record it."""
    if cpu is None:
        return "a CPU the run does not record"
    return f"{cpu['name']} ({' '.join(cpu['isa']) or 'no extensions read'})"


def _common_parent(paths: list[Path]) -> Path:
    """The folder that holds all of `paths` (runs/ for runs/a and runs/b)."""
    return Path(os.path.commonpath([p.absolute().parent for p in paths]))


def _require_metrics(run_dir: Path) -> None:
    """A run directory whose metrics.csv has at least one row."""
    _require_run(run_dir)
    try:
        runs.seed_returns(runs.read_metrics(run_dir))
    except (OSError, ValueError) as e:
        reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
        raise UsageError(f"{run_dir} has no metrics to read ({reason})") from None


def _require_run(run_dir: Path) -> None:
    if not runs.is_run_dir(run_dir):
        damaged = run_dir.is_dir() and runs.damaged_run(run_dir)
        raise UsageError(f"{run_dir} is " + (f"a damaged pgjax run ({damaged})" if damaged
                                             else "not a pgjax run directory"))


def sweep_command(
    spec: tyro.conf.Positional[Path],
    out: Path | None = None,
    progress: bool = True,
    launcher: Literal["local", "slurm"] | None = None,
    array_size: int | None = None,
    partition: str | None = None,
    gpus_per_task: int | None = None,
    cpus_per_task: int | None = None,
    time: int | None = None,
    lease_seconds: float = 60.0,
    worker: bool = False,
    merge: bool = False,
    status: bool = False,
) -> None:
    """Run or resume a sweep of configs × seeds from a spec file (docs/guides/sweeps.md).

    Args:
      spec: YAML (JSON, TOML by name) file: base config fields, grid:, random:, seeds, seed,
        chunk_runs.
      out: sweep directory (default runs/sweep-<spec name>/); rerunning resumes it.
      progress: show the progress bar.
      launcher: train in independent workers: a SLURM job array (merged after) or local processes.
      array_size: workers (default: slurm 8; local one per --gpus-per-task GPUs, else 1).
      partition: SLURM partition.
      gpus_per_task: GPUs per worker (local: worker k gets its own GPUs).
      cpus_per_task: SLURM CPUs per worker.
      time: each worker's time limit in minutes (default: slurm 120).
      lease_seconds: a dead worker's chunk is taken over this long after its last heartbeat.
      worker: be one worker (e.g. a task of your own job array): train chunks left, no merge.
      merge: write the table of a sweep whose chunks are all recorded (refuses otherwise).
      status: print chunks recorded / total and who holds the others.
    """
    options = {"array_size": array_size, "partition": partition, "gpus_per_task": gpus_per_task,
               "cpus_per_task": cpus_per_task, "time_minutes": time}
    mode = _sweep_mode(launcher, worker, merge, status, options, lease_seconds)
    out = out if out is not None else Path("runs") / f"sweep-{spec.stem}"
    if mode not in ("sweep", "worker"):
        import jax

        jax.config.update("jax_platforms", "cpu")  # only workers train: leave the GPUs to them
    plan = planned(spec)  # parsed and checked once, then passed down
    if text := _run_sweep(plan, spec, out, mode, progress=progress, lease_seconds=lease_seconds,
                          options=options):
        print(text)


def _sweep_mode(launcher: str | None, worker: bool, merge: bool, status: bool, options: dict,
                lease_seconds: float) -> str:
    """What `pgjax sweep` was asked to do: "sweep" (in this process), "local", "slurm",
    "worker", "merge" or "status"; UsageError for flags that do not go together."""
    check_lease(lease_seconds, "--lease-seconds")
    if worker + merge + status + (launcher is not None) > 1:
        raise UsageError("choose one of --launcher, --worker, --merge and --status")
    given = [k for k, v in options.items() if v is not None]
    if given and launcher is None:
        flags = ", ".join("--" + k.replace("_minutes", "").replace("_", "-") for k in given)
        raise UsageError(f"{flags} need --launcher slurm or --launcher local")
    return launcher or ("worker" if worker else "merge" if merge else "status" if status
                        else "sweep")


def _run_sweep(plan, spec: Path, out: Path, mode: str, *, progress: bool, lease_seconds: float,
               options: dict) -> str | None:
    """Do what `mode` (`_sweep_mode`) says; the text to print: the status, the jobs submitted,
    or the sweep's table once merged."""
    if mode == "status":
        return sweep_status(plan, out)
    if mode == "worker":
        run_worker(plan, out, lease_seconds=lease_seconds)
        return None
    if mode != "merge":
        _notes(plan.configs, flags=False)
    if mode == "slurm":
        submitted = submit(plan, out, cluster="slurm", lease_seconds=lease_seconds, **options)
        if submitted.jobs:
            return submitted.describe(spec, out)
    if mode == "local":
        run_local(plan, out, progress=progress, lease_seconds=lease_seconds, **options)
    elif mode == "sweep":
        sweep(plan, out, progress=progress, lease_seconds=lease_seconds)
    else:  # --merge, or a SLURM sweep whose chunks were all recorded already
        merge_sweep(plan, out)
    return format_sweep(out)


COMMANDS = {
    "train": train_command,
    "eval": eval_command,
    "plot": plot_command,
    "reproduce": reproduce_command,
    "sweep": sweep_command,
}


def deferred(command):
    """The command with its signature, returning a call to make instead of making it, so that
    parsing (whose errors tyro draws in a box) and running are apart."""

    @functools.wraps(command)
    def parse_only(*args, **kwargs):
        return functools.partial(command, *args, **kwargs)

    return parse_only


CONFIG_HELP = ("read config fields from this TOML, YAML or JSON file (`pgjax.config.load_file`); "
               "flags given with it override the file's fields")


def config_option(argv: list[str]) -> tuple[list[str], Path | None]:
    """(argv without `--config FILE`, FILE or None) of a `train` command line."""
    at = [i for i, arg in enumerate(argv) if arg == "--config" or arg.startswith("--config=")]
    if not at:
        return argv, None
    if len(at) > 1:
        raise UsageError("--config is given more than once")
    i = at[0]
    if argv[i] != "--config":
        return argv[:i] + argv[i + 1:], Path(argv[i].removeprefix("--config="))
    if i + 1 == len(argv) or argv[i + 1].startswith("--"):
        raise UsageError("--config needs a file (TOML, YAML or JSON)")
    return argv[:i] + argv[i + 2:], Path(argv[i + 1])


def with_config_file(command, path: Path):
    """`deferred(command)` whose `config` defaults to the config in `path`, so that flags given
    on the command line override the file's fields."""
    config, rest = from_file(path)
    if rest:
        keys = ", ".join(sorted(rest))
        print(f"pgjax: {path}: training its base config ({keys}: read by scripts/reproduce.py)",
              file=sys.stderr)
    parse_only, signature = deferred(command), inspect.signature(command)
    parse_only.__signature__ = signature.replace(parameters=[
        p.replace(default=config) if p.name == "config" else p
        for p in signature.parameters.values()
    ])
    return parse_only


def parse(argv: list[str] | None):
    """The parsed command, ready to call; a parse error becomes one line and exit status 2."""
    argv = sys.argv[1:] if argv is None else list(argv)
    commands = {name: deferred(command) for name, command in COMMANDS.items()}
    if argv[:1] == ["train"]:
        argv, path = config_option(argv)
        if path is not None:
            commands["train"] = with_config_file(train_command, path)
    out = io.StringIO()
    try:
        with contextlib.redirect_stderr(out):
            return tyro.extras.subcommand_cli_from_dict(
                commands, args=argv, prog="pgjax", config=(tyro.conf.OmitArgPrefixes,),
            )
    except SystemExit as e:
        if not e.code:
            sys.stderr.write(out.getvalue())
            raise
        # tyro draws a titled box (with box-drawing characters, or plain where it cannot):
        # keep the text inside it, without the title, rules and the pointer to --help.
        plain = re.sub(r"\x1b\[[0-9;]*m", "", out.getvalue())
        lines = [line.strip(" │─-╭╮╰╯") for line in plain.splitlines()]
        lines = [line for line in lines if line][1:]
        text = " ".join(line for line in lines if not line.startswith("For full"))
        fail(text or "bad arguments (pgjax --help)")


def main(argv: list[str] | None = None) -> None:
    try:
        run = parse(argv)
        run()
    except USER_ERRORS as e:
        fail(str(e))
    except OSError as e:  # read-only or full disk, a path that vanished, ...
        where = f": {e.filename}" if e.filename else ""
        fail(f"{e.strerror or e}{where}")
    except (KeyboardInterrupt, Stopped) as e:
        # Straight out: unwinding while XLA's threads still run has crashed the interpreter.
        print(f"pgjax: {e}" if isinstance(e, Stopped) else "pgjax: interrupted",
              file=sys.stderr, flush=True)
        sys.stdout.flush()
        os._exit(e.exit_status if isinstance(e, Stopped) else 130)
    except Exception as e:
        if "RESOURCE_EXHAUSTED" not in str(e):
            raise
        fail(f"out of memory: {first_line(e, 300)}")


def fail(message: str) -> None:
    """One line on stderr, exit status 2."""
    print(f"pgjax: error: {message}", file=sys.stderr)
    sys.exit(2)


if __name__ == "__main__":
    main()
