"""A sweep's results: the merged table, the ranking by IQM with bootstrap CIs, its figure and
text (results.csv, summary.csv, summary.json, summary.png). Host-only."""

import csv
import json
import math
from pathlib import Path

import numpy as np

from pgjax import plots, runs, stats
from pgjax.sweep import claims
from pgjax.sweep.files import (
    IncompleteSweep,
    chunk_path,
    load_record,
    load_records,
    set_aside,
    span,
    write_csv,
)
from pgjax.sweep.spec import Chunk, Plan, Spec, describe


def merged(out_dir: Path, plan: Plan, sweep: str):
    """The results table (a DataFrame, one row per run by run id) of a complete sweep (chunks
    of the sweep `sweep`, a `files.sweep_id`), its files written: results.csv, summary.csv,
    summary.json and summary.png. IncompleteSweep otherwise, after setting aside the damaged
    chunks nobody holds, so that the next run of the sweep trains them."""
    import pandas as pd

    records, missing, damaged = load_records(out_dir, plan, sweep)
    if missing:
        moved = [f"{chunk.index} as {aside}" for chunk in plan.chunks if chunk.index in damaged
                 and (aside := _set_aside_unheld(out_dir, plan, chunk, sweep)) is not None]
        raise IncompleteSweep(
            f"{out_dir}: {len(missing)} of {len(plan.chunks)} chunks not recorded "
            f"(chunks {span(missing)}"
            + (f"; damaged, set aside: chunk {', chunk '.join(moved)}" if moved else "")
            + "); run the sweep again to train them (--status shows who holds them)"
        )
    claims.remove_stale(out_dir / "chunks")
    rows = sorted((row for r in records.values() for row in r["rows"]), key=lambda r: r["run"])
    write_csv(out_dir / "results.csv", rows)
    summary = summarize(rows, plan.spec)
    write_csv(out_dir / "summary.csv", summary)
    runs.write_json(out_dir / "summary.json", {
        "configs": len(plan.configs),
        "runs": len(plan.runs),
        "chunks": len(plan.chunks),
        "wall_seconds": sum(r["wall_seconds"] for r in records.values()),
        "compile_seconds_per_worker": compile_seconds(records),
        "ranking": summary,
    })
    plot_summary(out_dir / "summary.png", summary, plan.spec, curves(out_dir, plan))
    return pd.DataFrame(rows)


def _set_aside_unheld(out_dir: Path, plan: Plan, chunk: Chunk, sweep: str) -> str | None:
    """`set_aside` a damaged chunk under its claim: the new names, or None when a worker holds
    the chunk (it sets the files aside itself) or it is no longer damaged."""
    chunks_dir = out_dir / "chunks"
    name = claims.chunk_name(chunk.index)
    latest = claims.scan(chunks_dir).attempts.get(name, 0)
    claim = claims.acquire(chunks_dir, name, latest, claims.this_holder(), claims.LEASE_SECONDS)
    if claim is None:
        return None
    try:
        damaged = load_record(out_dir, chunk, plan, sweep)[1]
        return set_aside(out_dir, chunk.index) if damaged else None
    finally:
        claims.release(claim)


def summarize(rows: list[dict], spec: Spec, *, reps: int = stats.REPS) -> list[dict]:
    """One row per config, ranked by the IQM of the final return (best first).

    IQM (rliable's interquartile mean, a 25% trimmed mean) and 95% percentile CIs over seeds
    from a stratified bootstrap (`stats.iqm_intervals`, `reps` resamples, fixed random state).
    Runs that diverged keep their measured returns (NaN where no episode finished) and are
    counted.
    """
    by_config: dict[int, list[dict]] = {}
    for row in sorted(rows, key=lambda r: (r["config"], r["seed_index"])):
        by_config.setdefault(row["config"], []).append(row)
    ids = sorted(by_config)
    scores = {
        name: np.array([[r[name] for r in by_config[c]] for c in ids]).T  # [seeds, configs]
        for name in ("final_return", "auc")
    }
    f_iqm, f_ci = stats.iqm_intervals(scores["final_return"], reps=reps)
    a_iqm, a_ci = stats.iqm_intervals(scores["auc"], reps=reps)
    out = []
    for j, config_id in enumerate(ids):
        group = by_config[config_id]
        out.append({
            "config": config_id,
            **{name: group[0][name] for name in spec.varying},
            "seeds": len(group),
            "diverged": sum(bool(r["diverged"]) for r in group),
            "final_iqm": float(f_iqm[j]),
            "final_ci95_low": float(f_ci[0, j]),
            "final_ci95_high": float(f_ci[1, j]),
            "final_mean": stats.nanmean(scores["final_return"][:, j]),
            "auc_iqm": float(a_iqm[j]),
            "auc_ci95_low": float(a_ci[0, j]),
            "auc_ci95_high": float(a_ci[1, j]),
        })
    out.sort(key=lambda r: (math.isnan(r["final_iqm"]), -np.nan_to_num(r["final_iqm"]),
                            r["config"]))
    return [{"rank": i + 1, **r} for i, r in enumerate(out)]


def config_label(row: dict, spec: Spec) -> str:
    """The varying fields of a summary row, or 'config N' when nothing varies."""
    label = describe({name: row[name] for name in spec.varying})
    return label or f"config {row['config']}"


def plot_summary(path: Path, summary: list[dict], spec: Spec, curves: dict, *, top: int = 20):
    """Left: final-return IQM with 95% CI per config (best first). Right: IQM curves, best 5."""
    plt = plots.pyplot()
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
        q = [stats.iqm(col[np.isfinite(col)]) if np.isfinite(col).any() else np.nan
             for col in returns.T]
        ax2.plot(steps, q, label=config_label(r, spec))
    ax2.set_xlabel("env steps per run")
    ax2.set_ylabel("episode return, IQM over seeds")
    ax2.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    plots.save(fig, path, dpi=110)
    plt.close(fig)


def curves(out_dir: Path, plan: Plan) -> dict:
    """config id -> (env steps [U], returns [seeds, U]) from the chunks' metrics."""
    returns: dict[int, list] = {}
    for chunk in plan.chunks:
        with np.load(chunk_path(out_dir, chunk.index, ".npz")) as data:
            for run, ret in zip(data["run"], data["episode_return"], strict=True):
                returns.setdefault(plan.runs[int(run)][0], []).append(ret)
    return {c: (np.arange(1, len(ret[0]) + 1) * plan.configs[c].steps_per_update, np.stack(ret))
            for c, ret in returns.items()}


def compile_seconds(records: dict) -> dict:
    """worker -> seconds spent compiling, each compiled program counted once."""
    out: dict[str, float] = {}
    seen = set()
    for r in records.values():
        worker = str(r.get("worker"))
        key = (worker, r["batch"], r["devices"], r["compile_seconds"])
        if key not in seen:
            seen.add(key)
            out[worker] = out.get(worker, 0.0) + r["compile_seconds"]
    return out


def format_sweep(out_dir: Path, *, top: int = 10) -> str:
    """The best configs from summary.csv as an aligned text table."""
    with (Path(out_dir) / "summary.csv").open() as f:
        rows = list(csv.DictReader(f))
    varying = Spec(**json.loads((Path(out_dir) / "sweep.json").read_text())["spec"]).varying
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
