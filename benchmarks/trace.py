"""Where one update's time goes, kernel by kernel: a jax.profiler trace, summarized.

    python -m benchmarks.trace [--seeds 1024] [--variant base] [--out benchmarks/results]

Compiles the vmapped `train_step` of the default config (with `field=value` overrides, as in
benchmarks.variants), runs it once to warm up, then traces one call. The Chrome/Perfetto trace
is summarized per op name: count, total and mean µs, on the device's streams where there is a
GPU, else on all threads. Counts divided by `num_steps` show how many kernels each rollout step
launches. Writes <tag>.json (top ops, totals, versions) and prints the top of the table.
"""

import argparse
import collections
import functools
import gzip
import json
import tempfile
from pathlib import Path

import jax

import pgjax
from benchmarks.variants import parse_variant
from pgjax import runs
from pgjax.train import init_state, train_step


def device_pids(meta: list[dict]) -> set:
    """Process ids whose name mentions a GPU (stream timelines); empty on CPU."""
    return {m["pid"] for m in meta
            if m.get("name") == "process_name" and "gpu" in str(m["args"].get("name", "")).lower()}


def summarize(log_dir: Path) -> dict:
    """Per-op count and duration of the Perfetto trace written under log_dir."""
    path = next(log_dir.rglob("perfetto_trace.json.gz"))
    with gzip.open(path) as f:
        trace = json.load(f)
    events = [e for e in trace["traceEvents"] if e.get("ph") == "X" and "dur" in e]
    meta = [e for e in trace["traceEvents"] if e.get("ph") == "M"]
    gpu = device_pids(meta)
    if gpu:
        events = [e for e in events if e["pid"] in gpu]
    per_name = collections.defaultdict(lambda: [0, 0.0])
    for e in events:
        per_name[e["name"]][0] += 1
        per_name[e["name"]][1] += float(e["dur"])
    rows = sorted(
        ({"name": n, "count": c, "total_us": t, "mean_us": t / c} for n, (c, t) in
         per_name.items()), key=lambda r: -r["total_us"],
    )
    return {"scope": "gpu streams" if gpu else "all threads", "events": len(events),
            "total_us": sum(r["total_us"] for r in rows), "ops": rows}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, default=1024)
    parser.add_argument("--variant", default="base")
    parser.add_argument("--top", type=int, default=30)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    parser.add_argument("--tag", default="trace")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    config = pgjax.Config(**parse_variant(args.variant)).validate()
    keys = pgjax.seed_keys(0, args.seeds)
    state = jax.jit(jax.vmap(functools.partial(init_state, config)))(keys)
    step = jax.jit(jax.vmap(functools.partial(train_step, config)))
    jax.block_until_ready(step(state, keys))
    with tempfile.TemporaryDirectory() as tmp:
        with jax.profiler.trace(tmp, create_perfetto_trace=True):
            jax.block_until_ready(step(state, keys))
        summary = summarize(Path(tmp))
    summary["ops"] = summary["ops"][: max(args.top, 100)]
    result = {"seeds": args.seeds, "variant": args.variant, "num_steps": config.num_steps,
              **summary, **runs.provenance()}
    print(f"{summary['events']} events on {summary['scope']}, {summary['total_us'] / 1e3:.1f} ms "
          f"summed; per rollout step: {summary['events'] / config.num_steps:.1f} events")
    print(f"{'count':>7} {'/step':>6} {'total ms':>9} {'mean µs':>8}  name")
    for r in summary["ops"][: args.top]:
        print(f"{r['count']:7d} {r['count'] / config.num_steps:6.1f} {r['total_us'] / 1e3:9.2f} "
              f"{r['mean_us']:8.1f}  {r['name'][:90]}")
    runs.write_json(args.out / f"{args.tag}.json", result)


if __name__ == "__main__":
    main()
