"""Default-config training speed on CartPole-v1, side by side with env-only stepping.

    python -m benchmarks.train_speed [--seeds 16] [--repeats 3]

Prints, from one process: env-only stepping throughput (random actions, the ceiling), pgjax
training throughput (rollout + returns + loss + update), their ratio, compile seconds, wall
seconds including compile, and the final return of every seed. Writes benchmarks/results/
train_speed.json with versions and the git commit.
"""

import argparse
import time
from pathlib import Path

import jax
import numpy as np

import pgjax
from pgjax import runs


def env_only(env: pgjax.Env, seeds: int, num_envs: int, num_steps: int):
    """Jitted random-action stepping of seeds × num_envs envs for num_steps steps."""

    def one(key):
        _, state = env.reset(key, num_envs)

        def step(state, key):
            k_act, k_env = jax.random.split(key)
            action = jax.random.randint(k_act, (num_envs,), 0, env.num_actions)
            out = env.step(k_env, state, action)
            return out.state, out.reward.sum()

        return jax.lax.scan(step, state, jax.random.split(key, num_steps))[1].sum()

    return jax.jit(jax.vmap(one))


def best_of(fn, arg, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        jax.block_until_ready(fn(arg))
        times.append(time.perf_counter() - t)
    return min(times)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    config = pgjax.Config()
    keys = pgjax.seed_keys(0, args.seeds)
    total = args.seeds * config.num_updates * config.steps_per_update

    t0 = time.perf_counter()
    train = jax.jit(jax.vmap(pgjax.make_train(config))).lower(keys).compile()
    compile_s = time.perf_counter() - t0
    t1 = time.perf_counter()
    _, metrics = jax.block_until_ready(train(keys))
    first_wall = time.perf_counter() - t1
    train_s = first_wall
    if args.repeats > 1:
        train_s = min(first_wall, best_of(train, keys, args.repeats - 1))

    stepper = env_only(pgjax.Env(config.env), args.seeds, config.num_envs, config.num_steps)
    jax.block_until_ready(stepper(keys))
    env_s = best_of(stepper, keys, args.repeats)
    env_rate = args.seeds * config.steps_per_update / env_s

    final = np.asarray(metrics.episode_return[:, -1])
    result = {
        "config": "defaults: CartPole-v1, 64 envs × 500 steps, 2,048,000 steps per seed",
        "seeds": args.seeds,
        "train_env_steps_per_second": total / train_s,
        "env_only_steps_per_second": env_rate,
        "train_over_env_only": total / train_s / env_rate,
        "compile_seconds": compile_s,
        "wall_seconds_including_compile": compile_s + first_wall,
        "final_return_per_seed": final.round(1).tolist(),
        "seeds_at_or_above_475": int((final >= 475).sum()),
        **runs.provenance(),
    }
    for k, v in result.items():
        if k not in ("versions", "devices", "platform", "python", "backend"):
            print(f"{k:32s} {v:,.3f}" if isinstance(v, float) else f"{k:32s} {v}")
    out = Path(__file__).parent / "results" / "train_speed.json"
    out.parent.mkdir(exist_ok=True)
    runs.write_json(out, result)


if __name__ == "__main__":
    main()
