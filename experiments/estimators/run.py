"""The estimator family measured: against the exact gradient, and learning on gymnax.

    python experiments/estimators/run.py [--parts exact learn] [--episodes 262144] [--seeds 16]
                                         [--envs cartpole acrobot breakout] [--runs DIR]
                                         [--estimators gae ...]

exact: every estimator on the random tabular MDP of `pgjax.exact` (6 states, 3 actions, H = 20,
  γ = 1, so no γ^t question arises), the same number of episodes each: relative bias
  ‖E ĝ − ∇J‖ / ‖∇J‖ with its 99% noise radius, the χ² test of E ĝ = ∇J, cos(E ĝ, ∇J) and the
  variance per episode tr Cov(ĝ). Estimators that need a value get the exact V_t(s).
  Per-batch normalization is off (it rescales each batch).
learn: CartPole-v1, Acrobot-v1 and Breakout-MinAtar, each estimator with the env's config from
  experiments/configs at the same env steps per seed, 16 seeds: IQM of the final return with a
  95% bootstrap CI, the first env step at which the IQM over seeds reaches the threshold, and
  throughput. Group estimators need a window of at least the episode limit H; where the
  config's is shorter they get T = H with fewer envs (same steps per update or fewer).
  `--estimators` trains only those; the other rows come from results.json as they were.
Runs are kept in --runs (default runs/estimators) and reused when their recorded config is the
one asked for, so a stopped call can be repeated.
Writes experiments/estimators/results.md, exact.png and learn-<env>.png.
"""

import argparse
import json
import sys
import time
import tomllib
from pathlib import Path

import jax
import numpy as np

import pgjax
from pgjax import exact, plots, runs, stats
from pgjax.config import from_experiment
from pgjax.estimators import GAE, GroupRelative, OptimalBaseline, ReturnToGo, TotalReturn
from pgjax.experiment import ensure_run

HERE = Path(__file__).resolve().parent
CONFIGS = HERE.parent / "configs"
ENVS = {"cartpole": "cartpole", "acrobot": "acrobot", "breakout": "minatar_breakout"}
LEARN = ("reward-to-go", "total-return", "rloo", "grpo", "dr-grpo", "gae", "optimal-baseline")
EXACT = {
    "total return, no baseline": TotalReturn("none", "complete", normalize=False),
    "total return, batch mean": TotalReturn("mean", "complete", normalize=False),
    "total return, optimal baseline per parameter": OptimalBaseline(),
    "reward-to-go, no baseline": ReturnToGo("none", "complete", False, False),
    "reward-to-go, batch mean": ReturnToGo("mean", "complete", False, False),
    "reward-to-go, exact V (GAE λ=1)": GAE(1.0, normalize=False),
    "GAE λ=0.9, exact V": GAE(0.9, normalize=False),
    "GAE λ=0, exact V (one-step AC)": GAE(0.0, normalize=False),
    "RLOO, K=4": GroupRelative("rloo", 4, normalize=False),
    "RLOO, K=16": GroupRelative("rloo", 16, normalize=False),
    "Dr. GRPO, K=4": GroupRelative("dr-grpo", 4, normalize=False),
    "GRPO, K=4": GroupRelative("grpo", 4, normalize=False),
    "GRPO, K=16": GroupRelative("grpo", 16, normalize=False),
}


def run_exact(episodes: int) -> list[dict]:
    _, theta, env, v_table, truth = exact.estimator_problem(6, 3, 20)
    rows = []
    for name, estimator in EXACT.items():
        k = getattr(estimator, "group_size", 1)
        per_call = max(1, 2**15 // k)
        run = jax.jit(lambda key, e=estimator, n=per_call: exact.grad_stats(
            exact.estimator_grads(key, env, theta, e, n, 1.0, v_table=v_table)))
        total = None
        for key in jax.random.split(jax.random.key(11), max(1, episodes // (per_call * k))):
            s = run(key)
            total = s if total is None else exact.add_stats(total, s)
        est = exact.summarize(total, truth)
        rows.append({"estimator": name, "episodes": est.n * k, "rel_bias": est.rel_error,
                     "noise99": est.noise, "p_value": est.p_value, "cosine": est.cosine,
                     "variance_per_episode": est.variance * k})
        print(f"{name:34s} bias {est.rel_error:.4f} ± {est.noise:.4f}  p {est.p_value:.3g}  "
              f"cos {est.cosine:.4f}  var/episode {est.variance * k:.2f}", flush=True)
    return rows


def learn_config(name: str, estimator: str) -> tuple[pgjax.Config, dict]:
    config, rest = from_experiment(tomllib.loads((CONFIGS / f"{ENVS[name]}.toml").read_text()))
    reference = rest.get("reference", {})
    config = config.replace(estimator=estimator)
    if estimator == "total-return" and config.window not in ("complete", "episodes"):
        config = config.replace(window="complete")
    if estimator == "optimal-baseline":  # every window restarts every env: T ≥ H
        horizon = pgjax.Env(config.env).max_episode_steps
        if config.num_steps < horizon:
            num_envs = max(config.group_size,
                           config.steps_per_update // horizon // config.group_size
                           * config.group_size)
            config = config.replace(num_steps=horizon, num_envs=num_envs)
    if estimator == "gae":
        config = config.replace(baseline="value")
    return config.validate(), reference


def run_learn(envs: list[str], estimators: list[str], seeds: int, root: Path,
              saved: list[dict]) -> list[dict]:
    """Rows of every env × estimator: trained (or reused) for `estimators`, else from `saved`."""
    rows = []
    for name in envs:
        dirs = []
        for estimator in LEARN:
            config, reference = learn_config(name, estimator)
            run_dir = root / f"{name}-{estimator}"
            if estimator not in estimators:
                rows += [r for r in saved if (r["env"], r["estimator"]) == (config.env, estimator)]
                continue
            dirs.append(run_dir)
            t = time.perf_counter()
            done, summary = ensure_run(config, run_dir, seeds=seeds)
            if done != "reused":
                print(f"[{name} {estimator}] {done}, {time.perf_counter() - t:.0f} s", flush=True)
            final = summary["final_return"]
            rows.append({
                "env": config.env, "estimator": estimator, "num_envs": config.num_envs,
                "num_steps": config.num_steps, "steps_per_seed": summary["env_steps_per_seed"],
                "iqm": final["iqm"], "ci95": final["ci95"], "mean": final["mean"],
                "steps_to_threshold": runs.steps_to(run_dir, reference.get("threshold")),
                "threshold": reference.get("threshold"),
                "env_steps_per_second": summary["env_steps_per_second"],
                "diverged": len(summary.get("diverged_seeds", [])),
            })
            print(json.dumps(rows[-1]), flush=True)
        if set(estimators) == set(LEARN):  # a figure of some estimators would replace the whole
            plots.plot_runs(dirs, HERE / f"learn-{name}")
    return rows


def plot_exact(rows: list[dict], path: Path) -> None:
    plt = plots.pyplot()
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(12, 4.5))
    y = np.arange(len(rows))[::-1]
    names = [r["estimator"] for r in rows]
    ax.barh(y, [r["rel_bias"] for r in rows], xerr=[r["noise99"] for r in rows], capsize=3)
    ax.set_yticks(y, names, fontsize=8)
    ax.set_xlabel("relative bias ‖E ĝ − ∇J‖ / ‖∇J‖ (bar: 99% noise radius)")
    ax2.barh(y, [r["variance_per_episode"] for r in rows])
    ax2.set_yticks(y, [""] * len(rows))
    ax2.set_xscale("log")
    ax2.set_xlabel("variance per episode, tr Cov(ĝ) (log)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write(exact_rows, learn_rows, args) -> None:
    prov = runs.provenance()
    lines = ["# Estimators", "", f"`python experiments/estimators/run.py`; pgjax "
             f"{prov['versions']['pgjax']}, jax {prov['versions']['jax']}, commit "
             f"{prov['git_commit']}, {prov['platform']}, devices {prov['devices']}.", ""]
    if "learn" in args.parts and set(args.estimators) != set(LEARN):
        lines[-1:] = [f"Learning rows of {', '.join(args.estimators)} from this commit (`--parts "
                      f"learn --estimators {' '.join(args.estimators)}`); the other rows and the "
                      "figures as they were.", ""]
    if exact_rows:
        lines += ["## Against the exact gradient (tabular MDP, γ = 1, H = 20)", "",
                  "| estimator | episodes | relative bias [99% noise radius] | χ² p | cos | "
                  "variance per episode |", "| --- | ---: | --- | ---: | ---: | ---: |"]
        for r in exact_rows:
            lines.append(f"| {r['estimator']} | {r['episodes']:,} | {r['rel_bias']:.4f} "
                         f"[{r['noise99']:.4f}] | {r['p_value']:.3g} | {r['cosine']:.4f} | "
                         f"{r['variance_per_episode']:.2f} |")
        lines += ["", "![exact](exact.png)", ""]
    if learn_rows:
        lines += [f"## Learning ({args.seeds} seeds, same env steps per seed)", "",
                  "| env | estimator | envs × T | final return IQM [95% CI] | steps to threshold "
                  "| env steps/s | diverged |", "| --- | --- | --- | --- | ---: | ---: | ---: |"]
        for r in learn_rows:
            reached = "—" if r["threshold"] is None else (
                f"{r['steps_to_threshold']:,}" if r["steps_to_threshold"] else "not reached")
            lines.append(f"| {r['env']} | {r['estimator']} | {r['num_envs']} × {r['num_steps']} "
                         f"| {stats.format_score(r)} | "
                         f"{reached} | {r['env_steps_per_second']:,.0f} | {r['diverged']} |")
    (HERE / "results.md").write_text("\n".join(lines) + "\n")
    print(HERE / "results.md")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", nargs="+", default=["exact", "learn"],
                        choices=["exact", "learn"])
    parser.add_argument("--episodes", type=int, default=2**18)
    parser.add_argument("--seeds", type=int, default=16)
    parser.add_argument("--envs", nargs="+", default=list(ENVS), choices=list(ENVS))
    parser.add_argument("--runs", type=Path, default=Path("runs/estimators"))
    parser.add_argument("--estimators", nargs="+", default=list(LEARN), choices=list(LEARN))
    args = parser.parse_args()
    results = HERE / "results.json"
    saved = json.loads(results.read_text()) if results.exists() else {}
    if "exact" in args.parts:
        exact_rows = run_exact(args.episodes)
        plot_exact(exact_rows, HERE / "exact.png")
    else:
        exact_rows = saved.get("exact", [])
    if "learn" in args.parts:
        learn_rows = run_learn(args.envs, args.estimators, args.seeds, args.runs,
                               saved.get("learn", []))
    else:
        learn_rows = saved.get("learn", [])
    results.write_text(json.dumps({"exact": exact_rows, "learn": learn_rows}, indent=1) + "\n")
    write(exact_rows, learn_rows, args)


if __name__ == "__main__":
    sys.exit(main())
