"""A training run on the host: jitted chunks, progress, checkpoints, resume, run directory."""

import functools
import json
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec
from tqdm.auto import tqdm

from pgjax import runs
from pgjax.checkpoint import Checkpoints
from pgjax.config import Config
from pgjax.envs import save_gif
from pgjax.evaluate import evaluate
from pgjax.loggers import make_loggers
from pgjax.train import init_state, make_networks, train_chunk


def chunk_length(num_updates: int, num_chunks: int) -> int:
    """Largest divisor of num_updates that is at most num_updates / num_chunks (one compile)."""
    target = max(1, num_updates // max(1, num_chunks))
    return max(d for d in range(1, target + 1) if num_updates % d == 0)


def seed_sharding(seeds: int) -> NamedSharding | None:
    """Seeds axis split over the local devices, when there are several and they divide it."""
    devices = jax.local_devices()
    if len(devices) > 1 and seeds % len(devices) == 0:
        return NamedSharding(Mesh(np.array(devices), ("seeds",)), PartitionSpec("seeds"))
    return None


def seed_keys(seed: int, seeds: int) -> jax.Array:
    """Key of seed i = jax.random.split(jax.random.key(seed), seeds)[i], sharded over devices."""
    keys = jax.random.split(jax.random.key(seed), seeds)
    sharding = seed_sharding(seeds)
    return keys if sharding is None else jax.device_put(keys, sharding)


def load_run(run_dir: Path) -> tuple[Config, dict]:
    """The Config and the record stored in RUN_DIR/config.json."""
    record = json.loads((run_dir / "config.json").read_text())
    fields = dict(record["config"])
    fields["hidden"] = tuple(fields["hidden"])
    return Config(**fields), record


def train_run(
    config: Config,
    run_dir: Path,
    *,
    seeds: int = 16,
    seed: int = 0,
    chunks: int = 20,
    checkpoint_every: int = 5,
    progress: bool = True,
    resume: bool = False,
    log: tuple[str, ...] = (),
) -> tuple[Path, dict]:
    """Train `seeds` seeds in jitted chunks into `run_dir` (see runs.prepare_run_dir).

    Checkpoints the whole vmapped TrainState every `checkpoint_every` chunks and at the end. With
    `resume=True`, `run_dir` holds a run: training continues from its newest readable checkpoint
    with the stored config (`config` is ignored) and ends with the numbers of an uninterrupted run.

    `log` names extra loggers (pgjax.loggers: "tensorboard", "wandb"); on resume the stored ones.

    Returns:
      (run_dir, summary), the summary as written to summary.json.
    """
    if resume:
        config, record = load_run(run_dir)
        seeds, seed, n = record["seeds"], record["seed"], record["chunk_updates"]
        log = tuple(record.get("log", ()))
    else:
        n = chunk_length(config.num_updates, chunks)
        record = runs.config_record(config, seeds=seeds, seed=seed, chunk_updates=n, log=log)
        runs.write_json(run_dir / "config.json", record)
    loggers = make_loggers(log, run_dir, record)

    t0 = time.perf_counter()
    shard = seed_sharding(seeds)  # every leaf of state and metrics has a leading seeds axis
    init = jax.jit(jax.vmap(functools.partial(init_state, config)), out_shardings=shard)
    state = init(seed_keys(seed, seeds))
    step = jax.jit(
        jax.vmap(functools.partial(train_chunk, config, num_updates=n)),
        in_shardings=shard, out_shardings=shard, donate_argnums=0,
    )
    step = step.lower(state).compile()
    compile_seconds = time.perf_counter() - t0

    ckpt = Checkpoints(run_dir)
    start = 0
    if resume and ckpt.steps():
        start, state = ckpt.restore(state)
    csv = runs.MetricsCSV(run_dir / "metrics.csv", seeds, keep_updates=start if resume else None)
    steps_per_chunk = seeds * n * config.steps_per_update
    t1 = time.perf_counter()
    with tqdm(
        total=seeds * config.num_updates * config.steps_per_update, unit="step", unit_scale=True,
        disable=not progress, desc=config.env, dynamic_ncols=True,
        initial=seeds * start * config.steps_per_update,
    ) as bar:
        for c in range(start // n, config.num_updates // n):
            state, metrics = step(state)
            metrics = jax.tree.map(np.asarray, metrics)
            rows = csv.append(c * n, config.steps_per_update, metrics, time.perf_counter() - t1)
            for logger in loggers:
                logger.log(rows)
            bar.update(steps_per_chunk)
            bar.set_postfix(ret=f"{np.nanmean(metrics.episode_return[:, -1]):.1f}")
            last = c + 1 == config.num_updates // n
            if last or (c + 1) % checkpoint_every == 0:
                ckpt.save((c + 1) * n, state)
    wall = time.perf_counter() - t1
    ckpt.close()
    for logger in loggers:
        logger.close()

    returns = csv.returns()  # [seeds, updates], also rows written before a resume
    env_steps = np.arange(1, returns.shape[1] + 1) * config.steps_per_update
    summary = {
        "env": config.env,
        "seeds": seeds,
        "env_steps_per_seed": int(env_steps[-1]),
        "final_return": runs.score_summary(returns[:, -1]),
        "env_steps_per_second": seeds * (config.num_updates - start) * config.steps_per_update
        / wall,
        "wall_seconds": wall,
        "compile_seconds": compile_seconds,
        "resumed_from_update": start if resume else None,
    }
    runs.write_json(run_dir / "summary.json", summary)
    runs.plot_curve(run_dir / "curve.png", env_steps, returns, f"{config.env}, REINFORCE")
    return run_dir, summary


def restore_run(run_dir: Path, step: int | None = None):
    """(config, record, update, state) of a run's checkpoint (newest readable by default)."""
    config, record = load_run(run_dir)
    init = jax.jit(jax.vmap(functools.partial(init_state, config)))
    like = init(seed_keys(record["seed"], record["seeds"]))
    ckpt = Checkpoints(run_dir)
    try:
        update, state = ckpt.restore(like, step)
    finally:
        ckpt.close()
    return config, record, update, state


def evaluate_run(
    run_dir: Path, *, episodes: int = 100, step: int | None = None, seed: int = 0
) -> dict:
    """Greedy and sampled returns of every seed's policy over `episodes` episodes."""
    config, record, update, state = restore_run(run_dir, step)
    keys = jax.random.split(jax.random.key(seed), record["seeds"])
    result = {"checkpoint_update": update, "episodes": episodes, "eval_seed": seed}
    for mode in ("greedy", "sampled"):
        fn = functools.partial(evaluate, config, num_episodes=episodes, greedy=mode == "greedy")
        returns = np.asarray(jax.jit(jax.vmap(fn))(state.params["policy"], keys))
        result[mode] = {"per_seed_mean": returns.mean(1).tolist(), "mean": float(returns.mean())}
    return result


def render_episode(
    run_dir: Path, path: Path, *, step: int | None = None, seed: int = 0, run: int = 0,
    greedy: bool = True,
) -> float:
    """Play one episode of seed `run`'s policy and save it as a GIF; returns its return."""
    config, _, _, state = restore_run(run_dir, step)
    nets = make_networks(config)
    params = jax.tree.map(lambda x: x[run], state.params["policy"])

    @jax.jit
    def act_and_step(key, env_state, obs):
        k_act, k_env = jax.random.split(key)
        dist = nets.policy.apply(params, obs[None])
        action = (dist.mode() if greedy else dist.sample(k_act))[0]
        return nets.env.env.step(k_env, env_state, action, nets.env.params)

    key, k_reset = jax.random.split(jax.random.key(seed))
    obs, env_state = nets.env.env.reset(k_reset, nets.env.params)
    states, rewards = [env_state], [0.0]
    for _ in range(nets.env.max_episode_steps):
        key, k = jax.random.split(key)
        obs, next_state, reward, terminated, truncated, _ = act_and_step(
            k, env_state, jnp.asarray(obs, jnp.float32).reshape(-1)
        )
        rewards.append(rewards[-1] + float(reward))
        if terminated or truncated:
            break
        env_state = next_state
        states.append(env_state)
    save_gif(nets.env, states, rewards[: len(states)], path)
    return rewards[-1]


def compare_metrics(a: Path, b: Path) -> str | None:
    """None when the two metrics.csv agree bitwise (wall time aside), else the first difference."""
    ra, rb = runs.read_metrics(a), runs.read_metrics(b)
    if ra.keys() != rb.keys() or len(ra["update"]) != len(rb["update"]):
        return "the metrics tables have different columns or lengths"
    for k in ra:
        if k == "wall_seconds":
            continue
        same = (ra[k] == rb[k]) | (np.isnan(ra[k]) & np.isnan(rb[k]))
        if not same.all():
            j = int(np.argmin(same))
            return f"update {int(ra['update'][j])}, {k}: {ra[k][j]!r} vs {rb[k][j]!r}"
    return None


def format_summary(summary: dict, run_dir: Path) -> str:
    final = summary["final_return"]
    lo, hi = final["ci95"]
    rows = [
        ("env", summary["env"]),
        ("seeds", str(summary["seeds"])),
        ("env steps per seed", f"{summary['env_steps_per_seed']:,}"),
        ("final return, mean", f"{final['mean']:.2f}"),
        ("final return, IQM [95% CI]", f"{final['iqm']:.2f} [{lo:.2f}, {hi:.2f}]"),
        ("final return, min / max", f"{np.nanmin(final['per_seed']):.2f} / "
                                    f"{np.nanmax(final['per_seed']):.2f}"),
        ("env steps / s", f"{summary['env_steps_per_second']:,.0f}"),
        ("wall s (compile s)", f"{summary['wall_seconds']:.1f} ({summary['compile_seconds']:.1f})"),
        ("run directory", str(run_dir)),
    ]
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)

