"""GIFs of single-env episodes with gymnax's visualizer; host-only."""

import importlib.util
import os

from pgjax.envs import Env

GYM_RENDERED = ("Acrobot-v1", "CartPole-v1", "Pendulum-v1", "MountainCar-v0",
                "MountainCarContinuous-v0")
# The envs gymnax's Visualizer draws (by the gymnax environment's name); others come out blank.
RENDERED = GYM_RENDERED + (
    "Catch-bsuite", "Asterix-MinAtar", "Breakout-MinAtar", "Freeway-MinAtar", "Seaquest-MinAtar",
    "SpaceInvaders-MinAtar", "Pong-misc", "PointRobot-misc", "MetaMaze-misc", "FourRooms-misc",
)


def render_unavailable(name: str) -> str | None:
    """Why a GIF of env `name` cannot be made here (not drawn by gymnax, or classic control
    without pygame), or None."""
    if name not in RENDERED:
        return f"gymnax's visualizer does not draw {name} (it draws {', '.join(RENDERED)})"
    if name in GYM_RENDERED and importlib.util.find_spec("pygame") is None:
        return f'a GIF of {name} needs pygame: pip install -e ".[render]" (or pip install pygame)'
    return None


def save_gif(env: Env, states: list, rewards: list, path) -> None:
    """Render a list of single-env gymnax states with gymnax's visualizer (host-only).

    Raises RuntimeError when gymnax does not draw the env, or a classic-control env needs
    pygame (gymnasium's renderer).
    """
    import matplotlib

    if (reason := render_unavailable(getattr(env.env, "name", env.name))) is not None:
        raise RuntimeError(reason)
    os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
    os.environ.setdefault("SDL_AUDIODRIVER", "dummy")
    matplotlib.use("Agg")
    from gymnax.visualize import Visualizer

    Visualizer(env.env, env.params, states, rewards).animate(str(path))
