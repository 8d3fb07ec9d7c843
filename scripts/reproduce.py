"""Rerun the README's results table: every experiments/configs/*.toml without a baseline and
with the learned value baseline, 16 seeds each; write experiments/results.md and figures.

    python scripts/reproduce.py [--only cartpole acrobot] [--seeds 16] [--runs runs/experiments]

Finished runs (a summary.json in their run directory) are reused, so an interrupted call can
simply be repeated.
"""

import argparse
import json
import time
import tomllib
from pathlib import Path

from pgjax import plots, runs, stats
from pgjax.config import Config, from_dict
from pgjax.experiment import format_summary, train_run

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = ROOT / "experiments" / "configs"
BASELINES = ("none", "value")


def load(path: Path) -> tuple[Config, dict]:
    spec = tomllib.loads(path.read_text())
    reference = spec.pop("reference", {})
    return from_dict(spec, where=f"{path.name}: ").validate(), reference


def steps_to(run_dir: Path, threshold: float | None) -> int | None:
    """Env steps per seed at the first update whose IQM over seeds reaches `threshold`."""
    if threshold is None:
        return None
    cols = runs.read_metrics(run_dir)
    return stats.first_reaching(cols["env_steps"], runs.seed_returns(cols), threshold)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", help="config names (file stems) to run")
    parser.add_argument("--seeds", type=int, default=16)
    parser.add_argument("--runs", type=Path, default=Path("runs/experiments"))
    args = parser.parse_args()
    names = args.only or sorted(p.stem for p in CONFIGS.glob("*.toml"))
    rows = []
    for name in names:
        config, reference = load(CONFIGS / f"{name}.toml")
        dirs = []
        for baseline in BASELINES:
            run_dir = args.runs / f"{name}-{baseline}"
            dirs.append(run_dir)
            if not (run_dir / "summary.json").exists():
                t = time.perf_counter()
                train_run(config.replace(baseline=baseline), run_dir, seeds=args.seeds,
                          progress=False, overwrite=True)
                print(f"[{name} {baseline}] {time.perf_counter() - t:.0f} s", flush=True)
            summary = json.loads((run_dir / "summary.json").read_text())
            print(format_summary(summary, run_dir), flush=True)
            rows.append((name, config, baseline, summary, reference,
                         steps_to(run_dir, reference.get("threshold"))))
        figure = ROOT / "experiments" / "figures" / name
        figure.parent.mkdir(exist_ok=True)
        plots.plot_runs(dirs, figure)
    # A partial rerun (--only) must not replace the committed table with a few rows.
    table = "results.md" if not args.only else "results-partial.md"
    write_table(rows, ROOT / "experiments" / table, args)


def write_table(rows, path: Path, args) -> None:
    prov = runs.provenance()
    lines = [
        "# Results",
        "",
        f"`python scripts/reproduce.py --seeds {args.seeds}`; pgjax {prov['versions']['pgjax']}, "
        f"jax {prov['versions']['jax']}, commit {prov['git_commit']}, {prov['platform']}, "
        f"devices {prov['devices']}.",
        "",
        "| env | budget (steps/seed) | baseline | final return IQM [95% CI] | mean | "
        "steps to threshold | wall s (compile s) | reference |",
        "| --- | ---: | --- | --- | ---: | ---: | ---: | --- |",
    ]
    for _, config, baseline, s, ref, steps in rows:
        f = s["final_return"]
        threshold = ref.get("threshold")
        reached = "—" if threshold is None else (f"{steps:,}" if steps else "not reached")
        ref_text = ref.get("source", "")
        if threshold is not None:
            ref_text = f"{threshold:g} ({ref_text})"
        lines.append(
            f"| {config.env} | {s['env_steps_per_seed']:,} | {baseline} | "
            f"{f['iqm']:.2f} [{f['ci95'][0]:.2f}, {f['ci95'][1]:.2f}] | {f['mean']:.2f} | "
            f"{reached} | {s['wall_seconds']:.0f} ({s['compile_seconds']:.0f}) | {ref_text} |"
        )
    path.write_text("\n".join(lines) + "\n")
    print(path)


if __name__ == "__main__":
    main()
