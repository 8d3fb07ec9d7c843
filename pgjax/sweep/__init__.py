"""Hyperparameter sweeps: configs × seeds, vmapped into one program per static group and sharded
over the local devices; any number of workers, on any hosts sharing the sweep directory, may
train one sweep at once. The user's guide, with the spec's format and the files written, is
docs/guides/sweeps.md.

Modules, each below the next: `spec` (spec, sampling, plan), `claims` (who trains which chunk),
`files` (sweep.json, chunk records), `run` (the batch programs, rows), `worker` (the worker
loop), `report` (merge, ranking, figure); this module (the entry points); `launch` (workers on
a scheduler, through submitit).
"""

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import flax.linen as nn

from pgjax.components import as_env, describe_given
from pgjax.estimators import Estimator
from pgjax.sweep import claims
from pgjax.sweep.claims import LEASE_SECONDS, check_lease
from pgjax.sweep.files import (
    IncompleteSweep,
    held_sweep,
    load_records,
    prepare_out_dir,
    span,
    sweep_id,
)
from pgjax.sweep.report import format_sweep, merged, summarize
from pgjax.sweep.run import Programs, run_chunk
from pgjax.sweep.spec import (
    Chunk,
    Plan,
    Spec,
    SpecError,
    check_plan,
    make_plan,
    parse_spec,
    planned,
    spec_errors,
    static_key,
)
from pgjax.sweep.worker import work

__all__ = [
    "Chunk",
    "IncompleteSweep",
    "Plan",
    "Programs",
    "Spec",
    "SpecError",
    "check_plan",
    "format_sweep",
    "make_plan",
    "merge_sweep",
    "parse_spec",
    "run_chunk",
    "static_key",
    "summarize",
    "sweep",
    "sweep_status",
    "work",
]


def sweep(
    spec: "Plan | str | os.PathLike | dict",
    out_dir: "str | os.PathLike",
    *,
    env: Any = None,
    policy: nn.Module | None = None,
    value: nn.Module | None = None,
    estimator: Estimator | None = None,
    progress: bool = False,
    on_chunk: Callable[[dict], None] | None = None,
    lease_seconds: float = LEASE_SECONDS,
    poll_seconds: float = 1.0,
):
    """Run (or resume) a sweep in this process and return its results table.

    A spec holds base config fields, a `grid:` (cartesian product) and/or a `random:` section
    (`num_samples` draws, crossed with every grid point), `seeds`, `seed` and `chunk_runs` (see
    docs/guides/sweeps.md). A run is one config × one seed (seed i: `pgjax.train.seed_keys(seed,
    seeds)[i]`); runs whose static fields agree are trained by one compiled program, vmapped and
    sharded over the local devices, every chunk padded to the same batch size, so a run's
    numbers do not depend on which runs share its batch, nor on which worker trained it.

    Other workers (`pgjax.sweep.launch`, or `sweep` in other processes) may work on the same
    out_dir at once: this process trains the chunks nobody holds, waits for those others hold
    (taking over any whose holder dies), and merges the table. A damaged chunk is reported in
    one line, set aside (`chunks/damaged-chunk-*`) and trained again.

    Args:
      spec: a YAML, JSON or TOML path, or a dict, or its `Plan` (`spec.planned`, made with the
        same components).
      out_dir: where sweep.json, chunks/, results.csv and the summary (summary.csv, .json,
        .png: configs ranked by the IQM of the final return, 95% stratified-bootstrap CIs over
        seeds) go; rerunning with the same spec and components skips the chunks recorded.
      env: a `pgjax.Env`, a gymnax Environment or (Environment, params) for every run; its
        name becomes every config's `env` field. Default: `Env(config.env)`.
      policy: a flax module, obs -> distribution, for every run (see `pgjax.components.build`).
      value: a flax module, obs -> V(s), for every run.
      estimator: an estimator (see `pgjax.estimators`) for every run.
      progress: show a progress bar over the sweep's runs.
      on_chunk: called with each chunk's record after this process saved it.
      lease_seconds: how long a claim outlives its holder's last heartbeat (see `sweep.claims`).
      poll_seconds: how often it looks again while other workers hold the chunks left.

    Returns:
      A pandas DataFrame, one row per run by run id: its ids and config fields, the final return
      (mean return of the episodes that finished in the last update), the AUC (the mean of that
      return over updates) and `diverged` (non-finite loss, gradient norm or final parameters).

    Raises:
      SpecError: a bad spec, component or out_dir, before any training.
    """
    check_lease(lease_seconds)
    given = _given(env=env, policy=policy, value=value, estimator=estimator)
    plan = planned(spec, given)
    out_dir, components = Path(out_dir), describe_given(given)
    with prepare_out_dir(out_dir, plan.spec, components, replace_unstarted=True):
        work(out_dir, plan, given, lease_seconds=lease_seconds, poll_seconds=poll_seconds,
             exit_when_idle=False, progress=progress, on_chunk=on_chunk)
        return merged(out_dir, plan, sweep_id(plan.spec.to_json(), components))


def merge_sweep(spec: "Plan | str | os.PathLike | dict", out_dir: "str | os.PathLike"):
    """Write the results table and summary of a sweep whose chunks are all recorded; return it.

    Raises:
      SpecError: out_dir holds no sweep or another spec's.
      IncompleteSweep: chunks are missing (named in its one-line message).
    """
    return merged(Path(out_dir), *_held(spec, Path(out_dir)))


def _held(spec: "Plan | Spec | str | os.PathLike | dict", out_dir: Path) -> tuple[Plan, str]:
    """(plan, `sweep_id`) of the sweep out_dir holds, which must be this spec's (SpecError
    otherwise). A `Plan` given is used as it is unless the sweep was run with an env component,
    whose name its configs take."""
    plan = spec if isinstance(spec, Plan) else None
    spec = parse_spec(plan.spec if plan else spec)
    components = held_sweep(out_dir, spec)["components"]
    if plan is None or "env" in components:
        plan = make_plan(spec, env=components.get("env"))
    return plan, sweep_id(spec.to_json(), components)


def sweep_status(spec: "Plan | str | os.PathLike | dict", out_dir: "str | os.PathLike") -> str:
    """Chunks recorded / total, who holds the others and for how long, as text."""
    out_dir = Path(out_dir)
    plan, sweep = _held(spec, out_dir)
    state = claims.scan(out_dir / "chunks")
    records, _, damaged = load_records(out_dir, plan, sweep)
    done = [c for c in plan.chunks if c.index in records]
    lines = [f"{len(done)} of {len(plan.chunks)} chunks recorded "
             f"({sum(len(c.runs) for c in done)} of {len(plan.runs)} runs) in {out_dir}"]
    now, waiting, me = time.time(), [], claims.this_holder()
    for chunk in (c for c in plan.chunks if c.index not in records):
        name = claims.chunk_name(chunk.index)
        claim = claims.read(out_dir / "chunks", name, state.attempts.get(name, 0))
        if claim is None:
            if chunk.index not in damaged:
                waiting.append(chunk.index)
            continue
        left = claim["expires"] - now
        lease = (f"lease expired {-left:.0f} s ago: the next worker takes it over" if left <= 0
                 else "its process is gone: the next worker takes it over"
                 if claims.is_dead(claim, me, now) else f"lease {left:.0f} s left")
        lines.append(f"chunk {chunk.index}: {claim.get('worker', '?')} on "
                     f"{claim.get('host', '?')}, attempt {state.attempts[name]}, {lease}")
    if waiting:
        lines.append(f"not started: chunks {span(waiting)}")
    if damaged:
        lines.append(f"damaged: chunks {span(damaged)} (the next run of the sweep sets them "
                     f"aside and trains them again)")
    if len(done) == len(plan.chunks):
        lines.append("merged: results.csv" if (out_dir / "results.csv").exists()
                     else "complete; not merged yet (--merge)")
    return "\n".join(lines)


def _given(**components) -> dict:
    """The components given (not None), the env as a `pgjax.Env`."""
    given = {name: x for name, x in components.items() if x is not None}
    if "env" in given:
        with spec_errors():
            given["env"] = as_env(given["env"])
    return given
