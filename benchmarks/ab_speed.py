"""A/B training speed: the working tree's pgjax against an earlier git revision, in one process.

    python -m benchmarks.ab_speed [--base REV] [--seeds 16] [--repeats 5]
                                  [--total-timesteps N] [--set KEY=VALUE ...]

pgjax/ of --base (default HEAD) is exported with `git archive` to a temporary directory and
imported as `pgjax_base`, its pgjax imports rewritten; the working tree is imported as `pgjax`
(hidden --new REV: a second export, `pgjax_new`, for when the working tree does not import).
Both sides compile `jax.jit(jax.vmap(make_train(Config(**overrides))))` on the same seed keys,
then run alternately, base, new, base, new..., so a noisy machine slows both alike. Prints
compile seconds, best and median seconds and env steps/s per side, new/base throughput (of the
bests, of the medians, and the median of per-round ratios), and whether the Metrics fields both
sides have are bitwise equal (and which fields one side only has). --set overrides Config
fields on both sides (`--set baseline=value --set hidden=64,64`). Writes
benchmarks/results/ab_speed.json.
"""

import argparse
import importlib
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import jax
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
REWRITES = ((r"\bpgjax\.", "{}."), (r"^(\s*)from pgjax ", r"\1from {} "),
            (r"^(\s*)import pgjax\b", r"\1import {}"))
LEFT_OVER = re.compile(r"^\s*(from|import)\s+pgjax\b", re.M)


def git(*args: str) -> str:
    """Stripped stdout of a git command run in the repository root."""
    run = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=True)
    return run.stdout.strip()


def export(sha: str, name: str, tmp: str):
    """pgjax/ of commit `sha`, extracted under `tmp` and imported as the package `name`."""
    root = Path(tmp, name)
    root.mkdir()
    archive = ["git", "archive", sha, "pgjax"]
    tar = subprocess.run(archive, cwd=ROOT, stdout=subprocess.PIPE, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(root)], input=tar, check=True)
    (root / "pgjax").rename(root / name)
    for path in (root / name).rglob("*.py"):
        text = path.read_text()
        for pattern, repl in REWRITES:
            text = re.sub(pattern, repl.format(name), text, flags=re.M)
        if LEFT_OVER.search(text):
            raise RuntimeError(f"{path}: a pgjax import was left unrewritten")
        path.write_text(text)
    had_pgjax = "pgjax" in sys.modules
    sys.path.insert(0, str(root))
    pkg = importlib.import_module(name)
    if not had_pgjax and "pgjax" in sys.modules:
        raise RuntimeError(f"importing {name} imported the working tree's pgjax too")
    assert Path(pkg.__file__).is_relative_to(root), pkg.__file__
    return pkg


def parse_overrides(pairs: list[str], defaults) -> dict:
    """KEY=VALUE strings to Config fields, each value parsed by the type of its default."""
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or key not in type(defaults).__dataclass_fields__:
            raise SystemExit(f"--set {pair}: expected KEY=VALUE with KEY a Config field")
        default = getattr(defaults, key)
        try:
            if isinstance(default, bool):
                out[key] = {"true": True, "1": True, "false": False, "0": False}[value.lower()]
            elif isinstance(default, tuple):
                out[key] = tuple(int(v) for v in value.split(",") if v)
            else:
                out[key] = type(default)(value)  # int, float or str
        except (KeyError, ValueError):
            raise SystemExit(f"--set {pair}: not a {type(default).__name__}") from None
    return out


def differing_fields(a, b) -> tuple[list[str], list[str]]:
    """(the Metrics fields (NamedTuples) both sides have that are not equal in shape, dtype and
    every value, NaN equal to NaN; the fields only one side has)."""
    a, b = a._asdict(), b._asdict()
    out = []
    for k in sorted(set(a) & set(b)):
        x, y = np.asarray(a[k]), np.asarray(b[k])
        if x.shape != y.shape or x.dtype != y.dtype or not np.array_equal(x, y, equal_nan=True):
            out.append(k)
    return out, sorted(set(a) ^ set(b))


def load(base: str, new: str | None, tmp: str) -> tuple[dict, dict]:
    """Resolved revisions and imported packages of both sides; the working tree when no --new."""
    revs = {"base": git("rev-parse", "--verify", base + "^{commit}")}
    if new is not None:
        revs["new"] = git("rev-parse", "--verify", new + "^{commit}")
    pkgs = {side: export(sha, f"pgjax_{side}", tmp) for side, sha in revs.items()}
    if new is None:
        sys.path.insert(0, str(ROOT))
        pkgs["new"] = importlib.import_module("pgjax")
        assert Path(pkgs["new"].__file__).is_relative_to(ROOT), pkgs["new"].__file__
    return revs, pkgs


def summary(times: list[float], steps: int) -> dict:
    """Best and median seconds of one side and its env steps/s at each."""
    best, median = min(times), float(np.median(times))
    return {"best_s": best, "median_s": median,
            "steps_per_s_best": steps / best, "steps_per_s_median": steps / median}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--base", default="HEAD")
    parser.add_argument("--new", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--seeds", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--total-timesteps", type=int, default=None)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args()
    if args.seeds < 1 or args.repeats < 1:
        parser.error("--seeds and --repeats must be at least 1")
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="ab_speed-") as tmp:
        revs, pkgs = load(args.base, args.new, tmp)
        overrides = parse_overrides(args.set, pkgs["new"].Config())
        if args.total_timesteps is not None:
            overrides["total_timesteps"] = args.total_timesteps
        keys = jax.random.split(jax.random.key(0), args.seeds)
        programs, steps, compile_s = {}, {}, {}
        for side in ("base", "new"):
            config = pkgs[side].Config(**overrides)
            steps[side] = args.seeds * config.num_updates * config.num_envs * config.num_steps
            t = time.perf_counter()
            programs[side] = jax.jit(jax.vmap(pkgs[side].make_train(config))).lower(keys).compile()
            compile_s[side] = time.perf_counter() - t
        times, metrics = {"base": [], "new": []}, {}
        for _ in range(args.repeats):
            for side in ("base", "new"):
                t = time.perf_counter()
                _, metrics[side] = jax.block_until_ready(programs[side](keys))
                times[side].append(time.perf_counter() - t)

    stats = {side: summary(times[side], steps[side]) for side in ("base", "new")}
    ratio = {k: stats["new"][f"steps_per_s_{k}"] / stats["base"][f"steps_per_s_{k}"]
             for k in ("best", "median")}
    ratio["paired_median"] = float(np.median(np.divide(times["base"], times["new"])))  # per round
    differ, one_side = differing_fields(metrics["base"], metrics["new"])
    print("side  revision   compile s   best s median s  steps/s best steps/s median")
    for side, s in stats.items():
        print(f"{side:5s} {revs.get(side, 'worktree')[:10]:10s} {compile_s[side]:9.2f} "
              f"{s['best_s']:8.3f} {s['median_s']:8.3f} "
              f"{s['steps_per_s_best']:13,.0f} {s['steps_per_s_median']:14,.0f}")
    print(f"new/base throughput: best {ratio['best']:.3f}x, median {ratio['median']:.3f}x, "
          f"median of per-round ratios {ratio['paired_median']:.3f}x")
    print(f"bitwise equal: {not differ}" + (f" (differ: {', '.join(differ)})" if differ else "")
          + (f"; fields of one side only: {', '.join(one_side)}" if one_side else ""))

    result = {
        "base": revs["base"], "new": revs.get("new", "working tree"),
        "head": git("rev-parse", "HEAD"),
        "dirty": bool(git("status", "--porcelain", "--untracked-files=no")),
        "pgjax_dirty": bool(git("status", "--porcelain", "--", "pgjax")),  # untracked too
        "overrides": overrides, "seeds": args.seeds, "env_steps_per_call": steps,
        "compile_seconds": compile_s, "seconds": times, "stats": stats,
        "new_over_base_throughput": ratio, "bitwise_equal": not differ, "differing": differ,
        "one_side_only": one_side,
        "jax": jax.__version__,
        "machine": {"processor": platform.processor(), "cpu_count": os.cpu_count()},
        "loadavg": {"before": load_before, "after": os.getloadavg()},
    }
    out = ROOT / "benchmarks" / "results" / "ab_speed.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
