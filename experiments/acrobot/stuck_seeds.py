"""Why some Acrobot-v1 seeds stay at −500 with reward-to-go and none do with the total return.

    python experiments/acrobot/stuck_seeds.py [--seeds 16]

Trains experiments/configs/acrobot.toml (1,024,000 env steps per seed) with each estimator and
prints, per seed: the final return, the policy entropy after the first and the last update
(log 3 = 1.099 is uniform over Acrobot's 3 actions), and the first update at which the seed's
mean episode return beat −500 (an episode ended before the time limit). Writes
experiments/acrobot/stuck_seeds.md.
"""

import argparse
import tomllib
from pathlib import Path

import jax
import numpy as np

import pgjax
from pgjax import runs
from pgjax.config import from_experiment

ROOT = Path(__file__).resolve().parents[2]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=16)
    args = parser.parse_args()
    if args.seeds < 1:
        parser.error(f"--seeds must be positive, got {args.seeds}")
    spec = tomllib.loads((ROOT / "experiments/configs/acrobot.toml").read_text())
    base = from_experiment(spec)[0].validate()
    lines = ["# Acrobot-v1: stuck seeds", "",
             f"`python experiments/acrobot/stuck_seeds.py --seeds {args.seeds}`; "
             f"commit {runs.provenance()['git_commit']}.", ""]
    for estimator in ("reward-to-go", "total-return"):
        config = base.replace(estimator=estimator)
        train = jax.jit(jax.vmap(pgjax.make_train(config)))
        _, m = train(pgjax.seed_keys(0, args.seeds))
        ret, ent = np.asarray(m.episode_return), np.asarray(m.entropy)
        early = [int(np.argmax(r > -500)) if np.any(r > -500) else None for r in ret]
        lines += [f"## {estimator}", "",
                  "| seed | final return | entropy after update 1 | entropy at the end | "
                  "first update with an episode shorter than 500 |",
                  "| ---: | ---: | ---: | ---: | ---: |"]
        for i in range(args.seeds):
            lines.append(f"| {i} | {ret[i, -1]:.1f} | {ent[i, 0]:.3f} | {ent[i, -1]:.3f} | "
                         f"{'never' if early[i] is None else early[i] + 1} |")
        solved = int(np.sum(ret[:, -1] >= -100))
        lines += ["", f"{solved} of {args.seeds} seeds end at −100 or better.", ""]
        print("\n".join(lines[-args.seeds - 6:]), flush=True)
    (ROOT / "experiments/acrobot/stuck_seeds.md").write_text("\n".join(lines))


if __name__ == "__main__":
    main()
