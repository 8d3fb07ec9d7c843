"""`pgjax` command line: `pgjax train` trains many seeds of one config in one jitted program."""

import functools
import sys
import time
from pathlib import Path

import jax
import numpy as np
import tyro
from jax.sharding import Mesh, NamedSharding, PartitionSpec
from tqdm.auto import tqdm

from pgjax import runs
from pgjax.config import Config
from pgjax.envs import Env
from pgjax.train import init_state, train_chunk


class UsageError(ValueError):
    """Bad user input: reported as one line, exit status 2."""


def check(config: Config, seeds: int) -> Env:
    """Validate everything before any work starts; returns the env."""
    try:
        config.validate()
        env = Env(config.env)
    except ValueError as e:
        raise UsageError(str(e)) from None
    if seeds <= 0:
        raise UsageError(f"seeds must be positive, got {seeds}")
    if not env.continuous and config.init_log_std != Config.init_log_std:
        raise UsageError(f"init_log_std applies to continuous actions only; {env.name} is discrete")
    return env


def chunk_length(num_updates: int, num_chunks: int) -> int:
    """Largest divisor of num_updates that is at most num_updates / num_chunks (one compile)."""
    target = max(1, num_updates // max(1, num_chunks))
    return max(d for d in range(1, target + 1) if num_updates % d == 0)


def seed_keys(seed: int, seeds: int) -> jax.Array:
    """Per-seed keys, sharded over the local devices when the seed count divides evenly."""
    keys = jax.random.split(jax.random.key(seed), seeds)
    devices = jax.local_devices()
    if len(devices) > 1 and seeds % len(devices) == 0:
        mesh = Mesh(np.array(devices), ("seeds",))
        keys = jax.device_put(keys, NamedSharding(mesh, PartitionSpec("seeds")))
    return keys


def train_run(
    config: Config,
    *,
    seeds: int = 16,
    seed: int = 0,
    out: Path | None = None,
    overwrite: bool = False,
    chunks: int = 20,
    progress: bool = True,
) -> tuple[Path, dict]:
    """Train `seeds` seeds, write the run directory, return (run_dir, summary)."""
    check(config, seeds)
    try:
        run_dir = runs.prepare_run_dir(out, config.env, overwrite=overwrite)
    except ValueError as e:
        raise UsageError(str(e)) from None
    n = chunk_length(config.num_updates, chunks)
    record = runs.config_record(config, seeds=seeds, seed=seed, chunk_updates=n)
    runs.write_json(run_dir / "config.json", record)

    keys = seed_keys(seed, seeds)
    t0 = time.perf_counter()
    init = jax.jit(jax.vmap(functools.partial(init_state, config)))
    step = jax.jit(
        jax.vmap(functools.partial(train_chunk, config, num_updates=n)), donate_argnums=0
    )
    state = init(keys)
    step = step.lower(state).compile()
    compile_seconds = time.perf_counter() - t0

    csv = runs.MetricsCSV(run_dir / "metrics.csv", seeds)
    curve = []
    steps_per_chunk = seeds * n * config.steps_per_update
    t1 = time.perf_counter()
    with tqdm(
        total=seeds * config.num_updates * config.steps_per_update, unit="step", unit_scale=True,
        disable=not progress, desc=config.env, dynamic_ncols=True,
    ) as bar:
        for c in range(config.num_updates // n):
            state, metrics = step(state)
            metrics = jax.tree.map(np.asarray, metrics)
            csv.append(c * n, config.steps_per_update, metrics)
            curve.append(metrics.episode_return)
            bar.update(steps_per_chunk)
            bar.set_postfix(ret=f"{np.nanmean(metrics.episode_return[:, -1]):.1f}")
    wall = time.perf_counter() - t1

    returns = np.concatenate(curve, axis=1)  # [seeds, updates]
    env_steps = np.arange(1, returns.shape[1] + 1) * config.steps_per_update
    summary = {
        "env": config.env,
        "seeds": seeds,
        "env_steps_per_seed": int(env_steps[-1]),
        "final_return": runs.score_summary(returns[:, -1]),
        "env_steps_per_second": seeds * int(env_steps[-1]) / wall,
        "wall_seconds": wall,
        "compile_seconds": compile_seconds,
    }
    runs.write_json(run_dir / "summary.json", summary)
    runs.plot_curve(run_dir / "curve.png", env_steps, returns, f"{config.env}, REINFORCE")
    return run_dir, summary


def train_command(
    config: Config,
    seeds: int = 16,
    seed: int = 0,
    out: Path | None = None,
    overwrite: bool = False,
    chunks: int = 20,
    progress: bool = True,
) -> None:
    """Train `seeds` seeds of one config and write runs/<env>-<timestamp>/.

    Args:
      config: hyperparameters.
      seeds: number of seeds trained side by side in one program.
      seed: master seed; seed i uses jax.random.split(jax.random.key(seed), seeds)[i].
      out: run directory (default runs/<env>-<timestamp>/).
      overwrite: replace the run already in --out.
      chunks: progress updates (each a jitted chunk of updates; results do not depend on it).
      progress: show the progress bar.
    """
    run_dir, summary = train_run(
        config, seeds=seeds, seed=seed, out=out, overwrite=overwrite, chunks=chunks,
        progress=progress,
    )
    print(format_summary(summary, run_dir))


def format_summary(summary: dict, run_dir: Path) -> str:
    final = summary["final_return"]
    lo, hi = final["ci95"]
    rows = [
        ("env", summary["env"]),
        ("seeds", str(summary["seeds"])),
        ("env steps per seed", f"{summary['env_steps_per_seed']:,}"),
        ("final return, mean", f"{final['mean']:.2f}"),
        ("final return, IQM [95% CI]", f"{final['iqm']:.2f} [{lo:.2f}, {hi:.2f}]"),
        ("final return, min / max", f"{np.nanmin(final['per_seed']):.2f} / "
                                    f"{np.nanmax(final['per_seed']):.2f}"),
        ("env steps / s", f"{summary['env_steps_per_second']:,.0f}"),
        ("wall s (compile s)", f"{summary['wall_seconds']:.1f} ({summary['compile_seconds']:.1f})"),
        ("run directory", str(run_dir)),
    ]
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)


COMMANDS = {"train": train_command}


def main(argv: list[str] | None = None) -> None:
    try:
        tyro.extras.subcommand_cli_from_dict(
            COMMANDS, args=argv, prog="pgjax", config=(tyro.conf.OmitArgPrefixes,)
        )
    except UsageError as e:
        print(f"pgjax: error: {e}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("pgjax: interrupted", file=sys.stderr)
        sys.exit(130)


if __name__ == "__main__":
    main()
