"""The `complete` window's bias when the runner is carried across windows, as in training.

    python experiments/derivation/carried_window.py

run.py measures the `complete` mask on windows that start from fresh resets. Training carries
the runner, so a window starts mid-episode; here three windows run first, then the fourth is
measured: γ^t-weighted REINFORCE on every step of the episodes that end inside it, against the
exact gradient of J_H (γ = 0.9, the tabular MDP of run.py), 2^18 streams per window length.
"""

import sys
from pathlib import Path

import jax
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run as derivation  # noqa: E402

from pgjax import complete_episode_mask, discounted_returns, exact, init_runner, rollout  # noqa: E402

BURN_IN = 3  # windows before the measured one
CHUNKS = 16  # of derivation.CHUNK streams each


def measure(setup, truth, window: int) -> exact.Estimate:
    policy = exact.tabular_policy(setup.theta)

    @jax.jit
    def chunk(key):
        k_reset, k_burn, k_roll = jax.random.split(key, 3)
        runner = init_runner(k_reset, setup.env, derivation.CHUNK)
        for k in jax.random.split(k_burn, BURN_IN):
            runner, _ = rollout(k, setup.env, policy, runner, window)
        _, batch = rollout(k_roll, setup.env, policy, runner, window)
        returns = discounted_returns(batch.reward, batch.done, derivation.GAMMA)
        mask = complete_episode_mask(batch.done)
        g = exact.episode_grads(setup.theta, batch, returns, mask,
                                weights=derivation.GAMMA**batch.episode_t)
        return g.reshape(derivation.CHUNK, -1), (batch.done * mask).sum(0)

    parts = [chunk(k) for k in jax.random.split(jax.random.key(123 + window), CHUNKS)]
    g = np.concatenate([np.asarray(x) for x, _ in parts])
    k = np.concatenate([np.asarray(y) for _, y in parts])
    return exact.ratio_estimate(g, k, truth.grad_h)


def main():
    setup = derivation.make_setup()
    truth = derivation.exact_truths(setup)[0][derivation.GAMMA]
    for window in (2 * derivation.H, 5 * derivation.H):
        est = measure(setup, truth, window)
        print(f"T = {window // derivation.H}H, runner carried: relative bias {est.rel_error:.4f} "
              f"(99% noise radius {est.noise:.4f}, χ² p = {est.p_value:.2g})")


if __name__ == "__main__":
    main()
