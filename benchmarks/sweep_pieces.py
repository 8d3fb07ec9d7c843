"""A sweep's chunk trained in pieces (how `pgjax.sweep` runs it, so that each piece is progress
that renews its worker's lease) against the same runs as one `train` call, side by side in one
process.

    python -m benchmarks.sweep_pieces [--total-timesteps 512000] [--seeds 4] [--rounds 5]

One chunk of 4 lr × `--seeds` CartPole runs of 16 envs × 100 steps per update (the default:
320 updates, 20 pieces of 16). `pieces` is `sweep.run.run_chunk` (init, then
`train_chunk` of `experiment.chunk_length` updates at a time, queued at once; then the rows);
`one call` is `jax.jit(jax.vmap(train))` with the divergence flags over the same leaves and
keys, the program sweeps ran before. Rounds
alternate, so a noisy machine slows both alike; prints each one's median seconds, the median of
the per-round ratios, and whether the metrics are bitwise equal. Writes
benchmarks/results/sweep_pieces.json with versions and the git commit.
"""

import argparse
import statistics
import time
from pathlib import Path

import jax
import numpy as np

from pgjax import runs
from pgjax.config import LEAVES
from pgjax.sweep.run import Programs, run_chunk
from pgjax.sweep.spec import make_plan, parse_spec
from pgjax.train import diverged, seed_keys, train


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--total-timesteps", type=int, default=512_000)
    parser.add_argument("--seeds", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    plan = make_plan(parse_spec({"env": "CartPole-v1", "num_envs": 16, "num_steps": 100,
                                 "total_timesteps": args.total_timesteps, "seeds": args.seeds,
                                 "grid": {"lr": [3e-3, 1e-2, 3e-2, 1e-1]}}))
    (chunk,) = plan.chunks
    devices = tuple(jax.local_devices()[:1])
    key_data = np.asarray(jax.random.key_data(seed_keys(plan.spec.seed, plan.spec.seeds)))
    programs = Programs()

    static = plan.groups[0]
    leaves = {n: np.array([getattr(plan.configs[c], n) for c, _ in plan.runs], np.float32)
              for n in LEAVES}
    keys = key_data[[s for _, s in plan.runs]]

    @jax.jit
    def one_call(leaves, key_data):  # the program of sweeps before pieces
        configs = static.replace(**leaves)
        state, metrics = jax.vmap(train)(configs, jax.random.wrap_key_data(key_data))
        return metrics, diverged(metrics.loss, metrics.grad_norm, state.params)

    def pieces():
        return run_chunk(plan, chunk, key_data, devices, programs=programs)["arrays"]

    def whole():
        return jax.device_get(jax.block_until_ready(one_call(leaves, keys)))[0]

    a, b = pieces(), whole()  # compiles both
    same = all(np.array_equal(a[name], np.asarray(getattr(b, name)), equal_nan=True)
               for name in b._fields)
    times = {"pieces": [], "one_call": []}
    for _ in range(args.rounds):
        for name, fn in (("pieces", pieces), ("one_call", whole)):
            t = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t)
    ratios = [p / w for p, w in zip(times["pieces"], times["one_call"], strict=True)]
    result = {
        "runs": len(plan.runs),
        "updates": static.num_updates,
        "pieces_seconds_median": statistics.median(times["pieces"]),
        "one_call_seconds_median": statistics.median(times["one_call"]),
        "pieces_over_one_call_median_ratio": statistics.median(ratios),
        "bitwise_equal": same,
        **runs.provenance(),
    }
    print(f"{len(plan.runs)} runs × {static.num_updates} updates on {jax.default_backend()}: "
          f"pieces {result['pieces_seconds_median']:.2f} s, one call "
          f"{result['one_call_seconds_median']:.2f} s, pieces / one call "
          f"{result['pieces_over_one_call_median_ratio']:.3f} (median of {args.rounds} rounds); "
          f"metrics bitwise equal: {same}")
    out = Path(__file__).parent / "results" / "sweep_pieces.json"
    runs.write_json(out, result)
    print(out)


if __name__ == "__main__":
    main()
