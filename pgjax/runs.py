"""Host-only run records: provenance, run directories, metrics CSV, summary statistics, plots."""

import csv
import dataclasses
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import warnings
from datetime import datetime
from importlib import metadata
from pathlib import Path

import numpy as np

PACKAGES = ("pgjax", "jax", "jaxlib", "flax", "optax", "gymnax", "chex", "numpy")
MARKER = "pgjax_run"


def provenance() -> dict:
    """Versions, git commit and devices, for `config.json`."""
    import jax

    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return {
        "versions": versions,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "git_commit": git_commit(),
        "devices": [str(d) for d in jax.devices()],
        "backend": jax.default_backend(),
    }


def git_commit() -> str | None:
    """HEAD of the pgjax checkout (with '-dirty' if it has changes), or None outside git."""
    src = Path(__file__).resolve().parent.parent
    try:
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=src, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=src, capture_output=True, text=True, check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return head + ("-dirty" if dirty else "")


def is_run_dir(path: Path) -> bool:
    try:
        return MARKER in json.loads((path / "config.json").read_text())
    except (OSError, ValueError):
        return False


def prepare_run_dir(out: Path | None, env: str, *, overwrite: bool = False) -> Path:
    """Create the run directory; refuse one that holds other files or, unless asked, a run."""
    if out is None:
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
        out = Path("runs") / f"{env}-{stamp}"
    if out.exists():
        if not out.is_dir():
            raise ValueError(f"--out {out} exists and is not a directory")
        if is_run_dir(out):
            if not overwrite:
                raise ValueError(f"--out {out} already holds a pgjax run; pass --overwrite")
            shutil.rmtree(out)
        elif any(out.iterdir()):
            raise ValueError(f"--out {out} exists and is not a pgjax run directory")
    out.mkdir(parents=True, exist_ok=True)
    return out


def atomic_write(path: Path, write, mode: str = "w") -> None:
    """Write through `write(file)` to a temp file in the same folder, then rename over `path`.

    A killed process leaves either the old file or the new one, never half of it.
    """
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    os.fchmod(fd, 0o644)
    try:
        with os.fdopen(fd, mode, **({} if "b" in mode else {"newline": ""})) as f:
            write(f)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: Path, data: dict) -> None:
    """Atomic JSON write (`atomic_write`)."""
    atomic_write(path, lambda f: f.write(json.dumps(data, indent=2, default=str) + "\n"))


def config_record(config, **extra) -> dict:
    fields = {f.name: getattr(config, f.name) for f in dataclasses.fields(config)}
    fields = {k: (list(v) if isinstance(v, tuple) else v) for k, v in fields.items()}
    return {MARKER: 1, "config": fields, **extra, **provenance()}


METRIC_COLUMNS = ("loss", "policy_loss", "value_loss", "entropy", "grad_norm", "episodes")


class MetricsCSV:
    """metrics.csv and metrics.jsonl, one row per update: env steps, wall seconds, mean and
    per-seed return, seed-mean losses. With `keep_updates`, existing files are cut back to their
    first rows (resume).
    """

    def __init__(self, path: Path, num_seeds: int, keep_updates: int | None = None):
        self.path, self.jsonl = path, path.with_suffix(".jsonl")
        self.seeds = [f"return_seed{i}" for i in range(num_seeds)]
        self.header = ["update", "env_steps", "wall_seconds", "return_mean", *self.seeds,
                       *METRIC_COLUMNS]
        rows, lines = [], []
        if keep_updates is not None and path.exists():
            with path.open(newline="") as f:
                rows = list(csv.reader(f))[1 : keep_updates + 1]
            if self.jsonl.exists():
                lines = self.jsonl.read_text().splitlines(keepends=True)[:keep_updates]
        self.wall_offset = float(rows[-1][2]) if rows else 0.0
        atomic_write(path, lambda f: csv.writer(f).writerows([self.header, *rows]))
        atomic_write(self.jsonl, lambda f: f.writelines(lines))

    def append(self, first_update: int, steps_per_update: int, metrics, wall: float) -> list:
        """Write the rows of one chunk and return them as dicts (NaN as None).

        `metrics` fields are [seeds, updates] numpy arrays.
        """
        ret = np.asarray(metrics.episode_return, np.float64)
        rows = []
        for j in range(ret.shape[1]):
            update = first_update + j + 1
            per_seed = ret[:, j]
            row = [update, update * steps_per_update, round(self.wall_offset + wall, 3),
                   _nanmean(per_seed), *per_seed]
            row += [float(np.mean(np.asarray(getattr(metrics, c))[:, j])) for c in METRIC_COLUMNS]
            rows.append(row)
        with self.path.open("a", newline="") as f:
            csv.writer(f).writerows(rows)
        records = [
            {k: (None if isinstance(v, float) and not np.isfinite(v) else v)
             for k, v in zip(self.header, row, strict=True)}
            for row in rows
        ]
        with self.jsonl.open("a") as f:
            f.writelines(json.dumps(r) + "\n" for r in records)
        return records

    def returns(self) -> np.ndarray:
        """Per-seed episode returns of every row written, [seeds, updates] float64."""
        return seed_returns(read_metrics(self.path.parent))


def _nanmean(x: np.ndarray) -> float:
    return float(np.mean(x[np.isfinite(x)])) if np.isfinite(x).any() else float("nan")


def score_summary(per_seed: np.ndarray, *, reps: int = 2000) -> dict:
    """Mean, IQM and a 95% percentile-bootstrap CI of the IQM over seeds (rliable)."""
    from rliable import library as rly
    from rliable import metrics as rly_metrics

    per_seed = np.asarray(per_seed, np.float64)
    scores = per_seed[np.isfinite(per_seed)]
    out = {"per_seed": [float(x) for x in per_seed], "mean": _nanmean(per_seed)}
    if scores.size == 0:
        return out | {"iqm": float("nan"), "ci95": [float("nan"), float("nan")]}
    iqm_fn = lambda x: np.array([rly_metrics.aggregate_iqm(x)])
    with warnings.catch_warnings():  # arch deprecates RandomState; rliable still passes it
        warnings.simplefilter("ignore", FutureWarning)
        point, interval = rly.get_interval_estimates(
            {"run": scores[:, None]}, iqm_fn, reps=reps, random_state=np.random.RandomState(0)
        )
    lo, hi = interval["run"][:, 0]
    return out | {"iqm": float(point["run"][0]), "ci95": [float(lo), float(hi)]}


def plot_curve(path: Path, env_steps: np.ndarray, returns: np.ndarray, title: str) -> None:
    """Mean episode return over seeds with a 95% t-interval band; returns [seeds, updates]."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from scipy import stats

    n = np.isfinite(returns).sum(0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.nanmean(returns, 0) if n.any() else np.full(returns.shape[1], np.nan)
        sem = np.nanstd(returns, 0, ddof=1) / np.sqrt(n)
        half = stats.t.ppf(0.975, np.maximum(n - 1, 1)) * sem
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(env_steps, mean, label=f"mean over {returns.shape[0]} seeds")
    ax.fill_between(env_steps, mean - half, mean + half, alpha=0.3, label="95% CI")
    ax.set_xlabel("env steps per seed")
    ax.set_ylabel("episode return")
    ax.set_title(title)
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def read_metrics(run_dir: Path) -> dict[str, np.ndarray]:
    """Columns of RUN_DIR/metrics.csv as float arrays."""
    with (run_dir / "metrics.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        raise ValueError(f"{run_dir}/metrics.csv has no rows")
    return {k: np.array([float(r[k]) for r in rows]) for k in rows[0]}


def seed_returns(cols: dict[str, np.ndarray]) -> np.ndarray:
    """[seeds, updates] per-seed episode returns from `read_metrics` columns."""
    return np.stack([v for k, v in cols.items() if k.startswith("return_seed")])


def iqm_curve(returns: np.ndarray, *, reps: int = 500) -> tuple[np.ndarray, np.ndarray]:
    """IQM over seeds at each update and its 95% stratified-bootstrap CI (rliable).

    Args:
      returns: [seeds, updates]; NaN (no finished episode yet) counts as missing.

    Returns:
      (iqm [updates], ci [2, updates]).
    """
    from rliable import library as rly
    from rliable import metrics as rly_metrics

    finite = np.isfinite(returns).all(0)
    iqm = np.full(returns.shape[1], np.nan)
    ci = np.full((2, returns.shape[1]), np.nan)
    if finite.any():
        scores = returns[:, finite]
        fn = lambda x: np.array([rly_metrics.aggregate_iqm(x[:, j]) for j in range(x.shape[1])])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            point, interval = rly.get_interval_estimates(
                {"run": scores}, fn, reps=reps, random_state=np.random.RandomState(0)
            )
        iqm[finite], ci[:, finite] = point["run"], interval["run"]
    return iqm, ci


def plot_runs(run_dirs: list[Path], out: Path, *, x: str = "env_steps") -> list[Path]:
    """Learning curves of several runs on one figure (IQM over seeds, 95% CI); PNG and SVG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for run_dir in run_dirs:
        cols = read_metrics(run_dir)
        returns = seed_returns(cols)
        iqm, (lo, hi) = iqm_curve(returns)
        label = f"{run_dir.name} ({returns.shape[0]} seeds)"
        ax.plot(cols[x], iqm, label=label)
        ax.fill_between(cols[x], lo, hi, alpha=0.25)
    ax.set_xlabel({"env_steps": "env steps per seed", "wall_seconds": "wall seconds"}[x])
    ax.set_ylabel("episode return (IQM, 95% CI)")
    ax.legend(loc="best", fontsize="small")
    fig.tight_layout()
    paths = [out.with_suffix(".png"), out.with_suffix(".svg")]
    for p in paths:
        fig.savefig(p, dpi=120)
    plt.close(fig)
    return paths
