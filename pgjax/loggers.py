"""Optional metric loggers beside metrics.csv: TensorBoard and Weights & Biases.

Host-only; they receive the per-update rows after each jitted chunk, never inside the program.
"""

from pathlib import Path

LOGGERS = {"tensorboard": "tensorboardX", "wandb": "wandb"}  # name -> package


class LoggerUnavailable(ValueError):
    """The package behind a requested logger is not installed."""


def check_available(names) -> None:
    """Raise LoggerUnavailable naming the extra to install, before any work starts."""
    import importlib.util

    for name in names:
        if importlib.util.find_spec(LOGGERS[name]) is None:
            package = LOGGERS[name]
            raise LoggerUnavailable(f"--log {name} needs {package}: pip install 'pgjax[{name}]'")


class TensorBoardLogger:
    """Scalars to RUN_DIR/tensorboard (tensorboardX), x-axis env steps per seed."""

    def __init__(self, run_dir: Path, record: dict):
        from tensorboardX import SummaryWriter

        self.writer = SummaryWriter(str(run_dir / "tensorboard"))
        self.writer.add_text("config", str(record["config"]))

    def log(self, rows: list[dict]) -> None:
        for row in rows:
            for key, value in row.items():
                if key not in ("update", "env_steps") and value is not None:
                    self.writer.add_scalar(key, value, global_step=row["env_steps"])
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


class WandbLogger:
    """A Weights & Biases run in RUN_DIR/wandb; offline (no network) unless WANDB_MODE says."""

    def __init__(self, run_dir: Path, record: dict):
        import os

        import wandb

        self.run = wandb.init(
            project="pgjax", dir=str(run_dir), name=run_dir.name, config=record["config"],
            mode=os.environ.get("WANDB_MODE", "offline"), reinit="finish_previous",
        )

    def log(self, rows: list[dict]) -> None:
        for row in rows:
            self.run.log({k: v for k, v in row.items() if v is not None}, step=row["update"])

    def close(self) -> None:
        self.run.finish()


def make_loggers(names, run_dir: Path, record: dict) -> list:
    """The loggers named in `names` ("tensorboard", "wandb")."""
    check_available(names)
    classes = {"tensorboard": TensorBoardLogger, "wandb": WandbLogger}
    return [classes[name](run_dir, record) for name in names]
