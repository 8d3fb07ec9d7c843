"""Env-only and training throughput of each installed suite through pgjax, side by side with
the suite's own random-policy stepping (vmapped, jitted, its own auto-reset), in one process.

    python -m benchmarks.suite_speed [--num-envs 64] [--num-steps 64] [--only navix jumanji]

Per suite: the suite's own steps/s, pgjax.Env's steps/s (the adapter, random actions), their
ratio, and pgjax training's steps/s (PPO: GAE, 4 epochs × 4 minibatches, one seed, the MLP)
over the adapter's. Writes benchmarks/results/suite_speed.json with versions and the commit.
"""

import argparse
import contextlib
import io
import time
from pathlib import Path

import jax
import jax.numpy as jnp

import pgjax
from pgjax import runs

ENVS = {
    "brax": "inverted_pendulum",
    "craftax": "Craftax-Classic-Symbolic-v1",
    "jumanji": "Snake-v1",
    "navix": "Navix-Empty-8x8-v0",
    "xminigrid": "MiniGrid-Empty-8x8",
}


def native(suite: str, name: str, num_envs: int):
    """(reset(key) -> carry, step(carry, key) -> carry) of the suite's own batched stepping
    with random actions and its own auto-reset."""
    if suite == "brax":
        with contextlib.redirect_stdout(io.StringIO()):
            from brax import envs
        env = envs.create(name, episode_length=1000, batch_size=num_envs)  # auto-reset, vmap
        act = lambda k: jax.random.uniform(k, (num_envs, env.action_size), minval=-1, maxval=1)
        return env.reset, lambda s, k: env.step(s, act(k))
    if suite == "craftax":
        from craftax.craftax_env import make_craftax_env_from_name
        env = make_craftax_env_from_name(name, auto_reset=True)
        params = env.default_params

        def reset(key):
            return jax.vmap(env.reset, (0, None))(jax.random.split(key, num_envs), params)[1]

        def step(s, k):
            ka, ks = jax.random.split(k)
            a = jax.random.randint(ka, (num_envs,), 0, env.num_actions)
            keys = jax.random.split(ks, num_envs)
            return jax.vmap(env.step, (0, 0, 0, None))(keys, s, a, params)[1]

        return reset, step
    if suite == "jumanji":
        import jumanji
        from jumanji.wrappers import VmapAutoResetWrapper
        env = VmapAutoResetWrapper(jumanji.make(name))
        n = int(env.action_spec.num_values)
        reset = lambda key: env.reset(jax.random.split(key, num_envs))[0]
        return reset, lambda s, k: env.step(s, jax.random.randint(k, (num_envs,), 0, n))[0]
    if suite == "navix":
        import navix
        env = navix.make(name)
        n = int(env.action_space.maximum) + 1
        reset = lambda key: jax.vmap(env.reset)(jax.random.split(key, num_envs))
        return reset, lambda s, k: jax.vmap(env.step)(
            s, jax.random.randint(k, (num_envs,), 0, n))
    if suite == "xminigrid":
        import xminigrid
        from xminigrid.wrappers import GymAutoResetWrapper
        env, params = xminigrid.make(name)
        env = GymAutoResetWrapper(env)
        n = env.num_actions(params)
        reset = lambda key: jax.vmap(env.reset, (None, 0))(params, jax.random.split(key,
                                                                                     num_envs))
        return reset, lambda s, k: jax.vmap(env.step, (None, 0, 0))(
            params, s, jax.random.randint(k, (num_envs,), 0, n))
    raise ValueError(suite)


def scanned(reset, step, num_steps: int):
    def run(key):
        carry = reset(key)
        carry = jax.lax.scan(lambda c, k: (step(c, k), None), carry,
                             jax.random.split(key, num_steps))[0]
        leaves = [x for x in jax.tree.leaves(carry)  # all of it, so nothing is left out
                  if not jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)]
        return sum(jnp.sum(x.astype(jnp.float32)) for x in leaves)

    return jax.jit(run)


def adapter(env: pgjax.Env, num_envs: int):
    def step(state, key):
        ka, ks = jax.random.split(key)
        if env.continuous:
            a = jax.random.uniform(ka, (num_envs, *env.action_shape), minval=-1, maxval=1)
        else:
            a = jax.random.randint(ka, (num_envs,), 0, env.num_actions)
        return env.step(ks, state, a).state

    return lambda key: env.reset(key, num_envs)[1], step


def rate(fn, key, steps: int, repeats: int = 3) -> tuple[float, float]:
    """(steps per second, best of `repeats`; seconds of the first call, compile included)."""
    t = time.perf_counter()
    jax.block_until_ready(fn(key))
    first = time.perf_counter() - t
    best = first
    for _ in range(repeats):
        t = time.perf_counter()
        jax.block_until_ready(fn(key))
        best = min(best, time.perf_counter() - t)
    return steps / best, first


def train_rate(name: str, num_envs: int, num_steps: int) -> tuple[float, float]:
    config = pgjax.Config(env=name, num_envs=num_envs, num_steps=num_steps, hidden=(64, 64),
                          total_timesteps=4 * num_envs * num_steps, estimator="gae",
                          update_epochs=4, minibatches=4, clip_eps=0.2, lr=5e-4)
    keys = pgjax.seed_keys(0, 1)
    t = time.perf_counter()
    train = jax.jit(jax.vmap(pgjax.make_train(config))).lower(keys).compile()
    compile_s = time.perf_counter() - t
    steps_per_s, _ = rate(train, keys, config.num_updates * config.steps_per_update, repeats=1)
    return steps_per_s, compile_s


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--num-envs", type=int, default=64)
    parser.add_argument("--num-steps", type=int, default=64)
    parser.add_argument("--only", nargs="*", default=list(ENVS))
    args = parser.parse_args()
    key, steps = jax.random.key(0), args.num_envs * args.num_steps
    rows = {}
    for suite in args.only:
        name = f"{suite}:{ENVS[suite]}"
        try:
            env = pgjax.Env(name)
        except ValueError as e:  # not installed
            print(f"{name}: skipped: {e}")
            continue
        own, own_first = rate(scanned(*native(suite, ENVS[suite], args.num_envs),
                                      args.num_steps), key, steps)
        ours, ours_first = rate(scanned(*adapter(env, args.num_envs), args.num_steps), key,
                                steps)
        train, train_compile = train_rate(name, args.num_envs, args.num_steps)
        rows[name] = {"suite_steps_per_second": own, "pgjax_env_steps_per_second": ours,
                      "pgjax_env_over_suite": ours / own,
                      "pgjax_train_steps_per_second": train, "train_over_pgjax_env": train / ours,
                      "first_call_seconds": {"suite": own_first, "pgjax_env": ours_first,
                                             "train_compile": train_compile}}
        print(f"{name:38s} suite {own:>10,.0f}/s  pgjax.Env {ours:>10,.0f}/s  "
              f"ratio {ours / own:5.2f}  train {train:>9,.0f}/s  train/env {train / ours:5.2f}  "
              f"(first calls {own_first:.0f} s, {ours_first:.0f} s; train compile "
              f"{train_compile:.0f} s)", flush=True)
    result = {"num_envs": args.num_envs, "num_steps": args.num_steps, "rows": rows,
              **runs.provenance()}
    out = Path(__file__).parent / "results" / "suite_speed.json"
    runs.write_json(out, result)
    print(out)


if __name__ == "__main__":
    main()
