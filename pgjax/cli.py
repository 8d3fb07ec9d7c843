"""`pgjax` command line: `pgjax train` trains many seeds of one config in one jitted program."""

import sys
from pathlib import Path

import tyro

from pgjax import runs
from pgjax.checkpoint import CheckpointError
from pgjax.config import Config
from pgjax.envs import Env
from pgjax.experiment import format_summary, train_run


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


def train_command(
    config: Config,
    seeds: int = 16,
    seed: int = 0,
    out: Path | None = None,
    overwrite: bool = False,
    resume: Path | None = None,
    chunks: int = 20,
    checkpoint_every: int = 5,
    progress: bool = True,
) -> None:
    """Train `seeds` seeds of one config and write runs/<env>-<timestamp>/.

    Args:
      config: hyperparameters.
      seeds: number of seeds trained side by side in one program.
      seed: master seed; seed i uses jax.random.split(jax.random.key(seed), seeds)[i].
      out: run directory (default runs/<env>-<timestamp>/).
      overwrite: replace the run already in --out.
      resume: continue the run in this directory from its last checkpoint (other flags ignored).
      chunks: progress updates (each a jitted chunk of updates; results do not depend on it).
      checkpoint_every: save a checkpoint every this many chunks (and at the end).
      progress: show the progress bar.
    """
    if checkpoint_every <= 0:
        raise UsageError(f"checkpoint_every must be positive, got {checkpoint_every}")
    if resume is not None:
        if not runs.is_run_dir(resume):
            raise UsageError(f"--resume {resume} is not a pgjax run directory")
        run_dir = resume
    else:
        check(config, seeds)
        try:
            run_dir = runs.prepare_run_dir(out, config.env, overwrite=overwrite)
        except ValueError as e:
            raise UsageError(str(e)) from None
    try:
        run_dir, summary = train_run(
            config, run_dir, seeds=seeds, seed=seed, chunks=chunks,
            checkpoint_every=checkpoint_every, progress=progress, resume=resume is not None,
        )
    except CheckpointError as e:
        raise UsageError(str(e)) from None
    print(format_summary(summary, run_dir))


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
