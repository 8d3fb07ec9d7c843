"""The pgjax benchmark suite: throughput, its ceiling, time to solve, and the PyTorch baseline.

    python -m benchmarks.run [--quick] [--out DIR] [--seeds 1 16 256 1024] [--skip-torch]
                             [--parts ceiling train profile compile solve precision torch]

Parts (all by default, in this order; each is written to the JSON as soon as it finishes, so a
run cut short by a timeout keeps what it measured):

  ceiling    env-only stepping with random actions (benchmarks.train_speed.env_only) at every
             seeds × envs count of the train part and at --ceiling-envs: the most any trainer on
             these gymnax envs could reach.
  train      pgjax training throughput, env steps/s of rollout + returns + loss + update
             (`pgjax.train_chunk` of --updates updates, jitted and vmapped over seeds), steady
             state: compile and a warm-up call are timed apart, then the median of --repeats calls.
             CartPole-v1 at --seeds × --num-envs × 500 steps; Breakout-MinAtar at --minatar-seeds
             × --num-envs × --minatar-steps. Memory: the compiled program's own footprint
             (`memory_analysis`) and the process peak so far (GPU: peak_bytes_in_use; CPU: max
             RSS), both monotone in the run order, which is by increasing size.
  profile    the default config's update split (--profile-seeds): jitted vmapped rollout alone,
             returns + loss + grad alone on that batch, the optimizer update alone, one full
             `train_step`, and env-only stepping of the same size.
  compile    lowering and compile seconds of the default config's whole run
             (`jax.jit(jax.vmap(pgjax.make_train(Config())))`) at --compile-seeds.
  solve      time to solve CartPole-v1 with the default config at --solve-seeds: train in chunks
             of --solve-chunk updates, after each chunk check the per-update IQM over seeds of the
             episode return; solved at the first update whose IQM ≥ 475. Wall seconds are read at
             the end of that chunk (an upper bound by < one chunk), without and with compile.
  precision  the default config's whole run at --precision-seeds under each of --precisions
             (`jax.default_matmul_precision`; "default" leaves XLA's choice): throughput and
             final return.
  torch      benchmarks.torch_reinforce (PyTorch + gymnasium, 1 env, update per episode, 32-32)
             in this process for --torch-budget seconds or until solved; steps/s and time-to-solve
             ratios against pgjax. Skipped with a note when torch is missing or --skip-torch.

Writes DIR/<tag>.json (all numbers, versions, git commit, device), DIR/<tag>.md (tables) and
DIR/<tag>_scaling.png (log-log throughput vs total parallel envs, pgjax vs env-only); DIR is
benchmarks/results/ and <tag> "benchmark" (or "benchmark_quick") unless --out / --tag say.
Does not import pgjax.cli (tyro, tqdm) or rliable, so it runs where only jax, flax, optax, chex,
gymnax and matplotlib are installed.
"""

import argparse
import contextlib
import functools
import gc
import resource
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax

import pgjax
from benchmarks.report import markdown, plot_scaling
from benchmarks.train_speed import env_only
from pgjax import runs, stats
from pgjax.components import build
from pgjax.train import init_state, loss_fn, make_optimizer, train_chunk, train_step

PARTS = ("ceiling", "train", "profile", "compile", "solve", "precision", "torch")
SOLVE_RETURN = 475.0
MINATAR = "Breakout-MinAtar"
CARTPOLE_STEPS = pgjax.Config().num_steps  # the default rollout window, 500
START = time.perf_counter()
SKIPPED: list[str] = []  # measurements skipped because --budget was spent


def log(msg: str) -> None:
    print(f"[{time.perf_counter() - START:7.1f} s] {msg}", flush=True)


# ---------------------------------------------------------------------------------------------
# measuring


def block(x):
    return jax.block_until_ready(x)


def compile_timed(fn, *args) -> tuple[object, float, float]:
    """(compiled, lower seconds, compile seconds) of `fn` (a jax.jit) on these arguments."""
    t0 = time.perf_counter()
    lowered = fn.lower(*args)
    t1 = time.perf_counter()
    compiled = lowered.compile()
    return compiled, t1 - t0, time.perf_counter() - t1


def program_bytes(compiled) -> int | None:
    """Bytes the compiled program holds at once: arguments + outputs + temporaries − aliased."""
    try:
        m = compiled.memory_analysis()
        total = m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes
        return int(total - m.alias_size_in_bytes)
    except Exception:  # not every backend reports it
        return None


def process_peak_bytes() -> tuple[int | None, str]:
    """Peak memory of this process so far: device peak on accelerators, max RSS on CPU."""
    device = jax.devices()[0]
    if device.platform != "cpu":
        try:
            stats = device.memory_stats() or {}
        except Exception:
            stats = {}
        if "peak_bytes_in_use" in stats:
            return int(stats["peak_bytes_in_use"]), "device peak_bytes_in_use"
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, "host max RSS"


def timed_calls(fn, arg, repeats: int, *, carry: bool) -> list[float]:
    """Wall seconds of `repeats` blocking calls; with `carry`, feed each output's [0] back in."""
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        out = block(fn(arg))
        times.append(time.perf_counter() - t)
        if carry:
            arg = out[0]
    return times


def iqm(x: np.ndarray) -> float:
    """`stats.iqm` over seeds, where a seed with no finished episode (NaN) counts as −∞."""
    return stats.iqm(np.where(np.isfinite(x), x, -np.inf))


def error_text(e: BaseException) -> str:
    text = f"{type(e).__name__}: {e}".strip().splitlines()
    return text[0][:300] if text else type(e).__name__


def free():
    gc.collect()


# ---------------------------------------------------------------------------------------------
# parts


def measure_env_only(env_name: str, seeds: int, num_envs: int, num_steps: int, repeats: int):
    env = pgjax.Env(env_name)
    keys = pgjax.seed_keys(0, seeds)
    compiled, lower_s, compile_s = compile_timed(env_only(env, seeds, num_envs, num_steps), keys)
    block(compiled(keys))  # warm-up
    times = timed_calls(compiled, keys, repeats, carry=False)
    steps = seeds * num_envs * num_steps
    peak, peak_kind = process_peak_bytes()
    return {
        "kind": "env_only", "env": env_name, "seeds": seeds, "num_envs": num_envs,
        "total_envs": seeds * num_envs, "num_steps": num_steps, "env_steps_per_call": steps,
        "compile_s": lower_s + compile_s, "call_s": times,
        "env_steps_per_second": steps / float(np.median(times)),
        "program_bytes": program_bytes(compiled), "process_peak_bytes": peak,
        "peak_kind": peak_kind,
    }


def measure_train(config: pgjax.Config, seeds: int, updates: int, repeats: int):
    """Steady-state train_chunk throughput of `seeds` seeds, `updates` updates per call."""
    keys = pgjax.seed_keys(0, seeds)
    state = block(jax.jit(jax.vmap(functools.partial(init_state, config)))(keys))
    step = jax.jit(
        jax.vmap(functools.partial(train_chunk, config, num_updates=updates)), donate_argnums=0
    )
    compiled, lower_s, compile_s = compile_timed(step, state)
    t = time.perf_counter()
    state, _ = block(compiled(state))  # warm-up
    warm_s = time.perf_counter() - t
    times = timed_calls(compiled, state, repeats, carry=True)
    steps = seeds * updates * config.steps_per_update
    peak, peak_kind = process_peak_bytes()
    return {
        "kind": "train", "env": config.env, "seeds": seeds, "num_envs": config.num_envs,
        "total_envs": seeds * config.num_envs, "num_steps": config.num_steps,
        "updates_per_call": updates, "env_steps_per_call": steps,
        "lower_s": lower_s, "compile_s": lower_s + compile_s, "warmup_call_s": warm_s,
        "call_s": times, "seconds_per_update": float(np.median(times)) / updates,
        "env_steps_per_second": steps / float(np.median(times)),
        "program_bytes": program_bytes(compiled), "process_peak_bytes": peak,
        "peak_kind": peak_kind,
    }


def part_ceiling(args, result, save):
    rows = result.setdefault("ceiling", [])
    sizes = sorted(set(args.seeds) | {n // args.num_envs for n in args.ceiling_envs})
    for seeds in sizes:
        if over_budget(args, f"ceiling {seeds} seeds"):
            break
        log(f"ceiling: CartPole-v1 env-only, {seeds} × {args.num_envs} envs × "
            f"{CARTPOLE_STEPS} steps")
        rows.append(guarded(measure_env_only, "CartPole-v1", seeds, args.num_envs, CARTPOLE_STEPS,
                            args.repeats, where={"env": "CartPole-v1", "seeds": seeds}))
        report_row(rows[-1])
        save()
    for seeds in args.minatar_seeds:
        if over_budget(args, f"ceiling {MINATAR} {seeds} seeds"):
            break
        log(f"ceiling: {MINATAR} env-only, {seeds} × {args.num_envs} envs × "
            f"{args.minatar_steps} steps")
        rows.append(guarded(measure_env_only, MINATAR, seeds, args.num_envs, args.minatar_steps,
                            args.repeats, where={"env": MINATAR, "seeds": seeds}))
        report_row(rows[-1])
        save()


def part_train(args, result, save):
    rows = result.setdefault("train", [])
    plans = [(pgjax.Config(num_envs=args.num_envs), s) for s in args.seeds]
    minatar = pgjax.Config(env=MINATAR, num_envs=args.num_envs, num_steps=args.minatar_steps)
    plans += [(minatar, s) for s in args.minatar_seeds]
    for config, seeds in plans:
        if over_budget(args, f"train {config.env} {seeds} seeds"):
            break
        log(f"train: {config.env}, {seeds} × {config.num_envs} envs × {config.num_steps} steps, "
            f"{args.updates} updates per call")
        rows.append(guarded(measure_train, config, seeds, args.updates, args.repeats,
                            where={"env": config.env, "seeds": seeds}))
        report_row(rows[-1])
        save()
        free()


def part_profile(args, result, save):
    """Where an update's time goes, default config: rollout, loss + grad, optimizer, all."""
    config = pgjax.Config(num_envs=args.num_envs)
    seeds = args.profile_seeds
    log(f"profile: default config, {seeds} × {config.num_envs} envs × {config.num_steps} steps")
    parts = build(config)
    opt = make_optimizer(config)
    keys = pgjax.seed_keys(0, seeds)
    state = block(jax.jit(jax.vmap(functools.partial(init_state, config)))(keys))

    def rollout_only(state, key):
        policy = functools.partial(parts.policy.apply, state.params["policy"])
        return pgjax.rollout(key, parts.env, policy, state.runner, config.num_steps)

    def loss_grad(params, batch, last_obs):
        return jax.value_and_grad(loss_fn, has_aux=True)(params, config, parts, batch, last_obs)

    def update(grads, opt_state, params):
        updates, opt_state = opt.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state

    def loss_grad_chunked(params, batch, last_obs):  # seeds in chunks: cache-sized on CPU
        chunk = functools.partial(jax.lax.map, batch_size=args.profile_map_batch)
        return chunk(lambda a: loss_grad(*a), (params, batch, last_obs))

    roll = jax.jit(jax.vmap(rollout_only))
    grad = jax.jit(jax.vmap(loss_grad))
    grad_chunked = jax.jit(loss_grad_chunked)
    upd = jax.jit(jax.vmap(update))
    full = jax.jit(jax.vmap(functools.partial(train_step, config)))
    runner, batch = block(roll(state, keys))
    (_, _), grads = block(grad(state.params, batch, runner.obs))
    block(grad_chunked(state.params, batch, runner.obs))
    block(upd(grads, state.opt_state, state.params))
    block(full(state, keys))
    stepper = env_only(parts.env, seeds, config.num_envs, config.num_steps)
    block(stepper(keys))

    calls = {
        "env_only_s": (stepper, keys),
        "rollout_s": (roll, state, keys),
        "loss_grad_s": (grad, state.params, batch, runner.obs),
        "loss_grad_chunked_s": (grad_chunked, state.params, batch, runner.obs),
        "optimizer_update_s": (upd, grads, state.opt_state, state.params),
        "train_step_s": (full, state, keys),
    }
    times = {k: [] for k in calls}
    for _ in range(args.profile_repeats):  # round-robin, so background load hits all alike
        for k, (fn, *a) in calls.items():
            t = time.perf_counter()
            block(fn(*a))
            times[k].append(time.perf_counter() - t)
    row = {k: float(np.median(v)) for k, v in times.items()}
    row |= {k.removesuffix("_s") + "_min_s": min(v) for k, v in times.items()}
    row |= {k + "_all": v for k, v in times.items()}
    row |= {
        "seeds": seeds, "num_envs": config.num_envs, "num_steps": config.num_steps,
        "hidden": list(config.hidden), "baseline": config.baseline,
        "loss_grad_chunk_seeds": args.profile_map_batch,
        "env_steps_per_update": seeds * config.steps_per_update,
        "parts_sum_s": row["rollout_s"] + row["loss_grad_s"] + row["optimizer_update_s"],
        "parts_sum_min_s": (row["rollout_min_s"] + row["loss_grad_min_s"]
                            + row["optimizer_update_min_s"]),
    }
    for k in ("env_only_s", "rollout_s", "loss_grad_s", "loss_grad_chunked_s",
              "optimizer_update_s", "train_step_s"):
        log(f"  {k:20s} median {row[k]:.4f} s, min {row[k.removesuffix('_s') + '_min_s']:.4f} s")
    result["profile"] = row
    save()


def part_compile(args, result, save):
    config = pgjax.Config(num_envs=args.num_envs)
    keys = pgjax.seed_keys(0, args.compile_seeds)
    log(f"compile: default config, whole run ({config.num_updates} updates), "
        f"{args.compile_seeds} seeds")

    def go():
        _, lower_s, compile_s = compile_timed(jax.jit(jax.vmap(pgjax.make_train(config))), keys)
        return {"seeds": args.compile_seeds, "num_updates": config.num_updates,
                "lower_s": lower_s, "compile_s": compile_s, "total_s": lower_s + compile_s}

    result["compile"] = guarded(go, where={"seeds": args.compile_seeds})
    report_row(result["compile"], keys=("lower_s", "compile_s", "total_s"))
    save()


def part_solve(args, result, save):
    config = pgjax.Config(num_envs=args.num_envs)
    seeds, n = args.solve_seeds, args.solve_chunk
    if config.num_updates % n:
        raise ValueError(f"--solve-chunk {n} must divide num_updates {config.num_updates}")
    log(f"solve: default config, {seeds} seeds, chunks of {n} updates, "
        f"IQM over seeds >= {SOLVE_RETURN:g}")
    result["solve"] = guarded(solve, config, seeds, n, args.solve_budget, where={"seeds": seeds})
    report_row(result["solve"], keys=("solved", "solve_update", "solve_wall_s",
                                      "solve_wall_s_with_compile", "final_iqm"))
    save()


def solve(config: pgjax.Config, seeds: int, chunk: int, budget_s: float) -> dict:
    keys = pgjax.seed_keys(0, seeds)
    t0 = time.perf_counter()
    init = jax.jit(jax.vmap(functools.partial(init_state, config))).lower(keys).compile()
    state = init(keys)
    step = jax.jit(
        jax.vmap(functools.partial(train_chunk, config, num_updates=chunk)), donate_argnums=0
    )
    step = step.lower(state).compile()
    compile_s = time.perf_counter() - t0

    t0 = time.perf_counter()
    state = block(init(keys))
    curve, chunk_end_s = [], []
    solved_update = None
    for first in range(0, config.num_updates, chunk):
        state, metrics = step(state)
        ret = np.asarray(metrics.episode_return)  # [seeds, chunk], syncs with the device
        chunk_end_s.append(time.perf_counter() - t0)
        for j in range(ret.shape[1]):
            curve.append(iqm(ret[:, j]))
            if solved_update is None and curve[-1] >= SOLVE_RETURN:
                solved_update = first + j + 1
        if solved_update is not None or chunk_end_s[-1] > budget_s:
            break
    wall = chunk_end_s[-1]
    updates_done = len(curve)
    steps_done = seeds * updates_done * config.steps_per_update
    final = np.asarray(metrics.episode_return)[:, -1]
    out = {
        "seeds": seeds, "chunk_updates": chunk, "num_updates": config.num_updates,
        "criterion": f"IQM over seeds of the per-update episode return >= {SOLVE_RETURN:g}",
        "method": "chunked training, IQM checked after each chunk; wall read at chunk end",
        "solved": solved_update is not None,
        "solve_update": solved_update,
        "solve_env_steps_per_seed": solved_update and solved_update * config.steps_per_update,
        "solve_wall_s": wall if solved_update else None,
        "solve_wall_s_with_compile": wall + compile_s if solved_update else None,
        "compile_s": compile_s,
        "updates_run": updates_done,
        "wall_s": wall,
        "env_steps_per_second": steps_done / wall,
        "final_iqm": curve[-1], "final_mean": float(np.nanmean(final)),
        "iqm_curve": curve, "chunk_end_s": chunk_end_s,
    }
    if not out["solved"]:
        out["note"] = f"not solved within {updates_done} updates / {budget_s:g} s budget"
    return out


def part_precision(args, result, save):
    rows = result.setdefault("precision", [])
    config = pgjax.Config(num_envs=args.num_envs)
    keys = pgjax.seed_keys(0, args.precision_seeds)
    for precision in args.precisions:
        if over_budget(args, f"precision {precision}"):
            break
        log(f"precision: {precision}, default config whole run, {args.precision_seeds} seeds")
        rows.append(guarded(precision_run, config, keys, precision,
                            where={"precision": precision}))
        report_row(rows[-1], keys=("compile_s", "run_s", "env_steps_per_second", "final_iqm"))
        save()
        free()


def precision_run(config: pgjax.Config, keys: jax.Array, precision: str) -> dict:
    ctx = (contextlib.nullcontext() if precision == "default"
           else jax.default_matmul_precision(precision))
    with ctx:
        compiled, lower_s, compile_s = compile_timed(
            jax.jit(jax.vmap(pgjax.make_train(config))), keys
        )
    t = time.perf_counter()
    _, metrics = block(compiled(keys))
    run_s = time.perf_counter() - t
    ret = np.asarray(metrics.episode_return)
    curve = [iqm(ret[:, j]) for j in range(ret.shape[1])]
    solved = next((j + 1 for j, v in enumerate(curve) if v >= SOLVE_RETURN), None)
    seeds = ret.shape[0]
    return {
        "precision": precision, "seeds": seeds, "compile_s": lower_s + compile_s,
        "run_s": run_s,
        "env_steps_per_second": seeds * config.num_updates * config.steps_per_update / run_s,
        "final_iqm": curve[-1], "final_mean": float(np.nanmean(ret[:, -1])),
        "seeds_at_or_above_475": int((ret[:, -1] >= SOLVE_RETURN).sum()),
        "first_update_iqm_at_475": solved,
    }


def part_torch(args, result, save):
    if args.skip_torch:
        result["torch"] = {"skipped": "--skip-torch"}
        log("torch: skipped (--skip-torch)")
        save()
        return
    try:
        from benchmarks import torch_reinforce
    except ImportError as e:
        note = f"torch or gymnasium missing ({e}); pip install -e '.[bench]' to compare"
        result["torch"] = {"skipped": note}
        log(f"torch: skipped: {note}")
        save()
        return
    log(f"torch: textbook REINFORCE, 1 env, budget {args.torch_budget:g} s or until solved")
    out = guarded(torch_reinforce.run, args.torch_budget, log_every_s=10.0, where={})
    result["torch"] = out
    report_row(out, keys=("env_steps_per_second", "solved", "solve_wall_s",
                          "best_running_return", "env_steps"))
    save()


def comparisons(result: dict) -> dict:
    """pgjax vs env-only and vs PyTorch ratios, from whatever parts ran."""
    out = {}
    train = [r for r in result.get("train", []) if "env_steps_per_second" in r]
    ceiling = {(r["env"], r["seeds"]): r for r in result.get("ceiling", [])
               if "env_steps_per_second" in r}
    for r in train:
        c = ceiling.get((r["env"], r["seeds"]))
        if c:
            r["train_over_env_only"] = r["env_steps_per_second"] / c["env_steps_per_second"]
    torch_r = result.get("torch", {})
    if "env_steps_per_second" in torch_r:
        cart = [r for r in train if r["env"] == "CartPole-v1"]
        if cart:
            best = max(cart, key=lambda r: r["env_steps_per_second"])
            out["steps_per_second_pgjax_best_over_torch"] = (
                best["env_steps_per_second"] / torch_r["env_steps_per_second"])
            out["steps_per_second_pgjax_best_at_seeds"] = best["seeds"]
        solve_r = result.get("solve", {})
        if solve_r.get("solved"):
            if torch_r.get("solved"):
                t = torch_r["solve_wall_s"]
                out["time_to_solve_torch_over_pgjax"] = t / solve_r["solve_wall_s"]
                out["time_to_solve_torch_over_pgjax_with_compile"] = (
                    t / solve_r["solve_wall_s_with_compile"])
            else:
                t = torch_r["wall_s"]
                out["time_to_solve_torch_over_pgjax_at_least"] = t / solve_r["solve_wall_s"]
                out["time_to_solve_torch_over_pgjax_with_compile_at_least"] = (
                    t / solve_r["solve_wall_s_with_compile"])
            out["time_to_solve_note"] = (
                f"pgjax solves {solve_r['seeds']} seeds at once (IQM over seeds); torch is one "
                "seed (running return)")
    return out


# ---------------------------------------------------------------------------------------------
# plumbing


def guarded(fn, *a, where: dict, **kw) -> dict:
    """Run one measurement; an error (out of memory, say) is recorded, not raised."""
    try:
        return fn(*a, **kw)
    except Exception as e:  # a failed size must not cost the rest of the suite
        log(f"  FAILED {where}: {error_text(e)}")
        return where | {"error": error_text(e)}


def over_budget(args, what: str) -> bool:
    if args.budget is not None and time.perf_counter() - START > args.budget:
        log(f"  budget of {args.budget:g} s spent: skipping {what}")
        SKIPPED.append(what)
        return True
    return False


def report_row(row: dict, keys=("env_steps_per_second", "compile_s")) -> None:
    if "error" in row:
        return
    parts = []
    for k in keys:
        v = row.get(k)
        parts.append(f"{k}={v:,.3f}" if isinstance(v, float) else f"{k}={v}")
    log("  " + ", ".join(parts))


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.run", description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--quick", action="store_true", help="small sizes: a check that it all runs")
    p.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    p.add_argument("--tag", help="output file stem (default: benchmark or benchmark_quick)")
    p.add_argument("--parts", nargs="+", choices=PARTS, default=list(PARTS))
    p.add_argument("--seeds", type=int, nargs="+", help="seed counts (default 1 16 256 1024)")
    p.add_argument("--num-envs", type=int, default=64, help="envs per seed")
    p.add_argument("--ceiling-envs", type=int, nargs="*",
                   help="extra total env counts for env-only CartPole (default 16384 131072)")
    p.add_argument("--minatar-seeds", type=int, nargs="*", help="Breakout-MinAtar seed counts")
    p.add_argument("--minatar-steps", type=int, help="Breakout-MinAtar rollout length")
    p.add_argument("--updates", type=int, help="updates per timed call (train part)")
    p.add_argument("--repeats", type=int, help="timed calls per size")
    p.add_argument("--profile-seeds", type=int, default=16)
    p.add_argument("--profile-repeats", type=int, default=5)
    p.add_argument("--profile-map-batch", type=int, default=1,
                   help="seeds per chunk in the profile's chunked loss + grad diagnostic")
    p.add_argument("--compile-seeds", type=int)
    p.add_argument("--solve-seeds", type=int)
    p.add_argument("--solve-chunk", type=int, default=4, help="updates between solve checks")
    p.add_argument("--solve-budget", type=float, default=600.0,
                   help="stop the solve run after this many seconds of training")
    p.add_argument("--precision-seeds", type=int)
    p.add_argument("--precisions", nargs="+", default=["default", "float32", "bfloat16"],
                   choices=["default", "float32", "tensorfloat32", "bfloat16"])
    p.add_argument("--skip-torch", action="store_true")
    p.add_argument("--torch-budget", type=float, help="PyTorch baseline wall seconds at most")
    p.add_argument("--budget", type=float,
                   help="soft budget in seconds: measurements that would start later are skipped")
    args = p.parse_args(argv)
    quick = args.quick
    defaults = {
        "seeds": [1, 4, 16] if quick else [1, 16, 256, 1024],
        "ceiling_envs": [] if quick else [16384, 131072],
        "minatar_seeds": [1, 4] if quick else [1, 16, 256],
        "minatar_steps": 64 if quick else 128,
        "updates": 2 if quick else 3,
        "repeats": 2 if quick else 3,
        "compile_seeds": 4 if quick else 16,
        "solve_seeds": 8 if quick else 16,
        "precision_seeds": 2 if quick else 16,
        "torch_budget": 20.0 if quick else 60.0,
        "tag": "benchmark_quick" if quick else "benchmark",
    }
    if quick and args.precisions == p.get_default("precisions"):
        args.precisions = ["default", "bfloat16"]
    for k, v in defaults.items():
        if getattr(args, k) is None:
            setattr(args, k, v)
    num_updates = pgjax.Config(num_envs=args.num_envs).num_updates
    if args.solve_chunk < 1 or num_updates % args.solve_chunk:
        p.error(f"--solve-chunk must divide the default run's {num_updates} updates")
    args.seeds = sorted(set(args.seeds))
    args.minatar_seeds = sorted(set(args.minatar_seeds))
    return args


def main(argv=None):
    args = parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    json_path = args.out / f"{args.tag}.json"
    md_path = args.out / f"{args.tag}.md"
    png_path = args.out / f"{args.tag}_scaling.png"
    result = {
        "mode": "quick" if args.quick else "full",
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "command": " ".join(["python -m benchmarks.run", *sys.argv[1:]]),
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "provenance": runs.provenance(),
        "jax_default_matmul_precision": jax.config.jax_default_matmul_precision,
    }
    log(f"device {result['provenance']['devices']}, git {result['provenance']['git_commit']}, "
        f"parts {' '.join(args.parts)} -> {json_path}")

    def save():
        result["comparisons"] = comparisons(result)
        result["skipped_for_budget"] = SKIPPED
        runs.write_json(json_path, result)
        md_path.write_text(markdown(result))
        plot_scaling(png_path, result)

    parts = {"ceiling": part_ceiling, "train": part_train, "profile": part_profile,
             "compile": part_compile, "solve": part_solve, "precision": part_precision,
             "torch": part_torch}
    for name in PARTS:
        if name in args.parts and not over_budget(args, f"part {name}"):
            try:
                parts[name](args, result, save)
            except Exception as e:  # e.g. out of memory in the profile: keep the other parts
                log(f"  part {name} FAILED: {error_text(e)}")
                result.setdefault("part_errors", {})[name] = error_text(e)
            free()
    save()
    log(f"wrote {json_path}, {md_path}" + (f", {png_path}" if png_path.exists() else ""))
    print(md_path.read_text(), flush=True)


if __name__ == "__main__":
    jnp.zeros(())  # start the backend before the clock matters
    main()
