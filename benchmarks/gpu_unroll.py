"""Rollout-scan unrolling on GPU: whole-run throughput of the default config per unroll.

    python -m benchmarks.gpu_unroll [--seeds 1024 4096] [--unroll 1 4 8 16]
"""

import argparse
import time

import jax
import numpy as np

import pgjax


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, nargs="+", default=[1024])
    parser.add_argument("--unroll", type=int, nargs="+", default=[1, 4, 8, 16])
    parser.add_argument("--updates", type=int, default=8)
    args = parser.parse_args()
    print("device", jax.devices()[0], "jax", jax.__version__, flush=True)
    for seeds in args.seeds:
        for unroll in args.unroll:
            config = pgjax.Config(unroll=unroll, total_timesteps=64 * 500 * args.updates)
            keys = jax.random.split(jax.random.key(0), seeds)
            t = time.perf_counter()
            fn = jax.jit(jax.vmap(pgjax.make_train(config))).lower(keys).compile()
            compile_s = time.perf_counter() - t
            jax.block_until_ready(fn(keys))
            times = []
            for _ in range(3):
                t = time.perf_counter()
                _, m = jax.block_until_ready(fn(keys))
                times.append(time.perf_counter() - t)
            rate = seeds * config.num_updates * config.steps_per_update / min(times)
            ret = float(np.nanmean(np.asarray(m.episode_return[:, -1])))
            print(f"seeds {seeds:5d} unroll {unroll:3d}: {rate / 1e9:.3f}B steps/s, "
                  f"compile {compile_s:.1f} s, mean final return {ret:.1f}", flush=True)


if __name__ == "__main__":
    main()
