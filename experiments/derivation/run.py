"""Reproduce the policy-gradient derivation against exact gradients on a random tabular MDP.

    python experiments/derivation/run.py [--chunks 64]

Writes results.md and error_vs_n.png, bias_vs_gamma.png, variance.png next to this file.

1. Exact: ∇J by jax.grad through the linear solve V = (I − γ P_π)^{-1} r_π (and through the
   horizon-H DP), against the policy-gradient theorem Σ_s d(s) Σ_a ∇π(a|s) Q(s, a) and central
   finite differences, in float64 (Sutton et al. 2000; Sutton & Barto 2018 §13.2).
2. The identities ∇π = π ∇log π and E_{a∼π}[∇log π(a|s)] = 0 (S&B §13.3-13.4).
3. Monte Carlo: the mean over N episodes of −∇ of pgjax's reinforce_loss × episode length, with
   G_t from pgjax's discounted_returns on pgjax's rollout (Williams 1992), against ∇J_H:
   (i) γ^t weights, (ii) none, baselines none / batch mean / exact V_t(s_t), deliberate bugs.
4. Windows holding several episodes: pgjax's complete_episode_mask against alternatives.
"""

import argparse
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import jax
import jax.numpy as jnp
import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from pgjax import (  # noqa: E402
    complete_episode_mask,
    discounted_returns,
    episode_start_mask,
    exact,
    init_runner,
    rollout,
)

OUT = Path(__file__).resolve().parent
S, A, H = 6, 3, 20  # states (the last one terminal), actions, time limit
MDP_SEED, THETA_SEED, MC_SEED = 1, 2, 0
GAMMA = 0.9  # the discount of the main comparison
GAMMAS = (0.5, 0.7, 0.8, 0.9, 0.95, 0.99, 1.0)  # the bias-vs-γ sweep
CHUNK = 2**14  # episodes per jitted chunk
CURVE = ("i", "ii", "i+value")  # variants on the error-vs-N plot
WINDOWS = (40, 100)  # rollout windows T holding several episodes
WINDOW_CHUNKS = 16  # chunks of CHUNK streams per window


class Setup(NamedTuple):
    mdp: exact.MDPParams
    theta: jax.Array  # [S, A] float32
    env: object  # pgjax Env


class Truth(NamedTuple):
    """Exact quantities (float64) at one γ."""

    grad_h: np.ndarray  # [S, A] ∇J_H, the Monte Carlo target
    grad_inf: np.ndarray  # [S, A] ∇J_∞
    no_weights: np.ndarray  # [S, A] E[estimator (ii)] = Σ_t Σ_s p_t Σ_a ∇π Q_t (κ = 1)
    j_h: float
    j_inf: float


def make_setup() -> Setup:
    mdp = exact.random_mdp(jax.random.key(MDP_SEED), S, A, horizon=H)
    theta = jax.random.normal(jax.random.key(THETA_SEED), (S, A))
    return Setup(mdp, theta, exact.make_env(mdp, f"TabularMDP-{MDP_SEED}"))


def variant_key(weights: str, gamma: float, baseline: str = "none") -> str:
    return f"{weights}+{baseline}@{gamma}" if baseline != "none" else f"{weights}@{gamma}"


# ---------------------------------------------------------------------------------------------
# Exact gradients
# ---------------------------------------------------------------------------------------------


def rel(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def exact_truths(setup: Setup) -> tuple[dict[float, Truth], list[dict]]:
    """∇J_H, ∇J_∞ and E[(ii)] per γ, and the cross-checks of ∇J (float64)."""
    truths, checks = {}, []
    with jax.enable_x64(True):
        mdp, theta = setup.mdp.astype(jnp.float64), setup.theta.astype(jnp.float64)
        for gamma in GAMMAS:
            grad_inf = exact.exact_grad(theta, mdp, gamma)
            grad_h = exact.exact_grad(theta, mdp, gamma, horizon=H)
            f_inf = lambda t, g=gamma: exact.objective(t, mdp, g)
            f_h = lambda t, g=gamma: exact.finite_horizon_objective(t, mdp, g, H)
            checks.append({
                "gamma": gamma,
                "pg_inf": rel(exact.pg_theorem_grad(theta, mdp, gamma), grad_inf),
                "fd_inf": rel(exact.finite_difference_grad(f_inf, theta), grad_inf),
                "pg_h": rel(exact.pg_theorem_grad(theta, mdp, gamma, horizon=H), grad_h),
                "fd_h": rel(exact.finite_difference_grad(f_h, theta), grad_h),
                "h_vs_inf": rel(grad_h, grad_inf),
            })
            no_weights = exact.pg_theorem_grad(
                theta, mdp, gamma, horizon=H, visitation_discount=1.0
            )
            truths[gamma] = Truth(
                np.asarray(grad_h), np.asarray(grad_inf), np.asarray(no_weights),
                float(f_h(theta)), float(f_inf(theta)),
            )
    return truths, checks


def identity_checks(setup: Setup, num_samples: int = 1_000_000) -> dict:
    with jax.enable_x64(True):
        ids = exact.score_identities(setup.theta.astype(jnp.float64))
    scores = np.asarray(exact.sampled_scores(jax.random.key(7), setup.theta, num_samples))
    z = scores.mean(0) / (scores.std(0) / np.sqrt(num_samples))
    return {
        "product_rule": float(ids.product_rule),
        "zero_mean_score": float(ids.zero_mean_score),
        "sampled_max_abs_mean": float(np.abs(scores.mean(0)).max()),
        "sampled_max_abs_z": float(np.abs(z).max()),
        "samples": num_samples,
    }


# ---------------------------------------------------------------------------------------------
# Monte Carlo, one episode per stream
# ---------------------------------------------------------------------------------------------


def make_chunk(setup: Setup) -> Callable:
    """Jitted key -> (GradStats per variant, prefix sums [15, D] for the curve, episode counts)."""
    theta = setup.theta
    v_table = exact.finite_horizon_values(theta, setup.mdp, GAMMA, H).v
    prefix_at = 2 ** np.arange(int(np.log2(CHUNK)) + 1) - 1

    def chunk(key):
        batch, mask = exact.sample_episodes(key, setup.env, theta, CHUNK)
        grads = lambda gamma, **kw: exact.reinforce_grads(theta, batch, mask, gamma, **kw)
        g = {}
        for gamma in GAMMAS:
            g[variant_key("i", gamma)] = grads(gamma)
            g[variant_key("ii", gamma)] = grads(gamma, gamma_weights=False)
        for weights in ("i", "ii"):
            g[variant_key(weights, GAMMA, "mean")] = grads(
                GAMMA, gamma_weights=weights == "i", baseline="mean"
            )
            g[variant_key(weights, GAMMA, "value")] = grads(
                GAMMA, gamma_weights=weights == "i", baseline="value", v_table=v_table
            )
        g.update({f"bug: {k}": v for k, v in exact.mutant_grads(theta, batch, mask, GAMMA).items()})
        curve = {"i": g[variant_key("i", GAMMA)], "ii": g[variant_key("ii", GAMMA)],
                 "i+value": g[variant_key("i", GAMMA, "value")]}
        prefix = {k: jnp.cumsum(v.reshape(CHUNK, -1), 0)[prefix_at] for k, v in curve.items()}
        counts = {
            "steps": mask.sum(),
            "truncated": jnp.sum(batch.truncated * mask),
        }
        return jax.tree.map(exact.grad_stats, g), prefix, counts

    return jax.jit(chunk)


def run_monte_carlo(setup: Setup, chunks: int):
    chunk = make_chunk(setup)
    keys = jax.random.split(jax.random.key(MC_SEED), chunks)
    total, prefix0, counts, running = None, None, {"steps": 0.0, "truncated": 0.0}, []
    for i, key in enumerate(keys):
        stats, prefix, c = chunk(key)
        total = stats if total is None else jax.tree.map(
            exact.add_stats, total, stats, is_leaf=lambda x: isinstance(x, exact.GradStats)
        )
        if i == 0:
            prefix0 = jax.tree.map(np.asarray, prefix)
        running.append({k: np.asarray(total[variant_key(*curve_variant(k))].total) for k in CURVE})
        counts = {k: counts[k] + float(c[k]) for k in counts}
    return total, prefix0, running, counts


def make_replicate_chunk(setup: Setup) -> Callable:
    """Jitted key -> GradStats of (i) with each baseline at γ = GAMMA (the replicate runs)."""
    v_table = exact.finite_horizon_values(setup.theta, setup.mdp, GAMMA, H).v

    def chunk(key):
        batch, mask = exact.sample_episodes(key, setup.env, setup.theta, CHUNK)
        return {
            name: exact.grad_stats(exact.reinforce_grads(
                setup.theta, batch, mask, GAMMA, baseline=curve_variant(name)[2], v_table=v_table
            ))
            for name in ("i", "i+mean", "i+value")
        }

    return jax.jit(chunk)


def run_replicates(setup: Setup, chunks: int, replicates: int, truth: Truth, first: dict):
    """(i) with each baseline on fresh seeds, and all seeds pooled with the main run's `first`.

    Returns:
      (markdown table lines, {variant: Estimate} of the pooled episodes).
    """
    names = ("i", "i+mean", "i+value")
    lines = ["| seed | N | (i) no baseline | (i) batch mean | (i) V_t(s_t) |",
             "|---|---|---|---|---|"]
    row = lambda label, stats: f"| {label} | {int(stats['i'].count):,} | " + " | ".join(
        fmt_ratio(exact.summarize(stats[k], truth.grad_h)) for k in names) + " |"
    lines.append(row(f"{MC_SEED} (the run above)", first))
    chunk = make_replicate_chunk(setup)
    merge = lambda a, b: jax.tree.map(
        exact.add_stats, a, b, is_leaf=lambda x: isinstance(x, exact.GradStats)
    )
    pooled = first
    for seed in range(MC_SEED + 1, MC_SEED + replicates + 1):
        total = None
        for key in jax.random.split(jax.random.key(seed), chunks):
            stats = chunk(key)
            total = stats if total is None else merge(total, stats)
        lines.append(row(str(seed), total))
        pooled = merge(pooled, total)
    lines.append(row(f"pooled {MC_SEED}..{MC_SEED + replicates}", pooled))
    return lines, {k: exact.summarize(pooled[k], truth.grad_h) for k in names}


def fmt_ratio(est: exact.Estimate) -> str:
    return f"error {est.rel_error:.4f}, r99 {est.noise:.4f}, p = {fmt_p(est.p_value)}"


def curve_variant(name: str) -> tuple[str, float, str]:
    weights, _, baseline = name.partition("+")
    return weights, GAMMA, baseline or "none"


# ---------------------------------------------------------------------------------------------
# Windows holding several episodes
# ---------------------------------------------------------------------------------------------


def make_window_chunk(setup: Setup, window: int) -> Callable:
    """Jitted key -> {mask: (Σ ĝ over counted episodes [B, D], counted episodes [B])}."""
    theta = setup.theta

    def chunk(key):
        k_reset, k_roll = jax.random.split(key)
        runner = init_runner(k_reset, setup.env, CHUNK)
        _, batch = rollout(k_roll, setup.env, exact.tabular_policy(theta), runner, window + H)
        returns = discounted_returns(batch.reward, batch.done, GAMMA)
        weights = GAMMA**batch.episode_t
        in_window = (jnp.arange(window + H) < window)[:, None]
        masks = {
            "pgjax complete_episode_mask, window T": complete_episode_mask(
                batch.done & in_window
            ) * in_window,
            "episodes started in T, run to T+H": episode_start_mask(batch.episode_t, window - 1),
            "first episode only": exact.first_episode_mask(batch.done),
        }
        out = {}
        for name, m in masks.items():
            g = exact.episode_grads(theta, batch, returns, m, weights=weights)
            out[name] = (g.reshape(CHUNK, -1), jnp.sum(batch.done * m, 0))
        return out

    return jax.jit(chunk)


def run_windows(setup: Setup, truth: Truth) -> list[dict]:
    rows = []
    for window in WINDOWS:
        chunk = make_window_chunk(setup, window)
        parts: dict[str, list] = {}
        for key in jax.random.split(jax.random.key(MC_SEED + window), WINDOW_CHUNKS):
            for name, (g, k) in chunk(key).items():
                parts.setdefault(name, []).append((np.asarray(g), np.asarray(k)))
        for name, p in parts.items():
            g, k = np.concatenate([x for x, _ in p]), np.concatenate([y for _, y in p])
            est = exact.ratio_estimate(g, k, truth.grad_h)
            rows.append({"window": window, "mask": name, "est": est, "per_stream": float(k.mean())})
    return rows


# ---------------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------------


def fmt_est(label: str, gamma, target: str, est: exact.Estimate) -> str:
    lo, hi = est.ci
    verdict = "yes" if est.within_ci else "**no**"
    return (f"| {label} | {gamma} | {target} | {est.n:,} | {est.rel_error:.4f} | "
            f"[{lo:.4f}, {hi:.4f}] | {verdict} | {fmt_p(est.p_value)} | {est.cosine:.5f} "
            f"| {est.variance:.3f} |")


TABLE_HEAD = (
    "| estimator | γ | target | N | ‖ḡ − ∇J‖/‖∇J‖ | 99% CI of rel. bias | bias 0 in CI "
    "| χ² p-value | cos(ḡ, ∇J) | tr Cov(ĝ) per episode |\n"
    "|---|---|---|---|---|---|---|---|---|---|"
)

LABELS = {
    "i": "(i) γ^t weights, no baseline",
    "ii": "(ii) no γ^t weights, no baseline",
    "i+mean": "(i) γ^t weights, batch-mean baseline",
    "i+value": "(i) γ^t weights, baseline V_t(s_t)",
    "ii+mean": "(ii) no γ^t weights, batch-mean baseline",
    "ii+value": "(ii) no γ^t weights, baseline V_t(s_t)",
}


def main_table(total: dict, truths: dict[float, Truth]) -> tuple[list[str], dict]:
    lines, ests = [TABLE_HEAD], {}
    t = truths[GAMMA]
    for name, label in LABELS.items():
        weights, _, baseline = name.partition("+")
        est = exact.summarize(total[variant_key(weights, GAMMA, baseline or "none")], t.grad_h)
        ests[name] = est
        lines.append(fmt_est(label, GAMMA, "∇J_H", est))
    lines.append(fmt_est("(ii) no γ^t weights", GAMMA, "Σ_t Σ_s p_t ∇π Q_t (κ=1)",
                         exact.summarize(total[variant_key("ii", GAMMA)], t.no_weights)))
    for bug in ("bug: undiscounted returns", "bug: weights gamma^(t+1)", "bug: mean over steps"):
        ests[bug] = exact.summarize(total[bug], t.grad_h)
        lines.append(fmt_est(bug + " (with γ^t)", GAMMA, "∇J_H", ests[bug]))
    for gamma in (0.99, 1.0):  # where ‖∇J_H − ∇J_∞‖ is above the noise
        est = exact.summarize(total[variant_key("i", gamma)], truths[gamma].grad_inf)
        lines.append(fmt_est("(i), against the untruncated objective", gamma, "∇J_∞", est))
    return lines, ests


def gamma_table(total: dict, truths: dict[float, Truth]) -> tuple[list[str], dict]:
    lines = [
        "| γ | (i) rel. error | (i) 99% noise | (ii) rel. error [99% CI] | (ii) predicted bias "
        "| (ii) angle to ∇J, MC / exact (°) | (ii) tr Cov / (i) tr Cov |",
        "|---|---|---|---|---|---|---|",
    ]
    sweep = {}
    for gamma in GAMMAS:
        t = truths[gamma]
        e1 = exact.summarize(total[variant_key("i", gamma)], t.grad_h)
        e2 = exact.summarize(total[variant_key("ii", gamma)], t.grad_h)
        predicted = rel(t.no_weights, t.grad_h)
        angle_pred = np.degrees(np.arccos(np.clip(
            np.vdot(t.no_weights, t.grad_h) / np.linalg.norm(t.no_weights)
            / np.linalg.norm(t.grad_h), -1, 1)))
        angle_mc = np.degrees(np.arccos(np.clip(e2.cosine, -1, 1)))
        sweep[gamma] = (e1, e2, predicted, angle_pred, angle_mc)
        lo, hi = e2.ci
        lines.append(
            f"| {gamma} | {e1.rel_error:.4f} | {e1.noise:.4f} | {e2.rel_error:.4f} "
            f"[{lo:.4f}, {hi:.4f}] | {predicted:.4f} | {angle_mc:.2f} / {angle_pred:.2f} "
            f"| {e2.variance / e1.variance:.2f} |"
        )
    return lines, sweep


def error_curve(prefix0: dict, running: list[dict], total: dict, truth: Truth):
    """Relative error of the running mean at N = 1, 2, 4, ..., all episodes."""
    g = truth.grad_h.reshape(-1)
    out = {}
    for name in CURVE:
        ns = [int(n) + 1 for n in 2 ** np.arange(int(np.log2(CHUNK)) + 1) - 1]
        errs = [np.linalg.norm(p / k - g) / np.linalg.norm(g)
                for p, k in zip(prefix0[name], ns, strict=True)]
        c = 2
        while c <= len(running):
            ns.append(c * CHUNK)
            errs.append(np.linalg.norm(running[c - 1][name] / (c * CHUNK) - g) / np.linalg.norm(g))
            c *= 2
        est = exact.summarize(total[variant_key(*curve_variant(name))], truth.grad_h)
        out[name] = (np.array(ns), np.array(errs), est)
    return out


def plot_error_vs_n(curve: dict, truth: Truth, path: Path):
    fig, ax = plt.subplots(figsize=(6.4, 4.6))
    norm = np.linalg.norm(truth.grad_h)
    colors = {"i": "C0", "ii": "C3", "i+value": "C2"}
    for name, (ns, errs, est) in curve.items():
        ax.loglog(ns, errs, "o-", ms=3, color=colors[name], label=LABELS[name])
        if name != "ii":
            ax.loglog(ns, np.sqrt(est.variance / ns) / norm, "--", color=colors[name], lw=1,
                      label=f"√(tr Cov / N)/‖∇J‖ for {name} (slope −1/2)")
    bias = rel(truth.no_weights, truth.grad_h)
    ax.axhline(bias, color="C3", ls=":", lw=1, label=f"exact bias of (ii) = {bias:.3f}")
    ax.set_xlabel("episodes N")
    ax.set_ylabel("‖ḡ_N − ∇J‖ / ‖∇J‖")
    ax.set_title(f"REINFORCE error vs N (γ = {GAMMA}, tabular MDP S={S}, A={A}, H={H})")
    ax.legend(fontsize=7)
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_bias_vs_gamma(sweep: dict, path: Path):
    gammas = np.array(GAMMAS)
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(10, 4.2))
    e1 = [sweep[g][0] for g in GAMMAS]
    e2 = [sweep[g][1] for g in GAMMAS]
    err = lambda es: np.array([[e.rel_error - e.ci[0] for e in es],
                               [e.ci[1] - e.rel_error for e in es]])
    ax.errorbar(gammas, [e.rel_error for e in e2], yerr=err(e2), fmt="o", color="C3", capsize=3,
                label="(ii) no γ^t: Monte Carlo, 99% CI")
    ax.plot(gammas, [sweep[g][2] for g in GAMMAS], "-", color="C3", lw=1,
            label="(ii) exact bias (κ = 1 visitation)")
    ax.errorbar(gammas, [e.rel_error for e in e1], yerr=err(e1), fmt="s", color="C0", capsize=3,
                label="(i) γ^t weights: Monte Carlo, 99% CI")
    ax.plot(gammas, [e.noise for e in e1], ":", color="C0", lw=1, label="(i) 99% noise radius")
    ax.set_yscale("symlog", linthresh=1e-3)
    ax.set_xlabel("γ")
    ax.set_ylabel("‖ḡ − ∇J_H‖ / ‖∇J_H‖")
    ax.set_title("bias of REINFORCE without γ^t")
    ax.legend(fontsize=7)
    ax.grid(True, alpha=0.3)
    ax2.plot(gammas, [sweep[g][3] for g in GAMMAS], "-", color="C3", lw=1, label="exact")
    ax2.plot(gammas, [sweep[g][4] for g in GAMMAS], "o", color="C3", label="Monte Carlo")
    ax2.set_xlabel("γ")
    ax2.set_ylabel("angle between E[ĝ_ii] and ∇J (degrees)")
    ax2.set_title("direction error of (ii)")
    ax2.legend(fontsize=8)
    ax2.grid(True, alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_variance(ests: dict, path: Path):
    fig, ax = plt.subplots(figsize=(6.4, 4))
    names = ["none", "mean", "value"]
    x = np.arange(3)
    for j, weights in enumerate(("i", "ii")):
        vals = [ests[weights if b == "none" else f"{weights}+{b}"].variance for b in names]
        bars = ax.bar(x + (j - 0.5) * 0.38, vals, 0.38, label=LABELS[weights].split(",")[0])
        ax.bar_label(bars, fmt="%.2f", fontsize=8)
    ax.set_xticks(x, ["no baseline", "batch-mean baseline", "baseline V_t(s_t)"])
    ax.set_ylabel("tr Cov(ĝ) per episode")
    ax.set_title(f"estimator variance by baseline (γ = {GAMMA})")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def git_commit() -> str:
    """HEAD, and which of the files this experiment runs differ from it."""
    run = lambda *a: subprocess.run(["git", *a], capture_output=True, text=True, cwd=OUT).stdout
    used = [f"../../pgjax/{m}.py" for m in ("exact", "envs", "losses", "policies", "returns",
                                           "rollout")] + ["run.py"]
    dirty = run("diff", "--name-only", "HEAD", "--", *used).split()
    commit = run("rev-parse", "--short", "HEAD").strip()
    return commit + (f" (+ uncommitted changes in {', '.join(dirty)})" if dirty else "")


class Report:
    """Printed lines (all of them go to results.md) and the tables with their headings."""

    def __init__(self):
        self.log: list[str] = []
        self.tables: list[tuple[str, list[str]]] = []
        self.summary: list[str] = []

    def say(self, line: str = ""):
        print(line, flush=True)
        self.log.append(line)

    def table(self, title: str, lines: list[str]):
        self.say(f"\n[{title}]")
        for line in lines:
            self.say(line)
        self.tables.append((title, lines))


def report_exact(rep: Report, checks: list[dict], truths: dict, ids: dict):
    rep.say("\n[exact, float64] relative differences")
    rep.say("γ      PG thm (∞)  FD (∞)     PG thm (H)  FD (H)     ‖∇J_H−∇J_∞‖/‖∇J_∞‖   "
            "J_H      J_∞")
    for c in checks:
        t = truths[c["gamma"]]
        rep.say(f"{c['gamma']:<6} {c['pg_inf']:.1e}     {c['fd_inf']:.1e}    {c['pg_h']:.1e}     "
                f"{c['fd_h']:.1e}    {c['h_vs_inf']:.2e}             {t.j_h:.4f}  {t.j_inf:.4f}")
    rep.say(f"\n[identities] max|∇π − π∇log π| = {ids['product_rule']:.1e}, "
            f"max|Σ_a π ∇log π| = {ids['zero_mean_score']:.1e}; sampled mean of ∇log π over "
            f"{ids['samples']:,} actions per state: max|mean| = "
            f"{ids['sampled_max_abs_mean']:.1e}, max|z| = {ids['sampled_max_abs_z']:.2f} "
            f"over {S * A} coordinates")
    worst = lambda k: max(c[k] for c in checks)
    rep.summary.append(
        f"Exact gradient (jax.grad through the solve / the DP) = policy-gradient-theorem form to "
        f"{max(worst('pg_inf'), worst('pg_h')):.0e} and = central finite differences to "
        f"{max(worst('fd_inf'), worst('fd_h')):.0e} (relative, float64, all γ in {GAMMAS}). "
        f"Identities: max|∇π − π ∇log π| = {ids['product_rule']:.0e}, "
        f"max|E_a ∇log π| = {ids['zero_mean_score']:.0e} (exact sums); sampled, "
        f"max|z| = {ids['sampled_max_abs_z']:.2f} over {S * A} coordinates."
    )


def report_monte_carlo(rep: Report, total: dict, truths: dict, counts: dict, n: int, sec: float):
    rep.say(f"\n[Monte Carlo] {n:,} episodes, {counts['steps']:,.0f} steps (mean length "
            f"{counts['steps'] / n:.2f}), {counts['truncated']:,.0f} cut at H = {H} "
            f"({counts['truncated'] / n:.2%}); {sec:.1f} s")
    table, ests = main_table(total, truths)
    rep.table(f"estimators at γ = {GAMMA}, N = {n:,}", table)
    gtable, sweep = gamma_table(total, truths)
    rep.table("bias of (ii) vs γ", gtable)
    i, ii, b = ests["i"], ests["ii"], {k: ests[k] for k in ("i+mean", "i+value")}
    t = truths[GAMMA]
    inf1 = exact.summarize(total[variant_key("i", 1.0)], truths[1.0].grad_inf)
    gap1 = rel(truths[1.0].grad_h, truths[1.0].grad_inf)
    rep.summary += [
        f"(i) γ^t weights, N = {n:,}: relative error {i.rel_error:.4f}, 99% CI of the relative "
        f"bias [{i.ci[0]:.4f}, {i.ci[1]:.4f}], χ² p = {fmt_p(i.p_value)}, cosine "
        f"{i.cosine:.5f}; with baselines (batch mean, V_t(s_t)): relative errors "
        f"{b['i+mean'].rel_error:.4f}, {b['i+value'].rel_error:.4f}, χ² p = "
        f"{fmt_p(b['i+mean'].p_value)}, {fmt_p(b['i+value'].p_value)}.",
        f"(ii) no γ^t, γ = {GAMMA}: relative error {ii.rel_error:.3f} [{ii.ci[0]:.3f}, "
        f"{ii.ci[1]:.3f}] against the exact prediction {rel(t.no_weights, t.grad_h):.3f} "
        f"(undiscounted visitation), angle to ∇J {sweep[GAMMA][3]:.2f}° (exact): here "
        f"mostly a rescaling; {sweep[0.5][2]:.2f} at γ = 0.5, "
        f"{sweep[0.99][2]:.3f} at γ = 0.99, 0 at γ = 1 where (i) and (ii) coincide.",
        f"Variance per episode (tr Cov, (i) at γ = {GAMMA}): none {i.variance:.2f}, batch mean "
        f"{b['i+mean'].variance:.2f} (×{i.variance / b['i+mean'].variance:.2f} less), "
        f"V_t(s_t) {b['i+value'].variance:.2f} (×{i.variance / b['i+value'].variance:.2f}); "
        f"(ii) has {ii.variance / i.variance:.2f}× the variance of (i).",
        "Deliberate bugs: " + "; ".join(
            f"{k[5:]}: error {ests[k].rel_error:.3f} vs 99% noise {ests[k].noise:.3f}, "
            f"p = {fmt_p(ests[k].p_value)}, {'NOT ' if ests[k].within_ci else ''}detected"
            for k in ests if k.startswith("bug")
        ) + ".",
        f"Time limit: {counts['truncated'] / n:.2%} of episodes are cut at H = {H}; against the "
        f"untruncated ∇J_∞ at γ = 1 (‖∇J_H − ∇J_∞‖/‖∇J_∞‖ = {gap1:.4f}) the same episodes "
        f"give error {inf1.rel_error:.4f}, "
        f"CI [{inf1.ci[0]:.4f}, {inf1.ci[1]:.4f}], p = {fmt_p(inf1.p_value)}.",
    ]
    return ests, sweep


def report_windows(rep: Report, windows: list[dict], sec: float):
    rep.say(f"\n[windows] γ^t-weighted estimator, per-episode mean over the counted episodes; "
            f"{WINDOW_CHUNKS} × {CHUNK} streams per window; {sec:.1f} s")
    lines = [TABLE_HEAD.replace("| estimator |", "| window T, episodes counted |")]
    for row in windows:
        label = f"T = {row['window']}: {row['mask']} ({row['per_stream']:.1f}/stream)"
        lines.append(fmt_est(label, GAMMA, "∇J_H", row["est"]))
    rep.table("windows holding several episodes", lines)
    verdicts = lambda rows: ", ".join(
        f"T = {r['window']}: error {r['est'].rel_error:.4f}, CI [{r['est'].ci[0]:.4f}, "
        f"{r['est'].ci[1]:.4f}], p = {fmt_p(r['est'].p_value)}" for r in rows
    )
    rep.summary.append(
        "Several episodes per fixed window (γ^t weights, per-episode mean): counting the episodes "
        "that end inside the window (pgjax's complete_episode_mask) gives "
        + verdicts([r for r in windows if r["mask"].startswith("pgjax")])
        + "; counting the episodes that start inside it (rollout H steps longer) gives "
        + verdicts([r for r in windows if r["mask"].startswith("episodes started")]) + "."
    )


def fmt_p(p: float) -> str:
    return "<1e-12" if p < 1e-12 else f"{p:.2g}"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chunks", type=int, default=64, help=f"chunks of {CHUNK} episodes")
    parser.add_argument("--replicates", type=int, default=3, help="extra seeds for (i)")
    args = parser.parse_args(argv)
    if args.chunks < 1:
        parser.error(f"--chunks must be positive, got {args.chunks}")
    if args.replicates < 0:
        parser.error(f"--replicates must be 0 or more, got {args.replicates}")
    start, rep, n = time.perf_counter(), Report(), args.chunks * CHUNK

    setup = make_setup()
    rep.say(f"jax {jax.__version__}, backend {jax.default_backend()}, commit {git_commit()}")
    rep.say(f"MDP: S={S} (state {S - 1} terminal), A={A}, H={H}, seed {MDP_SEED}; θ ~ N(0, 1) "
            f"seed {THETA_SEED}; N = {args.chunks} × {CHUNK} = {n:,} episodes")
    truths, checks = exact_truths(setup)
    report_exact(rep, checks, truths, identity_checks(setup))

    t0 = time.perf_counter()
    total, prefix0, running, counts = run_monte_carlo(setup, args.chunks)
    ests, sweep = report_monte_carlo(rep, total, truths, counts, n, time.perf_counter() - t0)

    if args.replicates:
        t0 = time.perf_counter()
        first = {k: total[variant_key(*curve_variant(k))] for k in ("i", "i+mean", "i+value")}
        lines, pooled = run_replicates(setup, args.chunks, args.replicates, truths[GAMMA], first)
        title = (f"replicates: (i) on seeds {MC_SEED}..{MC_SEED + args.replicates}, {n:,} "
                 f"episodes each ({time.perf_counter() - t0:.0f} s)")
        rep.table(title, lines)
        rep.summary.insert(2, (
            f"Replicates of (i) on {args.replicates} more seeds ({n:,} episodes each), pooled "
            f"with the run above ({pooled['i'].n:,} episodes): " + "; ".join(
                f"{LABELS[k].split(', ')[1]}: {fmt_ratio(e)}" for k, e in pooled.items()
            ) + " (r99: the 99% noise radius)."
        ))

    t0 = time.perf_counter()
    windows = run_windows(setup, truths[GAMMA])
    report_windows(rep, windows, time.perf_counter() - t0)

    plot_error_vs_n(error_curve(prefix0, running, total, truths[GAMMA]), truths[GAMMA],
                    OUT / "error_vs_n.png")
    plot_bias_vs_gamma(sweep, OUT / "bias_vs_gamma.png")
    plot_variance(ests, OUT / "variance.png")
    runtime = time.perf_counter() - start
    rep.say(f"\ntotal runtime {runtime:.0f} s")
    write_results(rep, runtime)


def write_results(rep: Report, runtime: float):
    command = " ".join(["python experiments/derivation/run.py", *sys.argv[1:]])
    tables = "\n\n".join(f"### {title}\n\n" + "\n".join(lines) for title, lines in rep.tables)
    text = RESULTS_TEMPLATE.format(
        command=command, runtime=runtime, output="\n".join(rep.log), tables=tables,
        summary="\n".join(f"- {line}" for line in rep.summary),
        python=sys.version.split()[0], jax=jax.__version__, commit=git_commit(),
    )
    (OUT / "results.md").write_text(text)


RESULTS_TEMPLATE = """# Policy-gradient derivation against exact gradients: results

Command: `{command}` (Python {python}, jax {jax}, CPU, {runtime:.0f} s; code at commit {commit}).

What is compared: the mean over N episodes of pgjax's REINFORCE estimate (−∇ reinforce_loss ×
episode length, G_t from discounted_returns on pgjax's rollout) against the exact gradient of
J_H, the discounted objective over episodes cut at the time limit H (backward DP, float64), which
is exactly what time-limited episodes measure. The 99% CI of the relative bias is
rel. error ∓ r99, r99 the 99% quantile of ‖ḡ − E ĝ‖/‖∇J‖ under N(0, Cov(ĝ)/N) with Cov from the
per-episode spread; "bias 0 in CI" means rel. error ≤ r99. The χ² p-value tests E ĝ = ∇J with
(ḡ − ∇J)ᵀ (Cov/N)⁺ (ḡ − ∇J) ∼ χ²_rank (rank = 10: 5 live states × (3 − 1) softmax directions).
Both are exceeded by an unbiased estimator in about 1% of runs.

## Summary

{summary}

![error vs N](error_vs_n.png)
![bias vs gamma](bias_vs_gamma.png)
![variance](variance.png)

## Tables

{tables}

## Printed output

```
{output}
```
"""


if __name__ == "__main__":
    main()
