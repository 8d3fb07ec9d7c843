"""Time to solve CartPole: pgjax against rejax's PPO, wall seconds until the IQM reaches 475.

    python -m benchmarks.time_to_solve [--rounds 4] [--seeds 16] [--threshold 475]
                                       [--pgjax-config JSON ...] [--rejax-venv DIR]
                                       [--rejax-timesteps N] [--out NAME]

The figure a user feels: wall time, compile excluded, until the interquartile mean (IQM) over the
seeds of the per-seed return first reaches the threshold, with all seeds trained vmapped in one
jitted program on this CPU.

Two worker processes, each in its own environment, compile first (compile seconds reported
apart) and then run when told, alternately: pgjax (every --pgjax-config in turn), rejax, pgjax,
rejax, ... for --rounds rounds, so a shared machine's load falls on both alike.

- pgjax runs from this checkout's .venv: `jax.jit(jax.vmap(pgjax.make_train(Config(**fields))))`
  over `pgjax.seed_keys(0, seeds)`. Its return curve is `Metrics.episode_return` [seeds, updates]:
  the mean return of the training episodes (sampled actions) that finished in each update.
- rejax 0.1.3 needs gymnax 0.0.9 (it unpacks five values from `env.step`; gymnax 1.0 returns
  six), so it runs from a virtual environment of its own, made here with pinned versions
  (`REJAX_PINS`) when missing and reused when present. Its PPO is made with
  `rejax.get_algo("ppo").create(**REJAX_CARTPOLE_PPO)`: the `ppo` entry of rejax's
  configs/gymnax/cartpole.yaml (the configs are in rejax's repository, not in its wheel). rejax's
  `train` calls `eval_callback(algo, ts, ts.rng)` every `eval_freq` env steps; its default
  callback plays 128 episodes with sampled actions inside the training program. The timed
  program here replaces that callback with one that only returns the actor's parameters and
  the rng it was given (training is unchanged: the callback does not touch the train state);
  after the first timed run, rejax's own callback is applied to those snapshots, untimed, giving
  exactly the evaluation curve its `train` would have returned. The seconds that evaluation takes
  are reported as `eval s` (what rejax's `train` with its default callback would add).

Time to the threshold: the first point of the curve (pgjax: update, rejax: eval point) whose IQM
over seeds reaches it gives env steps per seed S; the time is S / (env steps per seed of the
run) × the run's wall seconds, i.e. it assumes a constant training rate within a run (both
programs are one scan of equal updates). Curves are deterministic (same program, same keys), and
each round checks that they are. Writes benchmarks/results/<out>.json and .md.
"""

import argparse
import hashlib
import json
import os
import platform
import shlex
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_REJAX_VENV = Path("/work/venvs/rejax")
# Resolved together on CPython 3.11, 2026-12-07 (tfp-nightly comes with distrax).
REJAX_PINS = (
    "rejax==0.1.3", "gymnax==0.0.9", "jax==0.10.2", "jaxlib==0.10.2", "flax==0.12.8",
    "optax==0.2.8", "distrax==0.1.9", "chex==0.1.92", "numpy==2.4.6",
    "tfp-nightly==0.26.0.dev20261027",
)
# rejax's configs/gymnax/cartpole.yaml, entry `ppo` (the same in configs/cartpole.yaml).
REJAX_CARTPOLE_PPO = {
    "env": "CartPole-v1", "agent_kwargs": {"activation": "tanh"}, "num_envs": 5,
    "num_steps": 100, "num_epochs": 5, "num_minibatches": 5, "learning_rate": 0.00075,
    "max_grad_norm": 0.5, "total_timesteps": 100_000, "eval_freq": 1000, "gamma": 0.99,
    "gae_lambda": 0.95, "clip_eps": 0.2, "ent_coef": 0.01, "vf_coef": 0.5,
}
PGJAX_CONFIGS = (
    "{}",
    '{"num_envs": 8, "total_timesteps": 500000}',
    '{"estimator": "gae", "num_envs": 16, "num_steps": 32, "total_timesteps": 500000, '
    '"update_epochs": 4, "minibatches": 4, "clip_eps": 0.2, "ent_coef": 0.01, "lr": 5e-4, '
    '"lr_schedule": "constant", "hidden": [64, 64]}',
)


# ---------------------------------------------------------------- workers (one per environment)

class Channel:
    """JSON lines to the parent on the process's original stdout; stdout itself goes to stderr,
    so library prints cannot corrupt the protocol."""

    def __init__(self):
        self.out = os.fdopen(os.dup(1), "w")
        os.dup2(2, 1)
        sys.stdout = sys.stderr

    def send(self, **message):
        self.out.write(json.dumps(message) + "\n")
        self.out.flush()

    @staticmethod
    def requests():
        for line in sys.stdin:
            if line.strip():
                yield json.loads(line)


def serve(programs: dict, run_one, info: dict):
    """Compile every program, report, then run programs by name until stdin closes."""
    channel = Channel()
    compile_s = {}
    for name, compile_fn in programs.items():
        t = time.perf_counter()
        programs[name] = compile_fn()
        compile_s[name] = time.perf_counter() - t
    channel.send(event="ready", compile_s=compile_s, **info)
    for request in channel.requests():
        channel.send(event="result", name=request["name"], **run_one(request["name"]))


def pgjax_worker(spec: dict):
    """Programs: one per config, `jax.jit(jax.vmap(make_train(config)))` on the seed keys."""
    import jax

    import pgjax
    from pgjax import runs

    keys = pgjax.seed_keys(0, spec["seeds"])
    configs = {name: pgjax.Config(**{k: tuple(v) if isinstance(v, list) else v
                                      for k, v in fields.items()}).validate()
               for name, fields in spec["configs"].items()}

    def compiler(config):
        return lambda: jax.jit(jax.vmap(pgjax.make_train(config))).lower(keys).compile()

    programs = {name: compiler(config) for name, config in configs.items()}

    def run_one(name):
        config = configs[name]
        t = time.perf_counter()
        _, metrics = jax.block_until_ready(programs[name](keys))
        wall = time.perf_counter() - t
        returns = np.asarray(metrics.episode_return, np.float64)  # [seeds, updates]
        steps = (np.arange(config.num_updates) + 1) * config.steps_per_update
        return {"wall_s": wall, "env_steps": steps.tolist(), "returns": returns.tolist(),
                "steps_per_seed": config.num_updates * config.steps_per_update,
                "digest": digest([returns])}

    serve(programs, run_one, {"jax": jax.__version__, "provenance": runs.provenance()})


def rejax_worker(spec: dict):
    """One program: rejax PPO's `train`, vmapped over seeds, with a snapshot eval callback."""
    from types import SimpleNamespace

    import jax
    import rejax

    config = dict(REJAX_CARTPOLE_PPO, total_timesteps=spec["total_timesteps"])
    algo = rejax.get_algo("ppo").create(**config)
    own_eval = algo.eval_callback  # 128 episodes, sampled actions (rejax.evaluate)

    def snapshot(algo, ts, rng):
        del algo
        out = {"params": ts.actor_ts.params, "rng": rng}
        if getattr(ts, "obs_rms_state", None) is not None:
            out["obs_rms_state"] = ts.obs_rms_state
        return out

    timed = algo.replace(eval_callback=snapshot)
    keys = jax.random.split(jax.random.key(0), spec["seeds"])

    def evaluate_seed(snaps):  # leaves [evals, ...] of one seed -> [evals] mean eval return
        def one(snap):
            ts = SimpleNamespace(actor_ts=SimpleNamespace(params=snap["params"]),
                                 obs_rms_state=snap.get("obs_rms_state"))
            _, returns = own_eval(algo, ts, snap["rng"])
            return returns.mean()

        return jax.lax.map(one, snaps)

    per_eval = int(np.ceil(algo.eval_freq / (algo.num_envs * algo.num_steps)))
    steps_per_eval = per_eval * algo.num_envs * algo.num_steps
    num_evals = int(np.ceil(algo.total_timesteps / algo.eval_freq))
    steps = np.arange(num_evals + 1) * steps_per_eval  # eval 0 is before training
    programs = {"rejax": lambda: jax.jit(jax.vmap(timed.train)).lower(keys).compile()}
    evaluated = {}  # digest of the snapshots -> (curve, eval seconds)

    def run_one(name):
        t = time.perf_counter()
        _, snaps = jax.block_until_ready(programs[name](keys))
        wall = time.perf_counter() - t
        key = digest(jax.tree.leaves(snaps["params"]))
        if key not in evaluated:  # untimed: rejax's own evaluation of each snapshot
            t = time.perf_counter()
            curve = jax.block_until_ready(jax.jit(jax.vmap(evaluate_seed))(snaps))
            evaluated[key] = (np.asarray(curve, np.float64), time.perf_counter() - t)
        returns, eval_s = evaluated[key]
        return {"wall_s": wall, "env_steps": steps[1:].tolist(), "returns": returns[:, 1:].tolist(),
                "initial_returns": returns[:, 0].tolist(),
                "steps_per_seed": num_evals * steps_per_eval, "eval_s": eval_s, "digest": key}

    from importlib import metadata
    versions = {p.split("==")[0]: metadata.version(p.split("==")[0]) for p in REJAX_PINS}
    serve(programs, run_one, {"jax": jax.__version__, "versions": versions, "config": config})


def digest(arrays) -> str:
    h = hashlib.sha256()
    for a in arrays:
        h.update(np.ascontiguousarray(np.asarray(a)).tobytes())
    return h.hexdigest()[:16]


# ---------------------------------------------------------------- parent

def ensure_rejax_venv(venv: Path) -> dict:
    """The venv's Python, made with REJAX_PINS if missing or not matching them; its freeze."""
    python = venv / "bin" / "python"
    check = ("import json, importlib.metadata as m, sys\n"
             "pins = dict(p.split('==') for p in sys.argv[1:])\n"
             "def v(n):\n  try: return m.version(n)\n  except m.PackageNotFoundError: return None\n"
             "sys.exit(0 if all(v(n) == want for n, want in pins.items()) else 1)")
    made = False
    if not (python.exists() and subprocess.run([python, "-c", check, *REJAX_PINS]).returncode == 0):
        print(f"making the rejax venv at {venv} ({' '.join(REJAX_PINS)})", file=sys.stderr)
        if not python.exists():
            subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([python, "-m", "pip", "install", "-q", *REJAX_PINS], check=True)
        made = True
    freeze = subprocess.run([python, "-m", "pip", "freeze"], capture_output=True, text=True,
                            check=True).stdout.split()
    return {"python": str(python), "made_now": made, "pins": list(REJAX_PINS), "freeze": freeze}


class Worker:
    """A worker subprocess: started, waited on until it has compiled, then asked to run."""

    def __init__(self, python: str, side: str, spec: dict):
        cmd = [python, "-m", "benchmarks.time_to_solve", "--worker", side, "--spec",
               json.dumps(spec)]
        self.proc = subprocess.Popen(cmd, cwd=ROOT, stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True)
        self.side = side

    def receive(self) -> dict:
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the {self.side} worker exited (code {self.proc.wait()})")
        return json.loads(line)

    def run(self, name: str) -> dict:
        self.proc.stdin.write(json.dumps({"name": name}) + "\n")
        self.proc.stdin.flush()
        return self.receive()

    def close(self):
        self.proc.stdin.close()
        self.proc.wait()


def solve_stats(result: dict, threshold: float) -> dict:
    """IQM curve, env steps to the threshold, final IQM and worst seed of one run's curve."""
    from pgjax import stats

    returns = np.asarray(result["returns"], np.float64)  # [seeds, points]
    steps = np.asarray(result["env_steps"])
    iqm = np.array([stats.iqm(col[np.isfinite(col)]) if np.isfinite(col).any() else np.nan
                    for col in returns.T])
    final = returns[:, -1]
    return {"steps_to": stats.first_reaching(steps, returns, threshold),
            "final_iqm": float(iqm[-1]), "worst_seed": float(np.nanmin(final)),
            "seeds_at_threshold": int((final >= threshold).sum()),
            "iqm_curve": {"env_steps": steps.tolist(),
                          "iqm": [None if not np.isfinite(x) else float(x) for x in iqm]}}


def summarize(label: str, runs: list[dict], compile_s: float, seeds: int,
              threshold: float) -> dict:
    """Per-round times to the threshold and their medians, from the runs of one program."""
    solved = solve_stats(runs[0], threshold)
    digests = {r["digest"] for r in runs}
    total = runs[0]["steps_per_seed"]
    walls = [r["wall_s"] for r in runs]
    to = solved["steps_to"]
    times = [None if to is None else to / total * w for w in walls]
    out = {"label": label, "compile_s": compile_s, "steps_per_seed": total,
           "steps_to_threshold": to, "wall_s": walls,
           "seconds_to_threshold": times,
           "median_seconds_to_threshold": None if to is None else float(np.median(times)),
           "median_wall_s": float(np.median(walls)),
           "env_steps_per_s": [seeds * total / w for w in walls],
           "median_env_steps_per_s": float(np.median([seeds * total / w for w in walls])),
           "deterministic": len(digests) == 1, **{k: v for k, v in solved.items()
                                                   if k != "steps_to"}}
    if "eval_s" in runs[0]:
        out["eval_s"] = runs[0]["eval_s"]
    return out


def at_steps(result: dict, steps: int) -> dict | None:
    """IQM and worst seed of a curve at `steps` env steps per seed (None if it has no such
    point): rejax's figures at its config's own budget when --rejax-timesteps runs longer."""
    from pgjax import stats

    if steps not in result["env_steps"]:
        return None
    col = np.asarray(result["returns"], np.float64)[:, result["env_steps"].index(steps)]
    return {"env_steps": steps, "iqm": stats.iqm(col), "worst_seed": float(col.min())}


def fmt(x, spec: str, none: str = "not reached") -> str:
    return none if x is None else format(x, spec)


def markdown(result: dict) -> str:
    """The results table, the per-round ratios and the run's conditions."""
    m, th = result["machine"], result["threshold"]
    dirty = str(result["pgjax"]["git_commit"]).endswith("-dirty")
    lines = [
        f"# Time to solve CartPole-v1 (IQM over {result['seeds']} seeds ≥ {th:g})", "",
        f"`{result['command']}` — {result['date']}, {m['cpu']} ({m['nproc']} cores), load "
        f"average {m['loadavg_start'][0]:.1f} at start, {m['loadavg_end'][0]:.1f} at end; "
        f"{result['rounds']} rounds, alternating pgjax / rejax. pgjax: jax "
        f"{result['pgjax']['jax']} (commit {str(result['pgjax']['git_commit'])[:10]}"
        f"{', working tree modified' if dirty else ''}"
        f"{', pgjax/ modified' if result['pgjax']['pgjax_dirty'] else ''}); rejax "
        f"{result['rejax']['versions']['rejax']}: jax {result['rejax']['jax']}, gymnax "
        f"{result['rejax']['versions']['gymnax']}.", "",
        "| program | compile s | env steps to 475 (per seed) | wall s to 475 (median) | "
        "run wall s (median) | final IQM | worst seed | env steps/s (median) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for p in result["programs"].values():
        lines.append(
            f"| {p['label']} | {p['compile_s']:.1f} | {fmt(p['steps_to_threshold'], ',')} | "
            f"{fmt(p['median_seconds_to_threshold'], '.2f')} | {p['median_wall_s']:.2f} | "
            f"{p['final_iqm']:.1f} | {p['worst_seed']:.1f} | "
            f"{p['median_env_steps_per_s']:,.0f} |")
    lines += ["", "rejax time to 475 / pgjax time to 475, per round and median:", "",
              "| pgjax config | " + " | ".join(f"round {i + 1}" for i in range(result["rounds"]))
              + " | median |", "| --- |" + " --- |" * (result["rounds"] + 1)]
    for label, r in result["ratios"].items():
        cells = [fmt(x, ".2f", "n/a") for x in r["per_round"]]
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {fmt(r['median'], '.2f', 'n/a')} |")
    rj = result["programs"]["rejax"]
    lines += ["", "Configs:", ""]
    for name, p in result["programs"].items():
        cfg = result["pgjax"]["config_fields"].get(name, result["rejax"]["config"])
        lines.append(f"- {p['label']}: `{json.dumps(cfg)}`")
    lines += ["", "Notes:", "",
              f"- rejax's `train` with its own eval callback (128 episodes every "
              f"{result['rejax']['config']['eval_freq']} steps, in the training program) would "
              f"add about {rj.get('eval_s', float('nan')):.1f} s to its run wall (measured by "
              "applying that callback to the timed run's snapshots, untimed).",
              *([f"- rejax at its config's budget ({a['env_steps']:,} steps): IQM "
                 f"{a['iqm']:.1f}, worst seed {a['worst_seed']:.1f}."]
                if (a := rj.get("at_config_budget")) else []),
              "- pgjax's curve is the mean return of training episodes finished in each update; "
              "rejax's is the mean return of 128 fresh evaluation episodes per eval point. Both "
              "sample actions from the policy.",
              "- Seconds to 475 = env steps to 475 / env steps of the run × the run's wall "
              "seconds (compile excluded).",
              f"- Curves identical in every round: "
              f"{all(p['deterministic'] for p in result['programs'].values())}.",
              f"- Load average after each round: "
              f"{', '.join(f'{x:.1f}' for x in result['machine']['loadavg_rounds'])}."]
    return "\n".join(lines) + "\n"


def label_of(index: int, fields: dict) -> str:
    """"pgjax #i: " and the config's first few fields (all of them are listed under the table)."""
    shown = ", ".join(f"{k}={v}" for k, v in list(fields.items())[:3])
    return f"pgjax #{index + 1}: " + (shown + (", …" if len(fields) > 3 else "") or "defaults")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--seeds", type=int, default=16)
    parser.add_argument("--threshold", type=float, default=475.0)
    parser.add_argument("--pgjax-config", action="append", default=None, metavar="JSON",
                        help="Config fields as JSON; repeat for several (default: three)")
    parser.add_argument("--rejax-venv", type=Path, default=DEFAULT_REJAX_VENV)
    parser.add_argument("--rejax-timesteps", type=int,
                        default=REJAX_CARTPOLE_PPO["total_timesteps"])
    parser.add_argument("--out", default="time_to_solve")
    parser.add_argument("--worker", choices=("pgjax", "rejax"), help=argparse.SUPPRESS)
    parser.add_argument("--spec", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return {"pgjax": pgjax_worker, "rejax": rejax_worker}[args.worker](json.loads(args.spec))
    if args.rounds < 1 or args.seeds < 1:
        parser.error("--rounds and --seeds must be at least 1")

    from pgjax import runs

    load_start, date = os.getloadavg(), time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    git = lambda *a: subprocess.run(["git", *a], cwd=ROOT, capture_output=True, text=True).stdout
    pgjax_dirty = bool(git("status", "--porcelain", "--", "pgjax").strip())  # as loaded
    rejax_env = ensure_rejax_venv(args.rejax_venv)
    fields = {f"pgjax{i}": json.loads(c)
              for i, c in enumerate(args.pgjax_config or PGJAX_CONFIGS)}
    seeds = args.seeds
    specs = {"pgjax": (sys.executable, {"seeds": seeds, "configs": fields}),
             "rejax": (rejax_env["python"],
                       {"seeds": seeds, "total_timesteps": args.rejax_timesteps})}
    workers, ready = {}, {}
    for side, (python, spec) in specs.items():  # one compiles at a time
        workers[side] = Worker(python, side, spec)
        ready[side] = workers[side].receive()
        print(f"{side} compiled: " + ", ".join(f"{k} {v:.1f} s" for k, v in
                                                ready[side]["compile_s"].items()), file=sys.stderr)
    results = {name: [] for name in [*fields, "rejax"]}
    loads = []
    for r in range(args.rounds):
        for name in fields:
            results[name].append(workers["pgjax"].run(name))
        results["rejax"].append(workers["rejax"].run("rejax"))
        loads.append(os.getloadavg()[0])
        print(f"round {r + 1}: " + ", ".join(f"{n} {v[-1]['wall_s']:.2f} s"
                                             for n, v in results.items()), file=sys.stderr)
    for w in workers.values():
        w.close()

    compile_s = {**ready["pgjax"]["compile_s"], **ready["rejax"]["compile_s"]}
    labels = {name: label_of(i, f) for i, (name, f) in enumerate(fields.items())}
    programs = {name: summarize(labels[name] if name in fields else
                                f"rejax PPO (its CartPole config, {args.rejax_timesteps:,} steps)",
                                results[name], compile_s[name], seeds, args.threshold)
                for name in results}
    programs["rejax"]["at_config_budget"] = at_steps(results["rejax"][0],
                                                     REJAX_CARTPOLE_PPO["total_timesteps"])
    rj = programs["rejax"]["seconds_to_threshold"]
    ratios = {}
    for name in fields:
        pg = programs[name]["seconds_to_threshold"]
        per = [None if a is None or b is None else a / b for a, b in zip(rj, pg, strict=True)]
        ratios[programs[name]["label"]] = {
            "per_round": per, "median": None if None in per else float(np.median(per))}
    prov = ready["pgjax"]["provenance"]
    result = {
        "command": shlex.join(["python", "-m", "benchmarks.time_to_solve", *sys.argv[1:]]),
        "date": date, "threshold": args.threshold, "seeds": seeds, "rounds": args.rounds,
        "machine": {"cpu": runs.cpu()["name"], "nproc": len(os.sched_getaffinity(0)),
                    "cpu_count": os.cpu_count(), "platform": platform.platform(),
                    "loadavg_start": load_start, "loadavg_end": os.getloadavg(),
                    "loadavg_rounds": loads},
        "pgjax": {"jax": ready["pgjax"]["jax"], "versions": prov["versions"],
                  "git_commit": prov["git_commit"],
                  "pgjax_dirty": pgjax_dirty,
                  "config_fields": fields, "python": sys.executable},
        "rejax": {"jax": ready["rejax"]["jax"], "versions": ready["rejax"]["versions"],
                  "config": ready["rejax"]["config"],
                  "config_source": "rejax repository configs/gymnax/cartpole.yaml, ppo",
                  "venv": str(args.rejax_venv), **rejax_env},
        "method": __doc__.split("\n\n", 2)[2],
        "programs": programs, "ratios": ratios,
    }
    out = ROOT / "benchmarks" / "results" / args.out
    out.parent.mkdir(exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    text = markdown(result)
    out.with_suffix(".md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
