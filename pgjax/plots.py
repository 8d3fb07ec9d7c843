"""Learning-curve figures (matplotlib, Agg backend); host-only."""

import warnings
from pathlib import Path

import numpy as np

from pgjax import records, runs, stats


def pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save(fig, path: Path, dpi: int = 120) -> None:
    """fig in the format of its suffix, written atomically (`records.atomic_write`: an error names
    `path`); an SVG without a date and with fixed element ids, so that the same curves give the
    same bytes and a rerun leaves committed figures unchanged."""
    path = Path(path)
    kind = path.suffix.lstrip(".").lower()
    metadata = {"Date": None} if kind == "svg" else None
    with pyplot().rc_context({"svg.hashsalt": "pgjax"}):  # read by the SVG writer alone
        records.atomic_write(path, lambda f: fig.savefig(f, format=kind, dpi=dpi,
                                                      metadata=metadata), mode="wb")


def plot_curve(path: Path, env_steps: np.ndarray, returns: np.ndarray, title: str) -> None:
    """Mean episode return over seeds with a 95% t-interval band; returns [seeds, updates]."""
    from scipy import stats as scipy_stats

    plt = pyplot()
    n = np.isfinite(returns).sum(0)
    # An update in which no seed finished an episode (one longer than the window) has no mean.
    with np.errstate(invalid="ignore", divide="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        mean = np.nanmean(returns, 0)
        sem = np.nanstd(returns, 0, ddof=1) / np.sqrt(n)
        half = scipy_stats.t.ppf(0.975, np.maximum(n - 1, 1)) * sem
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(env_steps, mean, label=f"mean over {returns.shape[0]} seeds")
    ax.fill_between(env_steps, mean - half, mean + half, alpha=0.3, label="95% CI")
    ax.set_xlabel("env steps per seed")
    ax.set_ylabel("episode return")
    ax.set_title(title)
    ax.legend(loc="lower right")
    fig.tight_layout()
    save(fig, path)
    plt.close(fig)


def figure_paths(out: Path) -> list[Path]:
    """OUT.png and OUT.svg; a .png or .svg suffix of `out` is replaced, any other dot kept
    (`figures/ent0.03` -> `figures/ent0.03.png`).

    Raises:
      ValueError: `out` ends in another image format's suffix (.jpg, .pdf, ...), which would
        silently be written as PNG and SVG.
    """
    out = Path(out)
    suffix = out.suffix.lower()
    if suffix in (".pdf", ".jpg", ".jpeg", ".eps", ".ps", ".tif", ".tiff", ".webp", ".gif"):
        raise ValueError(f"{out}: figures are written as PNG and SVG; give the path without a "
                         f"suffix (or with .png or .svg)")
    if suffix in (".png", ".svg"):
        out = out.with_suffix("")
    return [out.with_name(out.name + ".png"), out.with_name(out.name + ".svg")]


def plot_runs(run_dirs: list[Path], out: Path, *, x: str = "env_steps") -> list[Path]:
    """Learning curves of several runs on one figure (IQM over seeds, 95% CI); PNG and SVG."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for run_dir in run_dirs:
        cols = runs.read_metrics(run_dir)
        returns = runs.seed_returns(cols)
        iqm, (lo, hi) = stats.iqm_intervals(returns, reps=500)
        label = f"{run_dir.name} ({returns.shape[0]} seeds)"
        ax.plot(cols[x], iqm, label=label)
        ax.fill_between(cols[x], lo, hi, alpha=0.25)
    ax.set_xlabel({"env_steps": "env steps per seed", "wall_seconds": "wall seconds"}[x])
    ax.set_ylabel("episode return (IQM, 95% CI)")
    ax.legend(loc="best", fontsize="small")
    fig.tight_layout()
    paths = figure_paths(out)
    for p in paths:
        save(fig, p)
    plt.close(fig)
    return paths
