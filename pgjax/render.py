"""GIFs of single-env episodes with gymnax's visualizer; host-only."""

import importlib.util
import os

from pgjax.envs import Env

GYM_RENDERED = ("Acrobot-v1", "CartPole-v1", "Pendulum-v1", "MountainCar-v0",
                "MountainCarContinuous-v0")


def render_unavailable(name: str) -> str | None:
    """Why a GIF of env `name` cannot be made here (classic control needs pygame), or None."""
    if name in GYM_RENDERED and importlib.util.find_spec("pygame") is None:
        return f'a GIF of {name} needs pygame: pip install -e ".[render]" (or pip install pygame)'
    return None


def save_gif(env: Env, states: list, rewards: list, path) -> None:
    """Render a list of single-env gymnax states with gymnax's visualizer (host-only).

    Raises RuntimeError when a classic-control env needs pygame (gymnasium's renderer).
    """
    import matplotlib

    if (reason := render_unavailable(env.name)) is not None:
        raise RuntimeError(reason)
    os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
    os.environ.setdefault("SDL_AUDIODRIVER", "dummy")
    matplotlib.use("Agg")
    from gymnax.visualize import Visualizer

    Visualizer(env.env, env.params, states, rewards).animate(str(path))
