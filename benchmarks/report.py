"""Render benchmarks.run results: the markdown tables and the log-log scaling plot."""

from pathlib import Path

import numpy as np


def fmt(v, digits: int = 3) -> str:
    if v is None or (isinstance(v, float) and not np.isfinite(v)):
        return "—"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, float):
        if abs(v) >= 100:
            return f"{v:,.0f}"
        return f"{v:.{digits}g}" if abs(v) < 1 else f"{v:.2f}"
    return str(v)


def mb(v) -> str:
    return "—" if v is None else f"{v / 2**20:,.0f}"


def markdown(result: dict) -> str:
    p = result["provenance"]
    lines = [
        f"# pgjax benchmarks ({result['mode']})",
        "",
        f"{result['date']} · device: {', '.join(p['devices'])} ({p['backend']}) · "
        f"git {p['git_commit']} · python {p['python']}",
        "",
        "versions: " + ", ".join(f"{k} {v}" for k, v in p["versions"].items() if v),
        "",
        f"command: `{result['command']}`",
        "",
    ]
    train = result.get("train", [])
    ceiling = result.get("ceiling", [])
    if train or ceiling:
        lines += [
            "## Throughput (env steps/s, steady state; compile timed apart)",
            "",
            "| env | seeds × envs | total envs | T | env-only steps/s | pgjax steps/s | "
            "pgjax / env-only | s / update | compile s | program MiB | peak MiB |",
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
        ]
        trained = {(r["env"], r["seeds"]): r for r in train}
        for r in ceiling:
            t = trained.pop((r["env"], r["seeds"]), {})
            lines.append(throughput_line(r, t))
        for t in trained.values():
            lines.append(throughput_line({}, t))
        peak_kind = next((r.get("peak_kind") for r in train + ceiling if "peak_kind" in r), "")
        lines += ["", f"Peak: {peak_kind} of the process so far (sizes run in increasing order)."
                  " Program: the compiled program's arguments + outputs + temporaries.", ""]
        errors = [r for r in train + ceiling if "error" in r]
        for r in errors:
            lines.append(f"- failed: {r.get('env')} {r.get('seeds')} seeds: {r['error']}")
        if errors:
            lines.append("")
    if prof := result.get("profile"):
        step = prof["train_step_s"]
        lines += [
            f"## Update profile (default config, {prof['seeds']} seeds × {prof['num_envs']} "
            f"envs × {prof['num_steps']} steps, {prof['hidden']} MLP, {prof['baseline']} "
            "baseline; round-robin repeats)",
            "",
            "| piece | median s | min s | share of train_step (median) |",
            "| --- | --- | --- | --- |",
        ]
        for k, name in (("env_only_s", "env-only stepping (random actions)"),
                        ("rollout_s", "rollout (policy + env, batch out)"),
                        ("loss_grad_s", "returns + loss + grad on the batch"),
                        ("optimizer_update_s", "optimizer update"),
                        ("parts_sum_s", "sum of the three pieces"),
                        ("train_step_s", "full jitted train_step")):
            low = prof[k.removesuffix("_s") + "_min_s"]
            lines.append(f"| {name} | {prof[k]:.4f} | {low:.4f} | {prof[k] / step:.0%} |")
        lines += [
            "",
            f"Diagnostic: returns + loss + grad with `lax.map` over seeds in chunks of "
            f"{prof['loss_grad_chunk_seeds']} (instead of one vmapped batch): "
            f"median {prof['loss_grad_chunked_s']:.4f} s, "
            f"min {prof['loss_grad_chunked_min_s']:.4f} s "
            f"({prof['loss_grad_s'] / prof['loss_grad_chunked_s']:.2f}× the vmapped speed by "
            f"medians, {prof['loss_grad_min_s'] / prof['loss_grad_chunked_min_s']:.2f}× by mins).",
            "",
        ]
    if comp := result.get("compile"):
        lines += ["## Compile (default config, whole run)", ""]
        if "error" in comp:
            lines.append(f"failed: {comp['error']}")
        else:
            lines.append(f"{comp['seeds']} seeds, {comp['num_updates']} updates: lowering "
                         f"{comp['lower_s']:.2f} s + compile {comp['compile_s']:.2f} s = "
                         f"{comp['total_s']:.2f} s")
        lines.append("")
    if sol := result.get("solve"):
        lines += [f"## Time to solve CartPole-v1 (default config, {sol.get('seeds')} seeds)", ""]
        if "error" in sol:
            lines.append(f"failed: {sol['error']}")
        else:
            lines += [
                f"Criterion: {sol['criterion']}; {sol['method']} ({sol['chunk_updates']} "
                "updates per chunk).",
                "",
                "| solved | at update | env steps / seed | wall s (no compile) | "
                "wall s (with compile) | compile s | steps/s | final IQM |",
                "| --- | --- | --- | --- | --- | --- | --- | --- |",
                f"| {fmt(sol['solved'])} | {fmt(sol['solve_update'])} | "
                f"{fmt(sol['solve_env_steps_per_seed'])} | {fmt(sol['solve_wall_s'])} | "
                f"{fmt(sol['solve_wall_s_with_compile'])} | {fmt(sol['compile_s'])} | "
                f"{fmt(sol['env_steps_per_second'])} | {fmt(sol['final_iqm'])} |",
            ]
            if "note" in sol:
                lines.append(f"\n{sol['note']}")
        lines.append("")
    if prec := result.get("precision"):
        lines += [
            "## Matmul precision (default config, whole run)",
            "",
            "| precision | seeds | steps/s | run s | compile s | final IQM | final mean | "
            "seeds ≥ 475 | first update IQM ≥ 475 |",
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
        ]
        for r in prec:
            if "error" in r:
                lines.append(f"| {r['precision']} | failed: {r['error']} |||||||||")
                continue
            lines.append(
                f"| {r['precision']} | {r['seeds']} | {fmt(r['env_steps_per_second'])} | "
                f"{fmt(r['run_s'])} | {fmt(r['compile_s'])} | {fmt(r['final_iqm'])} | "
                f"{fmt(r['final_mean'])} | {r['seeds_at_or_above_475']} | "
                f"{fmt(r['first_update_iqm_at_475'])} |")
        lines.append("")
    if tr := result.get("torch"):
        lines += ["## PyTorch + gymnasium REINFORCE (1 env, update per episode, 32-32 tanh)", ""]
        if "skipped" in tr or "error" in tr:
            lines.append(f"not run: {tr.get('skipped') or tr.get('error')}")
        else:
            lines += [
                "| steps/s | wall s | env steps | episodes | solved | solve wall s | "
                "best running return | threads |",
                "| --- | --- | --- | --- | --- | --- | --- | --- |",
                f"| {fmt(tr['env_steps_per_second'])} | {fmt(tr['wall_s'])} | "
                f"{fmt(tr['env_steps'])} | {fmt(tr['episodes'])} | {fmt(tr['solved'])} | "
                f"{fmt(tr['solve_wall_s'])} | {fmt(tr['best_running_return'])} | "
                f"{tr['threads']} |",
                "",
                f"Adam lr {tr['lr']:g}, γ {tr['gamma']:g}, seed {tr['seed']}. Solved: "
                f"{tr['solve_criterion']}; budget {tr['budget_s']:g} s.",
            ]
        lines.append("")
    for name, err in result.get("part_errors", {}).items():
        lines += [f"Part {name} failed: {err}", ""]
    if result.get("skipped_for_budget"):
        lines += ["Skipped when the --budget was spent: "
                  + "; ".join(result["skipped_for_budget"]), ""]
    if cmp_ := result.get("comparisons"):
        lines += ["## Ratios", ""]
        lines += [f"- {k}: {fmt(v)}" for k, v in cmp_.items()]
        lines.append("")
    return "\n".join(lines)


def throughput_line(c: dict, t: dict) -> str:
    r = c or t
    return (
        f"| {r['env']} | {r['seeds']} × {r.get('num_envs', '—')} | {fmt(r.get('total_envs'))} | "
        f"{r.get('num_steps', '—')} | {fmt(c.get('env_steps_per_second'))} | "
        f"{fmt(t.get('env_steps_per_second')) if 'error' not in t else 'failed'} | "
        f"{fmt(t.get('train_over_env_only'))} | {fmt(t.get('seconds_per_update'))} | "
        f"{fmt(t.get('compile_s'))} | {mb(t.get('program_bytes'))} | "
        f"{mb(t.get('process_peak_bytes') or c.get('process_peak_bytes'))} |"
    )


def plot_scaling(path: Path, result: dict) -> bool:
    """Log-log throughput vs total parallel envs: pgjax train vs env-only, per env."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series = []
    rows_by_kind = (("env-only", result.get("ceiling", []), "--", "s"),
                    ("pgjax train", result.get("train", []), "-", "o"))
    envs = list(dict.fromkeys(r["env"] for _, rows, _, _ in rows_by_kind for r in rows))
    for kind, rows, style, marker in rows_by_kind:
        for env in envs:
            pts = sorted((r["total_envs"], r["env_steps_per_second"]) for r in rows
                         if r["env"] == env and "env_steps_per_second" in r)
            if pts:
                series.append((f"{kind}, {env}", pts, style, marker, f"C{envs.index(env)}"))
    if not series:
        return False
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    for label, pts, style, marker, color in series:
        x, y = zip(*pts, strict=True)
        ax.plot(x, y, style, marker=marker, color=color, label=label)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("total parallel envs (seeds × envs per seed)")
    ax.set_ylabel("env steps / s")
    ax.set_title(f"pgjax throughput vs env-only ceiling ({result['provenance']['backend']})")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True
