"""What MinAtar policies that stop improving do, next to simple reference policies.

    python experiments/minatar/plateau.py RUN_DIR [RUN_DIR ...] [--episodes 256]

For the game of each pgjax run given, plays `--episodes` whole episodes (up to gymnax's time
limit) with reference policies: uniform random, each constant action, and on Breakout a ball
tracker that moves the paddle toward the ball's column. Then plays the greedy and the sampled
policy of every seed of each run. Per policy it prints the mean return, the mean episode
length, the distinct returns seen (a deterministic policy in a game with few start states
replays a few trajectories), the share of steps taking the policy's most frequent action, and
on Breakout the share of steps taking the tracker's action. Writes experiments/minatar/plateau.md.
"""

import argparse
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from pgjax import runs, seed_keys
from pgjax.checkpoint import CheckpointError
from pgjax.envs import Env
from pgjax.evaluate import play
from pgjax.experiment import load_run, restore_run
from pgjax.policies import initial_carry, step_policy

ROOT = Path(__file__).resolve().parents[2]


def breakout_tracker(state) -> jax.Array:
    """The action that moves the paddle toward the ball's column: action set [noop, left, right]."""
    away = jnp.where(state.pos > state.ball_x, 1, 0)
    return jnp.where(state.pos < state.ball_x, 2, away)


EXPERTS = {"Breakout-MinAtar": ("ball tracker", breakout_tracker)}


def tally(env: Env, act, key: jax.Array, episodes: int, carry=None):
    """Per episode: return, action counts [A] (they sum to its length), expert-action steps.

    act(key, carry, obs, first, state) -> (carry, action [episodes]); carry is a recurrent
    policy's (None otherwise).
    """
    expert = EXPERTS.get(env.name, (None, lambda s: jnp.full(s.time.shape, -1)))[1]

    def act_and_note(k, carry, obs, first, state):
        carry, action = act(k, carry, obs, first, state)
        return carry, action, (action, action == expert(state))

    ret, alive, (actions, agree) = play(env, act_and_note, key, episodes, carry)
    counts = (alive[..., None] * jax.nn.one_hot(actions, env.num_actions)).sum(0)
    return ret, counts, (alive & agree).sum(0)


def references(env: Env, key: jax.Array, episodes: int) -> list:
    policies = {"uniform random": lambda k, c, o, f, s: (c, jax.random.randint(
        k, s.time.shape, 0, env.num_actions))}
    for a in range(env.num_actions):
        policies[f"always action {a}"] = lambda k, c, o, f, s, a=a: (c, jnp.full(s.time.shape, a))
    if env.name in EXPERTS:
        name, expert = EXPERTS[env.name]
        policies[name] = lambda k, c, o, f, s: (c, expert(s))
    return [(name, *jax.jit(lambda k, act=act: tally(env, act, k, episodes))(key))
            for name, act in policies.items()]


def learned(run_dir: Path, key: jax.Array, episodes: int) -> tuple[Env, list]:
    _, record, parts, _, state = restore_run(run_dir)
    rows = []
    for mode in ("greedy", "sampled"):
        def one(params, key, greedy=mode == "greedy"):
            def act(k, carry, obs, first, s):
                carry, dist = step_policy(parts.policy, params, carry, obs, first)
                return carry, dist.mode() if greedy else dist.sample(k)

            return tally(parts.env, act, key, episodes, initial_carry(parts.policy, (episodes,)))

        out = jax.jit(jax.vmap(one, in_axes=(0, None)))(state.params["policy"], key)
        rows += [(f"{run_dir.name} seed {i} {mode}", *(x[i] for x in out))
                 for i in range(record["seeds"])]
    return parts.env, rows


def line(env: Env, name: str, ret, counts, agree) -> str:
    ret, counts, agree = map(np.asarray, (ret, counts, agree))
    steps = counts.sum()
    values, times = np.unique(np.round(ret, 3), return_counts=True)
    order = np.argsort(-times, kind="stable")[:3]
    seen = ", ".join(f"{values[i]:g}×{times[i]}" for i in order)
    seen += "" if len(values) <= 3 else f" (+{len(values) - 3} more)"
    top = counts.sum(0).argmax()
    expert = f"{agree.sum() / steps:.2f}" if env.name in EXPERTS else "—"
    return (f"| {name} | {ret.mean():.2f} | {steps / len(ret):.0f} | {len(values)}: {seen} | "
            f"{counts.sum(0)[top] / steps:.2f} (action {top}) | {expert} |")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--episodes", type=int, default=256)
    args = parser.parse_args()
    if args.episodes < 1:
        parser.error(f"--episodes must be positive, got {args.episodes}")
    for run_dir in args.runs:
        try:
            load_run(run_dir)
        except ValueError as e:
            parser.error(str(e))
    key = seed_keys(0, 1, stream="eval")[0]
    lines = ["# MinAtar: what the plateaued policies do", "",
             f"`python experiments/minatar/plateau.py {' '.join(map(str, args.runs))} "
             f"--episodes {args.episodes}`; commit {runs.provenance()['git_commit']}.", "",
             "Every row plays its episodes from the same key (so the same start states). "
             "*Expert*: share of steps taking the game's hand-written policy's action.", ""]
    games = {}
    for run_dir in args.runs:
        try:
            env, rows = learned(run_dir, key, args.episodes)
        except (ValueError, CheckpointError) as e:
            sys.exit(f"plateau.py: {run_dir}: {e}")
        games.setdefault(env.name, (env, []))[1].extend(rows)
    print("\n".join(lines), flush=True)
    for name, (env, rows) in games.items():
        game = [f"## {name} (time limit {env.max_episode_steps} steps)", "",
                "| policy | mean return | mean length | distinct returns: most frequent | "
                "most frequent action | expert |", "| --- | ---: | ---: | --- | ---: | ---: |"]
        game += [line(env, *row) for row in references(env, key, args.episodes) + rows]
        game.append("")
        print("\n".join(game), flush=True)
        lines += game
    (ROOT / "experiments/minatar/plateau.md").write_text("\n".join(lines))


if __name__ == "__main__":
    main()
