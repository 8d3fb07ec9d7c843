"""The JAX environment suites by name: `SUITE:NAME`, NAME the suite's own registry name.

`pgjax.Env("brax:hopper")`, `--env craftax:Craftax-Classic-Symbolic-v1`, ... One module per
suite (brax, craftax, jumanji, navix, xminigrid) adapts it to the gymnax 1.0 interface `Env`
expects (`suites.base.SuiteEnv`); a suite is imported only when it is named. Each is an optional
extra: `pip install "pgjax[brax]"` (or `[envs]` for all). What each adapter maps, and what it
cannot: docs/guides/env-suites.md.
"""

import importlib
from typing import Any

from pgjax.config import closest

SUITES = ("brax", "craftax", "jumanji", "navix", "xminigrid")


class SuiteNotInstalled(ValueError):
    """A suite named by an env id is not installed: one line with its install command."""


def split(name: str) -> tuple[str, str] | None:
    """(suite, NAME) of a `SUITE:NAME` env id, None for a gymnax id (which has no colon)."""
    if ":" not in name:
        return None
    suite, _, env_id = name.partition(":")
    return suite, env_id


def adapter(suite: str):
    """The adapter module of `suite`, its suite imported; one-line ValueError otherwise."""
    if suite not in SUITES:
        raise ValueError(f"unknown env suite {suite!r}{closest(suite, SUITES, cutoff=0.4)} "
                         f"(suites: {', '.join(SUITES)}; a gymnax id has no prefix)")
    module = importlib.import_module(f"pgjax.suites.{suite}")
    try:
        module.load()
    except ImportError as e:
        raise SuiteNotInstalled(
            f"{suite} is not installed ({e.name or e}): pip install \"pgjax[{suite}]\"") from None
    return module


def check(name: str) -> None:
    """Raise ValueError (one line) unless `name` is SUITE:NAME of an installed suite that
    registers NAME."""
    suite, env_id = split(name)
    module = adapter(suite)
    known = module.registered()
    if env_id not in known:
        hint = closest(name, [f"{suite}:{k}" for k in known], n=3, cutoff=0.4)
        raise ValueError(f"unknown env {name!r}{hint} ({suite} registers {len(known)} envs)")


def make(name: str) -> tuple[Any, Any]:
    """(gymnax-style environment, params) of `SUITE:NAME` (checked first)."""
    check(name)
    suite, env_id = split(name)
    env = adapter(suite).ADAPTER(env_id)
    return env, env.default_params
