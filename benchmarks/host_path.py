"""The host path against the steady-state program it runs, side by side in one process.

    python -m benchmarks.host_path [--seeds 16 1] [--repeats 3] [--min-seconds 30]
                                   [--total-timesteps N]

For each seed count, alternately (so a noisy machine slows both alike), `--repeats` rounds and
more until the program has run `--min-seconds` in all (a 1-seed run is about a second, and a
shared machine's noise is larger than the 5% looked for):
  program   `jax.jit(jax.vmap(make_train(config)))` on the seed keys, compiled once, timed alone;
  host      `pgjax.train_run` into a fresh temporary run directory with the default chunking,
            checkpointing and metrics files (progress bar off): its wall time from the first
            chunk to the last chunk's metrics rows (summary.json's `wall_seconds`), compile
            excluded; the last checkpoint is written while the summary is computed;
  end to end  the same call's whole time less its compile: also the summary (bootstrap CIs),
            the wait for the last checkpoint, summary.json and curve.png.
Prints env steps/s of both, host / program (best of the repeats and median of per-round
ratios), the end-to-end time, and whether the host's per-seed final returns are bitwise those
of the program (`same`) and of the host's own split of it (`same split`: init jitted alone,
then one `train_chunk` of every update; chunks compose bitwise, see tests/test_train.py).
`same` is False on CPU: XLA compiles the parameter step differently when init is part of the
same program, so parameters differ in the last bit from the first update on, and training
amplifies that. Writes benchmarks/results/host_path.json with versions and the git commit.
"""

import argparse
import functools
import os
import tempfile
import time
from pathlib import Path

import jax
import numpy as np

import pgjax
from pgjax import runs


def time_program(train, keys) -> tuple[float, np.ndarray]:
    t = time.perf_counter()
    _, metrics = jax.block_until_ready(train(keys))
    return time.perf_counter() - t, np.asarray(metrics.episode_return[:, -1])


def split_program_final(config, keys) -> np.ndarray:
    """Final returns of init jitted alone, then one jitted `train_chunk` of every update."""
    init = jax.jit(jax.vmap(functools.partial(pgjax.init_state, config)))
    chunk = functools.partial(pgjax.train_chunk, config, num_updates=config.num_updates)
    _, metrics = jax.jit(jax.vmap(chunk))(init(keys))
    return np.asarray(metrics.episode_return[:, -1])


def time_host(config, seeds: int) -> tuple[float, float, np.ndarray]:
    """(training wall seconds, end-to-end seconds less compile, final returns) of `train_run`."""
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        _, summary = pgjax.train_run(config, Path(tmp) / "run", seeds=seeds, progress=False)
        whole = time.perf_counter() - t - summary["compile_seconds"]
    return summary["wall_seconds"], whole, np.array(summary["final_return"]["per_seed"])


def measure(config, seeds: int, repeats: int, min_seconds: float) -> dict:
    keys = pgjax.seed_keys(0, seeds)
    train = jax.jit(jax.vmap(pgjax.make_train(config))).lower(keys).compile()
    time_host(config, seeds)  # warm: the host path's compile and first files
    program, host, whole = [], [], []
    while len(program) < repeats or sum(program) < min_seconds:
        p, p_final = time_program(train, keys)
        h, w, h_final = time_host(config, seeds)
        program.append(p)
        host.append(h)
        whole.append(w)
    steps = seeds * config.num_updates * config.steps_per_update
    return {
        "seeds": seeds,
        "program_env_steps_per_second": steps / min(program),
        "host_env_steps_per_second": steps / min(host),
        "host_over_program_best": min(program) / min(host),
        "host_over_program_median_of_rounds": float(np.median(np.array(program) / host)),
        "program_seconds": program,
        "host_seconds": host,
        "end_to_end_seconds": whole,
        "same_final_returns": bool(np.array_equal(p_final, h_final, equal_nan=True)),
        "same_final_returns_as_split": bool(np.array_equal(split_program_final(config, keys),
                                                           h_final, equal_nan=True)),
    }


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, nargs="+", default=[16, 1])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--min-seconds", type=float, default=30.0)
    parser.add_argument("--total-timesteps", type=int, default=pgjax.Config.total_timesteps)
    args = parser.parse_args()
    config = pgjax.Config(total_timesteps=args.total_timesteps)
    rows = [measure(config, seeds, args.repeats, args.min_seconds) for seeds in args.seeds]
    print(f"{'seeds':>5} {'rounds':>6} {'program steps/s':>16} {'host steps/s':>14} "
          f"{'host/program best':>18} {'median of rounds':>17} {'end to end s':>13} "
          "same same split")
    for r in rows:
        print(f"{r['seeds']:>5} {len(r['program_seconds']):>6} "
              f"{r['program_env_steps_per_second']:>16,.0f} "
              f"{r['host_env_steps_per_second']:>14,.0f} {r['host_over_program_best']:>18.3f} "
              f"{r['host_over_program_median_of_rounds']:>17.3f} "
              f"{min(r['end_to_end_seconds']):>13.2f} {r['same_final_returns']!s:>4} "
              f"{r['same_final_returns_as_split']}")
    out = Path(__file__).parent / "results" / "host_path.json"
    out.parent.mkdir(exist_ok=True)
    runs.write_json(out, {"config": "defaults (CartPole-v1, 64 envs × 500 steps)",
                          "total_timesteps": args.total_timesteps, "rows": rows,
                          "load_average": os.getloadavg(), **runs.provenance()})
    print(out)


if __name__ == "__main__":
    main()
