"""Sweep throughput: a 4 lr × 4 ent_coef × 16 seed CartPole grid as one program vs one by one.

    python -m benchmarks.sweep_speed [--total-timesteps 256000] [--one-by-one 8] [--per-config 2]

Three ways to train the same 64 runs (config × seed, keys as in `pgjax train`):
  one program   `pgjax.sweep` with the whole grid in one vmapped, sharded program (end to end:
                compile, train, files, summary);
  one by one    the sweep's program at batch 1, one call per run; only the first `--one-by-one`
                runs are timed and the 64-run time is extrapolated from their mean;
  per config    batch 16 (one config's seeds, as `pgjax train --seeds 16` runs them), one call
                per config; the first `--per-config` configs are timed, then extrapolated.
Times exclude compilation (reported apart; one compile per way, since the leaves are traced).
The default budget (8 updates of 64 envs × 500 steps per run) keeps it to a few minutes on a
2-core CPU; pass --total-timesteps 2048000 for the default config's full budget. Writes
benchmarks/results/sweep_speed[-<backend>].json with versions and the git commit.
"""

import argparse
import json
import tempfile
import time
from pathlib import Path

import jax
import numpy as np

import pgjax
from pgjax import runs
from pgjax.sweep.run import Programs, run_chunk
from pgjax.sweep.spec import make_plan, parse_spec
from pgjax.train import seed_keys

LRS = [3e-3, 1e-2, 3e-2, 1e-1]
ENT_COEFS = [0.0, 1e-3, 1e-2, 3e-2]


def spec(total_timesteps: int, seeds: int, chunk_runs: int | None = None) -> dict:
    out = {
        "env": "CartPole-v1", "total_timesteps": total_timesteps, "seeds": seeds,
        "grid": {"lr": LRS, "ent_coef": ENT_COEFS},
    }
    return out | ({"chunk_runs": chunk_runs} if chunk_runs else {})


def time_chunks(spec_dict: dict, limit: int) -> dict:
    """Run the first `limit` chunks of a plan through the sweep's own program; extrapolate."""
    plan = make_plan(parse_spec(spec_dict))
    devices = tuple(jax.local_devices())
    key_data = np.asarray(jax.random.key_data(seed_keys(plan.spec.seed, plan.spec.seeds)))
    programs = Programs()
    walls, compile_s = [], 0.0
    for chunk in plan.chunks[:limit]:
        record = run_chunk(plan, chunk, key_data, devices, programs=programs)["record"]
        walls.append(record["wall_seconds"])
        compile_s = record["compile_seconds"]
    per_chunk = sum(walls) / len(walls)
    return {
        "chunks_timed": len(walls),
        "chunks_total": len(plan.chunks),
        "seconds_per_chunk": per_chunk,
        "train_seconds": per_chunk * len(plan.chunks),
        "extrapolated": len(walls) < len(plan.chunks),
        "compile_seconds": compile_s,
    }


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--total-timesteps", type=int, default=256_000)
    parser.add_argument("--seeds", type=int, default=16)
    parser.add_argument("--one-by-one", type=int, default=8, help="runs timed one by one")
    parser.add_argument("--per-config", type=int, default=2, help="configs timed one by one")
    args = parser.parse_args()
    grid = spec(args.total_timesteps, args.seeds)
    plan = make_plan(parse_spec(grid))
    num_runs = len(plan.runs)
    steps_per_run = plan.configs[0].num_updates * plan.configs[0].steps_per_update
    total_steps = num_runs * steps_per_run

    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        table = pgjax.sweep(grid, Path(tmp) / "sweep")
        end_to_end = time.perf_counter() - t
        record = json.loads((Path(tmp) / "sweep" / "chunks" / "chunk-000000.json").read_text())
    ways = {
        "one_program": {
            "train_seconds": record["wall_seconds"],
            "compile_seconds": record["compile_seconds"],
            "end_to_end_seconds": end_to_end,
            "extrapolated": False,
        },
        "one_by_one": time_chunks(spec(args.total_timesteps, args.seeds, 1), args.one_by_one),
        "per_config": time_chunks(
            spec(args.total_timesteps, args.seeds, args.seeds), args.per_config
        ),
    }
    for way in ways.values():
        way["runs_per_second"] = num_runs / way["train_seconds"]
        way["env_steps_per_second"] = total_steps / way["train_seconds"]
    base = ways["one_program"]["train_seconds"]
    for way in ways.values():
        way["slower_than_one_program"] = way["train_seconds"] / base

    result = {
        "grid": f"{len(LRS)} lr × {len(ENT_COEFS)} ent_coef × {args.seeds} seeds, CartPole-v1",
        "runs": num_runs,
        "env_steps_per_run": steps_per_run,
        "ways": ways,
        "final_return_mean": float(table["final_return"].mean()),
        **runs.provenance(),
    }
    print(f"{num_runs} runs × {steps_per_run:,} env steps on {jax.devices()[0].platform} "
          f"({len(jax.local_devices())} device(s))")
    print(f"{'way':<12} {'runs/s':>9} {'env steps/s':>14} {'train s':>9} {'compile s':>10}  note")
    for name, way in ways.items():
        note = (f"extrapolated from {way['chunks_timed']} of {way['chunks_total']} calls"
                if way["extrapolated"] else "measured in full")
        print(f"{name:<12} {way['runs_per_second']:>9.3f} {way['env_steps_per_second']:>14,.0f} "
              f"{way['train_seconds']:>9.2f} {way['compile_seconds']:>10.1f}  {note}")
    backend = jax.default_backend()
    out = Path(__file__).parent / "results" / (
        "sweep_speed.json" if backend == "cpu" else f"sweep_speed-{backend}.json"
    )
    out.parent.mkdir(exist_ok=True)
    runs.write_json(out, result)
    print(out)


if __name__ == "__main__":
    main()
