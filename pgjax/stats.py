"""Statistics over seeds, host-only: interquartile mean (IQM) and bootstrap confidence intervals.

The one home of these numbers for run summaries, sweep tables, curves and the results table.
IQM is rliable's (a 25% trimmed mean, Agarwal et al., 2021); CIs are 95% percentile intervals
of a stratified bootstrap with fixed resamples, so the same scores give the same interval.
"""

import warnings

import numpy as np

REPS = 2000


def nanmean(x) -> float:
    """Mean of the finite entries; NaN when there are none."""
    x = np.asarray(x, np.float64)
    finite = np.isfinite(x)
    return float(np.mean(x[finite])) if finite.any() else float("nan")


def iqm(x, axis: int = 0) -> np.ndarray | float:
    """Interquartile mean along `axis` (scipy trim_mean 25%, as rliable's aggregate_iqm)."""
    from scipy import stats as scipy_stats

    out = scipy_stats.trim_mean(np.asarray(x, np.float64), 0.25, axis=axis)
    return float(out) if np.ndim(out) == 0 else out


def iqm_intervals(scores: np.ndarray, *, reps: int = REPS) -> tuple[np.ndarray, np.ndarray]:
    """IQM over seeds of each column, with a 95% bootstrap CI (rliable), in one call.

    Args:
      scores: [seeds, columns] float (columns: configs, or updates of a curve). Each column is
        a stratum, so its seeds are resampled among themselves. A column with NaN seeds is
        estimated from its finite seeds alone; one with none is NaN.
      reps: bootstrap resamples.

    Returns:
      (iqm [columns], ci95 [2, columns]).
    """
    scores = np.asarray(scores, np.float64)
    point, ci = np.full(scores.shape[1], np.nan), np.full((2, scores.shape[1]), np.nan)
    whole = np.isfinite(scores).all(0)
    if whole.any():
        point[whole], ci[:, whole] = _bootstrap(scores[:, whole], reps)
    for j in np.flatnonzero(~whole):
        finite = scores[np.isfinite(scores[:, j]), j]
        if finite.size:
            p, c = _bootstrap(finite[:, None], reps)
            point[j], ci[:, j] = p[0], c[:, 0]
    return point, ci


def _bootstrap(scores: np.ndarray, reps: int) -> tuple[np.ndarray, np.ndarray]:
    """rliable's stratified bootstrap with fixed resamples.

    rliable 1.2 draws its resample indices from numpy's global RNG (`np.random.choice`) and
    ignores `random_state`, so the global RNG is seeded for the call and restored after it.
    One seed has one resample, itself: its interval is the score, without the 0.5 s of
    resampling.
    """
    if scores.shape[0] == 1:
        return scores[0], np.stack([scores[0], scores[0]])
    from rliable import library as rly

    global_state = np.random.get_state()
    np.random.seed(0)
    try:
        with warnings.catch_warnings():  # arch deprecates RandomState; rliable still passes it
            warnings.simplefilter("ignore", FutureWarning)
            point, interval = rly.get_interval_estimates(
                {"x": scores}, lambda x: iqm(x, axis=0), reps=reps,
                random_state=np.random.RandomState(0),
            )
    finally:
        np.random.set_state(global_state)
    return np.asarray(point["x"]), np.asarray(interval["x"])


def score_summary(per_seed, *, reps: int = REPS) -> dict:
    """{"per_seed", "mean", "iqm", "ci95"} of one score per seed (NaN seeds left out)."""
    per_seed = np.asarray(per_seed, np.float64)
    point, ci = iqm_intervals(per_seed[:, None], reps=reps)
    return {"per_seed": [float(x) for x in per_seed], "mean": nanmean(per_seed),
            "iqm": float(point[0]), "ci95": [float(ci[0, 0]), float(ci[1, 0])]}


def format_score(score: dict) -> str:
    """"IQM [low, high]" of a `score_summary` (or any dict with "iqm" and "ci95"; None, as
    JSON writes NaN, reads as NaN), 2 decimals."""
    iqm, low, high = np.asarray([score["iqm"], *score["ci95"]], np.float64)
    return f"{iqm:.2f} [{low:.2f}, {high:.2f}]"


def first_reaching(env_steps, returns, threshold: float) -> int | None:
    """The first env step at which the IQM over seeds (finite ones) reaches `threshold`.

    Args:
      env_steps: [updates] env steps per seed at each update.
      returns: [seeds, updates] per-seed returns (NaN: no finished episode yet).
      threshold: the return to reach.

    Returns:
      The env step, or None if the IQM never reaches it.
    """
    returns = np.asarray(returns, np.float64)
    for j in range(returns.shape[1]):
        finite = returns[np.isfinite(returns[:, j]), j]
        if finite.size and iqm(finite) >= threshold:
            return int(env_steps[j])
    return None
