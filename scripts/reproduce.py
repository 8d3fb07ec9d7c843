"""Rerun the results table (README, docs/results/): every variant of every
experiments/configs/*.toml, 16 seeds each; write experiments/results.md and experiments/figures/.

    python scripts/reproduce.py [--only cartpole acrobot] [--seeds 16] [--runs runs/experiments]
                                [--configs experiments/configs] [--table experiments/results.md]
                                [--budget ENV_STEPS] [--variants NAME ...] [--eval EPISODES]

A config's variants are the defaults below (no baseline; the learned value baseline with one
global gradient clip; the value baseline with the per-network clip, the default), unless it sets
`default_variants = false`, followed by its own `[[variant]]` tables (a `name` and the fields
they change). A finished run (summary.json present, same config) is reused and an unfinished one
continues from its newest checkpoint (`experiment.ensure_run`), so an interrupted call can
simply be repeated. Figures go to figures/ beside the table, one per config, named after it
and what the table's name adds to "results" (`results-ent.md`: `CONFIG-ent.png`). `--budget`
sets every variant's total_timesteps (a cheaper slice of a study; the table's header says so;
its runs go to folders of their own, `CONFIG-VARIANT-budget-N`). `--variants` runs only the
variants of those names; a name written CONFIG:NAME (`breakout:CNN + MLP 64-64, entropy
0.1`) selects it in that config alone. `--eval EPISODES` also evaluates every run's final
policy, greedy and sampled, over EPISODES episodes per seed (`pgjax eval`; kept in the run's
eval.json and reused) and adds their IQMs.
"""

import argparse
import json
import os
import re
import signal
import sys
import time
from pathlib import Path

from pgjax import plots, runs, stats
from pgjax.checkpoint import CheckpointError
from pgjax.config import Config, from_dict, from_file, to_dict
from pgjax.experiment import Stopped, ensure_run, evaluate_run, format_summary

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = ROOT / "experiments" / "configs"
RUNS = Path("runs/experiments")
DEFAULT_VARIANTS = (
    {"name": "no baseline", "baseline": "none"},
    {"name": "value, global clip", "baseline": "value", "clip": "global"},
    {"name": "value, per-network clip", "baseline": "value", "clip": "per-network"},
)


def load(path: Path, budget: int | None = None) -> tuple[list[tuple[str, Config]], dict]:
    """([(variant name, config)], reference) of one experiments/configs file.

    Raises:
      ValueError: one line naming the file and what is wrong in it.
    """
    base, rest = from_file(path, name=path.name)
    check_experiment(rest, path.name)
    variants = list(DEFAULT_VARIANTS) if rest.get("default_variants", True) else []
    variants += rest.get("variant", [])
    if not variants:
        raise ValueError(f"{path.name}: no variants (default_variants = false and no "
                         f"[[variant]])")
    out = []
    for variant in variants:
        fields = dict(variant)
        name = fields.pop("name")
        if name in [n for n, _ in out]:
            raise ValueError(f"{path.name}: two variants are named {name!r}")
        if budget is not None:
            fields["total_timesteps"] = budget
        out.append((name, from_dict({**to_dict(base), **fields}, where=f"{path.name}: ")
                    .validate()))
    return out, rest.get("reference", {})


def check_experiment(rest: dict, where: str) -> None:
    """ValueError naming the first of an experiment file's own keys of the wrong type."""
    variants, reference = rest.get("variant", []), rest.get("reference", {})
    if not isinstance(rest.get("default_variants", True), bool):
        raise ValueError(f"{where}: default_variants must be true or false, got "
                         f"{rest['default_variants']!r}")
    if not (isinstance(variants, list) and all(isinstance(v, dict) for v in variants)):
        raise ValueError(f"{where}: variant must be [[variant]] tables, got {variants!r}")
    for v in variants:
        if not (isinstance(v.get("name"), str) and v["name"]):
            raise ValueError(f"{where}: a [[variant]] without a name (a string), got "
                             f"{v.get('name')!r}")
    if not isinstance(reference, dict):
        raise ValueError(f"{where}: reference must be a [reference] table, got {reference!r}")
    threshold = reference.get("threshold")
    if threshold is not None and (isinstance(threshold, bool)
                                  or not isinstance(threshold, int | float)):
        raise ValueError(f"{where}: reference.threshold must be a number, got {threshold!r}")


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def selected(config_name: str, variant: str, selectors: list[str]) -> bool:
    """Whether --variants names `variant`: by its name alone or as CONFIG:NAME."""
    return variant in selectors or f"{config_name}:{variant}" in selectors


class Parser(argparse.ArgumentParser):
    """argparse with its errors as one line (no usage text), exit status 2."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message}\n")


def main():
    parser = Parser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", help="config names (file stems) to run")
    parser.add_argument("--seeds", type=int, default=16)
    parser.add_argument("--runs", type=Path, default=RUNS)
    parser.add_argument("--configs", type=Path, default=CONFIGS)
    parser.add_argument("--table", type=Path, default=ROOT / "experiments" / "results.md")
    parser.add_argument("--budget", type=int, help="env steps per seed of every variant")
    parser.add_argument("--variants", nargs="*",
                        help="variant names to run (CONFIG:NAME: in that config only)")
    parser.add_argument("--eval", type=int, metavar="EPISODES",
                        help="also evaluate each final policy over EPISODES episodes per seed")
    args = parser.parse_args()
    for name in ("seeds", "budget", "eval"):
        if (value := getattr(args, name)) is not None and value <= 0:
            parser.error(f"--{name} must be positive, got {value}")
    available = sorted(p.stem for p in args.configs.glob("*.toml"))
    if not available:
        parser.error(f"no configs (*.toml) in {args.configs}")
    if unknown := sorted(set(args.only or ()) - set(available)):
        parser.error(f"no config named {', '.join(unknown)} in {args.configs} "
                     f"(there: {', '.join(available) or 'none'})")
    names = args.only or available
    partial = bool(args.only or args.variants)
    existing = next(p for p in (args.table.absolute(), *args.table.absolute().parents)
                    if p.exists())
    if not os.access(existing if existing.is_dir() else existing.parent, os.W_OK | os.X_OK):
        parser.error(f"--table {args.table}: cannot write in {existing} (permission denied)")
    try:
        loaded = {name: load(args.configs / f"{name}.toml", args.budget) for name in names}
    except ValueError as e:
        sys.exit(f"reproduce.py: {e}")
    if args.variants:
        pairs = [(name, v) for name in names for v, _ in loaded[name][0]]
        known = {v for _, v in pairs} | {f"{name}:{v}" for name, v in pairs}
        if unknown := sorted(set(args.variants) - known):
            parser.error(f"no variant named {', '.join(unknown)} in {args.configs}")
    rows = []
    for name in names:
        variants, reference = loaded[name]
        if args.variants:
            variants = [(v, c) for v, c in variants if selected(name, v, args.variants)]
            if not variants:
                continue
        dirs = []
        for variant, config in variants:
            # A --budget slice has folders of its own: it never replaces the full runs.
            run_dir = args.runs / (f"{name}-{slug(variant)}"
                                   + ("" if args.budget is None else f"-budget-{args.budget}"))
            dirs.append(run_dir)
            t = time.perf_counter()
            try:
                done, summary = ensure_run(config, run_dir, seeds=args.seeds)
                steps = runs.steps_to(run_dir, reference.get("threshold"))
                evaluated = None if args.eval is None else evaluation(run_dir, config, args.eval)
            except (ValueError, MemoryError, CheckpointError) as e:
                sys.exit(f"reproduce.py: [{name}: {variant}] {e}")
            if done != "reused":
                print(f"[{name}: {variant}] {done}, {time.perf_counter() - t:.0f} s", flush=True)
            print(format_summary(summary, run_dir), flush=True)
            rows.append((config, variant, summary, reference, steps, evaluated))
        figure = args.table.parent / "figures" / figure_name(name, args.table, partial)
        figure.parent.mkdir(parents=True, exist_ok=True)
        plots.plot_runs(dirs, figure)
    # A partial rerun must not replace the committed table and figures with a few rows.
    table = args.table.with_stem(args.table.stem + "-partial") if partial else args.table
    write_table(rows, table, args)


def figure_name(config: str, table: Path, partial: bool) -> str:
    """The figure's file stem: the config's name, then what the table's name adds to
    "results" (so results-spaceinvaders-ent0.03.md does not overwrite the figure of
    results-spaceinvaders.md), then "-partial" for a partial rerun."""
    words = table.stem.removeprefix("results").split("-")
    words = [w for w in words if w not in ("", config, "partial")]
    return "-".join([config, *words] + ["partial"] * partial)


def evaluation(run_dir: Path, config: Config, episodes: int) -> dict | None:
    """The run's eval.json for its final checkpoint and `episodes`, evaluated when missing
    (or unreadable, or of another checkpoint or episode count).

    None (and a line saying so) when it is missing and the checkpoint is gone: a reused run
    whose checkpoints were deleted before it was evaluated.
    """
    path = run_dir / "eval.json"
    final = config.num_updates
    if path.exists():
        try:
            result = json.loads(path.read_text())
        except (OSError, ValueError) as e:
            print(f"{path}: unreadable ({e}), evaluating again", flush=True)
            result = {}
        if isinstance(result, dict) and (
                result.get("checkpoint_update"), result.get("episodes"), result.get("eval_seed"),
                "iqm" in result.get("greedy", {})) == (final, episodes, 0, True):
            return result
    try:
        result = evaluate_run(run_dir, episodes=episodes, step=final)
    except CheckpointError as e:
        print(f"{run_dir}: not evaluated: {e}", flush=True)
        return None
    runs.write_json(path, result)
    return result


def command_options(args) -> str:
    """The options of a non-default table (--only, --runs, --configs, ...) as they were given."""
    out = ""
    if args.only:
        out += " --only " + " ".join(args.only)
    if args.runs != RUNS:
        out += f" --runs {args.runs}"
    if args.configs != CONFIGS:
        out += f" --configs {args.configs}"
    if args.table != ROOT / "experiments" / "results.md":
        out += f" --table {args.table}"
    if args.budget is not None:
        out += f" --budget {args.budget}"
    if args.variants:
        out += " --variants " + " ".join(f'"{v}"' for v in args.variants)
    if args.eval is not None:
        out += f" --eval {args.eval}"
    return out


def write_table(rows, path: Path, args) -> None:
    prov = runs.provenance()
    lines = [
        "# Results",
        "",
        f"`python scripts/reproduce.py --seeds {args.seeds}{command_options(args)}`; "
        f"pgjax {prov['versions']['pgjax']}, "
        f"jax {prov['versions']['jax']}, commit {prov['git_commit']}, {prov['platform']}, "
        f"devices {prov['devices']}.",
        "",
        "| env | budget (steps/seed) | variant | final return IQM [95% CI] | mean | "
        "seeds at threshold | steps to threshold | wall s (compile s) | reference |"
        + (" greedy eval IQM [95% CI] | sampled eval IQM [95% CI] |" if args.eval else ""),
        "| --- | ---: | --- | --- | ---: | ---: | ---: | ---: | --- |"
        + (" --- | --- |" if args.eval else ""),
    ]
    if args.eval:
        lines[2] += (f" Eval: each seed's final policy over {args.eval} episodes (eval key "
                     "stream), greedy (the mode) or sampled; IQM over seeds.")
    for config, variant, s, ref, steps, evaluated in rows:
        f = s["final_return"]
        threshold = ref.get("threshold")
        if threshold is None:
            reached = at = "—"
        else:
            reached = f"{steps:,}" if steps else "not reached"
            at = f"{sum(r >= threshold for r in f['per_seed'])} of {len(f['per_seed'])}"
        # A resumed run's wall time counts the updates after its checkpoint only.
        resumed = (f", from update {s['resumed_from_update']}"
                   if s.get("resumed_from_update") else "")
        ref_text = ref.get("source", "")
        if threshold is not None:
            ref_text = f"{threshold:g} ({ref_text})"
        lines.append(
            f"| {config.env} | {s['env_steps_per_seed']:,} | {variant} | "
            f"{stats.format_score(f)} | {f['mean']:.2f} | "
            f"{at} | {reached} | {s['wall_seconds']:.0f} ({s['compile_seconds']:.0f}){resumed} | "
            f"{ref_text} |"
            + ("" if not args.eval else " — | — |" if evaluated is None else
               f" {stats.format_score(evaluated['greedy'])} | "
               f"{stats.format_score(evaluated['sampled'])} |")
        )
    path.write_text("\n".join(lines) + "\n")
    print(path)


if __name__ == "__main__":
    try:
        main()
    except (KeyboardInterrupt, Stopped) as e:
        # Straight out, as pgjax's CLI does: unwinding while XLA's threads run can crash.
        how = f"stopped by {signal.Signals(e.signal).name}" if isinstance(e, Stopped) \
            else "interrupted"
        print(f"reproduce.py: {how}; the same command continues where it stopped",
              file=sys.stderr, flush=True)
        os._exit(e.exit_status if isinstance(e, Stopped) else 130)
